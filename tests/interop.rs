//! Interoperability with the real Python fedmsg 1.1.7 (from PyPI, in the
//! venv `scripts/test.sh` builds): both directions, direct and via relays.

use crate::util::{free_port, python_venv, Bus, Proc, WAIT};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Writes `fedmsg.d/test.py` for Python fedmsg matching `bus`.
fn python_config(bus: &Bus, extra_endpoints: &str) {
    let dir = bus.dir.path().join("fedmsg.d");
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "config = dict(\n    topic_prefix='org.fedoraproject',\n    environment='dev',\n    endpoints={{'relay_outbound': ['tcp://127.0.0.1:{out}'], {extra_endpoints}}},\n    relay_inbound=['tcp://127.0.0.1:{inb}'],\n    sign_messages=False,\n    zmq_enabled=True,\n    validate_signatures=False,\n    post_init_sleep=0.5,\n    zmq_linger=1000,\n)\n",
        out = bus.relay_out,
        inb = bus.relay_in,
    );
    std::fs::write(dir.join("test.py"), text).unwrap();
}

fn python_command(venv: &Path, bus: &Bus, program: &str) -> Command {
    let mut command = Command::new(venv.join("bin").join(program));
    crate::util::isolate(&mut command, bus.dir.path());
    command.env("PYTHONUNBUFFERED", "1").env(
        "PATH",
        format!(
            "{}:{}",
            venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    command
}

fn venv() -> Option<PathBuf> {
    let venv = python_venv();
    if venv.is_none() {
        eprintln!("skipping: no Python fedmsg venv (run scripts/test.sh)");
    }
    venv
}

#[test]
fn python_tail_shows_what_our_publisher_sends() {
    let Some(venv) = venv() else { return };
    let port = free_port();
    let bus = Bus::new("", &format!("\"rust.host\" = \"tcp://127.0.0.1:{port}\""));
    python_config(&bus, &format!("'rust.host': ['tcp://127.0.0.1:{port}']"));
    let mut python_tail = Proc::spawn(python_command(&venv, &bus, "fedmsg-tail"));
    let line = crate::util::publish_until_shown(
        &bus,
        "rust.host",
        "greet",
        &json!({"hello": "from rust", "u": "café", "f": 1.5}),
        &mut python_tail,
        |_| true,
    );
    assert!(
        line.contains("'msg': {'f': 1.5, 'hello': 'from rust', 'u': 'café'}"),
        "{line}"
    );
    assert!(
        line.contains("'topic': 'org.fedoraproject.dev.rusty.greet'"),
        "{line}"
    );
}

#[test]
fn our_tail_shows_what_python_publishes() {
    let Some(venv) = venv() else { return };
    let port = free_port();
    let bus = Bus::new("", &format!("\"pysvc.host\" = \"tcp://127.0.0.1:{port}\""));
    python_config(&bus, &format!("'pysvc.host': ['tcp://127.0.0.1:{port}']"));
    let mut tail = bus.command("fedmsg-tail");
    tail.args([
        "--json",
        "--count",
        "1",
        "--topic",
        "org.fedoraproject.dev.pymod",
    ]);
    let mut tail = Proc::spawn(tail);
    // Publish until our tail has one (bounded); the tail exits on its own.
    let script = "import fedmsg, time\nfedmsg.init(name='pysvc.host')\nfor n in range(400):\n    fedmsg.publish(topic='hello', modname='pymod', msg={'n': n, 'x': 1.0, 'big': 10**20})\n    time.sleep(0.05)\n";
    let mut python = python_command(&venv, &bus, "python");
    python.args(["-c", script]);
    let _python = Proc::spawn(python);
    let line = tail.expect_line();
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["topic"], "org.fedoraproject.dev.pymod.hello");
    assert_eq!(
        fedmsg::canonical::to_canonical(&value["msg"]["x"]),
        "1.0",
        "a Python float stays a float"
    );
    assert_eq!(
        fedmsg::canonical::to_canonical(&value["msg"]["big"]),
        "100000000000000000000"
    );
    assert_eq!(tail.wait_exit(WAIT).code(), Some(0));
}

#[test]
fn python_logger_through_our_relay_to_our_tail() {
    let Some(venv) = venv() else { return };
    let bus = Bus::new("", "");
    python_config(&bus, "");
    let _relay = bus.start_relay();
    let mut tail = bus.start_tail_ready(&[]);
    let mut logger = python_command(&venv, &bus, "fedmsg-logger");
    logger.args(["--message", "from python"]);
    let status = logger.status().unwrap();
    assert!(status.success());
    let line = tail.expect_line();
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["msg"]["log"], "from python");
    assert_eq!(value["topic"], "org.fedoraproject.dev.logger.log");
}

#[test]
fn our_logger_through_python_relay_to_our_tail() {
    let Some(venv) = venv() else { return };
    let bus = Bus::new("", "");
    python_config(&bus, "");
    let _python_relay = Proc::spawn(python_command(&venv, &bus, "fedmsg-relay"));
    // Our logger waits for the relay to listen; probes repeat until the
    // Python relay is up and our tail has its subscription.
    let mut command = bus.command("fedmsg-tail");
    command.arg("--json");
    let mut tail = Proc::spawn(command);
    let deadline = Instant::now() + WAIT * 2;
    loop {
        let _ = bus
            .command("fedmsg-logger")
            .args(["--message", "probe", "--topic", "probe", "--timeout", "1"])
            .output()
            .unwrap();
        if tail.stdout_line(Duration::from_millis(200)).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing came through the Python relay: {}",
            tail.stderr_text()
        );
    }
    while tail.stdout_line(Duration::from_millis(200)).is_some() {}
    let out = bus
        .command("fedmsg-logger")
        .args(["--message", "via python relay"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_str(&tail.expect_line()).unwrap();
    assert_eq!(value["msg"]["log"], "via python relay");
}

/// scripts/bench-all.sh with tiny counts: every scenario of the benchmark
/// table, the comparison with Python fedmsg (scripts/compare.sh) and the
/// chart, so none of them can rot; speed is not judged here.
#[test]
fn the_benchmark_scripts_run() {
    let Some(venv) = venv() else { return };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench-all.sh");
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let mut command = Command::new("bash");
    crate::util::isolate(&mut command, dir.path());
    let out = command
        .arg(script)
        .args(["--quick", "--soak"])
        .arg(&results)
        .env("PYTHON_FEDMSG_VENV", &venv)
        .env("BENCH_BINARY", crate::util::bin("fedmsg-bench"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One row per scenario, none losing a message.
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| scenario"))
        .collect();
    assert_eq!(rows.len(), 12, "{stdout}");
    for row in rows {
        let columns: Vec<&str> = row.split(" | ").map(str::trim).collect();
        assert_eq!(columns[5], "0", "lost messages: {row}");
    }
    // Python against us, one round.
    let python = std::fs::read_to_string(results.join("python.md")).unwrap();
    let row = python
        .lines()
        .find(|l| l.starts_with("| 1 |"))
        .unwrap_or_else(|| panic!("no result row: {python}"));
    let columns: Vec<&str> = row.split('|').map(str::trim).collect();
    assert!(
        columns[3].ends_with("(0)"),
        "fedmsg-rs lost messages: {row}"
    );
    let chart = std::fs::read_to_string(results.join("benchmarks.svg")).unwrap();
    assert!(
        chart.starts_with("<svg") && chart.contains("Python fedmsg"),
        "{chart}"
    );
}

/// The built-in `[[meta]]` rules summarise fedmsg-logger's and
/// fedmsg-announce's messages as Python's `fedmsg.meta` does: `msg2repr`
/// (what `--terse` prints) and `msg2usernames` (what `--users` filters on),
/// and a topic no rule knows falls to the catch-all. The one deliberate
/// difference is checked on both sides.
#[test]
fn builtin_meta_rules_summarise_as_python_fedmsg_meta() {
    let Some(venv) = venv() else { return };
    let messages = json!([
        {"topic": "org.fedoraproject.dev.logger.log", "msg": {"log": "Hello world"}, "username": "root"},
        {"topic": "org.fedoraproject.dev.logger.log", "msg": {"log": ""}, "username": "root"},
        {"topic": "org.fedoraproject.dev.logger.log", "msg": {"log": "no user"}},
        {"topic": "org.fedoraproject.prod.logger.log", "msg": {"a": 1, "b": [2]}, "username": "alice"},
        {"topic": "org.fedoraproject.dev.logger.other", "msg": {"log": "x"}, "username": "root"},
        {"topic": "org.fedoraproject.dev.logger", "msg": {}, "username": "root"},
        {"topic": "org.fedoraproject.stg.announce.announcement", "msg": {"message": "Outage at 10:00", "link": "https://status.example.org"}, "username": "bob"},
        {"topic": "org.fedoraproject.dev.announce.announcement", "msg": {"message": "No user", "link": ""}},
        {"topic": "org.fedoraproject.dev.git.receive", "msg": {"log": "x"}, "username": "root"},
        {"topic": "org.fedoraproject.dev.loggerx.log", "msg": {"log": "x"}, "username": "root"},
        {"topic": "com.example.dev.logger.log", "msg": {"log": "other prefix"}, "username": "root"},
    ]);
    let script = r#"
import json, sys, logging
logging.disable(logging.CRITICAL)
import fedmsg.meta
config = dict(topic_prefix="org.fedoraproject", topic_prefix_re=r"org\.fedoraproject\.(dev|stg|prod)", environment="dev")
fedmsg.meta.make_processors(**config)
out = []
for m in json.load(sys.stdin):
    out.append([fedmsg.meta.msg2repr(m, **config), sorted(fedmsg.meta.msg2usernames(m, **config))])
print(json.dumps(out))
"#;
    let mut python = Command::new(venv.join("bin").join("python"));
    let dir = tempfile::tempdir().unwrap();
    crate::util::isolate(&mut python, dir.path());
    let mut child = python
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        messages.to_string().as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let rules = fedmsg::meta::Rules::from_config(&fedmsg::Config::builtin().unwrap());
    let ours: Vec<serde_json::Value> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let message = fedmsg::Message::from_body(m.as_object().cloned().unwrap());
            let summary = rules.summarise(&message);
            let mut users = summary.usernames.clone();
            users.sort();
            json!([summary.terse(), users])
        })
        .collect();
    let theirs = theirs.as_array().unwrap();
    assert_eq!(theirs.len(), ours.len());
    // On purpose: a logger message on a topic other than logger.log shows
    // its line (fedmsg-logger --topic repo.update sends those).
    let differ = [
        (
            4,
            "logger.other -- x (root) ",
            "logger.other -- <unhandled log message> ",
        ),
        (
            5,
            "logger -- <custom JSON message> (root) ",
            "logger -- <unhandled log message> ",
        ),
    ];
    for (i, (ours, theirs)) in ours.iter().zip(theirs).enumerate() {
        match differ.iter().find(|(index, _, _)| *index == i) {
            Some((_, ours_expected, theirs_expected)) => {
                assert_eq!(ours[0], *ours_expected, "message {i}");
                assert_eq!(theirs[0], *theirs_expected, "message {i}");
                assert_eq!(ours[1], theirs[1], "message {i}: usernames");
            }
            None => assert_eq!(ours, theirs, "message {i}: {}", messages[i]),
        }
    }
}

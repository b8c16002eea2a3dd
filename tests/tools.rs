//! The operator's commands beyond tail and logger: fedmsg-announce,
//! fedmsg-signing-relay and fedmsg-trigger, as real processes on a real bus.

use crate::util::{fixtures, free_port, http_get, sample, Bus, Proc, WAIT};
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn run(bus: &Bus, name: &str, args: &[&str], input: &str) -> std::process::Output {
    let mut child = bus
        .command(name)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn announce_sends_stdin_as_one_announcement() {
    let bus = Bus::new("", "");
    let _relay = bus.start_relay();
    let mut tail = bus.start_tail_ready(&[]);
    let out = run(
        &bus,
        "fedmsg-announce",
        &["--link", "https://status.example.org"],
        "  Outage tonight  \n\n\tat 22:00 UTC\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = json(&tail.expect_line());
    assert_eq!(
        shown["topic"],
        "org.fedoraproject.dev.announce.announcement"
    );
    assert_eq!(
        shown["msg"],
        serde_json::json!({"message": "Outage tonight\n\nat 22:00 UTC", "link": "https://status.example.org"})
    );
    let out = run(&bus, "fedmsg-announce", &[], "no link\n");
    assert!(out.status.success());
    let shown = json(&tail.expect_line());
    assert_eq!(
        shown["msg"],
        serde_json::json!({"message": "no link", "link": null})
    );
}

/// Signing keys for this host's logger (shell-app01) and for the signing
/// relay (shell-app02), validation against fedmsg's test CA.
fn signing_config(bus: &Bus) -> std::path::PathBuf {
    let certs = fixtures().join("test-certs").display().to_string();
    let host = fedmsg::publish::short_hostname();
    let text = std::fs::read_to_string(&bus.config).unwrap();
    let (top, tables) = text.split_once("[endpoints]").unwrap();
    let signing = bus.dir.path().join("signing.toml");
    std::fs::write(
        &signing,
        format!(
            "{top}sign_messages = true\nvalidate_signatures = true\nssldir = \"{certs}\"\nca_cert_location = \"{certs}/ca.crt\"\ncrl_location = \"{certs}/crl.pem\"\n[endpoints]{tables}[certnames]\n\"shell.{host}\" = \"shell-app01.phx2.fedoraproject.org\"\nsigning_relay = \"shell-app02.phx2.fedoraproject.org\"\n"
        ),
    )
    .unwrap();
    signing
}

fn with_config(bus: &Bus, config: &Path, name: &str) -> std::process::Command {
    let mut command = std::process::Command::new(crate::util::bin(name));
    command.arg("--config").arg(config);
    crate::util::isolate(&mut command, bus.dir.path());
    command
}

#[test]
fn signing_relay_signs_the_unsigned_and_leaves_the_signed_alone() {
    let bus = Bus::new("", "");
    let signing = signing_config(&bus);
    let mut relay = Proc::spawn(with_config(&bus, &signing, "fedmsg-signing-relay"));
    relay.wait_stderr("ready", WAIT);
    let mut tail_command = with_config(&bus, &signing, "fedmsg-tail");
    tail_command.args(["--really-pretty", "--color", "never"]);
    let mut tail = Proc::spawn(tail_command);
    // Unsigned loggers (the bus's own config signs nothing): the relay signs.
    let deadline = Instant::now() + WAIT;
    let first = loop {
        let out = bus
            .command("fedmsg-logger")
            .args(["--message", "from a host without a certificate"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(line) = tail.stdout_line(Duration::from_millis(200)) {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "nothing shown: {}",
            tail.stderr_text()
        );
    };
    assert!(
        first.contains("signed by shell-app02.phx2.fedoraproject.org (x509)"),
        "{first}"
    );
    let mut text = first;
    while let Some(line) = tail.stdout_line(Duration::from_millis(300)) {
        text.push_str(&line);
    }
    assert!(text.contains("from a host without a certificate"), "{text}");
    // A message signed by its publisher passes untouched: still valid, and
    // still its publisher's signature.
    let out = with_config(&bus, &signing, "fedmsg-logger")
        .args(["--message", "signed at the source"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut shown = String::new();
    while !shown.contains("signed at the source") {
        shown.push_str(&tail.expect_line());
        shown.push('\n');
    }
    assert!(
        shown.contains("signed by shell-app01.phx2.fedoraproject.org (x509)"),
        "{shown}"
    );
    assert!(!tail.stderr_text().contains("invalid signature"));
}

#[test]
fn signing_relay_without_its_certificate_fails_before_binding() {
    let bus = Bus::new("", "");
    let out = bus
        .command("fedmsg-signing-relay")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("signing_relay"), "{stderr}");
}

/// Waits until `path` holds at least `lines` lines, and returns them.
fn wait_lines(path: &Path, lines: usize, trigger: &mut Proc) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let found: Vec<String> = text.lines().map(str::to_owned).collect();
        if found.len() >= lines {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} of {lines} lines; trigger stderr: {}",
            path.display(),
            found.len(),
            trigger.stderr_text()
        );
        // Paces the polling: the trigger prints nothing of its own here.
        let _ = trigger.stdout_line(Duration::from_millis(50));
    }
}

/// Sends logger probes, each given `per_probe` to show up, until the
/// trigger's command has written something to `runs`.
fn probe_until_run(bus: &Bus, runs: &Path, trigger: &mut Proc, per_probe: Duration) {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = run(bus, "fedmsg-logger", &["--message", "probe"], "");
        assert!(out.status.success());
        let waited = Instant::now() + per_probe;
        while Instant::now() < waited {
            if !std::fs::read_to_string(runs).unwrap_or_default().is_empty() {
                return;
            }
            // Paces the polling: the trigger prints nothing of its own here.
            let _ = trigger.stdout_line(Duration::from_millis(50));
        }
        assert!(
            Instant::now() < deadline,
            "trigger never ran: {}",
            trigger.stderr_text()
        );
    }
}

#[test]
fn trigger_passes_hostile_messages_to_the_command_without_a_shell() {
    let bus = Bus::new("", "");
    let _relay = bus.start_relay();
    let env_file = bus.dir.path().join("runs.env");
    let mut command = bus.command("fedmsg-trigger");
    command
        .args(["--topic", "org.fedoraproject.dev.logger", "--"])
        .args([
            "sh",
            "-c",
            // The message only ever reaches sh as data: on stdin and in
            // variables expanded inside double quotes.
            r#"cat >> "$0"; printf '%s|%s\n' "$FEDMSG_MESSAGE_TOPIC" "$FEDMSG_MESSAGE_MSG" >> "$0.env""#,
        ])
        .arg(bus.dir.path().join("runs"));
    let mut trigger = Proc::spawn(command);
    // Probe until the trigger runs for one: it is connected from then on.
    let probe = bus.dir.path().join("runs");
    probe_until_run(&bus, &probe, &mut trigger, Duration::from_millis(100));
    let probes = std::fs::read_to_string(&probe).unwrap().lines().count();
    let hostile = r#"$(touch pwned1)'; touch pwned2; echo "`touch pwned3`" | && > pwned4 \"#;
    let out = run(&bus, "fedmsg-logger", &["--message", hostile], "");
    assert!(out.status.success());
    let runs = wait_lines(&probe, probes + 1, &mut trigger);
    let body = json(runs.last().unwrap());
    assert_eq!(
        body["msg"]["log"], hostile,
        "the body arrives on stdin intact"
    );
    let env = std::fs::read_to_string(&env_file).unwrap();
    let last = env.lines().last().unwrap();
    let (topic, msg) = last.split_once('|').unwrap();
    assert_eq!(topic, "org.fedoraproject.dev.logger.log");
    assert_eq!(json(msg)["log"], hostile, "and in FEDMSG_MESSAGE_MSG");
    for name in ["pwned1", "pwned2", "pwned3", "pwned4"] {
        assert!(!bus.dir.path().join(name).exists(), "{name} was created");
    }
}

#[test]
fn trigger_debounces_and_runs_in_order() {
    let bus = Bus::new("", "");
    let _relay = bus.start_relay();
    let runs = bus.dir.path().join("runs");
    let mut command = bus.command("fedmsg-trigger");
    command
        .args(["--wait-for", "0.3", "--command"])
        .arg(format!("tee -a {}", runs.display()))
        .stdout(Stdio::null());
    let mut trigger = Proc::spawn(command);
    // Each probe waits out the debounce (a new match restarts it).
    probe_until_run(&bus, &runs, &mut trigger, Duration::from_secs(1));
    // Let the probes in flight finish before counting.
    let mut before = 0;
    loop {
        let _ = trigger.stdout_line(Duration::from_millis(600));
        let now = std::fs::read_to_string(&runs).unwrap().lines().count();
        if now == before {
            break;
        }
        before = now;
    }
    let out = run(&bus, "fedmsg-logger", &[], "one\ntwo\nthree\n");
    assert!(out.status.success());
    let lines = wait_lines(&runs, before + 3, &mut trigger);
    let logs: Vec<Value> = lines[before..]
        .iter()
        .map(|l| json(l)["msg"]["log"].clone())
        .collect();
    assert_eq!(logs, ["one", "two", "three"]);
}

#[test]
fn trigger_without_a_command_is_a_usage_error() {
    let bus = Bus::new("", "");
    let out = bus
        .command("fedmsg-trigger")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("You must provide a --command to run."));
}

/// The number after `key=` in a log line.
fn logged_count(text: &str, key: &str) -> u64 {
    let needle = format!("{key}=");
    text.split(needle.as_str())
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_outlives_a_reader_that_stops_reading() {
    use futures::StreamExt;
    use zeromq::Socket;
    let (publisher_port, gateway_port) = (crate::util::free_port(), crate::util::free_port());
    let bus = Bus::new(
        &format!(
            "gateway_host = \"127.0.0.1\"\ngateway_port = {gateway_port}\ngateway_high_water_mark = 50\ngateway_max_readers = 2"
        ),
        &format!("\"pub.test\" = \"tcp://127.0.0.1:{publisher_port}\""),
    );
    let mut gateway = Proc::spawn({
        let mut command = bus.command("fedmsg-gateway");
        command.arg("-v");
        command
    });
    let ready = tokio::task::block_in_place(|| gateway.wait_stderr("ready", WAIT));
    assert!(
        ready.contains(&format!("127.0.0.1:{gateway_port}")),
        "{ready}"
    );
    let config = fedmsg::Loader::new()
        .file(Some(bus.config.clone()))
        .load()
        .unwrap();
    let publisher = fedmsg::Publisher::bind(&config, "pub.test").await.unwrap();
    // Reader one subscribes and never reads (the zeromq crate's SUB reads
    // from the connection only when asked).
    let mut stalled = zeromq::SubSocket::new();
    stalled
        .connect(&format!("tcp://127.0.0.1:{gateway_port}"))
        .await
        .unwrap();
    stalled.subscribe("").await.unwrap();
    // Reader two reads everything.
    let outside = fedmsg::Endpoint::Tcp {
        host: "127.0.0.1".into(),
        port: gateway_port,
    };
    let mut reader = fedmsg::Subscriber::new(vec![("gateway".into(), outside)]).subscribe();
    let deadline = Instant::now() + WAIT;
    loop {
        publisher
            .publish("probe", "gw", &serde_json::json!({}))
            .await
            .unwrap();
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), reader.next()).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing came through the gateway"
        );
    }
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), reader.next()).await {}
    // A third reader is one too many: its connection is closed at once.
    let mut third = tokio::net::TcpStream::connect(("127.0.0.1", gateway_port))
        .await
        .unwrap();
    let mut byte = [0u8; 64];
    let read = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut third, &mut byte))
        .await
        .expect("the refused reader's connection closes");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "refused, not greeted: {read:?}"
    );
    // 3,000 messages of 8 KiB (24 MB, more than the stalled reader's
    // kernel buffers hold), in windows the reading reader keeps up with.
    let payload = "x".repeat(8192);
    let count = 3_000u64;
    let window = 25u64;
    let mut seen = 0u64;
    for start in (0..count).step_by(window as usize) {
        for n in start..start + window {
            publisher
                .publish(
                    "data",
                    "gw",
                    &serde_json::json!({"n": n, "payload": payload}),
                )
                .await
                .unwrap();
        }
        while seen < start + window {
            match tokio::time::timeout(WAIT, reader.next()).await {
                Ok(Some(r)) if r.topic().ends_with("gw.data") => {
                    assert_eq!(r.message.msg()["n"], seen, "in order, none missing");
                    seen += 1;
                }
                Ok(Some(_)) => {}
                other => panic!("the reading reader stalled at {seen}: {other:?}"),
            }
        }
    }
    gateway.interrupt();
    let status = tokio::task::block_in_place(|| gateway.wait_exit(WAIT));
    assert!(status.success(), "{}", gateway.stderr_text());
    let log = gateway.stderr_text();
    assert!(logged_count(&log, "forwarded") >= count, "{log}");
    assert!(
        logged_count(&log, "slow_reader_drops") > 0,
        "the stalled reader's messages were dropped and counted: {log}"
    );
    assert_eq!(logged_count(&log, "readers_refused"), 1, "{log}");
    drop(stalled);
}

#[test]
fn every_command_has_help_version_completions_and_a_man_page() {
    for name in [
        "fedmsg-tail",
        "fedmsg-logger",
        "fedmsg-relay",
        "fedmsg-signing-relay",
        "fedmsg-gateway",
        "fedmsg-check",
        "fedmsg-announce",
        "fedmsg-trigger",
        "fedmsg-config",
        "fedmsg-verify",
        "fedmsg-certs",
        "fedmsg-bench",
    ] {
        let help = std::process::Command::new(crate::util::bin(name))
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(
            help.status.success(),
            "{name} --help: {}",
            String::from_utf8_lossy(&help.stderr)
        );
        assert!(text.contains("Usage:"), "{name} --help: {text}");
        let version = std::process::Command::new(crate::util::bin(name))
            .arg("--version")
            .output()
            .unwrap();
        assert!(version.status.success(), "{name} --version");
        assert_eq!(
            String::from_utf8_lossy(&version.stdout).trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION")),
        );
        // Its own description, not the crate's.
        assert!(
            !text.starts_with("A brokerless"),
            "{name} --help describes the crate: {text}"
        );
        // Completions and a man page, generated from the same definition.
        let run = |args: &[&str]| {
            let out = std::process::Command::new(crate::util::bin(name))
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{name} {args:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let bash = run(&["--completions", "bash"]);
        assert!(
            bash.contains("complete -F") && bash.contains("--config"),
            "{name}: {bash}"
        );
        let zsh = run(&["--completions", "zsh"]);
        assert!(
            zsh.starts_with(&format!("#compdef {name}")),
            "{name}: {zsh}"
        );
        let man = run(&["--man"]);
        assert!(
            man.contains(&format!(".TH {name} 1")) && man.contains("\\-\\-config"),
            "{name}: {man}"
        );
        documented(name, &text);
    }
}

/// docs/cli.md has a section for `name` that names every flag its
/// `--help` lists (or the table of common flags does) and shows an example
/// beyond the synopsis.
fn documented(name: &str, help: &str) {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md")).unwrap();
    let common = docs.split("\n## ").next().unwrap();
    let section = docs
        .split("\n## ")
        .find(|s| s.starts_with(&format!("{name}\n")))
        .unwrap_or_else(|| panic!("docs/cli.md has no section for {name}"));
    for line in help.lines().map(str::trim_start) {
        // "-n, --messages <N>" or "--topic <PREFIX>"
        let Some(flag) = line
            .split_whitespace()
            .find(|w| w.starts_with("--"))
            .filter(|_| line.starts_with('-'))
        else {
            continue;
        };
        let flag = flag.trim_end_matches(',');
        let short = line
            .strip_prefix('-')
            .filter(|rest| rest.chars().nth(1) == Some(','))
            .map(|rest| format!("-{}", &rest[..1]));
        let mentioned = |text: &str| {
            text.contains(&format!("`{flag}"))
                || text.contains(&format!("[{flag}"))
                || text.contains(&format!(" {flag}"))
                || short.as_ref().is_some_and(|s| {
                    text.contains(&format!("[{s} ")) || text.contains(&format!("`{s}"))
                })
        };
        assert!(
            mentioned(section) || mentioned(common),
            "docs/cli.md does not document {name} {flag}"
        );
    }
    assert!(
        section.matches("```").count() >= 4,
        "docs/cli.md has no example for {name} beyond its synopsis"
    );
}

#[test]
fn systemd_units_start_our_commands_with_flags_they_know() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/systemd");
    let mut units = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{} has no ExecStart", path.display()));
        let mut words = exec.split_whitespace();
        let program = words.next().unwrap();
        let name = program.rsplit('/').next().unwrap();
        assert_eq!(program, format!("/usr/bin/{name}"), "{}", path.display());
        // The hub unit is a template over the consumer program: the example.
        let binary = if name == "%i" {
            crate::hub::example("consumer")
        } else {
            crate::util::bin(name)
        };
        let help = std::process::Command::new(binary)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in words.filter(|w| w.starts_with("--")) {
            assert!(
                help.contains(flag),
                "{}: {name} has no {flag}",
                path.display()
            );
        }
        assert!(text.contains("[Install]"), "{}", path.display());
        units += 1;
    }
    assert_eq!(units, 4, "relay, gateway, hub and trigger units");
}

fn check(bus: &Bus, args: &[&str]) -> (i32, String) {
    let out = bus
        .command("fedmsg-check")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run fedmsg-check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_relay_serves_metrics_and_fedmsg_check_tells_live_from_dead() {
    let port = free_port();
    let bus = Bus::new(&format!("[metrics]\nrelay = \"127.0.0.1:{port}\""), "");
    let mut relay = bus.start_relay();
    let mut tail = bus.start_tail_ready(&[]);

    let (code, health) = http_get(port, "/health");
    assert_eq!(code, 200, "{health}");
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        (health["service"].as_str(), health["status"].as_str()),
        (Some("relay"), Some("ok"))
    );
    let before = sample(
        &http_get(port, "/metrics").1,
        "fedmsg_relay_forwarded_total",
    );
    for n in 0..3 {
        let status = bus
            .command("fedmsg-logger")
            .args(["--message", &format!("counted {n}")])
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        assert!(tail.expect_line().contains(&format!("counted {n}")));
    }
    // The relay counts a message once its send returns, which may be just
    // after the tail printed it: wait for the count, then check it is exact.
    let deadline = Instant::now() + WAIT;
    let metrics = loop {
        let (code, metrics) = http_get(port, "/metrics");
        assert_eq!(code, 200);
        if sample(&metrics, "fedmsg_relay_forwarded_total") >= before + 3 {
            break metrics;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        std::thread::yield_now();
    };
    assert_eq!(sample(&metrics, "fedmsg_relay_forwarded_total"), before + 3);
    assert_eq!(sample(&metrics, "fedmsg_relay_outbound_subscribers"), 1);
    assert!(
        metrics.contains("# TYPE fedmsg_relay_forwarded_total counter"),
        "{metrics}"
    );
    assert_eq!(http_get(port, "/nothing").0, 404);

    // Live: OK, exit 0, with the endpoints too.
    let (code, out) = check(&bus, &[]);
    assert_eq!(
        (code, out.as_str()),
        (0, "FEDMSG OK - 1 of 1 services healthy\n")
    );
    let (code, out) = check(&bus, &["--endpoints"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("FEDMSG OK - 1 of 1 services healthy, 2 of 2 endpoints reachable"),
        "{out}"
    );
    // A service the configuration does not name: UNKNOWN.
    let (code, out) = check(&bus, &["--service", "gateway"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("gateway: no address for it under [metrics]"),
        "{out}"
    );

    // Dead: CRITICAL, exit 2, one line per problem.
    relay.interrupt();
    assert!(relay.wait_exit(WAIT).success());
    let (code, out) = check(&bus, &["--endpoints", "--timeout", "2"]);
    assert_eq!(code, 2, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0]
            .starts_with("FEDMSG CRITICAL - 0 of 1 services healthy, 0 of 2 endpoints reachable"),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("CRITICAL: relay: no answer on 127.0.0.1:{port}"))),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("CRITICAL: relay_outbound: cannot connect to tcp://127.0.0.1:")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("CRITICAL: relay_inbound: cannot connect to tcp://127.0.0.1:")),
        "{out}"
    );
    assert_eq!(lines.len(), 4, "{out}");
}

#[test]
fn metrics_addresses_must_be_loopback() {
    let bus = Bus::new("", "");
    let out = bus
        .command("fedmsg-relay")
        .args(["--metrics", "0.0.0.0:9941"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--metrics")
            && stderr.contains("metrics.relay")
            && stderr.contains("0.0.0.0:9941")
            && stderr.contains("loopback"),
        "{stderr}"
    );
}

#[test]
fn fedmsg_check_warns_of_a_degraded_service_and_a_missing_publisher() {
    let (metrics, gateway_port, dead) = (free_port(), free_port(), free_port());
    let bus = Bus::new(
        &format!("[metrics]\ngateway = \"127.0.0.1:{metrics}\""),
        &format!("\"svc.host\" = \"tcp://127.0.0.1:{dead}\""),
    );
    // No relay and no publisher yet: the gateway runs but reads nothing.
    let mut gateway = Proc::spawn({
        let mut command = bus.command("fedmsg-gateway");
        command.args(["--host", "127.0.0.1", "--port", &gateway_port.to_string()]);
        command
    });
    gateway.wait_stderr("ready", WAIT);
    let (code, out) = check(&bus, &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        "FEDMSG WARNING - 0 of 1 services healthy\nWARNING: gateway: degraded: connected to no publisher endpoint\n"
    );
    // With the relay up the gateway connects to it: healthy again.
    let _relay = bus.start_relay();
    let deadline = Instant::now() + WAIT;
    while check(&bus, &[]).0 != 0 {
        assert!(
            Instant::now() < deadline,
            "the gateway never became healthy"
        );
        std::thread::yield_now();
    }
    // Per endpoint, the metrics say which publisher is missing, and count
    // what each one delivered.
    let metric = |name: &str, publisher: &str, port: u16| {
        let (_, text) = http_get(metrics, "/metrics");
        sample(
            &text,
            &format!("fedmsg_gateway_bus_endpoint_{name}{{name=\"{publisher}\",endpoint=\"tcp://127.0.0.1:{port}\"}}"),
        )
    };
    assert_eq!(metric("connected", "svc.host", dead), 0);
    assert_eq!(metric("connected", "relay_outbound", bus.relay_out), 1);
    let before = metric("received_total", "relay_outbound", bus.relay_out);
    for _ in 0..3 {
        let status = bus
            .command("fedmsg-logger")
            .args(["--message", "counted"])
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let deadline = Instant::now() + WAIT;
    while metric("received_total", "relay_outbound", bus.relay_out) < before + 3 {
        assert!(
            Instant::now() < deadline,
            "the gateway never counted 3 messages"
        );
        std::thread::yield_now();
    }
    assert_eq!(metric("received_total", "svc.host", dead), 0);
    assert_eq!(metric("lost_total", "relay_outbound", bus.relay_out), 0);
    // A publisher that is not running is a warning, not critical.
    let (code, out) = check(&bus, &["--endpoints"]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0]
            .starts_with("FEDMSG WARNING - 1 of 1 services healthy, 2 of 3 endpoints reachable"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "WARNING: svc.host: cannot connect to tcp://127.0.0.1:{dead}"
        )),
        "{out}"
    );
    gateway.interrupt();
    assert!(gateway.wait_exit(WAIT).success());
}

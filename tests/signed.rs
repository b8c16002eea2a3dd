//! Signed messages end to end: our logger and publisher sign, our tail
//! validates, and Python fedmsg 1.1.7 agrees in both directions.

use crate::util::{fixtures, free_port, python_venv, Bus, Proc, WAIT};
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn certs() -> String {
    fixtures().join("test-certs").display().to_string()
}

/// Config keys that make this host sign as shell-app01 and validate
/// against fedmsg's test CA.
fn signing_keys(extra_certnames: &str) -> String {
    let host = fedmsg::publish::short_hostname();
    format!(
        "sign_messages = true\nvalidate_signatures = true\nssldir = \"{certs}\"\nca_cert_location = \"{certs}/ca.crt\"\ncrl_location = \"{certs}/crl.pem\"\n[certnames]\n\"shell.{host}\" = \"shell-app01.phx2.fedoraproject.org\"\n{extra_certnames}\n",
        certs = certs()
    )
}

fn logger(bus: &Bus, args: &[&str]) -> std::process::Output {
    bus.command("fedmsg-logger")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Adds the signing keys to `bus`'s config file (top-level keys must
/// precede the tables, so the file is rebuilt).
fn make_signing(bus: &Bus, extra_certnames: &str) {
    let text = std::fs::read_to_string(&bus.config).unwrap();
    let (top, tables) = text.split_once("[endpoints]").unwrap();
    let keys = signing_keys(extra_certnames);
    let (key_lines, certnames) = keys.split_once("[certnames]").unwrap();
    std::fs::write(
        &bus.config,
        format!("{top}{key_lines}[endpoints]{tables}[certnames]{certnames}"),
    )
    .unwrap();
}

/// A bus whose config signs, plus a second config file for unsigned
/// publishing on the same relay.
fn signing_bus() -> (Bus, std::path::PathBuf) {
    let bus = Bus::new("", "");
    let unsigned = bus.dir.path().join("unsigned.toml");
    std::fs::copy(&bus.config, &unsigned).unwrap();
    make_signing(&bus, "");
    (bus, unsigned)
}

/// Publishes `message` unsigned (with the `unsigned` config) on `bus`'s relay.
fn unsigned_logger(bus: &Bus, unsigned: &std::path::Path, message: &str) {
    let mut command = std::process::Command::new(crate::util::bin("fedmsg-logger"));
    command
        .arg("--config")
        .arg(unsigned)
        .args(["--message", message])
        .stdin(Stdio::null());
    crate::util::isolate(&mut command, bus.dir.path());
    assert!(command.status().unwrap().success());
}

#[test]
fn tail_validates_shows_the_signer_and_drops_the_unsigned() {
    let (bus, unsigned) = signing_bus();
    let _relay = bus.start_relay();
    let mut command = bus.command("fedmsg-tail");
    command.args(["--really-pretty", "--color", "never"]);
    let mut tail = Proc::spawn(command);
    // Probe with signed messages until the tail shows one.
    let deadline = Instant::now() + WAIT;
    loop {
        let out = logger(&bus, &["--message", "signed probe"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(line) = tail.stdout_line(Duration::from_millis(200)) {
            assert!(
                line.contains("signed by shell-app01.phx2.fedoraproject.org (x509)"),
                "{line}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no signed message shown: {}",
            tail.stderr_text()
        );
    }
    while tail.stdout_line(Duration::from_millis(200)).is_some() {}
    // An unsigned message through the same relay is dropped with a reason.
    unsigned_logger(&bus, &unsigned, "not signed");
    let warning = tail.wait_stderr("invalid signature", WAIT);
    assert!(warning.contains("unsigned message"), "{warning}");
    let out = logger(&bus, &["--message", "signed again"]);
    assert!(out.status.success());
    let mut shown = Vec::new();
    loop {
        let line = tail.expect_line();
        let done = line.contains("signed again");
        shown.push(line);
        if done {
            break;
        }
    }
    assert!(!shown.iter().any(|l| l.contains("not signed")), "{shown:?}");
}

#[test]
fn show_invalid_marks_instead_of_dropping() {
    let (bus, unsigned) = signing_bus();
    let _relay = bus.start_relay();
    let mut command = bus.command("fedmsg-tail");
    command.args(["--query", "msg.log", "--show-invalid"]);
    let mut tail = Proc::spawn(command);
    let deadline = Instant::now() + WAIT;
    loop {
        unsigned_logger(&bus, &unsigned, "plain");
        if let Some(line) = tail.stdout_line(Duration::from_millis(200)) {
            assert!(
                line.ends_with("INFO] INVALID (unsigned message) plain"),
                "{line}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "nothing shown");
    }
}

#[test]
fn format_templates_show_the_verdict_and_the_signer() {
    let (bus, unsigned) = signing_bus();
    let _relay = bus.start_relay();
    let mut command = bus.command("fedmsg-tail");
    command.args([
        "--format",
        "{verdict|unchecked}|{signer|nobody}|{msg.log}",
        "--show-invalid",
    ]);
    let mut tail = Proc::spawn(command);
    let deadline = Instant::now() + WAIT;
    loop {
        let out = logger(&bus, &["--message", "signed probe"]);
        assert!(out.status.success());
        if let Some(line) = tail.stdout_line(Duration::from_millis(200)) {
            assert_eq!(
                line,
                "valid|shell-app01.phx2.fedoraproject.org|signed probe"
            );
            break;
        }
        assert!(Instant::now() < deadline, "nothing shown");
    }
    while tail.stdout_line(Duration::from_millis(200)).is_some() {}
    unsigned_logger(&bus, &unsigned, "plain");
    assert_eq!(tail.expect_line(), "invalid: unsigned message|nobody|plain");
}

#[test]
fn signing_without_a_certificate_fails_at_start() {
    let bus = Bus::new(
        &format!("sign_messages = true\nssldir = \"{}\"", certs()),
        "",
    );
    let out = logger(&bus, &["--message", "x"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let host = fedmsg::publish::short_hostname();
    assert!(
        stderr.contains(&format!("[certnames] has no entry for `shell.{host}`")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("cannot reach"),
        "checked before connecting: {stderr}"
    );
}

fn python_config(bus: &Bus, endpoints: &str, certnames: &str) {
    let dir = bus.dir.path().join("fedmsg.d");
    std::fs::create_dir_all(&dir).unwrap();
    let certs = certs();
    let text = format!(
        "config = dict(\n    topic_prefix='org.fedoraproject',\n    environment='dev',\n    endpoints={{'relay_outbound': ['tcp://127.0.0.1:{out}'], {endpoints}}},\n    relay_inbound=['tcp://127.0.0.1:{inb}'],\n    sign_messages=True,\n    validate_signatures=True,\n    zmq_enabled=True,\n    ssldir='{certs}',\n    ca_cert_location='{certs}/ca.crt',\n    crl_location='{certs}/crl.pem',\n    certnames={{{certnames}}},\n)\n",
        out = bus.relay_out,
        inb = bus.relay_in,
    );
    std::fs::write(dir.join("test.py"), text).unwrap();
}

fn python(venv: &std::path::Path, bus: &Bus, program: &str) -> std::process::Command {
    let mut command = std::process::Command::new(venv.join("bin").join(program));
    crate::util::isolate(&mut command, bus.dir.path());
    command.env("PYTHONUNBUFFERED", "1");
    command
}

#[test]
fn python_fedmsg_accepts_our_x509_signatures() {
    let Some(venv) = python_venv() else { return };
    let port = free_port();
    let endpoint = format!("\"rust.host\" = \"tcp://127.0.0.1:{port}\"");
    let bus = Bus::new("", &endpoint);
    make_signing(
        &bus,
        "\"rust.host\" = \"shell-app01.phx2.fedoraproject.org\"",
    );
    python_config(
        &bus,
        &format!("'rust.host': ['tcp://127.0.0.1:{port}']"),
        "",
    );
    let mut python_tail = Proc::spawn(python(&venv, &bus, "fedmsg-tail"));
    // Python logs its CA loading on stdout too; wait for the message.
    let line = crate::util::publish_until_shown(
        &bus,
        "rust.host",
        "signed",
        &json!({"hello": "signed", "f": 1.5, "u": "é"}),
        &mut python_tail,
        |l| l.contains("'hello'"),
    );
    assert!(
        line.contains("'crypto': 'x509'") && line.contains("'hello': 'signed'"),
        "{line}"
    );
    assert!(
        !python_tail.stderr_text().contains("invalid"),
        "Python reported an invalid message"
    );
}

#[test]
fn our_tail_accepts_python_signed_messages() {
    let Some(venv) = python_venv() else { return };
    let port = free_port();
    let bus = Bus::new("", &format!("\"pysvc.host\" = \"tcp://127.0.0.1:{port}\""));
    make_signing(&bus, "");
    python_config(
        &bus,
        &format!("'pysvc.host': ['tcp://127.0.0.1:{port}']"),
        "'pysvc.host': 'shell-app01.phx2.fedoraproject.org'",
    );
    let mut tail = bus.command("fedmsg-tail");
    tail.args([
        "--json",
        "--count",
        "1",
        "--topic",
        "org.fedoraproject.dev.pymod",
    ]);
    let mut tail = Proc::spawn(tail);
    let script = "import fedmsg, time\nfedmsg.init(name='pysvc.host')\nfor n in range(400):\n    fedmsg.publish(topic='hello', modname='pymod', msg={'n': n, 'x': 1.0})\n    time.sleep(0.05)\n";
    let mut publisher = python(&venv, &bus, "python");
    publisher.args(["-c", script]);
    let _publisher = Proc::spawn(publisher);
    let value: Value = serde_json::from_str(&tail.expect_line()).unwrap();
    assert_eq!(value["crypto"], "x509");
    assert!(value["signature"].is_string());
    assert_eq!(tail.wait_exit(WAIT).code(), Some(0));
    assert!(!tail.stderr_text().contains("invalid signature"));
}

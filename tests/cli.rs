//! Our binaries as real processes: logger → relay → tail, formats, exit
//! codes, pipes and signals.

use crate::util::{free_port, Bus, Proc, WAIT};
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn run_logger(bus: &Bus, args: &[&str], stdin: &str) -> std::process::Output {
    let mut command = bus.command("fedmsg-logger");
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, stdin.as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn logger_lines_reach_the_tail_through_the_relay() {
    let bus = Bus::new("", "");
    let _relay = bus.start_relay();
    let mut tail = bus.start_tail_ready(&[]);
    let out = run_logger(&bus, &[], "Hello world\n  second line  \n\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = json(&tail.expect_line());
    assert_eq!(first["topic"], "org.fedoraproject.dev.logger.log");
    assert_eq!(first["msg"], serde_json::json!({"log": "Hello world"}));
    assert_eq!(first["i"], 1);
    let second = json(&tail.expect_line());
    assert_eq!(second["msg"]["log"], "second line", "lines are stripped");
    assert_eq!(second["i"], 2);
    let third = json(&tail.expect_line());
    assert_eq!(
        third["msg"]["log"], "",
        "a blank line is a message, as in fedmsg"
    );

    let out = run_logger(
        &bus,
        &["--json-input", "--topic", "repo.update", "--modname", "git"],
        "{\"a\":\n [1, 2.0]}\n",
    );
    assert!(out.status.success());
    let doc = json(&tail.expect_line());
    assert_eq!(doc["topic"], "org.fedoraproject.dev.git.repo.update");
    assert_eq!(doc["msg"], serde_json::json!({"a": [1, 2.0]}));

    let out = run_logger(&bus, &["--json-lines"], "{\"n\": 1}\n\n{\"n\": 2}\n");
    assert!(out.status.success());
    assert_eq!(json(&tail.expect_line())["msg"]["n"], 1);
    assert_eq!(json(&tail.expect_line())["msg"]["n"], 2);

    let out = run_logger(&bus, &["--message", "from a flag"], "ignored\n");
    assert!(out.status.success());
    assert_eq!(json(&tail.expect_line())["msg"]["log"], "from a flag");
}

#[test]
fn tail_follows_a_restarted_publisher() {
    let bus = Bus::new("", "");
    let relay = bus.start_relay();
    let mut tail = bus.start_tail_ready(&[]);
    // The relay is the tail's publisher: kill it and start a new process on
    // the same address; the tail must reconnect by itself.
    drop(relay);
    let _relay = bus.start_relay();
    let deadline = Instant::now() + WAIT;
    loop {
        let out = run_logger(&bus, &["--message", "after restart"], "");
        assert!(out.status.success());
        if let Some(line) = tail.stdout_line(Duration::from_millis(200)) {
            assert_eq!(json(&line)["msg"]["log"], "after restart");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tail never reconnected: {}",
            tail.stderr_text()
        );
    }
}

#[test]
fn hundred_one_shot_loggers_all_arrive() {
    let bus = Bus::new("", "");
    let _relay = bus.start_relay();
    let mut tail = bus.start_tail_ready(&[]);
    let mut times = Vec::new();
    for n in 0..100 {
        let started = Instant::now();
        let out = run_logger(&bus, &["--message", &format!("shot {n}")], "");
        times.push(started.elapsed());
        assert!(
            out.status.success(),
            "run {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let line = json(&tail.expect_line());
        seen.insert(line["msg"]["log"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 100);
    times.sort();
    eprintln!(
        "one-shot fedmsg-logger: median {:?}, max {:?} (100 runs)",
        times[50], times[99]
    );
}

#[test]
fn logger_without_a_relay_fails_in_bounded_time() {
    let bus = Bus::new("", "");
    let started = Instant::now();
    let out = run_logger(&bus, &["--timeout", "1"], "lost?\n");
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach fedmsg-relay")
            && stderr.contains(&format!("127.0.0.1:{}", bus.relay_in)),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn logger_refuses_invalid_json_with_exit_2() {
    let bus = Bus::new("", "");
    let out = run_logger(&bus, &["--json-input", "--message", "{nope"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--message"));
    let out = run_logger(&bus, &["--json-input"], "[1,");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("standard input"));
    let _relay = bus.start_relay();
    let out = run_logger(&bus, &["--json-lines"], "{\"ok\": 1}\n{bad\n");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
}

fn tail_with(bus: &Bus, args: &[&str]) -> Proc {
    tail_probed(bus, args, &["--message", "probe", "--topic", "probe"])
}

/// Starts `fedmsg-tail` with `args` and runs `fedmsg-logger` with `probe`
/// until the tail shows something, then drops the rest of the probes'
/// output (multi-line formats, probes in flight), so later messages cannot
/// be lost to a slow joiner.
fn tail_probed(bus: &Bus, args: &[&str], probe: &[&str]) -> Proc {
    let mut command = bus.command("fedmsg-tail");
    command.args(args);
    let mut tail = Proc::spawn(command);
    let deadline = Instant::now() + WAIT;
    loop {
        let out = run_logger(bus, probe, "");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if tail.stdout_line(Duration::from_millis(200)).is_some() {
            while tail.stdout_line(Duration::from_millis(150)).is_some() {}
            return tail;
        }
        assert!(
            Instant::now() < deadline,
            "tail never showed a probe: {}",
            tail.stderr_text()
        );
    }
}

fn lines_until(tail: &mut Proc, needle: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = tail.expect_line();
        let done = line.contains(needle);
        lines.push(line);
        if done {
            return lines;
        }
    }
}

#[test]
fn tail_formats_match_fedmsg() {
    let bus = Bus::new("", "");
    let _relay = bus.start_relay();

    let mut tail = tail_with(&bus, &[]);
    run_logger(&bus, &["--message", "Hello world"], "");
    let line = tail.expect_line();
    // fedmsg's fields, plus the incarnation that scopes `i`.
    assert!(
        line.contains("][fedmsg.commands    INFO] {'i': 1, 'incarnation': '"),
        "{line}"
    );
    assert!(
        line.contains("', 'msg': {'log': 'Hello world'}, 'msg_id': '"),
        "{line}"
    );
    assert!(
        line.ends_with(&format!(
            "'topic': 'org.fedoraproject.dev.logger.log', 'username': '{}'}}",
            user()
        )),
        "{line}"
    );

    let mut tail = tail_with(&bus, &["--terse"]);
    run_logger(&bus, &["--message", "Hello world"], "");
    let lines = lines_until(&mut tail, "Hello world");
    assert_eq!(
        lines.last().unwrap(),
        &format!("logger.log -- Hello world ({}) ", user())
    );

    let mut tail = tail_with(&bus, &["--query", "msg.log,topic,i"]);
    run_logger(&bus, &["--message", "Hello world"], "");
    let line = tail.expect_line();
    assert!(
        line.ends_with("INFO] Hello world, org.fedoraproject.dev.logger.log, 1"),
        "{line}"
    );

    let mut tail = tail_with(&bus, &["--really-pretty", "--color", "always"]);
    run_logger(&bus, &["--message", "hello"], "");
    let lines = lines_until(&mut tail, "}");
    let text = lines.join("\n");
    assert!(
        text.contains("\u{1b}[33m\"log\"\u{1b}[39;49;00m: \u{1b}[33m\"hello\"\u{1b}[39;49;00m"),
        "{text}"
    );

    let mut tail = tail_with(&bus, &["--really-pretty", "--color", "never"]);
    run_logger(&bus, &["--message", "plain"], "");
    let lines = lines_until(&mut tail, "}");
    let text = lines.join("\n");
    assert!(
        text.contains("  \"msg\": {\n    \"log\": \"plain\"\n  },") && !text.contains('\u{1b}'),
        "{text}"
    );

    let mut tail = tail_with(&bus, &["--pretty"]);
    run_logger(&bus, &["--message", "Hello world"], "");
    let lines = lines_until(&mut tail, "'username'");
    assert_eq!(lines[1], "{'i': 1,");
    assert!(lines[2].starts_with(" 'incarnation': '"), "{lines:?}");
    assert_eq!(lines[3], " 'msg': {'log': 'Hello world'},");
}

fn user() -> String {
    fedmsg::envelope::current_username()
}

#[test]
fn tail_topic_prefixes_and_default_heartbeat_exclusion() {
    let bus = Bus::new("", "");
    let _relay = bus.start_relay();
    let mut tail = tail_with(
        &bus,
        &[
            "--json",
            "--topic",
            "org.fedoraproject.dev.keep",
            "--topic",
            "org.fedoraproject.dev.logger.probe",
        ],
    );
    for (modname, topic) in [
        ("drop", "x"),
        ("keep", "a"),
        ("keep", "_heartbeat"),
        ("keep", "b"),
    ] {
        let out = run_logger(
            &bus,
            &["--message", topic, "--modname", modname, "--topic", topic],
            "",
        );
        assert!(out.status.success());
    }
    assert_eq!(json(&tail.expect_line())["msg"]["log"], "a");
    assert_eq!(
        json(&tail.expect_line())["msg"]["log"],
        "b",
        "other prefixes and _heartbeat are not shown"
    );

    let mut tail = tail_with(
        &bus,
        &[
            "--json",
            "--include",
            "\\.(keep|logger)\\.",
            "--exclude",
            "secret",
        ],
    );
    for topic in ["open", "secret", "open2"] {
        run_logger(
            &bus,
            &["--message", topic, "--modname", "keep", "--topic", topic],
            "",
        );
        run_logger(
            &bus,
            &["--message", topic, "--modname", "other", "--topic", topic],
            "",
        );
    }
    assert_eq!(json(&tail.expect_line())["msg"]["log"], "open");
    assert_eq!(json(&tail.expect_line())["msg"]["log"], "open2");
}

#[test]
fn tail_count_exits_after_n_messages() {
    let bus = Bus::new("", "");
    let _relay = bus.start_relay();
    let mut command = bus.command("fedmsg-tail");
    command.args([
        "--json",
        "--count",
        "2",
        "--topic",
        "org.fedoraproject.dev.logger.log",
    ]);
    let mut tail = Proc::spawn(command);
    // Keep sending until the tail has had its two messages and exited.
    let deadline = Instant::now() + WAIT;
    let mut sent = 0;
    while tail.child.try_wait().unwrap().is_none() {
        run_logger(&bus, &["--message", &format!("n{sent}")], "");
        sent += 1;
        assert!(
            Instant::now() < deadline,
            "tail did not stop after --count 2"
        );
    }
    assert_eq!(tail.wait_exit(WAIT).code(), Some(0));
    let lines = tail.remaining_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(sent >= 2);
}

#[test]
fn tail_without_endpoints_says_so() {
    let bus = Bus::new("", "");
    // A file that defines [endpoints] replaces the built-in ones entirely.
    std::fs::write(&bus.config, "[endpoints]\n").unwrap();
    let out = bus.command("fedmsg-tail").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no endpoints to subscribe to"), "{stderr}");
}

#[test]
fn tail_timeout_has_its_own_exit_code_and_ctrl_c_is_clean() {
    let bus = Bus::new("", "");
    let mut command = bus.command("fedmsg-tail");
    command.args(["--timeout", "0.3"]);
    let mut tail = Proc::spawn(command);
    assert_eq!(tail.wait_exit(WAIT).code(), Some(124));

    let _relay = bus.start_relay();
    let tail = tail_with(&bus, &["--json"]);
    let mut tail = tail;
    tail.interrupt();
    let status = tail.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", tail.stderr_text());
}

#[test]
fn tail_into_a_closed_pipe_exits_cleanly() {
    let bus = Bus::new("", "");
    let _relay = bus.start_relay();
    let _warm = tail_with(&bus, &["--json"]);
    let script = format!(
        "'{}' --config '{}' --json | head -n 1 >/dev/null; echo \"tail exit ${{PIPESTATUS[0]}}\"",
        crate::util::bin("fedmsg-tail").display(),
        bus.config.display()
    );
    let mut command = std::process::Command::new("bash");
    command.args(["-c", &script]);
    crate::util::isolate(&mut command, bus.dir.path());
    let mut shell = Proc::spawn(command);
    // Keep messages coming until head has exited and tail hit the closed pipe.
    let deadline = Instant::now() + WAIT;
    let line = loop {
        run_logger(&bus, &["--message", "fill"], "");
        if let Some(line) = shell.stdout_line(Duration::from_millis(100)) {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "tail never exited: {}",
            shell.stderr_text()
        );
    };
    assert_eq!(line, "tail exit 0");
    let stderr = shell.stderr_text();
    assert!(!stderr.contains("error"), "{stderr}");
}

#[test]
fn tail_skips_bad_input_and_keeps_going() {
    let port = free_port();
    let bus = Bus::new("", &format!("\"raw.host\" = \"tcp://127.0.0.1:{port}\""));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut raw = runtime.block_on(async {
        use zeromq::Socket;
        let mut socket = zeromq::PubSocket::new();
        socket
            .bind(&format!("tcp://127.0.0.1:{port}"))
            .await
            .unwrap();
        socket
    });
    let send = |raw: &mut zeromq::PubSocket, parts: Vec<&[u8]>| {
        use zeromq::SocketSend;
        let message = zeromq::ZmqMessage::try_from(
            parts
                .into_iter()
                .map(bytes::Bytes::copy_from_slice)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        runtime.block_on(raw.send(message)).unwrap();
    };
    let mut command = bus.command("fedmsg-tail");
    command.args(["--json"]);
    let mut tail = Proc::spawn(command);
    let deadline = Instant::now() + WAIT;
    loop {
        send(&mut raw, vec![b"org.x.dev.warm", b"{\"warm\":1}"]);
        if tail.stdout_line(Duration::from_millis(100)).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "tail never connected");
    }
    while tail.stdout_line(Duration::from_millis(100)).is_some() {}
    send(&mut raw, vec![b"org.x.dev.one"]);
    send(&mut raw, vec![b"org.x.dev.t", b"\xff\xfe"]);
    send(&mut raw, vec![b"org.x.dev.t", b"not json"]);
    send(&mut raw, vec![b"org.x.dev.t", b"\"a string\""]);
    send(&mut raw, vec![b"org.x.dev.after", b"{\"after\":true}"]);
    assert_eq!(json(&tail.expect_line())["after"], true);
    let warnings = tail.wait_stderr("not_object", WAIT);
    assert!(warnings.contains("dropped malformed message"), "{warnings}");
    let stderr = tail.stderr_text();
    for reason in ["frame_count", "body_utf8", "json"] {
        assert!(stderr.contains(reason), "no {reason} warning in {stderr}");
    }
}

/// Runs `fedmsg-tail --really-pretty --count 1` on a pseudo-terminal (via
/// `script`) and returns what it printed for the first message.
fn really_pretty_on_a_terminal(bus: &Bus, no_color: bool) -> String {
    let command_line = format!(
        "'{}' --config '{}' --really-pretty --count 1",
        crate::util::bin("fedmsg-tail").display(),
        bus.config.display()
    );
    let mut command = std::process::Command::new("script");
    command.args(["-qfec", &command_line, "/dev/null"]);
    crate::util::isolate(&mut command, bus.dir.path());
    if no_color {
        command.env("NO_COLOR", "1");
    } else {
        command.env_remove("NO_COLOR");
    }
    let mut tail = Proc::spawn(command);
    let deadline = Instant::now() + WAIT;
    while tail.child.try_wait().unwrap().is_none() {
        run_logger(bus, &["--message", "tty"], "");
        assert!(
            Instant::now() < deadline,
            "tail on a terminal never got a message"
        );
        if tail.stdout_line(Duration::from_millis(50)).is_some() {
            break;
        }
    }
    tail.wait_exit(WAIT);
    tail.remaining_lines().join("\n")
}

#[test]
fn colour_follows_the_terminal_and_no_color() {
    let bus = Bus::new("", "");
    let _relay = bus.start_relay();
    let _warm = bus.start_tail_ready(&[]);
    let coloured = really_pretty_on_a_terminal(&bus, false);
    assert!(
        coloured.contains("\u{1b}[33m\"log\"\u{1b}[39;49;00m"),
        "{coloured:?}"
    );
    let plain = really_pretty_on_a_terminal(&bus, true);
    assert!(
        plain.contains("\"log\": \"tty\"") && !plain.contains('\u{1b}'),
        "{plain:?}"
    );
}

/// fedmsg-bench's scenarios with tiny counts, so the tool cannot rot (CI
/// judges that it runs and loses nothing, not its speed).
#[test]
fn fedmsg_bench_runs_every_kind_of_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let scenarios: [&[&str]; 9] = [
        &["-n", "300", "--baseline"],
        &["-n", "200", "--relay", "--baseline"],
        &["-n", "200", "--processes"],
        &["-n", "200", "--processes", "--relay", "--rate", "2000"],
        &["-n", "1", "--processes", "--publishers", "50"],
        &["-n", "3", "--oneshot"],
        &[
            "-n",
            "200",
            "--rate",
            "2000",
            "--publishers",
            "2",
            "--subscribers",
            "2",
        ],
        &["-n", "100", "--sign", "ed25519"],
        &["-n", "20", "--sign", "x509"],
    ];
    for args in scenarios {
        let mut command = std::process::Command::new(crate::util::bin("fedmsg-bench"));
        crate::util::isolate(&mut command, dir.path());
        let out = command.args(args).arg("--json").output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reports: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let ours = reports.last().unwrap();
        assert_eq!(ours["name"], "fedmsg");
        assert_eq!(ours["lost"], 0, "{args:?}: {ours}");
        assert!(ours["msgs_per_sec"].as_f64().unwrap() > 0.0);
        if args.contains(&"--baseline") {
            assert_eq!(reports[0]["name"], "raw ZeroMQ");
            assert!(ours["ratio"].as_f64().unwrap() > 0.0);
        }
        if args.contains(&"--rate") || args.contains(&"--oneshot") {
            assert!(ours["latency_us"]["p99"].as_f64().unwrap() > 0.0, "{ours}");
        }
        // Each process of the run reports its CPU and memory.
        let sides: Vec<&str> = ours["sides"]
            .as_array()
            .unwrap()
            .iter()
            .map(|side| {
                assert!(side["peak_rss_mib"].as_f64().unwrap() > 0.0, "{side}");
                side["name"].as_str().unwrap()
            })
            .collect();
        let mut wanted = vec!["fedmsg-bench"];
        if args.contains(&"--processes") || args.contains(&"--oneshot") {
            if args.contains(&"--relay") || args.contains(&"--oneshot") {
                wanted.push("fedmsg-relay");
            }
            wanted.push("fedmsg-tail 1");
        }
        assert_eq!(sides, wanted, "{args:?}");
    }
}

/// A tail whose filters let `probe` (JSON on `git.receive`) through.
fn tail_ready_for_git(bus: &Bus, args: &[&str], probe: &str) -> Proc {
    let logger = ["--json-input", "--topic", "receive", "--modname", "git"];
    tail_probed(bus, args, &[&logger[..], &["--message", probe]].concat())
}

#[test]
fn tail_filters_by_users_and_packages_and_fills_format_templates() {
    let rule = "[[meta]]\ntopic = \"git.receive\"\nsubtitle = \"{msg.user} pushed {msg.repo}\"\nlink = \"https://git.example.org/{msg.repo}\"\nusernames = [\"msg.user\"]\npackages = [\"msg.repo\"]\n";
    let bus = Bus::new(rule, "");
    let _relay = bus.start_relay();
    let probe = r#"{"user": "probe", "repo": "probe"}"#;
    let format = r"{title}|{subtitle}|{link}|{usernames}|{packages}|{msg.branch|no branch}|{time:%Y}\t{topic}";
    let mut by_user = tail_ready_for_git(
        &bus,
        &["--users", "alice, carol,probe,end", "--format", format],
        probe,
    );
    let mut by_package =
        tail_ready_for_git(&bus, &["--packages", "kernel,probe,end", "--terse"], probe);
    let mut both = tail_ready_for_git(
        &bus,
        &[
            "--users",
            "dave,probe,end",
            "--packages",
            "kernel,probe,end",
            "--format",
            "{msg.user}",
        ],
        probe,
    );
    let pushes = [
        r#"{"user": "bob", "repo": "glibc"}"#,
        r#"{"user": "alice", "repo": "kernel", "branch": "main"}"#,
        r#"{"user": "carol", "repo": "rpm"}"#,
        r#"{"user": "dave", "repo": "kernel"}"#,
        r#"{"user": "dave", "repo": "bash"}"#,
        r#"{"user": "end", "repo": "end"}"#,
    ];
    let out = run_logger(
        &bus,
        &["--json-lines", "--topic", "receive", "--modname", "git"],
        &(pushes.join("\n") + "\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Later tails' probes reach the earlier tails too.
    let shown = |tail: &mut Proc, last: &str| -> Vec<String> {
        lines_until(tail, last)
            .into_iter()
            .filter(|l| !l.contains("probe") && !l.contains("fedmsg.commands"))
            .collect()
    };
    let year = chrono::Local::now().format("%Y").to_string();
    let line = |user: &str, repo: &str, branch: &str| {
        format!("git.receive|{user} pushed {repo}|https://git.example.org/{repo}|{user}|{repo}|{branch}|{year}\torg.fedoraproject.dev.git.receive")
    };
    assert_eq!(
        shown(&mut by_user, "end pushed"),
        [
            line("alice", "kernel", "main"),
            line("carol", "rpm", "no branch"),
            line("end", "end", "no branch"),
        ]
    );
    assert_eq!(
        shown(&mut by_package, "end pushed"),
        [
            "git.receive -- alice pushed kernel https://git.example.org/kernel",
            "git.receive -- dave pushed kernel https://git.example.org/kernel",
            "git.receive -- end pushed end https://git.example.org/end",
        ]
    );
    assert_eq!(shown(&mut both, "end"), ["dave", "end"]);
}

#[test]
fn tail_refuses_a_bad_format_template() {
    let bus = Bus::new("", "");
    let out = bus
        .command("fedmsg-tail")
        .args(["--format", "{topic} {msg.log"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--format") && stderr.contains("{msg.log") && stderr.contains("closing"),
        "{stderr}"
    );
    let out = bus
        .command("fedmsg-tail")
        .args(["--format", "{topic}", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

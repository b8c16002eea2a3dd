//! Helpers: free ports, config files, and our binaries (or Python fedmsg's)
//! as child processes whose output can be awaited line by line with a
//! timeout. Nothing here sleeps to synchronise.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Path of one of our binaries.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "fedmsg-tail" => PathBuf::from(env!("CARGO_BIN_EXE_fedmsg-tail")),
        "fedmsg-logger" => PathBuf::from(env!("CARGO_BIN_EXE_fedmsg-logger")),
        "fedmsg-relay" => PathBuf::from(env!("CARGO_BIN_EXE_fedmsg-relay")),
        "fedmsg-config" => PathBuf::from(env!("CARGO_BIN_EXE_fedmsg-config")),
        "fedmsg-verify" => PathBuf::from(env!("CARGO_BIN_EXE_fedmsg-verify")),
        "fedmsg-certs" => PathBuf::from(env!("CARGO_BIN_EXE_fedmsg-certs")),
        "fedmsg-bench" => PathBuf::from(env!("CARGO_BIN_EXE_fedmsg-bench")),
        "fedmsg-announce" => PathBuf::from(env!("CARGO_BIN_EXE_fedmsg-announce")),
        "fedmsg-signing-relay" => PathBuf::from(env!("CARGO_BIN_EXE_fedmsg-signing-relay")),
        "fedmsg-trigger" => PathBuf::from(env!("CARGO_BIN_EXE_fedmsg-trigger")),
        "fedmsg-gateway" => PathBuf::from(env!("CARGO_BIN_EXE_fedmsg-gateway")),
        "fedmsg-check" => PathBuf::from(env!("CARGO_BIN_EXE_fedmsg-check")),
        other => panic!("unknown binary {other}"),
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The fixtures directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A scratch directory with a config file for one bus on loopback.
pub struct Bus {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub relay_in: u16,
    pub relay_out: u16,
}

impl Bus {
    /// A bus whose relay listens on fresh ports; `extra` is appended to the
    /// top-level keys, `endpoints` to the [endpoints] table.
    pub fn new(extra: &str, endpoints: &str) -> Bus {
        let dir = tempfile::tempdir().expect("temp dir");
        let relay_in = free_port();
        let relay_out = free_port();
        let config = dir.path().join("bus.toml");
        let text = format!(
            "relay_inbound = \"tcp://127.0.0.1:{relay_in}\"\ntimeout = 5\n{extra}\n[endpoints]\nrelay_outbound = [\"tcp://127.0.0.1:{relay_out}\"]\n{endpoints}\n"
        );
        std::fs::write(&config, text).expect("write config");
        Bus {
            dir,
            config,
            relay_in,
            relay_out,
        }
    }

    /// Our binary with `--config` pointing at this bus, isolated from the
    /// machine's configuration.
    pub fn command(&self, name: &str) -> Command {
        let mut command = Command::new(bin(name));
        command.arg("--config").arg(&self.config);
        isolate(&mut command, self.dir.path());
        command
    }

    /// Starts our relay and waits until it reports ready.
    pub fn start_relay(&self) -> Proc {
        let mut relay = Proc::spawn(self.command("fedmsg-relay"));
        relay.wait_stderr("ready", WAIT);
        relay
    }

    /// Starts `fedmsg-tail --json` (plus `args`) and makes sure it receives
    /// messages sent through the relay: logger probes are sent until one
    /// shows up, so later messages cannot be lost to a slow joiner.
    pub fn start_tail_ready(&self, args: &[&str]) -> Proc {
        let mut command = self.command("fedmsg-tail");
        command.arg("--json").args(args);
        let mut tail = Proc::spawn(command);
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self
                .command("fedmsg-logger")
                .args(["--message", "probe", "--topic", "probe"])
                .stdin(Stdio::null())
                .status()
                .expect("run logger");
            assert!(status.success(), "probe logger failed");
            if let Some(line) = tail.stdout_line(Duration::from_millis(200)) {
                assert!(line.contains("probe"), "unexpected first line {line}");
                // Drain any further probes that were in flight.
                while tail.stdout_line(Duration::from_millis(100)).is_some() {}
                return tail;
            }
            assert!(
                Instant::now() < deadline,
                "tail never received a probe; stderr: {}",
                tail.stderr_text()
            );
        }
    }
}

/// `GET path` on 127.0.0.1:`port` (a `/metrics` or `/health`): status and body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    runtime
        .block_on(fedmsg::metrics::get(address, path, WAIT))
        .unwrap_or_else(|e| panic!("GET {path} on {address}: {e}"))
}

/// The value of an unlabelled sample in Prometheus text.
pub fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{metrics}"))
}

/// Keeps a child away from the machine's /etc, ~ and ./fedmsg.d config.
pub fn isolate(command: &mut Command, dir: &Path) {
    command
        .current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .env("HOME", dir)
        .env_remove("FEDMSG_CONFIG")
        .env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("FEDMSG_") {
            command.env_remove(key);
        }
    }
}

/// A child process with its output readable line by line, with timeouts.
/// Killed when dropped.
pub struct Proc {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stdout_pending: std::collections::VecDeque<String>,
    stderr: Receiver<String>,
    stderr_seen: Vec<String>,
}

fn lines(reader: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            match line {
                Ok(line) => {
                    if sender.send(line).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    receiver
}

impl Proc {
    pub fn spawn(mut command: Command) -> Proc {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let stdout = lines(child.stdout.take().expect("stdout"));
        let stderr = lines(child.stderr.take().expect("stderr"));
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            stdout,
            stdout_pending: Default::default(),
            stderr,
            stderr_seen: Vec::new(),
        }
    }

    pub fn write_stdin(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(text.as_bytes()).expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// The next stdout line, or None after `timeout`.
    pub fn stdout_line(&mut self, timeout: Duration) -> Option<String> {
        self.stdout_pending
            .pop_front()
            .or_else(|| self.stdout.recv_timeout(timeout).ok())
    }

    /// The next stdout line; fails the test after `WAIT`.
    pub fn expect_line(&mut self) -> String {
        if let Some(line) = self.stdout_pending.pop_front() {
            return line;
        }
        match self.stdout.recv_timeout(WAIT) {
            Ok(line) => line,
            Err(_) => panic!("no output within {WAIT:?}; stderr: {}", self.stderr_text()),
        }
    }

    /// Waits for a stderr line containing `needle`.
    pub fn wait_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        if let Some(line) = self.stderr_seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line containing {needle:?} within {timeout:?}; saw: {:?}",
                    self.stderr_seen
                ),
            }
        }
    }

    /// Everything on stderr so far.
    pub fn stderr_text(&mut self) -> String {
        while let Ok(line) = self.stderr.try_recv() {
            self.stderr_seen.push(line);
        }
        self.stderr_seen.join("\n")
    }

    /// Waits for the process to exit; fails the test after `timeout`.
    /// Stdout lines read while waiting stay available to `stdout_line`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        // The stdout reader ends when the process closes its end of the
        // pipe, i.e. when it exits: wait for that event, then reap.
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => self.stdout_pending.push_back(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "process did not exit within {timeout:?}; stderr: {}",
                    self.stderr_text()
                ),
            }
        }
        self.close_stdin();
        self.child.wait().expect("wait")
    }

    /// All remaining stdout lines (after `wait_exit`).
    pub fn remaining_lines(&mut self) -> Vec<String> {
        self.stdout_pending.drain(..).collect()
    }

    /// Sends SIGINT (Ctrl-C).
    pub fn interrupt(&self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python virtualenv with fedmsg 1.1.7, if it was set up
/// (`scripts/test.sh` does). Interop tests fail loudly without it in CI.
pub fn python_venv() -> Option<PathBuf> {
    let dir = std::env::var_os("PYTHON_FEDMSG_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-fedmsg"));
    if dir.join("bin/python").exists() {
        Some(dir)
    } else if std::env::var_os("CI").is_some() {
        panic!(
            "the Python fedmsg venv is missing at {}: run scripts/test.sh",
            dir.display()
        );
    } else {
        None
    }
}

/// A small deterministic generator (xorshift), so random tests reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Publishes `msg` from a publisher bound as `name` in `bus`'s config
/// until `reader` prints a line accepted by `wanted` (a Python fedmsg-tail
/// cannot tell us when it is connected); returns that line.
pub fn publish_until_shown(
    bus: &Bus,
    name: &str,
    topic: &str,
    msg: &serde_json::Value,
    reader: &mut Proc,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = fedmsg::Loader::isolated()
        .file(Some(bus.config.clone()))
        .load()
        .unwrap();
    let publisher = runtime
        .block_on(fedmsg::Publisher::bind(&config, name))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        runtime
            .block_on(publisher.publish(topic, "rusty", msg))
            .unwrap();
        if let Some(line) = reader
            .stdout_line(Duration::from_millis(100))
            .filter(|l| wanted(l))
        {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "the reader showed nothing: {}",
            reader.stderr_text()
        );
    }
}

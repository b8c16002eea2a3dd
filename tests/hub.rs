//! The hub over real sockets: consumers that panic, fail, stall and
//! publish; resuming from a state file; the example consumer as a process.

use crate::util::{bin, free_port, http_get, Bus, Proc, WAIT};
use fedmsg::consumer::{ConsumeError, Consumer, TopicPattern};
use fedmsg::envelope::Message;
use fedmsg::hub::{Hub, HubContext, HubStats};
use fedmsg::{Config, Loader, Publisher};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

fn load(bus: &Bus) -> Config {
    Loader::isolated()
        .file(Some(bus.config.clone()))
        .load()
        .expect("test config")
}

fn pattern(text: &str) -> TopicPattern {
    text.parse().expect("pattern")
}

fn n_of(message: &Message) -> i64 {
    message.msg()["n"].as_i64().unwrap_or(-1)
}

/// Sends (topic, n) of every message it consumes.
struct Recorder {
    name: &'static str,
    topics: Vec<TopicPattern>,
    seen: mpsc::UnboundedSender<(String, i64)>,
}

impl Consumer for Recorder {
    fn name(&self) -> &str {
        self.name
    }
    fn topics(&self) -> Vec<TopicPattern> {
        self.topics.clone()
    }
    async fn consume(&mut self, message: &Message, _: &HubContext) -> Result<(), ConsumeError> {
        let _ = self.seen.send((message.topic().to_owned(), n_of(message)));
        Ok(())
    }
}

/// Panics on every even tick.
struct Panicker;

impl Consumer for Panicker {
    fn name(&self) -> &str {
        "panicker"
    }
    fn topics(&self) -> Vec<TopicPattern> {
        vec![pattern("org.fedoraproject.dev.test.tick")]
    }
    async fn consume(&mut self, message: &Message, _: &HubContext) -> Result<(), ConsumeError> {
        let n = n_of(message);
        assert!(n % 2 == 1, "even tick {n}");
        Ok(())
    }
}

/// Fails on every tick.
struct Failer;

impl Consumer for Failer {
    fn name(&self) -> &str {
        "failer"
    }
    fn topics(&self) -> Vec<TopicPattern> {
        vec![pattern("org.fedoraproject.*.test.#")]
    }
    async fn consume(&mut self, message: &Message, _: &HubContext) -> Result<(), ConsumeError> {
        if message.topic().ends_with(".tick") {
            return Err(format!("cannot handle tick {}", n_of(message)).into());
        }
        Ok(())
    }
}

/// Publishes an echo of every tick.
struct Echo;

impl Consumer for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn topics(&self) -> Vec<TopicPattern> {
        vec![pattern("org.fedoraproject.*.test.tick")]
    }
    async fn consume(&mut self, message: &Message, hub: &HubContext) -> Result<(), ConsumeError> {
        hub.publish("echo", "hub", &json!({ "n": n_of(message) }))
            .await?;
        Ok(())
    }
}

/// Never finishes its first message.
struct Stuck;

impl Consumer for Stuck {
    fn name(&self) -> &str {
        "stuck"
    }
    fn topics(&self) -> Vec<TopicPattern> {
        vec![pattern("#")]
    }
    async fn consume(&mut self, _: &Message, _: &HubContext) -> Result<(), ConsumeError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

type Running = (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<Arc<HubStats>, fedmsg::hub::HubError>>,
);

fn start(hub: Hub) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(hub.run(async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

async fn stop((stop, task): Running) -> Arc<HubStats> {
    let _ = stop.send(());
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the hub did not stop in time")
        .expect("hub task")
        .expect("hub run")
}

/// Publishes probes on `publisher` until `seen` reports one.
async fn probe_until_heard(
    publisher: &Publisher,
    modname: &str,
    seen: &mut mpsc::UnboundedReceiver<(String, i64)>,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        publisher
            .publish("probe", modname, &json!({ "n": -1 }))
            .await
            .unwrap();
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), seen.recv()).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hub never heard {modname}"
        );
    }
    // Probes still in flight.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), seen.recv()).await {}
}

async fn expect_n(seen: &mut mpsc::UnboundedReceiver<(String, i64)>, topic: &str, n: i64) {
    loop {
        let (got, value) = tokio::time::timeout(WAIT, seen.recv())
            .await
            .unwrap_or_else(|_| panic!("no {topic} {n} in time"))
            .expect("recorder gone");
        if got.ends_with(".probe") {
            continue;
        }
        assert_eq!((got.as_str(), value), (topic, n));
        return;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_consumer_does_not_stop_the_others() {
    let (port, hub_port) = (free_port(), free_port());
    let bus = Bus::new(
        "",
        &format!(
            "\"test.host\" = \"tcp://127.0.0.1:{port}\"\n\"hub.host\" = \"tcp://127.0.0.1:{hub_port}\""
        ),
    );
    let config = load(&bus);
    let publisher = Publisher::bind(&config, "test.host").await.unwrap();
    let hub_publisher = Publisher::bind(&config, "hub.host").await.unwrap();
    let (ticks_tx, mut ticks) = mpsc::unbounded_channel();
    let (echoes_tx, mut echoes) = mpsc::unbounded_channel();
    const QUEUE: usize = 8;
    let hub = Hub::new(&config)
        .consumer(Panicker)
        .consumer(Failer)
        .consumer(Stuck)
        .consumer(Recorder {
            name: "ticks",
            topics: vec![pattern("org.fedoraproject.dev.test")],
            seen: ticks_tx,
        })
        .consumer(Echo)
        .consumer(Recorder {
            name: "echoes",
            topics: vec![pattern("org.fedoraproject.dev.hub.#")],
            seen: echoes_tx,
        })
        .publisher(hub_publisher.clone())
        .queue_size(QUEUE)
        .stall_timeout(Duration::from_millis(200))
        .drain_timeout(Duration::from_millis(300));
    let live = hub.stats();
    let running = start(hub);
    probe_until_heard(&publisher, "test", &mut ticks).await;
    probe_until_heard(&hub_publisher, "hub", &mut echoes).await;

    const N: i64 = 100;
    for n in 0..N {
        publisher
            .publish("tick", "test", &json!({ "n": n }))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    for n in 0..N {
        expect_n(&mut ticks, "org.fedoraproject.dev.test.tick", n).await;
    }
    // The echo consumer published each tick back onto the bus.
    for n in 0..N {
        expect_n(&mut echoes, "org.fedoraproject.dev.hub.echo", n).await;
    }
    // Counters are live while the hub runs.
    let panicker = live.consumers[0].clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while panicker.panicked.load(Ordering::Relaxed) + panicker.consumed.load(Ordering::Relaxed)
        < N as u64
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }

    // Shutdown returns although one consumer never finishes.
    let stats = stop(running).await;
    let by_name = |name: &str| {
        stats
            .consumers
            .iter()
            .find(|c| c.name == name)
            .unwrap()
            .clone()
    };
    let count = |name: &str| {
        let c = by_name(name);
        [
            c.delivered.load(Ordering::Relaxed),
            c.consumed.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.panicked.load(Ordering::Relaxed),
            c.dropped.load(Ordering::Relaxed),
        ]
    };
    assert_eq!(
        count("panicker"),
        [N as u64, N as u64 / 2, 0, N as u64 / 2, 0]
    );
    let failer = count("failer");
    assert_eq!((failer[2], failer[3], failer[4]), (N as u64, 0, 0));
    assert_eq!(failer[0], failer[1] + failer[2], "every delivery handled");
    let echo = count("echo");
    assert_eq!(echo, [N as u64, N as u64, 0, 0, 0]);
    // The stalled consumer holds one message and a full queue; the rest of
    // what matched it was dropped for it alone.
    let received = stats.subscription().unwrap().received();
    let stuck = count("stuck");
    assert!(stuck[0] <= QUEUE as u64 + 1, "stuck delivered {}", stuck[0]);
    assert_eq!(stuck[0] + stuck[4], received, "stuck: delivered + dropped");
    assert_eq!(stuck[1] + stuck[2] + stuck[3], 0);
    assert_eq!(count("ticks")[4], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_resumes_where_it_stopped() {
    let (port, replay_port) = (free_port(), free_port());
    let bus = Bus::new(
        "",
        &format!("\"test.host\" = \"tcp://127.0.0.1:{port}\"\n[replay_endpoints]\n\"test.host\" = \"tcp://127.0.0.1:{replay_port}\""),
    );
    let config = load(&bus);
    let state = bus.dir.path().join("hub.state");
    let publisher = Publisher::bind(&config, "test.host").await.unwrap();
    let recorder = |seen| Recorder {
        name: "ticks",
        topics: vec![pattern("org.fedoraproject.dev.test.#")],
        seen,
    };

    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let running = start(
        Hub::new(&config)
            .consumer(recorder(seen_tx))
            .state_file(&state),
    );
    probe_until_heard(&publisher, "test", &mut seen).await;
    for n in 0..5 {
        publisher
            .publish("tick", "test", &json!({ "n": n }))
            .await
            .unwrap();
    }
    for n in 0..5 {
        expect_n(&mut seen, "org.fedoraproject.dev.test.tick", n).await;
    }
    stop(running).await;
    assert!(state.exists(), "the position is saved at shutdown");

    // Published while no hub runs.
    for n in 5..10 {
        publisher
            .publish("tick", "test", &json!({ "n": n }))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();

    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let running = start(
        Hub::new(&config)
            .consumer(recorder(seen_tx))
            .state_file(&state),
    );
    // Exactly the five it missed, from the replay service, nothing twice.
    for n in 5..10 {
        expect_n(&mut seen, "org.fedoraproject.dev.test.tick", n).await;
    }
    let stats = stop(running).await;
    assert_eq!(stats.consumers[0].consumed.load(Ordering::Relaxed), 5);
}

/// An example binary (examples/NAME.rs). `cargo test` builds examples only
/// as test harnesses; scripts/test.sh runs `cargo build --examples` first.
pub fn example(name: &str) -> std::path::PathBuf {
    let deps = bin("fedmsg-tail");
    let dir = deps.parent().expect("target dir").join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --examples` first (scripts/test.sh does)",
        path.display()
    );
    path
}

#[test]
fn the_example_consumer_runs_as_a_process() {
    let metrics = free_port();
    let bus = Bus::new(&format!("[metrics]\nhub = \"127.0.0.1:{metrics}\""), "");
    let _relay = bus.start_relay();
    let mut command = std::process::Command::new(example("consumer"));
    command.arg("--config").arg(&bus.config).args([
        "--topic",
        "org.fedoraproject.*.logger.#",
        "-v",
    ]);
    crate::util::isolate(&mut command, bus.dir.path());
    let mut consumer = Proc::spawn(command);
    // Logger probes until the hub is connected.
    let deadline = std::time::Instant::now() + WAIT;
    let first = loop {
        let status = bus
            .command("fedmsg-logger")
            .args(["--message", "it's $(rm -rf /) \"quoted\""])
            .status()
            .expect("logger");
        assert!(status.success());
        if let Some(line) = consumer.stdout_line(Duration::from_millis(200)) {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the example never printed"
        );
    };
    let line: serde_json::Value = serde_json::from_str(&first).expect("a JSON line");
    assert_eq!(line["topic"], "org.fedoraproject.dev.logger.log");
    assert_eq!(line["msg"]["log"], "it's $(rm -rf /) \"quoted\"");
    // Its counters, per consumer, and its health as fedmsg-check sees it.
    let (code, text) = http_get(metrics, "/metrics");
    assert_eq!(code, 200);
    assert!(
        text.lines().any(
            |l| l.starts_with("fedmsg_hub_consumed_total{consumer=\"printer\"} ")
                && !l.ends_with(" 0")
        ),
        "{text}"
    );
    assert!(
        text.contains("fedmsg_hub_bus_connected_endpoints 1"),
        "{text}"
    );
    let check = bus
        .command("fedmsg-check")
        .args(["--service", "hub"])
        .output()
        .expect("fedmsg-check");
    let report = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        (check.status.code(), report.as_ref()),
        (Some(0), "FEDMSG OK - 1 of 1 services healthy\n")
    );
    consumer.interrupt();
    assert!(consumer.wait_exit(WAIT).success());
    let stderr = consumer.stderr_text();
    assert!(stderr.contains("consumer stopped"), "{stderr}");
}

/// Waits at a gate before each message, then records it.
struct Gated {
    open: tokio::sync::watch::Receiver<bool>,
    seen: mpsc::UnboundedSender<(String, i64)>,
}

impl Consumer for Gated {
    fn name(&self) -> &str {
        "gated"
    }
    fn topics(&self) -> Vec<TopicPattern> {
        vec![pattern("org.fedoraproject.dev.test.#")]
    }
    async fn consume(&mut self, message: &Message, _: &HubContext) -> Result<(), ConsumeError> {
        self.open.wait_for(|open| *open).await?;
        let _ = self.seen.send((message.topic().to_owned(), n_of(message)));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_gets_messages_again_once_it_catches_up() {
    let port = free_port();
    let bus = Bus::new("", &format!("\"test.host\" = \"tcp://127.0.0.1:{port}\""));
    let config = load(&bus);
    let publisher = Publisher::bind(&config, "test.host").await.unwrap();
    let (gate, open) = tokio::sync::watch::channel(true);
    let (gated_tx, mut gated) = mpsc::unbounded_channel();
    let (ticks_tx, mut ticks) = mpsc::unbounded_channel();
    let hub = Hub::new(&config)
        .consumer(Gated {
            open,
            seen: gated_tx,
        })
        .consumer(Recorder {
            name: "ticks",
            topics: vec![pattern("org.fedoraproject.dev.test.#")],
            seen: ticks_tx,
        })
        .queue_size(4)
        .stall_timeout(Duration::from_millis(100));
    let live = hub.stats();
    let running = start(hub);
    probe_until_heard(&publisher, "test", &mut ticks).await;
    while tokio::time::timeout(Duration::from_millis(100), gated.recv())
        .await
        .is_ok()
    {}

    // The gate closes: the gated consumer holds one, queues four, stalls.
    gate.send_replace(false);
    for n in 0..20 {
        publisher
            .publish("tick", "test", &json!({ "n": n }))
            .await
            .unwrap();
    }
    for n in 0..20 {
        expect_n(&mut ticks, "org.fedoraproject.dev.test.tick", n).await;
    }
    let stats = live.consumers[0].clone();
    assert!(stats.stalled.load(Ordering::Relaxed));
    assert!(stats.dropped.load(Ordering::Relaxed) >= 15);

    // It works its queue off, and is fed again.
    gate.send_replace(true);
    let held = stats.delivered.load(Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats.consumed.load(Ordering::Relaxed) < held {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    while tokio::time::timeout(Duration::from_millis(100), gated.recv())
        .await
        .is_ok()
    {}
    for n in 0..5 {
        publisher
            .publish("after", "test", &json!({ "n": n }))
            .await
            .unwrap();
    }
    for n in 0..5 {
        expect_n(&mut gated, "org.fedoraproject.dev.test.after", n).await;
    }
    assert!(!stats.stalled.load(Ordering::Relaxed));
    let stats = stop(running).await;
    assert_eq!(stats.consumers[0].failed.load(Ordering::Relaxed), 0);
}

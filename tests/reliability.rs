//! No silent loss: incarnations, gaps filled from replay, unfillable gaps
//! reported with exact counts, duplicates dropped, late joiners caught up.

use crate::util::{free_port, Bus, WAIT};
use bytes::Bytes;
use fedmsg::replay::{Entry, History, Server};
use fedmsg::{Config, Endpoint, Loader, Publisher, Received, Subscriber, Subscription};
use futures::StreamExt;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zeromq::{Socket, SocketSend};

fn load(bus: &Bus) -> Config {
    Loader::isolated()
        .file(Some(bus.config.clone()))
        .load()
        .expect("test config")
}

fn endpoint(port: u16) -> Endpoint {
    format!("tcp://127.0.0.1:{port}").parse().unwrap()
}

async fn next(subscription: &mut Subscription) -> Received {
    tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("no message in time")
        .expect("stream ended")
}

/// A raw publisher of hand-made envelopes (incarnation "inc", i as given).
struct Raw {
    socket: zeromq::PubSocket,
}

fn body(i: u64, incarnation: &str) -> String {
    format!("{{\"i\":{i},\"incarnation\":\"{incarnation}\",\"msg\":{{\"n\":{i}}},\"msg_id\":\"id-{incarnation}-{i}\",\"timestamp\":{},\"topic\":\"org.x.dev.raw.t\"}}", chrono::Utc::now().timestamp())
}

impl Raw {
    async fn bind(port: u16) -> Raw {
        let mut socket = zeromq::PubSocket::new();
        socket
            .bind(&format!("tcp://127.0.0.1:{port}"))
            .await
            .unwrap();
        Raw { socket }
    }

    async fn send(&mut self, text: &str) {
        let frames = vec![
            Bytes::from_static(b"org.x.dev.raw.t"),
            Bytes::from(text.to_owned()),
        ];
        self.socket
            .send(zeromq::ZmqMessage::try_from(frames).unwrap())
            .await
            .unwrap();
    }

    /// Sends untracked probes until the subscriber sees one.
    async fn warm_up(&mut self, subscription: &mut Subscription) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut n = 0;
        loop {
            n += 1;
            self.send(&format!(
                "{{\"msg_id\":\"warm-{n}\",\"topic\":\"org.x.dev.raw.t\"}}"
            ))
            .await;
            if tokio::time::timeout(Duration::from_millis(50), subscription.next())
                .await
                .is_ok()
            {
                while tokio::time::timeout(Duration::from_millis(50), subscription.next())
                    .await
                    .is_ok()
                {}
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the subscriber never connected"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfillable_gap_is_reported_with_exact_counts() {
    let port = free_port();
    let mut raw = Raw::bind(port).await;
    let mut subscription = Subscriber::new(vec![("raw.host".into(), endpoint(port))]).subscribe();
    let mut losses = subscription.take_losses().unwrap();
    raw.warm_up(&mut subscription).await;
    for i in [1, 2, 3, 10, 11] {
        raw.send(&body(i, "inc")).await;
    }
    let seen: Vec<u64> = [
        next(&mut subscription).await,
        next(&mut subscription).await,
        next(&mut subscription).await,
        next(&mut subscription).await,
        next(&mut subscription).await,
    ]
    .iter()
    .map(|r| r.message.i().unwrap())
    .collect();
    assert_eq!(seen, [1, 2, 3, 10, 11]);
    let loss = tokio::time::timeout(WAIT, losses.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((loss.first, loss.last, loss.count), (4, 9, 6));
    assert_eq!(loss.to_string(), "lost 6 messages from raw.host (seq 4-9): replay service unavailable: no replay endpoint for raw.host");
    assert_eq!(subscription.stats().lost(), 6);
    // The endpoint's own counters name the publisher that lost them.
    let stats = subscription.stats();
    let endpoints = stats.endpoints();
    assert_eq!(endpoints.len(), 1);
    let raw_host = &endpoints[0];
    assert_eq!(raw_host.name(), "raw.host");
    assert!(raw_host.connected());
    assert_eq!((raw_host.gaps(), raw_host.lost()), (1, 6));
    assert!(raw_host.received() >= 5, "{}", raw_host.received());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_filled_from_replay_in_order_and_the_rest_reported() {
    let port = free_port();
    let replay_port = free_port();
    let mut raw = Raw::bind(port).await;
    // A replay service that kept only 4..6 of the missing 4..9.
    let history = Arc::new(Mutex::new(History::new(100, 1 << 20, None)));
    for i in 4..=6 {
        history
            .lock()
            .unwrap()
            .push(Entry::from_body(Bytes::from(body(i, "inc"))));
    }
    let server = Server::bind(
        &endpoint(replay_port),
        &fedmsg::Config::builtin().unwrap().keepalive,
    )
    .await
    .unwrap();
    tokio::spawn(server.run(history, std::future::pending()));
    let mut subscription = Subscriber::new(vec![("raw.host".into(), endpoint(port))])
        .replay_endpoint("raw.host", endpoint(replay_port))
        .subscribe();
    let mut losses = subscription.take_losses().unwrap();
    raw.warm_up(&mut subscription).await;
    for i in [1, 2, 3, 10] {
        raw.send(&body(i, "inc")).await;
    }
    let mut seen = Vec::new();
    for _ in 0..7 {
        let received = next(&mut subscription).await;
        seen.push((received.message.i().unwrap(), received.replayed));
    }
    assert_eq!(
        seen,
        [
            (1, false),
            (2, false),
            (3, false),
            (4, true),
            (5, true),
            (6, true),
            (10, false)
        ]
    );
    let loss = tokio::time::timeout(WAIT, losses.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((loss.first, loss.last, loss.count), (4, 9, 3));
    assert_eq!(loss.reason, "no longer in the replay history");
    // Sending 2 again (a replay duplicate, or a second path) is dropped.
    raw.send(&body(2, "inc")).await;
    raw.send(&body(11, "inc")).await;
    assert_eq!(next(&mut subscription).await.message.i(), Some(11));
    assert_eq!(subscription.stats().duplicates(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_publisher_is_a_new_incarnation_not_a_gap() {
    let port = free_port();
    let bus = Bus::new("", &format!("\"svc.host\" = \"tcp://127.0.0.1:{port}\""));
    let config = load(&bus);
    let mut subscription = Subscriber::from_config(&config)
        .topic("org.fedoraproject.dev.svc")
        .subscribe();
    let mut incarnations = Vec::new();
    for round in 0..3 {
        let publisher = Publisher::bind(&config, "svc.host").await.unwrap();
        // Probes are on the same topic: they are part of the sequence.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            publisher.publish("probe", "svc", &json!({})).await.unwrap();
            if let Ok(Some(r)) =
                tokio::time::timeout(Duration::from_millis(50), subscription.next()).await
            {
                incarnations.push(r.message.incarnation().unwrap().to_owned());
                break;
            }
            assert!(tokio::time::Instant::now() < deadline);
        }
        for n in 0..50 {
            publisher
                .publish("count", "svc", &json!({"round": round, "n": n}))
                .await
                .unwrap();
        }
        publisher.flush().await.unwrap();
        let mut last = 0;
        let mut counted = 0;
        while counted < 50 {
            let r = next(&mut subscription).await;
            if r.topic().ends_with(".probe") {
                continue;
            }
            assert_eq!(r.message.msg()["round"], round);
            assert!(r.message.i().unwrap() > last);
            last = r.message.i().unwrap();
            counted += 1;
        }
        publisher.close().await.unwrap();
    }
    incarnations.dedup();
    assert_eq!(incarnations.len(), 3, "each start is a new incarnation");
    let stats = subscription.stats();
    assert_eq!(
        (stats.gaps(), stats.lost()),
        (0, 0),
        "restarts are not gaps"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_right_after_start_is_fully_received() {
    let port = free_port();
    let replay_port = free_port();
    let bus = Bus::new(
        "",
        &format!("\"svc.host\" = \"tcp://127.0.0.1:{port}\"\n[replay_endpoints]\n\"svc.host\" = \"tcp://127.0.0.1:{replay_port}\""),
    );
    let config = load(&bus);
    // The subscriber runs first; the publisher starts and at once sends
    // 1,000 messages, most of them before the subscriber is connected.
    let mut subscription = Subscriber::from_config(&config).subscribe();
    let publisher = Publisher::bind(&config, "svc.host").await.unwrap();
    for n in 0..1000u64 {
        publisher
            .publish("burst", "svc", &json!({"n": n}))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    // One more, some time later, reveals where the stream is.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < 1000 {
        match tokio::time::timeout(Duration::from_millis(200), subscription.next()).await {
            Ok(Some(r)) => {
                if r.topic().ends_with(".burst") {
                    seen.push(r.message.msg()["n"].as_u64().unwrap());
                }
            }
            _ => publisher.publish("tick", "svc", &json!({})).await.unwrap(),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "received {} of 1000",
            seen.len()
        );
    }
    assert_eq!(seen, (0..1000).collect::<Vec<_>>(), "all, in order, once");
    assert_eq!(subscription.stats().lost(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_replays_what_passed_through_it() {
    let replay_port = free_port();
    let bus = Bus::new(
        "",
        &format!("[replay_endpoints]\n\"relay_outbound\" = \"tcp://127.0.0.1:{replay_port}\""),
    );
    let config = load(&bus);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let relay_config = config.clone();
    tokio::spawn(async move {
        fedmsg::relay::run(&relay_config, std::future::pending(), move |_| {
            let _ = ready_tx.send(());
        })
        .await
    });
    ready_rx.await.unwrap();
    let mut active = config.clone();
    active.active = true;
    let publisher = Publisher::from_config(&active).await.unwrap();
    for n in 0..5 {
        publisher
            .publish("through", "relay", &json!({"n": n}))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    // Ask the relay's replay service directly, as fedmsg's client would.
    let query = fedmsg::replay::Query {
        time: Some((0.0, 4e9)),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let bodies = loop {
        let bodies = fedmsg::replay::fetch(&endpoint(replay_port), &query, Duration::from_secs(5))
            .await
            .unwrap();
        if bodies.len() == 5 {
            break bodies;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay kept {} of 5",
            bodies.len()
        );
        tokio::task::yield_now().await;
    };
    let ns: Vec<u64> = bodies
        .iter()
        .map(|b| {
            serde_json::from_slice::<serde_json::Value>(b).unwrap()["msg"]["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, [0, 1, 2, 3, 4]);
}

#[test]
fn a_subscriber_restarted_five_times_gets_every_message_exactly_once() {
    const TOTAL: u64 = 100_000;
    let port = free_port();
    let replay_port = free_port();
    let bus = Bus::new(
        "replay_history = 200000\nreplay_limit = 200000",
        &format!("\"svc.host\" = \"tcp://127.0.0.1:{port}\"\n[replay_endpoints]\n\"svc.host\" = \"tcp://127.0.0.1:{replay_port}\""),
    );
    let state = bus.dir.path().join("tail-state.json");
    let start_tail = || {
        let mut command = bus.command("fedmsg-tail");
        command
            .args([
                "--json",
                "--topic",
                "org.fedoraproject.dev.svc.stream",
                "--state",
            ])
            .arg(&state);
        crate::util::Proc::spawn(command)
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = load(&bus);
    let publisher = runtime
        .block_on(Publisher::bind(&config, "svc.host"))
        .unwrap();
    let mut lines: Vec<String> = Vec::new();
    let mut tail = start_tail();
    let mut restarts = 0;
    // About 20,000 messages a second, paced by a timer.
    runtime.block_on(async {
        let mut pace = tokio::time::interval(Duration::from_millis(1));
        for n in 0..TOTAL {
            if n % 20 == 0 {
                pace.tick().await;
            }
            publisher
                .publish("stream", "svc", &json!({"n": n}))
                .await
                .unwrap();
            if n > 0 && n % 16_000 == 0 && restarts < 5 {
                // Stop this reader (it saves its position) and start another.
                tail.interrupt();
                let status = tail.wait_exit(WAIT);
                let stderr = tail.stderr_text();
                assert!(status.success(), "{stderr}");
                assert!(!stderr.contains("lost"), "reader {restarts}: {stderr}");
                lines.extend(tail.remaining_lines());
                tail = start_tail();
                restarts += 1;
            }
        }
        publisher.flush().await.unwrap();
    });
    assert_eq!(restarts, 5);
    // The last reader must get to the end by itself.
    loop {
        let line = tail.expect_line();
        let done = line.contains(&format!("\"n\":{}", TOTAL - 1));
        lines.push(line);
        if done {
            break;
        }
    }
    tail.interrupt();
    assert!(tail.wait_exit(WAIT).success());
    lines.extend(tail.remaining_lines());
    let stderr = tail.stderr_text();
    assert!(!stderr.contains("lost"), "{stderr}");
    let numbers: Vec<u64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["msg"]["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let first_wrong = numbers.iter().enumerate().find(|(k, n)| *k as u64 != **n);
    assert!(
        first_wrong.is_none(),
        "at {first_wrong:?}; {} lines",
        numbers.len()
    );
    assert_eq!(
        numbers.len() as u64,
        TOTAL,
        "every message exactly once, in order"
    );
}

#[test]
fn a_relay_killed_mid_stream_loses_nothing() {
    const TOTAL: u64 = 20_000;
    let replay_port = free_port();
    let bus = Bus::new(
        "replay_limit = 100000",
        &format!("[replay_endpoints]\n\"relay_outbound\" = \"tcp://127.0.0.1:{replay_port}\""),
    );
    let mut relay = bus.start_relay();
    let mut command = bus.command("fedmsg-tail");
    command.args(["--json", "--topic", "org.fedoraproject.dev.svc.through"]);
    let mut tail = crate::util::Proc::spawn(command);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut config = load(&bus);
    config.active = true;
    let publisher = runtime.block_on(Publisher::from_config(&config)).unwrap();
    runtime.block_on(async {
        let mut pace = tokio::time::interval(Duration::from_millis(1));
        for n in 0..TOTAL {
            if n % 10 == 0 {
                pace.tick().await;
            }
            if n == TOTAL / 2 {
                // kill -9: no goodbye, whatever was in flight is gone.
                let _ = relay.child.kill();
                let _ = relay.child.wait();
                relay = bus.start_relay();
            }
            publisher
                .publish("through", "svc", &json!({"n": n}))
                .await
                .unwrap();
        }
        publisher.flush().await.unwrap();
    });
    let mut numbers = Vec::new();
    while numbers.last() != Some(&(TOTAL - 1)) {
        let line = tail.expect_line();
        numbers.push(
            serde_json::from_str::<serde_json::Value>(&line).unwrap()["msg"]["n"]
                .as_u64()
                .unwrap(),
        );
    }
    let stderr = tail.stderr_text();
    assert!(!stderr.contains("lost"), "{stderr}");
    let first_wrong = numbers.iter().enumerate().find(|(k, n)| *k as u64 != **n);
    assert!(
        first_wrong.is_none(),
        "at {first_wrong:?} of {}",
        numbers.len()
    );
    drop(relay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_replay_store_outlives_the_publisher() {
    let port = free_port();
    let replay_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("history").join("{name}.replay");
    let bus = Bus::new(
        &format!("replay_store = \"{}\"", store.display()),
        &format!("\"svc.host\" = \"tcp://127.0.0.1:{port}\"\n[replay_endpoints]\n\"svc.host\" = \"tcp://127.0.0.1:{replay_port}\""),
    );
    let config = load(&bus);
    // A reader consumes the first 5 messages of the first run and stops.
    let mut subscription = Subscriber::from_config(&config)
        .topic("org.fedoraproject.dev.svc.old")
        .subscribe();
    let first = Publisher::bind(&config, "svc.host").await.unwrap();
    // Until the reader hears the publisher (probes are part of the sequence).
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::timeout(Duration::from_millis(50), subscription.next())
        .await
        .is_err()
    {
        first
            .publish("old", "svc", &json!({"n": -1}))
            .await
            .unwrap();
        assert!(tokio::time::Instant::now() < deadline);
    }
    while tokio::time::timeout(Duration::from_millis(50), subscription.next())
        .await
        .is_ok()
    {}
    for n in 0..5 {
        first.publish("old", "svc", &json!({"n": n})).await.unwrap();
    }
    first.flush().await.unwrap();
    let mut incarnation = String::new();
    let mut last_i = 0;
    for n in 0..5 {
        let r = next(&mut subscription).await;
        assert_eq!(r.message.msg()["n"], n);
        incarnation = r.message.incarnation().unwrap().to_owned();
        last_i = r.message.i().unwrap();
    }
    let state = subscription.state();
    drop(subscription);
    // The publisher sends 5 more nobody reads, and restarts.
    for n in 5..10 {
        first.publish("old", "svc", &json!({"n": n})).await.unwrap();
    }
    first.close().await.unwrap();
    let second = Publisher::bind(&config, "svc.host").await.unwrap();
    assert!(dir.path().join("history/svc.host.replay").exists());
    // The new incarnation's replay service still has the old one's messages.
    let query = fedmsg::replay::Query {
        seq_range: Some((last_i - 4, last_i + 5)),
        incarnation: Some(incarnation.clone()),
        ..Default::default()
    };
    let bodies = fedmsg::replay::fetch(&endpoint(replay_port), &query, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(bodies.len(), 10);
    // A reader resuming from its state gets exactly the 5 it missed.
    let mut resumed = Subscriber::from_config(&config)
        .topic("org.fedoraproject.dev.svc")
        .resume(state)
        .subscribe();
    for n in 5..10 {
        let r = next(&mut resumed).await;
        assert_eq!((r.message.msg()["n"].as_u64(), r.replayed), (Some(n), true));
    }
    // The new incarnation, live: keep publishing until the reader has
    // joined it (a lone message sent before it subscribed would only be
    // noticed with the next one).
    let deadline = tokio::time::Instant::now() + WAIT;
    let r = 'found: loop {
        second
            .publish("new", "svc", &json!({"n": 10}))
            .await
            .unwrap();
        while let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(100), resumed.next()).await
        {
            if r.topic().ends_with(".new") {
                break 'found r;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resumed reader never heard the new incarnation"
        );
    };
    assert_eq!(r.message.msg()["n"], 10);
    assert_eq!(resumed.stats().lost(), 0);
}

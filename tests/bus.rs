//! The library over real sockets: publisher, subscriber, relay, bad input.

use crate::util::{free_port, Bus, WAIT};
use bytes::Bytes;
use fedmsg::{Config, Endpoint, Loader, Publisher, Received, Subscriber, Subscription};
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;
use zeromq::{Socket, SocketSend};

fn load(bus: &Bus) -> Config {
    Loader::isolated()
        .file(Some(bus.config.clone()))
        .load()
        .expect("test config")
}

async fn next(subscription: &mut Subscription) -> Received {
    tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("no message in time")
        .expect("stream ended")
}

/// Publishes probes until the subscriber sees one, so the publisher has the
/// subscription before the test's real messages (no fixed sleep).
async fn warm_up(publisher: &Publisher, subscription: &mut Subscription) {
    warm_up_on(publisher, subscription, "warmup").await;
}

fn endpoint(port: u16) -> Endpoint {
    format!("tcp://127.0.0.1:{port}").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_builds_fedmsg_envelopes_and_prefixes_filter() {
    let port = free_port();
    let bus = Bus::new("", &format!("\"svc.host\" = \"tcp://127.0.0.1:{port}\""));
    let config = load(&bus);
    let publisher = Publisher::bind(&config, "svc.host").await.unwrap();
    assert_eq!(publisher.endpoint(), &endpoint(port));
    let mut subscription = Subscriber::new(vec![("svc.host".into(), endpoint(port))])
        .topic("org.fedoraproject.dev.warmup")
        .topics(["org.fedoraproject.dev.a.", "org.fedoraproject.dev.b."])
        .subscribe();
    warm_up(&publisher, &mut subscription).await;
    publisher
        .publish("x", "c", &json!({"skip": true}))
        .await
        .unwrap();
    publisher
        .publish("one", "a", &json!({"n": 1, "u": "café"}))
        .await
        .unwrap();
    publisher.publish("two", "b", &json!(null)).await.unwrap();
    publisher.flush().await.unwrap();

    let first = next(&mut subscription).await;
    assert_eq!(first.name, "svc.host");
    assert_eq!(first.topic(), "org.fedoraproject.dev.a.one");
    let body = first.message.body();
    assert_eq!(body["topic"], "org.fedoraproject.dev.a.one");
    assert_eq!(body["msg"], json!({"n": 1, "u": "café"}));
    assert!(body["timestamp"].is_i64());
    assert!(body["msg_id"]
        .as_str()
        .unwrap()
        .starts_with(&chrono::Utc::now().format("%Y-").to_string()));
    assert!(body["username"].is_string());
    // The wire form is the canonical one (ASCII, sorted, compact).
    assert_eq!(
        first.message.raw_body().as_ref(),
        first.message.to_canonical().as_bytes()
    );
    assert!(std::str::from_utf8(first.message.raw_body())
        .unwrap()
        .contains("caf\\u00e9"));

    let second = next(&mut subscription).await;
    assert_eq!(second.topic(), "org.fedoraproject.dev.b.two");
    assert_eq!(
        second.message.msg(),
        &json!({}),
        "a null msg becomes {{}} as in fedmsg"
    );
    assert_eq!(
        second.message.i(),
        first.message.i().map(|i| i + 1),
        "i counts per publisher"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_is_shared_by_tasks_and_threads() {
    let port = free_port();
    let bus = Bus::new("", &format!("\"svc.host\" = \"tcp://127.0.0.1:{port}\""));
    let publisher = Publisher::bind(&load(&bus), "svc.host").await.unwrap();
    let mut subscription = Subscriber::new(vec![("svc.host".into(), endpoint(port))]).subscribe();
    warm_up(&publisher, &mut subscription).await;
    const EACH: u64 = 200;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let publisher = publisher.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..EACH {
                publisher
                    .publish("count", "task", &json!({"t": t, "n": n}))
                    .await
                    .unwrap();
            }
        }));
    }
    let handle = tokio::runtime::Handle::current();
    let threaded = publisher.clone();
    let thread = std::thread::spawn(move || {
        for n in 0..EACH {
            handle
                .block_on(threaded.publish("count", "thread", &json!({"n": n})))
                .unwrap();
        }
    });
    for task in tasks {
        task.await.unwrap();
    }
    thread.join().unwrap();
    publisher.flush().await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..5 * EACH {
        let received = next(&mut subscription).await;
        assert!(seen.insert(received.message.i().unwrap()), "duplicate i");
    }
    let first = *seen.first().unwrap();
    assert_eq!(
        *seen.last().unwrap(),
        first + 5 * EACH - 1,
        "i is one counter for the whole process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_takes_the_first_free_endpoint_and_names_all_when_none_is() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let free = free_port();
    let bus = Bus::new(
        "",
        &format!("\"svc.host\" = [\"tcp://127.0.0.1:{taken_port}\", \"tcp://127.0.0.1:{free}\"]"),
    );
    let config = load(&bus);
    let first = Publisher::bind(&config, "svc.host").await.unwrap();
    assert_eq!(first.endpoint(), &endpoint(free));
    let error = Publisher::bind(&config, "svc.host")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("svc.host")
            && error.contains(&format!(":{taken_port}"))
            && error.contains(&format!(":{free}")),
        "{error}"
    );
    let error = Publisher::bind(&config, "nobody.host")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("no endpoint is configured for publisher name `nobody.host`"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_waits_for_a_late_publisher() {
    let port = free_port();
    let bus = Bus::new("", &format!("\"svc.host\" = \"tcp://127.0.0.1:{port}\""));
    let config = load(&bus);
    // The subscriber starts first: nobody listens yet, and connecting keeps
    // being retried (the zeromq crate alone gives up after 30 s).
    let mut subscription = Subscriber::from_config(&config)
        .topic("org.fedoraproject.dev.")
        .subscribe();
    let publisher = Publisher::bind(&config, "svc.host").await.unwrap();
    warm_up(&publisher, &mut subscription).await;
    publisher
        .publish("late", "svc", &json!({"late": true}))
        .await
        .unwrap();
    assert_eq!(next(&mut subscription).await.message.msg()["late"], true);
    // close() releases the address before it returns.
    publisher.close().await.unwrap();
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free after close()");
    assert!(
        publisher.publish("x", "y", &json!({})).await.is_err(),
        "a closed publisher refuses to publish"
    );
}

/// A raw ZeroMQ publisher, to send what fedmsg never would.
async fn raw_publisher(port: u16) -> zeromq::PubSocket {
    let mut socket = zeromq::PubSocket::new();
    socket
        .bind(&format!("tcp://127.0.0.1:{port}"))
        .await
        .unwrap();
    socket
}

fn frames(parts: Vec<Vec<u8>>) -> zeromq::ZmqMessage {
    zeromq::ZmqMessage::try_from(parts.into_iter().map(Bytes::from).collect::<Vec<_>>()).unwrap()
}

fn valid(n: u64) -> zeromq::ZmqMessage {
    frames(vec![
        b"org.x.dev.good".to_vec(),
        format!("{{\"i\":{n},\"msg\":{{}},\"topic\":\"org.x.dev.good\"}}").into_bytes(),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_logged_counted_and_skipped() {
    let port = free_port();
    let mut raw = raw_publisher(port).await;
    let mut subscription = Subscriber::new(vec![("raw".into(), endpoint(port))])
        .max_message_size(1000)
        .subscribe();
    let stats = subscription.stats();
    // Warm up with valid messages until one arrives.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        raw.send(valid(0)).await.unwrap();
        if tokio::time::timeout(Duration::from_millis(50), subscription.next())
            .await
            .is_ok()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
    }
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_millis(50), subscription.next()).await
    {}
    let bad: Vec<Vec<Vec<u8>>> = vec![
        vec![b"org.x.dev.one-frame".to_vec()],
        vec![
            b"org.x.dev.three".to_vec(),
            b"{}".to_vec(),
            b"extra".to_vec(),
        ],
        vec![b"org.x.dev.\xff".to_vec(), b"{}".to_vec()],
        vec![b"org.x.dev.t".to_vec(), b"{\"a\":\"\xff\xfe\"}".to_vec()],
        vec![b"org.x.dev.t".to_vec(), b"{not json".to_vec()],
        vec![b"org.x.dev.t".to_vec(), b"[1,2,3]".to_vec()],
        vec![b"org.x.dev.t".to_vec(), vec![b' '; 5000]],
        // Skipped as it arrives, across many reads, never buffered whole.
        vec![b"org.x.dev.t".to_vec(), vec![b' '; 2_000_000]],
        // An oversized first frame, then more frames of the same message.
        vec![vec![b'x'; 1500], b"{}".to_vec()],
        // More frames than any message has.
        vec![b"{}".to_vec(); 20],
    ];
    for parts in bad {
        raw.send(frames(parts)).await.unwrap();
    }
    raw.send(valid(42)).await.unwrap();
    let received = next(&mut subscription).await;
    assert_eq!(
        received.message.i(),
        Some(42),
        "the reader kept going past every bad message"
    );
    let invalid = stats.invalid();
    for (label, count) in [
        ("frame_count", 3),
        ("topic_utf8", 1),
        ("body_utf8", 1),
        ("json", 1),
        ("not_object", 1),
        ("oversized", 3),
    ] {
        assert_eq!(
            invalid.get(label).copied(),
            Some(count),
            "{label} in {invalid:?}"
        );
    }
}

type RelayTask = tokio::task::JoinHandle<
    Result<std::sync::Arc<fedmsg::relay::RelayStats>, fedmsg::relay::RelayError>,
>;

/// Runs a relay in this process; returns once it is bound, with what stops
/// it and its task.
async fn relay_task(
    config: &Config,
) -> (
    fedmsg::relay::Bound,
    tokio::sync::oneshot::Sender<()>,
    RelayTask,
) {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let relay_config = config.clone();
    let relay = tokio::spawn(async move {
        fedmsg::relay::run(
            &relay_config,
            async {
                let _ = stop_rx.await;
            },
            move |bound| {
                let _ = ready_tx.send(bound.clone());
            },
        )
        .await
    });
    (ready_rx.await.unwrap(), stop_tx, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_forwards_bytes_unchanged_and_drops_malformed() {
    let bus = Bus::new("", "");
    let config = load(&bus);
    let (bound, stop_tx, relay) = relay_task(&config).await;
    assert_eq!(bound.outbound, endpoint(bus.relay_out));
    let mut subscription = Subscriber::from_config(&config).subscribe();
    // A raw active publisher, as Python's logger is.
    let mut inbound = zeromq::PubSocket::new();
    inbound
        .connect(&format!("tcp://127.0.0.1:{}", bus.relay_in))
        .await
        .unwrap();
    let spaced = b"{\"topic\": \"org.x.dev.spaced\", \"msg\": {\"b\": 1, \"a\": 2.50}}".to_vec();
    let deadline = tokio::time::Instant::now() + WAIT;
    let first = loop {
        inbound
            .send(frames(vec![b"org.x.dev.spaced".to_vec(), spaced.clone()]))
            .await
            .unwrap();
        if let Ok(Some(received)) =
            tokio::time::timeout(Duration::from_millis(50), subscription.next()).await
        {
            break received;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing came through the relay"
        );
    };
    assert_eq!(first.name, "relay_outbound");
    assert_eq!(
        first.message.raw_body().as_ref(),
        spaced.as_slice(),
        "no re-serialisation"
    );
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_millis(50), subscription.next()).await
    {}
    inbound
        .send(frames(vec![b"org.x.dev.bad".to_vec()]))
        .await
        .unwrap();
    inbound
        .send(frames(vec![
            b"org.x.dev.after".to_vec(),
            b"{\"i\":7}".to_vec(),
        ]))
        .await
        .unwrap();
    let after = next(&mut subscription).await;
    assert_eq!(after.topic(), "org.x.dev.after");
    stop_tx.send(()).unwrap();
    let stats = relay.await.unwrap().unwrap();
    assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zeromq_crates_sub_reads_our_publisher() {
    let port = free_port();
    let bus = Bus::new("", &format!("\"crate.test\" = \"tcp://127.0.0.1:{port}\""));
    let publisher = Publisher::bind(&load(&bus), "crate.test").await.unwrap();
    let mut sub = zeromq::SubSocket::new();
    sub.connect(&format!("tcp://127.0.0.1:{port}"))
        .await
        .unwrap();
    sub.subscribe("org.fedoraproject.dev.crate.").await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let message = loop {
        publisher
            .publish("skipped", "other", &json!({}))
            .await
            .unwrap();
        publisher
            .publish("probe", "crate", &json!({"n": 1}))
            .await
            .unwrap();
        if let Ok(Ok(message)) = tokio::time::timeout(
            Duration::from_millis(50),
            zeromq::SocketRecv::recv(&mut sub),
        )
        .await
        {
            break message;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing arrived");
    };
    let frames = message.into_vec();
    assert_eq!(frames.len(), 2);
    assert_eq!(&frames[0][..], b"org.fedoraproject.dev.crate.probe");
    let body: serde_json::Value = serde_json::from_slice(&frames[1]).unwrap();
    assert_eq!(body["msg"]["n"], 1);
    assert_eq!(
        publisher
            .counters()
            .unwrap()
            .subscribers
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_loses_only_its_own_messages() {
    // The relay's outbound side keeps at most 50 messages for a subscriber
    // that does not read; the one that reads gets everything.
    let bus = Bus::new("high_water_mark = 50", "");
    let config = load(&bus);
    let (_, stop_tx, relay) = relay_task(&config).await;
    // Subscribed, and never reads: the zeromq crate's SUB reads from the
    // connection only when asked to.
    let mut stalled = zeromq::SubSocket::new();
    stalled
        .connect(&format!("tcp://127.0.0.1:{}", bus.relay_out))
        .await
        .unwrap();
    stalled.subscribe("").await.unwrap();
    let mut subscription = Subscriber::from_config(&config).subscribe();
    let publisher = Publisher::connect(&config).await.unwrap();
    warm_up_on(&publisher, &mut subscription, "bench").await;
    // 5,000 messages of 4 KiB: 20 MB, more than the kernel buffers hold.
    let payload = "x".repeat(4096);
    let count = 5_000u64;
    let (progress, mut heard) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut seen = 0u64;
        while seen < count {
            match tokio::time::timeout(WAIT, subscription.next()).await {
                Ok(Some(r)) if r.topic().ends_with(".data") => {
                    seen += 1;
                    let _ = progress.send(seen);
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        seen
    });
    // In windows of 25, each sent once the reader has the previous one, so
    // the reader is never 50 behind; nothing waits for the stalled one.
    let window = 25;
    for start in (0..count).step_by(window) {
        for n in start..start + window as u64 {
            publisher
                .publish("data", "bench", &json!({"n": n, "payload": payload}))
                .await
                .unwrap();
        }
        publisher.flush().await.unwrap();
        let wanted = start + window as u64;
        tokio::time::timeout(WAIT, heard.wait_for(|seen| *seen >= wanted))
            .await
            .expect("the reader keeps up")
            .unwrap();
    }
    assert_eq!(
        reader.await.unwrap(),
        count,
        "the reading subscriber got all"
    );
    stop_tx.send(()).unwrap();
    let stats = relay.await.unwrap().unwrap();
    let dropped = stats
        .outbound
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        dropped > 0,
        "the stalled subscriber's queue overflowed and was counted"
    );
    drop(stalled);
}

#[test]
fn blocking_publish_and_iterator() {
    let port = free_port();
    let bus = Bus::new(
        "name = \"blocking.test\"",
        &format!("\"blocking.test\" = \"tcp://127.0.0.1:{port}\""),
    );
    // Only this test uses the process-wide publisher and FEDMSG_CONFIG.
    std::env::set_var("FEDMSG_CONFIG", &bus.config);
    let mut subscription = Subscriber::new(vec![("blocking.test".into(), endpoint(port))])
        .subscribe_blocking()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        fedmsg::publish("probe", "blocking", &json!({"probe": true})).unwrap();
        if subscription
            .next_timeout(Duration::from_millis(50))
            .is_some()
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no probe arrived");
    }
    while subscription
        .next_timeout(Duration::from_millis(50))
        .is_some()
    {}
    fedmsg::publish("done", "blocking", &json!({"n": 1})).unwrap();
    let received = subscription.next().unwrap();
    assert_eq!(received.topic(), "org.fedoraproject.dev.blocking.done");
    assert_eq!(received.message.msg()["n"], 1);
}

/// Keepalive state of this process's TCP sockets whose local or peer port is `port`.
fn keepalive_of_sockets_on(port: u16) -> Vec<(String, bool, Option<Duration>)> {
    use std::os::fd::{BorrowedFd, RawFd};
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        if !std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        {
            continue;
        }
        // SAFETY: borrowed only for these calls while the test holds the sockets open.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
        let local = socket.local_addr().ok().and_then(|a| a.as_socket());
        let side = match (local, peer) {
            (_, Some(p)) if p.port() == port => "connected",
            (Some(l), Some(_)) if l.port() == port => "accepted",
            (Some(l), None) if l.port() == port => "listener",
            _ => continue,
        };
        found.push((
            side.to_owned(),
            socket.keepalive().unwrap(),
            socket.tcp_keepalive_time().ok(),
        ));
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_of_a_subscription_use_tcp_keepalive() {
    let port = free_port();
    let bus = Bus::new(
        "zmq_tcp_keepalive_idle = 42",
        &format!("\"svc.host\" = \"tcp://127.0.0.1:{port}\""),
    );
    let config = load(&bus);
    let publisher = Publisher::bind(&config, "svc.host").await.unwrap();
    let mut subscription = Subscriber::from_config(&config).subscribe();
    warm_up(&publisher, &mut subscription).await;
    let sockets = keepalive_of_sockets_on(port);
    for side in ["listener", "accepted", "connected"] {
        let socket = sockets
            .iter()
            .find(|(s, _, _)| s == side)
            .unwrap_or_else(|| panic!("no {side} socket in {sockets:?}"));
        assert!(socket.1, "{side} socket without keepalive: {sockets:?}");
        assert_eq!(
            socket.2,
            Some(Duration::from_secs(42)),
            "{side}: {sockets:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_publisher_reconnects_after_a_relay_restart() {
    let bus = Bus::new("active = true", "");
    let config = load(&bus);
    let start_relay = |config: Config| async move {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            fedmsg::relay::run(
                &config,
                async {
                    let _ = stop_rx.await;
                },
                move |_| {
                    let _ = ready_tx.send(());
                },
            )
            .await
        });
        ready_rx.await.unwrap();
        (stop_tx, task)
    };
    let (stop, task) = start_relay(config.clone()).await;
    let publisher = Publisher::from_config(&config).await.unwrap();
    let mut subscription = Subscriber::from_config(&config).subscribe();
    warm_up(&publisher, &mut subscription).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    // The relay is back on the same ports: the same publisher handle must
    // reach the same subscriber again.
    let (stop, task) = start_relay(config.clone()).await;
    warm_up(&publisher, &mut subscription).await;
    publisher
        .publish("after", "restart", &json!({"ok": true}))
        .await
        .unwrap();
    assert_eq!(
        next(&mut subscription).await.topic(),
        "org.fedoraproject.dev.restart.after"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipc_endpoints_work_like_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svc.sock");
    let bus = Bus::new("", &format!("\"svc.host\" = \"ipc://{}\"", path.display()));
    let config = load(&bus);
    let publisher = Publisher::bind(&config, "svc.host").await.unwrap();
    let mut subscription = Subscriber::new(vec![(
        "svc.host".into(),
        format!("ipc://{}", path.display()).parse().unwrap(),
    )])
    .subscribe();
    warm_up(&publisher, &mut subscription).await;
    publisher
        .publish("over", "ipc", &json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(
        next(&mut subscription).await.topic(),
        "org.fedoraproject.dev.ipc.over"
    );
}

/// An RSA publisher signs on several threads, yet its messages leave in
/// `i` order, all valid, and a lone message goes out without a flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_signing_in_parallel_keeps_order() {
    let port = free_port();
    let certs = crate::util::fixtures().join("test-certs");
    let bus = Bus::new(
        &format!(
            "sign_messages = true\nvalidate_signatures = true\nssldir = \"{c}\"\nca_cert_location = \"{c}/ca.crt\"\ncrl_location = \"{c}/crl.pem\"",
            c = certs.display()
        ),
        &format!(
            "\"svc.host\" = \"tcp://127.0.0.1:{port}\"\n[certnames]\n\"svc.host\" = \"shell-app01.phx2.fedoraproject.org\""
        ),
    );
    let config = load(&bus);
    let publisher = Publisher::bind(&config, "svc.host").await.unwrap();
    let mut subscription = Subscriber::from_config(&config)
        .topic("org.fedoraproject.dev.test")
        .subscribe();
    warm_up_on(&publisher, &mut subscription, "test").await;
    // A lone message, no flush: the worker that signs it sends it.
    publisher
        .publish("lone", "test", &json!({"n": 0}))
        .await
        .unwrap();
    let lone = next(&mut subscription).await;
    assert!(lone.topic().ends_with(".lone"), "{}", lone.topic());
    assert!(lone.verdict.as_ref().is_some_and(|v| v.is_valid()));
    let first = lone.message.i().unwrap();
    for n in 1..=200 {
        publisher
            .publish("seq", "test", &json!({ "n": n }))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    for n in 1..=200u64 {
        let received = next(&mut subscription).await;
        assert_eq!(received.message.i(), Some(first + n));
        assert_eq!(received.message.msg()["n"], json!(n));
        assert!(
            received.verdict.as_ref().is_some_and(|v| v.is_valid()),
            "{:?}",
            received.verdict
        );
    }
    let stats = subscription.stats();
    assert_eq!((stats.gaps(), stats.invalid_total()), (0, 0));
}

/// [`warm_up`] with probes from `modname` (for a subscription limited to
/// its topics). The waits are generous enough for signed probes.
async fn warm_up_on(publisher: &Publisher, subscription: &mut Subscription, modname: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        publisher
            .publish("probe", modname, &json!({}))
            .await
            .unwrap();
        if let Ok(Some(received)) =
            tokio::time::timeout(Duration::from_millis(200), subscription.next()).await
        {
            assert!(received.topic().ends_with(&format!("{modname}.probe")));
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(200), subscription.next()).await
            {
            }
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscriber never received a probe"
        );
    }
}

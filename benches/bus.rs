//! The cost of the bus over raw ZeroMQ, and of sequence tracking and
//! replay: one publisher to one subscriber over loopback, in one process,
//! ~380-byte messages, flat out. `cargo bench --bench bus` prints messages
//! per second and ratios to raw ZeroMQ measured in the same run; under
//! `cargo test` it runs a few messages only, so it cannot rot.

use bytes::Bytes;
use fedmsg::sequence::{Step, Tracker};
use fedmsg::{Loader, Publisher, Subscriber};
use futures::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};
use zeromq::{Socket, SocketRecv, SocketSend};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// Raw ZeroMQ: the same two frames, no envelope.
async fn raw(count: u64) -> (f64, u64) {
    let port = free_port();
    let mut publisher = zeromq::PubSocket::new();
    publisher
        .bind(&format!("tcp://127.0.0.1:{port}"))
        .await
        .expect("bind");
    let mut subscriber = zeromq::SubSocket::new();
    subscriber.subscribe("").await.expect("subscribe");
    subscriber
        .connect(&format!("tcp://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let body = Bytes::from(vec![b'x'; 340]);
    let topic = Bytes::from_static(b"org.fedoraproject.prod.bodhi.update.comment");
    // Until the subscription is in place.
    loop {
        publisher
            .send(
                zeromq::ZmqMessage::try_from(vec![topic.clone(), Bytes::from_static(b"warm")])
                    .unwrap(),
            )
            .await
            .unwrap();
        if tokio::time::timeout(Duration::from_millis(20), subscriber.recv())
            .await
            .is_ok()
        {
            break;
        }
    }
    while tokio::time::timeout(Duration::from_millis(20), subscriber.recv())
        .await
        .is_ok()
    {}
    let receiver = tokio::spawn(async move {
        // One timer for the whole run, none per message. Lost messages end
        // the run by silence (the last arrival time is what counts).
        let started = Instant::now();
        let mut received = 0u64;
        let mut last = started;
        let _ = tokio::time::timeout(Duration::from_secs(60), async {
            while received < count {
                match tokio::time::timeout(Duration::from_millis(300), subscriber.recv()).await {
                    Ok(Ok(_)) => {
                        received += 1;
                        if received % 1024 == 0 {
                            last = Instant::now();
                        }
                    }
                    _ => break,
                }
            }
        })
        .await;
        if received == count {
            last = Instant::now();
        }
        (received, last.duration_since(started))
    });
    for _ in 0..count {
        publisher
            .send(zeromq::ZmqMessage::try_from(vec![topic.clone(), body.clone()]).unwrap())
            .await
            .unwrap();
    }
    let (received, elapsed) = receiver.await.unwrap();
    (received as f64 / elapsed.as_secs_f64(), count - received)
}

/// Our library end to end: envelopes built, serialised, parsed, sequenced.
async fn ours(count: u64, with_replay: bool) -> (f64, u64, u64) {
    let port = free_port();
    let replay_port = free_port();
    let dir = tempfile::tempdir().expect("dir");
    let mut text = format!("[endpoints]\n\"bench.host\" = \"tcp://127.0.0.1:{port}\"\n");
    if with_replay {
        text = format!("replay_history = {}\nreplay_limit = {}\n{text}[replay_endpoints]\n\"bench.host\" = \"tcp://127.0.0.1:{replay_port}\"\n", count + 1000, count + 1000);
    }
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, text).expect("config");
    let config = Loader::isolated().file(Some(path)).load().expect("config");
    let publisher = Publisher::bind(&config, "bench.host")
        .await
        .expect("publisher");
    let mut subscription = Subscriber::from_config(&config).subscribe();
    loop {
        publisher
            .publish("warm", "bench", &json!({}))
            .await
            .unwrap();
        if tokio::time::timeout(Duration::from_millis(20), subscription.next())
            .await
            .is_ok()
        {
            break;
        }
    }
    while tokio::time::timeout(Duration::from_millis(50), subscription.next())
        .await
        .is_ok()
    {}
    let stats = subscription.stats();
    let receiver = tokio::spawn(async move {
        let started = Instant::now();
        let mut received = 0u64;
        while received < count {
            match tokio::time::timeout(Duration::from_millis(1000), subscription.next()).await {
                Ok(Some(r)) if r.topic().ends_with(".comment") => received += 1,
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        (received, started.elapsed())
    });
    let msg = json!({"comment": {"text": "Works for me; karma +1 for the update", "karma": 1, "user": "alice"}, "agent": "alice", "update": {"alias": "FEDORA-2026-1a2b3c4d5e", "title": "kernel-6.20.1"}});
    for _ in 0..count {
        publisher
            .publish("update.comment", "bodhi", &msg)
            .await
            .unwrap();
    }
    let (received, elapsed) = receiver.await.unwrap();
    (
        received as f64 / elapsed.as_secs_f64(),
        stats.lost(),
        stats.replayed(),
    )
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let count: u64 = if full { 200_000 } else { 200 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (raw_rate, raw_lost) = runtime.block_on(raw(count));
    println!("raw ZeroMQ PUB->SUB (baseline)              {raw_rate:>12.0} msg/s  lost {raw_lost}");
    let (rate, lost, _) = runtime.block_on(ours(count, false));
    println!(
        "fedmsg publish->subscribe, no replay        {rate:>12.0} msg/s  {:.2} x raw  lost {lost}",
        rate / raw_rate
    );
    let (rate, lost, replayed_with) = runtime.block_on(ours(count, true));
    println!("fedmsg publish->subscribe, replay history   {rate:>12.0} msg/s  {:.2} x raw  lost {lost}  replayed {replayed_with}", rate / raw_rate);

    // Sequence tracking alone, per message.
    let ids: Vec<String> = (0..count).map(|n| format!("2026-{n:036}")).collect();
    let mut tracker = Tracker::new(100_000);
    let started = Instant::now();
    for (n, id) in ids.iter().enumerate() {
        let i = n as u64 + 1;
        assert_eq!(
            tracker.check(Some("incarnation"), Some(i), Some(id)),
            Step::Deliver
        );
        tracker.record(Some("incarnation"), Some(i), Some(id));
    }
    let per = started.elapsed().as_nanos() as f64 / count as f64;
    println!(
        "sequence tracking (check + record)          {per:>12.0} ns/msg  ({:.0} msg/s on one core)",
        1e9 / per
    );
}

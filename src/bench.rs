//! `fedmsg-bench`: measure a bus the way `nats bench` measures NATS.
//!
//! Publishers and subscribers run in this process over loopback (or
//! against the configured endpoints' ports), sending a number of messages
//! flat out or at a paced rate, unsigned or signed (`ed25519` or `x509`,
//! validated by the subscribers). Each run reports messages/s, MB/s, lost
//! and duplicate counts, latency percentiles for paced runs, CPU seconds
//! and peak RSS. With a baseline, the same frames go through bare ZeroMQ
//! sockets (no envelope, no JSON) first, and results are given as ratios
//! to it: figures only compare within one run on a noisy machine.

use crate::config::{Config, Keepalive, Loader};
use crate::crypto::certs::{Authority, KeyKind};
use crate::endpoint::Endpoint;
use crate::publish::Publisher;
use crate::subscribe::Subscriber;
use crate::transport::{self, Backoff, BoundSub, ConnectedPub, PubSocket, SubEvent};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How messages are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signing {
    /// Unsigned.
    None,
    /// Ed25519, validated by subscribers.
    Ed25519,
    /// fedmsg's x509 (RSA-2048), validated by subscribers.
    X509,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Messages per publisher.
    pub messages: u64,
    /// Payload bytes per message (the `msg.data` string).
    pub size: usize,
    /// Publishers.
    pub publishers: usize,
    /// Subscribers.
    pub subscribers: usize,
    /// Total messages per second across publishers; `None` is flat out.
    pub rate: Option<u64>,
    /// Signing scheme.
    pub signing: Signing,
    /// Publish through a relay (active publishers) instead of directly.
    pub relay: bool,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `raw ZeroMQ` or `fedmsg`.
    pub name: String,
    /// Messages each subscriber should receive.
    pub expected: u64,
    /// Messages received per second, per subscriber (the slowest).
    pub msgs_per_sec: f64,
    /// Payload megabytes per second, per subscriber.
    pub mb_per_sec: f64,
    /// Messages lost (expected minus received, summed over subscribers).
    pub lost: u64,
    /// Duplicates dropped by readers.
    pub duplicates: u64,
    /// Latency percentiles in microseconds (paced runs).
    pub latency_us: Option<Latency>,
    /// CPU seconds used by this process during the run.
    pub cpu_seconds: f64,
    /// Peak resident memory of this process, in MiB.
    pub peak_rss_mib: f64,
    /// This run's rate over the baseline's, if one was measured.
    pub ratio: Option<f64>,
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

fn latency(mut samples: Vec<u64>) -> Option<Latency> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    Some(Latency {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        p999: at(0.999),
        max: at(1.0),
    })
}

/// CPU seconds of this process so far (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line (11 and 12 here).
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set of this process, MiB (VmHWM).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:").map(|v| {
                    v.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .unwrap_or(0.0)
                })
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn nanos_since(start: Instant) -> u64 {
    start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64
}

fn free_endpoint() -> std::io::Result<Endpoint> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(Endpoint::Tcp {
        host: "127.0.0.1".into(),
        port,
    })
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Setting up sockets, certificates or configuration failed.
    #[error("{0}")]
    Setup(String),
}

fn setup(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
}

/// Paces sends: `rate` messages per second in total, spread over time.
struct Pace {
    interval: Option<Duration>,
    next: tokio::time::Instant,
}

impl Pace {
    fn new(rate: Option<u64>, publishers: usize) -> Pace {
        let interval = rate
            .filter(|r| *r > 0)
            .map(|r| Duration::from_secs_f64(publishers as f64 / r as f64));
        Pace {
            interval,
            next: tokio::time::Instant::now(),
        }
    }

    async fn wait(&mut self) {
        if let Some(interval) = self.interval {
            self.next += interval;
            tokio::time::sleep_until(self.next).await;
        }
    }
}

/// A bare publisher: bound, or connected to a forwarder.
enum RawPub {
    Bound(PubSocket),
    Connected(ConnectedPub),
}

impl RawPub {
    async fn send(&mut self, frames: Vec<Bytes>) -> Result<(), transport::TransportError> {
        match self {
            RawPub::Bound(s) => s.send(frames).await,
            RawPub::Connected(s) => s.send(frames).await,
        }
    }
}

/// Bare ZeroMQ with the same frames: the baseline.
pub async fn run_raw(scenario: &Scenario) -> Result<Report, BenchError> {
    let keepalive = Keepalive {
        enabled: false,
        count: 0,
        idle: Duration::ZERO,
        interval: Duration::ZERO,
    };
    let topic = Bytes::from_static(b"org.fedoraproject.prod.bench.data");
    let cpu = cpu_seconds();
    let mut sockets: Vec<RawPub> = Vec::new();
    let mut endpoints = Vec::new();
    let mut forwarder = None;
    if scenario.relay {
        // A bare forwarder: SUB bound for publishers, PUB bound for readers.
        let inbound = free_endpoint().map_err(setup)?;
        let mut sub = BoundSub::bind(std::slice::from_ref(&inbound), &keepalive)
            .await
            .map_err(setup)?;
        let mut out = PubSocket::bind(&free_endpoint().map_err(setup)?, &keepalive)
            .await
            .map_err(setup)?;
        endpoints.push(out.endpoint().clone());
        forwarder = Some(tokio::spawn(async move {
            while let Ok(frames) = sub.recv().await {
                if out.send(frames).await.is_err() {
                    break;
                }
            }
        }));
        for _ in 0..scenario.publishers {
            sockets.push(RawPub::Connected(
                ConnectedPub::connect(&inbound, Duration::from_secs(5), &keepalive)
                    .await
                    .map_err(setup)?,
            ));
        }
    } else {
        for _ in 0..scenario.publishers {
            let socket = PubSocket::bind(&free_endpoint().map_err(setup)?, &keepalive)
                .await
                .map_err(setup)?;
            endpoints.push(socket.endpoint().clone());
            sockets.push(RawPub::Bound(socket));
        }
    }
    let (events, mut arrivals) = mpsc::channel::<(usize, SubEvent)>(65536);
    let start = Instant::now();
    for subscriber in 0..scenario.subscribers {
        for (index, endpoint) in endpoints.iter().enumerate() {
            let (sender, mut receiver) = mpsc::channel(65536);
            tokio::spawn(transport::run_connected_sub(
                index,
                endpoint.clone(),
                vec![String::new()],
                Backoff {
                    initial: Duration::from_millis(10),
                    max: Duration::from_millis(100),
                },
                keepalive.clone(),
                sender,
            ));
            let events = events.clone();
            tokio::spawn(async move {
                while let Some(event) = receiver.recv().await {
                    if events.send((subscriber, event)).await.is_err() {
                        break;
                    }
                }
            });
        }
    }
    drop(events);
    // Until every subscriber hears every publisher.
    let mut heard = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while heard.len() < scenario.publishers * scenario.subscribers {
        for (publisher, socket) in sockets.iter_mut().enumerate() {
            // Probes name their sender: through a forwarder every
            // publisher arrives on the same endpoint.
            let probe = Bytes::from(format!("warm{publisher}"));
            socket
                .send(vec![topic.clone(), probe])
                .await
                .map_err(setup)?;
        }
        while let Ok(Some((subscriber, event))) =
            tokio::time::timeout(Duration::from_millis(20), arrivals.recv()).await
        {
            if let SubEvent::Frames(_, frames) = event {
                if let Some(sender) = frames.get(1).and_then(|b| b.strip_prefix(b"warm")) {
                    heard.insert((subscriber, sender.to_vec()));
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(BenchError::Setup(
                "subscribers did not connect within 10 s".into(),
            ));
        }
    }
    while tokio::time::timeout(Duration::from_millis(50), arrivals.recv())
        .await
        .is_ok()
    {}
    let expected = scenario.messages * scenario.publishers as u64;
    let size = scenario.size;
    let subscribers = scenario.subscribers;
    let receiver = tokio::spawn(async move {
        let mut counts = vec![0u64; subscribers];
        let mut latencies = Vec::new();
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        while let Ok(Some((subscriber, event))) =
            tokio::time::timeout(Duration::from_millis(500), arrivals.recv()).await
        {
            let SubEvent::Frames(_, frames) = event else {
                continue;
            };
            let Some(body) = frames.get(1) else { continue };
            if body.len() < 8 {
                continue;
            }
            first.get_or_insert_with(Instant::now);
            let sent = u64::from_le_bytes(body[..8].try_into().unwrap_or([0; 8]));
            latencies.push(nanos_since(start).saturating_sub(sent));
            if let Some(count) = counts.get_mut(subscriber) {
                *count += 1;
            }
            last = Instant::now();
            if counts.iter().sum::<u64>() >= expected * subscribers as u64 {
                break;
            }
        }
        (
            counts,
            latencies,
            first.map(|f| last.duration_since(f)).unwrap_or_default(),
        )
    });
    let mut tasks = Vec::new();
    for mut socket in sockets {
        let topic = topic.clone();
        let scenario = scenario.clone();
        tasks.push(tokio::spawn(async move {
            let mut pace = Pace::new(scenario.rate, scenario.publishers);
            for _ in 0..scenario.messages {
                pace.wait().await;
                let mut body = vec![b'x'; size.max(8)];
                body[..8].copy_from_slice(&nanos_since(start).to_le_bytes());
                let _ = socket.send(vec![topic.clone(), Bytes::from(body)]).await;
            }
            socket
        }));
    }
    let mut sockets = Vec::new();
    for task in tasks {
        sockets.push(task.await.map_err(setup)?);
    }
    let (counts, latencies, elapsed) = receiver.await.map_err(setup)?;
    drop(sockets);
    if let Some(forwarder) = forwarder {
        forwarder.abort();
    }
    Ok(summarise(
        "raw ZeroMQ",
        scenario,
        expected,
        &counts,
        0,
        latencies,
        elapsed,
        cpu,
    ))
}

#[allow(clippy::too_many_arguments)]
fn summarise(
    name: &str,
    scenario: &Scenario,
    expected: u64,
    received: &[u64],
    duplicates: u64,
    latencies: Vec<u64>,
    elapsed: Duration,
    cpu: f64,
) -> Report {
    let slowest = received.iter().copied().min().unwrap_or(0);
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let msgs_per_sec = slowest as f64 / seconds;
    Report {
        name: name.to_owned(),
        expected,
        msgs_per_sec,
        mb_per_sec: msgs_per_sec * scenario.size as f64 / 1e6,
        lost: received.iter().map(|r| expected.saturating_sub(*r)).sum(),
        duplicates,
        latency_us: if scenario.rate.is_some() {
            latency(latencies)
        } else {
            None
        },
        cpu_seconds: cpu_seconds() - cpu,
        peak_rss_mib: peak_rss_mib(),
        ratio: None,
    }
}

/// The bus itself: envelopes, JSON, sequence tracking, optional signing
/// and validation.
pub async fn run_fedmsg(scenario: &Scenario) -> Result<Report, BenchError> {
    let dir = tempfile_dir()?;
    let mut endpoints = String::new();
    let mut certnames = String::new();
    let names: Vec<String> = (0..scenario.publishers)
        .map(|p| format!("bench{p}.host"))
        .collect();
    for name in &names {
        endpoints.push_str(&format!(
            "\"{name}\" = \"{}\"\n",
            free_endpoint().map_err(setup)?
        ));
    }
    let mut keys = String::new();
    if scenario.signing != Signing::None {
        let ca = Authority::at(&dir);
        ca.create("bench CA", KeyKind::Ed25519, 2).map_err(setup)?;
        for name in &names {
            let kind = if scenario.signing == Signing::X509 {
                KeyKind::Rsa(2048)
            } else {
                KeyKind::Ed25519
            };
            ca.issue(name, kind, 2).map_err(setup)?;
            certnames.push_str(&format!("\"{name}\" = \"{name}\"\n"));
        }
        let scheme = if scenario.signing == Signing::X509 {
            "x509"
        } else {
            "ed25519"
        };
        keys = format!(
            "sign_messages = true\nvalidate_signatures = true\ncrypto_backend = \"{scheme}\"\nssldir = \"{dir}\"\nca_cert_location = \"{ca}\"\ncrl_location = \"{crl}\"\n",
            dir = dir.display(),
            ca = ca.ca_path().display(),
            crl = ca.crl_path().display()
        );
    }
    let mut relay_keys = String::new();
    if scenario.relay {
        relay_keys = format!(
            "active = true\nrelay_inbound = \"{}\"\n",
            free_endpoint().map_err(setup)?
        );
        endpoints = format!(
            "relay_outbound = [\"{}\"]\n",
            free_endpoint().map_err(setup)?
        );
        certnames = certnames.replace("bench0.host", "relay_inbound");
    }
    let text = format!("{keys}{relay_keys}[endpoints]\n{endpoints}[certnames]\n{certnames}");
    let path = dir.join("bench.toml");
    std::fs::write(&path, text).map_err(setup)?;
    let config: Config = Loader::isolated().file(Some(path)).load().map_err(setup)?;
    let cpu = cpu_seconds();
    let mut relay = None;
    if scenario.relay {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let relay_config = config.clone();
        let task = tokio::spawn(async move {
            let _ = crate::relay::run(
                &relay_config,
                async {
                    let _ = stopped.await;
                },
                move |_| {
                    let _ = ready_tx.send(());
                },
            )
            .await;
        });
        ready_rx
            .await
            .map_err(|_| BenchError::Setup("the relay did not start".into()))?;
        relay = Some((stop, task));
    }
    let mut publishers = Vec::new();
    for name in &names {
        let publisher = if scenario.relay {
            Publisher::connect(&config).await
        } else {
            Publisher::bind(&config, name).await
        };
        publishers.push(publisher.map_err(setup)?);
    }
    let start = Instant::now();
    let expected = scenario.messages * scenario.publishers as u64;
    let mut receivers = Vec::new();
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(scenario.subscribers);
    for _ in 0..scenario.subscribers {
        let mut subscription = Subscriber::from_config(&config)
            .topic("org.fedoraproject.dev.bench")
            .subscribe();
        let ready = ready_tx.clone();
        let publishers_count = scenario.publishers;
        receivers.push(tokio::spawn(async move {
            // Warm-up: hear a probe from every publisher.
            let mut heard = std::collections::HashSet::new();
            while heard.len() < publishers_count {
                match subscription.next().await {
                    Some(r) if r.topic().ends_with(".probe") => {
                        heard.insert(r.message.incarnation().unwrap_or_default().to_owned());
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            let _ = ready.send(()).await;
            let stats = subscription.stats();
            let mut received = 0u64;
            let mut latencies = Vec::new();
            let mut first: Option<Instant> = None;
            let mut last = Instant::now();
            while received < expected {
                match tokio::time::timeout(Duration::from_secs(2), subscription.next()).await {
                    Ok(Some(r)) if r.topic().ends_with(".data") => {
                        first.get_or_insert_with(Instant::now);
                        if let Some(sent) = r
                            .message
                            .msg()
                            .get("sent")
                            .and_then(serde_json::Value::as_u64)
                        {
                            latencies.push(nanos_since(start).saturating_sub(sent));
                        }
                        received += 1;
                        last = Instant::now();
                    }
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            (
                received,
                latencies,
                first.map(|f| last.duration_since(f)).unwrap_or_default(),
                stats.duplicates(),
            )
        }));
    }
    drop(ready_tx);
    // Probe until every subscriber heard every publisher.
    let mut ready = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ready < scenario.subscribers {
        for publisher in &publishers {
            publisher
                .publish("probe", "bench", &json!({}))
                .await
                .map_err(setup)?;
        }
        while let Ok(Some(())) =
            tokio::time::timeout(Duration::from_millis(20), ready_rx.recv()).await
        {
            ready += 1;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(BenchError::Setup(
                "subscribers did not hear every publisher within 20 s".into(),
            ));
        }
    }
    let payload = "x".repeat(scenario.size);
    let mut tasks = Vec::new();
    for publisher in &publishers {
        let publisher = publisher.clone();
        let scenario = scenario.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut pace = Pace::new(scenario.rate, scenario.publishers);
            for _ in 0..scenario.messages {
                pace.wait().await;
                let _ = publisher
                    .publish(
                        "data",
                        "bench",
                        &json!({"sent": nanos_since(start), "data": payload}),
                    )
                    .await;
            }
            let _ = publisher.flush().await;
        }));
    }
    for task in tasks {
        task.await.map_err(setup)?;
    }
    let mut received = Vec::new();
    let mut latencies = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut duplicates = 0;
    for receiver in receivers {
        let (count, mut samples, elapsed, dups) = receiver.await.map_err(setup)?;
        received.push(count);
        latencies.append(&mut samples);
        slowest = slowest.max(elapsed);
        duplicates += dups;
    }
    for publisher in &publishers {
        let _ = publisher.close().await;
    }
    if let Some((stop, task)) = relay {
        let _ = stop.send(());
        let _ = task.await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(summarise(
        "fedmsg", scenario, expected, &received, duplicates, latencies, slowest, cpu,
    ))
}

fn tempfile_dir() -> Result<std::path::PathBuf, BenchError> {
    let dir = std::env::temp_dir().join(format!(
        "fedmsg-bench-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).map_err(setup)?;
    Ok(dir)
}

/// Formats reports as a table, one line each.
pub fn table(reports: &[Report]) -> String {
    let mut out = format!(
        "{:<12} {:>12} {:>9} {:>8} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>8} {:>7}\n",
        "run",
        "msg/s",
        "MB/s",
        "lost",
        "dups",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "CPU s",
        "RSS MiB",
        "ratio"
    );
    for r in reports {
        let l = r.latency_us.as_ref();
        let cell = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<12} {:>12.0} {:>9.1} {:>8} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7.2} {:>8.1} {:>7}\n",
            r.name,
            r.msgs_per_sec,
            r.mb_per_sec,
            r.lost,
            r.duplicates,
            cell(l.map(|l| l.p50)),
            cell(l.map(|l| l.p90)),
            cell(l.map(|l| l.p99)),
            cell(l.map(|l| l.p999)),
            cell(l.map(|l| l.max)),
            r.cpu_seconds,
            r.peak_rss_mib,
            r.ratio.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into()),
        ));
    }
    out
}

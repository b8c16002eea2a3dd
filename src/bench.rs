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
use crate::subscribe::{Subscriber, Subscription};
use crate::transport::{self, Backoff, BoundSub, ConnectedPub, CratePubSocket, SubEvent};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use std::collections::HashSet;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Run the relay and the subscribers as processes of our binaries
    /// (`fedmsg-relay`, `fedmsg-tail --json`) and report each one's CPU and
    /// memory; otherwise everything runs in this process, on the library.
    pub processes: bool,
    /// Instead of a stream, run `messages` one-shot `fedmsg-logger`
    /// processes (`echo x | fedmsg-logger`) one after the other, through
    /// the relay into a running `fedmsg-tail`, and time each from spawn to
    /// the tail's output. Implies `relay` and `processes`.
    pub oneshot: bool,
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
    /// Each process of the run: this one first, then the relay and the
    /// subscribers when they ran as processes of their own.
    pub sides: Vec<Side>,
}

/// What one process of a run used.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// `fedmsg-bench` (this process), `fedmsg-relay` or `fedmsg-tail N`.
    pub name: String,
    /// CPU seconds (user + system) during the run.
    pub cpu_seconds: f64,
    /// Peak resident memory, MiB.
    pub peak_rss_mib: f64,
    /// Resident memory when a tenth of the run had passed (after warm-up), MiB.
    pub rss_tenth_mib: Option<f64>,
    /// Resident memory at the end of the run, MiB.
    pub rss_end_mib: Option<f64>,
    /// Resident memory at each tenth of the run (1/10 to 10/10), MiB:
    /// the trend after warm-up, rather than two points.
    pub rss_deciles_mib: Vec<f64>,
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

/// CPU and memory of one process, read from `/proc/<pid>` (or `self`).
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu_seconds: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
}

impl Usage {
    fn of(pid: &str) -> Usage {
        let mut usage = Usage::default();
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the command name (which may contain spaces); utime
            // and stime are fields 14 and 15 of the whole line (11 and 12 here).
            if let Some((_, rest)) = stat.rsplit_once(')') {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let ticks = |i: usize| {
                    fields
                        .get(i)
                        .and_then(|f| f.parse::<f64>().ok())
                        .unwrap_or(0.0)
                };
                usage.cpu_seconds = (ticks(11) + ticks(12)) / 100.0;
            }
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let kib = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                    .map(|kb| kb / 1024.0)
                    .unwrap_or(0.0)
            };
            usage.rss_mib = kib("VmRSS:");
            usage.peak_rss_mib = kib("VmHWM:");
        }
        usage
    }
}

/// Peak resident set of this process, MiB (VmHWM).
pub fn peak_rss_mib() -> f64 {
    Usage::of("self").peak_rss_mib
}

fn cpu_seconds() -> f64 {
    Usage::of("self").cpu_seconds
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
    Bound(CratePubSocket),
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
        let mut out = CratePubSocket::bind(&free_endpoint().map_err(setup)?, &keepalive)
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
            let socket = CratePubSocket::bind(&free_endpoint().map_err(setup)?, &keepalive)
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
        latency_us: if scenario.rate.is_some() || scenario.oneshot {
            latency(latencies)
        } else {
            None
        },
        cpu_seconds: cpu_seconds() - cpu,
        peak_rss_mib: peak_rss_mib(),
        ratio: None,
        sides: vec![Side {
            name: "fedmsg-bench".into(),
            cpu_seconds: cpu_seconds() - cpu,
            peak_rss_mib: peak_rss_mib(),
            rss_tenth_mib: None,
            rss_end_mib: None,
            rss_deciles_mib: Vec::new(),
        }],
    }
}

/// The bus itself: envelopes, JSON, sequence tracking, optional signing
/// and validation.
pub async fn run_fedmsg(scenario: &Scenario) -> Result<Report, BenchError> {
    let dir = tempfile_dir()?;
    let mut children = Children::default();
    let result = run_fedmsg_in(scenario, &dir, &mut children).await;
    children.stop();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Writes the run's configuration into `dir` and loads it.
fn write_config(
    scenario: &Scenario,
    dir: &Path,
    names: &[String],
) -> Result<(PathBuf, Config), BenchError> {
    let mut endpoints = String::new();
    let mut certnames = String::new();
    // The probe listeners stay open until every name has its port, so no
    // two names get the same one.
    let mut held = Vec::new();
    for name in names {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(setup)?;
        let port = listener.local_addr().map_err(setup)?.port();
        held.push(listener);
        endpoints.push_str(&format!("\"{name}\" = \"tcp://127.0.0.1:{port}\"\n"));
    }
    drop(held);
    let mut keys = String::new();
    if scenario.signing != Signing::None {
        let ca = Authority::at(dir);
        ca.create("bench CA", KeyKind::Ed25519, 2).map_err(setup)?;
        for name in names {
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
    // A fedmsg-tail process reads slower than an in-process publisher
    // sends flat out; let the whole run wait for it, so that the row
    // measures the tail's own pace rather than the high-water mark.
    if scenario.processes && !scenario.relay {
        let hwm = scenario.messages.max(100_000);
        keys.push_str(&format!("high_water_mark = {hwm}\n"));
    }
    let text = format!("{keys}{relay_keys}[endpoints]\n{endpoints}[certnames]\n{certnames}");
    let path = dir.join("bench.toml");
    std::fs::write(&path, text).map_err(setup)?;
    let config = Loader::isolated()
        .file(Some(path.clone()))
        .load()
        .map_err(setup)?;
    Ok((path, config))
}

/// What a subscriber measured: messages received, latency samples,
/// the time from its first message to its last, duplicates dropped.
type Tally = (u64, Vec<u64>, Duration, u64);

async fn run_fedmsg_in(
    scenario: &Scenario,
    dir: &Path,
    children: &mut Children,
) -> Result<Report, BenchError> {
    let names: Vec<String> = (0..scenario.publishers)
        .map(|p| format!("bench{p}.host"))
        .collect();
    let (path, config) = write_config(scenario, dir, &names)?;
    let cpu = cpu_seconds();
    let mut relay = None;
    if scenario.relay && scenario.processes {
        children.spawn(
            "fedmsg-relay",
            std::process::Command::new(sibling("fedmsg-relay")?)
                .arg("--config")
                .arg(&path)
                .arg("-q")
                .stdout(std::process::Stdio::null()),
        )?;
    } else if scenario.relay {
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
    let expected = if scenario.oneshot {
        scenario.messages
    } else {
        scenario.messages * scenario.publishers as u64
    };
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(scenario.subscribers);
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Instant>();
    let progress = Arc::new(AtomicU64::new(0));
    let heard = Heard::new(scenario.subscribers, scenario.publishers);
    let mut receivers = Vec::new();
    for index in 0..scenario.subscribers {
        if scenario.processes {
            let tail = children.spawn(
                &format!("fedmsg-tail {}", index + 1),
                std::process::Command::new(sibling("fedmsg-tail")?)
                    .arg("--config")
                    .arg(&path)
                    .args(["--json", "-q"])
                    .stdout(std::process::Stdio::piped()),
            )?;
            let stdout = tail.stdout.take().ok_or_else(|| {
                BenchError::Setup("fedmsg-tail's output could not be read".into())
            })?;
            let feed = TailFeed {
                heard: heard.clone(),
                subscriber: index,
                expected: if scenario.oneshot { 0 } else { expected },
                paced: scenario.rate.is_some(),
                start,
                ready: ready_tx.clone(),
                seen: seen_tx.clone(),
                progress: progress.clone(),
            };
            receivers.push(tokio::task::spawn_blocking(move || feed.read(stdout)));
        } else {
            receivers.push(tokio::spawn(subscribe_in_process(
                Subscriber::from_config(&config)
                    .topic("org.fedoraproject.dev.bench")
                    .subscribe(),
                heard.clone(),
                index,
                expected,
                start,
                ready_tx.clone(),
            )));
        }
    }
    drop(ready_tx);
    drop(seen_tx);
    // Probe until every subscriber heard every publisher.
    let mut ready = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ready < scenario.subscribers {
        // Only the publishers someone has not heard yet: a thousand of them
        // probing every round would bury the subscribers.
        for index in heard.unheard() {
            let Some(publisher) = publishers.get(index) else {
                continue;
            };
            publisher
                .publish("probe", "bench", &json!({ "publisher": index }))
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
                "subscribers did not hear every publisher within 30 s".into(),
            ));
        }
    }
    children.data_started();
    let mut oneshot = None;
    let mut sides = Vec::new();
    if scenario.oneshot {
        oneshot = Some(run_oneshots(scenario.messages, &path, &mut seen_rx).await?);
        for publisher in &publishers {
            let _ = publisher.close().await;
        }
        sides = children.finish();
    } else {
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
                            &Outgoing {
                                sent: nanos_since(start),
                                data: &payload,
                            },
                        )
                        .await;
                }
                let _ = publisher.flush().await;
            }));
        }
        for task in tasks {
            task.await.map_err(setup)?;
        }
    }
    // Wait for the subscribers while they make progress; a stalled one
    // (messages lost) is stopped after two quiet seconds.
    let mut received = Vec::new();
    let mut latencies = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut duplicates = 0;
    for mut receiver in receivers {
        let tally = loop {
            let before = progress.load(Ordering::Relaxed);
            match tokio::time::timeout(Duration::from_secs(2), &mut receiver).await {
                Ok(tally) => break tally.map_err(setup)?,
                Err(_) if progress.load(Ordering::Relaxed) == before => {
                    sides = children.finish();
                }
                Err(_) => {}
            }
        };
        let (count, mut samples, elapsed, dups): Tally = tally;
        received.push(count);
        latencies.append(&mut samples);
        slowest = slowest.max(elapsed);
        duplicates += dups;
    }
    for publisher in &publishers {
        let _ = publisher.close().await;
    }
    if sides.is_empty() {
        sides = children.finish();
    }
    if let Some((stop, task)) = relay {
        let _ = stop.send(());
        let _ = task.await;
    }
    let mut report = match oneshot {
        Some((delivered, latencies, elapsed)) => summarise(
            "fedmsg",
            scenario,
            expected,
            &[delivered],
            0,
            latencies,
            elapsed,
            cpu,
        ),
        None => summarise(
            "fedmsg", scenario, expected, &received, duplicates, latencies, slowest, cpu,
        ),
    };
    report.sides.extend(sides);
    Ok(report)
}

/// The in-process subscriber: warms up on probes, then counts data.
async fn subscribe_in_process(
    mut subscription: Subscription,
    heard: Arc<Heard>,
    subscriber: usize,
    expected: u64,
    start: Instant,
    ready: mpsc::Sender<()>,
) -> Tally {
    // Warm-up: hear a probe from every publisher.
    while !heard.all(subscriber) {
        match subscription.next().await {
            Some(r) if r.topic().ends_with(".probe") => {
                if let Ok(Probe { publisher }) = r.message.msg_as::<Probe>() {
                    heard.insert(subscriber, publisher);
                }
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
                // A typed consumer's read: one scan, no JSON tree.
                if let Ok(BenchMsg { sent }) = r.message.msg_as::<BenchMsg>() {
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
}

/// Which publishers each subscriber has heard during the warm-up.
struct Heard {
    sets: Mutex<Vec<HashSet<usize>>>,
    publishers: usize,
}

impl Heard {
    fn new(subscribers: usize, publishers: usize) -> Arc<Heard> {
        Arc::new(Heard {
            sets: Mutex::new(vec![HashSet::new(); subscribers]),
            publishers,
        })
    }

    fn insert(&self, subscriber: usize, publisher: usize) {
        if let Ok(mut sets) = self.sets.lock() {
            if let Some(set) = sets.get_mut(subscriber) {
                set.insert(publisher);
            }
        }
    }

    /// Whether `subscriber` heard every publisher.
    fn all(&self, subscriber: usize) -> bool {
        self.sets
            .lock()
            .map(|sets| {
                sets.get(subscriber)
                    .is_none_or(|s| s.len() >= self.publishers)
            })
            .unwrap_or(true)
    }

    /// The publishers some subscriber has not heard yet.
    fn unheard(&self) -> Vec<usize> {
        let Ok(sets) = self.sets.lock() else {
            return Vec::new();
        };
        (0..self.publishers)
            .filter(|p| sets.iter().any(|set| !set.contains(p)))
            .collect()
    }
}

/// Reads a `fedmsg-tail --json` process's output on a thread of its own:
/// the probes of the warm-up, the data (counted, and timed when paced)
/// and one-shot loggers' messages.
struct TailFeed {
    heard: Arc<Heard>,
    subscriber: usize,
    /// Data messages to wait for; 0 reads until the tail is stopped.
    expected: u64,
    paced: bool,
    start: Instant,
    ready: mpsc::Sender<()>,
    seen: mpsc::UnboundedSender<Instant>,
    progress: Arc<AtomicU64>,
}

/// A line of `fedmsg-tail --json`, read for its payload only.
#[derive(serde::Deserialize)]
struct Line<T> {
    msg: T,
}

/// The payload of a warm-up probe.
#[derive(serde::Deserialize)]
struct Probe {
    publisher: usize,
}

impl TailFeed {
    fn read(self, stdout: std::process::ChildStdout) -> Tally {
        let mut reader = std::io::BufReader::with_capacity(1 << 20, stdout);
        let mut line = Vec::with_capacity(4096);
        let mut announced = false;
        let mut received = 0u64;
        let mut latencies = Vec::new();
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let Some(topic) = topic_of(&line) else {
                continue;
            };
            if topic.ends_with(b".bench.data") {
                let now = Instant::now();
                first.get_or_insert(now);
                if self.paced {
                    if let Ok(Line {
                        msg: BenchMsg { sent },
                    }) = serde_json::from_slice(&line)
                    {
                        latencies.push(nanos_since(self.start).saturating_sub(sent));
                    }
                }
                received += 1;
                last = now;
                self.progress.fetch_add(1, Ordering::Relaxed);
                if self.expected > 0 && received >= self.expected {
                    break;
                }
            } else if topic.ends_with(b".bench.probe") {
                if let Ok(Line {
                    msg: Probe { publisher },
                }) = serde_json::from_slice(&line)
                {
                    self.heard.insert(self.subscriber, publisher);
                }
                if !announced && self.heard.all(self.subscriber) {
                    announced = true;
                    let _ = self.ready.blocking_send(());
                }
            } else if topic.ends_with(b".logger.log") {
                let _ = self.seen.send(Instant::now());
            }
        }
        (
            received,
            latencies,
            first.map(|f| last.duration_since(f)).unwrap_or_default(),
            0,
        )
    }
}

/// The topic of a canonical JSON line, found from the end (where `topic`
/// sorts), without parsing the line.
fn topic_of(line: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"topic\":\"";
    let at = line.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let rest = &line[at..];
    let end = rest.iter().position(|b| *b == b'"')?;
    Some(&rest[..end])
}

/// Runs `echo x | fedmsg-logger` `runs` times, one after the other, and
/// times each from spawn to the running tail's output. Returns the number
/// delivered, their latencies (ns) and the total time.
async fn run_oneshots(
    runs: u64,
    config: &Path,
    seen: &mut mpsc::UnboundedReceiver<Instant>,
) -> Result<(u64, Vec<u64>, Duration), BenchError> {
    use std::io::Write as _;
    let logger = sibling("fedmsg-logger")?;
    let mut delivered = 0;
    let mut latencies = Vec::new();
    let begin = Instant::now();
    for _ in 0..runs {
        // A late arrival of an earlier run must not count for this one.
        while seen.try_recv().is_ok() {}
        let spawned = Instant::now();
        let mut child = std::process::Command::new(&logger)
            .arg("--config")
            .arg(config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| BenchError::Setup(format!("cannot run fedmsg-logger: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"x\n");
        }
        if let Ok(Some(at)) = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await {
            delivered += 1;
            latencies.push(
                at.duration_since(spawned)
                    .as_nanos()
                    .min(u128::from(u64::MAX)) as u64,
            );
        }
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    }
    Ok((delivered, latencies, begin.elapsed()))
}

/// One of our binaries, next to this one.
fn sibling(name: &str) -> Result<PathBuf, BenchError> {
    let exe = std::env::current_exe().map_err(setup)?;
    let path = exe.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(BenchError::Setup(format!(
            "`{name}` is not next to `{}`: build every binary (`cargo build --release`)",
            exe.display()
        )))
    }
}

/// Our other binaries run by a benchmark, their memory sampled four times
/// a second.
#[derive(Default)]
struct Children {
    running: Vec<Running>,
    data_start: Option<Instant>,
}

struct Running {
    name: String,
    child: std::process::Child,
    samples: Arc<Mutex<Vec<(Instant, f64)>>>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Children {
    fn spawn(
        &mut self,
        name: &str,
        command: &mut std::process::Command,
    ) -> Result<&mut std::process::Child, BenchError> {
        let child = command
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| BenchError::Setup(format!("cannot run {name}: {e}")))?;
        let pid = child.id().to_string();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sampler = tokio::spawn({
            let samples = samples.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let rss = Usage::of(&pid).rss_mib;
                    if let Ok(mut samples) = samples.lock() {
                        samples.push((Instant::now(), rss));
                    }
                }
            }
        });
        self.running.push(Running {
            name: name.to_owned(),
            child,
            samples,
            sampler,
        });
        let last = self.running.len() - 1;
        Ok(&mut self.running[last].child)
    }

    /// Marks the end of the warm-up.
    fn data_started(&mut self) {
        self.data_start = Some(Instant::now());
    }

    /// Reads each child's usage, then stops it.
    fn finish(&mut self) -> Vec<Side> {
        let end = Instant::now();
        let mut sides = Vec::new();
        for mut running in self.running.drain(..) {
            let usage = Usage::of(&running.child.id().to_string());
            running.sampler.abort();
            let _ = running.child.kill();
            let _ = running.child.wait();
            let samples = running
                .samples
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default();
            let at = |tenths: u32| {
                self.data_start.and_then(|start| {
                    let at = start + end.saturating_duration_since(start) * tenths / 10;
                    samples.iter().find(|(t, _)| *t >= at).map(|(_, rss)| *rss)
                })
            };
            let tenth = at(1);
            let mut deciles: Vec<f64> = (1..10).filter_map(at).collect();
            deciles.push(usage.rss_mib);
            sides.push(Side {
                name: running.name,
                cpu_seconds: usage.cpu_seconds,
                peak_rss_mib: usage.peak_rss_mib,
                rss_tenth_mib: tenth,
                rss_end_mib: Some(usage.rss_mib),
                rss_deciles_mib: deciles,
            });
        }
        sides
    }

    fn stop(&mut self) {
        self.finish();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A benchmark message as a service publishes a typed event.
#[derive(serde::Serialize)]
struct Outgoing<'a> {
    sent: u64,
    data: &'a str,
}

/// The part of a benchmark message a consumer reads.
#[derive(serde::Deserialize)]
struct BenchMsg {
    sent: u64,
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
        if r.sides.len() > 1 {
            for side in &r.sides {
                let mib =
                    |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
                out.push_str(&format!(
                    "  {:<16} CPU {:>7.2} s   peak RSS {:>7.1} MiB   RSS at 1/10 of the run {:>7} MiB, at the end {:>7} MiB\n",
                    side.name,
                    side.cpu_seconds,
                    side.peak_rss_mib,
                    mib(side.rss_tenth_mib),
                    mib(side.rss_end_mib),
                ));
                if side.rss_deciles_mib.len() > 2 {
                    let trend: Vec<String> = side
                        .rss_deciles_mib
                        .iter()
                        .map(|v| format!("{v:.1}"))
                        .collect();
                    out.push_str(&format!(
                        "  {:<16} RSS at each tenth of the run, MiB: {}\n",
                        "",
                        trend.join(" ")
                    ));
                }
            }
        }
    }
    out
}

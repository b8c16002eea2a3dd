//! Publishing: one [`Publisher`] per process, a cheap `Clone` handle over a
//! single task that owns the socket.
//!
//! Unlike fedmsg, which needs one endpoint per thread, every thread and task
//! of a process shares the one publisher and its one endpoint. Two modes:
//!
//! * **bound** (default): bind the first free address listed for the
//!   publisher's name (`<program>.<short hostname>` or `name`);
//! * **active**: connect to `relay_inbound` (what `fedmsg-logger` does);
//!   sends then wait until the relay listens and every message is written.
//!
//! There is no task between the handle and the socket: publishing takes a
//! lock, numbers the message, builds and serialises (and signs) it, and
//! hands it to the socket, so clones publish in `i` order with one thread
//! hand-off fewer than a publisher task would need.
//!
//! RSA (`x509`) signatures take about a millisecond each, so those are made
//! on worker threads, one per core at most: `publish` returns once the
//! message is numbered and queued for signing, each message is sent as
//! soon as it and all before it are signed, and `flush` waits for all.
//!
//! For synchronous programs, [`crate::publish`] is a blocking one-call API
//! over a process-wide publisher.

use crate::canonical;
use crate::config::Config;
use crate::crypto::{certname_for, Signer};
use crate::endpoint::Endpoint;
use crate::envelope::{self, Message};
use crate::replay::{Entry, History, SharedHistory};
use crate::topic::Topic;
use crate::transport::{ConnectedPub, PubSocket, TransportError};
pub use crate::transport::{PubCounters, PubLimits};

/// A bound socket's limits from `config`: `high_water_mark` messages per
/// subscriber (0 means the default, 100,000).
pub(crate) fn limits(config: &Config) -> PubLimits {
    let mut limits = PubLimits::default();
    if config.high_water_mark > 0 {
        limits.hwm = usize::try_from(config.high_water_mark).unwrap_or(usize::MAX);
    }
    limits
}
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::oneshot;

/// Why publishing failed.
#[derive(Debug, thiserror::Error, Clone)]
pub enum PublishError {
    /// No address is configured for this publisher's name.
    #[error("no endpoint is configured for publisher name `{name}`: add `\"{name}\" = [\"tcp://HOST:PORT\"]` under [endpoints], set `name`, or set `active = true` to publish through fedmsg-relay")]
    NoEndpoint {
        /// The publisher name.
        name: String,
    },
    /// Every configured address was taken.
    #[error("no free endpoint for publisher name `{name}`; tried {}", tried.iter().map(|(a, r)| format!("{a} ({r})")).collect::<Vec<_>>().join(", "))]
    NoFreeEndpoint {
        /// The publisher name.
        name: String,
        /// Each address tried, with the reason it failed.
        tried: Vec<(String, String)>,
    },
    /// Active mode without a `relay_inbound` address.
    #[error("active mode needs `relay_inbound` in the configuration")]
    NoRelay,
    /// The relay could not be reached.
    #[error("cannot reach fedmsg-relay: {0}")]
    Relay(String),
    /// The message could not be turned into JSON.
    #[error("message is not serialisable as JSON: {0}")]
    Serialize(String),
    /// The socket failed.
    #[error("{0}")]
    Transport(String),
    /// The publisher task is gone (the publisher was closed).
    #[error("the publisher is closed")]
    Closed,
    /// The configuration says not to publish.
    #[error("publishing is disabled by `mute = true`")]
    Muted,
    /// A hub consumer published, but the hub was given no publisher.
    #[error("this hub has no publisher: give it one with Hub::publisher")]
    NoPublisher,
    /// The replay service could not start.
    #[error("{0}")]
    Replay(String),
    /// `sign_messages` is on but the key or certificate is unusable.
    #[error("cannot sign messages: {0}")]
    Signer(String),
}

/// The replay service for `name` and its history, set up now (so a taken
/// port or an unusable store is a start-up error) if `replay_endpoints`
/// lists one.
async fn replay_for(
    config: &Config,
    name: &str,
) -> Result<Option<(crate::replay::Server, History)>, PublishError> {
    let Some(endpoint) = config.replay_endpoints.get(name) else {
        return Ok(None);
    };
    let history = config.replay_history_for(name, None).map_err(|e| {
        PublishError::Replay(format!("cannot open the replay history for `{name}`: {e}"))
    })?;
    let server = crate::replay::Server::bind(endpoint, &config.keepalive)
        .await
        .map_err(|e| {
            PublishError::Replay(format!("cannot start the replay service for `{name}`: {e}"))
        })?;
    Ok(Some((server, history)))
}

/// The signer `sign_messages` asks for, loaded before any socket opens so a
/// missing key or certificate is a start-up error.
fn signer_for(config: &Config, name: &str) -> Result<Option<Arc<Signer>>, PublishError> {
    if !config.sign_messages {
        return Ok(None);
    }
    let certname = certname_for(config, name);
    let signer =
        Signer::from_config(config, &certname).map_err(|e| PublishError::Signer(e.to_string()))?;
    if signer.scheme().name() != config.crypto_backend {
        return Err(PublishError::Signer(format!(
            "crypto_backend is {:?} but the key for `{certname}` signs {:?}",
            config.crypto_backend,
            signer.scheme().name()
        )));
    }
    tracing::info!(
        certname,
        signer = signer.common_name(),
        scheme = signer.scheme().name(),
        "signing messages"
    );
    Ok(Some(Arc::new(signer)))
}

/// What one publisher owns: the socket and the state that numbers, signs,
/// keeps and sends each message. Publishing takes the lock, so every clone
/// of the handle sends in `i` order without a task in between.
struct State {
    sink: Option<Sink>,
    counter: u64,
    error: Option<PublishError>,
    out: String,
    signer: Option<Arc<Signer>>,
    incarnation: String,
    shared_incarnation: Arc<str>,
    incarnation_value: Value,
    username: String,
    history: Option<(
        SharedHistory,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    /// Signing threads used at once (0: sign inline, as for Ed25519).
    workers: usize,
    /// Messages being signed, in `i` order.
    in_flight: VecDeque<InFlight>,
    /// This state, for workers that finish signing.
    this: Weak<tokio::sync::Mutex<State>>,
}

/// A message whose signature is being made.
struct InFlight {
    topic: Topic,
    i: u64,
    timestamp: f64,
    signed: oneshot::Receiver<Bytes>,
}

/// Signs an envelope and writes its canonical form.
fn sign_and_write(signer: &Signer, mut body: Map<String, Value>) -> Bytes {
    signer.sign(&mut body);
    let mut out = String::with_capacity(2048);
    crate::canonical::write_canonical_object_without(&mut out, &body, &[]);
    Bytes::from(out)
}

/// How many signatures are made at once: one per core for RSA, whose
/// private-key operation takes about a millisecond; Ed25519 signs in
/// microseconds, less than a hand-off to another thread would cost.
fn signing_workers(signer: Option<&Signer>) -> usize {
    match signer.map(Signer::scheme) {
        Some(crate::crypto::Scheme::X509) => {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }
        _ => 0,
    }
}

/// A message to publish: already canonical JSON (the unsigned path), or a
/// tree (to be signed, or a value the direct writer does not take).
enum Payload {
    Canonical(String),
    Tree(Value),
}

fn to_value<T: Serialize + ?Sized>(msg: &T) -> Result<Value, PublishError> {
    serde_json::to_value(msg).map_err(|e| PublishError::Serialize(e.to_string()))
}

impl State {
    async fn publish(&mut self, topic: Topic, payload: Payload) -> Result<(), PublishError> {
        if self.sink.is_none() {
            return Err(PublishError::Closed);
        }
        self.counter += 1;
        let counter = self.counter;
        let Some(signer) = self.signer.clone() else {
            let mut msg = String::new();
            let msg = match &payload {
                Payload::Canonical(text) => text.as_str(),
                Payload::Tree(value) => {
                    canonical::write_canonical(&mut msg, value);
                    msg.as_str()
                }
            };
            self.out.clear();
            let timestamp = envelope::write_unsigned(
                &mut self.out,
                &topic,
                msg,
                counter,
                &self.incarnation,
                &self.username,
            ) as f64;
            let body = Bytes::copy_from_slice(self.out.as_bytes());
            self.send(&topic, counter, timestamp, body).await;
            return Ok(());
        };
        let msg = match payload {
            Payload::Tree(value) => value,
            Payload::Canonical(text) => canonical::parse(text.as_bytes())
                .map_err(|e| PublishError::Serialize(e.to_string()))?,
        };
        // Signing needs the envelope as a map.
        let mut body = envelope::build(&topic, msg, counter, &self.username);
        body.insert("incarnation".into(), self.incarnation_value.clone());
        let timestamp = body.get("timestamp").and_then(Value::as_f64).unwrap_or(0.0);
        if self.workers == 0 {
            let body = sign_and_write(&signer, body);
            self.send(&topic, counter, timestamp, body).await;
            return Ok(());
        }
        // A slow signature (RSA) is made on a worker thread, several at a
        // time; messages still leave in `i` order, each as soon as it and
        // every one before it are signed.
        let (done, signed) = oneshot::channel();
        let this = self.this.clone();
        tokio::task::spawn_blocking(move || {
            let _ = done.send(sign_and_write(&signer, body));
            if let Some(state) = this.upgrade() {
                tokio::spawn(async move { state.lock().await.send_signed().await });
            }
        });
        self.in_flight.push_back(InFlight {
            topic,
            i: counter,
            timestamp,
            signed,
        });
        while self.in_flight.len() > 2 * self.workers {
            self.send_next().await;
        }
        self.send_signed().await;
        Ok(())
    }

    /// Sends the signed messages at the head of the line.
    async fn send_signed(&mut self) {
        while let Some(front) = self.in_flight.front_mut() {
            match front.signed.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => break,
                Ok(body) => {
                    if let Some(front) = self.in_flight.pop_front() {
                        self.send(&front.topic, front.i, front.timestamp, body)
                            .await;
                    }
                }
                Err(oneshot::error::TryRecvError::Closed) => {
                    self.in_flight.pop_front();
                    self.signing_failed();
                }
            }
        }
    }

    /// Waits for the first message in line to be signed, and sends it.
    async fn send_next(&mut self) {
        let Some(front) = self.in_flight.pop_front() else {
            return;
        };
        match front.signed.await {
            Ok(body) => {
                self.send(&front.topic, front.i, front.timestamp, body)
                    .await
            }
            Err(_) => self.signing_failed(),
        }
    }

    fn signing_failed(&mut self) {
        tracing::error!("a signing worker failed; the message was not sent");
        self.error
            .get_or_insert(PublishError::Transport("a signing worker failed".into()));
    }

    /// Keeps the message for replay, then hands it to the socket.
    async fn send(&mut self, topic: &Topic, counter: u64, timestamp: f64, body: Bytes) {
        if let Some((history, _, _)) = &self.history {
            // Kept before sending, so a subscriber that hears of a message
            // can always fetch it.
            if let Ok(mut history) = history.lock() {
                history.push(Entry {
                    incarnation: Some(self.shared_incarnation.clone()),
                    i: Some(counter),
                    msg_id: None,
                    timestamp,
                    body: body.clone(),
                });
            }
        }
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        let frames = vec![Bytes::copy_from_slice(topic.as_bytes()), body];
        if let Err(e) = sink.send(frames).await {
            tracing::warn!(error = %e, "publish failed");
            self.error
                .get_or_insert(PublishError::Transport(e.to_string()));
        }
    }

    async fn flush(&mut self) -> Result<(), PublishError> {
        while !self.in_flight.is_empty() {
            self.send_next().await;
        }
        let Some(sink) = self.sink.as_mut() else {
            return Err(PublishError::Closed);
        };
        if let Err(e) = sink.flush().await {
            self.error
                .get_or_insert(PublishError::Transport(e.to_string()));
        }
        self.error.take().map_or(Ok(()), Err)
    }

    async fn close(&mut self) -> Result<(), PublishError> {
        let result = self.flush().await;
        if let Some(sink) = self.sink.take() {
            sink.close().await;
        }
        // The replay service's address is released too before close() returns.
        if let Some((_, stop, task)) = self.history.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
        result
    }
}

/// Settings a publisher keeps from the configuration.
#[derive(Debug, Clone)]
struct Identity {
    name: String,
    endpoint: Endpoint,
    topic_prefix: String,
    environment: String,
    /// Messages are signed (the signer needs the envelope as a map).
    signed: bool,
}

/// A handle to the process's publisher. Clone it freely: every clone feeds
/// the same task and socket, and messages from one clone keep their order.
#[derive(Clone)]
pub struct Publisher {
    state: Arc<tokio::sync::Mutex<State>>,
    identity: Arc<Identity>,
    counters: Option<Arc<PubCounters>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("name", &self.identity.name)
            .field("endpoint", &self.identity.endpoint)
            .finish()
    }
}

enum Sink {
    Bound(PubSocket),
    Connected(Box<ConnectedPub>),
}

impl Sink {
    async fn close(self) {
        match self {
            Sink::Bound(s) => s.close().await,
            Sink::Connected(_) => {}
        }
    }

    /// Delivers what is queued (active mode, while the relay was away).
    async fn flush(&mut self) -> Result<(), TransportError> {
        match self {
            Sink::Bound(_) => Ok(()),
            Sink::Connected(s) => s.flush().await,
        }
    }

    async fn send(&mut self, frames: Vec<Bytes>) -> Result<(), TransportError> {
        match self {
            Sink::Bound(s) => s.send(frames).await,
            Sink::Connected(s) => s.send(frames).await,
        }
    }
}

/// `<program>.<short hostname>`, fedmsg's default publisher name.
pub fn default_name() -> String {
    let program = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "fedmsg".to_owned());
    format!("{program}.{}", short_hostname())
}

/// The host name up to its first dot.
pub fn short_hostname() -> String {
    let full = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    full.split('.').next().unwrap_or("localhost").to_owned()
}

impl Publisher {
    /// Creates the publisher the configuration asks for: active (connect to
    /// the relay) if `active = true`, otherwise bound under its name.
    pub async fn from_config(config: &Config) -> Result<Publisher, PublishError> {
        if config.mute {
            return Err(PublishError::Muted);
        }
        if config.active {
            Self::connect(config).await
        } else {
            let name = config.name.clone().unwrap_or_else(default_name);
            Self::bind(config, &name).await
        }
    }

    /// The bound socket's counters (subscribers, and messages dropped for
    /// subscribers at their high-water mark); `None` in active mode.
    pub fn counters(&self) -> Option<Arc<PubCounters>> {
        self.counters.clone()
    }

    /// Binds the first free address listed for `name` in `endpoints`.
    pub async fn bind(config: &Config, name: &str) -> Result<Publisher, PublishError> {
        let addresses = config
            .endpoints
            .get(name)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| PublishError::NoEndpoint {
                name: name.to_owned(),
            })?;
        let signer = signer_for(config, name)?;
        let replay = replay_for(config, name).await?;
        let mut tried = Vec::new();
        for address in addresses {
            match PubSocket::bind_with(address, &config.keepalive, limits(config)).await {
                Ok(socket) => {
                    let endpoint = socket.endpoint().clone();
                    tracing::info!(name, endpoint = %endpoint, "publisher bound");
                    return Ok(Self::spawn(
                        config,
                        name,
                        endpoint,
                        Sink::Bound(socket),
                        signer,
                        replay,
                    ));
                }
                Err(e) => {
                    tracing::debug!(name, endpoint = %address, error = %e, "endpoint not available");
                    tried.push((address.to_string(), reason_of(&e)));
                }
            }
        }
        Err(PublishError::NoFreeEndpoint {
            name: name.to_owned(),
            tried,
        })
    }

    /// Connects to the relay's `relay_inbound` address (fedmsg's active
    /// mode), waiting at most `timeout` for it to listen.
    pub async fn connect(config: &Config) -> Result<Publisher, PublishError> {
        let endpoint = config.relay_inbound.first().ok_or(PublishError::NoRelay)?;
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| "relay_inbound".to_owned());
        let signer = signer_for(config, &name)?;
        let replay = replay_for(config, &name).await?;
        let socket = ConnectedPub::connect(endpoint, config.timeout, &config.keepalive)
            .await
            .map_err(|e| PublishError::Relay(e.to_string()))?;
        Ok(Self::spawn(
            config,
            &name,
            endpoint.clone(),
            Sink::Connected(Box::new(socket)),
            signer,
            replay,
        ))
    }

    fn spawn(
        config: &Config,
        name: &str,
        endpoint: Endpoint,
        sink: Sink,
        signer: Option<Arc<Signer>>,
        replay: Option<(crate::replay::Server, History)>,
    ) -> Publisher {
        let identity = Arc::new(Identity {
            name: name.to_owned(),
            endpoint,
            topic_prefix: config.topic_prefix.clone(),
            environment: config.environment.clone(),
            signed: signer.is_some(),
        });
        let incarnation = uuid::Uuid::new_v4().simple().to_string();
        let history = replay.map(|(server, mut history)| {
            history.set_own_incarnation(Some(incarnation.clone()));
            let history: SharedHistory = Arc::new(Mutex::new(history));
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(server.run(history.clone(), async move {
                let _ = stopped.await;
            }));
            (history, stop, task)
        });
        let workers = signing_workers(signer.as_deref());
        let counters = match &sink {
            Sink::Bound(socket) => Some(socket.counters()),
            _ => None,
        };
        let state = Arc::new_cyclic(|this| {
            tokio::sync::Mutex::new(State {
                sink: Some(sink),
                counter: 0,
                error: None,
                out: String::with_capacity(512),
                signer,
                shared_incarnation: Arc::from(incarnation.as_str()),
                incarnation_value: Value::String(incarnation.clone()),
                incarnation,
                username: envelope::current_username(),
                history,
                workers,
                in_flight: VecDeque::new(),
                this: this.clone(),
            })
        });
        Publisher {
            state,
            identity,
            counters,
        }
    }

    /// The publisher's name.
    pub fn name(&self) -> &str {
        &self.identity.name
    }

    /// The address bound (or, in active mode, the relay's address).
    pub fn endpoint(&self) -> &Endpoint {
        &self.identity.endpoint
    }

    /// The full topic `publish(topic, modname, ..)` would use.
    pub fn topic(&self, topic: &str, modname: &str) -> Topic {
        Topic::build(
            &self.identity.topic_prefix,
            &self.identity.environment,
            modname,
            topic,
        )
    }

    /// Publishes `msg` on `<prefix>.<env>.<modname>.<topic>`. Returns once the
    /// message is numbered, signed if configured, kept for replay, and handed
    /// to the socket (in active mode: written to the relay connection, or
    /// queued while the relay is away). With an RSA key it returns once the
    /// message is queued for a signing thread; it is sent, in order, as soon
    /// as it is signed. Transport errors are reported by
    /// [`Publisher::flush`], which also waits for every signature.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        modname: &str,
        msg: &T,
    ) -> Result<(), PublishError> {
        let topic = self.topic(topic, modname);
        let payload = if self.identity.signed {
            Payload::Tree(to_value(msg)?)
        } else {
            // Written before taking the lock, straight from the caller's
            // value: no JSON tree, and publishing clones work in parallel.
            let mut text = String::with_capacity(256);
            match canonical::write_serialize(&mut text, msg) {
                Ok(()) => Payload::Canonical(text),
                Err(_) => Payload::Tree(to_value(msg)?),
            }
        };
        self.state.lock().await.publish(topic, payload).await
    }

    /// Flushes, then closes the socket and releases its address (and the
    /// replay service's); every clone of this handle refuses to publish
    /// afterwards.
    pub async fn close(&self) -> Result<(), PublishError> {
        self.state.lock().await.close().await
    }

    /// Waits until every message published so far has been handed to the
    /// socket (in active mode: written to the relay connection, or queued
    /// messages delivered), and reports the first error since the last flush.
    pub async fn flush(&self) -> Result<(), PublishError> {
        self.state.lock().await.flush().await
    }
}

fn reason_of(error: &TransportError) -> String {
    match error {
        TransportError::Bind { reason, .. } | TransportError::Connect { reason, .. } => {
            reason.clone()
        }
        other => other.to_string(),
    }
}

/// A message built exactly as [`Publisher::publish`] would send it, for
/// tests and tools that need the bytes without a socket.
pub fn build_message(topic: &Topic, msg: Value, i: u64, username: &str) -> Message {
    let body = envelope::build(topic, msg, i, username);
    let raw = Bytes::from(crate::canonical::to_canonical(&Value::Object(body.clone())));
    Message::from_parts(topic.as_str().to_owned(), body, raw)
}

struct Global {
    runtime: tokio::runtime::Runtime,
    publisher: Publisher,
}

static GLOBAL: Mutex<Option<Arc<Global>>> = Mutex::new(None);

fn global() -> Result<Arc<Global>, PublishError> {
    let mut slot = GLOBAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(global) = slot.as_ref() {
        return Ok(global.clone());
    }
    let config = crate::config::load().map_err(|e| PublishError::Transport(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fedmsg-publisher")
        .enable_all()
        .build()
        .map_err(|e| PublishError::Transport(e.to_string()))?;
    let publisher = runtime.block_on(Publisher::from_config(&config))?;
    let global = Arc::new(Global { runtime, publisher });
    *slot = Some(global.clone());
    Ok(global)
}

/// Publishes one message from synchronous code, fedmsg-style:
/// `fedmsg::publish("update", "bodhi", &json!({...}))`.
///
/// The first call loads the configuration and creates a process-wide
/// publisher (bound under `<program>.<host>`, or active if configured); later
/// calls from any thread reuse it. Returns once the message is handed to the
/// socket. Must not be called from inside an async runtime: async code uses
/// [`Publisher`] directly.
pub fn publish<T: Serialize + ?Sized>(
    topic: &str,
    modname: &str,
    msg: &T,
) -> Result<(), PublishError> {
    let global = global()?;
    global.runtime.block_on(async {
        global.publisher.publish(topic, modname, msg).await?;
        global.publisher.flush().await
    })
}

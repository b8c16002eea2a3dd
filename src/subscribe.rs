//! Subscribing: a connection per endpoint, merged into one [`Subscription`]
//! stream of [`Received`] messages, with nothing lost silently.
//!
//! Each endpoint's connection retries with the configured backoff while the
//! publisher is absent, and reconnects when it restarts or vanishes. One
//! reader task polls them all (`transport::subscribe_all`) and, for each
//! batch of what arrived:
//!
//! 1. decodes it: malformed input (wrong frame count, bad UTF-8, non-JSON or
//!    non-object bodies, oversized bodies) is logged, counted in [`Stats`],
//!    and skipped;
//! 2. validates signatures when configured (Ed25519 in batches);
//! 3. tracks sequence numbers per publisher incarnation
//!    ([`crate::sequence`]): duplicates are dropped; a gap is filled from
//!    the publisher's replay service before the message that revealed it;
//!    a publisher first seen mid-stream is caught up to this subscription's
//!    start (so a reader never loses what was sent while it was joining);
//!    what cannot be filled is reported as a [`Loss`], never skipped quietly.

use crate::config::{Config, Keepalive};
use crate::crypto::{Validator, ValidatorConfig, Verdict};
use crate::endpoint::Endpoint;
use crate::envelope::{DecodeError, Message};
use crate::replay::{self, Query, ReplayError};
use crate::sequence::{State, Step, Tracker};
use crate::transport::{self, Backoff, SubEvent, SubOptions};
use bytes::Bytes;
use futures::Stream;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// One message as a reader sees it: who sent it, from where, and what.
#[derive(Debug, Clone)]
pub struct Received {
    /// The publisher name the endpoint is listed under.
    pub name: String,
    /// The endpoint it came from.
    pub endpoint: Endpoint,
    /// The message.
    pub message: Message,
    /// The signature verdict, when the subscription validates.
    pub verdict: Option<Verdict>,
    /// True when it came from a replay service rather than live.
    pub replayed: bool,
}

impl Received {
    /// The frame topic.
    pub fn topic(&self) -> &str {
        self.message.topic()
    }
}

/// Messages that could not be recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// The publisher name of the endpoint.
    pub name: String,
    /// The publisher incarnation.
    pub incarnation: String,
    /// First lost sequence number.
    pub first: u64,
    /// Last lost sequence number.
    pub last: u64,
    /// How many were lost (at most `last - first + 1`).
    pub count: u64,
    /// Why they could not be recovered.
    pub reason: String,
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let range = if self.first == self.last {
            format!("seq {}", self.first)
        } else {
            format!("seq {}-{}", self.first, self.last)
        };
        write!(
            f,
            "lost {} message{} from {} ({range}): {}",
            self.count,
            if self.count == 1 { "" } else { "s" },
            self.name,
            self.reason
        )
    }
}

/// Counters of what a subscription saw. Shared and updated live.
#[derive(Debug, Default)]
pub struct Stats {
    received: AtomicU64,
    invalid: Mutex<BTreeMap<&'static str, u64>>,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    connected: AtomicU64,
    duplicates: AtomicU64,
    replayed: AtomicU64,
    lost: AtomicU64,
    gaps: AtomicU64,
    endpoints: Vec<EndpointStats>,
}

/// Counters of one endpoint of a subscription: which publishers are
/// connected, and which lose messages.
#[derive(Debug)]
pub struct EndpointStats {
    name: String,
    endpoint: Endpoint,
    connections: AtomicU64,
    received: AtomicU64,
    gaps: AtomicU64,
    lost: AtomicU64,
}

impl EndpointStats {
    /// The publisher name the endpoint is listed under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// True while the endpoint is connected.
    pub fn connected(&self) -> bool {
        self.connections.load(Ordering::Relaxed) > 0
    }

    /// Messages delivered from this publisher (live and replayed).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Gaps detected in this publisher's messages.
    pub fn gaps(&self) -> u64 {
        self.gaps.load(Ordering::Relaxed)
    }

    /// This publisher's messages reported lost.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl Stats {
    fn for_endpoints(endpoints: &[(String, Endpoint)]) -> Stats {
        Stats {
            endpoints: endpoints
                .iter()
                .map(|(name, endpoint)| EndpointStats {
                    name: name.clone(),
                    endpoint: endpoint.clone(),
                    connections: AtomicU64::new(0),
                    received: AtomicU64::new(0),
                    gaps: AtomicU64::new(0),
                    lost: AtomicU64::new(0),
                })
                .collect(),
            ..Stats::default()
        }
    }

    /// Each endpoint's counters, in configuration order.
    pub fn endpoints(&self) -> &[EndpointStats] {
        &self.endpoints
    }

    /// Counts one more of something for endpoint `index`.
    fn endpoint_add(&self, index: usize, counter: fn(&EndpointStats) -> &AtomicU64, n: u64) {
        if let Some(endpoint) = self.endpoints.get(index) {
            counter(endpoint).fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Messages delivered (live and replayed).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Malformed messages dropped, by reason label ([`DecodeError::label`]).
    pub fn invalid(&self) -> BTreeMap<&'static str, u64> {
        self.invalid.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Messages that failed signature validation, by reason label.
    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        self.rejected.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Total malformed messages dropped.
    pub fn invalid_total(&self) -> u64 {
        self.invalid().values().sum()
    }

    /// Endpoints currently connected.
    pub fn connected(&self) -> u64 {
        self.connected.load(Ordering::Relaxed)
    }

    /// Duplicates dropped.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Messages recovered from replay services.
    pub fn replayed(&self) -> u64 {
        self.replayed.load(Ordering::Relaxed)
    }

    /// Messages reported lost.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Gaps detected.
    pub fn gaps(&self) -> u64 {
        self.gaps.load(Ordering::Relaxed)
    }

    pub(crate) fn count_invalid(&self, error: &DecodeError) {
        if let Ok(mut map) = self.invalid.lock() {
            *map.entry(error.label()).or_default() += 1;
        }
    }

    fn count_rejected(&self, label: &'static str) {
        if let Ok(mut map) = self.rejected.lock() {
            *map.entry(label).or_default() += 1;
        }
    }
}

/// Builds a [`Subscription`].
#[derive(Debug, Clone)]
pub struct Subscriber {
    endpoints: Vec<(String, Endpoint)>,
    prefixes: Vec<String>,
    backoff: Backoff,
    keepalive: Keepalive,
    max_message_size: usize,
    validator: Option<Arc<Validator>>,
    keep_invalid: bool,
    replay_endpoints: BTreeMap<String, Endpoint>,
    replay_limit: usize,
    replay_timeout: Duration,
    dedupe_window: usize,
    resume: Option<State>,
    since: Option<f64>,
}

impl Subscriber {
    /// Every endpoint of `config` except `relay_inbound`, all topics.
    pub fn from_config(config: &Config) -> Subscriber {
        Subscriber {
            endpoints: config.subscribe_endpoints(),
            prefixes: Vec::new(),
            backoff: Backoff {
                initial: config.reconnect_ivl,
                max: config.reconnect_ivl_max,
            },
            keepalive: config.keepalive.clone(),
            max_message_size: config.max_message_size,
            validator: config
                .validate_signatures
                .then(|| Arc::new(Validator::new(ValidatorConfig::from_config(config)))),
            keep_invalid: false,
            replay_endpoints: config.replay_endpoints.clone(),
            replay_limit: config.replay_limit,
            replay_timeout: config.replay_timeout,
            dedupe_window: 100_000,
            resume: None,
            since: None,
        }
    }

    /// Explicit endpoints (name, address), with fedmsg's default intervals
    /// and no replay services.
    pub fn new(endpoints: Vec<(String, Endpoint)>) -> Subscriber {
        Subscriber {
            endpoints,
            prefixes: Vec::new(),
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_millis(1000),
            },
            keepalive: Keepalive {
                enabled: true,
                count: 3,
                idle: Duration::from_secs(60),
                interval: Duration::from_secs(5),
            },
            max_message_size: 1 << 20,
            validator: None,
            keep_invalid: false,
            replay_endpoints: BTreeMap::new(),
            replay_limit: 10_000,
            replay_timeout: Duration::from_secs(2),
            dedupe_window: 100_000,
            resume: None,
            since: None,
        }
    }

    /// Validates every message with `validator` (or stops validating).
    pub fn validator(mut self, validator: Option<Arc<Validator>>) -> Subscriber {
        self.validator = validator;
        self
    }

    /// Delivers messages that fail validation too, with their verdict,
    /// instead of dropping them.
    pub fn keep_invalid(mut self, keep: bool) -> Subscriber {
        self.keep_invalid = keep;
        self
    }

    /// The replay service of the publisher listed under `name`.
    pub fn replay_endpoint(mut self, name: impl Into<String>, endpoint: Endpoint) -> Subscriber {
        self.replay_endpoints.insert(name.into(), endpoint);
        self
    }

    /// Continues from a saved position: on start, every replay service is
    /// asked for what was published since the state was saved (at most
    /// `replay_limit` messages each), and known incarnations continue where
    /// they stopped.
    pub fn resume(mut self, state: State) -> Subscriber {
        self.resume = Some(state);
        self
    }

    /// Starts with history: on start, every replay service is asked for
    /// what was published since `since` (seconds since the epoch).
    pub fn since(mut self, since: f64) -> Subscriber {
        self.since = Some(since);
        self
    }

    /// Adds a topic prefix to subscribe to (none means everything).
    pub fn topic(mut self, prefix: impl Into<String>) -> Subscriber {
        self.prefixes.push(prefix.into());
        self
    }

    /// Adds several topic prefixes.
    pub fn topics<I: IntoIterator<Item = S>, S: Into<String>>(mut self, prefixes: I) -> Subscriber {
        self.prefixes.extend(prefixes.into_iter().map(Into::into));
        self
    }

    /// Largest accepted body.
    pub fn max_message_size(mut self, bytes: usize) -> Subscriber {
        self.max_message_size = bytes;
        self
    }

    /// The endpoints this subscriber connects to.
    pub fn endpoints(&self) -> &[(String, Endpoint)] {
        &self.endpoints
    }

    /// Starts one task per endpoint and the reader task, and returns the
    /// merged stream. Must be called inside a tokio runtime.
    pub fn subscribe(self) -> Subscription {
        let socket_prefixes = if self.prefixes.is_empty() {
            vec![String::new()]
        } else {
            self.prefixes.clone()
        };
        let arrivals = transport::subscribe_all(
            self.endpoints.iter().map(|(_, e)| e.clone()).collect(),
            SubOptions {
                prefixes: socket_prefixes,
                backoff: self.backoff,
                keepalive: self.keepalive.clone(),
                // A larger frame would be refused as too large when decoded
                // anyway: skip it rather than buffer it.
                max_frame: self.max_message_size,
            },
        );
        // Batches of at most BATCH, so up to 16 × 256 messages wait here.
        let (deliveries, receiver) = mpsc::channel(16);
        let (loss_sender, losses) = mpsc::channel(1024);
        let stats = Arc::new(Stats::for_endpoints(&self.endpoints));
        let mut tracker = Tracker::new(self.dedupe_window);
        let now = chrono::Utc::now().timestamp();
        let mut state = State::default();
        let mut catch_up = self.since;
        if let Some(resumed) = &self.resume {
            tracker.resume(resumed);
            state = resumed.clone();
            if resumed.saved_at > 0 {
                // From the oldest message consumed last time: a reader that
                // was lagging when it stopped saved later than what it had
                // seen, and new publishers may have started in between.
                let oldest = resumed
                    .positions
                    .values()
                    .map(|p| p.seen)
                    .min()
                    .unwrap_or(resumed.saved_at);
                let from = oldest.min(resumed.saved_at) as f64 - 1.0;
                catch_up = Some(catch_up.map_or(from, |since| since.min(from)));
            }
        }
        let reader = Reader {
            tracker,
            since: catch_up.unwrap_or(now as f64 - 1.0).min(now as f64 - 1.0),
            catch_up,
            stats: stats.clone(),
            deliveries,
            outbox: Vec::with_capacity(BATCH),
            losses: loss_sender,
            settings: self,
        };
        tokio::spawn(reader.run(arrivals));
        Subscription {
            receiver,
            ready: Vec::new().into_iter(),
            stats,
            losses: Some(losses),
            state,
        }
    }

    /// A blocking iterator for synchronous programs; owns its own runtime.
    pub fn subscribe_blocking(self) -> std::io::Result<BlockingSubscription> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let subscription = runtime.block_on(async { self.subscribe() });
        Ok(BlockingSubscription {
            runtime,
            subscription,
        })
    }
}

/// Most transport events handled in one batch.
const BATCH: usize = 256;

/// The reader task: decode, validate, sequence, fill gaps, deliver.
struct Reader {
    settings: Subscriber,
    tracker: Tracker,
    /// Messages from publishers first seen mid-stream are caught up to here.
    since: f64,
    /// Ask every replay service for what was published since then, first.
    catch_up: Option<f64>,
    stats: Arc<Stats>,
    /// Delivered messages not yet handed over: one channel send per batch.
    deliveries: mpsc::Sender<Vec<Received>>,
    outbox: Vec<Received>,
    losses: mpsc::Sender<Loss>,
}

impl Reader {
    async fn run(mut self, arrivals: impl Stream<Item = SubEvent> + Unpin) {
        if let Some(since) = self.catch_up {
            if self.catch_up(since).await.is_err() || self.hand_over().await.is_err() {
                return;
            }
        }
        // The reader polls every connection itself, and takes whatever has
        // arrived (up to a batch) in one go.
        let mut batches = futures::StreamExt::ready_chunks(arrivals, BATCH);
        while let Some(events) = futures::StreamExt::next(&mut batches).await {
            if self.process(events).await.is_err() || self.hand_over().await.is_err() {
                return; // The subscription was dropped.
            }
        }
    }

    fn matches_prefixes(&self, topic: &str) -> bool {
        self.settings.prefixes.is_empty()
            || self
                .settings
                .prefixes
                .iter()
                .any(|p| topic.starts_with(p.as_str()))
    }

    /// The address of endpoint `index`, for log lines.
    fn endpoint_label(&self, index: usize) -> String {
        self.settings
            .endpoints
            .get(index)
            .map(|(_, e)| e.to_string())
            .unwrap_or_default()
    }

    /// Counts and logs a malformed message from endpoint `index`.
    fn malformed(&self, index: usize, error: &DecodeError) {
        self.stats.count_invalid(error);
        let endpoint = self.endpoint_label(index);
        tracing::warn!(endpoint = %endpoint, reason = error.label(), error = %error, "dropped malformed message");
    }

    /// Counts and logs a message that failed validation.
    fn reject(&self, endpoint: &str, message: &Message, reason: &crate::crypto::Reason) {
        self.stats.count_rejected(reason.label());
        tracing::warn!(endpoint, topic = message.topic(), msg_id = message.msg_id().unwrap_or(""), reason = %reason, "invalid signature: message dropped");
    }

    /// Each message's verdict, all validated in one batch (or none when
    /// this subscription does not validate).
    fn verdicts(&self, messages: &[Message]) -> Vec<Option<Verdict>> {
        match &self.settings.validator {
            Some(validator) => {
                let refs: Vec<&Message> = messages.iter().collect();
                validator
                    .validate_messages(&refs)
                    .into_iter()
                    .map(Some)
                    .collect()
            }
            None => vec![None; messages.len()],
        }
    }

    /// Validates `messages`; invalid ones are counted, logged, and kept only
    /// with `keep_invalid` (they are never sequenced).
    fn validate(&self, messages: Vec<Message>, endpoint: &str) -> Vec<(Message, Option<Verdict>)> {
        let verdicts = self.verdicts(&messages);
        let mut kept = Vec::with_capacity(messages.len());
        for (message, verdict) in messages.into_iter().zip(verdicts) {
            if let Some(Verdict::Invalid(reason)) = &verdict {
                self.reject(endpoint, &message, reason);
                if !self.settings.keep_invalid {
                    continue;
                }
            }
            kept.push((message, verdict));
        }
        kept
    }

    async fn deliver(
        &mut self,
        index: usize,
        message: Message,
        verdict: Option<Verdict>,
        replayed: bool,
    ) -> Result<(), ()> {
        let Some((name, endpoint)) = self.settings.endpoints.get(index) else {
            return Ok(());
        };
        if verdict.as_ref().is_none_or(Verdict::is_valid) {
            self.tracker
                .record(message.incarnation(), message.i(), message.msg_id());
        }
        if replayed {
            self.stats.replayed.fetch_add(1, Ordering::Relaxed);
        }
        if !self.matches_prefixes(message.topic()) {
            return Ok(()); // Replayed to close a gap, but not for us.
        }
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        self.stats.endpoint_add(index, |e| &e.received, 1);
        let received = Received {
            name: name.clone(),
            endpoint: endpoint.clone(),
            message,
            verdict,
            replayed,
        };
        self.outbox.push(received);
        if self.outbox.len() >= BATCH {
            self.hand_over().await?;
        }
        Ok(())
    }

    /// Hands what was delivered to the subscription.
    async fn hand_over(&mut self) -> Result<(), ()> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.outbox, Vec::with_capacity(BATCH));
        self.deliveries.send(batch).await.map_err(|_| ())
    }

    async fn process(&mut self, events: Vec<SubEvent>) -> Result<(), ()> {
        // Decode the batch, then validate it in one go.
        let mut decoded: Vec<(usize, Message)> = Vec::with_capacity(events.len());
        for event in events {
            match event {
                SubEvent::Frames(index, frames) => {
                    match Message::decode(&frames, self.settings.max_message_size) {
                        Ok(message) => decoded.push((index, message)),
                        Err(error) => self.malformed(index, &error),
                    }
                }
                SubEvent::Invalid(index, error) => self.malformed(index, &error),
                SubEvent::Connected(index) => {
                    self.stats.connected.fetch_add(1, Ordering::Relaxed);
                    self.stats.endpoint_add(index, |e| &e.connections, 1);
                    if let Some((name, endpoint)) = self.settings.endpoints.get(index) {
                        tracing::debug!(name = %name, endpoint = %endpoint, "connected");
                    }
                }
                SubEvent::Disconnected(index) => {
                    self.stats.connected.fetch_sub(1, Ordering::Relaxed);
                    if let Some(endpoint) = self.stats.endpoints.get(index) {
                        endpoint.connections.fetch_sub(1, Ordering::Relaxed);
                    }
                    if let Some((name, endpoint)) = self.settings.endpoints.get(index) {
                        tracing::info!(name = %name, endpoint = %endpoint, "publisher went away; reconnecting");
                    }
                }
            }
        }
        let (indexes, messages): (Vec<usize>, Vec<Message>) = decoded.into_iter().unzip();
        let verdicts = self.verdicts(&messages);
        for ((index, message), verdict) in indexes.into_iter().zip(messages).zip(verdicts) {
            if let Some(Verdict::Invalid(reason)) = &verdict {
                self.reject(&self.endpoint_label(index), &message, reason);
                if self.settings.keep_invalid {
                    // Shown, marked, but never sequenced: its numbers cannot be trusted.
                    self.deliver(index, message, verdict, false).await?;
                }
                continue;
            }
            match self
                .tracker
                .check(message.incarnation(), message.i(), message.msg_id())
            {
                Step::Duplicate => {
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                Step::Deliver => self.deliver(index, message, verdict, false).await?,
                Step::Gap { first, last } => {
                    self.stats.gaps.fetch_add(1, Ordering::Relaxed);
                    self.stats.endpoint_add(index, |e| &e.gaps, 1);
                    let incarnation = message.incarnation().unwrap_or_default().to_owned();
                    self.fill(index, &incarnation, first, last, None, true)
                        .await?;
                    self.deliver(index, message, verdict, false).await?;
                }
                Step::Joined { last } => {
                    // Catch up to this subscription's start: what was sent
                    // while it was joining is not lost. Earlier history is
                    // not ours to report.
                    let incarnation = message.incarnation().unwrap_or_default().to_owned();
                    self.fill(index, &incarnation, 1, last, Some(self.since), false)
                        .await?;
                    self.tracker.skip_to(&incarnation, last);
                    self.deliver(index, message, verdict, false).await?;
                }
            }
        }
        Ok(())
    }

    /// Asks every replay service for what was published since `since` and
    /// delivers it (known incarnations from where they stopped).
    async fn catch_up(&mut self, since: f64) -> Result<(), ()> {
        let services: Vec<(usize, Endpoint)> = self
            .settings
            .replay_endpoints
            .iter()
            .filter_map(|(name, replay)| {
                self.settings
                    .endpoints
                    .iter()
                    .position(|(n, _)| n == name)
                    .map(|index| (index, replay.clone()))
            })
            .collect();
        for (index, replay_endpoint) in services {
            let name = self.settings.endpoints[index].0.clone();
            let query = Query {
                since: Some(since),
                limit: Some(self.settings.replay_limit),
                ..Query::default()
            };
            let bodies = match replay::fetch(&replay_endpoint, &query, self.settings.replay_timeout)
                .await
            {
                Ok(bodies) => bodies,
                Err(error) => {
                    tracing::warn!(name = %name, %error, "cannot catch up from this replay service");
                    continue;
                }
            };
            if bodies.len() >= self.settings.replay_limit {
                tracing::warn!(name = %name, limit = self.settings.replay_limit, "catching up stopped at replay_limit messages; older ones are skipped");
            }
            let mut messages: Vec<Message> = bodies
                .into_iter()
                .filter_map(|b| decode_replayed(b, self.settings.max_message_size).ok())
                .collect();
            messages.sort_by(|a, b| {
                (a.timestamp().unwrap_or(0.0), a.incarnation(), a.i())
                    .partial_cmp(&(b.timestamp().unwrap_or(0.0), b.incarnation(), b.i()))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            for (message, verdict) in self.validate(messages, &replay_endpoint.to_string()) {
                match self
                    .tracker
                    .check(message.incarnation(), message.i(), message.msg_id())
                {
                    Step::Duplicate => {}
                    Step::Deliver => self.deliver(index, message, verdict, true).await?,
                    Step::Joined { last } => {
                        self.tracker
                            .skip_to(message.incarnation().unwrap_or_default(), last);
                        self.deliver(index, message, verdict, true).await?;
                    }
                    Step::Gap { first, last } => {
                        // Between where this reader stopped and the catch-up
                        // window: ask for exactly those.
                        let incarnation = message.incarnation().unwrap_or_default().to_owned();
                        self.stats.gaps.fetch_add(1, Ordering::Relaxed);
                        self.stats.endpoint_add(index, |e| &e.gaps, 1);
                        self.fill(index, &incarnation, first, last, None, true)
                            .await?;
                        self.deliver(index, message, verdict, true).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Fetches `first..=last` of `incarnation` from the replay service of
    /// endpoint `index`'s publisher and delivers what it has, in order. With
    /// `report`, what it lacks is reported lost.
    async fn fill(
        &mut self,
        index: usize,
        incarnation: &str,
        first: u64,
        last: u64,
        since: Option<f64>,
        report: bool,
    ) -> Result<(), ()> {
        // What came before the gap is not held back while replay answers.
        self.hand_over().await?;
        let Some((name, endpoint)) = self.settings.endpoints.get(index).cloned() else {
            return Ok(());
        };
        let wanted = last - first + 1;
        let limit = self.settings.replay_limit;
        let fetched = match self.settings.replay_endpoints.get(&name) {
            None => Err(ReplayError::Unavailable(format!(
                "no replay endpoint for {name}"
            ))),
            Some(replay_endpoint) => {
                let query = Query {
                    seq_range: Some((first, last)),
                    incarnation: Some(incarnation.to_owned()),
                    since,
                    limit: Some(limit),
                    ..Query::default()
                };
                replay::fetch(replay_endpoint, &query, self.settings.replay_timeout).await
            }
        };
        let mut recovered: Vec<Message> = Vec::new();
        let reason = match fetched {
            Ok(bodies) => {
                for body in bodies {
                    match decode_replayed(body, self.settings.max_message_size) {
                        Ok(message)
                            if message.incarnation() == Some(incarnation)
                                && message.i().is_some_and(|i| (first..=last).contains(&i)) =>
                        {
                            recovered.push(message)
                        }
                        Ok(_) => {}
                        Err(error) => {
                            self.stats.count_invalid(&error);
                            tracing::warn!(endpoint = %endpoint, error = %error, "dropped malformed replayed message");
                        }
                    }
                }
                if wanted as usize > limit {
                    format!("more than replay_limit ({limit}) missing")
                } else {
                    "no longer in the replay history".to_owned()
                }
            }
            Err(error) => error.to_string(),
        };
        recovered.sort_by_key(|m| m.i());
        recovered.dedup_by_key(|m| m.i());
        let mut covered = 0;
        for (message, verdict) in self.validate(recovered, &endpoint.to_string()) {
            if matches!(
                self.tracker
                    .check(message.incarnation(), message.i(), message.msg_id()),
                Step::Duplicate
            ) {
                continue;
            }
            covered += 1;
            self.deliver(index, message, verdict, true).await?;
        }
        let missing = wanted.saturating_sub(covered);
        if report && missing > 0 {
            let loss = Loss {
                name: name.clone(),
                incarnation: incarnation.to_owned(),
                first,
                last,
                count: missing,
                reason,
            };
            self.stats.lost.fetch_add(missing, Ordering::Relaxed);
            self.stats.endpoint_add(index, |e| &e.lost, missing);
            tracing::warn!(name = %name, incarnation, first, last, count = missing, "{loss}");
            let _ = self.losses.try_send(loss);
        }
        self.tracker.skip_to(incarnation, last);
        Ok(())
    }
}

/// A replayed body becomes a message on the topic its envelope names.
fn decode_replayed(body: Bytes, max_size: usize) -> Result<Message, DecodeError> {
    #[derive(serde::Deserialize)]
    struct TopicOnly {
        topic: Option<String>,
    }
    let topic = serde_json::from_slice::<TopicOnly>(&body)
        .ok()
        .and_then(|t| t.topic)
        .unwrap_or_default();
    Message::decode(&[Bytes::from(topic), body], max_size)
}

/// A live stream of messages from every endpoint. Dropping it disconnects.
pub struct Subscription {
    receiver: mpsc::Receiver<Vec<Received>>,
    /// The rest of the batch being yielded.
    ready: std::vec::IntoIter<Received>,
    stats: Arc<Stats>,
    losses: Option<mpsc::Receiver<Loss>>,
    state: State,
}

impl Subscription {
    /// Live counters for this subscription.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The position of what this subscription has yielded so far, to save
    /// with [`State::save`] and pass to [`Subscriber::resume`] next time.
    pub fn state(&self) -> State {
        let mut state = self.state.clone();
        let now = chrono::Utc::now().timestamp();
        state.saved_at = now;
        state.prune(now);
        state
    }

    /// The stream of [`Loss`] reports (available once). Reports are also
    /// logged and counted whether or not this is taken.
    pub fn take_losses(&mut self) -> Option<mpsc::Receiver<Loss>> {
        self.losses.take()
    }
}

impl Stream for Subscription {
    type Item = Received;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        let this = &mut *self;
        loop {
            if let Some(received) = this.ready.next() {
                if let (Some(incarnation), Some(i)) =
                    (received.message.incarnation(), received.message.i())
                {
                    if received.verdict.as_ref().is_none_or(Verdict::is_valid) {
                        let now = received.message.timestamp().unwrap_or(0.0) as i64;
                        this.state.consumed(incarnation, i, now);
                    }
                }
                return Poll::Ready(Some(received));
            }
            match std::task::ready!(this.receiver.poll_recv(cx)) {
                Some(batch) => this.ready = batch.into_iter(),
                None => return Poll::Ready(None),
            }
        }
    }
}

/// A [`Subscription`] for synchronous code: an `Iterator` of [`Received`].
pub struct BlockingSubscription {
    runtime: tokio::runtime::Runtime,
    subscription: Subscription,
}

impl BlockingSubscription {
    /// Live counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.subscription.stats()
    }

    /// Waits at most `timeout` for the next message.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Received> {
        use futures::StreamExt;
        let subscription = &mut self.subscription;
        self.runtime.block_on(async {
            tokio::time::timeout(timeout, subscription.next())
                .await
                .ok()
                .flatten()
        })
    }
}

impl Iterator for BlockingSubscription {
    type Item = Received;

    fn next(&mut self) -> Option<Received> {
        use futures::StreamExt;
        let subscription = &mut self.subscription;
        self.runtime.block_on(subscription.next())
    }
}

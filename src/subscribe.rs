//! Subscribing: one SUB socket per endpoint, merged into one [`Subscription`]
//! stream of [`Received`] messages.
//!
//! Each endpoint has its own task that connects, retries with the
//! configured backoff while the publisher is absent, and reconnects when it
//! restarts or vanishes. Malformed input (wrong frame count, bad UTF-8,
//! non-JSON or non-object bodies, oversized bodies) is logged once per
//! message, counted in [`Stats`], and skipped: it never ends the stream.

use crate::config::{Config, Keepalive};
use crate::crypto::{Validator, ValidatorConfig, Verdict};
use crate::endpoint::Endpoint;
use crate::envelope::{DecodeError, Message};
use crate::transport::{self, Backoff, SubEvent};
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
}

impl Received {
    /// The frame topic.
    pub fn topic(&self) -> &str {
        self.message.topic()
    }
}

/// Counters of what a subscription saw. Shared and updated live.
#[derive(Debug, Default)]
pub struct Stats {
    received: AtomicU64,
    invalid: Mutex<BTreeMap<&'static str, u64>>,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    connected: AtomicU64,
}

impl Stats {
    /// Valid messages delivered.
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

    pub(crate) fn count_invalid(&self, error: &DecodeError) {
        if let Ok(mut map) = self.invalid.lock() {
            *map.entry(error.label()).or_default() += 1;
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
        }
    }

    /// Explicit endpoints (name, address), with fedmsg's default intervals.
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

    /// Starts one task per endpoint and returns the merged stream. Must be
    /// called inside a tokio runtime.
    pub fn subscribe(self) -> Subscription {
        let (sender, receiver) = mpsc::channel(4096);
        let prefixes = if self.prefixes.is_empty() {
            vec![String::new()]
        } else {
            self.prefixes.clone()
        };
        for (index, (_, endpoint)) in self.endpoints.iter().enumerate() {
            tokio::spawn(transport::run_connected_sub(
                index,
                endpoint.clone(),
                prefixes.clone(),
                self.backoff,
                self.keepalive.clone(),
                sender.clone(),
            ));
        }
        Subscription {
            endpoints: self.endpoints,
            receiver,
            stats: Arc::new(Stats::default()),
            max_message_size: self.max_message_size,
            validator: self.validator,
            keep_invalid: self.keep_invalid,
            ready: std::collections::VecDeque::new(),
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

/// A live stream of messages from every endpoint. Dropping it disconnects.
pub struct Subscription {
    endpoints: Vec<(String, Endpoint)>,
    receiver: mpsc::Receiver<SubEvent>,
    stats: Arc<Stats>,
    max_message_size: usize,
    validator: Option<Arc<Validator>>,
    keep_invalid: bool,
    ready: std::collections::VecDeque<Received>,
}

impl Subscription {
    /// Live counters for this subscription.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Turns a batch of transport events into deliverable messages, in
    /// order: decodes, validates (the whole batch at once, so Ed25519
    /// signatures are batch-verified), counts and logs what is dropped.
    fn process(&mut self, events: Vec<SubEvent>) {
        let mut decoded: Vec<(usize, Message)> = Vec::with_capacity(events.len());
        for event in events {
            match event {
                SubEvent::Frames(index, frames) => {
                    match Message::decode(&frames, self.max_message_size) {
                        Ok(message) => decoded.push((index, message)),
                        Err(error) => {
                            self.stats.count_invalid(&error);
                            let endpoint = self
                                .endpoints
                                .get(index)
                                .map(|(_, e)| e.to_string())
                                .unwrap_or_default();
                            tracing::warn!(endpoint = %endpoint, reason = error.label(), error = %error, "dropped malformed message");
                        }
                    }
                }
                SubEvent::Connected(index) => {
                    self.stats.connected.fetch_add(1, Ordering::Relaxed);
                    if let Some((name, endpoint)) = self.endpoints.get(index) {
                        tracing::debug!(name = %name, endpoint = %endpoint, "connected");
                    }
                }
                SubEvent::Disconnected(index) => {
                    self.stats.connected.fetch_sub(1, Ordering::Relaxed);
                    if let Some((name, endpoint)) = self.endpoints.get(index) {
                        tracing::info!(name = %name, endpoint = %endpoint, "publisher went away; reconnecting");
                    }
                }
            }
        }
        let verdicts: Vec<Option<Verdict>> = match &self.validator {
            Some(validator) => {
                let messages: Vec<&Message> = decoded.iter().map(|(_, m)| m).collect();
                validator
                    .validate_messages(&messages)
                    .into_iter()
                    .map(Some)
                    .collect()
            }
            None => vec![None; decoded.len()],
        };
        for ((index, message), verdict) in decoded.into_iter().zip(verdicts) {
            let Some((name, endpoint)) = self.endpoints.get(index) else {
                continue;
            };
            if let Some(Verdict::Invalid(reason)) = &verdict {
                if let Ok(mut map) = self.stats.rejected.lock() {
                    *map.entry(reason.label()).or_default() += 1;
                }
                tracing::warn!(endpoint = %endpoint, topic = message.topic(), msg_id = message.msg_id().unwrap_or(""), reason = %reason, "invalid signature: message dropped");
                if !self.keep_invalid {
                    continue;
                }
            }
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            self.ready.push_back(Received {
                name: name.clone(),
                endpoint: endpoint.clone(),
                message,
                verdict,
            });
        }
    }
}

/// Most transport events turned into messages in one go.
const BATCH: usize = 256;

impl Stream for Subscription {
    type Item = Received;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        loop {
            if let Some(received) = self.ready.pop_front() {
                return Poll::Ready(Some(received));
            }
            let mut events = match self.receiver.poll_recv(cx) {
                Poll::Ready(Some(event)) => vec![event],
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            // Take whatever else is already waiting, up to a batch.
            while events.len() < BATCH {
                match self.receiver.poll_recv(cx) {
                    Poll::Ready(Some(event)) => events.push(event),
                    _ => break,
                }
            }
            self.process(events);
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

//! The hub: many [`Consumer`]s over one subscription.
//!
//! ```no_run
//! # use fedmsg::consumer::{ConsumeError, Consumer, TopicPattern};
//! # use fedmsg::envelope::Message;
//! # use fedmsg::hub::{Hub, HubContext};
//! # struct Builds;
//! # impl Consumer for Builds {
//! #     fn name(&self) -> &str { "builds" }
//! #     fn topics(&self) -> Vec<TopicPattern> { vec![TopicPattern::everything()] }
//! #     async fn consume(&mut self, _: &Message, _: &HubContext) -> Result<(), ConsumeError> { Ok(()) }
//! # }
//! # async fn example(config: fedmsg::Config) -> Result<(), Box<dyn std::error::Error>> {
//! let publisher = fedmsg::Publisher::from_config(&config).await?;
//! let stats = Hub::new(&config)
//!     .consumer(Builds)
//!     .publisher(publisher)
//!     .state_file("/var/lib/builds/hub.state")
//!     .run(fedmsg::cli::shutdown_signal())
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! The hub reads the bus once, with the no-loss [`Subscriber`] (gaps are
//! filled from replay services, duplicates dropped, signatures validated
//! when `validate_signatures` is on), and hands each message to every
//! consumer whose patterns match. Each consumer has a task and a bounded
//! queue of its own:
//!
//! * a consumer that returns an error or panics is logged and counted, and
//!   gets the next message; the others never notice;
//! * a full queue is waited for, so bursts are absorbed; a consumer whose
//!   queue stays full for [`Hub::stall_timeout`] is stalled, and what
//!   matches it is dropped for it alone (logged once, counted as
//!   `dropped`) until it has worked its queue down to half;
//! * on shutdown, reading stops, each consumer finishes its queue (for up
//!   to [`Hub::drain_timeout`]), and the position is saved.
//!
//! With [`Hub::state_file`] the hub resumes where it stopped: the file is
//! saved whenever every received message has been consumed, and at a
//! clean shutdown, so a crash repeats a little and never skips.

use crate::config::Config;
use crate::consumer::{Consumer, TopicPattern};
use crate::envelope::Message;
use crate::publish::{PublishError, Publisher};
use crate::sequence::{State, StateError};
use crate::subscribe::{Stats, Subscriber};
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use serde::Serialize;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// Messages waiting for one consumer, by default.
pub const DEFAULT_QUEUE_SIZE: usize = 1000;
/// How long consumers may take to finish their queues at shutdown.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a full consumer queue is waited for before the consumer
/// counts as stalled.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the state file is saved (when every consumer is idle).
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// What a consumer can do besides reading: publish, know its name.
#[derive(Debug, Clone)]
pub struct HubContext {
    consumer: String,
    publisher: Option<Publisher>,
}

impl HubContext {
    /// The consumer's name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The hub's publisher, if it was given one.
    pub fn publisher(&self) -> Option<&Publisher> {
        self.publisher.as_ref()
    }

    /// Publishes `msg` on `<prefix>.<env>.<modname>.<topic>` with the
    /// hub's publisher ([`Hub::publisher`]).
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        modname: &str,
        msg: &T,
    ) -> Result<(), PublishError> {
        match &self.publisher {
            Some(publisher) => publisher.publish(topic, modname, msg).await,
            None => Err(PublishError::NoPublisher),
        }
    }
}

/// What one consumer did.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// The consumer's name.
    pub name: String,
    /// Messages put on its queue.
    pub delivered: AtomicU64,
    /// Messages it handled without error.
    pub consumed: AtomicU64,
    /// Messages it returned an error for.
    pub failed: AtomicU64,
    /// Messages it panicked on.
    pub panicked: AtomicU64,
    /// Matching messages dropped because its queue was full.
    pub dropped: AtomicU64,
    /// True while it is stalled: full for longer than the stall timeout
    /// and not yet half empty (its messages are being dropped).
    pub stalled: std::sync::atomic::AtomicBool,
}

/// The counters of a hub: its subscription's and each consumer's.
#[derive(Debug)]
pub struct HubStats {
    /// One per consumer, in the order they were added.
    pub consumers: Vec<Arc<ConsumerStats>>,
    subscription: Arc<OnceLock<Arc<Stats>>>,
}

impl HubStats {
    /// The subscription's counters (received, invalid, gaps, replayed,
    /// lost...), once the hub runs.
    pub fn subscription(&self) -> Option<&Arc<Stats>> {
        self.subscription.get()
    }
}

/// Why a hub could not run.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// [`Hub::run`] without a consumer.
    #[error("the hub has no consumers")]
    NoConsumers,
    /// The configuration lists nothing to subscribe to.
    #[error("no endpoints to subscribe to: the configuration's [endpoints] is empty")]
    NoEndpoints,
    /// The state file cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The metrics address could not be served.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

type Start = Box<
    dyn FnOnce(
            mpsc::Receiver<Arc<Message>>,
            HubContext,
            Arc<ConsumerStats>,
            Arc<AtomicU64>,
        ) -> BoxFuture<'static, ()>
        + Send,
>;

struct Entry {
    patterns: Vec<TopicPattern>,
    stats: Arc<ConsumerStats>,
    start: Start,
}

/// Runs consumers; see the [module documentation](self).
pub struct Hub {
    name: String,
    config: Config,
    entries: Vec<Entry>,
    queue_size: usize,
    drain_timeout: Duration,
    stall_timeout: Duration,
    publisher: Option<Publisher>,
    state_file: Option<PathBuf>,
    since: Option<f64>,
    subscription: Arc<OnceLock<Arc<Stats>>>,
}

impl Hub {
    /// A hub reading the bus `config` describes, with no consumers yet.
    pub fn new(config: &Config) -> Hub {
        Hub {
            name: "hub".into(),
            config: config.clone(),
            entries: Vec::new(),
            queue_size: DEFAULT_QUEUE_SIZE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            publisher: None,
            state_file: None,
            since: None,
            subscription: Arc::new(OnceLock::new()),
        }
    }

    /// Names the hub (default `hub`): its `/metrics` and `/health` are
    /// served on the `[metrics]` address under this name.
    pub fn name(mut self, name: impl Into<String>) -> Hub {
        self.name = name.into();
        self
    }

    /// Adds a consumer.
    pub fn consumer<C: Consumer>(mut self, consumer: C) -> Hub {
        let stats = Arc::new(ConsumerStats {
            name: consumer.name().to_owned(),
            ..ConsumerStats::default()
        });
        let patterns = consumer.topics();
        let start: Start = Box::new(move |queue, context, stats, pending| {
            run_consumer(consumer, queue, context, stats, pending).boxed()
        });
        self.entries.push(Entry {
            patterns,
            stats,
            start,
        });
        self
    }

    /// How many messages may wait for each consumer (default
    /// [`DEFAULT_QUEUE_SIZE`], at least 1).
    pub fn queue_size(mut self, size: usize) -> Hub {
        self.queue_size = size.max(1);
        self
    }

    /// How long consumers may take to finish their queues at shutdown
    /// (default [`DEFAULT_DRAIN_TIMEOUT`]); what is left is abandoned, and
    /// the state file is not advanced past it.
    pub fn drain_timeout(mut self, timeout: Duration) -> Hub {
        self.drain_timeout = timeout;
        self
    }

    /// How long the hub waits for a consumer whose queue is full before
    /// it counts as stalled (default [`DEFAULT_STALL_TIMEOUT`]). While it
    /// waits, it reads nothing: bursts slow the hub down rather than lose
    /// messages. A stalled consumer loses what matches it until its queue
    /// is half empty; the others go on.
    pub fn stall_timeout(mut self, timeout: Duration) -> Hub {
        self.stall_timeout = timeout;
        self
    }

    /// The publisher consumers publish with ([`HubContext::publish`]).
    pub fn publisher(mut self, publisher: Publisher) -> Hub {
        self.publisher = Some(publisher);
        self
    }

    /// Resumes from this state file and keeps it up to date.
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Hub {
        self.state_file = Some(path.into());
        self
    }

    /// Starts with the replay services' history since `since` (seconds
    /// since the epoch).
    pub fn since(mut self, since: f64) -> Hub {
        self.since = Some(since);
        self
    }

    /// The counters, live while the hub runs.
    pub fn stats(&self) -> Arc<HubStats> {
        Arc::new(HubStats {
            consumers: self.entries.iter().map(|e| e.stats.clone()).collect(),
            subscription: self.subscription.clone(),
        })
    }

    /// Runs until `shutdown` completes, then lets the consumers finish and
    /// saves the position. Must be called inside a tokio runtime.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<Arc<HubStats>, HubError> {
        if self.entries.is_empty() {
            return Err(HubError::NoConsumers);
        }
        let stats = self.stats();
        let prefixes: Vec<String> = self
            .entries
            .iter()
            .flat_map(|e| e.patterns.iter().map(TopicPattern::subscription_prefix))
            .collect();
        let mut subscriber = Subscriber::from_config(&self.config);
        let endpoints = subscriber.endpoints().len();
        if !prefixes.iter().any(String::is_empty) {
            subscriber = subscriber.topics(prefixes);
        }
        if endpoints == 0 {
            return Err(HubError::NoEndpoints);
        }
        if let Some(path) = &self.state_file {
            subscriber = subscriber.resume(State::load(path)?);
        }
        if let Some(since) = self.since {
            subscriber = subscriber.since(since);
        }
        let mut subscription = subscriber.subscribe();
        let _ = self.subscription.set(subscription.stats());
        let _metrics = crate::metrics::start(&self.config, &self.name, stats.clone()).await?;

        // Deliveries queued or being consumed: when none are, the
        // subscription's position is exactly what was consumed.
        let pending = Arc::new(AtomicU64::new(0));
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for entry in self.entries {
            let (sender, receiver) = mpsc::channel(self.queue_size);
            let context = HubContext {
                consumer: entry.stats.name.clone(),
                publisher: self.publisher.clone(),
            };
            let task = (entry.start)(receiver, context, entry.stats.clone(), pending.clone());
            tasks.push(tokio::spawn(task));
            queues.push(Queue {
                sender,
                patterns: entry.patterns,
                stats: entry.stats,
            });
        }
        tracing::info!(consumers = queues.len(), endpoints, "hub started");

        let save = |subscription: &crate::subscribe::Subscription| {
            if let Some(path) = &self.state_file {
                if let Err(error) = subscription.state().save(path) {
                    tracing::warn!(%error, "hub could not save its position");
                }
            }
        };
        let mut tick = tokio::time::interval(SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let received = tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    if pending.load(Ordering::Acquire) == 0 {
                        save(&subscription);
                    }
                    continue;
                }
                received = subscription.next() => received,
            };
            let Some(received) = received else { break };
            let message = Arc::new(received.message);
            let topic = message.topic();
            for queue in &mut queues {
                if queue.patterns.iter().any(|p| p.matches(topic)) {
                    queue.offer(&message, &pending, self.stall_timeout).await;
                }
            }
        }

        // Stop reading, let each consumer finish its queue.
        drop(queues);
        let mut finished = true;
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                finished = false;
            }
        }
        let left = pending.load(Ordering::Acquire);
        if finished && left == 0 {
            save(&subscription);
        } else if self.state_file.is_some() {
            tracing::warn!(
                unconsumed = left,
                "consumers did not finish in time; the position is not saved past them"
            );
        }
        if let Some(publisher) = &self.publisher {
            let _ = publisher.flush().await;
        }
        for consumer in &stats.consumers {
            tracing::info!(
                consumer = %consumer.name,
                delivered = consumer.delivered.load(Ordering::Relaxed),
                consumed = consumer.consumed.load(Ordering::Relaxed),
                failed = consumer.failed.load(Ordering::Relaxed),
                panicked = consumer.panicked.load(Ordering::Relaxed),
                dropped = consumer.dropped.load(Ordering::Relaxed),
                "consumer stopped"
            );
        }
        Ok(stats)
    }
}

impl crate::metrics::Observed for HubStats {
    fn metrics(&self, out: &mut crate::metrics::Exposition) {
        type Field = fn(&ConsumerStats) -> &AtomicU64;
        let per_consumer: [(&str, &str, Field); 5] = [
            (
                "fedmsg_hub_delivered_total",
                "Messages put on a consumer's queue.",
                |c| &c.delivered,
            ),
            (
                "fedmsg_hub_consumed_total",
                "Messages a consumer handled without error.",
                |c| &c.consumed,
            ),
            (
                "fedmsg_hub_failed_total",
                "Messages a consumer returned an error for.",
                |c| &c.failed,
            ),
            (
                "fedmsg_hub_panicked_total",
                "Messages a consumer panicked on.",
                |c| &c.panicked,
            ),
            (
                "fedmsg_hub_dropped_total",
                "Messages dropped for a stalled consumer.",
                |c| &c.dropped,
            ),
        ];
        for (name, help, field) in per_consumer {
            let samples = self
                .consumers
                .iter()
                .map(|c| (c.name.as_str(), field(c).load(Ordering::Relaxed)));
            out.counters(name, help, "consumer", samples);
        }
        if let Some(bus) = self.subscription() {
            out.subscription("fedmsg_hub_bus", bus);
        }
    }

    fn health(&self) -> crate::metrics::Health {
        let mut health = crate::metrics::Health::Ok;
        if let Some(bus) = self.subscription() {
            crate::metrics::subscription_health(&mut health, bus);
        }
        for consumer in &self.consumers {
            if consumer.stalled.load(Ordering::Relaxed) {
                health.degrade(format!("consumer {} is stalled", consumer.name));
            }
        }
        health
    }
}

/// The hub's side of one consumer.
struct Queue {
    sender: mpsc::Sender<Arc<Message>>,
    patterns: Vec<TopicPattern>,
    stats: Arc<ConsumerStats>,
}

impl Queue {
    /// Puts `message` on the queue. A full queue is waited for, up to
    /// `stall`: bursts are absorbed (the bus's own buffers hold what the
    /// hub does not read meanwhile). A consumer still full after that is
    /// stalled: its messages are dropped, without waiting, until it has
    /// worked its queue down to half.
    async fn offer(&mut self, message: &Arc<Message>, pending: &AtomicU64, stall: Duration) {
        // Only this task writes the flag; the counters share it with /health.
        let mut stalled = self.stats.stalled.load(Ordering::Relaxed);
        if stalled && self.sender.capacity() * 2 >= self.sender.max_capacity() {
            stalled = false;
            self.stats.stalled.store(false, Ordering::Relaxed);
            tracing::info!(consumer = %self.stats.name, "consumer caught up");
        }
        pending.fetch_add(1, Ordering::AcqRel);
        let sent = if stalled {
            self.sender.try_send(message.clone()).is_ok()
        } else {
            match tokio::time::timeout(stall, self.sender.send(message.clone())).await {
                Ok(sent) => sent.is_ok(),
                Err(_) => {
                    self.stats.stalled.store(true, Ordering::Relaxed);
                    tracing::warn!(
                        consumer = %self.stats.name,
                        topic = message.topic(),
                        waited_ms = stall.as_millis() as u64,
                        "consumer stalled: dropping its messages until it works its queue down"
                    );
                    false
                }
            }
        };
        if sent {
            self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            // This consumer misses the message; the others do not.
            pending.fetch_sub(1, Ordering::AcqRel);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn run_consumer<C: Consumer>(
    mut consumer: C,
    mut queue: mpsc::Receiver<Arc<Message>>,
    context: HubContext,
    stats: Arc<ConsumerStats>,
    pending: Arc<AtomicU64>,
) {
    while let Some(message) = queue.recv().await {
        let outcome = AssertUnwindSafe(consumer.consume(&message, &context))
            .catch_unwind()
            .await;
        match outcome {
            Ok(Ok(())) => {
                stats.consumed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(error)) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    consumer = %stats.name,
                    topic = message.topic(),
                    msg_id = message.msg_id().unwrap_or(""),
                    %error,
                    "consumer failed"
                );
            }
            Err(panic) => {
                stats.panicked.fetch_add(1, Ordering::Relaxed);
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-text panic".into());
                tracing::error!(
                    consumer = %stats.name,
                    topic = message.topic(),
                    msg_id = message.msg_id().unwrap_or(""),
                    panic = %what,
                    "consumer panicked"
                );
            }
        }
        pending.fetch_sub(1, Ordering::AcqRel);
    }
}

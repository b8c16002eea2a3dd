//! A complete small hub: two consumers over the bus.
//!
//! * `printer` writes one JSON line per matching message on standard output:
//!   `{"topic": ..., "username": ..., "msg": ...}`.
//! * `tally` counts messages per topic and, with `--publish-every N`,
//!   publishes the counts as `<prefix>.<env>.tally.counts` every N messages
//!   (consumers can publish).
//!
//! ```text
//! cargo run --example consumer -- --topic 'org.fedoraproject.*.bodhi.#'
//! cargo run --example consumer -- --state /tmp/consumer.state --publish-every 100
//! ```
//!
//! Ctrl-C (or SIGTERM) stops it: each consumer finishes its queue, the
//! position is saved (with `--state`), and the counters are logged.

use clap::Parser;
use fedmsg::cli::{self, ConfigArgs, MetricsArgs};
use fedmsg::consumer::{ConsumeError, Consumer, TopicPattern};
use fedmsg::envelope::Message;
use fedmsg::hub::{Hub, HubContext};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;

/// Print and count the bus's messages: an example of fedmsg's hub.
#[derive(Parser)]
#[command(name = "consumer", version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Topic pattern to consume: a prefix, or AMQP-style words with `*`
    /// (one word) and `#` (any number). Repeatable; default: everything.
    #[arg(long = "topic", value_name = "PATTERN")]
    topics: Vec<TopicPattern>,
    /// Resume from this file and keep the position in it.
    #[arg(long, value_name = "FILE")]
    state: Option<std::path::PathBuf>,
    /// Publish the tally every N messages (needs a publisher: `active =
    /// true` or an endpoint for this program's name).
    #[arg(long, value_name = "N")]
    publish_every: Option<u64>,
}

/// Prints each message as a JSON line.
struct Printer {
    topics: Vec<TopicPattern>,
}

impl Consumer for Printer {
    fn name(&self) -> &str {
        "printer"
    }

    fn topics(&self) -> Vec<TopicPattern> {
        self.topics.clone()
    }

    async fn consume(&mut self, message: &Message, _: &HubContext) -> Result<(), ConsumeError> {
        let line = json!({
            "topic": message.topic(),
            "username": message.username(),
            "msg": message.msg(),
        });
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    }
}

/// Counts messages per topic; publishes the counts every `every` messages.
struct Tally {
    topics: Vec<TopicPattern>,
    counts: BTreeMap<String, u64>,
    seen: u64,
    every: Option<u64>,
}

impl Consumer for Tally {
    fn name(&self) -> &str {
        "tally"
    }

    fn topics(&self) -> Vec<TopicPattern> {
        self.topics.clone()
    }

    async fn consume(&mut self, message: &Message, hub: &HubContext) -> Result<(), ConsumeError> {
        // Its own reports come back over the bus; do not count them.
        if message.topic().ends_with(".tally.counts") {
            return Ok(());
        }
        *self.counts.entry(message.topic().to_owned()).or_default() += 1;
        self.seen += 1;
        if let Some(every) = self.every.filter(|&n| n > 0) {
            if self.seen % every == 0 {
                hub.publish(
                    "counts",
                    "tally",
                    &json!({ "seen": self.seen, "topics": self.counts }),
                )
                .await?;
            }
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let args: Args = cli::parse();
    args.config.init_logging();
    let topics = if args.topics.is_empty() {
        vec![TopicPattern::everything()]
    } else {
        args.topics
    };
    cli::serve(
        "consumer",
        args.metrics.apply(args.config.loader(), "hub").load(),
        "hub failed",
        |config| async move {
            let mut hub = Hub::new(&config)
                .consumer(Printer {
                    topics: topics.clone(),
                })
                .consumer(Tally {
                    topics,
                    counts: BTreeMap::new(),
                    seen: 0,
                    every: args.publish_every,
                });
            if args.publish_every.is_some() {
                hub = hub.publisher(fedmsg::Publisher::from_config(&config).await?);
            }
            if let Some(state) = args.state {
                hub = hub.state_file(state);
            }
            hub.run(cli::shutdown_signal()).await?;
            Ok::<(), anyhow::Error>(())
        },
    )
}

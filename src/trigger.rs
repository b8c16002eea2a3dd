//! `fedmsg-trigger`: runs a command for each matching message.
//!
//! Matching is tail's: topic prefixes to subscribe to, then `--include` and
//! `--exclude` regular expressions on the topic. Matches are queued; the
//! queue runs `--wait-for` seconds after the last match (a debounce, as in
//! fedmsg), or at once when it holds `--max-queue-size` messages. Each
//! queued message runs the command once, one after the other.
//!
//! The command is a program and its arguments, started directly: no shell
//! ever sees the message. The message reaches it as its canonical JSON
//! envelope on standard input (one line), and in environment variables:
//!
//! | variable | value |
//! |---|---|
//! | `FEDMSG_MESSAGE_TOPIC` | the topic |
//! | `FEDMSG_MESSAGE_ID` | `msg_id` (empty if absent) |
//! | `FEDMSG_MESSAGE_TIMESTAMP` | `timestamp` (empty if absent) |
//! | `FEDMSG_MESSAGE_USERNAME` | `username` (empty if absent) |
//! | `FEDMSG_MESSAGE_I` | `i` (empty if absent) |
//! | `FEDMSG_MESSAGE_MSG` | the `msg` object as canonical JSON, when under 64 KiB |
//!
//! (fedmsg ran `/bin/bash -c "echo '<message>' | CMD"`, so a quote in any
//! field ran arbitrary commands.)

use crate::config::Config;
use crate::envelope::Message;
use crate::subscribe::Subscriber;
use futures::StreamExt as _;
use regex::Regex;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Environment variables longer than this are left out (the kernel limits
/// one to 128 KiB); the message is always on standard input.
const MAX_ENV_VALUE: usize = 64 * 1024;
/// Messages waiting for the command beyond this are dropped (and counted):
/// a command slower than the bus must not grow the trigger without bound.
pub const MAX_PENDING: usize = 10_000;

/// What to match and what to run.
#[derive(Debug, Clone)]
pub struct TriggerOptions {
    /// Topic prefixes to subscribe to (empty: everything).
    pub topics: Vec<String>,
    /// Only topics matching this.
    pub include: Option<Regex>,
    /// Never topics matching this (fedmsg skips `_heartbeat` by default).
    pub exclude: Option<Regex>,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Run this long after the last match (0: at once).
    pub wait_for: Duration,
    /// Run at once when this many messages wait (0: no limit but
    /// [`MAX_PENDING`]).
    pub max_queue_size: usize,
}

/// Why the trigger could not run.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// No command was given.
    #[error("You must provide a --command to run.")]
    NoCommand,
    /// `--command` could not be split into words.
    #[error("--command {0:?}: unbalanced quotes")]
    BadCommand(String),
    /// The metrics address could not be served.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The configuration names no endpoint.
    #[error("no endpoints are configured: nothing to listen to")]
    NoEndpoints,
}

/// Counters of a running trigger.
#[derive(Debug, Default)]
pub struct TriggerStats {
    /// Messages that matched.
    pub matched: AtomicU64,
    /// Commands run to completion with exit status 0.
    pub succeeded: AtomicU64,
    /// Commands that failed to start or exited non-zero.
    pub failed: AtomicU64,
    /// Matches dropped because [`MAX_PENDING`] were waiting.
    pub dropped: AtomicU64,
}

/// What `/metrics` and `/health` report for a trigger.
struct Observed {
    trigger: Arc<TriggerStats>,
    bus: Arc<crate::subscribe::Stats>,
}

impl crate::metrics::Observed for Observed {
    fn metrics(&self, out: &mut crate::metrics::Exposition) {
        let t = &self.trigger;
        out.counter(
            "fedmsg_trigger_matched_total",
            "Messages that matched.",
            t.matched.load(Ordering::Relaxed),
        );
        out.counter(
            "fedmsg_trigger_succeeded_total",
            "Commands that exited with status 0.",
            t.succeeded.load(Ordering::Relaxed),
        );
        out.counter(
            "fedmsg_trigger_failed_total",
            "Commands that could not start or exited non-zero.",
            t.failed.load(Ordering::Relaxed),
        );
        out.counter(
            "fedmsg_trigger_dropped_total",
            "Matches dropped because too many were waiting for the command.",
            t.dropped.load(Ordering::Relaxed),
        );
        out.subscription("fedmsg_trigger_bus", &self.bus);
    }

    fn health(&self) -> crate::metrics::Health {
        let mut health = crate::metrics::Health::Ok;
        crate::metrics::subscription_health(&mut health, &self.bus);
        health
    }
}

/// Splits a `--command` string into words the way a shell would split
/// plain words, quotes and backslashes, and does nothing else: no
/// variables, globs, pipes or redirections.
pub fn split_command(text: &str) -> Result<Vec<String>, TriggerError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(TriggerError::BadCommand(text.to_owned())),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(TriggerError::BadCommand(text.to_owned())),
                        },
                        Some(c) => word.push(c),
                        None => return Err(TriggerError::BadCommand(text.to_owned())),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(TriggerError::BadCommand(text.to_owned())),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn wanted(topic: &str, options: &TriggerOptions) -> bool {
    options.include.as_ref().is_none_or(|re| re.is_match(topic))
        && !options
            .exclude
            .as_ref()
            .is_some_and(|re| re.is_match(topic))
}

/// Subscribes as the configuration says and runs the command for matching
/// messages until `shutdown` completes; what is queued then is run before
/// returning.
pub async fn run(
    config: &Config,
    options: &TriggerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Arc<TriggerStats>, TriggerError> {
    if options.command.is_empty() {
        return Err(TriggerError::NoCommand);
    }
    let subscriber = Subscriber::from_config(config).topics(options.topics.clone());
    if subscriber.endpoints().is_empty() {
        return Err(TriggerError::NoEndpoints);
    }
    let mut subscription = subscriber.subscribe();
    let stats = Arc::new(TriggerStats::default());
    let observed = Arc::new(Observed {
        trigger: stats.clone(),
        bus: subscription.stats(),
    });
    let _metrics = crate::metrics::start(config, "trigger", observed).await?;
    let pending = Arc::new(AtomicU64::new(0));
    // The commands run on their own task, so the bus is read while they run.
    let (batches, mut to_run) = tokio::sync::mpsc::unbounded_channel::<Vec<Message>>();
    let runner = {
        let command = options.command.clone();
        let stats = stats.clone();
        let pending = pending.clone();
        tokio::spawn(async move {
            while let Some(batch) = to_run.recv().await {
                for message in batch {
                    run_one(&command, &message, &stats).await;
                    pending.fetch_sub(1, Ordering::Relaxed);
                }
            }
        })
    };
    let limit = match options.max_queue_size {
        0 => MAX_PENDING,
        n => n.min(MAX_PENDING),
    };
    let mut queue: Vec<Message> = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => break,
            _ = timer => {
                deadline = None;
                let _ = batches.send(std::mem::take(&mut queue));
            }
            next = subscription.next() => {
                let Some(received) = next else { break };
                if !wanted(received.topic(), options) {
                    continue;
                }
                stats.matched.fetch_add(1, Ordering::Relaxed);
                if pending.load(Ordering::Relaxed) as usize >= MAX_PENDING {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(topic = received.topic(), msg_id = received.message.msg_id().unwrap_or(""), waiting = MAX_PENDING, "command too slow: message dropped");
                    continue;
                }
                pending.fetch_add(1, Ordering::Relaxed);
                queue.push(received.message);
                if options.wait_for.is_zero() || queue.len() >= limit {
                    deadline = None;
                    let _ = batches.send(std::mem::take(&mut queue));
                } else {
                    deadline = Some(tokio::time::Instant::now() + options.wait_for);
                }
            }
        }
    }
    if !queue.is_empty() {
        let _ = batches.send(queue);
    }
    drop(batches);
    let _ = runner.await;
    Ok(stats)
}

/// The environment a command gets for `message`.
pub fn environment(message: &Message) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("FEDMSG_MESSAGE_TOPIC", message.topic().to_owned()),
        (
            "FEDMSG_MESSAGE_ID",
            message.msg_id().unwrap_or_default().to_owned(),
        ),
        (
            "FEDMSG_MESSAGE_TIMESTAMP",
            message
                .timestamp()
                .map(crate::canonical::python_float_repr)
                .map(|t| t.strip_suffix(".0").map(str::to_owned).unwrap_or(t))
                .unwrap_or_default(),
        ),
        (
            "FEDMSG_MESSAGE_USERNAME",
            message.username().unwrap_or_default().to_owned(),
        ),
        (
            "FEDMSG_MESSAGE_I",
            message.i().map(|i| i.to_string()).unwrap_or_default(),
        ),
    ];
    let msg = crate::canonical::to_canonical(message.msg());
    if msg.len() <= MAX_ENV_VALUE {
        vars.push(("FEDMSG_MESSAGE_MSG", msg));
    }
    vars
}

async fn run_one(command: &[String], message: &Message, stats: &TriggerStats) {
    let Some((program, args)) = command.split_first() else {
        return;
    };
    let mut child = tokio::process::Command::new(program);
    child
        .args(args)
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(false);
    for (name, value) in environment(message) {
        if value.contains('\0') {
            continue; // Cannot be passed; the body on stdin has it escaped.
        }
        child.env(name, value);
    }
    let mut child = match child.spawn() {
        Ok(child) => child,
        Err(error) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(program = %program, error = %error, topic = message.topic(), "command could not start");
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let mut line = message.raw_body().to_vec();
        line.push(b'\n');
        // A command that does not read its input is not an error.
        let _ = stdin.write_all(&line).await;
        drop(stdin);
    }
    match child.wait().await {
        Ok(status) if status.success() => {
            stats.succeeded.fetch_add(1, Ordering::Relaxed);
        }
        Ok(status) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(program = %program, status = %status, topic = message.topic(), msg_id = message.msg_id().unwrap_or(""), "command failed");
        }
        Err(error) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(program = %program, error = %error, "command could not be waited for");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_into_words_without_a_shell() {
        assert_eq!(
            split_command(r#"notify "deploy done" 'it''s' a\ b $HOME;|"#).unwrap(),
            ["notify", "deploy done", "its", "a b", "$HOME;|"]
        );
        assert_eq!(split_command("  ").unwrap(), Vec::<String>::new());
        assert!(split_command("echo 'open").is_err());
    }
}

//! `fedmsg-logger`: publish from the shell through `fedmsg-relay`.
//!
//! Input, as fedmsg has it: `--message TEXT` sends one message
//! (`{"log": TEXT}`, or TEXT parsed as JSON with `--json-input`);
//! `--json-input` alone reads all of stdin as one JSON document; otherwise
//! each stdin line becomes `{"log": line}` (trimmed). `--json-lines` sends
//! one JSON document per line. Every message is written to the relay
//! connection before the run returns, so a one-shot invocation never loses
//! its message to process exit.

use crate::config::Config;
use crate::publish::{PublishError, Publisher};
use serde_json::{json, Value};
use std::io::BufRead;

/// What to send.
#[derive(Debug, Clone)]
pub struct LoggerOptions {
    /// `--message`: one message from the command line.
    pub message: Option<String>,
    /// `--json-input`: input is JSON.
    pub json_input: bool,
    /// `--json-lines`: one JSON document per input line.
    pub json_lines: bool,
    /// `--topic` (default `log`).
    pub topic: String,
    /// `--modname` (default `logger`).
    pub modname: String,
}

impl Default for LoggerOptions {
    fn default() -> Self {
        LoggerOptions {
            message: None,
            json_input: false,
            json_lines: false,
            topic: "log".into(),
            modname: "logger".into(),
        }
    }
}

/// Why the logger failed.
#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    /// Input that should be JSON is not.
    #[error("invalid JSON on {where_}: {reason}")]
    Json {
        /// `line N`, `--message` or `standard input`.
        where_: String,
        /// The parser's message.
        reason: String,
    },
    /// Reading standard input failed.
    #[error("cannot read standard input: {0}")]
    Input(#[from] std::io::Error),
    /// Publishing failed (relay unreachable among others).
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl LoggerError {
    /// True when the input was at fault (exit code 2).
    pub fn is_input_error(&self) -> bool {
        matches!(self, LoggerError::Json { .. })
    }
}

fn parse_json(text: &str, where_: impl FnOnce() -> String) -> Result<Value, LoggerError> {
    crate::canonical::parse(text.as_bytes()).map_err(|e| LoggerError::Json {
        where_: where_(),
        reason: e.to_string(),
    })
}

/// Connects to the relay and sends the messages `options` and `input`
/// describe. Returns how many were sent.
pub async fn run(
    config: &Config,
    options: &LoggerOptions,
    input: impl BufRead,
) -> Result<u64, LoggerError> {
    // Whole-input and --message forms are checked before connecting, so bad
    // JSON never leaves a half-sent batch.
    let mut single = None;
    if let Some(text) = &options.message {
        single = Some(if options.json_input {
            parse_json(text, || "--message".into())?
        } else {
            json!({ "log": text })
        });
    } else if options.json_input && !options.json_lines {
        let mut text = String::new();
        let mut input = input;
        std::io::Read::read_to_string(&mut input, &mut text)?;
        single = Some(parse_json(&text, || "standard input".into())?);
        return send_all(config, options, single.into_iter().map(Ok)).await;
    }
    if let Some(value) = single {
        return send_all(config, options, std::iter::once(Ok(value))).await;
    }
    let json_lines = options.json_lines;
    let lines = input.lines().enumerate().filter_map(move |(index, line)| {
        let line = match line {
            Ok(line) => line,
            Err(e) => return Some(Err(LoggerError::Input(e))),
        };
        if json_lines {
            if line.trim().is_empty() {
                return None;
            }
            Some(parse_json(&line, || format!("line {}", index + 1)))
        } else {
            Some(Ok(json!({ "log": line.trim() })))
        }
    });
    send_all(config, options, lines).await
}

async fn send_all(
    config: &Config,
    options: &LoggerOptions,
    messages: impl Iterator<Item = Result<Value, LoggerError>>,
) -> Result<u64, LoggerError> {
    let publisher = Publisher::connect(config).await?;
    let mut sent = 0;
    for message in messages {
        let message = message?;
        publisher
            .publish(&options.topic, &options.modname, &message)
            .await?;
        sent += 1;
    }
    publisher.flush().await?;
    Ok(sent)
}

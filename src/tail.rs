//! `fedmsg-tail`: watch the bus.
//!
//! Output formats are fedmsg's (the default Python-style dict, `--pretty`,
//! `--really-pretty`, `--terse`, `--query`), each line prefixed as fedmsg's
//! logger does, plus `--json` (one compact envelope per line, for `jq`)
//! and `--format` (a [template](crate::template) per message). `--terse`,
//! `--users` and `--packages` use the configuration's [`meta`](crate::meta) rules.
//! Output is buffered and flushed whenever no further message is waiting,
//! so a pipe sees every message promptly without a write per message under
//! load.

use crate::canonical::{self, Palette};
use crate::config::Config;
use crate::crypto::Verdict;
use crate::envelope::Message;
use crate::meta::{Rules, Summary};
use crate::sequence::State;
use crate::subscribe::{Stats, Subscriber};
use crate::template::{lookup, Extras, Template};
use futures::{FutureExt, StreamExt};
use regex::Regex;
use serde_json::Value;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// How each message is printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// fedmsg's default: the envelope as a Python dict.
    Default,
    /// `--pretty`: pprint layout, `timestamp` as local time, no credentials.
    Pretty,
    /// `--really-pretty`: indented JSON (coloured on a terminal), no credentials.
    ReallyPretty,
    /// `--terse`: `title -- subtitle link`.
    Terse,
    /// `--query a.b,topic`: the values at those dotted keys, comma-separated.
    Query(Vec<String>),
    /// `--json`: the envelope as received, one per line.
    Json,
    /// `--format TEMPLATE`: the template filled in, one per message.
    Template(Template),
}

/// What `fedmsg-tail` was asked to do.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Topic prefixes to subscribe to (empty: everything).
    pub topics: Vec<String>,
    /// Show only topics matching this.
    pub include: Option<Regex>,
    /// Hide topics matching this (fedmsg hides `_heartbeat` by default).
    pub exclude: Option<Regex>,
    /// Show only messages involving one of these users (`--users`), by the
    /// [`meta`](crate::meta) rules.
    pub users: Vec<String>,
    /// Show only messages about one of these packages (`--packages`).
    pub packages: Vec<String>,
    /// Output format.
    pub format: Format,
    /// Colour `--really-pretty` output.
    pub color: bool,
    /// Stop after this many messages.
    pub count: Option<u64>,
    /// Stop after this long.
    pub timeout: Option<Duration>,
    /// With validation on, show invalid messages (marked) instead of
    /// dropping them.
    pub show_invalid: bool,
    /// Keep the position here and resume from it (`--state`).
    pub state_file: Option<std::path::PathBuf>,
    /// Show history from the replay services since then (`--since`),
    /// seconds since the epoch.
    pub since: Option<f64>,
}

impl TailOptions {
    /// True if showing a message needs its [`Summary`]: the `--users` and
    /// `--packages` filters, `--terse`, and templates that use it.
    pub fn needs_summary(&self) -> bool {
        !self.users.is_empty()
            || !self.packages.is_empty()
            || match &self.format {
                Format::Terse => true,
                Format::Template(template) => template.needs_summary(),
                _ => false,
            }
    }
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            topics: Vec::new(),
            include: None,
            exclude: Regex::new("_heartbeat").ok(),
            users: Vec::new(),
            packages: Vec::new(),
            format: Format::Default,
            color: false,
            count: None,
            timeout: None,
            show_invalid: false,
            state_file: None,
            since: None,
        }
    }
}

/// Parses `--since`: a duration back from now (`90s`, `10m`, `2h`, `1d`)
/// or a time (`2026-11-22`, `2026-11-22T10:00:00Z`, epoch seconds).
pub fn parse_since(text: &str, now: f64) -> Result<f64, String> {
    let units = [("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0)];
    for (suffix, seconds) in units {
        if let Some(number) = text.strip_suffix(suffix) {
            if let Ok(value) = number.parse::<f64>() {
                if value.is_finite() && value >= 0.0 {
                    return Ok(now - value * seconds);
                }
            }
        }
    }
    crate::verify::parse_time(text).map(|t| t as f64).map_err(|_| {
        format!("cannot read --since {text:?}: use a duration (90s, 10m, 2h, 1d) or a time (2026-11-22T10:00:00Z, epoch seconds)")
    })
}

/// Why tail stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailOutcome {
    /// `--count` messages were shown.
    CountReached,
    /// `--timeout` fired first.
    TimedOut,
    /// The shutdown future completed (Ctrl-C).
    Shutdown,
}

/// Why tail failed.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// The configuration lists nothing to connect to.
    #[error("no endpoints to subscribe to: the configuration's [endpoints] is empty")]
    NoEndpoints,
    /// Writing the output failed (a closed pipe among others).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// The state file cannot be used.
    #[error(transparent)]
    State(#[from] crate::sequence::StateError),
}

/// Runs tail until `--count`, `--timeout` or `shutdown`.
pub async fn run<W: Write>(
    config: &Config,
    options: &TailOptions,
    shutdown: impl Future<Output = ()>,
    out: W,
) -> Result<(TailOutcome, Arc<Stats>), TailError> {
    let mut subscriber = Subscriber::from_config(config)
        .topics(options.topics.clone())
        .keep_invalid(options.show_invalid);
    if subscriber.endpoints().is_empty() {
        return Err(TailError::NoEndpoints);
    }
    if let Some(path) = &options.state_file {
        subscriber = subscriber.resume(State::load(path)?);
    }
    if let Some(since) = options.since {
        subscriber = subscriber.since(since);
    }
    let rules = Rules::from_config(config);
    let mut subscription = subscriber.subscribe();
    let stats = subscription.stats();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut shown: u64 = 0;
    let deadline = options.timeout.map(|t| tokio::time::Instant::now() + t);
    let timer = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(shutdown, timer);
    let mut line = String::with_capacity(1024);
    let mut saved = tokio::time::Instant::now();
    // The position is saved after the output it covers is flushed, so a
    // crash can repeat a little, never skip.
    let save = |subscription: &crate::subscribe::Subscription| -> Result<(), TailError> {
        if let Some(path) = &options.state_file {
            subscription.state().save(path)?;
        }
        Ok(())
    };
    loop {
        let first = tokio::select! {
            _ = &mut shutdown => { out.flush()?; save(&subscription)?; return Ok((TailOutcome::Shutdown, stats)); }
            _ = &mut timer => { out.flush()?; save(&subscription)?; return Ok((TailOutcome::TimedOut, stats)); }
            next = subscription.next() => next,
        };
        if first.is_none() {
            out.flush()?;
            save(&subscription)?;
            return Ok((TailOutcome::Shutdown, stats));
        }
        let mut next = first;
        // Write everything already waiting, then flush once.
        while let Some(received) = next {
            // One summary per message, for the filters and the format alike.
            let topic_wanted = wanted(received.topic(), options);
            let summary = (topic_wanted && options.needs_summary())
                .then(|| rules.summarise(&received.message));
            if topic_wanted
                && summary
                    .as_ref()
                    .is_none_or(|s| s.involves(&options.users, &options.packages))
            {
                line.clear();
                render(
                    &mut line,
                    &received.message,
                    received.verdict.as_ref(),
                    options,
                    summary.as_ref(),
                );
                out.write_all(line.as_bytes())?;
                shown += 1;
                if options.count.is_some_and(|c| shown >= c) {
                    out.flush()?;
                    save(&subscription)?;
                    return Ok((TailOutcome::CountReached, stats));
                }
            }
            next = subscription.next().now_or_never().flatten();
        }
        out.flush()?;
        if saved.elapsed() >= Duration::from_millis(200) {
            save(&subscription)?;
            saved = tokio::time::Instant::now();
        }
    }
}

fn wanted(topic: &str, options: &TailOptions) -> bool {
    options.include.as_ref().is_none_or(|re| re.is_match(topic))
        && !options
            .exclude
            .as_ref()
            .is_some_and(|re| re.is_match(topic))
}

/// Appends one message in `options.format`, with its trailing newline.
/// With a verdict, `--really-pretty` names the signer and every human
/// format marks an invalid message. `summary` is the message's summary,
/// needed when [`TailOptions::needs_summary`] says so.
pub fn render(
    out: &mut String,
    message: &Message,
    verdict: Option<&Verdict>,
    options: &TailOptions,
    summary: Option<&Summary>,
) {
    match &options.format {
        Format::Json => {
            // Python's relay re-encodes bodies with spaces; re-emitting the
            // canonical form keeps one compact line per message whatever the hop.
            canonical::write_canonical_object_without(out, message.body(), &[]);
            out.push('\n');
            return;
        }
        Format::Template(template) => {
            let extras = Extras { summary, verdict };
            template.render(out, message.body(), extras);
            out.push('\n');
            return;
        }
        _ => {}
    }
    out.push_str(
        &chrono::Local::now()
            .format("[%Y-%m-%d %H:%M:%S][fedmsg.commands    INFO] ")
            .to_string(),
    );
    match verdict {
        Some(Verdict::Invalid(reason)) => out.push_str(&format!("INVALID ({reason}) ")),
        Some(Verdict::Valid { signer, scheme }) if options.format == Format::ReallyPretty => {
            out.push_str(&format!("signed by {signer} ({}) ", scheme.name()));
        }
        _ => {}
    }
    match &options.format {
        Format::Default => python_repr(out, &Value::Object(message.body().clone())),
        Format::Pretty => {
            let mut body = strip_credentials(message);
            if let Some(ts) = body.get("timestamp").and_then(Value::as_f64) {
                body.insert("timestamp".into(), Value::String(ctime(ts)));
            }
            out.push('\n');
            pformat(out, &Value::Object(body), 0, 1);
        }
        Format::ReallyPretty => {
            let body = Value::Object(strip_credentials(message));
            out.push('\n');
            out.push_str(&canonical::to_pretty(
                &body,
                options.color.then_some(&Palette::TERMINAL),
            ));
        }
        Format::Terse => {
            out.push('\n');
            out.push_str(&summary.map(Summary::terse).unwrap_or_default());
        }
        Format::Query(keys) => {
            let values: Vec<String> = keys
                .iter()
                .map(
                    |key| match lookup(message.body(), &key.split('.').collect::<Vec<_>>()) {
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => {
                            let mut text = String::new();
                            python_repr(&mut text, other);
                            text
                        }
                        None => "None".to_owned(),
                    },
                )
                .collect();
            out.push_str(&values.join(", "));
        }
        Format::Json | Format::Template(_) => {}
    }
    out.push('\n');
}

/// The envelope without `signature` and `certificate` (fedmsg's `strip_credentials`).
fn strip_credentials(message: &Message) -> serde_json::Map<String, Value> {
    let mut body = message.body().clone();
    body.remove("signature");
    body.remove("certificate");
    body
}

/// Python's `time.ctime`: `Sun Nov 22 15:05:31 2026`, local time.
fn ctime(timestamp: f64) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_opt(timestamp as i64, 0).single() {
        Some(t) => t.format("%a %b %e %H:%M:%S %Y").to_string(),
        None => timestamp.to_string(),
    }
}

/// Writes `value` as Python's `repr` of the parsed JSON would read.
pub fn python_repr(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => {
            let mut text = String::new();
            canonical::write_canonical(&mut text, &Value::Number(n.clone()));
            out.push_str(match text.as_str() {
                "NaN" => "nan",
                "Infinity" => "inf",
                "-Infinity" => "-inf",
                other => other,
            });
        }
        Value::String(s) => python_str_repr(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_str_repr(out, key);
                out.push_str(": ");
                python_repr(out, item);
            }
            out.push('}');
        }
    }
}

fn python_str_repr(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `pprint.pformat` (width 80) for JSON values.
fn pformat(out: &mut String, value: &Value, indent: usize, allowance: usize) {
    let mut flat = String::new();
    python_repr(&mut flat, value);
    if flat.chars().count() + indent + allowance <= 80 {
        out.push_str(&flat);
        return;
    }
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            let inner = indent + 1;
            let last = map.len() - 1;
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                    out.push_str(&" ".repeat(inner));
                }
                let mut key_repr = String::new();
                python_str_repr(&mut key_repr, key);
                out.push_str(&key_repr);
                out.push_str(": ");
                pformat(
                    out,
                    item,
                    inner + key_repr.chars().count() + 2,
                    if i == last { allowance + 1 } else { 1 },
                );
            }
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            let inner = indent + 1;
            let last = items.len() - 1;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                    out.push_str(&" ".repeat(inner));
                }
                pformat(out, item, inner, if i == last { allowance + 1 } else { 1 });
            }
            out.push(']');
        }
        _ => out.push_str(&flat),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message() -> Message {
        Message::from_body(
            json!({"i": 1, "msg": {"log": "Hello world"}, "msg_id": "2026-71ca2816-56e2-462f-8d47-2830e0e2bb61",
                   "timestamp": 1795359931, "topic": "org.fedoraproject.dev.logger.log", "username": "root",
                   "signature": "x", "certificate": "y"})
            .as_object()
            .cloned()
            .unwrap(),
        )
    }

    fn rendered(format: Format) -> String {
        let mut out = String::new();
        let rules = Rules::from_config(&crate::config::Config::builtin().unwrap());
        render(
            &mut out,
            &message(),
            None,
            &TailOptions {
                format,
                ..Default::default()
            },
            Some(&rules.summarise(&message())),
        );
        out
    }

    #[test]
    fn default_is_a_python_dict_with_fedmsg_prefix() {
        let out = rendered(Format::Default);
        assert!(out.starts_with('['), "{out}");
        assert!(out.contains("][fedmsg.commands    INFO] {'certificate': 'y', 'i': 1, 'msg': {'log': 'Hello world'}, "), "{out}");
        assert!(out.ends_with("'username': 'root'}\n"));
    }

    #[test]
    fn pretty_matches_pprint() {
        let out = rendered(Format::Pretty);
        let body = out.split_once("INFO] \n").unwrap().1;
        let expected_start = "{'i': 1,\n 'msg': {'log': 'Hello world'},\n 'msg_id': '2026-71ca2816-56e2-462f-8d47-2830e0e2bb61',\n 'timestamp': '";
        assert!(body.starts_with(expected_start), "{body}");
        assert!(
            body.ends_with(" 'topic': 'org.fedoraproject.dev.logger.log',\n 'username': 'root'}\n"),
            "{body}"
        );
        assert!(!body.contains("signature"));
    }

    #[test]
    fn query_terse_and_json() {
        let out = rendered(Format::Query(vec![
            "msg.log".into(),
            "topic".into(),
            "i".into(),
            "nope".into(),
        ]));
        assert!(
            out.ends_with("INFO] Hello world, org.fedoraproject.dev.logger.log, 1, None\n"),
            "{out}"
        );
        assert!(rendered(Format::Terse).ends_with("INFO] \nlogger.log -- Hello world (root) \n"));
        let json = rendered(Format::Json);
        assert!(
            json.starts_with("{\"certificate\":\"y\",\"i\":1,"),
            "{json}"
        );
    }

    #[test]
    fn python_repr_of_strings_and_constants() {
        let mut out = String::new();
        python_repr(
            &mut out,
            &json!(["it's", "say \"hi\"", "a'b\"c", null, true, 1.0, "\u{1}"]),
        );
        assert_eq!(
            out,
            r#"["it's", 'say "hi"', 'a\'b"c', None, True, 1.0, '\x01']"#
        );
    }
}

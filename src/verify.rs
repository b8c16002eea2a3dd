//! `fedmsg-verify`: offline validation of archived messages, for audits.
//!
//! Reads JSON lines, a JSON array, a single message, or a datagrepper
//! `/raw` page (`raw_messages`); undoes datagrepper's additions as fedmsg
//! does; validates each message, optionally as of a past time (archived
//! messages whose certificates have expired since); reports one verdict
//! per message.

use crate::crypto::{fix_datagrepper, Validator};
use serde_json::{Map, Value};
use std::io::Write;

/// Why the input could not be read as messages.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Neither JSON nor JSON lines.
    #[error("{source_name}: not JSON, a JSON array or JSON lines: {reason}")]
    Input {
        /// The file name or `standard input`.
        source_name: String,
        /// The parser's message (for JSON lines, naming the line).
        reason: String,
    },
    /// Writing the report failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Splits `bytes` into message bodies.
pub fn read_messages(
    bytes: &[u8],
    source_name: &str,
) -> Result<Vec<Map<String, Value>>, VerifyError> {
    let invalid = |reason: String| VerifyError::Input {
        source_name: source_name.to_owned(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| invalid(format!("not UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let as_objects = |items: Vec<Value>| -> Result<Vec<Map<String, Value>>, VerifyError> {
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(map) => Ok(map),
                other => Err(invalid(format!(
                    "item {} is not an object but {}",
                    i + 1,
                    short(&other)
                ))),
            })
            .collect()
    };
    match crate::canonical::parse(text.as_bytes()) {
        Ok(Value::Array(items)) => as_objects(items),
        Ok(Value::Object(mut page)) if page.get("raw_messages").is_some_and(Value::is_array) => {
            match page.remove("raw_messages") {
                Some(Value::Array(items)) => as_objects(items),
                _ => Ok(Vec::new()),
            }
        }
        Ok(Value::Object(single)) => Ok(vec![single]),
        Ok(other) => Err(invalid(format!(
            "expected messages, found {}",
            short(&other)
        ))),
        Err(whole) => {
            // JSON lines: one message per non-blank line.
            let mut messages = Vec::new();
            for (number, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match crate::canonical::parse(line.as_bytes()) {
                    Ok(Value::Object(map)) => messages.push(map),
                    Ok(other) => {
                        return Err(invalid(format!(
                            "line {} is not an object but {}",
                            number + 1,
                            short(&other)
                        )))
                    }
                    Err(e) if number == 0 => {
                        return Err(invalid(
                            whole.to_string() + &format!(" (as JSON lines, line 1: {e})"),
                        ))
                    }
                    Err(e) => return Err(invalid(format!("line {}: {e}", number + 1))),
                }
            }
            Ok(messages)
        }
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 40 {
        format!(
            "{}…",
            &text[..text
                .char_indices()
                .nth(37)
                .map(|(i, _)| i)
                .unwrap_or(text.len())]
        )
    } else {
        text
    }
}

/// Totals of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Valid messages.
    pub valid: usize,
    /// Invalid messages.
    pub invalid: usize,
}

/// Validates `messages` (as of `at`, seconds since the epoch, if given) and
/// writes one line per message (per invalid message with `only_invalid`):
/// `SOURCE:N MSG_ID TOPIC: VERDICT`.
pub fn report(
    validator: &Validator,
    source_name: &str,
    messages: Vec<Map<String, Value>>,
    at: Option<i64>,
    only_invalid: bool,
    out: &mut impl Write,
) -> Result<Tally, VerifyError> {
    let mut tally = Tally::default();
    for (index, mut body) in messages.into_iter().enumerate() {
        fix_datagrepper(&mut body);
        let verdict = match at {
            Some(at) => validator.validate_at(&body, at),
            None => validator.validate(&body),
        };
        if verdict.is_valid() {
            tally.valid += 1;
        } else {
            tally.invalid += 1;
        }
        if only_invalid && verdict.is_valid() {
            continue;
        }
        let field = |name: &str| {
            body.get(name)
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_owned()
        };
        writeln!(
            out,
            "{source_name}:{} {} {}: {verdict}",
            index + 1,
            field("msg_id"),
            field("topic")
        )?;
    }
    Ok(tally)
}

/// Parses `--at`: RFC 3339 (`2023-06-01T12:00:00Z`), a date (`2023-06-01`,
/// midnight UTC) or seconds since the epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp());
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp())
            .unwrap_or_default());
    }
    Err(format!("cannot read {text:?} as a time: use 2023-06-01, 2023-06-01T12:00:00Z or seconds since 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_input_shape() {
        assert_eq!(
            read_messages(b"{\"a\":1}\n\n{\"b\":2}\n", "x")
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            read_messages(b"[{\"a\":1},{\"b\":2},{}]", "x")
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            read_messages(b"{\"raw_messages\":[{\"a\":1}],\"pages\":1}", "x")
                .unwrap()
                .len(),
            1
        );
        assert_eq!(read_messages(b"{\"topic\":\"t\"}", "x").unwrap().len(), 1);
        assert_eq!(read_messages(b"  ", "x").unwrap().len(), 0);
        let error = read_messages(b"{\"a\":1}\n{oops\n", "in.jsonl")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("in.jsonl") && error.contains("line 2"),
            "{error}"
        );
        assert!(read_messages(b"[1]", "x").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("2023-06-01").unwrap(), 1685577600);
        assert_eq!(parse_time("2023-06-01T00:00:00Z").unwrap(), 1685577600);
        assert_eq!(parse_time("1685577600").unwrap(), 1685577600);
        assert!(parse_time("June").is_err());
    }
}

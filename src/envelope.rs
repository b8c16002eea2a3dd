//! The envelope: frames `[topic, body]`, where the body is the JSON object
//! `{topic, msg, timestamp, msg_id, i, username, ...}`.
//!
//! [`Message`] is what readers get: the frame topic, the parsed body and the
//! body bytes exactly as received (so relays and gateways can forward them
//! untouched). [`Message::decode`] refuses malformed input with a
//! [`DecodeError`] that names the problem, never a panic.

use crate::canonical;
use crate::topic::Topic;
use bytes::Bytes;
use serde_json::{Map, Value};
use std::sync::{Arc, OnceLock};

/// Why a received ZeroMQ message is not a fedmsg message.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// fedmsg messages have exactly two frames.
    #[error("expected 2 frames (topic, body), got {0}")]
    FrameCount(usize),
    /// The body is larger than `max_message_size`.
    #[error("body of {size} bytes exceeds max_message_size {limit}")]
    TooLarge {
        /// The body's size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The topic frame is not UTF-8.
    #[error("topic frame is not valid UTF-8")]
    TopicUtf8,
    /// The body frame is not UTF-8.
    #[error("body is not valid UTF-8 (at byte {0})")]
    BodyUtf8(usize),
    /// The body is not JSON.
    #[error("body is not JSON: {0}")]
    Json(String),
    /// The body is JSON but not an object.
    #[error("body is a JSON {0}, not an object")]
    NotObject(&'static str),
}

impl DecodeError {
    /// A short stable label, used for counters and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::FrameCount(_) => "frame_count",
            DecodeError::TooLarge { .. } => "oversized",
            DecodeError::TopicUtf8 => "topic_utf8",
            DecodeError::BodyUtf8(_) => "body_utf8",
            DecodeError::Json(_) => "json",
            DecodeError::NotObject(_) => "not_object",
        }
    }
}

/// A received (or built) fedmsg message. Cheap to clone.
///
/// Decoding reads only what readers need for every message (`i`,
/// `incarnation`, `msg_id`, `timestamp`) in one pass without building the
/// JSON tree; the whole envelope is parsed the first time it is asked for
/// ([`Message::body`], [`Message::msg`]). A relay or a reader that only
/// counts, filters by topic or forwards never pays for it.
#[derive(Debug, Clone)]
pub struct Message {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    topic: String,
    raw: Bytes,
    index: Index,
    body: OnceLock<Map<String, Value>>,
}

/// The envelope fields read for every message.
#[derive(Debug, Default)]
struct Index {
    i: Option<u64>,
    incarnation: Option<Box<str>>,
    msg_id: Option<Box<str>>,
    timestamp: Option<f64>,
    /// Where the `msg` value lies in the raw body, when decoded from it.
    msg: Option<std::ops::Range<usize>>,
}

impl Index {
    fn of(body: &Map<String, Value>) -> Index {
        Index {
            i: body.get("i").and_then(Value::as_u64),
            incarnation: body
                .get("incarnation")
                .and_then(Value::as_str)
                .map(Into::into),
            msg_id: body.get("msg_id").and_then(Value::as_str).map(Into::into),
            timestamp: body.get("timestamp").and_then(Value::as_f64),
            msg: None,
        }
    }
}

/// The same fields, borrowed from the body while it is scanned once.
#[derive(serde::Deserialize)]
struct RawIndex<'a> {
    #[serde(default)]
    i: Option<u64>,
    #[serde(default, borrow)]
    incarnation: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    msg_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    timestamp: Option<f64>,
    #[serde(default, borrow)]
    msg: Option<&'a serde_json::value::RawValue>,
}

impl Message {
    /// Decodes the frames of one ZeroMQ message.
    pub fn decode(frames: &[Bytes], max_size: usize) -> Result<Message, DecodeError> {
        let [topic, body] = frames else {
            return Err(DecodeError::FrameCount(frames.len()));
        };
        if body.len() > max_size {
            return Err(DecodeError::TooLarge {
                size: body.len(),
                limit: max_size,
            });
        }
        let topic = std::str::from_utf8(topic).map_err(|_| DecodeError::TopicUtf8)?;
        let text = std::str::from_utf8(body).map_err(|e| DecodeError::BodyUtf8(e.valid_up_to()))?;
        // Fast path: one scan of a well-formed object; the tree is built
        // later, if ever. Anything unusual (NaN, duplicate keys, odd types)
        // takes the full parse, which decides. (Parsing the validated text,
        // not the bytes, spares checking each string's UTF-8 again.)
        if let Ok(raw) = serde_json::from_str::<RawIndex<'_>>(text) {
            let index = Index {
                i: raw.i,
                incarnation: raw.incarnation.map(|c| c.as_ref().into()),
                msg_id: raw.msg_id.map(|c| c.as_ref().into()),
                timestamp: raw.timestamp,
                msg: raw.msg.map(|msg| {
                    // The raw value is a slice of `text`.
                    let start = msg.get().as_ptr() as usize - text.as_ptr() as usize;
                    start..start + msg.get().len()
                }),
            };
            return Ok(Message {
                inner: Arc::new(Inner {
                    topic: topic.to_owned(),
                    raw: body.clone(),
                    index,
                    body: OnceLock::new(),
                }),
            });
        }
        let value = canonical::parse(body).map_err(|e| DecodeError::Json(e.to_string()))?;
        match value {
            Value::Object(map) => Ok(Message::from_parts(topic.to_owned(), map, body.clone())),
            other => Err(DecodeError::NotObject(kind(&other))),
        }
    }

    /// Wraps an envelope that was built here; `raw` is its wire form.
    pub(crate) fn from_parts(topic: String, body: Map<String, Value>, raw: Bytes) -> Message {
        let index = Index::of(&body);
        Message {
            inner: Arc::new(Inner {
                topic,
                raw,
                index,
                body: OnceLock::from(body),
            }),
        }
    }

    /// Builds a message from a body object (as read from a file or an archive),
    /// with the frame topic taken from the body's `topic`.
    pub fn from_body(body: Map<String, Value>) -> Message {
        let topic = body
            .get("topic")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let raw = Bytes::from(canonical::to_canonical(&Value::Object(body.clone())));
        Message::from_parts(topic, body, raw)
    }

    /// The topic of frame 0 (what subscriptions match).
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// The whole envelope (parsed on first use).
    pub fn body(&self) -> &Map<String, Value> {
        self.inner.body.get_or_init(|| match canonical::parse(&self.inner.raw) {
            Ok(Value::Object(map)) => map,
            // Only input that passed the fast scan gets here; the scan is
            // more lenient than the full parse about lone surrogates.
            _ => {
                tracing::warn!(topic = %self.inner.topic, "message body could not be parsed in full; treating it as empty");
                Map::new()
            }
        })
    }

    /// The body bytes exactly as they were received or sent.
    pub fn raw_body(&self) -> &Bytes {
        &self.inner.raw
    }

    /// The payload (`msg`), `Null` when absent.
    pub fn msg(&self) -> &Value {
        self.body().get("msg").unwrap_or(&Value::Null)
    }

    /// The payload deserialised straight into `T`, in one scan of the raw
    /// body and without building the JSON tree: the way a consumer with a
    /// typed view of its messages reads them. Fields `T` does not name are
    /// skipped; a missing `msg` is `null`.
    pub fn msg_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Envelope<T> {
            msg: Option<T>,
        }
        if let Some(body) = self.inner.body.get() {
            return serde_json::from_value(body.get("msg").cloned().unwrap_or(Value::Null));
        }
        // Decoding noted where `msg` is: parse that alone.
        if let Some(msg) = self
            .inner
            .index
            .msg
            .clone()
            .and_then(|r| self.inner.raw.get(r))
        {
            return serde_json::from_slice(msg);
        }
        match serde_json::from_slice::<Envelope<T>>(&self.inner.raw)?.msg {
            Some(msg) => Ok(msg),
            None => serde_json::from_value(Value::Null),
        }
    }

    /// The unique id, `<year>-<uuid4>`.
    pub fn msg_id(&self) -> Option<&str> {
        self.inner.index.msg_id.as_deref()
    }

    /// The per-publisher sequence number.
    pub fn i(&self) -> Option<u64> {
        self.inner.index.i
    }

    /// Seconds since the epoch (an integer from fedmsg, a float from archives).
    pub fn timestamp(&self) -> Option<f64> {
        self.inner.index.timestamp
    }

    /// The publisher incarnation (a fresh id each time a publisher starts),
    /// which scopes `i`.
    pub fn incarnation(&self) -> Option<&str> {
        self.inner.index.incarnation.as_deref()
    }

    /// The publishing process's user.
    pub fn username(&self) -> Option<&str> {
        self.body().get("username").and_then(Value::as_str)
    }

    /// The envelope in canonical form (sorted keys, ASCII), as fedmsg sends it.
    pub fn to_canonical(&self) -> String {
        let mut out = String::with_capacity(self.inner.raw.len() + 32);
        canonical::write_canonical_object_without(&mut out, self.body(), &[]);
        out
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Python truthiness, used for fedmsg's `msg or dict()`.
/// [`is_falsy`] for a value already in canonical form.
fn is_falsy_text(canonical: &str) -> bool {
    matches!(
        canonical,
        "null" | "false" | "0" | "0.0" | "-0.0" | "\"\"" | "[]" | "{}"
    )
}

fn is_falsy(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Builds an envelope the way fedmsg's `publish` does: a falsy `msg`
/// becomes `{}`, `timestamp` is whole seconds, `msg_id` is
/// `<year>-<uuid4>` (UTC year).
pub fn build(topic: &Topic, msg: Value, i: u64, username: &str) -> Map<String, Value> {
    let now = chrono::Utc::now();
    let msg = if is_falsy(&msg) {
        Value::Object(Map::new())
    } else {
        msg
    };
    let mut body = Map::new();
    body.insert("topic".into(), Value::String(topic.as_str().to_owned()));
    body.insert("msg".into(), msg);
    body.insert("timestamp".into(), Value::from(now.timestamp()));
    body.insert(
        "msg_id".into(),
        Value::String(format!("{}-{}", now.format("%Y"), uuid::Uuid::new_v4())),
    );
    body.insert("i".into(), Value::from(i));
    body.insert("username".into(), Value::String(username.to_owned()));
    body
}

/// Writes the canonical form of an unsigned envelope straight into `out`,
/// without building it as a map first: the same bytes as `build` (plus
/// `incarnation`) followed by canonical serialisation, at a fraction of
/// the allocations. Keys in code-point order: `i`, `incarnation`, `msg`,
/// `msg_id`, `timestamp`, `topic`, `username`. `msg` is given in canonical
/// form already (a falsy one becomes `{}`, as in fedmsg).
pub fn write_unsigned(
    out: &mut String,
    topic: &Topic,
    msg: &str,
    i: u64,
    incarnation: &str,
    username: &str,
) -> i64 {
    use chrono::Datelike as _;
    let now = chrono::Utc::now();
    let timestamp = now.timestamp();
    // Written piece by piece: `format!` machinery was a tenth of the cost
    // of publishing.
    out.push_str("{\"i\":");
    canonical::push_integer(out, false, i);
    out.push_str(",\"incarnation\":");
    canonical::write_string(out, incarnation);
    out.push_str(",\"msg\":");
    out.push_str(if is_falsy_text(msg) { "{}" } else { msg });
    out.push_str(",\"msg_id\":\"");
    canonical::push_integer(out, now.year() < 0, u64::from(now.year().unsigned_abs()));
    out.push('-');
    let mut uuid = [0u8; uuid::fmt::Hyphenated::LENGTH];
    out.push_str(uuid::Uuid::new_v4().hyphenated().encode_lower(&mut uuid));
    out.push_str("\",\"timestamp\":");
    canonical::push_integer(out, timestamp < 0, timestamp.unsigned_abs());
    out.push_str(",\"topic\":");
    canonical::write_string(out, topic.as_str());
    out.push_str(",\"username\":");
    canonical::write_string(out, username);
    out.push('}');
    timestamp
}

/// The current user's name, as Python's `getpass.getuser()` finds it.
pub fn current_username() -> String {
    for var in ["LOGNAME", "USER", "LNAME", "USERNAME"] {
        if let Ok(name) = std::env::var(var) {
            if !name.is_empty() {
                return name;
            }
        }
    }
    uid_name().unwrap_or_else(|| "unknown".to_owned())
}

fn uid_name() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        (fields.next()? == uid).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
    }

    #[test]
    fn decodes_a_fedmsg_message() {
        let m = Message::decode(&frames(&[b"t.a", br#"{"i":3,"msg":{"a":1},"msg_id":"2026-x","topic":"t.a","timestamp":5,"username":"u"}"#]), 1000).unwrap();
        assert_eq!(m.topic(), "t.a");
        assert_eq!(m.i(), Some(3));
        assert_eq!(m.msg()["a"], 1);
        assert_eq!(m.username(), Some("u"));
        assert_eq!(m.timestamp(), Some(5.0));
    }

    #[test]
    fn msg_as_reads_a_typed_payload_before_and_after_the_tree_is_built() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Payload {
            a: u64,
        }
        let m = Message::decode(
            &frames(&[
                b"t.a",
                br#"{"i":3,"msg":{"a":1,"b":"skipped"},"topic":"t.a"}"#,
            ]),
            1000,
        )
        .unwrap();
        assert_eq!(m.msg_as::<Payload>().unwrap(), Payload { a: 1 });
        // Decoding noted exactly where `msg` lies.
        let range = m.inner.index.msg.clone().unwrap();
        assert_eq!(&m.raw_body()[range], br#"{"a":1,"b":"skipped"}"#);
        let spaced = Message::decode(
            &frames(&[
                b"t",
                b"{ \"z\" : [1, {\"msg\": 0}] ,\n \"msg\" : { \"a\" : 7 } }",
            ]),
            1000,
        )
        .unwrap();
        assert_eq!(spaced.msg_as::<Payload>().unwrap(), Payload { a: 7 });
        let null = Message::decode(&frames(&[b"t", br#"{"msg":null}"#]), 1000).unwrap();
        assert_eq!(null.msg_as::<Option<Payload>>().unwrap(), None);
        let _ = m.body();
        assert_eq!(m.msg_as::<Payload>().unwrap(), Payload { a: 1 });
        // A wrong shape is an error; a missing msg is null.
        let bad = Message::decode(&frames(&[b"t", br#"{"msg":{"a":"x"}}"#]), 1000).unwrap();
        assert!(bad.msg_as::<Payload>().is_err());
        let none = Message::decode(&frames(&[b"t", br#"{"i":1}"#]), 1000).unwrap();
        assert_eq!(none.msg_as::<Option<Payload>>().unwrap(), None);
    }

    #[test]
    fn refuses_each_kind_of_bad_input() {
        let cases: Vec<(Vec<Bytes>, &str)> = vec![
            (frames(&[b"only"]), "frame_count"),
            (frames(&[b"a", b"{}", b"c"]), "frame_count"),
            (frames(&[b"\xff", b"{}"]), "topic_utf8"),
            (frames(&[b"t", b"{\"a\":\"\xff\"}"]), "body_utf8"),
            (frames(&[b"t", b"{not json"]), "json"),
            (frames(&[b"t", b"[1,2]"]), "not_object"),
            (frames(&[b"t", &[b' '; 2000]]), "oversized"),
        ];
        for (input, label) in cases {
            let err = Message::decode(&input, 1000).unwrap_err();
            assert_eq!(err.label(), label, "{err}");
        }
    }

    #[test]
    fn direct_writing_equals_building_then_serialising() {
        let topic: Topic = "org.x.dev.m.t".parse().unwrap();
        for msg in [
            serde_json::json!({"b": [1, 2.5, "é"], "a": null}),
            Value::Null,
            serde_json::json!(0),
            serde_json::json!("x"),
        ] {
            let mut out = String::new();
            write_unsigned(
                &mut out,
                &topic,
                &canonical::to_canonical(&msg),
                7,
                "inc",
                "me",
            );
            let written: Map<String, Value> = match canonical::parse(out.as_bytes()).unwrap() {
                Value::Object(map) => map,
                other => panic!("{other}"),
            };
            let mut built = build(&topic, msg.clone(), 7, "me");
            built.insert("incarnation".into(), Value::from("inc"));
            let id = written["msg_id"].as_str().unwrap();
            let year = chrono::Datelike::year(&chrono::Utc::now()).to_string();
            assert_eq!(id.len(), year.len() + 1 + 36, "{id}");
            assert!(id.starts_with(&format!("{year}-")), "{id}");
            assert!(uuid::Uuid::parse_str(&id[year.len() + 1..]).is_ok(), "{id}");
            let now = chrono::Utc::now().timestamp();
            let stamp = written["timestamp"].as_i64().unwrap();
            assert!((now - 2..=now).contains(&stamp), "{stamp} vs {now}");
            built.insert("msg_id".into(), written["msg_id"].clone());
            built.insert("timestamp".into(), written["timestamp"].clone());
            assert_eq!(out, canonical::to_canonical(&Value::Object(built)), "{msg}");
        }
    }

    #[test]
    fn integers_are_written_in_decimal() {
        for (negative, magnitude, text) in [
            (false, 0, "0"),
            (false, 7, "7"),
            (false, 1_795_365_169, "1795365169"),
            (false, u64::MAX, "18446744073709551615"),
            (true, 42, "-42"),
        ] {
            let mut out = String::from("x");
            canonical::push_integer(&mut out, negative, magnitude);
            assert_eq!(out, format!("x{text}"));
        }
    }

    #[test]
    fn build_follows_fedmsg() {
        let topic: Topic = "org.x.dev.m.t".parse().unwrap();
        let body = build(&topic, Value::Null, 1, "me");
        assert_eq!(body["msg"], Value::Object(Map::new()));
        assert_eq!(body["i"], 1);
        assert!(body["timestamp"].is_i64());
        let id = body["msg_id"].as_str().unwrap();
        assert_eq!(id.len(), 4 + 1 + 36);
        assert_eq!(&id[4..5], "-");
        assert!(uuid::Uuid::parse_str(&id[5..]).is_ok());
    }
}

//! Replay: publishers and the relay keep their recent messages and answer
//! fedmsg's REQ/REP queries, so readers can fill the gaps they detect.
//!
//! Protocol (fedmsg's, without its bugs): the client sends one frame, a
//! JSON object; the server answers one frame per matching message (the body
//! exactly as it was sent, so signatures still verify), or one frame
//! `error: '<text>'`. fedmsg's criteria are combined with OR:
//! `seq_id`, `seq_ids`, `seq_id_range` (inclusive; they match the envelope's
//! `i`), `msg_id`, `msg_ids`, `time` (`[from, to]`, epoch seconds,
//! inclusive). Our extensions narrow the result (AND): `incarnation` (the
//! publisher incarnation the sequence numbers belong to; a publisher's own
//! server defaults to its current one), `since` (timestamp ≥), and `limit`
//! (at most this many, oldest first).

use crate::config::Keepalive;
use crate::endpoint::Endpoint;
use crate::transport::{self, RepServer};
use bytes::Bytes;
use serde_json::Value;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What fedmsg's SqlStore answers when nothing matches; our client reads it
/// as an empty result.
const NO_MATCH: &str = "There was no match for the given query";

/// Why a replay query failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ReplayError {
    /// The query is not a JSON object or has a bad field.
    #[error("bad replay query: {0}")]
    Query(String),
    /// The server could not be reached or did not answer in time.
    #[error("replay service unavailable: {0}")]
    Unavailable(String),
    /// The server answered with an error.
    #[error("replay service error: {0}")]
    Server(String),
}

/// A parsed replay query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// `seq_id` and `seq_ids`.
    pub seq_ids: Vec<u64>,
    /// `seq_id_range`, inclusive.
    pub seq_range: Option<(u64, u64)>,
    /// `msg_id` and `msg_ids`.
    pub msg_ids: Vec<String>,
    /// `time`, inclusive.
    pub time: Option<(f64, f64)>,
    /// Ours: the incarnation sequence numbers refer to.
    pub incarnation: Option<String>,
    /// Ours: only messages with `timestamp >= since`.
    pub since: Option<f64>,
    /// Ours: at most this many messages.
    pub limit: Option<usize>,
}

impl Query {
    /// Parses a query object.
    pub fn parse(bytes: &[u8]) -> Result<Query, ReplayError> {
        let bad = |why: String| ReplayError::Query(why);
        let value = crate::canonical::parse(bytes).map_err(|e| bad(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(bad("the query is not a JSON object".into()));
        };
        let mut query = Query::default();
        let uint = |key: &str, v: &Value| {
            v.as_u64()
                .ok_or_else(|| bad(format!("field \"{key}\" must be a non-negative integer")))
        };
        let number = |key: &str, v: &Value| {
            v.as_f64()
                .ok_or_else(|| bad(format!("field \"{key}\" must hold numbers")))
        };
        let string = |key: &str, v: &Value| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("field \"{key}\" must be a string")))
        };
        let pair = |key: &str, v: &Value| -> Result<(Value, Value), ReplayError> {
            match v.as_array().map(Vec::as_slice) {
                Some([a, b]) => Ok((a.clone(), b.clone())),
                _ => Err(bad(format!("field \"{key}\" must be a list of two values"))),
            }
        };
        for (key, v) in &map {
            match key.as_str() {
                "seq_id" => query.seq_ids.push(uint(key, v)?),
                "seq_ids" => {
                    for item in v
                        .as_array()
                        .ok_or_else(|| bad(format!("field \"{key}\" must be a list")))?
                    {
                        query.seq_ids.push(uint(key, item)?);
                    }
                }
                "seq_id_range" => {
                    let (a, b) = pair(key, v)?;
                    query.seq_range = Some((uint(key, &a)?, uint(key, &b)?));
                }
                "msg_id" => query.msg_ids.push(string(key, v)?),
                "msg_ids" => {
                    for item in v
                        .as_array()
                        .ok_or_else(|| bad(format!("field \"{key}\" must be a list")))?
                    {
                        query.msg_ids.push(string(key, item)?);
                    }
                }
                "time" => {
                    let (a, b) = pair(key, v)?;
                    query.time = Some((number(key, &a)?, number(key, &b)?));
                }
                "incarnation" => query.incarnation = Some(string(key, v)?),
                "since" => query.since = Some(number(key, v)?),
                "limit" => query.limit = Some(uint(key, v)? as usize),
                other => return Err(bad(format!("unsupported field \"{other}\""))),
            }
        }
        if query.seq_ids.is_empty()
            && query.seq_range.is_none()
            && query.msg_ids.is_empty()
            && query.time.is_none()
            && query.since.is_none()
        {
            return Err(bad(
                "the query selects nothing: use seq_id(s), seq_id_range, msg_id(s), time or since"
                    .into(),
            ));
        }
        Ok(query)
    }

    /// The query as JSON (compact, sorted), as it goes on the wire.
    pub fn to_json(&self) -> String {
        let mut map = serde_json::Map::new();
        if !self.seq_ids.is_empty() {
            map.insert("seq_ids".into(), Value::from(self.seq_ids.clone()));
        }
        if let Some((a, b)) = self.seq_range {
            map.insert("seq_id_range".into(), Value::from(vec![a, b]));
        }
        if !self.msg_ids.is_empty() {
            map.insert("msg_ids".into(), Value::from(self.msg_ids.clone()));
        }
        if let Some((a, b)) = self.time {
            map.insert(
                "time".into(),
                Value::Array(vec![
                    crate::canonical::float_value(a),
                    crate::canonical::float_value(b),
                ]),
            );
        }
        if let Some(incarnation) = &self.incarnation {
            map.insert("incarnation".into(), Value::from(incarnation.clone()));
        }
        if let Some(since) = self.since {
            map.insert("since".into(), crate::canonical::float_value(since));
        }
        if let Some(limit) = self.limit {
            map.insert("limit".into(), Value::from(limit));
        }
        crate::canonical::to_canonical(&Value::Object(map))
    }

    fn matches(&self, entry: &Entry, default_incarnation: Option<&str>) -> bool {
        if self.since.is_some_and(|since| entry.timestamp < since) {
            return false;
        }
        let incarnation = self.incarnation.as_deref().or(default_incarnation);
        let seq_ok = incarnation.is_none_or(|wanted| entry.incarnation.as_deref() == Some(wanted));
        let by_seq = seq_ok
            && entry.i.is_some_and(|i| {
                self.seq_ids.contains(&i)
                    || self.seq_range.is_some_and(|(a, b)| (a..=b).contains(&i))
            });
        let by_id = entry
            .msg_id
            .as_ref()
            .is_some_and(|id| self.msg_ids.contains(id));
        let by_time = self
            .time
            .is_some_and(|(a, b)| entry.timestamp >= a && entry.timestamp <= b);
        let only_since = self.seq_ids.is_empty()
            && self.seq_range.is_none()
            && self.msg_ids.is_empty()
            && self.time.is_none();
        by_seq || by_id || by_time || (only_since && (self.incarnation.is_none() || seq_ok))
    }
}

/// One kept message.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The publisher incarnation.
    pub incarnation: Option<Arc<str>>,
    /// The sequence number (`i`).
    pub i: Option<u64>,
    /// The message id.
    pub msg_id: Option<String>,
    /// Seconds since the epoch.
    pub timestamp: f64,
    /// The body exactly as sent.
    pub body: Bytes,
}

impl Entry {
    /// Indexes a body as sent (fields it lacks stay empty).
    pub fn from_body(body: Bytes) -> Entry {
        #[derive(serde::Deserialize)]
        struct Index {
            incarnation: Option<String>,
            i: Option<u64>,
            msg_id: Option<String>,
            timestamp: Option<f64>,
        }
        let index: Option<Index> = serde_json::from_slice(&body).ok();
        let index = index.unwrap_or(Index {
            incarnation: None,
            i: None,
            msg_id: None,
            timestamp: None,
        });
        Entry {
            incarnation: index.incarnation.map(Arc::from),
            i: index.i,
            msg_id: index.msg_id,
            timestamp: index.timestamp.unwrap_or(0.0),
            body,
        }
    }
}

/// Recent messages, bounded by count and bytes (oldest dropped first),
/// optionally kept on disk too so they survive a restart.
#[derive(Debug)]
pub struct History {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
    /// Sequence numbers of this incarnation are the default for queries.
    own_incarnation: Option<String>,
    store: Option<Store>,
}

/// An append-only file of bodies: each record is the body's length in
/// decimal, a newline, the body, a newline. A record torn by a crash is cut
/// off when the file is opened. The file is rewritten with only the kept
/// entries when it grows past twice the history's limits.
#[derive(Debug)]
struct Store {
    path: std::path::PathBuf,
    file: std::fs::File,
    records: usize,
    bytes: usize,
}

/// Why a replay store cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("replay store {path}: {source}")]
pub struct StoreError {
    path: std::path::PathBuf,
    source: std::io::Error,
}

fn parse_records(data: &[u8]) -> (Vec<Bytes>, usize) {
    let mut bodies = Vec::new();
    let mut offset = 0;
    loop {
        let rest = &data[offset..];
        let Some(newline) = rest.iter().take(21).position(|b| *b == b'\n') else {
            break;
        };
        let Some(length) = std::str::from_utf8(&rest[..newline])
            .ok()
            .and_then(|t| t.parse::<usize>().ok())
        else {
            break;
        };
        let start = newline + 1;
        let Some(end) = start.checked_add(length) else {
            break;
        };
        if rest.len() < end + 1 || rest[end] != b'\n' {
            break;
        }
        bodies.push(Bytes::copy_from_slice(&rest[start..end]));
        offset += end + 1;
    }
    (bodies, offset)
}

impl Store {
    /// Opens (or creates) `path`; returns the bodies it holds.
    fn open(path: &std::path::Path) -> Result<(Store, Vec<Bytes>), StoreError> {
        let error = |source| StoreError {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(error)?;
        }
        let data = match std::fs::read(path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(error(e)),
        };
        let (bodies, good) = parse_records(&data);
        if good < data.len() {
            tracing::warn!(path = %path.display(), cut = data.len() - good, "replay store ended in a torn record; cut it off");
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(error)?;
        file.set_len(good as u64).map_err(error)?;
        let store = Store {
            path: path.to_owned(),
            file,
            records: bodies.len(),
            bytes: good,
        };
        Ok((store, bodies))
    }

    fn append(&mut self, body: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let mut record = Vec::with_capacity(body.len() + 24);
        record.extend_from_slice(body.len().to_string().as_bytes());
        record.push(b'\n');
        record.extend_from_slice(body);
        record.push(b'\n');
        // One write per message: the kernel has it even if this process dies.
        self.file.write_all(&record)?;
        self.records += 1;
        self.bytes += record.len();
        Ok(())
    }

    fn rewrite(&mut self, entries: &VecDeque<Entry>) -> std::io::Result<()> {
        use std::io::Write;
        let temporary = self.path.with_extension("compacting");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&temporary)?);
        let mut bytes = 0;
        for entry in entries {
            let header = format!("{}\n", entry.body.len());
            out.write_all(header.as_bytes())?;
            out.write_all(&entry.body)?;
            out.write_all(b"\n")?;
            bytes += header.len() + entry.body.len() + 1;
        }
        out.flush()?;
        drop(out);
        std::fs::rename(&temporary, &self.path)?;
        self.file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        self.records = entries.len();
        self.bytes = bytes;
        Ok(())
    }
}

impl History {
    /// An empty history.
    pub fn new(max_count: usize, max_bytes: usize, own_incarnation: Option<String>) -> History {
        History {
            entries: VecDeque::new(),
            bytes: 0,
            max_count: max_count.max(1),
            max_bytes: max_bytes.max(1),
            own_incarnation,
            store: None,
        }
    }

    /// A history kept in the file `path` as well, starting with what the
    /// file holds from earlier runs.
    pub fn persistent(
        max_count: usize,
        max_bytes: usize,
        own_incarnation: Option<String>,
        path: &std::path::Path,
    ) -> Result<History, StoreError> {
        let (store, bodies) = Store::open(path)?;
        let mut history = History::new(max_count, max_bytes, own_incarnation);
        for body in bodies {
            history.keep(Entry::from_body(body));
        }
        tracing::info!(path = %path.display(), kept = history.len(), "replay store opened");
        history.store = Some(store);
        Ok(history)
    }

    fn keep(&mut self, entry: Entry) {
        self.bytes += entry.body.len();
        self.entries.push_back(entry);
        while self.entries.len() > self.max_count
            || (self.bytes > self.max_bytes && self.entries.len() > 1)
        {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.body.len();
            }
        }
    }

    /// Keeps `entry`, dropping the oldest as needed (and appends it to the
    /// store, if any).
    pub fn push(&mut self, entry: Entry) {
        if let Some(store) = self.store.as_mut() {
            if let Err(error) = store.append(&entry.body) {
                tracing::error!(path = %store.path.display(), %error, "cannot write the replay store; history is kept in memory only");
                self.store = None;
            }
        }
        self.keep(entry);
        let compact = self
            .store
            .as_ref()
            .is_some_and(|s| s.records > 2 * self.max_count || s.bytes > 2 * self.max_bytes + 1024);
        if compact {
            if let Some(mut store) = self.store.take() {
                match store.rewrite(&self.entries) {
                    Ok(()) => self.store = Some(store),
                    Err(error) => {
                        tracing::error!(path = %store.path.display(), %error, "cannot compact the replay store; history is kept in memory only")
                    }
                }
            }
        }
    }

    /// Makes `incarnation` the default for sequence-number queries.
    pub fn set_own_incarnation(&mut self, incarnation: Option<String>) {
        self.own_incarnation = incarnation;
    }

    /// How many messages are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bodies matching `query`, oldest first.
    pub fn query(&self, query: &Query) -> Vec<Bytes> {
        let limit = query.limit.unwrap_or(usize::MAX);
        self.entries
            .iter()
            .filter(|e| query.matches(e, self.own_incarnation.as_deref()))
            .take(limit)
            .map(|e| e.body.clone())
            .collect()
    }
}

/// A history shared between a publisher (or relay) and its replay server.
pub type SharedHistory = Arc<Mutex<History>>;

/// Answers one request (the server's logic, without the socket).
pub fn answer(history: &SharedHistory, request: &[Bytes]) -> Vec<Bytes> {
    let error = |text: String| vec![Bytes::from(format!("error: '{text}'"))];
    let [frame] = request else {
        return error(format!("expected one frame, got {}", request.len()));
    };
    let query = match Query::parse(frame) {
        Ok(query) => query,
        Err(ReplayError::Query(why)) => return error(why),
        Err(other) => return error(other.to_string()),
    };
    let bodies = match history.lock() {
        Ok(history) => history.query(&query),
        Err(_) => return error("history unavailable".into()),
    };
    if bodies.is_empty() {
        error(NO_MATCH.into())
    } else {
        bodies
    }
}

/// A bound replay service, not yet answering.
pub struct Server {
    socket: RepServer,
}

impl Server {
    /// Binds the replay service's REP socket (so a taken port is an error
    /// at start-up).
    pub async fn bind(
        endpoint: &Endpoint,
        keepalive: &Keepalive,
    ) -> Result<Server, transport::TransportError> {
        Ok(Server {
            socket: RepServer::bind(endpoint, keepalive).await?,
        })
    }

    /// The address bound.
    pub fn endpoint(&self) -> &Endpoint {
        self.socket.endpoint()
    }

    /// Answers queries from `history` until `shutdown` completes.
    pub async fn run(mut self, history: SharedHistory, shutdown: impl Future<Output = ()>) {
        tracing::info!(endpoint = %self.socket.endpoint(), "replay service ready");
        tokio::pin!(shutdown);
        loop {
            let request = tokio::select! {
                _ = &mut shutdown => break,
                request = self.socket.recv() => request,
            };
            let reply = match request {
                Ok(frames) => answer(&history, &frames),
                Err(e) => {
                    tracing::warn!(error = %e, "replay request failed");
                    continue;
                }
            };
            if let Err(e) = self.socket.reply(reply).await {
                tracing::warn!(error = %e, "replay reply failed");
            }
        }
        self.socket.close().await;
    }
}

/// Asks the replay service at `endpoint`; returns the message bodies.
pub async fn fetch(
    endpoint: &Endpoint,
    query: &Query,
    timeout: Duration,
) -> Result<Vec<Bytes>, ReplayError> {
    let frames = transport::request(endpoint, Bytes::from(query.to_json()), timeout)
        .await
        .map_err(|e| ReplayError::Unavailable(e.to_string()))?;
    if let [only] = frames.as_slice() {
        if let Some(text) = only.strip_prefix(b"error: '") {
            let text = String::from_utf8_lossy(text)
                .trim_end_matches('\'')
                .to_owned();
            return if text == NO_MATCH {
                Ok(Vec::new())
            } else {
                Err(ReplayError::Server(text))
            };
        }
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(incarnation: &str, i: u64, ts: f64) -> Entry {
        Entry::from_body(Bytes::from(format!("{{\"incarnation\":\"{incarnation}\",\"i\":{i},\"msg_id\":\"m{i}{incarnation}\",\"timestamp\":{ts}}}")))
    }

    #[test]
    fn fedmsg_keys_or_and_our_keys_narrow() {
        let mut history = History::new(100, 1 << 20, Some("a".into()));
        for i in 1..=5 {
            history.push(entry("a", i, 100.0 + i as f64));
            history.push(entry("b", i, 100.0 + i as f64));
        }
        let q = |text: &str| history.query(&Query::parse(text.as_bytes()).unwrap()).len();
        assert_eq!(q(r#"{"seq_id": 2}"#), 1, "own incarnation by default");
        assert_eq!(q(r#"{"seq_id_range": [2, 4], "incarnation": "b"}"#), 3);
        assert_eq!(
            q(r#"{"seq_ids": [1, 5], "msg_id": "m3b"}"#),
            3,
            "criteria are ORed"
        );
        assert_eq!(q(r#"{"time": [102, 103]}"#), 4);
        assert_eq!(q(r#"{"time": [100, 200], "limit": 3}"#), 3);
        assert_eq!(q(r#"{"seq_id_range": [1, 5], "since": 104}"#), 2);
        assert_eq!(q(r#"{"since": 105}"#), 2);
        assert!(Query::parse(br#"{"sequence": 1}"#)
            .unwrap_err()
            .to_string()
            .contains("unsupported field \"sequence\""));
        assert!(Query::parse(br#"{"seq_id_range": [1]}"#).is_err());
        assert!(Query::parse(br#"[]"#).is_err());
    }

    #[test]
    fn history_is_bounded_by_count_and_bytes() {
        let mut history = History::new(3, 1 << 20, None);
        for i in 1..=10 {
            history.push(entry("a", i, 0.0));
        }
        assert_eq!(history.len(), 3);
        let mut small = History::new(100, 120, None);
        for i in 1..=10 {
            small.push(entry("a", i, 0.0));
        }
        assert!(small.len() < 3, "{}", small.len());
    }

    #[test]
    fn a_persistent_history_survives_reopening_and_a_torn_record() {
        let dir = std::env::temp_dir().join(format!("fedmsg-replay-store-{}", std::process::id()));
        let path = dir.join("svc.replay");
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut history = History::persistent(5, 1 << 20, None, &path).unwrap();
            for i in 1..=12 {
                history.push(entry("a", i, i as f64));
            }
            assert_eq!(history.len(), 5);
        }
        // A crash in the middle of a record.
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"300\n{\"i\":99")
            .unwrap();
        let mut history = History::persistent(5, 1 << 20, None, &path).unwrap();
        let kept: Vec<u64> = history.entries.iter().filter_map(|e| e.i).collect();
        assert_eq!(kept, [8, 9, 10, 11, 12]);
        history.push(entry("a", 13, 13.0));
        let reopened = History::persistent(5, 1 << 20, None, &path).unwrap();
        let kept: Vec<u64> = reopened.entries.iter().filter_map(|e| e.i).collect();
        assert_eq!(
            kept,
            [9, 10, 11, 12, 13],
            "the torn record was cut, the new one appended"
        );
        assert!(
            std::fs::metadata(&path).unwrap().len() < 5 * 200,
            "compacted"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn answers_errors_as_fedmsg_does() {
        let history = Arc::new(Mutex::new(History::new(10, 1 << 20, None)));
        let reply = answer(&history, &[Bytes::from_static(br#"{"seq_id": 1}"#)]);
        assert_eq!(reply, vec![Bytes::from(format!("error: '{NO_MATCH}'"))]);
        let reply = answer(&history, &[Bytes::from_static(b"not json")]);
        assert!(reply[0].starts_with(b"error: 'invalid JSON"));
    }
}

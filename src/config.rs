//! Configuration: fedmsg's keys in TOML, layered, validated once.
//!
//! Two stages, as the rest of the crate expects:
//!
//! 1. **Raw layers.** Each source is read into a TOML table and checked on
//!    its own, so an error names the source (file, environment variable or
//!    flag), the key and the value. Layers, later wins, tables merged
//!    recursively, `[[meta]]` rules added up with a later layer's first:
//!    built-in defaults (`endpoints.example.toml`, embedded) →
//!    `/etc/fedmsg.d/*.toml` (sorted) → `$XDG_CONFIG_HOME/fedmsg/*.toml`
//!    (default `~/.config/fedmsg`) → `./fedmsg.d/*.toml` → `FEDMSG_CONFIG`
//!    (a file or a directory) → `FEDMSG_<KEY>` environment variables →
//!    command-line flags. `--config FILE` replaces every file layer with that
//!    one file. The built-in `endpoints` only count while no file defines
//!    `endpoints`, so a deployment never inherits phantom local endpoints.
//! 2. **Resolution.** The merged table becomes a [`RawConfig`] (a serde
//!    mirror of the TOML with `deny_unknown_fields`), then a [`Config`] with
//!    parsed addresses and durations, before any socket opens.

use crate::endpoint::Endpoint;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::{Table, Value};

/// The built-in defaults: the documented example file, embedded.
pub const DEFAULTS_TOML: &str = include_str!("../endpoints.example.toml");

/// The name of the built-in defaults layer in messages.
const BUILTIN: &str = "built-in defaults";

/// Where a configuration value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The embedded `endpoints.example.toml`.
    Builtin,
    /// A TOML file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Builtin => f.write_str(BUILTIN),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// A configuration problem; every variant names where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or directory could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not valid TOML.
    #[error("{source_name}: invalid TOML: {message}")]
    Syntax {
        /// Where the text came from.
        source_name: Source,
        /// The parser's message, on one line.
        message: String,
    },
    /// A key fedmsg does not know.
    #[error("{source_name}: unknown key `{key}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownKey {
        /// Where the key was found.
        source_name: Source,
        /// The unknown key.
        key: String,
        /// The closest known key, if any is close.
        suggestion: Option<String>,
    },
    /// A known key with a value of the wrong type or form.
    #[error("{source_name}: key `{key}` has invalid value {value}: {reason}")]
    Invalid {
        /// Where the value was found.
        source_name: Source,
        /// The dotted key.
        key: String,
        /// The offending value, as TOML.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Every top-level key this crate understands (fedmsg's names, plus a few
/// of ours). Kept in sync with [`RawConfig`] by a unit test.
pub const KNOWN_KEYS: &[&str] = &[
    "topic_prefix",
    "environment",
    "name",
    "active",
    "mute",
    "endpoints",
    "relay_inbound",
    "replay_endpoints",
    "replay_history",
    "replay_history_bytes",
    "replay_store",
    "replay_limit",
    "replay_timeout",
    "sign_messages",
    "validate_signatures",
    "crypto_backend",
    "crypto_validate_backends",
    "ssldir",
    "cert_prefix",
    "certnames",
    "ca_cert_location",
    "crl_location",
    "routing_policy",
    "routing_nitpicky",
    "crl_expired_policy",
    "high_water_mark",
    "io_threads",
    "post_init_sleep",
    "timeout",
    "zmq_enabled",
    "zmq_linger",
    "zmq_tcp_keepalive",
    "zmq_tcp_keepalive_cnt",
    "zmq_tcp_keepalive_idle",
    "zmq_tcp_keepalive_intvl",
    "zmq_reconnect_ivl",
    "zmq_reconnect_ivl_max",
    "max_message_size",
    "gateway_host",
    "gateway_port",
    "gateway_high_water_mark",
    "gateway_max_readers",
    "metrics",
    "meta",
];

/// Keys whose value is a table with free-form keys (checked entry by entry).
const MAP_KEYS: &[&str] = &[
    "endpoints",
    "replay_endpoints",
    "certnames",
    "routing_policy",
    "metrics",
];

/// One address or a list of addresses, as fedmsg "listifies" them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Addresses(pub Vec<String>);

impl<'de> Deserialize<'de> for Addresses {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Addresses;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address string or a list of address strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Addresses, E> {
                Ok(Addresses(vec![v.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Addresses, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    out.push(item);
                }
                Ok(Addresses(out))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The TOML, mirrored field by field; every key optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each key is documented in endpoints.example.toml
pub struct RawConfig {
    pub topic_prefix: Option<String>,
    pub environment: Option<String>,
    pub name: Option<String>,
    pub active: Option<bool>,
    pub mute: Option<bool>,
    pub endpoints: Option<BTreeMap<String, Addresses>>,
    pub relay_inbound: Option<Addresses>,
    pub replay_endpoints: Option<BTreeMap<String, String>>,
    pub replay_history: Option<u64>,
    pub replay_history_bytes: Option<u64>,
    pub replay_store: Option<String>,
    pub replay_limit: Option<u64>,
    pub replay_timeout: Option<u64>,
    pub sign_messages: Option<bool>,
    pub validate_signatures: Option<bool>,
    pub crypto_backend: Option<String>,
    pub crypto_validate_backends: Option<Vec<String>>,
    pub ssldir: Option<String>,
    pub cert_prefix: Option<String>,
    pub certnames: Option<BTreeMap<String, String>>,
    pub ca_cert_location: Option<String>,
    pub crl_location: Option<String>,
    pub routing_policy: Option<BTreeMap<String, Vec<String>>>,
    pub routing_nitpicky: Option<bool>,
    pub crl_expired_policy: Option<String>,
    pub high_water_mark: Option<u64>,
    pub io_threads: Option<u64>,
    pub post_init_sleep: Option<f64>,
    pub timeout: Option<f64>,
    pub zmq_enabled: Option<bool>,
    pub zmq_linger: Option<u64>,
    pub zmq_tcp_keepalive: Option<u64>,
    pub zmq_tcp_keepalive_cnt: Option<u64>,
    pub zmq_tcp_keepalive_idle: Option<u64>,
    pub zmq_tcp_keepalive_intvl: Option<u64>,
    pub zmq_reconnect_ivl: Option<u64>,
    pub zmq_reconnect_ivl_max: Option<u64>,
    pub max_message_size: Option<u64>,
    pub gateway_host: Option<String>,
    pub gateway_port: Option<u16>,
    pub gateway_high_water_mark: Option<u64>,
    pub gateway_max_readers: Option<u64>,
    pub metrics: Option<BTreeMap<String, String>>,
    pub meta: Option<Vec<crate::meta::RawRule>>,
}

/// Where and how `fedmsg-gateway` serves outside readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Address to bind (`*` is every interface).
    pub host: String,
    /// Port to bind (fedmsg's `fedmsg.consumers.gateway.port`).
    pub port: u16,
    /// Most messages waiting for one reader before its messages are dropped.
    pub high_water_mark: usize,
    /// Most readers connected at once.
    pub max_readers: usize,
}

/// TCP keepalive settings for sockets (fedmsg's `zmq_tcp_keepalive*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keepalive {
    /// Whether keepalive probes are sent.
    pub enabled: bool,
    /// Probes before the connection is declared dead.
    pub count: u32,
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
}

/// The resolved configuration every entry point takes.
#[derive(Debug, Clone)]
pub struct Config {
    /// First part of every topic, e.g. `org.fedoraproject`.
    pub topic_prefix: String,
    /// Second part of every topic: `dev`, `stg`, `prod`...
    pub environment: String,
    /// The publisher name (`<program>.<host>`), when set explicitly.
    pub name: Option<String>,
    /// Publish by connecting to `relay_inbound` instead of binding.
    pub active: bool,
    /// Create no publisher.
    pub mute: bool,
    /// Publisher name → the addresses it may bind; subscribers connect to all.
    pub endpoints: BTreeMap<String, Vec<Endpoint>>,
    /// Where the relay listens for active publishers.
    pub relay_inbound: Vec<Endpoint>,
    /// Publisher name → its replay service.
    pub replay_endpoints: BTreeMap<String, Endpoint>,
    /// Messages a publisher (or the relay) keeps for replay.
    pub replay_history: usize,
    /// Bytes a publisher (or the relay) keeps for replay.
    pub replay_history_bytes: usize,
    /// A file to keep the replay history in across restarts (`{name}` is
    /// replaced by the publisher name); `None` keeps it in memory only.
    pub replay_store: Option<String>,
    /// Most messages a reader fetches to fill one gap or to resume.
    pub replay_limit: usize,
    /// How long a reader waits for a replay service.
    pub replay_timeout: Duration,
    /// Sign outgoing messages.
    pub sign_messages: bool,
    /// Validate incoming messages.
    pub validate_signatures: bool,
    /// Signing scheme.
    pub crypto_backend: String,
    /// Schemes accepted when validating.
    pub crypto_validate_backends: Vec<String>,
    /// Directory with `<certname>.crt` / `.key`.
    pub ssldir: PathBuf,
    /// Prefix for the certname of command-line publishers (`shell`).
    pub cert_prefix: Option<String>,
    /// Publisher name → certificate file prefix.
    pub certnames: BTreeMap<String, String>,
    /// The CA certificate.
    pub ca_cert_location: String,
    /// The CRL; `None` when disabled (empty string in TOML).
    pub crl_location: Option<String>,
    /// Full topic → certificate CNs allowed to publish it.
    pub routing_policy: BTreeMap<String, Vec<String>>,
    /// Refuse topics missing from `routing_policy`.
    pub routing_nitpicky: bool,
    /// What validation does when the CRL is past its `nextUpdate`.
    pub crl_expired: crate::crypto::CrlExpiredPolicy,
    /// Queue limit per peer (0 = the transport's default).
    pub high_water_mark: u64,
    /// How long a connecting publisher waits to deliver before giving up.
    pub linger: Duration,
    /// TCP keepalive.
    pub keepalive: Keepalive,
    /// First reconnect interval.
    pub reconnect_ivl: Duration,
    /// Largest reconnect interval (the backoff cap).
    pub reconnect_ivl_max: Duration,
    /// Timeout used by command-line tools, in seconds.
    pub timeout: Duration,
    /// Largest accepted body, in bytes.
    pub max_message_size: usize,
    /// `fedmsg-gateway`'s outward port and limits.
    pub gateway: GatewayConfig,
    /// Service name (`relay`, `signing_relay`, `gateway`, `trigger`, a
    /// hub's name) → the loopback address its `/metrics` and `/health` are
    /// served on.
    pub metrics: BTreeMap<String, std::net::SocketAddr>,
    /// The `[[meta]]` rules for summaries, in the order they are tried:
    /// later layers' first, the built-in ones last.
    pub meta: Vec<crate::meta::Rule>,
    /// The merged TOML, for `fedmsg-config`.
    pub merged: Table,
    /// The sources that were read, in order.
    pub sources: Vec<Source>,
}

/// One checked layer.
#[derive(Debug, Clone)]
struct Layer {
    source: Source,
    table: Table,
}

/// Builds a [`Config`] from the standard layers; every location can be
/// overridden, so tests and tools can load from anywhere.
#[derive(Debug, Clone)]
pub struct Loader {
    system_dir: PathBuf,
    user_dir: Option<PathBuf>,
    local_dir: PathBuf,
    env: BTreeMap<String, String>,
    explicit_file: Option<PathBuf>,
    flags: Vec<(String, String, Value)>,
}

impl Default for Loader {
    fn default() -> Self {
        Self::new()
    }
}

impl Loader {
    /// The standard locations, read from this process's environment.
    pub fn new() -> Self {
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("FEDMSG_") || k == "XDG_CONFIG_HOME" || k == "HOME")
            .collect();
        let user_dir = env
            .get("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| env.get("HOME").map(|h| Path::new(h).join(".config")))
            .map(|base| base.join("fedmsg"));
        Loader {
            system_dir: PathBuf::from("/etc/fedmsg.d"),
            user_dir,
            local_dir: PathBuf::from("fedmsg.d"),
            env,
            explicit_file: None,
            flags: Vec::new(),
        }
    }

    /// Reads nothing but the built-in defaults and what is set explicitly.
    pub fn isolated() -> Self {
        Loader {
            system_dir: PathBuf::new(),
            user_dir: None,
            local_dir: PathBuf::new(),
            env: BTreeMap::new(),
            explicit_file: None,
            flags: Vec::new(),
        }
    }

    /// Replaces the system directory (`/etc/fedmsg.d`).
    pub fn system_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.system_dir = dir.into();
        self
    }

    /// Replaces the user directory (`$XDG_CONFIG_HOME/fedmsg`).
    pub fn user_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.user_dir = dir;
        self
    }

    /// Replaces the local directory (`./fedmsg.d`).
    pub fn local_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.local_dir = dir.into();
        self
    }

    /// Replaces the environment (only `FEDMSG_*` variables are used).
    pub fn env(mut self, env: BTreeMap<String, String>) -> Self {
        self.env = env;
        self
    }

    /// `--config FILE`: read only this file over the built-in defaults.
    pub fn file(mut self, path: Option<PathBuf>) -> Self {
        self.explicit_file = path;
        self
    }

    /// A command-line override of `key` (a dotted key), applied last.
    pub fn flag(mut self, flag: &str, key: &str, value: impl Into<Value>) -> Self {
        self.flags
            .push((flag.to_owned(), key.to_owned(), value.into()));
        self
    }

    /// Reads, checks, merges and resolves every layer.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let defaults = check_text(Source::Builtin, DEFAULTS_TOML)?;
        let mut files = Vec::new();
        match &self.explicit_file {
            Some(path) => files.push(read_file(path)?),
            None => {
                for dir in [
                    Some(&self.system_dir),
                    self.user_dir.as_ref(),
                    Some(&self.local_dir),
                ]
                .into_iter()
                .flatten()
                {
                    if !dir.as_os_str().is_empty() {
                        files.extend(read_dir(dir)?);
                    }
                }
                if let Some(location) = self.env.get("FEDMSG_CONFIG").filter(|v| !v.is_empty()) {
                    let path = PathBuf::from(location);
                    if path.is_dir() {
                        files.extend(read_dir(&path)?);
                    } else {
                        files.push(read_file(&path)?);
                    }
                }
            }
        }
        let mut overrides = Vec::new();
        for (name, text) in &self.env {
            let Some(key) = name.strip_prefix("FEDMSG_") else {
                continue;
            };
            // FEDMSG_MESSAGE_* describe the message fedmsg-trigger runs a
            // command for; they are not configuration.
            if key == "CONFIG" || key.starts_with("MESSAGE_") {
                continue;
            }
            let key = key.to_ascii_lowercase();
            if !KNOWN_KEYS.contains(&key.as_str()) {
                // Other programs may use the FEDMSG_ prefix too: say so, but
                // do not refuse to start.
                tracing::warn!(variable = %name, suggestion = ?closest(&key, KNOWN_KEYS), "ignoring environment variable that names no configuration key");
                continue;
            }
            overrides.push(env_layer(name, &key, text)?);
        }
        for (flag, key, value) in &self.flags {
            let mut table = Table::new();
            insert_dotted(&mut table, key, value.clone());
            overrides.push(check_table(Source::Flag(flag.clone()), table)?);
        }
        assemble(defaults, files, overrides)
    }
}

/// Loads the configuration from the standard locations.
pub fn load() -> Result<Config, ConfigError> {
    Loader::new().load()
}

fn assemble(
    defaults: Layer,
    files: Vec<Layer>,
    overrides: Vec<Layer>,
) -> Result<Config, ConfigError> {
    let mut merged = defaults.table.clone();
    let files_define_endpoints = files.iter().any(|l| l.table.contains_key("endpoints"));
    if files_define_endpoints {
        merged.remove("endpoints");
    }
    let mut sources = vec![Source::Builtin];
    for layer in files.into_iter().chain(overrides) {
        merge_layer(&mut merged, layer.table);
        sources.push(layer.source);
    }
    let raw =
        RawConfig::deserialize(Value::Table(merged.clone())).map_err(|e| ConfigError::Invalid {
            source_name: Source::Builtin,
            key: "(merged)".into(),
            value: String::new(),
            reason: e.to_string(),
        })?;
    resolve(raw, merged, sources)
}

/// Merges one layer into the layers below it: tables key by key, `meta`
/// rules put before the earlier layers' rules, anything else replaced.
fn merge_layer(base: &mut Table, mut over: Table) {
    if let (Some(Value::Array(earlier)), Some(Value::Array(rules))) =
        (base.get("meta"), over.get_mut("meta"))
    {
        rules.extend(earlier.iter().cloned());
    }
    merge(base, over);
}

/// Recursively merges `over` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(existing)), Value::Table(incoming)) => merge(existing, incoming),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn insert_dotted(table: &mut Table, key: &str, value: Value) {
    match key.split_once('.') {
        Some((head, rest)) => {
            let entry = table
                .entry(head.to_owned())
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(inner) = entry {
                insert_dotted(inner, rest, value);
            }
        }
        None => {
            table.insert(key.to_owned(), value);
        }
    }
}

fn read_file(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    check_text(Source::File(path.to_owned()), &text)
}

/// Reads `dir/*.toml` in sorted order; a missing directory is no error.
fn read_dir(dir: &Path) -> Result<Vec<Layer>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    paths.iter().map(|p| read_file(p)).collect()
}

fn check_text(source: Source, text: &str) -> Result<Layer, ConfigError> {
    let table: Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        source_name: source.clone(),
        message: one_line(&e.to_string()),
    })?;
    check_table(source, table)
}

fn env_layer(name: &str, key: &str, text: &str) -> Result<Layer, ConfigError> {
    let source = Source::Env(name.to_owned());
    // A TOML literal (`true`, `5`, `["a", "b"]`) if it reads as one and fits
    // the key, else the text as a string.
    let parsed = toml::from_str::<Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    if let Some(value) = parsed {
        let mut table = Table::new();
        table.insert(key.to_owned(), value);
        if let Ok(layer) = check_table(source.clone(), table) {
            return Ok(layer);
        }
    }
    let mut table = Table::new();
    table.insert(key.to_owned(), Value::String(text.to_owned()));
    check_table(source, table)
}

/// Checks every key of one layer, so errors name this layer's source.
fn check_table(source: Source, table: Table) -> Result<Layer, ConfigError> {
    for (key, value) in &table {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            return Err(ConfigError::UnknownKey {
                source_name: source.clone(),
                key: key.clone(),
                suggestion: closest(key, KNOWN_KEYS),
            });
        }
        match (MAP_KEYS.contains(&key.as_str()), value) {
            (true, Value::Table(entries)) => {
                for (sub, item) in entries {
                    let mut inner = Table::new();
                    inner.insert(sub.clone(), item.clone());
                    check_value(
                        &source,
                        key,
                        &format!("{key}.{sub}"),
                        Value::Table(inner),
                        item,
                    )?;
                }
            }
            (false, Value::Array(rules)) if key == "meta" => {
                for (i, rule) in rules.iter().enumerate() {
                    check_value(
                        &source,
                        key,
                        &format!("meta[{i}]"),
                        Value::Array(vec![rule.clone()]),
                        rule,
                    )?;
                }
            }
            _ => check_value(&source, key, key, value.clone(), value)?,
        }
    }
    Ok(Layer { source, table })
}

fn check_value(
    source: &Source,
    key: &str,
    shown_key: &str,
    wrapped: Value,
    shown: &Value,
) -> Result<(), ConfigError> {
    let invalid = |reason: String, value: &Value| ConfigError::Invalid {
        source_name: source.clone(),
        key: shown_key.to_owned(),
        value: show(value),
        reason,
    };
    let mut single = Table::new();
    single.insert(key.to_owned(), wrapped);
    let raw = RawConfig::deserialize(Value::Table(single))
        .map_err(|e| invalid(e.message().to_owned(), shown))?;
    // Addresses are parsed here too, so the error names this layer.
    let mut addresses: Vec<(String, &String)> = Vec::new();
    if let Some(endpoints) = &raw.endpoints {
        for (name, list) in endpoints {
            addresses.extend(
                list.0
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (format!("endpoints.{name}[{i}]"), a)),
            );
        }
    }
    if let Some(list) = &raw.relay_inbound {
        addresses.extend(
            list.0
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("relay_inbound[{i}]"), a)),
        );
    }
    if let Some(map) = &raw.replay_endpoints {
        addresses.extend(
            map.iter()
                .map(|(name, a)| (format!("replay_endpoints.{name}"), a)),
        );
    }
    for (key, address) in addresses {
        if let Err(e) = address.parse::<Endpoint>() {
            return Err(ConfigError::Invalid {
                source_name: source.clone(),
                key,
                value: show(&Value::String(address.clone())),
                reason: e.to_string(),
            });
        }
    }
    for rule in raw.meta.iter().flatten() {
        crate::meta::Rule::from_raw(rule).map_err(|e| ConfigError::Invalid {
            source_name: source.clone(),
            key: format!("{shown_key}.{}", e.field),
            value: show(&Value::String(e.value)),
            reason: e.reason,
        })?;
    }
    if let Some(map) = &raw.metrics {
        for address in map.values() {
            match address.parse::<std::net::SocketAddr>() {
                Ok(a) if a.ip().is_loopback() => {}
                Ok(_) => {
                    return Err(invalid(
                        "a metrics address must be loopback (127.0.0.1:PORT or [::1]:PORT)".into(),
                        shown,
                    ))
                }
                Err(_) => {
                    return Err(invalid(
                        "a metrics address is HOST:PORT with a numeric loopback host, e.g. 127.0.0.1:9941".into(),
                        shown,
                    ))
                }
            }
        }
    }
    if let Some(policy) = &raw.crl_expired_policy {
        if policy != "reject" && policy != "accept" {
            return Err(invalid(
                format!("crl_expired_policy must be \"reject\" or \"accept\", not {policy:?}"),
                shown,
            ));
        }
    }
    if let Some(backend) = &raw.crypto_backend {
        check_backend(backend).map_err(|r| invalid(r, shown))?;
    }
    if let Some(list) = &raw.crypto_validate_backends {
        for backend in list {
            check_backend(backend).map_err(|r| invalid(r, shown))?;
        }
    }
    for (name, value) in [
        ("zmq_reconnect_ivl", raw.zmq_reconnect_ivl),
        ("zmq_reconnect_ivl_max", raw.zmq_reconnect_ivl_max),
    ] {
        if value == Some(0) {
            return Err(invalid(
                format!("{name} must be at least 1 millisecond"),
                shown,
            ));
        }
    }
    if raw.max_message_size == Some(0) {
        return Err(invalid("max_message_size must be positive".into(), shown));
    }
    for (name, value) in [
        ("gateway_high_water_mark", raw.gateway_high_water_mark),
        ("gateway_max_readers", raw.gateway_max_readers),
    ] {
        if value == Some(0) {
            return Err(invalid(format!("{name} must be at least 1"), shown));
        }
    }
    for (name, value) in [
        ("post_init_sleep", raw.post_init_sleep),
        ("timeout", raw.timeout),
    ] {
        if value.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
            return Err(invalid(
                format!("{name} must be a non-negative number of seconds"),
                shown,
            ));
        }
    }
    Ok(())
}

fn check_backend(name: &str) -> Result<(), String> {
    match name {
        "x509" | "ed25519" => Ok(()),
        other => Err(format!(
            "unknown crypto backend {other:?}: expected \"x509\" or \"ed25519\""
        )),
    }
}

fn show(value: &Value) -> String {
    let text = match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if text.len() > 80 {
        format!(
            "{}…",
            &text[..text
                .char_indices()
                .nth(77)
                .map(|(i, _)| i)
                .unwrap_or(text.len())]
        )
    } else {
        text
    }
}

fn one_line(message: &str) -> String {
    message
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect::<Vec<_>>()
        .join(" ")
}

/// The known key closest to `key` by edit distance, if it is close enough.
fn closest(key: &str, known: &[&str]) -> Option<String> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= (k.len().max(key.len()) / 3).max(2))
        .min()
        .map(|(_, k)| k.to_owned())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

fn resolve(raw: RawConfig, merged: Table, sources: Vec<Source>) -> Result<Config, ConfigError> {
    let parse_list = |list: &Addresses| -> Vec<Endpoint> {
        list.0.iter().filter_map(|a| a.parse().ok()).collect()
    };
    let ms = |v: Option<u64>, default: u64| Duration::from_millis(v.unwrap_or(default));
    let crypto_backend = raw.crypto_backend.unwrap_or_else(|| "x509".into());
    let crypto_validate_backends = match raw.crypto_validate_backends {
        Some(list) if !list.is_empty() => list,
        _ => vec![crypto_backend.clone()],
    };
    let reconnect_ivl = ms(raw.zmq_reconnect_ivl, 100);
    let reconnect_ivl_max = ms(raw.zmq_reconnect_ivl_max, 1000).max(reconnect_ivl);
    Ok(Config {
        topic_prefix: raw
            .topic_prefix
            .unwrap_or_else(|| "org.fedoraproject".into()),
        environment: raw.environment.unwrap_or_else(|| "dev".into()),
        name: raw.name.filter(|n| !n.is_empty()),
        active: raw.active.unwrap_or(false),
        mute: raw.mute.unwrap_or(false),
        endpoints: raw
            .endpoints
            .unwrap_or_default()
            .iter()
            .map(|(name, list)| (name.clone(), parse_list(list)))
            .collect(),
        relay_inbound: raw
            .relay_inbound
            .as_ref()
            .map(parse_list)
            .unwrap_or_default(),
        replay_endpoints: raw
            .replay_endpoints
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, a)| a.parse().ok().map(|e| (name, e)))
            .collect(),
        replay_history: raw.replay_history.unwrap_or(50_000).min(usize::MAX as u64) as usize,
        replay_history_bytes: raw
            .replay_history_bytes
            .unwrap_or(64 << 20)
            .min(usize::MAX as u64) as usize,
        replay_store: raw.replay_store.filter(|s| !s.is_empty()),
        replay_limit: raw.replay_limit.unwrap_or(10_000).min(usize::MAX as u64) as usize,
        replay_timeout: Duration::from_millis(raw.replay_timeout.unwrap_or(2000)),
        sign_messages: raw.sign_messages.unwrap_or(false),
        validate_signatures: raw.validate_signatures.unwrap_or(false),
        crypto_backend,
        crypto_validate_backends,
        ssldir: PathBuf::from(raw.ssldir.unwrap_or_else(|| "/etc/pki/fedmsg".into())),
        cert_prefix: raw.cert_prefix,
        certnames: raw.certnames.unwrap_or_default(),
        ca_cert_location: raw
            .ca_cert_location
            .unwrap_or_else(|| "/etc/pki/fedmsg/ca.crt".into()),
        crl_location: raw.crl_location.filter(|s| !s.is_empty()),
        routing_policy: raw.routing_policy.unwrap_or_default(),
        routing_nitpicky: raw.routing_nitpicky.unwrap_or(false),
        crl_expired: match raw.crl_expired_policy.as_deref() {
            Some("accept") => crate::crypto::CrlExpiredPolicy::Accept,
            _ => crate::crypto::CrlExpiredPolicy::Reject,
        },
        high_water_mark: raw.high_water_mark.unwrap_or(0),
        linger: ms(raw.zmq_linger, 1000),
        keepalive: Keepalive {
            enabled: raw.zmq_tcp_keepalive.unwrap_or(1) != 0,
            count: raw.zmq_tcp_keepalive_cnt.unwrap_or(3).min(u32::MAX as u64) as u32,
            idle: Duration::from_secs(raw.zmq_tcp_keepalive_idle.unwrap_or(60)),
            interval: Duration::from_secs(raw.zmq_tcp_keepalive_intvl.unwrap_or(5)),
        },
        reconnect_ivl,
        reconnect_ivl_max,
        timeout: Duration::from_secs_f64(raw.timeout.unwrap_or(2.0)),
        max_message_size: raw
            .max_message_size
            .unwrap_or(1 << 20)
            .min(usize::MAX as u64) as usize,
        gateway: GatewayConfig {
            host: raw.gateway_host.unwrap_or_else(|| "*".into()),
            port: raw.gateway_port.unwrap_or(9940),
            high_water_mark: raw
                .gateway_high_water_mark
                .unwrap_or(10_000)
                .min(usize::MAX as u64) as usize,
            max_readers: raw
                .gateway_max_readers
                .unwrap_or(1_000)
                .min(usize::MAX as u64) as usize,
        },
        metrics: raw
            .metrics
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, a)| a.parse().ok().map(|a| (name, a)))
            .collect(),
        meta: raw
            .meta
            .unwrap_or_default()
            .iter()
            .filter_map(|rule| crate::meta::Rule::from_raw(rule).ok())
            .collect(),
        merged,
        sources,
    })
}

impl Config {
    /// The replay history for publisher `name`: in `replay_store` (with
    /// `{name}` replaced) if set, else in memory.
    pub fn replay_history_for(
        &self,
        name: &str,
        own_incarnation: Option<String>,
    ) -> Result<crate::replay::History, crate::replay::StoreError> {
        match &self.replay_store {
            Some(pattern) => {
                let path = PathBuf::from(pattern.replace("{name}", name));
                crate::replay::History::persistent(
                    self.replay_history,
                    self.replay_history_bytes,
                    own_incarnation,
                    &path,
                )
            }
            None => Ok(crate::replay::History::new(
                self.replay_history,
                self.replay_history_bytes,
                own_incarnation,
            )),
        }
    }

    /// The configuration from the built-in defaults only.
    pub fn builtin() -> Result<Config, ConfigError> {
        Loader::isolated().load()
    }

    /// Looks up a dotted key (`endpoints.relay_outbound`) in the merged TOML.
    /// Keys that contain dots themselves (`endpoints.bodhi.app01`) are found
    /// too: the longest key that matches wins.
    pub fn query(&self, dotted: &str) -> Option<&Value> {
        fn walk<'a>(table: &'a Table, parts: &[&str]) -> Option<&'a Value> {
            for take in (1..=parts.len()).rev() {
                let Some(value) = table.get(&parts[..take].join(".")) else {
                    continue;
                };
                let rest = &parts[take..];
                if rest.is_empty() {
                    return Some(value);
                }
                let found = match value {
                    Value::Table(inner) => walk(inner, rest),
                    Value::Array(items) if rest.len() == 1 => {
                        rest[0].parse::<usize>().ok().and_then(|i| items.get(i))
                    }
                    _ => None,
                };
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        let parts: Vec<&str> = dotted.split('.').collect();
        walk(&self.merged, &parts)
    }

    /// Every (name, endpoint) a subscriber connects to: all `endpoints`
    /// except the `relay_inbound` key, as fedmsg does.
    pub fn subscribe_endpoints(&self) -> Vec<(String, Endpoint)> {
        // An address listed twice is connected to once, under its first name.
        let mut seen = std::collections::HashSet::new();
        self.endpoints
            .iter()
            .filter(|(name, _)| name.as_str() != "relay_inbound")
            .flat_map(|(name, list)| list.iter().map(move |e| (name.clone(), e.clone())))
            .filter(|(_, endpoint)| seen.insert(endpoint.to_string()))
            .collect()
    }
}

/// A TOML value as JSON (fedmsg-config prints JSON, which PHP and shell
/// tools read).
pub fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Integer(i) => serde_json::Value::from(*i),
        Value::Float(f) => crate::canonical::float_value(*f),
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Table(t) => {
            serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

/// The whole merged configuration as indented JSON.
pub fn render_json(table: &Table) -> String {
    let mut text = crate::canonical::to_pretty(&to_json(&Value::Table(table.clone())), None);
    text.push('\n');
    text
}

/// One queried value as fedmsg-config prints it: a list one item per line,
/// a string raw, anything else as indented JSON.
pub fn render_query(value: &Value) -> String {
    let one = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => crate::canonical::to_pretty(&to_json(other), None),
    };
    match value {
        Value::Array(items) => items.iter().map(|i| one(i) + "\n").collect(),
        other => one(other) + "\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_match_raw_config() {
        for key in KNOWN_KEYS {
            let mut table = Table::new();
            table.insert((*key).to_owned(), Value::Boolean(true));
            let err = RawConfig::deserialize(Value::Table(table))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                !err.contains("unknown field"),
                "{key} is not a RawConfig field: {err}"
            );
        }
    }

    #[test]
    fn defaults_document_every_key() {
        for key in KNOWN_KEYS {
            assert!(
                DEFAULTS_TOML.lines().any(|l| l
                    .trim_start_matches(['#', ' '])
                    .starts_with(&format!("{key} ="))
                    || l.trim() == format!("[{key}]")
                    || l.trim() == format!("[[{key}]]")),
                "endpoints.example.toml does not document `{key}`"
            );
        }
    }

    #[test]
    fn suggestions_find_typos() {
        assert_eq!(
            closest("topic_prefx", KNOWN_KEYS).as_deref(),
            Some("topic_prefix")
        );
        assert_eq!(
            closest("enviroment", KNOWN_KEYS).as_deref(),
            Some("environment")
        );
        assert_eq!(closest("zzzzzz", KNOWN_KEYS), None);
    }
}

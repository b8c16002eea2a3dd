//! fedmsg-rs: a brokerless, federated message bus over ZeroMQ,
//! wire-compatible with Python fedmsg.
//!
//! Every publishing process binds a PUB socket listed under its name
//! (`<program>.<host>`) in a shared endpoints configuration; subscribers
//! connect to every endpoint and filter by topic prefix. Messages are two
//! frames, `[topic, body]`, where the body is a JSON envelope in Python's
//! canonical form.
//!
//! ```no_run
//! # fn main() -> Result<(), fedmsg::PublishError> {
//! // From synchronous code: one call, a process-wide publisher.
//! fedmsg::publish("update", "bodhi", &serde_json::json!({"package": "kernel"}))?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! * [`config`]: fedmsg's keys in TOML, layered and validated once.
//! * [`topic`], [`endpoint`]: the validated newtypes at the boundary.
//! * [`canonical`]: Python-exact JSON (the bytes fedmsg signs and sends).
//! * [`envelope`]: the message body and the decoding of received frames.
//! * [`crypto`]: signing (fedmsg's X.509/RSA and Ed25519) and validation
//!   against a CA, a CRL and a routing policy.
//! * [`publish`]: the [`Publisher`] handle and the blocking [`publish()`].
//! * [`subscribe`]: the [`Subscription`] stream over every endpoint.
//! * [`relay`]: `fedmsg-relay`, active publishers in, subscribers out.
//! * [`gateway`]: `fedmsg-gateway`, the whole bus out on one port for
//!   outside readers, with a high-water mark and a reader cap.
//! * [`consumer`], [`hub`]: code that acts on messages, and the hub that
//!   runs many consumers with bounded queues, isolating failures.
//! * [`replay`]: kept history and fedmsg's REQ/REP replay protocol.
//! * [`sequence`]: per-incarnation sequence tracking, gaps and duplicates.
//! * [`meta`], [`template`]: summaries of messages from TOML rules, and
//!   the templates they and `fedmsg-tail --format` are written in.
//! * [`tail`], [`logger`], [`announce`], [`trigger`], [`verify`],
//!   [`bench`]: the command-line tools' behaviour.
//! * [`metrics`]: `/metrics` and `/health` for the long-running commands;
//!   [`check`]: `fedmsg-check`, which asks them.
//! * [`cli`]: flags, logging and exit codes shared by the binaries.
//! * `transport` (private): sockets. Our own ZMTP 3.0 for subscribers and
//!   bound publishers; the only module that touches the `zeromq` crate.

#![warn(missing_docs)]

pub mod announce;
pub mod bench;
pub mod canonical;
pub mod check;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod crypto;
pub mod endpoint;
pub mod envelope;
pub mod gateway;
pub mod hub;
pub mod logger;
pub mod meta;
pub mod metrics;
pub mod publish;
pub mod relay;
pub mod replay;
pub mod sequence;
pub mod subscribe;
pub mod tail;
pub mod template;
pub mod topic;
mod transport;
pub mod trigger;
pub mod verify;

pub use config::{Config, ConfigError, Loader};
pub use endpoint::Endpoint;
pub use envelope::{DecodeError, Message};
pub use publish::{publish, PublishError, Publisher};
pub use subscribe::{Loss, Received, Subscriber, Subscription};
pub use topic::Topic;

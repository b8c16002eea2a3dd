//! `fedmsg-relay`: a bound SUB socket at `relay_inbound` for active
//! publishers (fedmsg-logger, scripts), re-published on the first free
//! `endpoints.relay_outbound` address.
//!
//! Frames are forwarded exactly as received: no parsing, no
//! re-serialisation (Python's relay re-encodes bodies; signatures survive
//! either way because verifiers re-canonicalise). Only what cannot be a
//! fedmsg message (frame count ≠ 2, oversized body) is dropped, with a log
//! line and a counter.
//!
//! [`run_signing`] is `fedmsg-signing-relay`: the same relay, signing what
//! it forwards with the certificate `certnames.signing_relay` names, for
//! hosts that hold no certificate of their own. A message that is already
//! signed is forwarded untouched (fedmsg signs it again over its old
//! signature, and the result never validates). A body that is not a
//! fedmsg envelope is wrapped as `{"topic": <frame topic>, "msg": <body>}`
//! first, as fedmsg does.

use crate::config::Config;
use crate::crypto::Signer;
use crate::endpoint::Endpoint;
use crate::envelope::DecodeError;
use crate::replay::{Entry, SharedHistory};
use crate::transport::{BoundSub, PubSocket};
use serde_json::{Map, Value};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Why the relay could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// `relay_inbound` is not configured.
    #[error("`relay_inbound` is not configured")]
    NoInbound,
    /// `endpoints.relay_outbound` is not configured.
    #[error("`endpoints.relay_outbound` is not configured")]
    NoOutbound,
    /// The inbound address could not be bound.
    #[error("cannot bind relay_inbound: {0}")]
    Inbound(String),
    /// No outbound address could be bound.
    #[error("cannot bind any relay_outbound endpoint; tried {}", .0.join(", "))]
    Outbound(Vec<String>),
    /// Receiving failed.
    #[error("relay stopped: {0}")]
    Io(String),
    /// The replay service could not start.
    #[error("cannot start the relay's replay service: {0}")]
    Replay(String),
    /// The metrics address could not be served.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The signing relay's key or certificate could not be loaded.
    #[error("cannot load the signing relay's certificate: {0}")]
    Signer(#[from] crate::crypto::SignerError),
}

/// Counters of a running relay.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Messages forwarded.
    pub forwarded: AtomicU64,
    /// Messages dropped as malformed.
    pub dropped: AtomicU64,
    /// Messages the signing relay signed (the others it forwarded were
    /// signed already).
    pub signed: AtomicU64,
    /// The outbound socket's counters: subscribers connected, refused, and
    /// messages dropped for subscribers at their high-water mark.
    pub outbound: Arc<crate::publish::PubCounters>,
}

impl crate::metrics::Observed for RelayStats {
    fn metrics(&self, out: &mut crate::metrics::Exposition) {
        out.counter(
            "fedmsg_relay_forwarded_total",
            "Messages forwarded.",
            self.forwarded.load(Ordering::Relaxed),
        );
        out.counter(
            "fedmsg_relay_malformed_total",
            "Messages dropped as malformed (or unsignable, for the signing relay).",
            self.dropped.load(Ordering::Relaxed),
        );
        out.counter(
            "fedmsg_relay_signed_total",
            "Messages the signing relay signed.",
            self.signed.load(Ordering::Relaxed),
        );
        out.publisher("fedmsg_relay_outbound", &self.outbound);
    }

    fn health(&self) -> crate::metrics::Health {
        // Serving at all means both sides are bound.
        crate::metrics::Health::Ok
    }
}

/// The addresses a relay actually bound, reported once it is ready.
#[derive(Debug, Clone)]
pub struct Bound {
    /// Where active publishers connect.
    pub inbound: Vec<Endpoint>,
    /// Where subscribers connect.
    pub outbound: Endpoint,
}

/// Runs the relay until `shutdown` completes. `ready` is called once both
/// sides are bound.
pub async fn run(
    config: &Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(&Bound),
) -> Result<Arc<RelayStats>, RelayError> {
    run_with(config, None, shutdown, ready).await
}

/// Runs the signing relay until `shutdown` completes: [`run`], signing
/// every unsigned message with `certnames.signing_relay`'s key. The key is
/// loaded before any socket opens.
pub async fn run_signing(
    config: &Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(&Bound),
) -> Result<Arc<RelayStats>, RelayError> {
    let signer = Signer::from_config(config, "signing_relay")?;
    tracing::info!(
        signer = signer.common_name(),
        scheme = signer.scheme().name(),
        "signing what is relayed"
    );
    run_with(config, Some(signer), shutdown, ready).await
}

/// What the signing relay does with one body.
enum Signed {
    /// Signed already: forward as it came.
    Untouched,
    /// The newly signed body.
    Body(bytes::Bytes),
}

/// Signs `body` (wrapped first when it is not an envelope) unless it
/// carries a signature already.
fn sign_body(signer: &Signer, topic: &[u8], body: &[u8]) -> Result<Signed, DecodeError> {
    let topic = std::str::from_utf8(topic).map_err(|_| DecodeError::TopicUtf8)?;
    let value = crate::canonical::parse(body).map_err(|e| DecodeError::Json(e.to_string()))?;
    let mut envelope = match value {
        Value::Object(map) if map.contains_key("signature") => return Ok(Signed::Untouched),
        Value::Object(map) if map.contains_key("topic") => map,
        other => {
            let mut map = Map::new();
            map.insert("topic".into(), Value::String(topic.to_owned()));
            map.insert("msg".into(), other);
            map
        }
    };
    signer.sign(&mut envelope);
    Ok(Signed::Body(bytes::Bytes::from(
        crate::canonical::to_canonical(&Value::Object(envelope)),
    )))
}

async fn run_with(
    config: &Config,
    signer: Option<Signer>,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(&Bound),
) -> Result<Arc<RelayStats>, RelayError> {
    if config.relay_inbound.is_empty() {
        return Err(RelayError::NoInbound);
    }
    let outbound_list = config
        .endpoints
        .get("relay_outbound")
        .filter(|l| !l.is_empty())
        .ok_or(RelayError::NoOutbound)?;
    let mut tried = Vec::new();
    let mut outbound = None;
    for address in outbound_list {
        match PubSocket::bind_with(address, &config.keepalive, crate::publish::limits(config)).await
        {
            Ok(socket) => {
                outbound = Some(socket);
                break;
            }
            Err(e) => tried.push(e.to_string()),
        }
    }
    let mut outbound = outbound.ok_or(RelayError::Outbound(tried))?;
    let mut inbound = BoundSub::bind(&config.relay_inbound, &config.keepalive)
        .await
        .map_err(|e| RelayError::Inbound(e.to_string()))?;
    let bound = Bound {
        inbound: inbound.endpoints().to_vec(),
        outbound: outbound.endpoint().clone(),
    };
    tracing::info!(
        inbound = ?bound.inbound.iter().map(ToString::to_string).collect::<Vec<_>>(),
        outbound = %bound.outbound,
        "relay ready"
    );

    let stats = Arc::new(RelayStats {
        outbound: outbound.counters(),
        ..RelayStats::default()
    });
    let service = if signer.is_some() {
        "signing_relay"
    } else {
        "relay"
    };
    let _metrics = crate::metrics::start(config, service, stats.clone()).await?;
    // What passed through is kept for replay, if the relay has a replay
    // endpoint (under the name `relay_outbound`).
    let mut replay = None;
    if let Some(endpoint) = config.replay_endpoints.get("relay_outbound") {
        let server = crate::replay::Server::bind(endpoint, &config.keepalive)
            .await
            .map_err(|e| RelayError::Replay(e.to_string()))?;
        let history = config
            .replay_history_for("relay_outbound", None)
            .map_err(|e| RelayError::Replay(e.to_string()))?;
        let history: SharedHistory = Arc::new(Mutex::new(history));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(history.clone(), async move {
            let _ = stopped.await;
        }));
        replay = Some((history, stop, task));
    }
    ready(&bound);
    let max = config.max_message_size;
    tokio::pin!(shutdown);
    loop {
        let frames = tokio::select! {
            _ = &mut shutdown => break,
            frames = inbound.recv() => frames,
        };
        let frames = match frames {
            Ok(frames) => frames,
            Err(e) => return Err(RelayError::Io(e.to_string())),
        };
        let problem = match frames.as_slice() {
            [_, body] if body.len() > max => Some(DecodeError::TooLarge {
                size: body.len(),
                limit: max,
            }),
            [_, _] => None,
            other => Some(DecodeError::FrameCount(other.len())),
        };
        if let Some(problem) = problem {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(reason = problem.label(), error = %problem, "relay dropped malformed message");
            continue;
        }
        let mut frames = frames;
        if let Some(signer) = &signer {
            match sign_body(signer, &frames[0], &frames[1]) {
                Ok(Signed::Untouched) => {}
                Ok(Signed::Body(body)) => {
                    frames[1] = body;
                    stats.signed.fetch_add(1, Ordering::Relaxed);
                }
                Err(problem) => {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(reason = problem.label(), error = %problem, "signing relay dropped a message it cannot sign");
                    continue;
                }
            }
        }
        if let Some((history, _, _)) = &replay {
            if let Ok(mut history) = history.lock() {
                history.push(Entry::from_body(frames[1].clone()));
            }
        }
        if let Err(e) = outbound.send(frames).await {
            tracing::warn!(error = %e, "relay could not forward");
            continue;
        }
        stats.forwarded.fetch_add(1, Ordering::Relaxed);
    }
    // Release both addresses before returning, so a restart can bind them.
    inbound.close().await;
    if let Some((_, stop, task)) = replay {
        let _ = stop.send(());
        let _ = task.await;
    }
    outbound.close().await;
    tracing::info!(
        forwarded = stats.forwarded.load(Ordering::Relaxed),
        dropped = stats.dropped.load(Ordering::Relaxed),
        slow_subscriber_drops = stats.outbound.dropped.load(Ordering::Relaxed),
        "relay stopped"
    );
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let certs =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/test-certs");
        Signer::from_files(
            &certs.join("shell-app02.phx2.fedoraproject.org.crt"),
            &certs.join("shell-app02.phx2.fedoraproject.org.key"),
        )
        .unwrap()
    }

    fn parsed(signed: Signed) -> Map<String, Value> {
        match signed {
            Signed::Body(body) => match crate::canonical::parse(&body).unwrap() {
                Value::Object(map) => map,
                other => panic!("{other}"),
            },
            Signed::Untouched => panic!("expected a new body"),
        }
    }

    #[test]
    fn the_signing_relay_signs_wraps_leaves_and_refuses() {
        let signer = signer();
        let envelope = br#"{"i":1,"msg":{"log":"x"},"topic":"org.x.dev.logger.log"}"#;
        let signed = parsed(sign_body(&signer, b"org.x.dev.logger.log", envelope).unwrap());
        assert!(signed.contains_key("signature") && signed.contains_key("certificate"));
        assert_eq!(signed["msg"]["log"], "x");
        // Signed already: untouched.
        let again = crate::canonical::to_canonical(&Value::Object(signed));
        assert!(matches!(
            sign_body(&signer, b"org.x.dev.logger.log", again.as_bytes()),
            Ok(Signed::Untouched)
        ));
        // Not an envelope: wrapped under the frame's topic, as fedmsg does.
        let wrapped = parsed(sign_body(&signer, b"org.x.dev.raw", b"[1,2]").unwrap());
        assert_eq!(wrapped["topic"], "org.x.dev.raw");
        assert_eq!(wrapped["msg"], serde_json::json!([1, 2]));
        // Not JSON, or a topic that is not text: refused with a reason.
        let error = sign_body(&signer, b"t", b"{nope").err().unwrap();
        assert_eq!(error.label(), DecodeError::Json(String::new()).label());
        assert!(matches!(
            sign_body(&signer, b"\xff", envelope),
            Err(DecodeError::TopicUtf8)
        ));
    }
}

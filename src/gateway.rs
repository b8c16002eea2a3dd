//! `fedmsg-gateway`: the whole bus re-published, verbatim, on one bound
//! port for readers outside the deployment.
//!
//! It subscribes to every endpoint of the config (no validation, as
//! fedmsg's gateway), with the same no-loss reader as everything else
//! (duplicates dropped, gaps filled from replay services where there are
//! any), and forwards each message's topic and body bytes unchanged on
//! `tcp://*:<gateway_port>`.
//!
//! Outside readers are not trusted to keep up: each may have at most
//! `gateway_high_water_mark` messages waiting (beyond that its messages are
//! dropped and counted, the others go on), and at most
//! `gateway_max_readers` may be connected (more are refused). A slow or
//! stalled outside reader never slows the bus or the other readers.

use crate::config::Config;
use crate::endpoint::Endpoint;
use crate::publish::{PubCounters, PubLimits};
use crate::subscribe::{Stats, Subscriber};
use crate::transport::PubSocket;
use bytes::Bytes;
use futures::StreamExt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The outward port could not be bound.
    #[error("cannot bind the gateway's port: {0}")]
    Bind(String),
    /// The metrics address could not be served.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The config lists no endpoint to subscribe to.
    #[error("no endpoints to subscribe to: the config's `endpoints` is empty")]
    NoEndpoints,
}

/// Counters of a running gateway.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Messages re-published.
    pub forwarded: AtomicU64,
    /// The outward socket: readers connected, refused, and messages dropped
    /// for readers at their high-water mark.
    pub outbound: Arc<PubCounters>,
    /// The bus side: received, malformed, duplicates, gaps, lost.
    pub inbound: Arc<Stats>,
}

impl crate::metrics::Observed for GatewayStats {
    fn metrics(&self, out: &mut crate::metrics::Exposition) {
        out.counter(
            "fedmsg_gateway_forwarded_total",
            "Messages re-published to outside readers.",
            self.forwarded.load(Ordering::Relaxed),
        );
        out.subscription("fedmsg_gateway_bus", &self.inbound);
        out.publisher("fedmsg_gateway_readers", &self.outbound);
    }

    fn health(&self) -> crate::metrics::Health {
        let mut health = crate::metrics::Health::Ok;
        crate::metrics::subscription_health(&mut health, &self.inbound);
        health
    }
}

/// Runs the gateway until `shutdown` completes. `ready` gets the bound
/// address once the port is open.
pub async fn run(
    config: &Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(&Endpoint),
) -> Result<Arc<GatewayStats>, GatewayError> {
    let subscriber = Subscriber::from_config(config).validator(None);
    if subscriber.endpoints().is_empty() {
        return Err(GatewayError::NoEndpoints);
    }
    let address = Endpoint::Tcp {
        host: config.gateway.host.clone(),
        port: config.gateway.port,
    };
    let limits = PubLimits {
        hwm: config.gateway.high_water_mark,
        max_subscribers: config.gateway.max_readers,
        ..PubLimits::default()
    };
    let mut outbound = PubSocket::bind_with(&address, &config.keepalive, limits)
        .await
        .map_err(|e| GatewayError::Bind(e.to_string()))?;
    let mut subscription = subscriber.subscribe();
    let stats = Arc::new(GatewayStats {
        forwarded: AtomicU64::new(0),
        outbound: outbound.counters(),
        inbound: subscription.stats(),
    });
    let _metrics = crate::metrics::start(config, "gateway", stats.clone()).await?;
    tracing::info!(
        endpoint = %outbound.endpoint(),
        high_water_mark = limits.hwm,
        max_readers = limits.max_subscribers,
        "gateway ready"
    );
    ready(outbound.endpoint());
    tokio::pin!(shutdown);
    loop {
        let received = tokio::select! {
            _ = &mut shutdown => break,
            received = subscription.next() => received,
        };
        let Some(received) = received else { break };
        let topic = Bytes::copy_from_slice(received.message.topic().as_bytes());
        let body = received.message.raw_body().clone();
        // Sending only queues: it never waits for a reader.
        let _ = outbound.send(vec![topic, body]).await;
        stats.forwarded.fetch_add(1, Ordering::Relaxed);
    }
    outbound.close().await;
    tracing::info!(
        forwarded = stats.forwarded.load(Ordering::Relaxed),
        readers_refused = stats.outbound.refused.load(Ordering::Relaxed),
        slow_reader_drops = stats.outbound.dropped.load(Ordering::Relaxed),
        "gateway stopped"
    );
    Ok(stats)
}

//! `/metrics` (Prometheus text format) and `/health` for the long-running
//! commands: relay, signing relay, gateway, trigger and hubs.
//!
//! Each service looks up its own name in the configuration's `[metrics]`
//! table (`relay`, `signing_relay`, `gateway`, `trigger`, or the hub's
//! name) and, if it is there, serves HTTP on that address:
//!
//! ```toml
//! [metrics]
//! relay = "127.0.0.1:9941"
//! gateway = "127.0.0.1:9942"
//! ```
//!
//! Addresses must be loopback: the counters are for the local monitoring
//! agent (or a Prometheus scraping through it), not for the world.
//!
//! `GET /health` answers `{"status": "ok", ...}` or `{"status":
//! "degraded", "problems": [...]}`. A service that cannot do its job at all
//! has stopped, and answers nothing; `fedmsg-check` reports that.

use crate::publish::PubCounters;
use crate::subscribe::{EndpointStats, Stats};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Largest request head read; anything longer is refused.
const MAX_REQUEST: usize = 8 * 1024;
/// A client that has not sent its request by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the metrics address could not be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address is not a loopback one.
    #[error("metrics address {0} is not a loopback address (127.0.0.0/8 or ::1)")]
    NotLoopback(SocketAddr),
    /// Binding failed.
    #[error("cannot bind the metrics address {address}: {reason}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// A service's state as `/health` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Working.
    Ok,
    /// Working, with problems worth a look (each one a line).
    Degraded(Vec<String>),
}

impl Health {
    /// Adds a problem that degrades the service.
    pub fn degrade(&mut self, problem: String) {
        match self {
            Health::Ok => *self = Health::Degraded(vec![problem]),
            Health::Degraded(list) => list.push(problem),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Degraded(_) => "degraded",
        }
    }

    fn problems(&self) -> &[String] {
        match self {
            Health::Ok => &[],
            Health::Degraded(list) => list,
        }
    }
}

/// What a service exports.
pub trait Observed: Send + Sync + 'static {
    /// Writes every metric.
    fn metrics(&self, out: &mut Exposition);
    /// The service's health now.
    fn health(&self) -> Health;
}

/// A per-endpoint metric: name suffix, kind, help, and how to read it.
type PerEndpoint = (
    &'static str,
    &'static str,
    &'static str,
    fn(&EndpointStats) -> u64,
);

/// Prometheus text exposition, written metric by metric.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    fn head(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// A counter (`name` should end in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.head(name, help, "counter");
        let _ = writeln!(self.text, "{name} {value}");
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.head(name, help, "gauge");
        let _ = writeln!(self.text, "{name} {value}");
    }

    /// A counter with one label, one sample per value of it. Written
    /// even when empty, so dashboards see the metric exists.
    pub fn counters<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        self.head(name, help, "counter");
        for (value, count) in samples {
            let _ = writeln!(self.text, "{name}{{{label}=\"{}\"}} {count}", escape(value));
        }
    }

    /// The counters of a subscription (what a subscriber saw), named
    /// `<prefix>_received_total` and so on.
    pub fn subscription(&mut self, prefix: &str, stats: &Stats) {
        self.counter(
            &format!("{prefix}_received_total"),
            "Messages received (live and replayed).",
            stats.received(),
        );
        let invalid = stats.invalid();
        self.counters(
            &format!("{prefix}_invalid_total"),
            "Malformed messages dropped, by reason.",
            "reason",
            invalid.iter().map(|(k, v)| (*k, *v)),
        );
        let rejected = stats.rejected();
        self.counters(
            &format!("{prefix}_rejected_total"),
            "Messages that failed signature validation, by reason.",
            "reason",
            rejected.iter().map(|(k, v)| (*k, *v)),
        );
        self.counter(
            &format!("{prefix}_duplicates_total"),
            "Duplicate messages dropped.",
            stats.duplicates(),
        );
        self.counter(
            &format!("{prefix}_gaps_total"),
            "Sequence gaps detected.",
            stats.gaps(),
        );
        self.counter(
            &format!("{prefix}_replayed_total"),
            "Messages recovered from replay services.",
            stats.replayed(),
        );
        self.counter(
            &format!("{prefix}_lost_total"),
            "Messages known lost (gaps replay could not fill).",
            stats.lost(),
        );
        self.gauge(
            &format!("{prefix}_connected_endpoints"),
            "Publisher endpoints connected now.",
            stats.connected(),
        );
        // Per endpoint: which publisher is down, which one loses messages.
        let endpoints = stats.endpoints();
        let per_endpoint: [PerEndpoint; 4] = [
            (
                "endpoint_connected",
                "gauge",
                "1 while this publisher endpoint is connected.",
                |e| u64::from(e.connected()),
            ),
            (
                "endpoint_received_total",
                "counter",
                "Messages received from this publisher.",
                EndpointStats::received,
            ),
            (
                "endpoint_gaps_total",
                "counter",
                "Sequence gaps detected in this publisher's messages.",
                EndpointStats::gaps,
            ),
            (
                "endpoint_lost_total",
                "counter",
                "This publisher's messages known lost.",
                EndpointStats::lost,
            ),
        ];
        for (suffix, kind, help, value) in per_endpoint {
            let name = format!("{prefix}_{suffix}");
            self.head(&name, help, kind);
            for endpoint in endpoints {
                let _ = writeln!(
                    self.text,
                    "{name}{{name=\"{}\",endpoint=\"{}\"}} {}",
                    escape(endpoint.name()),
                    escape(&endpoint.endpoint().to_string()),
                    value(endpoint)
                );
            }
        }
    }

    /// The counters of a bound publisher socket, `<prefix>_subscribers`
    /// and so on.
    pub fn publisher(&mut self, prefix: &str, counters: &PubCounters) {
        self.gauge(
            &format!("{prefix}_subscribers"),
            "Subscribers connected now.",
            counters.subscribers.load(Ordering::Relaxed),
        );
        self.counter(
            &format!("{prefix}_refused_total"),
            "Subscribers refused over the cap.",
            counters.refused.load(Ordering::Relaxed),
        );
        self.counter(
            &format!("{prefix}_dropped_total"),
            "Messages dropped for subscribers at their high-water mark.",
            counters.dropped.load(Ordering::Relaxed),
        );
    }

    /// The text.
    pub fn into_text(self) -> String {
        self.text
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Health of a subscriber side: degraded when it is connected to none of
/// its endpoints.
pub fn subscription_health(health: &mut Health, stats: &Stats) {
    if stats.connected() == 0 {
        health.degrade("connected to no publisher endpoint".into());
    }
}

/// A running metrics server; dropping it stops it.
#[derive(Debug)]
pub struct Server {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The address it is bound to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `observed` on `service`'s address from `config.metrics`, if the
/// configuration names one. Binding happens now, so a taken port is a
/// start-up error.
pub async fn start(
    config: &crate::Config,
    service: &str,
    observed: Arc<dyn Observed>,
) -> Result<Option<Server>, MetricsError> {
    match config.metrics.get(service) {
        Some(address) => serve(*address, service, observed).await.map(Some),
        None => Ok(None),
    }
}

/// Serves `observed` on `address` (loopback only) until the returned
/// [`Server`] is dropped.
pub async fn serve(
    address: SocketAddr,
    service: &str,
    observed: Arc<dyn Observed>,
) -> Result<Server, MetricsError> {
    if !address.ip().is_loopback() {
        return Err(MetricsError::NotLoopback(address));
    }
    let listener =
        tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| MetricsError::Bind {
                address,
                reason: e.to_string(),
            })?;
    let bound = listener.local_addr().unwrap_or(address);
    tracing::info!(service, address = %bound, "serving /metrics and /health");
    let service = service.to_owned();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let observed = observed.clone();
            let service = service.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    answer(stream, &service, observed.as_ref()),
                )
                .await;
            });
        }
    });
    Ok(Server {
        address: bound,
        task,
    })
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    service: &str,
    observed: &dyn Observed,
) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..n]);
        if request.len() > MAX_REQUEST {
            return respond(&mut stream, 431, "text/plain", "request too large\n").await;
        }
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", "only GET\n").await;
    }
    match path {
        "/metrics" => {
            let mut out = Exposition::default();
            observed.metrics(&mut out);
            let body = out.into_text();
            respond(&mut stream, 200, "text/plain; version=0.0.4", &body).await
        }
        "/health" => {
            let health = observed.health();
            let body = serde_json::json!({
                "service": service,
                "status": health.label(),
                "problems": health.problems(),
            });
            respond(&mut stream, 200, "application/json", &format!("{body}\n")).await
        }
        _ => respond(&mut stream, 404, "text/plain", "try /metrics or /health\n").await,
    }
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// `GET path` on `address` with a deadline: the status and the body. For
/// `fedmsg-check` and tests.
pub async fn get(
    address: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response")
            })?;
        Ok((status, body.to_owned()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl Observed for Fixed {
        fn metrics(&self, out: &mut Exposition) {
            out.counter("x_total", "An x.", 7);
            out.counters("y_total", "A y.", "reason", [("a\"b", 1)]);
        }
        fn health(&self) -> Health {
            let mut health = Health::Ok;
            health.degrade("one".into());
            health.degrade("two".into());
            health
        }
    }

    async fn raw(address: SocketAddr, request: &[u8]) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn serves_metrics_and_health_and_refuses_the_rest() {
        let server = serve("127.0.0.1:0".parse().unwrap(), "test", Arc::new(Fixed))
            .await
            .unwrap();
        let address = server.address();
        let wait = Duration::from_secs(5);
        let (code, text) = get(address, "/metrics", wait).await.unwrap();
        assert_eq!(code, 200);
        assert!(
            text.contains("# TYPE x_total counter\nx_total 7\n"),
            "{text}"
        );
        assert!(text.contains("y_total{reason=\"a\\\"b\"} 1\n"), "{text}");
        let (code, text) = get(address, "/health?verbose", wait).await.unwrap();
        assert_eq!(code, 200);
        assert_eq!(
            text,
            "{\"problems\":[\"one\",\"two\"],\"service\":\"test\",\"status\":\"degraded\"}\n"
        );
        assert_eq!(get(address, "/", wait).await.unwrap().0, 404);
        let answer = raw(address, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        // Just over the limit, so the server has read all of it when it
        // answers (unread data would reset the connection).
        huge.extend(std::iter::repeat_n(b'a', MAX_REQUEST));
        let answer = raw(address, &huge).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        // Still serving after the bad requests.
        assert_eq!(get(address, "/metrics", wait).await.unwrap().0, 200);
    }

    #[tokio::test]
    async fn only_loopback_addresses_are_served() {
        let error = serve("0.0.0.0:0".parse().unwrap(), "test", Arc::new(Fixed))
            .await
            .unwrap_err();
        assert!(matches!(error, MetricsError::NotLoopback(_)), "{error}");
    }
}

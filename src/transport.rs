//! The one module that touches the `zeromq` crate.
//!
//! It closes that crate's gaps for the rest of the library:
//!
//! * **`tcp://*:port`** is bound as every interface (`0.0.0.0`).
//! * **Bound sockets** get fedmsg's TCP keepalive settings through a
//!   pre-configured listener (accepted connections inherit them).
//! * **Subscribers speak ZMTP themselves** ([`subscribe_all`], in
//!   `zmtp`): one reader polls every connection, each connection retries
//!   with fedmsg's `zmq_reconnect_ivl` backoff for as long as the reader
//!   lives, gets fedmsg's TCP keepalive when it is opened, and skips frames
//!   over the size limit instead of buffering them. (The crate's SUB costs a
//!   socket, its tasks and a channel hop per endpoint.)
//! * **No keepalive on connections the crate opens**: a connecting
//!   publisher's TCP connection gets fedmsg's keepalive settings (found by
//!   its peer address among this process's sockets), so a relay whose host
//!   vanished without a word is noticed.
//! * **No linger, no delivery signal on PUB**: a connecting publisher (the
//!   logger's path to the relay) uses an XPUB socket, waits until the relay's
//!   subscription has arrived before sending, and every send returns only once
//!   the frames are written to the connection.

mod fanout;
mod zmtp;

use crate::config::Keepalive;
use crate::endpoint::Endpoint;
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;
use zeromq::{Socket, SocketEvent, SocketOptions, SocketRecv, SocketSend, ZmqMessage};

/// A transport failure, carrying the address involved.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Binding an address failed.
    #[error("cannot bind {endpoint}: {reason}")]
    Bind {
        /// The address.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// Connecting failed or timed out.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        /// The address.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// Sending failed.
    #[error("cannot send: {0}")]
    Send(String),
    /// Receiving failed.
    #[error("cannot receive: {0}")]
    Recv(String),
}

/// Sends one multipart message; an empty frame list sends nothing.
async fn send_frames<S: SocketSend>(
    socket: &mut S,
    frames: Vec<Bytes>,
) -> Result<(), TransportError> {
    let Ok(message) = ZmqMessage::try_from(frames) else {
        return Ok(());
    };
    socket
        .send(message)
        .await
        .map_err(|e| TransportError::Send(e.to_string()))
}

/// The host to bind for an endpoint's host: `*` is every interface.
fn bind_host(host: &str) -> &str {
    match host {
        "*" => "0.0.0.0",
        other => other.trim_start_matches('[').trim_end_matches(']'),
    }
}

/// The host to connect to for an endpoint's host: `*` is this machine, as
/// fedmsg's hub reads it.
pub(crate) fn connect_host(host: &str) -> &str {
    match host {
        "*" => "127.0.0.1",
        other => other.trim_start_matches('[').trim_end_matches(']'),
    }
}

/// Binds `endpoint` on `socket`, applying keepalive to TCP listeners.
async fn bind_socket<S: Socket>(
    socket: &mut S,
    endpoint: &Endpoint,
    keepalive: &Keepalive,
) -> Result<Endpoint, TransportError> {
    let failed = |reason: String| TransportError::Bind {
        endpoint: endpoint.to_string(),
        reason,
    };
    let bound = match endpoint {
        Endpoint::Tcp { host, port } => {
            let host = bind_host(host);
            let listener =
                tcp_listener(host, *port, keepalive).map_err(|e| failed(e.to_string()))?;
            socket
                .bind_listener(listener)
                .await
                .map_err(|e| failed(e.to_string()))?
        }
        Endpoint::Ipc(_) => socket
            .bind(&endpoint.bind_address())
            .await
            .map_err(|e| failed(e.to_string()))?,
    };
    Ok(bound
        .to_string()
        .parse()
        .unwrap_or_else(|_| endpoint.clone()))
}

fn tcp_listener(
    host: &str,
    port: u16,
    keepalive: &Keepalive,
) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket as RawSocket, TcpKeepalive, Type};
    use std::net::ToSocketAddrs;
    let address = (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("host {host:?} has no address"),
        )
    })?;
    let socket = RawSocket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if keepalive.enabled {
        let params = TcpKeepalive::new()
            .with_time(keepalive.idle)
            .with_interval(keepalive.interval)
            .with_retries(keepalive.count);
        socket.set_tcp_keepalive(&params)?;
    }
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

pub use fanout::{PubCounters, PubLimits};

/// A bound PUB socket (our own, see `fanout`): fans each message out to
/// every matching subscriber and drops for subscribers that fall more than
/// the high-water mark behind, so a stalled reader never slows the others.
pub struct PubSocket {
    fanout: fanout::Fanout,
    counters: std::sync::Arc<PubCounters>,
}

impl PubSocket {
    /// Binds a PUB socket to `endpoint` with `limits`.
    pub async fn bind_with(
        endpoint: &Endpoint,
        keepalive: &Keepalive,
        limits: PubLimits,
    ) -> Result<PubSocket, TransportError> {
        let failed = |reason: String| TransportError::Bind {
            endpoint: endpoint.to_string(),
            reason,
        };
        let (listener, bound) = match endpoint {
            Endpoint::Tcp { host, port } => {
                let host = bind_host(host);
                let listener =
                    tcp_listener(host, *port, keepalive).map_err(|e| failed(e.to_string()))?;
                listener
                    .set_nonblocking(true)
                    .map_err(|e| failed(e.to_string()))?;
                let listener = tokio::net::TcpListener::from_std(listener)
                    .map_err(|e| failed(e.to_string()))?;
                let bound = listener
                    .local_addr()
                    .ok()
                    .and_then(|a| format!("tcp://{a}").parse().ok())
                    .unwrap_or_else(|| endpoint.clone());
                (fanout::Listener::Tcp(listener), bound)
            }
            #[cfg(unix)]
            Endpoint::Ipc(path) => {
                let listener = unix_listener(path).map_err(|e| failed(e.to_string()))?;
                (fanout::Listener::Unix(listener), endpoint.clone())
            }
            #[cfg(not(unix))]
            Endpoint::Ipc(_) => return Err(failed("ipc:// needs a Unix system".into())),
        };
        let counters = std::sync::Arc::new(PubCounters::default());
        Ok(PubSocket {
            fanout: fanout::Fanout::start(listener, bound, limits, counters.clone()),
            counters,
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn endpoint(&self) -> &Endpoint {
        self.fanout.endpoint()
    }

    /// Live counters: subscribers, refused connections, dropped messages.
    pub fn counters(&self) -> std::sync::Arc<PubCounters> {
        self.counters.clone()
    }

    /// Queues one message for every matching subscriber.
    pub async fn send(&mut self, frames: Vec<Bytes>) -> Result<(), TransportError> {
        self.fanout.send(frames);
        Ok(())
    }

    /// Writes what is queued (for at most the linger time), then unbinds.
    pub async fn close(self) {
        self.fanout.close().await;
    }
}

/// Binds a Unix-domain listener at `path`, replacing a stale socket file
/// that nothing listens on any more.
#[cfg(unix)]
fn unix_listener(path: &str) -> std::io::Result<tokio::net::UnixListener> {
    match tokio::net::UnixListener::bind(path) {
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(error);
            }
            std::fs::remove_file(path)?;
            tokio::net::UnixListener::bind(path)
        }
        other => other,
    }
}

/// The `zeromq` crate's own PUB socket, bound: the raw-ZeroMQ baseline of
/// the benchmarks.
pub struct CratePubSocket {
    socket: zeromq::PubSocket,
    endpoint: Endpoint,
}

impl CratePubSocket {
    /// Binds a PUB socket to `endpoint`.
    pub async fn bind(
        endpoint: &Endpoint,
        keepalive: &Keepalive,
    ) -> Result<CratePubSocket, TransportError> {
        let mut socket = zeromq::PubSocket::new();
        let endpoint = bind_socket(&mut socket, endpoint, keepalive).await?;
        Ok(CratePubSocket { socket, endpoint })
    }

    /// The address actually bound (port 0 resolved).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Queues one message for every subscriber.
    pub async fn send(&mut self, frames: Vec<Bytes>) -> Result<(), TransportError> {
        send_frames(&mut self.socket, frames).await
    }
}

/// A publisher that connects to a relay's bound SUB socket (fedmsg's active
/// mode). Built on XPUB so it can tell when the relay is listening and when
/// frames are written.
///
/// It survives relay restarts, which the `zeromq` crate does not (its XPUB
/// would silently send into nothing): it checks its connection every
/// 100 ms, keeps what it sent in the last two seconds, and while the relay
/// is away it queues new messages (up to 100,000). Once the relay is back it
/// re-sends the recent ones, which the dying relay may have lost, then the
/// queued ones. Readers drop the duplicates this can cause by `i`.
pub struct ConnectedPub {
    socket: Option<zeromq::XPubSocket>,
    endpoint: Endpoint,
    timeout: Duration,
    keepalive: Keepalive,
    peers: Vec<std::net::SocketAddr>,
    checked: tokio::time::Instant,
    recent: std::collections::VecDeque<(tokio::time::Instant, Vec<Bytes>)>,
    pending: std::collections::VecDeque<Vec<Bytes>>,
    retry_at: tokio::time::Instant,
    retry_interval: Duration,
    dropped: u64,
}

/// How often a connecting publisher checks that its connection still exists.
const LIVENESS_CHECK: Duration = Duration::from_millis(100);
/// How long sent messages are kept for re-sending after a relay restart.
const RESEND_WINDOW: Duration = Duration::from_secs(2);
/// Most messages queued while the relay is away (and kept for re-sending).
const MAX_KEPT: usize = 100_000;

impl ConnectedPub {
    /// Connects to `endpoint` and waits until the peer has subscribed, for at
    /// most `timeout`.
    pub async fn connect(
        endpoint: &Endpoint,
        timeout: Duration,
        keepalive: &Keepalive,
    ) -> Result<ConnectedPub, TransportError> {
        let socket = Self::open(endpoint, timeout).await?;
        let peers = resolve(endpoint).await;
        keepalive_connections(&peers, keepalive);
        let now = tokio::time::Instant::now();
        Ok(ConnectedPub {
            socket: Some(socket),
            endpoint: endpoint.clone(),
            timeout,
            keepalive: keepalive.clone(),
            peers,
            checked: now,
            recent: Default::default(),
            pending: Default::default(),
            retry_at: now,
            retry_interval: Duration::from_millis(100),
            dropped: 0,
        })
    }

    async fn open(
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<zeromq::XPubSocket, TransportError> {
        let failed = |reason: String| TransportError::Connect {
            endpoint: endpoint.to_string(),
            reason,
        };
        let mut options = SocketOptions::default();
        options.connect_timeout(timeout);
        let mut socket = zeromq::XPubSocket::with_options(options);
        let deadline = tokio::time::Instant::now() + timeout;
        tokio::time::timeout_at(deadline, socket.connect(&endpoint.connect_address()))
            .await
            .map_err(|_| failed(format!("no answer within {} ms", timeout.as_millis())))?
            .map_err(|e| failed(e.to_string()))?;
        // The first message an XPUB receives is the peer's subscription.
        tokio::time::timeout_at(deadline, socket.recv())
            .await
            .map_err(|_| {
                failed(format!(
                    "connected, but no subscription arrived within {} ms",
                    timeout.as_millis()
                ))
            })?
            .map_err(|e| failed(e.to_string()))?;
        Ok(socket)
    }

    /// Notices a lost connection (at most every 100 ms).
    fn check_connection(&mut self) {
        let Some(socket) = self.socket.as_mut() else {
            return;
        };
        // Reading is what lets the socket notice a closed connection (and
        // drop it); anything the relay says here is only subscriptions.
        while let Some(Ok(_)) = futures::FutureExt::now_or_never(socket.recv()) {}
        if !self.peers.is_empty() && self.checked.elapsed() >= LIVENESS_CHECK {
            self.checked = tokio::time::Instant::now();
            if for_each_connection(&self.peers, |_| {}) == 0 {
                tracing::warn!(endpoint = %self.endpoint, "relay connection lost; queueing until it is back");
                self.socket = None;
            }
        }
    }

    /// Tries to reconnect, waiting at most `wait`; on success re-sends the
    /// recent and the queued messages.
    async fn reconnect(&mut self, wait: Duration) -> Result<(), TransportError> {
        let socket = Self::open(&self.endpoint, wait).await?;
        keepalive_connections(&self.peers, &self.keepalive);
        self.socket = Some(socket);
        self.checked = tokio::time::Instant::now();
        self.retry_interval = Duration::from_millis(100);
        let resend: Vec<Vec<Bytes>> = self
            .recent
            .iter()
            .map(|(_, f)| f.clone())
            .chain(self.pending.drain(..))
            .collect();
        tracing::info!(endpoint = %self.endpoint, resent = resend.len(), "relay is back");
        for frames in resend {
            self.write(frames).await?;
        }
        Ok(())
    }

    async fn write(&mut self, frames: Vec<Bytes>) -> Result<(), TransportError> {
        let Some(socket) = self.socket.as_mut() else {
            return Err(TransportError::Send("not connected".into()));
        };
        send_frames(socket, frames.clone()).await?;
        let now = tokio::time::Instant::now();
        self.recent.push_back((now, frames));
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RESEND_WINDOW)
            || self.recent.len() > MAX_KEPT
        {
            self.recent.pop_front();
        }
        Ok(())
    }

    /// Sends one message; returns once it is written to the connection, or
    /// queued while the relay is away. Fails only when the queue overflows.
    pub async fn send(&mut self, frames: Vec<Bytes>) -> Result<(), TransportError> {
        self.check_connection();
        if self.socket.is_none() && tokio::time::Instant::now() >= self.retry_at {
            if let Err(error) = self
                .reconnect(self.timeout.min(Duration::from_millis(500)))
                .await
            {
                tracing::debug!(%error, "relay still away");
                self.retry_at = tokio::time::Instant::now() + self.retry_interval;
                self.retry_interval = (self.retry_interval * 2).min(Duration::from_secs(2));
            }
        }
        if self.socket.is_some() {
            return self.write(frames).await;
        }
        self.pending.push_back(frames);
        if self.pending.len() > MAX_KEPT {
            self.pending.pop_front();
            self.dropped += 1;
            return Err(TransportError::Send(format!(
                "relay unreachable; {} queued messages dropped so far",
                self.dropped
            )));
        }
        Ok(())
    }

    /// Delivers what is queued, waiting at most the connect timeout for the
    /// relay; fails if messages remain undelivered.
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        self.check_connection();
        if self.pending.is_empty() && self.dropped == 0 {
            return Ok(());
        }
        if self.socket.is_none() {
            self.reconnect(self.timeout).await?;
        }
        if self.dropped > 0 {
            let dropped = std::mem::take(&mut self.dropped);
            return Err(TransportError::Send(format!(
                "{dropped} messages were dropped while the relay was unreachable"
            )));
        }
        Ok(())
    }
}

/// A SUB socket bound to one or more addresses, subscribed to everything
/// (the relay's inbound side).
pub struct BoundSub {
    socket: zeromq::SubSocket,
    endpoints: Vec<Endpoint>,
}

impl BoundSub {
    /// Binds one SUB socket to every address of `endpoints`.
    pub async fn bind(
        endpoints: &[Endpoint],
        keepalive: &Keepalive,
    ) -> Result<BoundSub, TransportError> {
        let mut socket = zeromq::SubSocket::new();
        let mut bound = Vec::new();
        for endpoint in endpoints {
            bound.push(bind_socket(&mut socket, endpoint, keepalive).await?);
        }
        socket
            .subscribe("")
            .await
            .map_err(|e| TransportError::Bind {
                endpoint: endpoints
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                reason: e.to_string(),
            })?;
        Ok(BoundSub {
            socket,
            endpoints: bound,
        })
    }

    /// The addresses actually bound.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Receives the next message's frames.
    pub async fn recv(&mut self) -> Result<Vec<Bytes>, TransportError> {
        self.socket
            .recv()
            .await
            .map(ZmqMessage::into_vec)
            .map_err(|e| TransportError::Recv(e.to_string()))
    }

    /// Unbinds every address and waits until they are released.
    pub async fn close(self) {
        let _ = self.socket.close().await;
    }
}

/// What a subscriber's connection reports.
#[derive(Debug)]
pub enum SubEvent {
    /// The frames of one message from endpoint number `.0`.
    Frames(usize, Vec<Bytes>),
    /// A message from endpoint number `.0` was dropped unread: too many
    /// frames, or a frame over the size limit (skipped, never buffered).
    Invalid(usize, crate::envelope::DecodeError),
    /// Endpoint number `.0` is connected.
    Connected(usize),
    /// Endpoint number `.0` went away; reconnecting.
    Disconnected(usize),
}

/// Reconnect policy for connecting subscribers.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First interval.
    pub initial: Duration,
    /// Cap.
    pub max: Duration,
}

/// Calls `visit` for each of this process's TCP sockets whose peer is one
/// of `peers`, and returns how many there were. The `zeromq` crate opens
/// connections itself and offers no socket hook, so they are found among
/// the process's descriptors by their peer address. Linux only; elsewhere
/// it finds none.
fn for_each_connection(
    peers: &[std::net::SocketAddr],
    mut visit: impl FnMut(socket2::SockRef<'_>),
) -> usize {
    let mut found = 0;
    #[cfg(target_os = "linux")]
    {
        let peers: std::collections::HashSet<&std::net::SocketAddr> = peers.iter().collect();
        use std::os::fd::{BorrowedFd, RawFd};
        let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
            return 0;
        };
        for entry in entries.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<RawFd>().ok())
            else {
                continue;
            };
            // No readlink to tell sockets apart: asking any descriptor for
            // its peer is one cheap call (ENOTSOCK for the others).
            // SAFETY: the descriptor was open a moment ago and is only
            // borrowed for these calls; if it was closed and reused since,
            // the peer-address check fails (or, at worst, a socket of this
            // process is visited, which the callers tolerate).
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let socket = socket2::SockRef::from(&borrowed);
            if socket
                .peer_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .is_some_and(|peer| peers.contains(&peer))
            {
                found += 1;
                visit(socket);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (peers, &mut visit);
    found
}

/// Connections waiting for keepalive, and how far the scans have got.
#[derive(Default)]
struct Sweep {
    pending: Vec<(std::net::SocketAddr, Keepalive)>,
    /// Requests are numbered; every request below `done` has been served.
    next: u64,
    done: u64,
}

static SWEEP: std::sync::Mutex<Sweep> = std::sync::Mutex::new(Sweep {
    pending: Vec::new(),
    next: 0,
    done: 0,
});
static SCANNER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Applies `keepalive` to this process's TCP connections to `peers` that do
/// not have it yet, and returns once that is done.
///
/// A scan reads every descriptor of the process, so one scan serves every
/// connection that came up meanwhile: a reader of a thousand endpoints
/// makes a handful of scans, not a thousand.
fn keepalive_connections(peers: &[std::net::SocketAddr], keepalive: &Keepalive) {
    if !keepalive.enabled || peers.is_empty() {
        return;
    }
    let ticket = {
        let Ok(mut sweep) = SWEEP.lock() else { return };
        sweep
            .pending
            .extend(peers.iter().map(|peer| (*peer, keepalive.clone())));
        sweep.next += 1;
        sweep.next - 1
    };
    let Ok(_scanner) = SCANNER.lock() else { return };
    let (work, upto) = {
        let Ok(mut sweep) = SWEEP.lock() else { return };
        if sweep.done > ticket {
            return; // A scan that began after this request covered it.
        }
        (std::mem::take(&mut sweep.pending), sweep.next)
    };
    let wanted: std::collections::HashMap<std::net::SocketAddr, Keepalive> =
        work.into_iter().collect();
    let addresses: Vec<std::net::SocketAddr> = wanted.keys().copied().collect();
    for_each_connection(&addresses, |socket| {
        if socket.keepalive().unwrap_or(true) {
            return;
        }
        let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
        let Some(keepalive) = peer.and_then(|p| wanted.get(&p)) else {
            return;
        };
        let params = socket2::TcpKeepalive::new()
            .with_time(keepalive.idle)
            .with_interval(keepalive.interval)
            .with_retries(keepalive.count);
        if let Err(error) = socket.set_tcp_keepalive(&params) {
            tracing::debug!(%error, "cannot set keepalive");
        }
    });
    if let Ok(mut sweep) = SWEEP.lock() {
        sweep.done = sweep.done.max(upto);
    }
}

/// The socket addresses of a TCP endpoint (`*` read as 127.0.0.1).
async fn resolve(endpoint: &Endpoint) -> Vec<std::net::SocketAddr> {
    match endpoint {
        Endpoint::Tcp { host, port } => {
            let host = connect_host(host);
            tokio::net::lookup_host((host, *port))
                .await
                .map(Iterator::collect)
                .unwrap_or_default()
        }
        Endpoint::Ipc(_) => Vec::new(),
    }
}

/// How a subscriber connects to its publishers.
#[derive(Debug, Clone)]
pub struct SubOptions {
    /// Topic prefixes (`""` is everything).
    pub prefixes: Vec<String>,
    /// Reconnect policy.
    pub backoff: Backoff,
    /// TCP keepalive for each connection.
    pub keepalive: Keepalive,
    /// Largest frame read; larger ones are skipped and reported.
    pub max_frame: usize,
}

/// Least time a connect and handshake is given, however short the backoff.
const MIN_HANDSHAKE: Duration = Duration::from_secs(2);

/// Every endpoint's connection as one stream of events, polled by whoever
/// reads it: no task or channel per endpoint. Each endpoint connects,
/// retries with `options.backoff` while the publisher is absent, and
/// reconnects at once when it goes away (then backs off again). Dropping
/// the stream closes every connection.
pub fn subscribe_all(
    endpoints: Vec<Endpoint>,
    options: SubOptions,
) -> impl futures::Stream<Item = SubEvent> + Send + Unpin {
    let options = std::sync::Arc::new(options);
    let mut streams: Vec<EndpointEvents> = endpoints
        .into_iter()
        .enumerate()
        .map(|(index, endpoint)| endpoint_events(index, endpoint, options.clone()))
        .collect();
    // One endpoint (a relay) is polled directly: merging re-queues the
    // stream after every item, which costs more than parsing a message.
    if streams.len() == 1 {
        futures::future::Either::Left(streams.remove(0))
    } else {
        futures::future::Either::Right(futures::stream::select_all(streams))
    }
}

/// One endpoint's events: a hand-written stream, so that a message costs
/// a parse of the buffer and nothing else (no future per message).
struct EndpointEvents {
    index: usize,
    endpoint: Endpoint,
    options: std::sync::Arc<SubOptions>,
    link: Link,
}

/// Where one endpoint's connection is.
enum Link {
    /// Connecting (after waiting, when retrying); the attempt's interval.
    Connecting(
        futures::future::BoxFuture<'static, std::io::Result<zmtp::SubConnection>>,
        Duration,
    ),
    /// Connected and subscribed.
    Open(zmtp::SubConnection),
}

/// A connection attempt to `endpoint` that waits `wait` first.
fn attempt(endpoint: &Endpoint, options: &std::sync::Arc<SubOptions>, wait: Duration) -> Link {
    let endpoint = endpoint.clone();
    let options = options.clone();
    let interval = wait.max(options.backoff.initial);
    Link::Connecting(
        Box::pin(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            zmtp::SubConnection::connect(
                &endpoint,
                &options.prefixes,
                &options.keepalive,
                interval.max(MIN_HANDSHAKE),
                options.max_frame,
            )
            .await
        }),
        wait,
    )
}

impl futures::Stream for EndpointEvents {
    type Item = SubEvent;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<SubEvent>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            match &mut this.link {
                Link::Connecting(pending, wait) => match pending.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(connection)) => {
                        this.link = Link::Open(connection);
                        return Poll::Ready(Some(SubEvent::Connected(this.index)));
                    }
                    Poll::Ready(Err(error)) => {
                        let next = if wait.is_zero() {
                            this.options.backoff.initial
                        } else {
                            (*wait * 2).min(this.options.backoff.max)
                        };
                        tracing::debug!(endpoint = %this.endpoint, %error, retry_ms = next.as_millis() as u64, "publisher not reachable yet");
                        this.link = attempt(&this.endpoint, &this.options, next);
                    }
                },
                Link::Open(connection) => {
                    return match std::task::ready!(connection.poll_next(cx)) {
                        Ok(Ok(frames)) => Poll::Ready(Some(SubEvent::Frames(this.index, frames))),
                        Ok(Err(invalid)) => {
                            Poll::Ready(Some(SubEvent::Invalid(this.index, invalid)))
                        }
                        Err(error) => {
                            tracing::debug!(endpoint = %this.endpoint, %error, "connection ended");
                            this.link = attempt(&this.endpoint, &this.options, Duration::ZERO);
                            Poll::Ready(Some(SubEvent::Disconnected(this.index)))
                        }
                    };
                }
            }
        }
    }
}

fn endpoint_events(
    index: usize,
    endpoint: Endpoint,
    options: std::sync::Arc<SubOptions>,
) -> EndpointEvents {
    EndpointEvents {
        index,
        link: attempt(&endpoint, &options, Duration::ZERO),
        endpoint,
        options,
    }
}

/// Runs one `zeromq` crate SUB socket connected to `endpoint` until
/// `events` is closed (the raw-ZeroMQ baseline of the benchmarks):
/// connects (retrying with `backoff`), subscribes to `prefixes`, forwards
/// every message, and starts over when the publisher goes away.
pub async fn run_connected_sub(
    index: usize,
    endpoint: Endpoint,
    prefixes: Vec<String>,
    backoff: Backoff,
    keepalive: Keepalive,
    events: mpsc::Sender<SubEvent>,
) {
    let address = endpoint.connect_address();
    let mut interval = backoff.initial;
    loop {
        let mut options = SocketOptions::default();
        options.connect_timeout(interval);
        let mut socket = zeromq::SubSocket::with_options(options);
        for prefix in &prefixes {
            if socket.subscribe(prefix).await.is_err() {
                return;
            }
        }
        let mut monitor = socket.monitor();
        let connected = tokio::select! {
            result = socket.connect(&address) => result.is_ok(),
            _ = events.closed() => return,
        };
        if !connected {
            tracing::debug!(endpoint = %endpoint, retry_ms = interval.as_millis() as u64, "publisher not reachable yet");
            interval = (interval * 2).min(backoff.max);
            continue;
        }
        interval = backoff.initial;
        if let Endpoint::Tcp { host, port } = &endpoint {
            let host = connect_host(host);
            if let Ok(peers) = tokio::net::lookup_host((host, *port)).await {
                keepalive_connections(&peers.collect::<Vec<_>>(), &keepalive);
            }
        }
        if events.send(SubEvent::Connected(index)).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                biased;
                received = socket.recv() => match received {
                    Ok(message) => {
                        if events.send(SubEvent::Frames(index, message.into_vec())).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                },
                event = monitor.next() => match event {
                    Some(SocketEvent::Disconnected(_)) | None => break,
                    Some(_) => {}
                },
                _ = events.closed() => return,
            }
        }
        // Drain what already arrived before giving the socket up.
        while let Some(Ok(message)) = futures::FutureExt::now_or_never(socket.recv()) {
            if events
                .send(SubEvent::Frames(index, message.into_vec()))
                .await
                .is_err()
            {
                return;
            }
        }
        if events.send(SubEvent::Disconnected(index)).await.is_err() {
            return;
        }
    }
}

/// A bound REP socket: the replay service answers one query at a time.
pub struct RepServer {
    socket: zeromq::RepSocket,
    endpoint: Endpoint,
}

impl RepServer {
    /// Binds a REP socket to `endpoint`.
    pub async fn bind(
        endpoint: &Endpoint,
        keepalive: &Keepalive,
    ) -> Result<RepServer, TransportError> {
        let mut socket = zeromq::RepSocket::new();
        let endpoint = bind_socket(&mut socket, endpoint, keepalive).await?;
        Ok(RepServer { socket, endpoint })
    }

    /// The address actually bound.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The next request's frames.
    pub async fn recv(&mut self) -> Result<Vec<Bytes>, TransportError> {
        self.socket
            .recv()
            .await
            .map(ZmqMessage::into_vec)
            .map_err(|e| TransportError::Recv(e.to_string()))
    }

    /// Answers the last request.
    pub async fn reply(&mut self, frames: Vec<Bytes>) -> Result<(), TransportError> {
        send_frames(&mut self.socket, frames).await
    }

    /// Unbinds and waits until the address is released.
    pub async fn close(self) {
        let _ = self.socket.close().await;
    }
}

/// One request over a fresh REQ socket: connect, send `request`, wait for
/// the multi-frame reply, all within `timeout`.
pub async fn request(
    endpoint: &Endpoint,
    request: Bytes,
    timeout: Duration,
) -> Result<Vec<Bytes>, TransportError> {
    let failed = |reason: String| TransportError::Connect {
        endpoint: endpoint.to_string(),
        reason,
    };
    let exchange = async {
        let mut options = SocketOptions::default();
        options.connect_timeout(timeout);
        let mut socket = zeromq::ReqSocket::with_options(options);
        socket
            .connect(&endpoint.connect_address())
            .await
            .map_err(|e| failed(e.to_string()))?;
        socket
            .send(ZmqMessage::from(request))
            .await
            .map_err(|e| failed(e.to_string()))?;
        socket
            .recv()
            .await
            .map(ZmqMessage::into_vec)
            .map_err(|e| failed(e.to_string()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| failed(format!("no answer within {} ms", timeout.as_millis())))?
}

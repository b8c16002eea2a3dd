//! A bound publisher's side of ZMTP 3.0: our own PUB socket.
//!
//! Sending matches the topic against each subscriber's prefixes and puts
//! the frames on that subscriber's queue; each subscriber has one task that
//! writes its queue to the connection in batches. Compared with the
//! `zeromq` crate's PUB (a fan-out task between the sender and the
//! per-peer writers, and a fixed 100,000-message queue per peer), this is
//! one hand-off per message, and both limits are ours to set:
//!
//! * **high-water mark**: at most `hwm` messages wait for one subscriber;
//!   beyond that, that subscriber's messages are dropped (and counted)
//!   while the others go on;
//! * **subscriber cap**: connections beyond `max_subscribers` are closed
//!   as soon as they are accepted.
//!
//! Closing hands what is queued to each connection before it returns (for
//! at most the linger time), where the crate drops it.

use super::zmtp::{self, Io};
use crate::endpoint::Endpoint;
use bytes::{Bytes, BytesMut};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Limits of a bound publisher.
#[derive(Debug, Clone, Copy)]
pub struct PubLimits {
    /// Most messages queued for one subscriber before its messages are
    /// dropped.
    pub hwm: usize,
    /// Most subscribers connected at once; more are refused.
    pub max_subscribers: usize,
    /// How long closing waits for queued messages to be written.
    pub linger: Duration,
}

impl Default for PubLimits {
    fn default() -> PubLimits {
        PubLimits {
            hwm: 100_000,
            max_subscribers: 10_000,
            linger: Duration::from_secs(1),
        }
    }
}

/// Counters of a bound publisher.
#[derive(Debug, Default)]
pub struct PubCounters {
    /// Subscribers connected now.
    pub subscribers: AtomicU64,
    /// Connections refused because `max_subscribers` were connected.
    pub refused: AtomicU64,
    /// Messages dropped for subscribers at their high-water mark.
    pub dropped: AtomicU64,
}

/// One connected subscriber, as the sender sees it.
struct Peer {
    prefixes: Arc<Mutex<Vec<Vec<u8>>>>,
    queue: mpsc::Sender<Vec<Bytes>>,
}

/// What the accept task and the sender share.
struct Shared {
    peers: Mutex<Vec<Peer>>,
    limits: PubLimits,
    counters: Arc<PubCounters>,
    writers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A listener for either transport.
pub(crate) enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

impl Listener {
    async fn accept(&self) -> io::Result<Io> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Ok(Io::Tcp(stream))
            }
            #[cfg(unix)]
            Listener::Unix(listener) => Ok(Io::Unix(listener.accept().await?.0)),
        }
    }
}

/// Our PUB socket, bound to one address.
pub(crate) struct Fanout {
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
    endpoint: Endpoint,
}

impl Fanout {
    /// Starts accepting subscribers on `listener`.
    pub(crate) fn start(
        listener: Listener,
        endpoint: Endpoint,
        limits: PubLimits,
        counters: Arc<PubCounters>,
    ) -> Fanout {
        let shared = Arc::new(Shared {
            peers: Mutex::new(Vec::new()),
            limits,
            counters,
            writers: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Fanout {
            shared,
            accept,
            endpoint,
        }
    }

    /// The address bound.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Queues `frames` for every subscriber whose prefixes match frame 0.
    pub(crate) fn send(&self, frames: Vec<Bytes>) {
        let Some(topic) = frames.first() else { return };
        let Ok(mut peers) = self.shared.peers.lock() else {
            return;
        };
        let mut gone = false;
        // Each match gets the frames once the next match is known: the
        // last one takes them, the others a copy of the handles (the bytes
        // are shared). No allocation beyond those copies.
        let mut previous: Option<usize> = None;
        for (index, peer) in peers.iter().enumerate() {
            let wanted = peer
                .prefixes
                .lock()
                .map(|p| p.iter().any(|prefix| topic.starts_with(prefix)))
                .unwrap_or(false);
            if wanted {
                if let Some(earlier) = previous.replace(index) {
                    gone |= self.offer(&peers[earlier], frames.clone());
                }
            }
        }
        if let Some(last) = previous {
            gone |= self.offer(&peers[last], frames);
        }
        if gone {
            peers.retain(|peer| !peer.queue.is_closed());
        }
    }

    /// Queues `frames` for `peer`, counting a drop at its high-water mark;
    /// true when the peer is gone.
    fn offer(&self, peer: &Peer, frames: Vec<Bytes>) -> bool {
        match peer.queue.try_send(frames) {
            Ok(()) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => true,
        }
    }

    /// Stops accepting, writes what is queued (for at most the linger
    /// time), and closes every connection.
    pub(crate) async fn close(mut self) {
        self.accept.abort();
        let _ = (&mut self.accept).await;
        if let Ok(mut peers) = self.shared.peers.lock() {
            peers.clear(); // Each writer ends once its queue is empty.
        }
        let writers = self
            .shared
            .writers
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        let linger = self.shared.limits.linger;
        let all = futures::future::join_all(writers);
        if tokio::time::timeout(linger, all).await.is_err() {
            tracing::debug!(endpoint = %self.endpoint, "closed with messages still queued");
        }
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(writers) = self.shared.writers.lock() {
            for writer in writers.iter() {
                writer.abort();
            }
        }
    }
}

async fn accept_loop(listener: Listener, shared: Arc<Shared>) {
    loop {
        let io = match listener.accept().await {
            Ok(io) => io,
            Err(error) => {
                // Out of descriptors and the like: wait a little, go on.
                tracing::warn!(%error, "cannot accept a subscriber");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let connected = shared.counters.subscribers.load(Ordering::Relaxed);
        if connected >= shared.limits.max_subscribers as u64 {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                limit = shared.limits.max_subscribers,
                "subscriber refused: too many connected"
            );
            drop(io);
            continue;
        }
        shared.counters.subscribers.fetch_add(1, Ordering::Relaxed);
        let task = tokio::spawn(serve(io, shared.clone()));
        if let Ok(mut writers) = shared.writers.lock() {
            writers.retain(|w| !w.is_finished());
            writers.push(task);
        }
    }
}

/// Serves one subscriber until it leaves or the publisher closes.
async fn serve(mut io: Io, shared: Arc<Shared>) {
    let result = serve_inner(&mut io, &shared).await;
    if let Err(error) = result {
        tracing::debug!(%error, "subscriber connection ended");
    }
    let _ = io.shutdown().await;
    shared.counters.subscribers.fetch_sub(1, Ordering::Relaxed);
}

async fn serve_inner(io: &mut Io, shared: &Shared) -> io::Result<()> {
    let mut buffer = BytesMut::with_capacity(256);
    let handshake = zmtp::handshake(io, &mut buffer, b"PUB", &[b"SUB", b"XSUB"]);
    tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))??;
    let prefixes = Arc::new(Mutex::new(Vec::new()));
    // Subscriptions may have come in the same read as the handshake.
    apply_subscriptions(&mut buffer, &prefixes)?;
    let (queue, mut pending) = mpsc::channel(shared.limits.hwm.max(1));
    if let Ok(mut peers) = shared.peers.lock() {
        peers.push(Peer {
            prefixes: prefixes.clone(),
            queue,
        });
    }
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut batch: Vec<Vec<Bytes>> = Vec::with_capacity(64);
    loop {
        tokio::select! {
            biased;
            read = reader.read_buf(&mut buffer) => {
                if read? == 0 {
                    return Ok(());
                }
                apply_subscriptions(&mut buffer, &prefixes)?;
            }
            count = pending.recv_many(&mut batch, 64) => {
                if count == 0 {
                    // The publisher closed: everything queued is written.
                    return writer.flush().await;
                }
                out.clear();
                for frames in batch.drain(..) {
                    let last = frames.len().saturating_sub(1);
                    for (n, frame) in frames.iter().enumerate() {
                        zmtp::put_frame(&mut out, if n < last { zmtp::MORE } else { 0 }, frame);
                    }
                }
                writer.write_all(&out).await?;
            }
        }
    }
}

/// Applies every whole subscription message or command in `buffer`:
/// ZMTP 3.0's `0x01`/`0x00` + prefix messages, and 3.1's SUBSCRIBE and
/// CANCEL commands.
fn apply_subscriptions(buffer: &mut BytesMut, prefixes: &Mutex<Vec<Vec<u8>>>) -> io::Result<()> {
    while let Some((flags, body)) = zmtp::take_frame(buffer, 64 * 1024)? {
        let change = if flags & zmtp::COMMAND != 0 {
            let name_len = usize::from(*body.first().unwrap_or(&0));
            match body.get(1..1 + name_len) {
                Some(b"SUBSCRIBE") => Some((true, body.slice(1 + name_len..))),
                Some(b"CANCEL") => Some((false, body.slice(1 + name_len..))),
                _ => None, // PING and the like: nothing to answer for 3.0.
            }
        } else {
            match body.first() {
                Some(1) => Some((true, body.slice(1..))),
                Some(0) => Some((false, body.slice(1..))),
                _ => None,
            }
        };
        let Some((subscribe, prefix)) = change else {
            continue;
        };
        let Ok(mut prefixes) = prefixes.lock() else {
            continue;
        };
        if subscribe {
            prefixes.push(prefix.to_vec());
        } else if let Some(at) = prefixes.iter().position(|p| p[..] == prefix[..]) {
            prefixes.swap_remove(at);
        }
    }
    Ok(())
}

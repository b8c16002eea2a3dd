//! A subscriber's side of ZMTP 3.0 (the NULL mechanism), spoken directly
//! over one TCP or IPC connection.
//!
//! Subscribers read it themselves instead of through the `zeromq` crate's
//! SUB socket, for three reasons the benchmarks showed:
//!
//! * **one reader polls every connection**: no task and no channel per
//!   endpoint between the socket and the reader;
//! * **small idle connections**: a connection is its stream, a read buffer
//!   that starts at 2 KiB and grows only while data arrives faster than it
//!   is read, and a few words of state;
//! * **control of the stream**: keepalive is set on the connection it opens
//!   (no search among the process's descriptors), and a peer announcing a
//!   frame larger than the configured limit has it skipped, not buffered.
//!
//! The peer may be libzmq (Python fedmsg) or the `zeromq` crate. We greet
//! as ZMTP 3.0, so both take subscriptions as messages (`0x01` + prefix).

use crate::config::Keepalive;
use crate::endpoint::Endpoint;
use crate::envelope::DecodeError;
use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Frame flag: more frames of this message follow.
pub(crate) const MORE: u8 = 0x01;
/// Frame flag: the size is 8 bytes.
const LONG: u8 = 0x02;
/// Frame flag: a command, not a message frame.
pub(crate) const COMMAND: u8 = 0x04;
/// Most frames one message may have (fedmsg's have two).
const MAX_FRAMES: usize = 16;
/// Largest command accepted (READY and PING are tiny).
const MAX_COMMAND: usize = 64 * 1024;
/// First read size; doubled while reads fill it, up to [`MAX_READ`].
const MIN_READ: usize = 2 * 1024;
/// Largest single read.
const MAX_READ: usize = 64 * 1024;

/// A TCP or Unix-domain stream.
pub(crate) enum Io {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            Io::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(unix)]
            Io::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            Io::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            Io::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

fn protocol(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

/// Our greeting: ZMTP 3.0, NULL mechanism, client.
fn greeting() -> [u8; 64] {
    let mut greeting = [0u8; 64];
    greeting[0] = 0xff;
    greeting[8] = 0x01; // libzmq's padding: an identity length of 0, plus 1
    greeting[9] = 0x7f;
    greeting[10] = 3;
    greeting[11] = 0;
    greeting[12..16].copy_from_slice(b"NULL");
    greeting
}

/// Appends one frame (flags and size chosen from `body`) to `out`.
pub(crate) fn put_frame(out: &mut Vec<u8>, flags: u8, body: &[u8]) {
    if body.len() > 255 {
        out.push(flags | LONG);
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    } else {
        out.push(flags);
        out.push(body.len() as u8);
    }
    out.extend_from_slice(body);
}

/// A READY command announcing a socket of type `socket_type`.
fn ready_command(socket_type: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(32);
    body.push(5);
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
    body.extend_from_slice(socket_type);
    let mut out = Vec::with_capacity(body.len() + 2);
    put_frame(&mut out, COMMAND, &body);
    out
}

/// The value of property `name` in a READY command's body.
fn property<'a>(mut properties: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    while let Some((&len, rest)) = properties.split_first() {
        let len = usize::from(len);
        let key = rest.get(..len)?;
        let size = rest.get(len..len + 4)?;
        let size = u32::from_be_bytes(size.try_into().ok()?) as usize;
        let value = rest.get(len + 4..len + 4 + size)?;
        if key.eq_ignore_ascii_case(name) {
            return Some(value);
        }
        properties = &rest[len + 4 + size..];
    }
    None
}

/// What the frame parser is in the middle of.
#[derive(Default)]
struct Partial {
    /// Frames of the message read so far.
    frames: Vec<Bytes>,
    /// How many frames it has had (also those not kept).
    count: usize,
    /// Why the message will be dropped, once its last frame is read.
    bad: Option<DecodeError>,
    /// Bytes of an oversized frame still to skip.
    skip: u64,
    /// Whether the skipped frame had more frames after it.
    skip_more: bool,
}

/// One subscribed connection to a publisher.
pub(crate) struct SubConnection {
    io: Io,
    buffer: BytesMut,
    read_size: usize,
    limit: usize,
    partial: Partial,
}

impl SubConnection {
    /// Connects to `endpoint`, greets, subscribes to every prefix of
    /// `prefixes` (`""` means everything), all within `timeout`. Frames
    /// larger than `limit` bytes are skipped and reported.
    pub(crate) async fn connect(
        endpoint: &Endpoint,
        prefixes: &[String],
        keepalive: &Keepalive,
        timeout: Duration,
        limit: usize,
    ) -> io::Result<SubConnection> {
        let setup = async {
            let io = open(endpoint, keepalive).await?;
            let mut connection = SubConnection {
                io,
                buffer: BytesMut::new(),
                read_size: MIN_READ,
                limit,
                partial: Partial::default(),
            };
            connection.handshake(prefixes).await?;
            Ok(connection)
        };
        tokio::time::timeout(timeout, setup)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))?
    }

    async fn handshake(&mut self, prefixes: &[String]) -> io::Result<()> {
        handshake(&mut self.io, &mut self.buffer, b"SUB", &[b"PUB", b"XPUB"]).await?;
        let mut subscriptions = Vec::new();
        for prefix in prefixes {
            let mut body = Vec::with_capacity(prefix.len() + 1);
            body.push(1);
            body.extend_from_slice(prefix.as_bytes());
            put_frame(&mut subscriptions, 0, &body);
        }
        self.io.write_all(&subscriptions).await?;
        self.io.flush().await
    }

    /// The next message: its frames, or why it was dropped. `Err` means
    /// the connection is gone (closed, reset, or broke the protocol).
    #[allow(clippy::type_complexity)]
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Result<Vec<Bytes>, DecodeError>>> {
        loop {
            if let Some(message) = self.parse()? {
                return Poll::Ready(Ok(message));
            }
            if self.buffer.capacity() - self.buffer.len() < self.read_size / 2 {
                self.buffer.reserve(self.read_size);
            }
            let spare = self.buffer.capacity() - self.buffer.len();
            let read = std::task::ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut self.io),
                cx,
                &mut self.buffer
            ))?;
            if read == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            if read == spare && self.read_size < MAX_READ {
                self.read_size *= 2;
            }
        }
    }

    /// Takes the next whole message out of the buffer, if it holds one.
    #[allow(clippy::type_complexity)]
    fn parse(&mut self) -> io::Result<Option<Result<Vec<Bytes>, DecodeError>>> {
        let partial = &mut self.partial;
        loop {
            if partial.skip > 0 {
                let n = partial.skip.min(self.buffer.len() as u64);
                self.buffer.advance(n as usize);
                partial.skip -= n;
                if partial.skip > 0 {
                    return Ok(None);
                }
                if !partial.skip_more {
                    return Ok(Some(Err(finish_bad(partial))));
                }
                continue;
            }
            let Some((flags, header, size)) = header(&self.buffer) else {
                return Ok(None);
            };
            let command = flags & COMMAND != 0;
            if !command && size > self.limit as u64 {
                self.buffer.advance(header);
                partial.count += 1;
                partial.frames.clear();
                partial.bad.get_or_insert(DecodeError::TooLarge {
                    size: usize::try_from(size).unwrap_or(usize::MAX),
                    limit: self.limit,
                });
                partial.skip = size;
                partial.skip_more = flags & MORE != 0;
                continue;
            }
            let max = if command { MAX_COMMAND } else { self.limit };
            let Some((flags, frame)) = take_frame(&mut self.buffer, max)? else {
                return Ok(None);
            };
            if command {
                continue; // PING, or properties after the handshake.
            }
            let more = flags & MORE != 0;
            partial.count += 1;
            if partial.bad.is_none() {
                if partial.frames.len() < MAX_FRAMES {
                    partial.frames.push(frame);
                } else {
                    partial.frames.clear();
                    partial.bad = Some(DecodeError::FrameCount(0));
                }
            }
            if !more {
                if partial.bad.is_some() {
                    return Ok(Some(Err(finish_bad(partial))));
                }
                partial.count = 0;
                return Ok(Some(Ok(std::mem::take(&mut partial.frames))));
            }
        }
    }
}

/// Greets the peer as a `socket_type` socket and reads its greeting and
/// READY, which must name one of `peer_types`. What the peer sent after
/// its READY stays in `buffer`.
pub(crate) async fn handshake(
    io: &mut Io,
    buffer: &mut BytesMut,
    socket_type: &[u8],
    peer_types: &[&[u8]],
) -> io::Result<()> {
    let mut hello = greeting().to_vec();
    hello.extend_from_slice(&ready_command(socket_type));
    io.write_all(&hello).await?;
    while buffer.len() < 64 {
        if io.read_buf(buffer).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    let peer = buffer.split_to(64);
    if peer[0] != 0xff || peer[9] & 0x01 != 0x01 {
        return Err(protocol("the peer does not speak ZMTP"));
    }
    if peer[10] < 3 {
        return Err(protocol(format!("the peer speaks ZMTP {}.x", peer[10])));
    }
    let mechanism = &peer[12..32];
    if !mechanism.starts_with(b"NULL") || mechanism[4..].iter().any(|&b| b != 0) {
        let name = String::from_utf8_lossy(mechanism);
        return Err(protocol(format!(
            "the peer wants security mechanism {:?}",
            name.trim_end_matches('\0')
        )));
    }
    let command = loop {
        if let Some((flags, body)) = take_frame(buffer, MAX_COMMAND)? {
            if flags & COMMAND == 0 {
                return Err(protocol("expected a command frame"));
            }
            break body;
        }
        if io.read_buf(buffer).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    };
    let name_len = usize::from(*command.first().unwrap_or(&0));
    let name = command.get(1..1 + name_len).unwrap_or_default();
    match name {
        b"READY" => {
            let found = property(&command[1 + name_len..], b"Socket-Type");
            if !found.is_some_and(|t| peer_types.contains(&t)) {
                let found = found.map(String::from_utf8_lossy).unwrap_or_default();
                return Err(protocol(format!(
                    "the peer is a {found:?} socket, which does not pair with {}",
                    String::from_utf8_lossy(socket_type)
                )));
            }
            Ok(())
        }
        b"ERROR" => {
            let reason = command.get(1 + name_len + 1..).unwrap_or_default();
            Err(protocol(format!(
                "the peer refused: {}",
                String::from_utf8_lossy(reason)
            )))
        }
        other => Err(protocol(format!(
            "expected READY, got {:?}",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// Takes one whole frame (flags, body) off the front of `buffer`, if it
/// holds one; a frame larger than `max` is a protocol error.
pub(crate) fn take_frame(buffer: &mut BytesMut, max: usize) -> io::Result<Option<(u8, Bytes)>> {
    let Some((flags, header, size)) = header(buffer) else {
        return Ok(None);
    };
    if size > max as u64 {
        return Err(protocol(format!(
            "a frame of {size} bytes, expected at most {max}"
        )));
    }
    let total = header + size as usize;
    if buffer.len() < total {
        buffer.reserve(total - buffer.len());
        return Ok(None);
    }
    buffer.advance(header);
    Ok(Some((flags, buffer.split_to(size as usize).freeze())))
}

/// Ends a message that is being dropped, returning why.
fn finish_bad(partial: &mut Partial) -> DecodeError {
    let count = std::mem::take(&mut partial.count);
    partial.frames.clear();
    match partial.bad.take() {
        Some(DecodeError::FrameCount(_)) | None => DecodeError::FrameCount(count),
        Some(other) => other,
    }
}

/// A frame header at the start of `buffer`: flags, header length, body size.
fn header(buffer: &[u8]) -> Option<(u8, usize, u64)> {
    let flags = *buffer.first()?;
    if flags & LONG != 0 {
        let size = u64::from_be_bytes(buffer.get(1..9)?.try_into().ok()?);
        Some((flags, 9, size))
    } else {
        Some((flags, 2, u64::from(*buffer.get(1)?)))
    }
}

/// Opens the stream, with keepalive on TCP.
async fn open(endpoint: &Endpoint, keepalive: &Keepalive) -> io::Result<Io> {
    match endpoint {
        Endpoint::Tcp { host, port } => {
            let host = super::connect_host(host);
            let stream = tokio::net::TcpStream::connect((host, *port)).await?;
            stream.set_nodelay(true)?;
            if keepalive.enabled {
                let params = socket2::TcpKeepalive::new()
                    .with_time(keepalive.idle)
                    .with_interval(keepalive.interval)
                    .with_retries(keepalive.count);
                socket2::SockRef::from(&stream).set_tcp_keepalive(&params)?;
            }
            Ok(Io::Tcp(stream))
        }
        #[cfg(unix)]
        Endpoint::Ipc(path) => Ok(Io::Unix(tokio::net::UnixStream::connect(path).await?)),
        #[cfg(not(unix))]
        Endpoint::Ipc(path) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("ipc://{path} needs a Unix system"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_found_by_name() {
        let ready = ready_command(b"SUB");
        let body = &ready[2..];
        assert_eq!(&body[..6], b"\x05READY");
        assert_eq!(property(&body[6..], b"socket-type"), Some(&b"SUB"[..]));
        assert_eq!(property(&body[6..], b"Identity"), None);
        assert_eq!(property(b"\x05Bad", b"Bad"), None);
    }

    #[test]
    fn frames_use_the_long_form_past_255_bytes() {
        let mut out = Vec::new();
        put_frame(&mut out, MORE, &[7; 255]);
        assert_eq!(&out[..2], &[MORE, 255]);
        out.clear();
        put_frame(&mut out, 0, &[7; 256]);
        assert_eq!(out[0], LONG);
        assert_eq!(&out[1..9], &256u64.to_be_bytes());
        assert_eq!(header(&out), Some((LONG, 9, 256)));
        assert_eq!(header(&out[..5]), None);
    }
}

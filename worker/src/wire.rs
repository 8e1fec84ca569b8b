//! The socket of one connection as hyper sees it.
//!
//! Reads go straight to the socket and are reported to the connection's
//! bookkeeping. Writes are gathered in a buffer of our own and sent when the
//! connection task has nothing more to do for now (see [`Wire::poll_send`]):
//! the responses to a batch of pipelined requests leave in one write, as
//! hyper's `pipeline_flush` would do, but the bytes live here rather than
//! inside hyper's connection. hyper drops its buffer with the connection when
//! a later request in the same read turns out to be malformed, and the
//! responses it had already produced were lost with it; ours outlives the
//! connection, so every response produced reaches the client before the
//! socket closes.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Writes at least this large go to the socket directly when nothing is
/// waiting before them: copying a large body only to send it at once would
/// be waste, and pipelining gains nothing for it.
const PASS_THROUGH: usize = 64 * 1024;
/// Gathered bytes past this are sent before more are accepted, so a client
/// that pipelines without reading cannot make the buffer grow without bound.
const GATHER_MAX: usize = 256 * 1024;
/// A buffer that grew past this for a large batch is given back once sent;
/// an idle connection should not keep it.
const KEEP_CAPACITY: usize = 16 * 1024;

/// What is seen of the bytes that arrive.
pub(crate) trait ReadObserver {
    /// `bytes` were read; empty means the peer closed its side.
    fn on_read(&self, bytes: &[u8]);
}

/// The socket, shared by hyper's connection (through [`ConnIo`]) and the
/// connection task, which sends what is gathered and closes the socket after
/// hyper is done with it.
pub(crate) struct Wire {
    stream: RefCell<TcpStream>,
    /// Bytes written by hyper and not yet sent.
    out: RefCell<Vec<u8>>,
    /// Where in `out` hyper's latest write began: the automatic response
    /// hyper writes for a malformed request is that write, and the
    /// connection task replaces it with one in the API's JSON shape.
    last_write_start: Cell<usize>,
    /// A send failed: the connection is dead, and hyper hears so on its next
    /// read or write.
    failed: Cell<Option<io::ErrorKind>>,
    /// The last attempt to write to the socket found it full: bytes are
    /// waiting, here or in hyper's buffer.
    blocked: Cell<bool>,
    /// Bytes read from the socket that the next reader must see first: the
    /// start of a connection, read to tell HTTP/2 from HTTP/1.1, or what a
    /// set-aside hyper connection had read and not parsed.
    prefix: RefCell<Bytes>,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Rc<Self> {
        Rc::new(Self {
            stream: RefCell::new(stream),
            out: RefCell::new(Vec::new()),
            last_write_start: Cell::new(0),
            failed: Cell::new(None),
            blocked: Cell::new(false),
            prefix: RefCell::new(Bytes::new()),
        })
    }

    /// Ready when the socket has something to read (or has failed or
    /// closed), without reading it: a connection waits here with no buffer.
    /// Bytes kept by [`Wire::unread`] do not count: they are not news.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.borrow().poll_read_ready(cx)
    }

    /// The client's address (a system call: for the rare caller).
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.stream.borrow().peer_addr().ok()
    }

    /// Reads what has arrived into `buf` without waiting; `WouldBlock` when
    /// nothing has.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.borrow().try_read(buf)
    }

    /// Keeps `bytes`, read from the socket, for the next reader: they come
    /// after any kept before and before anything still in the socket.
    pub fn unread(&self, bytes: &[u8]) {
        let mut prefix = self.prefix.borrow_mut();
        if prefix.is_empty() {
            *prefix = Bytes::copy_from_slice(bytes);
        } else {
            let mut joined = Vec::with_capacity(prefix.len() + bytes.len());
            joined.extend_from_slice(&prefix);
            joined.extend_from_slice(bytes);
            *prefix = joined.into();
        }
    }

    /// The bytes kept for the next reader (see [`Wire::unread`]).
    pub fn unread_bytes(&self) -> Bytes {
        self.prefix.borrow().clone()
    }

    /// True when everything written has left: nothing gathered, and the
    /// last write to the socket did not find it full.
    pub fn all_sent(&self) -> bool {
        !self.blocked.get() && self.out.borrow().is_empty()
    }

    /// Gives back the memory an idle connection does not need.
    pub fn shrink(&self) {
        let mut out = self.out.borrow_mut();
        if out.is_empty() {
            *out = Vec::new();
            self.last_write_start.set(0);
        }
    }

    /// Sends what is gathered. Ready once nothing is left (or the socket
    /// failed, which is remembered); Pending with a wake-up registered when
    /// the socket is full.
    pub fn poll_send(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(kind) = self.failed.get() {
            return Poll::Ready(Err(kind.into()));
        }
        let mut out = self.out.borrow_mut();
        if out.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let mut stream = self.stream.borrow_mut();
        let mut sent = 0;
        let result = loop {
            match Pin::new(&mut *stream).poll_write(cx, &out[sent..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    sent += n;
                    if sent == out.len() {
                        break Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(error)) => break Poll::Ready(Err(error)),
                Poll::Pending => break Poll::Pending,
            }
        };
        self.blocked.set(result.is_pending());
        match &result {
            Poll::Ready(Ok(())) => {
                out.clear();
                if out.capacity() > KEEP_CAPACITY {
                    *out = Vec::new();
                }
            }
            Poll::Ready(Err(error)) => {
                self.failed.set(Some(error.kind()));
                *out = Vec::new();
            }
            Poll::Pending => {
                out.drain(..sent);
            }
        }
        self.last_write_start.set(out.len());
        result
    }

    /// Sends what is gathered, waiting for the socket as needed.
    pub async fn send(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_send(cx)).await
    }

    /// Takes back hyper's latest write if it is a whole response head with
    /// no body, returning its status code. hyper's connection must be gone:
    /// this is for replacing the bare automatic response it writes for a
    /// request it could not parse.
    pub fn take_bare_response(&self) -> Option<u16> {
        let mut out = self.out.borrow_mut();
        let start = self.last_write_start.get();
        let last = out.get(start..)?;
        // "HTTP/1.1 400 Bad Request\r\n...\r\n\r\n", with no body.
        let status = last.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
        let status = std::str::from_utf8(status).ok()?.parse::<u16>().ok()?;
        let head_end = last.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        // Only the statuses hyper answers parse errors with, and only a
        // head that declares no body, can be hyper's automatic response.
        let bare = last.windows(19).any(|w| w.eq_ignore_ascii_case(b"content-length: 0\r\n"));
        if head_end != last.len() || !bare || !matches!(status, 400 | 414 | 431) {
            return None;
        }
        out.truncate(start);
        Some(status)
    }

    /// Adds bytes of our own after what hyper wrote.
    pub fn push(&self, bytes: &[u8]) {
        self.out.borrow_mut().extend_from_slice(bytes);
    }

    /// Closes our sending side (FIN) once everything gathered is sent.
    pub async fn shutdown(&self) -> io::Result<()> {
        self.send().await?;
        std::future::poll_fn(|cx| Pin::new(&mut *self.stream.borrow_mut()).poll_shutdown(cx)).await
    }

    /// Reads and discards what arrives, until the peer closes, nothing has
    /// arrived for `idle`, or `max` bytes were read.
    pub async fn discard_input(&self, idle: std::time::Duration, max: usize) {
        // On the heap, and only now: a buffer in this future would be part of
        // every connection's task for its whole life.
        let mut scratch = vec![0u8; 4096];
        let mut total = 0;
        while total < max {
            let read = std::future::poll_fn(|cx| {
                let mut buf = ReadBuf::new(&mut scratch);
                match Pin::new(&mut *self.stream.borrow_mut()).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
                    Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                    Poll::Pending => Poll::Pending,
                }
            });
            match tokio::time::timeout(idle, read).await {
                Ok(Ok(n)) if n > 0 => total += n,
                _ => return,
            }
        }
    }
}

/// hyper's handle on the [`Wire`].
pub(crate) struct ConnIo<O> {
    pub wire: Rc<Wire>,
    pub observer: Rc<O>,
}

impl<O: ReadObserver> AsyncRead for ConnIo<O> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(kind) = self.wire.failed.get() {
            return Poll::Ready(Err(kind.into()));
        }
        {
            // Already seen by the observer when it was first read.
            let mut prefix = self.wire.prefix.borrow_mut();
            if !prefix.is_empty() {
                let n = prefix.len().min(buf.remaining());
                buf.put_slice(&prefix[..n]);
                if n == prefix.len() {
                    // Not an empty view of the old buffer, which would keep
                    // it allocated for the rest of the connection's life.
                    *prefix = Bytes::new();
                } else {
                    bytes::Buf::advance(&mut *prefix, n);
                }
                return Poll::Ready(Ok(()));
            }
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut *self.wire.stream.borrow_mut()).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            self.observer.on_read(&buf.filled()[before..]);
        }
        poll
    }
}

impl<O> ConnIo<O> {
    /// Gathers `bufs` (or sends them at once when they are large and
    /// nothing waits before them).
    fn write(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if let Some(kind) = self.wire.failed.get() {
            return Poll::Ready(Err(kind.into()));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let gathered = self.wire.out.borrow().len();
        if gathered + total > GATHER_MAX || (total >= PASS_THROUGH && gathered == 0) {
            // The rare path: large writes, or a client that does not read.
            if gathered > 0 {
                std::task::ready!(self.wire.poll_send(cx))?;
            }
            if total >= PASS_THROUGH {
                let poll = Pin::new(&mut *self.wire.stream.borrow_mut()).poll_write_vectored(cx, bufs);
                self.wire.blocked.set(poll.is_pending());
                return poll;
            }
        }
        let mut out = self.wire.out.borrow_mut();
        self.wire.last_write_start.set(out.len());
        for buf in bufs {
            out.extend_from_slice(buf);
        }
        Poll::Ready(Ok(total))
    }
}

impl<O> AsyncWrite for ConnIo<O> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        // hyper then flattens each response into its own buffer and hands it
        // over in one write, as it did with `pipeline_flush`. Queuing bodies
        // beside heads would save copying a few hundred bytes but costs more
        // in bookkeeping: 12% more CPU per pipelined plaintext request,
        // measured with bench/ab.sh.
        false
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Deferred: the connection task sends once hyper has done all it can
        // with the bytes it has read (see `Wire::poll_send`).
        match self.wire.failed.get() {
            Some(kind) => Poll::Ready(Err(kind.into())),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Deferred too: hyper shuts down before it reports a parse error,
        // and the connection task must still be able to replace hyper's
        // bare answer to it. The task sends, shuts down and lingers once
        // hyper's connection has ended (`Wire::shutdown`).
        match self.wire.failed.get() {
            Some(kind) => Poll::Ready(Err(kind.into())),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Nobody;
    impl ReadObserver for Nobody {
        fn on_read(&self, _: &[u8]) {}
    }

    async fn pair() -> (Rc<Wire>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Wire::new(server), client)
    }

    #[tokio::test]
    async fn writes_are_gathered_until_sent_and_survive_the_writer() {
        let (wire, mut client) = pair().await;
        let mut io = ConnIo { wire: wire.clone(), observer: Rc::new(Nobody) };
        io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
        io.flush().await.unwrap();
        // hyper's handle is gone, as after a parse error; the bytes are not.
        drop(io);
        wire.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    }

    #[tokio::test]
    async fn only_a_bare_automatic_response_is_taken_back() {
        let (wire, _client) = pair().await;
        let mut io = ConnIo { wire: wire.clone(), observer: Rc::new(Nobody) };
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        io.write_all(ok).await.unwrap();
        // A response with a body is never taken.
        assert_eq!(wire.take_bare_response(), None);
        io.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n").await.unwrap();
        assert_eq!(wire.take_bare_response(), Some(400));
        assert_eq!(*wire.out.borrow(), ok.to_vec());
        // An application's empty 200 is not hyper's doing.
        io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        assert_eq!(wire.take_bare_response(), None);
    }
}

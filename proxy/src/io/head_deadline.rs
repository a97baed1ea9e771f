//! The request-head deadline of an HTTP/1 client connection, apart from its idle time.
//!
//! hyper's own header timeout starts as soon as a connection waits for a request, so it
//! cannot tell a client trickling a request head a byte a second (to hold the connection:
//! "slow headers") from an idle keep-alive connection. Here the clock starts at the first
//! byte read while no request is in flight and stops when the head is parsed (the
//! service is called); a request is in flight until its response body is gone. The
//! connection's serve loop closes the connection when [`HeadClock::expired`] resolves.
//!
//! The request path only stores atomics (a first version notified the serve loop on
//! every head and cost ~10% more instructions per HTTP/1 request): the deadline is
//! checked every half of it, so a late head is closed between 1× and 1.5× the limit.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The shared state of one connection's head clock.
#[derive(Debug)]
struct Inner {
    /// The clock's origin.
    origin: Instant,
    /// When the first byte of the current request head arrived, in nanoseconds after
    /// `origin`, plus one (0: no head pending).
    started: AtomicU64,
    /// Between the service's call and the end of its response body.
    in_request: AtomicBool,
}

/// One connection's head clock: the serve loop's side.
#[derive(Debug, Clone)]
pub struct HeadClock(Arc<Inner>);

/// The connection's IO, starting the clock when a request head begins.
#[derive(Debug)]
pub struct Watched<I> {
    io: I,
    clock: Arc<Inner>,
}

/// Wraps `io`: the IO to serve, and its clock.
pub fn watch<I>(io: I) -> (Watched<I>, HeadClock) {
    let inner = Arc::new(Inner {
        origin: Instant::now(),
        started: AtomicU64::new(0),
        in_request: AtomicBool::new(false),
    });
    (
        Watched {
            io,
            clock: inner.clone(),
        },
        HeadClock(inner),
    )
}

impl Inner {
    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }
}

impl HeadClock {
    /// The head was parsed: the request is in flight, the clock stops.
    pub fn request_started(&self) {
        self.0.in_request.store(true, Ordering::Release);
        self.0.started.store(0, Ordering::Release);
    }

    /// The response body is gone: the next byte begins a new head.
    pub fn request_done(&self) {
        self.0.in_request.store(false, Ordering::Release);
    }

    /// Resolves when a request head has been arriving for longer than `limit` (seen at
    /// the next check, every `limit / 2`).
    pub async fn expired(&self, limit: Duration) {
        let limit_ns = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        let tick = (limit / 2).max(Duration::from_millis(1));
        loop {
            tokio::time::sleep(tick).await;
            let started = self.0.started.load(Ordering::Acquire);
            if started != 0 && self.0.now().saturating_sub(started) >= limit_ns {
                return;
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before
            && !self.clock.in_request.load(Ordering::Acquire)
            && self.clock.started.load(Ordering::Acquire) == 0
        {
            let now = self.clock.now();
            self.clock.started.store(now, Ordering::Release);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A response body that tells the clock when it is gone (sent, or dropped with the
/// connection).
#[derive(Debug)]
pub struct Tracked<B> {
    body: B,
    clock: HeadClock,
}

impl<B> Tracked<B> {
    /// `body`, reporting to `clock` when dropped.
    pub fn new(body: B, clock: HeadClock) -> Self {
        Tracked { body, clock }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.clock.request_done();
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn the_clock_runs_from_a_heads_first_byte_until_the_request_starts() {
        let (mut client, server) = tokio::io::duplex(64);
        let (mut io, clock) = watch(server);
        let limit = Duration::from_secs(10);
        // Idle: no deadline, however long.
        let idle = tokio::time::timeout(Duration::from_secs(60), clock.expired(limit)).await;
        assert!(idle.is_err(), "an idle connection has no head deadline");
        // A byte of a head starts it.
        client.write_all(b"G").await.unwrap();
        let mut b = [0u8; 8];
        let _ = io.read(&mut b).await.unwrap();
        let started = Instant::now();
        clock.expired(limit).await;
        let took = started.elapsed();
        assert!(took >= limit && took <= limit * 3 / 2, "{took:?}");
        // A parsed head stops it; bytes read in flight (a body) do not start it.
        clock.request_started();
        client.write_all(b"body").await.unwrap();
        let _ = io.read(&mut b).await.unwrap();
        let running = tokio::time::timeout(Duration::from_secs(60), clock.expired(limit)).await;
        assert!(running.is_err(), "a request in flight has no head deadline");
        // After the response, the next head starts it again.
        clock.request_done();
        client.write_all(b"G").await.unwrap();
        let _ = io.read(&mut b).await.unwrap();
        let again = tokio::time::timeout(Duration::from_secs(16), clock.expired(limit)).await;
        assert!(again.is_ok());
    }
}

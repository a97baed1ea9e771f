//! Idle detection for client connections that hyper does not time out itself (HTTP/2).
//!
//! The wrapper bumps a counter on every read or write; a checker wakes once per idle
//! period and calls the connection idle if the counter has not moved since its last look.
//! That costs one relaxed atomic add per I/O call and no clock reads, at the price of
//! closing somewhere between one and two idle periods after the last activity.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Counts I/O activity on the wrapped stream.
#[derive(Debug)]
pub struct Tracked<T> {
    io: T,
    activity: Arc<AtomicU64>,
}

/// Observes a [`Tracked`] stream's activity.
#[derive(Debug, Clone)]
pub struct Activity(Arc<AtomicU64>);

impl<T> Tracked<T> {
    /// Wraps `io`; the returned [`Activity`] watches it.
    pub fn new(io: T) -> (Self, Activity) {
        let activity = Arc::new(AtomicU64::new(0));
        (
            Tracked {
                io,
                activity: activity.clone(),
            },
            Activity(activity),
        )
    }

    fn bump(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
    }
}

impl Activity {
    /// Completes once a whole `period` passes with no I/O at all.
    pub async fn idle_for(&self, period: Duration) {
        let mut seen = self.0.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(period).await;
            let now = self.0.load(Ordering::Relaxed);
            if now == seen {
                return;
            }
            seen = now;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if polled.is_ready() {
            self.bump();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if polled.is_ready() {
            self.bump();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if polled.is_ready() {
            self.bump();
        }
        polled
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_a_quiet_period() {
        let (a, _b) = tokio::io::duplex(1024);
        let (mut tracked, activity) = Tracked::new(a);
        let period = Duration::from_secs(10);
        let writer = async {
            for _ in 0..5 {
                tracked.write_all(b"x").await.unwrap();
                tokio::time::sleep(Duration::from_secs(6)).await;
            }
        };
        let start = tokio::time::Instant::now();
        tokio::join!(writer, activity.idle_for(period));
        // Writes every 6 s for 30 s keep it busy; idleness is seen one to two periods later.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_secs(30), "{elapsed:?}");
        assert!(elapsed <= Duration::from_secs(50), "{elapsed:?}");
    }
}

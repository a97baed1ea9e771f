//! Opaque TCP: bytes in both directions, unchanged, with half-close passed through.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::client::{open, Transport};
use crate::metrics::{Direction, Metrics};
use crate::tls::Alpn;

/// Connects to `target` (over mutual TLS if `transport` says so) and copies bytes both
/// ways until both sides are done.
pub async fn forward<I>(
    mut client: I,
    target: SocketAddr,
    transport: Transport<'_>,
    connect_timeout: Duration,
    dir: Direction,
    metrics: &Metrics,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut upstream = match open(target, connect_timeout, transport, Alpn::Tcp).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "opaque connection: upstream unreachable");
            return;
        }
    };
    if let Err(e) = splice(&mut client, &mut upstream, dir, metrics).await {
        tracing::debug!(error = %e, %target, "opaque connection ended with an error");
    }
}

/// Copies both ways until both directions are closed, counting bytes as they pass so that
/// long-lived connections show up in the metrics while they are open.
pub async fn splice<A, B>(
    client: &mut A,
    server: &mut B,
    dir: Direction,
    metrics: &Metrics,
) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (from_client, from_server) = metrics.tcp_byte_counters(dir);
    let mut client = Counted {
        io: client,
        read: from_client,
    };
    let mut server = Counted {
        io: server,
        read: from_server,
    };
    tokio::io::copy_bidirectional(&mut client, &mut server)
        .await
        .map(|_| ())
}

/// Adds every byte read through it to a counter.
struct Counted<'a, T> {
    io: &'a mut T,
    read: IntCounter,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read.inc_by(n as u64);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}

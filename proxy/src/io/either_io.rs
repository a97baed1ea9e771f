//! One of two I/O types behind one type: a connection that is either plaintext or TLS,
//! decided per connection, served by code that is generic over its I/O.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `A` or `B`, reading and writing through whichever it holds.
#[derive(Debug)]
pub enum EitherIo<A, B> {
    /// The first kind (plaintext, in this crate).
    Left(A),
    /// The second kind (TLS).
    Right(B),
}

impl<A, B> AsyncRead for EitherIo<A, B>
where
    A: AsyncRead + Unpin,
    B: AsyncRead + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EitherIo::Left(a) => Pin::new(a).poll_read(cx, buf),
            EitherIo::Right(b) => Pin::new(b).poll_read(cx, buf),
        }
    }
}

impl<A, B> AsyncWrite for EitherIo<A, B>
where
    A: AsyncWrite + Unpin,
    B: AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EitherIo::Left(a) => Pin::new(a).poll_write(cx, buf),
            EitherIo::Right(b) => Pin::new(b).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EitherIo::Left(a) => Pin::new(a).poll_write_vectored(cx, bufs),
            EitherIo::Right(b) => Pin::new(b).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            EitherIo::Left(a) => a.is_write_vectored(),
            EitherIo::Right(b) => b.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EitherIo::Left(a) => Pin::new(a).poll_flush(cx),
            EitherIo::Right(b) => Pin::new(b).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EitherIo::Left(a) => Pin::new(a).poll_shutdown(cx),
            EitherIo::Right(b) => Pin::new(b).poll_shutdown(cx),
        }
    }
}

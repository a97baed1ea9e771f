//! Opening a transport to an endpoint: TCP, then mutual TLS when the endpoint's cluster
//! names the identity it must present.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::errors::ProxyError;
use crate::tls::{Alpn, TlsState};

/// Connects to `addr` within `timeout`, with Nagle off (the proxy writes whole frames).
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ProxyError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(ProxyError::ConnectTimeout(addr, timeout)),
        Ok(Err(source)) => Err(ProxyError::Connect { addr, source }),
        Ok(Ok(stream)) => {
            // A failure here only costs latency; the connection is still usable.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}

/// How to reach one endpoint: plaintext, or mutual TLS expecting an identity.
#[derive(Debug, Clone, Copy)]
pub struct Transport<'a> {
    /// The SPIFFE ID the endpoint must present; `None`: plaintext.
    pub identity: Option<&'a Arc<str>>,
    /// This proxy's TLS settings (`None`: it has no identity, so it talks plaintext).
    pub tls: Option<&'a Arc<TlsState>>,
}

impl<'a> Transport<'a> {
    /// Plaintext.
    pub const PLAIN: Transport<'static> = Transport {
        identity: None,
        tls: None,
    };

    /// The identity TLS will be spoken with, if any: a proxy without an identity of its
    /// own talks plaintext (a `mutual` server refuses it; `permissive` accepts it).
    pub fn tls_identity(&self) -> Option<&'a Arc<str>> {
        self.tls.and(self.identity)
    }
}

/// A connection to an endpoint, plaintext or TLS.
#[derive(Debug)]
pub enum UpstreamIo {
    /// TCP.
    Plain(TcpStream),
    /// TLS 1.3 over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

/// Connects and, if `transport` says so, completes the TLS handshake offering `alpn`.
pub async fn open(
    addr: SocketAddr,
    timeout: Duration,
    transport: Transport<'_>,
    alpn: Alpn,
) -> Result<UpstreamIo, ProxyError> {
    let (Some(expected), Some(tls)) = (transport.tls_identity(), transport.tls) else {
        return Ok(UpstreamIo::Plain(connect(addr, timeout).await?));
    };
    let config = tls
        .client_config(expected, alpn)
        .ok_or(ProxyError::NoIdentity(addr))?;
    let tcp = connect(addr, timeout).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(stream)) => {
            let kind = stream.get_ref().1.handshake_kind();
            tls.metrics().tls_handshake("outbound", kind, true);
            Ok(UpstreamIo::Tls(Box::new(stream)))
        }
        Ok(Err(e)) => {
            tls.metrics().tls_handshake("outbound", None, false);
            tracing::debug!(%addr, error = %e, expected = %expected, "TLS handshake failed");
            Err(ProxyError::Tls {
                addr,
                reason: e.to_string(),
            })
        }
        Err(_) => {
            tls.metrics().tls_handshake("outbound", None, false);
            Err(ProxyError::Tls {
                addr,
                reason: format!("no handshake within {timeout:?}"),
            })
        }
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }
}

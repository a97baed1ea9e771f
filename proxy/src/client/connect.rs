//! Opening a transport to an endpoint: TCP, then mutual TLS when the endpoint's cluster
//! names the identity it must present.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::errors::ProxyError;
use crate::io::either_io::EitherIo;
use crate::tls::{Alpn, TlsState};

/// Connects to `addr` within `timeout`, from `source` if given, with Nagle off (the proxy
/// writes whole frames).
pub async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, ProxyError> {
    let connecting = async {
        match source {
            None => TcpStream::connect(addr).await,
            Some(ip) => {
                let socket = match ip {
                    IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                    IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(addr).await
            }
        }
    };
    match tokio::time::timeout(timeout, connecting).await {
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
    /// The local address to connect from (`None`: the kernel's choice). The inbound side
    /// of a transparent sidecar connects to the app from
    /// [`INBOUND_SOURCE`](crate::intercept::INBOUND_SOURCE), which the redirection rules
    /// let through.
    pub source: Option<IpAddr>,
}

impl<'a> Transport<'a> {
    /// Plaintext.
    pub const PLAIN: Transport<'static> = Transport {
        identity: None,
        tls: None,
        source: None,
    };

    /// The identity TLS will be spoken with, if any: a proxy without an identity of its
    /// own talks plaintext (a `mutual` server refuses it; `permissive` accepts it).
    pub fn tls_identity(&self) -> Option<&'a Arc<str>> {
        self.tls.and(self.identity)
    }

    /// What a pooled connection must match besides the address: the identity it was
    /// verified as and the trust bundle generation it was verified under.
    pub fn pool_tag(&self) -> Option<(Arc<str>, u64)> {
        let tls = self.tls?;
        Some((self.identity?.clone(), tls.generation()))
    }
}

/// A connection to an endpoint: plaintext TCP, or TLS 1.3 over TCP.
pub type UpstreamIo = EitherIo<TcpStream, Box<TlsStream<TcpStream>>>;

/// Connects and, if `transport` says so, completes the TLS handshake offering `alpn`.
pub async fn open(
    addr: SocketAddr,
    timeout: Duration,
    transport: Transport<'_>,
    alpn: Alpn,
) -> Result<UpstreamIo, ProxyError> {
    let (Some(expected), Some(tls)) = (transport.tls_identity(), transport.tls) else {
        return Ok(EitherIo::Left(
            connect(addr, transport.source, timeout).await?,
        ));
    };
    let config = tls
        .client_config(expected, alpn)
        .ok_or(ProxyError::NoIdentity(addr))?;
    let tcp = connect(addr, transport.source, timeout).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
    let reason = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(stream)) => {
            let kind = stream.get_ref().1.handshake_kind();
            tls.metrics().security.handshake("outbound", kind, true);
            return Ok(EitherIo::Right(Box::new(stream)));
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no handshake within {timeout:?}"),
    };
    tls.metrics().security.handshake("outbound", None, false);
    tracing::debug!(%addr, %reason, expected = %expected, "TLS handshake failed");
    Err(ProxyError::Tls { addr, reason })
}

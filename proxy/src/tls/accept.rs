//! The inbound port's transport: mutual TLS, plaintext, or both, as the workload's mode
//! says; and who the peer is.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tandem_xds::domain::TlsMode;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::{Alpn, TlsState, ALPN_H2, ALPN_HTTP1, ALPN_TCP};
use crate::io::either_io::EitherIo;
use crate::io::prefixed::Prefixed;

/// TLS record type of a handshake message: the first byte of every ClientHello.
const TLS_HANDSHAKE: u8 = 0x16;

/// What the inbound side learned about a connection.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Whether it is mutual TLS.
    pub tls: bool,
    /// The client's SPIFFE ID (only with TLS).
    pub identity: Option<Arc<str>>,
    /// The client's service, as the `src_service` metric label shows it.
    pub service: Option<Arc<str>>,
    /// The protocol the client announced in ALPN, if any.
    pub alpn: Option<Alpn>,
    /// When the client's certificate expires (Unix s): the connection is closed
    /// gracefully then, so a long-lived connection never outlives the credential it was
    /// accepted with.
    pub not_after: Option<u64>,
}

/// An inbound connection after the transport step: plaintext (with any bytes read while
/// looking for a ClientHello), or terminated mutual TLS.
pub type InboundIo = EitherIo<Prefixed<TcpStream>, Box<TlsStream<Prefixed<TcpStream>>>>;

/// Why a connection was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Plaintext on a `mutual` port.
    #[error("plaintext connection refused: the inbound port requires mutual TLS")]
    Plaintext,
    /// The handshake failed (no client certificate, untrusted CA, TLS 1.2, ...).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// The client closed or sent nothing in time.
    #[error("client sent nothing")]
    Silent,
    /// This proxy holds no workload certificate yet.
    #[error("no workload certificate yet: mutual TLS cannot be terminated")]
    NoCertificate,
}

/// Applies `mode`. `tls` is `None` when this proxy has no identity: it cannot terminate
/// TLS, so it serves plaintext whatever the mode. A proxy that has an identity configured
/// but no certificate yet refuses TLS and, unless permissive, plaintext too: the window
/// before the first certificate must not be a window without mutual TLS.
pub async fn accept(
    mut stream: TcpStream,
    mode: TlsMode,
    tls: Option<&TlsState>,
    timeout: Duration,
) -> Result<(InboundIo, Peer), Refused> {
    let tls = match (mode, tls) {
        (TlsMode::Disabled, _) | (_, None) => {
            return Ok((
                EitherIo::Left(Prefixed::new(Bytes::new(), stream)),
                Peer::default(),
            ))
        }
        (_, Some(tls)) => tls,
    };
    let mut first = BytesMut::with_capacity(64);
    let got = tokio::time::timeout(timeout, stream.read_buf(&mut first)).await;
    let is_tls = first.first() == Some(&TLS_HANDSHAKE);
    let io = Prefixed::new(first.freeze(), stream);
    if !is_tls {
        let silent = !matches!(got, Ok(Ok(n)) if n > 0);
        return match mode {
            TlsMode::Permissive => Ok((EitherIo::Left(io), Peer::default())),
            _ if silent => Err(Refused::Silent),
            _ => Err(Refused::Plaintext),
        };
    }
    let server = tls.server_config().ok_or(Refused::NoCertificate)?;
    let handshake = tokio_rustls::TlsAcceptor::from(server).accept(io);
    let failed = |why: String| {
        tls.metrics().security.handshake("inbound", None, false);
        Refused::Handshake(why)
    };
    let stream = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Err(_) => return Err(failed(format!("no handshake within {timeout:?}"))),
    };
    let conn = stream.get_ref().1;
    tls.metrics()
        .security
        .handshake("inbound", conn.handshake_kind(), true);
    // One parse of the client's certificate (verified during the handshake) gives both
    // its identity and when the connection must end.
    let facts = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| crate::identity::cert::CertFacts::of(leaf.as_ref()))
        .unwrap_or_default();
    let trust_domain = tls.trust_domain().unwrap_or_default();
    let identity: Option<Arc<str>> = facts.spiffe_id(&trust_domain).map(Arc::from);
    let not_after = (facts.not_after > 0).then_some(facts.not_after);
    let alpn = match conn.alpn_protocol() {
        Some(ALPN_H2) => Some(Alpn::Http2),
        Some(ALPN_HTTP1) => Some(Alpn::Http1),
        Some(ALPN_TCP) => Some(Alpn::Tcp),
        _ => None,
    };
    Ok((
        EitherIo::Right(Box::new(stream)),
        Peer {
            tls: true,
            service: identity.as_deref().and_then(service_of).map(Arc::from),
            identity,
            alpn,
            not_after,
        },
    ))
}

/// The `src_service` label of a SPIFFE ID: the service account, with its namespace unless
/// that is `default` (bounded by the mesh's workloads, not by what clients send).
fn service_of(id: &str) -> Option<String> {
    let ns = tandem_xds::domain::spiffe_namespace(id)?;
    let sa = id.rsplit_once("/sa/")?.1;
    Some(if ns == tandem_xds::domain::DEFAULT_NAMESPACE {
        sa.to_string()
    } else {
        format!("{sa}.{ns}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A proxy configured with an identity that has no certificate yet.
    fn pending() -> TlsState {
        let metrics = crate::metrics::Metrics::new().unwrap();
        TlsState::new(Arc::new(crate::identity::IdentityStore::default()), metrics)
    }

    async fn connected(first: &'static [u8]) -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(first).await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        listener.accept().await.unwrap().0
    }

    #[tokio::test]
    async fn before_the_first_certificate_nothing_gets_through_a_mutual_port() {
        let tls = pending();
        let t = Duration::from_secs(1);
        let plain = accept(
            connected(b"GET / HTTP/1.1\r\n").await,
            TlsMode::Mutual,
            Some(&tls),
            t,
        );
        assert!(matches!(plain.await, Err(Refused::Plaintext)));
        let hello = accept(
            connected(b"\x16\x03\x01").await,
            TlsMode::Mutual,
            Some(&tls),
            t,
        );
        assert!(matches!(hello.await, Err(Refused::NoCertificate)));
        // Permissive still serves plaintext; without an identity, everything is plaintext.
        let permissive = accept(
            connected(b"GET /").await,
            TlsMode::Permissive,
            Some(&tls),
            t,
        );
        assert!(matches!(permissive.await, Ok((EitherIo::Left(_), _))));
        let none = accept(connected(b"GET /").await, TlsMode::Mutual, None, t);
        assert!(matches!(none.await, Ok((EitherIo::Left(_), _))));
    }
}

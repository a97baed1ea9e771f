//! The proxy's side of the control plane's secure xDS port: TLS 1.3 with the workload
//! certificate, the control plane's certificate checked against the trust bundle and its
//! address. The control plane then knows which workload the stream belongs to and serves
//! it only its own inbound policy.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::TlsState;
use crate::identity::request::split_host;

/// How long connecting plus the TLS handshake may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A tonic connector that opens mutual TLS to `addr` (`host:port`).
#[derive(Debug, Clone)]
pub struct SecureConnector {
    addr: String,
    tls: Arc<TlsState>,
}

impl SecureConnector {
    /// Connects to `addr` with `tls`'s workload certificate.
    pub fn new(addr: String, tls: Arc<TlsState>) -> Self {
        SecureConnector { addr, tls }
    }

    /// `https://host:port`, for logs and the admin port.
    pub fn describe(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The URI tonic is given: plain `http` because TLS happens in this connector, not in
    /// tonic (which is built without TLS).
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl tower_service::Service<http::Uri> for SecureConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let (addr, tls) = (self.addr.clone(), self.tls.clone());
        Box::pin(async move {
            let config = tls.control_plane_config().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotConnected, "no workload certificate yet")
            })?;
            let (host, _) = split_host(&addr);
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let connect = async {
                let tcp = TcpStream::connect(&addr).await?;
                let _ = tcp.set_nodelay(true);
                tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
            };
            // A blackholed control plane must not stall reconnects for the OS's minutes.
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no TLS connection to {addr} within {CONNECT_TIMEOUT:?}"),
                    )
                })??;
            Ok(TokioIo::new(stream))
        })
    }
}

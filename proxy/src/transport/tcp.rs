//! Opaque TCP: bytes in both directions, unchanged, with half-close passed through.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::client::{open, Transport};
use crate::io::splice::splice;
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

//! Opaque TCP: bytes in both directions, unchanged, with half-close passed through.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::client::connect;
use crate::metrics::{Direction, Metrics};

/// Connects to `target` and copies bytes both ways until both sides are done.
pub async fn forward<I>(
    mut client: I,
    target: SocketAddr,
    connect_timeout: Duration,
    dir: Direction,
    metrics: &Metrics,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut upstream = match connect(target, connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "opaque connection: upstream unreachable");
            return;
        }
    };
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((from_client, from_server)) => metrics.tcp_bytes(dir, from_client, from_server),
        Err(e) => tracing::debug!(error = %e, %target, "opaque connection ended with an error"),
    }
}

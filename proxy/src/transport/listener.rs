//! Accept loops: each listener hands its connections, round robin, to the workers.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::workers::Workers;
use crate::drain::Watch;
use crate::forward::ListenerKind;

/// Accepts connections until a drain starts (or `stop` fires), handing each to a worker.
pub async fn accept_loop(
    listener: TcpListener,
    kind: ListenerKind,
    workers: Arc<Workers>,
    mut watch: Watch,
    stop: Option<oneshot::Receiver<()>>,
) {
    let stopped = async move {
        match stop {
            Some(rx) => {
                let _ = rx.await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            _ = watch.signaled() => break,
            _ = &mut stopped => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _peer)) => workers.dispatch(stream, kind.clone(), watch.clone()),
            Err(e) => {
                // Typically EMFILE: back off briefly instead of spinning on the error.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The IPv6 twin of an IPv4 listener address, for a transparent sidecar whose app also
/// speaks IPv6: `127.0.0.1:P` → `[::1]:P` (where REDIRECT sends local IPv6 connections),
/// `0.0.0.0:P` → `[::]:P`; `None` for any other address.
pub fn ipv6_twin(addr: SocketAddr) -> Option<SocketAddr> {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            Some(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()))
        }
        IpAddr::V4(ip) if ip.is_unspecified() => {
            Some(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), addr.port()))
        }
        _ => None,
    }
}

/// Binds an IPv6-only listener (so it does not clash with the IPv4 one on the same port).
pub fn bind_ipv6_only(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_only_v6(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

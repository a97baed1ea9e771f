//! One accepted connection on its worker: on the inbound port, the workload's TLS mode
//! first ([`crate::tls::accept`]); then protocol detection, and HTTP ([`super::http_server`])
//! or opaque TCP ([`super::tcp`]).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::detect::{detect, Detected};
use super::{http_server, tcp};
use crate::client::{Transport, WireProtocol};
use crate::config::Protocol;
use crate::drain::Watch;
use crate::forward::{ConnContext, Forwarder, ListenerKind};
use crate::inbound::authz::{Caller, Decision};
use crate::intercept::original_dst;
use crate::io::prefixed::Prefixed;
use crate::snapshot::Snapshot;
use crate::tls::accept::{accept, Peer, Refused};
use crate::tls::Alpn;

/// Detects the protocol of one connection and serves it as HTTP or opaque TCP; on the
/// inbound port, first applies the workload's TLS mode. In transparent mode an
/// intercepted connection first learns where it was going (`SO_ORIGINAL_DST`): outbound,
/// that decides its destination; inbound, the app port.
pub async fn serve_connection(
    stream: TcpStream,
    kind: ListenerKind,
    fwd: Arc<Forwarder>,
    watch: Watch,
) {
    let _open = fwd.metrics.connection(kind.direction());
    let _ = stream.set_nodelay(true);
    let snapshot = fwd.store.load();
    let original_dst = match (fwd.transparent, &kind) {
        (false, _) => None,
        (true, ListenerKind::Inbound) => inbound_target(&stream),
        (true, _) => original_dst(&stream),
    };
    let conn = Conn {
        kind,
        watch,
        peer: Peer::default(),
        local_port: 0,
        tcp_target: None,
        original_dst,
    };
    match &conn.kind {
        ListenerKind::Inbound => inbound(stream, conn, fwd, snapshot).await,
        ListenerKind::Outbound => match original_dst {
            Some(orig) => intercepted(stream, orig, conn, fwd, snapshot).await,
            None => serve_io(stream, Protocol::Detect, conn, fwd, snapshot).await,
        },
        ListenerKind::Service(name) => {
            let Some(dest) = snapshot.destination(name) else {
                return;
            };
            let cluster = dest.default_cluster.clone();
            let opaque = cluster
                .as_ref()
                .is_some_and(|c| c.protocol == Protocol::Opaque);
            let listen = if opaque {
                Protocol::Opaque
            } else {
                Protocol::Detect
            };
            let tcp_target = cluster.and_then(|c| Some((c.pick(None)?.addr, c.tls.clone())));
            let conn = Conn { tcp_target, ..conn };
            serve_io(stream, listen, conn, fwd, snapshot).await;
        }
    }
}

/// An intercepted outbound connection: to a service's virtual address or an endpoint, it
/// is served as that destination; anywhere else, it passes through unchanged.
async fn intercepted(
    stream: TcpStream,
    orig: SocketAddr,
    conn: Conn,
    fwd: Arc<Forwarder>,
    snapshot: Arc<Snapshot>,
) {
    let Some(target) = snapshot.intercepted(&orig) else {
        fwd.metrics.traffic.passthrough();
        let timeout = snapshot.config.timeouts.connect;
        drop(snapshot);
        let dir = conn.kind.direction();
        let _watch = conn.watch;
        return tcp::forward(stream, orig, Transport::PLAIN, timeout, dir, &fwd.metrics).await;
    };
    // Opaque bytes go where the app addressed them (an endpoint), or to one endpoint of
    // the service, with its cluster's mutual TLS.
    let tcp_target = target.tcp.as_ref().and_then(|c| {
        let ep = if target.pinned {
            orig
        } else {
            c.pick(None)?.addr
        };
        Some((ep, c.tls.clone()))
    });
    let listen = target.listen;
    let conn = Conn { tcp_target, ..conn };
    serve_io(stream, listen, conn, fwd, snapshot).await;
}

/// Where an intercepted inbound connection goes: the port it was addressed to, on the
/// address it arrived at. Redirected traffic arrives at the pod's own address; taking the
/// address from the socket rather than from the original destination means a packet the
/// pod merely routes (to some other address) can never make the inbound side connect
/// off the pod, for IPv6 too, where no 127.0.0.6-style source fences it.
fn inbound_target(stream: &TcpStream) -> Option<SocketAddr> {
    let orig = original_dst(stream)?;
    let local = stream.local_addr().ok()?;
    Some(SocketAddr::new(local.ip(), orig.port()))
}

/// The inbound port: the TLS step the workload's mode asks for, then the protocol the
/// client announced in ALPN (or the configured inbound protocol). An intercepted
/// connection keeps the port it was addressed to, for the app and for authorization.
async fn inbound(stream: TcpStream, conn: Conn, fwd: Arc<Forwarder>, snapshot: Arc<Snapshot>) {
    let local_port = match conn.original_dst {
        Some(orig) => orig.port(),
        None => stream.local_addr().map(|a| a.port()).unwrap_or(0),
    };
    let mode = Decision::of(snapshot.view.inbound.as_ref(), fwd.tls.is_some()).mode();
    let timeout = snapshot.config.timeouts.detect;
    let (io, peer) = match accept(stream, mode, fwd.tls.as_deref(), timeout).await {
        Ok(accepted) => accepted,
        Err(Refused::Plaintext) => {
            fwd.metrics
                .security
                .plaintext_refused(&snapshot.own_service);
            tracing::debug!(
                "plaintext connection refused on the inbound port (mutual TLS required)"
            );
            return;
        }
        Err(e) => {
            tracing::debug!(error = %e, "inbound connection refused");
            return;
        }
    };
    let listen = match peer.alpn {
        Some(Alpn::Http1) => Protocol::Http1,
        Some(Alpn::Http2) => Protocol::Http2,
        Some(Alpn::Tcp) => Protocol::Opaque,
        None => snapshot.config.inbound_protocol,
    };
    let (app, _) = fwd.app_target(conn.original_dst);
    let conn = Conn {
        peer,
        local_port,
        tcp_target: Some((app, None)),
        ..conn
    };
    serve_io(io, listen, conn, fwd, snapshot).await;
}

/// One accepted connection, before its protocol is known.
struct Conn {
    kind: ListenerKind,
    watch: Watch,
    peer: Peer,
    local_port: u16,
    /// Where opaque bytes go, and the identity to expect there (mutual TLS).
    tcp_target: Option<(SocketAddr, Option<Arc<str>>)>,
    /// Where an intercepted connection was addressed.
    original_dst: Option<SocketAddr>,
}

/// Serves a connection as `listen` says, detecting the protocol if it says `Detect`.
async fn serve_io<I>(
    mut io: I,
    listen: Protocol,
    conn: Conn,
    fwd: Arc<Forwarder>,
    snapshot: Arc<Snapshot>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (detected, prefix) = match listen {
        Protocol::Opaque => (Detected::Opaque, Bytes::new()),
        Protocol::Http1 => (Detected::Http1, Bytes::new()),
        Protocol::Http2 => (Detected::Http2, Bytes::new()),
        Protocol::Detect => match detect(&mut io, snapshot.config.timeouts.detect).await {
            Ok(d) => {
                fwd.metrics.detected(d.0.as_str());
                d
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection failed during protocol detection");
                return;
            }
        },
    };
    let io = Prefixed::new(prefix, io);
    let client_protocol = match detected {
        Detected::Http1 => WireProtocol::Http1,
        Detected::Http2 => WireProtocol::Http2,
        Detected::Closed => return,
        Detected::Opaque | Detected::Timeout => return opaque(io, conn, fwd, snapshot).await,
    };
    let limits = snapshot.config.limits;
    let timeouts = snapshot.config.timeouts;
    drop(snapshot);
    let ctx = ConnContext {
        kind: conn.kind,
        client_protocol,
        watch: conn.watch,
        peer: conn.peer,
        local_port: conn.local_port,
        original_dst: conn.original_dst,
    };
    http_server::serve(io, fwd, ctx, limits, timeouts).await;
}

/// Opaque TCP to the connection's target, if it has one (and, inbound, if the policy
/// lets this caller reach the app).
async fn opaque<I>(io: I, conn: Conn, fwd: Arc<Forwarder>, snapshot: Arc<Snapshot>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _watch = conn.watch;
    let Some((target, identity)) = conn.tcp_target else {
        tracing::debug!("opaque connection on a listener without a TCP destination; closing");
        return;
    };
    if matches!(conn.kind, ListenerKind::Inbound) {
        let caller = Caller {
            identity: conn.peer.identity.as_deref(),
            port: conn.local_port,
        };
        let inbound = Decision::of(snapshot.view.inbound.as_ref(), fwd.tls.is_some());
        if !inbound.allows_connection(caller) {
            fwd.metrics.security.denied(&snapshot.own_service, "tcp");
            tracing::debug!(peer = ?conn.peer.identity, "TCP connection denied by authorization policy");
            return;
        }
    }
    let timeout = snapshot.config.timeouts.connect;
    drop(snapshot);
    // Inbound, to the app: from the source the redirection rules let through.
    let source = match conn.kind {
        ListenerKind::Inbound => fwd.app_target(conn.original_dst).1,
        _ => None,
    };
    let transport = Transport {
        identity: identity.as_ref(),
        tls: fwd.tls.as_ref(),
        source,
    };
    let dir = conn.kind.direction();
    tcp::forward(io, target, transport, timeout, dir, &fwd.metrics).await;
}

//! Listeners: accept loops, protocol detection per connection, and the per-service
//! listeners that follow the config across reloads.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::authz::{Caller, Inbound};
use crate::client::{Transport, WireProtocol};
use crate::config::{Config, ConfigError, Protocol};
use crate::detect::{detect, Detected, Prefixed};
use crate::drain::Watch;
use crate::http::forward::{ConnContext, Forwarder};
use crate::http::server;
use crate::metrics::Direction;
use crate::tcp;
use crate::tls::accept::{accept, Peer, Refused};
use crate::tls::Alpn;
use crate::workers::Workers;

/// Which listener a connection came through; decides where its traffic goes.
#[derive(Debug, Clone)]
pub enum ListenerKind {
    /// App → mesh: the destination comes from each request's authority.
    Outbound,
    /// Mesh → app: everything goes to the local app.
    Inbound,
    /// A service's dedicated outbound listener: everything goes to that service.
    Service(Arc<str>),
}

impl ListenerKind {
    /// Traffic direction for metrics.
    pub fn direction(&self) -> Direction {
        match self {
            ListenerKind::Inbound => Direction::Inbound,
            ListenerKind::Outbound | ListenerKind::Service(_) => Direction::Outbound,
        }
    }
}

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

/// Detects the protocol of one connection and serves it as HTTP or opaque TCP; on the
/// inbound port, first applies the workload's TLS mode.
pub async fn serve_connection(
    stream: TcpStream,
    kind: ListenerKind,
    fwd: Arc<Forwarder>,
    watch: Watch,
) {
    let dir = kind.direction();
    let _open = fwd.metrics.connection(dir);
    let _ = stream.set_nodelay(true);
    let snapshot = fwd.store.load();
    match &kind {
        ListenerKind::Inbound => {
            let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
            let mode = Inbound::of(snapshot.view.inbound.as_ref(), fwd.tls.is_some()).mode();
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
            let conn = Conn {
                kind,
                watch,
                peer,
                local_port,
                tcp_target: Some((fwd.app_addr, None)),
            };
            serve_io(io, listen, conn, fwd, snapshot).await;
        }
        ListenerKind::Outbound => {
            let conn = Conn {
                kind,
                watch,
                peer: Peer::default(),
                local_port: 0,
                tcp_target: None,
            };
            serve_io(stream, Protocol::Detect, conn, fwd, snapshot).await;
        }
        ListenerKind::Service(name) => {
            let Some(dest) = snapshot.destination(name) else {
                return;
            };
            let cluster = dest.default_cluster.as_ref();
            let opaque = cluster.is_some_and(|c| c.protocol == Protocol::Opaque);
            let listen = if opaque {
                Protocol::Opaque
            } else {
                Protocol::Detect
            };
            let tcp_target = cluster.and_then(|c| Some((c.pick(None)?.addr, c.tls.clone())));
            let conn = Conn {
                kind: kind.clone(),
                watch,
                peer: Peer::default(),
                local_port: 0,
                tcp_target,
            };
            serve_io(stream, listen, conn, fwd.clone(), snapshot.clone()).await;
        }
    }
}

/// One accepted connection, before its protocol is known.
struct Conn {
    kind: ListenerKind,
    watch: Watch,
    peer: Peer,
    local_port: u16,
    /// Where opaque bytes go, and the identity to expect there (mutual TLS).
    tcp_target: Option<(SocketAddr, Option<Arc<str>>)>,
}

async fn serve_io<I>(
    mut io: I,
    listen: Protocol,
    conn: Conn,
    fwd: Arc<Forwarder>,
    snapshot: Arc<crate::snapshot::Snapshot>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let dir = conn.kind.direction();
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
        Detected::Opaque | Detected::Timeout => {
            let _watch = conn.watch;
            let Some((target, identity)) = conn.tcp_target else {
                tracing::debug!(
                    "opaque connection on a listener without a TCP destination; closing"
                );
                return;
            };
            if matches!(conn.kind, ListenerKind::Inbound) {
                let caller = Caller {
                    identity: conn.peer.identity.as_deref(),
                    port: conn.local_port,
                };
                let inbound = Inbound::of(snapshot.view.inbound.as_ref(), fwd.tls.is_some());
                if !inbound.allows_connection(caller) {
                    fwd.metrics.security.denied(&snapshot.own_service, "tcp");
                    tracing::debug!(peer = ?conn.peer.identity, "TCP connection denied by authorization policy");
                    return;
                }
            }
            let timeout = snapshot.config.timeouts.connect;
            drop(snapshot);
            let transport = Transport {
                identity: identity.as_ref(),
                tls: fwd.tls.as_ref(),
            };
            tcp::forward(io, target, transport, timeout, dir, &fwd.metrics).await;
            return;
        }
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
    };
    server::serve(io, fwd, ctx, limits, timeouts).await;
}

/// The per-service listeners (`services[].listen`), kept in step with the config.
#[derive(Debug)]
pub struct ServiceListeners {
    workers: Arc<Workers>,
    active: Mutex<HashMap<(String, SocketAddr), Active>>,
    watch: Mutex<Option<Watch>>,
}

#[derive(Debug)]
struct Active {
    local: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// Listeners bound for a config that is not yet published.
#[derive(Debug, Default)]
pub struct Prepared {
    bound: Vec<((String, SocketAddr), TcpListener)>,
}

impl ServiceListeners {
    /// No listeners yet; `watch` is cloned into each accept loop.
    pub fn new(workers: Arc<Workers>, watch: Watch) -> Self {
        ServiceListeners {
            workers,
            active: Mutex::new(HashMap::new()),
            watch: Mutex::new(Some(watch)),
        }
    }

    /// Binds every listener `config` names that is not bound yet. Nothing changes for
    /// traffic until [`ServiceListeners::commit`]; on error the new sockets are closed.
    pub async fn prepare(&self, config: &Config) -> Result<Prepared, ConfigError> {
        let wanted: Vec<(String, SocketAddr)> = config
            .services
            .values()
            .filter_map(|s| s.listen.map(|a| (s.name.clone(), a)))
            .collect();
        let mut prepared = Prepared::default();
        for key in wanted {
            let exists = self
                .active
                .lock()
                .map(|a| a.contains_key(&key))
                .unwrap_or(false);
            if exists {
                continue;
            }
            let listener = TcpListener::bind(key.1).await.map_err(|e| ConfigError {
                path: format!("services[name={}].listen", key.0),
                reason: format!("cannot listen on {}: {e}", key.1),
            })?;
            prepared.bound.push((key, listener));
        }
        Ok(prepared)
    }

    /// Starts the prepared listeners and stops those `config` no longer names. Connections
    /// already accepted by a stopped listener carry on.
    pub fn commit(&self, config: &Config, prepared: Prepared) {
        let Ok(mut active) = self.active.lock() else {
            return;
        };
        active.retain(|(name, addr), _| {
            config
                .services
                .get(name)
                .is_some_and(|s| s.listen == Some(*addr))
        });
        let Some(watch) = self.watch.lock().ok().and_then(|w| w.clone()) else {
            return;
        };
        for (key, listener) in prepared.bound {
            let local = listener.local_addr().unwrap_or(key.1);
            let (stop_tx, stop_rx) = oneshot::channel();
            let kind = ListenerKind::Service(key.0.as_str().into());
            tracing::info!(service = %key.0, addr = %local, "service listener started");
            tokio::spawn(accept_loop(
                listener,
                kind,
                self.workers.clone(),
                watch.clone(),
                Some(stop_rx),
            ));
            active.insert(
                key,
                Active {
                    local,
                    _stop: stop_tx,
                },
            );
        }
    }

    /// The bound address of every service listener, by service name.
    pub fn addresses(&self) -> BTreeMap<String, SocketAddr> {
        self.active
            .lock()
            .map(|a| {
                a.iter()
                    .map(|((name, _), act)| (name.clone(), act.local))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Lets a drain complete: no new service listeners start after this.
    pub fn release_drain(&self) {
        if let Ok(mut w) = self.watch.lock() {
            w.take();
        }
    }
}

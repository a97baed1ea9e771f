//! One request, start to finish: the proxy's own limits, the destination (from the
//! snapshot the request loads once), then the [`crate::inbound`] or
//! [`crate::outbound`] side; errors become responses ([`respond`]) and every request is
//! counted in the metrics.

pub mod limits;
pub mod respond;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::client::response::ProxyBody;
use crate::client::{Client, WireProtocol};
use crate::drain::Watch;
use crate::errors::{ProxyError, ERROR_HEADER};
use crate::http::headers::authority;
use crate::inbound::Inbound;
use crate::metrics::{Direction, Metrics, RequestLabels};
use crate::observe::body::ObservedBody;
use crate::observe::Observer;
use crate::outbound::{Labels, Outbound, Settings};
use crate::snapshot::{Snapshot, Store};
use crate::tls::accept::Peer;
use crate::tls::TlsState;

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

/// What every request needs that outlives any one snapshot: one per worker.
#[derive(Debug)]
pub struct Forwarder {
    /// The config snapshot store.
    pub store: Arc<Store>,
    /// Upstream connection pools.
    pub client: Client,
    /// Metrics.
    pub metrics: Metrics,
    /// Where inbound traffic goes: the local app.
    pub app_addr: SocketAddr,
    /// Mutual TLS, when this proxy has an identity.
    pub tls: Option<Arc<TlsState>>,
    /// Whether connections are intercepted (`tandem-proxy init`): their original
    /// destination decides where they go.
    pub transparent: bool,
    /// Access log and tracing.
    pub observer: Arc<Observer>,
}

/// The connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnContext {
    /// Which listener accepted it.
    pub kind: ListenerKind,
    /// The protocol the client speaks on it.
    pub client_protocol: WireProtocol,
    /// Keeps shutdown waiting for tunnels started from this connection.
    pub watch: Watch,
    /// The transport and, with mutual TLS, the client's identity (inbound).
    pub peer: Peer,
    /// The port the connection reached the proxy on (authorization `ports`): for an
    /// intercepted connection, the port it was addressed to.
    pub local_port: u16,
    /// Where an intercepted connection was addressed (`None`: made to the listener).
    pub original_dst: Option<SocketAddr>,
}

/// The label for a request whose destination is not a configured service.
const UNKNOWN: &str = "unknown";

impl Forwarder {
    /// Proxies one request and records it in the metrics (and, when configured, the
    /// access log and a span). Never fails: errors become responses with a
    /// `tandem-proxy-error` header.
    pub async fn handle(
        &self,
        conn: &ConnContext,
        mut req: Request<Incoming>,
    ) -> Response<ObservedBody> {
        let start = Instant::now();
        let snapshot = self.store.load();
        let mut labels = Labels::default();
        let asked_log = match conn.kind {
            ListenerKind::Inbound => snapshot
                .view
                .inbound
                .as_ref()
                .and_then(|p| p.access_log.as_ref()),
            _ => None,
        };
        let mut record = self.observer.begin(
            conn.kind.direction(),
            conn.peer.identity.as_ref(),
            asked_log,
            &mut req,
        );
        let grpc = respond::is_grpc(req.headers());
        let mut flag = None;
        let mut resp = match self.forward(&snapshot, conn, req, &mut labels).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(error = %e, blame = ?e.blame(), "request failed");
                flag = Some(e.flag());
                respond::error_response(&e)
            }
        };
        // The metric keeps the HTTP status the proxy decided on, also for gRPC clients.
        let status = resp.status().as_u16();
        if grpc && resp.headers().contains_key(ERROR_HEADER) {
            resp = respond::into_grpc(resp);
        }
        *resp.version_mut() = match conn.client_protocol {
            WireProtocol::Http1 => Version::HTTP_11,
            WireProtocol::Http2 => Version::HTTP_2,
        };
        let inbound = matches!(conn.kind, ListenerKind::Inbound);
        let done = labels;
        let labels = RequestLabels {
            dst: done.dst.as_deref().unwrap_or(UNKNOWN),
            route: done.route.as_deref().unwrap_or(""),
            backend: done.backend.as_deref().unwrap_or(""),
            src: if inbound {
                conn.peer.service.as_deref().unwrap_or(UNKNOWN)
            } else {
                &snapshot.own_service
            },
            tls: if inbound { conn.peer.tls } else { done.tls },
        };
        self.metrics
            .request(conn.kind.direction(), &labels, status, start.elapsed());
        if let Some(record) = record.as_mut() {
            record.respond(status, flag, &done);
        }
        resp.map(|body| ObservedBody::new(body, record))
    }

    /// The checks every request passes, then the side its listener stands for.
    async fn forward(
        &self,
        snapshot: &Snapshot,
        conn: &ConnContext,
        req: Request<Incoming>,
        labels: &mut Labels,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        limits::check(&req, &snapshot.config.limits)?;
        // RFC 9112 §3.2: more than one Host makes the request invalid; forwarding it would
        // let the proxy and the upstream disagree about the destination.
        if req
            .headers()
            .get_all(http::header::HOST)
            .iter()
            .nth(1)
            .is_some()
        {
            return Err(ProxyError::BadRequest("more than one Host header"));
        }
        let authority = authority(req.uri(), req.headers());
        let dest = match &conn.kind {
            ListenerKind::Inbound => {
                labels.dst = Some(snapshot.own_service.clone());
                let inbound = self.inbound(snapshot, conn);
                labels.endpoint = Some(inbound.app_addr);
                labels.attempts = 1;
                return inbound.call(req, authority.as_ref()).await;
            }
            ListenerKind::Outbound => {
                if let Some(orig) = conn.original_dst {
                    return self
                        .intercepted(snapshot, conn, orig, req, authority, labels)
                        .await;
                }
                let authority = authority.as_ref().ok_or(ProxyError::NoAuthority)?;
                let host = authority.host();
                let port = authority.port_u16();
                let dest = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                    snapshot.destination_at(&host.to_ascii_lowercase(), port)
                } else {
                    snapshot.destination_at(host, port)
                };
                dest.ok_or_else(|| ProxyError::UnknownService(host.to_string()))?
            }
            ListenerKind::Service(name) => snapshot
                .destination(name)
                .ok_or_else(|| ProxyError::UnknownService(name.to_string()))?,
        };
        labels.dst = Some(dest.name.clone());
        let outbound = self.outbound(snapshot, conn);
        outbound.call(dest, req, authority, labels).await
    }

    /// An intercepted request: its connection's original destination, not its authority,
    /// says where it goes (under the request's own snapshot).
    async fn intercepted(
        &self,
        snapshot: &Snapshot,
        conn: &ConnContext,
        orig: SocketAddr,
        req: Request<Incoming>,
        authority: Option<http::uri::Authority>,
        labels: &mut Labels,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let target = snapshot
            .intercepted(&orig)
            .ok_or_else(|| ProxyError::UnknownService(orig.to_string()))?;
        let dest = target
            .dest
            .as_ref()
            .ok_or_else(|| ProxyError::UnknownService(orig.to_string()))?;
        labels.dst = Some(dest.name.clone());
        let mut outbound = self.outbound(snapshot, conn);
        outbound.pinned = target.pinned.then_some(orig);
        outbound.call(dest, req, authority, labels).await
    }

    /// Where a connection's inbound traffic goes, and from which local address: an
    /// intercepted connection to the port it was addressed to (from
    /// [`crate::intercept::app_source`], which the redirection rules let through), any
    /// other to the local app.
    pub fn app_target(&self, original_dst: Option<SocketAddr>) -> (SocketAddr, Option<IpAddr>) {
        match original_dst {
            Some(orig) => (orig, crate::intercept::app_source(orig)),
            None => (self.app_addr, None),
        }
    }

    fn outbound<'a>(&'a self, snapshot: &Snapshot, conn: &'a ConnContext) -> Outbound<'a> {
        Outbound {
            client: &self.client,
            metrics: &self.metrics,
            tls: self.tls.as_ref(),
            settings: Settings {
                request_timeout: snapshot.config.timeouts.request,
                retry_buffer_bytes: snapshot.config.limits.retry_buffer_bytes,
                connect: snapshot.connect_settings(),
            },
            client_protocol: conn.client_protocol,
            watch: &conn.watch,
            pinned: None,
        }
    }

    fn inbound<'a>(&'a self, snapshot: &'a Snapshot, conn: &'a ConnContext) -> Inbound<'a> {
        let (app_addr, app_source) = self.app_target(conn.original_dst);
        Inbound {
            client: &self.client,
            metrics: &self.metrics,
            policy: snapshot.view.inbound.as_ref(),
            has_identity: self.tls.is_some(),
            own_service: &snapshot.own_service,
            app_addr,
            app_source,
            request_timeout: snapshot.config.timeouts.request,
            connect: snapshot.connect_settings(),
            client_protocol: conn.client_protocol,
            watch: &conn.watch,
            peer: &conn.peer,
            local_port: conn.local_port,
        }
    }
}

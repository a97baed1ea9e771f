//! One request, start to finish: limits → destination → (routed: see [`super::routed`])
//! → upstream → response.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::Authority;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;

use super::headers::{authority, is_upgrade, set_target, strip_hop_by_hop};
use super::upgrade;
use crate::authz::{self, Caller, HttpRequest, Inbound};
use crate::body::ProxyBody;
use crate::client::{Client, ConnectSettings, Reusable, Transport, WireProtocol};
use crate::config::{Limits, Protocol};
use crate::drain::Watch;
use crate::errors::{into_grpc, is_grpc, ProxyError, ERROR_HEADER};
use crate::listener::ListenerKind;
use crate::metrics::{Metrics, RequestLabels};
use crate::replay::RequestBody;
use crate::routing::Permit;
use crate::snapshot::Snapshot;
use crate::snapshot::Store;
use crate::tls::accept::Peer;
use crate::tls::TlsState;

/// What every request needs that outlives any one snapshot.
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
    /// The port the connection reached the proxy on (authorization `ports`).
    pub local_port: u16,
}

/// Where a request went, as far as it got: its metric labels.
#[derive(Debug, Default)]
pub struct Labels {
    /// Destination service.
    pub dst: Option<Arc<str>>,
    /// Route.
    pub route: Option<Arc<str>>,
    /// Backend.
    pub backend: Option<Arc<str>>,
    /// Whether the upstream hop (outbound) used mutual TLS.
    pub tls: bool,
}

/// The label for a request whose destination is not a configured service.
const UNKNOWN: &str = "unknown";

impl Forwarder {
    /// Proxies one request and records it in the metrics. Never fails: errors become
    /// responses with a `tandem-proxy-error` header.
    pub async fn handle(&self, conn: &ConnContext, req: Request<Incoming>) -> Response<ProxyBody> {
        let start = Instant::now();
        let snapshot = self.store.load();
        let mut labels = Labels::default();
        let grpc = is_grpc(req.headers());
        let mut resp = match self.forward(&snapshot, conn, req, &mut labels).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(error = %e, "request failed");
                e.into_response()
            }
        };
        // The metric keeps the HTTP status the proxy decided on, also for gRPC clients.
        let status = resp.status().as_u16();
        if grpc && resp.headers().contains_key(ERROR_HEADER) {
            resp = into_grpc(resp);
        }
        *resp.version_mut() = match conn.client_protocol {
            WireProtocol::Http1 => Version::HTTP_11,
            WireProtocol::Http2 => Version::HTTP_2,
        };
        let inbound = matches!(conn.kind, ListenerKind::Inbound);
        let labels = RequestLabels {
            dst: labels.dst.as_deref().unwrap_or(UNKNOWN),
            route: labels.route.as_deref().unwrap_or(""),
            backend: labels.backend.as_deref().unwrap_or(""),
            src: if inbound {
                conn.peer.service.as_deref().unwrap_or(UNKNOWN)
            } else {
                &snapshot.own_service
            },
            tls: if inbound { conn.peer.tls } else { labels.tls },
        };
        self.metrics
            .request(conn.kind.direction(), &labels, status, start.elapsed());
        resp
    }

    async fn forward(
        &self,
        snapshot: &Snapshot,
        conn: &ConnContext,
        req: Request<Incoming>,
        labels: &mut Labels,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        check_limits(&req, &snapshot.config.limits)?;
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
                let req = self.authorize(snapshot, conn, req)?;
                return self.to_app(snapshot, conn, req, authority.as_ref()).await;
            }
            ListenerKind::Outbound => {
                let authority = authority.as_ref().ok_or(ProxyError::NoAuthority)?;
                let host = authority.host();
                let dest = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                    snapshot.destination(&host.to_ascii_lowercase())
                } else {
                    snapshot.destination(host)
                };
                dest.ok_or_else(|| ProxyError::UnknownService(host.to_string()))?
            }
            ListenerKind::Service(name) => snapshot
                .destination(name)
                .ok_or_else(|| ProxyError::UnknownService(name.to_string()))?,
        };
        labels.dst = Some(dest.name.clone());
        self.routed(snapshot, conn, dest, req, authority, labels)
            .await
    }

    /// Inbound authorization. With an inbound policy the path is normalized first and the
    /// app gets the normalized path (see [`super::path`]). A proxy with an identity but no
    /// inbound policy (its Service is not in the mesh, or no config yet) denies: no policy
    /// known is not "everything allowed".
    fn authorize(
        &self,
        snapshot: &Snapshot,
        conn: &ConnContext,
        mut req: Request<Incoming>,
    ) -> Result<Request<Incoming>, ProxyError> {
        let policy = match Inbound::of(snapshot.view.inbound.as_ref(), self.tls.is_some()) {
            Inbound::Policy(policy) => policy,
            Inbound::Closed => {
                self.metrics.security.denied(&snapshot.own_service, "http");
                return Err(ProxyError::NoInboundPolicy);
            }
            Inbound::Open => return Ok(req),
        };
        let normalized =
            super::path::normalize(req.uri().path()).map_err(|e| ProxyError::BadPath(e.0))?;
        if let Cow::Owned(path) = normalized {
            set_path(req.uri_mut(), &path)?;
        }
        let caller = Caller {
            identity: conn.peer.identity.as_deref(),
            port: conn.local_port,
        };
        let http = HttpRequest {
            path: req.uri().path(),
            method: req.method().as_str(),
        };
        if !authz::allows_request(policy, caller, http) {
            self.metrics.security.denied(&snapshot.own_service, "http");
            return Err(ProxyError::Denied);
        }
        Ok(req)
    }

    /// Inbound: one attempt to the local app, no routing.
    async fn to_app(
        &self,
        snapshot: &Snapshot,
        conn: &ConnContext,
        mut req: Request<Incoming>,
        authority: Option<&Authority>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let upgrading = is_upgrading(&req);
        let wire = wire_protocol(Protocol::Detect, conn.client_protocol, upgrading);
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers, upgrading);
        set_client_cert_header(&mut parts.headers, conn.peer.identity.as_deref());
        set_target(
            &mut parts.uri,
            &mut parts.headers,
            &mut parts.version,
            authority,
            wire == WireProtocol::Http2,
        );
        let (body, _) = RequestBody::new(body, 0);
        let req = Request::from_parts(parts, body);
        let timeout = snapshot.config.timeouts.request;
        let (resp, reuse) = tokio::time::timeout(
            timeout,
            self.client.send(
                self.app_addr,
                Transport::PLAIN,
                wire,
                req,
                connect_settings(snapshot),
                None,
            ),
        )
        .await
        .map_err(|_| ProxyError::Timeout(timeout))?
        .map_err(|e| e.error)?;
        Ok(self.relay(conn, resp, reuse, client_upgrade, None))
    }

    /// Turns an upstream response into the client's: starts the tunnel of a protocol
    /// switch, drops hop-by-hop headers, and ties the pooled connection and the request
    /// slot to the end of the body.
    pub(super) fn relay(
        &self,
        conn: &ConnContext,
        mut resp: Response<Incoming>,
        reuse: Option<Reusable>,
        client_upgrade: Option<OnUpgrade>,
        held: Option<Permit>,
    ) -> Response<ProxyBody> {
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let upgrading = client_upgrade.is_some();
        if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            upgrade::tunnel(
                client_upgrade,
                upstream_upgrade,
                conn.kind.direction(),
                self.metrics.clone(),
                conn.watch.clone(),
            );
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, switching && upgrading);
        // An upgraded connection is no longer HTTP: it must not return to the pool.
        let reuse = if switching { None } else { reuse };
        Response::from_parts(parts, ProxyBody::upstream(body, reuse, held))
    }
}

/// Whether the request asks for an HTTP/1.1 protocol switch (WebSocket and the like).
pub(super) fn is_upgrading<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11 && is_upgrade(req.headers())
}

/// The protocol to speak upstream: the cluster's, else the client's; upgrades need HTTP/1.
pub(super) fn wire_protocol(
    cluster: Protocol,
    client: WireProtocol,
    upgrading: bool,
) -> WireProtocol {
    if upgrading {
        return WireProtocol::Http1;
    }
    match cluster {
        Protocol::Http1 => WireProtocol::Http1,
        Protocol::Http2 => WireProtocol::Http2,
        Protocol::Detect | Protocol::Opaque => client,
    }
}

/// Connection settings from the snapshot.
pub(super) fn connect_settings(snapshot: &Snapshot) -> ConnectSettings {
    ConnectSettings {
        connect_timeout: snapshot.config.timeouts.connect,
        idle_timeout: snapshot.config.timeouts.upstream_idle,
    }
}

/// Rejects requests over the configured limits before anything is sent upstream.
fn check_limits<B>(req: &Request<B>, limits: &Limits) -> Result<(), ProxyError> {
    let uri = req.uri();
    let uri_len = uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3);
    if uri_len > limits.max_uri_bytes {
        return Err(ProxyError::UriTooLong {
            len: uri_len,
            max: limits.max_uri_bytes,
        });
    }
    let headers = req.headers();
    if headers.len() > limits.max_headers {
        return Err(ProxyError::HeadersTooLarge(format!(
            "{} headers, limit {}",
            headers.len(),
            limits.max_headers
        )));
    }
    // Name, value, ": " and CRLF, as they would appear on an HTTP/1 wire.
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if bytes > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge(format!(
            "{bytes} bytes, limit {}",
            limits.max_header_bytes
        )));
    }
    Ok(())
}

/// Replaces the path of `uri`, keeping its query.
fn set_path(uri: &mut http::Uri, path: &str) -> Result<(), ProxyError> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(
        pq.parse()
            .map_err(|_| ProxyError::BadRequest("unusable request path"))?,
    );
    *uri = http::Uri::from_parts(parts)
        .map_err(|_| ProxyError::BadRequest("unusable request path"))?;
    Ok(())
}

/// The header the app reads the caller's identity from (Envoy's and Istio's name).
pub const CLIENT_CERT_HEADER: &str = "x-forwarded-client-cert";

/// Sets [`CLIENT_CERT_HEADER`] to the mTLS peer's SPIFFE ID, always dropping what the
/// client sent: only the proxy that terminated TLS can vouch for an identity.
fn set_client_cert_header(headers: &mut http::HeaderMap, peer: Option<&str>) {
    headers.remove(CLIENT_CERT_HEADER);
    if let Some(id) = peer {
        if let Ok(v) = http::HeaderValue::from_str(&format!("URI={id}")) {
            headers.insert(CLIENT_CERT_HEADER, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_reject_long_targets_and_header_floods() {
        let limits = Limits {
            max_header_bytes: 1024,
            max_headers: 3,
            max_uri_bytes: 32,
            retry_buffer_bytes: 0,
        };
        let ok = Request::get("/short").header("a", "1").body(()).unwrap();
        assert!(check_limits(&ok, &limits).is_ok());
        let long = Request::get(format!("/{}", "x".repeat(40)))
            .body(())
            .unwrap();
        assert_eq!(
            check_limits(&long, &limits).unwrap_err().status(),
            StatusCode::URI_TOO_LONG
        );
        let mut many = Request::get("/").body(()).unwrap();
        for i in 0..4 {
            many.headers_mut().insert(
                http::HeaderName::from_bytes(format!("h{i}").as_bytes()).unwrap(),
                http::HeaderValue::from_static("v"),
            );
        }
        assert_eq!(
            check_limits(&many, &limits).unwrap_err().status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let big = Request::get("/")
            .header("a", "v".repeat(2000))
            .body(())
            .unwrap();
        assert_eq!(
            check_limits(&big, &limits).unwrap_err().status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }
}

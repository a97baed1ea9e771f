//! One request, start to finish: limits → destination → endpoint → upstream → response.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::headers::{authority, is_upgrade, set_target, strip_hop_by_hop};
use super::upgrade;
use crate::body::ProxyBody;
use crate::client::{Client, ConnectSettings, WireProtocol};
use crate::config::{Limits, Protocol};
use crate::drain::Watch;
use crate::errors::ProxyError;
use crate::listener::ListenerKind;
use crate::metrics::Metrics;
use crate::routing::Destination;
use crate::snapshot::{Snapshot, Store};

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
}

/// The label for a request whose destination is not a configured service.
const UNKNOWN: &str = "unknown";

impl Forwarder {
    /// Proxies one request and records it in the metrics. Never fails: errors become
    /// responses with a `tandem-proxy-error` header.
    pub async fn handle(&self, conn: &ConnContext, req: Request<Incoming>) -> Response<ProxyBody> {
        let start = Instant::now();
        let snapshot = self.store.load();
        let mut label: Option<Arc<str>> = None;
        let mut resp = match self.forward(&snapshot, conn, req, &mut label).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(error = %e, "request failed");
                e.into_response()
            }
        };
        *resp.version_mut() = match conn.client_protocol {
            WireProtocol::Http1 => Version::HTTP_11,
            WireProtocol::Http2 => Version::HTTP_2,
        };
        let dst = label.as_deref().unwrap_or(UNKNOWN);
        self.metrics.request(
            conn.kind.direction(),
            dst,
            resp.status().as_u16(),
            start.elapsed(),
        );
        resp
    }

    async fn forward(
        &self,
        snapshot: &Snapshot,
        conn: &ConnContext,
        mut req: Request<Incoming>,
        label: &mut Option<Arc<str>>,
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
        let (target, protocol) = match &conn.kind {
            ListenerKind::Inbound => {
                *label = Some(snapshot.own_service.clone());
                (self.app_addr, Protocol::Detect)
            }
            ListenerKind::Outbound => {
                let authority = authority.as_ref().ok_or(ProxyError::NoAuthority)?;
                let host = authority.host();
                let dest = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                    snapshot.destination(&host.to_ascii_lowercase())
                } else {
                    snapshot.destination(host)
                };
                let dest = dest.ok_or_else(|| ProxyError::UnknownService(host.to_string()))?;
                *label = Some(dest.name.clone());
                pick_endpoint(dest, &req)?
            }
            ListenerKind::Service(name) => {
                let dest = snapshot
                    .destination(name)
                    .ok_or_else(|| ProxyError::UnknownService(name.to_string()))?;
                *label = Some(dest.name.clone());
                pick_endpoint(dest, &req)?
            }
        };
        let upgrading = req.version() == Version::HTTP_11 && is_upgrade(req.headers());
        let wire = if upgrading {
            WireProtocol::Http1
        } else {
            match protocol {
                Protocol::Http1 => WireProtocol::Http1,
                Protocol::Http2 => WireProtocol::Http2,
                Protocol::Detect | Protocol::Opaque => conn.client_protocol,
            }
        };
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers, upgrading);
        set_target(
            &mut parts.uri,
            &mut parts.headers,
            &mut parts.version,
            authority.as_ref(),
            wire == WireProtocol::Http2,
        );
        let req = Request::from_parts(parts, body);
        let settings = ConnectSettings {
            connect_timeout: snapshot.config.timeouts.connect,
            idle_timeout: snapshot.config.timeouts.upstream_idle,
        };
        let timeout = snapshot.config.timeouts.request;
        let (mut resp, reuse) =
            tokio::time::timeout(timeout, self.client.send(target, wire, req, settings))
                .await
                .map_err(|_| ProxyError::Timeout(timeout))??;
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
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
        Ok(Response::from_parts(
            parts,
            ProxyBody::upstream(body, reuse),
        ))
    }
}

/// Route → weighted backend → endpoint, for one request to `dest`.
fn pick_endpoint<B>(
    dest: &Destination,
    req: &Request<B>,
) -> Result<(SocketAddr, Protocol), ProxyError> {
    let route = dest
        .route(req.method(), req.uri(), req.headers())
        .ok_or_else(|| ProxyError::NoRoute(dest.name.to_string()))?;
    let cluster = route
        .pick_backend()
        .ok_or_else(|| ProxyError::NoBackend(route.name.to_string()))?;
    let ep = cluster
        .pick()
        .ok_or_else(|| ProxyError::NoEndpoints(cluster.name.to_string()))?;
    Ok((ep, cluster.protocol))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_reject_long_targets_and_header_floods() {
        let limits = Limits {
            max_header_bytes: 1024,
            max_headers: 3,
            max_uri_bytes: 32,
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

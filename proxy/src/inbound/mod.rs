//! The inbound side: a request from the mesh to the local app.
//!
//! 1. [`authz`] — the inbound decision under the current snapshot: open (no identity),
//!    closed (an identity but no policy yet), or the workload's policy; the same decision
//!    sets the TLS mode of the inbound port (`transport`) and gates opaque TCP.
//! 2. [`path`] — with a policy, the path is normalized the way the app will read it, then
//!    checked, and the app receives exactly the normalized path.
//! 3. To the app: one attempt to `127.0.0.1:<app port>` (or, for an intercepted
//!    connection, to the address it was made to), no routing, with the caller's verified
//!    identity in `x-forwarded-client-cert`.

pub mod authz;
pub mod path;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use tandem_xds::domain::InboundPolicy;

use crate::client::response::{relay, ProxyBody, Tunnel};
use crate::client::{Client, ConnectSettings, Transport, WireProtocol};
use crate::config::Protocol;
use crate::drain::Watch;
use crate::errors::ProxyError;
use crate::http::headers::{is_upgrading, retarget, strip_hop_by_hop};
use crate::http::request_body::{ReceivedBytes, RequestBody};
use crate::metrics::{Direction, Metrics};
use crate::tls::accept::Peer;
use authz::{Caller, Decision, HttpRequest};

/// The header the app reads the caller's identity from (Envoy's and Istio's name).
pub const CLIENT_CERT_HEADER: &str = "x-forwarded-client-cert";

/// The inbound side of one worker, for one request.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// The worker's pools (connections to the app are pooled too).
    pub client: &'a Client,
    /// Metrics.
    pub metrics: &'a Metrics,
    /// The workload's inbound policy, from the request's snapshot.
    pub policy: Option<&'a InboundPolicy>,
    /// Whether this proxy has an identity (then no policy means nothing is allowed).
    pub has_identity: bool,
    /// This workload's service (the `dst_service` of denials).
    pub own_service: &'a str,
    /// Where the app listens.
    pub app_addr: SocketAddr,
    /// The address to connect to the app from (see [`crate::intercept::app_source`]).
    pub app_source: Option<std::net::IpAddr>,
    /// The request timeout.
    pub request_timeout: Duration,
    /// Connect timeout and pool idle time.
    pub connect: ConnectSettings,
    /// The protocol the client speaks.
    pub client_protocol: WireProtocol,
    /// Keeps shutdown waiting for tunnels started by this request.
    pub watch: &'a Watch,
    /// Who the caller is (mutual TLS) and how it connected.
    pub peer: &'a Peer,
    /// The port the connection reached the proxy on (authorization `ports`).
    pub local_port: u16,
}

impl Inbound<'_> {
    /// Authorizes `req` and carries it to the app.
    pub async fn call(
        &self,
        req: Request<Incoming>,
        authority: Option<&Authority>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let req = self.authorize(req)?;
        self.forward_to_app(req, authority).await
    }

    /// Inbound authorization. With an inbound policy the path is normalized first and the
    /// app gets the normalized path (see [`path`]). A proxy with an identity but no
    /// inbound policy (its Service is not in the mesh, or no config yet) denies: no policy
    /// known is not "everything allowed".
    fn authorize(&self, mut req: Request<Incoming>) -> Result<Request<Incoming>, ProxyError> {
        let policy = match Decision::of(self.policy, self.has_identity) {
            Decision::Policy(policy) => policy,
            Decision::Closed => {
                self.metrics.security.denied(self.own_service, "http");
                return Err(ProxyError::NoInboundPolicy);
            }
            Decision::Open => return Ok(req),
        };
        let normalized = path::normalize(req.uri().path()).map_err(|e| ProxyError::BadPath(e.0))?;
        if let Cow::Owned(path) = normalized {
            set_path(req.uri_mut(), &path)?;
        }
        let caller = Caller {
            identity: self.peer.identity.as_deref(),
            port: self.local_port,
        };
        let http = HttpRequest {
            path: req.uri().path(),
            method: req.method().as_str(),
        };
        if !authz::allows_request(policy, caller, http) {
            self.metrics.security.denied(self.own_service, "http");
            return Err(ProxyError::Denied);
        }
        Ok(req)
    }

    /// One attempt to the local app, no routing.
    async fn forward_to_app(
        &self,
        mut req: Request<Incoming>,
        authority: Option<&Authority>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let upgrading = is_upgrading(&req);
        let wire = WireProtocol::upstream(Protocol::Detect, self.client_protocol, upgrading);
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers, upgrading);
        set_client_cert_header(&mut parts.headers, self.peer.identity.as_deref());
        retarget(&mut parts, authority, wire == WireProtocol::Http2);
        let received = parts.extensions.get::<ReceivedBytes>().cloned();
        let (body, _) = RequestBody::new(body, 0, received);
        let req = Request::from_parts(parts, body);
        let timeout = self.request_timeout;
        let transport = Transport {
            source: self.app_source,
            ..Transport::PLAIN
        };
        let send = self
            .client
            .send(self.app_addr, transport, wire, req, self.connect, None);
        let (resp, reuse) = tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| ProxyError::Timeout(timeout))?
            .map_err(|e| e.error)?;
        let tunnel = Tunnel {
            dir: Direction::Inbound,
            metrics: self.metrics,
            watch: self.watch,
        };
        Ok(relay(resp, reuse, client_upgrade, None, tunnel))
    }
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
    fn only_the_terminating_proxy_vouches_for_an_identity() {
        let mut h = http::HeaderMap::new();
        h.insert(
            CLIENT_CERT_HEADER,
            "URI=spiffe://td/ns/x/sa/forged".parse().unwrap(),
        );
        set_client_cert_header(&mut h, None);
        assert!(
            !h.contains_key(CLIENT_CERT_HEADER),
            "a client's claim is dropped"
        );
        set_client_cert_header(&mut h, Some("spiffe://td/ns/shop/sa/web"));
        assert_eq!(h[CLIENT_CERT_HEADER], "URI=spiffe://td/ns/shop/sa/web");
    }

    #[test]
    fn a_normalized_path_keeps_the_query() {
        let mut uri: http::Uri = "/a/../b?x=1&y=2".parse().unwrap();
        set_path(&mut uri, "/b").unwrap();
        assert_eq!(uri, "/b?x=1&y=2");
    }
}

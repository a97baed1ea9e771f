//! The outbound side: a request from the app to a mesh service, stage by stage, in the
//! order it meets them.
//!
//! 1. [`route`] — which rule of the destination matches; a redirect answers here.
//! 2. [`fault`] — injected delay and abort.
//! 3. [`split`] — which backend, by weight (canaries live here).
//! 4. [`breaker`] — the backend's pool limits admit the request (`503 overflow` if not);
//!    [`breaker::outlier`] keeps failing endpoints out of rotation.
//! 5. [`rewrite`] — the route's request edits.
//! 6. [`retry`] — policy, budget, backoff, the replayable body, and mirrors.
//! 7. [`balance`] — which endpoint (P2C over peak EWMA, least request, round robin).
//! 8. [`attempt`] — one exchange with that endpoint through the worker's pools.
//!
//! [`cluster`] (a backend and its policy) and [`endpoint`] (what each endpoint's requests
//! taught: load, latency, health) are the state these stages share, kept across
//! snapshots. This file only strings the stages together: each decision is made in its
//! stage, and a new stage (per-try hedging, a success-rate breaker, canary analysis) is a
//! new file and one line here.

pub mod attempt;
pub mod balance;
pub mod breaker;
pub mod cluster;
pub mod endpoint;
pub mod fault;
pub mod retry;
pub mod rewrite;
pub mod route;
pub mod split;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::client::limits::Permit;
use crate::client::response::{relay, ProxyBody, Tunnel};
use crate::client::{Client, ConnectSettings, Reusable, SendError, WireProtocol};
use crate::drain::Watch;
use crate::errors::ProxyError;
use crate::http::headers::{is_upgrading, strip_hop_by_hop};
use crate::http::request_body::RequestBody;
use crate::metrics::{Direction, Metrics, RetryReason};
use crate::tls::TlsState;
use attempt::{Attempt, Exchanged};
use cluster::Cluster;
use retry::mirror::Mirrors;
use retry::replay::Replay;
use retry::Retries;
use rewrite::RequestEdits;
use route::{Destination, Route};

/// What the outbound stages take from the request's snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The request timeout when the route sets none.
    pub request_timeout: Duration,
    /// Request body bytes kept so that a retry or a mirror can send them again.
    pub retry_buffer_bytes: usize,
    /// Connect timeout and pool idle time.
    pub connect: ConnectSettings,
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
    /// The endpoint of the last attempt.
    pub endpoint: Option<SocketAddr>,
    /// Attempts made (retries are all but the first).
    pub attempts: u32,
}

/// The outbound side of one worker, for one request.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// The worker's upstream pools.
    pub client: &'a Client,
    /// Metrics.
    pub metrics: &'a Metrics,
    /// Mutual TLS, when this proxy has an identity.
    pub tls: Option<&'a Arc<TlsState>>,
    /// From the request's snapshot.
    pub settings: Settings,
    /// The protocol the client speaks.
    pub client_protocol: WireProtocol,
    /// Keeps shutdown waiting for tunnels started by this request.
    pub watch: &'a Watch,
    /// The endpoint the app addressed (an intercepted connection to a pod IP): every
    /// attempt goes there, none is balanced.
    pub pinned: Option<SocketAddr>,
}

/// A request between its attempts: what stays fixed from one to the next.
struct Exchange<'r> {
    dest: &'r Destination,
    route: &'r Route,
    cluster: Arc<Cluster>,
    authority: Option<Authority>,
    upgrading: bool,
    client_upgrade: Option<OnUpgrade>,
    /// The backend's request slot, held until the response body ends.
    held: Option<Permit>,
    /// Boxed: most requests keep nothing, and this travels in the request's future.
    replay: Option<Box<Replay>>,
    mirrored: bool,
}

/// What follows an attempt.
enum Next {
    /// Send this request again, to another endpoint, after the policy's backoff if
    /// `backoff`.
    Again {
        /// The request.
        req: Request<RequestBody>,
        /// Whether a policy retry's backoff comes first.
        backoff: bool,
    },
    /// The client's answer.
    Respond(Response<ProxyBody>),
    /// The request failed for good.
    Fail(ProxyError),
}

impl Outbound<'_> {
    /// Stage 1 and the request timeout around the rest: routes `req` to `dest`.
    pub async fn call(
        &self,
        dest: &Destination,
        req: Request<Incoming>,
        authority: Option<Authority>,
        labels: &mut Labels,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let route = dest
            .route(req.method(), req.uri(), req.headers())
            .ok_or_else(|| ProxyError::NoRoute(dest.name.to_string()))?;
        labels.route = Some(route.name.clone());
        let mut resp = if let Some(redirect) = &route.redirect {
            let location = redirect.location(req.uri(), authority.as_ref());
            let mut resp = Response::new(ProxyBody::full(Bytes::new()));
            *resp.status_mut() = redirect.status;
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(http::header::LOCATION, v);
            }
            resp
        } else {
            let timeout = route.timeout.unwrap_or(self.settings.request_timeout);
            let forwarded = self.forward(dest, route, req, authority, labels);
            tokio::time::timeout(timeout, forwarded)
                .await
                .map_err(|_| ProxyError::Timeout(timeout))??
        };
        if !route.response_headers.is_empty() {
            route.response_headers.apply(resp.headers_mut());
        }
        Ok(resp)
    }

    /// Stages 2 to 8 under the request timeout: the fault, then the request prepared by
    /// stages 3 to 6, then attempts (an endpoint, an exchange, the retry decision) until an
    /// answer.
    async fn forward(
        &self,
        dest: &Destination,
        route: &Route,
        req: Request<Incoming>,
        authority: Option<Authority>,
        labels: &mut Labels,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if let Some(fault) = &route.fault {
            if let Some(resp) = fault::inject(fault, &dest.name, &self.metrics.traffic).await {
                return Ok(resp);
            }
        }
        let (mut x, mut retries, mut next) = self.prepare(dest, route, req, authority, labels)?;
        let mut avoid: Option<SocketAddr> = None;
        loop {
            let ep = match self.pinned {
                Some(addr) => x.cluster.endpoint(addr),
                None => x.cluster.pick(avoid),
            }
            .ok_or_else(|| ProxyError::NoEndpoints(x.cluster.name.to_string()))?
            .clone();
            labels.endpoint = Some(ep.addr);
            labels.attempts += 1;
            let attempt = Attempt {
                client: self.client,
                tls: self.tls,
                traffic: &self.metrics.traffic,
                cluster: &x.cluster,
                ep: &ep,
                wire: WireProtocol::upstream(x.cluster.protocol, self.client_protocol, x.upgrading),
                settings: self.settings.connect,
                per_try_timeout: x.route.per_try_timeout,
            };
            let result = attempt.send(next, x.authority.as_ref()).await?;
            next = match self.after(&mut x, &mut retries, result, ep.addr) {
                Next::Again { req, backoff } => {
                    if backoff {
                        retries.backoff().await;
                    }
                    req
                }
                Next::Respond(resp) => return Ok(resp),
                Next::Fail(e) => return Err(e),
            };
            avoid = Some(ep.addr);
        }
    }

    /// Stages 3 to 6: the backend by weight, its admission, the request edits, and what
    /// retries and mirrors keep of the request. Returns the request for the first attempt.
    fn prepare<'r>(
        &self,
        dest: &'r Destination,
        route: &'r Route,
        mut req: Request<Incoming>,
        authority: Option<Authority>,
        labels: &mut Labels,
    ) -> Result<(Exchange<'r>, Retries<'r>, Request<RequestBody>), ProxyError> {
        let cluster = route
            .pick_backend()
            .ok_or_else(|| ProxyError::NoBackend(route.name.to_string()))?
            .clone();
        labels.backend = Some(cluster.label.clone());
        labels.tls = cluster.tls.is_some() && self.tls.is_some();
        let held = breaker::admit(&cluster, &self.metrics.traffic)?;
        cluster.state.budget.deposit();

        let upgrading = is_upgrading(&req);
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let edits = RequestEdits {
            headers: &route.request_headers,
            path: route.path_rewrite.as_ref(),
            host: route.host_rewrite.as_ref(),
        };
        let authority = edits.apply(&mut parts, authority);
        strip_hop_by_hop(&mut parts.headers, upgrading);
        let retries = Retries::new(route.retry.as_ref(), &parts.method);
        let keep = (retries.enabled() || !route.mirrors.is_empty())
            .then_some(self.settings.retry_buffer_bytes);
        let (first, replay) = Replay::new(parts, body, keep);
        let mut exchange = Exchange {
            dest,
            route,
            cluster,
            authority,
            upgrading,
            client_upgrade,
            held,
            replay: replay.map(Box::new),
            mirrored: false,
        };
        if exchange.replay.as_ref().is_some_and(|r| r.body_is_empty()) {
            // Nothing to wait for: mirror now, alongside the primary, as Envoy does.
            self.mirror(&mut exchange);
        }
        Ok((exchange, retries, first))
    }

    /// The retry stage's decision on one attempt's result.
    fn after(
        &self,
        x: &mut Exchange<'_>,
        retries: &mut Retries<'_>,
        result: Exchanged,
        ep: SocketAddr,
    ) -> Next {
        let error = match result {
            Ok((resp, reuse)) => {
                if retries.on_status(resp.status().as_u16()) {
                    if let Some(again) = self.try_again(x) {
                        drop(resp);
                        return Next::Again {
                            req: again,
                            backoff: true,
                        };
                    }
                }
                return Next::Respond(self.respond(x, resp, reuse));
            }
            Err(SendError {
                error,
                unsent: Some(back),
            }) if retries.resend_unsent() => {
                // Never written: as safe as the first attempt, so no budget and no wait.
                tracing::debug!(endpoint = %ep, %error, "request not sent; trying another endpoint");
                let traffic = &self.metrics.traffic;
                traffic.retry(&x.dest.name, &x.cluster.label, RetryReason::Unsent);
                return Next::Again {
                    req: *back,
                    backoff: false,
                };
            }
            Err(SendError { error, .. }) => error,
        };
        if retries.on_failure(&error) {
            if let Some(again) = self.try_again(x) {
                tracing::debug!(endpoint = %ep, %error, "attempt failed; retrying");
                return Next::Again {
                    req: again,
                    backoff: true,
                };
            }
        }
        Next::Fail(error)
    }

    /// The request for one more policy retry, if the body can be replayed and the
    /// backend's budget allows it.
    fn try_again(&self, x: &Exchange<'_>) -> Option<Request<RequestBody>> {
        let replay = x.replay.as_ref()?;
        let body = replay.body_again()?;
        let traffic = &self.metrics.traffic;
        if !x
            .cluster
            .state
            .budget
            .withdraw(&x.cluster.policy.retry_budget)
        {
            traffic.budget_exhausted(&x.cluster.label);
            return None;
        }
        traffic.retry(&x.dest.name, &x.cluster.label, RetryReason::Policy);
        Some(replay.build(body))
    }

    /// The answer: mirrors go out (if they have not), and the upstream's response becomes
    /// the client's.
    fn respond(
        &self,
        x: &mut Exchange<'_>,
        resp: Response<Incoming>,
        reuse: Option<Reusable>,
    ) -> Response<ProxyBody> {
        if !x.mirrored {
            self.mirror(x);
        }
        let tunnel = Tunnel {
            dir: Direction::Outbound,
            metrics: self.metrics,
            watch: self.watch,
        };
        relay(resp, reuse, x.client_upgrade.take(), x.held.take(), tunnel)
    }

    /// Sends the route's mirrors from the kept copy of the request.
    fn mirror(&self, x: &mut Exchange<'_>) {
        x.mirrored = true;
        let Some(replay) = &x.replay else {
            return;
        };
        let mirrors = Mirrors {
            client: self.client,
            tls: self.tls,
            traffic: &self.metrics.traffic,
            client_protocol: self.client_protocol,
        };
        mirrors.send(&x.route.mirrors, replay, x.authority.as_ref());
    }
}

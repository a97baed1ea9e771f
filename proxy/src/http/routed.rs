//! A request to a mesh service: route → redirect or fault → request edits → backend →
//! attempts (endpoint choice, limits, retries with budget and backoff) → mirrors →
//! response edits.
//!
//! Retry rules: a request that was never written upstream (connect refused, a pooled
//! connection that closed under it) is always sent again, to another endpoint, whatever
//! its method. Anything else is retried only when the route has a retry policy, the
//! method is idempotent (or the route allows otherwise), the body is still replayable and
//! the backend's retry budget has room.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tandem_xds::domain::{FaultInjection, ProxyRetry};
use tokio::time::Instant;

use super::forward::{
    connect_settings, is_upgrading, wire_protocol, ConnContext, Forwarder, Labels,
};
use super::headers::{set_target, strip_hop_by_hop};
use crate::body::ProxyBody;
use crate::client::{Client, SendError, Transport, WireProtocol};
use crate::errors::{ProxyError, ERROR_HEADER};
use crate::metrics::{Metrics, RetryReason};
use crate::replay::{BodyHandle, RequestBody};
use crate::routing::{
    now_nanos, random_below, sample, Cluster, Destination, Outcome, Overflow, Route,
};
use crate::snapshot::Snapshot;

/// Extra attempts for requests that never reached an endpoint.
const MAX_UNSENT_RETRIES: u32 = 2;

/// What is needed to build the request again for a retry or a mirror.
#[derive(Debug, Clone)]
struct Template {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Template {
    fn build(&self, body: RequestBody) -> Request<RequestBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

impl Forwarder {
    /// Routes and forwards a request to `dest`.
    pub(super) async fn routed(
        &self,
        snapshot: &Snapshot,
        conn: &ConnContext,
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
            let timeout = route.timeout.unwrap_or(snapshot.config.timeouts.request);
            let attempts = self.attempts(snapshot, conn, dest, route, req, authority, labels);
            tokio::time::timeout(timeout, attempts)
                .await
                .map_err(|_| ProxyError::Timeout(timeout))??
        };
        if !route.response_headers.is_empty() {
            route.response_headers.apply(resp.headers_mut());
        }
        Ok(resp)
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempts(
        &self,
        snapshot: &Snapshot,
        conn: &ConnContext,
        dest: &Destination,
        route: &Route,
        mut req: Request<Incoming>,
        authority: Option<Authority>,
        labels: &mut Labels,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let traffic = &self.metrics.traffic;
        if let Some(fault) = &route.fault {
            if let Some(resp) = inject_fault(fault, &dest.name, &self.metrics).await {
                return Ok(resp);
            }
        }
        let cluster = route
            .pick_backend()
            .ok_or_else(|| ProxyError::NoBackend(route.name.to_string()))?
            .clone();
        labels.backend = Some(cluster.label.clone());
        labels.tls = cluster.tls.is_some() && self.tls.is_some();
        let limits = &cluster.policy.limits;
        let state = &cluster.state;
        let held = match state.limits.admit_request(limits) {
            Ok(permit) => {
                if state.limits.reset(limits) {
                    traffic.breaker(&cluster.label, false);
                }
                permit
            }
            Err(o) => return Err(self.overflow(&cluster, o)),
        };
        state.budget.deposit();

        let upgrading = is_upgrading(&req);
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        if !route.request_headers.is_empty() {
            route.request_headers.apply(&mut parts.headers);
        }
        if let Some(edit) = &route.path_rewrite {
            parts.uri = edit.rewrite_uri(&parts.uri);
        }
        let authority = match &route.host_rewrite {
            Some(host) => {
                parts.headers.remove(http::header::HOST);
                if parts.uri.authority().is_some() {
                    parts.uri = Uri::from(
                        parts
                            .uri
                            .path_and_query()
                            .cloned()
                            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
                    );
                }
                Some(host.clone())
            }
            None => authority,
        };
        strip_hop_by_hop(&mut parts.headers, upgrading);
        let retry = route
            .retry
            .as_ref()
            .filter(|r| r.attempts > 0 && (!r.idempotent_only || is_idempotent(&parts.method)));
        let keep_copy = retry.is_some() || !route.mirrors.is_empty();
        let cap = if keep_copy {
            snapshot.config.limits.retry_buffer_bytes
        } else {
            0
        };
        let (body, handle) = RequestBody::new(body, cap);
        let template = keep_copy.then(|| Template {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        });
        let mut next = Request::from_parts(parts, body);
        let mut mirrored = false;
        if matches!(handle, BodyHandle::Empty) {
            // Nothing to wait for: mirror now, alongside the primary, as Envoy does.
            self.mirror(route, template.as_ref(), &handle, authority.as_ref(), conn);
            mirrored = true;
        }

        let settings = connect_settings(snapshot);
        let (mut unsent_retries, mut policy_retries) = (0u32, 0u32);
        let mut avoid: Option<SocketAddr> = None;
        loop {
            let ep = cluster
                .pick(avoid)
                .ok_or_else(|| ProxyError::NoEndpoints(cluster.name.to_string()))?
                .clone();
            let wire = wire_protocol(cluster.protocol, conn.client_protocol, upgrading);
            {
                let (mut parts, body) = next.into_parts();
                set_target(
                    &mut parts.uri,
                    &mut parts.headers,
                    &mut parts.version,
                    authority.as_ref(),
                    wire == WireProtocol::Http2,
                );
                next = Request::from_parts(parts, body);
            }
            let slot = if wire == WireProtocol::Http1 {
                state
                    .limits
                    .connection(limits, settings.connect_timeout)
                    .await
                    .map_err(|o| self.overflow(&cluster, o))?
            } else {
                None
            };
            let started = Instant::now();
            let result = {
                let _in_flight = ep.start();
                let transport = Transport {
                    identity: cluster.tls.as_ref(),
                    tls: self.tls.as_ref(),
                };
                let send = self
                    .client
                    .send(ep.addr, transport, wire, next, settings, slot);
                match route.per_try_timeout {
                    Some(limit) => tokio::time::timeout(limit, send).await.unwrap_or_else(|_| {
                        Err(SendError {
                            error: ProxyError::Timeout(limit),
                            unsent: None,
                        })
                    }),
                    None => send.await,
                }
            };
            let outcome = match &result {
                Ok((resp, _)) => {
                    ep.observe_latency(started.elapsed(), now_nanos());
                    Outcome::of_status(resp.status().as_u16())
                }
                Err(_) => Outcome::ConnectionFailure,
            };
            if cluster.record(&ep, outcome) {
                traffic.ejection(&cluster.label);
                tracing::info!(backend = %cluster.label, endpoint = %ep.addr, "endpoint ejected");
            }
            let error = match result {
                Ok((resp, reuse)) => {
                    let status = resp.status().as_u16();
                    let retriable = retry.is_some_and(|r| r.codes.contains(&status))
                        && policy_retries < retry.map_or(0, |r| r.attempts);
                    if retriable {
                        if let Some(again) =
                            self.try_again(&cluster, &handle, template.as_ref(), &dest.name)
                        {
                            drop(resp);
                            policy_retries += 1;
                            backoff(retry, policy_retries).await;
                            next = again;
                            avoid = Some(ep.addr);
                            continue;
                        }
                    }
                    if !mirrored {
                        self.mirror(route, template.as_ref(), &handle, authority.as_ref(), conn);
                    }
                    return Ok(self.relay(conn, resp, reuse, client_upgrade, held));
                }
                Err(SendError {
                    error,
                    unsent: Some(back),
                }) if unsent_retries < MAX_UNSENT_RETRIES => {
                    // Never written: as safe as the first attempt, so no budget needed.
                    tracing::debug!(endpoint = %ep.addr, %error, "request not sent; trying another endpoint");
                    traffic.retry(&dest.name, &cluster.label, RetryReason::Unsent);
                    unsent_retries += 1;
                    next = *back;
                    avoid = Some(ep.addr);
                    continue;
                }
                Err(SendError { error, .. }) => error,
            };
            if retry.is_some_and(|r| policy_retries < r.attempts) {
                if let Some(again) =
                    self.try_again(&cluster, &handle, template.as_ref(), &dest.name)
                {
                    tracing::debug!(endpoint = %ep.addr, %error, "attempt failed; retrying");
                    policy_retries += 1;
                    backoff(retry, policy_retries).await;
                    next = again;
                    avoid = Some(ep.addr);
                    continue;
                }
            }
            return Err(error);
        }
    }

    /// The request for one more policy retry, if the body can be replayed and the budget
    /// allows it.
    fn try_again(
        &self,
        cluster: &Cluster,
        handle: &BodyHandle,
        template: Option<&Template>,
        dst: &str,
    ) -> Option<Request<RequestBody>> {
        let template = template?;
        let body = handle.replay()?;
        if !cluster.state.budget.withdraw(&cluster.policy.retry_budget) {
            self.metrics.traffic.budget_exhausted(&cluster.label);
            return None;
        }
        self.metrics
            .traffic
            .retry(dst, &cluster.label, RetryReason::Policy);
        Some(template.build(body))
    }

    fn overflow(&self, cluster: &Cluster, o: Overflow) -> ProxyError {
        let limit = match o {
            Overflow::Requests => "max_requests",
            Overflow::Pending => "max_pending_requests",
        };
        let traffic = &self.metrics.traffic;
        traffic.overflow(&cluster.label, limit);
        if cluster.state.limits.trip() {
            traffic.breaker(&cluster.label, true);
        }
        ProxyError::Overflow {
            backend: cluster.label.to_string(),
            limit,
        }
    }

    /// Sends shadow copies, fire and forget: their responses are read and dropped, and
    /// nothing about them reaches the client.
    fn mirror(
        &self,
        route: &Route,
        template: Option<&Template>,
        handle: &BodyHandle,
        authority: Option<&Authority>,
        conn: &ConnContext,
    ) {
        let Some(template) = template else {
            return;
        };
        for (cluster, fraction) in &route.mirrors {
            if !sample(*fraction) {
                continue;
            }
            let Some(body) = handle.detached_copy() else {
                self.metrics.traffic.mirror(&cluster.label, "skipped");
                continue;
            };
            let Some(ep) = cluster.pick(None) else {
                self.metrics.traffic.mirror(&cluster.label, "skipped");
                continue;
            };
            self.metrics.traffic.mirror(&cluster.label, "sent");
            let wire = wire_protocol(cluster.protocol, conn.client_protocol, false);
            let (mut parts, body) = template.build(body).into_parts();
            set_target(
                &mut parts.uri,
                &mut parts.headers,
                &mut parts.version,
                authority,
                wire == WireProtocol::Http2,
            );
            let req = Request::from_parts(parts, body);
            let addr = ep.addr;
            let client: Client = self.client.clone();
            let identity = cluster.tls.clone();
            let tls = self.tls.clone();
            let settings = crate::client::ConnectSettings {
                connect_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(20),
            };
            tokio::spawn(async move {
                let sent = tokio::time::timeout(Duration::from_secs(30), async {
                    let transport = Transport {
                        identity: identity.as_ref(),
                        tls: tls.as_ref(),
                    };
                    let (resp, reuse) = client
                        .send(addr, transport, wire, req, settings, None)
                        .await
                        .ok()?;
                    // Read to the end so the pooled connection can be reused.
                    let _ = ProxyBody::upstream(resp.into_body(), reuse, None)
                        .collect()
                        .await;
                    Some(())
                })
                .await;
                if !matches!(sent, Ok(Some(()))) {
                    tracing::debug!(%addr, "mirror request failed");
                }
            });
        }
    }
}

/// Applies a route's fault: delays (once per request, before any attempt) and returns
/// the injected abort response, if any. Retries never see an injected abort, so the
/// client observes exactly the configured rate.
async fn inject_fault(
    fault: &FaultInjection,
    dst: &str,
    metrics: &Metrics,
) -> Option<Response<ProxyBody>> {
    if let Some(delay) = &fault.delay {
        if sample(delay.fraction) {
            metrics.traffic.fault(dst, "delay");
            tokio::time::sleep(delay.duration).await;
        }
    }
    let abort = fault.abort.as_ref().filter(|a| sample(a.fraction))?;
    metrics.traffic.fault(dst, "abort");
    let status = StatusCode::from_u16(abort.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut resp = Response::new(ProxyBody::full(Bytes::from_static(b"fault injected\n")));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static("fault injected"));
    Some(resp)
}

/// Methods that may be retried without the route's explicit consent (RFC 9110 §9.2.2).
fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Waits before retry `n` (1-based): exponential from the base, capped, with half of it
/// jittered so that clients that failed together do not retry together.
async fn backoff(retry: Option<&ProxyRetry>, n: u32) {
    let Some(r) = retry else {
        return;
    };
    let exp = r
        .backoff_base
        .saturating_mul(1u32 << (n - 1).min(16))
        .min(r.backoff_max.max(r.backoff_base));
    let half = exp / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
    tokio::time::sleep(half + Duration::from_nanos(random_below(nanos))).await;
}

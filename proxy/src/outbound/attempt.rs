//! Stage 8, attempt: one exchange with one endpoint. The request gets the target form its
//! protocol needs, takes an HTTP/1 connection slot, goes through the worker's pools within
//! the route's per-attempt timeout, and what happened is written back to the endpoint's
//! state: latency for the balancer, the outcome for outlier ejection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::breaker;
use super::cluster::Cluster;
use super::endpoint::{now_nanos, EndpointState, Outcome};
use crate::client::{Client, ConnectSettings, Reusable, SendError, Transport, WireProtocol};
use crate::errors::ProxyError;
use crate::http::headers::retarget;
use crate::http::request_body::RequestBody;
use crate::metrics::TrafficMetrics;
use crate::tls::TlsState;

/// What one attempt returned: the response (and, for HTTP/1, its connection to hand back
/// when the body ends), or why there is none.
pub type Exchanged = Result<(Response<Incoming>, Option<Reusable>), SendError>;

/// One attempt to `ep` of `cluster`.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The worker's upstream pools.
    pub client: &'a Client,
    /// Mutual TLS, with an identity.
    pub tls: Option<&'a Arc<TlsState>>,
    /// Ejections and overflows are counted here.
    pub traffic: &'a TrafficMetrics,
    /// The backend.
    pub cluster: &'a Cluster,
    /// The endpoint the balancer chose.
    pub ep: &'a EndpointState,
    /// The protocol to speak to it.
    pub wire: WireProtocol,
    /// Connect timeout and pool idle time.
    pub settings: ConnectSettings,
    /// The route's per-attempt timeout.
    pub per_try_timeout: Option<Duration>,
}

impl Attempt<'_> {
    /// Sends `req`, addressed to `authority`. Fails outright (no attempt made) only when
    /// the backend has no HTTP/1 connection slot free in time.
    pub async fn send(
        &self,
        req: Request<RequestBody>,
        authority: Option<&Authority>,
    ) -> Result<Exchanged, ProxyError> {
        let (mut parts, body) = req.into_parts();
        retarget(&mut parts, authority, self.wire == WireProtocol::Http2);
        let req = Request::from_parts(parts, body);
        let slot = if self.wire == WireProtocol::Http1 {
            breaker::connection(self.cluster, self.traffic, self.settings.connect_timeout).await?
        } else {
            None
        };
        let started = Instant::now();
        let result = {
            let _in_flight = self.ep.start();
            let transport = Transport {
                identity: self.cluster.tls.as_ref(),
                tls: self.tls,
                source: None,
            };
            let send =
                self.client
                    .send(self.ep.addr, transport, self.wire, req, self.settings, slot);
            within(self.per_try_timeout, send).await
        };
        self.learn(&result, started.elapsed());
        Ok(result)
    }

    /// Feeds the result to the endpoint's latency and health.
    fn learn(&self, result: &Exchanged, elapsed: Duration) {
        let outcome = match result {
            Ok((resp, _)) => {
                self.ep.observe_latency(elapsed, now_nanos());
                Outcome::of_status(resp.status().as_u16())
            }
            Err(_) => Outcome::ConnectionFailure,
        };
        if self.cluster.record(self.ep, outcome) {
            self.traffic.ejection(&self.cluster.label);
            tracing::info!(backend = %self.cluster.label, endpoint = %self.ep.addr, "endpoint ejected");
        }
    }
}

/// `send`, given up after `limit` (if any) as an attempt timeout: the request may have
/// been written, so only a retry policy can send it again.
pub async fn within<T>(
    limit: Option<Duration>,
    send: impl Future<Output = Result<T, SendError>>,
) -> Result<T, SendError> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, send).await.unwrap_or_else(|_| {
            Err(SendError {
                error: ProxyError::AttemptTimeout(limit),
                unsent: None,
            })
        }),
        None => send.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::Retryable;

    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_does_not_answer_times_out_as_retryable_if_idempotent() {
        let start = Instant::now();
        let never = std::future::pending::<Result<(), SendError>>();
        let e = within(Some(Duration::from_millis(250)), never)
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert!(e.unsent.is_none());
        assert!(matches!(e.error, ProxyError::AttemptTimeout(_)));
        assert_eq!(e.error.retryable(), Retryable::Idempotent);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_limit_the_attempt_takes_as_long_as_it_takes() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, SendError>(7)
        };
        assert_eq!(within(None, slow).await.unwrap(), 7);
    }
}

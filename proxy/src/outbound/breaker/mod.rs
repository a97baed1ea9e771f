//! Stage 4, breaker: whether the backend may take one more request. Connection pool
//! limits (Envoy's circuit breakers: requests in flight, HTTP/1 connections in use,
//! requests waiting for one) turn excess away at once with `503` and
//! `tandem-proxy-error: overflow`, instead of queueing behind a struggling service;
//! [`outlier`] takes failing endpoints out of rotation.
//!
//! The counters and permits are the connection pool's ([`crate::client::limits`]); this
//! stage is the policy around them: which limit applies, what an overflow is answered
//! with, and the `tandem_circuit_breaker_open` gauge.

pub mod outlier;

use std::time::Duration;

use super::cluster::Cluster;
use crate::client::limits::{Overflow, Permit};
use crate::errors::ProxyError;
use crate::metrics::TrafficMetrics;

/// Admits one more request in flight to `cluster`, or refuses it with an overflow. The
/// permit, if a limit is set, is held until the response body ends.
pub fn admit(cluster: &Cluster, traffic: &TrafficMetrics) -> Result<Option<Permit>, ProxyError> {
    let limits = &cluster.policy.limits;
    let state = &cluster.state.limits;
    match state.admit_request(limits) {
        Ok(permit) => {
            if state.reset(limits) {
                traffic.breaker(&cluster.label, false);
            }
            Ok(permit)
        }
        Err(o) => Err(overflow(cluster, traffic, o)),
    }
}

/// A slot for one HTTP/1 connection in use to `cluster`, waiting at most `wait` (and only
/// while fewer than `max_pending_requests` others wait).
pub async fn connection(
    cluster: &Cluster,
    traffic: &TrafficMetrics,
    wait: Duration,
) -> Result<Option<Permit>, ProxyError> {
    cluster
        .state
        .limits
        .connection(&cluster.policy.limits, wait)
        .await
        .map_err(|o| overflow(cluster, traffic, o))
}

/// Counts a refusal, opens the breaker gauge, and says which limit it was.
fn overflow(cluster: &Cluster, traffic: &TrafficMetrics, o: Overflow) -> ProxyError {
    let limit = match o {
        Overflow::Requests => "max_requests",
        Overflow::Pending => "max_pending_requests",
    };
    traffic.overflow(&cluster.label, limit);
    if cluster.state.limits.trip() {
        traffic.breaker(&cluster.label, true);
    }
    ProxyError::Overflow {
        backend: cluster.label.to_string(),
        limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use http::StatusCode;
    use tandem_xds::domain::{CallPolicy, PoolLimits};

    use crate::config::Protocol;
    use crate::metrics::Metrics;

    fn limited(limits: PoolLimits) -> Cluster {
        let policy = CallPolicy {
            limits,
            ..Default::default()
        };
        let addr = ([127, 0, 0, 1], 1).into();
        Cluster::new(
            "web",
            "web",
            Protocol::Http1,
            &[addr],
            policy,
            Arc::default(),
        )
    }

    /// The breaker gauge of `web` as `/metrics` shows it; -1 if never written.
    fn gauge(metrics: &Metrics) -> i64 {
        metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("tandem_circuit_breaker_open{backend=\"web\"} "))
            .map_or(-1, |v| v.parse().unwrap())
    }

    #[test]
    fn an_overflow_is_a_503_that_names_the_limit_and_opens_the_breaker_until_admitted() {
        let metrics = Metrics::new().unwrap();
        let traffic = &metrics.traffic;
        let cluster = limited(PoolLimits {
            max_requests: Some(2),
            ..Default::default()
        });
        let held = [
            admit(&cluster, traffic).unwrap(),
            admit(&cluster, traffic).unwrap(),
        ];
        assert!(held.iter().all(Option::is_some));
        let refused = admit(&cluster, traffic).unwrap_err();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            matches!(
                refused,
                ProxyError::Overflow {
                    limit: "max_requests",
                    ..
                }
            ),
            "{refused:?}"
        );
        assert_eq!(gauge(&metrics), 1, "open");
        drop(held);
        assert!(admit(&cluster, traffic).unwrap().is_some());
        assert_eq!(
            gauge(&metrics),
            0,
            "closed by the next request admitted below the limit"
        );
    }

    #[test]
    fn no_limit_set_counts_nothing() {
        let metrics = Metrics::new().unwrap();
        let traffic = &metrics.traffic;
        let cluster = limited(PoolLimits::default());
        assert!((0..1000).all(|_| admit(&cluster, traffic).unwrap().is_none()));
        assert_eq!(gauge(&metrics), -1, "never written");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_connection_ends_at_its_deadline() {
        let metrics = Metrics::new().unwrap();
        let traffic = &metrics.traffic;
        let cluster = limited(PoolLimits {
            max_connections: Some(1),
            max_pending_requests: Some(1),
            ..Default::default()
        });
        let wait = Duration::from_secs(1);
        let _in_use = connection(&cluster, traffic, wait).await.unwrap();
        let start = tokio::time::Instant::now();
        let e = connection(&cluster, traffic, wait).await.unwrap_err();
        assert_eq!(start.elapsed(), wait, "waited exactly the connect timeout");
        assert!(matches!(
            e,
            ProxyError::Overflow {
                limit: "max_pending_requests",
                ..
            }
        ));
    }
}

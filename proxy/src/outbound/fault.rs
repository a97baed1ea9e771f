//! Stage 2, fault: the route's injected delay and abort (Tandem's `FaultInjection`).
//! Applied once per request, before any attempt, so retries never hide an injected abort
//! and the client observes exactly the configured rate.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use tandem_xds::domain::FaultInjection;

use crate::client::response::ProxyBody;
use crate::errors::ERROR_HEADER;
use crate::metrics::TrafficMetrics;
use crate::random::sample;

/// Delays the request if it falls in the delay's share, then returns the injected abort
/// response if it falls in the abort's share.
pub async fn inject(
    fault: &FaultInjection,
    dst: &str,
    traffic: &TrafficMetrics,
) -> Option<Response<ProxyBody>> {
    if let Some(delay) = &fault.delay {
        if sample(delay.fraction) {
            traffic.fault(dst, "delay");
            tokio::time::sleep(delay.duration).await;
        }
    }
    let abort = fault.abort.as_ref().filter(|a| sample(a.fraction))?;
    traffic.fault(dst, "abort");
    let status = StatusCode::from_u16(abort.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut resp = Response::new(ProxyBody::full(Bytes::from_static(b"fault injected\n")));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static("fault injected"));
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use tandem_xds::domain::{FaultAbort, FaultDelay, Fraction};

    use crate::metrics::Metrics;

    #[tokio::test(start_paused = true)]
    async fn a_delay_waits_its_duration_and_an_abort_answers_for_the_upstream() {
        let metrics = Metrics::new().unwrap();
        let fault = FaultInjection {
            delay: Some(FaultDelay {
                duration: Duration::from_millis(700),
                fraction: Fraction::ALL,
            }),
            abort: Some(FaultAbort {
                status: 418,
                fraction: Fraction::ALL,
            }),
        };
        let start = tokio::time::Instant::now();
        let resp = inject(&fault, "web", &metrics.traffic).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(700));
        assert_eq!(resp.status().as_u16(), 418);
        assert_eq!(resp.headers()[ERROR_HEADER], "fault injected");
        let text = metrics.render();
        assert!(text.contains(r#"tandem_faults_injected_total{dst_service="web",kind="abort"} 1"#));
        assert!(text.contains(r#"tandem_faults_injected_total{dst_service="web",kind="delay"} 1"#));
    }

    #[tokio::test(start_paused = true)]
    async fn outside_the_fractions_the_request_passes_untouched_and_at_once() {
        let metrics = Metrics::new().unwrap();
        let fault = FaultInjection {
            delay: Some(FaultDelay {
                duration: Duration::from_secs(5),
                fraction: Fraction(0),
            }),
            abort: Some(FaultAbort {
                status: 500,
                fraction: Fraction(0),
            }),
        };
        let start = tokio::time::Instant::now();
        assert!(inject(&fault, "web", &metrics.traffic).await.is_none());
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}

//! Traffic management: what a route does to a request besides choosing a backend
//! (filters, timeouts, retries, fault injection), and how a destination is called
//! (load balancing, connection limits, outlier detection, retry budget).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ServiceRef;

/// A share of requests in parts per million: exact for the percentages people write
/// (`0.1` %, `99` %) without floating point in `Eq` types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fraction(pub u32);

impl Fraction {
    /// Every request.
    pub const ALL: Fraction = Fraction(1_000_000);
    /// The parts-per-million denominator.
    pub const MILLION: u32 = 1_000_000;

    /// `percent` % (clamped to 0..=100), rounded to a part per million.
    pub fn from_percent(percent: f64) -> Fraction {
        let ppm = (percent.clamp(0.0, 100.0) * 10_000.0).round();
        Fraction(ppm as u32)
    }

    /// The share as a percentage.
    pub fn percent(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }
}

impl Default for Fraction {
    fn default() -> Self {
        Fraction::ALL
    }
}

/// A header name and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Name, lowercase.
    pub name: String,
    /// Value.
    pub value: String,
}

/// Gateway API `RequestHeaderModifier` / `ResponseHeaderModifier`: applied in the order
/// remove, set, add.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HeaderModifier {
    /// Replace the header (or add it when absent).
    pub set: Vec<Header>,
    /// Append a value (the header may then have several).
    pub add: Vec<Header>,
    /// Remove the header entirely.
    pub remove: Vec<String>,
}

impl HeaderModifier {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// How a redirect or rewrite changes the path (Gateway API `HTTPPathModifier`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", content = "value")]
pub enum PathModifier {
    /// The whole path becomes this value (the query string is kept).
    ReplaceFullPath(String),
    /// The segments matched by the rule's `PathPrefix` become this prefix.
    ReplacePrefixMatch(String),
}

/// Gateway API `RequestRedirect`: answer with a redirect instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRedirect {
    /// `http` or `https`; `None` keeps the request's.
    pub scheme: Option<String>,
    /// Host; `None` keeps the request's.
    pub hostname: Option<String>,
    /// Path change; `None` keeps the path.
    pub path: Option<PathModifier>,
    /// Port; `None` keeps the request's (or the scheme's default when the scheme changes).
    pub port: Option<u16>,
    /// 301 or 302 (Gateway API also allows 303, 307 and 308).
    pub status_code: u16,
}

/// Gateway API `URLRewrite`: change the request before forwarding it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UrlRewrite {
    /// New `Host` / `:authority`.
    pub hostname: Option<String>,
    /// Path change.
    pub path: Option<PathModifier>,
}

/// Gateway API `RequestMirror`: a copy of (a share of) the requests goes to another
/// service; its response is discarded and never affects the client's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMirror {
    /// The shadow service.
    pub backend: ServiceRef,
    /// The share of requests mirrored.
    pub fraction: Fraction,
}

/// A delay injected before forwarding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultDelay {
    /// How long.
    pub duration: Duration,
    /// The share of requests delayed.
    pub fraction: Fraction,
}

/// An error answered instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultAbort {
    /// The HTTP status answered.
    pub status: u16,
    /// The share of requests aborted.
    pub fraction: Fraction,
}

/// Tandem's `FaultInjection` (referenced from an HTTPRoute rule with an `ExtensionRef`
/// filter): injected once per request, before retries, so retries never hide an injected
/// abort and a delay is paid once.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FaultInjection {
    /// Delay, if any.
    pub delay: Option<FaultDelay>,
    /// Abort, if any.
    pub abort: Option<FaultAbort>,
}

/// The filters of one HTTPRoute rule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RouteFilters {
    /// `RequestHeaderModifier`.
    pub request_headers: HeaderModifier,
    /// `ResponseHeaderModifier`.
    pub response_headers: HeaderModifier,
    /// `RequestRedirect` (excludes backends and `URLRewrite`).
    pub redirect: Option<RequestRedirect>,
    /// `URLRewrite`.
    pub rewrite: Option<UrlRewrite>,
    /// `RequestMirror`s.
    pub mirrors: Vec<RequestMirror>,
    /// `ExtensionRef` to a `FaultInjection` in the route's namespace, by name.
    pub fault: Option<String>,
}

/// Gateway API `HTTPRouteTimeouts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RouteTimeouts {
    /// The whole request, retries included (`None`: the proxy's default).
    pub request: Option<Duration>,
    /// Each attempt to a backend.
    pub backend_request: Option<Duration>,
}

/// Gateway API `HTTPRouteRetry`, with Tandem's safety rule for non-idempotent methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Response statuses that are retried (connection failures always are).
    pub codes: Vec<u16>,
    /// Base of the jittered exponential backoff between attempts.
    pub backoff: Duration,
    /// Retry `POST`/`PATCH` too (annotation `retry.tandem.dev/non-idempotent: "true"`).
    pub non_idempotent: bool,
}

/// Default base backoff between retries.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// How a destination spreads requests over its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LoadBalancer {
    /// Power of two choices over peak-EWMA latency × outstanding requests.
    #[default]
    PeakEwma,
    /// Power of two choices over outstanding requests.
    LeastRequest,
    /// In turn.
    RoundRobin,
}

/// Connection pool limits of one destination; excess fails fast with 503 and
/// `tandem-proxy-error: overflow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PoolLimits {
    /// Open connections to all endpoints together.
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection.
    pub max_pending_requests: Option<u32>,
    /// Requests in flight.
    pub max_requests: Option<u32>,
}

/// Passive health checking: endpoints that keep failing are taken out of the rotation
/// for a time that grows with repeat offences, then come back on probation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlierDetection {
    /// Consecutive 5xx responses (or connection failures) that eject an endpoint.
    pub consecutive_5xx: Option<u32>,
    /// Consecutive gateway errors (502, 503, 504, connection failures) that eject.
    pub consecutive_gateway_errors: Option<u32>,
    /// The first ejection's length; the n-th lasts n times as long.
    pub base_ejection_time: Duration,
    /// The longest ejection.
    pub max_ejection_time: Duration,
    /// At most this share of a destination's endpoints is ejected at once.
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: Some(5),
            consecutive_gateway_errors: None,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// The share of requests that may be retries, so retries cannot multiply load during an
/// outage (a retry storm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryBudget {
    /// Retries allowed as a percentage of requests.
    pub percent: u32,
    /// Retries allowed per second regardless of the ratio, so low traffic can retry.
    pub min_retries_per_second: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            percent: 20,
            min_retries_per_second: 10,
        }
    }
}

/// How a destination is called: the parts of a `DestinationPolicy` the proxy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CallPolicy {
    /// Load balancer.
    pub lb: LoadBalancer,
    /// Pool limits.
    pub limits: PoolLimits,
    /// Outlier detection (`None`: off).
    pub outlier: Option<OutlierDetection>,
    /// Retry budget (always on).
    pub retry_budget: RetryBudget,
}

/// Tandem's `DestinationPolicy`: how every client calls one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationPolicy {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The service it governs.
    pub target: ServiceRef,
    /// What it sets.
    pub policy: CallPolicy,
}

//! A backend service → its EDS `Cluster`, carrying the `DestinationPolicy` in standard
//! Envoy fields (plus Tandem metadata where Envoy has no field).

use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers::{thresholds, Thresholds},
    cluster, CircuitBreakers, Cluster, OutlierDetection as XdsOutlierDetection,
};
use envoy_types::pb::envoy::config::core::v3::{Metadata, RoutingPriority};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{value, Struct, UInt32Value, Value};

use super::{ads_source, LB_FIELD, PEAK_EWMA, PROTOCOL_FIELD, TANDEM_METADATA};
use crate::convert::pb_duration;
use crate::domain::{
    AppProtocol, CallPolicy, LoadBalancer, OutlierDetection, PoolLimits, RetryBudget,
};

/// Percentage for `enforcing_*` fields: the detector always acts when it fires.
const ENFORCED: u32 = 100;

/// The EDS cluster `name`.
///
/// Load balancing: `ROUND_ROBIN` or `LEAST_REQUEST`; peak EWMA (the default) is
/// `ROUND_ROBIN` plus `filter_metadata["tandem"].lb = "peak_ewma"`, so Envoy and proxyless
/// gRPC (which accept the default cluster as is) fall back to round robin.
pub(super) fn eds_cluster(name: &str, protocol: AppProtocol, policy: &CallPolicy) -> Cluster {
    let mut fields = Vec::new();
    let protocol = match protocol {
        AppProtocol::Detect => None,
        AppProtocol::Http => Some("http"),
        AppProtocol::Http2 => Some("http2"),
        AppProtocol::Tcp => Some("tcp"),
    };
    if let Some(p) = protocol {
        fields.push((PROTOCOL_FIELD, p));
    }
    if policy.lb == LoadBalancer::PeakEwma {
        fields.push((LB_FIELD, PEAK_EWMA));
    }
    let metadata = (!fields.is_empty()).then(|| Metadata {
        filter_metadata: [(
            TANDEM_METADATA.to_string(),
            Struct {
                fields: fields
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            Value {
                                kind: Some(value::Kind::StringValue(v.to_string())),
                            },
                        )
                    })
                    .collect(),
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    });
    let lb_policy = match policy.lb {
        LoadBalancer::LeastRequest => cluster::LbPolicy::LeastRequest,
        LoadBalancer::RoundRobin | LoadBalancer::PeakEwma => cluster::LbPolicy::RoundRobin,
    };
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads_source()),
            service_name: String::new(),
        }),
        lb_policy: lb_policy as i32,
        metadata,
        circuit_breakers: circuit_breakers(&policy.limits, &policy.retry_budget),
        outlier_detection: policy.outlier.as_ref().map(outlier_detection),
        ..Default::default()
    }
}

/// One `DEFAULT`-priority threshold with the limits that are set and the retry budget;
/// `None` for the default policy (no limits, default budget), which decoding gives back
/// from absence, so the default cluster keeps its minimal shape.
fn circuit_breakers(limits: &PoolLimits, budget: &RetryBudget) -> Option<CircuitBreakers> {
    if *limits == PoolLimits::default() && *budget == RetryBudget::default() {
        return None;
    }
    let value = |v: Option<u32>| v.map(|value| UInt32Value { value });
    Some(CircuitBreakers {
        thresholds: vec![Thresholds {
            priority: RoutingPriority::Default as i32,
            max_connections: value(limits.max_connections),
            max_pending_requests: value(limits.max_pending_requests),
            max_requests: value(limits.max_requests),
            retry_budget: Some(thresholds::RetryBudget {
                budget_percent: Some(Percent {
                    value: f64::from(budget.percent),
                }),
                // Tandem reads this as retries per second (Envoy: concurrent retries).
                min_retry_concurrency: Some(UInt32Value {
                    value: budget.min_retries_per_second,
                }),
                budget_interval: None,
            }),
            ..Default::default()
        }],
        per_host_thresholds: Vec::new(),
    })
}

/// Consecutive-failure detection only: success-rate and failure-percentage ejection are
/// switched off explicitly (Envoy enforces success rate by default).
fn outlier_detection(o: &OutlierDetection) -> XdsOutlierDetection {
    let enforcing = |set: bool| {
        Some(UInt32Value {
            value: if set { ENFORCED } else { 0 },
        })
    };
    XdsOutlierDetection {
        consecutive_5xx: o.consecutive_5xx.map(|value| UInt32Value { value }),
        enforcing_consecutive_5xx: enforcing(o.consecutive_5xx.is_some()),
        consecutive_gateway_failure: o
            .consecutive_gateway_errors
            .map(|value| UInt32Value { value }),
        enforcing_consecutive_gateway_failure: enforcing(o.consecutive_gateway_errors.is_some()),
        base_ejection_time: Some(pb_duration(o.base_ejection_time)),
        max_ejection_time: Some(pb_duration(o.max_ejection_time)),
        max_ejection_percent: Some(UInt32Value {
            value: o.max_ejection_percent,
        }),
        enforcing_success_rate: Some(UInt32Value { value: 0 }),
        enforcing_failure_percentage: Some(UInt32Value { value: 0 }),
        ..Default::default()
    }
}

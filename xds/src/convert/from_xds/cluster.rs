//! `Cluster` → protocol hint, [`CallPolicy`] and the name of its `ClusterLoadAssignment`.

use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers::thresholds, cluster, CircuitBreakers, Cluster,
    OutlierDetection as XdsOutlierDetection,
};
use envoy_types::pb::envoy::config::core::v3::{Metadata, RoutingPriority};
use envoy_types::pb::google::protobuf::{value, Duration as PbDuration, UInt32Value};

use super::{check_ads, name_mismatch, reject_rest};
use crate::convert::to_xds::{LB_FIELD, PEAK_EWMA, PROTOCOL_FIELD, TANDEM_METADATA};
use crate::convert::{std_duration, ConvertError};
use crate::domain::{
    AppProtocol, CallPolicy, LoadBalancer, OutlierDetection, PoolLimits, RetryBudget, UpstreamTls,
};

/// What a cluster says, endpoints aside.
pub(super) struct ClusterInfo {
    pub protocol: AppProtocol,
    pub policy: CallPolicy,
    /// The `ClusterLoadAssignment` it takes its endpoints from.
    pub eds_name: String,
    /// Mutual TLS to its endpoints, from its transport socket.
    pub tls: Option<UpstreamTls>,
}

/// A cluster: must be EDS over ADS with round robin or least request (peak EWMA by
/// Tandem metadata).
pub(super) fn cluster(mut c: Cluster, name: &str, path: &str) -> Result<ClusterInfo, ConvertError> {
    if c.name != name {
        return Err(name_mismatch(path, &c.name));
    }
    let discovery = c.cluster_discovery_type.take();
    let eds = c.eds_cluster_config.take();
    let lb_policy = std::mem::take(&mut c.lb_policy);
    let metadata = c.metadata.take();
    let breakers = c.circuit_breakers.take();
    let outlier = c.outlier_detection.take();
    let socket = c.transport_socket.take();
    c.name.clear();
    c.alt_stat_name.clear();
    c.connect_timeout = None;
    reject_rest(&c, path)?;
    match discovery {
        Some(cluster::ClusterDiscoveryType::Type(t)) if t == cluster::DiscoveryType::Eds as i32 => {
        }
        Some(cluster::ClusterDiscoveryType::Type(t)) => {
            let kind = cluster::DiscoveryType::try_from(t)
                .map(|d| d.as_str_name().to_string())
                .unwrap_or_else(|_| t.to_string());
            return Err(ConvertError::new(
                format!("{path}.type"),
                format!("only EDS clusters are supported, got {kind}"),
            ));
        }
        Some(cluster::ClusterDiscoveryType::ClusterType(_)) => {
            return Err(ConvertError::new(
                format!("{path}.cluster_type"),
                "custom cluster types are not supported",
            ))
        }
        None => {
            return Err(ConvertError::new(
                format!("{path}.type"),
                "only EDS clusters are supported, got STATIC",
            ))
        }
    }
    let eds =
        eds.ok_or_else(|| ConvertError::new(format!("{path}.eds_cluster_config"), "required"))?;
    check_ads(
        eds.eds_config,
        &format!("{path}.eds_cluster_config.eds_config"),
    )?;
    let eds_name = if eds.service_name.is_empty() {
        name.to_string()
    } else {
        eds.service_name
    };
    let (protocol, peak_ewma) = tandem_metadata(metadata, path)?;
    let lb = match cluster::LbPolicy::try_from(lb_policy) {
        // Peak EWMA travels as metadata over a fallback other clients understand.
        Ok(cluster::LbPolicy::RoundRobin | cluster::LbPolicy::LeastRequest) if peak_ewma => {
            LoadBalancer::PeakEwma
        }
        Ok(cluster::LbPolicy::RoundRobin) => LoadBalancer::RoundRobin,
        Ok(cluster::LbPolicy::LeastRequest) => LoadBalancer::LeastRequest,
        _ => {
            return Err(ConvertError::new(
                format!("{path}.lb_policy"),
                "only ROUND_ROBIN and LEAST_REQUEST are supported",
            ))
        }
    };
    let (limits, retry_budget) = match breakers {
        Some(b) => circuit_breakers(b, &format!("{path}.circuit_breakers"))?,
        None => (PoolLimits::default(), RetryBudget::default()),
    };
    let outlier = outlier
        .map(|o| outlier_detection(o, &format!("{path}.outlier_detection")))
        .transpose()?;
    let tls = super::security::upstream_tls(socket, path)?;
    Ok(ClusterInfo {
        tls,
        protocol,
        policy: CallPolicy {
            lb,
            limits,
            outlier,
            retry_budget,
        },
        eds_name,
    })
}

/// `filter_metadata["tandem"]`: the protocol hint and whether the balancer is peak EWMA.
/// Other metadata namespaces are ignored; an unknown Tandem field is refused, as it may
/// carry a behaviour this proxy does not have.
fn tandem_metadata(
    metadata: Option<Metadata>,
    path: &str,
) -> Result<(AppProtocol, bool), ConvertError> {
    let Some(fields) = metadata
        .and_then(|mut m| m.filter_metadata.remove(TANDEM_METADATA))
        .map(|s| s.fields)
    else {
        return Ok((AppProtocol::Detect, false));
    };
    let mut protocol = AppProtocol::Detect;
    let mut peak_ewma = false;
    let mut keys: Vec<_> = fields.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, field) in keys {
        let fpath = format!("{path}.metadata.filter_metadata[{TANDEM_METADATA}].{key}");
        let Some(value::Kind::StringValue(s)) = field.kind else {
            return Err(ConvertError::new(fpath, "must be a string"));
        };
        match (key.as_str(), s.as_str()) {
            (PROTOCOL_FIELD, "http") => protocol = AppProtocol::Http,
            (PROTOCOL_FIELD, "http2") => protocol = AppProtocol::Http2,
            (PROTOCOL_FIELD, "tcp") => protocol = AppProtocol::Tcp,
            (PROTOCOL_FIELD, "detect") => protocol = AppProtocol::Detect,
            (PROTOCOL_FIELD, other) => {
                return Err(ConvertError::new(
                    fpath,
                    format!("unknown protocol {other:?}"),
                ))
            }
            (LB_FIELD, PEAK_EWMA) => peak_ewma = true,
            (LB_FIELD, other) => {
                return Err(ConvertError::new(
                    fpath,
                    format!("unknown load balancer {other:?}"),
                ))
            }
            _ => return Err(ConvertError::new(fpath, "unknown Tandem metadata field")),
        }
    }
    Ok((protocol, peak_ewma))
}

/// One `DEFAULT` threshold at most: limits that are absent are unlimited; an absent retry
/// budget is Tandem's default budget (Envoy would fall back to `max_retries`, which
/// Tandem does not implement, so that must be unset).
fn circuit_breakers(
    mut b: CircuitBreakers,
    path: &str,
) -> Result<(PoolLimits, RetryBudget), ConvertError> {
    let thresholds = std::mem::take(&mut b.thresholds);
    reject_rest(&b, path)?;
    let mut thresholds = thresholds.into_iter();
    let Some(mut t) = thresholds.next() else {
        return Ok((PoolLimits::default(), RetryBudget::default()));
    };
    if thresholds.next().is_some() {
        return Err(ConvertError::new(
            format!("{path}.thresholds"),
            "at most one threshold (priority DEFAULT) is supported",
        ));
    }
    let path = format!("{path}.thresholds[0]");
    if t.priority != RoutingPriority::Default as i32 {
        return Err(ConvertError::new(
            format!("{path}.priority"),
            "only priority DEFAULT is supported",
        ));
    }
    let value = |v: Option<UInt32Value>| v.map(|v| v.value);
    let limits = PoolLimits {
        max_connections: value(t.max_connections.take()),
        max_pending_requests: value(t.max_pending_requests.take()),
        max_requests: value(t.max_requests.take()),
    };
    let budget = t.retry_budget.take();
    if t.max_retries.is_some() {
        return Err(ConvertError::new(
            format!("{path}.max_retries"),
            "not supported: Tandem limits retries with retry_budget",
        ));
    }
    reject_rest(&t, &path)?;
    let budget = match budget {
        Some(b) => retry_budget(b, &format!("{path}.retry_budget"))?,
        None => RetryBudget::default(),
    };
    Ok((limits, budget))
}

/// Absent fields take Tandem's defaults (20 %, 10 per second). `min_retry_concurrency` is
/// read as retries per second, Tandem's floor for low traffic.
fn retry_budget(mut b: thresholds::RetryBudget, path: &str) -> Result<RetryBudget, ConvertError> {
    let percent = b.budget_percent.take();
    let min = b.min_retry_concurrency.take();
    reject_rest(&b, path)?;
    let default = RetryBudget::default();
    let percent = match percent {
        None => default.percent,
        Some(p) if (0.0..=100.0).contains(&p.value) && p.value.fract() == 0.0 => p.value as u32,
        Some(p) => {
            return Err(ConvertError::new(
                format!("{path}.budget_percent.value"),
                format!("{} is not a whole percentage in 0..=100", p.value),
            ))
        }
    };
    Ok(RetryBudget {
        percent,
        min_retries_per_second: min.map_or(default.min_retries_per_second, |m| m.value),
    })
}

/// Consecutive 5xx and gateway-failure ejection, with Envoy's defaults for absent fields.
/// Success-rate and failure-percentage ejection are not implemented: explicitly enforcing
/// them is refused; their parameters are ignored since nothing reads them.
fn outlier_detection(
    mut o: XdsOutlierDetection,
    path: &str,
) -> Result<OutlierDetection, ConvertError> {
    let duration = |d: Option<PbDuration>, field: &str, default_secs: u64| {
        d.map_or(Ok(std::time::Duration::from_secs(default_secs)), |d| {
            std_duration(d, &format!("{path}.{field}"))
        })
    };
    // `enforcing_*` is a probability: Tandem ejects always (100) or never (0).
    let enforced =
        |v: Option<UInt32Value>, field: &str, default: u32| match v.map_or(default, |v| v.value) {
            0 => Ok(false),
            100 => Ok(true),
            other => Err(ConvertError::new(
                format!("{path}.{field}"),
                format!("{other}: only 0 or 100 is supported"),
            )),
        };
    let c5xx = o.consecutive_5xx.take().map_or(5, |v| v.value);
    let c5xx_on = enforced(
        o.enforcing_consecutive_5xx.take(),
        "enforcing_consecutive_5xx",
        100,
    )?;
    let gw = o.consecutive_gateway_failure.take().map_or(5, |v| v.value);
    let gw_on = enforced(
        o.enforcing_consecutive_gateway_failure.take(),
        "enforcing_consecutive_gateway_failure",
        0,
    )?;
    let base = duration(o.base_ejection_time.take(), "base_ejection_time", 30)?;
    let max = duration(o.max_ejection_time.take(), "max_ejection_time", 300)?;
    let max_percent = o.max_ejection_percent.take().map_or(10, |v| v.value);
    if max_percent > 100 {
        return Err(ConvertError::new(
            format!("{path}.max_ejection_percent"),
            "must be at most 100",
        ));
    }
    for (field, v) in [
        ("enforcing_success_rate", o.enforcing_success_rate.take()),
        (
            "enforcing_failure_percentage",
            o.enforcing_failure_percentage.take(),
        ),
        (
            "enforcing_local_origin_success_rate",
            o.enforcing_local_origin_success_rate.take(),
        ),
        (
            "enforcing_failure_percentage_local_origin",
            o.enforcing_failure_percentage_local_origin.take(),
        ),
    ] {
        if v.is_some_and(|v| v.value > 0) {
            return Err(ConvertError::new(
                format!("{path}.{field}"),
                "success-rate and failure-percentage ejection are not supported",
            ));
        }
    }
    // Parameters of the detectors above (off), and the sweep interval: Tandem ejects as
    // soon as a threshold is reached and returns an endpoint when its time is up.
    o.interval = None;
    o.success_rate_minimum_hosts = None;
    o.success_rate_request_volume = None;
    o.success_rate_stdev_factor = None;
    o.failure_percentage_threshold = None;
    o.failure_percentage_minimum_hosts = None;
    o.failure_percentage_request_volume = None;
    reject_rest(&o, path)?;
    Ok(OutlierDetection {
        consecutive_5xx: c5xx_on.then_some(c5xx),
        consecutive_gateway_errors: gw_on.then_some(gw),
        base_ejection_time: base,
        max_ejection_time: max,
        max_ejection_percent: max_percent,
    })
}

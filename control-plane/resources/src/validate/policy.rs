//! Tandem's own traffic kinds: `DestinationPolicy` (how a service is called) and
//! `FaultInjection` (what an `ExtensionRef` filter injects).

use std::collections::BTreeMap;
use std::time::Duration;

use tandem_xds::domain::ServiceRef;

use super::{dns_label, duration};
use crate::spec::{
    ConnectionPoolSpec, DestinationPolicySpec, FaultInjectionSpec, OutlierDetectionSpec,
    RetryBudgetSpec, TargetRefSpec,
};
use crate::{domain, Kind, Resource, ResourceError, ResourceKey};

/// Largest `minRetriesPerSecond`: beyond it the budget no longer limits anything.
pub const MAX_MIN_RETRIES_PER_SECOND: i64 = 100_000;
/// Largest ejection count before ejection (a sanity bound).
pub const MAX_CONSECUTIVE: i64 = 1_000_000;

/// Validates a `DestinationPolicy.spec`; `at` is its path.
pub(super) fn destination_policy(
    at: &str,
    spec: &DestinationPolicySpec,
) -> Result<(), ResourceError> {
    target_ref(&format!("{at}.targetRef"), &spec.target_ref)?;
    if let Some(pool) = &spec.connection_pool {
        connection_pool(&format!("{at}.connectionPool"), pool)?;
    }
    if let Some(o) = &spec.outlier_detection {
        outlier_detection(&format!("{at}.outlierDetection"), o)?;
    }
    if let Some(b) = &spec.retry_budget {
        retry_budget(&format!("{at}.retryBudget"), b)?;
    }
    Ok(())
}

pub(super) fn target_ref(at: &str, t: &TargetRefSpec) -> Result<(), ResourceError> {
    if let Some(group) = &t.group {
        if !group.is_empty() && group != "core" {
            return Err(ResourceError::new(
                format!("{at}.group"),
                format!("{group:?} is not supported: use \"\" or \"core\""),
            ));
        }
    }
    if let Some(kind) = &t.kind {
        if kind != "Service" {
            return Err(ResourceError::new(
                format!("{at}.kind"),
                format!("{kind:?} is not supported: use Service"),
            ));
        }
    }
    dns_label(&format!("{at}.name"), &t.name)?;
    if let Some(ns) = &t.namespace {
        dns_label(&format!("{at}.namespace"), ns)?;
    }
    Ok(())
}

fn connection_pool(at: &str, p: &ConnectionPoolSpec) -> Result<(), ResourceError> {
    for (field, value) in [
        ("maxConnections", p.max_connections),
        ("maxPendingRequests", p.max_pending_requests),
        ("maxRequests", p.max_requests),
    ] {
        if let Some(v) = value {
            if v < 1 || v > i64::from(u32::MAX) {
                return Err(ResourceError::new(
                    format!("{at}.{field}"),
                    format!("must be 1..={}", u32::MAX),
                ));
            }
        }
    }
    Ok(())
}

fn outlier_detection(at: &str, o: &OutlierDetectionSpec) -> Result<(), ResourceError> {
    for (field, value) in [
        ("consecutive5xx", o.consecutive_5xx),
        ("consecutiveGatewayErrors", o.consecutive_gateway_errors),
    ] {
        if let Some(v) = value {
            if !(1..=MAX_CONSECUTIVE).contains(&v) {
                return Err(ResourceError::new(
                    format!("{at}.{field}"),
                    format!("must be 1..={MAX_CONSECUTIVE}"),
                ));
            }
        }
    }
    let base = o
        .base_ejection_time
        .as_deref()
        .map(|s| duration(&format!("{at}.baseEjectionTime"), s))
        .transpose()?;
    let max = o
        .max_ejection_time
        .as_deref()
        .map(|s| duration(&format!("{at}.maxEjectionTime"), s))
        .transpose()?;
    if base == Some(Duration::ZERO) {
        return Err(ResourceError::new(
            format!("{at}.baseEjectionTime"),
            "must be longer than 0s",
        ));
    }
    let base = base.unwrap_or(domain::DEFAULT_BASE_EJECTION);
    let max = max.unwrap_or(domain::DEFAULT_MAX_EJECTION);
    if max < base {
        return Err(ResourceError::new(
            format!("{at}.maxEjectionTime"),
            format!("{max:?} is shorter than baseEjectionTime ({base:?})"),
        ));
    }
    if let Some(p) = o.max_ejection_percent {
        if !(0..=100).contains(&p) {
            return Err(ResourceError::new(
                format!("{at}.maxEjectionPercent"),
                "must be 0..=100",
            ));
        }
    }
    Ok(())
}

fn retry_budget(at: &str, b: &RetryBudgetSpec) -> Result<(), ResourceError> {
    if let Some(p) = b.percent {
        if !(0..=100).contains(&p) {
            return Err(ResourceError::new(
                format!("{at}.percent"),
                "must be 0..=100",
            ));
        }
    }
    if let Some(n) = b.min_retries_per_second {
        if !(0..=MAX_MIN_RETRIES_PER_SECOND).contains(&n) {
            return Err(ResourceError::new(
                format!("{at}.minRetriesPerSecond"),
                format!("must be 0..={MAX_MIN_RETRIES_PER_SECOND}"),
            ));
        }
    }
    Ok(())
}

/// Validates a `FaultInjection.spec`; `at` is its path.
pub(super) fn fault_injection(at: &str, spec: &FaultInjectionSpec) -> Result<(), ResourceError> {
    if spec.delay.is_none() && spec.abort.is_none() {
        return Err(ResourceError::new(at, "give delay, abort or both"));
    }
    if let Some(d) = &spec.delay {
        duration(&format!("{at}.delay.fixedDelay"), &d.fixed_delay)?;
        percent(&format!("{at}.delay.percent"), d.percent)?;
    }
    if let Some(a) = &spec.abort {
        if !(200..=599).contains(&a.http_status) {
            return Err(ResourceError::new(
                format!("{at}.abort.httpStatus"),
                "must be 200..=599",
            ));
        }
        percent(&format!("{at}.abort.percent"), a.percent)?;
    }
    Ok(())
}

fn percent(at: &str, p: Option<f64>) -> Result<(), ResourceError> {
    match p {
        Some(p) if !(0.0..=100.0).contains(&p) => Err(ResourceError::new(
            at,
            "must be 0..=100 (fractions allowed, e.g. 0.5)",
        )),
        _ => Ok(()),
    }
}

/// One `DestinationPolicy` per service: a policy in `applied` may not target the service of
/// another policy, applied in the same request or already stored (`stored`: key and target
/// of each stored policy). Replacing a policy by a new version of itself is fine, and a
/// stored policy that the same request retargets no longer counts. `at(i)` is the path of
/// `applied[i]` (`documents[i]`).
pub fn policy_targets_unique(
    applied: &[Resource],
    stored: &[(ResourceKey, ServiceRef)],
    at: impl Fn(usize) -> String,
) -> Result<(), ResourceError> {
    let mut owner: BTreeMap<ServiceRef, (ResourceKey, Option<usize>)> = BTreeMap::new();
    let applied_keys: Vec<&ResourceKey> = applied.iter().map(|r| &r.key).collect();
    for (key, target) in stored {
        if !applied_keys.contains(&key) {
            owner.insert(target.clone(), (key.clone(), None));
        }
    }
    for (i, r) in applied.iter().enumerate() {
        if r.key.kind != Kind::DestinationPolicy {
            continue;
        }
        let target = domain::policy_target(&r.doc)?;
        if let Some((other, index)) = owner.get(&target) {
            let where_ = match index {
                Some(j) => format!("{} ({})", other, at(*j)),
                None => format!("the stored {other}"),
            };
            return Err(ResourceError::new(
                format!("{}.spec.targetRef", at(i)),
                format!(
                    "service {}/{} already has a DestinationPolicy: {where_}",
                    target.namespace, target.name
                ),
            ));
        }
        owner.insert(target, (r.key.clone(), Some(i)));
    }
    Ok(())
}

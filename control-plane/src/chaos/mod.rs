//! Chaos experiments with a steady-state check: a fault (abort or delay a share of a
//! service's requests, or eject some of its endpoints from every caller's balancing) applied for a bounded time while the SLOs of the services that
//! must hold steady are watched with the guarded canary's judge, ended by the
//! [`controller`] — fault removed, one revision recorded with the reason and figures — at
//! the first breach or when the time is up.
//!
//! The experiment is stored as what it does, so a restarted control plane carries on: a
//! `FaultInjection` named `chaos-SERVICE` whose `chaos.tandem.dev/*` annotations hold the
//! objectives and the deadline, and an `ExtensionRef` to it in every rule of the routes
//! attached to the service (marked with [`ROUTE_ANNOTATION`]) — or, when none is, a
//! catch-all route `chaos-SERVICE` the experiment owns. The fault is the mesh's own
//! (injected by the callers' proxies, before retries), so what the callers see is what
//! the steady state is judged on. Ejected endpoints are listed on the FaultInjection
//! ([`EJECTED_ANNOTATION`]) and left out of the mesh's config by the store while it
//! exists ([`crate::store::mesh_config_of`]).

pub mod controller;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::canary::edit::route_namespace;
use crate::canary::guard::{join, objectives, Guard, LatencyLimit, ObjectiveError, RateLimit};
use crate::canary::Target;
use crate::resources::{Kind, ResourceKey, GATEWAY_API_VERSION, TANDEM_API_VERSION};

/// Prefix of the experiment's annotations.
pub const ANNOTATION_PREFIX: &str = "chaos.tandem.dev/";
/// On the FaultInjection: the service under test.
pub const TARGET_ANNOTATION: &str = crate::resources::CHAOS_TARGET_ANNOTATION;
/// On the FaultInjection: start, Unix seconds.
pub const STARTED_ANNOTATION: &str = "chaos.tandem.dev/started";
/// On the FaultInjection: the experiment's length in seconds.
pub const DURATION_ANNOTATION: &str = "chaos.tandem.dev/duration";
/// On the FaultInjection: services whose SLOs must hold, comma list.
pub const STEADY_ANNOTATION: &str = "chaos.tandem.dev/steady-state";
/// On the FaultInjection: error-rate limits.
pub const MAX_ERROR_RATE_ANNOTATION: &str = "chaos.tandem.dev/max-error-rate";
/// On the FaultInjection: p99 limits.
pub const MAX_P99_ANNOTATION: &str = "chaos.tandem.dev/max-p99";
/// On the FaultInjection: requests needed before the error rate can break the steady state.
pub const MIN_REQUESTS_ANNOTATION: &str = "chaos.tandem.dev/min-requests";
/// On the FaultInjection: the endpoints taken out of load balancing (`ip:port`, comma
/// list), read by the store when it builds the mesh's config.
pub const EJECTED_ANNOTATION: &str = crate::resources::CHAOS_EJECTED_ANNOTATION;
/// On a route: the experiment whose fault this route's rules carry.
pub const ROUTE_ANNOTATION: &str = "chaos.tandem.dev/fault";
/// On a route the experiment created (deleted at the end).
pub const OWNED_ANNOTATION: &str = "chaos.tandem.dev/owned";

/// The longest experiment: a fault forgotten for a day is an outage, not an experiment.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// The length of an experiment that names none.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(60);

/// What `POST /v1/chaos/{namespace}/{service}` asks for.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosSpec {
    /// Answer a share of requests with an error.
    #[serde(default)]
    pub abort: Option<AbortSpec>,
    /// Delay a share of requests.
    #[serde(default)]
    pub delay: Option<DelaySpec>,
    /// Take some of the service's endpoints out of every caller's load balancing.
    #[serde(default)]
    pub eject: Option<EjectSpec>,
    /// How long, as a duration (`60s`, `5m`); default 60 s, at most 1 h.
    #[serde(default)]
    pub duration: Option<String>,
    /// Services whose callers' view must stay within the limits (default: the service
    /// under test).
    #[serde(default)]
    pub steady_state: Vec<String>,
    /// Error-rate limits (`1%`), comma list.
    #[serde(default)]
    pub max_error_rate: Option<String>,
    /// p99 limits (`500ms`), comma list.
    #[serde(default)]
    pub max_p99: Option<String>,
    /// Requests before the steady state can be judged broken (default 20).
    #[serde(default)]
    pub min_requests: Option<u64>,
}

/// An injected error.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AbortSpec {
    /// Share of requests, 0 to 100.
    pub percent: f64,
    /// Status answered (default 503).
    #[serde(default)]
    pub status: Option<u16>,
}

/// An injected delay.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DelaySpec {
    /// How long (`200ms`, `1s`: a Gateway API duration).
    pub duration: String,
    /// Share of requests, 0 to 100 (default 100).
    #[serde(default)]
    pub percent: Option<f64>,
}

/// Endpoints ejected for the experiment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EjectSpec {
    /// How many: a count (`2`) or a share of the selected endpoints (`50%`, rounded up).
    /// Every endpoint of the service only when asked for as `100%`.
    pub endpoints: String,
    /// Only endpoints with this label (`key=value`), such as a zone or a version.
    #[serde(default)]
    pub label: Option<String>,
}

/// One endpoint of the service under test, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `ip:port`.
    pub address: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// Why an experiment cannot start or stop.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The request is malformed (the message names the field).
    #[error("{0}")]
    Invalid(String),
    /// No such service.
    #[error("service {0} not found")]
    UnknownService(String),
    /// An experiment on this service is already running.
    #[error("a chaos experiment on {0} is already running (tandemctl chaos stop {1})")]
    Running(String, String),
    /// No experiment on this service is running.
    #[error("no chaos experiment on {0} is running")]
    NotRunning(String),
}

/// A running experiment, as read back from its FaultInjection.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// Namespace.
    pub namespace: String,
    /// The service under test.
    pub service: String,
    /// Start, Unix seconds.
    pub started: u64,
    /// Length.
    pub duration: Duration,
    /// Services whose SLOs must hold.
    pub steady_state: Vec<String>,
    /// The objectives (`step_time` is the experiment's length).
    pub guard: Guard,
    /// The fault, as stored (`spec` of the FaultInjection).
    pub fault: Value,
    /// The endpoints taken out of load balancing (`ip:port`).
    pub ejected: Vec<String>,
}

impl Experiment {
    /// `namespace/service`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.service)
    }

    /// When it ends by itself, Unix seconds.
    pub fn deadline(&self) -> u64 {
        self.started + self.duration.as_secs()
    }

    /// Reads an experiment from its FaultInjection document; `None` if it is not one.
    pub fn from_fault(doc: &Value) -> Option<Experiment> {
        let a = &doc["metadata"]["annotations"];
        let get = |k: &str| a[k].as_str();
        let service = get(TARGET_ANNOTATION)?.to_string();
        let mut guard = objectives(
            get(MAX_ERROR_RATE_ANNOTATION),
            get(MAX_P99_ANNOTATION),
            get(MIN_REQUESTS_ANNOTATION)?.parse().ok(),
        )
        .ok()?;
        guard.step_time = Duration::from_secs(get(DURATION_ANNOTATION)?.parse().ok()?);
        Some(Experiment {
            namespace: route_namespace(doc).to_string(),
            service,
            started: get(STARTED_ANNOTATION)?.parse().ok()?,
            duration: guard.step_time,
            steady_state: get(STEADY_ANNOTATION)?
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            guard,
            fault: doc["spec"].clone(),
            ejected: crate::resources::chaos_ejected(doc),
        })
    }

    /// One line: the fault, its length and the objectives.
    pub fn describe(&self) -> String {
        let mut what = Vec::new();
        if !self.ejected.is_empty() {
            what.push(format!(
                "eject {} endpoint(s) of {} ({})",
                self.ejected.len(),
                self.service,
                self.ejected.join(", ")
            ));
        }
        let fault = describe_fault(&self.fault);
        if !fault.is_empty() {
            what.push(fault);
        }
        format!(
            "{} for {}s; steady state: {}",
            what.join(", "),
            self.duration.as_secs(),
            self.objectives()
        )
    }

    /// The objectives, as `api error rate ≤ 1%, p99 ≤ 500ms`.
    pub fn objectives(&self) -> String {
        let mut limits: Vec<String> = Vec::new();
        if !self.guard.max_error_rate.is_empty() {
            limits.push(format!("error rate ≤ {}", join(&self.guard.max_error_rate)));
        }
        if !self.guard.max_p99.is_empty() {
            limits.push(format!("p99 ≤ {}", join(&self.guard.max_p99)));
        }
        format!("{} {}", self.steady_state.join(", "), limits.join(", "))
    }
}

/// `abort 10% (503), delay 200ms on 50%` (an abort of 0%, the record of an experiment
/// that only ejects endpoints, says nothing).
pub fn describe_fault(spec: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(a) = spec
        .get("abort")
        .filter(|a| a["percent"].as_f64() != Some(0.0))
    {
        parts.push(format!(
            "abort {}% ({})",
            a["percent"].as_f64().unwrap_or(100.0),
            a["httpStatus"].as_u64().unwrap_or(503)
        ));
    }
    if let Some(d) = spec.get("delay") {
        parts.push(format!(
            "delay {} on {}%",
            d["fixedDelay"].as_str().unwrap_or("?"),
            d["percent"].as_f64().unwrap_or(100.0)
        ));
    }
    parts.join(", ")
}

/// The name of the experiment's FaultInjection (and of a route it creates).
pub fn fault_name(service: &str) -> String {
    format!("chaos-{service}")
}

/// The store key of the experiment's FaultInjection.
pub fn fault_key(namespace: &str, service: &str) -> ResourceKey {
    ResourceKey::new(Kind::FaultInjection, namespace, fault_name(service))
}

/// The documents that start `spec` on `target` at `now`: the FaultInjection and every
/// route edited or created (none when the experiment only ejects some of `instances`,
/// the service's endpoints). Validation of the result (durations, shares, statuses) is
/// the resources' own, with its field paths.
pub fn plan_start(
    target: &Target<'_>,
    spec: &ChaosSpec,
    instances: &[Instance],
    now: u64,
) -> Result<Vec<Value>, ChaosError> {
    let id = format!("{}/{}", target.namespace, target.service);
    if !target.services.contains_key(target.service) {
        return Err(ChaosError::UnknownService(id));
    }
    if spec.abort.is_none() && spec.delay.is_none() && spec.eject.is_none() {
        return Err(ChaosError::Invalid(
            "a fault is needed: abort, delay and/or eject".into(),
        ));
    }
    let ejected = match &spec.eject {
        Some(e) => select_ejected(e, instances, &id)?,
        None => Vec::new(),
    };
    let duration = match &spec.duration {
        Some(d) => crate::resources::duration::parse(d)
            .map_err(|e| ChaosError::Invalid(format!("duration: {d:?}: {e}")))?,
        None => DEFAULT_DURATION,
    };
    if duration.is_zero() || duration > MAX_DURATION {
        return Err(ChaosError::Invalid(format!(
            "duration: from 1s to {}s",
            MAX_DURATION.as_secs()
        )));
    }
    let mut guard = objectives(
        spec.max_error_rate.as_deref(),
        spec.max_p99.as_deref(),
        spec.min_requests,
    )
    .map_err(|e| {
        ChaosError::Invalid(match e {
            ObjectiveError::Rate(e) => format!("max_error_rate: {e}"),
            ObjectiveError::P99(e) => format!("max_p99: {e}"),
            ObjectiveError::MinRequests(n) => format!("min_requests: {n} is not 1..=1000000"),
            ObjectiveError::Missing => {
                "a steady state is needed: max_error_rate and/or max_p99".into()
            }
        })
    })?;
    guard.step_time = duration;
    // Relative limits compare a canary with its stable; an experiment has no second
    // population to compare with.
    if guard
        .max_error_rate
        .iter()
        .any(|r| matches!(r, RateLimit::OverStable(_)))
        || guard
            .max_p99
            .iter()
            .any(|l| matches!(l, LatencyLimit::TimesStable(_)))
    {
        return Err(ChaosError::Invalid(
            "max_error_rate, max_p99: a chaos experiment takes absolute limits (1%, 500ms)".into(),
        ));
    }
    let steady: Vec<String> = if spec.steady_state.is_empty() {
        vec![target.service.to_string()]
    } else {
        spec.steady_state.clone()
    };
    for s in &steady {
        if !target.services.contains_key(s) {
            return Err(ChaosError::Invalid(format!(
                "steady_state: service {}/{s} not found",
                target.namespace
            )));
        }
    }
    let name = fault_name(target.service);
    let routed = spec.abort.is_some() || spec.delay.is_some();
    let mut fault = Map::new();
    if !routed {
        // The record of an experiment that only ejects: a FaultInjection that injects
        // nothing and no route references.
        fault.insert("abort".into(), json!({"httpStatus": 503, "percent": 0}));
    }
    if let Some(a) = &spec.abort {
        fault.insert(
            "abort".into(),
            json!({"httpStatus": a.status.unwrap_or(503), "percent": a.percent}),
        );
    }
    if let Some(d) = &spec.delay {
        fault.insert(
            "delay".into(),
            json!({"fixedDelay": d.duration, "percent": d.percent.unwrap_or(100.0)}),
        );
    }
    let mut docs = vec![json!({
        "apiVersion": TANDEM_API_VERSION,
        "kind": "FaultInjection",
        "metadata": {
            "name": name,
            "namespace": target.namespace,
            "annotations": {
                TARGET_ANNOTATION: target.service,
                STARTED_ANNOTATION: now.to_string(),
                DURATION_ANNOTATION: duration.as_secs().to_string(),
                STEADY_ANNOTATION: steady.join(","),
                MAX_ERROR_RATE_ANNOTATION: join(&guard.max_error_rate),
                MAX_P99_ANNOTATION: join(&guard.max_p99),
                MIN_REQUESTS_ANNOTATION: guard.min_requests.to_string(),
            },
        },
        "spec": Value::Object(fault),
    })];
    if !ejected.is_empty() {
        docs[0]["metadata"]["annotations"][EJECTED_ANNOTATION] = json!(ejected.join(","));
    }
    if !routed {
        return Ok(docs);
    }
    let attached = target.attached();
    if attached.is_empty() {
        docs.push(owned_route(target, &name));
    }
    for route in attached {
        if route_namespace(route) != target.namespace {
            // A FaultInjection is referenced from the route's own namespace.
            return Err(ChaosError::Invalid(format!(
                "route {}/{} attached to {id} lives in another namespace; \
                 chaos edits only routes of the service's namespace",
                route_namespace(route),
                route["metadata"]["name"].as_str().unwrap_or_default()
            )));
        }
        let mut doc = route.clone();
        add_fault(&mut doc, &name);
        docs.push(doc);
    }
    Ok(docs)
}

/// The endpoints `eject` takes: those with its label, by address, the first N (a share
/// rounds up). Every endpoint only when asked for as `100%`.
fn select_ejected(
    eject: &EjectSpec,
    instances: &[Instance],
    id: &str,
) -> Result<Vec<String>, ChaosError> {
    let bad = |why: String| ChaosError::Invalid(format!("eject.endpoints: {why}"));
    let mut pool: Vec<&Instance> = match &eject.label {
        Some(l) => {
            let (k, v) = l.split_once('=').ok_or_else(|| {
                ChaosError::Invalid(format!("eject.label: {l:?} is not key=value"))
            })?;
            instances
                .iter()
                .filter(|i| i.labels.get(k).map(String::as_str) == Some(v))
                .collect()
        }
        None => instances.iter().collect(),
    };
    // By address as a socket address (port 9000 before 10000), not as text.
    pool.sort_by_key(|i| {
        (
            i.address.parse::<std::net::SocketAddr>().ok(),
            i.address.clone(),
        )
    });
    if pool.is_empty() {
        return Err(ChaosError::Invalid(match &eject.label {
            Some(l) => format!("eject.label: no endpoint of {id} has {l}"),
            None => format!("eject.endpoints: {id} has no endpoints"),
        }));
    }
    let text = eject.endpoints.trim();
    let (n, everything_asked) = match text.strip_suffix('%') {
        Some(p) => {
            let p: f64 = p
                .trim()
                .parse()
                .ok()
                .filter(|p: &f64| *p > 0.0 && *p <= 100.0)
                .ok_or_else(|| bad(format!("{text:?} is not a share in (0%, 100%]")))?;
            let n = ((p / 100.0) * pool.len() as f64).ceil() as usize;
            (n.max(1), p >= 100.0)
        }
        None => {
            let n: usize = text.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                bad(format!(
                    "{text:?} is not a count (1, 2, ...) or a share (50%)"
                ))
            })?;
            (n, false)
        }
    };
    if n > pool.len() {
        return Err(bad(format!(
            "{n} asked for, {} endpoint(s) to choose from",
            pool.len()
        )));
    }
    if n == instances.len() && !everything_asked {
        return Err(bad(format!(
            "that is every endpoint of {id}: an outage, not a partial loss; ask for 100% to drill one"
        )));
    }
    Ok(pool
        .into_iter()
        .take(n)
        .map(|i| i.address.clone())
        .collect())
}

/// The documents and deletions that end the experiment `fault` names on `routes`: the
/// filters taken out of the routes that carry them, the owned route and the
/// FaultInjection deleted.
pub fn plan_end(
    namespace: &str,
    service: &str,
    routes: &[Value],
) -> (Vec<Value>, Vec<ResourceKey>) {
    let name = fault_name(service);
    let mut sets = Vec::new();
    let mut deletes = vec![fault_key(namespace, service)];
    for route in routes {
        let a = &route["metadata"]["annotations"];
        if route_namespace(route) != namespace || a[ROUTE_ANNOTATION].as_str() != Some(&name) {
            continue;
        }
        let route_name = route["metadata"]["name"].as_str().unwrap_or_default();
        if a[OWNED_ANNOTATION] == "true" {
            deletes.push(ResourceKey::new(Kind::HttpRoute, namespace, route_name));
        } else {
            let mut doc = route.clone();
            remove_fault(&mut doc, &name);
            sets.push(doc);
        }
    }
    (sets, deletes)
}

/// `chaos-SERVICE`: one catch-all rule to the service itself, carrying the fault.
fn owned_route(target: &Target<'_>, name: &str) -> Value {
    let mut reference = Map::new();
    reference.insert("kind".into(), json!("Service"));
    reference.insert("name".into(), json!(target.service));
    if let Some(Some(port)) = target.services.get(target.service) {
        reference.insert("port".into(), json!(port));
    }
    json!({
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {
            "name": name,
            "namespace": target.namespace,
            "annotations": {ROUTE_ANNOTATION: name, OWNED_ANNOTATION: "true"},
        },
        "spec": {
            "parentRefs": [{"kind": "Service", "name": target.service}],
            "rules": [{
                "backendRefs": [Value::Object(reference)],
                "filters": [fault_filter(name)],
            }],
        },
    })
}

fn fault_filter(name: &str) -> Value {
    json!({
        "type": "ExtensionRef",
        "extensionRef": {"group": "tandem.dev", "kind": "FaultInjection", "name": name},
    })
}

fn is_fault_filter(f: &Value, name: &str) -> bool {
    f["type"] == "ExtensionRef"
        && f["extensionRef"]["kind"] == "FaultInjection"
        && f["extensionRef"]["name"] == name
}

/// Adds the experiment's filter to every rule that forwards (a redirect answers before
/// any fault would) and does not carry another fault (a rule takes one).
fn add_fault(doc: &mut Value, name: &str) {
    for rule in doc["spec"]["rules"].as_array_mut().into_iter().flatten() {
        let filters = rule
            .as_object_mut()
            .map(|r| r.entry("filters").or_insert_with(|| json!([])));
        let Some(filters) = filters.and_then(Value::as_array_mut) else {
            continue;
        };
        let busy = filters.iter().any(|f| {
            f["type"] == "RequestRedirect"
                || (f["type"] == "ExtensionRef" && f["extensionRef"]["kind"] == "FaultInjection")
        });
        if !busy {
            filters.push(fault_filter(name));
        }
    }
    set_annotation(doc, ROUTE_ANNOTATION, Some(name));
}

fn remove_fault(doc: &mut Value, name: &str) {
    for rule in doc["spec"]["rules"].as_array_mut().into_iter().flatten() {
        let Some(r) = rule.as_object_mut() else {
            continue;
        };
        if let Some(filters) = r.get_mut("filters").and_then(Value::as_array_mut) {
            filters.retain(|f| !is_fault_filter(f, name));
            if filters.is_empty() {
                r.remove("filters");
            }
        }
    }
    set_annotation(doc, ROUTE_ANNOTATION, None);
}

fn set_annotation(doc: &mut Value, key: &str, value: Option<&str>) {
    let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(a) = annotations {
        match value {
            Some(v) => {
                a.insert(key.into(), json!(v));
            }
            None => {
                a.remove(key);
            }
        }
        if a.is_empty() {
            meta.remove("annotations");
        }
    }
}

/// The running experiments in `faults` (FaultInjection documents), by `namespace/service`.
pub fn running(faults: &[Value]) -> BTreeMap<String, Experiment> {
    faults
        .iter()
        .filter_map(Experiment::from_fault)
        .map(|e| (e.id(), e))
        .collect()
}

#[cfg(test)]
mod tests;

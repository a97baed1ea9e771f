//! Canary releases: deploy ≠ release. A canary moves a parent service's traffic from a
//! stable backend service to a canary backend service in steps, by editing the weights of
//! the HTTPRoutes attached to the parent; `abort` puts everything back on the stable at
//! once, `promote` moves everything to the canary.
//!
//! The state lives where the traffic decision lives: in annotations on those routes
//! (`canary.tandem.dev/*`), so it survives restarts, travels with backups and rollbacks,
//! and shows in `tandemctl get routes`. Everything here is pure (documents in, documents
//! out); the API applies a [`Plan`]'s documents as one store revision.
//!
//! Which rules a canary edits: in every route whose parentRefs include the service, each
//! rule that names the stable among its backendRefs and sends traffic nowhere else than
//! the stable and the canary (other backends at weight 0 do not count: deployed, not
//! released). A rule sending only to the canary — say, a header match that opts requests
//! in — is left alone, so opting in keeps working through the whole release. With no route
//! attached, `start` creates `SERVICE-canary` with one catch-all rule.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::resources::GATEWAY_API_VERSION;

/// Prefix of every canary annotation; all of them are removed on promote.
pub const ANNOTATION_PREFIX: &str = "canary.tandem.dev/";
/// The stable backend service.
pub const STABLE_ANNOTATION: &str = "canary.tandem.dev/stable";
/// The canary backend service.
pub const CANARY_ANNOTATION: &str = "canary.tandem.dev/canary";
/// The steps, comma-separated percentages.
pub const STEPS_ANNOTATION: &str = "canary.tandem.dev/steps";
/// How many steps are reached (`1` after start).
pub const STEP_ANNOTATION: &str = "canary.tandem.dev/step";
/// The canary's share of traffic, 0..=100.
pub const PERCENT_ANNOTATION: &str = "canary.tandem.dev/percent";
/// `running` or `aborted`.
pub const STATE_ANNOTATION: &str = "canary.tandem.dev/state";

/// The steps when `start` names none.
pub const DEFAULT_STEPS: [u8; 5] = [5, 10, 25, 50, 100];
/// Most steps a canary may have.
pub const MAX_STEPS: usize = 32;

/// Why a canary action cannot be done. The API maps these to 4xx statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanaryError {
    /// The parent, stable or canary service does not exist (404).
    #[error("unknown service {0}")]
    UnknownService(String),
    /// No canary is running for the service (404).
    #[error("no canary in progress for {0}")]
    NotInProgress(String),
    /// The request itself is wrong: percent, steps, names (400).
    #[error("{0}")]
    Invalid(String),
    /// The request contradicts the current state (409).
    #[error("{0}")]
    Conflict(String),
}

/// What a client asks for (`POST /v1/canaries/{namespace}/{service}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum Action {
    /// Start a canary: the first step's share goes to `canary`.
    Start {
        /// The backend service serving now.
        stable: String,
        /// The new backend service.
        canary: String,
        /// Percentages, strictly increasing, 1..=100 (default 5,10,25,50,100).
        #[serde(default)]
        steps: Option<Vec<i64>>,
    },
    /// Give the canary `percent` of the traffic.
    Set {
        /// 0..=100.
        percent: i64,
    },
    // The field-less actions are struct variants so that unknown fields are rejected
    // (serde ignores extra fields next to the tag of a unit variant).
    /// Go to the next step.
    Step {},
    /// Everything to the canary; the canary annotations are removed.
    Promote {},
    /// Everything back to the stable, at once.
    Abort {},
}

impl Action {
    /// The action's name, for history and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Start { .. } => "start",
            Action::Set { .. } => "set",
            Action::Step {} => "step",
            Action::Promote {} => "promote",
            Action::Abort {} => "abort",
        }
    }
}

/// Whether a canary is moving traffic or was rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// In progress.
    Running,
    /// Rolled back by `abort`; a new `start` may follow.
    Aborted,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Running => "running",
            Phase::Aborted => "aborted",
        })
    }
}

/// A canary's state, as kept in the route annotations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CanaryState {
    /// Running or aborted.
    pub phase: Phase,
    /// Stable backend service.
    pub stable: String,
    /// Canary backend service.
    pub canary: String,
    /// The steps.
    pub steps: Vec<u8>,
    /// Steps reached (how many of `steps` are ≤ the percent after a `set`).
    pub step: usize,
    /// The canary's share, 0..=100.
    pub percent: u8,
}

impl CanaryState {
    fn annotations(&self) -> [(&'static str, String); 6] {
        let steps: Vec<String> = self.steps.iter().map(u8::to_string).collect();
        [
            (STATE_ANNOTATION, self.phase.to_string()),
            (STABLE_ANNOTATION, self.stable.clone()),
            (CANARY_ANNOTATION, self.canary.clone()),
            (STEPS_ANNOTATION, steps.join(",")),
            (STEP_ANNOTATION, self.step.to_string()),
            (PERCENT_ANNOTATION, self.percent.to_string()),
        ]
    }

    /// Reads the state from a route's annotations; `Ok(None)` when it carries none.
    fn from_annotations(route: &str, a: &Map<String, Value>) -> Result<Option<Self>, CanaryError> {
        if !a.keys().any(|k| k.starts_with(ANNOTATION_PREFIX)) {
            return Ok(None);
        }
        let get = |key: &str| -> Result<&str, CanaryError> {
            a.get(key).and_then(Value::as_str).ok_or_else(|| {
                CanaryError::Conflict(format!(
                    "HTTPRoute {route}: annotation {key} is missing; fix or remove the {ANNOTATION_PREFIX}* annotations"
                ))
            })
        };
        let bad = |key: &str, why: String| {
            CanaryError::Conflict(format!("HTTPRoute {route}: annotation {key}: {why}"))
        };
        let phase = match get(STATE_ANNOTATION)? {
            "running" => Phase::Running,
            "aborted" => Phase::Aborted,
            other => {
                return Err(bad(
                    STATE_ANNOTATION,
                    format!("{other:?} is not running or aborted"),
                ))
            }
        };
        let steps = parse_steps(get(STEPS_ANNOTATION)?).map_err(|e| bad(STEPS_ANNOTATION, e))?;
        let step = get(STEP_ANNOTATION)?
            .parse::<usize>()
            .map_err(|e| bad(STEP_ANNOTATION, e.to_string()))?;
        let percent = get(PERCENT_ANNOTATION)?
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| bad(PERCENT_ANNOTATION, "not 0..=100".into()))?;
        Ok(Some(CanaryState {
            phase,
            stable: get(STABLE_ANNOTATION)?.to_string(),
            canary: get(CANARY_ANNOTATION)?.to_string(),
            steps,
            step,
            percent,
        }))
    }
}

fn parse_steps(text: &str) -> Result<Vec<u8>, String> {
    let values = text
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<i64>()
                .map_err(|_| format!("{s:?} is not a number"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_steps(&values)
}

/// Steps must be 1..=100, strictly increasing, at most [`MAX_STEPS`].
pub fn check_steps(values: &[i64]) -> Result<Vec<u8>, String> {
    if values.is_empty() || values.len() > MAX_STEPS {
        return Err(format!("give 1..={MAX_STEPS} steps"));
    }
    let mut out: Vec<u8> = Vec::with_capacity(values.len());
    for v in values {
        let p = u8::try_from(*v)
            .ok()
            .filter(|p| (1..=100).contains(p))
            .ok_or_else(|| format!("step {v} is not 1..=100"))?;
        if out.last().is_some_and(|last| *last >= p) {
            return Err(format!(
                "steps must increase: {p} after {}",
                out.last().unwrap_or(&0)
            ));
        }
        out.push(p);
    }
    Ok(out)
}

/// The service a canary is about, and what exists around it.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// Its namespace (stable and canary live there too).
    pub namespace: &'a str,
    /// The parent service.
    pub service: &'a str,
    /// Services of the namespace by name, with their first port (used for a created
    /// route's refs).
    pub services: &'a BTreeMap<String, Option<u16>>,
    /// Every stored HTTPRoute document (any namespace).
    pub routes: &'a [Value],
}

impl Target<'_> {
    fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.service)
    }

    /// The routes whose parentRefs include the service, by (namespace, name).
    fn attached(&self) -> Vec<&Value> {
        let mut out: Vec<&Value> = self
            .routes
            .iter()
            .filter(|r| {
                let ns = route_namespace(r);
                r["spec"]["parentRefs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| refers_to(p, ns, self.namespace, self.service))
            })
            .collect();
        out.sort_by_key(|r| route_id(r));
        out
    }
}

/// What an action does: documents to apply (as one revision) and the state after.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Whole HTTPRoute documents, edited or created.
    pub documents: Vec<Value>,
    /// The state after the action (`None` after promote).
    pub state: Option<CanaryState>,
    /// The routes carrying the canary (`namespace/name`).
    pub routes: Vec<String>,
    /// The weights after the action: stable and canary backend → weight.
    pub weights: BTreeMap<String, u32>,
}

/// The current state of the service's canary (running or aborted) and the routes that
/// carry it; [`CanaryError::NotInProgress`] when there is none.
pub fn current(target: &Target<'_>) -> Result<(CanaryState, Vec<String>), CanaryError> {
    let attached = target.attached();
    if attached.is_empty() && !target.services.contains_key(target.service) {
        return Err(CanaryError::UnknownService(target.id()));
    }
    match state_of(&attached)? {
        Some((state, routes)) => Ok((state, routes)),
        None => Err(CanaryError::NotInProgress(target.id())),
    }
}

/// The state found on the attached routes, and which routes carry it. Every carrying
/// route must agree.
fn state_of(attached: &[&Value]) -> Result<Option<(CanaryState, Vec<String>)>, CanaryError> {
    let mut found: Option<(CanaryState, Vec<String>)> = None;
    for r in attached {
        let id = route_id(r);
        let empty = Map::new();
        let annotations = r["metadata"]["annotations"].as_object().unwrap_or(&empty);
        let Some(state) = CanaryState::from_annotations(&id, annotations)? else {
            continue;
        };
        match &mut found {
            None => found = Some((state, vec![id])),
            Some((first, routes)) => {
                if *first != state {
                    return Err(CanaryError::Conflict(format!(
                        "HTTPRoutes {} and {id} carry different canary annotations; fix or remove the {ANNOTATION_PREFIX}* annotations",
                        routes[0]
                    )));
                }
                routes.push(id);
            }
        }
    }
    Ok(found)
}

/// Plans `action` for the target's service.
pub fn plan(target: &Target<'_>, action: &Action) -> Result<Plan, CanaryError> {
    let attached = target.attached();
    if attached.is_empty() && !target.services.contains_key(target.service) {
        return Err(CanaryError::UnknownService(target.id()));
    }
    let current = state_of(&attached)?.map(|(s, _)| s);
    let running = || match &current {
        Some(s) if s.phase == Phase::Running => Ok(s.clone()),
        Some(_) => Err(CanaryError::NotInProgress(format!(
            "{} (the last one was aborted; start a new one)",
            target.id()
        ))),
        None => Err(CanaryError::NotInProgress(target.id())),
    };
    let next: Option<CanaryState> = match action {
        Action::Start {
            stable,
            canary,
            steps,
        } => {
            if let Some(s) = current.as_ref().filter(|s| s.phase == Phase::Running) {
                return Err(CanaryError::Conflict(format!(
                    "a canary of {} is in progress ({} → {} at {}%): set, step, promote or abort it first",
                    target.id(),
                    s.stable,
                    s.canary,
                    s.percent
                )));
            }
            if stable == canary {
                return Err(CanaryError::Invalid(format!(
                    "stable and canary are both {stable:?}: name two backend services"
                )));
            }
            for (role, name) in [("stable", stable), ("canary", canary)] {
                crate::resources::validate::dns_label(role, name)
                    .map_err(|e| CanaryError::Invalid(e.to_string()))?;
                if !target.services.contains_key(name.as_str()) {
                    return Err(CanaryError::UnknownService(format!(
                        "{}/{name} ({role})",
                        target.namespace
                    )));
                }
                if name == target.service {
                    return Err(CanaryError::Invalid(format!(
                        "{role} {name:?} is the parent service itself: name its backend services"
                    )));
                }
            }
            let steps = match steps {
                Some(v) => {
                    check_steps(v).map_err(|e| CanaryError::Invalid(format!("steps: {e}")))?
                }
                None => DEFAULT_STEPS.to_vec(),
            };
            let percent = steps.first().copied().unwrap_or(100);
            Some(CanaryState {
                phase: Phase::Running,
                stable: stable.clone(),
                canary: canary.clone(),
                steps,
                step: 1,
                percent,
            })
        }
        Action::Set { percent } => {
            let p = u8::try_from(*percent)
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| {
                    CanaryError::Invalid(format!("percent: {percent} is not 0..=100"))
                })?;
            let mut s = running()?;
            s.percent = p;
            s.step = s.steps.iter().filter(|x| **x <= p).count();
            Some(s)
        }
        Action::Step {} => {
            let mut s = running()?;
            match s.steps.iter().copied().find(|x| *x > s.percent) {
                Some(p) => {
                    s.percent = p;
                    s.step = s.steps.iter().filter(|x| **x <= p).count();
                }
                None if s.percent >= 100 => {
                    return Err(CanaryError::Conflict(format!(
                        "canary of {} is at 100%: run canary promote",
                        target.id()
                    )))
                }
                None => {
                    return Err(CanaryError::Conflict(format!(
                        "canary of {} is at its last step ({}%): run canary set or canary promote",
                        target.id(),
                        s.percent
                    )))
                }
            }
            Some(s)
        }
        Action::Promote {} => {
            running()?;
            None
        }
        Action::Abort {} => {
            let mut s = match &current {
                // Aborting twice is harmless: an emergency command should not fail.
                Some(s) => s.clone(),
                None => return Err(CanaryError::NotInProgress(target.id())),
            };
            s.phase = Phase::Aborted;
            s.percent = 0;
            s.step = 0;
            Some(s)
        }
    };
    // Promote keeps the names of the canary it ends.
    let (stable, canary, percent) = match (&next, &current) {
        (Some(s), _) => (s.stable.clone(), s.canary.clone(), s.percent),
        (None, Some(c)) => (c.stable.clone(), c.canary.clone(), 100),
        (None, None) => return Err(CanaryError::NotInProgress(target.id())),
    };
    let weights = BTreeMap::from([
        (stable.clone(), 100 - u32::from(percent)),
        (canary.clone(), u32::from(percent)),
    ]);

    let mut documents = Vec::new();
    let mut routes = Vec::new();
    let mut stale = Vec::new();
    for r in &attached {
        let carries = r["metadata"]["annotations"]
            .as_object()
            .is_some_and(|a| a.keys().any(|k| k.starts_with(ANNOTATION_PREFIX)));
        let mut doc = (*r).clone();
        if set_weights(&mut doc, target.namespace, &stable, &canary, percent) {
            set_annotations(&mut doc, next.as_ref());
            routes.push(route_id(&doc));
            documents.push(doc);
        } else if carries {
            // A route that carried the canary but no longer routes it (edited by hand, or
            // a new start with other backends) must not claim it any more.
            set_annotations(&mut doc, None);
            stale.push(doc);
        }
    }
    if documents.is_empty() {
        if !attached.is_empty() {
            let names: Vec<String> = attached.iter().map(|r| route_id(r)).collect();
            return Err(CanaryError::Conflict(format!(
                "no rule of the HTTPRoutes attached to {} ({}) sends traffic only to {stable} (and {canary}); add such a rule",
                target.id(),
                names.join(", ")
            )));
        }
        let name = format!("{}-canary", target.service);
        if target.routes.iter().any(|r| {
            route_namespace(r) == target.namespace && r["metadata"]["name"] == name.as_str()
        }) {
            return Err(CanaryError::Conflict(format!(
                "HTTPRoute {}/{name} exists and is not attached to {}",
                target.namespace,
                target.id()
            )));
        }
        let mut doc = new_route(target, &name, &stable, &canary, percent);
        set_annotations(&mut doc, next.as_ref());
        routes.push(route_id(&doc));
        documents.push(doc);
    }
    documents.extend(stale);
    Ok(Plan {
        documents,
        state: next,
        routes,
        weights,
    })
}

/// Sets stable = 100 − `percent` and canary = `percent` in every rule of `doc` that
/// sends traffic only to them and names the stable; adds the canary's backendRef where
/// missing. Returns whether any rule qualified.
pub fn set_weights(
    doc: &mut Value,
    namespace: &str,
    stable: &str,
    canary: &str,
    percent: u8,
) -> bool {
    let route_ns = route_namespace(doc).to_string();
    let Some(rules) = doc.pointer_mut("/spec/rules").and_then(Value::as_array_mut) else {
        return false;
    };
    let mut any = false;
    for rule in rules {
        let Some(refs) = rule.get_mut("backendRefs").and_then(Value::as_array_mut) else {
            continue;
        };
        let is = |r: &Value, name: &str| refers_to(r, &route_ns, namespace, name);
        if !splits(refs, &route_ns, namespace, stable, canary) {
            continue;
        }
        any = true;
        let mut template: Option<Map<String, Value>> = None;
        let mut has_canary = false;
        for r in refs.iter_mut() {
            if is(r, stable) {
                if template.is_none() {
                    template = r.as_object().cloned();
                }
                r["weight"] = json!(100 - u32::from(percent));
            } else if is(r, canary) {
                has_canary = true;
                r["weight"] = json!(u32::from(percent));
            }
        }
        if !has_canary {
            // The canary's ref looks like the stable's (namespace, port, kind), minus
            // anything specific to the stable (filters).
            let mut added = Map::new();
            if let Some(t) = template {
                for key in ["group", "kind", "namespace", "port"] {
                    if let Some(v) = t.get(key) {
                        added.insert(key.to_string(), v.clone());
                    }
                }
            }
            added.insert("name".into(), json!(canary));
            added.insert("weight".into(), json!(u32::from(percent)));
            refs.push(Value::Object(added));
        }
    }
    any
}

/// Whether a rule with these backendRefs is a canary's to edit: it names the stable and
/// sends traffic nowhere else than the stable and the canary (other backends at weight 0
/// are deployed, not released, and do not count).
fn splits(refs: &[Value], route_ns: &str, namespace: &str, stable: &str, canary: &str) -> bool {
    let is = |r: &Value, name: &str| refers_to(r, route_ns, namespace, name);
    refs.iter().any(|r| is(r, stable))
        && refs.iter().all(|r| {
            is(r, stable) || is(r, canary) || r.get("weight").and_then(Value::as_i64) == Some(0)
        })
}

/// Replaces the canary annotations of `doc` with `state`'s (or removes them).
fn set_annotations(doc: &mut Value, state: Option<&CanaryState>) {
    let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let mut annotations = meta
        .get("annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    annotations.retain(|k, _| !k.starts_with(ANNOTATION_PREFIX));
    if let Some(s) = state {
        for (k, v) in s.annotations() {
            annotations.insert(k.to_string(), Value::String(v));
        }
    }
    if annotations.is_empty() {
        meta.remove("annotations");
    } else {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
}

/// `SERVICE-canary`: one catch-all rule splitting between stable and canary.
fn new_route(target: &Target<'_>, name: &str, stable: &str, canary: &str, percent: u8) -> Value {
    let reference = |svc: &str, weight: Option<u32>| {
        let mut r = Map::new();
        r.insert("kind".into(), json!("Service"));
        r.insert("name".into(), json!(svc));
        if let Some(Some(port)) = target.services.get(svc) {
            r.insert("port".into(), json!(port));
        }
        if let Some(w) = weight {
            r.insert("weight".into(), json!(w));
        }
        Value::Object(r)
    };
    json!({
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": target.namespace},
        "spec": {
            "parentRefs": [reference(target.service, None)],
            "rules": [{
                "backendRefs": [
                    reference(stable, Some(100 - u32::from(percent))),
                    reference(canary, Some(u32::from(percent))),
                ],
            }],
        },
    })
}

/// The current weights of stable and canary in the first rule a canary of them edits.
pub fn observed_weights(
    target: &Target<'_>,
    stable: &str,
    canary: &str,
) -> Option<BTreeMap<String, i64>> {
    for r in target.attached() {
        let ns = route_namespace(r);
        for rule in r["spec"]["rules"].as_array().into_iter().flatten() {
            let Some(refs) = rule["backendRefs"].as_array() else {
                continue;
            };
            if !splits(refs, ns, target.namespace, stable, canary) {
                continue;
            }
            let weight = |name: &str| {
                refs.iter()
                    .find(|b| refers_to(b, ns, target.namespace, name))
                    .map(|b| b.get("weight").and_then(Value::as_i64).unwrap_or(1))
            };
            if let Some(s) = weight(stable) {
                let mut out = BTreeMap::from([(stable.to_string(), s)]);
                out.insert(canary.to_string(), weight(canary).unwrap_or(0));
                return Some(out);
            }
        }
    }
    None
}

fn route_namespace(doc: &Value) -> &str {
    doc["metadata"]["namespace"]
        .as_str()
        .unwrap_or(tandem_xds::domain::DEFAULT_NAMESPACE)
}

fn route_id(doc: &Value) -> String {
    format!(
        "{}/{}",
        route_namespace(doc),
        doc["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Whether a parentRef/backendRef (in a route of namespace `route_ns`) names Service
/// `namespace/name`.
fn refers_to(r: &Value, route_ns: &str, namespace: &str, name: &str) -> bool {
    let group_ok = r
        .get("group")
        .and_then(Value::as_str)
        .is_none_or(|g| g.is_empty() || g == "core");
    let kind_ok = r
        .get("kind")
        .and_then(Value::as_str)
        .is_none_or(|k| k == "Service");
    let ns = r
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or(route_ns);
    group_ok && kind_ok && ns == namespace && r.get("name").and_then(Value::as_str) == Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services() -> BTreeMap<String, Option<u16>> {
        [
            ("web", Some(80)),
            ("web-v1", Some(8080)),
            ("web-v2", None),
            ("other", None),
        ]
        .into_iter()
        .map(|(n, p)| (n.to_string(), p))
        .collect()
    }

    fn route(name: &str, parent: &str, rules: Value) -> Value {
        json!({
            "apiVersion": GATEWAY_API_VERSION,
            "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"parentRefs": [{"kind": "Service", "name": parent, "port": 80}], "rules": rules},
        })
    }

    fn start() -> Action {
        Action::Start {
            stable: "web-v1".into(),
            canary: "web-v2".into(),
            steps: None,
        }
    }

    fn run(routes: &[Value], action: &Action) -> Result<Plan, CanaryError> {
        let services = services();
        plan(
            &Target {
                namespace: "default",
                service: "web",
                services: &services,
                routes,
            },
            action,
        )
    }

    /// Applies a plan's documents over `routes` (as the store would).
    fn applied(routes: &[Value], plan: &Plan) -> Vec<Value> {
        let mut out: Vec<Value> = routes
            .iter()
            .filter(|r| !plan.documents.iter().any(|d| route_id(d) == route_id(r)))
            .cloned()
            .collect();
        out.extend(plan.documents.iter().cloned());
        out
    }

    fn weights(doc: &Value, rule: usize) -> Vec<(String, i64)> {
        doc["spec"]["rules"][rule]["backendRefs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["name"].as_str().unwrap().to_string(),
                    b["weight"].as_i64().unwrap_or(1),
                )
            })
            .collect()
    }

    fn w(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
        pairs.iter().map(|(n, w)| (n.to_string(), *w)).collect()
    }

    #[test]
    fn start_without_a_route_creates_one_at_the_first_step() {
        let p = run(&[], &start()).unwrap();
        assert_eq!(p.routes, vec!["default/web-canary"]);
        let doc = &p.documents[0];
        assert_eq!(
            doc["spec"],
            json!({
                "parentRefs": [{"kind": "Service", "name": "web", "port": 80}],
                "rules": [{"backendRefs": [
                    {"kind": "Service", "name": "web-v1", "port": 8080, "weight": 95},
                    {"kind": "Service", "name": "web-v2", "weight": 5},
                ]}],
            })
        );
        let a = &doc["metadata"]["annotations"];
        assert_eq!(a[STATE_ANNOTATION], "running");
        assert_eq!(a[STABLE_ANNOTATION], "web-v1");
        assert_eq!(a[CANARY_ANNOTATION], "web-v2");
        assert_eq!(a[STEPS_ANNOTATION], "5,10,25,50,100");
        assert_eq!(a[STEP_ANNOTATION], "1");
        assert_eq!(a[PERCENT_ANNOTATION], "5");
        assert_eq!(
            p.weights,
            BTreeMap::from([("web-v1".into(), 95), ("web-v2".into(), 5)])
        );
        // The created document is valid as stored.
        crate::resources::validate_documents(p.documents.clone()).unwrap();
    }

    #[test]
    fn start_edits_split_rules_and_leaves_others_alone() {
        let split = route(
            "web-split",
            "web",
            json!([
                // Opt-in rule: only the canary → untouched.
                {"matches": [{"headers": [{"name": "x-canary", "value": "1"}]}],
                 "backendRefs": [{"name": "web-v2", "port": 80}]},
                // Only the stable → the canary is added.
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                 "backendRefs": [{"name": "web-v1", "port": 80}], "timeouts": {"request": "1s"}},
                // Another backend with traffic → untouched.
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                 "backendRefs": [{"name": "web-v1", "weight": 50}, {"name": "other", "weight": 50}]},
                // Another backend at weight 0 (deployed, not released) does not count.
                {"matches": [{"path": {"type": "Exact", "value": "/x"}}],
                 "backendRefs": [{"name": "other", "weight": 0}, {"name": "web-v1", "weight": 3}, {"name": "web-v2", "weight": 9}]},
            ]),
        );
        let unrelated = route(
            "api",
            "other",
            json!([{"backendRefs": [{"name": "web-v1"}]}]),
        );
        let routes = vec![split.clone(), unrelated];
        let p = run(&routes, &start()).unwrap();
        assert_eq!(p.routes, vec!["default/web-split"]);
        let doc = &p.documents[0];
        assert_eq!(doc["spec"]["rules"][0], split["spec"]["rules"][0]);
        assert_eq!(weights(doc, 1), w(&[("web-v1", 95), ("web-v2", 5)]));
        assert_eq!(doc["spec"]["rules"][1]["backendRefs"][1]["port"], 80);
        // Fields the canary does not know about travel unchanged.
        assert_eq!(
            doc["spec"]["rules"][1]["timeouts"],
            json!({"request": "1s"})
        );
        assert_eq!(doc["spec"]["rules"][2], split["spec"]["rules"][2]);
        assert_eq!(
            weights(doc, 3),
            w(&[("other", 0), ("web-v1", 95), ("web-v2", 5)])
        );
    }

    #[test]
    fn set_step_promote_abort_walk_the_weights() {
        let mut routes = vec![route(
            "web-split",
            "web",
            json!([{"backendRefs": [{"name": "web-v1"}]}]),
        )];
        let go = |routes: &mut Vec<Value>, action: Action| -> Plan {
            let p = run(routes, &action).unwrap();
            *routes = applied(routes, &p);
            p
        };
        let p = go(&mut routes, start());
        assert_eq!(p.state.as_ref().map(|s| s.percent), Some(5));
        let p = go(&mut routes, Action::Step {});
        assert_eq!(
            weights(&p.documents[0], 0),
            w(&[("web-v1", 90), ("web-v2", 10)])
        );
        assert_eq!(p.state.as_ref().map(|s| s.step), Some(2));
        let p = go(&mut routes, Action::Set { percent: 30 });
        assert_eq!(
            weights(&p.documents[0], 0),
            w(&[("web-v1", 70), ("web-v2", 30)])
        );
        assert_eq!(
            p.state.as_ref().map(|s| s.step),
            Some(3),
            "5, 10 and 25 are ≤ 30"
        );
        let p = go(&mut routes, Action::Step {});
        assert_eq!(p.state.as_ref().map(|s| s.percent), Some(50));
        let p = go(&mut routes, Action::Step {});
        assert_eq!(
            p.state.as_ref().map(|s| (s.percent, s.step)),
            Some((100, 5))
        );
        let e = run(&routes, &Action::Step {}).unwrap_err();
        assert_eq!(
            e,
            CanaryError::Conflict("canary of default/web is at 100%: run canary promote".into())
        );
        let p = go(&mut routes, Action::Promote {});
        assert_eq!(p.state, None);
        assert_eq!(
            weights(&p.documents[0], 0),
            w(&[("web-v1", 0), ("web-v2", 100)])
        );
        assert!(p.documents[0]["metadata"].get("annotations").is_none());
        assert_eq!(
            run(&routes, &Action::Step {}).unwrap_err(),
            CanaryError::NotInProgress("default/web".into())
        );
        // The next release: web-v2 is the stable now; web-v1 at weight 0 does not count.
        let next = Action::Start {
            stable: "web-v2".into(),
            canary: "web-v1".into(),
            steps: Some(vec![20, 100]),
        };
        let p = go(&mut routes, next);
        assert_eq!(
            weights(&p.documents[0], 0),
            w(&[("web-v1", 20), ("web-v2", 80)])
        );
        let p = go(&mut routes, Action::Abort {});
        assert_eq!(
            weights(&p.documents[0], 0),
            w(&[("web-v1", 0), ("web-v2", 100)])
        );
        let s = p.state.clone().unwrap();
        assert_eq!((s.phase, s.percent), (Phase::Aborted, 0));
        assert_eq!(
            p.documents[0]["metadata"]["annotations"][STATE_ANNOTATION],
            "aborted"
        );
        // Aborting again changes nothing and does not fail.
        let again = run(&routes, &Action::Abort {}).unwrap();
        assert_eq!(again.documents, p.documents);
        assert!(matches!(
            run(&routes, &Action::Set { percent: 10 }).unwrap_err(),
            CanaryError::NotInProgress(m) if m.contains("aborted")
        ));
        // After an abort a new start is allowed.
        run(&routes, &start()).unwrap();
    }

    #[test]
    fn a_route_that_no_longer_routes_the_canary_stops_claiming_it() {
        let routes = vec![
            route("a", "web", json!([{"backendRefs": [{"name": "web-v1"}]}])),
            route("b", "web", json!([{"backendRefs": [{"name": "web-v1"}]}])),
        ];
        let p = run(&routes, &start()).unwrap();
        let mut routes = applied(&routes, &p);
        // Someone points route b elsewhere by hand.
        routes[1]["spec"]["rules"][0]["backendRefs"] = json!([{"name": "other"}]);
        let p = run(&routes, &Action::Step {}).unwrap();
        assert_eq!(p.routes, vec!["default/a"]);
        assert_eq!(p.documents.len(), 2);
        assert!(p.documents[1]["metadata"].get("annotations").is_none());
        assert_eq!(weights(&p.documents[1], 0), w(&[("other", 1)]));
        // With no route left to edit, an action says so instead of pretending.
        let routes = applied(&routes, &p);
        let mut gone = routes.clone();
        gone[0]["spec"]["rules"][0]["backendRefs"] = json!([{"name": "other"}]);
        assert!(matches!(
            run(&gone, &Action::Step {}),
            Err(CanaryError::Conflict(m)) if m.contains("add such a rule")
        ));
    }

    #[test]
    fn bad_requests_are_refused() {
        let routes = vec![route(
            "web-split",
            "web",
            json!([{"backendRefs": [{"name": "web-v1"}]}]),
        )];
        let services = services();
        let unknown = plan(
            &Target {
                namespace: "default",
                service: "nope",
                services: &services,
                routes: &routes,
            },
            &start(),
        );
        assert_eq!(
            unknown.unwrap_err(),
            CanaryError::UnknownService("default/nope".into())
        );
        let bad_canary = Action::Start {
            stable: "web-v1".into(),
            canary: "web-v9".into(),
            steps: None,
        };
        assert!(
            matches!(run(&routes, &bad_canary), Err(CanaryError::UnknownService(m)) if m.contains("web-v9"))
        );
        let same = Action::Start {
            stable: "web-v1".into(),
            canary: "web-v1".into(),
            steps: None,
        };
        assert!(matches!(run(&routes, &same), Err(CanaryError::Invalid(_))));
        for steps in [vec![], vec![0, 100], vec![10, 5], vec![10, 10], vec![101]] {
            let a = Action::Start {
                stable: "web-v1".into(),
                canary: "web-v2".into(),
                steps: Some(steps.clone()),
            };
            assert!(
                matches!(run(&routes, &a), Err(CanaryError::Invalid(_))),
                "{steps:?}"
            );
        }
        assert_eq!(
            run(&routes, &Action::Set { percent: 5 }).unwrap_err(),
            CanaryError::NotInProgress("default/web".into())
        );
        let p = run(&routes, &start()).unwrap();
        let routes = applied(&routes, &p);
        for percent in [-1, 101] {
            assert!(matches!(
                run(&routes, &Action::Set { percent }),
                Err(CanaryError::Invalid(m)) if m.contains("0..=100")
            ));
        }
        assert!(
            matches!(run(&routes, &start()), Err(CanaryError::Conflict(m)) if m.contains("in progress"))
        );
        // A route whose rules all send elsewhere: nothing to split.
        let elsewhere = vec![route(
            "web-split",
            "web",
            json!([{"backendRefs": [{"name": "other"}]}]),
        )];
        assert!(
            matches!(run(&elsewhere, &start()), Err(CanaryError::Conflict(m)) if m.contains("add such a rule"))
        );
    }

    #[test]
    fn the_state_round_trips_through_annotations_and_is_reported() {
        let routes = vec![
            route("a", "web", json!([{"backendRefs": [{"name": "web-v1"}]}])),
            route(
                "b",
                "web",
                json!([{"backendRefs": [{"name": "web-v1", "weight": 1}, {"name": "web-v2", "weight": 1}]}]),
            ),
        ];
        let p = run(&routes, &start()).unwrap();
        assert_eq!(p.routes, vec!["default/a", "default/b"]);
        let routes = applied(&routes, &p);
        let services = services();
        let target = Target {
            namespace: "default",
            service: "web",
            services: &services,
            routes: &routes,
        };
        let (state, carriers) = current(&target).unwrap();
        assert_eq!(Some(state), p.state);
        assert_eq!(carriers, vec!["default/a", "default/b"]);
        assert_eq!(
            observed_weights(&target, "web-v1", "web-v2"),
            Some(BTreeMap::from([
                ("web-v1".into(), 95),
                ("web-v2".into(), 5)
            ]))
        );
        // Hand-edited, disagreeing annotations are reported, not guessed at.
        for (percent, want) in [("7", "different"), ("700", "0..=100")] {
            let mut broken = routes.clone();
            broken[1]["metadata"]["annotations"][PERCENT_ANNOTATION] = json!(percent);
            let target = Target {
                routes: &broken,
                ..target.clone()
            };
            assert!(
                matches!(current(&target), Err(CanaryError::Conflict(m)) if m.contains(want)),
                "{percent}"
            );
        }
    }
}

//! Canary releases: deploy ≠ release. A canary moves a parent service's traffic from a
//! stable backend service to a canary backend service in steps, by editing the weights of
//! the HTTPRoutes attached to the parent; `abort` puts everything back on the stable at
//! once, `promote` moves everything to the canary.
//!
//! The state lives where the traffic decision lives: in annotations on those routes
//! (`canary.tandem.dev/*`), so it survives restarts, travels with backups and rollbacks,
//! and shows in `tandemctl get routes`. Planning is pure (documents in, documents out);
//! the API applies a [`Plan`]'s documents as one store revision.
//!
//! A canary started with objectives (`--auto`) is guarded: [`controller`] judges it every
//! second from the proxies' metrics ([`guard`]) and steps, promotes or rolls it back by
//! itself, each decision a revision whose summary gives the reason and the figures.
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
use serde_json::{Map, Value};

use crate::resources::GATEWAY_API_VERSION;

pub mod controller;
pub(crate) mod edit;
pub mod guard;
#[cfg(test)]
mod tests;

use edit::{new_route, refers_to, route_id, route_namespace, set_annotations};
pub use edit::{observed_weights, set_weights};
use guard::Guard;

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
/// `true` on a canary the control plane drives by its objectives.
pub const AUTO_ANNOTATION: &str = "canary.tandem.dev/auto";
/// A guarded canary's error-rate limits (`1%`, `+0.5%`), comma-separated.
pub const MAX_ERROR_RATE_ANNOTATION: &str = "canary.tandem.dev/max-error-rate";
/// A guarded canary's p99 limits (`500ms`, `1.5x`), comma-separated.
pub const MAX_P99_ANNOTATION: &str = "canary.tandem.dev/max-p99";
/// Requests a step must see before it is judged healthy.
pub const MIN_REQUESTS_ANNOTATION: &str = "canary.tandem.dev/min-requests";
/// How long a healthy step lasts (`30s`).
pub const STEP_TIME_ANNOTATION: &str = "canary.tandem.dev/step-time";
/// When the current step began (RFC 3339), so a restarted control plane keeps the pace.
pub const STEP_STARTED_ANNOTATION: &str = "canary.tandem.dev/step-started";
/// `true` while a person holds a guarded canary at its step.
pub const PAUSED_ANNOTATION: &str = "canary.tandem.dev/paused";

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
        /// Objectives: present, the control plane steps, promotes and rolls back by
        /// itself.
        #[serde(default)]
        auto: Option<AutoSpec>,
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
    /// Hold a guarded canary at its step (a breach still rolls it back).
    Pause {},
    /// Let a paused guarded canary go on; the step starts over.
    Resume {},
}

/// A guarded canary's objectives as a client sends them (`tandemctl canary start --auto`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoSpec {
    /// Error-rate limits: `1%` (absolute), `+0.5%` (over the stable's), comma-separated.
    #[serde(default)]
    pub max_error_rate: Option<String>,
    /// p99 limits: `500ms` (absolute), `1.5x` (times the stable's), comma-separated.
    #[serde(default)]
    pub max_p99: Option<String>,
    /// Requests a step must see before it is judged healthy (default 20).
    #[serde(default)]
    pub min_requests: Option<u64>,
    /// How long a healthy step lasts (default `30s`).
    #[serde(default)]
    pub step_time: Option<String>,
}

impl AutoSpec {
    /// The guard, or what is wrong with the spec, naming the field.
    pub fn guard(&self) -> Result<Guard, CanaryError> {
        let bad = |field: &str, e: String| CanaryError::Invalid(format!("auto.{field}: {e}"));
        let mut g = guard::objectives(
            self.max_error_rate.as_deref(),
            self.max_p99.as_deref(),
            self.min_requests,
        )
        .map_err(|e| match e {
            guard::ObjectiveError::Rate(e) => bad("maxErrorRate", e),
            guard::ObjectiveError::P99(e) => bad("maxP99", e),
            guard::ObjectiveError::MinRequests(n) => {
                bad("minRequests", format!("{n} is not 1..=1000000"))
            }
            guard::ObjectiveError::Missing => CanaryError::Invalid(
                "auto: give at least one objective (maxErrorRate, maxP99)".into(),
            ),
        })?;
        if let Some(t) = &self.step_time {
            let d = crate::resources::duration::parse(t).map_err(|e| bad("stepTime", e))?;
            if d < std::time::Duration::from_secs(1) || d > std::time::Duration::from_secs(86_400) {
                return Err(bad("stepTime", format!("{t:?} is not 1s..=24h")));
            }
            g.step_time = d;
        }
        Ok(g)
    }
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
            Action::Pause {} => "pause",
            Action::Resume {} => "resume",
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
    /// A guarded canary's objectives and pace (`None`: moved by hand only).
    #[serde(skip)]
    pub guard: Option<Guard>,
    /// When the current step began (Unix seconds), for a guarded canary.
    #[serde(skip)]
    pub step_started: Option<u64>,
    /// A guarded canary held at its step by a person.
    #[serde(skip)]
    pub paused: bool,
}

impl CanaryState {
    fn annotations(&self) -> Vec<(&'static str, String)> {
        let steps: Vec<String> = self.steps.iter().map(u8::to_string).collect();
        let mut out = vec![
            (STATE_ANNOTATION, self.phase.to_string()),
            (STABLE_ANNOTATION, self.stable.clone()),
            (CANARY_ANNOTATION, self.canary.clone()),
            (STEPS_ANNOTATION, steps.join(",")),
            (STEP_ANNOTATION, self.step.to_string()),
            (PERCENT_ANNOTATION, self.percent.to_string()),
        ];
        if let Some(g) = &self.guard {
            out.push((AUTO_ANNOTATION, "true".into()));
            if !g.max_error_rate.is_empty() {
                out.push((MAX_ERROR_RATE_ANNOTATION, guard::join(&g.max_error_rate)));
            }
            if !g.max_p99.is_empty() {
                out.push((MAX_P99_ANNOTATION, guard::join(&g.max_p99)));
            }
            out.push((MIN_REQUESTS_ANNOTATION, g.min_requests.to_string()));
            out.push((STEP_TIME_ANNOTATION, format!("{}s", g.step_time.as_secs())));
            if let Some(t) = self.step_started {
                out.push((STEP_STARTED_ANNOTATION, crate::resources::clock::rfc3339(t)));
            }
            if self.paused {
                out.push((PAUSED_ANNOTATION, "true".into()));
            }
        }
        out
    }

    /// The guard from the annotations, when the canary is guarded.
    fn guard_from(
        a: &Map<String, Value>,
        bad: &dyn Fn(&str, String) -> CanaryError,
    ) -> Result<Option<Guard>, CanaryError> {
        if a.get(AUTO_ANNOTATION).and_then(Value::as_str) != Some("true") {
            return Ok(None);
        }
        let text = |key: &str| a.get(key).and_then(Value::as_str);
        let spec = AutoSpec {
            max_error_rate: text(MAX_ERROR_RATE_ANNOTATION).map(str::to_string),
            max_p99: text(MAX_P99_ANNOTATION).map(str::to_string),
            min_requests: match text(MIN_REQUESTS_ANNOTATION) {
                Some(t) => Some(
                    t.parse()
                        .map_err(|_| bad(MIN_REQUESTS_ANNOTATION, format!("{t:?}")))?,
                ),
                None => None,
            },
            step_time: text(STEP_TIME_ANNOTATION).map(str::to_string),
        };
        spec.guard()
            .map(Some)
            .map_err(|e| bad(AUTO_ANNOTATION, e.to_string()))
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
        let guard = Self::guard_from(a, &bad)?;
        let step_started = a
            .get(STEP_STARTED_ANNOTATION)
            .and_then(Value::as_str)
            .and_then(crate::resources::clock::parse_rfc3339);
        Ok(Some(CanaryState {
            phase,
            stable: get(STABLE_ANNOTATION)?.to_string(),
            canary: get(CANARY_ANNOTATION)?.to_string(),
            steps,
            step,
            percent,
            paused: guard.is_some()
                && a.get(PAUSED_ANNOTATION).and_then(Value::as_str) == Some("true"),
            guard,
            step_started,
        }))
    }
}

impl CanaryState {
    /// A guarded canary's step starts at `now`.
    fn restart_step(&mut self, now: u64) {
        if self.guard.is_some() {
            self.step_started = Some(now);
        }
    }

    /// Whether its weights stand at the last step (nothing left but promotion).
    pub fn at_last_step(&self) -> bool {
        self.steps.last().is_none_or(|last| self.percent >= *last)
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

    /// [`Target::attached`], or [`CanaryError::UnknownService`] when there is none and no
    /// such service either.
    fn attached_or_unknown(&self) -> Result<Vec<&Value>, CanaryError> {
        let attached = self.attached();
        if attached.is_empty() && !self.services.contains_key(self.service) {
            return Err(CanaryError::UnknownService(self.id()));
        }
        Ok(attached)
    }

    /// The routes whose parentRefs include the service, by (namespace, name).
    pub(crate) fn attached(&self) -> Vec<&Value> {
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
    match state_of(&target.attached_or_unknown()?)? {
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

/// Plans `action` for the target's service, now.
pub fn plan(target: &Target<'_>, action: &Action) -> Result<Plan, CanaryError> {
    plan_at(target, action, crate::resources::clock::unix_now())
}

/// Plans `action` for the target's service at `now` (Unix seconds: a guarded canary's
/// step starts then when its weights change).
pub fn plan_at(target: &Target<'_>, action: &Action, now: u64) -> Result<Plan, CanaryError> {
    let attached = target.attached_or_unknown()?;
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
            auto,
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
            let guard = auto.as_ref().map(AutoSpec::guard).transpose()?;
            Some(CanaryState {
                phase: Phase::Running,
                stable: stable.clone(),
                canary: canary.clone(),
                steps,
                step: 1,
                percent,
                step_started: guard.as_ref().map(|_| now),
                guard,
                paused: false,
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
            s.restart_step(now);
            Some(s)
        }
        Action::Step {} => {
            let mut s = running()?;
            match s.steps.iter().copied().find(|x| *x > s.percent) {
                Some(p) => {
                    s.percent = p;
                    s.step = s.steps.iter().filter(|x| **x <= p).count();
                    s.restart_step(now);
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
            s.paused = false;
            Some(s)
        }
        Action::Pause {} | Action::Resume {} => {
            let mut s = running()?;
            if s.guard.is_none() {
                return Err(CanaryError::Conflict(format!(
                    "the canary of {} is moved by hand (started without --auto): nothing to {}",
                    target.id(),
                    action.name()
                )));
            }
            let pause = matches!(action, Action::Pause {});
            if !pause && s.paused {
                // The step gets its whole time again after a hold.
                s.restart_step(now);
            }
            s.paused = pause;
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

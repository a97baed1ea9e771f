//! `GET /ui/overview`: everything the web page shows, as one JSON document — the services
//! with their golden signals, who calls whom, the canaries with their live split, objectives
//! and decisions, and the latest revisions.
//!
//! Built from the same answers the token-protected API gives (`/v1/stat`,
//! `/v1/canaries/...`, `/v1/history`), so the page and `tandemctl` never disagree. Only
//! names, figures and revision summaries leave: no token, key or certificate is read here.
//! [`gather`] does the reading; [`build`] is pure, so its choices are tested on their own.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::api::{canary, stat, ApiError, ApiState, Call};
use crate::canary::STATE_ANNOTATION;
use crate::resources::clock::{rfc3339, unix_now};
use crate::resources::Kind;
use crate::store::{Revision, Store, StoreError};
use crate::telemetry::{BackendStats, Group};

/// Revisions the page lists.
pub const HISTORY_SHOWN: usize = 20;
/// Decisions listed per canary (its latest ones).
pub const DECISIONS_SHOWN: usize = 20;
/// Canaries shown: a bound on the work one refresh does.
pub const MAX_CANARIES: usize = 50;

/// What the overview is built from.
#[derive(Debug, Default)]
pub struct Inputs {
    /// The head revision.
    pub revision: u64,
    /// Now, Unix seconds.
    pub now: u64,
    /// Stored services: (namespace, name).
    pub services: Vec<(String, String)>,
    /// `GET /v1/stat?by=service`'s answer.
    pub called: Value,
    /// `GET /v1/stat?by=backend`'s answer.
    pub backends: Value,
    /// Connected proxies.
    pub connected: usize,
    /// Connected proxies per service name.
    pub sidecars: BTreeMap<String, usize>,
    /// Stats per (caller, service called).
    pub edges: BTreeMap<(String, String), BackendStats>,
    /// Per canary (namespace, service): `GET /v1/canaries/...`'s answer, or why it failed.
    pub canaries: Vec<(String, String, Result<Value, String>)>,
    /// The whole history, oldest first.
    pub history: Vec<Revision>,
}

/// Reads what the overview needs and builds it.
pub(crate) async fn gather(state: &ApiState, call: &Call) -> Result<Value, ApiError> {
    let window = stat::window(call)?;
    let store = state.store.clone();
    let (services, parents, history) =
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|e| ApiError::Internal(format!("store task failed: {e}")))??;
    let mut canaries = Vec::new();
    for (namespace, service) in parents.into_iter().take(MAX_CANARIES) {
        let answer = match canary::status(state, call, &namespace, &service).await {
            Ok((_, Some(v))) => Ok(v),
            Ok((_, None)) => Err("no answer".to_string()),
            Err(e) => Err(e.to_string()),
        };
        canaries.push((namespace, service, answer));
    }
    let proxies = state.store.proxies().list();
    let mut sidecars: BTreeMap<String, usize> = BTreeMap::new();
    for p in &proxies {
        if let Some(service) = &p.service {
            let name = service.rsplit('/').next().unwrap_or(service).to_string();
            *sidecars.entry(name).or_default() += 1;
        }
    }
    Ok(build(Inputs {
        revision: state.store.head(),
        now: unix_now(),
        services,
        called: stat::answer(state, window, Group::Service),
        backends: stat::answer(state, window, Group::Backend),
        connected: proxies.len(),
        sidecars,
        edges: state.telemetry.edges(window),
        canaries,
        history,
    }))
}

/// Stored services, the parents of every canary (running or rolled back), and the history.
type Read = (
    Vec<(String, String)>,
    BTreeSet<(String, String)>,
    Vec<Revision>,
);

fn read(store: &Store) -> Result<Read, StoreError> {
    let services = store
        .list(Kind::Service, None)?
        .into_iter()
        .map(|s| (s.key.namespace, s.key.name))
        .collect();
    let mut parents = BTreeSet::new();
    for r in store.list(Kind::HttpRoute, None)? {
        if r.doc["metadata"]["annotations"][STATE_ANNOTATION].is_null() {
            continue;
        }
        for p in r.doc["spec"]["parentRefs"].as_array().into_iter().flatten() {
            if let Some(name) = p["name"].as_str() {
                let ns = p["namespace"].as_str().unwrap_or(&r.key.namespace);
                parents.insert((ns.to_string(), name.to_string()));
            }
        }
    }
    Ok((services, parents, store.history()?))
}

/// The overview document.
pub fn build(inputs: Inputs) -> Value {
    let canaries = canaries(&inputs);
    json!({
        "revision": inputs.revision,
        "generated_at": rfc3339(inputs.now),
        "window_seconds": inputs.called["window_seconds"],
        "proxies": {
            "connected": inputs.connected,
            "scraped": inputs.called["proxies_scraped"],
            "reporting": inputs.called["proxies_reporting"],
        },
        "services": services(&inputs),
        "edges": edges(&inputs.edges),
        "canaries": canaries,
        "history": inputs
            .history
            .iter()
            .rev()
            .take(HISTORY_SHOWN)
            .map(revision)
            .collect::<Vec<_>>(),
    })
}

fn items(answer: &Value) -> BTreeMap<String, &Value> {
    answer["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| Some((i["name"].as_str()?.to_string(), i)))
        .collect()
}

fn has_requests(item: &Value) -> bool {
    item["requests"].as_f64().is_some_and(|n| n > 0.0)
}

/// Every stored service, and every name the proxies called that is not one (`unknown`,
/// a service deleted since), with its signals: as its callers see it (the name they
/// called), or — for a service only ever reached as a route's backend, like a canary's
/// versions — as a backend. The metrics carry no namespace: a name in two namespaces
/// shows the same figures in both.
fn services(inputs: &Inputs) -> Vec<Value> {
    let called = items(&inputs.called);
    let backends = items(&inputs.backends);
    let mut rows: Vec<(Option<&str>, &str)> = inputs
        .services
        .iter()
        .map(|(ns, name)| (Some(ns.as_str()), name.as_str()))
        .collect();
    let stored: BTreeSet<&str> = inputs.services.iter().map(|(_, n)| n.as_str()).collect();
    rows.extend(
        called
            .iter()
            .filter(|(name, item)| !stored.contains(name.as_str()) && has_requests(item))
            .map(|(name, _)| (None, name.as_str())),
    );
    rows.into_iter()
        .map(|(namespace, name)| {
            let by_name = called.get(name).copied();
            let (seen_as, figures) = match (by_name, backends.get(name).copied()) {
                (Some(c), _) if has_requests(c) => (Some("called"), Some(c)),
                (_, Some(b)) if has_requests(b) => (Some("backend"), Some(b)),
                _ => (None, None),
            };
            let figure = |field: &str| figures.map_or(Value::Null, |f| f[field].clone());
            json!({
                "namespace": namespace,
                "name": name,
                "sidecars": inputs.sidecars.get(name).copied().unwrap_or(0),
                "seen_as": seen_as,
                "requests_per_second": figure("requests_per_second"),
                "requests": figure("requests"),
                "success_rate": figure("success_rate"),
                "p50_seconds": figure("p50_seconds"),
                "p95_seconds": figure("p95_seconds"),
                "p99_seconds": figure("p99_seconds"),
                "tcp_open_inbound": by_name.map_or(Value::Null, |c| c["tcp_open_inbound"].clone()),
            })
        })
        .collect()
}

/// Caller → service called. A caller whose proxy names no service of its own is `null`.
fn edges(edges: &BTreeMap<(String, String), BackendStats>) -> Vec<Value> {
    edges
        .iter()
        .filter(|((_, to), _)| !to.is_empty())
        .map(|((from, to), s)| {
            json!({
                "from": Some(from).filter(|f| !f.is_empty()),
                "to": to,
                "requests_per_second": s.requests_per_second,
                "requests": s.requests,
                "success_rate": s.success_rate,
                "p99_seconds": s.p99_seconds,
            })
        })
        .collect()
}

/// Each canary's status with its decisions, running ones first.
fn canaries(inputs: &Inputs) -> Vec<Value> {
    let mut out: Vec<Value> = inputs
        .canaries
        .iter()
        .map(|(namespace, service, answer)| {
            let mut v = match answer {
                Ok(Value::Object(m)) => Value::Object(m.clone()),
                Ok(_) => json!({"error": "unexpected answer"}),
                Err(e) => json!({"error": e}),
            };
            v["namespace"] = json!(namespace);
            v["name"] = json!(service);
            v["decisions"] = decisions(&inputs.history, namespace, service)
                .into_iter()
                .map(revision)
                .collect();
            v
        })
        .collect();
    out.sort_by_key(|c| c["state"]["phase"] != "running");
    out
}

/// The revisions of the canary's latest release, oldest first: from its `start` on, every
/// revision that names it — the actions people took and the controller's decisions with
/// their reasons (`canary default/web stepped to 10%: web-v2 healthy for 30s: ...`).
pub fn decisions<'a>(history: &'a [Revision], namespace: &str, service: &str) -> Vec<&'a Revision> {
    let prefix = format!("canary {namespace}/{service} ");
    let start = format!("{prefix}start:");
    let mut out: Vec<&Revision> = Vec::new();
    for r in history.iter().rev() {
        if !r.summary.starts_with(&prefix) {
            continue;
        }
        out.push(r);
        if r.summary.starts_with(&start) {
            break;
        }
    }
    out.truncate(DECISIONS_SHOWN);
    out.reverse();
    out
}

fn revision(r: &Revision) -> Value {
    let mut v = Map::new();
    v.insert("revision".into(), json!(r.revision));
    v.insert("time".into(), json!(rfc3339(r.time_unix)));
    v.insert("who".into(), json!(r.who));
    v.insert("summary".into(), json!(r.summary));
    Value::Object(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(revision: u64, who: &str, summary: &str) -> Revision {
        Revision {
            revision,
            time_unix: 1_800_000_000 + revision,
            who: who.into(),
            summary: summary.into(),
        }
    }

    fn stat_item(name: &str, requests: f64, success: f64) -> Value {
        json!({
            "name": name, "requests_per_second": requests / 30.0, "requests": requests,
            "success_rate": if requests > 0.0 { json!(success) } else { Value::Null },
            "p50_seconds": 0.001, "p95_seconds": 0.002, "p99_seconds": 0.004,
        })
    }

    #[test]
    fn services_show_their_callers_view_or_else_their_backend_view() {
        let mut called_web = stat_item("web", 300.0, 0.99);
        called_web["tcp_open_inbound"] = json!(2.0);
        let mut idle_v1 = stat_item("web-v1", 0.0, 0.0);
        idle_v1["tcp_open_inbound"] = json!(1.0);
        let inputs = Inputs {
            services: ["web", "web-v1", "web-v2", "db"]
                .iter()
                .map(|n| ("default".to_string(), n.to_string()))
                .collect(),
            called: json!({"window_seconds": 30.0, "proxies_scraped": 2, "proxies_reporting": 1,
                "items": [called_web, idle_v1, stat_item("unknown", 4.0, 0.0), stat_item("gone", 0.0, 0.0)]}),
            backends: json!({"items": [stat_item("web-v1", 270.0, 1.0), stat_item("web-v2", 30.0, 0.9)]}),
            connected: 2,
            sidecars: [("web-v1".to_string(), 1)].into(),
            ..Inputs::default()
        };
        let o = build(inputs);
        let rows = o["services"].as_array().unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
        // Stored ones in store order, then what was called but is not stored and had
        // traffic in the window.
        assert_eq!(names, ["web", "web-v1", "web-v2", "db", "unknown"]);
        let row = |n: &str| rows.iter().find(|r| r["name"] == n).unwrap();
        assert_eq!(row("web")["seen_as"], "called");
        assert_eq!(row("web")["success_rate"], 0.99);
        assert_eq!(row("web")["tcp_open_inbound"], 2.0);
        assert_eq!(row("web-v1")["seen_as"], "backend");
        assert_eq!(row("web-v1")["requests"], 270.0);
        assert_eq!(
            row("web-v1")["tcp_open_inbound"],
            1.0,
            "its own sidecars' connections"
        );
        assert_eq!(row("web-v1")["sidecars"], 1);
        assert_eq!(row("web-v2")["success_rate"], 0.9);
        assert_eq!(row("db")["seen_as"], Value::Null);
        assert_eq!(row("db")["success_rate"], Value::Null);
        assert_eq!(row("unknown")["namespace"], Value::Null);
        assert_eq!(o["window_seconds"], 30.0);
        assert_eq!(
            o["proxies"],
            json!({"connected": 2, "scraped": 2, "reporting": 1})
        );
    }

    #[test]
    fn edges_go_from_caller_to_service_called() {
        let s = BackendStats {
            requests_per_second: 5.0,
            requests: 150.0,
            success_rate: Some(1.0),
            p99_seconds: Some(0.003),
            ..BackendStats::default()
        };
        let edges = [
            (("frontend".to_string(), "web".to_string()), s.clone()),
            ((String::new(), "api".to_string()), s.clone()),
            (("frontend".to_string(), String::new()), s),
        ]
        .into();
        let o = build(Inputs {
            edges,
            ..Inputs::default()
        });
        assert_eq!(
            o["edges"],
            json!([
                {"from": null, "to": "api", "requests_per_second": 5.0, "requests": 150.0,
                 "success_rate": 1.0, "p99_seconds": 0.003},
                {"from": "frontend", "to": "web", "requests_per_second": 5.0, "requests": 150.0,
                 "success_rate": 1.0, "p99_seconds": 0.003},
            ])
        );
    }

    #[test]
    fn a_canary_lists_the_decisions_of_its_latest_release() {
        let history = vec![
            rev(1, "api", "apply: created Service default/web"),
            rev(2, "api", "canary default/web start: created HTTPRoute default/web-canary"),
            rev(3, "canary-controller", "canary default/web rolled back: web-v2 error rate 12.5% > 1% over 8 requests: updated HTTPRoute default/web-canary"),
            rev(4, "api", "canary default/web start: updated HTTPRoute default/web-canary"),
            rev(5, "api", "canary default/webshop start: created HTTPRoute default/webshop-canary"),
            rev(6, "canary-controller", "canary default/web stepped to 10%: web-v2 healthy for 30s: error rate 0% over 63 requests, p99 4ms: updated HTTPRoute default/web-canary"),
            rev(7, "api", "canary shop/web pause: updated HTTPRoute shop/web-canary"),
            rev(8, "api", "canary default/web pause: updated HTTPRoute default/web-canary"),
        ];
        let got: Vec<u64> = decisions(&history, "default", "web")
            .iter()
            .map(|r| r.revision)
            .collect();
        assert_eq!(got, [4, 6, 8], "from the latest start, this canary's only");
        let status = json!({"service": "default/web", "state": {"phase": "running"},
            "weights": {"web-v1": 90, "web-v2": 10}});
        let o = build(Inputs {
            canaries: vec![
                (
                    "default".into(),
                    "api".into(),
                    Ok(json!({"state": {"phase": "aborted"}})),
                ),
                ("default".into(), "web".into(), Ok(status)),
                (
                    "shop".into(),
                    "web".into(),
                    Err("HTTPRoutes disagree".into()),
                ),
            ],
            history,
            ..Inputs::default()
        });
        let canaries = o["canaries"].as_array().unwrap();
        let web = &canaries[0];
        assert_eq!(
            (web["namespace"].as_str(), web["name"].as_str()),
            (Some("default"), Some("web"))
        );
        assert_eq!(web["weights"]["web-v2"], 10);
        let summaries: Vec<&str> = web["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["summary"].as_str().unwrap())
            .collect();
        assert!(summaries[1].contains("healthy for 30s"), "{summaries:?}");
        assert_eq!(web["decisions"][1]["who"], "canary-controller");
        assert_eq!(web["decisions"][1]["time"], "2027-01-15T08:00:06Z");
        assert_eq!(
            canaries[1]["name"], "api",
            "rolled back ones after running ones"
        );
        assert_eq!(canaries[2]["error"], "HTTPRoutes disagree");
        assert_eq!(canaries[2]["decisions"][0]["revision"], 7);
    }

    #[test]
    fn history_shows_the_latest_revisions_newest_first() {
        let history: Vec<Revision> = (1..=30).map(|n| rev(n, "api", "apply: x")).collect();
        let o = build(Inputs {
            revision: 30,
            now: 1_800_000_000,
            history,
            ..Inputs::default()
        });
        let shown: Vec<u64> = o["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["revision"].as_u64().unwrap())
            .collect();
        assert_eq!(shown, (11..=30).rev().collect::<Vec<_>>());
        assert_eq!(o["history"][0]["who"], "api");
        assert_eq!(o["generated_at"], "2027-01-15T08:00:00Z");
        assert_eq!(o["revision"], 30);
    }
}

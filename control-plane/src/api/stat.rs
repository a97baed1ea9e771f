//! `GET /v1/stat?by=service|route|backend[&window=S]`: the mesh's golden signals from the
//! proxies' own metrics (request rate, success rate, p50/p95/p99) per service called, per
//! route or per backend, and per service the connections its proxies hold open — what
//! `tandemctl stat` shows. The figures are the callers' view (outbound), summed over every
//! scraped proxy, over the last `window` seconds (default 30).

use std::collections::BTreeMap;
use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use super::request::query;
use super::{ApiError, ApiState, Call};
use crate::telemetry::{Group, OpenConnections, DEFAULT_WINDOW, RETENTION};

/// `?window=S`: 1..=[`RETENTION`] seconds, default [`DEFAULT_WINDOW`].
pub(crate) fn window(call: &Call) -> Result<Duration, ApiError> {
    let Some(w) = query(call, "window") else {
        return Ok(DEFAULT_WINDOW);
    };
    w.parse::<u64>()
        .ok()
        .filter(|s| (1..=RETENTION.as_secs()).contains(s))
        .map(Duration::from_secs)
        .ok_or_else(|| {
            ApiError::Invalid(format!(
                "window: {w:?} is not 1..={} seconds",
                RETENTION.as_secs()
            ))
        })
}

/// Handles `GET /v1/stat`.
pub(super) fn stat(state: &ApiState, call: &Call) -> Result<(StatusCode, Option<Value>), ApiError> {
    let by = query(call, "by").unwrap_or_else(|| "service".into());
    let group = match by.as_str() {
        "service" | "services" => Group::Service,
        "route" | "routes" => Group::Route,
        "backend" | "backends" => Group::Backend,
        other => {
            return Err(ApiError::Invalid(format!(
                "by: {other:?} is not service, route or backend"
            )))
        }
    };
    let window = window(call)?;
    Ok((StatusCode::OK, Some(answer(state, window, group))))
}

/// The answer of `GET /v1/stat` for `group` over `window` (the web page shows the same).
pub(crate) fn answer(state: &ApiState, window: Duration, group: Group) -> Value {
    let stats = state.telemetry.stats_by(window, group);
    // Open connections per service: the inbound side of its own proxies.
    let mut open: BTreeMap<String, OpenConnections> = BTreeMap::new();
    if group == Group::Service {
        let by_node = state.telemetry.open_connections();
        for p in state.store.proxies().list() {
            let (Some(service), Some(o)) = (p.service, by_node.get(&p.node)) else {
                continue;
            };
            let name = service.rsplit('/').next().unwrap_or(&service).to_string();
            let e = open.entry(name).or_default();
            e.inbound += o.inbound;
            e.outbound += o.outbound;
        }
    }
    let mut names: Vec<&String> = stats.backends.keys().collect();
    names.extend(open.keys().filter(|n| !stats.backends.contains_key(*n)));
    let items: Vec<Value> = names
        .into_iter()
        .filter(|n| !n.is_empty())
        .map(|name| {
            let s = stats.backends.get(name).cloned().unwrap_or_default();
            let mut item = json!({
                "name": name,
                "requests_per_second": s.requests_per_second,
                "requests": s.requests,
                "success_rate": s.success_rate,
                "p50_seconds": s.p50_seconds,
                "p95_seconds": s.p95_seconds,
                "p99_seconds": s.p99_seconds,
            });
            if group == Group::Service {
                let o = open.get(name).copied().unwrap_or_default();
                item["tcp_open_inbound"] = json!(o.inbound);
            }
            item
        })
        .collect();
    json!({
        "by": match group {
            Group::Service => "service",
            Group::Route => "route",
            Group::Backend => "backend",
        },
        "window_seconds": stats.window_seconds,
        "proxies_scraped": stats.proxies_scraped,
        "proxies_reporting": stats.proxies_reporting,
        "items": items,
    })
}

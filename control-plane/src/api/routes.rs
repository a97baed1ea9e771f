//! The API's routes and handlers. Store calls run on the blocking pool (they fsync).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tandem_xds::domain::DEFAULT_NAMESPACE;

use super::request::{blocking, body, cluster_owned, query, refuse_in_kubernetes};
use super::{ApiError, ApiState, Call};
use crate::discovery::registrations::Registration;
use crate::resources::validate::dns_label;
use crate::resources::{status, validate_documents, Kind, ResourceKey};
use crate::store::{Backup, StoredResource, WHO_API};

type Answer = Result<(StatusCode, Option<Value>), ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyRequest {
    documents: Vec<Value>,
    /// Refuse routes that name a Service or FaultInjection that does not exist.
    #[serde(default)]
    strict: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    service: String,
    #[serde(default)]
    namespace: Option<String>,
    address: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatRequest {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeregisterRequest {
    #[serde(default)]
    namespace: Option<String>,
    service: String,
    address: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    revision: u64,
}

/// Dispatches on method and path.
pub(crate) async fn route(state: &ApiState, call: Call) -> Answer {
    let segments: Vec<&str> = call
        .path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let m = &call.method;
    match segments.as_slice() {
        ["v1", "apply"] => {
            only(m, Method::POST)?;
            apply(state, &call).await
        }
        ["v1", "endpoints", "register"] => {
            only(m, Method::POST)?;
            register(state, &call).await
        }
        ["v1", "endpoints", "heartbeat"] => {
            only(m, Method::POST)?;
            heartbeat(state, &call).await
        }
        ["v1", "endpoints", "deregister"] => {
            only(m, Method::POST)?;
            deregister(state, &call).await
        }
        ["v1", "history"] => {
            only(m, Method::GET)?;
            history(state, &call).await
        }
        ["v1", "rollback"] => {
            only(m, Method::POST)?;
            rollback(state, &call).await
        }
        ["v1", "backup"] => {
            only(m, Method::GET)?;
            backup(state).await
        }
        ["v1", "restore"] => {
            only(m, Method::POST)?;
            restore(state, &call).await
        }
        ["v1", "status"] => {
            only(m, Method::GET)?;
            status(state).await
        }
        ["v1", "stat"] => {
            only(m, Method::GET)?;
            super::stat::stat(state, &call)
        }
        ["v1", "tokens"] => {
            only(m, Method::POST)?;
            super::tokens::create(state, &call).await
        }
        ["v1", "ca", rest @ ..] => super::ca::handle(state, &call, rest).await,
        ["v1", "canaries", ns, name] => super::canary::handle(state, &call, ns, name).await,
        ["v1", "chaos", rest @ ..] => super::chaos::handle(state, &call, rest).await,
        ["v1", kind] => {
            let kind = collection(kind)?;
            {
                only(m, Method::GET)?;
                list(state, kind, &call).await
            }
        }
        ["v1", kind, ns, name] => {
            let key = ResourceKey::new(collection(kind)?, *ns, *name);
            match *m {
                Method::GET => get(state, key).await,
                Method::DELETE => delete(state, key).await,
                _ => Err(ApiError::MethodNotAllowed),
            }
        }
        _ => Err(ApiError::NotFound(format!("no route {}", call.path))),
    }
}

fn only(method: &Method, allowed: Method) -> Result<(), ApiError> {
    if *method == allowed {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed)
    }
}

fn collection(word: &str) -> Result<Kind, ApiError> {
    Kind::ALL
        .into_iter()
        .find(|k| k.plural() == word)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no collection {word:?}: use {}",
                Kind::plurals_hint()
            ))
        })
}

fn ok(value: Value) -> Answer {
    Ok((StatusCode::OK, Some(value)))
}

/// Applies documents; routes naming what does not exist are applied with `warnings`, or
/// refused with `strict`.
async fn apply(state: &ApiState, call: &Call) -> Answer {
    let req: ApplyRequest = body(call)?;
    let resources = validate_documents(req.documents)?;
    for r in &resources {
        cluster_owned(state, r.key.kind)?;
    }
    let strict = req.strict;
    let (out, warnings) = blocking(state, move |s| {
        let routes: Vec<Value> = resources
            .iter()
            .filter(|r| is_route(r.key.kind))
            .map(|r| r.doc.clone())
            .collect();
        let out = if strict {
            s.apply_strict(resources, WHO_API)?
        } else {
            s.apply(resources, WHO_API)?
        };
        let warnings = if routes.is_empty() {
            Vec::new()
        } else {
            let world = s.route_world()?;
            routes
                .iter()
                .flat_map(|doc| route_warnings(doc, &world))
                .collect()
        };
        Ok((out, warnings))
    })
    .await?;
    let mut answer = json!({"revision": out.revision, "changed": out.changed});
    if !warnings.is_empty() {
        answer["warnings"] = json!(warnings);
    }
    ok(answer)
}

fn is_route(kind: Kind) -> bool {
    matches!(kind, Kind::HttpRoute | Kind::GrpcRoute)
}

/// `HTTPRoute shop/r: spec.rules[0].backendRefs[1]: Service shop/x does not exist (...)`.
fn route_warnings(doc: &Value, world: &status::World) -> Vec<String> {
    let kind = doc["kind"].as_str().unwrap_or("route");
    let ns = doc["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    status::unresolved(doc, world)
        .iter()
        .map(|u| format!("{kind} {ns}/{name}: {u}"))
        .collect()
}

/// A stored resource as the API shows it; a route with its Gateway API status.
fn shown(r: &StoredResource, world: Option<&status::World>) -> Value {
    let mut doc = r.to_api();
    if let Some(world) = world.filter(|_| is_route(r.key.kind)) {
        doc["status"]["parents"] = status::route_status(&r.doc, world, r.updated);
    }
    doc
}

async fn list(state: &ApiState, kind: Kind, call: &Call) -> Answer {
    let ns = query(call, "namespace").filter(|n| !n.is_empty());
    let (items, world) = blocking(state, move |s| {
        let items = s.list(kind, ns.as_deref())?;
        let world = is_route(kind).then(|| s.route_world()).transpose()?;
        Ok((items, world))
    })
    .await?;
    let items: Vec<Value> = items.iter().map(|r| shown(r, world.as_ref())).collect();
    ok(json!({"items": items}))
}

async fn get(state: &ApiState, key: ResourceKey) -> Answer {
    let k = key.clone();
    let found = blocking(state, move |s| {
        let world = is_route(k.kind).then(|| s.route_world()).transpose()?;
        Ok(s.get(&k)?.map(|r| (r, world)))
    })
    .await?;
    match found {
        Some((r, world)) => ok(shown(&r, world.as_ref())),
        None => Err(ApiError::NotFound(format!("{key} not found"))),
    }
}

async fn delete(state: &ApiState, key: ResourceKey) -> Answer {
    cluster_owned(state, key.kind)?;
    let out = blocking(state, move |s| s.delete(&key, WHO_API)).await?;
    ok(json!({"revision": out.revision}))
}

fn namespace(ns: Option<String>) -> Result<String, ApiError> {
    let ns = ns.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    dns_label("namespace", &ns)?;
    Ok(ns)
}

fn address(text: &str) -> Result<SocketAddr, ApiError> {
    text.parse()
        .map_err(|_| ApiError::Invalid(format!("address: {text:?} is not ip:port")))
}

async fn register(state: &ApiState, call: &Call) -> Answer {
    let req: RegisterRequest = body(call)?;
    let namespace = namespace(req.namespace)?;
    dns_label("service", &req.service)?;
    let address = address(&req.address)?;
    if req.ttl_seconds == Some(0) {
        return Err(ApiError::Invalid("ttl_seconds: must be ≥ 1".into()));
    }
    let reg = Registration {
        namespace,
        service: req.service,
        address,
        labels: req.labels,
        ttl: req.ttl_seconds.map(Duration::from_secs),
    };
    let regs = state.registrations.clone();
    let (out, id) = blocking(state, move |s| regs.register(s, reg)).await?;
    ok(json!({"revision": out.revision, "id": id}))
}

async fn heartbeat(state: &ApiState, call: &Call) -> Answer {
    let req: HeartbeatRequest = body(call)?;
    let regs = state.registrations.clone();
    let id = req.id.clone();
    if blocking(state, move |s| regs.heartbeat(s, &id)).await? {
        Ok((StatusCode::NO_CONTENT, None))
    } else {
        Err(ApiError::NotFound(format!(
            "registration {:?} is unknown or expired",
            req.id
        )))
    }
}

async fn deregister(state: &ApiState, call: &Call) -> Answer {
    let req: DeregisterRequest = body(call)?;
    let namespace = namespace(req.namespace)?;
    let address = address(&req.address)?;
    let service = req.service;
    let out = blocking(state, move |s| {
        s.deregister_endpoint(&namespace, &service, &address, WHO_API)
    })
    .await?;
    ok(json!({"revision": out.revision}))
}

async fn history(state: &ApiState, call: &Call) -> Answer {
    let limit = match query(call, "limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::Invalid(format!("limit: {l:?} is not a number")))?,
        ),
        None => None,
    };
    let mut items = blocking(state, |s| s.history()).await?;
    if let Some(limit) = limit {
        let skip = items.len().saturating_sub(limit);
        items.drain(..skip);
    }
    ok(json!({"items": items}))
}

async fn rollback(state: &ApiState, call: &Call) -> Answer {
    refuse_in_kubernetes(state, "rollback")?;
    let req: RollbackRequest = body(call)?;
    let out = blocking(state, move |s| s.rollback(req.revision, WHO_API)).await?;
    ok(json!({"revision": out.revision}))
}

async fn backup(state: &ApiState) -> Answer {
    let b = blocking(state, |s| s.backup()).await?;
    ok(serde_json::to_value(b).map_err(|e| ApiError::Internal(e.to_string()))?)
}

async fn restore(state: &ApiState, call: &Call) -> Answer {
    refuse_in_kubernetes(state, "restore")?;
    let b: Backup = body(call)?;
    let out = blocking(state, move |s| s.restore(b, WHO_API)).await?;
    ok(json!({"revision": out.revision}))
}

async fn status(state: &ApiState) -> Answer {
    ok(json!({
        "revision": state.store.head(),
        "proxies": state.store.proxies().list(),
    }))
}

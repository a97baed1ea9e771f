//! Requests to operations: authentication, the URL layout of the Kubernetes API
//! (`/api/v1/namespaces/{ns}/{resource}/{name}/{subresource}` and its `/apis/{group}/{version}`
//! twin), verbs, query parameters, and errors as `Status` objects. Everything else happens
//! in the store.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;

use super::discovery;
use super::error::ApiError;
use super::patch::{self, PatchType};
use super::resources::{self, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::store::{parse_rv, Part, Since, Store};
use super::tokenreview::Tokens;
use super::watch::{self, WatchRequest};

/// A response body: a whole JSON document, or a watch stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// Request bodies above this are refused (a real server's limit is about 3 MiB per object).
const MAX_BODY: usize = 16 << 20;
/// A watch without `timeoutSeconds` ends after this, as a real server's default does.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// What the HTTP layer serves from.
#[derive(Debug)]
pub struct Server {
    /// The objects.
    pub store: Arc<Store>,
    /// ServiceAccount tokens for `TokenReview`.
    pub tokens: Arc<Tokens>,
    /// Bearer tokens that may use the API (the kubeconfig's).
    pub admin_token: String,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_every: Duration,
    /// `host:port` clients reach the server at, for `/api`.
    pub address: String,
}

/// Serves one request; every failure becomes a `Status` response.
pub async fn serve(
    server: Arc<Server>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(match route(&server, req).await {
        Ok(response) => response,
        Err(e) => json_response(e.code, &e.status()),
    })
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn ok(value: Value) -> Result<Response<Body>, ApiError> {
    Ok(json_response(200, &value))
}

/// Query parameters, percent-decoded (`+` is a space, as in forms).
fn query(uri: &http::Uri) -> Vec<(String, String)> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push(high * 16 + low);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn authenticate(server: &Server, req: &Request<Incoming>) -> Result<(), ApiError> {
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match token {
        Some(t) if t == server.admin_token || server.tokens.authenticates_api(t) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

async fn route(server: &Server, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    authenticate(server, &req)?;
    let path = req.uri().path().to_string();
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let is_get = req.method() == Method::GET;
    match segs.as_slice() {
        ["version"] if is_get => ok(discovery::version()),
        ["healthz" | "readyz" | "livez"] if is_get => {
            Ok(Response::new(Full::new(Bytes::from_static(b"ok")).boxed()))
        }
        ["api"] if is_get => ok(discovery::core_versions(&server.address)),
        ["apis"] if is_get => ok(discovery::group_list()),
        ["api", "v1"] if is_get => discovery::resource_list("", "v1")
            .map(ok)
            .unwrap_or_else(|| Err(ApiError::no_route(&path))),
        ["apis", group] if is_get => discovery::group(group)
            .map(ok)
            .unwrap_or_else(|| Err(ApiError::no_route(&path))),
        ["apis", group, version] if is_get => discovery::resource_list(group, version)
            .map(ok)
            .unwrap_or_else(|| Err(ApiError::no_route(&path))),
        ["api", "v1", rest @ ..] => {
            let target = Target::parse("", "v1", rest, &path)?;
            resource(server, target, req).await
        }
        ["apis", group, version, rest @ ..] => {
            let target = Target::parse(group, version, rest, &path)?;
            resource(server, target, req).await
        }
        _ => Err(ApiError::no_route(&path)),
    }
}

/// What a resource URL names.
struct Target {
    ty: &'static ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
    path: String,
}

impl Target {
    fn parse(group: &str, version: &str, rest: &[&str], path: &str) -> Result<Self, ApiError> {
        let not_found = || ApiError::no_route(path);
        // `namespaces/{ns}/{resource}...` is namespaced, except the Namespace object's own
        // subresources (`namespaces/{name}/status`).
        let (namespace, rest) = match rest {
            ["namespaces", ns, next, ..]
                if !(group.is_empty() && matches!(*next, "status" | "finalize")) =>
            {
                (Some(ns.to_string()), &rest[2..])
            }
            _ => (None, rest),
        };
        let (plural, name, sub) = match rest {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, Some(name.to_string()), None),
            [plural, name, sub] => (*plural, Some(name.to_string()), Some(*sub)),
            _ => return Err(not_found()),
        };
        let ty = resources::find(group, version, plural).ok_or_else(not_found)?;
        // A namespaced type may be listed across namespaces; nothing else goes without one.
        let scope_ok = match (ty.namespaced, &namespace) {
            (true, None) => name.is_none(),
            (false, Some(_)) => false,
            _ => true,
        };
        let status = match sub {
            None => false,
            Some("status") if ty.status_subresource => true,
            Some(_) => return Err(not_found()),
        };
        if !scope_ok {
            return Err(not_found());
        }
        Ok(Self {
            ty,
            namespace,
            name,
            status,
            path: path.to_string(),
        })
    }

    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }
}

async fn read_body(req: Request<Incoming>) -> Result<(Option<String>, Bytes), ApiError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?
        .to_bytes();
    Ok((content_type, body))
}

fn json_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type.unwrap_or("application/json");
    if !ct.starts_with("application/json") && !ct.starts_with("*/*") {
        return Err(ApiError::unsupported_media_type(ct));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

async fn resource(
    server: &Server,
    t: Target,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let params = Params(query(req.uri()));
    if params.get("dryRun").is_some() {
        return Err(ApiError::bad_request(
            "dryRun is not supported by the test API server",
        ));
    }
    let method = req.method().clone();
    let store = &server.store;
    if t.ty.create_only && method != Method::POST {
        return Err(ApiError::method_not_allowed(method.as_str(), &t.path));
    }
    let part = if t.status { Part::Status } else { Part::Main };
    match (method.clone(), &t.name) {
        (Method::GET, None) if params.flag("watch") => watch(server, &t, &params),
        (Method::GET, None) => list(store, &t, &params),
        (Method::GET, Some(name)) => ok(store.get(t.ty, t.ns(), name)?),
        (Method::POST, None) if t.ty.namespaced == t.namespace.is_some() => {
            let (ct, body) = read_body(req).await?;
            let object = json_body(ct.as_deref(), &body)?;
            if t.ty.plural == "tokenreviews" {
                return Ok(json_response(201, &server.tokens.review(&object)?));
            }
            Ok(json_response(
                201,
                &store.create(t.ty, t.namespace.as_deref(), object)?,
            ))
        }
        (Method::PUT, Some(name)) => {
            let (ct, body) = read_body(req).await?;
            let object = json_body(ct.as_deref(), &body)?;
            ok(store.update(t.ty, t.ns(), name, object, part)?)
        }
        (Method::PATCH, Some(name)) => {
            let (ct, body) = read_body(req).await?;
            let kind = PatchType::from_content_type(ct.as_deref().unwrap_or_default())?;
            let patch_doc = patch::parse(kind, &body)?;
            let seed = (kind == PatchType::Apply).then(|| {
                if params.get("fieldManager").is_none_or(str::is_empty) {
                    return Err(ApiError::bad_request(
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: \
                         is required for apply patch",
                    ));
                }
                let mut seed = json!({ "metadata": { "name": name } });
                if t.ty.namespaced {
                    seed["metadata"]["namespace"] = json!(t.ns());
                }
                Ok(seed)
            });
            let seed = seed.transpose()?;
            let created = seed.is_some() && store.get(t.ty, t.ns(), name).is_err();
            let object = store.modify(
                t.ty,
                t.ns(),
                name,
                part,
                |cur| patch::apply(kind, cur, &patch_doc),
                seed,
            )?;
            Ok(json_response(if created { 201 } else { 200 }, &object))
        }
        (Method::DELETE, Some(name)) => {
            let (_, body) = read_body(req).await?;
            let precondition = if body.is_empty() {
                None
            } else {
                let options: Value = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
                parse_rv(
                    options["preconditions"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default(),
                )?
            };
            ok(store.delete(t.ty, t.ns(), name, precondition)?)
        }
        _ => Err(ApiError::method_not_allowed(method.as_str(), &t.path)),
    }
}

fn selectors(params: &Params) -> Result<(LabelSelector, FieldSelector), ApiError> {
    Ok((
        LabelSelector::parse(params.get("labelSelector").unwrap_or_default())?,
        FieldSelector::parse(params.get("fieldSelector").unwrap_or_default())?,
    ))
}

fn list(store: &Store, t: &Target, params: &Params) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(params)?;
    let limit = match params.get("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        ),
        None => None,
    };
    let page = store.list(
        t.ty,
        t.namespace.as_deref(),
        &labels,
        &fields,
        limit,
        params.get("continue").filter(|c| !c.is_empty()),
    )?;
    let mut metadata = json!({ "resourceVersion": page.rv.to_string() });
    if let Some(token) = page.continue_token {
        metadata["continue"] = json!(token);
    }
    ok(json!({
        "kind": format!("{}List", t.ty.kind),
        "apiVersion": t.ty.api_version(),
        "metadata": metadata,
        "items": page.items,
    }))
}

fn watch(server: &Server, t: &Target, params: &Params) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(params)?;
    let initial = params.flag("sendInitialEvents");
    let since = match parse_rv(params.get("resourceVersion").unwrap_or_default())? {
        _ if initial => Since::InitialState,
        None | Some(0) => Since::InitialState,
        Some(v) => Since::Version(v),
    };
    let timeout = match params.get("timeoutSeconds") {
        Some(s) => Duration::from_secs(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let request = WatchRequest {
        ty: t.ty,
        namespace: t.namespace.clone(),
        labels,
        fields,
        since,
        bookmarks: params.flag("allowWatchBookmarks"),
        initial_events_end: initial,
        timeout,
    };
    let rx = watch::start(server.store.clone(), request, server.bookmark_every);
    let mut response = Response::new(StreamBody::new(ReceiverStream::new(rx)).boxed());
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

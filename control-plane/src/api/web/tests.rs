//! The page's routing over a real API listener: what needs no token, what still does, and
//! the headers every answer of the page carries.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::CONTENT_SECURITY_POLICY;
use crate::api::ApiState;
use crate::auth::AdminToken;
use crate::discovery::registrations::Registrations;
use crate::identity::ca::{Ca, CaSource};
use crate::identity::tokens::JoinTokens;
use crate::store::Store;
use crate::telemetry::{BackendCounts, OpenConnections, Reading, SeriesKey, Telemetry};

const TOKEN: &str = "s3cret-admin-token";

struct Server {
    addr: SocketAddr,
    dir: PathBuf,
    state: Arc<ApiState>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn server(tag: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("tandem-web-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Arc::new(
        Ca::load(
            &CaSource::Generated {
                data_dir: dir.clone(),
            },
            "cluster.local",
        )
        .unwrap(),
    );
    let tokens = JoinTokens::load(&dir, "cluster.local", &ca.root_fingerprint()).unwrap();
    let state = Arc::new(ApiState {
        store: Arc::new(Store::open(&dir).unwrap()),
        token: AdminToken::from_text(TOKEN),
        registrations: Registrations::new(),
        telemetry: Arc::new(Telemetry::default()),
        tokens: Arc::new(tokens),
        ca,
        judgements: Arc::default(),
        chaos: Arc::default(),
        shared_ca: None,
        kubernetes: false,
        edits: crate::edits::Edits::Store,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(crate::api::serve(listener, state.clone()));
    Server { addr, dir, state }
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn call(s: &Server, method: &str, path: &str, token: bool, body: Option<Value>) -> Answer {
    let stream = TcpStream::connect(s.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, s.addr.to_string());
    if token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    }
    let body = body.map_or_else(Bytes::new, |v| Bytes::from(v.to_string()));
    let resp = sender
        .send_request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn assert_page_headers(a: &Answer, what: &str) {
    let h = |name: header::HeaderName| a.headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(
        h(header::CONTENT_SECURITY_POLICY),
        Some(CONTENT_SECURITY_POLICY),
        "{what}"
    );
    assert_eq!(h(header::X_CONTENT_TYPE_OPTIONS), Some("nosniff"), "{what}");
    assert_eq!(h(header::CACHE_CONTROL), Some("no-store"), "{what}");
}

#[tokio::test]
async fn the_page_and_its_overview_need_no_token_and_the_api_still_does() {
    let s = server("routing").await;
    for (path, content_type, needle) in [
        (
            "/",
            "text/html; charset=utf-8",
            "<script src=\"/ui/app.js\"",
        ),
        ("/ui", "text/html; charset=utf-8", "<title>Tandem</title>"),
        ("/ui/", "text/html; charset=utf-8", "<title>Tandem</title>"),
        (
            "/ui/app.js",
            "text/javascript; charset=utf-8",
            "textContent",
        ),
        ("/ui/style.css", "text/css; charset=utf-8", "font-family"),
        ("/ui/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let a = call(&s, "GET", path, false, None).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
        assert_eq!(a.headers[header::CONTENT_TYPE], content_type, "{path}");
        assert!(a.body.contains(needle), "{path}: {}", a.body);
        assert_page_headers(&a, path);
    }
    let a = call(&s, "GET", "/ui/overview", false, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.headers[header::CONTENT_TYPE], "application/json");
    assert_page_headers(&a, "overview");
    let o = a.json();
    for field in ["services", "edges", "canaries", "history"] {
        assert!(o[field].is_array(), "{field}: {o}");
    }
    // A bad window is the API's 400, with the page's headers.
    let a = call(&s, "GET", "/ui/overview?window=0", false, None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(a.body.contains("window"), "{}", a.body);
    assert_page_headers(&a, "overview error");
    let a = call(&s, "GET", "/ui/nothing", false, None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    assert_page_headers(&a, "404");

    // Everything else keeps its token.
    for path in [
        "/v1/status",
        "/v1/history",
        "/v1/stat",
        "/v1/canaries/default/web",
        "/favicon.ico",
    ] {
        let a = call(&s, "GET", path, false, None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}: {}", a.body);
    }
    let a = call(&s, "GET", "/v1/status", true, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[tokio::test]
async fn the_page_changes_nothing_other_methods_are_refused() {
    let s = server("methods").await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "HEAD"] {
        for path in ["/", "/ui/overview", "/ui/app.js"] {
            // Even with the token: the page's paths are read-only for everyone.
            for token in [false, true] {
                let a = call(&s, method, path, token, Some(json!({"action": "abort"}))).await;
                assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert_eq!(a.headers[header::ALLOW], "GET", "{method} {path}");
                assert_page_headers(&a, path);
            }
        }
    }
    assert_eq!(s.state.store.head(), 0, "no revision was made");
}

#[tokio::test]
async fn the_overview_shows_a_canary_the_edges_and_history_and_no_secret() {
    let s = server("overview").await;
    let documents: Vec<Value> = ["web", "web-v1", "web-v2", "frontend"]
        .iter()
        .map(|n| {
            json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Service",
            "metadata": {"name": n}, "spec": {"ports": [{"port": 80}]}})
        })
        .collect();
    let a = call(
        &s,
        "POST",
        "/v1/apply",
        true,
        Some(json!({"documents": documents})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let start = json!({"action": "start", "stable": "web-v1", "canary": "web-v2",
        "auto": {"maxErrorRate": "1%", "maxP99": "500ms", "stepTime": "10m"}});
    let a = call(&s, "POST", "/v1/canaries/default/web", true, Some(start)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = call(
        &s,
        "POST",
        "/v1/canaries/default/web",
        true,
        Some(json!({"action": "pause"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    // Two readings of a `frontend` proxy calling `web`, split over both versions.
    let t0 = Instant::now();
    for (at, n) in [(0, 0.0), (10, 100.0)] {
        let series: BTreeMap<SeriesKey, BackendCounts> = [("web-v1", 0.95), ("web-v2", 0.05)]
            .into_iter()
            .map(|(backend, share)| {
                let key = SeriesKey {
                    caller: "frontend".into(),
                    service: "web".into(),
                    route: "default/web-canary/rule-0".into(),
                    backend: backend.into(),
                };
                let requests = n * share;
                let counts = BackendCounts {
                    requests,
                    errors: 0.0,
                    buckets: vec![(0.005, requests), (f64::INFINITY, requests)],
                };
                (key, counts)
            })
            .collect();
        let reading = Reading {
            at: t0 + std::time::Duration::from_secs(at),
            series,
            open: OpenConnections::default(),
        };
        s.state.telemetry.record("frontend-1", reading);
    }

    let a = call(&s, "GET", "/ui/overview", false, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    for secret in [TOKEN, "PRIVATE KEY", "BEGIN CERTIFICATE"] {
        assert!(
            !a.body.contains(secret),
            "the overview leaks {secret}: {}",
            a.body
        );
    }
    let o = a.json();
    let web = o["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "web"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(web["seen_as"], "called", "{o}");
    assert_eq!(web["success_rate"], 1.0, "{o}");
    assert!(
        (web["requests_per_second"].as_f64().unwrap() - 10.0).abs() < 1e-9,
        "{web}"
    );
    let v2 = o["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web-v2")
        .unwrap();
    assert_eq!(v2["seen_as"], "backend", "{v2}");
    assert_eq!(o["edges"][0]["from"], "frontend", "{o}");
    assert_eq!(o["edges"][0]["to"], "web", "{o}");

    let canary = &o["canaries"][0];
    assert_eq!(canary["namespace"], "default", "{canary}");
    assert_eq!(canary["name"], "web", "{canary}");
    assert_eq!(
        canary["weights"],
        json!({"web-v1": 95, "web-v2": 5}),
        "{canary}"
    );
    assert_eq!(canary["state"]["auto"]["maxErrorRate"], "1%", "{canary}");
    assert_eq!(canary["state"]["auto"]["paused"], true, "{canary}");
    assert_eq!(canary["backends"][1]["requests"], 5.0, "{canary}");
    let decisions: Vec<&str> = canary["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["summary"].as_str().unwrap())
        .collect();
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert!(
        decisions[0].starts_with("canary default/web start: "),
        "{decisions:?}"
    );
    assert!(
        decisions[1].starts_with("canary default/web pause: "),
        "{decisions:?}"
    );
    assert_eq!(o["history"][0]["revision"], 3, "newest first: {o}");
    assert_eq!(o["revision"], 3);
}

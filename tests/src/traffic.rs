//! Traffic-management tests' tools: concurrent bursts through a proxy that tally who
//! answered and how, and the Tandem documents (`DestinationPolicy`, `FaultInjection`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;

use crate::{client, upstream, within, STEP_TIMEOUT};

/// What a burst of requests got back.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Responses by the upstream that sent them ([`upstream::SERVER`]; `proxy` when the
    /// proxy answered itself).
    pub by_server: BTreeMap<String, u64>,
    /// Responses by status.
    pub by_status: BTreeMap<u16, u64>,
    /// `tandem-proxy-error` values seen.
    pub proxy_errors: BTreeMap<String, u64>,
    /// Requests that got no response at all.
    pub transport_errors: u64,
}

impl Tally {
    /// Responses with this status.
    pub fn status(&self, code: u16) -> u64 {
        self.by_status.get(&code).copied().unwrap_or(0)
    }

    /// Responses from this upstream.
    pub fn server(&self, name: &str) -> u64 {
        self.by_server.get(name).copied().unwrap_or(0)
    }

    /// All responses.
    pub fn total(&self) -> u64 {
        self.by_status.values().sum()
    }
}

/// One request shape for [`burst`].
#[derive(Debug, Clone)]
pub struct Shot {
    /// Method.
    pub method: String,
    /// Absolute URI, e.g. `http://web/`.
    pub uri: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
}

impl Shot {
    /// `GET uri`.
    pub fn get(uri: &str) -> Shot {
        Shot {
            method: "GET".into(),
            uri: uri.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Shot {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets method and body.
    pub fn with_body(mut self, method: &str, body: &[u8]) -> Shot {
        self.method = method.into();
        self.body = body.to_vec();
        self
    }
}

/// Sends `n` requests through `proxy` (its outbound listener, HTTP/1.1 keep-alive) with
/// `concurrency` in flight, each bounded by [`STEP_TIMEOUT`], and tallies the answers.
pub async fn burst(proxy: SocketAddr, shot: &Shot, n: usize, concurrency: usize) -> Tally {
    let client = client::http1(proxy);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = (0..concurrency.max(1)).map(|_| {
        let (client, tally, next, shot) =
            (client.clone(), tally.clone(), next.clone(), shot.clone());
        async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let mut req =
                    client::request(&shot.method, &shot.uri, client::full(shot.body.clone()));
                for (k, v) in &shot.headers {
                    req.headers_mut().insert(
                        http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                        http::HeaderValue::from_str(v).expect("header value"),
                    );
                }
                let resp = within(
                    STEP_TIMEOUT,
                    &format!("{} {}", shot.method, shot.uri),
                    client::send(&client, req),
                )
                .await;
                let mut t = tally.lock().expect("tally");
                match resp {
                    Ok(resp) => {
                        *t.by_status.entry(resp.status().as_u16()).or_default() += 1;
                        let server = client::header(&resp, upstream::SERVER)
                            .unwrap_or("proxy")
                            .to_owned();
                        *t.by_server.entry(server).or_default() += 1;
                        if let Some(e) = client::header(&resp, "tandem-proxy-error") {
                            *t.proxy_errors.entry(e.to_owned()).or_default() += 1;
                        }
                    }
                    Err(_) => t.transport_errors += 1,
                }
            }
        }
    });
    join_all(workers).await;
    let t = tally.lock().expect("tally").clone();
    t
}

/// A `DestinationPolicy` for `service` with `spec_body` (YAML lines under `spec:`, each
/// indented by two spaces) after its `targetRef`.
pub fn destination_policy(name: &str, service: &str, spec_body: &str) -> String {
    format!(
        "apiVersion: tandem.dev/v1alpha1\nkind: DestinationPolicy\n\
         metadata: {{ name: {name}, namespace: default }}\nspec:\n  targetRef: {{ name: {service} }}\n{spec_body}"
    )
}

/// A `FaultInjection` named `name` with `spec_body` (YAML lines under `spec:`).
pub fn fault_injection(name: &str, spec_body: &str) -> String {
    format!(
        "apiVersion: tandem.dev/v1alpha1\nkind: FaultInjection\n\
         metadata: {{ name: {name}, namespace: default }}\nspec:\n{spec_body}"
    )
}

/// An `HTTPRoute` for traffic to `parent` with `rules` (YAML lines under `rules:`, each
/// indented by four spaces) and optional annotations.
pub fn route(name: &str, parent: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{ name: {name}, namespace: default }}\nspec:\n\
         \x20 parentRefs:\n    - {{ kind: Service, name: {parent}, port: 80 }}\n\
         \x20 rules:\n{rules}"
    )
}

/// Share of `part` in `whole`, in percent.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    part as f64 * 100.0 / whole as f64
}

/// Waits (bounded) until the proxy's `/config_dump` satisfies `ok` (e.g. a route config
/// with the expected number of routes, a cluster with a policy).
pub async fn wait_dump(
    proxy: &crate::Proxy,
    limit: std::time::Duration,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) {
    crate::eventually(limit, what, || async {
        let dump = proxy.config_dump().await;
        if ok(&dump) {
            Ok(())
        } else {
            Err(dump["routes"].to_string())
        }
    })
    .await;
}

/// Applies services `web` and `web-b` (at `endpoints`) plus `extra` documents, starts a
/// one-worker client proxy in xDS mode and waits (up to 15 s) until its `/config_dump`
/// satisfies `ready`.
pub async fn web_b_mesh(
    endpoints: &[SocketAddr],
    extra: &[String],
    ready: impl Fn(&serde_json::Value) -> bool,
) -> (crate::control_plane::ControlPlane, crate::Proxy) {
    use crate::mesh::{docs, endpoint, service};
    let cp = crate::control_plane::ControlPlane::start().await;
    let mut all = vec![service("web"), service("web-b")];
    all.extend(endpoints.iter().map(|a| endpoint("web-b", *a)));
    all.extend_from_slice(extra);
    cp.apply_ok(&docs(&all)).await;
    let proxy = crate::Proxy::start_xds(cp.xds(), "client", &["--workers", "1"]).await;
    let limit = std::time::Duration::from_secs(15);
    wait_dump(&proxy, limit, "the mesh config to arrive", ready).await;
    (cp, proxy)
}

/// The routes of route config `fqdn(service)` in a `/config_dump`.
pub fn routes_of<'a>(dump: &'a serde_json::Value, service: &str) -> &'a [serde_json::Value] {
    dump["routes"]["route_configs"][crate::mesh::fqdn(service)]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

//! `tandemctl demo`: a whole mesh on loopback, for a first look.
//!
//! Starts a control plane with a fresh store, two versions of a sample `web` service (each a
//! tiny app behind its own sidecar), and a client sidecar; applies a 90/10 HTTPRoute; sends
//! traffic through the client sidecar; prints the observed split and where to look. Ctrl-C
//! stops everything it started (children are killed when their handles drop).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use super::CtlError;
use crate::client::ApiClient;

/// Requests sent to measure the split.
const REQUESTS: usize = 1000;

/// The demo's mesh: the service, its two versions as backends, and the 90/10 split.
const MESH: &str = r#"
apiVersion: tandem.dev/v1alpha1
kind: Service
metadata: { name: web }
spec: { ports: [ { port: 80, protocol: http } ] }
---
apiVersion: tandem.dev/v1alpha1
kind: Service
metadata: { name: web-v1 }
spec: { ports: [ { port: 80, protocol: http } ] }
---
apiVersion: tandem.dev/v1alpha1
kind: Service
metadata: { name: web-v2 }
spec: { ports: [ { port: 80, protocol: http } ] }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web-split }
spec:
  parentRefs: [ { kind: Service, name: web, port: 80 } ]
  rules:
    - backendRefs:
        - { name: web-v1, port: 80, weight: 90 }
        - { name: web-v2, port: 80, weight: 10 }
"#;

fn err(e: impl std::fmt::Display) -> CtlError {
    CtlError(e.to_string())
}

/// Runs the demo until Ctrl-C.
pub async fn run() -> Result<(), CtlError> {
    let bin_dir = std::env::current_exe()
        .map_err(err)?
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| err("cannot locate tandemctl's directory"))?;
    let control_plane_bin = sibling(&bin_dir, "tandem-control-plane")?;
    let proxy_bin = sibling(&bin_dir, "tandem-proxy")?;
    let work = std::env::temp_dir().join(format!("tandem-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(err)?;
    let result = run_in(&work, &control_plane_bin, &proxy_bin).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn sibling(dir: &Path, name: &str) -> Result<PathBuf, CtlError> {
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(CtlError(format!(
            "{} not found next to tandemctl: build all binaries first (cargo build --bins)",
            path.display()
        )))
    }
}

async fn run_in(work: &Path, cp_bin: &Path, proxy_bin: &Path) -> Result<(), CtlError> {
    let data = work.join("data");
    let mut children: Vec<Child> = Vec::new();
    let (cp, line) = spawn_ready(
        Command::new(cp_bin).arg("--data-dir").arg(&data).args([
            "--xds-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
            "--identity-addr",
            "127.0.0.1:0",
        ]),
        "tandem-control-plane ready",
        &work.join("control-plane.log"),
    )
    .await?;
    children.push(cp);
    let cp_fields = fields(&line);
    let api = cp_fields
        .get("api")
        .cloned()
        .ok_or_else(|| err("no api= in ready line"))?;
    let xds = cp_fields
        .get("xds")
        .cloned()
        .ok_or_else(|| err("no xds= in ready line"))?;
    let identity = cp_fields
        .get("identity")
        .cloned()
        .ok_or_else(|| err("no identity= in ready line"))?;
    let token_file = data.join(tandem_resources::TOKEN_FILE);
    let token = std::fs::read_to_string(&token_file).map_err(err)?;
    let client = ApiClient::new(&format!("http://{api}"), token.trim())?;
    let docs = tandem_resources::parse_text(MESH).map_err(err)?;
    client
        .call(
            Method::POST,
            "/v1/apply",
            Some(&json!({ "documents": docs })),
        )
        .await?;

    // Every sidecar gets a workload identity from a join token: traffic between them is
    // mutual TLS 1.3, and their xDS streams are authenticated by their certificates.
    let sidecar = |service: &'static str| {
        let (client, xds, identity) = (&client, xds.clone(), identity.clone());
        async move {
            let answer = client
                .call(
                    Method::POST,
                    "/v1/tokens",
                    Some(&json!({ "service": service })),
                )
                .await?;
            let token = answer["token"]
                .as_str()
                .ok_or_else(|| err("no token in the answer"))?
                .to_string();
            let mut cmd = proxy(proxy_bin, &xds, service);
            cmd.args(["--token", &token, "--identity-addr", &identity]);
            Ok::<_, CtlError>(cmd)
        }
    };
    let mut sidecars = BTreeMap::new();
    for (service, version) in [("web-v1", "v1"), ("web-v2", "v2")] {
        let app = sample_app(service).await?;
        let (child, line) = spawn_ready(
            sidecar(service)
                .await?
                .args(["--app-port", &app.port().to_string()]),
            "tandem-proxy ready",
            &work.join(format!("{service}.log")),
        )
        .await?;
        children.push(child);
        let f = fields(&line);
        let inbound = f
            .get("inbound")
            .cloned()
            .ok_or_else(|| err("no inbound="))?;
        client
            .call(
                Method::POST,
                "/v1/endpoints/register",
                Some(&json!({
                    "service": service, "namespace": "default", "address": inbound,
                    "labels": { "version": version },
                })),
            )
            .await?;
        sidecars.insert(service, f);
    }
    let (child, line) = spawn_ready(
        &mut sidecar("demo-client").await?,
        "tandem-proxy ready",
        &work.join("demo-client.log"),
    )
    .await?;
    children.push(child);
    let client_fields = fields(&line);
    let outbound = client_fields
        .get("outbound")
        .cloned()
        .ok_or_else(|| err("no outbound="))?;
    let client_admin = client_fields.get("admin").cloned().unwrap_or_default();

    println!("Tandem demo: control plane, web-v1 and web-v2 behind sidecars, a client sidecar.");
    println!(
        "Sidecars hold SPIFFE identities from the control plane's CA and talk mutual TLS 1.3."
    );
    println!("HTTPRoute web-split sends 90% of `web` to web-v1 and 10% to web-v2.\n");
    let counts = send_traffic(&outbound).await?;
    println!("{REQUESTS} requests through the client sidecar ({outbound}, Host: web):");
    for (who, n) in &counts {
        println!(
            "  {who:<10} {n:>5}  ({:.1}%)",
            *n as f64 * 100.0 / REQUESTS as f64
        );
    }
    let ctl = format!(
        "tandemctl --api http://{api} --token-file {}",
        token_file.display()
    );
    println!("\nWhere to look:");
    println!("  curl -H 'Host: web' http://{outbound}/         # a request through the mesh");
    println!("  curl http://{client_admin}/metrics | grep tandem_requests_total   # tls=\"true\"");
    println!(
        "  curl http://{client_admin}/config_dump | jq .identity          # the client's SPIFFE ID"
    );
    println!("  {ctl} get routes");
    println!("  {ctl} history");
    println!("  edit the split: {ctl} apply -f your-route.yaml");
    println!("  a canary release: {ctl} canary start web --stable web-v1 --canary web-v2");
    println!("    then: {ctl} canary status web | canary step web | canary abort web");
    println!("Logs: {}", work.display());
    println!("Ctrl-C stops everything.");
    let _ = tokio::signal::ctrl_c().await;
    println!("stopping");
    drop(children);
    Ok(())
}

fn proxy(bin: &Path, xds: &str, service: &str) -> Command {
    let mut c = Command::new(bin);
    c.args(["--control-plane", xds, "--service", service])
        .args([
            "--outbound-addr",
            "127.0.0.1:0",
            "--inbound-addr",
            "127.0.0.1:0",
        ])
        .args(["--admin-addr", "127.0.0.1:0"]);
    c
}

/// Starts a child, waits (bounded) for the line starting with `ready`, logs stderr to `log`.
async fn spawn_ready(
    cmd: &mut Command,
    ready: &str,
    log: &Path,
) -> Result<(Child, String), CtlError> {
    let log_file = std::fs::File::create(log).map_err(err)?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .map_err(err)?;
    let stdout = child.stdout.take().ok_or_else(|| err("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let wait = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with(ready) {
                return Some(line);
            }
        }
        None
    };
    match tokio::time::timeout(Duration::from_secs(20), wait).await {
        Ok(Some(line)) => Ok((child, line)),
        _ => Err(CtlError(format!(
            "{ready:?} did not appear within 20 s; see {}",
            log.display()
        ))),
    }
}

fn fields(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A sample app answering every request with its name.
async fn sample_app(name: &'static str) -> Result<SocketAddr, CtlError> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |_req| async move {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(format!(
                        "{name}\n"
                    )))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Sends [`REQUESTS`] requests and counts which version answered. Waits (bounded) until
/// both versions are routable, since endpoints reach the client sidecar a moment after
/// they are registered.
async fn send_traffic(outbound: &str) -> Result<BTreeMap<String, usize>, CtlError> {
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let get = || async {
        let req = Request::get(format!("http://{outbound}/"))
            .header(http::header::HOST, "web")
            .body(Full::new(Bytes::new()))
            .map_err(err)?;
        let resp = http.request(req).await.map_err(err)?;
        let ok = resp.status().is_success();
        let body = resp.into_body().collect().await.map_err(err)?.to_bytes();
        let text = String::from_utf8_lossy(&body).trim().to_string();
        Ok::<_, CtlError>(if ok { text } else { format!("error {text}") })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 && tokio::time::Instant::now() < deadline {
        let who = get().await?;
        if who.starts_with("web-") {
            seen.insert(who);
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut counts = BTreeMap::new();
    for _ in 0..REQUESTS {
        *counts.entry(get().await?).or_insert(0) += 1;
    }
    Ok(counts)
}

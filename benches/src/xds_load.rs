//! `bench-xds`: how long a change made with `apply` takes to reach every connected proxy.
//!
//! One process simulates N proxies. Each has its own TCP connection (its own tonic
//! `Channel`) and its own ADS stream, driven by the same sans-io [`AdsClient`] the proxy
//! uses: responses are validated, ACKed or NACKed, RDS/EDS subscriptions follow what the
//! listeners and clusters reference, and a new complete view is published only when the
//! state is complete. Only the route table is not compiled (that is the proxy's own cost,
//! not propagation).
//!
//! `run` waits until every client holds a complete view, then, for `--warmup` + `--rounds`
//! rounds, changes the weights of the HTTPRoute `default/bench-split` (parent `bench-0`,
//! backends `bench-1` / `bench-2`) with `POST /v1/apply` and records, per client, the
//! moment it had sent the ACK of the response carrying the new weights (the moment
//! [`AdsClient::on_response`] returned a view with them). A round's propagation time is
//! the time from sending the apply request to the *last* client's ACK; `commit→last`
//! counts from the apply response instead. After the last round, the control plane's
//! `GET /v1/status` must show every client's ACK of the last revision.
//!
//! ```text
//! bench-xds seed --api A --token-file F [--services 50] [--endpoints 2]
//! bench-xds run  --api A --xds A --token-file F --clients N [--rounds 30] [--warmup 2]
//!                [--cp-pid PID] [--clk-tck 100] [--timeout 30] [--settle 0.3]
//!                [--connect-parallel 64] [--mode full|ack]
//! ```
//!
//! `--mode full` (default): every client does on each push what the proxy's xDS client
//! does (decode and validate the whole state, build the complete view, ACK). `--mode ack`:
//! the same until the first complete view, then clients ACK each response at once and
//! decode only the RouteConfigurations, so that the figure is the control plane's fan-out,
//! not N proxies' work crammed onto the benchmark machine's cores.
//!
//! `seed` applies services `bench-0..bench-{S-1}`, each with E endpoints on 127.0.0.1, and
//! the route under test. `run` prints one line per round on stderr and a summary on stdout:
//! `RESULT mode= clients= rounds= sync_ms= p50_ms= p99_ms= max_ms= commit_p50_ms= commit_p99_ms=
//! apply_p50_ms= client_p50_ms= client_p99_ms= rss_idle_kib= rss_clients_kib= rss_hwm_kib=
//! cp_cpu_ms_round= bench_cpu_ms_round= version_mismatch= cp_confirmed=`. With `--cp-pid`,
//! RSS (`VmRSS`, `VmHWM`) and CPU time (`utime + stime`, in `--clk-tck` ticks) come from
//! `/proc/PID`; CPU per round is measured from just before the apply to `--settle` seconds
//! after the last ACK (so the control plane's processing of the ACKs is included).

use std::collections::BTreeMap;
use std::error::Error;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use serde_json::{json, Value};
use tandem_xds::ads::AdsClient;
use tandem_xds::convert::{ALL_TYPES, ROUTE_TYPE};
use tandem_xds::domain::ProxyView;
use tandem_xds::envoy::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use tandem_xds::envoy::discovery::{DiscoveryRequest, DiscoveryResponse};
use tandem_xds::envoy_types::pb::envoy::config::route::v3::{
    route, route_action, RouteConfiguration,
};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

type BoxError = Box<dyn Error + Send + Sync>;

const NS: &str = "default";
const ROUTE: &str = "bench-split";
const PORT: u16 = 8080;
/// The two backend weights always add up to this.
const TOTAL_WEIGHT: u32 = 1000;

struct Common {
    api: String,
    token: String,
}

struct SeedArgs {
    services: usize,
    endpoints: usize,
}

struct RunArgs {
    xds: String,
    clients: usize,
    rounds: usize,
    warmup: usize,
    cp_pid: Option<u32>,
    clk_tck: f64,
    timeout: Duration,
    settle: Duration,
    connect_parallel: usize,
    mode: Mode,
}

/// How much of a proxy's work each simulated client does on a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Everything the proxy's xDS client does: [`AdsClient::on_response`] decodes and
    /// validates the whole new state, re-links it and builds the complete view, then ACKs.
    Full,
    /// [`AdsClient`] until the first complete view with the route, then only what the
    /// protocol needs: ACK every response at once (same version, nonce and names), decoding
    /// just the RouteConfigurations to find the new weight. Isolates the control plane's
    /// fan-out from the simulated proxies' own CPU cost, which here shares two cores.
    Ack,
}

enum Command {
    Seed(SeedArgs),
    Run(RunArgs),
}

/// What a simulated proxy reports to the coordinator.
#[derive(Debug)]
enum Event {
    /// A new complete view was accepted (and its ACK queued on the stream) at `at`.
    View {
        idx: usize,
        weight: Option<u32>,
        rds_version: Option<u64>,
        at: Instant,
    },
    /// A response was rejected.
    Nack { idx: usize, reason: String },
    /// The stream ended or never opened.
    Failed { idx: usize, error: String },
}

fn usage() -> ! {
    eprintln!(
        "usage: bench-xds seed --api A --token-file F [--services 50] [--endpoints 2]\n       \
         bench-xds run --api A --xds A --token-file F --clients N [--rounds 30] [--warmup 2] \
         [--cp-pid PID] [--clk-tck 100] [--timeout S] [--settle S] [--connect-parallel N] [--mode full|ack]"
    );
    std::process::exit(2);
}

fn parse_args() -> Result<(Common, Command), String> {
    let mut argv = std::env::args().skip(1);
    let mode = argv.next().unwrap_or_else(|| usage());
    let mut api = None;
    let mut token_file = None;
    let mut seed = SeedArgs {
        services: 50,
        endpoints: 2,
    };
    let mut run = RunArgs {
        xds: String::new(),
        clients: 1,
        rounds: 30,
        warmup: 2,
        cp_pid: None,
        clk_tck: 100.0,
        timeout: Duration::from_secs(30),
        settle: Duration::from_millis(300),
        connect_parallel: 64,
        mode: Mode::Full,
    };
    while let Some(flag) = argv.next() {
        if flag == "-h" || flag == "--help" {
            usage();
        }
        let value = argv
            .next()
            .ok_or_else(|| format!("{flag}: missing value"))?;
        let int = |v: &str| -> Result<usize, String> {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: not a non-negative integer: {v}"))
        };
        let secs = |v: &str| -> Result<Duration, String> {
            v.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{flag}: not a non-negative number: {v}"))
        };
        match flag.as_str() {
            "--api" => api = Some(value),
            "--token-file" => token_file = Some(value),
            "--services" => seed.services = int(&value)?,
            "--endpoints" => seed.endpoints = int(&value)?,
            "--xds" => run.xds = value,
            "--clients" => run.clients = int(&value)?,
            "--rounds" => run.rounds = int(&value)?,
            "--warmup" => run.warmup = int(&value)?,
            "--cp-pid" => {
                run.cp_pid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--cp-pid: not a pid: {value}"))?,
                )
            }
            "--clk-tck" => run.clk_tck = int(&value)?.max(1) as f64,
            "--timeout" => run.timeout = secs(&value)?,
            "--settle" => run.settle = secs(&value)?,
            "--connect-parallel" => run.connect_parallel = int(&value)?.max(1),
            "--mode" => {
                run.mode = match value.as_str() {
                    "full" => Mode::Full,
                    "ack" => Mode::Ack,
                    _ => return Err(format!("--mode: full or ack, got {value}")),
                }
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let api = api.ok_or("--api is required")?;
    let token_file = token_file.ok_or("--token-file is required")?;
    let token = std::fs::read_to_string(&token_file)
        .map_err(|e| format!("{token_file}: {e}"))?
        .trim()
        .to_string();
    let common = Common { api, token };
    let command = match mode.as_str() {
        "seed" => {
            if seed.services < 3 {
                return Err("--services: at least 3 (the route uses bench-0..bench-2)".into());
            }
            Command::Seed(seed)
        }
        "run" => {
            if run.xds.is_empty() {
                return Err("--xds is required".into());
            }
            if run.clients == 0 || run.rounds == 0 {
                return Err("--clients and --rounds: at least 1".into());
            }
            if run.warmup + run.rounds >= TOTAL_WEIGHT as usize - 1 {
                return Err("too many rounds: each round needs a weight not used before".into());
            }
            Command::Run(run)
        }
        "-h" | "--help" => usage(),
        other => return Err(format!("unknown command {other} (seed | run)")),
    };
    Ok((common, command))
}

fn main() {
    let (common, command) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-xds: {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench-xds: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Seed(args) => seed(&common, &args).await,
            Command::Run(args) => run(&common, &args).await,
        }
    });
    if let Err(e) = result {
        eprintln!("bench-xds: {e}");
        std::process::exit(1);
    }
    // Client tasks are still streaming; do not wait for them.
    runtime.shutdown_background();
}

// ------------------------------------------------------------------ resources

fn svc(i: usize) -> String {
    format!("bench-{i}")
}

fn fqdn(name: &str) -> String {
    format!("{name}.{NS}.svc.cluster.local")
}

/// The route under test, sending `a` (of [`TOTAL_WEIGHT`]) to `bench-1`, the rest to `bench-2`.
fn route_doc(a: u32) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "namespace": NS},
        "spec": {
            "parentRefs": [{"kind": "Service", "name": svc(0), "port": PORT}],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {"name": svc(1), "port": PORT, "weight": a},
                    {"name": svc(2), "port": PORT, "weight": TOTAL_WEIGHT - a},
                ],
            }],
        },
    })
}

async fn seed(common: &Common, args: &SeedArgs) -> Result<(), BoxError> {
    let mut docs = Vec::new();
    for i in 0..args.services {
        docs.push(json!({
            "apiVersion": "tandem.dev/v1alpha1",
            "kind": "Service",
            "metadata": {"name": svc(i), "namespace": NS},
            "spec": {"ports": [{"port": PORT, "name": "http", "protocol": "http"}]},
        }));
        for j in 0..args.endpoints {
            let port = 20_000 + i * args.endpoints + j;
            docs.push(json!({
                "apiVersion": "tandem.dev/v1alpha1",
                "kind": "Endpoint",
                "metadata": {"namespace": NS},
                "spec": {
                    "service": svc(i),
                    "address": format!("127.0.0.1:{port}"),
                    "labels": {"version": format!("v{}", j + 1)},
                },
            }));
        }
    }
    docs.push(route_doc(TOTAL_WEIGHT / 2));
    let count = docs.len();
    let out = call(
        common,
        "POST",
        "/v1/apply",
        Some(json!({ "documents": docs })),
    )
    .await?
    .body;
    println!(
        "seeded {count} documents ({} services, {} endpoints each, route {NS}/{ROUTE}): revision {}",
        args.services, args.endpoints, out["revision"]
    );
    Ok(())
}

// ------------------------------------------------------------------ REST client

/// An answer of the REST API, with when the request was started and the answer read.
struct Answer {
    body: Value,
    sent: Instant,
    received: Instant,
}

/// One request on a fresh HTTP/1.1 connection (`Connection: close`); the JSON answer, or an
/// error on non-2xx. It runs on a blocking-pool thread with plain std sockets, timestamps
/// taken there: the runtime's workers are busy with the simulated proxies exactly when the
/// answer of an apply arrives, and queueing behind them would inflate the apply time.
async fn call(
    common: &Common,
    method: &'static str,
    path: &str,
    body: Option<Value>,
) -> Result<Answer, BoxError> {
    let api = common.api.clone();
    let token = common.token.clone();
    let path = path.to_string();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    tokio::task::spawn_blocking(move || call_blocking(&api, &token, method, &path, &payload))
        .await?
}

fn call_blocking(
    api: &str,
    token: &str,
    method: &str,
    path: &str,
    payload: &str,
) -> Result<Answer, BoxError> {
    let sent = Instant::now();
    let mut stream = std::net::TcpStream::connect(api)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n\
         {payload}",
        payload.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let received = Instant::now();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: malformed answer"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{method} {path}: malformed status line"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(format!("{method} {path}: chunked answers are not supported").into());
    }
    if !(200..300).contains(&status) {
        return Err(format!("{method} {path}: {status}: {}", body.trim()).into());
    }
    Ok(Answer {
        body: serde_json::from_str(body)?,
        sent,
        received,
    })
}

// ------------------------------------------------------------------ simulated proxies

/// The weight of `bench-1` in the route config of `bench-0`, if the view has it.
fn weight_of(view: &ProxyView, route_config: &str, cluster: &str) -> Option<u32> {
    view.route_configs
        .get(route_config)?
        .iter()
        .flat_map(|r| r.clusters.iter())
        .find(|c| c.cluster == cluster)
        .map(|c| c.weight)
}

async fn client(
    idx: usize,
    uri: String,
    mode: Mode,
    gate: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
) {
    let error = match client_stream(idx, uri, mode, gate, &events).await {
        Ok(()) => "stream closed by the control plane".to_string(),
        Err(e) => e.to_string(),
    };
    let _ = events.send(Event::Failed { idx, error });
}

async fn client_stream(
    idx: usize,
    uri: String,
    mode: Mode,
    gate: Arc<Semaphore>,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), BoxError> {
    // Connections are opened a few at a time: a thousand SYNs at once overflow the accept
    // backlog and turn into one-second retransmits, which is not what is measured here.
    let channel = {
        let _permit = gate.acquire().await?;
        Endpoint::from_shared(uri)?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await?
    };
    let mut grpc = AggregatedDiscoveryServiceClient::new(channel);
    let mut ads = AdsClient::new(format!("bench-xds-{idx}"), "bench-client");
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    for req in ads.connect_requests() {
        tx.send(req).await?;
    }
    let mut responses = grpc
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let route_config = fqdn(&svc(0));
    let cluster = fqdn(&svc(1));
    // `--mode ack`, once synced: type URL → the names to repeat in each ACK.
    let mut ack_only: Option<BTreeMap<String, Vec<String>>> = None;
    while let Some(resp) = responses.message().await? {
        if let Some(names) = &ack_only {
            let weight = if resp.type_url == ROUTE_TYPE {
                Some(route_weight(&resp, &route_config, &cluster))
            } else {
                None
            };
            tx.send(DiscoveryRequest {
                version_info: resp.version_info.clone(),
                resource_names: names.get(&resp.type_url).cloned().unwrap_or_default(),
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                ..Default::default()
            })
            .await?;
            if let Some(weight) = weight {
                let event = Event::View {
                    idx,
                    weight,
                    rds_version: resp.version_info.parse().ok(),
                    at: Instant::now(),
                };
                if events.send(event).is_err() {
                    return Ok(());
                }
            }
            continue;
        }
        let step = ads.on_response(resp);
        for req in step.requests {
            tx.send(req).await?;
        }
        let event = if step.nacked {
            Event::Nack {
                idx,
                reason: ads.last_nack().unwrap_or_default().to_string(),
            }
        } else if let Some(view) = step.view {
            let weight = weight_of(&view, &route_config, &cluster);
            if mode == Mode::Ack && weight.is_some() {
                ack_only = Some(
                    ALL_TYPES
                        .iter()
                        .map(|t| (t.to_string(), ads.subscribed_names(t)))
                        .collect(),
                );
            }
            Event::View {
                idx,
                weight,
                rds_version: ads
                    .accepted_version(ROUTE_TYPE)
                    .and_then(|v| v.parse().ok()),
                at: Instant::now(),
            }
        } else {
            continue;
        };
        if events.send(event).is_err() {
            return Ok(()); // the coordinator is done
        }
    }
    Ok(())
}

/// `--mode ack`: the weight of `cluster` in the RouteConfiguration `route_config` of an RDS
/// response, decoding only RouteConfigurations.
fn route_weight(resp: &DiscoveryResponse, route_config: &str, cluster: &str) -> Option<u32> {
    let rc = resp
        .resources
        .iter()
        .filter_map(|any| RouteConfiguration::decode(any.value.as_slice()).ok())
        .find(|rc| rc.name == route_config)?;
    rc.virtual_hosts
        .iter()
        .flat_map(|vh| vh.routes.iter())
        .filter_map(|r| match &r.action {
            Some(route::Action::Route(action)) => action.cluster_specifier.as_ref(),
            _ => None,
        })
        .filter_map(|spec| match spec {
            route_action::ClusterSpecifier::WeightedClusters(w) => Some(w),
            _ => None,
        })
        .flat_map(|w| w.clusters.iter())
        .find(|c| c.name == cluster)
        .and_then(|c| c.weight.map(|w| w.value))
}

// ------------------------------------------------------------------ measurements

/// `VmRSS` and `VmHWM` of `pid`, KiB.
fn rss_kib(pid: Option<u32>) -> (u64, u64) {
    let Some(pid) = pid else { return (0, 0) };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (0, 0);
    };
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `utime + stime` of `pid` (or this process), in clock ticks.
fn cpu_ticks(pid: Option<u32>) -> u64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0;
    };
    // Fields after the command name (which may contain spaces): state is field 3, utime 14,
    // stime 15.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
    get(11) + get(12)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn median(v: &[f64]) -> f64 {
    pct(&sorted(v.to_vec()), 0.5)
}

async fn next_event(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    deadline: Instant,
    what: &str,
) -> Result<Event, BoxError> {
    match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
        Ok(Some(Event::Nack { idx, reason })) => {
            Err(format!("client {idx} rejected a response: {reason}").into())
        }
        Ok(Some(Event::Failed { idx, error })) => {
            Err(format!("client {idx}: {error} ({what})").into())
        }
        Ok(Some(ev)) => Ok(ev),
        Ok(None) => Err("every client is gone".into()),
        Err(_) => Err(format!("timed out {what}").into()),
    }
}

async fn run(common: &Common, args: &RunArgs) -> Result<(), BoxError> {
    let n = args.clients;
    let pid = args.cp_pid;
    let (rss_idle, _) = rss_kib(pid);

    // ---- connect every client and wait for complete views
    let uri = format!("http://{}", args.xds);
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(args.connect_parallel));
    let start = Instant::now();
    for idx in 0..n {
        tokio::spawn(client(
            idx,
            uri.clone(),
            args.mode,
            gate.clone(),
            ev_tx.clone(),
        ));
    }
    drop(ev_tx);
    // A complete view may come before the listeners (no listener, no route yet): a client
    // is synced once its view has the route under test.
    let mut weight: Vec<Option<u32>> = vec![None; n];
    let mut synced = 0;
    let deadline = start + args.timeout.max(Duration::from_secs(60));
    while synced < n {
        let what = format!(
            "waiting for views with route {NS}/{ROUTE} ({synced}/{n}; run `bench-xds seed` first)"
        );
        if let Event::View { idx, weight: w, .. } = next_event(&mut ev_rx, deadline, &what).await? {
            if weight[idx].is_none() && w.is_some() {
                synced += 1;
            }
            weight[idx] = w.or(weight[idx]);
        }
    }
    let sync_ms = ms(start.elapsed());
    let mut current = weight[0].unwrap_or_default();
    if weight.iter().any(|w| *w != Some(current)) {
        return Err("clients disagree on the route's weights after the initial sync".into());
    }
    eprintln!("bench-xds: {n} clients synced in {sync_ms:.0} ms (route weight {current})");
    tokio::time::sleep(args.settle).await;
    let (rss_clients, _) = rss_kib(pid);

    // ---- rounds
    let mut last_ms = Vec::new();
    let mut commit_ms = Vec::new();
    let mut apply_ms = Vec::new();
    let mut client_ms = Vec::new();
    let mut cp_cpu_ms = Vec::new();
    let mut bench_cpu_ms = Vec::new();
    let mut version_mismatch = 0usize;
    let mut revision = 0;
    let tick_ms = 1000.0 / args.clk_tck;
    for round in 0..args.warmup + args.rounds {
        let a = current % (TOTAL_WEIGHT - 1) + 1; // 1..=999, never the current one
        let cp0 = cpu_ticks(pid);
        let me0 = cpu_ticks(None);
        let answer = call(
            common,
            "POST",
            "/v1/apply",
            Some(json!({ "documents": [route_doc(a)] })),
        )
        .await?;
        let (out, t_req, t_resp) = (answer.body, answer.sent, answer.received);
        revision = out["revision"].as_u64().ok_or("apply: no revision")?;
        if out["changed"].as_array().is_none_or(|c| c.is_empty()) {
            return Err(format!("apply of weight {a} changed nothing: {out}").into());
        }
        let mut acked: Vec<Option<Instant>> = vec![None; n];
        let mut done = 0;
        let deadline = t_req + args.timeout;
        while done < n {
            let what = format!("in round {round}: {done}/{n} clients had weight {a}");
            if let Event::View {
                idx,
                weight,
                rds_version,
                at,
            } = next_event(&mut ev_rx, deadline, &what).await?
            {
                if weight == Some(a) && acked[idx].is_none() {
                    acked[idx] = Some(at);
                    done += 1;
                    if rds_version != Some(revision) {
                        version_mismatch += 1;
                    }
                }
            }
        }
        let times: Vec<Instant> = acked.into_iter().flatten().collect();
        let last = times.iter().copied().max().unwrap_or(t_resp);
        tokio::time::sleep(args.settle).await;
        let cp_cpu = cpu_ticks(pid).saturating_sub(cp0) as f64 * tick_ms;
        let bench_cpu = cpu_ticks(None).saturating_sub(me0) as f64 * tick_ms;
        current = a;
        let measured = round >= args.warmup;
        eprintln!(
            "bench-xds: round {round}{} revision {revision}: apply {:.1} ms, last ACK {:.1} ms \
             after apply ({:.1} ms after its answer), cp cpu {cp_cpu:.0} ms",
            if measured { "" } else { " (warm-up)" },
            ms(t_resp - t_req),
            ms(last.saturating_duration_since(t_req)),
            ms(last.saturating_duration_since(t_resp)),
        );
        if measured {
            last_ms.push(ms(last.saturating_duration_since(t_req)));
            commit_ms.push(ms(last.saturating_duration_since(t_resp)));
            apply_ms.push(ms(t_resp - t_req));
            client_ms.extend(times.iter().map(|t| ms(t.saturating_duration_since(t_req))));
            cp_cpu_ms.push(cp_cpu);
            bench_cpu_ms.push(bench_cpu);
        }
    }
    let (_, rss_hwm) = rss_kib(pid);

    // ---- the control plane's own record of the ACKs
    let confirmed = confirmed_acks(common, revision, n).await?;

    let last_sorted = sorted(last_ms);
    let commit_sorted = sorted(commit_ms);
    let client_sorted = sorted(client_ms);
    println!(
        "RESULT mode={} clients={n} rounds={} sync_ms={sync_ms:.0} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} \
         commit_p50_ms={:.1} commit_p99_ms={:.1} apply_p50_ms={:.1} client_p50_ms={:.1} \
         client_p99_ms={:.1} rss_idle_kib={rss_idle} rss_clients_kib={rss_clients} \
         rss_hwm_kib={rss_hwm} cp_cpu_ms_round={:.0} bench_cpu_ms_round={:.0} \
         version_mismatch={version_mismatch} cp_confirmed={confirmed}",
        match args.mode {
            Mode::Full => "full",
            Mode::Ack => "ack",
        },
        args.rounds,
        pct(&last_sorted, 0.5),
        pct(&last_sorted, 0.99),
        last_sorted.last().copied().unwrap_or(0.0),
        pct(&commit_sorted, 0.5),
        pct(&commit_sorted, 0.99),
        median(&apply_ms),
        pct(&client_sorted, 0.5),
        pct(&client_sorted, 0.99),
        median(&cp_cpu_ms),
        median(&bench_cpu_ms),
    );
    Ok(())
}

/// How many of our clients the control plane reports as having ACKed `revision` for RDS;
/// polls for up to 5 s until all `n` have.
async fn confirmed_acks(common: &Common, revision: u64, n: usize) -> Result<usize, BoxError> {
    let want = revision.to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = call(common, "GET", "/v1/status", None).await?.body;
        let count = status["proxies"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| {
                        p["node"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("bench-xds-"))
                            && p["acked"][ROUTE_TYPE].as_str() == Some(want.as_str())
                    })
                    .count()
            })
            .unwrap_or(0);
        if count >= n || Instant::now() >= deadline {
            return Ok(count);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

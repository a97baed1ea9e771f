//! `tandemctl chaos run | status | stop`: chaos experiments with a steady-state check
//! over `/v1/chaos`. `run` starts one and, unless `--detach`, follows it until the control
//! plane ends it — at the deadline, or the moment the steady state breaks — and exits 0
//! if the steady state held, 1 if it broke.

use std::time::Duration;

use clap::Subcommand;
use http::Method;
use serde_json::{json, Value};
use tandem_xds::domain::DEFAULT_NAMESPACE;

use super::{output, CtlError, Format};
use crate::client::ApiClient;

/// `tandemctl chaos` subcommands.
// Parsed once per command line: the size of `Run` costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ChaosCommand {
    /// Inject a fault into a service's requests for a bounded time while its callers'
    /// SLOs are watched; the experiment ends by itself at the first breach.
    Run {
        /// The service whose requests get the fault.
        service: String,
        /// Answer this share of requests with an error (e.g. 10%).
        #[arg(long)]
        abort: Option<String>,
        /// The status of an injected error.
        #[arg(long, default_value_t = 503, requires = "abort")]
        status: u16,
        /// Delay requests by this long (e.g. 200ms, 1s).
        #[arg(long)]
        delay: Option<String>,
        /// The share of requests delayed.
        #[arg(long, default_value = "100%", requires = "delay")]
        delay_percent: String,
        /// Take endpoints of the service out of every caller's load balancing: a count
        /// (1) or a share (50%, rounded up); every endpoint only as 100%.
        #[arg(long)]
        eject: Option<String>,
        /// Eject only endpoints with this label (key=value), e.g. a zone.
        #[arg(long, requires = "eject")]
        eject_label: Option<String>,
        /// How long the experiment lasts at most (e.g. 60s, 5m; at most 1h).
        #[arg(long = "for", default_value = "60s")]
        duration: String,
        /// The steady state: the callers' error rate must stay at or below this (e.g. 1%).
        #[arg(long)]
        max_error_rate: Option<String>,
        /// The steady state: the callers' p99 must stay at or below this (e.g. 500ms).
        #[arg(long)]
        max_p99: Option<String>,
        /// Requests to see before the error rate can break the steady state.
        #[arg(long)]
        min_requests: Option<u64>,
        /// Services whose SLOs must hold, comma list (default: the service itself, as
        /// its callers see it).
        #[arg(long, value_delimiter = ',')]
        steady_state: Vec<String>,
        /// Start it and return (follow it with `chaos status`).
        #[arg(long)]
        detach: bool,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// The running experiments, or one (with how it ended).
    Status {
        /// One service's experiment.
        service: Option<String>,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// End a running experiment now: fault removed, routes restored.
    Stop {
        /// The service.
        service: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

/// `10%` or `10` → 10.0.
fn share(flag: &str, text: &str) -> Result<f64, CtlError> {
    let t = text.trim().trim_end_matches('%');
    match t.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(CtlError(format!(
            "--{flag}: expected a share such as 10%, got {text:?}"
        ))),
    }
}

/// Runs `chaos`.
pub async fn run(
    client: &ApiClient,
    out: Option<Format>,
    command: ChaosCommand,
) -> Result<(), CtlError> {
    match command {
        ChaosCommand::Run {
            service,
            abort,
            status,
            delay,
            delay_percent,
            eject,
            eject_label,
            duration,
            max_error_rate,
            max_p99,
            min_requests,
            steady_state,
            detach,
            namespace,
        } => {
            let mut spec = json!({"duration": duration, "steady_state": steady_state});
            if let Some(a) = abort {
                spec["abort"] = json!({"percent": share("abort", &a)?, "status": status});
            }
            if let Some(d) = delay {
                spec["delay"] =
                    json!({"duration": d, "percent": share("delay-percent", &delay_percent)?});
            }
            if let Some(e) = eject {
                spec["eject"] = json!({"endpoints": e, "label": eject_label});
            }
            if let Some(m) = max_error_rate {
                spec["max_error_rate"] = json!(m);
            }
            if let Some(m) = max_p99 {
                spec["max_p99"] = json!(m);
            }
            if let Some(m) = min_requests {
                spec["min_requests"] = json!(m);
            }
            let path = format!("/v1/chaos/{namespace}/{service}");
            let started = client.call(Method::POST, &path, Some(&spec)).await?;
            if detach || out.is_some() {
                return output::print(out, &started, started_text);
            }
            print!("{}", started_text(&started));
            follow(client, &path).await
        }
        ChaosCommand::Status { service, namespace } => {
            let path = match &service {
                Some(s) => format!("/v1/chaos/{namespace}/{s}"),
                None => "/v1/chaos".to_string(),
            };
            let answer = client.call(Method::GET, &path, None).await?;
            output::print(out, &answer, status_text)
        }
        ChaosCommand::Stop { service, namespace } => {
            let path = format!("/v1/chaos/{namespace}/{service}/stop");
            let answer = client.call(Method::POST, &path, None).await?;
            output::print(out, &answer, |a| {
                format!(
                    "chaos {} stopped (revision {}): fault removed\n",
                    a["service"].as_str().unwrap_or("?"),
                    a["revision"]
                )
            })
        }
    }
}

/// Polls the experiment until it ends; the exit status says whether it held.
async fn follow(client: &ApiClient, path: &str) -> Result<(), CtlError> {
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let answer = client.call(Method::GET, path, None).await?;
        let v = &answer["verdict"];
        let state = v["state"].as_str().unwrap_or("running");
        let reason = v["reason"].as_str().unwrap_or_default().to_string();
        match state {
            "running" => {
                if reason != last {
                    println!("  {reason}");
                    last = reason;
                }
            }
            "held" => {
                println!("held (revision {}): {reason}", v["revision"]);
                return Ok(());
            }
            other => {
                return Err(CtlError(format!(
                    "{other} (revision {}): {reason}",
                    v["revision"]
                )))
            }
        }
    }
}

fn started_text(a: &Value) -> String {
    format!(
        "chaos {} started (revision {}): {}\n",
        a["service"].as_str().unwrap_or("?"),
        a["revision"],
        a["description"].as_str().unwrap_or_default()
    )
}

fn status_text(a: &Value) -> String {
    let items: Vec<&Value> = match a["items"].as_array() {
        Some(items) => items.iter().collect(),
        None => vec![a],
    };
    if items.is_empty() {
        return "no chaos experiment is running\n".into();
    }
    let mut rows = vec![vec![
        "SERVICE".to_string(),
        "STATE".into(),
        "EXPERIMENT".into(),
        "LATEST".into(),
    ]];
    for i in items {
        let v = &i["verdict"];
        rows.push(vec![
            i["service"].as_str().unwrap_or("?").to_string(),
            v["state"].as_str().unwrap_or("running").to_string(),
            i["description"].as_str().unwrap_or("-").to_string(),
            v["reason"].as_str().unwrap_or("-").to_string(),
        ]);
    }
    output::render(&rows)
}

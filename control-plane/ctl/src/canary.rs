//! `tandemctl canary start|set|step|pause|resume|promote|abort|status SERVICE ...`:
//! canary releases over `/v1/canaries/{namespace}/{service}`; `start --auto` hands the
//! release to the control plane's guard.

use clap::Subcommand;
use http::Method;
use serde_json::{json, Value};
use tandem_xds::domain::DEFAULT_NAMESPACE;

use super::{output, CtlError, Format};
use crate::client::ApiClient;

/// `tandemctl canary ...`.
#[derive(Debug, Subcommand)]
pub enum CanaryCommand {
    /// Start a canary: the first step's share of SERVICE's traffic goes to the canary.
    Start {
        /// The parent service (what clients call).
        service: String,
        /// The backend service serving now, e.g. web-v1.
        #[arg(long)]
        stable: String,
        /// The new backend service, e.g. web-v2.
        #[arg(long)]
        canary: String,
        /// Percentages, increasing, comma-separated.
        #[arg(long, default_value = "5,10,25,50,100")]
        steps: String,
        /// Let the control plane step, promote and roll back by itself, judging the
        /// canary every second against the objectives below.
        #[arg(long)]
        auto: bool,
        /// With --auto: the canary's highest error rate (5xx), absolute (`1%`) or above
        /// the stable's (`+0.5%`); comma-separated for both.
        #[arg(long, requires = "auto")]
        max_error_rate: Option<String>,
        /// With --auto: the canary's highest p99 latency, absolute (`500ms`) or a factor
        /// of the stable's (`1.5x`); comma-separated for both.
        #[arg(long, requires = "auto")]
        max_p99: Option<String>,
        /// With --auto: requests a step must see before it is judged healthy.
        #[arg(long, requires = "auto")]
        min_requests: Option<u64>,
        /// With --auto: how long a healthy step lasts before the next (e.g. 30s, 2m).
        #[arg(long, requires = "auto")]
        step_time: Option<String>,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Hold a guarded (--auto) canary at its step; a breach still rolls it back.
    Pause {
        /// The parent service.
        service: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Let a paused guarded canary go on; its step starts over.
    Resume {
        /// The parent service.
        service: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Give the canary PERCENT (0-100) of the traffic.
    Set {
        /// The parent service.
        service: String,
        /// 0-100.
        #[arg(allow_hyphen_values = true)]
        percent: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Go to the next step.
    Step {
        /// The parent service.
        service: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Send everything to the canary and end the canary (the stable stays at weight 0).
    Promote {
        /// The parent service.
        service: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Send everything back to the stable, at once.
    Abort {
        /// The parent service.
        service: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Show weights and each backend's request rate, success rate and p99 latency.
    Status {
        /// The parent service.
        service: String,
        /// Seconds of metrics to compute rates over (1-120).
        #[arg(long, default_value_t = 30)]
        window: u64,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

/// Runs one `canary` command.
pub async fn run(
    client: &ApiClient,
    out: Option<Format>,
    command: CanaryCommand,
) -> Result<(), CtlError> {
    let (namespace, service, body) = match command {
        CanaryCommand::Start {
            service,
            stable,
            canary,
            steps,
            auto,
            max_error_rate,
            max_p99,
            min_requests,
            step_time,
            namespace,
        } => {
            let steps = steps
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<i64>()
                        .map_err(|_| CtlError(format!("--steps: {s:?} is not a number")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut body =
                json!({"action": "start", "stable": stable, "canary": canary, "steps": steps});
            if auto {
                let mut spec = serde_json::Map::new();
                let fields = [
                    ("maxErrorRate", max_error_rate.map(Value::from)),
                    ("maxP99", max_p99.map(Value::from)),
                    ("minRequests", min_requests.map(Value::from)),
                    ("stepTime", step_time.map(Value::from)),
                ];
                for (k, v) in fields {
                    if let Some(v) = v {
                        spec.insert(k.into(), v);
                    }
                }
                body["auto"] = Value::Object(spec);
            }
            (namespace, service, body)
        }
        CanaryCommand::Pause { service, namespace } => {
            (namespace, service, json!({"action": "pause"}))
        }
        CanaryCommand::Resume { service, namespace } => {
            (namespace, service, json!({"action": "resume"}))
        }
        CanaryCommand::Set {
            service,
            percent,
            namespace,
        } => {
            let p = percent
                .trim_end_matches('%')
                .parse::<i64>()
                .map_err(|_| CtlError(format!("percent: {percent:?} is not a number 0-100")))?;
            (namespace, service, json!({"action": "set", "percent": p}))
        }
        CanaryCommand::Step { service, namespace } => {
            (namespace, service, json!({"action": "step"}))
        }
        CanaryCommand::Promote { service, namespace } => {
            (namespace, service, json!({"action": "promote"}))
        }
        CanaryCommand::Abort { service, namespace } => {
            (namespace, service, json!({"action": "abort"}))
        }
        CanaryCommand::Status {
            service,
            window,
            namespace,
        } => {
            let path = format!("/v1/canaries/{namespace}/{service}?window={window}");
            let answer = client.call(Method::GET, &path, None).await?;
            return output::print(out, &answer, status_text);
        }
    };
    let path = format!("/v1/canaries/{namespace}/{service}");
    let answer = client.call(Method::POST, &path, Some(&body)).await?;
    output::print(out, &answer, action_text)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `canary default/web: web-v1 95% / web-v2 5% (step 1/5, running), revision 7`.
fn action_text(a: &Value) -> String {
    let state = &a["state"];
    let (stable, canary) = if state.is_null() {
        // Promote ends the canary: the weights name both.
        let mut names: Vec<(&String, &Value)> = a["weights"]
            .as_object()
            .map(|m| m.iter().collect())
            .unwrap_or_default();
        names.sort_by_key(|(_, w)| w.as_u64());
        match names.as_slice() {
            [(st, _), (ca, _)] => (st.to_string(), ca.to_string()),
            _ => (String::new(), String::new()),
        }
    } else {
        (s(&state["stable"]), s(&state["canary"]))
    };
    let weight = |name: &str| s(&a["weights"][name]);
    let what = if state.is_null() {
        "promoted".to_string()
    } else {
        let steps = state["steps"].as_array().map_or(0, Vec::len);
        format!("step {}/{steps}, {}", s(&state["step"]), s(&state["phase"]))
    };
    let revision = if a["changed"].as_array().is_some_and(|c| c.is_empty()) {
        format!("no change (revision {})", s(&a["revision"]))
    } else {
        format!("revision {}", s(&a["revision"]))
    };
    format!(
        "canary {}: {stable} {}% / {canary} {}% ({what}), {revision}\n",
        s(&a["service"]),
        weight(&stable),
        weight(&canary),
    )
}

/// The status as a table.
fn status_text(a: &Value) -> String {
    let state = &a["state"];
    let steps: Vec<String> = state["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    let routes: Vec<String> = a["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    let mut out = format!(
        "canary {}: {} at {}% (step {}/{}, steps {}), routes {}, revision {}\n",
        s(&a["service"]),
        s(&state["phase"]),
        s(&state["percent"]),
        s(&state["step"]),
        steps.len(),
        steps.join(","),
        routes.join(", "),
        s(&a["revision"]),
    );
    let auto = &state["auto"];
    if auto.is_object() {
        let limits: Vec<String> = [
            ("error rate", &auto["maxErrorRate"]),
            ("p99", &auto["maxP99"]),
        ]
        .iter()
        .filter(|(_, v)| v.as_str().is_some_and(|t| !t.is_empty()))
        .map(|(name, v)| format!("{name} ≤ {}", s(v)))
        .collect();
        out.push_str(&format!(
            "guarded{}: {}, at least {} requests and {}s per step, step since {}\n",
            if auto["paused"] == true {
                " (paused)"
            } else {
                ""
            },
            limits.join(", "),
            s(&auto["minRequests"]),
            s(&auto["stepTimeSeconds"]),
            s(&auto["stepStarted"]),
        ));
        let j = &a["judgement"];
        if j.is_object() {
            out.push_str(&format!(
                "last judgement: {}: {}\n",
                s(&j["decision"]),
                s(&j["reason"])
            ));
        }
    }
    let mut rows = vec![vec![
        "BACKEND".to_string(),
        "ROLE".into(),
        "WEIGHT".into(),
        "REQ/S".into(),
        "SUCCESS".into(),
        "P99".into(),
    ]];
    for b in a["backends"].as_array().into_iter().flatten() {
        rows.push(vec![
            s(&b["name"]),
            s(&b["role"]),
            s(&b["weight"]),
            b["requests_per_second"]
                .as_f64()
                .map_or_else(|| "-".into(), |r| format!("{r:.2}")),
            output::percent(&b["success_rate"]),
            output::millis(&b["p99_seconds"]),
        ]);
    }
    out.push_str(&output::render(&rows));
    let m = &a["metrics"];
    out.push_str(&output::metrics_footer(
        &m["window_seconds"],
        &m["proxies_scraped"],
        &m["proxies_reporting"],
        "metrics: ",
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_name_weights_and_missing_metrics() {
        let a = json!({
            "service": "default/web", "revision": 7, "changed": ["HTTPRoute default/web-canary"],
            "state": {"phase": "running", "stable": "web-v1", "canary": "web-v2", "steps": [5, 10, 25, 50, 100], "step": 1, "percent": 5},
            "weights": {"web-v1": 95, "web-v2": 5},
        });
        assert_eq!(
            action_text(&a),
            "canary default/web: web-v1 95% / web-v2 5% (step 1/5, running), revision 7\n"
        );
        let promoted = json!({
            "service": "default/web", "revision": 9, "changed": [],
            "state": null, "weights": {"web-v1": 0, "web-v2": 100},
        });
        assert_eq!(
            action_text(&promoted),
            "canary default/web: web-v1 0% / web-v2 100% (promoted), no change (revision 9)\n"
        );
        let status = json!({
            "service": "default/web", "revision": 7, "routes": ["default/web-canary"],
            "state": a["state"], "weights": a["weights"],
            "backends": [
                {"name": "web-v1", "role": "stable", "weight": 95, "requests_per_second": 9.5, "success_rate": 1.0, "p99_seconds": 0.0042},
                {"name": "web-v2", "role": "canary", "weight": 5, "requests_per_second": 0.0, "success_rate": null, "p99_seconds": null},
            ],
            "metrics": {"window_seconds": 30.0, "proxies_scraped": 0, "proxies_reporting": 0},
        });
        let text = status_text(&status);
        assert!(
            text.starts_with("canary default/web: running at 5% (step 1/5"),
            "{text}"
        );
        assert!(text.contains("web-v1   stable  95"), "{text}");
        assert!(text.contains("100.00%") && text.contains("4.2ms"), "{text}");
        assert!(text.contains("no metrics from proxies yet"), "{text}");
        let mut reporting = status.clone();
        reporting["metrics"] =
            json!({"window_seconds": 30.0, "proxies_scraped": 1, "proxies_reporting": 1});
        let text = status_text(&reporting);
        assert!(
            text.ends_with("metrics: last 30 s, 1 proxy reporting\n"),
            "{text}"
        );
    }
}

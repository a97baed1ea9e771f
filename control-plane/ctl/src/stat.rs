//! `tandemctl stat [services|routes|backends]`: the mesh's golden signals from the
//! proxies' own metrics (`GET /v1/stat`), as a table or `-o json`, once or refreshed with
//! `--watch` (Linkerd's `viz stat`, without an add-on: the control plane already reads
//! every proxy).

use std::time::Duration;

use clap::{Args, ValueEnum};
use http::Method;
use serde_json::Value;

use super::{output, CtlError, Format};
use crate::client::ApiClient;

/// What `stat` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum By {
    /// Per service called (with its proxies' open inbound connections).
    Services,
    /// Per route (`namespace/name/rule-N`).
    Routes,
    /// Per backend service (a route's split targets).
    Backends,
}

/// `tandemctl stat` arguments.
#[derive(Debug, Args)]
pub struct StatArgs {
    /// Group by services, routes or backends.
    #[arg(value_enum, default_value = "services")]
    by: By,
    /// Seconds of metrics to compute rates over (1-120).
    #[arg(long, default_value_t = 30)]
    window: u64,
    /// Refresh every N seconds (default 2) until interrupted.
    #[arg(long, num_args = 0..=1, default_missing_value = "2", value_parser = clap::value_parser!(u64).range(1..=3600))]
    watch: Option<u64>,
}

/// Runs `stat`.
pub async fn run(client: &ApiClient, out: Option<Format>, args: StatArgs) -> Result<(), CtlError> {
    let by = match args.by {
        By::Services => "service",
        By::Routes => "route",
        By::Backends => "backend",
    };
    let path = format!("/v1/stat?by={by}&window={}", args.window);
    loop {
        let answer = client.call(Method::GET, &path, None).await?;
        if args.watch.is_some() && out.is_none() {
            // Clear the screen and home the cursor, as `watch` does.
            print!("\x1b[2J\x1b[H");
        }
        output::print(out, &answer, text)?;
        match args.watch {
            Some(every) => tokio::time::sleep(Duration::from_secs(every)).await,
            None => return Ok(()),
        }
    }
}

/// The answer as a table.
fn text(a: &Value) -> String {
    let services = a["by"] == "service";
    let mut head = vec![
        a["by"].as_str().unwrap_or("name").to_uppercase(),
        "REQ/S".into(),
        "SUCCESS".into(),
        "P50".into(),
        "P95".into(),
        "P99".into(),
    ];
    if services {
        head.push("TCP_CONN".into());
    }
    let mut rows = vec![head];
    for i in a["items"].as_array().into_iter().flatten() {
        let mut row = vec![
            i["name"].as_str().unwrap_or("-").to_string(),
            i["requests_per_second"]
                .as_f64()
                .map_or_else(|| "-".into(), |r| format!("{r:.2}")),
            output::percent(&i["success_rate"]),
            output::millis(&i["p50_seconds"]),
            output::millis(&i["p95_seconds"]),
            output::millis(&i["p99_seconds"]),
        ];
        if services {
            row.push(
                i["tcp_open_inbound"]
                    .as_f64()
                    .map_or_else(|| "-".into(), |n| format!("{n:.0}")),
            );
        }
        rows.push(row);
    }
    let mut out = output::render(&rows);
    out.push_str(&output::metrics_footer(
        &a["window_seconds"],
        &a["proxies_scraped"],
        &a["proxies_reporting"],
        "",
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_names_each_signal_and_says_when_nothing_reports() {
        let a = json!({
            "by": "service", "window_seconds": 30.0, "proxies_scraped": 2, "proxies_reporting": 1,
            "items": [{"name": "web", "requests_per_second": 12.5, "requests": 375.0,
                       "success_rate": 0.98, "p50_seconds": 0.002, "p95_seconds": 0.009,
                       "p99_seconds": 0.0123, "tcp_open_inbound": 3.0}],
        });
        let t = text(&a);
        assert!(
            t.starts_with("SERVICE  REQ/S  SUCCESS  P50    P95    P99     TCP_CONN"),
            "{t}"
        );
        assert!(
            t.contains("web      12.50  98.00%   2.0ms  9.0ms  12.3ms  3"),
            "{t}"
        );
        assert!(t.ends_with("\nlast 30 s, 1 proxy reporting\n"), "{t}");
        let empty =
            json!({"by": "route", "items": [], "proxies_scraped": 0, "proxies_reporting": 0});
        assert!(text(&empty).contains("no metrics from proxies yet"));
    }
}

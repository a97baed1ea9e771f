//! The Grafana dashboards in `deploy/grafana/` against what real proxies export.
//!
//! A dashboard that names a metric or label the proxy does not have shows an empty panel,
//! and nobody notices until the day it is needed. So every query in every panel (and every
//! templating variable's query) is parsed, and each metric it selects and each label it
//! matches or groups by is looked up in the `/metrics` of real proxies that carried the
//! traffic those panels are about: a canary split with retries, a retry budget running
//! out, an outlier ejection, a pool limit, opaque TCP. The dashboards' JSON is also held
//! to what Grafana needs to import it, and their links to each other to dashboards and
//! variables that exist.
//!
//! The queries are found by [`tandem_tests::grafana`] and read by [`tandem_tests::promql`],
//! a small PromQL parser rather than a regular expression: grouping labels must be tied to
//! the metrics they group, and an unknown function is an error rather than a guess (extend
//! [`tandem_tests::promql::FUNCTIONS`] when a dashboard needs a new one).

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tandem_tests::control_plane::ControlPlane;
use tandem_tests::grafana::{self, Query};
use tandem_tests::mesh::{docs, endpoint, service};
use tandem_tests::metrics::Metrics;
use tandem_tests::promql;
use tandem_tests::tcp::{round_trip, TcpEchoServer};
use tandem_tests::traffic::{burst, destination_policy, route, Shot};
use tandem_tests::upstream::{self, HttpServer};
use tandem_tests::{client, eventually, within, Proxy, STEP_TIMEOUT};

/// Labels Prometheus attaches to every scraped series whatever the scrape config says.
const ALWAYS_TARGET_LABELS: &[&str] = &["job", "instance"];

/// Metrics a dashboard may use although the test's traffic does not make them appear, with
/// their type, their labels and why. The prometheus crate leaves a labelled family out of
/// `/metrics` entirely (no `# HELP`, no `# TYPE`) until it has a series, so these cannot
/// be checked against a scrape here; when a scrape does have them, their labels must be
/// exactly these (a stale entry fails).
const NOT_EXERCISED: &[(&str, &str, &[&str], &str)] = &[(
    "tandem_authz_denied_total",
    "counter",
    &["dst_service", "protocol"],
    "a denial needs mutual TLS between two meshed workloads and an AuthorizationPolicy; \
     tests/tests/authz.rs exercises it, with these labels",
)];

/// The dashboards directory.
fn grafana_dir() -> PathBuf {
    tandem_tests::bins::workspace_dir().join("deploy/grafana")
}

/// Every `deploy/grafana/*.json`, parsed, by file name.
fn load_dashboards() -> Vec<(String, Value)> {
    grafana::load_dir(&grafana_dir())
}

/// The labels the documented scrape config (`deploy/grafana/README.md`) adds to every
/// proxy's series: the `target_label:` of its relabelling rules, plus `job` and `instance`.
/// Read from the README so that a dashboard cannot rely on a label the docs do not create.
fn target_labels(readme: &str) -> BTreeSet<String> {
    let mut labels: BTreeSet<String> = ALWAYS_TARGET_LABELS.iter().map(|s| s.to_string()).collect();
    for line in readme.lines() {
        if let Some(rest) = line.trim().strip_prefix("target_label:") {
            labels.insert(rest.trim().to_owned());
        }
    }
    labels
}

// ---------------------------------------------------------------------------------------
// What the proxies export.

/// The metric families and series of one or more scrapes.
#[derive(Debug, Default)]
struct Exported {
    /// `# TYPE` lines: family name → type.
    types: BTreeMap<String, String>,
    /// Series name (with any `_bucket`/`_sum`/`_count`) → label name → whether some
    /// series has a non-empty value for it (Prometheus drops empty labels, so a label
    /// that is always empty cannot be grouped or matched on).
    series: BTreeMap<String, BTreeMap<String, bool>>,
}

impl Exported {
    /// Adds one `/metrics` text.
    fn add(&mut self, text: &str) {
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
                (words.next(), words.next(), words.next(), words.next())
            {
                self.types.insert(name.to_owned(), kind.to_owned());
            }
        }
        for sample in Metrics::parse(text).samples {
            let labels = self.series.entry(sample.name).or_default();
            for (k, v) in sample.labels {
                *labels.entry(k).or_default() |= !v.is_empty();
            }
        }
    }

    /// The family a series name belongs to: itself if it has a `# TYPE` line, else the
    /// histogram (or summary) it is the `_bucket`, `_sum` or `_count` of.
    fn family(&self, name: &str) -> Option<String> {
        if self.types.contains_key(name) {
            return Some(name.to_owned());
        }
        for (suffix, kinds) in [
            ("_bucket", &["histogram"][..]),
            ("_sum", &["histogram", "summary"][..]),
            ("_count", &["histogram", "summary"][..]),
        ] {
            if let Some(base) = name.strip_suffix(suffix) {
                if self
                    .types
                    .get(base)
                    .is_some_and(|k| kinds.contains(&k.as_str()))
                {
                    return Some(base.to_owned());
                }
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------
// Checks.

/// Every problem with the queries of `dashboards` against `exported`; empty when all is well.
fn check_queries(
    dashboards: &[(String, Value)],
    exported: &Exported,
    target_labels: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (file, dash) in dashboards {
        for (place, query) in grafana::queries(dash) {
            let selectors = match query {
                Query::PromQl(expr) => promql::selectors(&expr),
                Query::LabelValues(expr, label) => promql::selectors(&expr).map(|mut s| {
                    for sel in &mut s {
                        sel.labels.insert(label.clone());
                    }
                    s
                }),
                Query::Invalid(e) => Err(e),
            };
            let selectors = match selectors {
                Ok(s) => s,
                Err(e) => {
                    problems.push(format!("{file}: {place}: cannot parse: {e}"));
                    continue;
                }
            };
            for sel in selectors {
                for p in check_selector(&sel, exported, target_labels) {
                    problems.push(format!("{file}: {place}: {p}"));
                }
            }
        }
    }
    problems
}

/// What is wrong with one selector's metric and labels.
fn check_selector(
    sel: &promql::Selector,
    exported: &Exported,
    target_labels: &BTreeSet<String>,
) -> Vec<String> {
    let name = sel.name.as_str();
    let not_exercised = NOT_EXERCISED.iter().find(|(n, ..)| *n == name);
    let Some(family) = exported
        .family(name)
        .or_else(|| not_exercised.map(|(n, ..)| n.to_string()))
    else {
        return vec![format!(
            "metric `{name}` is not exported (no `# TYPE` line for it or for a histogram \
             it is a `_bucket`/`_sum`/`_count` of)"
        )];
    };
    let mut problems = Vec::new();
    if let (Some((_, listed, ..)), Some(kind)) = (not_exercised, exported.types.get(name)) {
        if kind != listed {
            problems.push(format!(
                "NOT_EXERCISED lists `{name}` as a {listed}, the proxy exports a {kind}"
            ));
        }
    }
    let labels_of: BTreeMap<String, bool> = match (exported.series.get(name), not_exercised) {
        (Some(seen), Some((_, _, listed, _))) => {
            let seen_names: BTreeSet<&str> = seen.keys().map(String::as_str).collect();
            let listed: BTreeSet<&str> = listed.iter().copied().collect();
            if seen_names != listed {
                problems.push(format!(
                    "NOT_EXERCISED lists `{name}` with labels {listed:?}, the proxy exports \
                     {seen_names:?}"
                ));
            }
            seen.clone()
        }
        (Some(seen), None) => seen.clone(),
        (None, Some((_, _, listed, _))) => listed.iter().map(|l| (l.to_string(), true)).collect(),
        (None, None) => {
            return vec![format!(
                "no series of `{name}` (family `{family}`) after the test's traffic: \
                 make the test produce one, or list it in NOT_EXERCISED with the reason"
            )]
        }
    };
    for label in &sel.labels {
        if label == "__name__" || target_labels.contains(label) {
            continue;
        }
        match labels_of.get(label) {
            Some(true) => {}
            Some(false) => problems.push(format!(
                "label `{label}` of `{name}` is always empty, so Prometheus never has it"
            )),
            None => problems.push(format!(
                "label `{label}` is not on `{name}` (it has {:?}; scrape-time labels: {:?})",
                labels_of.keys().collect::<Vec<_>>(),
                target_labels
            )),
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------
// The real proxies.

/// `/metrics` of real proxies after the traffic the dashboards are about.
///
/// One proxy in xDS mode calls `web` (a 50/50 split of `web-v1` and `web-v2` retrying
/// 503, under a small retry budget), `flaky` (one endpoint answering 500, outlier
/// detection on) and `slow` (one connection allowed); a second one, from a static file,
/// carries opaque TCP, which only a static `listen` entry offers on loopback.
async fn scrape_after_traffic() -> Vec<String> {
    let v1 = HttpServer::echo("web-v1").await;
    let v2 = HttpServer::echo("web-v2").await;
    let good = HttpServer::echo("flaky-good").await;
    let bad = HttpServer::builder("flaky-bad").status(500).start().await;
    let slow = HttpServer::builder("slow")
        .delay(Duration::from_millis(500))
        .start()
        .await;
    let cp = ControlPlane::start().await;
    let budget = "  retryBudget: { percent: 20, minRetriesPerSecond: 1 }\n";
    cp.apply_ok(&docs(&[
        service("web"),
        service("web-v1"),
        service("web-v2"),
        endpoint("web-v1", v1.addr()),
        endpoint("web-v2", v2.addr()),
        route(
            "web-canary",
            "web",
            "    - backendRefs:\n        - { name: web-v1, port: 80, weight: 50 }\n\
             \x20       - { name: web-v2, port: 80, weight: 50 }\n\
             \x20     retry: { codes: [503], attempts: 3, backoff: 1ms }\n",
        ),
        destination_policy("web-v1", "web-v1", budget),
        destination_policy("web-v2", "web-v2", budget),
        service("flaky"),
        endpoint("flaky", good.addr()),
        endpoint("flaky", bad.addr()),
        destination_policy(
            "flaky",
            "flaky",
            "  loadBalancer: roundRobin\n  outlierDetection: \
             { consecutive5xx: 3, baseEjectionTime: 60s, maxEjectionPercent: 50 }\n",
        ),
        service("slow"),
        endpoint("slow", slow.addr()),
        destination_policy(
            "slow",
            "slow",
            "  connectionPool: { maxConnections: 1, maxPendingRequests: 1, maxRequests: 100 }\n",
        ),
    ]))
    .await;
    let proxy = Proxy::start_xds(cp.xds(), "client", &["--workers", "1"]).await;
    let mesh = proxy.outbound();

    // Every service answers before the traffic that counts (the config may still be
    // arriving piecewise).
    for host in ["web", "flaky", "slow"] {
        eventually(Duration::from_secs(15), host, || async move {
            let t = burst(mesh, &Shot::get(&format!("http://{host}/")), 1, 1).await;
            if t.server("proxy") == 0 {
                Ok(())
            } else {
                Err(format!("{t:?}"))
            }
        })
        .await;
    }
    let ok = burst(mesh, &Shot::get("http://web/"), 40, 4).await;
    assert_eq!(ok.status(200), 40, "{ok:?}");
    // Every attempt fails: retries, then a spent budget.
    let failing = Shot::get("http://web/").header(upstream::STATUS, "503");
    burst(mesh, &failing, 20, 1).await;
    // Round robin brings three 500s in a row to the bad endpoint: an ejection.
    burst(mesh, &Shot::get("http://flaky/"), 12, 1).await;
    // Five at once against one connection and one pending slot: overflow.
    let shed = futures_util::future::join_all((0..5).map(|_| {
        within(
            STEP_TIMEOUT,
            "GET slow",
            client::get_once(mesh, "slow", "/"),
        )
    }))
    .await;
    assert!(
        shed.iter()
            .any(|r| r.as_ref().is_ok_and(|r| r.status() == 503)),
        "some requests to `slow` overflow"
    );

    let db = TcpEchoServer::start().await;
    let tcp = Proxy::start(
        &format!(
            "service: tcp-client\nservices:\n  - name: db\n    protocol: opaque\n    \
             listen: 127.0.0.1:0\n    endpoints:\n      - {}\n",
            db.addr()
        ),
        &[],
    )
    .await;
    round_trip(tcp.service_addr("db"), b"ping").await;

    // Recording can trail the responses a moment: wait until every family the traffic
    // should have made is there, so a missing one below is the dashboards' fault.
    let want = [
        "tandem_requests_total",
        "tandem_request_duration_seconds_bucket",
        "tandem_retries_total",
        "tandem_retry_budget_exhausted_total",
        "tandem_outlier_ejections_total",
        "tandem_overflow_total",
        "tandem_circuit_breaker_open",
    ];
    let text = eventually(Duration::from_secs(5), "traffic metrics", || async {
        let text = proxy.metrics_text().await;
        let m = Metrics::parse(&text);
        let missing: Vec<_> = want.iter().filter(|n| !m.has(n)).collect();
        if missing.is_empty() {
            Ok(text)
        } else {
            Err(format!("missing {missing:?}"))
        }
    })
    .await;
    let tcp_text = eventually(Duration::from_secs(5), "TCP byte counts", || async {
        let text = tcp.metrics_text().await;
        if Metrics::parse(&text).has("tandem_tcp_bytes_total") {
            Ok(text)
        } else {
            Err("no tandem_tcp_bytes_total".to_owned())
        }
    })
    .await;
    vec![text, tcp_text]
}

// ---------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_query_only_metrics_and_labels_real_proxies_export() {
    let dashboards = load_dashboards();
    let readme = std::fs::read_to_string(grafana_dir().join("README.md")).unwrap();
    let targets = target_labels(&readme);
    let mut exported = Exported::default();
    for text in scrape_after_traffic().await {
        exported.add(&text);
    }
    let problems = check_queries(&dashboards, &exported, &targets);
    let checked: usize = dashboards
        .iter()
        .map(|(_, d)| grafana::queries(d).len())
        .sum();
    println!(
        "{checked} queries in {} dashboards checked against {} exported families",
        dashboards.len(),
        exported.types.len()
    );
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn dashboards_have_what_grafana_needs_to_import_them() {
    let dashboards = load_dashboards();
    let mut problems: Vec<String> = dashboards
        .iter()
        .flat_map(|(file, d)| grafana::check_structure(file, d))
        .collect();
    let mut uids = BTreeSet::new();
    for (file, d) in &dashboards {
        if !uids.insert(d["uid"].as_str().unwrap_or_default()) {
            problems.push(format!(
                "{file}: uid {} is used by another dashboard",
                d["uid"]
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn dashboards_link_to_each_other_by_uids_tags_and_variables_that_exist() {
    let dashboards = load_dashboards();
    let problems = grafana::check_links(&dashboards);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_readme_scrape_config_adds_the_labels_the_dashboards_filter_on() {
    let readme = std::fs::read_to_string(grafana_dir().join("README.md")).unwrap();
    let labels = target_labels(&readme);
    for l in ["namespace", "pod"] {
        assert!(
            labels.contains(l),
            "README scrape config sets no `{l}`: {labels:?}"
        );
    }
}

/// A tiny exposition to hold expressions against in the unit tests below.
const EXPOSITION: &str = "\
# TYPE tandem_requests_total counter
tandem_requests_total{backend=\"web-v2\",code=\"200\",dst_service=\"web\",route=\"\"} 3
# TYPE tandem_request_duration_seconds histogram
tandem_request_duration_seconds_bucket{dst_service=\"web\",le=\"0.1\"} 1
tandem_request_duration_seconds_bucket{dst_service=\"web\",le=\"+Inf\"} 1
tandem_request_duration_seconds_sum{dst_service=\"web\"} 0.01
tandem_request_duration_seconds_count{dst_service=\"web\"} 1
";

/// The problems `check_queries` finds with a one-panel dashboard querying `expr`.
fn problems_with(expr: &str) -> Vec<String> {
    let dash = serde_json::json!({
        "panels": [{"id": 1, "title": "t", "targets": [{"refId": "A", "expr": expr}]}]
    });
    let mut exported = Exported::default();
    exported.add(EXPOSITION);
    let targets = target_labels("target_label: pod\n");
    check_queries(&[("test.json".into(), dash)], &exported, &targets)
}

#[test]
fn the_check_catches_a_misspelled_metric_name() {
    let good = "sum by (dst_service) (rate(tandem_requests_total[5m]))";
    assert_eq!(problems_with(good), Vec::<String>::new());
    let bad = problems_with("sum by (dst_service) (rate(tandem_request_total[5m]))");
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].contains("`tandem_request_total` is not exported"),
        "{bad:?}"
    );
}

#[test]
fn the_check_catches_labels_the_metric_lacks_or_leaves_empty() {
    let p = problems_with(
        "sum by (dst_servce, pod) (rate(tandem_requests_total{code!~\"5..\"}[$__rate_interval]))",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("label `dst_servce` is not on"), "{p:?}");
    let p = problems_with("sum by (route) (rate(tandem_requests_total[5m]))");
    assert!(p.len() == 1 && p[0].contains("always empty"), "{p:?}");
    // `le` belongs to the buckets, not to the family's other series.
    let q = "histogram_quantile(0.99, \
             sum by (le, dst_service) (rate(tandem_request_duration_seconds_bucket[5m])))";
    assert_eq!(problems_with(q), Vec::<String>::new());
    let p = problems_with("sum by (le) (rate(tandem_request_duration_seconds_count[5m]))");
    assert!(p.len() == 1 && p[0].contains("label `le`"), "{p:?}");
    // A counter is not a histogram: no `_count` of it exists.
    let p = problems_with("rate(tandem_requests_total_count[5m])");
    assert!(p.len() == 1 && p[0].contains("not exported"), "{p:?}");
}

#[test]
fn a_stale_not_exercised_entry_fails_once_the_metric_appears() {
    let expr = "sum by (dst_service, protocol) (rate(tandem_authz_denied_total[5m]))";
    assert_eq!(problems_with(expr), Vec::<String>::new());
    let dash = serde_json::json!({
        "panels": [{"id": 1, "title": "t", "targets": [{"refId": "A", "expr": expr}]}]
    });
    let mut exported = Exported::default();
    exported.add(
        "# TYPE tandem_authz_denied_total counter\n\
         tandem_authz_denied_total{dst_service=\"api\",port=\"80\"} 1\n",
    );
    let p = check_queries(&[("test.json".into(), dash)], &exported, &BTreeSet::new());
    assert!(p.iter().any(|p| p.contains("NOT_EXERCISED lists")), "{p:?}");
    assert!(
        p.iter().any(|p| p.contains("label `protocol` is not on")),
        "{p:?}"
    );
}

//! How `tandemctl` shows answers: tables by default, JSON or YAML on request.

use serde_json::Value;
use tandem_resources::clock::utc;
use tandem_resources::Kind;

use super::{CtlError, Format};

/// Prints `answer` as `format`, or through `human` when no format was asked for.
pub fn print(
    format: Option<Format>,
    answer: &Value,
    human: impl FnOnce(&Value) -> String,
) -> Result<(), CtlError> {
    let text = match format {
        Some(Format::Json) => serde_json::to_string_pretty(answer)
            .map(|s| s + "\n")
            .map_err(|e| CtlError(e.to_string()))?,
        Some(Format::Yaml) => serde_yaml::to_string(answer).map_err(|e| CtlError(e.to_string()))?,
        None => human(answer),
    };
    print!("{text}");
    Ok(())
}

/// `apply`'s answer.
pub fn applied(a: &Value) -> String {
    let changed: Vec<&str> = a["changed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if changed.is_empty() {
        return format!("no change (revision {})\n", a["revision"]);
    }
    let mut out: String = changed
        .iter()
        .map(|c| format!("{c} configured\n"))
        .collect();
    out.push_str(&format!("revision {}\n", a["revision"]));
    out
}

/// The route's `Accepted` (over every parent) and `ResolvedRefs` as `True` or
/// `False(Reason)`; empty without a status.
fn route_conditions(parents: &Value) -> (String, String) {
    let mut accepted: Option<String> = None;
    let mut resolved: Option<String> = None;
    for p in parents.as_array().into_iter().flatten() {
        for c in p["conditions"].as_array().into_iter().flatten() {
            let text = if c["status"] == "True" {
                "True".to_string()
            } else {
                format!("False({})", s(&c["reason"]))
            };
            let slot = match c["type"].as_str() {
                Some("Accepted") => &mut accepted,
                Some("ResolvedRefs") => &mut resolved,
                _ => continue,
            };
            // A false condition on any parent is the route's.
            if slot.as_deref().is_none_or(|t| t == "True") {
                *slot = Some(text);
            }
        }
    }
    (accepted.unwrap_or_default(), resolved.unwrap_or_default())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A list of resources as a table.
pub fn table(kind: Kind, answer: &Value) -> String {
    let items: Vec<&Value> = answer["items"].as_array().into_iter().flatten().collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    match kind {
        Kind::Service => {
            rows.push(cols(&[
                "NAMESPACE",
                "NAME",
                "PORTS",
                "MTLS",
                "DNS",
                "REVISION",
            ]));
            for i in &items {
                let ports: Vec<String> = i["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| format!("{}/{}", s(&p["port"]), s(&p["protocol"])))
                    .collect();
                let dns = &i["spec"]["dns"];
                let dns = if dns.is_null() {
                    String::new()
                } else if !dns["srv"].is_null() {
                    format!("srv {}", s(&dns["srv"]))
                } else {
                    format!("{}:{}", s(&dns["name"]), s(&dns["port"]))
                };
                rows.push(vec![
                    s(&i["metadata"]["namespace"]),
                    s(&i["metadata"]["name"]),
                    ports.join(","),
                    match i["spec"]["mtls"]["mode"].as_str() {
                        Some(mode) => mode.to_string(),
                        None => "mutual".to_string(),
                    },
                    dns,
                    s(&i["status"]["updatedRevision"]),
                ]);
            }
        }
        Kind::Endpoint => {
            rows.push(cols(&[
                "NAMESPACE",
                "SERVICE",
                "ADDRESS",
                "LABELS",
                "SOURCE",
            ]));
            for i in &items {
                let labels: Vec<String> = i["spec"]["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", s(v)))
                    .collect();
                let source = s(&i["metadata"]["annotations"][tandem_resources::SOURCE_ANNOTATION]);
                rows.push(vec![
                    s(&i["metadata"]["namespace"]),
                    s(&i["spec"]["service"]),
                    s(&i["spec"]["address"]),
                    labels.join(","),
                    if source.is_empty() {
                        "api".into()
                    } else {
                        source
                    },
                ]);
            }
        }
        // GRPCRoute has the same parentRefs / rules / backendRefs shape.
        Kind::HttpRoute | Kind::GrpcRoute => {
            rows.push(cols(&[
                "NAMESPACE",
                "NAME",
                "PARENTS",
                "RULES",
                "BACKENDS",
                "ACCEPTED",
                "RESOLVED",
            ]));
            for i in &items {
                let parents: Vec<String> = i["spec"]["parentRefs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| s(&p["name"]))
                    .collect();
                let rules = i["spec"]["rules"].as_array().map(Vec::len).unwrap_or(0);
                let backends: Vec<String> = i["spec"]["rules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|r| r["backendRefs"].as_array().into_iter().flatten())
                    .map(|b| {
                        let w = if b["weight"].is_null() {
                            "1".into()
                        } else {
                            s(&b["weight"])
                        };
                        format!("{}({w})", s(&b["name"]))
                    })
                    .collect();
                let (accepted, resolved) = route_conditions(&i["status"]["parents"]);
                rows.push(vec![
                    s(&i["metadata"]["namespace"]),
                    s(&i["metadata"]["name"]),
                    parents.join(","),
                    rules.to_string(),
                    backends.join(","),
                    accepted,
                    resolved,
                ]);
            }
        }
        Kind::DestinationPolicy => {
            rows.push(cols(&[
                "NAMESPACE",
                "NAME",
                "TARGET",
                "LB",
                "OUTLIER",
                "REVISION",
            ]));
            for i in &items {
                let spec = &i["spec"];
                let target = match spec["targetRef"]["namespace"].as_str() {
                    Some(ns) => format!("{ns}/{}", s(&spec["targetRef"]["name"])),
                    None => s(&spec["targetRef"]["name"]),
                };
                let lb = if spec["loadBalancer"].is_null() {
                    "peakEwma".into()
                } else {
                    s(&spec["loadBalancer"])
                };
                let outlier = if spec["outlierDetection"].is_null() {
                    "off"
                } else {
                    "on"
                };
                rows.push(vec![
                    s(&i["metadata"]["namespace"]),
                    s(&i["metadata"]["name"]),
                    target,
                    lb,
                    outlier.into(),
                    s(&i["status"]["updatedRevision"]),
                ]);
            }
        }
        Kind::FaultInjection => {
            rows.push(cols(&["NAMESPACE", "NAME", "DELAY", "ABORT", "REVISION"]));
            // Absent percent means every request.
            let pct = |v: &Value| {
                if v.is_null() {
                    "100".to_string()
                } else {
                    s(v)
                }
            };
            for i in &items {
                let (d, a) = (&i["spec"]["delay"], &i["spec"]["abort"]);
                let delay = if d.is_null() {
                    String::new()
                } else {
                    format!("{} ({}%)", s(&d["fixedDelay"]), pct(&d["percent"]))
                };
                let abort = if a.is_null() {
                    String::new()
                } else {
                    format!("{} ({}%)", s(&a["httpStatus"]), pct(&a["percent"]))
                };
                rows.push(vec![
                    s(&i["metadata"]["namespace"]),
                    s(&i["metadata"]["name"]),
                    delay,
                    abort,
                    s(&i["status"]["updatedRevision"]),
                ]);
            }
        }
        Kind::AuthorizationPolicy => {
            rows.push(cols(&[
                "NAMESPACE",
                "NAME",
                "TARGET",
                "ACTION",
                "RULES",
                "REVISION",
            ]));
            for i in &items {
                let spec = &i["spec"];
                // No targetRef: the policy covers its whole namespace.
                let target = match spec["targetRef"]["name"].as_str() {
                    Some(name) => name.to_string(),
                    None => "*".to_string(),
                };
                let action = match spec["action"].as_str() {
                    Some(a) => a.to_string(),
                    None => "ALLOW".to_string(),
                };
                let rules = spec["rules"].as_array().map_or(0, Vec::len);
                rows.push(vec![
                    s(&i["metadata"]["namespace"]),
                    s(&i["metadata"]["name"]),
                    target,
                    action,
                    rules.to_string(),
                    s(&i["status"]["updatedRevision"]),
                ]);
            }
        }
    }
    if items.is_empty() {
        return format!("no {}\n", kind.plural());
    }
    render(&rows)
}

/// The history as a table.
pub fn history(answer: &Value) -> String {
    let mut rows = vec![cols(&["REVISION", "TIME (UTC)", "WHO", "SUMMARY"])];
    for i in answer["items"].as_array().into_iter().flatten() {
        rows.push(vec![
            s(&i["revision"]),
            utc(i["time_unix"].as_u64().unwrap_or(0)),
            s(&i["who"]),
            s(&i["summary"]),
        ]);
    }
    if rows.len() == 1 {
        return "no revisions yet\n".into();
    }
    render(&rows)
}

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// Rows as left-aligned columns, two spaces apart.
pub fn render(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<w$}", w = widths[c]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A share (0..=1) as `98.00%`, `-` when absent.
pub fn percent(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |x| format!("{:.2}%", x * 100.0))
}

/// Seconds as `4.2ms`, `-` when absent.
pub fn millis(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |x| format!("{:.1}ms", x * 1000.0))
}

/// The line under a table of the proxies' metrics: how many proxies report over which
/// window, or why there is nothing yet.
pub fn metrics_footer(
    window_seconds: &Value,
    scraped: &Value,
    reporting: &Value,
    what: &str,
) -> String {
    let n = reporting.as_u64().unwrap_or(0);
    if n == 0 {
        format!("no metrics from proxies yet ({scraped} proxies scraped; rates need two scrapes)\n")
    } else {
        format!(
            "{what}last {:.0} s, {n} {} reporting\n",
            window_seconds.as_f64().unwrap_or(0.0),
            if n == 1 { "proxy" } else { "proxies" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = render(&[cols(&["A", "BB"]), cols(&["ccc", "d"])]);
        assert_eq!(t, "A    BB\nccc  d\n");
    }
}

//! Grafana dashboards as JSON: their panels, templating variables and queries, and what
//! Grafana needs to import one.
//!
//! Support for `tests/tests/dashboards.rs`, which holds the dashboards in `deploy/grafana/`
//! to the metrics real proxies export: this module finds every query a dashboard runs
//! ([`queries`]) for [`crate::promql`] to read, checks the rest of the JSON
//! ([`check_structure`]), and the links between the dashboards ([`check_links`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Grafana's own variables, usable in any query.
const BUILTINS: &[&str] = &[
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
];

/// Every `*.json` dashboard in `dir`, parsed, with its file name, in name order. Panics when
/// there is none, or one is not JSON.
pub fn load_dir(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            (file_name(p), json)
        })
        .collect()
}

/// The last component of `p`, for messages.
fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// A query found in a dashboard.
#[derive(Debug)]
pub enum Query {
    /// A PromQL expression (a panel target, or a `query_result(...)` variable).
    PromQl(String),
    /// `label_values(selector, label)`: the label is read off the selector's series.
    LabelValues(String, String),
    /// A variable query this check cannot read, and why.
    Invalid(String),
}

/// Every query of a dashboard, with where it is (for messages).
pub fn queries(dash: &Value) -> Vec<(String, Query)> {
    let mut out = Vec::new();
    for panel in all_panels(dash) {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let place = format!(
                    "panel {} {title:?} target {}",
                    panel["id"],
                    target["refId"].as_str().unwrap_or("?")
                );
                out.push((place, Query::PromQl(expr.to_owned())));
            }
        }
    }
    for var in variables(dash) {
        if var["type"] != "query" {
            continue;
        }
        let name = var["name"].as_str().unwrap_or("?");
        let place = format!("variable {name:?}");
        let query = match variable_query(var).map(parse_variable_query) {
            Some(Ok(query)) => query,
            Some(Err(e)) => Query::Invalid(e),
            None => Query::Invalid("no query".into()),
        };
        out.push((place, query));
    }
    out
}

/// A variable's query text: a string, or `{"query": "..."}` as newer Grafana writes it.
fn variable_query(var: &Value) -> Option<&str> {
    var["query"]
        .as_str()
        .or_else(|| var["query"]["query"].as_str())
        .or_else(|| var["definition"].as_str())
}

/// Grafana's Prometheus variable query forms that name metrics.
fn parse_variable_query(q: &str) -> Result<Query, String> {
    let q = q.trim();
    if let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let (sel, label) = inner
            .rsplit_once(',')
            .ok_or("label_values without a selector: it would list every metric's values")?;
        return Ok(Query::LabelValues(
            sel.trim().to_owned(),
            label.trim().to_owned(),
        ));
    }
    if let Some(inner) = q
        .strip_prefix("query_result(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return Ok(Query::PromQl(inner.to_owned()));
    }
    Err(format!("unsupported variable query {q:?}"))
}

/// The panels of a dashboard, including those nested in (collapsed) rows.
fn all_panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// The templating variables of a dashboard.
fn variables(dash: &Value) -> impl Iterator<Item = &Value> {
    dash["templating"]["list"].as_array().into_iter().flatten()
}

/// What is wrong with a dashboard as a Grafana import: required fields, unique panel ids,
/// every panel on the `${datasource}` variable, every `$variable` defined.
pub fn check_structure(file: &str, dash: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut fail = |p: String| problems.push(format!("{file}: {p}"));
    for key in ["title", "uid"] {
        if dash[key].as_str().is_none_or(str::is_empty) {
            fail(format!("`{key}` must be a non-empty string"));
        }
    }
    // Grafana refuses longer uids.
    if dash["uid"].as_str().is_some_and(|u| u.len() > 40) {
        fail("`uid` is longer than 40 characters".into());
    }
    // Datasources as {type, uid} objects, which the `${datasource}` references rely on,
    // came with schema 33; 36 and later are migrated forward without prompts.
    if dash["schemaVersion"].as_u64().is_none_or(|v| v < 36) {
        fail("`schemaVersion` must be a number >= 36".into());
    }
    if dash["panels"].as_array().is_none_or(Vec::is_empty) {
        fail("`panels` must be a non-empty array".into());
    }

    let vars: BTreeSet<&str> = variables(dash).filter_map(|v| v["name"].as_str()).collect();
    let ds = variables(dash).find(|v| v["name"] == "datasource");
    if ds.is_none_or(|v| v["type"] != "datasource" || v["query"] != "prometheus") {
        fail("needs a `datasource` variable of type datasource, query prometheus".into());
    }
    for v in variables(dash).filter(|v| v["type"] == "query") {
        if v["datasource"]["uid"] != "${datasource}" {
            fail(format!(
                "variable {} must use datasource uid ${{datasource}}",
                v["name"]
            ));
        }
        for used in variable_query(v).map(grafana_vars).unwrap_or_default() {
            if !vars.contains(used.as_str()) && !BUILTINS.contains(&used.as_str()) {
                fail(format!("variable {} uses undefined ${used}", v["name"]));
            }
        }
    }

    let mut ids = BTreeSet::new();
    for panel in all_panels(dash) {
        let Some(id) = panel["id"].as_u64() else {
            fail(format!("panel {:?} has no numeric `id`", panel["title"]));
            continue;
        };
        if !ids.insert(id) {
            fail(format!("panel id {id} is used twice"));
        }
        if panel["title"].as_str().is_none_or(str::is_empty) {
            fail(format!("panel {id} has no title"));
        }
        let grid = &panel["gridPos"];
        if ["h", "w", "x", "y"]
            .iter()
            .any(|k| grid[k].as_u64().is_none())
        {
            fail(format!("panel {id} needs gridPos h, w, x, y"));
        }
        // Grafana interpolates variables in titles and descriptions too.
        for key in ["title", "description"] {
            for used in panel[key].as_str().map(grafana_vars).unwrap_or_default() {
                if !vars.contains(used.as_str()) && !BUILTINS.contains(&used.as_str()) {
                    fail(format!("panel {id} {key} uses undefined ${used}"));
                }
            }
        }
        if panel["type"] == "row" {
            continue;
        }
        if panel["type"] == "text" {
            // Markdown and no query: nothing to check but its variables.
            let content = panel["options"]["content"].as_str().unwrap_or("");
            if content.trim().is_empty() {
                fail(format!("text panel {id} has no `options.content`"));
            }
            for used in grafana_vars(content) {
                if !vars.contains(used.as_str()) && !BUILTINS.contains(&used.as_str()) {
                    fail(format!("text panel {id} uses undefined ${used}"));
                }
            }
            if panel["targets"].as_array().is_some_and(|t| !t.is_empty()) {
                fail(format!(
                    "text panel {id} has targets, which Grafana ignores"
                ));
            }
            continue;
        }
        if panel["type"].as_str().is_none() {
            fail(format!("panel {id} has no type"));
        }
        if panel["datasource"]["uid"] != "${datasource}" {
            fail(format!(
                "panel {id} must use datasource uid ${{datasource}}"
            ));
        }
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        if targets.is_empty() {
            fail(format!("panel {id} has no targets"));
        }
        let mut ref_ids = BTreeSet::new();
        for t in targets {
            let r = t["refId"].as_str().unwrap_or("");
            if r.is_empty() || !ref_ids.insert(r) {
                fail(format!("panel {id}: refIds must be present and unique"));
            }
            if !t["datasource"].is_null() && t["datasource"]["uid"] != "${datasource}" {
                fail(format!(
                    "panel {id} target {r}: datasource must be ${{datasource}}"
                ));
            }
            let expr = t["expr"].as_str().unwrap_or("");
            if expr.trim().is_empty() {
                fail(format!("panel {id} target {r} has no `expr`"));
            }
            for used in grafana_vars(expr) {
                if !vars.contains(used.as_str()) && !BUILTINS.contains(&used.as_str()) {
                    fail(format!("panel {id} target {r} uses undefined ${used}"));
                }
            }
        }
    }
    problems
}

/// Where a dashboard link leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// A URL (a dashboard `link`, a panel link, a data link).
    Url(String),
    /// Every dashboard with all these tags (a dashboard link of type `dashboards`).
    Tags(Vec<String>),
}

/// Every link of a dashboard, with where it is (for messages): its own `links`, and each
/// panel's links and data links (field defaults and overrides).
pub fn links(dash: &Value) -> Vec<(String, Link)> {
    let mut out = Vec::new();
    for (i, l) in dash["links"].as_array().into_iter().flatten().enumerate() {
        let place = format!(
            "dashboard link {i} {:?}",
            l["title"].as_str().unwrap_or("?")
        );
        let link = if l["type"] == "dashboards" {
            let tags = l["tags"].as_array().into_iter().flatten();
            Link::Tags(tags.filter_map(|t| t.as_str().map(str::to_owned)).collect())
        } else {
            Link::Url(l["url"].as_str().unwrap_or_default().to_owned())
        };
        out.push((place, link));
    }
    for panel in all_panels(dash) {
        let place = format!(
            "panel {} {:?}",
            panel["id"],
            panel["title"].as_str().unwrap_or("?")
        );
        let field = &panel["fieldConfig"];
        let overrides = field["overrides"].as_array().into_iter().flatten();
        let properties = overrides.flat_map(|o| o["properties"].as_array().into_iter().flatten());
        let lists = [&panel["links"], &field["defaults"]["links"]]
            .into_iter()
            .chain(
                properties
                    .filter(|p| p["id"] == "links")
                    .map(|p| &p["value"]),
            );
        for l in lists.flat_map(|l| l.as_array().into_iter().flatten()) {
            let url = l["url"].as_str().unwrap_or_default().to_owned();
            out.push((
                format!("{place} link {:?}", l["title"].as_str().unwrap_or("?")),
                Link::Url(url),
            ));
        }
    }
    out
}

/// What is wrong with the links of `dashboards` among themselves: a `/d/<uid>` URL must
/// name one of them and set only variables (`var-name=`, `${name:queryparam}`) that one
/// defines; a tag link must match another; and each dashboard must be reachable from
/// another by a link.
pub fn check_links(dashboards: &[(String, Value)]) -> Vec<String> {
    let mut problems = Vec::new();
    let uid = |d: &Value| d["uid"].as_str().unwrap_or_default().to_owned();
    let tags = |d: &Value| -> BTreeSet<String> {
        let list = d["tags"].as_array().into_iter().flatten();
        list.filter_map(|t| t.as_str().map(str::to_owned)).collect()
    };
    let mut reached = BTreeSet::new();
    for (file, dash) in dashboards {
        for (place, link) in links(dash) {
            let mut fail = |p: String| problems.push(format!("{file}: {place}: {p}"));
            match link {
                Link::Tags(want) => {
                    if want.is_empty() {
                        fail("a dashboards link without tags lists every dashboard".into());
                    }
                    let hits: Vec<_> = dashboards
                        .iter()
                        .filter(|(f, d)| f != file && want.iter().all(|t| tags(d).contains(t)))
                        .collect();
                    if hits.is_empty() {
                        fail(format!("no other dashboard has the tags {want:?}"));
                    }
                    reached.extend(hits.iter().map(|(_, d)| uid(d)));
                }
                Link::Url(url) if url.trim().is_empty() => fail("empty URL".into()),
                Link::Url(url) => {
                    let Some(rest) = url.strip_prefix("/d/") else {
                        continue;
                    };
                    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
                    let target_uid = path.split('/').next().unwrap_or_default();
                    let Some((_, target)) = dashboards.iter().find(|(_, d)| uid(d) == target_uid)
                    else {
                        fail(format!("{url:?}: no dashboard has uid {target_uid:?}"));
                        continue;
                    };
                    if uid(target) != uid(dash) {
                        reached.insert(uid(target));
                    }
                    let defined: BTreeSet<&str> = variables(target)
                        .filter_map(|v| v["name"].as_str())
                        .collect();
                    for param in query.split('&') {
                        let name = if let Some(n) = param.strip_prefix("var-") {
                            n.split('=').next().unwrap_or_default().to_owned()
                        } else if let Some(n) = param
                            .strip_prefix("${")
                            .and_then(|p| p.strip_suffix(":queryparam}"))
                        {
                            n.to_owned()
                        } else {
                            continue;
                        };
                        if !defined.contains(name.as_str()) {
                            fail(format!(
                                "{url:?} sets ${name}, which {target_uid} does not define"
                            ));
                        }
                    }
                }
            }
        }
    }
    for (file, dash) in dashboards {
        if dashboards.len() > 1 && !reached.contains(&uid(dash)) {
            problems.push(format!("{file}: no other dashboard links to it"));
        }
    }
    problems
}

/// The Grafana variables a text refers to: `$name`, `${name}`, `${name:format}`, `[[name]]`.
fn grafana_vars(text: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(['$', '[']) {
        let tail = &rest[i..];
        let (name, skip) = if let Some(t) = tail.strip_prefix("${") {
            (ident(t), 2)
        } else if let Some(t) = tail.strip_prefix("[[") {
            (ident(t), 2)
        } else if let Some(t) = tail.strip_prefix('$') {
            (ident(t), 1)
        } else {
            (String::new(), 1)
        };
        // `$1` in a label_replace replacement is not a variable.
        if !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) {
            out.push(name);
        }
        rest = &tail[skip..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A dashboard with one variable `pod` and one panel querying `expr`.
    fn dashboard(expr: &str) -> Value {
        let ds = json!({"type": "prometheus", "uid": "${datasource}"});
        json!({
            "title": "t", "uid": "t", "schemaVersion": 39,
            "templating": {"list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {"name": "pod", "type": "query", "datasource": ds,
                 "query": {"query": "label_values(up, pod)"}},
            ]},
            "panels": [{"id": 1, "type": "timeseries", "title": "p", "datasource": ds,
                        "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0},
                        "targets": [{"refId": "A", "expr": expr}]}],
        })
    }

    #[test]
    fn the_structure_check_catches_what_grafana_would_trip_on() {
        let ok = dashboard("rate(up{pod=~\"$pod\"}[$__rate_interval])");
        assert_eq!(check_structure("t.json", &ok), Vec::<String>::new());
        let p = check_structure("t.json", &dashboard("up{pod=~\"$pods\"}"));
        assert!(p.len() == 1 && p[0].contains("undefined $pods"), "{p:?}");
        let mut bad = ok.clone();
        let panel = bad["panels"][0].clone();
        bad["panels"].as_array_mut().unwrap().push(panel);
        bad["panels"][0]["datasource"]["uid"] = json!("prometheus");
        let p = check_structure("t.json", &bad);
        assert!(p.iter().any(|p| p.contains("id 1 is used twice")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("uid ${datasource}")), "{p:?}");
    }

    #[test]
    fn a_text_panel_needs_content_and_no_query() {
        let mut dash = dashboard("up");
        let text = json!({"id": 2, "type": "text", "title": "About $pod",
                          "gridPos": {"h": 8, "w": 12, "x": 12, "y": 0},
                          "options": {"mode": "markdown", "content": "Pods: $pod"}});
        dash["panels"].as_array_mut().unwrap().push(text);
        assert_eq!(check_structure("t.json", &dash), Vec::<String>::new());
        dash["panels"][1]["options"]["content"] = json!("Nodes: $node");
        dash["panels"][1]["title"] = json!("");
        let p = check_structure("t.json", &dash);
        assert!(
            p.iter()
                .any(|p| p.contains("text panel 2 uses undefined $node")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.contains("panel 2 has no title")),
            "{p:?}"
        );
    }

    #[test]
    fn links_must_lead_to_dashboards_and_variables_that_exist() {
        let mut a = dashboard("up");
        a["uid"] = json!("a");
        a["tags"] = json!(["tandem"]);
        let mut b = a.clone();
        b["uid"] = json!("b");
        a["links"] = json!([{"type": "link", "title": "B", "url": "/d/b"}]);
        b["links"] = json!([{"type": "dashboards", "title": "all", "tags": ["tandem"]}]);
        b["panels"][0]["fieldConfig"] = json!({"defaults": {}, "overrides": [{
            "matcher": {"id": "byName", "options": "Pod"},
            "properties": [{"id": "links", "value": [{"title": "pod",
                "url": "/d/a?var-pod=${__value.raw}&${datasource:queryparam}"}]}]}]});
        let found = links(&b);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(matches!(&found[1].1, Link::Url(u) if u.starts_with("/d/a?")));
        let two =
            |a: &Value, b: &Value| vec![("a.json".into(), a.clone()), ("b.json".into(), b.clone())];
        assert_eq!(check_links(&two(&a, &b)), Vec::<String>::new());

        a["links"] = json!([{"type": "link", "title": "B", "url": "/d/c?var-pods=x"}]);
        b["links"] = json!([{"type": "dashboards", "title": "all", "tags": ["other"]}]);
        let p = check_links(&two(&a, &b));
        assert!(
            p.iter().any(|p| p.contains("no dashboard has uid \"c\"")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("no other dashboard has the tags")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("b.json: no other dashboard links to it")),
            "{p:?}"
        );
        a["links"] = json!([{"type": "link", "title": "B", "url": "/d/b?var-pods=x"}]);
        let p = check_links(&two(&a, &b));
        assert!(
            p.iter()
                .any(|p| p.contains("sets $pods, which b does not define")),
            "{p:?}"
        );
    }

    #[test]
    fn queries_come_from_panels_and_variables() {
        let q = queries(&dashboard("rate(x[5m])"));
        assert!(
            matches!(&q[0].1, Query::PromQl(e) if e == "rate(x[5m])"),
            "{q:?}"
        );
        assert!(matches!(&q[1].1, Query::LabelValues(s, l) if s == "up" && l == "pod"));
        assert!(parse_variable_query("label_values(pod)").is_err());
        let vars = grafana_vars("$a ${b:csv} [[c]] $1 $__interval");
        assert_eq!(vars, ["a", "b", "c", "__interval"]);
    }
}

//! Canary releases end to end: the real control plane driven by the real tandemctl and
//! raw REST calls. Every action is exactly one revision; bad input is a 4xx and one line.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::{write, ControlPlane, TempDir};

const SERVICES: &str = r#"
apiVersion: tandem.dev/v1alpha1
kind: Service
metadata: { name: web }
spec: { ports: [ { port: 80, protocol: http } ] }
---
apiVersion: tandem.dev/v1alpha1
kind: Service
metadata: { name: web-v1 }
spec: { ports: [ { port: 8080, protocol: http } ] }
---
apiVersion: tandem.dev/v1alpha1
kind: Service
metadata: { name: web-v2 }
spec: { ports: [ { port: 8080, protocol: http } ] }
"#;

/// A route with an opt-in rule (header → canary only) and a catch-all to the stable.
const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web-split }
spec:
  parentRefs: [ { kind: Service, name: web, port: 80 } ]
  rules:
    - matches: [ { headers: [ { name: x-canary, value: "1" } ] } ]
      backendRefs: [ { name: web-v2, port: 8080 } ]
    - matches: [ { path: { type: PathPrefix, value: / } } ]
      backendRefs: [ { name: web-v1, port: 8080 } ]
"#;

fn setup(tag: &str, with_route: bool) -> (TempDir, ControlPlane) {
    let dir = TempDir::new(tag);
    let cp = ControlPlane::start(dir.path(), &[]);
    let mut text = SERVICES.to_string();
    if with_route {
        text.push_str("---\n");
        text.push_str(ROUTE);
    }
    let file = write(dir.path(), "mesh.yaml", &text);
    cp.ok(&["apply", "-f", &file]);
    (dir, cp)
}

fn revisions(cp: &ControlPlane) -> usize {
    cp.json(&["history"])["items"].as_array().unwrap().len()
}

/// (name, weight) of a rule's backendRefs.
fn weights(route: &Value, rule: usize) -> Vec<(String, i64)> {
    route["spec"]["rules"][rule]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["weight"].as_i64().unwrap_or(1),
            )
        })
        .collect()
}

fn pairs(p: &[(&str, i64)]) -> Vec<(String, i64)> {
    p.iter().map(|(n, w)| (n.to_string(), *w)).collect()
}

/// Runs a canary command with `-o json`, asserting it made exactly one revision.
fn one_revision(cp: &ControlPlane, args: &[&str]) -> Value {
    let before = revisions(cp);
    let mut all = vec!["canary"];
    all.extend(args);
    let answer = cp.json(&all);
    assert_eq!(revisions(cp), before + 1, "{args:?}: {answer}");
    assert_eq!(answer["revision"], before as u64 + 1, "{answer}");
    answer
}

/// A raw API call with the admin token: (status, body).
fn call(cp: &ControlPlane, method: &str, path: &str, body: &str) -> (u16, String) {
    cp.raw(&format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        cp.token(),
        body.len()
    ))
}

fn fails(cp: &ControlPlane, args: &[&str], want: &str) {
    let out = cp.ctl(args);
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    assert!(
        err.contains(want),
        "{args:?}: {err:?} should contain {want:?}"
    );
}

#[test]
fn every_canary_action_is_one_revision_and_walks_the_weights() {
    let (_dir, cp) = setup("canary-walk", false);

    // No route attached: start creates web-canary at the first step.
    let a = one_revision(
        &cp,
        &["start", "web", "--stable", "web-v1", "--canary", "web-v2"],
    );
    assert_eq!(a["routes"], json!(["default/web-canary"]));
    assert_eq!(a["weights"], json!({"web-v1": 95, "web-v2": 5}));
    let route = cp.json(&["get", "routes", "web-canary"]);
    assert_eq!(weights(&route, 0), pairs(&[("web-v1", 95), ("web-v2", 5)]));
    assert_eq!(route["spec"]["parentRefs"][0]["name"], "web");
    let ann = &route["metadata"]["annotations"];
    assert_eq!(ann["canary.tandem.dev/state"], "running");
    assert_eq!(ann["canary.tandem.dev/stable"], "web-v1");
    assert_eq!(ann["canary.tandem.dev/canary"], "web-v2");
    assert_eq!(ann["canary.tandem.dev/steps"], "5,10,25,50,100");
    assert_eq!(ann["canary.tandem.dev/step"], "1");
    assert_eq!(ann["canary.tandem.dev/percent"], "5");

    let a = one_revision(&cp, &["step", "web"]);
    assert_eq!(a["weights"], json!({"web-v1": 90, "web-v2": 10}));
    let a = one_revision(&cp, &["set", "web", "40"]);
    assert_eq!(a["weights"], json!({"web-v1": 60, "web-v2": 40}));
    assert_eq!(a["state"]["step"], 3);
    let a = one_revision(&cp, &["step", "web"]);
    assert_eq!(a["state"]["percent"], 50);
    let a = one_revision(&cp, &["abort", "web"]);
    assert_eq!(a["weights"], json!({"web-v1": 100, "web-v2": 0}));
    assert_eq!(a["state"]["phase"], "aborted");
    let route = cp.json(&["get", "routes", "web-canary"]);
    assert_eq!(weights(&route, 0), pairs(&[("web-v1", 100), ("web-v2", 0)]));
    assert_eq!(
        route["metadata"]["annotations"]["canary.tandem.dev/state"],
        "aborted"
    );

    // Status of an aborted canary is still shown (no proxies: no metrics, not an error).
    let text = cp.ok(&["canary", "status", "web"]);
    assert!(
        text.starts_with("canary default/web: aborted at 0%"),
        "{text}"
    );
    assert!(text.contains("no metrics from proxies yet"), "{text}");

    // Start again with two steps, step to 100, promote.
    one_revision(
        &cp,
        &[
            "start", "web", "--stable", "web-v1", "--canary", "web-v2", "--steps", "50,100",
        ],
    );
    let a = one_revision(&cp, &["step", "web"]);
    assert_eq!(a["weights"], json!({"web-v1": 0, "web-v2": 100}));
    let before = revisions(&cp);
    fails(
        &cp,
        &["canary", "step", "web"],
        "at 100%: run canary promote",
    );
    assert_eq!(revisions(&cp), before);
    let text = cp.ok(&["canary", "status", "web"]);
    assert!(text.contains("web-v2   canary  100"), "{text}");
    let a = one_revision(&cp, &["promote", "web"]);
    assert_eq!(a["state"], Value::Null);
    let route = cp.json(&["get", "routes", "web-canary"]);
    assert_eq!(weights(&route, 0), pairs(&[("web-v1", 0), ("web-v2", 100)]));
    assert!(route["metadata"].get("annotations").is_none(), "{route}");
    fails(
        &cp,
        &["canary", "status", "web"],
        "no canary in progress for default/web",
    );

    // History says what each revision was.
    let history = cp.json(&["history"]);
    let last = history["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last["summary"],
        "canary default/web promote: updated HTTPRoute default/web-canary"
    );
}

#[test]
fn canary_edits_only_the_split_rules_of_an_attached_route_and_survives_restart() {
    let (dir, cp) = setup("canary-route", true);
    let human = cp.ok(&[
        "canary", "start", "web", "--stable", "web-v1", "--canary", "web-v2",
    ]);
    assert_eq!(
        human,
        "canary default/web: web-v1 95% / web-v2 5% (step 1/5, running), revision 2\n"
    );
    let route = cp.json(&["get", "routes", "web-split"]);
    // The opt-in rule still sends every opted-in request to the canary.
    assert_eq!(weights(&route, 0), pairs(&[("web-v2", 1)]));
    assert_eq!(weights(&route, 1), pairs(&[("web-v1", 95), ("web-v2", 5)]));
    assert_eq!(route["spec"]["rules"][1]["backendRefs"][1]["port"], 8080);
    // Nothing else was created.
    let routes = cp.json(&["get", "routes"]);
    assert_eq!(routes["items"].as_array().unwrap().len(), 1);

    // The state lives in the store: a restarted control plane continues it.
    drop(cp);
    let cp = ControlPlane::start(dir.path(), &[]);
    let status = cp.json(&["canary", "status", "web"]);
    assert_eq!(status["state"]["percent"], 5);
    assert_eq!(status["routes"], json!(["default/web-split"]));
    assert_eq!(status["weights"], json!({"web-v1": 95, "web-v2": 5}));
    assert_eq!(status["backends"][1]["role"], "canary");
    assert_eq!(status["metrics"]["proxies_reporting"], 0);
    let a = one_revision(&cp, &["step", "web"]);
    assert_eq!(a["weights"], json!({"web-v1": 90, "web-v2": 10}));
}

#[test]
fn bad_canary_requests_are_4xx_with_one_line_and_change_nothing() {
    let (_dir, cp) = setup("canary-errors", false);
    let before = revisions(&cp);

    fails(
        &cp,
        &[
            "canary", "start", "nope", "--stable", "web-v1", "--canary", "web-v2",
        ],
        "unknown service default/nope",
    );
    fails(
        &cp,
        &[
            "canary", "start", "web", "--stable", "web-v1", "--canary", "web-v9",
        ],
        "unknown service default/web-v9",
    );
    fails(
        &cp,
        &[
            "canary", "start", "web", "--stable", "web-v1", "--canary", "web-v1",
        ],
        "stable and canary are both",
    );
    fails(
        &cp,
        &[
            "canary", "start", "web", "--stable", "web-v1", "--canary", "web-v2", "--steps", "10,5",
        ],
        "steps must increase",
    );
    fails(
        &cp,
        &["canary", "step", "web"],
        "no canary in progress for default/web",
    );
    fails(&cp, &["canary", "abort", "web"], "no canary in progress");
    fails(&cp, &["canary", "status", "web"], "no canary in progress");
    fails(&cp, &["canary", "set", "web", "abc"], "not a number");
    assert_eq!(revisions(&cp), before);

    // The same through the API: statuses, never 500.
    let path = "/v1/canaries/default/web";
    for (method, path, body, code) in [
        (
            "POST",
            "/v1/canaries/default/nope",
            r#"{"action":"step"}"#,
            404,
        ),
        ("POST", path, r#"{"action":"step"}"#, 404),
        ("GET", path, "", 404),
        ("POST", path, r#"{"action":"jump"}"#, 400),
        ("POST", path, r#"{}"#, 400),
        ("POST", path, r#"not json"#, 400),
        ("POST", path, r#"{"action":"set","percent":"x"}"#, 400),
        ("POST", path, r#"{"action":"start","stable":"web-v1"}"#, 400),
        ("POST", path, r#"{"action":"step","extra":1}"#, 400),
        (
            "POST",
            path,
            r#"{"action":"start","stable":"Web_V1","canary":"web-v2"}"#,
            400,
        ),
        (
            "POST",
            "/v1/canaries/Bad_NS/web",
            r#"{"action":"step"}"#,
            400,
        ),
        ("PUT", path, r#"{"action":"step"}"#, 405),
        ("GET", "/v1/canaries/default/web?window=0", "", 400),
    ] {
        let (got, answer) = call(&cp, method, path, body);
        assert_eq!(got, code, "{method} {path} {body}: {answer}");
        assert!(answer.contains("\"error\""), "{answer}");
    }
    assert_eq!(revisions(&cp), before);

    let (code, _) = call(
        &cp,
        "POST",
        path,
        r#"{"action":"start","stable":"web-v1","canary":"web-v2"}"#,
    );
    assert_eq!(code, 200);
    let before = revisions(&cp);
    for (body, code, want) in [
        (
            r#"{"action":"set","percent":150}"#,
            400,
            "percent: 150 is not 0..=100",
        ),
        (r#"{"action":"set","percent":-1}"#, 400, "0..=100"),
        (
            r#"{"action":"start","stable":"web-v1","canary":"web-v2"}"#,
            409,
            "in progress",
        ),
    ] {
        let (got, answer) = call(&cp, "POST", path, body);
        assert_eq!(got, code, "{body}: {answer}");
        assert!(answer.contains(want), "{body}: {answer}");
    }
    fails(
        &cp,
        &["canary", "set", "web", "150"],
        "percent: 150 is not 0..=100",
    );
    fails(
        &cp,
        &["canary", "set", "web", "-5"],
        "percent: -5 is not 0..=100",
    );
    assert_eq!(revisions(&cp), before);

    // Without the token: 401, nothing changes.
    let (code, _) = cp.raw(&format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{{\"action\":\"abort\"}}"
    ));
    assert_eq!(code, 401);
    assert_eq!(revisions(&cp), before);
}

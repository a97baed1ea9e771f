//! End to end: the real control plane driven by the real tandemctl.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::{ctl_cmd, eventually, write, ControlPlane, TempDir, EXAMPLE};

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn apply_get_delete_round_trip() {
    let dir = TempDir::new("roundtrip");
    let cp = ControlPlane::start(dir.path(), &[]);
    let file = write(dir.path(), "example.yaml", EXAMPLE);
    let applied = cp.json(&["apply", "-f", &file]);
    assert_eq!(applied["revision"], 1);
    assert_eq!(applied["changed"].as_array().unwrap().len(), 4, "{applied}");
    // Applying again changes nothing and makes no revision.
    let again = cp.json(&["apply", "-f", &file]);
    assert_eq!(again["revision"], 1);
    assert_eq!(again["changed"], serde_json::json!([]));

    assert_eq!(
        names(&cp.json(&["get", "services"])),
        vec!["reviews", "reviews-v1"]
    );
    assert_eq!(
        names(&cp.json(&["get", "routes", "-n", "default"])),
        vec!["reviews-split"]
    );
    assert!(names(&cp.json(&["get", "routes", "-n", "other"])).is_empty());
    let route = cp.json(&["get", "routes", "reviews-split"]);
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][1]["weight"], 10);
    assert_eq!(route["status"]["createdRevision"], 1);
    let table = cp.ok(&["get", "endpoints"]);
    assert!(
        table.contains("127.0.0.1:9081") && table.contains("version=v1"),
        "{table}"
    );
    let yaml = cp.ok(&["get", "services", "reviews", "-o", "yaml"]);
    assert!(yaml.contains("name: reviews"), "{yaml}");

    // Endpoints are deleted by address.
    let del = cp.json(&["delete", "endpoint", "127.0.0.1:9081"]);
    assert_eq!(del["revision"], 2);
    let del = cp.json(&["delete", "route", "reviews-split"]);
    assert_eq!(del["revision"], 3);
    let missing = cp.ctl(&["get", "routes", "reviews-split"]);
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not found"), "{err}");
    let again = cp.ctl(&["delete", "route", "reviews-split"]);
    assert_eq!(again.status.code(), Some(1));
}

#[test]
fn invalid_route_is_rejected_with_its_path_and_nothing_changes() {
    let dir = TempDir::new("invalid");
    let cp = ControlPlane::start(dir.path(), &[]);
    let good = write(dir.path(), "good.yaml", EXAMPLE);
    cp.ok(&["apply", "-f", &good]);
    let history_before = cp.json(&["history"]);
    let bad = EXAMPLE
        .replace("name: reviews, namespace", "name: ratings, namespace")
        .replace("weight: 10", "weight: 1000001");
    let bad = write(dir.path(), "bad.yaml", &bad);
    let out = cp.ctl(&["apply", "-f", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "tandemctl: documents[2].spec.rules[0].backendRefs[1].weight: must be ≤ 1000000"
    );
    assert_eq!(cp.json(&["history"]), history_before);
    // The valid first document of the rejected request was not applied either.
    assert_eq!(
        names(&cp.json(&["get", "services"])),
        vec!["reviews", "reviews-v1"]
    );

    let unknown = write(
        dir.path(),
        "unknown.yaml",
        "apiVersion: tandem.dev/v1alpha1\nkind: Service\nmetadata: {name: a}\nspec: {prots: []}\n",
    );
    let out = cp.ctl(&["apply", "-f", &unknown]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("tandemctl: documents[0].spec.prots: unknown field"),
        "{err}"
    );
}

#[test]
fn requests_without_the_token_get_401_and_change_nothing() {
    let dir = TempDir::new("auth");
    let cp = ControlPlane::start(dir.path(), &[]);
    let (code, body) = cp.raw(
        "POST /v1/rollback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"revision\": 0}",
    );
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let wrong = write(dir.path(), "wrong-token", "not-the-token\n");
    let out = ctl_cmd(&cp.api, std::path::Path::new(&wrong), &["get", "services"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));
    // The token file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cp.token_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // With the token from the environment it works.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandemctl"))
        .args(["--api", &cp.api, "history"])
        .env("TANDEM_API_TOKEN", cp.token())
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(cp.json(&["history"])["items"], serde_json::json!([]));
}

#[test]
fn bodies_over_4_mib_get_413() {
    let dir = TempDir::new("limit");
    let cp = ControlPlane::start(dir.path(), &[]);
    let token = cp.token();
    let (code, _) = cp.raw(&format!(
        "POST /v1/apply HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 5000000\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(code, 413);
    let (code, body) = cp.raw(&format!(
        "GET /v1/nothing HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(code, 404, "{body}");
}

#[test]
fn history_and_rollback() {
    let dir = TempDir::new("rollback");
    let cp = ControlPlane::start(dir.path(), &[]);
    let v1 = write(dir.path(), "v1.yaml", EXAMPLE);
    cp.ok(&["apply", "-f", &v1]); // 1
    let v2 = write(
        dir.path(),
        "v2.yaml",
        &EXAMPLE
            .replace("weight: 90", "weight: 50")
            .replace("weight: 10", "weight: 50"),
    );
    cp.ok(&["apply", "-f", &v2]); // 2
    cp.ok(&["delete", "service", "reviews"]); // 3
    let history = cp.json(&["history"]);
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[2]["revision"], 3);
    assert_eq!(items[2]["who"], "api");
    assert!(items[1]["summary"]
        .as_str()
        .unwrap()
        .contains("updated HTTPRoute default/reviews-split"));
    let table = cp.ok(&["history"]);
    assert!(table.starts_with("REVISION"), "{table}");

    let back = cp.json(&["rollback", "1"]);
    assert_eq!(back["revision"], 4);
    let route = cp.json(&["get", "routes", "reviews-split"]);
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["weight"], 90);
    assert_eq!(route["status"]["createdRevision"], 1);
    assert!(names(&cp.json(&["get", "services"])).contains(&"reviews".to_string()));
    let bad = cp.ctl(&["rollback", "99"]);
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn backup_restores_into_another_control_plane() {
    let dir = TempDir::new("backup");
    let data1 = dir.path().join("one");
    let data2 = dir.path().join("two");
    let cp1 = ControlPlane::start(&data1, &[]);
    let file = write(dir.path(), "example.yaml", EXAMPLE);
    cp1.ok(&["apply", "-f", &file]);
    let backup = dir.path().join("backup.json").display().to_string();
    cp1.ok(&["backup", &backup]);
    let cp2 = ControlPlane::start(&data2, &[]);
    cp2.ok(&[
        "apply",
        "-f",
        &write(
            dir.path(),
            "other.yaml",
            "apiVersion: tandem.dev/v1alpha1\nkind: Service\nmetadata: {name: other}\n",
        ),
    ]);
    let restored = cp2.json(&["restore", &backup]);
    assert_eq!(restored["revision"], 2);
    assert_eq!(
        names(&cp2.json(&["get", "services"])),
        vec!["reviews", "reviews-v1"]
    );
    assert_eq!(names(&cp2.json(&["get", "routes"])), vec!["reviews-split"]);
    assert_eq!(
        cp2.json(&["get", "endpoints"])["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let not_backup = write(
        dir.path(),
        "x.json",
        "{\"format\": \"nope\", \"revision\": 1, \"time_unix\": 0, \"resources\": []}",
    );
    assert_eq!(cp2.ctl(&["restore", &not_backup]).status.code(), Some(1));
}

#[test]
fn registrations_expire_after_their_ttl() {
    let dir = TempDir::new("ttl");
    let cp = ControlPlane::start(dir.path(), &[]);
    let reg = cp.json(&[
        "endpoint",
        "add",
        "web",
        "127.0.0.1:7001",
        "--label",
        "version=v2",
        "--ttl",
        "1",
    ]);
    assert!(reg["id"].as_str().is_some_and(|id| id.len() == 32), "{reg}");
    let eps = cp.json(&["get", "endpoints"]);
    assert_eq!(eps["items"][0]["spec"]["labels"]["version"], "v2");
    assert!(eventually(Duration::from_secs(10), || {
        cp.json(&["get", "endpoints"])["items"]
            .as_array()
            .unwrap()
            .is_empty()
    }));
    let history = cp.json(&["history"]);
    let last = history["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["who"], "ttl");
    // Registering for an unknown service created it.
    assert!(names(&cp.json(&["get", "services"])).contains(&"web".to_string()));
    // Explicit removal of something absent fails.
    assert_eq!(
        cp.ctl(&["endpoint", "remove", "web", "127.0.0.1:7001"])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn heartbeat_keeps_a_registration_until_interrupted() {
    let dir = TempDir::new("heartbeat");
    let cp = ControlPlane::start(dir.path(), &[]);
    let mut child = ctl_cmd(
        &cp.api,
        &cp.token_file(),
        &[
            "endpoint",
            "add",
            "web",
            "127.0.0.1:7002",
            "--ttl",
            "2",
            "--heartbeat",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        cp.json(&["get", "endpoints"])["items"]
            .as_array()
            .unwrap()
            .len()
            == 1
    }));
    std::thread::sleep(Duration::from_secs(4)); // two TTLs
    assert_eq!(
        cp.json(&["get", "endpoints"])["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(cp.json(&["get", "endpoints"])["items"]
        .as_array()
        .unwrap()
        .is_empty());
    let history = cp.json(&["history"]);
    assert_eq!(
        history["items"].as_array().unwrap().last().unwrap()["who"],
        "api"
    );
}

#[test]
fn acknowledged_apply_survives_kill_9() {
    let dir = TempDir::new("kill9");
    let cp = ControlPlane::start(dir.path(), &[]);
    let file = write(dir.path(), "example.yaml", EXAMPLE);
    let applied = cp.json(&["apply", "-f", &file]);
    assert_eq!(applied["revision"], 1);
    cp.kill9();
    let cp = ControlPlane::start(dir.path(), &[]);
    assert_eq!(names(&cp.json(&["get", "routes"])), vec!["reviews-split"]);
    assert_eq!(cp.json(&["history"])["items"].as_array().unwrap().len(), 1);
    // The token stays the same across restarts.
    let again = cp.json(&["apply", "-f", &file]);
    assert_eq!(again["revision"], 1);
}

#[test]
fn static_file_endpoints_follow_the_file() {
    let dir = TempDir::new("static");
    let one = "apiVersion: tandem.dev/v1alpha1\nkind: Endpoint\nspec: {service: files, address: 127.0.0.1:7101}\n";
    let file = write(dir.path(), "endpoints.yaml", one);
    let cp = ControlPlane::start(&dir.path().join("data"), &["--static-endpoints", &file]);
    let addrs = || -> Vec<String> {
        cp.json(&["get", "endpoints"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["spec"]["address"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(eventually(Duration::from_secs(10), || addrs() == ["127.0.0.1:7101"]));
    let two = format!("{one}---\napiVersion: tandem.dev/v1alpha1\nkind: Endpoint\nspec: {{service: files, address: 127.0.0.1:7102}}\n");
    write(dir.path(), "endpoints.yaml", &two);
    assert!(eventually(Duration::from_secs(10), || addrs().len() == 2));
    write(dir.path(), "endpoints.yaml", &two.replace("7101", "7103"));
    assert!(eventually(Duration::from_secs(10), || addrs()
        == ["127.0.0.1:7102", "127.0.0.1:7103"]));
    let history = cp.json(&["history"]);
    assert!(history["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["who"] == "static-file"));
    // An invalid file keeps the last good set.
    write(dir.path(), "endpoints.yaml", "kind: [");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(addrs().len(), 2);
}

#[test]
fn dns_endpoints_come_from_the_hosts_file() {
    let dir = TempDir::new("dns");
    let cp = ControlPlane::start(dir.path(), &["--dns-refresh", "1"]);
    let svc = "apiVersion: tandem.dev/v1alpha1\nkind: Service\nmetadata: {name: local}\nspec:\n  ports: [{port: 8080}]\n  dns: {name: localhost, port: 8080}\n";
    cp.ok(&["apply", "-f", &write(dir.path(), "svc.yaml", svc)]);
    assert!(eventually(Duration::from_secs(10), || {
        cp.json(&["get", "endpoints"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| {
                e["spec"]["address"] == "127.0.0.1:8080"
                    && e["metadata"]["annotations"]["tandem.dev/source"] == "dns"
            })
    }));
    let history = cp.json(&["history"]);
    assert_eq!(history["items"][1]["who"], "dns");
    // Dropping the DNS spec removes the DNS endpoints.
    let plain = "apiVersion: tandem.dev/v1alpha1\nkind: Service\nmetadata: {name: local}\nspec:\n  ports: [{port: 8080}]\n";
    cp.ok(&["apply", "-f", &write(dir.path(), "svc.yaml", plain)]);
    assert!(eventually(Duration::from_secs(10), || {
        cp.json(&["get", "endpoints"])["items"]
            .as_array()
            .unwrap()
            .is_empty()
    }));
}

const POLICIES: &str = r#"
apiVersion: tandem.dev/v1alpha1
kind: DestinationPolicy
metadata: { name: reviews }
spec:
  targetRef: { name: reviews }
  loadBalancer: leastRequest
  outlierDetection: { consecutive5xx: 3 }
---
apiVersion: tandem.dev/v1alpha1
kind: FaultInjection
metadata: { name: flaky }
spec:
  abort: { httpStatus: 503, percent: 0.5 }
"#;

#[test]
fn get_and_delete_policies_and_faults() {
    let dir = TempDir::new("policies");
    let cp = ControlPlane::start(dir.path(), &[]);
    let file = write(dir.path(), "policies.yaml", POLICIES);
    let applied = cp.json(&["apply", "-f", &file]);
    assert_eq!(
        applied["changed"],
        serde_json::json!([
            "DestinationPolicy default/reviews",
            "FaultInjection default/flaky"
        ])
    );
    assert_eq!(names(&cp.json(&["get", "policies"])), vec!["reviews"]);
    assert_eq!(names(&cp.json(&["get", "faults"])), vec!["flaky"]);
    let table = cp.ok(&["get", "policies"]);
    assert!(table.starts_with("NAMESPACE"), "{table}");
    assert!(
        table.contains("leastRequest") && table.contains("on"),
        "{table}"
    );
    let table = cp.ok(&["get", "faults"]);
    assert!(table.contains("503 (0.5%)"), "{table}");
    let one = cp.json(&["get", "dp", "reviews"]);
    assert_eq!(one["spec"]["outlierDetection"]["consecutive5xx"], 3);

    // A second policy for the same service is rejected with its path; nothing changes.
    let second = write(
        dir.path(),
        "second.yaml",
        &POLICIES.replace("metadata: { name: reviews }", "metadata: { name: other }"),
    );
    let out = cp.ctl(&["apply", "-f", &second]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "documents[0].spec.targetRef: service default/reviews already has a DestinationPolicy"
        ),
        "{err}"
    );
    assert_eq!(cp.json(&["history"])["items"].as_array().unwrap().len(), 1);

    cp.ok(&["delete", "policy", "reviews"]);
    cp.ok(&["delete", "fault", "flaky"]);
    assert!(names(&cp.json(&["get", "policies"])).is_empty());
    assert_eq!(cp.ok(&["get", "faults"]), "no faults\n");
    let unknown = cp.ctl(&["get", "gateways"]);
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains(
            "use services, endpoints, routes, grpcroutes, policies, faults or authorizationpolicies"
        ),
        "{err}"
    );
}

const AUTHZ: &str = r#"
apiVersion: tandem.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: cart-readers, namespace: shop }
spec:
  targetRef: { kind: Service, name: cart }
  rules:
    - from: [ { namespace: ops } ]
      methods: [GET]
"#;

#[test]
fn authorization_policies_apply_get_and_delete() {
    let dir = TempDir::new("cli-authz");
    let cp = ControlPlane::start(dir.path(), &[]);
    cp.ok(&["apply", "-f", &write(dir.path(), "authz.yaml", AUTHZ)]);
    let table = cp.ok(&["get", "authz"]);
    assert!(
        table.starts_with("NAMESPACE  NAME          TARGET  ACTION  RULES"),
        "{table}"
    );
    assert!(table.contains("cart-readers  cart    ALLOW   1"), "{table}");
    let one = cp.json(&["get", "authorizationpolicies", "cart-readers", "-n", "shop"]);
    assert_eq!(one["spec"]["rules"][0]["methods"][0], "GET");
    let bad = write(dir.path(), "bad.yaml", &AUTHZ.replace("[GET]", "[get]"));
    let out = cp.ctl(&["apply", "-f", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("documents[0].spec.rules[0].methods[0]:"),
        "{err}"
    );
    cp.ok(&["delete", "authz", "cart-readers", "-n", "shop"]);
    assert_eq!(cp.ok(&["get", "authz"]), "no authorizationpolicies\n");
}

const GRPC_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: echo }
spec:
  parentRefs: [ { kind: Service, name: echo, port: 80 } ]
  rules:
    - matches: [ { method: { service: grpc.health.v1.Health, method: Check } } ]
      backendRefs: [ { name: echo-v2, port: 80 } ]
    - backendRefs:
        - { name: echo-v1, port: 80, weight: 100 }
        - { name: echo-v2, port: 80, weight: 0 }
"#;

#[test]
fn grpc_routes_apply_get_and_delete() {
    let dir = TempDir::new("grpcroutes");
    let cp = ControlPlane::start(dir.path(), &[]);
    let file = write(dir.path(), "grpc.yaml", GRPC_ROUTE);
    let applied = cp.json(&["apply", "-f", &file]);
    assert_eq!(
        applied["changed"],
        serde_json::json!(["GRPCRoute default/echo"])
    );
    assert_eq!(names(&cp.json(&["get", "grpcroutes"])), vec!["echo"]);
    assert!(
        names(&cp.json(&["get", "routes"])).is_empty(),
        "HTTPRoutes are a separate kind"
    );
    let table = cp.ok(&["get", "grpcroutes"]);
    assert!(
        table.starts_with("NAMESPACE  NAME  PARENTS  RULES"),
        "{table}"
    );
    assert!(
        table.contains("echo-v2(1),echo-v1(100),echo-v2(0)"),
        "{table}"
    );
    let one = cp.json(&["get", "grpcroute", "echo"]);
    assert_eq!(
        one["spec"]["rules"][0]["matches"][0]["method"]["method"],
        "Check"
    );
    let bad = write(
        dir.path(),
        "bad.yaml",
        &GRPC_ROUTE.replace("method: Check", "method: Check/Now"),
    );
    let rejected = cp.ctl(&["apply", "-f", &bad]);
    assert_eq!(rejected.status.code(), Some(1));
    let err = String::from_utf8_lossy(&rejected.stderr);
    assert!(
        err.contains("documents[0].spec.rules[0].matches[0].method.method: \"Check/Now\""),
        "{err}"
    );
    cp.ok(&["delete", "grpcroute", "echo"]);
    assert_eq!(cp.ok(&["get", "grpcroutes"]), "no grpcroutes\n");
}

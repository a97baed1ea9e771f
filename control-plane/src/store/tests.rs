use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use super::*;
use crate::resources::{validate_documents, Resource, SOURCE_ANNOTATION};

/// A temp dir removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "tandem-store-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn svc(name: &str, port: u16) -> Value {
    json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Service", "metadata": {"name": name},
           "spec": {"ports": [{"port": port}]}})
}

fn ep(service: &str, addr: &str) -> Value {
    json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Endpoint",
           "spec": {"service": service, "address": addr}})
}

fn route(name: &str, parent: &str, backends: &[(&str, u32)]) -> Value {
    let refs: Vec<Value> = backends
        .iter()
        .map(|(n, w)| json!({"name": n, "weight": w}))
        .collect();
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": name},
           "spec": {"parentRefs": [{"kind": "Service", "name": parent}],
                    "rules": [{"backendRefs": refs}]}})
}

fn docs(values: Vec<Value>) -> Vec<Resource> {
    validate_documents(values).unwrap()
}

fn key(kind: Kind, name: &str) -> ResourceKey {
    ResourceKey::new(kind, "default", name)
}

#[test]
fn apply_is_one_revision_and_noop_makes_none() {
    let dir = TempDir::new("apply");
    let store = Store::open(&dir.0).unwrap();
    assert_eq!(store.head(), 0);
    let mut rx = store.subscribe();
    let out = store
        .apply(docs(vec![svc("a", 80), svc("b", 81)]), WHO_API)
        .unwrap();
    assert_eq!(out.revision, 1);
    assert_eq!(out.changed, vec!["Service default/a", "Service default/b"]);
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), 1);
    let again = store
        .apply(docs(vec![svc("a", 80), svc("b", 81)]), WHO_API)
        .unwrap();
    assert_eq!(again.revision, 1);
    assert!(again.changed.is_empty());
    assert!(!rx.has_changed().unwrap());
    let changed = store.apply(docs(vec![svc("a", 8080)]), WHO_API).unwrap();
    assert_eq!(changed.revision, 2);
    let a = store.get(&key(Kind::Service, "a")).unwrap().unwrap();
    assert_eq!((a.created, a.updated), (1, 2));
    let h = store.history().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[1].who, "api");
    assert_eq!(h[1].summary, "apply: updated Service default/a");
}

#[test]
fn endpoints_create_their_service_and_deleting_a_service_cascades() {
    let dir = TempDir::new("cascade");
    let store = Store::open(&dir.0).unwrap();
    let out = store
        .apply(
            docs(vec![ep("web", "127.0.0.1:1"), ep("web", "127.0.0.1:2")]),
            WHO_API,
        )
        .unwrap();
    assert_eq!(out.changed.len(), 3, "{:?}", out.changed);
    let web = store.get(&key(Kind::Service, "web")).unwrap().unwrap();
    assert_eq!(web.doc["spec"]["ports"], json!([]));
    assert_eq!(
        store.list(Kind::Endpoint, Some("default")).unwrap().len(),
        2
    );
    assert!(store
        .list(Kind::Endpoint, Some("other"))
        .unwrap()
        .is_empty());
    let del = store.delete(&key(Kind::Service, "web"), WHO_API).unwrap();
    assert_eq!(del.changed.len(), 3);
    assert!(store.list(Kind::Endpoint, None).unwrap().is_empty());
    match store.delete(&key(Kind::Service, "web"), WHO_API) {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(store.head(), 2);
}

#[test]
fn duplicate_endpoint_under_another_name_conflicts() {
    let dir = TempDir::new("conflict");
    let store = Store::open(&dir.0).unwrap();
    store
        .apply(docs(vec![ep("web", "127.0.0.1:1")]), WHO_API)
        .unwrap();
    let mut named = ep("web", "127.0.0.1:1");
    named["metadata"] = json!({"name": "web-one"});
    match store.apply(docs(vec![named]), WHO_API) {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(store.head(), 1);
}

#[test]
fn two_services_may_not_claim_one_virtual_address_and_port() {
    let dir = TempDir::new("vip");
    let store = Store::open(&dir.0).unwrap();
    let svc = |name: &str, port: u16| {
        json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Service", "metadata": {"name": name},
               "spec": {"ports": [{"port": port}], "addresses": ["10.96.0.10"]}})
    };
    store.apply(docs(vec![svc("web", 80)]), WHO_API).unwrap();
    // The same service again (a port added) is no clash with itself.
    store.apply(docs(vec![svc("web", 80)]), WHO_API).unwrap();
    // Another port on the same address is fine; the same port is not.
    store.apply(docs(vec![svc("db", 5432)]), WHO_API).unwrap();
    match store.apply(docs(vec![svc("api", 80)]), WHO_API) {
        Err(StoreError::Conflict(m)) => assert!(m.contains("10.96.0.10:80"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Nor two in one apply.
    match store.apply(docs(vec![svc("x", 9), svc("y", 9)]), WHO_API) {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(store.head(), 2);
}

#[test]
fn reopen_after_drop_keeps_everything() {
    let dir = TempDir::new("reopen");
    {
        let store = Store::open(&dir.0).unwrap();
        store
            .apply(
                docs(vec![svc("a", 80), route("r", "a", &[("a", 1)])]),
                WHO_API,
            )
            .unwrap();
        store.delete(&key(Kind::Service, "a"), WHO_API).unwrap();
    }
    let store = Store::open(&dir.0).unwrap();
    assert_eq!(store.head(), 2);
    assert!(store.get(&key(Kind::Service, "a")).unwrap().is_none());
    assert!(store.get(&key(Kind::HttpRoute, "r")).unwrap().is_some());
    assert_eq!(store.history().unwrap().len(), 2);
}

#[test]
fn state_at_and_rollback_restore_config_but_keep_endpoints() {
    let dir = TempDir::new("rollback");
    let store = Store::open(&dir.0).unwrap();
    store
        .apply(
            docs(vec![svc("a", 80), route("r", "a", &[("v1", 100)])]),
            WHO_API,
        )
        .unwrap(); // 1
    store
        .apply(
            docs(vec![route("r", "a", &[("v1", 50), ("v2", 50)])]),
            WHO_API,
        )
        .unwrap(); // 2
    store.delete(&key(Kind::HttpRoute, "r"), WHO_API).unwrap(); // 3
    store
        .apply(docs(vec![svc("b", 81), ep("v2", "127.0.0.1:9")]), WHO_API)
        .unwrap(); // 4
    let at2 = store.state_at(2).unwrap();
    assert_eq!(at2.len(), 2);
    assert!(store.state_at(0).unwrap().is_empty());
    assert!(matches!(store.state_at(5), Err(StoreError::NotFound(_))));
    let out = store.rollback(2, WHO_API).unwrap();
    assert_eq!(out.revision, 5);
    let r = store.get(&key(Kind::HttpRoute, "r")).unwrap().unwrap();
    assert_eq!(r.created, 1, "rollback keeps the route's creation revision");
    assert_eq!(r.doc, at2[&key(Kind::HttpRoute, "r")].doc);
    assert!(store.get(&key(Kind::Service, "b")).unwrap().is_none());
    // The endpoint is kept, and so is a service for it.
    assert_eq!(store.list(Kind::Endpoint, None).unwrap().len(), 1);
    assert!(store.get(&key(Kind::Service, "v2")).unwrap().is_some());
    let config = store.mesh_config().unwrap();
    let route = &config.routes[&("default".to_string(), "r".to_string())];
    assert_eq!(route.created, 1);
    assert_eq!(route.rules[0].backends.len(), 2);
    // Rolling back to where we are is a no-op.
    assert_eq!(store.rollback(5, WHO_API).unwrap().revision, 5);
    assert!(matches!(
        store.rollback(9, WHO_API),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.history().unwrap()[4].summary.split(':').next(),
        Some("rollback to 2")
    );
}

#[test]
fn backup_and_restore_round_trip() {
    let dir = TempDir::new("backup");
    let store = Store::open(&dir.0).unwrap();
    store
        .apply(
            docs(vec![
                svc("a", 80),
                route("r", "a", &[("a", 1)]),
                ep("a", "127.0.0.1:5"),
            ]),
            WHO_API,
        )
        .unwrap();
    let backup = store.backup().unwrap();
    let text = serde_json::to_string(&backup).unwrap();
    store.delete(&key(Kind::Service, "a"), WHO_API).unwrap();
    store.apply(docs(vec![svc("z", 1)]), WHO_API).unwrap();
    let restored: Backup = serde_json::from_str(&text).unwrap();
    let out = store.restore(restored, WHO_API).unwrap();
    assert_eq!(out.revision, 4);
    let mut now = store.backup().unwrap();
    assert_eq!(now.resources.len(), 3);
    assert!(store.get(&key(Kind::Service, "z")).unwrap().is_none());
    let r = store.get(&key(Kind::HttpRoute, "r")).unwrap().unwrap();
    assert_eq!(r.created, 1);
    // Tampered backups are refused whole.
    now.resources[0].doc["metadata"]["name"] = json!("Bad");
    assert!(matches!(
        store.restore(now, WHO_API),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.head(), 4);
}

#[test]
fn replace_endpoints_touches_only_its_source() {
    let dir = TempDir::new("replace");
    let store = Store::open(&dir.0).unwrap();
    store
        .apply(docs(vec![ep("web", "127.0.0.1:1")]), WHO_API)
        .unwrap();
    let owned = |addr: &str| {
        let mut d = ep("web", addr);
        d["metadata"] = json!({"annotations": {SOURCE_ANNOTATION: "static-file"}});
        d
    };
    let out = store
        .replace_endpoints(
            "static-file",
            None,
            docs(vec![owned("127.0.0.1:2"), owned("127.0.0.1:3")]),
            WHO_STATIC_FILE,
        )
        .unwrap();
    assert_eq!(out.changed.len(), 2);
    let same = store
        .replace_endpoints(
            "static-file",
            None,
            docs(vec![owned("127.0.0.1:2"), owned("127.0.0.1:3")]),
            WHO_STATIC_FILE,
        )
        .unwrap();
    assert!(same.changed.is_empty());
    store
        .replace_endpoints(
            "static-file",
            None,
            docs(vec![owned("127.0.0.1:3")]),
            WHO_STATIC_FILE,
        )
        .unwrap();
    let config = store.mesh_config().unwrap();
    let addrs: Vec<String> = config.endpoints
        [&tandem_xds::domain::ServiceRef::new("default", "web")]
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(addrs, vec!["127.0.0.1:1", "127.0.0.1:3"]);
    assert_eq!(store.history().unwrap().last().unwrap().who, "static-file");
}

/// The child half of [`acknowledged_commits_survive_sigkill`]: when the env var is set,
/// commits revisions forever, printing each acknowledged revision.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("TANDEM_STORE_CRASH_DIR") else {
        return;
    };
    let store = Store::open(std::path::Path::new(&dir)).unwrap();
    for i in 1u64.. {
        let batch: Vec<Value> = (0..10)
            .map(|n| {
                let mut d = svc(&format!("s{n}"), 80);
                d["metadata"]["labels"] = json!({"iteration": i.to_string()});
                d
            })
            .collect();
        let out = store.apply(docs(batch), WHO_API).unwrap();
        println!("ack {}", out.revision);
    }
}

#[test]
fn acknowledged_commits_survive_sigkill() {
    let dir = TempDir::new("crash");
    let exe = std::env::current_exe().unwrap();
    for round in 0..3 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "store::tests::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TANDEM_STORE_CRASH_DIR", &dir.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = 0u64;
        let target = 5 + round * 7;
        while acked < target {
            let line = lines.next().unwrap().unwrap();
            if let Some(n) = line.strip_prefix("ack ") {
                acked = n.trim().parse().unwrap();
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let store = Store::open(&dir.0).unwrap();
        let head = store.head();
        assert!(head >= acked, "acknowledged {acked}, head {head}");
        let history = store.history().unwrap();
        assert_eq!(history.last().unwrap().revision, head);
        assert_eq!(history.len() as u64, head);
        // Every service carries the label of the same (last) iteration: no half revision.
        let labels: std::collections::BTreeSet<String> = store
            .list(Kind::Service, None)
            .unwrap()
            .iter()
            .map(|r| {
                r.doc["metadata"]["labels"]["iteration"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(labels.len(), 1, "{labels:?}");
        assert_eq!(store.changes(head).unwrap().len(), 10);
    }
}

const TRAFFIC: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews, annotations: { retry.tandem.dev/non-idempotent: "true" } }
spec:
  parentRefs: [ { kind: Service, name: reviews } ]
  rules:
    - matches: [ { path: { value: /api } } ]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: { set: [ { name: X-Env, value: prod } ], remove: [ X-Debug ] }
        - type: ResponseHeaderModifier
          responseHeaderModifier: { add: [ { name: X-Served-By, value: mesh } ] }
        - type: URLRewrite
          urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /v2 } }
        - type: RequestMirror
          requestMirror: { backendRef: { name: reviews-shadow }, percent: 10 }
        - type: ExtensionRef
          extensionRef: { group: tandem.dev, kind: FaultInjection, name: flaky }
      backendRefs: [ { name: reviews-v1, weight: 90 }, { name: reviews-v2, weight: 10 } ]
      timeouts: { request: 5s, backendRequest: 2s }
      retry: { codes: [ 503 ], attempts: 2, backoff: 50ms }
    - matches: [ { path: { type: Exact, value: /old } } ]
      filters:
        - type: RequestRedirect
          requestRedirect: { path: { type: ReplaceFullPath, replaceFullPath: /api }, statusCode: 301 }
---
apiVersion: tandem.dev/v1alpha1
kind: DestinationPolicy
metadata: { name: reviews }
spec:
  targetRef: { name: reviews-v1 }
  loadBalancer: roundRobin
  connectionPool: { maxRequests: 100 }
  outlierDetection: { consecutive5xx: 3 }
---
apiVersion: tandem.dev/v1alpha1
kind: FaultInjection
metadata: { name: flaky }
spec:
  delay: { fixedDelay: 1s, percent: 2.5 }
  abort: { httpStatus: 503, percent: 1 }
"#;

#[test]
fn traffic_resources_become_the_mesh_config() {
    use std::time::Duration;
    use tandem_xds::domain::{
        Backend, CallPolicy, DestinationPolicy, FaultAbort, FaultDelay, FaultInjection, Fraction,
        Header, HeaderModifier, LoadBalancer, OutlierDetection, PathMatch, PathModifier,
        PoolLimits, RequestMirror, RequestRedirect, RetryBudget, RetryPolicy, RouteFilters,
        RouteMatch, RouteRule, RouteTimeouts, UrlRewrite,
    };
    let dir = TempDir::new("traffic");
    let store = Store::open(&dir.0).unwrap();
    let resources = validate_documents(crate::resources::parse_text(TRAFFIC).unwrap()).unwrap();
    let out = store.apply(resources, WHO_API).unwrap();
    assert_eq!(
        out.changed,
        vec![
            "HTTPRoute default/reviews",
            "DestinationPolicy default/reviews",
            "FaultInjection default/flaky"
        ]
    );
    assert_eq!(store.list(Kind::DestinationPolicy, None).unwrap().len(), 1);
    assert_eq!(store.list(Kind::FaultInjection, None).unwrap().len(), 1);
    let config = store.mesh_config().unwrap();
    let id = |n: &str| ("default".to_string(), n.to_string());
    let svc = |n: &str| ServiceRef::new("default", n);

    let route = &config.routes[&id("reviews")];
    assert_eq!(route.created, 1);
    assert_eq!(
        route.rules[0],
        RouteRule {
            matches: vec![RouteMatch {
                path: PathMatch::Prefix("/api".into()),
                ..Default::default()
            }],
            backends: vec![
                Backend {
                    service: svc("reviews-v1"),
                    port: None,
                    weight: 90
                },
                Backend {
                    service: svc("reviews-v2"),
                    port: None,
                    weight: 10
                },
            ],
            filters: RouteFilters {
                request_headers: HeaderModifier {
                    set: vec![Header {
                        name: "x-env".into(),
                        value: "prod".into()
                    }],
                    add: vec![],
                    remove: vec!["x-debug".into()],
                },
                response_headers: HeaderModifier {
                    set: vec![],
                    add: vec![Header {
                        name: "x-served-by".into(),
                        value: "mesh".into()
                    }],
                    remove: vec![],
                },
                redirect: None,
                rewrite: Some(UrlRewrite {
                    hostname: None,
                    path: Some(PathModifier::ReplacePrefixMatch("/v2".into())),
                }),
                mirrors: vec![RequestMirror {
                    backend: svc("reviews-shadow"),
                    fraction: Fraction(100_000),
                }],
                fault: Some("flaky".into()),
            },
            timeouts: RouteTimeouts {
                request: Some(Duration::from_secs(5)),
                backend_request: Some(Duration::from_secs(2)),
            },
            retry: Some(RetryPolicy {
                attempts: 2,
                codes: vec![503],
                backoff: Duration::from_millis(50),
                non_idempotent: true,
            }),
        }
    );
    assert_eq!(
        route.rules[1].filters.redirect,
        Some(RequestRedirect {
            scheme: None,
            hostname: None,
            path: Some(PathModifier::ReplaceFullPath("/api".into())),
            port: None,
            status_code: 301,
        })
    );
    assert_eq!(route.rules[1].retry, None);

    assert_eq!(
        config.policies[&id("reviews")],
        DestinationPolicy {
            namespace: "default".into(),
            name: "reviews".into(),
            target: svc("reviews-v1"),
            policy: CallPolicy {
                lb: LoadBalancer::RoundRobin,
                limits: PoolLimits {
                    max_requests: Some(100),
                    ..Default::default()
                },
                outlier: Some(OutlierDetection {
                    consecutive_5xx: Some(3),
                    consecutive_gateway_errors: None,
                    base_ejection_time: Duration::from_secs(30),
                    max_ejection_time: Duration::from_secs(300),
                    max_ejection_percent: 50,
                }),
                retry_budget: RetryBudget {
                    percent: 20,
                    min_retries_per_second: 10
                },
            },
        }
    );
    assert_eq!(
        config.faults[&id("flaky")],
        FaultInjection {
            delay: Some(FaultDelay {
                duration: Duration::from_secs(1),
                fraction: Fraction(25_000),
            }),
            abort: Some(FaultAbort {
                status: 503,
                fraction: Fraction(10_000)
            }),
        }
    );
    // Re-applying the same text is a no-op: the stored normalized form is a fixed point.
    let again = validate_documents(crate::resources::parse_text(TRAFFIC).unwrap()).unwrap();
    assert!(store.apply(again, WHO_API).unwrap().changed.is_empty());
}

fn policy(name: &str, target: &str) -> Value {
    json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "DestinationPolicy",
           "metadata": {"name": name}, "spec": {"targetRef": {"name": target}}})
}

#[test]
fn a_second_policy_for_a_stored_policys_service_is_rejected() {
    let dir = TempDir::new("policy-conflict");
    let store = Store::open(&dir.0).unwrap();
    store
        .apply(docs(vec![policy("a", "web")]), WHO_API)
        .unwrap();
    match store.apply(docs(vec![svc("x", 80), policy("b", "web")]), WHO_API) {
        Err(StoreError::Invalid(e)) => assert_eq!(
            e.to_string(),
            "documents[1].spec.targetRef: service default/web already has a DestinationPolicy: \
             the stored DestinationPolicy default/a"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.head(), 1);
    // Updating the same policy is fine, and so is moving the stored one away in the same
    // request that gives its old service a new policy.
    let mut a2 = policy("a", "web");
    a2["spec"]["loadBalancer"] = json!("roundRobin");
    assert_eq!(store.apply(docs(vec![a2]), WHO_API).unwrap().revision, 2);
    let out = store
        .apply(docs(vec![policy("a", "api"), policy("b", "web")]), WHO_API)
        .unwrap();
    assert_eq!(out.revision, 3);
    let config = store.mesh_config().unwrap();
    assert_eq!(config.policies.len(), 2);
    // Rollback restores policies too: at revision 1 there was only `a` (for web).
    store.rollback(1, WHO_API).unwrap();
    let config = store.mesh_config().unwrap();
    assert_eq!(config.policies.len(), 1);
    let a = &config.policies[&("default".to_string(), "a".to_string())];
    assert_eq!(a.target, ServiceRef::new("default", "web"));
    assert_eq!(a.policy.lb, tandem_xds::domain::LoadBalancer::PeakEwma);
    // A tampered backup with two policies for one service is refused whole.
    let head = store.head();
    let mut backup = store.backup().unwrap();
    let mut second = backup.resources[0].clone();
    assert_eq!(second.key.kind, Kind::DestinationPolicy);
    second.key.name = "c".into();
    second.doc["metadata"]["name"] = json!("c");
    backup.resources.push(second);
    let n = backup.resources.len() - 1;
    match store.restore(backup, WHO_API) {
        Err(StoreError::Invalid(e)) => assert_eq!(
            e.to_string(),
            format!(
                "resources[{n}].spec.targetRef: service default/web already has a \
                 DestinationPolicy: DestinationPolicy default/a (resources[0])"
            )
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.head(), head);
}

#[test]
fn grpc_routes_join_http_routes_in_the_mesh_config() {
    use tandem_xds::domain::{PathMatch, RouteMatch};
    let dir = TempDir::new("grpc");
    let store = Store::open(&dir.0).unwrap();
    // An HTTPRoute and a GRPCRoute of the same name on the same service.
    let grpc = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {"name": "echo"},
        "spec": {"parentRefs": [{"kind": "Service", "name": "echo"}],
                 "rules": [{"matches": [{"method": {"service": "pkg.Echo", "method": "Say"}}],
                            "backendRefs": [{"name": "echo-v2"}]},
                           {"backendRefs": [{"name": "echo-v1", "weight": 100},
                                            {"name": "echo-v2", "weight": 0}]}]}});
    let out = store
        .apply(
            docs(vec![grpc.clone(), route("echo", "echo", &[("echo-v1", 1)])]),
            WHO_API,
        )
        .unwrap();
    assert_eq!(
        out.changed,
        vec!["HTTPRoute default/echo", "GRPCRoute default/echo"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    );
    let stored = store
        .get(&key(Kind::GrpcRoute, "echo"))
        .unwrap()
        .expect("stored under its own kind");
    assert_eq!(stored.doc["kind"], "GRPCRoute");
    assert_eq!(store.list(Kind::GrpcRoute, None).unwrap().len(), 1);
    assert_eq!(store.list(Kind::HttpRoute, None).unwrap().len(), 1);

    let config = store.mesh_config().unwrap();
    let names: Vec<&(String, String)> = config.routes.keys().collect();
    assert_eq!(
        names,
        vec![
            &("default".to_string(), "echo".to_string()),
            &("default".to_string(), "grpc:echo".to_string())
        ]
    );
    let g = &config.routes[&("default".to_string(), "grpc:echo".to_string())];
    assert_eq!(g.parents, vec![ServiceRef::new("default", "echo")]);
    assert_eq!(g.created, out.revision);
    assert_eq!(
        g.rules[0].matches,
        vec![RouteMatch {
            path: PathMatch::Exact("/pkg.Echo/Say".into()),
            ..RouteMatch::default()
        }]
    );
    let weights: Vec<(String, u32)> = g.rules[1]
        .backends
        .iter()
        .map(|b| (b.service.name.clone(), b.weight))
        .collect();
    assert_eq!(
        weights,
        vec![("echo-v1".to_string(), 100), ("echo-v2".to_string(), 0)]
    );

    // Re-applying is a no-op; deleting one kind leaves the other.
    assert!(store
        .apply(docs(vec![grpc]), WHO_API)
        .unwrap()
        .changed
        .is_empty());
    store
        .delete(&key(Kind::GrpcRoute, "echo"), WHO_API)
        .unwrap();
    let config = store.mesh_config().unwrap();
    assert_eq!(config.routes.len(), 1);
    assert!(config
        .routes
        .contains_key(&("default".to_string(), "echo".to_string())));
    // Rollback brings the GRPCRoute back.
    store.rollback(out.revision, WHO_API).unwrap();
    assert_eq!(store.mesh_config().unwrap().routes.len(), 2);
}

const AUTHZ: &str = r#"
apiVersion: tandem.dev/v1alpha1
kind: Service
metadata: { name: cart, namespace: shop }
spec: { ports: [{ port: 8080 }], mtls: { mode: permissive } }
---
apiVersion: tandem.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: cart-readers, namespace: shop }
spec:
  targetRef: { kind: Service, name: cart }
  rules:
    - from: [ { principal: "spiffe://cluster.local/ns/shop/sa/web" }, { namespace: ops }, { authenticated: true } ]
      paths: ["/api/*", "*.js", "/exact", "*"]
      methods: [GET, HEAD]
      ports: [8080]
---
apiVersion: tandem.dev/v1alpha1
kind: AuthorizationPolicy
metadata: { name: no-admin, namespace: shop }
spec:
  action: DENY
  rules: [ { paths: ["/admin/*"] } ]
"#;

#[test]
fn authorization_policies_become_the_mesh_config() {
    use tandem_xds::domain::{
        AuthorizationPolicy, AuthzAction, AuthzRule, PathPattern, Principal, TlsMode,
    };
    let dir = TempDir::new("authz");
    let store = Store::open(&dir.0).unwrap();
    let resources = validate_documents(crate::resources::parse_text(AUTHZ).unwrap()).unwrap();
    let out = store.apply(resources, WHO_API).unwrap();
    assert_eq!(
        out.changed,
        vec![
            "Service shop/cart",
            "AuthorizationPolicy shop/cart-readers",
            "AuthorizationPolicy shop/no-admin"
        ]
    );
    assert_eq!(
        store.list(Kind::AuthorizationPolicy, None).unwrap().len(),
        2
    );
    let config = store.mesh_config().unwrap();
    let cart = ServiceRef::new("shop", "cart");
    assert_eq!(config.services[&cart].tls_mode, TlsMode::Permissive);
    let id = |n: &str| ("shop".to_string(), n.to_string());
    assert_eq!(
        config.authz[&id("cart-readers")],
        AuthorizationPolicy {
            namespace: "shop".into(),
            name: "cart-readers".into(),
            target: Some(cart.clone()),
            action: AuthzAction::Allow,
            rules: vec![AuthzRule {
                from: vec![
                    Principal::Identity("spiffe://cluster.local/ns/shop/sa/web".into()),
                    Principal::Namespace("ops".into()),
                    Principal::Authenticated,
                ],
                paths: vec![
                    PathPattern::Prefix("/api/".into()),
                    PathPattern::Suffix(".js".into()),
                    PathPattern::Exact("/exact".into()),
                    PathPattern::Any,
                ],
                methods: vec!["GET".into(), "HEAD".into()],
                ports: vec![8080],
            }],
        }
    );
    let deny = &config.authz[&id("no-admin")];
    assert_eq!(deny.target, None);
    assert_eq!(deny.action, AuthzAction::Deny);
    // The namespace-wide DENY and the targeted ALLOW both reach cart's inbound side.
    let inbound = config.inbound_policy(&cart);
    assert_eq!(inbound.deny.len(), 1);
    assert_eq!(inbound.allow.map(|a| a.len()), Some(1));
    // Deleting one is a revision like any other.
    store
        .delete(
            &ResourceKey::new(Kind::AuthorizationPolicy, "shop", "no-admin"),
            WHO_API,
        )
        .unwrap();
    assert!(!store
        .mesh_config()
        .unwrap()
        .authz
        .contains_key(&id("no-admin")));
}

#[test]
fn a_chaos_record_ejects_exactly_its_endpoints_of_its_service() {
    let dir = TempDir::new("eject");
    let store = Store::open(&dir.0).unwrap();
    let fault = json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "FaultInjection",
        "metadata": {"name": "chaos-api", "annotations": {
            "chaos.tandem.dev/target": "api",
            "chaos.tandem.dev/ejected": "127.0.0.1:1,127.0.0.1:3"}},
        "spec": {"abort": {"httpStatus": 503, "percent": 0}}});
    store
        .apply(
            docs(vec![
                svc("api", 80),
                svc("web", 80),
                ep("api", "127.0.0.1:1"),
                ep("api", "127.0.0.1:2"),
                ep("api", "127.0.0.1:3"),
                // Another service at an ejected address keeps it.
                ep("web", "127.0.0.1:1"),
            ]),
            "test",
        )
        .unwrap();
    let addresses = |config: &MeshConfig, s: &str| -> Vec<String> {
        config.endpoints[&ServiceRef::new("default", s)]
            .iter()
            .map(|e| e.address.to_string())
            .collect()
    };
    store.apply(docs(vec![fault]), "test").unwrap();
    let config = store.mesh_config().unwrap();
    assert_eq!(addresses(&config, "api"), ["127.0.0.1:2"]);
    assert_eq!(addresses(&config, "web"), ["127.0.0.1:1"]);
    // The record gone, they are back.
    store
        .delete(&key(Kind::FaultInjection, "chaos-api"), "test")
        .unwrap();
    let config = store.mesh_config().unwrap();
    assert_eq!(
        addresses(&config, "api"),
        ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    );
}

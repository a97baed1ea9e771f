//! Request/response sequences against [`AdsStream`].

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status;

use super::*;
use crate::convert::{to_snapshot, ENDPOINT_TYPE, ROUTE_TYPE, SECRET_TYPE};
use crate::domain::*;

fn svc(name: &str) -> ServiceRef {
    ServiceRef::new("default", name)
}

/// `echo` split over `echo-a` and `echo-b`; `endpoints` instances of `echo-a`.
fn snap(version: &str, endpoints: u8) -> XdsSnapshot {
    to_snapshot(&mesh(endpoints), version).unwrap()
}

/// [`snap`]'s mesh with identity (trust bundle `pem`); `deny_b`: a deny policy on echo-b.
fn secure_snap(version: &str, pem: &str, deny_b: bool) -> XdsSnapshot {
    let mut m = mesh(1);
    m.security.trust_domain = "cluster.local".into();
    m.security.trust_bundle_pem = pem.into();
    if deny_b {
        m.authz.insert(
            ("default".into(), "deny-b".into()),
            AuthorizationPolicy {
                namespace: "default".into(),
                name: "deny-b".into(),
                target: Some(svc("echo-b")),
                action: AuthzAction::Deny,
                rules: vec![AuthzRule::default()],
            },
        );
    }
    to_snapshot(&m, version).unwrap()
}

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

fn mesh(endpoints: u8) -> MeshConfig {
    let mut m = MeshConfig::default();
    for n in ["echo", "echo-a", "echo-b"] {
        m.services.insert(
            svc(n),
            Service {
                id: svc(n),
                ports: vec![],
                tls_mode: Default::default(),
                addresses: Vec::new(),
                service_accounts: Vec::new(),
                access_log: None,
            },
        );
    }
    m.endpoints.insert(
        svc("echo-a"),
        (0..endpoints)
            .map(|i| Endpoint {
                service: svc("echo-a"),
                address: format!("127.0.0.1:{}", 50051 + u16::from(i))
                    .parse()
                    .unwrap(),
                labels: Default::default(),
                service_port: None,
            })
            .collect(),
    );
    m.routes.insert(
        ("default".into(), "split".into()),
        HttpRoute {
            namespace: "default".into(),
            name: "split".into(),
            parents: vec![svc("echo")],
            parent_ports: Default::default(),
            rules: vec![RouteRule {
                matches: vec![],
                backends: ["echo-a", "echo-b"]
                    .iter()
                    .map(|n| Backend {
                        service: svc(n),
                        port: None,
                        weight: 50,
                    })
                    .collect(),
                ..Default::default()
            }],
            created: 1,
        },
    );
    m
}

fn req(type_url: &str, names: &[&str], nonce: &str, version: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        type_url: type_url.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn with_node(mut r: DiscoveryRequest) -> DiscoveryRequest {
    r.node = Some(Node {
        id: "node-1".into(),
        cluster: "echo".into(),
        ..Default::default()
    });
    r
}

fn nack(mut r: DiscoveryRequest, msg: &str) -> DiscoveryRequest {
    r.error_detail = Some(Status {
        code: 3,
        message: msg.into(),
        details: vec![],
    });
    r
}

fn one(mut v: Vec<DiscoveryResponse>) -> DiscoveryResponse {
    assert_eq!(v.len(), 1, "expected one response, got {v:?}");
    v.remove(0)
}

fn fq(n: &str) -> String {
    svc(n).fqdn()
}

#[test]
fn envoy_style_wildcard_flow() {
    let s = snap("1", 2);
    let mut st = AdsStream::new();
    let cds = one(st.on_request(with_node(req(CLUSTER_TYPE, &[], "", "")), &s));
    assert_eq!(st.node_id(), Some("node-1"));
    assert_eq!(cds.version_info, "1");
    assert_eq!(cds.resources.len(), 2, "echo-a and echo-b");
    let eds_names = [fq("echo-a"), fq("echo-b")];
    let eds_names: Vec<&str> = eds_names.iter().map(String::as_str).collect();
    let eds = one(st.on_request(req(ENDPOINT_TYPE, &eds_names, "", ""), &s));
    assert_eq!(eds.resources.len(), 2);
    assert!(st
        .on_request(req(CLUSTER_TYPE, &[], &cds.nonce, "1"), &s)
        .is_empty());
    let lds = one(st.on_request(req(LISTENER_TYPE, &[], "", ""), &s));
    assert_eq!(lds.resources.len(), 12, "4 aliases x 3 services");
    assert_ne!(lds.nonce, cds.nonce);
    let rds = one(st.on_request(req(ROUTE_TYPE, &[&fq("echo")], "", ""), &s));
    assert_eq!(rds.resources.len(), 1);
    for (t, r) in [(ENDPOINT_TYPE, &eds), (LISTENER_TYPE, &lds)] {
        let names: &[&str] = if t == ENDPOINT_TYPE { &eds_names } else { &[] };
        assert!(st.on_request(req(t, names, &r.nonce, "1"), &s).is_empty());
    }
    assert!(st
        .on_request(req(ROUTE_TYPE, &[&fq("echo")], &rds.nonce, "1"), &s)
        .is_empty());
    let status = st.status();
    assert_eq!(status.node.as_deref(), Some("node-1"));
    assert_eq!(status.service.as_deref(), Some("echo"));
    assert_eq!(status.acked.len(), 4);
    assert!(status.acked.values().all(|v| v == "1"));
    assert_eq!(st.subscription(LISTENER_TYPE), Some(vec!["*".to_string()]));
}

#[test]
fn grpc_style_by_name_flow() {
    let s = snap("1", 1);
    let mut st = AdsStream::new();
    let lds = one(st.on_request(with_node(req(LISTENER_TYPE, &["echo"], "", "")), &s));
    assert_eq!(lds.resources.len(), 1, "only the named listener");
    // Later requests carry no node; it is remembered.
    assert!(st
        .on_request(req(LISTENER_TYPE, &["echo"], &lds.nonce, "1"), &s)
        .is_empty());
    assert_eq!(st.node_id(), Some("node-1"));
    let rds = one(st.on_request(req(ROUTE_TYPE, &[&fq("echo")], "", ""), &s));
    assert!(st
        .on_request(req(ROUTE_TYPE, &[&fq("echo")], &rds.nonce, "1"), &s)
        .is_empty());
    // A by-name CDS subscription with an empty first request would be wildcard for
    // Envoy; gRPC names its clusters.
    let cds = one(st.on_request(req(CLUSTER_TYPE, &[&fq("echo-a")], "", ""), &s));
    assert_eq!(cds.resources.len(), 1);
    let cds2 = one(st.on_request(
        req(
            CLUSTER_TYPE,
            &[&fq("echo-a"), &fq("echo-b")],
            &cds.nonce,
            "1",
        ),
        &s,
    ));
    assert_eq!(cds2.resources.len(), 2);
    // Names for EDS that do not exist are simply absent from the response.
    let eds = one(st.on_request(req(ENDPOINT_TYPE, &[&fq("echo-a"), "nope"], "", ""), &s));
    assert_eq!(eds.resources.len(), 1);
    assert_eq!(st.acked_version(LISTENER_TYPE), Some("1"));
    // The names change carried the current nonce and no error: it ACKed the first response.
    assert_eq!(st.acked_version(CLUSTER_TYPE), Some("1"));
    assert_eq!(st.acked_version(ENDPOINT_TYPE), None, "not acked yet");
}

#[test]
fn stale_nonce_is_ignored_so_no_response_loop() {
    let s = snap("1", 1);
    let mut st = AdsStream::new();
    let a = fq("echo-a");
    let b = fq("echo-b");
    let r1 = one(st.on_request(with_node(req(CLUSTER_TYPE, &[&a], "", "")), &s));
    // gRPC changes its subscription: answered with a new nonce.
    let r2 = one(st.on_request(req(CLUSTER_TYPE, &[&a, &b], &r1.nonce, "1"), &s));
    // It then sends its ACK of r1 and another change, both carrying the old nonce: stale.
    assert!(st
        .on_request(req(CLUSTER_TYPE, &[&a], &r1.nonce, "1"), &s)
        .is_empty());
    assert!(st
        .on_request(req(CLUSTER_TYPE, &[&b], &r1.nonce, "1"), &s)
        .is_empty());
    assert!(st
        .on_request(req(CLUSTER_TYPE, &[&a, &b], &r1.nonce, "1"), &s)
        .is_empty());
    // Its ACK of r2 ends the exchange: two responses in all.
    assert!(st
        .on_request(req(CLUSTER_TYPE, &[&a, &b], &r2.nonce, "1"), &s)
        .is_empty());
    assert_eq!(st.acked_version(CLUSTER_TYPE), Some("1"));
    assert_eq!(st.subscription(CLUSTER_TYPE), Some(vec![a, b]));
}

#[test]
fn nack_keeps_last_good_and_is_not_resent() {
    let s1 = snap("1", 1);
    let mut st = AdsStream::new();
    let a = fq("echo-a");
    let r1 = one(st.on_request(with_node(req(ENDPOINT_TYPE, &[&a], "", "")), &s1));
    assert!(st
        .on_request(req(ENDPOINT_TYPE, &[&a], &r1.nonce, "1"), &s1)
        .is_empty());
    let s2 = snap("2", 2);
    let r2 = one(st.on_snapshot(&s2));
    assert_eq!(r2.version_info, "2");
    // NACK: the client keeps version 1.
    let n = nack(req(ENDPOINT_TYPE, &[&a], &r2.nonce, "1"), "bad endpoint");
    assert!(st.on_request(n, &s2).is_empty());
    assert_eq!(st.acked_version(ENDPOINT_TYPE), Some("1"));
    let rec = st.last_nack(ENDPOINT_TYPE).unwrap();
    assert_eq!(
        (rec.version.as_str(), rec.message.as_str()),
        ("2", "bad endpoint")
    );
    assert_eq!(st.status().nacked.len(), 1);
    // The same content again (a new version of other types only) is not resent.
    assert!(st.on_snapshot(&snap("3", 2)).is_empty());
    // New content is.
    let r4 = one(st.on_snapshot(&snap("4", 3)));
    assert!(st
        .on_request(req(ENDPOINT_TYPE, &[&a], &r4.nonce, "4"), &s1)
        .is_empty());
    assert_eq!(st.acked_version(ENDPOINT_TYPE), Some("4"));
    assert!(st.last_nack(ENDPOINT_TYPE).is_none());
}

#[test]
fn snapshot_pushes_only_changed_subscribed_types() {
    let s1 = snap("1", 1);
    let mut st = AdsStream::new();
    let lds = one(st.on_request(with_node(req(LISTENER_TYPE, &[], "", "")), &s1));
    let eds = one(st.on_request(req(ENDPOINT_TYPE, &[&fq("echo-a")], "", ""), &s1));
    assert!(st.on_snapshot(&snap("2", 1)).is_empty(), "same content");
    let pushed = st.on_snapshot(&snap("3", 2));
    let types: Vec<&str> = pushed.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, [ENDPOINT_TYPE]);
    assert_eq!(pushed[0].version_info, "3");
    // An ACK with the older nonce of the pushed type is stale now.
    assert!(st
        .on_request(req(ENDPOINT_TYPE, &[&fq("echo-a")], &eds.nonce, "1"), &s1)
        .is_empty());
    assert!(st
        .on_request(req(LISTENER_TYPE, &[], &lds.nonce, "1"), &s1)
        .is_empty());
}

#[test]
fn reconnect_with_current_version_is_still_answered() {
    let s = snap("7", 1);
    let mut st = AdsStream::new();
    let r = one(st.on_request(with_node(req(LISTENER_TYPE, &[], "", "7")), &s));
    assert_eq!(r.version_info, "7");
    assert_eq!(r.resources.len(), 12);
    // Unknown types are ignored.
    assert!(st
        .on_request(req("type.googleapis.com/x.Y", &[], "", ""), &s)
        .is_empty());
    assert_eq!(st.subscription(ROUTE_TYPE), None);
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| {
            crate::convert::unpack::<envoy_types::pb::envoy::config::listener::v3::Listener>(a, "x")
                .unwrap()
                .name
        })
        .collect()
}

fn inbound_names(r: &DiscoveryResponse) -> Vec<String> {
    names(r)
        .into_iter()
        .filter(|n| is_inbound_listener(n))
        .collect()
}

#[test]
fn unauthenticated_stream_gets_no_inbound_listener() {
    let s = secure_snap("1", PEM, false);
    assert_eq!(
        s.of_type(LISTENER_TYPE)
            .filter(|(n, _)| is_inbound_listener(n))
            .count(),
        3
    );
    let mut st = AdsStream::new();
    assert_eq!(st.identity(), None);
    let lds = one(st.on_request(with_node(req(LISTENER_TYPE, &[], "", "")), &s));
    assert_eq!(lds.resources.len(), 12);
    assert!(inbound_names(&lds).is_empty());
    // Not by name either.
    let mut st = AdsStream::new();
    let own = inbound_listener_name(&svc("echo-a"));
    let lds = one(st.on_request(req(LISTENER_TYPE, &[&own], "", ""), &s));
    assert!(lds.resources.is_empty());
}

#[test]
fn authenticated_stream_gets_only_its_own_inbound_listener() {
    let s = secure_snap("1", PEM, false);
    let a = svc("echo-a");
    let mut st = AdsStream::with_identity(Some(a.clone()));
    assert_eq!(st.identity(), Some(&a));
    let lds = one(st.on_request(with_node(req(LISTENER_TYPE, &[], "", "")), &s));
    assert_eq!(lds.resources.len(), 13);
    assert_eq!(inbound_names(&lds), vec![inbound_listener_name(&a)]);
    // The stream's resources make a complete view with A's policy.
    let mut res = crate::convert::Resources::new();
    for t in ALL_TYPES {
        res.insert(
            t.to_string(),
            s.of_type(t)
                .filter(|(n, _)| t != LISTENER_TYPE || !is_inbound_listener(n))
                .map(|(n, a)| (n.to_string(), a.clone()))
                .collect(),
        );
    }
    for any in &lds.resources {
        let name =
            crate::convert::unpack::<envoy_types::pb::envoy::config::listener::v3::Listener>(
                any, "x",
            )
            .unwrap()
            .name;
        res.get_mut(LISTENER_TYPE)
            .unwrap()
            .insert(name, any.clone());
    }
    let view = crate::convert::to_proxy_view(&res).unwrap();
    assert_eq!(view.inbound.unwrap().service, a);
}

#[test]
fn another_workloads_inbound_listener_is_not_served_by_name() {
    let s = secure_snap("1", PEM, false);
    let mut st = AdsStream::with_identity(Some(svc("echo-a")));
    let b = inbound_listener_name(&svc("echo-b"));
    let lds = one(st.on_request(with_node(req(LISTENER_TYPE, &[&b, "echo"], "", "")), &s));
    assert_eq!(names(&lds), vec!["echo".to_string()]);
    // Adding its own name: that one comes.
    let a = inbound_listener_name(&svc("echo-a"));
    let lds2 = one(st.on_request(req(LISTENER_TYPE, &[&a, &b], &lds.nonce, "1"), &s));
    assert_eq!(names(&lds2), vec![a]);
}

#[test]
fn another_workloads_policy_change_pushes_nothing() {
    let s1 = secure_snap("1", PEM, false);
    let mut a = AdsStream::with_identity(Some(svc("echo-a")));
    let mut b = AdsStream::with_identity(Some(svc("echo-b")));
    for st in [&mut a, &mut b] {
        let lds = one(st.on_request(with_node(req(LISTENER_TYPE, &[], "", "")), &s1));
        assert!(st
            .on_request(req(LISTENER_TYPE, &[], &lds.nonce, "1"), &s1)
            .is_empty());
    }
    let s2 = secure_snap("2", PEM, true);
    assert!(
        a.on_snapshot(&s2).is_empty(),
        "B's policy is not A's business"
    );
    let pushed = one(b.on_snapshot(&s2));
    assert_eq!(pushed.type_url, LISTENER_TYPE);
    assert_eq!(pushed.version_info, "2");
}

#[test]
fn trust_bundle_secret_is_served_by_name_and_pushed_first() {
    let s1 = secure_snap("1", PEM, false);
    let mut st = AdsStream::with_identity(Some(svc("echo-a")));
    let sds = one(st.on_request(
        with_node(req(SECRET_TYPE, &[TRUST_BUNDLE_SECRET], "", "")),
        &s1,
    ));
    assert_eq!(sds.resources.len(), 1);
    let cds = one(st.on_request(req(CLUSTER_TYPE, &[], "", ""), &s1));
    let lds = one(st.on_request(req(LISTENER_TYPE, &[], "", ""), &s1));
    for (t, r) in [(CLUSTER_TYPE, &cds), (LISTENER_TYPE, &lds)] {
        assert!(st.on_request(req(t, &[], &r.nonce, "1"), &s1).is_empty());
    }
    assert!(st
        .on_request(
            req(SECRET_TYPE, &[TRUST_BUNDLE_SECRET], &sds.nonce, "1"),
            &s1
        )
        .is_empty());
    // New roots: only the secret changes (clusters and listeners name it, not its content).
    let other = PEM.replace("MIIBfake", "MIIBother");
    let pushed = st.on_snapshot(&secure_snap("2", &other, false));
    let types: Vec<&str> = pushed.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, [SECRET_TYPE]);
    // No more identity: the secret goes (an empty response), then clusters and listeners.
    let pushed = st.on_snapshot(&secure_snap("3", "", false));
    let types: Vec<&str> = pushed.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, [SECRET_TYPE, CLUSTER_TYPE, LISTENER_TYPE]);
    assert!(pushed[0].resources.is_empty());
}

//! [`AdsClient`] sequences, alone and against [`AdsStream`](crate::ads::AdsStream).

use std::collections::VecDeque;

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use super::*;
use crate::ads::AdsStream;
use crate::convert::{pack, to_proxy_view, to_snapshot, XdsSnapshot};
use crate::domain::*;

fn svc(name: &str) -> ServiceRef {
    ServiceRef::new("default", name)
}

fn fq(n: &str) -> String {
    svc(n).fqdn()
}

/// `echo` (no routes) with `endpoints` instances, and `other` (no endpoints).
fn snap(version: &str, endpoints: u8) -> XdsSnapshot {
    to_snapshot(&mesh(endpoints), version).unwrap()
}

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

/// [`snap`]'s mesh with identity: trust bundle `pem` (empty: none).
fn secure_snap(version: &str, pem: &str) -> XdsSnapshot {
    let mut m = mesh(2);
    m.security.trust_domain = "cluster.local".into();
    m.security.trust_bundle_pem = pem.into();
    to_snapshot(&m, version).unwrap()
}

fn mesh(endpoints: u8) -> MeshConfig {
    let mut m = MeshConfig::default();
    for n in ["echo", "other"] {
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
        svc("echo"),
        (0..endpoints)
            .map(|i| Endpoint {
                service: svc("echo"),
                address: format!("10.0.0.{}:80", i + 1).parse().unwrap(),
                labels: Default::default(),
                service_port: None,
            })
            .collect(),
    );
    m
}

/// Runs client and server until neither has anything to say; returns the number of
/// responses and the last view published.
fn pump(
    client: &mut AdsClient,
    server: &mut AdsStream,
    mut queue: VecDeque<DiscoveryRequest>,
    snap: &XdsSnapshot,
) -> (usize, Option<ProxyView>) {
    let mut responses = 0;
    let mut view = None;
    while let Some(req) = queue.pop_front() {
        for resp in server.on_request(req, snap) {
            responses += 1;
            assert!(responses < 50, "response loop");
            let step = client.on_response(resp);
            queue.extend(step.requests);
            view = step.view.or(view);
        }
    }
    (responses, view)
}

fn connected(version: &str) -> (AdsClient, AdsStream, XdsSnapshot) {
    let s = snap(version, 2);
    let mut client = AdsClient::new("proxy-1", "echo");
    let mut server = AdsStream::new();
    let reqs = client.connect_requests().into();
    let (n, view) = pump(&mut client, &mut server, reqs, &s);
    assert_eq!(n, 5, "LDS, CDS, SDS, RDS, EDS once each");
    assert_eq!(view.unwrap(), to_proxy_view(s.resources()).unwrap());
    (client, server, s)
}

fn response(type_url: &str, version: &str, nonce: &str, resources: Vec<Any>) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: type_url.into(),
        nonce: nonce.into(),
        ..Default::default()
    }
}

fn of_type(s: &XdsSnapshot, t: &str) -> Vec<Any> {
    s.of_type(t).map(|(_, a)| a.clone()).collect()
}

#[test]
fn converges_with_the_server_and_follows_pushes() {
    let (mut client, mut server, _) = connected("1");
    assert_eq!(server.node_id(), Some("proxy-1"));
    assert_eq!(server.status().acked.len(), 5);
    assert_eq!(client.accepted_version(LISTENER_TYPE), Some("1"));
    assert_eq!(
        client.subscribed_names(ENDPOINT_TYPE),
        vec![fq("echo"), fq("other")]
    );
    // A push of new endpoints: one EDS response, ACKed, new view.
    let s2 = snap("2", 3);
    let pushed = server.on_snapshot(&s2);
    assert_eq!(pushed.len(), 1);
    let step = client.on_response(pushed.into_iter().next().unwrap());
    assert_eq!(step.requests.len(), 1);
    assert!(step.requests[0].error_detail.is_none());
    assert_eq!(step.view.unwrap().clusters[&fq("echo")].endpoints.len(), 3);
    assert!(server.on_request(step.requests[0].clone(), &s2).is_empty());
    assert_eq!(server.acked_version(ENDPOINT_TYPE), Some("2"));
    assert_eq!(client.accepted_versions()[ENDPOINT_TYPE], "2");
}

#[test]
fn nack_carries_error_detail_and_last_good_version() {
    let (mut client, mut server, s1) = connected("1");
    let before = client.view().cloned();
    let mut bad: Cluster =
        crate::convert::unpack(s1.get(CLUSTER_TYPE, &fq("echo")).unwrap(), "x").unwrap();
    bad.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
        cluster::DiscoveryType::Static as i32,
    ));
    let mut resources = of_type(&s1, CLUSTER_TYPE);
    resources[0] = pack(&bad);
    let step = client.on_response(response(CLUSTER_TYPE, "2", "n9", resources));
    assert!(step.view.is_none());
    assert_eq!(step.requests.len(), 1);
    let nack = &step.requests[0];
    assert_eq!(nack.version_info, "1", "last good version");
    assert_eq!(nack.response_nonce, "n9");
    let detail = nack.error_detail.as_ref().unwrap();
    assert_eq!(detail.code, 3);
    assert_eq!(
        detail.message,
        format!(
            "Cluster[{}].type: only EDS clusters are supported, got STATIC",
            fq("echo")
        )
    );
    // The previous view and state stand.
    assert_eq!(client.view().cloned(), before);
    assert_eq!(client.accepted_version(CLUSTER_TYPE), Some("1"));
    assert!(step.nacked);
    let last = client.last_nack_detail().unwrap();
    assert_eq!(client.last_nack(), Some(detail.message.as_str()));
    assert_eq!((last.version.as_str(), last.nonce.as_str()), ("2", "n9"));
    // The server records the NACK it gets (its nonce is not "n9": stale, ignored).
    assert!(server.on_request(nack.clone(), &s1).is_empty());
    // A later valid response of that type clears it.
    let step = client.on_response(response(
        CLUSTER_TYPE,
        "3",
        "n10",
        of_type(&s1, CLUSTER_TYPE),
    ));
    assert!(step.requests[0].error_detail.is_none());
    assert!(step.view.is_none(), "same view as before");
    assert!(client.last_nack().is_none());
}

#[test]
fn wrong_type_and_duplicates_are_nacked() {
    let (mut client, _, s1) = connected("1");
    let step = client.on_response(response(
        LISTENER_TYPE,
        "2",
        "n1",
        of_type(&s1, CLUSTER_TYPE),
    ));
    let msg = &step.requests[0].error_detail.as_ref().unwrap().message;
    assert!(
        msg.starts_with("DiscoveryResponse[Listener].resources[0]: type URL"),
        "{msg}"
    );
    let mut dup = of_type(&s1, ENDPOINT_TYPE);
    dup.push(dup[0].clone());
    let step = client.on_response(response(ENDPOINT_TYPE, "2", "n2", dup));
    let msg = &step.requests[0].error_detail.as_ref().unwrap().message;
    assert!(msg.contains("duplicate resource"), "{msg}");
    let step = client.on_response(response("type.googleapis.com/x.Y", "2", "n3", vec![]));
    assert!(step.requests[0].error_detail.is_some());
    assert_eq!(client.accepted_version(ENDPOINT_TYPE), Some("1"));
}

#[test]
fn incomplete_state_yields_no_view_until_the_last_assignment() {
    let s = snap("1", 1);
    let mut client = AdsClient::new("proxy-1", "echo");
    let reqs = client.connect_requests();
    assert_eq!(reqs.len(), 3, "LDS and CDS wildcard, SDS by name");
    assert!(reqs[0].node.is_some() && reqs[1..].iter().all(|r| r.node.is_none()));
    assert!(reqs[..2]
        .iter()
        .all(|r| r.resource_names.is_empty() && r.version_info.is_empty()));
    assert_eq!(reqs[2].type_url, SECRET_TYPE);
    assert_eq!(
        reqs[2].resource_names,
        vec![TRUST_BUNDLE_SECRET.to_string()]
    );

    let lds = response(LISTENER_TYPE, "1", "1", of_type(&s, LISTENER_TYPE));
    let step = client.on_response(lds);
    assert!(step.view.is_none());
    assert_eq!(step.requests.len(), 2, "ACK, then RDS subscription");
    assert_eq!(step.requests[1].type_url, ROUTE_TYPE);
    assert_eq!(
        step.requests[1].resource_names,
        vec![fq("echo"), fq("other")]
    );

    let step = client.on_response(response(ROUTE_TYPE, "1", "2", of_type(&s, ROUTE_TYPE)));
    assert!(step.view.is_none(), "clusters missing");
    let step = client.on_response(response(CLUSTER_TYPE, "1", "3", of_type(&s, CLUSTER_TYPE)));
    assert!(step.view.is_none(), "assignments missing");
    assert_eq!(step.requests[1].type_url, ENDPOINT_TYPE);
    let mut clas = of_type(&s, ENDPOINT_TYPE);
    let last = clas.pop().unwrap();
    let step = client.on_response(response(ENDPOINT_TYPE, "1", "4", clas));
    assert!(step.view.is_none(), "one assignment missing");
    assert!(
        step.requests[0].error_detail.is_none(),
        "incomplete is ACKed"
    );
    // RDS/EDS responses need not repeat what the client already has.
    let step = client.on_response(response(ENDPOINT_TYPE, "1", "5", vec![last]));
    assert_eq!(step.view.unwrap(), to_proxy_view(s.resources()).unwrap());
}

#[test]
fn reconnect_requests_carry_versions_and_names() {
    let (mut client, _, _) = connected("1");
    let reqs = client.connect_requests();
    let got: Vec<(&str, &str, usize)> = reqs
        .iter()
        .map(|r| {
            (
                r.type_url.as_str(),
                r.version_info.as_str(),
                r.resource_names.len(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (LISTENER_TYPE, "1", 0),
            (CLUSTER_TYPE, "1", 0),
            (ROUTE_TYPE, "1", 2),
            (ENDPOINT_TYPE, "1", 2),
            (SECRET_TYPE, "1", 1)
        ]
    );
    assert!(reqs.iter().all(|r| r.response_nonce.is_empty()));
    assert!(reqs[0].node.is_some() && reqs[1..].iter().all(|r| r.node.is_none()));
    // A new server stream resyncs without changing the view.
    let mut server = AdsStream::new();
    let (n, view) = pump(&mut client, &mut server, reqs.into(), &snap("1", 2));
    assert_eq!(n, 5);
    assert!(view.is_none(), "nothing changed");
}

#[test]
fn removed_listener_unsubscribes_its_route_config() {
    let (mut client, _, s1) = connected("1");
    let listeners: Vec<Any> = s1
        .of_type(LISTENER_TYPE)
        .filter(|(n, _)| !n.starts_with("other"))
        .map(|(_, a)| a.clone())
        .collect();
    let step = client.on_response(response(LISTENER_TYPE, "2", "x", listeners));
    assert_eq!(step.requests.len(), 2);
    assert_eq!(step.requests[1].resource_names, vec![fq("echo")]);
    let view = step.view.unwrap();
    assert!(!view.route_configs.contains_key(&fq("other")));
    assert_eq!(client.resources()[ROUTE_TYPE].len(), 1);
}

#[test]
fn node_metadata_travels_with_the_node_on_every_stream() {
    let mut client = AdsClient::new("n1", "echo")
        .with_node_metadata(crate::ads::ADMIN_ADDR_METADATA, "127.0.0.1:15000");
    for _ in 0..2 {
        let reqs = client.connect_requests();
        let field = reqs[0]
            .node
            .as_ref()
            .and_then(|n| n.metadata.as_ref())
            .and_then(|m| m.fields.get(crate::ads::ADMIN_ADDR_METADATA))
            .and_then(|v| v.kind.clone());
        assert_eq!(
            field,
            Some(value::Kind::StringValue("127.0.0.1:15000".into()))
        );
        assert!(reqs[1..].iter().all(|r| r.node.is_none()));
    }
}

fn bundle(pem: &str) -> Option<TrustBundle> {
    Some(TrustBundle {
        roots_pem: pem.into(),
    })
}

#[test]
fn authenticated_client_gets_its_inbound_policy_trust_bundle_and_upstream_tls() {
    let s = secure_snap("1", PEM);
    let mut client = AdsClient::new("proxy-1", "echo");
    let mut server = AdsStream::with_identity(Some(svc("echo")));
    let reqs = client.connect_requests().into();
    let (n, view) = pump(&mut client, &mut server, reqs, &s);
    assert_eq!(n, 5);
    let view = view.unwrap();
    assert_eq!(view.trust_bundle, bundle(PEM));
    let inbound = view.inbound.unwrap();
    assert_eq!(inbound.service, svc("echo"));
    assert_eq!(inbound.mode, TlsMode::Mutual);
    assert_eq!(
        view.clusters[&fq("echo")].tls,
        Some(UpstreamTls {
            identities: vec!["spiffe://cluster.local/ns/default/sa/echo".into()]
        })
    );
    assert_eq!(client.accepted_version(SECRET_TYPE), Some("1"));
    // Reconnects keep asking for the bundle, with the version they have.
    let reqs = client.connect_requests();
    let sds = reqs.iter().find(|r| r.type_url == SECRET_TYPE).unwrap();
    assert_eq!(
        (sds.version_info.as_str(), sds.resource_names.clone()),
        ("1", vec![TRUST_BUNDLE_SECRET.to_string()])
    );
}

#[test]
fn view_is_complete_without_a_trust_bundle() {
    // `connected` runs against a mesh without identity: the Secret response is empty.
    let (client, _, _) = connected("1");
    let view = client.view().unwrap();
    assert!(view.trust_bundle.is_none() && view.inbound.is_none());
    assert_eq!(client.accepted_version(SECRET_TYPE), Some("1"));
    assert!(client.resources()[SECRET_TYPE].is_empty());
}

#[test]
fn a_secret_response_without_the_bundle_removes_it() {
    let s1 = secure_snap("1", PEM);
    let mut client = AdsClient::new("proxy-1", "echo");
    let mut server = AdsStream::new();
    let reqs = client.connect_requests().into();
    let (_, view) = pump(&mut client, &mut server, reqs, &s1);
    assert_eq!(view.unwrap().trust_bundle, bundle(PEM));
    // New roots replace the old ones.
    let other = PEM.replace("MIIBfake", "MIIBother");
    let step = client.on_response(response(
        SECRET_TYPE,
        "2",
        "s2",
        of_type(&secure_snap("2", &other), SECRET_TYPE),
    ));
    assert!(!step.nacked);
    assert_eq!(step.view.unwrap().trust_bundle, bundle(&other));
    // The server pushes an empty Secret response when the mesh drops its bundle.
    let step = client.on_response(response(SECRET_TYPE, "3", "s3", vec![]));
    assert!(!step.nacked);
    assert_eq!(step.requests[0].version_info, "3");
    assert_eq!(step.view.unwrap().trust_bundle, None);
    assert!(client.resources()[SECRET_TYPE].is_empty());
}

#[test]
fn a_bad_trust_bundle_is_nacked_and_the_old_one_kept() {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        secret, Secret, TlsCertificate,
    };
    let s1 = secure_snap("1", PEM);
    let mut client = AdsClient::new("proxy-1", "echo");
    let mut server = AdsStream::new();
    let reqs = client.connect_requests().into();
    pump(&mut client, &mut server, reqs, &s1);
    let bad = Secret {
        name: TRUST_BUNDLE_SECRET.into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate::default())),
    };
    let step = client.on_response(response(SECRET_TYPE, "2", "s2", vec![pack(&bad)]));
    assert!(step.nacked);
    assert_eq!(step.requests[0].version_info, "1", "last good version");
    assert_eq!(
        client.last_nack(),
        Some(
            "Secret[ROOTCA].tls_certificate: certificates are not accepted over xDS: the proxy \
             holds its own"
        )
    );
    assert_eq!(client.view().unwrap().trust_bundle, bundle(PEM));
    // Secrets not subscribed (the workload certificate, say) are ignored, not applied.
    let mut other = bad.clone();
    other.name = WORKLOAD_CERT_SECRET.into();
    let step = client.on_response(response(
        SECRET_TYPE,
        "3",
        "s3",
        [of_type(&s1, SECRET_TYPE), vec![pack(&other)]].concat(),
    ));
    assert!(!step.nacked);
    assert_eq!(client.resources()[SECRET_TYPE].len(), 1);
}

//! The control plane's own doors: xDS only over mutual TLS with a workload certificate
//! (plaintext xDS is off by default), a stream scoped to the workload its certificate names
//! (no other workload's inbound policy, no claiming another service's name).

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message;
use tandem_tests::control_plane::ControlPlane;
use tandem_tests::mesh::{self, service};
use tandem_tests::secure_xds::{first_listeners, issue, plain_first_listeners};
use tandem_tests::zero_trust::sidecar;
use tandem_xds::envoy::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use tandem_xds::envoy_types::pb::envoy::config::listener::v3::Listener;
use tonic::Code;

fn listener_names(resp: &tandem_xds::envoy::discovery::DiscoveryResponse) -> Vec<String> {
    resp.resources
        .iter()
        .map(|any| Listener::decode(any.value.as_slice()).unwrap().name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_client_cannot_open_an_xds_stream() {
    let cp = ControlPlane::start_secure().await;
    cp.apply_ok(&mesh::docs(&[service("web"), service("api")]))
        .await;

    // The plaintext port answers, but refuses every stream.
    let plain = AggregatedDiscoveryServiceClient::connect(format!("http://{}", cp.xds()))
        .await
        .unwrap();
    let refused = plain_first_listeners(plain, "web", &[]).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // TLS to the secure port without a client certificate: refused too.
    let anonymous = first_listeners(cp.identity(), None, "web", &[])
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_gets_only_its_own_inbound_policy_and_cannot_claim_another_name() {
    let cp = ControlPlane::start_secure().await;
    cp.apply_ok(&mesh::docs(&[service("web"), service("api")]))
        .await;
    let web = issue(&cp, "web").await;

    let claiming_api = first_listeners(cp.identity(), Some(&web), "api", &[])
        .await
        .unwrap_err();
    assert_eq!(
        claiming_api.code(),
        Code::PermissionDenied,
        "{claiming_api:?}"
    );
    assert!(claiming_api.message().contains("api"), "{claiming_api:?}");

    let all = first_listeners(cp.identity(), Some(&web), "web", &[])
        .await
        .unwrap();
    let names = listener_names(&all);
    assert!(
        names.contains(&"inbound|default|web".to_string()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains("|api")), "{names:?}");
    let asked = first_listeners(cp.identity(), Some(&web), "web", &["inbound|default|api"])
        .await
        .unwrap();
    assert!(
        listener_names(&asked).is_empty(),
        "asking by name does not help"
    );

    // A real sidecar with a token goes through the secure port and gets its own policy.
    let proxy = sidecar(&cp, "web", 1, &[]).await;
    let dump = proxy.config_dump().await;
    assert_eq!(
        dump["routes"]["inbound"]["service"]["name"], "web",
        "{dump}"
    );
    assert!(
        dump["xds"]["control_plane"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{dump}"
    );
}

//! The Kubernetes API test server (`tandem_tests::kube_api`) held to the real protocol: the
//! real client library, kube-rs, against it — typed APIs, dynamic objects, the runtime's
//! watcher and reflector (relisting after `410 Gone`), the status subresource, TokenReview,
//! Lease concurrency, authentication — and the real `kubectl` against the binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, Config, ResourceExt};
use serde_json::{json, Value};
use tandem_tests::kube_api::KubeApi;
use tandem_tests::{eventually, within, STEP_TIMEOUT};

async fn client_with(kubeconfig: &str) -> Client {
    let kc = Kubeconfig::from_yaml(kubeconfig).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    Client::try_from(config).expect("kube client")
}

async fn start() -> (KubeApi, Client) {
    let api = KubeApi::start().await.expect("test API server starts");
    let text = std::fs::read_to_string(api.kubeconfig()).expect("kubeconfig written");
    let client = client_with(&text).await;
    (api, client)
}

fn api_error(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

fn service(name: &str, labels: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels },
        "spec": { "ports": [{ "port": 80, "name": "http" }] },
    }))
    .unwrap()
}

fn names<K: kube::Resource>(items: impl IntoIterator<Item = K>) -> Vec<String> {
    let mut v: Vec<String> = items.into_iter().map(|o| o.name_any()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn typed_services_create_get_list_replace_patch_delete() {
    let (_server, client) = start().await;
    let svcs: Api<Service> = Api::namespaced(client, "default");
    let pp = PostParams::default();
    let web = svcs
        .create(
            &pp,
            &service("web", json!({ "app": "web", "tier": "front" })),
        )
        .await
        .unwrap();
    svcs.create(&pp, &service("db", json!({ "app": "db", "tier": "back" })))
        .await
        .unwrap();
    assert!(web.metadata.uid.is_some() && web.metadata.creation_timestamp.is_some());
    assert_eq!(web.metadata.generation, Some(1));
    assert_eq!(
        svcs.get("web").await.unwrap().metadata.uid,
        web.metadata.uid
    );

    // Label selectors: equality, set-based, inequality.
    let list = |sel: &'static str| {
        let svcs = svcs.clone();
        async move { names(svcs.list(&ListParams::default().labels(sel)).await.unwrap()) }
    };
    assert_eq!(list("app in (web,db)").await, ["db", "web"]);
    assert_eq!(list("app=web").await, ["web"]);
    assert_eq!(list("tier!=back").await, ["web"]);
    let by_name = svcs
        .list(&ListParams::default().fields("metadata.name=db"))
        .await
        .unwrap();
    assert_eq!(names(by_name.items), ["db"]);
    // Paging: one at a time, continue tokens until the end.
    let first = svcs.list(&ListParams::default().limit(1)).await.unwrap();
    let token = first.metadata.continue_.clone().expect("a continue token");
    let second = svcs
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(first.items.len() + second.items.len(), 2);
    assert_ne!(names(first.items), names(second.items));

    // Errors are Status objects with the real codes and reasons.
    assert_eq!(
        api_error(
            svcs.create(&pp, &service("web", json!({})))
                .await
                .unwrap_err()
        ),
        (409, "AlreadyExists".into())
    );
    assert_eq!(
        api_error(svcs.get("nope").await.unwrap_err()),
        (404, "NotFound".into())
    );
    assert_eq!(
        api_error(
            svcs.create(&pp, &service("Bad_Name", json!({})))
                .await
                .unwrap_err()
        )
        .0,
        422
    );
    let other_ns: Api<Service> = Api::namespaced(svcs.clone().into_client(), "missing");
    assert_eq!(
        api_error(
            other_ns
                .create(&pp, &service("x", json!({})))
                .await
                .unwrap_err()
        )
        .0,
        404
    );

    // Optimistic concurrency: a replace from a stale read is a 409 Conflict.
    let mut stale = svcs.get("web").await.unwrap();
    let mut fresh = stale.clone();
    fresh.labels_mut().insert("v".into(), "1".into());
    let replaced = svcs.replace("web", &pp, &fresh).await.unwrap();
    assert_ne!(replaced.resource_version(), web.resource_version());
    stale.labels_mut().insert("v".into(), "2".into());
    assert_eq!(
        api_error(svcs.replace("web", &pp, &stale).await.unwrap_err()),
        (409, "Conflict".into())
    );

    // Merge, JSON and server-side apply patches.
    let merged = svcs
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "tier": null, "m": "1" } } })),
        )
        .await
        .unwrap();
    assert_eq!(merged.labels().get("m").map(String::as_str), Some("1"));
    assert!(!merged.labels().contains_key("tier"));
    let ops: json_patch::Patch = serde_json::from_value(json!([
        { "op": "add", "path": "/metadata/annotations", "value": { "a": "b" } }
    ]))
    .unwrap();
    let patched = svcs
        .patch("web", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(
        patched.annotations().get("a").map(String::as_str),
        Some("b")
    );
    let applied = svcs
        .patch(
            "cache",
            &PatchParams::apply("tandem-test"),
            &Patch::Apply(
                json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "cache" },
                                   "spec": { "ports": [{ "port": 6379 }] } }),
            ),
        )
        .await
        .unwrap();
    assert_eq!(applied.spec.unwrap().ports.unwrap()[0].port, 6379);
    let reapplied = svcs
        .patch(
            "cache",
            &PatchParams::apply("tandem-test").force(),
            &Patch::Apply(json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "cache", "labels": { "x": "y" } } })),
        )
        .await
        .unwrap();
    assert_eq!(reapplied.labels().get("x").map(String::as_str), Some("y"));
    // A merge patch naming an old resourceVersion is a precondition that fails.
    let precondition =
        Patch::Merge(json!({ "metadata": { "resourceVersion": web.resource_version() } }));
    assert_eq!(
        api_error(
            svcs.patch("web", &PatchParams::default(), &precondition)
                .await
                .unwrap_err()
        )
        .0,
        409
    );

    // generateName, and delete.
    let generated = svcs
        .create(
            &pp,
            &serde_json::from_value(json!({ "metadata": { "generateName": "gen-" } })).unwrap(),
        )
        .await
        .unwrap();
    assert!(generated.name_any().starts_with("gen-") && generated.name_any().len() == 9);
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(svcs.get("web").await.unwrap_err()).0, 404);
    assert_eq!(
        api_error(
            svcs.delete("web", &DeleteParams::default())
                .await
                .unwrap_err()
        )
        .0,
        404
    );
}

#[tokio::test]
async fn endpointslices_by_service_label_across_namespaces() {
    let (server, client) = start().await;
    server
        .create(
            "v1",
            "namespaces",
            json!({ "metadata": { "name": "shop" } }),
        )
        .unwrap();
    for (ns, name, svc) in [
        ("default", "web-1", "web"),
        ("shop", "web-2", "web"),
        ("shop", "db-1", "db"),
    ] {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { "kubernetes.io/service-name": svc } },
            "addressType": "IPv4",
            "endpoints": [{ "addresses": ["10.0.0.1"], "conditions": { "ready": true } }],
            "ports": [{ "port": 8080, "name": "http" }],
        }))
        .unwrap();
        Api::<EndpointSlice>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &slice)
            .await
            .unwrap();
    }
    let all: Api<EndpointSlice> = Api::all(client.clone());
    let web = all
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    assert_eq!(names(web.items), ["web-1", "web-2"]);
    let shop: Api<EndpointSlice> = Api::namespaced(client, "shop");
    assert_eq!(
        names(shop.list(&ListParams::default()).await.unwrap().items),
        ["db-1", "web-2"]
    );
    // The handle sees what the client wrote.
    assert_eq!(
        server
            .list("discovery.k8s.io/v1", "endpointslices", None)
            .unwrap()
            .len(),
        3
    );
}

fn httproutes(client: Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "httproutes");
    Api::namespaced_with(client, "default", &ar)
}

#[tokio::test]
async fn httproute_status_subresource_and_generation() {
    let (_server, client) = start().await;
    let routes = httproutes(client);
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": { "name": "web" },
        "spec": { "parentRefs": [{ "group": "", "kind": "Service", "name": "web" }],
                  "rules": [{ "backendRefs": [{ "name": "web-v1", "port": 80 }] }] },
        "status": { "parents": ["ignored on create"] },
    }))
    .unwrap();
    let created = routes.create(&PostParams::default(), &route).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is written only through /status"
    );
    assert_eq!(created.metadata.generation, Some(1));

    let status = json!({ "parents": [{
        "parentRef": { "group": "", "kind": "Service", "name": "web" },
        "controllerName": "tandem.dev/control-plane",
        "conditions": [{ "type": "Accepted", "status": "True", "reason": "Accepted",
                         "observedGeneration": 1, "lastTransitionTime": "2025-01-01T00:00:00Z", "message": "" }],
    }]});
    let pp = PatchParams::apply("tandem-control-plane").force();
    let with_status = routes
        .patch_status(
            "web",
            &pp,
            &Patch::Apply(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "status": status })),
        )
        .await
        .unwrap();
    assert_eq!(with_status.data["status"], status);
    assert_eq!(
        with_status.metadata.generation,
        Some(1),
        "a status write is not a spec change"
    );
    assert_eq!(
        routes.get_status("web").await.unwrap().data["status"],
        status
    );

    // An ordinary update keeps the status and bumps the generation on a spec change.
    let mut changed = with_status.clone();
    changed.data["spec"]["rules"][0]["backendRefs"][0]["name"] = json!("web-v2");
    changed.data["status"] = json!({ "parents": [] });
    let replaced = routes
        .replace("web", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(replaced.data["status"], status);
    assert_eq!(replaced.metadata.generation, Some(2));
    // A label change is not a spec change; a status replace from a stale read conflicts.
    let relabeled = routes
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "a": "b" } } })),
        )
        .await
        .unwrap();
    assert_eq!(relabeled.metadata.generation, Some(2));
    assert_eq!(
        api_error(
            routes
                .replace_status("web", &PostParams::default(), &with_status)
                .await
                .unwrap_err()
        )
        .0,
        409
    );
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted_in_order() {
    let (_server, client) = start().await;
    let svcs: Api<Service> = Api::namespaced(client, "default");
    svcs.create(&PostParams::default(), &service("before", json!({})))
        .await
        .unwrap();
    let mut events = watcher(svcs.clone(), watcher::Config::default()).boxed();
    let mut initial = Vec::new();
    loop {
        match within(STEP_TIMEOUT, "initial list", events.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            watcher::Event::InitApply(s) => initial.push(s.name_any()),
            watcher::Event::InitDone => break,
            watcher::Event::Init => {}
            other => panic!("unexpected before InitDone: {other:?}"),
        }
    }
    assert_eq!(initial, ["before"]);

    let created = svcs
        .create(&PostParams::default(), &service("web", json!({})))
        .await
        .unwrap();
    let patched = svcs
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "v": "2" } } })),
        )
        .await
        .unwrap();
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match within(STEP_TIMEOUT, "watch events", events.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            watcher::Event::Apply(s) => seen.push(("apply", s.resource_version().unwrap())),
            watcher::Event::Delete(s) => seen.push(("delete", s.resource_version().unwrap())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen[0], ("apply", created.resource_version().unwrap()));
    assert_eq!(seen[1], ("apply", patched.resource_version().unwrap()));
    assert_eq!(seen[2].0, "delete");
    let rvs: Vec<u64> = seen.iter().map(|(_, rv)| rv.parse().unwrap()).collect();
    assert!(
        rvs.windows(2).all(|w| w[0] < w[1]),
        "versions increase: {rvs:?}"
    );
}

#[tokio::test]
async fn bookmarks_arrive_only_when_asked_for() {
    let (server, client) = start().await;
    let svcs: Api<Service> = Api::namespaced(client, "default");
    let rv = server.resource_version().to_string();
    let mut stream = svcs
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    match within(STEP_TIMEOUT, "a bookmark", stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    // Without allowWatchBookmarks, three bookmark intervals pass and only the timeout ends it.
    let mut quiet = svcs
        .watch(&WatchParams::default().disable_bookmarks().timeout(3), &rv)
        .await
        .unwrap()
        .boxed();
    let next = within(STEP_TIMEOUT, "the watch timeout", quiet.try_next())
        .await
        .unwrap();
    assert!(next.is_none(), "no event without bookmarks: {next:?}");
}

#[tokio::test]
async fn a_watch_from_a_compacted_version_gets_410_expired() {
    let (server, client) = start().await;
    let svcs: Api<Service> = Api::namespaced(client, "default");
    svcs.create(&PostParams::default(), &service("a", json!({})))
        .await
        .unwrap();
    let old = server.resource_version();
    svcs.create(&PostParams::default(), &service("b", json!({})))
        .await
        .unwrap();
    // Before compaction, a watch from `old` replays what came after it.
    let mut replay = svcs
        .watch(
            &WatchParams::default().disable_bookmarks(),
            &old.to_string(),
        )
        .await
        .unwrap()
        .boxed();
    match within(STEP_TIMEOUT, "replay", replay.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        WatchEvent::Added(s) => assert_eq!(s.name_any(), "b"),
        other => panic!("expected b added, got {other:?}"),
    }
    let point = server.compact();
    assert!(point > old);
    let mut stale = svcs
        .watch(&WatchParams::default(), &old.to_string())
        .await
        .unwrap()
        .boxed();
    match within(STEP_TIMEOUT, "410", stale.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 Expired, got {other:?}"),
    }
    // The open watch was up to date: it is not expired, and goes on.
    svcs.create(&PostParams::default(), &service("c", json!({})))
        .await
        .unwrap();
    match within(STEP_TIMEOUT, "after compaction", replay.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        WatchEvent::Added(s) => assert_eq!(s.name_any(), "c"),
        other => panic!("expected c added, got {other:?}"),
    }
}

#[tokio::test]
async fn a_reflector_relists_after_410_and_loses_nothing() {
    let (server, client) = start().await;
    server
        .create(
            "v1",
            "namespaces",
            json!({ "metadata": { "name": "relist" } }),
        )
        .unwrap();
    for name in ["a", "b", "c"] {
        server
            .create(
                "v1",
                "services",
                json!({ "metadata": { "name": name, "namespace": "relist" } }),
            )
            .unwrap();
    }
    let svcs: Api<Service> = Api::namespaced(client, "relist");
    let (reader, writer) = reflector::store::<Service>();
    let inits = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let (i, e) = (inits.clone(), errors.clone());
    let stream = reflector(writer, watcher(svcs, watcher::Config::default())).default_backoff();
    let _task = tandem_tests::AbortOnDrop(tokio::spawn(stream.for_each(move |ev| {
        match ev {
            Ok(watcher::Event::Init) => i.fetch_add(1, Ordering::SeqCst),
            Err(_) => e.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
        std::future::ready(())
    })));
    within(STEP_TIMEOUT, "reflector ready", reader.wait_until_ready())
        .await
        .unwrap();
    let state = |reader: &reflector::Store<Service>| -> BTreeSet<(String, String)> {
        reader
            .state()
            .iter()
            .map(|s| (s.name_any(), s.resource_version().unwrap()))
            .collect()
    };
    let on_server = || -> BTreeSet<(String, String)> {
        server
            .list("v1", "services", Some("relist"))
            .unwrap()
            .iter()
            .map(|s| {
                let m = &s["metadata"];
                (
                    m["name"].as_str().unwrap().to_string(),
                    m["resourceVersion"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(state(&reader), on_server());

    // Writes the watcher never hears of: delivery held back, then the log compacted away.
    server.pause_watches(true);
    server
        .create(
            "v1",
            "services",
            json!({ "metadata": { "name": "d", "namespace": "relist" } }),
        )
        .unwrap();
    server
        .merge_patch(
            "v1",
            "services",
            "relist",
            "a",
            json!({ "metadata": { "labels": { "changed": "yes" } } }),
        )
        .unwrap();
    server.delete("v1", "services", "relist", "b").unwrap();
    server.compact();
    server.pause_watches(false);

    let want = on_server();
    eventually(
        STEP_TIMEOUT,
        "the reflector equals the server after relisting",
        || {
            let got = state(&reader);
            let want = want.clone();
            async move {
                if got == want {
                    Ok(())
                } else {
                    Err(format!("{got:?} != {want:?}"))
                }
            }
        },
    )
    .await;
    assert!(inits.load(Ordering::SeqCst) >= 2, "the watcher relisted");
    assert!(
        errors.load(Ordering::SeqCst) >= 1,
        "the watcher was told 410"
    );
    // And it keeps following live writes after the relist.
    server
        .create(
            "v1",
            "services",
            json!({ "metadata": { "name": "e", "namespace": "relist" } }),
        )
        .unwrap();
    eventually(STEP_TIMEOUT, "a write after the relist is seen", || {
        let got = state(&reader);
        let want = on_server();
        async move {
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?} != {want:?}"))
            }
        }
    })
    .await;
}

#[tokio::test]
async fn tokenreview_answers_for_registered_serviceaccount_tokens() {
    let (server, client) = start().await;
    server.register_token("tok-web", "shop", "web", &["tandem"]);
    let reviews: Api<TokenReview> = Api::all(client);
    let review = |token: &str, audiences: Vec<&str>| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: Some(audiences.into_iter().map(String::from).collect()),
        },
        ..Default::default()
    };
    let ok = reviews
        .create(&PostParams::default(), &review("tok-web", vec!["tandem"]))
        .await
        .unwrap();
    let status = ok.status.unwrap();
    assert_eq!(status.authenticated, Some(true));
    assert_eq!(
        status.user.unwrap().username.as_deref(),
        Some("system:serviceaccount:shop:web")
    );
    assert_eq!(status.audiences, Some(vec!["tandem".to_string()]));

    let other = reviews
        .create(&PostParams::default(), &review("tok-web", vec!["other"]))
        .await
        .unwrap();
    let status = other.status.unwrap();
    assert_eq!(status.authenticated, Some(false));
    assert!(status.error.unwrap().contains("audience"));
    let unknown = reviews
        .create(&PostParams::default(), &review("forged", vec!["tandem"]))
        .await
        .unwrap();
    assert_eq!(unknown.status.unwrap().authenticated, Some(false));
    server.revoke_token("tok-web");
    let revoked = reviews
        .create(&PostParams::default(), &review("tok-web", vec!["tandem"]))
        .await
        .unwrap();
    assert_eq!(revoked.status.unwrap().authenticated, Some(false));
    // TokenReview is create-only.
    assert_eq!(
        api_error(reviews.list(&ListParams::default()).await.unwrap_err()).0,
        405
    );
}

#[tokio::test]
async fn lease_replace_is_optimistic() {
    let (_server, client) = start().await;
    let leases: Api<Lease> = Api::namespaced(client, "default");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": { "name": "tandem-control-plane" },
        "spec": { "holderIdentity": "replica-a", "leaseDurationSeconds": 15 },
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    assert_eq!(
        api_error(
            leases
                .create(&PostParams::default(), &lease)
                .await
                .unwrap_err()
        )
        .0,
        409
    );
    // Two replicas read the same version; the first write wins, the second conflicts.
    let mut a = leases.get("tandem-control-plane").await.unwrap();
    let mut b = a.clone();
    a.spec.as_mut().unwrap().lease_transitions = Some(1);
    b.spec.as_mut().unwrap().holder_identity = Some("replica-b".into());
    leases
        .replace("tandem-control-plane", &PostParams::default(), &a)
        .await
        .unwrap();
    assert_eq!(
        api_error(
            leases
                .replace("tandem-control-plane", &PostParams::default(), &b)
                .await
                .unwrap_err()
        ),
        (409, "Conflict".into())
    );
    let held = leases.get("tandem-control-plane").await.unwrap();
    assert_eq!(
        held.spec.unwrap().holder_identity.as_deref(),
        Some("replica-a")
    );
}

#[tokio::test]
async fn requests_without_the_token_are_401() {
    let (server, _client) = start().await;
    let text = std::fs::read_to_string(server.kubeconfig()).unwrap();
    let wrong = text.replace(server.token(), "not-the-token");
    assert_ne!(wrong, text);
    let svcs: Api<Service> = Api::namespaced(client_with(&wrong).await, "default");
    assert_eq!(
        api_error(svcs.list(&ListParams::default()).await.unwrap_err()),
        (401, "Unauthorized".into())
    );
    // A ServiceAccount token valid for the API server's audience may call it, as in a pod.
    server.register_token(
        "sa-token",
        "default",
        "tandem",
        &[tandem_tests::kube_api::tokenreview::API_SERVER_AUDIENCE],
    );
    let as_sa = text.replace(server.token(), "sa-token");
    let svcs: Api<Service> = Api::namespaced(client_with(&as_sa).await, "default");
    svcs.list(&ListParams::default()).await.unwrap();
}

#[tokio::test]
async fn kubectl_reads_the_binary_servers_objects() {
    let bin = tandem_tests::bins::path(tandem_tests::kube_api::BIN).await;
    let mut child = tokio::process::Command::new(bin)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("tandem-kube-api starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let ready = within(STEP_TIMEOUT, "the ready line", lines.next_line())
        .await
        .unwrap()
        .expect("a ready line");
    let kubeconfig = ready
        .split_once("kubeconfig=")
        .expect("ready line names the kubeconfig")
        .1
        .to_string();
    assert!(ready.starts_with("ready addr=127.0.0.1:"), "{ready}");

    let client = client_with(&std::fs::read_to_string(&kubeconfig).unwrap()).await;
    Api::<Service>::namespaced(client, "kube-system")
        .create(
            &PostParams::default(),
            &service("dns", json!({ "k8s-app": "kube-dns" })),
        )
        .await
        .unwrap();

    let cache = std::env::temp_dir().join(format!("tandem-kubectl-cache-{}", std::process::id()));
    let out = tokio::process::Command::new("kubectl")
        .args(["--kubeconfig", &kubeconfig, "--cache-dir"])
        .arg(&cache)
        .args(["get", "services", "-A", "-o", "json"])
        .output();
    let out = within(Duration::from_secs(30), "kubectl", out)
        .await
        .unwrap_or_else(|e| {
            panic!("kubectl must be installed for this test (it is on the CI machine): {e}")
        });
    let _ = std::fs::remove_dir_all(&cache);
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("kubectl printed JSON");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["metadata"]["name"], "dns");
    assert_eq!(items[0]["metadata"]["namespace"], "kube-system");
    let _ = std::fs::remove_dir_all(std::path::Path::new(&kubeconfig).parent().unwrap());
}

//! Transparent sidecars in "pods" made of network namespaces (see `tandem_tests::pods`):
//! apps that know nothing of the mesh call services by name (their virtual IPs, through
//! each pod's `/etc/hosts`) and pods by IP; `tandem-proxy init` intercepts, sidecars
//! carry the calls over mutual TLS, routes split, authorization sees the original port,
//! opaque TCP and destinations outside the mesh pass.
//!
//! Needs root, iproute2, iptables and util-linux's `setpriv` (`.ci/run` installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tandem_tests::bins::{self, POD_APP, PROXY};
use tandem_tests::control_plane::ControlPlane;
use tandem_tests::kube_api::KubeApi;
use tandem_tests::pods::{sh, Pod, PodNetwork};
use tandem_tests::{client, eventually};

/// The proxy's user id in every pod (the default of `tandem-proxy init`).
const PROXY_UID: u32 = 2102;

/// `GET path` on a pod's admin port, from the test's namespace.
async fn admin(pod: &Pod, path: &str) -> Result<String, String> {
    let resp = client::get_once(pod.addr(15000), "admin", path)
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(resp.body()).into_owned())
}

/// One metric's value summed over the series whose labels contain every `label`.
async fn metric(pod: &Pod, name: &str, labels: &[&str]) -> f64 {
    let text = admin(pod, "/metrics").await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|f| l.contains(f)))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An app request from inside `pod` with curl (an unmodified program); the response's
/// `key=value` lines, plus `status`.
fn curl(pod: &Pod, url: &str) -> BTreeMap<String, String> {
    let (ok, out) = pod.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-w",
        "status=%{http_code}\n",
        url,
    ]);
    assert!(ok, "curl {url} in {}: {out}", pod.ns);
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A mesh with its sidecars: the control plane, the pods, and their names.
struct Mesh {
    net: PodNetwork,
    cp: ControlPlane,
    client: Pod,
    v1: Pod,
    v2: Pod,
    db: Pod,
}

/// Services `web` (virtual IP, port 80, HTTP, split 50/50 over `web-v1` and `web-v2`) and
/// `db` (virtual IP, port 5432, opaque TCP); one pod each for `client`, `web-v1`,
/// `web-v2` and `db`, each with its app, `tandem-proxy init` and a transparent sidecar
/// running as the proxy UID.
async fn mesh(net_salt: u8) -> Mesh {
    let mut net = PodNetwork::new(net_salt);
    let host = net.host_ip();
    let (vip_web, vip_db) = (net.virtual_ip(10), net.virtual_ip(20));
    let vip_web6 = net.virtual_ip6(10);
    let cp = ControlPlane::start_on(host.into(), &["--identity-san", &host.to_string()]).await;

    let hosts =
        format!("{vip_web} web web.default.svc.cluster.local\n{vip_db} db\n{vip_web6} web6\n");
    let client = net.add_pod(0, &hosts);
    let v1 = net.add_pod(1, "");
    let v2 = net.add_pod(2, "");
    let db = net.add_pod(3, "");

    let yaml = format!(
        "apiVersion: tandem.dev/v1alpha1\nkind: Service\nmetadata: {{ name: web }}\n\
         spec: {{ ports: [{{ port: 80, protocol: http }}, {{ port: 8000 }}], addresses: [\"{vip_web}\", \"{vip_web6}\"] }}\n---\n\
         apiVersion: tandem.dev/v1alpha1\nkind: Service\nmetadata: {{ name: web-v1 }}\n\
         spec: {{ ports: [{{ port: 8080, protocol: http }}] }}\n---\n\
         apiVersion: tandem.dev/v1alpha1\nkind: Service\nmetadata: {{ name: web-v2 }}\n\
         spec: {{ ports: [{{ port: 8080, protocol: http }}] }}\n---\n\
         apiVersion: tandem.dev/v1alpha1\nkind: Service\nmetadata: {{ name: db }}\n\
         spec: {{ ports: [{{ port: 5432, protocol: tcp }}], addresses: [\"{vip_db}\"] }}\n---\n\
         apiVersion: tandem.dev/v1alpha1\nkind: Service\nmetadata: {{ name: client }}\nspec: {{}}\n---\n\
         apiVersion: tandem.dev/v1alpha1\nkind: Endpoint\nspec: {{ service: web-v1, address: \"{}\" }}\n---\n\
         apiVersion: tandem.dev/v1alpha1\nkind: Endpoint\nspec: {{ service: web-v2, address: \"{}\" }}\n---\n\
         apiVersion: tandem.dev/v1alpha1\nkind: Endpoint\nspec: {{ service: db, address: \"{}\" }}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{ name: web-split }}\n\
         spec:\n  parentRefs: [{{ kind: Service, name: web, port: 80 }}, {{ kind: Service, name: web, port: 8000 }}]\n  rules:\n\
         \x20   - backendRefs: [{{ name: web-v1, port: 8080, weight: 50 }}, {{ name: web-v2, port: 8080, weight: 50 }}]\n",
        v1.addr(8080),
        v2.addr(8080),
        db.addr(9000),
    );
    cp.apply_ok(&yaml).await;

    let app = bins::path(POD_APP).await;
    let app = app.to_str().expect("utf-8 path").to_string();
    for (pod, name, extra) in [
        (&v1, "web-v1", vec!["8080"]),
        (&v2, "web-v2", vec!["8080"]),
        (&db, "db", vec!["8081", "--tcp", "9000"]),
    ] {
        let mut args = vec!["serve", name];
        args.extend(extra);
        net.spawn(pod, None, &app, &args, &[], "ready").await;
    }

    let proxy = bins::path(PROXY).await;
    let proxy = proxy.to_str().expect("utf-8 path").to_string();
    let xds = cp.xds().to_string();
    let identity = cp.identity().to_string();
    // web-v1's probes, as the injector rewrites them: answered on the admin port.
    let probes = r#"{"/app-health/web/livez": {"httpGet": {"port": 8080, "path": "/"}},
                     "/app-health/web/readyz": {"tcpSocket": {"port": 8082}}}"#;
    let v1_ip = v1.ip.to_string();
    for (pod, service) in [
        (&client, "client"),
        (&v1, "web-v1"),
        (&v2, "web-v2"),
        (&db, "db"),
    ] {
        let (ok, out) = pod.exec(&[&proxy, "init"]);
        assert!(ok, "tandem-proxy init in {}: {out}", pod.ns);
        let token = cp
            .tandemctl(&["token", "create", "--service", service])
            .await
            .expect_ok("token create")
            .trim()
            .to_string();
        let args = [
            "--transparent",
            "--control-plane",
            &xds,
            "--identity-addr",
            &identity,
            "--service",
            service,
            "--inbound-addr",
            "0.0.0.0:15006",
            "--outbound-addr",
            "127.0.0.1:15001",
            "--admin-addr",
            "0.0.0.0:15000",
            "--workers",
            "1",
        ];
        let mut env = vec![("TANDEM_TOKEN", token.as_str())];
        if service == "web-v1" {
            env.extend([
                ("TANDEM_APP_PROBES", probes),
                ("TANDEM_POD_IP", v1_ip.as_str()),
            ]);
        }
        net.spawn(
            pod,
            Some(PROXY_UID),
            &proxy,
            &args,
            &env,
            "tandem-proxy ready",
        )
        .await;
    }
    // The client's sidecar knows the virtual addresses and both backends' endpoints.
    let (web, dbv) = (
        SocketAddr::new(vip_web.into(), 80).to_string(),
        SocketAddr::new(vip_db.into(), 5432).to_string(),
    );
    eventually(
        Duration::from_secs(20),
        "the client sidecar's config",
        || {
            let (web, dbv, client) = (web.clone(), dbv.clone(), client.clone());
            async move {
                let dump = admin(&client, "/config_dump").await?;
                let dump: serde_json::Value =
                    serde_json::from_str(&dump).map_err(|e| e.to_string())?;
                let addrs = &dump["routes"]["addresses"];
                let clusters = &dump["routes"]["clusters"];
                let ready = !addrs[&web].is_null()
                    && !addrs[&dbv].is_null()
                    && ["web-v1", "web-v2", "db"].iter().all(|s| {
                        let c = &clusters[format!("{s}.default.svc.cluster.local")];
                        c["endpoints"].as_array().is_some_and(|e| !e.is_empty())
                            && !c["tls"].is_null()
                    });
                if ready {
                    Ok(())
                } else {
                    Err(format!("addresses {addrs}"))
                }
            }
        },
    )
    .await;
    Mesh {
        net,
        cp,
        client,
        v1,
        v2,
        db,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_that_know_nothing_of_the_mesh_are_carried_by_transparent_sidecars() {
    let m = mesh(1).await;
    let caller = "URI=spiffe://cluster.local/ns/default/sa/client";

    // By name, to the service's virtual IP: split over both versions, mutual TLS both
    // hops, the app reached from 127.0.0.6 on the port it was addressed to.
    let mut seen = BTreeMap::new();
    let calls: u32 = 40;
    for _ in 0..calls {
        let r = curl(&m.client, "http://web/");
        assert_eq!(r["status"], "200", "{r:?}\n{}", m.net.logs());
        assert_eq!(
            r["xfcc"], caller,
            "the app sees the caller's identity: {r:?}"
        );
        assert_eq!(r["port"], "8080");
        assert_eq!(
            r["peer"], "127.0.0.6",
            "inbound connects from its own source"
        );
        *seen.entry(r["app"].clone()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "a 50/50 split over {calls} calls: {seen:?}");
    assert!(
        seen.values().all(|n| *n >= 5),
        "both versions answer: {seen:?}"
    );

    // By a pod's IP: that pod, and only it, still over mutual TLS.
    for _ in 0..5 {
        let r = curl(&m.client, &format!("http://{}/", m.v2.addr(8080)));
        assert_eq!(r["app"], "web-v2", "{r:?}");
        assert_eq!(r["xfcc"], caller, "{r:?}");
    }
    let mtls = metric(
        &m.client,
        "tandem_requests_total",
        &["direction=\"outbound\"", "tls=\"true\""],
    )
    .await;
    assert_eq!(
        mtls,
        f64::from(calls + 5),
        "every app call left over mutual TLS"
    );

    // Opaque TCP to the db's virtual IP: echoed by the db app behind its sidecar.
    let vip_db = SocketAddr::new(m.net.virtual_ip(20).into(), 5432);
    let app = bins::path(POD_APP).await;
    let (ok, out) = m.client.exec(&[
        app.to_str().expect("path"),
        "tcp",
        &vip_db.to_string(),
        "hello db",
    ]);
    assert!(ok, "{out}\n{}", m.net.logs());
    assert_eq!(
        out, "peer=127.0.0.6\nhello db",
        "echoed through both sidecars"
    );
    let inbound_tls = metric(
        &m.db,
        "tandem_tls_handshakes_total",
        &["direction=\"inbound\"", "result=\"ok\""],
    )
    .await;
    assert!(inbound_tls >= 1.0, "the db's sidecar terminated mutual TLS");

    // A destination outside the mesh passes through unchanged, and is counted.
    let outside = tokio::net::TcpListener::bind((m.net.host_ip(), 0))
        .await
        .expect("bind");
    let outside_addr = outside.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, peer) = outside.accept().await.expect("accept");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.expect("read");
        s.write_all(&buf).await.expect("write");
        peer
    });
    let (ok, out) = m.client.exec(&[
        app.to_str().expect("path"),
        "tcp",
        &outside_addr.to_string(),
        "plain",
    ]);
    assert!(ok, "{out}");
    assert_eq!(out, "plain");
    let peer = server.await.expect("outside server");
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(m.client.ip),
        "unchanged: from the pod"
    );
    assert_eq!(
        metric(&m.client, "tandem_passthrough_connections_total", &[]).await,
        1.0
    );

    // IPv6: the same service by its IPv6 virtual address, through the IPv6 outbound
    // listener and ip6tables.
    for _ in 0..4 {
        let r = curl(&m.client, "http://web6/");
        assert_eq!(r["status"], "200", "{r:?}\n{}", m.net.logs());
        assert_eq!(r["xfcc"], caller, "{r:?}");
    }

    // The kubelet's view: the app port itself refuses a plaintext caller, and the
    // rewritten probes on the admin port reach the app (from 127.0.0.6, never redirected
    // into the inbound port) and report its state.
    let direct = client::get_once(m.v1.addr(8080), "web", "/").await;
    assert!(
        direct.is_err(),
        "plaintext to an intercepted port: {direct:?}"
    );
    let live = client::get_once(m.v1.addr(15000), "probe", "/app-health/web/livez")
        .await
        .expect("liveness probe");
    assert_eq!(live.status(), 200, "{live:?}");
    let ready = client::get_once(m.v1.addr(15000), "probe", "/app-health/web/readyz")
        .await
        .expect("readiness probe");
    assert_eq!(ready.status(), 503, "nothing listens on 8082: {ready:?}");

    // The sidecar's own connections are never redirected again: the outbound redirect
    // saw exactly the app's connections (41 + 5 HTTP, 2 TCP), while the proxy's own
    // (xDS, identity, upstreams) returned at the UID rule.
    let counters = m.client.nat_counters("TANDEM_OUTPUT");
    let packets = |target: &str, needle: &str| {
        counters
            .iter()
            .find(|(_, rule)| {
                let fields: Vec<&str> = rule.split_whitespace().collect();
                // Not the negated rules (`! owner`, `!127.0.0.1`).
                fields.get(2) == Some(&target)
                    && rule.trim_end().ends_with(needle)
                    && !rule.contains('!')
            })
            .map(|(p, _)| *p)
            .unwrap_or_else(|| panic!("no {target} rule ending {needle:?}: {counters:?}"))
    };
    assert_eq!(
        packets("TANDEM_OUT_REDIRECT", "0.0.0.0/0"),
        u64::from(calls + 5 + 2),
        "{counters:?}"
    );
    assert!(
        packets("RETURN", " owner UID match 2102") > 0,
        "{counters:?}"
    );

    // A port of unknown protocol: detected as HTTP, then routed by the route that names
    // this port too (a parentRef's port attaches the route to that port only).
    let r = curl(&m.client, "http://web:8000/");
    assert_eq!(r["status"], "200", "{r:?}");
    assert_eq!(r["xfcc"], caller, "{r:?}");

    // Authorization sees the port the caller addressed (8080), not the inbound port:
    // web-v1 allows the client on 8080, web-v2 only on 9999.
    m.cp
        .apply_ok(
            "apiVersion: tandem.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: { name: v1-8080 }\n\
             spec:\n  targetRef: { kind: Service, name: web-v1 }\n  rules:\n\
             \x20   - from: [{ principal: \"spiffe://cluster.local/ns/default/sa/client\" }]\n      ports: [8080]\n---\n\
             apiVersion: tandem.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: { name: v2-9999 }\n\
             spec:\n  targetRef: { kind: Service, name: web-v2 }\n  rules:\n\
             \x20   - from: [{ principal: \"spiffe://cluster.local/ns/default/sa/client\" }]\n      ports: [9999]\n",
        )
        .await;
    let (v1, v2) = (m.v1.addr(8080), m.v2.addr(8080));
    let client = m.client.clone();
    eventually(Duration::from_secs(15), "web-v2 denies port 8080", || {
        let client = client.clone();
        async move {
            let r = curl(&client, &format!("http://{v2}/"));
            (r["status"] == "403").then_some(()).ok_or(format!("{r:?}"))
        }
    })
    .await;
    let r = curl(&m.client, &format!("http://{v1}/"));
    assert_eq!(r["status"], "200", "web-v1 allows port 8080: {r:?}");
    assert!(metric(&m.v2, "tandem_authz_denied_total", &[]).await >= 1.0);

    // The rules as `iptables-save` shows them: Tandem's chains, the UID excluded.
    let (ok, rules) = m.client.exec(&["iptables-save", "-t", "nat"]);
    assert!(ok, "{rules}");
    assert!(
        rules.contains("-A OUTPUT -p tcp -j TANDEM_OUTPUT"),
        "{rules}"
    );
    assert!(rules.contains("--uid-owner 2102 -j RETURN"), "{rules}");
    drop(m);
}

#[tokio::test]
async fn init_is_idempotent_removable_and_all_or_nothing() {
    let mut net = PodNetwork::new(2);
    let pod = net.add_pod(0, "");
    let proxy = bins::path(PROXY).await;
    let proxy = proxy.to_str().expect("path").to_string();
    let save = |pod: &Pod| pod.exec(&["iptables-save", "-t", "nat"]).1;
    let tandem_lines = |text: &str| text.lines().filter(|l| l.contains("TANDEM")).count();

    let (ok, out) = pod.exec(&[
        &proxy,
        "init",
        "--skip-inbound-ports",
        "22",
        "--ipv6",
        "off",
    ]);
    assert!(ok, "{out}");
    let first = save(&pod);
    let (ok, out) = pod.exec(&[
        &proxy,
        "init",
        "--skip-inbound-ports",
        "22",
        "--ipv6",
        "off",
    ]);
    assert!(ok, "{out}");
    assert_eq!(
        tandem_lines(&save(&pod)),
        tandem_lines(&first),
        "a second run changes nothing"
    );
    assert_eq!(save(&pod).matches("-j TANDEM_INBOUND").count(), 1);

    // A bad flag: refused before anything changes.
    let (ok, out) = pod.exec(&[
        &proxy,
        "init",
        "--skip-outbound-cidrs",
        "10.0.0.0/99",
        "--ipv6",
        "off",
    ]);
    assert!(!ok && out.contains("--skip-outbound-cidrs"), "{out}");
    assert_eq!(tandem_lines(&save(&pod)), tandem_lines(&first));

    // IPv6 fails after IPv4 committed: IPv4 is put back as it was (here: no rules).
    let (ok, out) = pod.exec(&[&proxy, "init", "--uninstall", "--ipv6", "off"]);
    assert!(ok, "{out}");
    assert_eq!(tandem_lines(&save(&pod)), 0);
    let fake = tandem_tests::control_plane::TempDir::new("fake-ip6tables");
    let restore = fake.path().join("ip6tables-restore");
    std::fs::write(
        &restore,
        "#!/bin/sh\necho 'ip6tables-restore: simulated failure' >&2\nexit 1\n",
    )
    .expect("write");
    sh(&["chmod", "+x", restore.to_str().expect("path")]);
    let path = format!(
        "PATH={}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (ok, out) = pod.exec(&["env", &path, &proxy, "init", "--ipv6", "on"]);
    assert!(!ok && out.contains("simulated failure"), "{out}");
    assert_eq!(
        tandem_lines(&save(&pod)),
        0,
        "IPv4 rolled back: {}",
        save(&pod)
    );

    // Without iptables at all: a clear error.
    let (ok, out) = pod.exec(&["env", "PATH=/nonexistent", &proxy, "init"]);
    assert!(!ok && out.contains("install iptables"), "{out}");

    // --dry-run prints the rules and applies nothing.
    let (ok, out) = pod.exec(&[&proxy, "init", "--dry-run", "--ipv6", "on"]);
    assert!(
        ok && out.contains("# IPv6") && out.contains("REDIRECT --to-ports 15001"),
        "{out}"
    );
    assert_eq!(tandem_lines(&save(&pod)), 0);
    drop(net);
}

/// A container of an injected pod spec as a command line: its args, its environment with
/// the downward API resolved and the projected token volume mounted as the kubelet would
/// (the volume's token, for the audience the spec asks, written under `mounts`), and its
/// user.
struct Container {
    args: Vec<String>,
    env: Vec<(String, String)>,
    uid: Option<u32>,
}

/// The ServiceAccount a pod spec runs as (`default` when it names none, as the API
/// server's admission sets it).
fn service_account(pod_spec: &serde_json::Value) -> String {
    pod_spec["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_string()
}

fn container(
    pod_spec: &serde_json::Value,
    name: &str,
    pod: &Pod,
    ns: &str,
    api: &KubeApi,
    mounts: &std::path::Path,
) -> Container {
    let c = pod_spec["initContainers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no init container {name}: {pod_spec}"));
    let args = c["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    // Each projected ServiceAccount token volume mounted here: a token the API test
    // server knows for the pod's account and the volume's audience, in a directory that
    // stands in for the mount path.
    let mut mounted = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let volume = pod_spec["volumes"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["name"] == m["name"]))
            .unwrap_or_else(|| panic!("no volume {}: {pod_spec}", m["name"]));
        let projected = &volume["projected"]["sources"][0]["serviceAccountToken"];
        let audience = projected["audience"].as_str().expect("a token audience");
        let file = projected["path"].as_str().expect("a token path");
        let dir = mounts.join(format!("{}-{}", pod.ns, m["name"].as_str().unwrap()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = format!("sa-token-{}-{}", pod.ns, m["name"].as_str().unwrap());
        std::fs::write(dir.join(file), &token).unwrap();
        api.register_token(&token, ns, &service_account(pod_spec), &[audience]);
        let at = m["mountPath"].as_str().expect("mountPath").to_string();
        mounted.push((at, dir.to_str().unwrap().to_string()));
    }
    let mut env = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_string();
        let value = if let Some(v) = e["value"].as_str() {
            mounted
                .iter()
                .find_map(|(at, dir)| {
                    v.strip_prefix(at.as_str())
                        .map(|rest| format!("{dir}{rest}"))
                })
                .unwrap_or_else(|| v.to_string())
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.namespace" => ns.to_string(),
                "status.podIP" => pod.ip.to_string(),
                "spec.serviceAccountName" => service_account(pod_spec),
                other => panic!("unexpected downward API field {other}"),
            }
        } else {
            panic!("unexpected env source {e}");
        };
        env.push((name, value));
    }
    let uid = c["securityContext"]["runAsUser"]
        .as_u64()
        .and_then(|u| u32::try_from(u).ok());
    Container { args, env, uid }
}

/// What `tandemctl inject` writes runs as written: its init container's command writes the
/// rules, its proxy container's command and environment (namespace, pod IP and service
/// account from the downward API, the projected ServiceAccount token, the CA pins, the
/// rewritten probes) make a working transparent sidecar under the UID it names, which
/// gets its identity from its ServiceAccount through TokenReview (the control plane in
/// Kubernetes mode against the API test server, which also holds the Services, pods and
/// EndpointSlices); its startup and app probes answer on the admin port, and a client pod
/// injected the same way calls the server pod through both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_pod_spec_runs_as_written() {
    let mut net = PodNetwork::new(3);
    let host = net.host_ip();
    let vip = net.virtual_ip(30);
    let xds = SocketAddr::new(host.into(), 15010);
    let api = KubeApi::start().await.expect("API test server");
    for ns in ["tandem-system", "shop"] {
        api.create(
            "v1",
            "namespaces",
            serde_json::json!({"metadata": {"name": ns}}),
        )
        .expect("namespace");
    }
    let kubeconfig = api.kubeconfig().to_str().expect("path").to_string();
    let cp = ControlPlane::start_at(
        xds,
        15012,
        &[
            "--identity-san",
            &host.to_string(),
            "--kubernetes",
            "--kubeconfig",
            &kubeconfig,
        ],
    )
    .await;
    let hosts = format!("{vip} web.shop web.shop.svc.cluster.local\n");
    let client = net.add_pod(0, &hosts);
    let server = net.add_pod(1, "");
    // The cluster: web runs as web-sa; the client pod names no account (`default`).
    for (name, app, account, pod, service_ip) in [
        ("web-1", "web", Some("web-sa"), &server, vip.to_string()),
        (
            "client-1",
            "client",
            None,
            &client,
            net.virtual_ip(31).to_string(),
        ),
    ] {
        let mut spec = serde_json::json!({"containers": [{"name": app, "image": "x:1"}]});
        if let Some(sa) = account {
            spec["serviceAccountName"] = serde_json::json!(sa);
        }
        api.create("v1", "pods", serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "labels": {"app": app}}, "spec": spec
        }))
        .expect("pod");
        api.create("v1", "services", serde_json::json!({
            "metadata": {"name": app, "namespace": "shop"},
            "spec": {"clusterIP": service_ip, "clusterIPs": [service_ip],
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
        }))
        .expect("service");
        api.create(
            "discovery.k8s.io/v1",
            "endpointslices",
            serde_json::json!({
                "metadata": {"name": format!("{app}-1"), "namespace": "shop",
                             "labels": {"kubernetes.io/service-name": app}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [pod.ip.to_string()], "conditions": {"ready": true},
                               "targetRef": {"kind": "Pod", "name": name, "namespace": "shop"}}],
            }),
        )
        .expect("slice");
    }
    eventually(Duration::from_secs(15), "web to be discovered", || async {
        let (code, svc) = cp.api_call("GET", "/v1/services/shop/web", None).await;
        (code == 200 && svc["spec"]["serviceAccounts"] == serde_json::json!(["web-sa"]))
            .then_some(())
            .ok_or(format!("{code} {svc}"))
    })
    .await;
    let roots = cp.tandemctl(&["ca", "status", "-o", "json"]).await;
    let roots: serde_json::Value = serde_json::from_str(roots.expect_ok("ca status")).unwrap();
    let pin = roots["roots"][0]["sha256"]
        .as_str()
        .expect("a root")
        .to_string();

    // Two pods as a user writes them, injected offline.
    let manifests = "apiVersion: v1\nkind: Pod\nmetadata: { name: client-1, namespace: shop, labels: { app: client } }\n\
         spec:\n  containers: [{ name: client, image: client:1 }]\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: { name: web-1, namespace: shop, labels: { app: web } }\n\
         spec:\n  serviceAccountName: web-sa\n  containers:\n    - name: web\n      image: web:1\n      ports: [{ name: http, containerPort: 8080 }]\n\
         \x20     livenessProbe: { httpGet: { path: /, port: http } }\n\
         \x20     readinessProbe: { tcpSocket: { port: 8080 } }\n";
    let file = tandem_tests::control_plane::TempDir::new("inject");
    let path = file.path().join("pods.yaml");
    std::fs::write(&path, manifests).expect("write manifests");
    let out = cp
        .tandemctl(&[
            "inject",
            "-f",
            path.to_str().expect("path"),
            "--control-plane",
            &xds.to_string(),
            "--ca-pin",
            &pin,
            "-o",
            "json",
        ])
        .await;
    let list: serde_json::Value =
        serde_json::from_str(out.expect_ok("tandemctl inject")).expect("a JSON List");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{list}");

    let app = bins::path(POD_APP).await;
    let app = app.to_str().expect("path").to_string();
    net.spawn(&server, None, &app, &["serve", "web", "8080"], &[], "ready")
        .await;
    let proxy = bins::path(PROXY).await;
    let proxy = proxy.to_str().expect("path").to_string();
    let mounts = tandem_tests::control_plane::TempDir::new("kubelet");
    for (item, pod) in [(&items[0], &client), (&items[1], &server)] {
        let spec = &item["spec"];
        let init = container(spec, "tandem-init", pod, "shop", &api, mounts.path());
        assert_eq!(init.uid, Some(0), "the init container runs as root");
        let mut cmd = vec![proxy.as_str()];
        cmd.extend(init.args.iter().map(String::as_str));
        let (ok, out) = pod.exec(&cmd);
        assert!(ok, "the injected init container's command: {out}");

        let sidecar = container(spec, "tandem-proxy", pod, "shop", &api, mounts.path());
        assert_eq!(sidecar.uid, Some(PROXY_UID));
        assert_eq!(
            spec["initContainers"][1]["restartPolicy"], "Always",
            "a native sidecar"
        );
        let args: Vec<&str> = sidecar.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = sidecar
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        net.spawn(pod, sidecar.uid, &proxy, &args, &env, "tandem-proxy ready")
            .await;
        // The kubelet's startup probe, as the spec writes it.
        let probe = &spec["initContainers"][1]["startupProbe"]["httpGet"];
        let port = u16::try_from(probe["port"].as_u64().expect("port")).expect("port");
        let resp = client::get_once(
            pod.addr(port),
            "kubelet",
            probe["path"].as_str().expect("path"),
        )
        .await
        .expect("startup probe");
        assert_eq!(resp.status(), 200);
    }

    // The app's probes, rewritten onto the admin port, report the app.
    let web = &items[1]["spec"]["containers"][0];
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &web[probe]["httpGet"];
        let port = u16::try_from(get["port"].as_u64().expect("rewritten port")).expect("port");
        let resp = client::get_once(
            server.addr(port),
            "kubelet",
            get["path"].as_str().expect("path"),
        )
        .await
        .expect("app probe");
        assert_eq!(resp.status(), 200, "{probe} {get}: {resp:?}");
    }

    // The client app calls the server by its service name, through both sidecars.
    let r = eventually(Duration::from_secs(20), "client to web.shop", || {
        let client = client.clone();
        async move {
            let r = curl(&client, "http://web.shop/");
            (r["status"] == "200")
                .then_some(r.clone())
                .ok_or(format!("{r:?}"))
        }
    })
    .await;
    assert_eq!(r["app"], "web");
    assert_eq!(
        r["xfcc"],
        "URI=spiffe://cluster.local/ns/shop/sa/default",
        "{r:?}\n{}",
        net.logs()
    );
    drop(net);
}

//! Discovery from the cluster: Services and EndpointSlices (and the labels of the pods
//! behind them) watched and mirrored into the store as Tandem services and endpoints,
//! owned by the source `kubernetes`.
//!
//! A Service becomes a Tandem service with its cluster IPs as virtual addresses (what a
//! transparent sidecar maps original destinations with) and its port, whose protocol comes
//! from `appProtocol`, else the port name's prefix (`http`, `http2`, `grpc`, `h2c`, `tcp`,
//! `tls`, `https`), else detection. Every ready address of its EndpointSlices becomes an
//! endpoint at the slice's port, labelled with the pod's labels and its zone
//! (`topology.kubernetes.io/zone`). A not-ready or terminating address is left out, so it
//! leaves the load balancers as soon as the API server says so. The ServiceAccounts of
//! the pods behind the slices (ready or not) become the service's `serviceAccounts`: the
//! identities clients accept from it, and the ones whose proxies may serve it.
//!
//! A Service with several TCP ports becomes a Tandem service with those ports, each of its
//! endpoints marked with the one Service port it serves (`servicePort`, matched by port
//! name as EndpointSlices name them), so that each port balances over its own target
//! ports (a cluster per port, see `tandem_xds::convert::to_xds`). ExternalName Services
//! and UDP/SCTP ports are skipped.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::SOURCE;
use crate::resources::validate::validate_document;
use crate::resources::{
    Kind, Resource, ACCESS_LOG_ANNOTATION, SOURCE_ANNOTATION, TANDEM_API_VERSION,
};
use crate::store::Store;

/// One watcher event of any of the three kinds (boxed: a Pod is large, and most events
/// are not Pods).
enum Seen {
    Service(Box<Result<Event<Service>, watcher::Error>>),
    Slice(Box<Result<Event<EndpointSlice>, watcher::Error>>),
    Pod(Box<Result<Event<Pod>, watcher::Error>>),
}

/// Objects of one kind by (namespace, name), with a relist in progress.
struct Objects<K> {
    current: BTreeMap<(String, String), K>,
    relisting: Option<BTreeMap<(String, String), K>>,
    listed: bool,
}

impl<K: kube::Resource + Clone> Objects<K> {
    fn new() -> Self {
        Objects {
            current: BTreeMap::new(),
            relisting: None,
            listed: false,
        }
    }

    /// Takes one event; whether the objects changed.
    fn take(&mut self, event: Result<Event<K>, watcher::Error>, what: &str) -> bool {
        let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
        match event {
            Ok(Event::Init) => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            Ok(Event::InitApply(o)) => {
                self.relisting
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key(&o), o);
                false
            }
            Ok(Event::InitDone) => {
                self.current = self.relisting.take().unwrap_or_default();
                self.listed = true;
                true
            }
            Ok(Event::Apply(o)) => {
                self.current.insert(key(&o), o);
                true
            }
            Ok(Event::Delete(o)) => self.current.remove(&key(&o)).is_some(),
            Err(e) => {
                tracing::warn!(kind = what, error = %e, "watching the cluster failed; retrying");
                false
            }
        }
    }
}

/// Watches and mirrors until the process exits.
pub async fn run(client: kube::Client, store: Arc<Store>) {
    let (tx, mut rx) = mpsc::channel::<Seen>(256);
    spawn_watch(
        Api::<Service>::all(client.clone()),
        tx.clone(),
        Seen::Service,
    );
    spawn_watch(
        Api::<EndpointSlice>::all(client.clone()),
        tx.clone(),
        Seen::Slice,
    );
    spawn_watch(Api::<Pod>::all(client), tx, Seen::Pod);
    let mut services = Objects::<Service>::new();
    let mut slices = Objects::<EndpointSlice>::new();
    let mut pods = Objects::<Pod>::new();
    let mut warned: BTreeMap<(String, String), String> = BTreeMap::new();
    while let Some(first) = rx.recv().await {
        let mut changed = false;
        let mut next = Some(first);
        while let Some(seen) = next {
            changed |= match seen {
                Seen::Service(e) => services.take(*e, "Service"),
                Seen::Slice(e) => slices.take(*e, "EndpointSlice"),
                Seen::Pod(e) => pods.take(*e, "Pod"),
            };
            next = rx.try_recv().ok();
        }
        if !(changed && services.listed && slices.listed && pods.listed) {
            continue;
        }
        let desired = desired(
            &services.current,
            &slices.current,
            &pods.current,
            &mut warned,
        );
        super::sync(
            &store,
            vec![Kind::Service, Kind::Endpoint],
            desired,
            "services",
        )
        .await;
    }
}

fn spawn_watch<K>(
    api: Api<K>,
    tx: mpsc::Sender<Seen>,
    wrap: fn(Box<Result<Event<K>, watcher::Error>>) -> Seen,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut events =
            std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
        while let Some(event) = events.next().await {
            if tx.send(wrap(Box::new(event))).await.is_err() {
                return;
            }
        }
    });
}

/// The services and endpoints the cluster describes; a Service that cannot be mirrored is
/// logged once per reason.
fn desired(
    services: &BTreeMap<(String, String), Service>,
    slices: &BTreeMap<(String, String), EndpointSlice>,
    pods: &BTreeMap<(String, String), Pod>,
    warned: &mut BTreeMap<(String, String), String>,
) -> Vec<Resource> {
    let mut out = Vec::new();
    for (key, svc) in services {
        let ports = match service_ports(svc) {
            Ok(p) => p,
            Err(reason) => {
                if warned.get(key) != Some(&reason) {
                    tracing::warn!(namespace = %key.0, name = %key.1, %reason, "Service not discovered");
                    warned.insert(key.clone(), reason);
                }
                continue;
            }
        };
        let log = match access_log(svc) {
            Ok(log) => {
                warned.remove(key);
                log
            }
            Err(reason) => {
                if warned.get(key) != Some(&reason) {
                    tracing::warn!(namespace = %key.0, name = %key.1, %reason, "Service annotation ignored");
                    warned.insert(key.clone(), reason);
                }
                None
            }
        };
        let addresses: Vec<&String> = svc
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ips.as_ref())
            .into_iter()
            .flatten()
            .filter(|ip| ip.as_str() != "None" && !ip.is_empty())
            .collect();
        let mine: Vec<&EndpointSlice> = slices
            .values()
            .filter(|s| belongs(s, &key.0, &key.1))
            .collect();
        let mut annotations = json!({SOURCE_ANNOTATION: SOURCE});
        if let Some(log) = log {
            annotations[ACCESS_LOG_ANNOTATION] = json!(log);
        }
        let doc = json!({
            "apiVersion": TANDEM_API_VERSION,
            "kind": "Service",
            "metadata": {"name": key.1, "namespace": key.0, "annotations": annotations},
            "spec": {
                "ports": ports.iter().map(|p| &p.doc).collect::<Vec<_>>(),
                "addresses": addresses,
                "serviceAccounts": service_accounts(&mine, pods),
            },
        });
        push(&mut out, doc);
        for slice in mine {
            for doc in endpoints(slice, &key.1, &ports, pods) {
                push(&mut out, doc);
            }
        }
    }
    out
}

/// The Service's access log annotation, or why it is ignored: a typo there must not take
/// the Service out of the mesh.
fn access_log(svc: &Service) -> Result<Option<&String>, String> {
    let Some(value) = svc.annotations().get(ACCESS_LOG_ANNOTATION) else {
        return Ok(None);
    };
    crate::resources::validate::access_log("", value)
        .map(|_| Some(value))
        .map_err(|e| e.to_string())
}

fn push(out: &mut Vec<Resource>, doc: Value) {
    match validate_document("", doc) {
        Ok(r) => out.push(r),
        Err(e) => tracing::warn!(error = %e, "a discovered object does not validate; skipped"),
    }
}

/// One TCP port of a Service.
struct DiscoveredPort {
    /// Its name (required by Kubernetes when a Service has several).
    name: Option<String>,
    /// The Service port.
    port: u16,
    /// The Tandem port document.
    doc: Value,
}

/// The TCP ports of a Service, or why it is not discovered.
fn service_ports(svc: &Service) -> Result<Vec<DiscoveredPort>, String> {
    let spec = svc.spec.as_ref().ok_or("no spec")?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err("ExternalName Services name no endpoints".into());
    }
    let ports: Vec<DiscoveredPort> = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok().filter(|p| *p != 0)?;
            let name = p.name.clone().filter(|n| !n.is_empty());
            let mut doc = json!({
                "port": port,
                "protocol": protocol(p.app_protocol.as_deref(), name.as_deref()),
            });
            if let Some(name) = &name {
                doc["name"] = json!(name);
            }
            Some(DiscoveredPort { name, port, doc })
        })
        .collect();
    if ports.is_empty() {
        return Err("no TCP port".into());
    }
    Ok(ports)
}

/// A port's protocol: `appProtocol`, else the name's prefix (Istio's convention), else
/// detection.
pub fn protocol(app_protocol: Option<&str>, name: Option<&str>) -> &'static str {
    let by_app = match app_protocol.map(str::to_ascii_lowercase).as_deref() {
        Some("http" | "kubernetes.io/ws" | "http1" | "http/1.1") => Some("http"),
        Some("http2" | "kubernetes.io/h2c" | "h2c" | "grpc") => Some("http2"),
        Some("tcp" | "https" | "tls" | "kubernetes.io/wss" | "mysql" | "redis" | "mongo") => {
            Some("tcp")
        }
        _ => None,
    };
    if let Some(p) = by_app {
        return p;
    }
    let name = name.unwrap_or_default().to_ascii_lowercase();
    let prefix = name.split('-').next().unwrap_or_default();
    match prefix {
        "http" => "http",
        "http2" | "grpc" | "h2c" => "http2",
        "tcp" | "tls" | "https" | "mysql" | "redis" | "mongo" => "tcp",
        _ => "detect",
    }
}

/// The ServiceAccounts of every pod behind `slices`, ready or not: a pod's proxy asks for
/// its config (and must be allowed to serve the service) before the pod is ready, and a
/// client must accept any of them. A pod that names none runs as `default`. Empty when no
/// pod is known yet (the service's own name is then the expected account).
fn service_accounts(
    slices: &[&EndpointSlice],
    pods: &BTreeMap<(String, String), Pod>,
) -> Vec<String> {
    let mut accounts = std::collections::BTreeSet::new();
    for slice in slices {
        let ns = slice.namespace().unwrap_or_default();
        for ep in &slice.endpoints {
            if let Some(pod) = pod_of(ep, &ns, pods) {
                let sa = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .filter(|sa| !sa.is_empty())
                    .unwrap_or_else(|| "default".to_string());
                accounts.insert(sa);
            }
        }
    }
    accounts.into_iter().collect()
}

/// The pod an EndpointSlice endpoint of namespace `ns` points at, if it is known.
fn pod_of<'p>(
    ep: &k8s_openapi::api::discovery::v1::Endpoint,
    ns: &str,
    pods: &'p BTreeMap<(String, String), Pod>,
) -> Option<&'p Pod> {
    let r = ep
        .target_ref
        .as_ref()
        .filter(|r| r.kind.as_deref() == Some("Pod"))?;
    pods.get(&(ns.to_string(), r.name.clone().unwrap_or_default()))
}

/// Whether `slice` serves Service `namespace/name`.
fn belongs(slice: &EndpointSlice, namespace: &str, name: &str) -> bool {
    slice.namespace().as_deref() == Some(namespace)
        && slice
            .labels()
            .get("kubernetes.io/service-name")
            .map(String::as_str)
            == Some(name)
}

/// The ready addresses of a slice as Tandem `Endpoint` documents: at the slice's port for
/// a Service with one port; for one with several, at each slice port, marked with the
/// Service port of the same name.
fn endpoints(
    slice: &EndpointSlice,
    service: &str,
    ports: &[DiscoveredPort],
    pods: &BTreeMap<(String, String), Pod>,
) -> Vec<Value> {
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return Vec::new();
    }
    // (target port, the Service port it serves when there are several).
    let mut targets: Vec<(u16, Option<u16>)> = slice
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .filter_map(|p| {
            let target = u16::try_from(p.port?).ok().filter(|t| *t != 0)?;
            match ports {
                [_] => Some((target, None)),
                many => {
                    let name = p.name.as_deref().filter(|n| !n.is_empty());
                    let serves = many.iter().find(|sp| sp.name.as_deref() == name)?;
                    Some((target, Some(serves.port)))
                }
            }
        })
        .collect();
    if ports.len() == 1 {
        targets.truncate(1);
    }
    if targets.is_empty() {
        return Vec::new();
    }
    let ns = slice.namespace().unwrap_or_default();
    let mut out = Vec::new();
    for ep in &slice.endpoints {
        let conditions = ep.conditions.as_ref();
        // Unset `ready` means ready; a terminating endpoint is not.
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true)
            && !conditions.and_then(|c| c.terminating).unwrap_or(false);
        if !ready {
            continue;
        }
        let mut labels = serde_json::Map::new();
        if let Some(pod) = pod_of(ep, &ns, pods) {
            for (k, v) in pod.labels() {
                labels.insert(k.clone(), json!(v));
            }
        }
        if let Some(zone) = &ep.zone {
            labels.insert("topology.kubernetes.io/zone".into(), json!(zone));
        }
        for ip in &ep.addresses {
            let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
                continue;
            };
            for (target, serves) in &targets {
                let address = std::net::SocketAddr::new(ip, *target);
                let mut spec =
                    json!({"service": service, "address": address.to_string(), "labels": labels});
                if let Some(port) = serves {
                    spec["servicePort"] = json!(port);
                }
                out.push(json!({
                    "apiVersion": TANDEM_API_VERSION,
                    "kind": "Endpoint",
                    "metadata": {"namespace": ns, "annotations": {SOURCE_ANNOTATION: SOURCE}},
                    "spec": spec,
                }));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_come_from_app_protocol_then_the_port_name() {
        assert_eq!(protocol(Some("kubernetes.io/h2c"), None), "http2");
        assert_eq!(protocol(Some("http"), Some("grpc")), "http");
        assert_eq!(protocol(None, Some("grpc-api")), "http2");
        assert_eq!(protocol(None, Some("http")), "http");
        assert_eq!(protocol(None, Some("tcp-db")), "tcp");
        assert_eq!(protocol(None, Some("web")), "detect");
        assert_eq!(protocol(Some("unknown.example/x"), None), "detect");
    }

    fn object<K: serde::de::DeserializeOwned>(v: Value) -> BTreeMap<(String, String), K> {
        let key = (
            v["metadata"]["namespace"].as_str().unwrap().to_string(),
            v["metadata"]["name"].as_str().unwrap().to_string(),
        );
        [(key, serde_json::from_value(v).unwrap())]
            .into_iter()
            .collect()
    }

    #[test]
    fn a_services_access_log_annotation_is_carried_and_a_bad_one_ignored() {
        let service = |value: &str| {
            object::<Service>(json!({
                "metadata": {"namespace": "shop", "name": "web",
                             "annotations": {ACCESS_LOG_ANNOTATION: value}},
                "spec": {"ports": [{"name": "http", "port": 80}]},
            }))
        };
        let mut warned = BTreeMap::new();
        let out = desired(
            &service("stdout"),
            &BTreeMap::new(),
            &BTreeMap::new(),
            &mut warned,
        );
        assert!(warned.is_empty(), "{warned:?}");
        assert_eq!(
            out[0].doc["metadata"]["annotations"][ACCESS_LOG_ANNOTATION],
            "stdout"
        );

        let out = desired(
            &service("logs/web.log"),
            &BTreeMap::new(),
            &BTreeMap::new(),
            &mut warned,
        );
        assert_eq!(out.len(), 1, "the Service stays in the mesh");
        assert!(out[0].doc["metadata"]["annotations"]
            .get(ACCESS_LOG_ANNOTATION)
            .is_none());
        let reason = warned.get(&("shop".into(), "web".into())).unwrap();
        assert!(reason.contains("absolute"), "{reason}");
    }

    #[test]
    fn a_multi_port_service_marks_each_endpoint_with_the_port_it_serves() {
        let services = object::<Service>(json!({
            "metadata": {"namespace": "shop", "name": "web"},
            "spec": {"clusterIPs": ["10.96.0.20"], "ports": [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "grpc", "port": 9090, "targetPort": "grpc", "appProtocol": "grpc"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ]},
        }));
        let slices = object::<EndpointSlice>(json!({
            "metadata": {"namespace": "shop", "name": "web-abc",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": 9091}, {"name": "http", "port": 8080},
                      {"name": "dns", "port": 53, "protocol": "UDP"}],
            "endpoints": [
                {"addresses": ["10.1.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.1.0.2"], "conditions": {"ready": false}},
            ],
        }));
        let mut warned = BTreeMap::new();
        let out = desired(&services, &slices, &BTreeMap::new(), &mut warned);
        assert!(warned.is_empty(), "{warned:?}");
        let svc = out.iter().find(|r| r.key.kind == Kind::Service).unwrap();
        let ports: Vec<(u64, &str)> = svc.doc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["port"].as_u64().unwrap(), p["protocol"].as_str().unwrap()))
            .collect();
        assert_eq!(ports, [(80, "http"), (9090, "http2")]);
        let mut eps: Vec<(String, u64, String)> = out
            .iter()
            .filter(|r| r.key.kind == Kind::Endpoint)
            .map(|r| {
                let spec = &r.doc["spec"];
                (
                    spec["address"].as_str().unwrap().to_string(),
                    spec["servicePort"].as_u64().unwrap(),
                    r.key.name.clone(),
                )
            })
            .collect();
        eps.sort();
        assert_eq!(
            eps,
            [
                (
                    "10.1.0.1:8080".into(),
                    80,
                    "web-10-1-0-1-8080-for-80".into()
                ),
                (
                    "10.1.0.1:9091".into(),
                    9090,
                    "web-10-1-0-1-9091-for-9090".into()
                ),
            ]
        );
        let endpoints: Vec<tandem_xds::domain::Endpoint> = out
            .iter()
            .filter(|r| r.key.kind == Kind::Endpoint)
            .map(|r| crate::resources::domain::endpoint(&r.doc).unwrap())
            .collect();
        assert!(endpoints.iter().all(|e| e.service_port.is_some()));
    }

    #[test]
    fn a_single_port_service_keeps_unmarked_endpoints() {
        let services = object::<Service>(json!({
            "metadata": {"namespace": "shop", "name": "db"},
            "spec": {"ports": [{"port": 5432, "targetPort": 5433}]},
        }));
        let slices = object::<EndpointSlice>(json!({
            "metadata": {"namespace": "shop", "name": "db-abc",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"port": 5433}],
            "endpoints": [{"addresses": ["10.1.0.9"]}],
        }));
        let out = desired(&services, &slices, &BTreeMap::new(), &mut BTreeMap::new());
        let ep = out.iter().find(|r| r.key.kind == Kind::Endpoint).unwrap();
        assert_eq!(ep.doc["spec"]["address"], "10.1.0.9:5433");
        assert!(ep.doc["spec"].get("servicePort").is_none());
        assert_eq!(ep.key.name, "db-10-1-0-9-5433");
    }
}

//! Mesh resources for `tandemctl apply` (YAML documents) and what a proxy in xDS mode
//! reports about them (`/config_dump`, xDS metrics), plus routing probes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use crate::proxy::Proxy;
use crate::{client, eventually, upstream, within, STEP_TIMEOUT};

/// A `Service` document with one HTTP port.
pub fn service(name: &str) -> String {
    service_with_protocol(name, "http")
}

/// A `Service` document with one port speaking `protocol` (`http`, `http2`, `grpc`, ...).
pub fn service_with_protocol(name: &str, protocol: &str) -> String {
    format!(
        "apiVersion: tandem.dev/v1alpha1\nkind: Service\nmetadata: {{ name: {name}, namespace: default }}\n\
         spec:\n  ports:\n    - {{ port: 80, name: main, protocol: {protocol} }}\n"
    )
}

/// An `Endpoint` document: `address` serves `service`.
pub fn endpoint(service: &str, address: SocketAddr) -> String {
    format!(
        "apiVersion: tandem.dev/v1alpha1\nkind: Endpoint\nmetadata: {{ namespace: default }}\n\
         spec: {{ service: {service}, address: \"{address}\" }}\n"
    )
}

/// An `HTTPRoute` named `name` for traffic to `parent`, one catch-all rule splitting over
/// `backends` (service name, weight).
pub fn split_route(name: &str, parent: &str, backends: &[(&str, u64)]) -> String {
    let mut refs = String::new();
    for (svc, weight) in backends {
        let _ = writeln!(
            refs,
            "        - {{ name: {svc}, port: 80, weight: {weight} }}"
        );
    }
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{ name: {name}, namespace: default }}\nspec:\n\
         \x20 parentRefs:\n    - {{ kind: Service, name: {parent}, port: 80 }}\n\
         \x20 rules:\n    - matches:\n        - path: {{ type: PathPrefix, value: / }}\n\
         \x20     backendRefs:\n{refs}"
    )
}

/// Joins documents into one multi-document YAML stream.
pub fn docs(documents: &[String]) -> String {
    documents.join("---\n")
}

/// The xDS cluster (and route config) name of service `name` in `default`.
pub fn fqdn(name: &str) -> String {
    format!("{name}.default.svc.cluster.local")
}

/// The weighted clusters of every route in route config `fqdn(service)` from a proxy's
/// `/config_dump` (`routes.route_configs`), as (cluster, weight), route by route; `None`
/// when the proxy does not have that route config.
pub async fn route_clusters(proxy: &Proxy, service: &str) -> Option<Vec<Vec<(String, u64)>>> {
    let dump = proxy.config_dump().await;
    let routes = dump["routes"]["route_configs"][fqdn(service)].as_array()?;
    Some(
        routes
            .iter()
            .map(|r| {
                r["clusters"]
                    .as_array()
                    .map(|cs| {
                        cs.iter()
                            .map(|c| {
                                (
                                    c["cluster"].as_str().unwrap_or_default().to_owned(),
                                    c["weight"].as_u64().unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect(),
    )
}

/// Waits (bounded) until the proxy's route config for `service` is one route splitting
/// over exactly `backends` (service name, weight).
pub async fn wait_split(proxy: &Proxy, service: &str, backends: &[(&str, u64)], limit: Duration) {
    let want: Vec<(String, u64)> = backends.iter().map(|(s, w)| (fqdn(s), *w)).collect();
    eventually(
        limit,
        &format!("proxy {} to route {service} as {backends:?}", proxy.admin()),
        || async {
            let got = route_clusters(proxy, service).await;
            match &got {
                Some(routes) if routes.len() == 1 && routes[0] == want => Ok(()),
                _ => Err(format!("{got:?}")),
            }
        },
    )
    .await;
}

/// The endpoints of cluster `fqdn(service)` (or, for `service:port`, that port's cluster
/// of a service with several ports) in the proxy's `/config_dump`.
pub async fn cluster_endpoints(proxy: &Proxy, service: &str) -> Option<Vec<SocketAddr>> {
    let dump = proxy.config_dump().await;
    let cluster = match service.split_once(':') {
        Some((name, port)) => format!("{}:{port}", fqdn(name)),
        None => fqdn(service),
    };
    let eps = dump["routes"]["clusters"][cluster]["endpoints"].as_array()?;
    Some(
        eps.iter()
            .filter_map(|e| e.as_str().and_then(|s| s.parse().ok()))
            .collect(),
    )
}

/// The proxy's `xds` object from `/config_dump` (panics when absent: not in xDS mode?).
pub async fn xds_status(proxy: &Proxy) -> serde_json::Value {
    let dump = proxy.config_dump().await;
    match dump.get("xds") {
        Some(x) if x.is_object() => x.clone(),
        _ => panic!("/config_dump has no `xds` object: {dump}"),
    }
}

/// The value of an unlabelled metric (gauge or counter) of the proxy, 0 when absent.
pub async fn metric(proxy: &Proxy, name: &str) -> f64 {
    proxy.metrics().await.value(name, &[])
}

/// Waits (bounded) until the proxy's metric `name` satisfies `ok`; returns the value.
pub async fn wait_metric(
    proxy: &Proxy,
    name: &str,
    limit: Duration,
    what: &str,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    eventually(limit, what, || async {
        let v = metric(proxy, name).await;
        if ok(v) {
            Ok(v)
        } else {
            Err(format!("{name} = {v}"))
        }
    })
    .await
}

/// Like [`answered_by`], but any failure or non-200 answer is an `Err` to retry on.
pub async fn try_answered_by(
    proxy: &Proxy,
    host: &str,
    n: usize,
) -> Result<BTreeMap<String, u64>, String> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let resp = within(
            STEP_TIMEOUT,
            &format!("GET http://{host}/ #{i}"),
            client::get_once(proxy.outbound(), host, "/"),
        )
        .await
        .map_err(|e| format!("GET http://{host}/ #{i}: {e}"))?;
        if resp.status() != 200 {
            return Err(format!(
                "GET http://{host}/ #{i}: {} {:?} {:?}",
                resp.status(),
                resp.headers(),
                resp.body()
            ));
        }
        let server = client::header(&resp, upstream::SERVER)
            .ok_or_else(|| format!("no {} header: {:?}", upstream::SERVER, resp.headers()))?;
        *seen.entry(server.to_owned()).or_default() += 1;
    }
    Ok(seen)
}

/// Sends `n` sequential `GET http://HOST/` through the proxy's outbound listener (fresh
/// connection each, so each request sees the proxy's current config) and counts which
/// upstream answered (its [`upstream::SERVER`] header); any other answer panics.
pub async fn answered_by(proxy: &Proxy, host: &str, n: usize) -> BTreeMap<String, u64> {
    try_answered_by(proxy, host, n)
        .await
        .unwrap_or_else(|e| panic!("{e} (via {})", proxy.outbound()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_route_is_the_documented_shape() {
        assert_eq!(
            split_route("r", "web", &[("web-v1", 90), ("web-v2", 10)]),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: { name: r, namespace: default }\nspec:\n  parentRefs:\n    \
             - { kind: Service, name: web, port: 80 }\n  rules:\n    - matches:\n        \
             - path: { type: PathPrefix, value: / }\n      backendRefs:\n        \
             - { name: web-v1, port: 80, weight: 90 }\n        \
             - { name: web-v2, port: 80, weight: 10 }\n"
        );
        assert_eq!(
            docs(&[service("a"), endpoint("a", "127.0.0.1:1".parse().unwrap())]),
            "apiVersion: tandem.dev/v1alpha1\nkind: Service\nmetadata: { name: a, namespace: default }\n\
             spec:\n  ports:\n    - { port: 80, name: main, protocol: http }\n---\n\
             apiVersion: tandem.dev/v1alpha1\nkind: Endpoint\nmetadata: { namespace: default }\n\
             spec: { service: a, address: \"127.0.0.1:1\" }\n"
        );
    }
}

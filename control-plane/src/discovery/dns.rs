//! DNS discovery: a Service with `spec.dns` gets its endpoints from A/AAAA records of
//! `dns.name` (at `dns.port`) or from SRV records of `dns.srv` (targets resolved to
//! addresses, at each record's port).
//!
//! One task per such service resolves, replaces the service's DNS-owned endpoints (one
//! revision by `dns`, none when unchanged), and sleeps until the answer's TTL runs out,
//! clamped to at least 1 s and at most the ceiling (`--dns-refresh`, default 5 min).
//! A name that does not exist empties the set; any other failure keeps it and retries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use serde_json::Value;
use tandem_xds::domain::ServiceRef;
use tokio::task::JoinHandle;

use super::Source;
use crate::resources::spec::DnsSpec;
use crate::resources::validate::validate_document;
use crate::resources::{domain, Kind, Resource, SOURCE_ANNOTATION, TANDEM_API_VERSION};
use crate::store::{endpoint_service, Store, StoreError, WHO_DNS};

/// The `tandem.dev/source` of DNS-discovered endpoints.
pub const SOURCE: &str = "dns";
/// Shortest refresh interval.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Default longest refresh interval.
pub const DEFAULT_MAX_REFRESH: Duration = Duration::from_secs(300);
const RETRY: Duration = Duration::from_secs(5);

/// The DNS source.
#[derive(Debug)]
pub struct Dns {
    /// Longest time between refreshes of one name.
    pub max_refresh: Duration,
}

/// What one resolution found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The addresses, sorted.
    pub addresses: BTreeSet<SocketAddr>,
    /// How long the answer stays valid.
    pub ttl: Duration,
}

/// Why a resolution failed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The name has no such records: the set is empty.
    #[error("no records for {0}")]
    NoRecords(String),
    /// Anything else (timeouts, server failures): keep the last set.
    #[error("resolving {0}: {1}")]
    Failed(String, String),
}

/// Builds a resolver from the system config (`/etc/resolv.conf`, hosts file), caching no
/// answer longer than `max_ttl`.
pub fn resolver(max_ttl: Duration) -> Result<TokioResolver, DnsError> {
    let fail = |e: &dyn std::fmt::Display| DnsError::Failed("resolver".into(), e.to_string());
    let mut builder = TokioResolver::builder_tokio().map_err(|e| fail(&e))?;
    builder.options_mut().positive_max_ttl = Some(max_ttl);
    builder.build().map_err(|e| fail(&e))
}

fn classify(name: &str, e: hickory_resolver::net::NetError) -> DnsError {
    if e.is_no_records_found() || e.is_nx_domain() {
        DnsError::NoRecords(name.to_string())
    } else {
        DnsError::Failed(name.to_string(), e.to_string())
    }
}

fn remaining(until: std::time::Instant) -> Duration {
    until.saturating_duration_since(std::time::Instant::now())
}

/// Resolves a service's `spec.dns` once.
pub async fn resolve(resolver: &TokioResolver, spec: &DnsSpec) -> Result<Answer, DnsError> {
    let fqdn = |n: &str| {
        if n.ends_with('.') {
            n.to_string()
        } else {
            format!("{n}.")
        }
    };
    match (&spec.name, spec.port, &spec.srv) {
        (Some(name), Some(port), _) => {
            let ips = resolver
                .lookup_ip(fqdn(name))
                .await
                .map_err(|e| classify(name, e))?;
            Ok(Answer {
                addresses: ips.iter().map(|ip| SocketAddr::new(ip, port)).collect(),
                ttl: remaining(ips.valid_until()),
            })
        }
        (_, _, Some(srv)) => {
            let lookup = resolver
                .srv_lookup(fqdn(srv))
                .await
                .map_err(|e| classify(srv, e))?;
            let mut ttl = remaining(lookup.valid_until());
            let mut addresses = BTreeSet::new();
            for record in lookup.answers() {
                if let RData::SRV(s) = &record.data {
                    let target = s.target.to_string();
                    match resolver.lookup_ip(target.clone()).await {
                        Ok(ips) => {
                            ttl = ttl.min(remaining(ips.valid_until()));
                            addresses.extend(ips.iter().map(|ip| SocketAddr::new(ip, s.port)));
                        }
                        Err(e) => tracing::debug!(target, error = %e, "SRV target did not resolve"),
                    }
                }
            }
            Ok(Answer { addresses, ttl })
        }
        _ => Err(DnsError::Failed(
            "spec.dns".into(),
            "neither name+port nor srv".into(),
        )),
    }
}

/// The endpoint documents for `service` at `addresses`, owned by this source.
pub fn endpoint_docs(
    service: &ServiceRef,
    addresses: &BTreeSet<SocketAddr>,
) -> Result<Vec<Resource>, StoreError> {
    addresses
        .iter()
        .map(|addr| {
            let doc = serde_json::json!({
                "apiVersion": TANDEM_API_VERSION,
                "kind": "Endpoint",
                "metadata": {"namespace": service.namespace, "annotations": {SOURCE_ANNOTATION: SOURCE}},
                "spec": {"service": service.name, "address": addr.to_string()},
            });
            Ok(validate_document("dns", doc)?)
        })
        .collect()
}

/// The refresh delay for an answer's TTL.
pub fn refresh_after(ttl: Duration, max: Duration) -> Duration {
    ttl.clamp(MIN_REFRESH, max.max(MIN_REFRESH))
}

impl Source for Dns {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn run(self: Box<Self>, store: Arc<Store>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let resolver = match resolver(self.max_refresh) {
                Ok(r) => Arc::new(r),
                Err(e) => {
                    tracing::error!(error = %e, "DNS discovery disabled");
                    return;
                }
            };
            let mut tasks: HashMap<ServiceRef, (DnsSpec, JoinHandle<()>)> = HashMap::new();
            let mut head = store.subscribe();
            loop {
                let st = store.clone();
                match tokio::task::spawn_blocking(move || wanted(&st)).await {
                    Ok(Ok((want, orphans))) => {
                        tasks.retain(|svc, (spec, task)| {
                            let keep = want.get(svc) == Some(spec);
                            if !keep {
                                task.abort();
                            }
                            keep
                        });
                        for (svc, spec) in want {
                            if let std::collections::hash_map::Entry::Vacant(slot) =
                                tasks.entry(svc.clone())
                            {
                                let task = tokio::spawn(refresh_loop(
                                    store.clone(),
                                    resolver.clone(),
                                    svc,
                                    spec.clone(),
                                    self.max_refresh,
                                ));
                                slot.insert((spec, task));
                            }
                        }
                        for svc in orphans {
                            let st = store.clone();
                            let _ = tokio::task::spawn_blocking(move || {
                                st.replace_endpoints(SOURCE, Some(&svc), Vec::new(), WHO_DNS)
                            })
                            .await;
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "DNS discovery cannot read services"),
                    Err(e) => tracing::warn!(error = %e, "DNS discovery task failed"),
                }
                if head.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

/// Services with `spec.dns`, and services whose DNS-owned endpoints no longer have one.
#[allow(clippy::type_complexity)]
fn wanted(
    store: &Store,
) -> Result<(BTreeMap<ServiceRef, DnsSpec>, BTreeSet<ServiceRef>), StoreError> {
    let mut want = BTreeMap::new();
    for s in store.list(Kind::Service, None)? {
        if let Some(dns) = domain::service_spec(&s.doc)?.dns {
            want.insert(ServiceRef::new(s.key.namespace, s.key.name), dns);
        }
    }
    let mut orphans = BTreeSet::new();
    for ep in store.list(Kind::Endpoint, None)? {
        let owner = ep
            .doc
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(SOURCE_ANNOTATION))
            .and_then(Value::as_str);
        if owner == Some(SOURCE) {
            if let Some(svc) = endpoint_service(&ep) {
                if !want.contains_key(&svc) {
                    orphans.insert(svc);
                }
            }
        }
    }
    Ok((want, orphans))
}

async fn refresh_loop(
    store: Arc<Store>,
    resolver: Arc<TokioResolver>,
    service: ServiceRef,
    spec: DnsSpec,
    max_refresh: Duration,
) {
    loop {
        let wait = match resolve(&resolver, &spec).await {
            Ok(answer) => {
                write(&store, &service, &spec, answer.addresses).await;
                refresh_after(answer.ttl, max_refresh)
            }
            Err(DnsError::NoRecords(name)) => {
                tracing::info!(service = %service.fqdn(), name, "DNS name has no records");
                write(&store, &service, &spec, BTreeSet::new()).await;
                refresh_after(RETRY, max_refresh)
            }
            Err(e) => {
                tracing::warn!(service = %service.fqdn(), error = %e, "DNS refresh failed; keeping endpoints");
                refresh_after(RETRY, max_refresh)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

async fn write(
    store: &Arc<Store>,
    service: &ServiceRef,
    spec: &DnsSpec,
    addresses: BTreeSet<SocketAddr>,
) {
    let (st, svc, spec) = (store.clone(), service.clone(), spec.clone());
    let res = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
        // The service may have lost its DNS spec meanwhile: never write for it then.
        let key = crate::resources::ResourceKey::new(Kind::Service, &svc.namespace, &svc.name);
        let current = match st.get(&key)? {
            Some(s) => domain::service_spec(&s.doc)?.dns,
            None => None,
        };
        if current.as_ref() != Some(&spec) {
            return Ok(None);
        }
        let docs = endpoint_docs(&svc, &addresses)?;
        Ok(Some(st.replace_endpoints(
            SOURCE,
            Some(&svc),
            docs,
            WHO_DNS,
        )?))
    })
    .await;
    match res {
        Ok(Ok(Some(out))) if !out.changed.is_empty() => {
            tracing::info!(service = %service.fqdn(), revision = out.revision, "DNS endpoints changed");
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(service = %service.fqdn(), error = %e, "DNS endpoints not stored")
        }
        Err(e) => tracing::warn!(error = %e, "DNS write task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_clamped() {
        let max = DEFAULT_MAX_REFRESH;
        assert_eq!(refresh_after(Duration::ZERO, max), MIN_REFRESH);
        assert_eq!(
            refresh_after(Duration::from_secs(30), max),
            Duration::from_secs(30)
        );
        assert_eq!(refresh_after(Duration::from_secs(86400), max), max);
    }

    #[tokio::test]
    async fn localhost_resolves_from_the_hosts_file() {
        let r = resolver(DEFAULT_MAX_REFRESH).unwrap();
        let spec = DnsSpec {
            name: Some("localhost".into()),
            port: Some(8080),
            srv: None,
        };
        let answer = resolve(&r, &spec).await.unwrap();
        assert!(
            answer
                .addresses
                .contains(&"127.0.0.1:8080".parse().unwrap()),
            "{answer:?}"
        );
        let docs = endpoint_docs(&ServiceRef::new("default", "web"), &answer.addresses).unwrap();
        assert_eq!(docs.len(), answer.addresses.len());
    }

    #[tokio::test]
    async fn missing_srv_is_no_records() {
        let r = resolver(DEFAULT_MAX_REFRESH).unwrap();
        let spec = DnsSpec {
            name: None,
            port: None,
            srv: Some("_http._tcp.tandem.invalid".into()),
        };
        assert!(matches!(
            resolve(&r, &spec).await,
            Err(DnsError::NoRecords(_))
        ));
    }
}

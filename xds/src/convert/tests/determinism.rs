//! The same mesh must encode to the same bytes every time: the snapshot hashes each
//! resource's bytes, and a hash that moves without a change pushes to every stream.

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::{value, ListValue, Struct, Value};

use super::policy::policy_mesh;
use super::security::{rule_shapes, secure_mesh};
use super::traffic::traffic_mesh;
use super::*;

/// Every feature that ends up in a protobuf map (cluster metadata with both `protocol`
/// and `lb`, per-route fault config, RBAC policies) next to everything else the mesh can
/// say: the shared mesh with identity and authorization, the traffic mesh's routes and
/// faults, and one destination policy per load balancer.
fn rich_mesh() -> MeshConfig {
    let mut m = secure_mesh(
        TlsMode::Permissive,
        vec![
            (AuthzAction::Deny, rule_shapes()),
            (AuthzAction::Allow, rule_shapes()),
        ],
    );
    let traffic = traffic_mesh();
    m.services.extend(traffic.services);
    m.endpoints.extend(traffic.endpoints);
    m.routes.extend(traffic.routes);
    m.faults.extend(traffic.faults);
    let policies = [
        ("reviews-v1", LoadBalancer::PeakEwma),
        ("reviews-v2", LoadBalancer::LeastRequest),
        ("web-v1", LoadBalancer::RoundRobin),
        ("web-v2", LoadBalancer::PeakEwma),
    ];
    for (target, lb) in policies {
        let mut p = policy_mesh(CallPolicy {
            lb,
            ..Default::default()
        })
        .policies
        .into_values()
        .next()
        .unwrap();
        p.name = format!("{target}-policy");
        p.target = svc(target);
        m.policies.insert((p.namespace.clone(), p.name.clone()), p);
    }
    m
}

#[test]
fn every_resource_encodes_to_the_same_bytes_on_every_conversion() {
    let m = rich_mesh();
    let first = to_snapshot(&m, "v1").unwrap();
    first.check_consistent().unwrap();
    // The fixture does reach every map: Tandem metadata with two fields, a fault per route.
    let c: Cluster = unpack(first.get(CLUSTER_TYPE, &fqdn("web-v2")).unwrap(), "x").unwrap();
    assert_eq!(
        c.metadata.unwrap().filter_metadata["tandem"].fields.len(),
        2
    );
    assert!(first.of_type(ROUTE_TYPE).any(|(_, rc)| {
        let rc: RouteConfiguration = unpack(rc, "x").unwrap();
        rc.virtual_hosts[0]
            .routes
            .iter()
            .any(|r| !r.typed_per_filter_config.is_empty())
    }));
    // HashMap seeds differ per map instance, so repeated conversions in one process do
    // show a map encoded in iteration order (2 keys: 1 in 2 per map per conversion).
    for i in 0..20 {
        let again = to_snapshot(&m, "v1").unwrap();
        for type_url in ALL_TYPES {
            let a: Vec<_> = first.of_type(type_url).collect();
            let b: Vec<_> = again.of_type(type_url).collect();
            assert_eq!(a.len(), b.len(), "{type_url}");
            for ((name, x), (_, y)) in a.into_iter().zip(b) {
                // Not `assert_eq!`: the bytes of a whole resource say less than its name.
                assert!(
                    x == y,
                    "conversion {i}: {}[{name}] encodes differently",
                    short_type_name(type_url)
                );
                assert_eq!(first.hash_of(type_url, name), again.hash_of(type_url, name));
            }
        }
        assert_eq!(first, again);
    }
}

#[test]
fn canonical_cluster_bytes_decode_to_the_built_cluster() {
    // The canonical encoding must stay an encoding of the same message (from_xds and
    // Envoy decode it as a generated Cluster).
    let mut m = rich_mesh();
    // One proxy gets one inbound listener: leave them out to decode the rest as a whole.
    m.security.trust_bundle_pem.clear();
    let snap = to_snapshot(&m, "v1").unwrap();
    let view = to_proxy_view(snap.resources()).unwrap();
    assert_eq!(view.clusters[&fqdn("web-v2")].protocol, AppProtocol::Http);
    assert_eq!(
        view.clusters[&fqdn("web-v2")].policy.lb,
        LoadBalancer::PeakEwma
    );
    assert_eq!(
        view.clusters[&fqdn("reviews-v2")].policy.lb,
        LoadBalancer::LeastRequest
    );
}

/// Metadata with several filters, typed metadata, nested structs and lists; each call
/// builds new maps (new hash seeds), inserting in a different order.
fn rich_metadata(rotate: usize) -> Metadata {
    let s = |v: &str| Value {
        kind: Some(value::Kind::StringValue(v.to_string())),
    };
    let mut fields: Vec<(String, Value)> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|k| (k.to_string(), s(k)))
        .collect();
    fields.push((
        "nested".into(),
        Value {
            kind: Some(value::Kind::StructValue(Struct {
                fields: [("x", s("1")), ("y", s("2")), ("z", s("3"))]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            })),
        },
    ));
    fields.push((
        "list".into(),
        Value {
            kind: Some(value::Kind::ListValue(ListValue {
                values: vec![
                    s("first"),
                    Value {
                        kind: Some(value::Kind::NumberValue(2.5)),
                    },
                    Value {
                        kind: Some(value::Kind::BoolValue(true)),
                    },
                    Value {
                        kind: Some(value::Kind::NullValue(0)),
                    },
                ],
            })),
        },
    ));
    let n = fields.len();
    fields.rotate_left(rotate % n);
    let mut filters: Vec<(String, Struct)> = ["tandem", "envoy.lb", "other"]
        .iter()
        .map(|f| {
            (
                f.to_string(),
                Struct {
                    fields: fields.iter().cloned().collect(),
                },
            )
        })
        .collect();
    filters.rotate_left(rotate % 3);
    Metadata {
        filter_metadata: filters.into_iter().collect(),
        typed_filter_metadata: ["one", "two", "three"]
            .iter()
            .map(|k| (k.to_string(), pack(&Duration::default())))
            .collect(),
    }
}

#[test]
fn cluster_metadata_packs_in_key_order_and_decodes_unchanged() {
    let cluster = |rotate| Cluster {
        name: "c".into(),
        lb_policy: cluster::LbPolicy::LeastRequest as i32,
        metadata: Some(rich_metadata(rotate)),
        ..Default::default()
    };
    let first = canonical::pack_cluster(cluster(0));
    assert_eq!(first.type_url, Cluster::type_url());
    // Same message as the generated type decodes it: nothing lost, nothing reordered in lists.
    let decoded: Cluster = unpack(&first, "x").unwrap();
    assert_eq!(decoded, cluster(0));
    for rotate in 1..20 {
        assert_eq!(canonical::pack_cluster(cluster(rotate)), first);
    }
    // No metadata: exactly the generated encoding.
    let mut plain = cluster(0);
    plain.metadata = None;
    assert_eq!(canonical::pack_cluster(plain.clone()), pack(&plain));
}

//! Cluster-level policy (`DestinationPolicy`): load balancing, pool limits, retry budget,
//! outlier detection; round trip, Envoy defaults and rejections.

use std::time::Duration as StdDuration;

use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers::Thresholds, CircuitBreakers, OutlierDetection as XdsOutlier,
};
use envoy_types::pb::envoy::config::core::v3::RoutingPriority;
use envoy_types::pb::google::protobuf::UInt32Value;

use super::traffic::edit;
use super::*;

pub(super) fn policy_mesh(policy: CallPolicy) -> MeshConfig {
    let mut m = mesh();
    m.policies.insert(
        ("default".into(), "v1-policy".into()),
        DestinationPolicy {
            namespace: "default".into(),
            name: "v1-policy".into(),
            target: svc("reviews-v1"),
            policy,
        },
    );
    m
}

fn round_trip(policy: CallPolicy) -> CallPolicy {
    let snap = to_snapshot(&policy_mesh(policy), "v1").unwrap();
    snap.check_consistent().unwrap();
    let view = to_proxy_view(snap.resources()).unwrap();
    // The policy applies to its target only.
    assert_eq!(
        view.clusters[&fqdn("reviews-v2")].policy,
        CallPolicy::default()
    );
    view.clusters[&fqdn("reviews-v1")].policy
}

fn v1_cluster(policy: CallPolicy) -> (Resources, Cluster) {
    let snap = to_snapshot(&policy_mesh(policy), "v1").unwrap();
    let c = unpack(snap.get(CLUSTER_TYPE, &fqdn("reviews-v1")).unwrap(), "x").unwrap();
    (snap.resources().clone(), c)
}

fn edit_v1(res: &Resources, f: impl FnOnce(&mut Cluster)) -> Resources {
    edit::<Cluster>(res, &fqdn("reviews-v1"), f)
}

const V1: &str = "Cluster[reviews-v1.default.svc.cluster.local]";

#[test]
fn each_load_balancer_round_trips() {
    for lb in [
        LoadBalancer::PeakEwma,
        LoadBalancer::RoundRobin,
        LoadBalancer::LeastRequest,
    ] {
        let policy = CallPolicy {
            lb,
            ..Default::default()
        };
        assert_eq!(round_trip(policy), policy);
    }
    let (_, c) = v1_cluster(CallPolicy {
        lb: LoadBalancer::LeastRequest,
        ..Default::default()
    });
    assert_eq!(c.lb_policy, cluster::LbPolicy::LeastRequest as i32);
}

#[test]
fn the_default_cluster_keeps_its_grpc_friendly_shape() {
    let (_, c) = v1_cluster(CallPolicy::default());
    assert_eq!(c.lb_policy, cluster::LbPolicy::RoundRobin as i32);
    assert!(c.circuit_breakers.is_none());
    assert!(c.outlier_detection.is_none());
    let tandem = &c.metadata.unwrap().filter_metadata[to_xds::TANDEM_METADATA];
    assert_eq!(
        tandem.fields[to_xds::LB_FIELD].kind,
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
            to_xds::PEAK_EWMA.into()
        ))
    );
}

#[test]
fn pool_limits_and_retry_budget_round_trip() {
    let policy = CallPolicy {
        limits: PoolLimits {
            max_connections: Some(100),
            max_pending_requests: None,
            max_requests: Some(1000),
        },
        retry_budget: RetryBudget {
            percent: 25,
            min_retries_per_second: 3,
        },
        ..Default::default()
    };
    assert_eq!(round_trip(policy), policy);
    let (_, c) = v1_cluster(policy);
    let t = &c.circuit_breakers.unwrap().thresholds[0];
    assert_eq!(t.priority, RoutingPriority::Default as i32);
    assert_eq!(t.max_pending_requests, None);
    assert_eq!(t.retry_budget.unwrap().budget_percent.unwrap().value, 25.0);
    // A non-default budget alone still travels.
    let budget_only = CallPolicy {
        retry_budget: RetryBudget {
            percent: 10,
            min_retries_per_second: 10,
        },
        ..Default::default()
    };
    assert_eq!(round_trip(budget_only), budget_only);
}

#[test]
fn circuit_breaker_rejections_name_the_field() {
    let (res, _) = v1_cluster(CallPolicy {
        limits: PoolLimits {
            max_connections: Some(1),
            ..Default::default()
        },
        ..Default::default()
    });
    let cb = format!("{V1}.circuit_breakers");
    let with_threshold = |f: &dyn Fn(&mut Thresholds)| {
        edit_v1(&res, |c| {
            f(&mut c.circuit_breakers.as_mut().unwrap().thresholds[0])
        })
    };
    let res2 = with_threshold(&|t| t.priority = RoutingPriority::High as i32);
    assert_eq!(invalid(&res2).path, format!("{cb}.thresholds[0].priority"));
    let res2 = with_threshold(&|t| t.max_retries = Some(UInt32Value { value: 3 }));
    assert_eq!(
        invalid(&res2).path,
        format!("{cb}.thresholds[0].max_retries")
    );
    let res2 = with_threshold(&|t| t.track_remaining = true);
    let err = invalid(&res2);
    assert_eq!(err.path, format!("{cb}.thresholds[0]"));
    assert!(err.reason.contains("protobuf field 6"), "{err}");
    let res2 = with_threshold(&|t| {
        t.retry_budget
            .as_mut()
            .unwrap()
            .budget_percent
            .as_mut()
            .unwrap()
            .value = 12.5
    });
    assert_eq!(
        invalid(&res2).path,
        format!("{cb}.thresholds[0].retry_budget.budget_percent.value")
    );
    let res2 = edit_v1(&res, |c| {
        let cb = c.circuit_breakers.as_mut().unwrap();
        cb.thresholds.push(cb.thresholds[0]);
    });
    assert_eq!(invalid(&res2).path, format!("{cb}.thresholds"));
    // Absent thresholds: no limits and the default budget.
    let res2 = edit_v1(&res, |c| {
        c.circuit_breakers = Some(CircuitBreakers::default());
    });
    let view = to_proxy_view(&res2).unwrap();
    assert_eq!(
        view.clusters[&fqdn("reviews-v1")].policy,
        CallPolicy::default()
    );
}

#[test]
fn outlier_detection_round_trips() {
    for outlier in [
        OutlierDetection::default(),
        OutlierDetection {
            consecutive_5xx: None,
            consecutive_gateway_errors: Some(3),
            base_ejection_time: StdDuration::from_secs(10),
            max_ejection_time: StdDuration::from_secs(60),
            max_ejection_percent: 100,
        },
    ] {
        let policy = CallPolicy {
            outlier: Some(outlier),
            ..Default::default()
        };
        assert_eq!(round_trip(policy), policy);
    }
    let (_, c) = v1_cluster(CallPolicy {
        outlier: Some(OutlierDetection::default()),
        ..Default::default()
    });
    let o = c.outlier_detection.unwrap();
    assert_eq!(o.enforcing_success_rate.unwrap().value, 0);
    assert_eq!(o.enforcing_consecutive_5xx.unwrap().value, 100);
    assert_eq!(o.enforcing_consecutive_gateway_failure.unwrap().value, 0);
}

#[test]
fn outlier_detection_decodes_envoy_defaults_and_refuses_what_tandem_lacks() {
    let (res, _) = v1_cluster(CallPolicy::default());
    let with = |o: XdsOutlier| edit_v1(&res, |c| c.outlier_detection = Some(o));
    let view = to_proxy_view(&with(XdsOutlier::default())).unwrap();
    assert_eq!(
        view.clusters[&fqdn("reviews-v1")].policy.outlier,
        Some(OutlierDetection {
            consecutive_5xx: Some(5),
            consecutive_gateway_errors: None,
            base_ejection_time: StdDuration::from_secs(30),
            max_ejection_time: StdDuration::from_secs(300),
            max_ejection_percent: 10,
        })
    );
    let od = format!("{V1}.outlier_detection");
    let res2 = with(XdsOutlier {
        enforcing_success_rate: Some(UInt32Value { value: 100 }),
        ..Default::default()
    });
    assert_eq!(invalid(&res2).path, format!("{od}.enforcing_success_rate"));
    let res2 = with(XdsOutlier {
        enforcing_failure_percentage: Some(UInt32Value { value: 1 }),
        ..Default::default()
    });
    assert_eq!(
        invalid(&res2).path,
        format!("{od}.enforcing_failure_percentage")
    );
    let res2 = with(XdsOutlier {
        enforcing_consecutive_5xx: Some(UInt32Value { value: 50 }),
        ..Default::default()
    });
    assert_eq!(
        invalid(&res2).path,
        format!("{od}.enforcing_consecutive_5xx")
    );
    let res2 = with(XdsOutlier {
        split_external_local_origin_errors: true,
        ..Default::default()
    });
    let err = invalid(&res2);
    assert_eq!(err.path, od);
    assert!(err.reason.contains("protobuf field 12"), "{err}");
}

#[test]
fn lb_rejections_name_the_field() {
    let (res, _) = v1_cluster(CallPolicy::default());
    let res2 = edit_v1(&res, |c| c.lb_policy = cluster::LbPolicy::RingHash as i32);
    assert_eq!(invalid(&res2).path, format!("{V1}.lb_policy"));
    let res2 = edit_v1(&res, |c| {
        let fields = &mut c
            .metadata
            .as_mut()
            .unwrap()
            .filter_metadata
            .get_mut(to_xds::TANDEM_METADATA)
            .unwrap()
            .fields;
        fields.get_mut(to_xds::LB_FIELD).unwrap().kind = Some(
            envoy_types::pb::google::protobuf::value::Kind::StringValue("maglev".into()),
        );
    });
    let err = invalid(&res2);
    assert_eq!(
        err.path,
        format!("{V1}.metadata.filter_metadata[tandem].lb")
    );
    assert!(err.reason.contains("maglev"), "{err}");
}

use std::collections::BTreeMap;

use serde_json::json;

use super::controller::{look, Look};
use super::*;
use crate::canary::Target;
use crate::resources::validate_documents;
use crate::telemetry::BackendStats;

fn services() -> BTreeMap<String, Option<u16>> {
    BTreeMap::from([
        ("api".to_string(), Some(8080)),
        ("web".to_string(), Some(80)),
    ])
}

fn spec() -> ChaosSpec {
    ChaosSpec {
        abort: Some(AbortSpec {
            percent: 10.0,
            status: None,
        }),
        duration: Some("30s".into()),
        max_error_rate: Some("5%".into()),
        ..ChaosSpec::default()
    }
}

fn route(name: &str, rules: serde_json::Value) -> Value {
    json!({
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"parentRefs": [{"kind": "Service", "name": "api"}], "rules": rules},
    })
}

#[test]
fn without_a_route_the_experiment_owns_one_and_removes_it_at_the_end() {
    let svcs = services();
    let target = Target {
        namespace: "default",
        service: "api",
        services: &svcs,
        routes: &[],
    };
    let docs = plan_start(&target, &spec(), &[], 1_000).unwrap();
    assert_eq!(docs.len(), 2);
    let resources = validate_documents(docs.clone()).expect("planned documents validate");
    assert_eq!(resources[0].key, fault_key("default", "api"));
    let e = Experiment::from_fault(&docs[0]).unwrap();
    assert_eq!(e.steady_state, ["api"]);
    assert_eq!(e.deadline(), 1_030);
    assert_eq!(
        e.describe(),
        "abort 10% (503) for 30s; steady state: api error rate ≤ 5%"
    );
    let owned = &docs[1];
    assert_eq!(owned["metadata"]["name"], "chaos-api");
    assert_eq!(
        owned["spec"]["rules"][0]["filters"][0]["extensionRef"]["name"],
        "chaos-api"
    );
    assert_eq!(owned["spec"]["rules"][0]["backendRefs"][0]["port"], 8080);

    let (sets, deletes) = plan_end("default", "api", std::slice::from_ref(owned));
    assert!(sets.is_empty());
    assert_eq!(
        deletes,
        [
            fault_key("default", "api"),
            ResourceKey::new(Kind::HttpRoute, "default", "chaos-api")
        ]
    );
}

#[test]
fn attached_routes_carry_the_fault_and_get_back_exactly_what_they_had() {
    let original = route(
        "api-split",
        json!([
            {"backendRefs": [{"name": "api", "port": 8080}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
             "filters": [{"type": "RequestRedirect", "requestRedirect": {"statusCode": 301}}]},
            {"backendRefs": [{"name": "api", "port": 8080}],
             "filters": [{"type": "RequestHeaderModifier",
                          "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}}]},
        ]),
    );
    let svcs = services();
    let routes = [original.clone()];
    let target = Target {
        namespace: "default",
        service: "api",
        services: &svcs,
        routes: &routes,
    };
    let docs = plan_start(&target, &spec(), &[], 1_000).unwrap();
    validate_documents(docs.clone()).expect("planned documents validate");
    let edited = &docs[1];
    let rules = edited["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules[0]["filters"][0]["extensionRef"]["name"], "chaos-api");
    assert_eq!(
        rules[1]["filters"].as_array().unwrap().len(),
        1,
        "a redirect keeps no fault"
    );
    assert_eq!(rules[2]["filters"].as_array().unwrap().len(), 2);
    assert_eq!(
        edited["metadata"]["annotations"][ROUTE_ANNOTATION],
        "chaos-api"
    );

    let (sets, deletes) = plan_end("default", "api", std::slice::from_ref(edited));
    assert_eq!(sets, [original], "the route as it was");
    assert_eq!(deletes, [fault_key("default", "api")]);
}

#[test]
fn bad_specs_are_refused_with_the_field() {
    let svcs = services();
    let target = Target {
        namespace: "default",
        service: "api",
        services: &svcs,
        routes: &[],
    };
    let cases = [
        (
            ChaosSpec {
                abort: None,
                ..spec()
            },
            "a fault is needed",
        ),
        (
            ChaosSpec {
                max_error_rate: None,
                ..spec()
            },
            "a steady state is needed",
        ),
        (
            ChaosSpec {
                max_error_rate: Some("+1%".into()),
                ..spec()
            },
            "absolute limits",
        ),
        (
            ChaosSpec {
                duration: Some("2h".into()),
                ..spec()
            },
            "duration",
        ),
        (
            ChaosSpec {
                steady_state: vec!["nope".into()],
                ..spec()
            },
            "steady_state",
        ),
    ];
    for (s, want) in cases {
        let e = plan_start(&target, &s, &[], 0).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
    let unknown = Target {
        service: "ghost",
        ..target
    };
    assert!(matches!(
        plan_start(&unknown, &spec(), &[], 0),
        Err(ChaosError::UnknownService(_))
    ));
    // Out-of-range shares and statuses are the FaultInjection's own validation.
    let bad = ChaosSpec {
        abort: Some(AbortSpec {
            percent: 120.0,
            status: Some(503),
        }),
        ..spec()
    };
    let docs = plan_start(&target, &bad, &[], 0).unwrap();
    let e = validate_documents(docs).unwrap_err().to_string();
    assert!(e.contains("percent"), "{e}");
}

#[test]
fn the_steady_state_breaks_at_the_first_breach_and_holds_to_the_deadline() {
    let svcs = services();
    let target = Target {
        namespace: "default",
        service: "api",
        services: &svcs,
        routes: &[],
    };
    let docs = plan_start(
        &target,
        &ChaosSpec {
            max_p99: Some("200ms".into()),
            ..spec()
        },
        &[],
        1_000,
    )
    .unwrap();
    let e = Experiment::from_fault(&docs[0]).unwrap();
    let stats = |requests: f64, success: f64, p99: f64| {
        BTreeMap::from([(
            "api".to_string(),
            BackendStats {
                requests,
                success_rate: Some(success),
                p99_seconds: Some(p99),
                ..BackendStats::default()
            },
        )])
    };
    assert!(matches!(
        look(&e, &stats(100.0, 0.99, 0.01), 1_010),
        Look::Steady(_)
    ));
    match look(&e, &stats(400.0, 0.8, 0.01), 1_005) {
        Look::Broken(why) => assert!(why.contains("api error rate 20% > 5%"), "{why}"),
        other => panic!("{other:?}"),
    }
    match look(&e, &stats(400.0, 1.0, 0.35), 1_005) {
        Look::Broken(why) => assert!(why.contains("p99 350ms > 200ms"), "{why}"),
        other => panic!("{other:?}"),
    }
    match look(&e, &stats(3000.0, 0.99, 0.01), 1_030) {
        Look::Held(why) => assert!(
            why.starts_with("steady state held for 30s: api: 3000 requests"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    // A few failures among the first requests do not end it.
    assert!(matches!(
        look(&e, &stats(4.0, 0.75, 0.01), 1_001),
        Look::Steady(_)
    ));
}

#[test]
fn requests_answered_before_a_backend_count_for_their_service() {
    use std::collections::VecDeque;
    use std::time::Duration;

    use tokio::time::Instant;

    use crate::telemetry::{combine_by, extract, prometheus, Group, Reading};

    // An injected abort is answered at the fault stage, before the split picks a backend.
    let text = r#"
tandem_requests_total{backend="api",code="200",direction="outbound",dst_service="api",route="default/chaos-api/rule-0"} 70
tandem_requests_total{backend="",code="503",direction="outbound",dst_service="api",route="default/chaos-api/rule-0"} 30
"#;
    let series = extract(&prometheus::parse(text).unwrap());
    let at = Instant::now();
    let readings: VecDeque<Reading> = [
        Reading {
            at,
            series: BTreeMap::new(),
            open: Default::default(),
        },
        Reading {
            at: at + Duration::from_secs(10),
            series,
            open: Default::default(),
        },
    ]
    .into();
    let window = Duration::from_secs(30);
    let by_service = combine_by(std::iter::once(&readings), window, Group::Service);
    let api = &by_service.backends["api"];
    assert_eq!(api.requests, 100.0);
    assert_eq!(api.success_rate, Some(0.7));
    let by_backend = combine_by(std::iter::once(&readings), window, Group::Backend);
    assert_eq!(by_backend.backends.keys().collect::<Vec<_>>(), ["api"]);
}

fn instances() -> Vec<Instance> {
    ["10.0.0.4:80", "10.0.0.1:80", "10.0.0.3:80", "10.0.0.2:80"]
        .iter()
        .enumerate()
        .map(|(i, a)| Instance {
            address: a.to_string(),
            labels: BTreeMap::from([(
                "zone".to_string(),
                if i % 2 == 0 { "a" } else { "b" }.to_string(),
            )]),
        })
        .collect()
}

fn eject(endpoints: &str, label: Option<&str>) -> ChaosSpec {
    ChaosSpec {
        abort: None,
        eject: Some(EjectSpec {
            endpoints: endpoints.into(),
            label: label.map(str::to_string),
        }),
        ..spec()
    }
}

#[test]
fn ejection_chooses_by_address_count_share_and_label_and_touches_no_route() {
    let svcs = services();
    let routes = [route("api", json!([{"backendRefs": [{"name": "api"}]}]))];
    let target = Target {
        namespace: "default",
        service: "api",
        services: &svcs,
        routes: &routes,
    };
    let plan = |s: ChaosSpec| plan_start(&target, &s, &instances(), 1_000);
    let ejected = |s: ChaosSpec| {
        let docs = plan(s).unwrap();
        assert_eq!(docs.len(), 1, "an eject-only experiment edits no route");
        validate_documents(docs.clone()).expect("the record validates");
        Experiment::from_fault(&docs[0]).unwrap().ejected
    };
    assert_eq!(ejected(eject("2", None)), ["10.0.0.1:80", "10.0.0.2:80"]);
    // 30% of 4 rounds up to 2.
    assert_eq!(ejected(eject("30%", None)), ["10.0.0.1:80", "10.0.0.2:80"]);
    assert_eq!(ejected(eject("1", Some("zone=b"))), ["10.0.0.1:80"]);
    assert_eq!(
        ejected(eject("100%", Some("zone=a"))),
        ["10.0.0.3:80", "10.0.0.4:80"]
    );
    assert_eq!(
        ejected(eject("100%", None)).len(),
        4,
        "an outage drill, asked for"
    );
    let docs = plan(eject("1", None)).unwrap();
    assert_eq!(
        Experiment::from_fault(&docs[0]).unwrap().describe(),
        "eject 1 endpoint(s) of api (10.0.0.1:80) for 30s; steady state: api error rate ≤ 5%"
    );
    // With an abort as well, the routes carry the fault.
    let both = plan(ChaosSpec {
        abort: spec().abort,
        ..eject("1", None)
    })
    .unwrap();
    assert_eq!(both.len(), 2);

    for (s, why) in [
        (eject("4", None), "every endpoint"),
        (eject("5", None), "5 asked for, 4"),
        (eject("0", None), "not a count"),
        (eject("0%", None), "not a share"),
        (eject("x", None), "not a count"),
        (eject("1", Some("zone")), "not key=value"),
        (
            eject("1", Some("zone=c")),
            "no endpoint of default/api has zone=c",
        ),
    ] {
        let e = plan(s).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
    let none = plan_start(&target, &eject("1", None), &[], 0).unwrap_err();
    assert!(none.to_string().contains("has no endpoints"), "{none}");
}

//! Canary planning and route editing, document in, document out.

use serde_json::json;

use super::*;

fn services() -> BTreeMap<String, Option<u16>> {
    [
        ("web", Some(80)),
        ("web-v1", Some(8080)),
        ("web-v2", None),
        ("other", None),
    ]
    .into_iter()
    .map(|(n, p)| (n.to_string(), p))
    .collect()
}

fn route(name: &str, parent: &str, rules: Value) -> Value {
    json!({
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"parentRefs": [{"kind": "Service", "name": parent, "port": 80}], "rules": rules},
    })
}

fn start() -> Action {
    Action::Start {
        stable: "web-v1".into(),
        canary: "web-v2".into(),
        steps: None,
        auto: None,
    }
}

fn run(routes: &[Value], action: &Action) -> Result<Plan, CanaryError> {
    run_at(routes, action, crate::resources::clock::unix_now())
}

/// The first state found on `routes` for `web`.
fn state_in(routes: &[Value]) -> CanaryState {
    let services = services();
    let target = Target {
        namespace: "default",
        service: "web",
        services: &services,
        routes,
    };
    current(&target).unwrap().0
}

/// Applies a plan's documents over `routes` (as the store would).
fn applied(routes: &[Value], plan: &Plan) -> Vec<Value> {
    let mut out: Vec<Value> = routes
        .iter()
        .filter(|r| !plan.documents.iter().any(|d| route_id(d) == route_id(r)))
        .cloned()
        .collect();
    out.extend(plan.documents.iter().cloned());
    out
}

fn weights(doc: &Value, rule: usize) -> Vec<(String, i64)> {
    doc["spec"]["rules"][rule]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["weight"].as_i64().unwrap_or(1),
            )
        })
        .collect()
}

fn w(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(n, w)| (n.to_string(), *w)).collect()
}

#[test]
fn start_without_a_route_creates_one_at_the_first_step() {
    let p = run(&[], &start()).unwrap();
    assert_eq!(p.routes, vec!["default/web-canary"]);
    let doc = &p.documents[0];
    assert_eq!(
        doc["spec"],
        json!({
            "parentRefs": [{"kind": "Service", "name": "web", "port": 80}],
            "rules": [{"backendRefs": [
                {"kind": "Service", "name": "web-v1", "port": 8080, "weight": 95},
                {"kind": "Service", "name": "web-v2", "weight": 5},
            ]}],
        })
    );
    let a = &doc["metadata"]["annotations"];
    assert_eq!(a[STATE_ANNOTATION], "running");
    assert_eq!(a[STABLE_ANNOTATION], "web-v1");
    assert_eq!(a[CANARY_ANNOTATION], "web-v2");
    assert_eq!(a[STEPS_ANNOTATION], "5,10,25,50,100");
    assert_eq!(a[STEP_ANNOTATION], "1");
    assert_eq!(a[PERCENT_ANNOTATION], "5");
    assert_eq!(
        p.weights,
        BTreeMap::from([("web-v1".into(), 95), ("web-v2".into(), 5)])
    );
    // The created document is valid as stored.
    crate::resources::validate_documents(p.documents.clone()).unwrap();
}

#[test]
fn start_edits_split_rules_and_leaves_others_alone() {
    let split = route(
        "web-split",
        "web",
        json!([
            // Opt-in rule: only the canary → untouched.
            {"matches": [{"headers": [{"name": "x-canary", "value": "1"}]}],
             "backendRefs": [{"name": "web-v2", "port": 80}]},
            // Only the stable → the canary is added.
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "backendRefs": [{"name": "web-v1", "port": 80}], "timeouts": {"request": "1s"}},
            // Another backend with traffic → untouched.
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
             "backendRefs": [{"name": "web-v1", "weight": 50}, {"name": "other", "weight": 50}]},
            // Another backend at weight 0 (deployed, not released) does not count.
            {"matches": [{"path": {"type": "Exact", "value": "/x"}}],
             "backendRefs": [{"name": "other", "weight": 0}, {"name": "web-v1", "weight": 3}, {"name": "web-v2", "weight": 9}]},
        ]),
    );
    let unrelated = route(
        "api",
        "other",
        json!([{"backendRefs": [{"name": "web-v1"}]}]),
    );
    let routes = vec![split.clone(), unrelated];
    let p = run(&routes, &start()).unwrap();
    assert_eq!(p.routes, vec!["default/web-split"]);
    let doc = &p.documents[0];
    assert_eq!(doc["spec"]["rules"][0], split["spec"]["rules"][0]);
    assert_eq!(weights(doc, 1), w(&[("web-v1", 95), ("web-v2", 5)]));
    assert_eq!(doc["spec"]["rules"][1]["backendRefs"][1]["port"], 80);
    // Fields the canary does not know about travel unchanged.
    assert_eq!(
        doc["spec"]["rules"][1]["timeouts"],
        json!({"request": "1s"})
    );
    assert_eq!(doc["spec"]["rules"][2], split["spec"]["rules"][2]);
    assert_eq!(
        weights(doc, 3),
        w(&[("other", 0), ("web-v1", 95), ("web-v2", 5)])
    );
}

#[test]
fn set_step_promote_abort_walk_the_weights() {
    let mut routes = vec![route(
        "web-split",
        "web",
        json!([{"backendRefs": [{"name": "web-v1"}]}]),
    )];
    let go = |routes: &mut Vec<Value>, action: Action| -> Plan {
        let p = run(routes, &action).unwrap();
        *routes = applied(routes, &p);
        p
    };
    let p = go(&mut routes, start());
    assert_eq!(p.state.as_ref().map(|s| s.percent), Some(5));
    let p = go(&mut routes, Action::Step {});
    assert_eq!(
        weights(&p.documents[0], 0),
        w(&[("web-v1", 90), ("web-v2", 10)])
    );
    assert_eq!(p.state.as_ref().map(|s| s.step), Some(2));
    let p = go(&mut routes, Action::Set { percent: 30 });
    assert_eq!(
        weights(&p.documents[0], 0),
        w(&[("web-v1", 70), ("web-v2", 30)])
    );
    assert_eq!(
        p.state.as_ref().map(|s| s.step),
        Some(3),
        "5, 10 and 25 are ≤ 30"
    );
    let p = go(&mut routes, Action::Step {});
    assert_eq!(p.state.as_ref().map(|s| s.percent), Some(50));
    let p = go(&mut routes, Action::Step {});
    assert_eq!(
        p.state.as_ref().map(|s| (s.percent, s.step)),
        Some((100, 5))
    );
    let e = run(&routes, &Action::Step {}).unwrap_err();
    assert_eq!(
        e,
        CanaryError::Conflict("canary of default/web is at 100%: run canary promote".into())
    );
    let p = go(&mut routes, Action::Promote {});
    assert_eq!(p.state, None);
    assert_eq!(
        weights(&p.documents[0], 0),
        w(&[("web-v1", 0), ("web-v2", 100)])
    );
    assert!(p.documents[0]["metadata"].get("annotations").is_none());
    assert_eq!(
        run(&routes, &Action::Step {}).unwrap_err(),
        CanaryError::NotInProgress("default/web".into())
    );
    // The next release: web-v2 is the stable now; web-v1 at weight 0 does not count.
    let next = Action::Start {
        stable: "web-v2".into(),
        canary: "web-v1".into(),
        steps: Some(vec![20, 100]),
        auto: None,
    };
    let p = go(&mut routes, next);
    assert_eq!(
        weights(&p.documents[0], 0),
        w(&[("web-v1", 20), ("web-v2", 80)])
    );
    let p = go(&mut routes, Action::Abort {});
    assert_eq!(
        weights(&p.documents[0], 0),
        w(&[("web-v1", 0), ("web-v2", 100)])
    );
    let s = p.state.clone().unwrap();
    assert_eq!((s.phase, s.percent), (Phase::Aborted, 0));
    assert_eq!(
        p.documents[0]["metadata"]["annotations"][STATE_ANNOTATION],
        "aborted"
    );
    // Aborting again changes nothing and does not fail.
    let again = run(&routes, &Action::Abort {}).unwrap();
    assert_eq!(again.documents, p.documents);
    assert!(matches!(
        run(&routes, &Action::Set { percent: 10 }).unwrap_err(),
        CanaryError::NotInProgress(m) if m.contains("aborted")
    ));
    // After an abort a new start is allowed.
    run(&routes, &start()).unwrap();
}

#[test]
fn a_route_that_no_longer_routes_the_canary_stops_claiming_it() {
    let routes = vec![
        route("a", "web", json!([{"backendRefs": [{"name": "web-v1"}]}])),
        route("b", "web", json!([{"backendRefs": [{"name": "web-v1"}]}])),
    ];
    let p = run(&routes, &start()).unwrap();
    let mut routes = applied(&routes, &p);
    // Someone points route b elsewhere by hand.
    routes[1]["spec"]["rules"][0]["backendRefs"] = json!([{"name": "other"}]);
    let p = run(&routes, &Action::Step {}).unwrap();
    assert_eq!(p.routes, vec!["default/a"]);
    assert_eq!(p.documents.len(), 2);
    assert!(p.documents[1]["metadata"].get("annotations").is_none());
    assert_eq!(weights(&p.documents[1], 0), w(&[("other", 1)]));
    // With no route left to edit, an action says so instead of pretending.
    let routes = applied(&routes, &p);
    let mut gone = routes.clone();
    gone[0]["spec"]["rules"][0]["backendRefs"] = json!([{"name": "other"}]);
    assert!(matches!(
        run(&gone, &Action::Step {}),
        Err(CanaryError::Conflict(m)) if m.contains("add such a rule")
    ));
}

#[test]
fn bad_requests_are_refused() {
    let routes = vec![route(
        "web-split",
        "web",
        json!([{"backendRefs": [{"name": "web-v1"}]}]),
    )];
    let services = services();
    let unknown = plan(
        &Target {
            namespace: "default",
            service: "nope",
            services: &services,
            routes: &routes,
        },
        &start(),
    );
    assert_eq!(
        unknown.unwrap_err(),
        CanaryError::UnknownService("default/nope".into())
    );
    let bad_canary = Action::Start {
        stable: "web-v1".into(),
        canary: "web-v9".into(),
        steps: None,
        auto: None,
    };
    assert!(
        matches!(run(&routes, &bad_canary), Err(CanaryError::UnknownService(m)) if m.contains("web-v9"))
    );
    let same = Action::Start {
        stable: "web-v1".into(),
        canary: "web-v1".into(),
        steps: None,
        auto: None,
    };
    assert!(matches!(run(&routes, &same), Err(CanaryError::Invalid(_))));
    for steps in [vec![], vec![0, 100], vec![10, 5], vec![10, 10], vec![101]] {
        let a = Action::Start {
            stable: "web-v1".into(),
            canary: "web-v2".into(),
            steps: Some(steps.clone()),
            auto: None,
        };
        assert!(
            matches!(run(&routes, &a), Err(CanaryError::Invalid(_))),
            "{steps:?}"
        );
    }
    assert_eq!(
        run(&routes, &Action::Set { percent: 5 }).unwrap_err(),
        CanaryError::NotInProgress("default/web".into())
    );
    let p = run(&routes, &start()).unwrap();
    let routes = applied(&routes, &p);
    for percent in [-1, 101] {
        assert!(matches!(
            run(&routes, &Action::Set { percent }),
            Err(CanaryError::Invalid(m)) if m.contains("0..=100")
        ));
    }
    assert!(
        matches!(run(&routes, &start()), Err(CanaryError::Conflict(m)) if m.contains("in progress"))
    );
    // A route whose rules all send elsewhere: nothing to split.
    let elsewhere = vec![route(
        "web-split",
        "web",
        json!([{"backendRefs": [{"name": "other"}]}]),
    )];
    assert!(
        matches!(run(&elsewhere, &start()), Err(CanaryError::Conflict(m)) if m.contains("add such a rule"))
    );
}

#[test]
fn the_state_round_trips_through_annotations_and_is_reported() {
    let routes = vec![
        route("a", "web", json!([{"backendRefs": [{"name": "web-v1"}]}])),
        route(
            "b",
            "web",
            json!([{"backendRefs": [{"name": "web-v1", "weight": 1}, {"name": "web-v2", "weight": 1}]}]),
        ),
    ];
    let p = run(&routes, &start()).unwrap();
    assert_eq!(p.routes, vec!["default/a", "default/b"]);
    let routes = applied(&routes, &p);
    let services = services();
    let target = Target {
        namespace: "default",
        service: "web",
        services: &services,
        routes: &routes,
    };
    let (state, carriers) = current(&target).unwrap();
    assert_eq!(Some(state), p.state);
    assert_eq!(carriers, vec!["default/a", "default/b"]);
    assert_eq!(
        observed_weights(&target, "web-v1", "web-v2"),
        Some(BTreeMap::from([
            ("web-v1".into(), 95),
            ("web-v2".into(), 5)
        ]))
    );
    // Hand-edited, disagreeing annotations are reported, not guessed at.
    for (percent, want) in [("7", "different"), ("700", "0..=100")] {
        let mut broken = routes.clone();
        broken[1]["metadata"]["annotations"][PERCENT_ANNOTATION] = json!(percent);
        let target = Target {
            routes: &broken,
            ..target.clone()
        };
        assert!(
            matches!(current(&target), Err(CanaryError::Conflict(m)) if m.contains(want)),
            "{percent}"
        );
    }
}

fn run_at(routes: &[Value], action: &Action, now: u64) -> Result<Plan, CanaryError> {
    let services = services();
    plan_at(
        &Target {
            namespace: "default",
            service: "web",
            services: &services,
            routes,
        },
        action,
        now,
    )
}

fn guarded_start() -> Action {
    Action::Start {
        stable: "web-v1".into(),
        canary: "web-v2".into(),
        steps: Some(vec![10, 50, 100]),
        auto: Some(AutoSpec {
            max_error_rate: Some("1%,+0.5%".into()),
            max_p99: Some("500ms".into()),
            min_requests: Some(50),
            step_time: Some("1m".into()),
        }),
    }
}

#[test]
fn a_guarded_canary_keeps_its_objectives_and_step_start_in_the_annotations() {
    let routes = vec![route(
        "a",
        "web",
        json!([{"backendRefs": [{"name": "web-v1"}]}]),
    )];
    let p = run_at(&routes, &guarded_start(), 1_000).unwrap();
    let a = &p.documents[0]["metadata"]["annotations"];
    assert_eq!(a[AUTO_ANNOTATION], "true");
    assert_eq!(a[MAX_ERROR_RATE_ANNOTATION], "1%,+0.5%");
    assert_eq!(a[MAX_P99_ANNOTATION], "500ms");
    assert_eq!(a[MIN_REQUESTS_ANNOTATION], "50");
    assert_eq!(a[STEP_TIME_ANNOTATION], "60s");
    assert_eq!(a[STEP_STARTED_ANNOTATION], "1970-01-01T00:16:40Z");
    let routes = applied(&routes, &p);
    let state = state_in(&routes);
    assert_eq!(Some(state.clone()), p.state);
    let guard = state.guard.unwrap();
    assert_eq!(guard.min_requests, 50);
    assert_eq!(guard.step_time, std::time::Duration::from_secs(60));
    assert_eq!(state.step_started, Some(1_000));

    // A step restarts the step's clock; pause holds, resume restarts it again.
    let stepped = run_at(&routes, &Action::Step {}, 1_060).unwrap();
    assert_eq!(stepped.state.as_ref().unwrap().step_started, Some(1_060));
    let routes = applied(&routes, &stepped);
    let paused = run_at(&routes, &Action::Pause {}, 1_070).unwrap();
    let s = paused.state.as_ref().unwrap();
    assert!(s.paused);
    assert_eq!(s.step_started, Some(1_060));
    assert_eq!(
        paused.documents[0]["metadata"]["annotations"][PAUSED_ANNOTATION],
        "true"
    );
    let routes = applied(&routes, &paused);
    let resumed = run_at(&routes, &Action::Resume {}, 1_200).unwrap();
    let s = resumed.state.as_ref().unwrap();
    assert!(!s.paused);
    assert_eq!(s.step_started, Some(1_200));
    assert!(resumed.documents[0]["metadata"]["annotations"]
        .get(PAUSED_ANNOTATION)
        .is_none());
    // Promotion removes every canary annotation, the guard's included.
    let routes = applied(&routes, &resumed);
    let promoted = run_at(&routes, &Action::Promote {}, 1_300).unwrap();
    assert!(promoted.documents[0]["metadata"]
        .get("annotations")
        .is_none());
}

#[test]
fn bad_objectives_are_refused_with_their_field_and_manual_canaries_do_not_pause() {
    let routes = vec![route(
        "a",
        "web",
        json!([{"backendRefs": [{"name": "web-v1"}]}]),
    )];
    let with = |spec: AutoSpec| Action::Start {
        stable: "web-v1".into(),
        canary: "web-v2".into(),
        steps: None,
        auto: Some(spec),
    };
    let cases = [
        (AutoSpec::default(), "auto: give at least one objective"),
        (
            AutoSpec {
                max_error_rate: Some("lots".into()),
                ..AutoSpec::default()
            },
            "auto.maxErrorRate: \"lots\"",
        ),
        (
            AutoSpec {
                max_p99: Some("0ms".into()),
                ..AutoSpec::default()
            },
            "auto.maxP99",
        ),
        (
            AutoSpec {
                max_p99: Some("1s".into()),
                min_requests: Some(0),
                ..AutoSpec::default()
            },
            "auto.minRequests",
        ),
        (
            AutoSpec {
                max_p99: Some("1s".into()),
                step_time: Some("100ms".into()),
                ..AutoSpec::default()
            },
            "auto.stepTime",
        ),
    ];
    for (spec, want) in cases {
        match run(&routes, &with(spec)) {
            Err(CanaryError::Invalid(m)) => assert!(m.starts_with(want), "{m}"),
            other => panic!("{want}: {other:?}"),
        }
    }
    let manual = applied(&routes, &run(&routes, &start()).unwrap());
    assert!(
        matches!(run(&manual, &Action::Pause {}), Err(CanaryError::Conflict(m)) if m.contains("--auto"))
    );
}

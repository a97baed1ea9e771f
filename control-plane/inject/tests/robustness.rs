//! The injector never panics, whatever shape a review or an injected pod has: every value
//! of every fixture is replaced in turn by each JSON type, and the answer must be an
//! AdmissionReview or an error (a fuzzer's corpus, made deterministic).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use support::{applied, fixture, patch_of};
use tandem_inject::review::{review, Query, PATHS};
use tandem_inject::{PodTemplate, Settings};

/// Every JSON pointer in `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

fn replacements() -> [Value; 6] {
    [
        json!(null),
        json!(-1),
        json!("x/~y"),
        json!([]),
        json!({}),
        json!(true),
    ]
}

#[test]
fn no_review_shape_makes_the_injector_panic() {
    let settings = Settings::default();
    let mut answered = 0;
    for name in [
        "deployment-pod.json",
        "init-containers.json",
        "probes.json",
        "annotations.json",
    ] {
        let doc = fixture(&format!("reviews/{name}"));
        let mut all = Vec::new();
        pointers(&doc, String::new(), &mut all);
        for pointer in &all {
            for value in replacements() {
                let mut mutated = doc.clone();
                *mutated.pointer_mut(pointer).unwrap() = value;
                let body = serde_json::to_vec(&mutated).unwrap();
                for (path, _) in PATHS {
                    if let Ok(out) = review(&body, Query::from_path(path).unwrap(), &settings) {
                        answered += 1;
                        // A patch, when there is one, applies to the object it was made for.
                        if let Some(patch) = patch_of(&out) {
                            applied(&mutated["request"]["object"], &patch);
                        }
                    }
                }
            }
        }
    }
    assert!(answered > 1000, "only {answered} answers");
}

#[test]
fn no_injected_pod_shape_makes_uninject_panic() {
    let doc = fixture("reviews/probes.json");
    let body = serde_json::to_vec(&doc).unwrap();
    let out = review(
        &body,
        Query::from_path("/inject/namespace-enabled").unwrap(),
        &Settings::default(),
    )
    .unwrap();
    let pod = applied(&doc["request"]["object"], &patch_of(&out).unwrap());
    let mut all = Vec::new();
    pointers(&pod, String::new(), &mut all);
    for pointer in &all {
        for value in replacements() {
            let mut mutated = pod.clone();
            *mutated.pointer_mut(pointer).unwrap() = value;
            let template = PodTemplate {
                metadata: &mutated["metadata"],
                spec: &mutated["spec"],
                metadata_path: "/metadata",
                spec_path: "/spec",
                namespace: None,
                workload: None,
            };
            if let Ok(Some(ops)) = tandem_inject::uninject(&template) {
                // What uninject asks for must be applicable (or refused cleanly) by a
                // JSON Patch implementation, never a panic.
                let patch: json_patch::Patch =
                    serde_json::from_value(tandem_inject::patch::to_json(&ops)).unwrap();
                let _ = json_patch::patch(&mut mutated.clone(), &patch);
            }
        }
    }
}

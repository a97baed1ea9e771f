//! AdmissionReview `admission.k8s.io/v1` in, AdmissionReview out: the webhook's whole
//! logic without its server.
//!
//! The API server sends only the pod, not its namespace. The namespace's word comes from
//! *which* webhook entry called: each entry of the MutatingWebhookConfiguration selects
//! namespaces by label and calls its own URL, whose query says what the labels meant
//! ([`Query`]): `/inject?namespace=enabled` for namespaces labelled
//! `tandem.dev/inject=enabled`, plus `&strict=true` where they are also labelled
//! `tandem.dev/inject-strict=true`, and plain `/inject` for every other namespace, where
//! only a pod's own annotation turns injection on.
//!
//! Answers:
//! - a body that is not an AdmissionReview v1 with a request and a uid: an error
//!   ([`ReviewError`], HTTP 400 from the server): there is no uid to answer to;
//! - anything else gets `allowed: true`, with a base64 JSON Patch when the pod is
//!   injected and `warnings` (shown by kubectl) when something was left out;
//! - a pod that asked for a proxy and cannot have one is admitted without it and with a
//!   warning, unless the namespace is strict: then it is refused (403) with the reason.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::decide::{NamespacePolicy, Skip};
use crate::inject::{inject, Outcome, PodTemplate};
use crate::patch;
use crate::settings::Settings;

/// The version this webhook speaks.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// What the webhook entry's path says about the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// The namespace's label.
    pub namespace: NamespacePolicy,
    /// Refuse pods that cannot be injected.
    pub strict: bool,
}

/// The paths the webhook serves, with what each means. Paths rather than query strings:
/// the API server accepts only DNS-label-like path segments in a service reference.
pub const PATHS: [(&str, Query); 3] = [
    (
        "/inject",
        Query {
            namespace: NamespacePolicy::NotEnabled,
            strict: false,
        },
    ),
    (
        "/inject/namespace-enabled",
        Query {
            namespace: NamespacePolicy::Enabled,
            strict: false,
        },
    ),
    (
        "/inject/namespace-enabled/strict",
        Query {
            namespace: NamespacePolicy::Enabled,
            strict: true,
        },
    ),
];

impl Query {
    /// The meaning of a webhook path, if it is one of [`PATHS`].
    pub fn from_path(path: &str) -> Option<Query> {
        PATHS.iter().find(|(p, _)| *p == path).map(|(_, q)| *q)
    }
}

/// A body that cannot be answered with an AdmissionReview.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an AdmissionReview of the version this webhook speaks.
    #[error("not an AdmissionReview {API_VERSION}: {0}")]
    NotAReview(String),
}

/// Answers one AdmissionReview (the raw body).
pub fn review(body: &[u8], query: Query, settings: &Settings) -> Result<Value, ReviewError> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| ReviewError::NotJson(e.to_string()))?;
    let (api_version, kind) = (doc["apiVersion"].as_str(), doc["kind"].as_str());
    if kind != Some("AdmissionReview") {
        return Err(ReviewError::NotAReview(format!("kind is {}", doc["kind"])));
    }
    if api_version != Some(API_VERSION) {
        return Err(ReviewError::NotAReview(format!(
            "apiVersion is {} (list only v1 in admissionReviewVersions)",
            doc["apiVersion"]
        )));
    }
    let request = &doc["request"];
    let uid = request["uid"]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ReviewError::NotAReview("no request.uid".into()))?;
    let answer = respond(request, query, settings);
    Ok(answer.into_review(uid))
}

/// What to answer, before it is wrapped.
#[derive(Debug, Default)]
struct Answer {
    patch: Option<Value>,
    warnings: Vec<String>,
    denied: Option<String>,
}

impl Answer {
    fn warn(text: String) -> Answer {
        Answer {
            warnings: vec![text],
            ..Answer::default()
        }
    }

    fn into_review(self, uid: &str) -> Value {
        let mut response = json!({"uid": uid, "allowed": self.denied.is_none()});
        if let Some(reason) = self.denied {
            response["status"] = json!({"code": 403, "reason": "Forbidden", "message": reason});
        }
        if let Some(p) = self.patch {
            let bytes = serde_json::to_vec(&p).unwrap_or_default();
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        if !self.warnings.is_empty() {
            response["warnings"] = json!(self.warnings);
        }
        json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response})
    }
}

fn respond(request: &Value, query: Query, settings: &Settings) -> Answer {
    let is_pod = request["kind"]["kind"].as_str() == Some("Pod")
        && request["kind"]["group"]
            .as_str()
            .unwrap_or_default()
            .is_empty();
    let is_create = request["operation"].as_str() == Some("CREATE");
    if !is_pod
        || !is_create
        || request["subResource"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    {
        // The configuration sends only pod creations; anything else passes untouched.
        return Answer::default();
    }
    let pod = &request["object"];
    if !pod.is_object() || !pod["spec"].is_object() {
        return refuse_or_warn(query, "the request holds no pod spec");
    }
    let namespace = request["namespace"]
        .as_str()
        .or(pod["metadata"]["namespace"].as_str());
    let template = PodTemplate {
        metadata: &pod["metadata"],
        spec: &pod["spec"],
        metadata_path: "/metadata",
        spec_path: "/spec",
        namespace,
        workload: None,
    };
    match inject(&template, settings, query.namespace) {
        Ok(Outcome::Injected(done)) => Answer {
            patch: Some(patch::to_json(&done.ops)),
            warnings: done
                .warnings
                .into_iter()
                .map(|w| format!("tandem injector: {w}"))
                .collect(),
            denied: None,
        },
        Ok(Outcome::Skipped(Skip::NotEnabled | Skip::AlreadyInjected)) => Answer::default(),
        // Said when the pod asked, so that a user learns why no proxy came.
        Ok(Outcome::Skipped(why)) if asked(pod, query) => {
            Answer::warn(format!("tandem injector: not injected: {why}"))
        }
        Ok(Outcome::Skipped(_)) => Answer::default(),
        Err(e) => refuse_or_warn(query, &e.to_string()),
    }
}

/// A pod that cannot be injected: admitted without a proxy and told why, or refused in a
/// strict namespace.
fn refuse_or_warn(query: Query, why: &str) -> Answer {
    if query.strict {
        Answer {
            denied: Some(format!(
                "tandem injector: cannot inject ({why}); the namespace is strict (tandem.dev/inject-strict=true)"
            )),
            ..Answer::default()
        }
    } else {
        Answer::warn(format!(
            "tandem injector: cannot inject, admitted without a proxy: {why}"
        ))
    }
}

/// Whether the pod itself or its namespace asked for a proxy.
fn asked(pod: &Value, query: Query) -> bool {
    query.namespace == NamespacePolicy::Enabled
        || pod["metadata"]["annotations"][crate::annotations::INJECT].as_str()
            == Some(crate::annotations::ENABLED)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(pod: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": API_VERSION, "kind": "AdmissionReview",
            "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop", "operation": "CREATE", "object": pod}
        }))
        .unwrap()
    }

    fn enabled(strict: bool) -> Query {
        let path = if strict {
            "/inject/namespace-enabled/strict"
        } else {
            "/inject/namespace-enabled"
        };
        Query::from_path(path).unwrap()
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let s = Settings::default();
        assert!(matches!(
            review(b"{", enabled(false), &s),
            Err(ReviewError::NotJson(_))
        ));
        for body in [
            json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}}),
            json!({"apiVersion": API_VERSION, "kind": "Pod"}),
            json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": {}}),
        ] {
            let e = review(&serde_json::to_vec(&body).unwrap(), enabled(false), &s).unwrap_err();
            assert!(matches!(e, ReviewError::NotAReview(_)), "{e}");
        }
    }

    #[test]
    fn a_pod_that_cannot_be_injected_is_admitted_or_refused_when_strict() {
        let s = Settings::default();
        let pod = json!({"metadata": {"name": "p", "annotations": {"config.tandem.dev/proxy-uid": "x"}},
            "spec": {"containers": [{"name": "a", "image": "a"}]}});
        let lax = review(&request(pod.clone()), enabled(false), &s).unwrap();
        assert_eq!(lax["response"]["uid"], "u-1");
        assert_eq!(lax["response"]["allowed"], true);
        assert!(lax["response"].get("patch").is_none());
        assert!(lax["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("proxy-uid"));
        let strict = review(&request(pod), enabled(true), &s).unwrap();
        assert_eq!(strict["response"]["allowed"], false);
        assert_eq!(strict["response"]["status"]["code"], 403);
    }

    #[test]
    fn an_enabled_namespace_gets_a_base64_json_patch() {
        let s = Settings::default();
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "a"}]}});
        let out = review(&request(pod.clone()), enabled(false), &s).unwrap();
        assert_eq!(out["apiVersion"], API_VERSION);
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(out["response"]["patch"].as_str().unwrap())
            .unwrap();
        let ops: Vec<crate::Operation> = serde_json::from_slice(&bytes).unwrap();
        assert!(!ops.is_empty());
        // Not enabled: nothing, and no warning either.
        let off = review(&request(pod), Query::from_path("/inject").unwrap(), &s).unwrap();
        assert_eq!(off["response"], json!({"uid": "u-1", "allowed": true}));
    }
}

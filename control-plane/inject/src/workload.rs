//! Whole documents, as `tandemctl inject` reads them: a Pod, a workload with a pod
//! template (Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job),
//! a CronJob (whose template is one level deeper), or a `List` of any of these. Other
//! kinds pass through untouched. The operations returned apply to the document as given.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::annotations as a;
use crate::decide::{NamespacePolicy, Skip};
use crate::inject::{inject, Outcome, PodTemplate};
use crate::patch::Operation;
use crate::settings::Settings;
use crate::uninject::uninject;

/// What became of one pod template of a document.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A proxy was added.
    Injected,
    /// A proxy was removed.
    Uninjected,
    /// Left alone, and why.
    Skipped(String),
    /// Could not be changed, and why (left alone too).
    Failed(String),
}

/// One line of the report `tandemctl` prints on stderr.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `deployment/web` (kind lowercased), as kubectl names objects.
    pub object: String,
    /// What happened.
    pub result: Change,
    /// Warnings from the injector.
    pub warnings: Vec<String>,
}

/// The operations for a document, and a report per pod template found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocumentPatch {
    /// Apply in order.
    pub ops: Vec<Operation>,
    /// One per pod template.
    pub reports: Vec<Report>,
}

/// Namespace decisions known offline: from `Namespace` documents of the input (label or
/// annotation `tandem.dev/inject`). Namespaces not listed inject (as `linkerd inject`).
#[derive(Debug, Clone, Default)]
pub struct Namespaces(BTreeMap<String, NamespacePolicy>);

impl Namespaces {
    /// Learns from every `Namespace` in `docs` (and in `List`s among them).
    pub fn from_documents<'a>(docs: impl IntoIterator<Item = &'a Value>) -> Namespaces {
        let mut out = BTreeMap::new();
        let mut stack: Vec<&Value> = docs.into_iter().collect();
        while let Some(doc) = stack.pop() {
            match doc["kind"].as_str() {
                Some("List") => stack.extend(doc["items"].as_array().into_iter().flatten()),
                Some("Namespace") => {
                    let meta = &doc["metadata"];
                    let word = meta["labels"][a::INJECT]
                        .as_str()
                        .or(meta["annotations"][a::INJECT].as_str());
                    if let (Some(name), Some(a::DISABLED)) = (meta["name"].as_str(), word) {
                        out.insert(name.to_string(), NamespacePolicy::NotEnabled);
                    }
                }
                _ => {}
            }
        }
        Namespaces(out)
    }

    fn policy(&self, ns: Option<&str>) -> NamespacePolicy {
        ns.and_then(|ns| self.0.get(ns).copied())
            .unwrap_or(NamespacePolicy::Enabled)
    }
}

/// A pod template found in a document: where it is and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Pointer of its metadata.
    pub metadata: String,
    /// Pointer of its spec.
    pub spec: String,
    /// `kind/name` of the object that holds it.
    pub object: String,
    /// The object's name (the service-name fallback).
    pub name: Option<String>,
    /// The object's namespace.
    pub namespace: Option<String>,
}

/// Every pod template in `doc`, which sits at pointer `base` ("" for a whole document).
pub fn locate(doc: &Value, base: &str) -> Vec<Location> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let template = match kind {
        "List" => {
            return doc["items"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .flat_map(|(i, item)| locate(item, &format!("{base}/items/{i}")))
                .collect();
        }
        "Pod" => base.to_string(),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => format!("{base}/spec/template"),
        "CronJob" => format!("{base}/spec/jobTemplate/spec/template"),
        _ => return Vec::new(),
    };
    let name = doc["metadata"]["name"].as_str().map(str::to_string);
    vec![Location {
        metadata: format!("{template}/metadata"),
        spec: format!("{template}/spec"),
        object: format!(
            "{}/{}",
            kind.to_ascii_lowercase(),
            name.as_deref().unwrap_or("?")
        ),
        // A Pod's own name is no workload name: the service rule looks at it last.
        name: name.filter(|_| kind != "Pod"),
        namespace: doc["metadata"]["namespace"].as_str().map(str::to_string),
    }]
}

/// Injects every pod template of `doc`.
pub fn inject_document(doc: &Value, settings: &Settings, namespaces: &Namespaces) -> DocumentPatch {
    let mut out = DocumentPatch::default();
    for loc in locate(doc, "") {
        let pod = pod_template(doc, &loc);
        let policy = namespaces.policy(loc.namespace.as_deref());
        let (result, warnings) = match inject(&pod, settings, policy) {
            Ok(Outcome::Injected(done)) => {
                out.ops.extend(done.ops);
                (Change::Injected, done.warnings)
            }
            Ok(Outcome::Skipped(Skip::NotEnabled)) => (
                Change::Skipped("injection disabled by annotation or namespace".into()),
                vec![],
            ),
            Ok(Outcome::Skipped(why)) => (Change::Skipped(why.to_string()), vec![]),
            Err(e) => (Change::Failed(e.to_string()), vec![]),
        };
        out.reports.push(Report {
            object: loc.object,
            result,
            warnings,
        });
    }
    out
}

/// Uninjects every pod template of `doc`.
pub fn uninject_document(doc: &Value) -> DocumentPatch {
    let mut out = DocumentPatch::default();
    for loc in locate(doc, "") {
        let pod = pod_template(doc, &loc);
        let result = match uninject(&pod) {
            Ok(Some(ops)) => {
                out.ops.extend(ops);
                Change::Uninjected
            }
            Ok(None) => Change::Skipped("no Tandem proxy".into()),
            Err(e) => Change::Failed(e.to_string()),
        };
        out.reports.push(Report {
            object: loc.object,
            result,
            warnings: vec![],
        });
    }
    out
}

/// The pod template found at `loc` in `doc`.
fn pod_template<'a>(doc: &'a Value, loc: &'a Location) -> PodTemplate<'a> {
    PodTemplate {
        metadata: doc.pointer(&loc.metadata).unwrap_or(&Value::Null),
        spec: doc.pointer(&loc.spec).unwrap_or(&Value::Null),
        metadata_path: &loc.metadata,
        spec_path: &loc.spec,
        namespace: loc.namespace.as_deref(),
        workload: loc.name.as_deref(),
    }
}

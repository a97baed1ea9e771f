//! Injection of one pod (or pod template): the decision, then the patch.
//!
//! Where the containers go, and why:
//! - **native** (default): `tandem-init` and then `tandem-proxy` (with `restartPolicy:
//!   Always`) are put *first* among the init containers, before the user's own. The rules
//!   are in place and the proxy is ready before any user init container runs, so one that
//!   fetches its config from a mesh service can reach it (Istio orders native sidecars the
//!   same way). The user's init containers are kept, in their order, after ours.
//! - **legacy**: `tandem-init` is *appended* after the user's init containers, which
//!   therefore run before redirection, with the pod's plain network: nothing would answer
//!   on the proxy's ports yet, since the proxy only starts with the app containers. The
//!   proxy is the first app container, and its `postStart` hook holds the others until it
//!   is ready.
//!
//! In both modes the pod gets one volume, the projected ServiceAccount token the proxy
//! proves its identity with, appended to the pod's volumes (or as the first, when it has
//! none); only the proxy container mounts it.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::annotations as a;
use crate::decide::{decide, Decision, NamespacePolicy, Skip};
use crate::patch::{pointer, Operation};
use crate::probes;
use crate::record::{Record, VERSION};
use crate::settings::{Mode, PortRange, Settings, SettingsError};
use crate::sidecar::{self, INIT_NAME, PROXY_NAME, TOKEN_VOLUME};

/// A pod, or a workload's pod template, and where it sits in its document.
#[derive(Debug, Clone, Copy)]
pub struct PodTemplate<'a> {
    /// The pod's `metadata` (`Null` when absent).
    pub metadata: &'a Value,
    /// The pod's `spec`.
    pub spec: &'a Value,
    /// JSON pointer of `metadata` in the document (`/metadata`, `/spec/template/metadata`).
    pub metadata_path: &'a str,
    /// JSON pointer of `spec` in the document.
    pub spec_path: &'a str,
    /// The namespace, when known (excluded namespaces are checked against it).
    pub namespace: Option<&'a str>,
    /// The owning workload's name, when known (a fallback for the service name).
    pub workload: Option<&'a str>,
}

/// What injecting a pod came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The pod is left alone.
    Skipped(Skip),
    /// The patch that adds the proxy.
    Injected(Box<Injected>),
}

/// A pod's patch and what it did.
#[derive(Debug, Clone, PartialEq)]
pub struct Injected {
    /// The operations, to apply in order.
    pub ops: Vec<Operation>,
    /// The record written into `tandem.dev/injected`.
    pub record: Record,
    /// Things the user should know (probes left alone, unknown annotations).
    pub warnings: Vec<String>,
}

/// Why a pod that asked for a proxy cannot have one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// A `config.tandem.dev/*` annotation is invalid.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The spec has no `containers` list.
    #[error("the pod spec has no containers")]
    NoContainers,
    /// No rule yields a service name.
    #[error("no service name: set the config.tandem.dev/service annotation or an app label")]
    NoServiceName,
    /// The pod already has a volume of the name the proxy's token volume takes.
    #[error(
        "the pod already has a volume named {TOKEN_VOLUME}, the name of the proxy's token volume"
    )]
    VolumeTaken,
}

/// Decides for `pod` and, when it is to be injected, builds its patch.
pub fn inject(
    pod: &PodTemplate<'_>,
    settings: &Settings,
    policy: NamespacePolicy,
) -> Result<Outcome, InjectError> {
    match decide(pod.metadata, pod.spec, pod.namespace, policy, settings) {
        Decision::Skip(why) => Ok(Outcome::Skipped(why)),
        Decision::Inject => build(pod, settings).map(|done| Outcome::Injected(Box::new(done))),
    }
}

/// The patch for a pod that is to be injected.
fn build(pod: &PodTemplate<'_>, defaults: &Settings) -> Result<Injected, InjectError> {
    let annotations: BTreeMap<String, String> = pod.metadata["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let settings = defaults.with_annotations(&annotations)?;
    let app = pod.spec["containers"]
        .as_array()
        .filter(|c| !c.is_empty())
        .ok_or(InjectError::NoContainers)?;
    let service =
        sidecar::service_name(pod.metadata, pod.workload).ok_or(InjectError::NoServiceName)?;
    let volumes = pod.spec["volumes"].as_array();
    if volumes
        .into_iter()
        .flatten()
        .any(|v| v["name"] == TOKEN_VOLUME)
    {
        return Err(InjectError::VolumeTaken);
    }
    let mut warnings: Vec<String> = annotations
        .keys()
        .filter(|k| k.starts_with(a::CONFIG_PREFIX) && !a::CONFIG_KEYS.contains(&k.as_str()))
        .map(|k| format!("unknown annotation {k} ignored"))
        .collect();
    let plan = probes::plan(pod.spec, settings.admin_port);
    warnings.extend(plan.warnings.iter().cloned());
    if settings.mode == Mode::Legacy
        && matches!(
            pod.spec["restartPolicy"].as_str(),
            Some("Never" | "OnFailure")
        )
    {
        warnings.push(
            "legacy mode: the proxy keeps running after the job's containers finish; use native mode (Kubernetes 1.29+)".into(),
        );
    }

    let mut skip_inbound = settings.skip_inbound_ports.clone();
    let mut probe_ports_skipped = Vec::new();
    for port in &plan.skip_inbound {
        if !skip_inbound.iter().any(|r| r.contains(*port)) {
            skip_inbound.push(PortRange::single(*port));
            probe_ports_skipped.push(*port);
        }
    }
    skip_inbound.sort_unstable();

    let mut ops = Vec::new();
    let mut record = Record {
        version: VERSION,
        mode: settings.mode,
        image: settings.proxy_image.clone(),
        proxy_uid: settings.proxy_uid,
        service: service.clone(),
        containers: vec![INIT_NAME.to_string(), PROXY_NAME.to_string()],
        probes: plan.originals.clone(),
        probe_ports_skipped,
        volumes: vec![TOKEN_VOLUME.to_string()],
        annotations: Vec::new(),
        created: Vec::new(),
    };

    // Annotations: the map (and metadata itself) may not exist yet.
    if !pod.metadata.is_object() {
        ops.push(add(pod.metadata_path, json!({})));
        record.created.push("metadata".into());
    }
    let ann_path = format!("{}/annotations", pod.metadata_path);
    if !pod.metadata["annotations"].is_object() {
        ops.push(add(&ann_path, json!({})));
        record.created.push("annotations".into());
    }
    if settings.mode == Mode::Legacy && !annotations.contains_key(a::KUBECTL_DEFAULT_CONTAINER) {
        if let Some(first) = app[0]["name"].as_str() {
            ops.push(add(
                &pointer(&ann_path, a::KUBECTL_DEFAULT_CONTAINER),
                json!(first),
            ));
            record.annotations.push(a::KUBECTL_DEFAULT_CONTAINER.into());
        }
    }

    // Probes, at the indices they have before any container is inserted.
    for r in &plan.rewrites {
        ops.push(Operation::Replace {
            path: format!("{}/{}/{}/{}", pod.spec_path, r.list, r.index, r.field),
            value: r.probe.clone(),
        });
    }

    // The containers.
    let init = sidecar::init_container(&settings, &skip_inbound);
    let proxy = sidecar::proxy_container(&settings, &service, &plan.app_probes);
    let inits_path = format!("{}/initContainers", pod.spec_path);
    let has_inits = pod.spec["initContainers"].is_array();
    match settings.mode {
        Mode::Native if has_inits => {
            ops.push(add(&format!("{inits_path}/0"), init));
            ops.push(add(&format!("{inits_path}/1"), proxy));
        }
        Mode::Native => {
            ops.push(add(&inits_path, json!([init, proxy])));
            record.created.push("initContainers".into());
        }
        Mode::Legacy => {
            if has_inits {
                ops.push(add(&format!("{inits_path}/-"), init));
            } else {
                ops.push(add(&inits_path, json!([init])));
                record.created.push("initContainers".into());
            }
            ops.push(add(&format!("{}/containers/0", pod.spec_path), proxy));
        }
    }

    // The token's volume, after the pod's own.
    let volumes_path = format!("{}/volumes", pod.spec_path);
    if volumes.is_some() {
        ops.push(add(&format!("{volumes_path}/-"), sidecar::token_volume()));
    } else {
        ops.push(add(&volumes_path, json!([sidecar::token_volume()])));
        record.created.push("volumes".into());
    }

    // The record last: it describes everything above.
    ops.push(add(
        &pointer(&ann_path, a::INJECTED),
        json!(record.to_annotation()),
    ));
    Ok(Injected {
        ops,
        record,
        warnings,
    })
}

fn add(path: &str, value: Value) -> Operation {
    Operation::Add {
        path: path.to_string(),
        value,
    }
}

#[cfg(test)]
#[path = "inject_tests.rs"]
mod tests;

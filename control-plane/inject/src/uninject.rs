//! The inverse of [`crate::inject()`]: removes Tandem's containers, volume and annotations
//! and puts back the probes the injector rewrote, from the pod's own `tandem.dev/injected`
//! record, so that `uninject(inject(pod)) == pod`.

use serde_json::Value;

use crate::annotations as a;
use crate::inject::PodTemplate;
use crate::patch::{pointer, Operation};
use crate::record::{Record, OLDEST, VERSION};
use crate::sidecar::{INIT_NAME, PROXY_NAME, TOKEN_VOLUME};

/// Why a pod cannot be uninjected.
#[derive(Debug, thiserror::Error)]
pub enum UninjectError {
    /// The record is not ours, or of a newer shape.
    #[error("annotation tandem.dev/injected: {0}")]
    Record(String),
}

/// The operations that undo the injection of `pod`; `None` when it has no proxy.
pub fn uninject(pod: &PodTemplate<'_>) -> Result<Option<Vec<Operation>>, UninjectError> {
    let record = match Record::read(pod.metadata) {
        Some(Ok(r)) if (OLDEST..=VERSION).contains(&r.version) => Some(r),
        Some(Ok(r)) => {
            return Err(UninjectError::Record(format!(
                "version {} unknown",
                r.version
            )))
        }
        Some(Err(e)) => return Err(UninjectError::Record(e.to_string())),
        None => None,
    };
    let ours = |c: &Value| {
        let name = c["name"].as_str().unwrap_or_default();
        match &record {
            Some(r) => r.containers.iter().any(|n| n == name),
            None => name == PROXY_NAME || name == INIT_NAME,
        }
    };
    let has_ours = ["initContainers", "containers"].iter().any(|l| {
        pod.spec[*l]
            .as_array()
            .is_some_and(|cs| cs.iter().any(ours))
    });
    if record.is_none() && !has_ours {
        return Ok(None);
    }
    let created = |what: &str| {
        record
            .as_ref()
            .is_some_and(|r| r.created.iter().any(|c| c == what))
    };
    let mut ops = Vec::new();

    // Probes first, while the indices are those of the injected pod.
    if let Some(r) = &record {
        for (container, probes) in &r.probes {
            let Some((list, index)) = find(pod.spec, container) else {
                continue;
            };
            for (field, original) in probes {
                ops.push(Operation::Replace {
                    path: format!("{}/{list}/{index}/{field}", pod.spec_path),
                    value: original.clone(),
                });
            }
        }
    }

    // Containers, from the back so that earlier indices stay valid.
    for list in ["initContainers", "containers"] {
        let Some(cs) = pod.spec[list].as_array() else {
            continue;
        };
        let path = format!("{}/{list}", pod.spec_path);
        if list == "initContainers" && created(list) && cs.iter().all(ours) {
            ops.push(Operation::Remove { path });
            continue;
        }
        for (i, _) in cs.iter().enumerate().rev().filter(|(_, c)| ours(c)) {
            ops.push(Operation::Remove {
                path: format!("{path}/{i}"),
            });
        }
    }

    // The volumes: those the record names (without a record, the token's), the list itself
    // when it was created and holds nothing else. Only our containers mounted them.
    if let Some(vs) = pod.spec["volumes"].as_array() {
        let names: Vec<&str> = match &record {
            Some(r) => r.volumes.iter().map(String::as_str).collect(),
            None => vec![TOKEN_VOLUME],
        };
        let ours_volume = |v: &Value| v["name"].as_str().is_some_and(|n| names.contains(&n));
        let path = format!("{}/volumes", pod.spec_path);
        if created("volumes") && vs.iter().all(ours_volume) {
            ops.push(Operation::Remove { path });
        } else {
            for (i, _) in vs.iter().enumerate().rev().filter(|(_, v)| ours_volume(v)) {
                ops.push(Operation::Remove {
                    path: format!("{path}/{i}"),
                });
            }
        }
    }

    // Annotations: the record and what it says it added; then the map and metadata
    // themselves when they were created and nothing else is left in them.
    let ann = &pod.metadata["annotations"];
    let ann_path = format!("{}/annotations", pod.metadata_path);
    let mut ours_ann: Vec<&str> = vec![a::INJECTED];
    if let Some(r) = &record {
        ours_ann.extend(r.annotations.iter().map(String::as_str));
    }
    ours_ann.retain(|k| ann.get(*k).is_some());
    let left = ann.as_object().map_or(0, |m| {
        m.keys().filter(|k| !ours_ann.contains(&k.as_str())).count()
    });
    let meta_left = pod.metadata.as_object().map_or(0, |m| {
        m.keys()
            .filter(|k| !(k.as_str() == "annotations" && left == 0 && created("annotations")))
            .count()
    });
    if created("metadata") && meta_left == 0 {
        ops.push(Operation::Remove {
            path: pod.metadata_path.to_string(),
        });
    } else if created("annotations") && left == 0 {
        ops.push(Operation::Remove { path: ann_path });
    } else {
        for k in ours_ann {
            ops.push(Operation::Remove {
                path: pointer(&ann_path, k),
            });
        }
    }
    Ok(Some(ops))
}

/// The list and index of the container named `name`.
fn find(spec: &Value, name: &str) -> Option<(&'static str, usize)> {
    ["containers", "initContainers"]
        .into_iter()
        .find_map(|list| {
            spec[list]
                .as_array()?
                .iter()
                .position(|c| c["name"].as_str() == Some(name))
                .map(|i| (list, i))
        })
}

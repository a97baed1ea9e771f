//! The `tandem.dev/injected` annotation: what the injector did to a pod, written as JSON
//! into the pod itself. It marks the pod as injected (never twice), tells a reader which
//! image and mode it got, and holds what `uninject` needs to restore the pod exactly:
//! the original probes it rewrote, the volumes it added and the fields and annotations it
//! created.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::settings::Mode;

/// The version of this record's shape: 2 added [`Record::volumes`].
pub const VERSION: u32 = 2;
/// The oldest version `uninject` still reads (a version 1 record added no volume).
pub const OLDEST: u32 = 1;

/// What was injected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Record {
    /// [`VERSION`].
    pub version: u32,
    /// Native or legacy.
    pub mode: Mode,
    /// The proxy image.
    pub image: String,
    /// The proxy's UID.
    pub proxy_uid: u32,
    /// The mesh service name given to the proxy.
    pub service: String,
    /// Names of the containers added (init containers and containers alike).
    pub containers: Vec<String>,
    /// Original probes that were rewritten: container name → probe field
    /// (`livenessProbe`, …) → the probe as it was.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub probes: BTreeMap<String, BTreeMap<String, Value>>,
    /// Ports added to the inbound skip list because their probes cannot go through the
    /// proxy (gRPC probes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe_ports_skipped: Vec<u16>,
    /// Names of the pod volumes added (the ServiceAccount token's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Annotations added besides this record (e.g. kubectl's default container).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
    /// Fields that did not exist before and were created: `metadata`, `annotations`,
    /// `initContainers`, `volumes`. Uninject removes them again when they end up empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created: Vec<String>,
}

impl Record {
    /// The record of a pod's metadata, if it has one that parses.
    pub fn read(metadata: &Value) -> Option<Result<Record, serde_json::Error>> {
        let text = metadata["annotations"][crate::annotations::INJECTED].as_str()?;
        Some(serde_json::from_str(text))
    }

    /// As the annotation's value (compact JSON; keys in a fixed order).
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

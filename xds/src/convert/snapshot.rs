//! [`XdsSnapshot`]: one immutable, versioned set of xDS resources for every type.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use envoy_types::pb::google::protobuf::Any;

use super::{FromXdsError, Resources};

/// Every xDS resource the control plane serves at one version: per type URL, name → `Any`.
///
/// Built by [`to_snapshot`](super::to_snapshot); served by
/// [`AdsStream`](crate::ads::AdsStream). Check it with
/// [`check_consistent`](XdsSnapshot::check_consistent) before publishing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct XdsSnapshot {
    version: String,
    resources: Resources,
    /// Per type URL, name → content hash, computed once at insert so that every stream
    /// can tell what changed without hashing resource bytes again.
    hashes: BTreeMap<String, BTreeMap<String, u64>>,
}

impl XdsSnapshot {
    /// An empty snapshot at `version`.
    pub fn new(version: impl Into<String>) -> Self {
        XdsSnapshot {
            version: version.into(),
            resources: BTreeMap::new(),
            hashes: BTreeMap::new(),
        }
    }

    /// The version string sent as `version_info` (opaque, compared for equality).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Adds (or replaces) resource `name`; its type is `any.type_url`.
    pub fn insert(&mut self, name: impl Into<String>, any: Any) {
        let name = name.into();
        let hash = resource_hash(&name, &any);
        self.hashes
            .entry(any.type_url.clone())
            .or_default()
            .insert(name.clone(), hash);
        self.resources
            .entry(any.type_url.clone())
            .or_default()
            .insert(name, any);
    }

    /// The content hash of one resource, computed when it was inserted.
    pub(crate) fn hash_of(&self, type_url: &str, name: &str) -> Option<u64> {
        self.hashes.get(type_url).and_then(|m| m.get(name)).copied()
    }

    /// Content hashes of one type's resources, by name.
    pub(crate) fn hashes_of(&self, type_url: &str) -> impl Iterator<Item = (&str, u64)> {
        self.hashes
            .get(type_url)
            .into_iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), *v)))
    }

    /// The resources of one type, by name (empty when the type has none).
    pub fn of_type(&self, type_url: &str) -> impl Iterator<Item = (&str, &Any)> {
        self.resources
            .get(type_url)
            .into_iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// One resource by type URL and name.
    pub fn get(&self, type_url: &str, name: &str) -> Option<&Any> {
        self.resources.get(type_url).and_then(|m| m.get(name))
    }

    /// All resources, by type URL then name.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    /// Checks that the snapshot is self-consistent: every resource decodes and is
    /// supported, every listener's route configuration exists, every cluster a route
    /// references exists, and every cluster has its `ClusterLoadAssignment`. Every
    /// workload's inbound listener is checked, though each stream gets only its own.
    pub fn check_consistent(&self) -> Result<(), FromXdsError> {
        super::from_xds::check_snapshot(&self.resources)
    }
}

/// The content hash of one resource (name, type URL, bytes). Stable within one process.
fn resource_hash(name: &str, any: &Any) -> u64 {
    let mut h = DefaultHasher::new();
    name.hash(&mut h);
    any.type_url.hash(&mut h);
    any.value.hash(&mut h);
    h.finish()
}

/// A hash over a set of per-resource hashes, used to tell whether a stream already has
/// this content.
pub(crate) fn combine_hashes<'a>(hashes: impl Iterator<Item = (&'a str, u64)>) -> u64 {
    let mut h = DefaultHasher::new();
    for (name, hash) in hashes {
        name.hash(&mut h);
        hash.hash(&mut h);
    }
    h.finish()
}

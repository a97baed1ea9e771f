//! The server side of one ADS stream: [`AdsStream`].
//!
//! Rules (see `docs/control-plane.md` and the xDS protocol):
//! - The node is taken from the first request that carries one (later requests may omit it).
//! - Subscriptions are per type. A first LDS/CDS request with no names is a wildcard
//!   subscription (Envoy); `*` among the names is one too; otherwise the client subscribes by
//!   name (proxyless gRPC, and Tandem's proxy for RDS/EDS). A wildcard subscriber that sends
//!   names without `*` becomes a by-name subscriber.
//! - Every response has a fresh nonce. A request whose non-empty nonce is not the latest
//!   one sent for its type is stale and ignored entirely; answering it is what makes a
//!   server and gRPC loop forever.
//! - ACK: current nonce, no `error_detail`. NACK: `error_detail` set; it is recorded and the
//!   same content is not sent again (the client keeps its last good config).
//! - A request with an empty nonce (first subscription, or a reconnect) is always answered,
//!   even when its `version_info` is the current version: in state-of-the-world xDS the
//!   client needs a response to know its resources still exist, and an identical answer is
//!   harmless. A current-nonce request whose names changed is answered too.
//! - LDS/CDS responses hold every subscribed resource that exists (an omitted one means
//!   deleted); RDS/EDS responses hold the subscribed names that exist.
//! - [`AdsStream::on_snapshot`] pushes a type only when the content this stream would get
//!   differs from what it last got (a content hash per type), in the order SDS, CDS, EDS,
//!   LDS, RDS. The `version_info` is the snapshot version, which changes whenever any type's
//!   content changes, so it also changes when this type's did.
//! - Inbound listeners (`inbound|<ns>|<name>`) carry one workload's authorization: a stream
//!   gets only the one of the workload it is authenticated as
//!   ([`AdsStream::with_identity`]), whether it subscribes by wildcard or by name, and an
//!   unauthenticated stream gets none. What a stream may see is also what its content
//!   hash covers, so another workload's policy change pushes nothing to it.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use serde::Serialize;

use crate::convert::combine_hashes;
use crate::convert::{XdsSnapshot, ALL_TYPES, CLUSTER_TYPE, LISTENER_TYPE};
use crate::domain::{inbound_listener_name, is_inbound_listener, ServiceRef};

/// A NACK the client sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NackRecord {
    /// The version the client rejected (what this stream last sent for the type).
    pub version: String,
    /// The client's `error_detail.message`.
    pub message: String,
}

/// What a stream has acknowledged or rejected, for the control plane's status API.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct StreamStatus {
    /// The client's node id, once known.
    pub node: Option<String>,
    /// The client's node cluster (Tandem: its service name), once known.
    pub service: Option<String>,
    /// Type URL → last acknowledged version.
    pub acked: BTreeMap<String, String>,
    /// Type URL → the NACK since the last ACK of that type.
    pub nacked: BTreeMap<String, NackRecord>,
}

/// Per-type state of one stream.
#[derive(Debug, Default)]
struct TypeState {
    /// Wildcard subscription (every resource of the type).
    wildcard: bool,
    /// Names subscribed (by-name subscriptions).
    names: BTreeSet<String>,
    /// The latest nonce sent; `None` before the first response.
    nonce: Option<String>,
    /// Version and content hash of the latest response.
    sent_version: String,
    sent_hash: Option<u64>,
    acked: Option<String>,
    nack: Option<NackRecord>,
}

/// The server-side state of one ADS stream (state of the world), without I/O.
#[derive(Debug, Default)]
pub struct AdsStream {
    node: Option<Node>,
    types: BTreeMap<String, TypeState>,
    next_nonce: u64,
    /// The workload the stream is authenticated as.
    identity: Option<ServiceRef>,
    /// The one inbound listener this stream may get: `identity`'s.
    inbound: Option<String>,
}

impl AdsStream {
    /// A new unauthenticated stream: no node, no subscriptions, no inbound listener.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new stream authenticated as `identity` (from the client's certificate; `None`:
    /// unauthenticated). It gets `identity`'s inbound listener and no other.
    pub fn with_identity(identity: Option<ServiceRef>) -> Self {
        AdsStream {
            inbound: identity.as_ref().map(inbound_listener_name),
            identity,
            ..Self::default()
        }
    }

    /// The workload the stream is authenticated as.
    pub fn identity(&self) -> Option<&ServiceRef> {
        self.identity.as_ref()
    }

    /// Handles one request from the client against the current snapshot; returns the
    /// responses to send (none or one).
    pub fn on_request(
        &mut self,
        req: DiscoveryRequest,
        snap: &XdsSnapshot,
    ) -> Vec<DiscoveryResponse> {
        if self.node.is_none() {
            self.node = req.node.clone();
        }
        if !ALL_TYPES.contains(&req.type_url.as_str()) {
            return Vec::new();
        }
        let first = !self.types.contains_key(&req.type_url);
        let st = self.types.entry(req.type_url.clone()).or_default();
        if !req.response_nonce.is_empty() && st.nonce.as_deref() != Some(&req.response_nonce) {
            return Vec::new(); // stale: the client has not seen our latest response yet
        }
        let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        let wildcard = names.contains("*")
            || (names.is_empty()
                && if first {
                    req.type_url == LISTENER_TYPE || req.type_url == CLUSTER_TYPE
                } else {
                    st.wildcard
                });
        let names: BTreeSet<String> = names.into_iter().filter(|n| n != "*").collect();
        let changed = first || wildcard != st.wildcard || names != st.names;
        st.wildcard = wildcard;
        st.names = names;

        let respond = if let Some(err) = &req.error_detail {
            st.nack = Some(NackRecord {
                version: st.sent_version.clone(),
                message: err.message.clone(),
            });
            changed
        } else if req.response_nonce.is_empty() {
            true
        } else {
            st.acked = Some(st.sent_version.clone());
            st.nack = None;
            changed
        };
        if !respond || (!st.wildcard && st.names.is_empty() && !first) {
            return Vec::new();
        }
        let type_url = req.type_url;
        self.respond(&type_url, snap).into_iter().collect()
    }

    /// Handles a new snapshot: for every subscribed type whose content (as this stream
    /// would see it) changed since its last response, one response.
    pub fn on_snapshot(&mut self, snap: &XdsSnapshot) -> Vec<DiscoveryResponse> {
        let mut out = Vec::new();
        for type_url in ALL_TYPES {
            let Some(st) = self.types.get(type_url) else {
                continue;
            };
            if st.nonce.is_none() || (!st.wildcard && st.names.is_empty()) {
                continue; // never answered, or nothing subscribed: nothing to update
            }
            let hash = selected_hash(st, type_url, snap, self.inbound.as_deref());
            if st.sent_hash != Some(hash) {
                out.extend(self.respond(type_url, snap));
            }
        }
        out
    }

    /// The client's node, from the first request that carried one.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// The client's node id, once known.
    pub fn node_id(&self) -> Option<&str> {
        self.node.as_ref().map(|n| n.id.as_str())
    }

    /// The last version the client acknowledged for `type_url`.
    pub fn acked_version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url).and_then(|t| t.acked.as_deref())
    }

    /// The NACK the client sent for `type_url` since its last ACK of that type.
    pub fn last_nack(&self, type_url: &str) -> Option<&NackRecord> {
        self.types.get(type_url).and_then(|t| t.nack.as_ref())
    }

    /// The names subscribed for `type_url` (`None`: not subscribed; `*` stands for a
    /// wildcard subscription).
    pub fn subscription(&self, type_url: &str) -> Option<Vec<String>> {
        self.types.get(type_url).map(|t| {
            let mut v: Vec<String> = t.names.iter().cloned().collect();
            if t.wildcard {
                v.insert(0, "*".to_string());
            }
            v
        })
    }

    /// Node, ACKed versions and NACKs, for the status API.
    pub fn status(&self) -> StreamStatus {
        StreamStatus {
            node: self.node.as_ref().map(|n| n.id.clone()),
            service: self.node.as_ref().map(|n| n.cluster.clone()),
            acked: self
                .types
                .iter()
                .filter_map(|(t, s)| s.acked.clone().map(|v| (t.clone(), v)))
                .collect(),
            nacked: self
                .types
                .iter()
                .filter_map(|(t, s)| s.nack.clone().map(|n| (t.clone(), n)))
                .collect(),
        }
    }

    fn respond(&mut self, type_url: &str, snap: &XdsSnapshot) -> Option<DiscoveryResponse> {
        let st = self.types.get_mut(type_url)?;
        let (resources, hash) = select(st, type_url, snap, self.inbound.as_deref());
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        st.nonce = Some(nonce.clone());
        st.sent_hash = Some(hash);
        st.sent_version = snap.version().to_string();
        Some(DiscoveryResponse {
            version_info: snap.version().to_string(),
            resources,
            type_url: type_url.to_string(),
            nonce,
            ..Default::default()
        })
    }
}

/// Whether a stream whose own inbound listener is `inbound` may get resource `name` of
/// `type_url`: anything but another workload's inbound listener.
fn visible(type_url: &str, name: &str, inbound: Option<&str>) -> bool {
    type_url != LISTENER_TYPE || !is_inbound_listener(name) || inbound == Some(name)
}

/// The content hash of what this subscription gets of `type_url`, from the hashes the
/// snapshot computed once: checking a stream for changes copies and hashes no resource.
fn selected_hash(st: &TypeState, type_url: &str, snap: &XdsSnapshot, inbound: Option<&str>) -> u64 {
    if st.wildcard {
        combine_hashes(
            snap.hashes_of(type_url)
                .filter(|(n, _)| visible(type_url, n, inbound)),
        )
    } else {
        combine_hashes(
            st.names
                .iter()
                .filter(|n| visible(type_url, n, inbound))
                .filter_map(|n| snap.hash_of(type_url, n).map(|h| (n.as_str(), h))),
        )
    }
}

/// The resources of `type_url` this subscription gets, and their content hash.
fn select(
    st: &TypeState,
    type_url: &str,
    snap: &XdsSnapshot,
    inbound: Option<&str>,
) -> (Vec<Any>, u64) {
    let resources = if st.wildcard {
        snap.of_type(type_url)
            .filter(|(n, _)| visible(type_url, n, inbound))
            .map(|(_, a)| a.clone())
            .collect()
    } else {
        st.names
            .iter()
            .filter(|n| visible(type_url, n, inbound))
            .filter_map(|n| snap.get(type_url, n).cloned())
            .collect()
    };
    (resources, selected_hash(st, type_url, snap, inbound))
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;

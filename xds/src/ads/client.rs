//! The proxy's side of one ADS stream: [`AdsClient`].
//!
//! The client subscribes to every Listener and Cluster (wildcard), by name to the
//! RouteConfigurations its listeners name and the ClusterLoadAssignments its clusters
//! name, and to the trust bundle `Secret` ([`TRUST_BUNDLE_SECRET`]), which is optional: a
//! mesh without identity serves none, and the view is complete without it. A Secret
//! response lists every subscribed secret that exists (Tandem's server answers named
//! subscriptions that way), so one without the bundle removes it. Each response is validated as a whole against the state it would produce:
//! - invalid (a resource fails to decode, or uses something Tandem does not support):
//!   NACK with `error_detail` (`INVALID_ARGUMENT`, the error's path and reason) and the
//!   last accepted version of the type; the state does not change;
//! - valid: ACK, adopt the state, re-subscribe RDS/EDS to exactly the referenced names
//!   (dropping resources no longer referenced), and return a new [`ProxyView`] only when
//!   the state is complete (nothing referenced is missing) and differs from the last view
//!   returned. A half-arrived config is never published.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{value, Any, Struct, Value};
use envoy_types::pb::google::rpc::Status;

use super::INVALID_ARGUMENT;
use crate::convert::from_xds::{analyze, Analysis};
use crate::convert::{
    short_type_name, unpack, ConvertError, Resources, CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE,
    ROUTE_TYPE, SECRET_TYPE,
};
use crate::domain::{ProxyView, TRUST_BUNDLE_SECRET};

/// The types the client consumes, in the order a (re)connect subscribes to them.
const CLIENT_TYPES: [&str; 5] = [
    LISTENER_TYPE,
    CLUSTER_TYPE,
    ROUTE_TYPE,
    ENDPOINT_TYPE,
    SECRET_TYPE,
];

/// What the client does after a response.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClientStep {
    /// Requests to send, in order: the ACK or NACK, then any subscription changes.
    pub requests: Vec<DiscoveryRequest>,
    /// A new complete view to publish, if the state is complete and changed.
    pub view: Option<ProxyView>,
    /// True when the response was rejected (the first request is a NACK).
    pub nacked: bool,
}

/// A response the client rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientNack {
    /// Its type URL.
    pub type_url: String,
    /// The rejected version.
    pub version: String,
    /// Its nonce.
    pub nonce: String,
    /// Why: the conversion error (`path: reason`).
    pub message: String,
}

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    version: Option<String>,
    nonce: String,
}

/// The client-side state of the proxy's ADS stream, without I/O. Survives reconnects.
#[derive(Debug)]
pub struct AdsClient {
    node: Node,
    node_sent: bool,
    types: BTreeMap<&'static str, TypeState>,
    state: Resources,
    last_view: Option<ProxyView>,
    last_nack: Option<ClientNack>,
}

impl AdsClient {
    /// A client identifying as `node_id`, for the service `service` (sent as the node's
    /// `cluster`).
    pub fn new(node_id: impl Into<String>, service: impl Into<String>) -> Self {
        let mut types = BTreeMap::new();
        for t in [LISTENER_TYPE, CLUSTER_TYPE] {
            types.insert(
                t,
                TypeState {
                    wildcard: true,
                    ..Default::default()
                },
            );
        }
        types.insert(ROUTE_TYPE, TypeState::default());
        types.insert(ENDPOINT_TYPE, TypeState::default());
        types.insert(
            SECRET_TYPE,
            TypeState {
                names: [TRUST_BUNDLE_SECRET.to_string()].into_iter().collect(),
                ..Default::default()
            },
        );
        AdsClient {
            node: Node {
                id: node_id.into(),
                cluster: service.into(),
                user_agent_name: "tandem-proxy".to_string(),
                ..Default::default()
            },
            node_sent: false,
            types,
            state: Resources::new(),
            last_view: None,
            last_nack: None,
        }
    }

    /// Adds a string field to the node's metadata, sent with the node on every new stream
    /// (e.g. [`super::ADMIN_ADDR_METADATA`]).
    pub fn with_node_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.node
            .metadata
            .get_or_insert_with(Struct::default)
            .fields
            .insert(
                key.into(),
                Value {
                    kind: Some(value::Kind::StringValue(value.into())),
                },
            );
        self
    }

    /// The requests that open a (new) stream: wildcard LDS and CDS, RDS and EDS for the
    /// names already known, then SDS for the trust bundle, each carrying the last accepted version so the server can
    /// tell a resync from a first start. The first one carries the node.
    pub fn connect_requests(&mut self) -> Vec<DiscoveryRequest> {
        self.node_sent = false;
        for st in self.types.values_mut() {
            st.nonce.clear();
        }
        let mut out = Vec::new();
        for t in CLIENT_TYPES {
            let subscribed = self
                .types
                .get(t)
                .is_some_and(|s| s.wildcard || !s.names.is_empty());
            if subscribed {
                out.push(self.request(t, None));
            }
        }
        out
    }

    /// Handles one response: validates it, then ACKs or NACKs (see the module docs).
    pub fn on_response(&mut self, resp: DiscoveryResponse) -> ClientStep {
        let Some(type_url) = CLIENT_TYPES.into_iter().find(|t| *t == resp.type_url) else {
            let message = format!("{}: resource type not subscribed", resp.type_url);
            return self.nack_unknown(resp, message);
        };
        if let Some(st) = self.types.get_mut(type_url) {
            st.nonce = resp.nonce.clone();
        }
        match self.candidate(type_url, &resp) {
            Err(err) => {
                let message = err.to_string();
                self.last_nack = Some(ClientNack {
                    type_url: type_url.to_string(),
                    version: resp.version_info.clone(),
                    nonce: resp.nonce.clone(),
                    message: message.clone(),
                });
                let status = Status {
                    code: INVALID_ARGUMENT,
                    message,
                    details: Vec::new(),
                };
                ClientStep {
                    requests: vec![self.request(type_url, Some(status))],
                    view: None,
                    nacked: true,
                }
            }
            Ok((mut candidate, analysis)) => {
                if let Some(st) = self.types.get_mut(type_url) {
                    st.version = Some(resp.version_info.clone());
                }
                if self
                    .last_nack
                    .as_ref()
                    .is_some_and(|n| n.type_url == type_url)
                {
                    self.last_nack = None;
                }
                let mut requests = vec![self.request(type_url, None)];
                let mut pruned = false;
                for (t, refs) in [
                    (ROUTE_TYPE, &analysis.route_refs),
                    (ENDPOINT_TYPE, &analysis.endpoint_refs),
                ] {
                    if let Some(items) = candidate.get_mut(t) {
                        let before = items.len();
                        items.retain(|name, _| refs.contains(name));
                        pruned |= items.len() != before;
                    }
                    let changed = self.types.get_mut(t).is_some_and(|st| {
                        let changed = st.names != *refs;
                        st.names = refs.clone();
                        changed
                    });
                    if changed {
                        requests.push(self.request(t, None));
                    }
                }
                self.state = candidate;
                // Pruning only drops unreferenced resources, so the analysis still holds
                // unless something was dropped; then re-link (every resource was already
                // validated above). Decoding a large state twice per push is the client's
                // main cost, so skip it when possible.
                let current = if pruned {
                    analyze(&self.state).ok()
                } else {
                    Some(analysis)
                };
                let view = match current {
                    Some(a) if a.missing.is_empty() && self.last_view.as_ref() != Some(&a.view) => {
                        self.last_view = Some(a.view.clone());
                        Some(a.view)
                    }
                    _ => None,
                };
                ClientStep {
                    requests,
                    view,
                    nacked: false,
                }
            }
        }
    }

    /// The reason of the last NACK sent (`path: reason`), until a later response of the
    /// same type is accepted.
    pub fn last_nack(&self) -> Option<&str> {
        self.last_nack.as_ref().map(|n| n.message.as_str())
    }

    /// The last NACK sent, in full, until a later response of the same type is accepted.
    pub fn last_nack_detail(&self) -> Option<&ClientNack> {
        self.last_nack.as_ref()
    }

    /// The last accepted version of `type_url`.
    pub fn accepted_version(&self, type_url: &str) -> Option<&str> {
        self.types.get(type_url).and_then(|t| t.version.as_deref())
    }

    /// Type URL → last accepted version, for the proxy's config dump.
    pub fn accepted_versions(&self) -> BTreeMap<String, String> {
        self.types
            .iter()
            .filter_map(|(t, s)| s.version.clone().map(|v| (t.to_string(), v)))
            .collect()
    }

    /// The names subscribed by name for `type_url` (RDS, EDS and SDS; empty for wildcard
    /// types).
    pub fn subscribed_names(&self, type_url: &str) -> Vec<String> {
        self.types
            .get(type_url)
            .map(|t| t.names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The accepted resources (per type URL, name → `Any`).
    pub fn resources(&self) -> &Resources {
        &self.state
    }

    /// The last complete view returned, if any.
    pub fn view(&self) -> Option<&ProxyView> {
        self.last_view.as_ref()
    }

    /// The state this response would produce, validated; an error means NACK.
    fn candidate(
        &self,
        type_url: &'static str,
        resp: &DiscoveryResponse,
    ) -> Result<(Resources, Analysis), ConvertError> {
        let mut received = BTreeMap::new();
        for (i, any) in resp.resources.iter().enumerate() {
            let path = format!(
                "DiscoveryResponse[{}].resources[{i}]",
                short_type_name(type_url)
            );
            let name = resource_name(type_url, any, &path)?;
            if received.insert(name.clone(), any.clone()).is_some() {
                return Err(ConvertError::new(
                    path,
                    format!("duplicate resource {name:?}"),
                ));
            }
        }
        let mut candidate = self.state.clone();
        let items = candidate.entry(type_url.to_string()).or_default();
        let st = self.types.get(type_url);
        if st.is_some_and(|s| s.wildcard) {
            *items = received; // state of the world: absent means deleted
        } else if type_url == SECRET_TYPE {
            // The subscription never changes and the server lists every subscribed secret
            // that exists: absent means deleted (the mesh no longer has a trust bundle).
            received.retain(|name, _| st.is_some_and(|s| s.names.contains(name)));
            *items = received;
        } else {
            // By name: absent means unchanged; names not subscribed are ignored.
            for (name, any) in received {
                if st.is_some_and(|s| s.names.contains(&name)) {
                    items.insert(name, any);
                }
            }
        }
        let analysis = analyze(&candidate)?;
        Ok((candidate, analysis))
    }

    fn request(&mut self, type_url: &str, error: Option<Status>) -> DiscoveryRequest {
        let node = (!self.node_sent).then(|| self.node.clone());
        self.node_sent = true;
        let st = self.types.get(type_url);
        DiscoveryRequest {
            version_info: st.and_then(|s| s.version.clone()).unwrap_or_default(),
            node,
            resource_names: st
                .filter(|s| !s.wildcard)
                .map(|s| s.names.iter().cloned().collect())
                .unwrap_or_default(),
            type_url: type_url.to_string(),
            response_nonce: st.map(|s| s.nonce.clone()).unwrap_or_default(),
            error_detail: error,
            ..Default::default()
        }
    }

    fn nack_unknown(&mut self, resp: DiscoveryResponse, message: String) -> ClientStep {
        let node = (!self.node_sent).then(|| self.node.clone());
        self.node_sent = true;
        self.last_nack = Some(ClientNack {
            type_url: resp.type_url.clone(),
            version: resp.version_info,
            nonce: resp.nonce.clone(),
            message: message.clone(),
        });
        ClientStep {
            requests: vec![DiscoveryRequest {
                node,
                type_url: resp.type_url,
                response_nonce: resp.nonce,
                error_detail: Some(Status {
                    code: INVALID_ARGUMENT,
                    message,
                    details: Vec::new(),
                }),
                ..Default::default()
            }],
            view: None,
            nacked: true,
        }
    }
}

/// The name of a resource of `type_url` packed in `any`.
fn resource_name(type_url: &str, any: &Any, path: &str) -> Result<String, ConvertError> {
    let name = match type_url {
        LISTENER_TYPE => unpack::<Listener>(any, path)?.name,
        ROUTE_TYPE => unpack::<RouteConfiguration>(any, path)?.name,
        CLUSTER_TYPE => unpack::<Cluster>(any, path)?.name,
        SECRET_TYPE => unpack::<Secret>(any, path)?.name,
        _ => unpack::<ClusterLoadAssignment>(any, path)?.cluster_name,
    };
    if name.is_empty() {
        return Err(ConvertError::new(
            format!("{path}.name"),
            "must be non-empty",
        ));
    }
    Ok(name)
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;

//! Deterministic bytes for the protobuf maps Tandem sends.
//!
//! envoy-types keeps protobuf maps in `std::collections::HashMap`s, and prost encodes a map
//! in iteration order, which differs from one map instance to the next. The snapshot hashes
//! each resource's bytes ([`XdsSnapshot::insert`](super::XdsSnapshot::insert)) to decide
//! what to push, so a map with two entries or more makes an unchanged resource look changed
//! on every rebuild, and every revision pushes it to every stream.
//!
//! Where a map with several entries is built, its message is encoded through a mirror
//! message with the same field numbers and `BTreeMap`s: the same wire format, entries in
//! key order. The mirrors are used for encoding only; decoding
//! ([`from_xds`](super::from_xds)) and the builders keep the generated types. This was
//! preferred over rewriting map fields in the encoded bytes (that needs a hand-kept table
//! of field numbers walked over every resource on every revision) and over hashing a
//! canonical form (that needs a decode per resource, and the bytes sent would still move).
//! Here the only extra cost is moving a few strings into a `BTreeMap`.
//!
//! The maps Tandem fills, and how each is kept deterministic:
//! - `Cluster.metadata` (`filter_metadata`, and the `Struct` under it with `protocol` and
//!   `lb`): [`pack_cluster`] writes it through [`SortedMetadata`];
//! - `RBAC.policies`: `to_xds::security` encodes the filter config through its own mirror;
//! - `Route.typed_per_filter_config`: at most one key (the fault filter), whose encoding
//!   cannot vary. A second key needs a mirror too.
//!
//! `tests/determinism.rs` converts a mesh that reaches every one of them many times and
//! compares the bytes, so a new map with two keys shows up there.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::{value, Any, ListValue, Struct, Value};
use prost::{Message, Name};

/// Field number of `envoy.config.cluster.v3.Cluster.metadata`.
const CLUSTER_METADATA_TAG: u32 = 25;

/// Packs `c` like [`pack`](super::pack), with its metadata maps in key order.
pub(crate) fn pack_cluster(mut c: Cluster) -> Any {
    match c.metadata.take() {
        None => super::pack(&c),
        Some(metadata) => {
            pack_with_field(&c, CLUSTER_METADATA_TAG, &SortedMetadata::from(metadata))
        }
    }
}

/// Packs `msg` followed by `field` as its field `tag`, for a message whose field `tag` was
/// taken out to be encoded by a mirror. Protobuf parsers accept fields in any order (and
/// `msg` no longer has `tag`), so the bytes decode to the message with the field put back.
fn pack_with_field<T: Message + Name>(msg: &T, tag: u32, field: &impl Message) -> Any {
    let mut value = msg.encode_to_vec();
    prost::encoding::message::encode(tag, field, &mut value);
    Any {
        type_url: T::type_url(),
        value,
    }
}

/// `envoy.config.core.v3.Metadata` with its maps in key order.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SortedMetadata {
    #[prost(btree_map = "string, message", tag = "1")]
    filter_metadata: BTreeMap<String, SortedStruct>,
    #[prost(btree_map = "string, message", tag = "2")]
    typed_filter_metadata: BTreeMap<String, Any>,
}

impl From<Metadata> for SortedMetadata {
    fn from(m: Metadata) -> Self {
        SortedMetadata {
            filter_metadata: m
                .filter_metadata
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect(),
            typed_filter_metadata: m.typed_filter_metadata.into_iter().collect(),
        }
    }
}

/// `google.protobuf.Struct` with its fields in key order, nested structs included.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SortedStruct {
    #[prost(btree_map = "string, message", tag = "1")]
    fields: BTreeMap<String, SortedValue>,
}

impl From<Struct> for SortedStruct {
    fn from(s: Struct) -> Self {
        SortedStruct {
            fields: s.fields.into_iter().map(|(k, v)| (k, v.into())).collect(),
        }
    }
}

/// `google.protobuf.Value`, whose struct and list kinds hold sorted structs.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SortedValue {
    #[prost(oneof = "SortedKind", tags = "1, 2, 3, 4, 5, 6")]
    kind: Option<SortedKind>,
}

/// `google.protobuf.Value.kind`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum SortedKind {
    /// `NullValue` is an enum: on the wire, a varint like `int32`.
    #[prost(int32, tag = "1")]
    Null(i32),
    #[prost(double, tag = "2")]
    Number(f64),
    #[prost(string, tag = "3")]
    String(String),
    #[prost(bool, tag = "4")]
    Bool(bool),
    #[prost(message, tag = "5")]
    Struct(SortedStruct),
    #[prost(message, tag = "6")]
    List(SortedListValue),
}

/// `google.protobuf.ListValue` of sorted values (the list keeps its order).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SortedListValue {
    #[prost(message, repeated, tag = "1")]
    values: Vec<SortedValue>,
}

impl From<Value> for SortedValue {
    fn from(v: Value) -> Self {
        SortedValue {
            kind: v.kind.map(|k| match k {
                value::Kind::NullValue(n) => SortedKind::Null(n),
                value::Kind::NumberValue(n) => SortedKind::Number(n),
                value::Kind::StringValue(s) => SortedKind::String(s),
                value::Kind::BoolValue(b) => SortedKind::Bool(b),
                value::Kind::StructValue(s) => SortedKind::Struct(s.into()),
                value::Kind::ListValue(ListValue { values }) => SortedKind::List(SortedListValue {
                    values: values.into_iter().map(Into::into).collect(),
                }),
            }),
        }
    }
}

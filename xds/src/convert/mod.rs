//! Conversion between Tandem's domain types and Envoy xDS v3 resources.
//!
//! - [`to_xds`]: a [`MeshConfig`](crate::domain::MeshConfig) becomes an [`XdsSnapshot`]
//!   (control plane side), following the xDS mapping in `docs/control-plane.md`.
//! - [`from_xds`]: a set of accepted resources becomes a
//!   [`ProxyView`](crate::domain::ProxyView) (proxy side). Anything that would change
//!   semantics and that Tandem does not implement is an error (the proxy NACKs it), with a
//!   field path naming the resource and field.
//!
//! Protobuf types stay at this edge: the domain module never sees them.

mod canonical;
pub mod from_xds;
mod rewrite;
mod snapshot;
pub mod to_xds;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};

use crate::domain::Fraction;

pub use from_xds::to_proxy_view;
pub use rewrite::{rewrite_path, InvalidRewrite, PathRewriter, FULL_PATH_PATTERN};
pub(crate) use snapshot::combine_hashes;
pub use snapshot::XdsSnapshot;
pub use to_xds::to_snapshot;

/// Type URL of `envoy.config.listener.v3.Listener` (LDS).
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Type URL of `envoy.config.route.v3.RouteConfiguration` (RDS).
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Type URL of `envoy.config.cluster.v3.Cluster` (CDS).
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Type URL of `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// Type URL of `envoy.extensions.transport_sockets.tls.v3.Secret` (SDS over ADS).
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The five resource types Tandem serves and consumes, in the order a push should apply
/// them (Envoy's warming order): secrets before the clusters and listeners whose TLS
/// contexts name them, clusters and their endpoints before the listeners and routes that
/// use them.
pub const ALL_TYPES: [&str; 5] = [
    SECRET_TYPE,
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
];

/// Resources by type URL, then by resource name.
pub type Resources = BTreeMap<String, BTreeMap<String, Any>>;

/// The short name of a type URL as used in error paths (`Listener`, `Cluster`, ...).
pub fn short_type_name(type_url: &str) -> &str {
    type_url.rsplit('.').next().unwrap_or(type_url)
}

/// A conversion failed: `path` names the resource and field, `reason` says what is wrong.
///
/// Displayed as `path: reason`, e.g.
/// `RouteConfiguration[r].virtual_hosts[0].routes[2].match.safe_regex: invalid regex ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConvertError {
    /// Where: resource kind and name, then the field path inside it.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl ConvertError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ConvertError {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// A resource that another resource references but that is not (yet) in the set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Missing {
    /// Type URL of the missing resource.
    pub type_url: &'static str,
    /// Its name.
    pub name: String,
    /// The resource that references it, as `Kind[name]`.
    pub referenced_by: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}] (referenced by {})",
            short_type_name(self.type_url),
            self.name,
            self.referenced_by
        )
    }
}

/// Why a set of resources does not give a [`ProxyView`](crate::domain::ProxyView).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FromXdsError {
    /// A resource is malformed or uses something Tandem does not support: NACK it.
    #[error(transparent)]
    Invalid(#[from] ConvertError),
    /// Every resource is valid, but some referenced ones have not arrived: wait for them.
    #[error("incomplete: missing {}", join_missing(.0))]
    Incomplete(Vec<Missing>),
}

impl FromXdsError {
    /// True for [`FromXdsError::Incomplete`].
    pub fn is_incomplete(&self) -> bool {
        matches!(self, FromXdsError::Incomplete(_))
    }
}

fn join_missing(missing: &[Missing]) -> String {
    missing
        .iter()
        .map(Missing::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Packs a message into an [`Any`] with its type URL.
pub(crate) fn pack<T: prost::Message + prost::Name>(msg: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: msg.encode_to_vec(),
    }
}

/// Unpacks an [`Any`] that must hold a `T`; errors name `path`.
pub(crate) fn unpack<T: prost::Message + prost::Name + Default>(
    any: &Any,
    path: &str,
) -> Result<T, ConvertError> {
    let want = T::type_url();
    if any.type_url != want {
        return Err(ConvertError::new(
            path,
            format!("type URL is {:?}, expected {want:?}", any.type_url),
        ));
    }
    T::decode(any.value.as_slice())
        .map_err(|e| ConvertError::new(path, format!("cannot decode {}: {e}", T::NAME)))
}

/// A protobuf `Duration` (saturating at `i64::MAX` seconds, which no timeout reaches).
pub(crate) fn pb_duration(d: std::time::Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Below 10^9, so it fits.
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf `Duration` as a std one; negative or unnormalized ones are invalid at `path`.
pub(crate) fn std_duration(d: PbDuration, path: &str) -> Result<std::time::Duration, ConvertError> {
    let secs =
        u64::try_from(d.seconds).map_err(|_| ConvertError::new(path, "must not be negative"))?;
    let nanos = u32::try_from(d.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| ConvertError::new(path, "nanos must be in 0..1000000000"))?;
    Ok(std::time::Duration::new(secs, nanos))
}

/// A share of requests as an Envoy `FractionalPercent` (parts per million, exact).
pub(crate) fn fractional_percent(f: Fraction) -> FractionalPercent {
    FractionalPercent {
        numerator: f.0,
        denominator: DenominatorType::Million as i32,
    }
}

/// An Envoy `FractionalPercent` in parts per million; a numerator above its denominator
/// means every request, as in Envoy.
pub(crate) fn fraction(fp: &FractionalPercent, path: &str) -> Result<Fraction, ConvertError> {
    let scale: u64 = match DenominatorType::try_from(fp.denominator) {
        Ok(DenominatorType::Hundred) => 10_000,
        Ok(DenominatorType::TenThousand) => 100,
        Ok(DenominatorType::Million) => 1,
        Err(_) => {
            return Err(ConvertError::new(
                format!("{path}.denominator"),
                format!("unknown denominator {}", fp.denominator),
            ))
        }
    };
    let ppm = (u64::from(fp.numerator) * scale).min(u64::from(Fraction::MILLION));
    // At most a million, so it fits.
    Ok(Fraction(u32::try_from(ppm).unwrap_or(Fraction::MILLION)))
}

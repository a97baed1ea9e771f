//! Where snapshots come from: a static config file, watched and reloaded ([`file`]), or a
//! control plane over xDS ([`xds`]). Both end in the same place, a validated
//! [`crate::snapshot::Snapshot`] published whole, so the request path never knows which.

pub mod file;
pub mod xds;

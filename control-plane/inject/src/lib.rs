//! `tandem-inject`: the sidecar injector of a Tandem mesh, as pure functions.
//!
//! An injector is a function `(pod, namespace decision, settings) -> JSON Patch`. The
//! control plane's admission webhook and `tandemctl inject` are two thin callers of it, so
//! what the cluster does to a pod and what the command line prints are the same patch.
//!
//! Path of a pod through the modules:
//! [`review`] (AdmissionReview v1 in and out) or [`workload`] (Deployments, Jobs, lists…
//! for `tandemctl`) find the pod template → [`decide`] says whether to inject →
//! [`settings`] reads the `config.tandem.dev/*` annotations over the defaults →
//! [`probes`] moves HTTP/TCP probes behind the proxy's admin port → [`sidecar`] builds the
//! two containers → [`mod@inject`] writes it all as RFC 6902 operations ([`patch`]) and
//! records what it did ([`record`]), which [`mod@uninject`] reads to undo it exactly.

pub mod annotations;
pub mod decide;
pub mod inject;
pub mod patch;
pub mod probes;
pub mod record;
pub mod review;
pub mod settings;
pub mod sidecar;
pub mod uninject;
pub mod workload;

pub use decide::{Decision, NamespacePolicy, Skip};
pub use inject::{inject, InjectError, Injected, PodTemplate};
pub use patch::Operation;
pub use settings::{Mode, Settings};
pub use uninject::uninject;

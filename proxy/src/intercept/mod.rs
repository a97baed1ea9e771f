//! Transparent interception: the app's connections reach the sidecar without the app
//! knowing. [`rules`] are the iptables rules `tandem-proxy init` writes into the pod's
//! network namespace ([`iptables`] applies and removes them, all or nothing), and
//! [`original_dst`] reads where an intercepted connection was going.
//!
//! The rules and the proxy agree on a few fixed things, defined here once.

pub mod iptables;
pub mod original_dst;
pub mod rules;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub use original_dst::original_dst;

/// The proxy's user id (Linkerd's, so existing exclusion habits carry over): its own
/// connections are never redirected.
pub const DEFAULT_PROXY_UID: u32 = 2102;

/// The source address the inbound side connects to the app from. Its connections to the
/// pod's own IP go over loopback like the proxy's calls to its own pod through the mesh,
/// which the rules send to the inbound port; this source tells them apart, as Istio's
/// 127.0.0.6 does.
pub const INBOUND_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// The source address to connect to the app at `target` from: [`INBOUND_SOURCE`] for a
/// non-loopback IPv4 target (the pod's IP), else the kernel's choice.
pub fn app_source(target: SocketAddr) -> Option<IpAddr> {
    match target.ip() {
        IpAddr::V4(ip) if !ip.is_loopback() => Some(IpAddr::V4(INBOUND_SOURCE)),
        _ => None,
    }
}

//! Tandem's domain config types, independent of any wire format.
//!
//! Empty until the control-plane issue: the proxy's static config (`tandem-proxy`'s
//! `config` module) is the first consumer these types will be extracted from.

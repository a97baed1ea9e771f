//! Which xDS cluster a reference to a service takes.
//!
//! A service with one port (or none) is one cluster, named by its FQDN, whose endpoints
//! carry their own ports. A service with several ports is one cluster per port
//! ([`ServiceRef::port_name`]), holding the endpoints that serve that port (those with no
//! `service_port` serve them all), because a Kubernetes Service's ports may target
//! different container ports and mixing them would send requests to the wrong one.
//!
//! A backend reference picks its port the way Gateway API and Kubernetes users expect: the
//! port it names; else the port the request came in on, when the backend has it (a route
//! on `web:9090` to `web-v2` goes to `web-v2:9090`); else the backend's first port. A port
//! the backend lacks is a cluster with no endpoints (503), reported as `BackendNotFound`
//! by route status.

use std::collections::BTreeMap;

use crate::domain::{AppProtocol, Endpoint, MeshConfig, Service, ServiceRef};

/// One cluster of a snapshot: a service, and its port when it has several.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ClusterKey {
    /// The service.
    pub service: ServiceRef,
    /// The port, for a service with several ([`Service::per_port`]).
    pub port: Option<u16>,
}

impl ClusterKey {
    /// The cluster's xDS name.
    pub fn name(&self) -> String {
        match self.port {
            Some(port) => self.service.port_name(port),
            None => self.service.fqdn(),
        }
    }

    /// The protocol its endpoints speak: the port's, else the one all ports share, else
    /// detection.
    pub fn protocol(&self, mesh: &MeshConfig) -> AppProtocol {
        let Some(service) = mesh.services.get(&self.service) else {
            return AppProtocol::default();
        };
        let mut protos = service
            .ports
            .iter()
            .filter(|p| self.port.is_none_or(|port| p.port == port))
            .map(|p| p.protocol);
        match protos.next() {
            Some(first) if protos.all(|p| p == first) => first,
            _ => AppProtocol::Detect,
        }
    }

    /// The endpoints it balances over.
    pub fn endpoints<'m>(&self, mesh: &'m MeshConfig) -> Vec<&'m Endpoint> {
        let all = mesh
            .endpoints
            .get(&self.service)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        all.iter()
            .filter(|e| match (self.port, e.service_port) {
                (Some(port), Some(serves)) => port == serves,
                _ => true,
            })
            .collect()
    }
}

/// Resolves references made from traffic that came in on one port of a service.
pub(super) struct Resolve<'m> {
    services: &'m BTreeMap<ServiceRef, Service>,
    /// The port the request came in on, if known.
    called: Option<u16>,
}

impl<'m> Resolve<'m> {
    /// References from traffic to port `called` (if known).
    pub fn new(mesh: &'m MeshConfig, called: Option<u16>) -> Self {
        Resolve {
            services: &mesh.services,
            called,
        }
    }

    /// The cluster a reference to `service`, naming `port` or not, takes.
    pub fn key(&self, service: &ServiceRef, port: Option<u16>) -> ClusterKey {
        let port = match self.services.get(service) {
            Some(s) if s.per_port() => {
                let has = |p: &u16| s.ports.iter().any(|sp| sp.port == *p);
                port.or_else(|| self.called.filter(has))
                    .or_else(|| s.ports.first().map(|p| p.port))
            }
            _ => None,
        };
        ClusterKey {
            service: service.clone(),
            port,
        }
    }

    /// The name of [`Resolve::key`]'s cluster.
    pub fn name(&self, service: &ServiceRef, port: Option<u16>) -> String {
        self.key(service, port).name()
    }
}

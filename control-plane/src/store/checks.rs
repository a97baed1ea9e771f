//! Checks across resources that an apply must pass, inside its write transaction: no
//! endpoint duplicated under another name, no virtual `address:port` claimed twice, and
//! (strict applies) no route naming what would not exist.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::ops::View;
use super::StoreError;
use crate::resources::status::{self, World};
use crate::resources::{domain, Kind, Resource, ResourceError, ResourceKey};

/// An endpoint may not duplicate (service, address) of another endpoint under another name.
pub(super) fn endpoint_conflict(view: &View<'_, '_>, r: &Resource) -> Result<(), StoreError> {
    let e = domain::endpoint(&r.doc)?;
    match view.find_endpoint(&e.service.namespace, &e.service.name, &e.address)? {
        Some(other) if other.key != r.key => Err(StoreError::Conflict(format!(
            "{} has the same service and address as the stored {}",
            r.key, other.key
        ))),
        _ => Ok(()),
    }
}

/// Whether a `Service` document declares virtual addresses.
pub(super) fn has_addresses(r: &Resource) -> bool {
    domain::service_spec(&r.doc).is_ok_and(|s| !s.addresses.is_empty())
}

/// Two services may not claim one virtual `address:port`: an intercepted connection to it
/// would have two destinations. Checked against the stored services and among the applied
/// ones (an applied service replaces its stored self).
pub(super) fn address_conflicts(
    view: &View<'_, '_>,
    resources: &[Resource],
) -> Result<(), StoreError> {
    let applied: BTreeSet<&ResourceKey> = resources
        .iter()
        .filter(|r| r.key.kind == Kind::Service)
        .map(|r| &r.key)
        .collect();
    let stored = view.list(Kind::Service, None)?;
    let services = stored
        .iter()
        .filter(|s| !applied.contains(&s.key))
        .map(|s| (&s.key, &s.doc))
        .chain(
            resources
                .iter()
                .filter(|r| r.key.kind == Kind::Service)
                .map(|r| (&r.key, &r.doc)),
        );
    let mut claimed: BTreeMap<SocketAddr, &ResourceKey> = BTreeMap::new();
    for (key, doc) in services {
        let svc = domain::service(doc)?;
        for ip in &svc.addresses {
            for port in &svc.ports {
                let addr = SocketAddr::new(*ip, port.port);
                if let Some(other) = claimed.insert(addr, key) {
                    if other != key {
                        return Err(StoreError::Conflict(format!(
                            "{key} and {other} both claim the address {addr}"
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// What exists once `resources` are applied: the stored services and fault injections,
/// the applied ones, and the services applied endpoints create.
fn world_after(view: &View<'_, '_>, resources: &[Resource]) -> Result<World, StoreError> {
    let mut world = World::default();
    for r in view.list(Kind::Service, None)? {
        world.add_service(&r.key.namespace, &r.key.name, &r.doc);
    }
    for r in view.list(Kind::FaultInjection, None)? {
        world.faults.insert((r.key.namespace, r.key.name));
    }
    for r in resources {
        let key = (r.key.namespace.clone(), r.key.name.clone());
        match r.key.kind {
            Kind::Service => {
                world.add_service(&r.key.namespace, &r.key.name, &r.doc);
            }
            Kind::FaultInjection => {
                world.faults.insert(key);
            }
            Kind::Endpoint => {
                let e = domain::endpoint(&r.doc)?;
                world.services.insert((e.service.namespace, e.service.name));
            }
            _ => {}
        }
    }
    Ok(world)
}

/// A strict apply: every applied route's parents, backends, mirrors and fault filters
/// name something that exists afterwards; the first that does not is refused with its
/// path (`documents[i].spec.rules[0].backendRefs[1]`).
pub(super) fn route_references(
    view: &View<'_, '_>,
    resources: &[Resource],
) -> Result<(), StoreError> {
    let routes = || {
        resources
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.key.kind, Kind::HttpRoute | Kind::GrpcRoute))
    };
    if routes().next().is_none() {
        return Ok(());
    }
    let world = world_after(view, resources)?;
    for (i, r) in routes() {
        if let Some(u) = status::unresolved(&r.doc, &world).into_iter().next() {
            return Err(StoreError::Invalid(ResourceError::new(
                format!("documents[{i}].{}", u.path),
                format!(
                    "{} does not exist ({}=False, {}; refused by --strict)",
                    u.target, u.condition, u.reason
                ),
            )));
        }
    }
    Ok(())
}

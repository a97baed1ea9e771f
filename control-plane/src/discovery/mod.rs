//! Where endpoints come from, behind one trait: API registrations with TTL heartbeats
//! ([`registrations`]), a static file of `Endpoint` documents ([`static_file`]), and DNS
//! A/AAAA and SRV records ([`dns`]). Kubernetes EndpointSlices come later as another
//! [`Source`].
//!
//! Each source owns the endpoints it wrote (annotation `tandem.dev/source`) and changes
//! only those, one revision per change, with its own `who`.

pub mod dns;
pub mod registrations;
pub mod static_file;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::store::Store;

/// A discovery source: a long-running task that keeps its endpoints in the store current.
pub trait Source: Send + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Runs until the process exits.
    fn run(self: Box<Self>, store: Arc<Store>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Spawns every source on the current runtime.
pub fn spawn_all(sources: Vec<Box<dyn Source>>, store: &Arc<Store>) {
    for source in sources {
        tracing::info!(source = source.name(), "discovery source started");
        tokio::spawn(source.run(store.clone()));
    }
}

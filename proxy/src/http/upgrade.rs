//! `Upgrade` (WebSocket and friends): once the upstream answers `101`, both sides become
//! one byte tunnel.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::drain::Watch;
use crate::io::splice::splice;
use crate::metrics::{Direction, Metrics};

/// Joins the client's and the upstream's upgraded connections and copies bytes both ways
/// until either side closes. Runs detached from the request; `watch` keeps shutdown
/// waiting for it.
pub fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    dir: Direction,
    metrics: Metrics,
    watch: Watch,
) {
    tokio::spawn(async move {
        let _watch = watch;
        let (client, upstream) = tokio::join!(client, upstream);
        let (client, upstream) = match (client, upstream) {
            (Ok(c), Ok(u)) => (c, u),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = splice(&mut client, &mut upstream, dir, &metrics).await {
            tracing::debug!(error = %e, "upgraded tunnel ended with an error");
        }
    });
}

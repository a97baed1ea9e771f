//! Request mirroring (Gateway API `RequestMirror`): shadow copies sent fire and forget to
//! other backends; their responses are read and dropped, and nothing about them reaches
//! the client.

use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::Request;
use http_body_util::BodyExt;
use tandem_xds::domain::Fraction;

use super::replay::Replay;
use crate::client::response::ProxyBody;
use crate::client::{Client, ConnectSettings, Transport, WireProtocol};
use crate::http::headers::retarget;
use crate::metrics::TrafficMetrics;
use crate::outbound::cluster::Cluster;
use crate::random::sample;
use crate::tls::TlsState;

/// Shadow copies are on their own: short connect, and given up after this long.
const MIRROR_DEADLINE: Duration = Duration::from_secs(30);

/// Where mirrors are sent from: the worker's pools and TLS, and the client's protocol.
#[derive(Debug, Clone, Copy)]
pub struct Mirrors<'a> {
    /// Upstream pools.
    pub client: &'a Client,
    /// Mutual TLS, with an identity.
    pub tls: Option<&'a Arc<TlsState>>,
    /// Counts sent and skipped mirrors.
    pub traffic: &'a TrafficMetrics,
    /// The protocol the client speaks.
    pub client_protocol: WireProtocol,
}

impl Mirrors<'_> {
    /// Sends one copy to each mirror whose fraction the request falls in.
    pub fn send(
        &self,
        mirrors: &[(Arc<Cluster>, Fraction)],
        replay: &Replay,
        authority: Option<&Authority>,
    ) {
        for (cluster, fraction) in mirrors {
            if !sample(*fraction) {
                continue;
            }
            let Some(body) = replay.body_copy() else {
                self.traffic.mirror(&cluster.label, "skipped");
                continue;
            };
            let Some(ep) = cluster.pick(None) else {
                self.traffic.mirror(&cluster.label, "skipped");
                continue;
            };
            self.traffic.mirror(&cluster.label, "sent");
            let wire = WireProtocol::upstream(cluster.protocol, self.client_protocol, false);
            let (mut parts, body) = replay.build(body).into_parts();
            retarget(&mut parts, authority, wire == WireProtocol::Http2);
            spawn(
                self.client.clone(),
                ep.addr,
                cluster.tls.clone(),
                self.tls.cloned(),
                wire,
                Request::from_parts(parts, body),
            );
        }
    }
}

/// Sends one shadow request in its own task and reads its response to the end.
fn spawn(
    client: Client,
    addr: std::net::SocketAddr,
    identity: Option<Arc<str>>,
    tls: Option<Arc<TlsState>>,
    wire: WireProtocol,
    req: Request<crate::http::request_body::RequestBody>,
) {
    let settings = ConnectSettings {
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(20),
    };
    tokio::spawn(async move {
        let sent = tokio::time::timeout(MIRROR_DEADLINE, async {
            let transport = Transport {
                identity: identity.as_ref(),
                tls: tls.as_ref(),
                source: None,
            };
            let (resp, reuse) = client
                .send(addr, transport, wire, req, settings, None)
                .await
                .ok()?;
            // Read to the end so the pooled connection can be reused.
            let _ = ProxyBody::upstream(resp.into_body(), reuse, None)
                .collect()
                .await;
            Some(())
        })
        .await;
        if !matches!(sent, Ok(Some(()))) {
            tracing::debug!(%addr, "mirror request failed");
        }
    });
}

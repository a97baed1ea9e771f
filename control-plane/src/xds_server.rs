//! The xDS (ADS, state of the world) server: a thin tonic shell around the sans-io
//! [`AdsStream`] of `tandem-xds`.
//!
//! One task turns every committed store revision, and every change of the mesh's security
//! settings (a root rotation), into an [`XdsSnapshot`] (consistent across types) and
//! publishes it on a watch channel; each ADS stream answers its client's
//! requests from the latest snapshot and pushes when a new one changes what it subscribed.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tandem_xds::ads::{AdsStream, ADMIN_ADDR_METADATA};
use tandem_xds::convert::{to_snapshot, XdsSnapshot};
use tandem_xds::domain::MeshSecurity;
use tandem_xds::envoy::core::Node;
use tandem_xds::envoy::discovery::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use tandem_xds::envoy::discovery::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tandem_xds::envoy_types::pb::google::protobuf::value;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::proxies::ProxyStatus;
use crate::store::Store;

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Serves ADS on `listener` until the process exits. Every snapshot carries the latest
/// value of `security` (trust domain, trust bundle, default authorization action).
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<Store>,
    mut security: watch::Receiver<MeshSecurity>,
) {
    let first = security.borrow_and_update().clone();
    let snapshots = match build_snapshot(&store, &first, 0) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the first xDS snapshot; xDS is not served");
            return;
        }
    };
    let (tx, rx) = watch::channel(Arc::new(snapshots));
    tokio::spawn(follow_store(store.clone(), security, tx));
    let ads = Ads {
        store,
        snapshots: rx,
    };
    let result = tonic::transport::Server::builder()
        .add_service(AggregatedDiscoveryServiceServer::new(ads))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "xDS server stopped");
    }
}

/// The snapshot of the store's head with `security`. The version is the head revision,
/// followed by `.<n>` once the security settings changed `n` times since the start
/// (versions are compared for equality only: a new bundle must look new to every stream).
fn build_snapshot(
    store: &Store,
    security: &MeshSecurity,
    security_changes: u64,
) -> Result<XdsSnapshot, String> {
    let (head, mut mesh) = store.snapshot().map_err(|e| e.to_string())?;
    mesh.security = security.clone();
    let version = match security_changes {
        0 => head.to_string(),
        n => format!("{head}.{n}"),
    };
    to_snapshot(&mesh, &version).map_err(|e| e.to_string())
}

/// Rebuilds the snapshot after every committed revision and every change of the security
/// settings. A revision the converter rejects (validation at apply time should make that
/// impossible) leaves the previous snapshot serving, so proxies never see a half-built mesh.
async fn follow_store(
    store: Arc<Store>,
    mut security: watch::Receiver<MeshSecurity>,
    tx: watch::Sender<Arc<XdsSnapshot>>,
) {
    let mut head = store.subscribe();
    let mut security_changes = 0u64;
    // Once the security source is gone (it never is while the process runs), only
    // revisions trigger rebuilds.
    let mut security_open = true;
    loop {
        tokio::select! {
            changed = head.changed() => if changed.is_err() { break },
            changed = security.changed(), if security_open => match changed {
                Ok(()) => security_changes += 1,
                Err(_) => { security_open = false; continue }
            },
        }
        let current = security.borrow_and_update().clone();
        // The store reads from disk: keep that off the async workers.
        let reader = store.clone();
        let built = tokio::task::spawn_blocking(move || {
            build_snapshot(&reader, &current, security_changes)
        })
        .await
        .unwrap_or_else(|e| Err(format!("snapshot task failed: {e}")));
        match built {
            Ok(snapshot) => {
                tracing::debug!(version = snapshot.version(), "xDS snapshot rebuilt");
                tx.send_replace(Arc::new(snapshot));
            }
            Err(e) => {
                tracing::error!(error = %e, "revision not convertible to xDS; keeping the previous snapshot")
            }
        }
    }
}

struct Ads {
    store: Arc<Store>,
    snapshots: watch::Receiver<Arc<XdsSnapshot>>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let peer = request.remote_addr();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(run_stream(
            inbound,
            tx,
            self.snapshots.clone(),
            self.store.clone(),
            peer,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "delta xDS is not supported yet; use state-of-the-world ADS",
        ))
    }
}

/// One client's stream: requests in, responses out, pushes on new snapshots.
async fn run_stream(
    mut inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    mut snapshots: watch::Receiver<Arc<XdsSnapshot>>,
    store: Arc<Store>,
    peer: Option<SocketAddr>,
) {
    let mut ads = AdsStream::new();
    let mut node: Option<String> = None;
    let mut admin_addr: Option<SocketAddr> = None;
    loop {
        let responses = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    if let Some(n) = &req.node {
                        admin_addr = announced_admin_addr(n, peer);
                    }
                    let snapshot = snapshots.borrow_and_update().clone();
                    ads.on_request(req, &snapshot)
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "xDS stream ended with an error");
                    break;
                }
            },
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break;
                }
                let snapshot = snapshots.borrow_and_update().clone();
                ads.on_snapshot(&snapshot)
            }
        };
        if node.is_none() {
            node = ads.node_id().map(str::to_string);
        }
        if let Some(id) = &node {
            report(&store, id, &ads, admin_addr);
        }
        for r in responses {
            if tx.send(Ok(r)).await.is_err() {
                break;
            }
        }
    }
    if let Some(id) = node {
        store.proxies().remove(&id);
    }
}

/// The admin address a Tandem proxy announces in its node metadata
/// ([`ADMIN_ADDR_METADATA`]). A proxy whose admin port listens on every interface
/// announces `0.0.0.0:P`: the address its xDS stream came from is where to reach it.
fn announced_admin_addr(node: &Node, peer: Option<SocketAddr>) -> Option<SocketAddr> {
    let field = node.metadata.as_ref()?.fields.get(ADMIN_ADDR_METADATA)?;
    let Some(value::Kind::StringValue(text)) = &field.kind else {
        return None;
    };
    let mut addr: SocketAddr = text.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(peer?.ip());
    }
    Some(addr)
}

fn report(store: &Store, node: &str, ads: &AdsStream, admin_addr: Option<SocketAddr>) {
    let status = ads.status();
    store.proxies().upsert(ProxyStatus {
        node: node.to_string(),
        service: status.service.clone(),
        acked: status.acked.clone(),
        nacked: status
            .nacked
            .iter()
            .map(|(t, n)| (t.clone(), n.message.clone()))
            .collect(),
        admin_addr,
    });
}

#[cfg(test)]
mod tests {
    use tandem_xds::envoy_types::pb::google::protobuf::{Struct, Value};

    use super::*;

    fn node(admin: Option<&str>) -> Node {
        Node {
            id: "n".into(),
            metadata: admin.map(|a| Struct {
                fields: [(
                    ADMIN_ADDR_METADATA.to_string(),
                    Value {
                        kind: Some(value::Kind::StringValue(a.into())),
                    },
                )]
                .into_iter()
                .collect(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_admin_address_comes_from_the_node_metadata() {
        let peer: SocketAddr = "10.0.0.7:40000".parse().unwrap();
        let got = |admin| announced_admin_addr(&node(admin), Some(peer));
        assert_eq!(got(Some("127.0.0.1:15000")), "127.0.0.1:15000".parse().ok());
        // Listening on every interface: reach it where its xDS stream came from.
        assert_eq!(got(Some("0.0.0.0:15000")), "10.0.0.7:15000".parse().ok());
        assert_eq!(got(Some("[::]:15000")), "10.0.0.7:15000".parse().ok());
        assert_eq!(got(Some("not an address")), None);
        assert_eq!(got(None), None);
        assert_eq!(announced_admin_addr(&node(Some("0.0.0.0:1")), None), None);
    }
}

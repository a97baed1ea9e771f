//! A fake control plane: an ADS server that serves whatever [`XdsSnapshot`] the test
//! publishes, valid or not, and records every `DiscoveryRequest` it receives.
//!
//! The per-stream protocol (subscriptions, nonces, ACK/NACK bookkeeping) is the sans-io
//! [`AdsStream`] of `tandem-xds`; what is fake is the content: a test can put a resource on
//! the wire that the real control plane would have refused at apply time, and watch the
//! proxy NACK it. Snapshots are built with [`tandem_xds::convert::to_snapshot`] and edited
//! with [`edit_route_config`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tandem_xds::ads::AdsStream;
use tandem_xds::convert::{XdsSnapshot, ROUTE_TYPE};
use tandem_xds::envoy::discovery::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use tandem_xds::envoy::discovery::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tandem_xds::envoy::Any;
use tandem_xds::envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::grpc::serve_h2c;
use crate::AbortOnDrop;

/// A running fake ADS server on `127.0.0.1:0`; stops when dropped.
#[derive(Debug)]
pub struct FakeAds {
    addr: SocketAddr,
    snapshot: Arc<watch::Sender<Arc<XdsSnapshot>>>,
    requests: Arc<Mutex<Vec<DiscoveryRequest>>>,
    _task: AbortOnDrop,
}

#[derive(Clone)]
struct Service {
    snapshot: Arc<watch::Sender<Arc<XdsSnapshot>>>,
    requests: Arc<Mutex<Vec<DiscoveryRequest>>>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let mut inbound = request.into_inner();
        let mut snaps = self.snapshot.subscribe();
        let requests = self.requests.clone();
        let (tx, rx) = mpsc::channel::<Result<DiscoveryResponse, Status>>(16);
        tokio::spawn(async move {
            let mut ads = AdsStream::new();
            loop {
                let responses = tokio::select! {
                    msg = inbound.message() => {
                        let Ok(Some(req)) = msg else { break };
                        requests.lock().expect("requests lock").push(req.clone());
                        let snap = snaps.borrow_and_update().clone();
                        ads.on_request(req, &snap)
                    }
                    changed = snaps.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let snap = snaps.borrow_and_update().clone();
                        ads.on_snapshot(&snap)
                    }
                };
                for resp in responses {
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "the fake ADS server speaks state of the world only",
        ))
    }
}

impl FakeAds {
    /// Binds `127.0.0.1:0` and serves `initial` to every stream.
    pub async fn start(initial: XdsSnapshot) -> FakeAds {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake ADS");
        let addr = listener.local_addr().expect("local addr");
        let (snapshot, _) = watch::channel(Arc::new(initial));
        let snapshot = Arc::new(snapshot);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let service = AggregatedDiscoveryServiceServer::new(Service {
            snapshot: snapshot.clone(),
            requests: requests.clone(),
        });
        let task = tokio::spawn(serve_h2c(listener, service));
        FakeAds {
            addr,
            snapshot,
            requests,
            _task: AbortOnDrop(task),
        }
    }

    /// The ADS address (what `--control-plane` names).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `snap` from now on: every open stream gets the types whose content changed.
    pub fn publish(&self, snap: XdsSnapshot) {
        self.snapshot.send_replace(Arc::new(snap));
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<DiscoveryRequest> {
        self.requests.lock().expect("requests lock").clone()
    }

    /// Waits (bounded) for a request satisfying `pred`; returns the first such one.
    pub async fn wait_request(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&DiscoveryRequest) -> bool,
    ) -> DiscoveryRequest {
        crate::eventually(limit, what, || async {
            let all = self.requests();
            match all.iter().find(|r| pred(r)) {
                Some(r) => Ok(r.clone()),
                None => Err(format!(
                    "{} requests: {:?}",
                    all.len(),
                    all.iter().map(describe).collect::<Vec<_>>()
                )),
            }
        })
        .await
    }
}

/// One line about a request: type, version, nonce, names, error.
pub fn describe(r: &DiscoveryRequest) -> String {
    format!(
        "{} version={:?} nonce={:?} names={:?} error={:?}",
        tandem_xds::convert::short_type_name(&r.type_url),
        r.version_info,
        r.response_nonce,
        r.resource_names,
        r.error_detail.as_ref().map(|e| &e.message)
    )
}

/// A copy of `snap` at `version` whose RouteConfiguration `name` was changed by `edit`
/// (decoded, edited, re-encoded: the edit may make it invalid on purpose).
pub fn edit_route_config(
    snap: &XdsSnapshot,
    version: &str,
    name: &str,
    edit: impl FnOnce(&mut RouteConfiguration),
) -> XdsSnapshot {
    let any = snap
        .get(ROUTE_TYPE, name)
        .unwrap_or_else(|| panic!("snapshot has no RouteConfiguration {name}"));
    let mut rc = RouteConfiguration::decode(any.value.as_slice()).expect("decode route config");
    edit(&mut rc);
    let mut out = with_version(snap, version);
    out.insert(
        name,
        Any {
            type_url: ROUTE_TYPE.to_owned(),
            value: rc.encode_to_vec(),
        },
    );
    out
}

/// A copy of `snap` with another version string.
pub fn with_version(snap: &XdsSnapshot, version: &str) -> XdsSnapshot {
    let mut out = XdsSnapshot::new(version);
    for by_name in snap.resources().values() {
        for (name, any) in by_name {
            out.insert(name.clone(), any.clone());
        }
    }
    out
}

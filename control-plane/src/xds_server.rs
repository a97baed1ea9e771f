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
use tandem_xds::domain::{MeshSecurity, ServiceRef};
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

/// The snapshots every ADS stream answers from, kept current by a background task; one
/// source serves both the plaintext xDS port and the secure one.
#[derive(Clone)]
pub struct XdsSource {
    store: Arc<Store>,
    snapshots: watch::Receiver<Snapshots>,
}

/// The two views of one revision: for authenticated workloads, and for plaintext clients.
///
/// A plaintext client has no certificate, so it cannot speak mutual TLS: its clusters
/// carry no TLS transport socket (a Tandem proxy without identity would talk plaintext
/// anyway, and proxyless gRPC rejects SDS-based TLS contexts), and it gets no trust
/// bundle and no inbound listener.
#[derive(Clone)]
struct Snapshots {
    workload: Arc<XdsSnapshot>,
    plaintext: Option<Arc<XdsSnapshot>>,
}

impl Snapshots {
    fn for_stream(&self, authenticated: bool) -> Arc<XdsSnapshot> {
        match (&self.plaintext, authenticated) {
            (Some(p), false) => p.clone(),
            _ => self.workload.clone(),
        }
    }
}

/// The workload a request's client certificate names (its namespace and service
/// account), put into the request's extensions by the secure (identity) port before it
/// reaches ADS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The certificate's namespace.
    pub namespace: String,
    /// The certificate's service account.
    pub service_account: String,
}

/// Who may open a stream on one ADS port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// The plaintext port, when `--plaintext-xds` allows it: outbound config only.
    Plaintext,
    /// The plaintext port when it is off: every stream refused.
    PlaintextOff,
    /// The secure port: only clients with a workload certificate.
    Authenticated,
}

/// Builds the first snapshot and starts following the store and `security` (trust
/// domain, trust bundle, default authorization action), which every snapshot carries.
///
/// With `plaintext` (plaintext xDS served), every revision is also built without the
/// mesh's TLS settings for unauthenticated streams (see [`Snapshots`]).
pub fn start(
    store: Arc<Store>,
    mut security: watch::Receiver<MeshSecurity>,
    plaintext: bool,
) -> Result<XdsSource, String> {
    let first = security.borrow_and_update().clone();
    let snapshot = build_snapshots(&store, &first, 0, plaintext)
        .map_err(|e| format!("cannot build the first xDS snapshot: {e}"))?;
    let (tx, rx) = watch::channel(snapshot);
    tokio::spawn(follow_store(store.clone(), security, tx, plaintext));
    Ok(XdsSource {
        store,
        snapshots: rx,
    })
}

/// Serves plaintext ADS on `listener` until the process exits. With `allow` false every
/// stream is refused with `UNAUTHENTICATED` (workloads use the secure port).
pub async fn serve(listener: tokio::net::TcpListener, source: XdsSource, allow: bool) {
    let access = if allow {
        Access::Plaintext
    } else {
        Access::PlaintextOff
    };
    let ads = Ads { source, access };
    let result = tonic::transport::Server::builder()
        .add_service(AggregatedDiscoveryServiceServer::new(ads))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "xDS server stopped");
    }
}

/// The ADS service of the secure port: streams need a [`Workload`] extension (a client
/// certificate), and each gets that workload's inbound policy and no other.
pub fn secure_service(source: XdsSource) -> AggregatedDiscoveryServiceServer<Ads> {
    AggregatedDiscoveryServiceServer::new(Ads {
        source,
        access: Access::Authenticated,
    })
}

/// The snapshot of the store's head with `security`. The version is the head revision,
/// followed by `.<n>` once the security settings changed `n` times since the start
/// (versions are compared for equality only: a new bundle must look new to every stream).
fn build_snapshots(
    store: &Store,
    security: &MeshSecurity,
    security_changes: u64,
    plaintext: bool,
) -> Result<Snapshots, String> {
    let (head, mut mesh) = store.snapshot().map_err(|e| e.to_string())?;
    mesh.security = security.clone();
    let version = match security_changes {
        0 => head.to_string(),
        n => format!("{head}.{n}"),
    };
    let workload = to_snapshot(&mesh, &version).map_err(|e| e.to_string())?;
    let plaintext = if plaintext {
        // Without a trust bundle the conversion emits no TLS at all.
        mesh.security.trust_bundle_pem.clear();
        Some(Arc::new(
            to_snapshot(&mesh, &version).map_err(|e| e.to_string())?,
        ))
    } else {
        None
    };
    Ok(Snapshots {
        workload: Arc::new(workload),
        plaintext,
    })
}

/// Rebuilds the snapshot after every committed revision and every change of the security
/// settings. A revision the converter rejects (validation at apply time should make that
/// impossible) leaves the previous snapshot serving, so proxies never see a half-built mesh.
async fn follow_store(
    store: Arc<Store>,
    mut security: watch::Receiver<MeshSecurity>,
    tx: watch::Sender<Snapshots>,
    plaintext: bool,
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
            build_snapshots(&reader, &current, security_changes, plaintext)
        })
        .await
        .unwrap_or_else(|e| Err(format!("snapshot task failed: {e}")));
        match built {
            Ok(snapshots) => {
                tracing::debug!(
                    version = snapshots.workload.version(),
                    "xDS snapshot rebuilt"
                );
                tx.send_replace(snapshots);
            }
            Err(e) => {
                tracing::error!(error = %e, "revision not convertible to xDS; keeping the previous snapshot")
            }
        }
    }
}

/// One ADS port's service.
pub struct Ads {
    source: XdsSource,
    access: Access,
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
        let workload = request.extensions().get::<Workload>().cloned();
        match (self.access, &workload) {
            (Access::PlaintextOff, _) => {
                return Err(Status::unauthenticated(
                    "plaintext xDS is off (--plaintext-xds): connect to the identity port with a workload certificate",
                ))
            }
            (Access::Authenticated, None) => {
                return Err(Status::unauthenticated(
                    "xDS on this port needs a workload certificate (mutual TLS)",
                ))
            }
            _ => {}
        }
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(run_stream(
            inbound,
            tx,
            self.source.snapshots.clone(),
            self.source.store.clone(),
            peer,
            workload,
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
    mut snapshots: watch::Receiver<Snapshots>,
    store: Arc<Store>,
    peer: Option<SocketAddr>,
    workload: Option<Workload>,
) {
    let authenticated = workload.is_some();
    // An authenticated stream gets its inbound listener once its node has said which
    // service it serves and that claim has been checked against the certificate.
    let mut ads = AdsStream::with_identity(None);
    let mut node: Option<String> = None;
    let mut admin_addr: Option<SocketAddr> = None;
    loop {
        let responses = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    if let (Some(w), None) = (&workload, ads.identity()) {
                        match check_claim(&store, w, req.node.as_ref()) {
                            Ok(service) => ads = AdsStream::with_identity(Some(service)),
                            Err(status) => {
                                let claims = req.node.as_ref().map(|n| n.cluster.as_str());
                                tracing::warn!(?claims, ?workload, reason = %status.message(), "xDS stream refused");
                                let _ = tx.send(Err(status)).await;
                                break;
                            }
                        }
                    }
                    if let Some(n) = &req.node {
                        admin_addr = announced_admin_addr(n, peer);
                    }
                    let snapshot = snapshots.borrow_and_update().for_stream(authenticated);
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
                let snapshot = snapshots.borrow_and_update().for_stream(authenticated);
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

/// On an authenticated stream the node says which service it serves (`cluster`, in the
/// certificate's namespace); the certificate's service account must be one that service
/// runs as ([`tandem_xds::domain::Service::accounts`]: its own name unless it lists
/// others, as Kubernetes discovery does from the pods). So a proxy cannot subscribe as a
/// workload it is not by claiming its name. The first request must carry the node.
fn check_claim(store: &Store, w: &Workload, node: Option<&Node>) -> Result<ServiceRef, Status> {
    let node = node.ok_or_else(|| {
        Status::invalid_argument("the first request of a stream must carry the node")
    })?;
    let service = ServiceRef::new(&w.namespace, &node.cluster);
    if node.cluster == w.service_account {
        return Ok(service);
    }
    let key = crate::resources::ResourceKey::new(
        crate::resources::Kind::Service,
        &w.namespace,
        &node.cluster,
    );
    let accounts = match store.get(&key) {
        Ok(Some(stored)) => crate::resources::domain::service(&stored.doc)
            .map(|s| s.service_accounts)
            .unwrap_or_default(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(Status::unavailable(format!("the store: {e}"))),
    };
    if accounts.contains(&w.service_account) {
        Ok(service)
    } else {
        Err(Status::permission_denied(format!(
            "this stream is authenticated as {}/sa/{}, and service {}/{} does not run as that service account (it runs as {:?})",
            w.namespace, w.service_account, w.namespace, node.cluster, accounts
        )))
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
    fn an_authenticated_stream_serves_only_a_service_running_as_its_account() {
        let dir = std::env::temp_dir().join(format!("tandem-xds-claim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir).unwrap();
        let doc = serde_json::json!({
            "apiVersion": "tandem.dev/v1alpha1", "kind": "Service",
            "metadata": {"name": "shop", "namespace": "default"},
            "spec": {"serviceAccounts": ["default", "shop-sa"]},
        });
        let r = crate::resources::validate::validate_document("", doc).unwrap();
        store.apply(vec![r], "test").unwrap();
        let as_sa = |sa: &str| Workload {
            namespace: "default".into(),
            service_account: sa.into(),
        };
        let mut n = node(None);
        // Standalone convention: the account named after the service.
        n.cluster = "web".into();
        assert_eq!(
            check_claim(&store, &as_sa("web"), Some(&n)).unwrap(),
            ServiceRef::new("default", "web")
        );
        n.cluster = "api".into();
        let refused = check_claim(&store, &as_sa("web"), Some(&n)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        // A service listing its accounts (Kubernetes: its pods' ServiceAccounts).
        n.cluster = "shop".into();
        assert!(check_claim(&store, &as_sa("default"), Some(&n)).is_ok());
        assert!(check_claim(&store, &as_sa("shop-sa"), Some(&n)).is_ok());
        assert!(check_claim(&store, &as_sa("web"), Some(&n)).is_err());
        // Another namespace's service of that name is not this one.
        let other = Workload {
            namespace: "prod".into(),
            service_account: "default".into(),
        };
        assert!(check_claim(&store, &other, Some(&n)).is_err());
        // Claiming nothing, or sending no node, is not a way around the check.
        n.cluster = String::new();
        assert!(check_claim(&store, &as_sa("web"), Some(&n)).is_err());
        let no_node = check_claim(&store, &as_sa("web"), None).unwrap_err();
        assert_eq!(no_node.code(), tonic::Code::InvalidArgument);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A change of the security settings republishes the snapshot under a new version,
    /// with no store revision, exactly as a revision would.
    #[tokio::test]
    async fn a_trust_bundle_change_rebuilds_and_republishes_the_snapshot() {
        let dir = std::env::temp_dir().join(format!("tandem-xds-sec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(Store::open(&dir).unwrap());
        let security = MeshSecurity {
            trust_domain: "cluster.local".into(),
            ..MeshSecurity::default()
        };
        let first = build_snapshots(&store, &security, 0, true).unwrap();
        assert_eq!(first.workload.version(), "0");
        let (sec_tx, sec_rx) = watch::channel(security.clone());
        let (tx, mut rx) = watch::channel(first);
        let follower = tokio::spawn(follow_store(store.clone(), sec_rx, tx, true));
        // A real root, in case the conversion reads the bundle.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let root = params.self_signed(&key).unwrap();
        sec_tx.send_replace(MeshSecurity {
            trust_bundle_pem: root.pem(),
            ..security
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), rx.changed())
            .await
            .expect("republished")
            .unwrap();
        let now = rx.borrow_and_update().clone();
        assert_eq!(now.workload.version(), "0.1");
        // Authenticated streams get the bundle; plaintext ones never do.
        let secret = tandem_xds::convert::SECRET_TYPE;
        assert_eq!(now.for_stream(true).of_type(secret).count(), 1);
        assert_eq!(now.for_stream(false).of_type(secret).count(), 0);
        follower.abort();
        let _ = std::fs::remove_dir_all(&dir);
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

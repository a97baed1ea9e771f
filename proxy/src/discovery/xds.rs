//! A control plane as the source of snapshots: the proxy as an xDS client, one ADS stream
//! to the control plane, reconnected with jittered backoff, each complete and valid update
//! published as one snapshot.
//!
//! The protocol logic (ACK/NACK, subscriptions, completeness) lives in the sans-io
//! `tandem_xds::ads::client`; this module only moves its messages over gRPC and applies
//! what it accepts. When the control plane is gone the last good snapshot keeps serving,
//! indefinitely.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_xds::ads::AdsClient;
use tandem_xds::envoy::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use tandem_xds::envoy::discovery::DiscoveryRequest;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::snapshot::Store;
use crate::tls::control_plane::SecureConnector;
use crate::tls::TlsState;

/// What the admin port reports about the xDS connection.
#[derive(Debug, Default)]
pub struct XdsStatus {
    /// Whether the stream is up.
    pub connected: AtomicBool,
    /// Control plane address.
    pub control_plane: String,
    /// The admin listener's bound address, announced in the node metadata so the control
    /// plane can scrape `/metrics` (canary status).
    pub admin_addr: Option<std::net::SocketAddr>,
    /// Accepted version per type URL and the last NACK.
    pub detail: Mutex<XdsDetail>,
}

/// The mutable part of [`XdsStatus`].
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct XdsDetail {
    /// Accepted version per resource type.
    pub versions: BTreeMap<String, String>,
    /// The error detail of the last NACK sent, if any.
    pub last_nack: Option<String>,
}

/// Backoff between reconnects: doubles from 100 ms to 5 s, jittered.
fn backoff(attempt: u32) -> Duration {
    crate::backoff::jittered(Duration::from_millis(100), attempt, Duration::from_secs(5))
}

/// Where and as whom the proxy subscribes.
#[derive(Debug, Clone)]
pub struct XdsTarget {
    /// Control plane URL, e.g. `http://127.0.0.1:15010`.
    pub endpoint: String,
    /// xDS node id (unique per proxy).
    pub node_id: String,
    /// The workload's service name.
    pub service: String,
    /// With an identity: the control plane's secure xDS address (`host:port`, the identity
    /// port), reached over mutual TLS instead of `endpoint`.
    pub secure: Option<String>,
}

/// Runs the xDS client forever. `first` is signalled once the first complete config is live.
pub async fn run(
    target: XdsTarget,
    settings: Config,
    store: Arc<Store>,
    metrics: Metrics,
    status: Arc<XdsStatus>,
    tls: Option<Arc<TlsState>>,
    first: watch::Sender<bool>,
) {
    let XdsTarget {
        endpoint,
        node_id,
        service,
        secure,
    } = target;
    let secure = match (secure, &tls) {
        (Some(addr), Some(tls)) => Some(SecureConnector::new(addr, tls.clone())),
        _ => None,
    };
    let endpoint = match &secure {
        Some(c) => c.describe(),
        None => endpoint,
    };
    let mut client = AdsClient::new(&node_id, &service);
    if let Some(admin) = status.admin_addr {
        client = client.with_node_metadata(tandem_xds::ads::ADMIN_ADDR_METADATA, admin.to_string());
    }
    if let (Some(_), Some(tls)) = (&secure, &tls) {
        // The secure port authenticates by the workload certificate: none, no stream.
        tls.ready().await;
    }
    let mut attempt = 0u32;
    loop {
        let apply = Apply {
            settings: &settings,
            store: &store,
            metrics: &metrics,
            status: &status,
            tls: tls.as_deref(),
            first: &first,
        };
        match stream_once(&endpoint, secure.as_ref(), &mut client, &apply).await {
            Ok(()) => {
                tracing::warn!(control_plane = %endpoint, "xDS stream closed by the control plane")
            }
            Err(e) => tracing::warn!(control_plane = %endpoint, error = %e, "xDS stream failed"),
        }
        // A stream that was up resets the backoff: the next failure is a new outage.
        if status.connected.swap(false, Ordering::AcqRel) {
            attempt = 0;
        }
        metrics.set_xds_connected(false);
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// Where an accepted config goes.
struct Apply<'a> {
    settings: &'a Config,
    store: &'a Store,
    metrics: &'a Metrics,
    status: &'a XdsStatus,
    tls: Option<&'a TlsState>,
    first: &'a watch::Sender<bool>,
}

async fn stream_once(
    endpoint: &str,
    secure: Option<&SecureConnector>,
    client: &mut AdsClient,
    apply: &Apply<'_>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Apply {
        settings,
        store,
        metrics,
        status,
        tls,
        first,
    } = *apply;
    let mut grpc = match secure {
        Some(connector) => {
            let channel = tonic::transport::Endpoint::from_shared(connector.uri())?
                .connect_with_connector(connector.clone())
                .await?;
            AggregatedDiscoveryServiceClient::new(channel)
        }
        None => AggregatedDiscoveryServiceClient::connect(endpoint.to_string()).await?,
    };
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    for req in client.connect_requests() {
        tx.send(req).await?;
    }
    let mut responses = grpc
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    status.connected.store(true, Ordering::Release);
    metrics.set_xds_connected(true);
    tracing::info!(control_plane = %endpoint, "xDS stream open");
    while let Some(resp) = responses.message().await? {
        let step = client.on_response(resp);
        if let Some(view) = step.view {
            let bundle = view.trust_bundle.as_ref().map(|b| b.roots_pem.clone());
            match store.build(settings.clone(), view) {
                Ok(snapshot) => {
                    // Trust the roots the control plane announces (rotation adds and
                    // removes them) before any request uses this config.
                    if let Some(tls) = tls {
                        tls.set_xds_bundle(bundle.as_deref());
                    }
                    let version = store.publish(snapshot);
                    metrics.set_config_version(version);
                    first.send_replace(true);
                    tracing::info!(version, "xDS config applied");
                }
                Err(e) => {
                    // The state machine validated the resources; a failure here is a gap
                    // between its checks and the route compiler's. Keep serving the old one.
                    metrics.xds_rejected();
                    tracing::error!(error = %e, "xDS config accepted by the protocol but not compilable; keeping the previous config");
                }
            }
        }
        if step.nacked {
            metrics.xds_rejected();
        }
        if let Ok(mut d) = status.detail.lock() {
            d.versions = client.accepted_versions();
            d.last_nack = client.last_nack().map(str::to_string);
        }
        for req in step.requests {
            tx.send(req).await?;
        }
    }
    Ok(())
}

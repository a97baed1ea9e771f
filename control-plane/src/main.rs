//! `tandem-control-plane`: the mesh's source of truth, xDS server and REST API.
//!
//! Startup is [`run`], a list of named steps: open the store and the admin token, bind the
//! API and xDS listeners, load the CA and join tokens, bind the identity endpoint with its
//! certificate, start discovery and telemetry, serve the API, xDS and the identity
//! endpoint (and, with `--injector-addr`, the sidecar injector's webhook), print the ready
//! line, and wait for a signal.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use clap::Parser;
use tandem_control_plane::api::{self, ApiState};
use tandem_control_plane::auth::AdminToken;
use tandem_control_plane::discovery::dns::Dns;
use tandem_control_plane::discovery::registrations::{Expiry, Registrations};
use tandem_control_plane::discovery::static_file::StaticFile;
use tandem_control_plane::discovery::{self, Source};
use tandem_control_plane::edits::Edits;
use tandem_control_plane::flags::Flags;
use tandem_control_plane::identity::ca::{Ca, CaSource};
use tandem_control_plane::identity::server::{self as identity_server, IdentityService};
use tandem_control_plane::identity::tokens::JoinTokens;
use tandem_control_plane::identity::Authenticator;
use tandem_control_plane::injector;
use tandem_control_plane::kubernetes;
use tandem_control_plane::kubernetes::writer::ClusterWriter;
use tandem_control_plane::resources::clock::unix_now;
use tandem_control_plane::security::{self, SecuritySettings};
use tandem_control_plane::store::Store;
use tandem_control_plane::telemetry::{self, Telemetry};
use tandem_control_plane::xds_server::{self, XdsSource};
use tandem_control_plane::{canary, chaos};
use tokio::net::TcpListener;

/// A bound listener and the address it got (port 0 becomes a real port).
struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
}

/// The CA and the join tokens that follow it.
struct Identity {
    ca: Arc<Ca>,
    tokens: Arc<JoinTokens>,
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&flags.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tandem-control-plane: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem-control-plane: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The control plane's life, one named step after another; each step is a function below,
/// in this order.
async fn run(flags: Flags) -> Result<(), String> {
    let store = open_store(&flags.data_dir)?;
    let token = AdminToken::load_or_create(&flags.data_dir).map_err(|e| e.to_string())?;
    let api = bind("api", flags.api_addr).await?;
    let xds = bind("xds", flags.xds_addr).await?;
    check_cert_ttl(flags.cert_ttl)?;
    let kube_client = match flags.kubernetes {
        true => Some(
            kubernetes::client(flags.kubeconfig.as_deref())
                .await
                .map_err(|e| e.to_string())?,
        ),
        false => None,
    };
    // In a cluster the CA is shared by every replica, through a Secret, unless supplied.
    let ca_from_secret = match (&kube_client, &flags.ca_cert) {
        (Some(client), None) => Some(
            kubernetes::ca_secret::ensure(
                client.clone(),
                &flags.kubernetes_namespace,
                &flags.data_dir,
                &flags.trust_domain,
            )
            .await
            .map_err(|e| e.to_string())?,
        ),
        _ => None,
    };
    let identity = load_identity(&flags, ca_from_secret.as_ref().map(|l| l.data_dir.clone()))?;
    let shared_ca = match (&kube_client, ca_from_secret) {
        (Some(client), Some(loaded)) => {
            let shared = Arc::new(kubernetes::ca_secret::SharedCa::new(
                client.clone(),
                &flags.kubernetes_namespace,
                identity.ca.clone(),
                &flags.data_dir,
                loaded,
                &flags.trust_domain,
            ));
            tokio::spawn(shared.clone().follow());
            Some(shared)
        }
        _ => None,
    };
    let identity_endpoint = bind("identity", flags.identity_addr).await?;
    let tls = identity_endpoint_tls(&identity.ca, identity_endpoint.addr, &flags.identity_sans)?;
    let injector = match flags.injector_addr {
        Some(addr) => Some(bind("injector", addr).await?),
        None => None,
    };
    let registrations = start_discovery(&flags, &store);
    // In a cluster, proxies also prove who they are with ServiceAccount tokens.
    let reviewer = kube_client.clone().map(|client| {
        Arc::new(kubernetes::token_review::ServiceAccountTokens::new(
            client,
            &flags.trust_domain,
            identity.tokens.clone(),
        ))
    });
    let edits = match &kube_client {
        Some(client) => Edits::Cluster(ClusterWriter::new(client.clone())),
        None => Edits::Store,
    };
    let mut leader = None;
    if let Some(client) = kube_client {
        let replica = flags.kubernetes_identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "tandem".into());
            format!("{host}-{}", std::process::id())
        });
        let lease = kubernetes::lease::LeaseConfig {
            namespace: flags.kubernetes_namespace.clone(),
            identity: replica,
            duration: flags.lease_duration,
        };
        let leader_work = kubernetes::LeaderWork {
            ca: identity.ca.clone(),
            webhook: Some(flags.injector_webhook.clone()).filter(|n| !n.is_empty()),
        };
        leader = Some(kubernetes::start(client, store.clone(), lease, leader_work));
    }
    let telemetry = start_telemetry(&store, flags.scrape_interval);
    let judgements = Arc::new(canary::controller::Judgements::default());
    tokio::spawn(canary::controller::run(canary::controller::Controller {
        store: store.clone(),
        telemetry: telemetry.clone(),
        judgements: judgements.clone(),
        edits: edits.clone(),
        leader: leader.clone(),
    }));
    let chaos = Arc::new(chaos::controller::Verdicts::default());
    tokio::spawn(chaos::controller::run(
        store.clone(),
        telemetry.clone(),
        chaos.clone(),
        edits.clone(),
        leader,
    ));
    serve_api(
        api.listener,
        ApiState {
            store: store.clone(),
            token,
            registrations,
            telemetry,
            tokens: identity.tokens.clone(),
            ca: identity.ca.clone(),
            shared_ca,
            judgements,
            chaos,
            kubernetes: flags.kubernetes,
            edits,
        },
    );
    let source = serve_xds(&flags, &store, &identity.ca, xds.listener)?;
    let endpoint = (identity_endpoint.listener, tls, source);
    match reviewer {
        Some(reviewer) => serve_identity(&flags, &identity, reviewer, endpoint),
        None => serve_identity(&flags, &identity, identity.tokens.clone(), endpoint),
    }
    let injector_addr = match injector {
        Some(bound) => Some(serve_injector(&flags, &identity.ca, bound)?),
        None => None,
    };
    announce_ready(
        &flags,
        Addrs {
            api: api.addr,
            xds: xds.addr,
            identity: identity_endpoint.addr,
            injector: injector_addr,
        },
        &identity.ca,
        &store,
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    Ok(())
}

/// The embedded store in the data dir (created on first start).
fn open_store(data_dir: &Path) -> Result<Arc<Store>, String> {
    let store = Store::open(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    Ok(Arc::new(store))
}

/// Binds the `what` listener (`api`, `xds`, `identity`); the error names it and `addr`.
async fn bind(what: &str, addr: SocketAddr) -> Result<Bound, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{what} listener {addr}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    Ok(Bound { listener, addr })
}

/// `--cert-ttl` of at least 10 s: far too short for production, but lets tests watch
/// several renewals (proxies renew at half life).
fn check_cert_ttl(cert_ttl: Duration) -> Result<(), String> {
    if cert_ttl < Duration::from_secs(10) {
        return Err(format!(
            "--cert-ttl {}s: at least 10s (proxies renew at half life)",
            cert_ttl.as_secs()
        ));
    }
    Ok(())
}

/// The CA, loaded (or generated) before any listener answers, so a bad
/// `--ca-cert`/`--ca-key` stops the start with the file's path; and the join tokens.
fn load_identity(
    flags: &Flags,
    ca_from_secret: Option<std::path::PathBuf>,
) -> Result<Identity, String> {
    let ca_source = match ca_from_secret {
        Some(data_dir) => CaSource::Generated { data_dir },
        None => CaSource::from_flags(
            &flags.data_dir,
            flags.ca_cert.as_ref(),
            flags.ca_key.as_ref(),
        )
        .map_err(|e| e.to_string())?,
    };
    let ca = Arc::new(Ca::load(&ca_source, &flags.trust_domain).map_err(|e| format!("CA: {e}"))?);
    let tokens = Arc::new(
        JoinTokens::load(&flags.data_dir, &flags.trust_domain, &ca.root_fingerprint())
            .map_err(|e| format!("join tokens: {e}"))?
            .follow_ca(ca.clone()),
    );
    Ok(Identity { ca, tokens })
}

/// The identity endpoint's TLS config: a server certificate from the CA for the names of
/// [`identity_names`]. Swapped after every root rotation step, so the endpoint's
/// certificate follows the signing root without a restart.
fn identity_endpoint_tls(
    ca: &Arc<Ca>,
    addr: SocketAddr,
    sans: &[String],
) -> Result<Arc<ArcSwap<rustls::ServerConfig>>, String> {
    let names = identity_names(addr, sans);
    let tls = identity_server::tls_config(ca, &names, unix_now())
        .map_err(|e| format!("identity endpoint certificate: {e}"))?;
    let tls = Arc::new(ArcSwap::new(tls));
    tokio::spawn(security::follow_ca_tls(ca.clone(), names, tls.clone()));
    Ok(tls)
}

/// A serving certificate's names (the identity endpoint's, the injector webhook's):
/// loopback, the bound address unless it is unspecified, and every extra name (`--identity-san`,
/// `--injector-san`), each once.
fn identity_names(addr: SocketAddr, sans: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !addr.ip().is_unspecified() {
        names.push(addr.ip().to_string());
    }
    for name in sans {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// The discovery sources, each on its own task: API registrations (expired after their
/// TTL), DNS names, and `--static-endpoints` when given. The registrations are returned
/// for the API, which adds to them.
fn start_discovery(flags: &Flags, store: &Arc<Store>) -> Arc<Registrations> {
    let registrations = Registrations::new();
    let mut sources: Vec<Box<dyn Source>> = vec![
        Box::new(Expiry(registrations.clone())),
        Box::new(Dns {
            max_refresh: Duration::from_secs(flags.dns_refresh),
        }),
    ];
    if let Some(path) = &flags.static_endpoints {
        sources.push(Box::new(StaticFile::new(path.clone())));
    }
    discovery::spawn_all(sources, store);
    registrations
}

/// The scraper of every connected proxy's metrics (canary status), every
/// `--scrape-interval` seconds.
fn start_telemetry(store: &Arc<Store>, interval_secs: u64) -> Arc<Telemetry> {
    let telemetry = Arc::new(Telemetry::default());
    tokio::spawn(telemetry::run_scraper(
        telemetry.clone(),
        store.clone(),
        Duration::from_secs(interval_secs),
    ));
    telemetry
}

/// The REST API on its listener.
fn serve_api(listener: TcpListener, state: ApiState) {
    tokio::spawn(api::serve(listener, Arc::new(state)));
}

/// xDS from the store's head and the CA's security settings (the first snapshot is built
/// here: a failure stops the start), served without authentication on `--xds-addr` when
/// `--plaintext-xds` allows it. The source is returned for the identity endpoint.
fn serve_xds(
    flags: &Flags,
    store: &Arc<Store>,
    ca: &Arc<Ca>,
    listener: TcpListener,
) -> Result<XdsSource, String> {
    let mesh_security = security::follow_ca(
        ca.clone(),
        SecuritySettings {
            trust_domain: flags.trust_domain.clone(),
            default_action: flags.default_authz,
        },
    );
    let source = xds_server::start(store.clone(), mesh_security, flags.plaintext_xds)?;
    tokio::spawn(xds_server::serve(
        listener,
        source.clone(),
        flags.plaintext_xds,
    ));
    Ok(source)
}

/// The identity endpoint (TLS 1.3): CSR signing for whoever `authenticator` vouches for
/// (join tokens; in a cluster also ServiceAccount tokens), and xDS over mutual TLS for
/// proxies with a workload certificate.
fn serve_identity<A: Authenticator>(
    flags: &Flags,
    identity: &Identity,
    authenticator: Arc<A>,
    (listener, tls, source): (TcpListener, Arc<ArcSwap<rustls::ServerConfig>>, XdsSource),
) {
    let signer = Arc::new(IdentityService::new(
        identity.ca.clone(),
        authenticator,
        flags.cert_ttl,
    ));
    tokio::spawn(identity_server::serve(
        listener,
        tls,
        signer,
        xds_server::secure_service(source),
    ));
}

/// The sidecar injector's webhook: its settings from the `--injector-*` flags (checked
/// here, so a bad default stops the start), a serving certificate from the CA for the
/// loopback names, the bound address and every `--injector-san`, renewed by a task of its
/// own. Returns the bound address for the ready line.
fn serve_injector(flags: &Flags, ca: &Arc<Ca>, bound: Bound) -> Result<SocketAddr, String> {
    use tandem_inject::settings::{cidrs, ports};
    let skip_outbound_ports = ports(&flags.injector_skip_outbound_ports)
        .map_err(|e| format!("--injector-skip-outbound-ports: {e}"))?;
    let skip_outbound_cidrs = cidrs(&flags.injector_skip_outbound_cidrs)
        .map_err(|e| format!("--injector-skip-outbound-cidrs: {e}"))?;
    let settings = tandem_inject::Settings {
        proxy_image: flags.injector_proxy_image.clone(),
        mode: flags.injector_sidecar_mode,
        control_plane: flags.injector_control_plane.clone(),
        excluded_namespaces: flags.injector_exclude_namespaces.clone(),
        proxy_uid: flags.injector_proxy_uid,
        log_level: flags.injector_log_level.clone(),
        access_log: flags.injector_access_log.clone(),
        trace_collector: flags.injector_trace_collector.clone(),
        trace_sampling: flags.injector_trace_sampling.clone(),
        skip_outbound_ports,
        skip_outbound_cidrs,
        ..tandem_inject::Settings::default()
    };
    settings
        .validate()
        .map_err(|e| format!("--injector-*: {e}"))?;
    if flags.injector_cert_ttl < Duration::from_secs(10) {
        return Err("--injector-cert-ttl: at least 10s".into());
    }
    let names = identity_names(bound.addr, &flags.injector_sans);
    let tls = injector::tls::config(ca, &names, flags.injector_cert_ttl)
        .map_err(|e| format!("injector certificate: {e}"))?;
    let tls = Arc::new(ArcSwap::new(tls));
    tokio::spawn(injector::tls::renew(
        ca.clone(),
        names,
        flags.injector_cert_ttl,
        tls.clone(),
    ));
    tokio::spawn(injector::serve(
        bound.listener,
        tls,
        Arc::new(settings),
        ca.clone(),
    ));
    Ok(bound.addr)
}

/// The addresses the ready line announces.
struct Addrs {
    api: SocketAddr,
    xds: SocketAddr,
    identity: SocketAddr,
    injector: Option<SocketAddr>,
}

/// The ready line, the only line on stdout (scripts and tests wait for it), and the same
/// in the log. `injector=` is appended only when the webhook is on.
fn announce_ready(flags: &Flags, addrs: Addrs, ca: &Ca, store: &Store) {
    let Addrs {
        api,
        xds,
        identity,
        injector,
    } = addrs;
    let mut line = format!(
        "tandem-control-plane ready api={api} xds={xds} data-dir={} identity={identity}",
        flags.data_dir.display()
    );
    if let Some(injector) = injector {
        line.push_str(&format!(" injector={injector}"));
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    tracing::info!(api_addr = %api, xds_addr = %xds, identity_addr = %identity, injector_addr = ?injector, ca_sha256 = %ca.root_fingerprint(), revision = store.head(), "serving");
}

/// Until SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

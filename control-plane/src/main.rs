//! `tandem-control-plane`: the mesh's source of truth, xDS server and REST API.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tandem_control_plane::api::{self, ApiState};
use tandem_control_plane::auth::AdminToken;
use tandem_control_plane::discovery::dns::Dns;
use tandem_control_plane::discovery::registrations::{Expiry, Registrations};
use tandem_control_plane::discovery::static_file::StaticFile;
use tandem_control_plane::discovery::{self, Source};
use tandem_control_plane::flags::Flags;
use tandem_control_plane::identity::ca::{Ca, CaSource};
use tandem_control_plane::identity::server::{self as identity_server, IdentityService};
use tandem_control_plane::identity::tokens::JoinTokens;
use tandem_control_plane::security::{self, SecuritySettings};
use tandem_control_plane::store::Store;
use tandem_control_plane::telemetry::{self, Telemetry};
use tandem_control_plane::xds_server;
use tokio::net::TcpListener;

fn main() -> ExitCode {
    let args = Flags::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
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
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem-control-plane: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Flags) -> Result<(), String> {
    let store =
        Store::open(&args.data_dir).map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
    let store = Arc::new(store);
    let token = AdminToken::load_or_create(&args.data_dir).map_err(|e| e.to_string())?;
    let api_listener = TcpListener::bind(args.api_addr)
        .await
        .map_err(|e| format!("api listener {}: {e}", args.api_addr))?;
    let xds_listener = TcpListener::bind(args.xds_addr)
        .await
        .map_err(|e| format!("xds listener {}: {e}", args.xds_addr))?;
    let api_addr = api_listener.local_addr().map_err(|e| e.to_string())?;
    let xds_addr = xds_listener.local_addr().map_err(|e| e.to_string())?;

    // 10 s is far too short for production, but lets tests watch several renewals.
    if args.cert_ttl < Duration::from_secs(10) {
        return Err(format!(
            "--cert-ttl {}s: at least 10s (proxies renew at half life)",
            args.cert_ttl.as_secs()
        ));
    }
    // Identity: the CA is loaded (or generated) before any listener answers, so a bad
    // --ca-cert/--ca-key stops the start with the file's path.
    let ca_source =
        CaSource::from_flags(&args.data_dir, args.ca_cert.as_ref(), args.ca_key.as_ref())
            .map_err(|e| e.to_string())?;
    let ca = Arc::new(Ca::load(&ca_source, &args.trust_domain).map_err(|e| format!("CA: {e}"))?);
    let tokens = Arc::new(
        JoinTokens::load(&args.data_dir, &args.trust_domain, &ca.root_fingerprint())
            .map_err(|e| format!("join tokens: {e}"))?
            .follow_ca(ca.clone()),
    );
    let identity_listener = TcpListener::bind(args.identity_addr)
        .await
        .map_err(|e| format!("identity listener {}: {e}", args.identity_addr))?;
    let identity_addr = identity_listener.local_addr().map_err(|e| e.to_string())?;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !identity_addr.ip().is_unspecified() {
        names.push(identity_addr.ip().to_string());
    }
    for name in &args.identity_sans {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let tls = identity_server::tls_config(
        &ca,
        &names,
        tandem_control_plane::resources::clock::unix_now(),
    )
    .map_err(|e| format!("identity endpoint certificate: {e}"))?;
    // Swapped after every root rotation step, so the endpoint's certificate follows the
    // signing root without a restart.
    let tls = Arc::new(arc_swap::ArcSwap::new(tls));
    tokio::spawn(security::follow_ca_tls(
        ca.clone(),
        names.clone(),
        tls.clone(),
    ));
    let mesh_security = security::follow_ca(
        ca.clone(),
        SecuritySettings {
            trust_domain: args.trust_domain.clone(),
            default_action: args.default_authz,
        },
    );
    let identity = Arc::new(IdentityService::new(
        ca.clone(),
        tokens.clone(),
        args.cert_ttl,
    ));

    let registrations = Registrations::new();
    let mut sources: Vec<Box<dyn Source>> = vec![
        Box::new(Expiry(registrations.clone())),
        Box::new(Dns {
            max_refresh: Duration::from_secs(args.dns_refresh),
        }),
    ];
    if let Some(path) = &args.static_endpoints {
        sources.push(Box::new(StaticFile::new(path.clone())));
    }
    discovery::spawn_all(sources, &store);

    let telemetry = Arc::new(Telemetry::default());
    tokio::spawn(telemetry::run_scraper(
        telemetry.clone(),
        store.clone(),
        Duration::from_secs(args.scrape_interval),
    ));
    let state = Arc::new(ApiState {
        store: store.clone(),
        token,
        registrations,
        telemetry,
        tokens,
        ca: ca.clone(),
    });
    tokio::spawn(api::serve(api_listener, state));
    let xds = xds_server::start(store.clone(), mesh_security, args.plaintext_xds)?;
    tokio::spawn(xds_server::serve(
        xds_listener,
        xds.clone(),
        args.plaintext_xds,
    ));
    tokio::spawn(identity_server::serve(
        identity_listener,
        tls,
        identity,
        xds_server::secure_service(xds),
    ));

    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "tandem-control-plane ready api={api_addr} xds={xds_addr} data-dir={} identity={identity_addr}",
        args.data_dir.display()
    );
    let _ = out.flush();
    tracing::info!(%api_addr, %xds_addr, %identity_addr, ca_sha256 = %ca.root_fingerprint(), revision = store.head(), "serving");
    shutdown_signal().await;
    tracing::info!("shutting down");
    Ok(())
}

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

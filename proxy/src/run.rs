//! Startup and shutdown: bind, serve, announce readiness, drain on request.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::admin::{self, AdminState};
use crate::cli::Args;
use crate::client::Client;
use crate::config::{self, ConfigError};
use crate::drain::Drain;
use crate::http::forward::Forwarder;
use crate::listener::{accept_loop, ListenerKind, ServiceListeners};
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::snapshot::Store;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The config file could not be read.
    #[error("cannot read config {path}: {source}")]
    ReadConfig {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is invalid.
    #[error("invalid config {path}: {source}")]
    Config {
        /// The file.
        path: String,
        /// Where and why.
        source: ConfigError,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({role}): {source}")]
    Bind {
        /// Which listener.
        role: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Metrics registration failed (a programming error).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Runs the proxy until SIGTERM/SIGINT or `POST /drain`, then drains and returns.
pub async fn run(args: Args) -> Result<(), StartupError> {
    let path = args.config.display().to_string();
    let text =
        std::fs::read_to_string(&args.config).map_err(|source| StartupError::ReadConfig {
            path: path.clone(),
            source,
        })?;
    let config = config::parse(&text).map_err(|source| StartupError::Config {
        path: path.clone(),
        source,
    })?;
    let metrics = Metrics::new()?;
    metrics.set_config_version(1);
    let store = Arc::new(Store::new(config.clone()));
    let client = Client::default();
    let fwd = Arc::new(Forwarder {
        store: store.clone(),
        client: client.clone(),
        metrics: metrics.clone(),
        app_addr: SocketAddr::from(([127, 0, 0, 1], args.app_port)),
    });
    let drain = Drain::new();

    let outbound = bind("outbound", args.outbound_addr).await?;
    let inbound = bind("inbound", args.inbound_addr).await?;
    let admin_listener = bind("admin", args.admin_addr).await?;
    let service_listeners = Arc::new(ServiceListeners::new(fwd.clone(), drain.watch()));
    let prepared =
        service_listeners
            .prepare(&config)
            .await
            .map_err(|source| StartupError::Config {
                path: path.clone(),
                source,
            })?;
    service_listeners.commit(&config, prepared);

    let mut listeners = BTreeMap::new();
    listeners.insert("outbound", local(&outbound, args.outbound_addr));
    listeners.insert("inbound", local(&inbound, args.inbound_addr));
    listeners.insert("admin", local(&admin_listener, args.admin_addr));

    let (drain_tx, mut drain_rx) = mpsc::channel(1);
    let state = Arc::new(AdminState {
        store: store.clone(),
        metrics: metrics.clone(),
        ready: Default::default(),
        source: Some(args.config.clone()),
        listeners: listeners.clone(),
        service_listeners: service_listeners.clone(),
        last_error: Mutex::new(None),
        drain_tx,
    });

    tokio::spawn(accept_loop(
        outbound,
        ListenerKind::Outbound,
        fwd.clone(),
        drain.watch(),
        None,
    ));
    tokio::spawn(accept_loop(
        inbound,
        ListenerKind::Inbound,
        fwd.clone(),
        drain.watch(),
        None,
    ));
    tokio::spawn(admin::serve(admin_listener, state.clone()));
    tokio::spawn(
        Reloader::new(
            args.config.clone(),
            text,
            state.clone(),
            service_listeners.clone(),
        )
        .run(),
    );
    tokio::spawn(reap_idle(client, store.clone()));

    state.ready.store(true, Ordering::Release);
    announce(&listeners, &service_listeners.addresses());

    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        Some(()) = recv_opt(&mut term) => tracing::info!("SIGTERM: draining"),
        Some(()) = recv_opt(&mut int) => tracing::info!("SIGINT: draining"),
        Some(()) = drain_rx.recv() => tracing::info!("drain requested on the admin port"),
    }
    state.ready.store(false, Ordering::Release);
    service_listeners.release_drain();
    let grace = store.load().config.timeouts.shutdown_grace;
    if drain.drain(grace).await {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!(
            ?grace,
            "grace period over with work still in flight; exiting"
        );
    }
    Ok(())
}

async fn recv_opt(sig: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match sig {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn bind(role: &'static str, addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { role, addr, source })
}

fn local(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}

/// The one stdout line scripts and tests wait for.
fn announce(fixed: &BTreeMap<&'static str, SocketAddr>, services: &BTreeMap<String, SocketAddr>) {
    let mut line = String::from("tandem-proxy ready");
    for role in ["outbound", "inbound", "admin"] {
        if let Some(addr) = fixed.get(role) {
            line.push_str(&format!(" {role}={addr}"));
        }
    }
    for (name, addr) in services {
        line.push_str(&format!(" service.{name}={addr}"));
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    tracing::info!("{line}");
}

/// Periodically closes upstream connections idle past the configured timeout.
async fn reap_idle(client: Client, store: Arc<Store>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        client.reap(store.load().config.timeouts.upstream_idle);
    }
}

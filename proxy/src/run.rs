//! Startup and shutdown: bind, serve, announce readiness, drain on request.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::admin::{self, AdminState};
use crate::cli::Args;
use crate::config::Config;
use crate::config::{self, ConfigError};
use crate::drain::Drain;
use crate::http::forward::Forwarder;
use crate::identity::{self, Expected, IdentityConfig, IdentityError, IdentityStore, JoinToken};
use crate::listener::{accept_loop, ListenerKind, ServiceListeners};
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::snapshot::Store;
use crate::tls::TlsState;
use crate::workers::Workers;
use crate::xds_client::{self, XdsStatus, XdsTarget};
use std::path::PathBuf;

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
    /// The command line does not describe a runnable proxy.
    #[error("{0}")]
    Usage(&'static str),
    /// Worker threads could not be started.
    #[error("cannot start worker threads: {0}")]
    Workers(std::io::Error),
    /// No workload certificate can be obtained (a malformed token, or a token for another
    /// workload).
    #[error("{0}")]
    Identity(#[from] IdentityError),
    /// Metrics registration failed (a programming error).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Where the destinations come from.
#[derive(Debug)]
enum Mode {
    /// A static file, watched for changes.
    Static { path: PathBuf, text: String },
    /// A control plane over ADS, and the identity endpoint when a join token was given.
    Xds(XdsTarget, Option<IdentityConfig>),
}

impl Mode {
    fn from_args(args: &Args) -> Result<Self, StartupError> {
        match (&args.config, &args.control_plane) {
            (Some(_), Some(_)) => Err(StartupError::Usage(
                "use either --config FILE or --control-plane ADDR, not both",
            )),
            (None, None) => Err(StartupError::Usage(
                "need --config FILE (static) or --control-plane ADDR --service NAME",
            )),
            (Some(_), None) if args.token.is_some() || args.identity_addr.is_some() => {
                Err(StartupError::Usage(
                    "--token and --identity-addr are for --control-plane mode, not --config",
                ))
            }
            // A reload re-reads the file, so a flag beside it would silently stop applying.
            (Some(_), None) if args.retry_buffer_bytes.is_some() => Err(StartupError::Usage(
                "--retry-buffer-bytes is for --control-plane mode; with --config set limits.retry_buffer_bytes",
            )),
            (Some(path), None) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| StartupError::ReadConfig {
                        path: path.display().to_string(),
                        source,
                    })?;
                Ok(Mode::Static {
                    path: path.clone(),
                    text,
                })
            }
            (None, Some(cp)) => {
                let service = args.service.clone().ok_or(StartupError::Usage(
                    "--control-plane needs --service NAME (this workload's service)",
                ))?;
                let endpoint = if cp.contains("://") {
                    cp.clone()
                } else {
                    format!("http://{cp}")
                };
                let node_id = args.node_id.clone().unwrap_or_else(|| {
                    format!("{service}~{}~{}", args.namespace, std::process::id())
                });
                let identity = match &args.token {
                    None if args.identity_addr.is_some() => {
                        return Err(StartupError::Usage(
                            "--identity-addr needs --token (the join token to present)",
                        ))
                    }
                    None => None,
                    Some(token) => Some(IdentityConfig {
                        token: JoinToken::parse(token)?,
                        addr: args
                            .identity_addr
                            .clone()
                            .unwrap_or_else(|| default_identity_addr(&endpoint)),
                        expected: Expected {
                            namespace: args.namespace.clone(),
                            service: service.clone(),
                        },
                    }),
                };
                Ok(Mode::Xds(
                    XdsTarget {
                        endpoint,
                        node_id,
                        service,
                        // With an identity, xDS goes over mutual TLS to the identity port
                        // (Istio's 15012 arrangement), so the control plane knows whom it
                        // serves.
                        secure: identity.as_ref().map(|i| i.addr.clone()),
                    },
                    identity,
                ))
            }
        }
    }

    /// The settings (and, in static mode, the services) to start with.
    fn config(&self) -> Result<Config, StartupError> {
        match self {
            Mode::Static { path, text } => {
                config::parse(text).map_err(|source| StartupError::Config {
                    path: path.display().to_string(),
                    source,
                })
            }
            Mode::Xds(target, _) => {
                let mut c = config::parse("").map_err(|source| StartupError::Config {
                    path: "(defaults)".into(),
                    source,
                })?;
                c.service = target.service.clone();
                Ok(c)
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Mode::Static { path, .. } => path.display().to_string(),
            Mode::Xds(t, _) => t.endpoint.clone(),
        }
    }
}

/// Runs the proxy until SIGTERM/SIGINT or `POST /drain`, then drains and returns.
pub async fn run(args: Args) -> Result<(), StartupError> {
    // Handlers first: a signal that arrives once the ready line is out must be handled,
    // not take the default action of killing the process.
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    let hup = signal(SignalKind::hangup()).ok();
    let mode = Mode::from_args(&args)?;
    let mut config = mode.config()?;
    if let Some(bytes) = args.retry_buffer_bytes {
        // Only reachable in control-plane mode: `Mode::from_args` refuses it with a file.
        config.limits.retry_buffer_bytes = bytes;
    }
    let path = mode.describe();
    let metrics = Metrics::new()?;
    metrics.set_config_version(1);
    let store =
        Arc::new(
            Store::from_static(config.clone()).map_err(|source| StartupError::Config {
                path: path.clone(),
                source,
            })?,
        );
    let app_addr = SocketAddr::from(([127, 0, 0, 1], args.app_port));
    let identity_cfg = match &mode {
        Mode::Xds(_, identity) => identity.clone(),
        Mode::Static { .. } => None,
    };
    let identity_store = identity_cfg
        .as_ref()
        .map(|_| Arc::new(IdentityStore::default()));
    let tls = identity_store
        .as_ref()
        .map(|ids| Arc::new(TlsState::new(ids.clone(), metrics.clone())));
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().follow_identity());
    }
    let workers = Arc::new(
        Workers::start(args.workers.unwrap_or_else(default_workers), |client| {
            Forwarder {
                store: store.clone(),
                client,
                metrics: metrics.clone(),
                app_addr,
                tls: tls.clone(),
            }
        })
        .map_err(StartupError::Workers)?,
    );
    let drain = Drain::new();

    let outbound = bind("outbound", args.outbound_addr).await?;
    let inbound = bind("inbound", args.inbound_addr).await?;
    let admin_listener = bind("admin", args.admin_addr).await?;
    let service_listeners = Arc::new(ServiceListeners::new(workers.clone(), drain.watch()));
    let prepared =
        service_listeners
            .prepare(&config)
            .await
            .map_err(|source| StartupError::Config {
                path: path.clone(),
                source,
            })?;
    service_listeners.commit(&config, prepared);

    if !args.listen.is_empty() && matches!(mode, Mode::Static { .. }) {
        return Err(StartupError::Usage(
            "--listen is for --control-plane mode; a config file sets services[].listen",
        ));
    }
    let mut flag_listeners = BTreeMap::new();
    for (name, addr) in &args.listen {
        let listener = bind("service", *addr).await?;
        flag_listeners.insert(name.clone(), local(&listener, *addr));
        tokio::spawn(accept_loop(
            listener,
            ListenerKind::Service(name.as_str().into()),
            workers.clone(),
            drain.watch(),
            None,
        ));
    }

    let mut listeners = BTreeMap::new();
    listeners.insert("outbound", local(&outbound, args.outbound_addr));
    listeners.insert("inbound", local(&inbound, args.inbound_addr));
    listeners.insert("admin", local(&admin_listener, args.admin_addr));

    let (drain_tx, mut drain_rx) = mpsc::channel(1);
    let state = Arc::new(AdminState {
        store: store.clone(),
        metrics: metrics.clone(),
        ready: Default::default(),
        source: match &mode {
            Mode::Static { path, .. } => Some(path.clone()),
            Mode::Xds(..) => None,
        },
        listeners: listeners.clone(),
        service_listeners: service_listeners.clone(),
        last_error: Mutex::new(None),
        drain_tx,
        identity: identity_store.clone(),
        tls: tls.clone(),
        xds: match &mode {
            Mode::Static { .. } => None,
            Mode::Xds(target, _) => Some(Arc::new(XdsStatus {
                control_plane: match &target.secure {
                    Some(addr) => format!("https://{addr}"),
                    None => target.endpoint.clone(),
                },
                admin_addr: admin_listener.local_addr().ok(),
                ..Default::default()
            })),
        },
    });

    tokio::spawn(accept_loop(
        outbound,
        ListenerKind::Outbound,
        workers.clone(),
        drain.watch(),
        None,
    ));
    tokio::spawn(accept_loop(
        inbound,
        ListenerKind::Inbound,
        workers.clone(),
        drain.watch(),
        None,
    ));
    tokio::spawn(admin::serve(admin_listener, state.clone()));
    let (first_tx, mut first_rx) = watch::channel(false);
    match &mode {
        Mode::Static { path, text } => {
            first_tx.send_replace(true);
            tokio::spawn(
                Reloader::new(
                    path.clone(),
                    text.clone(),
                    state.clone(),
                    service_listeners.clone(),
                )
                .run(hup),
            );
        }
        Mode::Xds(target, _) => {
            if let Some(status) = &state.xds {
                tokio::spawn(xds_client::run(
                    target.clone(),
                    config.clone(),
                    store.clone(),
                    metrics.clone(),
                    status.clone(),
                    tls.clone(),
                    first_tx,
                ));
            }
        }
    }

    // The identity task ends only on a failure retrying cannot fix; before readiness that
    // stops the start, after it (cannot happen: renewals ask for the same identity) it is
    // logged by the task's caller below.
    let (identity_tx, mut identity_rx) = watch::channel(identity_cfg.is_none());
    let mut identity_task = match (identity_cfg, &identity_store) {
        (Some(cfg), Some(store)) => tokio::spawn(identity::run(
            cfg,
            store.clone(),
            metrics.clone(),
            identity_tx,
        )),
        _ => tokio::spawn(std::future::pending()),
    };

    // Ready means: listeners bound, a complete config in force, and (with a token) a
    // workload certificate held.
    let first_config = async {
        let _ = first_rx.wait_for(|got| *got).await;
        // A closed channel means the identity task ended without a certificate: never
        // ready (the task's own arm below reports why).
        if identity_rx.wait_for(|got| *got).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        biased;
        result = &mut identity_task => {
            return match result {
                Ok(Err(e)) => Err(StartupError::Identity(e)),
                Ok(Ok(())) | Err(_) => Err(StartupError::Usage("the identity task ended")),
            };
        }
        () = first_config => {
            state.ready.store(true, Ordering::Release);
            let mut services = service_listeners.addresses();
            services.extend(flag_listeners);
            announce(&listeners, &services);
        }
        Some(()) = recv_opt(&mut term) => return Ok(()),
        Some(()) = recv_opt(&mut int) => return Ok(()),
    }

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

/// The identity endpoint beside the control plane: its host, port 15012.
fn default_identity_addr(endpoint: &str) -> String {
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let (host, _) = identity::request::split_host(authority);
    if host.contains(':') {
        format!("[{host}]:{}", identity::DEFAULT_IDENTITY_PORT)
    } else {
        format!("{host}:{}", identity::DEFAULT_IDENTITY_PORT)
    }
}

/// One worker per CPU the process may use.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_endpoint_defaults_to_the_control_planes_host() {
        assert_eq!(
            default_identity_addr("http://10.0.0.5:15010"),
            "10.0.0.5:15012"
        );
        assert_eq!(
            default_identity_addr("http://cp.mesh:15010/"),
            "cp.mesh:15012"
        );
        assert_eq!(default_identity_addr("http://[::1]:15010"), "[::1]:15012");
    }
}

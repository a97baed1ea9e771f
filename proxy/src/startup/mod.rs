//! Startup and shutdown, in named steps: the mode from the flags, the shared state
//! (metrics, snapshot store, identity and TLS), the workers and listeners, the admin port,
//! the source of config (file or xDS), the identity task, readiness, and the drain on a
//! signal or `POST /drain`.

pub mod flags;
pub mod init;
pub mod mode;
pub mod wait_ready;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::admin::app_health::AppProbes;
use crate::admin::{self, AdminState};
use crate::config::{Config, ConfigError};
use crate::discovery::file::{ReloadStatus, Reloader, Targets};
use crate::discovery::xds::{self, XdsStatus};
use crate::drain::Drain;
use crate::forward::{Forwarder, ListenerKind};
use crate::identity::{self, IdentityConfig, IdentityError, IdentityStore};
use crate::metrics::Metrics;
use crate::observe::access_log::Target;
use crate::observe::trace::TraceSettings;
use crate::observe::{ObserveError, ObserveSettings, Observer};
use crate::snapshot::Store;
use crate::tls::TlsState;
use crate::transport::listener::{accept_loop, bind_ipv6_only, ipv6_twin};
use crate::transport::service_listeners::ServiceListeners;
use crate::transport::workers::Workers;
pub use flags::Args;
use mode::Mode;

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
    /// A flag's value is malformed (the message names it).
    #[error("{0}")]
    Flag(String),
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
    /// The access log or tracing could not start.
    #[error("{0}")]
    Observe(#[from] ObserveError),
}

/// What every part of the proxy shares, made before anything listens.
struct Shared {
    metrics: Metrics,
    store: Arc<Store>,
    /// The workload identity (with a join token).
    identity: Option<Arc<IdentityStore>>,
    /// Mutual TLS, with an identity.
    tls: Option<Arc<TlsState>>,
    /// Access log and tracing.
    observer: Arc<Observer>,
}

/// The fixed listeners, bound and not yet accepting.
struct Bound {
    outbound: TcpListener,
    inbound: TcpListener,
    admin: TcpListener,
    /// IPv6 twins of the outbound and inbound listeners (transparent mode).
    twins: Vec<(TcpListener, ListenerKind)>,
}

/// The workers and the listeners in front of them.
struct Listening {
    workers: Arc<Workers>,
    drain: Drain,
    services: Arc<ServiceListeners>,
    /// The fixed listeners' addresses, by role.
    fixed: BTreeMap<&'static str, SocketAddr>,
    /// `--listen` listeners' addresses, by service.
    flagged: BTreeMap<String, SocketAddr>,
}

/// The signals startup and shutdown wait for.
struct Signals {
    term: Option<Signal>,
    int: Option<Signal>,
    hup: Option<Signal>,
}

/// Runs the proxy until SIGTERM/SIGINT or `POST /drain`, then drains and returns.
pub async fn run(args: Args) -> Result<(), StartupError> {
    // Handlers first: a signal that arrives once the ready line is out must be handled,
    // not take the default action of killing the process.
    let mut signals = Signals::install();
    let mode = Mode::from_args(&args)?;
    let config = mode.config(&args)?;
    let app_probes = match &args.app_probes {
        Some(json) => AppProbes::parse(json, args.pod_ip).map_err(StartupError::Flag)?,
        None => AppProbes::default(),
    };
    let shared = Shared::new(&mode, &config, &args)?;
    let (listening, bound) = listen(&args, &mode, &config, &shared).await?;
    let (drain_tx, drain_rx) = mpsc::channel(1);
    let state = admin_state(
        &mode,
        &shared,
        &listening,
        drain_tx,
        app_probes,
        args.transparent,
    );
    serve(bound, &listening, &state);
    let first_config = start_discovery(&mode, &config, &shared, &state, &listening, &mut signals);
    let (identity_task, has_identity) = start_identity(mode.identity(), &shared);
    if !become_ready(identity_task, first_config, has_identity, &mut signals).await? {
        return Ok(());
    }
    state.ready.store(true, Ordering::Release);
    let mut services = listening.services.addresses();
    services.extend(listening.flagged.clone());
    announce(&listening.fixed, &services);
    shut_down(signals, drain_rx, &state, listening).await;
    Ok(())
}

impl Signals {
    fn install() -> Self {
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }
}

impl Shared {
    /// Metrics, the first snapshot, and (with a join token) the identity store and TLS,
    /// which rebuilds its configs whenever the identity changes.
    fn new(mode: &Mode, config: &Config, args: &Args) -> Result<Self, StartupError> {
        let metrics = Metrics::new()?;
        metrics.set_config_version(1);
        let observer = Observer::start(&observe_settings(args, config)?, &metrics.observe)?;
        let store = Store::from_static(config.clone(), args.transparent).map_err(|source| {
            StartupError::Config {
                path: mode.describe(),
                source,
            }
        })?;
        let identity = mode.identity().map(|_| Arc::new(IdentityStore::default()));
        let tls = identity
            .as_ref()
            .map(|ids| Arc::new(TlsState::new(ids.clone(), metrics.clone())));
        if let Some(tls) = &tls {
            tokio::spawn(tls.clone().follow_identity());
        }
        Ok(Shared {
            metrics,
            store: Arc::new(store),
            identity,
            tls,
            observer: Arc::new(observer),
        })
    }
}

/// The access log and tracing the flags ask for.
fn observe_settings(args: &Args, config: &Config) -> Result<ObserveSettings, StartupError> {
    let access_log = match &args.access_log {
        Some(s) => {
            Some(Target::parse(s).map_err(|e| StartupError::Flag(format!("--access-log: {e}")))?)
        }
        None => None,
    };
    let tracing = args
        .trace_collector
        .as_ref()
        .map(|collector| TraceSettings {
            collector: collector.clone(),
            sampling: args.trace_sampling,
            // The workload's service names the spans, as an instrumented app's would.
            service: args
                .service
                .clone()
                .unwrap_or_else(|| config.service.clone()),
            namespace: args.namespace.clone(),
        });
    Ok(ObserveSettings {
        access_log,
        tracing,
    })
}

/// Starts the workers and binds every listener: the fixed three, the config's
/// per-service listeners, and `--listen`'s.
async fn listen(
    args: &Args,
    mode: &Mode,
    config: &Config,
    shared: &Shared,
) -> Result<(Listening, Bound), StartupError> {
    let app_addr = SocketAddr::from(([127, 0, 0, 1], args.app_port));
    let workers = Workers::start(args.workers.unwrap_or_else(default_workers), |client| {
        Forwarder {
            store: shared.store.clone(),
            client,
            metrics: shared.metrics.clone(),
            app_addr,
            tls: shared.tls.clone(),
            transparent: args.transparent,
            observer: shared.observer.clone(),
        }
    })
    .map_err(StartupError::Workers)?;
    let workers = Arc::new(workers);
    let drain = Drain::new();
    let outbound = bind("outbound", args.outbound_addr).await?;
    let inbound = bind("inbound", args.inbound_addr).await?;
    let admin = bind("admin", args.admin_addr).await?;
    let services = Arc::new(ServiceListeners::new(workers.clone(), drain.watch()));
    let config_error = |source: ConfigError| StartupError::Config {
        path: mode.describe(),
        source,
    };
    let prepared = services.prepare(config).await.map_err(config_error)?;
    services.commit(config, prepared);
    let mut flagged = BTreeMap::new();
    for (name, addr) in &args.listen {
        let listener = bind("service", *addr).await?;
        flagged.insert(name.clone(), local(&listener, *addr));
        let kind = ListenerKind::Service(name.as_str().into());
        tokio::spawn(accept_loop(
            listener,
            kind,
            workers.clone(),
            drain.watch(),
            None,
        ));
    }
    let mut fixed = BTreeMap::new();
    let mut twins = Vec::new();
    if args.transparent {
        for (role, addr, kind) in [
            ("outbound6", args.outbound_addr, ListenerKind::Outbound),
            ("inbound6", args.inbound_addr, ListenerKind::Inbound),
        ] {
            let Some(twin) = ipv6_twin(local(
                if matches!(kind, ListenerKind::Outbound) {
                    &outbound
                } else {
                    &inbound
                },
                addr,
            )) else {
                continue;
            };
            // A pod without IPv6 has no IPv6 traffic to intercept.
            match bind_ipv6_only(twin) {
                Ok(l) => {
                    fixed.insert(role, local(&l, twin));
                    twins.push((l, kind));
                }
                Err(e) => tracing::info!(%twin, error = %e, "no IPv6 {role} listener"),
            }
        }
    }
    fixed.insert("outbound", local(&outbound, args.outbound_addr));
    fixed.insert("inbound", local(&inbound, args.inbound_addr));
    fixed.insert("admin", local(&admin, args.admin_addr));
    let listening = Listening {
        workers,
        drain,
        services,
        fixed,
        flagged,
    };
    Ok((
        listening,
        Bound {
            outbound,
            inbound,
            admin,
            twins,
        },
    ))
}

/// What the admin port reports on and acts on.
fn admin_state(
    mode: &Mode,
    shared: &Shared,
    listening: &Listening,
    drain_tx: mpsc::Sender<()>,
    app_probes: AppProbes,
    transparent: bool,
) -> Arc<AdminState> {
    let xds = match mode {
        Mode::Static { .. } => None,
        Mode::Xds(target, _) => Some(Arc::new(XdsStatus {
            control_plane: match &target.secure {
                Some(addr) => format!("https://{addr}"),
                None => target.endpoint.clone(),
            },
            admin_addr: listening.fixed.get("admin").copied(),
            ..Default::default()
        })),
    };
    Arc::new(AdminState {
        store: shared.store.clone(),
        metrics: shared.metrics.clone(),
        ready: Default::default(),
        source: match mode {
            Mode::Static { path, .. } => Some(path.clone()),
            Mode::Xds(..) => None,
        },
        listeners: listening.fixed.clone(),
        service_listeners: listening.services.clone(),
        reload: Arc::new(ReloadStatus::default()),
        drain_tx,
        identity: shared.identity.clone(),
        tls: shared.tls.clone(),
        xds,
        app_probes,
        transparent,
    })
}

/// Starts accepting: the outbound and inbound listeners into the workers, and the admin
/// port on this runtime.
fn serve(bound: Bound, listening: &Listening, state: &Arc<AdminState>) {
    let fixed = [
        (bound.outbound, ListenerKind::Outbound),
        (bound.inbound, ListenerKind::Inbound),
    ];
    for (listener, kind) in fixed.into_iter().chain(bound.twins) {
        let (workers, watch) = (listening.workers.clone(), listening.drain.watch());
        tokio::spawn(accept_loop(listener, kind, workers, watch, None));
    }
    tokio::spawn(admin::serve(bound.admin, state.clone()));
}

/// Starts the source of config: the file watcher, or the xDS client. The channel turns
/// true once a complete config is in force.
fn start_discovery(
    mode: &Mode,
    config: &Config,
    shared: &Shared,
    state: &Arc<AdminState>,
    listening: &Listening,
    signals: &mut Signals,
) -> watch::Receiver<bool> {
    let (first_tx, first_rx) = watch::channel(false);
    match mode {
        Mode::Static { path, text } => {
            first_tx.send_replace(true);
            let targets = Targets {
                store: shared.store.clone(),
                metrics: shared.metrics.clone(),
                status: state.reload.clone(),
                listeners: listening.services.clone(),
            };
            let reloader = Reloader::new(path.clone(), text.clone(), targets);
            tokio::spawn(reloader.run(signals.hup.take()));
        }
        Mode::Xds(target, _) => {
            if let Some(status) = &state.xds {
                tokio::spawn(xds::run(
                    target.clone(),
                    config.clone(),
                    shared.store.clone(),
                    shared.metrics.clone(),
                    status.clone(),
                    shared.tls.clone(),
                    first_tx,
                ));
            }
        }
    }
    first_rx
}

/// Starts obtaining and renewing the workload certificate (with a join token). The task
/// ends only on a failure retrying cannot fix; the channel turns true once a certificate
/// is held (at once without a token).
fn start_identity(
    config: Option<&IdentityConfig>,
    shared: &Shared,
) -> (JoinHandle<Result<(), IdentityError>>, watch::Receiver<bool>) {
    let (identity_tx, identity_rx) = watch::channel(config.is_none());
    let task = match (config, &shared.identity) {
        (Some(cfg), Some(store)) => tokio::spawn(identity::run(
            cfg.clone(),
            store.clone(),
            shared.metrics.clone(),
            identity_tx,
        )),
        _ => tokio::spawn(std::future::pending()),
    };
    (task, identity_rx)
}

/// Waits until ready: listeners bound, a complete config in force, and (with a token) a
/// workload certificate held. `Ok(false)`: a signal came first, exit quietly.
async fn become_ready(
    mut identity_task: JoinHandle<Result<(), IdentityError>>,
    mut first_config: watch::Receiver<bool>,
    mut has_identity: watch::Receiver<bool>,
    signals: &mut Signals,
) -> Result<bool, StartupError> {
    let ready = async {
        let _ = first_config.wait_for(|got| *got).await;
        // A closed channel means the identity task ended without a certificate: never
        // ready (the task's own arm below reports why).
        if has_identity.wait_for(|got| *got).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        biased;
        result = &mut identity_task => match result {
            Ok(Err(e)) => Err(StartupError::Identity(e)),
            Ok(Ok(())) | Err(_) => Err(StartupError::Usage("the identity task ended")),
        },
        () = ready => Ok(true),
        Some(()) = recv_opt(&mut signals.term) => Ok(false),
        Some(()) = recv_opt(&mut signals.int) => Ok(false),
    }
}

/// Serves until SIGTERM, SIGINT or `POST /drain`, then drains: not ready, no new service
/// listeners, and in-flight work gets the configured grace period.
async fn shut_down(
    mut signals: Signals,
    mut drain_rx: mpsc::Receiver<()>,
    state: &AdminState,
    listening: Listening,
) {
    tokio::select! {
        Some(()) = recv_opt(&mut signals.term) => tracing::info!("SIGTERM: draining"),
        Some(()) = recv_opt(&mut signals.int) => tracing::info!("SIGINT: draining"),
        Some(()) = drain_rx.recv() => tracing::info!("drain requested on the admin port"),
    }
    state.ready.store(false, Ordering::Release);
    listening.services.release_drain();
    let grace = state.store.load().config.timeouts.shutdown_grace;
    if listening.drain.drain(grace).await {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!(
            ?grace,
            "grace period over with work still in flight; exiting"
        );
    }
}

async fn recv_opt(sig: &mut Option<Signal>) -> Option<()> {
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

/// One worker per CPU the process may use.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

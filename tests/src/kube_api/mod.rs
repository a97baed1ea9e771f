//! A Kubernetes API server for tests: the wire protocol of the resources Tandem uses, over
//! HTTPS with bearer-token authentication, held to the protocol by running the real client
//! library (kube-rs) and `kubectl` against it (`tests/tests/kube_api.rs`).
//!
//! [`KubeApi::start`] serves on `127.0.0.1:0` and writes a kubeconfig (CA, server, token) to
//! a temporary directory; the handle seeds, reads and changes objects directly, registers
//! ServiceAccount tokens for `TokenReview`, pauses watch delivery and forces a compaction so
//! the next watch from an older version gets `410 Gone`. The `tandem-kube-api` binary runs
//! the same server for a person with `kubectl`.
//!
//! Layout, one concern per file: [`resources`] (the served types), [`store`] (objects,
//! versions, the event log), [`watch`] (streams), [`patch`], [`selector`], [`tokenreview`],
//! [`discovery`], [`http`] (URLs and verbs to operations), [`tls`] (certificates and the
//! kubeconfig), [`error`] (the `Status` wire form). What it leaves out is in
//! `docs/kubernetes.md`, "The Kubernetes API test server".

pub mod discovery;
pub mod error;
pub mod http;
pub mod patch;
pub mod resources;
pub mod selector;
pub mod store;
pub mod tls;
pub mod tokenreview;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use error::ApiError;
use store::{Part, Store};
use tokenreview::Tokens;

use crate::bins::Bin;

/// The `tandem-kube-api` binary (this package).
pub const BIN: Bin = Bin {
    package: "tandem-tests",
    name: "tandem-kube-api",
    env: "TANDEM_KUBE_API_BIN",
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Binding, or writing the kubeconfig.
    #[error("test API server: {0}")]
    Io(#[from] std::io::Error),
    /// Certificates or TLS configuration.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// How to start the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen; `127.0.0.1:0` by default.
    pub bind: SocketAddr,
    /// How often a watch that allows bookmarks gets one (a real server: about a minute).
    pub bookmark_interval: Duration,
    /// Where to write `kubeconfig` and `ca.pem`; a fresh temporary directory (removed when
    /// the handle is dropped) when `None`.
    pub dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            bookmark_interval: Duration::from_secs(1),
            dir: None,
        }
    }
}

/// A running test API server; stops (and removes its temporary directory) when dropped.
#[derive(Debug)]
pub struct KubeApi {
    addr: SocketAddr,
    dir: PathBuf,
    owns_dir: bool,
    kubeconfig: PathBuf,
    token: String,
    ca_pem: String,
    store: Arc<Store>,
    tokens: Arc<Tokens>,
    _server: crate::AbortOnDrop,
}

static INSTANCES: AtomicU64 = AtomicU64::new(0);

impl KubeApi {
    /// Starts a server with the default [`Options`].
    pub async fn start() -> Result<Self, StartError> {
        Self::start_with(Options::default()).await
    }

    /// Starts a server: binds, writes the kubeconfig, and accepts connections in a task. It
    /// is ready when this returns.
    pub async fn start_with(options: Options) -> Result<Self, StartError> {
        let certs = tls::generate()?;
        let listener = TcpListener::bind(options.bind).await?;
        let addr = listener.local_addr()?;
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let (dir, owns_dir) = match options.dir {
            Some(dir) => (dir, false),
            None => (
                std::env::temp_dir().join(format!("tandem-kube-api-{}-{n}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&dir)?;
        let token = format!("tandem-test-admin-{:016x}", store::random_u64(n));
        let url = format!("https://{addr}");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, tls::kubeconfig(&url, &certs.ca_pem, &token))?;
        std::fs::write(dir.join("ca.pem"), &certs.ca_pem)?;

        let store = Arc::new(Store::new());
        let tokens = Arc::new(Tokens::default());
        let server = Arc::new(http::Server {
            store: store.clone(),
            tokens: tokens.clone(),
            admin_token: token.clone(),
            bookmark_every: options.bookmark_interval,
            address: addr.to_string(),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(certs.server.clone());
        let task = tokio::spawn(accept(listener, acceptor, server));
        Ok(Self {
            addr,
            dir,
            owns_dir,
            kubeconfig,
            token,
            ca_pem: certs.ca_pem,
            store,
            tokens,
            _server: crate::AbortOnDrop(task),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The kubeconfig file that reaches this server.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The directory holding `kubeconfig` and `ca.pem`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bearer token the kubeconfig carries.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The CA certificate (PEM) the server's certificate chains to.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store.current_rv()
    }

    /// Creates `object` (its namespace from its metadata, `default` if none), as a POST would.
    pub fn create(
        &self,
        api_version: &str,
        plural: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        let ty = find(api_version, plural)?;
        self.store.create(ty, None, object)
    }

    /// The object `namespace/name` (`namespace` is ignored for cluster-scoped types).
    pub fn get(
        &self,
        api_version: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let ty = find(api_version, plural)?;
        self.store.get(ty, scope(ty, namespace), name)
    }

    /// Every object of the type, in `namespace` or in all namespaces.
    pub fn list(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        let ty = find(api_version, plural)?;
        let page = self.store.list(
            ty,
            namespace,
            &Default::default(),
            &Default::default(),
            None,
            None,
        )?;
        Ok(page.items)
    }

    /// Replaces the object named by `object`'s metadata (a PUT; its `resourceVersion`, when
    /// set, must be the stored one).
    pub fn replace(
        &self,
        api_version: &str,
        plural: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        self.write(api_version, plural, object, Part::Main)
    }

    /// Replaces the status of the object named by `object`'s metadata (the `status`
    /// subresource).
    pub fn replace_status(
        &self,
        api_version: &str,
        plural: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        self.write(api_version, plural, object, Part::Status)
    }

    fn write(
        &self,
        api_version: &str,
        plural: &str,
        object: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        let ty = find(api_version, plural)?;
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        self.store.update(ty, scope(ty, &ns), &name, object, part)
    }

    /// Applies a JSON merge patch to `namespace/name`.
    pub fn merge_patch(
        &self,
        api_version: &str,
        plural: &str,
        namespace: &str,
        name: &str,
        merge: Value,
    ) -> Result<Value, ApiError> {
        let ty = find(api_version, plural)?;
        self.store.modify(
            ty,
            scope(ty, namespace),
            name,
            Part::Main,
            |cur| patch::apply(patch::PatchType::Merge, cur, &merge),
            None,
        )
    }

    /// Deletes `namespace/name`, returning its last state.
    pub fn delete(
        &self,
        api_version: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let ty = find(api_version, plural)?;
        self.store.delete(ty, scope(ty, namespace), name, None)
    }

    /// Compacts the event log at the current version: a watch from an older version gets
    /// `410 Gone`, and so does every open watch not yet sent everything up to now (one held
    /// back by [`KubeApi::pause_watches`]). Returns the compaction point.
    pub fn compact(&self) -> u64 {
        self.store.compact()
    }

    /// Holds back (`true`) or releases (`false`) live events on every open watch. Writes made
    /// while paused and then compacted are never streamed: a watcher must relist to see them.
    pub fn pause_watches(&self, paused: bool) {
        self.store.pause_watches(paused);
    }

    /// Declares `token` a ServiceAccount token of `namespace/service_account` valid for
    /// `audiences`, for `TokenReview` (and for calling this API, when the audiences include
    /// [`tokenreview::API_SERVER_AUDIENCE`]).
    pub fn register_token(
        &self,
        token: &str,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
    ) {
        self.tokens
            .register(token, namespace, service_account, audiences);
    }

    /// Makes `token` invalid from now on.
    pub fn revoke_token(&self, token: &str) {
        self.tokens.revoke(token);
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        if self.owns_dir {
            // Best effort: a leftover temporary directory harms nothing.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn find(api_version: &str, plural: &str) -> Result<&'static resources::ResourceType, ApiError> {
    resources::by_api_version(api_version, plural)
        .ok_or_else(|| ApiError::unknown_type(api_version, plural))
}

fn scope<'a>(ty: &resources::ResourceType, namespace: &'a str) -> &'a str {
    if ty.namespaced {
        namespace
    } else {
        ""
    }
}

/// Accepts connections until aborted; each connection (TLS, then HTTP/1.1 or HTTP/2) runs in
/// the set, so aborting this task closes them all.
async fn accept(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    server: Arc<http::Server>,
) {
    let mut connections = JoinSet::new();
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(conn) => conn,
            // Out of descriptors or the like: try again rather than stop serving.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let server = server.clone();
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| http::serve(server.clone(), req));
            // A connection error ends that connection only.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

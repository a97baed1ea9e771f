//! A gRPC upstream (`grpc.health.v1.Health` from `tonic-health`) and a client for it.
//!
//! The server is served by hyper's HTTP/2 server directly (no tonic router), and the
//! client connects to the proxy while naming the service in `:authority`. A named server
//! ([`GrpcHealthServer::start_named`]) tags its responses with [`upstream::SERVER`], so a
//! test can tell which backend answered a call ([`answered_by`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::server::HealthReporter;
pub use tonic_health::ServingStatus;

use crate::{upstream, AbortOnDrop};

/// A running Health service; stops when dropped.
#[derive(Debug)]
pub struct GrpcHealthServer {
    addr: SocketAddr,
    reporter: HealthReporter,
    requests: Arc<AtomicU64>,
    _task: AbortOnDrop,
}

impl GrpcHealthServer {
    /// Binds `127.0.0.1:0` and serves `grpc.health.v1.Health` over h2c. The overall
    /// service `""` starts `SERVING`; register more with [`GrpcHealthServer::set`].
    pub async fn start() -> GrpcHealthServer {
        Self::serve(None).await
    }

    /// Like [`GrpcHealthServer::start`], and every response (headers, so also a
    /// trailers-only error) carries `x-server: NAME` ([`upstream::SERVER`]), as the HTTP
    /// test upstreams' do.
    pub async fn start_named(name: &str) -> GrpcHealthServer {
        let value = http::HeaderValue::from_str(name).expect("server name is a header value");
        Self::serve(Some(value)).await
    }

    async fn serve(name: Option<http::HeaderValue>) -> GrpcHealthServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let addr = listener.local_addr().expect("local addr");
        let (reporter, service) = tonic_health::server::health_reporter();
        let requests = Arc::new(AtomicU64::new(0));
        let service = Tagged {
            inner: service,
            name,
            requests: requests.clone(),
        };
        let task = tokio::spawn(serve_h2c(listener, service));
        GrpcHealthServer {
            addr,
            reporter,
            requests,
            _task: AbortOnDrop(task),
        }
    }

    /// Calls received so far (every RPC, streaming ones counted once when they start).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the status of `service` (registering it if new); watchers are notified.
    pub async fn set(&self, service: &str, status: ServingStatus) {
        self.reporter.set_service_status(service, status).await;
    }
}

/// Counts calls and, when named, adds `x-server: NAME` to every response.
#[derive(Debug, Clone)]
struct Tagged<S> {
    inner: S,
    name: Option<http::HeaderValue>,
    requests: Arc<AtomicU64>,
}

impl<S, Req, B> tower::Service<Req> for Tagged<S>
where
    S: tower::Service<Req, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<B>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let name = self.name.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            if let Some(name) = name {
                resp.headers_mut().insert(upstream::SERVER, name);
            }
            Ok(resp)
        })
    }
}

/// The server that answered a call: the `x-server` metadata a named server
/// ([`GrpcHealthServer::start_named`]) sets; panics when absent.
pub fn answered_by<T>(resp: &tonic::Response<T>) -> String {
    match resp.metadata().get(upstream::SERVER) {
        Some(v) => v.to_str().expect("x-server is ASCII").to_owned(),
        None => panic!(
            "no {} metadata in the response: {:?}",
            upstream::SERVER,
            resp.metadata()
        ),
    }
}

/// A Health client whose channel connects to `proxy` with `:authority: <service>`.
pub async fn health_client(proxy: SocketAddr, service: &str) -> HealthClient<Channel> {
    let origin: http::Uri = format!("http://{service}").parse().expect("valid origin");
    let channel = Endpoint::from_shared(format!("http://{proxy}"))
        .expect("valid endpoint")
        .origin(origin)
        .connect_timeout(crate::STEP_TIMEOUT)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("gRPC channel to {proxy}: {e}"));
    HealthClient::new(channel)
}

/// Serves a tonic (tower) service as h2c on `listener` until the task is aborted: the
/// accept loop every gRPC test server here shares.
pub async fn serve_h2c<S, B>(listener: TcpListener, service: S)
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let svc = TowerToHyperService::new(service.clone());
                conns.spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

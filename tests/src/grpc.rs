//! A gRPC upstream (`grpc.health.v1.Health` from `tonic-health`) and a client for it.
//!
//! The server is served by hyper's HTTP/2 server directly (no tonic router), and the
//! client connects to the proxy while naming the service in `:authority`.

use std::net::SocketAddr;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::server::HealthReporter;
pub use tonic_health::ServingStatus;

use crate::AbortOnDrop;

/// A running Health service; stops when dropped.
#[derive(Debug)]
pub struct GrpcHealthServer {
    addr: SocketAddr,
    reporter: HealthReporter,
    _task: AbortOnDrop,
}

impl GrpcHealthServer {
    /// Binds `127.0.0.1:0` and serves `grpc.health.v1.Health` over h2c. The overall
    /// service `""` starts `SERVING`; register more with [`GrpcHealthServer::set`].
    pub async fn start() -> GrpcHealthServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let addr = listener.local_addr().expect("local addr");
        let (reporter, service) = tonic_health::server::health_reporter();
        let task = tokio::spawn(serve_h2c(listener, service));
        GrpcHealthServer {
            addr,
            reporter,
            _task: AbortOnDrop(task),
        }
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

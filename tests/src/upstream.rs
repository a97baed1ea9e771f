//! An HTTP/1.1 + h2c upstream that echoes requests, with a name, status and delay.
//!
//! Each response carries:
//! - [`SERVER`]: the server's name, so a test knows which endpoint answered;
//! - [`ECHO_METHOD`], [`ECHO_PATH`] (path and query), [`ECHO_VERSION`] (`HTTP/1.1` or
//!   `HTTP/2.0`), [`ECHO_HEADERS`] (JSON object: lowercase name → array of values);
//! - the request body as the response body, streamed back frame by frame.
//!
//! A request may override the server's defaults with [`DELAY_MS`] (wait before the
//! response headers) and [`STATUS`]. [`HttpServerBuilder::fail_ratio`] makes an exact
//! share of requests fail with 503, spread evenly over the request sequence.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::client::Body;
use crate::AbortOnDrop;

/// Response header: the name of the server that answered.
pub const SERVER: &str = "x-server";
/// Response header: the request method.
pub const ECHO_METHOD: &str = "x-echo-method";
/// Response header: the request path and query.
pub const ECHO_PATH: &str = "x-echo-path";
/// Response header: the request's HTTP version (`HTTP/1.1`, `HTTP/2.0`).
pub const ECHO_VERSION: &str = "x-echo-version";
/// Response header: the request headers as JSON.
pub const ECHO_HEADERS: &str = "x-echo-headers";
/// Request header: milliseconds to wait before answering.
pub const DELAY_MS: &str = "x-upstream-delay-ms";
/// Request header: the status to answer with.
pub const STATUS: &str = "x-upstream-status";

/// A running echo upstream; stops (listener and connections) when dropped.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    name: String,
    requests: watch::Receiver<u64>,
    connections: watch::Receiver<u64>,
    open: watch::Receiver<u64>,
    _task: AbortOnDrop,
}

/// Options for [`HttpServer`].
#[derive(Debug, Clone)]
pub struct HttpServerBuilder {
    name: String,
    status: StatusCode,
    delay: Duration,
    fail_ratio: f64,
    seen: Arc<AtomicU64>,
}

impl HttpServerBuilder {
    /// The status of every response (default 200).
    pub fn status(mut self, status: u16) -> Self {
        self.status = StatusCode::from_u16(status).expect("valid status");
        self
    }

    /// Answer 503 to this share of requests (0.0–1.0): request n fails when
    /// `floor(n × ratio)` steps up, so any run of requests fails at the exact rate.
    pub fn fail_ratio(mut self, ratio: f64) -> Self {
        self.fail_ratio = ratio;
        self
    }

    /// Wait this long before sending response headers (default none).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start(self) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("local addr");
        let (req_tx, requests) = watch::channel(0u64);
        let (conn_tx, connections) = watch::channel(0u64);
        let (open_tx, open) = watch::channel(0u64);
        let open_tx = Arc::new(open_tx);
        let opts = Arc::new(self.clone());
        let req_tx = Arc::new(req_tx);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        conn_tx.send_modify(|n| *n += 1);
                        open_tx.send_modify(|n| *n += 1);
                        let _ = stream.set_nodelay(true);
                        let opts = opts.clone();
                        let req_tx = req_tx.clone();
                        let open_tx = open_tx.clone();
                        conns.spawn(async move {
                            let svc = service_fn(move |req| {
                                req_tx.send_modify(|n| *n += 1);
                                handle(opts.clone(), req)
                            });
                            let mut builder = auto::Builder::new(TokioExecutor::new());
                            builder.http1().timer(TokioTimer::new());
                            builder.http2().timer(TokioTimer::new());
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await;
                            open_tx.send_modify(|n| *n -= 1);
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        HttpServer {
            addr,
            name: self.name,
            requests,
            connections,
            open,
            _task: AbortOnDrop(task),
        }
    }
}

impl HttpServer {
    /// Options for a server named `name` (its [`SERVER`] header).
    pub fn builder(name: &str) -> HttpServerBuilder {
        HttpServerBuilder {
            name: name.to_owned(),
            status: StatusCode::OK,
            delay: Duration::ZERO,
            fail_ratio: 0.0,
            seen: Arc::new(AtomicU64::new(0)),
        }
    }

    /// An echo server named `name` answering 200 at once.
    pub async fn echo(name: &str) -> HttpServer {
        Self::builder(name).start().await
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests received so far (counted when the request head arrives).
    pub fn requests(&self) -> u64 {
        *self.requests.borrow()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        *self.connections.borrow()
    }

    /// Connections currently open (accepted and not yet closed by either side).
    pub fn open_connections(&self) -> u64 {
        *self.open.borrow()
    }

    /// Waits (bounded) until at least `n` requests have arrived.
    pub async fn wait_requests(&self, n: u64, limit: Duration) {
        let mut rx = self.requests.clone();
        crate::within(
            limit,
            &format!("upstream {} to see {n} requests", self.name),
            async {
                rx.wait_for(|c| *c >= n).await.expect("server task alive");
            },
        )
        .await;
    }
}

async fn handle(
    opts: Arc<HttpServerBuilder>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let header_num = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let delay = header_num(DELAY_MS)
        .map(Duration::from_millis)
        .unwrap_or(opts.delay);
    let n = opts.seen.fetch_add(1, Ordering::Relaxed) + 1;
    let fails = opts.fail_ratio > 0.0
        && ((n as f64) * opts.fail_ratio).floor() > ((n - 1) as f64 * opts.fail_ratio).floor();
    let status = header_num(STATUS)
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(if fails {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            opts.status
        });

    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let json = serde_json::to_string(&headers).unwrap_or_default();
    let json: String = json
        .chars()
        .map(|c| if c.is_ascii() { c } else { '?' })
        .collect();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());

    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut resp = Response::builder()
        .status(status)
        .header(SERVER, opts.name.as_str())
        .header(ECHO_METHOD, req.method().as_str())
        .header(ECHO_PATH, path)
        .header(ECHO_VERSION, format!("{:?}", req.version()))
        .body(req.into_body().map_err(Into::into).boxed())
        .expect("valid response");
    if let Ok(v) = HeaderValue::from_str(&json) {
        resp.headers_mut().insert(ECHO_HEADERS, v);
    }
    Ok(resp)
}

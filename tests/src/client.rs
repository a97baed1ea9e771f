//! HTTP clients that send everything to one address (the proxy) whatever the URI says.
//!
//! With [`http1`] and [`h2`] a request for `http://echo/path` opens its connection to the
//! proxy and carries `Host: echo` (HTTP/1.1, origin-form target) or `:authority: echo`
//! (HTTP/2), which is how an app addresses a service in explicit mode.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Boxed error used by bodies and clients.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body type of every client here.
pub type Body = BoxBody<Bytes, BoxError>;

/// A pooling client whose connections all go to one fixed address.
pub type ProxyClient = Client<FixedConnector, Body>;

/// A body with the given bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A streaming body fed through the returned sender; the body ends when it is dropped.
pub fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok::<_, BoxError>(Frame::data(b))))
    });
    (tx, StreamBody::new(stream).boxed())
}

/// A `tower::Service<Uri>` connector that ignores the URI and dials a fixed address.
#[derive(Debug, Clone, Copy)]
pub struct FixedConnector(pub SocketAddr);

impl tower::Service<http::Uri> for FixedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let addr = self.0;
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// An HTTP/1.1 client (keep-alive pool) whose connections go to `addr`.
pub fn http1(addr: SocketAddr) -> ProxyClient {
    Client::builder(TokioExecutor::new()).build(FixedConnector(addr))
}

/// An HTTP/2 prior-knowledge (h2c) client whose connections go to `addr`.
pub fn h2(addr: SocketAddr) -> ProxyClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(FixedConnector(addr))
}

/// Builds a request; `uri` is absolute (`http://service/path`).
pub fn request(method: &str, uri: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .expect("valid request")
}

/// Sends `req` and collects the whole response body.
pub async fn send(client: &ProxyClient, req: Request<Body>) -> Result<Response<Bytes>, BoxError> {
    let resp = client.request(req).await?;
    collect(resp).await
}

/// Collects a response body into `Bytes`.
pub async fn collect(resp: Response<Incoming>) -> Result<Response<Bytes>, BoxError> {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, body))
}

/// One `GET path` with `Host: host` on a fresh HTTP/1.1 connection to `addr`.
pub async fn get_once(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<Response<Bytes>, BoxError> {
    let mut sender = h1_connect(addr).await?;
    let req = Request::builder()
        .uri(path)
        .header(http::header::HOST, host)
        .body(empty())?;
    let resp = sender.send_request(req).await?;
    collect(resp).await
}

/// A single HTTP/1.1 connection to `addr` (the request URI is sent as given, so give an
/// origin-form path plus a `Host` header, or an absolute URI for absolute-form).
pub async fn h1_connect(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Body>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A single HTTP/2 prior-knowledge connection to `addr`; clone the sender for
/// concurrent streams on that one connection.
pub async fn h2_connect(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http2::SendRequest<Body>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A response header as a string (panics if it is not valid UTF-8).
pub fn header<'a, B>(resp: &'a Response<B>, name: &str) -> Option<&'a str> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("header is visible ASCII"))
}

/// The request headers the echo upstream saw (its `x-echo-headers` JSON), names lowercase.
pub fn echoed_headers<B>(resp: &Response<B>) -> HashMap<String, Vec<String>> {
    let raw = header(resp, crate::upstream::ECHO_HEADERS).unwrap_or_else(|| {
        panic!(
            "response has no {} header (not from the echo upstream?): {:?}",
            crate::upstream::ECHO_HEADERS,
            resp.headers()
        )
    });
    serde_json::from_str(raw).expect("x-echo-headers is a JSON object of string arrays")
}

/// The header on every response the proxy makes itself.
pub const ERROR_HEADER: &str = "tandem-proxy-error";

/// Asserts a proxy-made error: `status`, the [`ERROR_HEADER`], and a one-line body.
pub fn assert_proxy_error<B: AsRef<[u8]>>(resp: &Response<B>, status: u16) {
    let body = String::from_utf8_lossy(resp.body().as_ref()).into_owned();
    assert_eq!(
        resp.status(),
        status,
        "headers {:?}, body {body:?}",
        resp.headers()
    );
    assert!(
        resp.headers().contains_key(ERROR_HEADER),
        "no {ERROR_HEADER} header: {:?}",
        resp.headers()
    );
    assert!(!body.trim().is_empty(), "error body names the reason");
    assert_eq!(
        body.trim_end().lines().count(),
        1,
        "one-line body: {body:?}"
    );
}

/// Reads body frames until `want.len()` bytes arrived (bounded); they must equal `want`.
pub async fn expect_body_bytes(body: &mut Incoming, want: &[u8]) {
    let mut got = Vec::new();
    crate::within(std::time::Duration::from_secs(5), "echoed chunk", async {
        while got.len() < want.len() {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        got.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => panic!("response body error: {e}"),
                None => panic!(
                    "response body ended after {:?}",
                    String::from_utf8_lossy(&got)
                ),
            }
        }
    })
    .await;
    assert_eq!(got, want, "echoed bytes");
}

/// Streams a request body to the echo upstream at `uri` in chunks, reading each chunk's
/// echo before sending the next: passes only if nothing on the path buffers the whole
/// body (in either direction).
pub async fn assert_streaming_echo(client: &ProxyClient, uri: &str) {
    let (tx, body) = channel_body();
    let req = request("POST", uri, body);
    tx.send(Bytes::from_static(b"chunk-one;"))
        .await
        .expect("body open");
    let resp = crate::within(
        crate::STEP_TIMEOUT,
        "response headers while the body streams",
        client.request(req),
    )
    .await
    .unwrap_or_else(|e| panic!("{uri}: {e}"));
    assert_eq!(resp.status(), 200, "{uri}");
    let mut body = resp.into_body();
    expect_body_bytes(&mut body, b"chunk-one;").await;
    tx.send(Bytes::from_static(b"chunk-two;"))
        .await
        .expect("body open");
    expect_body_bytes(&mut body, b"chunk-two;").await;
    tx.send(Bytes::from_static(b"chunk-three"))
        .await
        .expect("body open");
    drop(tx);
    expect_body_bytes(&mut body, b"chunk-three").await;
    let rest = crate::within(
        std::time::Duration::from_secs(5),
        "end of body",
        body.collect(),
    )
    .await
    .unwrap_or_else(|e| panic!("{uri}: {e}"))
    .to_bytes();
    assert!(rest.is_empty(), "{uri}: unexpected trailing bytes {rest:?}");
}

//! Traces and access logs from real proxies: spans received by a real OTLP receiver with
//! their parent/child chain across two sidecars, W3C and B3 context in and out, sampling
//! decisions followed, a dead collector that fails no request, and access log lines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tandem_tests::client;
use tandem_tests::control_plane::TempDir;
use tandem_tests::otlp::{OtlpReceiver, ReceivedSpan};
use tandem_tests::upstream::HttpServer;
use tandem_tests::{eventually, Proxy};

const SPANS: Duration = Duration::from_secs(15);
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The caller's sidecar ("web", calling "api" on the server's sidecar) and the server's
/// ("api", in front of `app`), both exporting to `otlp` with `extra` flags.
async fn two_sidecars(app: &HttpServer, otlp: &OtlpReceiver, extra: &[&str]) -> (Proxy, Proxy) {
    let url = otlp.url();
    let port = app.addr().port().to_string();
    let mut args = vec![
        "--trace-collector",
        url.as_str(),
        "--app-port",
        port.as_str(),
    ];
    args.extend_from_slice(extra);
    let server = Proxy::start("service: api\nservices: []\n", &args).await;
    let cfg = format!(
        "service: web\nservices:\n  - name: api\n    endpoints:\n      - {}\n",
        server.inbound()
    );
    let mut args = vec!["--trace-collector", url.as_str()];
    args.extend_from_slice(extra);
    let caller = Proxy::start(&cfg, &args).await;
    (caller, server)
}

/// Sends GET `uri` through `proxy` with `headers`; returns the headers the app received.
async fn get(
    proxy: SocketAddr,
    uri: &str,
    headers: &[(&str, &str)],
) -> std::collections::HashMap<String, Vec<String>> {
    let client = client::http1(proxy);
    let mut req = client::request("GET", uri, client::empty());
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let resp = client::send(&client, req).await.expect("request");
    assert_eq!(resp.status(), 200, "{uri}");
    client::echoed_headers(&resp)
}

fn by_kind<'a>(spans: &'a [ReceivedSpan], kind: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} span in {spans:#?}"))
}

/// `00-<trace>-<span>-<flags>` → (trace, span, flags).
fn traceparent(v: &str) -> (String, String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {v:?}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_chain_across_two_sidecars_and_reach_the_app_as_its_parent() {
    let app = HttpServer::echo("api").await;
    let otlp = OtlpReceiver::start().await;
    // Sampling 0 for new traces: only the caller's decision makes spans here.
    let (caller, server) = two_sidecars(&app, &otlp, &["--trace-sampling", "0"]).await;

    let parent = format!("00-{TRACE}-00f067aa0ba902b7-01");
    let seen = get(
        caller.outbound(),
        "http://api/items?page=2",
        &[("traceparent", &parent), ("tracestate", "vendor=1")],
    )
    .await;
    let spans = otlp.wait_trace(TRACE, 2, SPANS).await;
    assert_eq!(spans.len(), 2, "one span per proxy hop: {spans:#?}");
    let client_span = by_kind(&spans, "SPAN_KIND_CLIENT");
    let server_span = by_kind(&spans, "SPAN_KIND_SERVER");
    // The chain: app's span → caller's sidecar (client) → server's sidecar (server) → app.
    assert_eq!(client_span.parent_span_id, "00f067aa0ba902b7");
    assert_eq!(server_span.parent_span_id, client_span.span_id);
    let (trace, app_parent, flags) = traceparent(&seen["traceparent"][0]);
    assert_eq!(trace, TRACE);
    assert_eq!(
        app_parent, server_span.span_id,
        "the app's parent is the last hop"
    );
    assert_eq!(flags, "01");
    assert_eq!(seen["tracestate"], ["vendor=1"], "tracestate travels on");
    assert_eq!(seen["traceparent"].len(), 1);

    // OpenTelemetry's HTTP conventions, and the mesh's own names.
    assert_eq!(client_span.service, "web");
    assert_eq!(server_span.service, "api");
    for span in [client_span, server_span] {
        assert_eq!(span.name, "GET");
        assert_eq!(span.attr("http.request.method"), Some("GET"));
        assert_eq!(span.attr("http.response.status_code"), Some("200"));
        assert_eq!(span.attr("url.path"), Some("/items"));
        assert_eq!(span.attr("url.query"), Some("page=2"));
        assert_eq!(span.attr("network.protocol.version"), Some("1.1"));
        assert_ne!(span.status, "STATUS_CODE_ERROR");
    }
    assert_eq!(client_span.attr("server.address"), Some("api"));
    assert_eq!(client_span.attr("tandem.dst_service"), Some("api"));
    assert_eq!(
        client_span.attr("url.full"),
        Some("http://api/items?page=2")
    );
    let inbound = server.inbound();
    assert_eq!(
        client_span.attr("network.peer.port"),
        Some(inbound.port().to_string().as_str())
    );
    assert_eq!(
        server_span.attr("network.peer.port"),
        Some(app.addr().port().to_string().as_str())
    );

    // Not sampled by the caller: no spans, and the decision travels on.
    let unsampled = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let seen = get(
        caller.outbound(),
        "http://api/quiet",
        &[(
            "traceparent",
            &format!("00-{unsampled}-00f067aa0ba902b7-00"),
        )],
    )
    .await;
    let (trace, _, flags) = traceparent(&seen["traceparent"][0]);
    assert_eq!((trace.as_str(), flags.as_str()), (unsampled, "00"));
    // A sampled request after it: its spans arriving means the unsampled ones, queued
    // earlier on the same path, would have too.
    let later = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    get(
        caller.outbound(),
        "http://api/later",
        &[("traceparent", &format!("00-{later}-00f067aa0ba902b7-01"))],
    )
    .await;
    otlp.wait_trace(later, 2, SPANS).await;
    assert!(otlp.trace(unsampled).is_empty(), "unsampled trace exported");
    // Sampling 0 and no context: a new trace, not sampled, no spans.
    let seen = get(caller.outbound(), "http://api/new", &[]).await;
    let (trace, _, flags) = traceparent(&seen["traceparent"][0]);
    assert_eq!(flags, "00");
    assert_ne!(trace, "0".repeat(32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_context_is_accepted_and_answered_in_kind() {
    let app = HttpServer::echo("api").await;
    let otlp = OtlpReceiver::start().await;
    let (caller, _server) = two_sidecars(&app, &otlp, &["--trace-sampling", "0"]).await;

    let seen = get(
        caller.outbound(),
        "http://api/b3",
        &[("b3", &format!("{TRACE}-1111111111111111-1"))],
    )
    .await;
    let spans = otlp.wait_trace(TRACE, 2, SPANS).await;
    let client_span = by_kind(&spans, "SPAN_KIND_CLIENT");
    let server_span = by_kind(&spans, "SPAN_KIND_SERVER");
    assert_eq!(client_span.parent_span_id, "1111111111111111");
    assert_eq!(server_span.parent_span_id, client_span.span_id);
    assert_eq!(
        seen["b3"],
        [format!("{TRACE}-{}-1", server_span.span_id)],
        "B3 in, B3 out"
    );
    let (_, parent, _) = traceparent(&seen["traceparent"][0]);
    assert_eq!(parent, server_span.span_id);

    // The multi-header form, a 64-bit trace id.
    let seen = get(
        caller.outbound(),
        "http://api/b3multi",
        &[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "2222222222222222"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    let trace = "0000000000000000a3ce929d0e0e4736";
    let spans = otlp.wait_trace(trace, 2, SPANS).await;
    let server_span = by_kind(&spans, "SPAN_KIND_SERVER");
    assert_eq!(seen["x-b3-traceid"], [trace]);
    assert_eq!(
        seen["x-b3-spanid"],
        std::slice::from_ref(&server_span.span_id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_traces_are_sampled_by_ratio_and_errors_are_marked() {
    let app = HttpServer::echo("api").await;
    let otlp = OtlpReceiver::start().await;
    let (caller, _server) = two_sidecars(&app, &otlp, &["--trace-sampling", "1"]).await;

    let seen = get(caller.outbound(), "http://api/root", &[]).await;
    let (trace, app_parent, flags) = traceparent(&seen["traceparent"][0]);
    assert_eq!(flags, "01");
    let spans = otlp.wait_trace(&trace, 2, SPANS).await;
    let client_span = by_kind(&spans, "SPAN_KIND_CLIENT");
    let server_span = by_kind(&spans, "SPAN_KIND_SERVER");
    assert_eq!(
        client_span.parent_span_id, "",
        "the caller's sidecar starts the trace"
    );
    assert_eq!(server_span.parent_span_id, client_span.span_id);
    assert_eq!(app_parent, server_span.span_id);

    // A 503 the app answers marks both spans failed; an unknown service the proxy
    // answers itself carries the proxy's error kind.
    let client = client::http1(caller.outbound());
    let mut req = client::request("GET", "http://api/fail", client::empty());
    req.headers_mut()
        .insert(tandem_tests::upstream::STATUS, "503".parse().unwrap());
    req.headers_mut().insert(
        "traceparent",
        format!("00-{TRACE}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    assert_eq!(client::send(&client, req).await.unwrap().status(), 503);
    let spans = otlp.wait_trace(TRACE, 2, SPANS).await;
    for span in &spans {
        assert_eq!(span.status, "STATUS_CODE_ERROR", "{span:#?}");
        assert_eq!(span.attr("error.type"), Some("503"));
    }
    let t2 = "cccccccccccccccccccccccccccccccc";
    let mut req = client::request("GET", "http://nowhere/", client::empty());
    req.headers_mut().insert(
        "traceparent",
        format!("00-{t2}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    assert_eq!(client::send(&client, req).await.unwrap().status(), 503);
    let spans = otlp.wait_trace(t2, 1, SPANS).await;
    assert_eq!(spans[0].attr("error.type"), Some("unknown_service"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_fails_no_request() {
    let app = HttpServer::echo("app").await;
    // A port with nothing behind it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = format!(
        "service: web\nservices:\n  - name: app\n    endpoints:\n      - {}\n",
        app.addr()
    );
    let url = format!("http://{dead}");
    let proxy = Proxy::start(&cfg, &["--trace-collector", &url, "--trace-sampling", "1"]).await;
    let client = client::http1(proxy.outbound());
    for i in 0..200 {
        let req = client::request("GET", &format!("http://app/{i}"), client::empty());
        assert_eq!(client::send(&client, req).await.unwrap().status(), 200);
    }
    eventually(SPANS, "failed exports to be counted", || async {
        let failed = proxy
            .metrics()
            .await
            .value("tandem_trace_spans_total", &[("result", "failed")]);
        if failed >= 1.0 {
            Ok(())
        } else {
            Err(format!("failed={failed}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_json_line_per_request() {
    let app = HttpServer::echo("app").await;
    let dir = TempDir::new("access-log");
    let log = dir.path().join("access.log");
    let log_arg = log.display().to_string();
    let cfg = format!(
        "service: web\nservices:\n  - name: app\n    endpoints:\n      - {}\n",
        app.addr()
    );
    let proxy = Proxy::start(&cfg, &["--access-log", &log_arg]).await;
    let client = client::http1(proxy.outbound());
    let mut req = client::request("POST", "http://app/orders?id=7", client::full("hello"));
    req.headers_mut()
        .insert("user-agent", "observability-test/1".parse().unwrap());
    req.headers_mut()
        .insert("x-request-id", "req-42".parse().unwrap());
    assert_eq!(client::send(&client, req).await.unwrap().status(), 200);
    let req = client::request("GET", "http://nowhere/x", client::empty());
    assert_eq!(client::send(&client, req).await.unwrap().status(), 503);
    // A body streamed without Content-Length is counted as it is read.
    let (chunks, body) = client::channel_body();
    let req = client::request("PUT", "http://app/stream", body);
    let sent = tokio::spawn(async move {
        for chunk in ["ab", "cde", "f"] {
            chunks.send(bytes::Bytes::from(chunk)).await.unwrap();
        }
    });
    let resp = client::send(&client, req).await.unwrap();
    sent.await.unwrap();
    assert_eq!(resp.status(), 200);

    let lines = eventually(SPANS, "three access log lines", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        if lines.len() >= 3 {
            Ok(lines)
        } else {
            Err(format!("{} lines: {text}", lines.len()))
        }
    })
    .await;
    assert_eq!(lines.len(), 3);
    let ok = &lines[0];
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["authority"], "app");
    assert_eq!(ok["path"], "/orders?id=7");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["direction"], "outbound");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["request_bytes"], 5);
    assert_eq!(ok["response_bytes"], 5, "the echo's body");
    assert_eq!(ok["upstream"], app.addr().to_string());
    assert_eq!(ok["dst_service"], "app");
    assert_eq!(ok["retries"], 0);
    assert_eq!(ok["user_agent"], "observability-test/1");
    assert_eq!(ok["request_id"], "req-42");
    assert!(ok["response_flag"].is_null());
    assert!(ok["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(ok["time"].as_str().unwrap().ends_with('Z'));
    let failed = &lines[1];
    assert_eq!(failed["status"], 503);
    assert_eq!(failed["response_flag"], "unknown_service");
    assert!(failed["upstream"].is_null());
    let streamed = &lines[2];
    assert_eq!(streamed["method"], "PUT");
    assert_eq!(streamed["request_bytes"], 6, "{streamed}");
    assert_eq!(streamed["response_bytes"], 6);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics.value("tandem_access_log_lines_total", &[("result", "written")]),
        3.0
    );
}

/// `api` with one HTTP port and the access log annotation set to `log` (none: absent).
fn api_service(log: Option<&str>) -> String {
    let annotations = log
        .map(|l| format!(", annotations: {{ \"config.tandem.dev/access-log\": \"{l}\" }}"))
        .unwrap_or_default();
    format!(
        "apiVersion: tandem.dev/v1alpha1\nkind: Service\n\
         metadata: {{ name: api, namespace: default{annotations} }}\n\
         spec:\n  ports:\n    - {{ port: 80, name: main, protocol: http }}\n"
    )
}

fn lines_of(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

async fn call_api(web: &Proxy, path: &str) -> u16 {
    let pool = client::http1(web.outbound());
    let req = client::request("GET", &format!("http://api{path}"), client::empty());
    client::send(&pool, req).await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_access_log_is_switched_from_the_control_plane() {
    use tandem_tests::control_plane::ControlPlane;
    use tandem_tests::mesh;
    use tandem_tests::traffic::wait_dump;
    use tandem_tests::zero_trust::{register, sidecar, wait_mtls_to};

    let dir = TempDir::new("asked-log");
    let log = dir.path().join("api.log");
    let cp = ControlPlane::start().await;
    // A typo is refused with the field path, and nothing changes.
    let bad = cp.apply(&api_service(Some("logs/api.log"))).await;
    assert!(!bad.status.success(), "a relative path is refused");
    assert!(
        bad.stderr
            .contains("metadata.annotations[\"config.tandem.dev/access-log\"]"),
        "{}",
        bad.stderr
    );
    cp.apply_ok(&mesh::docs(&[mesh::service("web"), api_service(None)]))
        .await;
    let app = HttpServer::echo("api-app").await;
    let api = sidecar(&cp, "api", app.addr().port(), &[]).await;
    register(&cp, "api", api.inbound()).await;
    let web = sidecar(&cp, "web", 1, &[]).await;
    wait_mtls_to(&web, "api").await;
    assert_eq!(call_api(&web, "/before").await, 200);

    // Switched on: api's sidecar logs what it receives, without a restart.
    let log_arg = log.display().to_string();
    cp.apply_ok(&api_service(Some(&log_arg))).await;
    wait_dump(&api, SPANS, "the inbound access log", |d| {
        d["routes"]["inbound"]["access_log"]["file"] == log_arg.as_str()
    })
    .await;
    for i in 0..3 {
        assert_eq!(call_api(&web, &format!("/on/{i}")).await, 200);
    }
    let lines = eventually(SPANS, "three lines", || async {
        let lines = lines_of(&log);
        if lines.len() >= 3 {
            Ok(lines)
        } else {
            Err(format!("{} lines", lines.len()))
        }
    })
    .await;
    assert_eq!(lines.len(), 3, "only requests after the switch: {lines:?}");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["direction"], "inbound");
        assert_eq!(line["path"], format!("/on/{i}"));
        assert_eq!(line["status"], 200);
        assert_eq!(
            line["peer_identity"],
            "spiffe://cluster.local/ns/default/sa/web"
        );
    }
    // The caller's sidecar was not asked: it writes nowhere (its outbound lines would be
    // in the same file, marked outbound).

    // Switched off: no more lines.
    cp.apply_ok(&api_service(Some("off"))).await;
    wait_dump(&api, SPANS, "no inbound access log", |d| {
        d["routes"]["inbound"].is_object() && d["routes"]["inbound"]["access_log"].is_null()
    })
    .await;
    for i in 0..3 {
        assert_eq!(call_api(&web, &format!("/off/{i}")).await, 200);
    }
    // The log is written off the request path: give a stray line the time to land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lines_of(&log).len(), 3, "{:?}", lines_of(&log));
}

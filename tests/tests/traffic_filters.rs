//! Route filters through a real control plane and proxy: fault injection at the
//! configured rates (and not hidden by retries), mirroring that never touches the client's
//! response, header changes, URL rewrites, redirects and route timeouts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tandem_tests::control_plane::ControlPlane;
use tandem_tests::mesh::{endpoint, service};
use tandem_tests::traffic::{burst, fault_injection, percent, route, routes_of, web_b_mesh, Shot};
use tandem_tests::upstream::{self, HttpServer};
use tandem_tests::{client, eventually, within, Proxy, STEP_TIMEOUT};

/// Applies `extra` documents plus `web` → `web-b` (served by `backend`), starts a proxy
/// and waits for route config `web` to satisfy `ready`.
async fn mesh(
    backend: &HttpServer,
    extra: &[String],
    ready: impl Fn(&[serde_json::Value]) -> bool,
) -> (ControlPlane, Proxy) {
    web_b_mesh(&[backend.addr()], extra, |d| ready(routes_of(d, "web"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_injected_at_their_rates_and_retries_do_not_hide_them() {
    let backend = HttpServer::echo("web-b").await;
    let fault = fault_injection(
        "flaky",
        "  abort: { httpStatus: 503, percent: 30 }\n  delay: { fixedDelay: 20ms, percent: 10 }\n",
    );
    let rules = "    - backendRefs: [{ name: web-b, port: 80 }]\n\
                 \x20     filters:\n        - type: ExtensionRef\n          extensionRef: { group: tandem.dev, kind: FaultInjection, name: flaky }\n\
                 \x20     retry: { codes: [503], attempts: 2, backoff: 1ms }\n";
    let (_cp, proxy) = mesh(&backend, &[fault, route("web-faults", "web", rules)], |r| {
        r.first()
            .is_some_and(|r| r["fault"]["abort"]["status"] == 503)
    })
    .await;

    let n = 10_000;
    let t = burst(proxy.outbound(), &Shot::get("http://web/"), n, 16).await;
    let aborted = t.status(503);
    let abort_share = percent(aborted, t.total());
    let m = proxy.metrics().await;
    let delayed = m.value(
        "tandem_faults_injected_total",
        &[("dst_service", "web"), ("kind", "delay")],
    );
    let delay_share = delayed * 100.0 / n as f64;
    println!("faults over {n}: aborted {abort_share:.2} % (want 30), delayed {delay_share:.2} % (want 10)");
    assert_eq!(t.total(), n as u64, "{t:?}");
    assert!(
        (abort_share - 30.0).abs() <= 2.0,
        "abort share {abort_share:.2} %: {t:?}"
    );
    assert!(
        (delay_share - 10.0).abs() <= 2.0,
        "delay share {delay_share:.2} %"
    );
    assert_eq!(
        t.proxy_errors.get("fault injected").copied(),
        Some(aborted),
        "every 503 is an injected abort, marked as such"
    );
    assert_eq!(
        backend.requests(),
        n as u64 - aborted,
        "aborted requests never reach the backend"
    );
    assert_eq!(
        m.value("tandem_retries_total", &[]),
        0.0,
        "injected aborts are not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_traffic_reaches_the_shadow_and_never_the_client() {
    let primary = HttpServer::echo("web-b").await;
    // A shadow that is slow and failing must change nothing for the client.
    let shadow = HttpServer::builder("shadow")
        .status(500)
        .delay(Duration::from_millis(200))
        .start()
        .await;
    let rules = "    - backendRefs: [{ name: web-b, port: 80 }]\n\
                 \x20     filters:\n        - type: RequestMirror\n          requestMirror: { backendRef: { name: shadow, port: 80 } }\n";
    let (_cp, proxy) = mesh(
        &primary,
        &[
            service("shadow"),
            endpoint("shadow", shadow.addr()),
            route("web-mirror", "web", rules),
        ],
        |r| {
            r.first()
                .is_some_and(|r| r["mirrors"].as_array().is_some_and(|m| m.len() == 1))
        },
    )
    .await;

    let start = Instant::now();
    let gets = burst(proxy.outbound(), &Shot::get("http://web/"), 100, 4).await;
    let posts = burst(
        proxy.outbound(),
        &Shot::get("http://web/upload").with_body("POST", b"mirror me"),
        100,
        4,
    )
    .await;
    let took = start.elapsed();
    assert_eq!(
        (gets.server("web-b"), posts.server("web-b")),
        (100, 100),
        "{gets:?} {posts:?}"
    );
    assert_eq!(gets.status(200) + posts.status(200), 200);
    assert!(
        took < Duration::from_secs(4),
        "the client never waits for the 200 ms shadow (200 requests took {took:?})"
    );
    shadow.wait_requests(200, Duration::from_secs(15)).await;
    assert_eq!(primary.requests(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_modifiers_rewrites_and_redirects() {
    let backend = HttpServer::echo("web-b").await;
    let rules = "    - matches: [{ path: { type: PathPrefix, value: /old } }]\n\
                 \x20     filters:\n        - type: RequestRedirect\n          requestRedirect: { path: { type: ReplaceFullPath, replaceFullPath: /new }, statusCode: 301 }\n\
                 \x20   - matches: [{ path: { type: PathPrefix, value: /api } }]\n\
                 \x20     backendRefs: [{ name: web-b, port: 80 }]\n\
                 \x20     filters:\n\
                 \x20       - type: RequestHeaderModifier\n          requestHeaderModifier:\n            set: [{ name: x-env, value: canary }]\n            add: [{ name: x-tag, value: added }]\n            remove: [x-secret]\n\
                 \x20       - type: ResponseHeaderModifier\n          responseHeaderModifier: { set: [{ name: x-served-by, value: tandem }] }\n\
                 \x20       - type: URLRewrite\n          urlRewrite: { hostname: internal.web, path: { type: ReplacePrefixMatch, replacePrefixMatch: /v2 } }\n";
    let (_cp, proxy) = mesh(&backend, &[route("web-filters", "web", rules)], |r| {
        r.len() == 2
    })
    .await;

    let c = client::http1(proxy.outbound());
    let mut req = client::request("GET", "http://web/api/users?id=7", client::empty());
    req.headers_mut().insert("x-env", "prod".parse().unwrap());
    req.headers_mut()
        .insert("x-tag", "original".parse().unwrap());
    req.headers_mut()
        .insert("x-secret", "s3cr3t".parse().unwrap());
    let resp = within(STEP_TIMEOUT, "GET /api/users", client::send(&c, req))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(
        client::header(&resp, upstream::ECHO_PATH),
        Some("/v2/users?id=7")
    );
    assert_eq!(client::header(&resp, "x-served-by"), Some("tandem"));
    let seen = client::echoed_headers(&resp);
    assert_eq!(seen["x-env"], ["canary"]);
    assert_eq!(seen["x-tag"], ["original", "added"]);
    assert!(!seen.contains_key("x-secret"), "{seen:?}");
    assert_eq!(seen["host"], ["internal.web"]);

    let resp = within(
        STEP_TIMEOUT,
        "GET /old/page",
        client::get_once(proxy.outbound(), "web", "/old/page?x=1"),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(
        client::header(&resp, "location"),
        Some("http://web/new?x=1")
    );
    assert_eq!(backend.requests(), 1, "a redirect is answered by the proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeouts_bound_the_request_and_each_attempt() {
    let slow = HttpServer::builder("web-b")
        .delay(Duration::from_secs(2))
        .start()
        .await;
    let rules = "    - matches: [{ path: { type: PathPrefix, value: /whole } }]\n\
                 \x20     backendRefs: [{ name: web-b, port: 80 }]\n      timeouts: { request: 300ms }\n\
                 \x20   - backendRefs: [{ name: web-b, port: 80 }]\n\
                 \x20     timeouts: { request: 5s, backendRequest: 200ms }\n\
                 \x20     retry: { attempts: 2, backoff: 1ms }\n";
    let (_cp, proxy) = mesh(&slow, &[route("web-timeouts", "web", rules)], |r| {
        r.len() == 2
    })
    .await;

    let start = Instant::now();
    let resp = client::get_once(proxy.outbound(), "web", "/whole")
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(resp.status(), 504, "{resp:?}");
    assert!(
        took < Duration::from_millis(1500),
        "request timeout of 300 ms: took {took:?}"
    );

    let before = slow.requests();
    let start = Instant::now();
    let resp = client::get_once(proxy.outbound(), "web", "/attempts")
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(resp.status(), 504, "{resp:?}");
    assert!(
        took < Duration::from_millis(1500),
        "three attempts of 200 ms: took {took:?}"
    );
    eventually(
        Duration::from_secs(5),
        "three attempts to reach the upstream",
        || async {
            match slow.requests() - before {
                3 => Ok(()),
                n => Err(format!("{n} attempts")),
            }
        },
    )
    .await;
}

//! The control plane's web page in a real browser (Debian's Chromium, headless), against
//! the real control plane and a real mesh: a `frontend` sidecar calling `web` (a guarded
//! canary from web-v1 to web-v2 in progress) and `api`, under steady load.
//!
//! - Without the token the page renders the services with their golden signals, who calls
//!   whom, the canary with its live split, objectives and decisions, and the history; it
//!   offers no button that changes anything, and its JSON carries no secret. The
//!   screenshot of that page is the one in docs/observability.md: regenerate it with
//!   `TANDEM_WEB_SCREENSHOT=$PWD/docs/images/web.png cargo nextest run -p tandem-tests
//!   --test web`.
//! - With the admin token typed into the page, its canary buttons act through the
//!   token-protected API, and the consequential ones ask for a second click first.
//!
//! Chromium must be on `PATH` (`apt-get install -y chromium`); the tests fail, saying so,
//! when it is not.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "web/browser.rs"]
mod browser;

use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use tandem_tests::control_plane::ControlPlane;
use tandem_tests::load::{Load, LoadSpec};
use tandem_tests::mesh::{self, docs, endpoint, service};
use tandem_tests::upstream::HttpServer;
use tandem_tests::{bins, client, eventually, within, Proxy, STEP_TIMEOUT};

/// How long a change may take to reach a proxy.
const PROPAGATION: Duration = Duration::from_secs(15);
/// How long the page may take to show everything: rates need two scrapes with traffic.
const RENDERED: Duration = Duration::from_secs(90);

/// A running mesh with a canary in progress and traffic through it.
struct Mesh {
    cp: ControlPlane,
    _proxy: Proxy,
    loads: Vec<Load>,
    _servers: Vec<HttpServer>,
}

/// Services `frontend`, `web` (→ web-v1 and web-v2 by HTTPRoute `web`) and `api`; a
/// `frontend` sidecar in xDS mode calling `web` and `api` under load; and a guarded canary
/// of `web` that took one step by itself and was then paused, so the page holds still.
async fn mesh_with_a_canary() -> Mesh {
    let servers = vec![
        HttpServer::echo("web-v1").await,
        HttpServer::echo("web-v2").await,
        HttpServer::echo("api").await,
    ];
    let cp = ControlPlane::start().await;
    cp.apply_ok(&docs(&[
        service("frontend"),
        service("web"),
        service("web-v1"),
        service("web-v2"),
        service("api"),
        endpoint("web-v1", servers[0].addr()),
        endpoint("web-v2", servers[1].addr()),
        endpoint("api", servers[2].addr()),
        mesh::split_route("web", "web", &[("web-v1", 100), ("web-v2", 0)]),
    ]))
    .await;
    let proxy = Proxy::start_xds(cp.xds(), "frontend", &["--workers", "1"]).await;
    mesh::wait_split(
        &proxy,
        "web",
        &[("web-v1", 100), ("web-v2", 0)],
        PROPAGATION,
    )
    .await;
    let web = Load::start(&[proxy.outbound()], LoadSpec::new("web"));
    let api = Load::start(
        &[proxy.outbound()],
        LoadSpec {
            interval: Duration::from_millis(50),
            ..LoadSpec::new("api")
        },
    );
    web.wait_more(50, Duration::from_secs(30)).await;
    api.wait_more(10, Duration::from_secs(30)).await;
    let mesh = Mesh {
        cp,
        _proxy: proxy,
        loads: vec![web, api],
        _servers: servers,
    };
    ctl_ok(
        &mesh.cp,
        &[
            "canary",
            "start",
            "web",
            "--stable",
            "web-v1",
            "--canary",
            "web-v2",
            "--steps",
            "10,25,50,100",
            "--auto",
            "--max-error-rate",
            "1%",
            "--max-p99",
            "1s",
            "--min-requests",
            "20",
            "--step-time",
            "3s",
        ],
    )
    .await;
    // The controller's first decision (10% → 25%), then a person holds it there.
    eventually(
        Duration::from_secs(30),
        "the controller's first step",
        || async {
            let h = mesh.cp.history().await;
            h.iter()
                .any(|r| r["who"] == "canary-controller")
                .then_some(())
                .ok_or(format!("{h:?}"))
        },
    )
    .await;
    ctl_ok(&mesh.cp, &["canary", "pause", "web"]).await;
    mesh
}

async fn ctl_ok(cp: &ControlPlane, args: &[&str]) -> String {
    cp.tandemctl(args)
        .await
        .expect_ok(&args.join(" "))
        .to_owned()
}

/// `GET path` without a token: status and body.
async fn get_without_token(cp: &ControlPlane, path: &str) -> (StatusCode, String) {
    let resp = within(STEP_TIMEOUT, path, async {
        let mut sender = client::h1_connect(cp.api()).await?;
        let req = http::Request::get(path)
            .header(http::header::HOST, cp.api().to_string())
            .body(client::empty())?;
        client::collect(sender.send_request(req).await?).await
    })
    .await
    .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (
        resp.status(),
        String::from_utf8_lossy(resp.body()).into_owned(),
    )
}

/// The element of `dom` that starts with `open` (an opening tag's beginning), up to its
/// closing `</tag>`; nested elements of the same tag are not expected.
fn element<'a>(dom: &'a str, tag: &str, open: &str) -> Option<&'a str> {
    let start = dom.find(open)?;
    let end = dom[start..].find(&format!("</{tag}>"))?;
    Some(&dom[start..start + end])
}

/// What the rendered page must show; `Err` names the first thing missing.
fn check_page(dom: &str, weights: &[(String, u64)]) -> Result<(), String> {
    let need = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
    let services = element(dom, "section", "<section id=\"services\"").ok_or("no services")?;
    for name in ["frontend", "web", "web-v1", "web-v2", "api"] {
        need(
            services.contains(&format!("data-service=\"{name}\"")),
            &format!("service {name}"),
        )?;
    }
    let web = element(services, "tr", "<tr data-service=\"web\"").ok_or("web's row")?;
    need(web.contains("100.00%"), "web's success rate of 100.00%")?;
    need(web.contains("ms</td>"), "web's latency")?;
    let v2 = element(services, "tr", "<tr data-service=\"web-v2\"").ok_or("web-v2's row")?;
    need(v2.contains("as backend"), "web-v2 seen as a backend")?;
    need(v2.contains("100.00%"), "web-v2's success rate")?;

    let edges = element(dom, "section", "<section id=\"edges\"").ok_or("no edges")?;
    for to in ["web", "api"] {
        let row = element(
            edges,
            "tr",
            &format!("data-from=\"frontend\" data-to=\"{to}\""),
        )
        .ok_or(format!("the edge frontend → {to}"))?;
        need(
            row.contains("100.00%"),
            &format!("frontend → {to}'s success rate"),
        )?;
    }

    let canary = element(
        dom,
        "article",
        "<article class=\"card\" data-canary=\"default/web\"",
    )
    .ok_or("the canary default/web")?;
    for (backend, weight) in weights {
        need(
            canary.contains(&format!(
                "data-backend=\"{backend}\" data-weight=\"{weight}\""
            )),
            &format!("{backend} at weight {weight} in the split"),
        )?;
    }
    need(canary.contains(">paused<"), "the canary paused")?;
    need(canary.contains("error rate ≤ 1%, p99 ≤ 1s"), "the SLO")?;
    need(
        canary.contains("stepped to 25%: web-v2 healthy"),
        "the controller's decision with its reason",
    )?;
    need(canary.contains(">start<"), "the start decision")?;

    let history = element(dom, "section", "<section id=\"history\"").ok_or("no history")?;
    need(
        history.contains("canary default/web start: "),
        "the canary's start in the history",
    )?;
    need(
        history.contains("canary-controller"),
        "the controller in the history",
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_mesh_in_a_real_browser_read_only_without_the_token() {
    browser::chromium();
    let mut mesh = mesh_with_a_canary().await;
    let cp = &mesh.cp;
    let status = cp.api_get("/v1/canaries/default/web").await;
    let weights: Vec<(String, u64)> = status["weights"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(status["state"]["auto"]["paused"], true, "{status}");

    // The page's JSON needs no token and gives away none.
    let (code, overview) = get_without_token(cp, "/ui/overview").await;
    assert_eq!(code, StatusCode::OK, "{overview}");
    assert!(
        !overview.contains(&cp.token()),
        "the overview holds the admin token"
    );
    let (code, _) = get_without_token(cp, "/v1/status").await;
    assert_eq!(
        code,
        StatusCode::UNAUTHORIZED,
        "the API still needs the token"
    );

    let url = format!("http://{}/", cp.api());
    let started = tokio::time::Instant::now();
    let mut attempts = 0;
    let dom = loop {
        attempts += 1;
        let dom = browser::dump_dom(&url).await;
        match check_page(&dom, &weights) {
            Ok(()) => break dom,
            Err(missing) if started.elapsed() < RENDERED => {
                eprintln!("attempt {attempts}: the page does not show {missing} yet");
            }
            Err(missing) => panic!(
                "after {attempts} attempts in {RENDERED:?} the page does not show {missing}:\n{dom}"
            ),
        }
    };
    eprintln!(
        "the page showed everything after {attempts} attempt(s), {:?}",
        started.elapsed()
    );
    // Read-only: no button that acts, and the token field waiting.
    assert!(
        !dom.contains("data-action"),
        "admin buttons without a token:\n{dom}"
    );
    assert!(dom.contains("id=\"token\""), "{dom}");
    assert!(dom.contains(">read-only<"), "{dom}");

    let file = std::env::var_os("TANDEM_WEB_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| bins::target_dir().join("web-page.png"));
    browser::screenshot(&url, &file, 1280, 900).await;
    eprintln!("screenshot: {}", file.display());

    for load in mesh.loads.drain(..) {
        load.stop()
            .await
            .assert_no_failures("load while the page was read");
    }
}

/// The canary's status through the API.
async fn canary(cp: &ControlPlane) -> Value {
    cp.api_get("/v1/canaries/default/web").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_admin_token_the_page_drives_the_canary() {
    browser::chromium();
    // No traffic needed: buttons and the API they call.
    let cp = ControlPlane::start().await;
    cp.apply_ok(&docs(&[
        service("web"),
        service("web-v1"),
        service("web-v2"),
    ]))
    .await;
    let start = [
        "canary",
        "start",
        "web",
        "--stable",
        "web-v1",
        "--canary",
        "web-v2",
        "--auto",
        "--max-error-rate",
        "1%",
        "--step-time",
        "10m",
    ];
    ctl_ok(&cp, &start).await;

    let mut page = browser::Browser::open(&format!("http://{}/", cp.api())).await;
    let card = "document.querySelector('[data-canary=\"default/web\"]')";
    page.wait_for(&format!("{card} !== null"), STEP_TIMEOUT)
        .await;
    assert_eq!(
        page.eval("document.querySelectorAll('[data-action]').length")
            .await,
        0,
        "no buttons before the token"
    );

    // A wrong token is refused and shows nothing more.
    page.eval("document.getElementById('token').value = 'wrong'; document.getElementById('use-token').click()")
        .await;
    page.wait_for(
        "document.getElementById('notice').textContent.includes('refused')",
        STEP_TIMEOUT,
    )
    .await;
    assert_eq!(
        page.eval("document.querySelectorAll('[data-action]').length")
            .await,
        0
    );

    // The right one, typed in as a person would.
    let token = cp.token();
    page.eval(&format!(
        "document.getElementById('token').value = {}; document.getElementById('use-token').click()",
        Value::String(token.clone())
    ))
    .await;
    let button = |action: &str| format!("{card}.querySelector('button[data-action=\"{action}\"]')");
    page.wait_for(&format!("{} !== null", button("pause")), STEP_TIMEOUT)
        .await;
    assert_eq!(
        page.eval("document.getElementById('mode').textContent")
            .await,
        "admin"
    );
    assert_eq!(
        page.eval("sessionStorage.getItem('tandem.adminToken')")
            .await,
        Value::String(token)
    );

    page.eval(&format!("{}.click()", button("pause"))).await;
    eventually(STEP_TIMEOUT, "paused through the page", || async {
        let c = canary(&cp).await;
        (c["state"]["auto"]["paused"] == true)
            .then_some(())
            .ok_or(c.to_string())
    })
    .await;
    page.wait_for(&format!("{} !== null", button("resume")), STEP_TIMEOUT)
        .await;
    page.eval(&format!("{}.click()", button("resume"))).await;
    eventually(STEP_TIMEOUT, "resumed through the page", || async {
        let c = canary(&cp).await;
        (c["state"]["auto"]["paused"] == false)
            .then_some(())
            .ok_or(c.to_string())
    })
    .await;
    page.wait_for(&format!("{} !== null", button("step")), STEP_TIMEOUT)
        .await;
    page.eval(&format!("{}.click()", button("step"))).await;
    eventually(STEP_TIMEOUT, "stepped through the page", || async {
        let c = canary(&cp).await;
        (c["state"]["percent"] == 10)
            .then_some(())
            .ok_or(c.to_string())
    })
    .await;

    // Abort asks twice: the first click only arms the button.
    page.wait_for(&format!("{} !== null", button("abort")), STEP_TIMEOUT)
        .await;
    page.eval(&format!("{}.click()", button("abort"))).await;
    page.wait_for(
        &format!("{}.textContent === 'Confirm abort'", button("abort")),
        STEP_TIMEOUT,
    )
    .await;
    assert_eq!(canary(&cp).await["state"]["phase"], "running");
    page.eval(&format!("{}.click()", button("abort"))).await;
    eventually(STEP_TIMEOUT, "rolled back through the page", || async {
        let c = canary(&cp).await;
        (c["state"]["phase"] == "aborted")
            .then_some(())
            .ok_or(c.to_string())
    })
    .await;
    // A rolled-back canary offers no more buttons; each action was a revision by the API.
    page.wait_for(
        &format!("{card}.querySelectorAll('[data-action]').length === 0"),
        STEP_TIMEOUT,
    )
    .await;
    page.close().await;
    let actions: Vec<String> = cp
        .history()
        .await
        .iter()
        .filter_map(|r| r["summary"].as_str())
        .filter(|s| s.starts_with("canary default/web "))
        .map(|s| s.split(':').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        actions,
        [
            "canary default/web start",
            "canary default/web pause",
            "canary default/web resume",
            "canary default/web step",
            "canary default/web abort",
        ]
    );
}

//! Debian's Chromium, headless, as the web page's tests use it: the DOM after the page's
//! script ran (`--dump-dom`), a screenshot, and — for what needs a person's clicks — a
//! DevTools session (the Chrome DevTools Protocol over its WebSocket) that types into the
//! page and presses its buttons.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tandem_tests::control_plane::TempDir;
use tandem_tests::within;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest one Chromium run (start, load, script, dump) may take on a loaded 2-core machine.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// Virtual time the page gets before its DOM is dumped: a few of its 2 s refreshes.
/// Chromium holds virtual time while a fetch is pending, so the data is in.
const VIRTUAL_TIME_MS: u32 = 5000;
/// Longest wait for one DevTools answer.
const CDP_LIMIT: Duration = Duration::from_secs(20);

/// The `chromium` on `PATH`, or a panic saying how to get it.
pub fn chromium() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "the web page's tests need Chromium: no `chromium` on PATH. \
             On Debian: `apt-get install -y chromium` (CI installs it in .ci/run)"
        )
    })
}

/// The flags of every headless run: root in a container needs `--no-sandbox`; a profile
/// of its own so runs in parallel do not share a lock; nothing phones home.
fn headless(profile: &Path) -> Command {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-extensions",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(Stdio::null())
    .kill_on_drop(true);
    cmd
}

async fn run(mut cmd: Command, what: &str) -> String {
    let out = within(RUN_LIMIT, what, cmd.output())
        .await
        .unwrap_or_else(|e| panic!("{what}: cannot run chromium: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: chromium exited {}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The page's DOM at `url` once its script had [`VIRTUAL_TIME_MS`] of virtual time.
pub async fn dump_dom(url: &str) -> String {
    let profile = TempDir::new("chromium");
    let mut cmd = headless(profile.path());
    cmd.arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
        .args(["--dump-dom", url]);
    run(cmd, &format!("chromium --dump-dom {url}")).await
}

/// A `width`×`height` PNG of `url` into `file`.
pub async fn screenshot(url: &str, file: &Path, width: u32, height: u32) {
    let profile = TempDir::new("chromium");
    let mut cmd = headless(profile.path());
    cmd.arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", file.display()))
        .arg(url);
    run(cmd, &format!("chromium --screenshot {url}")).await;
    let png = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        file.display()
    );
}

/// A headless Chromium driven over the DevTools protocol, with one page open.
pub struct Browser {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    child: Child,
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium with DevTools on a free port and opens `url` in a page.
    pub async fn open(url: &str) -> Browser {
        let profile = TempDir::new("chromium-cdp");
        let mut cmd = headless(profile.path());
        cmd.args(["--remote-debugging-port=0", "about:blank"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn chromium");
        let stderr = child.stderr.take().expect("stderr piped");
        // Chromium says where its DevTools listen: "DevTools listening on ws://...".
        let endpoint = within(RUN_LIMIT, "chromium's DevTools address", async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(at) = line.find("ws://") {
                    let endpoint = line[at..].trim().to_string();
                    // Keep the pipe drained so chromium never blocks on a full stderr.
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    return endpoint;
                }
            }
            panic!("chromium exited without a DevTools address");
        })
        .await;
        let (ws, _) = within(
            CDP_LIMIT,
            "DevTools WebSocket",
            tokio_tungstenite::connect_async(endpoint.as_str()),
        )
        .await
        .unwrap_or_else(|e| panic!("connect {endpoint}: {e}"));
        let mut browser = Browser {
            ws,
            session: String::new(),
            next_id: 0,
            child,
            _profile: profile,
        };
        let target = browser
            .command("Target.createTarget", json!({ "url": url }))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = browser
            .command(
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        browser
    }

    /// One DevTools command (on the page's session once attached); its `result`.
    async fn command(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .unwrap_or_else(|e| panic!("send {method}: {e}"));
        let ws = &mut self.ws;
        within(CDP_LIMIT, method, async {
            loop {
                let frame = ws
                    .next()
                    .await
                    .unwrap_or_else(|| panic!("{method}: DevTools closed"))
                    .unwrap_or_else(|e| panic!("{method}: {e}"));
                let Message::Text(text) = frame else {
                    continue;
                };
                let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
                // Events (no id) and other answers are not ours.
                if v["id"] != id {
                    continue;
                }
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        })
        .await
    }

    /// Closes the browser and waits for it to be gone, so that its profile can be removed
    /// (a killed Chromium's helpers may still be writing there).
    pub async fn close(mut self) {
        let msg = json!({ "id": self.next_id + 1, "method": "Browser.close" });
        if self.ws.send(Message::text(msg.to_string())).await.is_ok() {
            let exited = tokio::time::timeout(CDP_LIMIT, self.child.wait()).await;
            if exited.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }

    /// Evaluates `expression` in the page (awaiting a promise); its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .command(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            r["exceptionDetails"].is_null(),
            "{expression} threw: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` every 100 ms until it is `true`, for at most `limit`.
    pub async fn wait_for(&mut self, expression: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.eval(expression).await == Value::Bool(true) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let body = self.eval("document.body.innerText").await;
                panic!(
                    "timed out after {limit:?} waiting for {expression}; the page reads:\n{body}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

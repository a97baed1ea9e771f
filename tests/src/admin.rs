//! The proxy's admin port: `/live`, `/ready`, `/metrics`, `/config_dump`.

use std::time::Duration;

use http::StatusCode;

use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::{client, within, STEP_TIMEOUT};

impl Proxy {
    /// `GET path` on the admin port: status and body.
    pub async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        let resp = within(
            STEP_TIMEOUT,
            &format!("admin GET {path}"),
            client::get_once(self.admin(), "admin", path),
        )
        .await
        .unwrap_or_else(|e| panic!("admin GET {path}: {e}"));
        let body = String::from_utf8_lossy(resp.body()).into_owned();
        (resp.status(), body)
    }

    /// The `/metrics` text; panics unless it answers 200.
    pub async fn metrics_text(&self) -> String {
        let (status, body) = self.admin_get("/metrics").await;
        assert_eq!(status, StatusCode::OK, "/metrics status; body: {body}");
        body
    }

    /// `/metrics`, parsed.
    pub async fn metrics(&self) -> Metrics {
        Metrics::parse(&self.metrics_text().await)
    }

    /// `/config_dump` as JSON; panics unless it answers 200 with JSON.
    pub async fn config_dump(&self) -> serde_json::Value {
        let (status, body) = self.admin_get("/config_dump").await;
        assert_eq!(status, StatusCode::OK, "/config_dump status; body: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/config_dump is not JSON ({e}): {body}"))
    }

    /// The snapshot version from `/config_dump` (field `version`, number or string),
    /// rendered as a string: versions are opaque and only compared for equality.
    pub async fn config_version(&self) -> String {
        let dump = self.config_dump().await;
        match dump.get("version") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v @ serde_json::Value::Number(_)) => v.to_string(),
            _ => panic!("/config_dump has no top-level `version` (number or string): {dump}"),
        }
    }

    /// Polls `/config_dump` until its version differs from `old`; returns the new one.
    pub async fn wait_version_change(&self, old: &str, limit: Duration) -> String {
        crate::eventually(limit, "config version change", || async {
            let v = self.config_version().await;
            if v != old {
                Ok(v)
            } else {
                Err(format!("version still {v}"))
            }
        })
        .await
    }
}

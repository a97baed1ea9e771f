//! The control plane's web page, on the API port: services with their golden signals, who
//! calls whom, canaries in progress and the latest revisions, refreshed every 2 s.
//!
//! - `GET /` (and `/ui`, `/ui/`): the page; `GET /ui/app.js`, `/ui/style.css`, `/ui/favicon.svg`:
//!   its assets, compiled into the binary (no CDN, no framework: it works offline);
//! - `GET /ui/overview[?window=S]`: what the page shows, as JSON ([`overview`]).
//!
//! These need no admin token, so that anyone who can reach the API port can look — and
//! they can only look: nothing here changes anything, and the overview carries names and
//! figures, never a token, key or certificate. Any other method is a 405. With the admin
//! token typed into the page (kept in the tab's `sessionStorage`), the page shows canary
//! buttons that call the token-protected REST API like `tandemctl` does.
//!
//! Names on the page come from users (services, routes, summaries): the script builds the
//! DOM with `textContent` only, and the Content-Security-Policy allows no inline script or
//! style, so a name cannot become markup or code.

pub mod overview;

#[cfg(test)]
mod tests;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use super::{ApiState, Call};

/// The policy of every answer here: only the page's own files, no inline code, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The JSON document the page reads.
pub const OVERVIEW_PATH: &str = "/ui/overview";

/// A file of the page.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: &str = include_str!("assets/index.html");

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: INDEX,
    },
    Asset {
        path: "/ui",
        content_type: "text/html; charset=utf-8",
        body: INDEX,
    },
    Asset {
        path: "/ui/",
        content_type: "text/html; charset=utf-8",
        body: INDEX,
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/app.js"),
    },
    Asset {
        path: "/ui/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("assets/style.css"),
    },
    Asset {
        path: "/ui/favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("assets/favicon.svg"),
    },
];

/// Whether `path` is the page's (served without a token).
pub fn is_web_path(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// Answers a request for the page, its assets or its overview; `None` when `path` is not
/// the page's (the API handles it, token first).
pub(crate) async fn serve(
    state: &ApiState,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Option<Response<Full<Bytes>>> {
    if !is_web_path(path) {
        return None;
    }
    if method != Method::GET {
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return Some(r);
    }
    if path == OVERVIEW_PATH {
        let call = Call {
            method: method.clone(),
            path: path.to_string(),
            query: query.map(str::to_string),
            body: Bytes::new(),
        };
        return Some(match overview::gather(state, &call).await {
            Ok(v) => {
                let mut body = serde_json::to_vec(&v).unwrap_or_default();
                body.push(b'\n');
                answer(StatusCode::OK, "application/json", Bytes::from(body))
            }
            Err(e) => error(e.status(), &e.to_string()),
        });
    }
    Some(match ASSETS.iter().find(|a| a.path == path) {
        Some(a) => answer(
            StatusCode::OK,
            a.content_type,
            Bytes::from_static(a.body.as_bytes()),
        ),
        None => error(StatusCode::NOT_FOUND, &format!("no page {path}")),
    })
}

/// An error as the API words them (`{"error": ...}`), with the page's headers.
fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    body.push(b'\n');
    answer(status, "application/json", Bytes::from(body))
}

fn answer(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Figures change every second and the page may be behind a token: never cache.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

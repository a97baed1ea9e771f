//! A small client of the REST API (plain HTTP/1.1), used by `tandemctl` and tests.

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The `--api` URL is not usable.
    #[error("invalid API URL {0:?}: {1}")]
    Url(String, String),
    /// The control plane could not be reached.
    #[error("cannot reach the control plane at {0}: {1}")]
    Connect(String, String),
    /// The control plane answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The `error` of the answer.
        message: String,
    },
}

impl ClientError {
    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one control plane.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl ApiClient {
    /// A client of `api` (`http://host:port`) sending `token`.
    pub fn new(api: &str, token: &str) -> Result<ApiClient, ClientError> {
        let uri: Uri = api
            .parse()
            .map_err(|e: http::uri::InvalidUri| ClientError::Url(api.into(), e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(ClientError::Url(
                    api.into(),
                    format!("scheme {other} is not supported; use http://"),
                ))
            }
            None => return Err(ClientError::Url(api.into(), "use http://host:port".into())),
        }
        if uri.authority().is_none() {
            return Err(ClientError::Url(api.into(), "no host".into()));
        }
        Ok(ApiClient {
            base: api.trim_end_matches('/').to_string(),
            token: token.to_string(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Calls `method path` with an optional JSON body. A 2xx answer gives its JSON
    /// (`Null` when empty); anything else is an error carrying the answer's `error`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{}", self.base, path);
        let bytes = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
            None => Bytes::new(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let req = builder
            .body(Full::new(bytes))
            .map_err(|e| ClientError::Url(url.clone(), e.to_string()))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| ClientError::Connect(self.base.clone(), error_chain(&e)))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Connect(self.base.clone(), e.to_string()))?
            .to_bytes();
        let value: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&body).trim().to_string())
            })
        };
        if status.is_success() {
            Ok(value)
        } else {
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {status}"));
            Err(ClientError::Api { status, message })
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

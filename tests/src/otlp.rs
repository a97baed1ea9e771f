//! An OTLP/gRPC trace receiver: the OpenTelemetry Collector's `TraceService`, generated
//! from the OpenTelemetry protos, keeping every span it is sent so a test can check what
//! a proxy exported (trace and parent ids, kind, attributes, resource).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::AbortOnDrop;

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id (empty for a root span).
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// `SPAN_KIND_SERVER`, `SPAN_KIND_CLIENT`, ...
    pub kind: String,
    /// Attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// Status code name (`STATUS_CODE_ERROR`, ...).
    pub status: String,
}

impl ReceivedSpan {
    /// An attribute's value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Debug, Default)]
struct Store {
    spans: Mutex<Vec<ReceivedSpan>>,
    count: Option<watch::Sender<usize>>,
}

/// The service handle: shares the store with the test.
#[derive(Debug, Clone)]
struct Service(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for rs in request.into_inner().resource_spans {
            let resource = rs
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        name: s.name.clone(),
                        kind: s.kind().as_str_name().to_string(),
                        attributes: attributes(&s.attributes),
                        status: s
                            .status
                            .as_ref()
                            .map(|st| st.code().as_str_name().to_string())
                            .unwrap_or_default(),
                    });
                }
            }
        }
        let total = {
            let mut spans = self.0.spans.lock().expect("spans lock");
            spans.extend(received);
            spans.len()
        };
        if let Some(tx) = &self.0.count {
            tx.send_replace(total);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// A running receiver on `127.0.0.1:0`; stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    store: Arc<Store>,
    count: watch::Receiver<usize>,
    _task: AbortOnDrop,
}

impl OtlpReceiver {
    /// Binds and serves.
    pub async fn start() -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind OTLP");
        let addr = listener.local_addr().expect("local addr");
        let (tx, count) = watch::channel(0);
        let store = Arc::new(Store {
            spans: Mutex::new(Vec::new()),
            count: Some(tx),
        });
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Service(store.clone())))
            .serve_with_incoming(TcpListenerStream::new(listener));
        let task = tokio::spawn(async move {
            let _ = server.await;
        });
        OtlpReceiver {
            addr,
            store,
            count,
            _task: AbortOnDrop(task),
        }
    }

    /// The collector URL a proxy's `--trace-collector` takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.spans.lock().expect("spans lock").clone()
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    /// Waits (bounded) until `n` spans of `trace_id` have arrived, and returns them.
    pub async fn wait_trace(&self, trace_id: &str, n: usize, limit: Duration) -> Vec<ReceivedSpan> {
        let mut rx = self.count.clone();
        crate::within(limit, &format!("{n} spans of trace {trace_id}"), async {
            loop {
                let spans = self.trace(trace_id);
                if spans.len() >= n {
                    return spans;
                }
                rx.changed().await.expect("receiver alive");
            }
        })
        .await
    }
}

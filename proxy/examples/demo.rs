//! A local demo: two instances of a sample `hello` service, and `tandem-proxy` in front of
//! them on the default ports with a sample config. Prints where to send requests.
//!
//! Run with `cargo run -p tandem-proxy --example demo`; Ctrl-C stops everything.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tandem_proxy::startup::Args;
use tokio::net::TcpListener;

/// Starts one instance of the sample service; it answers with its own name.
async fn sample_instance(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = format!("hello from {name}: {} {}\n", req.method(), req.uri());
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                    },
                );
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = sample_instance("hello-1").await?;
    let b = sample_instance("hello-2").await?;
    let dir = std::env::temp_dir().join(format!("tandem-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "# Sample tandem-proxy config written by the demo; edit it and the proxy reloads.\n\
             service: demo-client\n\
             services:\n  - name: hello\n    endpoints: [\"{a}\", \"{b}\"]\n"
        ),
    )?;
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    println!("sample service `hello` runs at {a} and {b}");
    println!("config: {} (edit it: the proxy reloads)", config.display());
    println!();
    println!("try:");
    println!(
        "  curl -H 'Host: hello' http://127.0.0.1:15001/     # outbound listener, round robin"
    );
    println!("  curl -x http://127.0.0.1:15001 http://hello/x      # as an http_proxy");
    println!("  curl -H 'Host: nope' -i http://127.0.0.1:15001/    # 503 + tandem-proxy-error");
    println!("  curl http://127.0.0.1:15000/metrics | grep tandem_  # metrics");
    println!("  curl http://127.0.0.1:15000/config_dump             # current snapshot");
    println!("Ctrl-C stops the demo.");
    println!();
    let args = Args {
        config: Some(config),
        control_plane: None,
        service: None,
        namespace: "default".into(),
        node_id: None,
        outbound_addr: "127.0.0.1:15001".parse()?,
        inbound_addr: "127.0.0.1:15006".parse()?,
        admin_addr: "127.0.0.1:15000".parse()?,
        app_port: a.port(),
        log: "info".into(),
        retry_buffer_bytes: None,
        token: None,
        service_account_token_file: None,
        service_account: None,
        ca_pins: None,
        identity_addr: None,
        workers: None,
        listen: Vec::new(),
        command: None,
        transparent: false,
        app_probes: None,
        pod_ip: None,
        access_log: None,
        trace_collector: None,
        trace_sampling: 0.01,
    };
    let result = tandem_proxy::startup::run(args).await;
    let _ = std::fs::remove_dir_all(&dir);
    result.map_err(Into::into)
}

//! `tandem-kube-api`: the Kubernetes API test server (`tandem_tests::kube_api`) as a process,
//! so a person can point `kubectl` at it while debugging.
//!
//! `tandem-kube-api [--addr 127.0.0.1:0] [--dir DIR] [--bookmark-interval-ms N]` prints one
//! line, `ready addr=HOST:PORT kubeconfig=PATH`, once it serves, then runs until killed:
//!
//! ```sh
//! kubectl --kubeconfig PATH get services -A
//! ```

use std::time::Duration;

use tandem_tests::kube_api::{KubeApi, Options};

fn usage(why: &str) -> ! {
    eprintln!("tandem-kube-api: {why}");
    eprintln!("usage: tandem-kube-api [--addr HOST:PORT] [--dir DIR] [--bookmark-interval-ms N]");
    std::process::exit(2);
}

fn options() -> Options {
    let mut options = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            usage(&format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--addr" => match value.parse() {
                Ok(addr) => options.bind = addr,
                Err(e) => usage(&format!("--addr {value}: {e}")),
            },
            "--dir" => options.dir = Some(value.into()),
            "--bookmark-interval-ms" => match value.parse() {
                Ok(ms) if ms > 0 => options.bookmark_interval = Duration::from_millis(ms),
                _ => usage(&format!(
                    "--bookmark-interval-ms {value}: a positive number"
                )),
            },
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    options
}

#[tokio::main]
async fn main() {
    let options = options();
    let api = match KubeApi::start_with(options).await {
        Ok(api) => api,
        Err(e) => {
            eprintln!("tandem-kube-api: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "ready addr={} kubeconfig={}",
        api.addr(),
        api.kubeconfig().display()
    );
    // Serves until the process is killed; the handle (and its temporary directory) lives on.
    std::future::pending::<()>().await;
}

//! `tandem-proxy` binary: parse flags, set up logging and the runtime, run.

use clap::Parser;
use tandem_proxy::startup::flags::Command;
use tandem_proxy::startup::{init, wait_ready, Args};
use tracing_subscriber::EnvFilter;

fn main() {
    let args = Args::parse();
    match &args.command {
        Some(Command::Init(a)) => {
            if let Err(e) = init::run(a) {
                eprintln!("tandem-proxy init: {e}");
                std::process::exit(e.exit_code());
            }
            return;
        }
        Some(Command::WaitReady(a)) => {
            if let Err(e) = wait_ready::run(a) {
                eprintln!("tandem-proxy wait-ready: {e}");
                std::process::exit(1);
            }
            return;
        }
        None => {}
    }
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|e| {
        eprintln!("tandem-proxy: invalid --log filter {:?}: {e}", args.log);
        std::process::exit(2);
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // This runtime only accepts and runs the admin port and reloads; requests are served
    // by the worker threads (see `workers`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tandem-proxy: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(tandem_proxy::startup::run(args)) {
        eprintln!("tandem-proxy: {e}");
        std::process::exit(2);
    }
}

//! `tandemctl`: the command line of a Tandem mesh, over the control plane's REST API.

use std::process::ExitCode;

use clap::Parser;
use tandemctl::CtlArgs;

fn main() -> ExitCode {
    let args = CtlArgs::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tandemctl: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tandemctl::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandemctl: {e}");
            ExitCode::FAILURE
        }
    }
}

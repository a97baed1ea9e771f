//! `tandem-control-plane`: the mesh's source of truth, xDS server, CA and REST API.
//!
//! Not built yet: the control plane arrives with its own issue. Until then the binary
//! says so and exits non-zero, so no script mistakes it for a running control plane.

fn main() {
    eprintln!(
        "tandem-control-plane: not available in this release; run tandem-proxy with --config FILE"
    );
    std::process::exit(2);
}

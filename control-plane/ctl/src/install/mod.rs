//! `tandemctl install`: every manifest a cluster needs, printed for
//! `kubectl apply -f -` (the CRDs of Tandem's kinds, RBAC, the control plane's Deployment,
//! PodDisruptionBudget, Services and NetworkPolicy, the injector's webhook configuration);
//! `--chart DIR` writes the Helm chart generated from the same code.
//!
//! - [`values`]: the options, their defaults and rules (`-f FILE`, `--set key=value`);
//! - [`render`]: values → manifests, and their YAML and JSON text;
//! - [`crds`], [`rbac`]: the CRDs' schemas and the control plane's permissions;
//! - [`chart`]: the chart, rendered with placeholders for the values.
//!
//! Offline: no API, no token, no cluster.

pub mod chart;
pub mod crds;
pub mod rbac;
pub mod render;
pub mod values;

use std::path::PathBuf;

use clap::Args;

use crate::{read_input, CtlError, Format};

/// `install`'s options.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// A values file (YAML, the chart's values.yaml keys; `-` for stdin), repeatable:
    /// later files win.
    #[arg(short = 'f', long = "values")]
    pub values: Vec<String>,
    /// `key.path=value`, repeatable, applied after the files (`--set controlPlane.replicas=3`).
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// Write the Helm chart into this directory instead of printing manifests.
    #[arg(long, conflicts_with_all = ["values", "set"])]
    pub chart: Option<PathBuf>,
}

/// Why `install` failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A wrong option.
    #[error(transparent)]
    Values(#[from] values::ValuesError),
    /// YAML output.
    #[error("YAML: {0}")]
    Yaml(serde_yaml::Error),
    /// JSON output.
    #[error("JSON: {0}")]
    Json(serde_json::Error),
    /// Writing the chart.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// A manifest the chart cannot express (a bug in the generator).
    #[error("internal: the chart cannot express {0}")]
    Chart(String),
}

impl From<InstallError> for CtlError {
    fn from(e: InstallError) -> Self {
        CtlError(e.to_string())
    }
}

/// The values `-f` and `--set` make of the defaults.
pub fn values_of(args: &InstallArgs) -> Result<values::Values, CtlError> {
    let mut v = values::Values::defaults();
    for file in &args.values {
        let text = read_input(file)?;
        v.merge_file(&text, file).map_err(InstallError::from)?;
    }
    for s in &args.set {
        v.set(s).map_err(InstallError::from)?;
    }
    Ok(v)
}

/// Runs `tandemctl install`.
pub fn run(args: &InstallArgs, out: Option<Format>) -> Result<(), CtlError> {
    if let Some(dir) = &args.chart {
        chart::write(dir)?;
        eprintln!("chart written to {}", dir.display());
        return Ok(());
    }
    let manifests = render::render(&values_of(args)?);
    let text = match out {
        Some(Format::Json) => render::to_json(&manifests)?,
        Some(Format::Yaml) | None => render::to_yaml(&manifests)?,
    };
    print!("{text}");
    Ok(())
}

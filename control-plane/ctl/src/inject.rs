//! `tandemctl inject -f FILE|-` and `tandemctl uninject -f FILE|-`: the webhook's patch,
//! offline. Reads YAML (one or many documents) or JSON, computes the same RFC 6902 patch
//! the control plane's webhook returns (`tandem-inject`), applies it with a JSON Patch
//! library, and prints YAML for `kubectl apply -f -` (JSON with `-o json`). What became
//! of each workload goes to stderr, so the output can be piped.
//!
//! No control plane is needed. Without a namespace label to read, workloads are injected
//! unless they (or a `Namespace` document in the same input) say `disabled`, as
//! `linkerd inject` does. Without the CA to ask either, the roots' pins come from
//! `--ca-pin` (the webhook reads them from the CA at each admission); without any, the
//! output is still printed, with a warning that its proxies will get no certificate.

use clap::Args;
use serde::Deserialize;
use serde_json::{json, Value};
use tandem_inject::workload::{self, Change, DocumentPatch, Namespaces};
use tandem_inject::{Mode, Settings};

use crate::{read_input, CtlError, Format};

/// The defaults `inject` uses where a pod's annotations say nothing.
#[derive(Debug, Args)]
pub struct InjectFlags {
    /// The proxy image.
    #[arg(long, default_value_t = tandem_inject::settings::default_proxy_image())]
    pub proxy_image: String,
    /// The control plane's xDS address, as the proxies dial it.
    #[arg(long, default_value = tandem_inject::settings::DEFAULT_CONTROL_PLANE)]
    pub control_plane: String,
    /// `native` (Kubernetes 1.29+) or `legacy`.
    #[arg(long, default_value = "native", value_parser = Mode::parse)]
    pub mode: Mode,
    /// The proxy's UID.
    #[arg(long, default_value_t = tandem_inject::settings::DEFAULT_PROXY_UID)]
    pub proxy_uid: u32,
    /// The SHA-256 of a mesh root the identity endpoint must chain to (the SHA256 column
    /// of `tandemctl ca status`), repeatable: give every root during a rotation.
    #[arg(long = "ca-pin", value_name = "HEX", value_parser = tandem_inject::settings::ca_pin)]
    pub ca_pins: Vec<String>,
}

/// What `inject` says on stderr when no `--ca-pin` is given.
pub const NO_PINS_WARNING: &str = "warning: no --ca-pin given: without the pins of the \
mesh's roots the injected proxies cannot check the identity endpoint, so they will not \
obtain a certificate (and do not start). `tandemctl ca status` lists each root's SHA256 \
(in a cluster: kubectl -n tandem-system exec deploy/tandem-control-plane -- tandemctl ca \
status); pass every one with --ca-pin, or let the webhook inject the pods.";

impl InjectFlags {
    fn settings(&self) -> Result<Settings, CtlError> {
        let s = Settings {
            proxy_image: self.proxy_image.clone(),
            control_plane: self.control_plane.clone(),
            mode: self.mode,
            proxy_uid: self.proxy_uid,
            ca_pins: dedup(&self.ca_pins),
            ..Settings::default()
        };
        s.validate().map_err(|e| CtlError(e.to_string()))?;
        if s.proxy_uid == 0 {
            return Err(CtlError(
                "--proxy-uid: the proxy must not run as root (0)".into(),
            ));
        }
        Ok(s)
    }
}

/// `inject` (with settings) or `uninject`.
pub enum Direction<'a> {
    /// Add proxies.
    Inject(&'a InjectFlags),
    /// Remove them.
    Uninject,
}

/// Runs `inject` or `uninject` on `file`, printing the result in `out` (YAML by default).
pub fn run(file: &str, direction: Direction<'_>, out: Option<Format>) -> Result<(), CtlError> {
    let text = read_input(file)?;
    let docs = parse(&text).map_err(|e| CtlError(format!("{file}: {e}")))?;
    let settings = match &direction {
        Direction::Inject(flags) => Some(flags.settings()?),
        Direction::Uninject => None,
    };
    let namespaces = Namespaces::from_documents(&docs);
    let mut changed = Vec::with_capacity(docs.len());
    let mut failed = 0;
    let mut injected = 0;
    for doc in docs {
        let patch = match &settings {
            Some(s) => workload::inject_document(&doc, s, &namespaces),
            None => workload::uninject_document(&doc),
        };
        failed += report(&patch);
        injected += patch
            .reports
            .iter()
            .filter(|r| r.result == Change::Injected)
            .count();
        changed.push(apply(doc, &patch)?);
    }
    if injected > 0 && settings.as_ref().is_some_and(|s| s.ca_pins.is_empty()) {
        eprintln!("{NO_PINS_WARNING}");
    }
    print!("{}", render(&changed, out)?);
    if failed > 0 {
        return Err(CtlError(format!(
            "{failed} workload(s) left unchanged, see above"
        )));
    }
    Ok(())
}

/// `pins` in their order, each once.
fn dedup(pins: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(pins.len());
    for p in pins {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// Every non-empty document of a YAML stream (JSON is YAML too).
pub fn parse(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| format!("document {}: {e}", i + 1))?;
        match value {
            Value::Null => {}
            Value::Object(_) => docs.push(value),
            _ => return Err(format!("document {}: not an object", i + 1)),
        }
    }
    Ok(docs)
}

/// Applies the operations with an RFC 6902 implementation of its own, as the API server
/// would: the patch is checked, not trusted.
fn apply(mut doc: Value, patch: &DocumentPatch) -> Result<Value, CtlError> {
    if patch.ops.is_empty() {
        return Ok(doc);
    }
    let ops: json_patch::Patch = serde_json::from_value(tandem_inject::patch::to_json(&patch.ops))
        .map_err(|e| CtlError(format!("internal: the patch does not parse: {e}")))?;
    json_patch::patch(&mut doc, &ops)
        .map_err(|e| CtlError(format!("internal: the patch does not apply: {e}")))?;
    Ok(doc)
}

/// One stderr line per workload (`deployment/web injected`); returns how many failed.
fn report(patch: &DocumentPatch) -> usize {
    let mut failed = 0;
    for r in &patch.reports {
        let what = match &r.result {
            Change::Injected => "injected".to_string(),
            Change::Uninjected => "uninjected".to_string(),
            Change::Skipped(why) => format!("skipped: {why}"),
            Change::Failed(why) => {
                failed += 1;
                format!("not changed: {why}")
            }
        };
        eprintln!("{} {what}", r.object);
        for w in &r.warnings {
            eprintln!("{}: warning: {w}", r.object);
        }
    }
    failed
}

/// YAML documents separated by `---`, or JSON (several documents as a `List`).
fn render(docs: &[Value], out: Option<Format>) -> Result<String, CtlError> {
    match out {
        Some(Format::Json) => {
            let v = match docs {
                [one] => one.clone(),
                many => json!({"apiVersion": "v1", "kind": "List", "items": many}),
            };
            serde_json::to_string_pretty(&v)
                .map(|s| s + "\n")
                .map_err(|e| CtlError(e.to_string()))
        }
        Some(Format::Yaml) | None => {
            let mut text = String::new();
            for doc in docs {
                text.push_str("---\n");
                text.push_str(&serde_yaml::to_string(doc).map_err(|e| CtlError(e.to_string()))?);
            }
            Ok(text)
        }
    }
}

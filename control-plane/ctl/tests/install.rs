//! `tandemctl install` and the Helm chart: the committed chart and rendering are what the
//! command produces now; the chart, rendered with Helm's semantics for the two constructs
//! it uses, equals `install`'s output (defaults and a values file); the output passes
//! `kubernetes-validate --strict` for 1.29 and 1.33; the CRDs' schemas accept the docs'
//! examples and refuse invalid documents that Tandem's own validator refuses too; wrong
//! options are named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "install/helm.rs"]
mod helm;
#[path = "install/schema.rs"]
mod schema;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tandem_tests::kube_validate::{self, VERSIONS};

const REGENERATE: &str =
    "regenerate with `cargo run -p tandemctl -- install > deploy/helm/tandem-defaults.yaml` \
     and `cargo run -p tandemctl -- install --chart deploy/helm/tandem`";

/// A values file that changes every option.
const OVERRIDES: &str = "\
namespace: mesh
trustDomain: example.org
controlPlane:
  image: registry.example/tandem-control-plane:1.2.3
  imagePullPolicy: Always
  replicas: 3
  logLevel: tandem_control_plane=debug,info
  resources:
    requests: { cpu: 250m, memory: 256Mi }
    limits: { memory: 1Gi }
proxy:
  image: registry.example/tandem-proxy:1.2.3
  uid: 1337
  logLevel: debug
  sidecarMode: legacy
  skipOutboundPorts: 25,3306,8000-8100
  skipOutboundCidrs: 169.254.169.254/32,fd00::/8
webhook:
  failurePolicy: Fail
  timeoutSeconds: 5
";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tandemctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandemctl"))
        .args(args)
        .env_remove("TANDEM_API")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = tandemctl(args);
    assert!(
        out.status.success(),
        "tandemctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A temp dir removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("tandem-install-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file under `dir`, relative, with its text.
fn tree(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The documents of a YAML stream, sorted by kind and name (Helm orders by kind itself).
fn documents(text: &str) -> Vec<Value> {
    let mut docs = tandem_resources::parse_text(text).unwrap();
    docs.sort_by_key(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]));
    docs
}

fn without_namespace(docs: Vec<Value>) -> Vec<Value> {
    docs.into_iter()
        .filter(|d| d["kind"] != "Namespace")
        .collect()
}

/// The committed chart rendered as Helm would, with `user` values over its values.yaml.
fn render_chart(chart: &Path, user: Option<&str>) -> Vec<Value> {
    let values_text = std::fs::read_to_string(chart.join("values.yaml")).unwrap();
    let mut values: Value = serde_yaml::from_str(&values_text).unwrap();
    if let Some(user) = user {
        helm::merge(&mut values, &serde_yaml::from_str(user).unwrap());
    }
    let mut text = String::new();
    for (rel, body) in tree(&chart.join("templates")) {
        let rendered = helm::render(&body, &values).unwrap_or_else(|e| panic!("{rel}: {e}"));
        text.push_str("---\n");
        text.push_str(&rendered);
        text.push('\n');
    }
    documents(&text)
}

#[test]
fn committed_chart_and_rendering_are_current() {
    let committed = std::fs::read_to_string(workspace().join("deploy/helm/tandem-defaults.yaml"))
        .unwrap_or_default();
    assert!(
        ok(&["install"]) == committed,
        "deploy/helm/tandem-defaults.yaml is not what `tandemctl install` prints: {REGENERATE}"
    );
    let dir = TempDir::new("chart");
    ok(&["install", "--chart", dir.0.to_str().unwrap()]);
    let fresh = tree(&dir.0);
    let committed = tree(&workspace().join("deploy/helm/tandem"));
    let names = |t: &[(String, String)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&committed),
        names(&fresh),
        "chart files differ: {REGENERATE}"
    );
    for ((name, old), (_, new)) in committed.iter().zip(&fresh) {
        assert!(
            old == new,
            "deploy/helm/tandem/{name} is stale: {REGENERATE}"
        );
    }
}

#[test]
fn the_chart_renders_to_what_install_prints() {
    let chart = workspace().join("deploy/helm/tandem");
    let install = without_namespace(documents(&ok(&["install"])));
    assert_eq!(render_chart(&chart, None), install, "defaults");
    assert!(install.len() >= 14, "{} documents", install.len());

    let dir = TempDir::new("overrides");
    let file = dir.0.join("values.yaml");
    std::fs::write(&file, OVERRIDES).unwrap();
    let install = without_namespace(documents(&ok(&["install", "-f", file.to_str().unwrap()])));
    assert_eq!(render_chart(&chart, Some(OVERRIDES)), install, "overrides");
    // The overrides reached the manifests.
    let deployment = install.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(deployment["metadata"]["namespace"], "mesh");
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--injector-proxy-uid=1337"), "{args}");
    assert!(
        args.contains("--injector-control-plane=tandem-control-plane.mesh.svc:15010"),
        "{args}"
    );
}

/// Injected proxies authenticate with their pod's ServiceAccount token: the control plane
/// serves no plaintext xDS, and may create the TokenReviews that check the tokens. The
/// committed rendering and chart say the same (the tests above keep them equal to this).
#[test]
fn proxies_authenticate_there_is_no_plaintext_xds() {
    let dir = TempDir::new("authn");
    let file = dir.0.join("values.yaml");
    std::fs::write(&file, OVERRIDES).unwrap();
    for args in [
        vec!["install"],
        vec!["install", "-f", file.to_str().unwrap()],
    ] {
        let docs = documents(&ok(&args));
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let cp_args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap();
        assert!(
            cp_args.iter().any(|a| a == "--kubernetes"),
            "{args:?}: {cp_args:?}"
        );
        assert!(
            !cp_args
                .iter()
                .any(|a| a.as_str().unwrap().starts_with("--plaintext-xds")),
            "{args:?}: {cp_args:?}"
        );
        let role = docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
        let reviews = serde_json::json!({"apiGroups": ["authentication.k8s.io"],
            "resources": ["tokenreviews"], "verbs": ["create"]});
        assert!(
            role["rules"].as_array().unwrap().contains(&reviews),
            "{args:?}: {role}"
        );
    }
    let committed =
        std::fs::read_to_string(workspace().join("deploy/helm/tandem-defaults.yaml")).unwrap();
    assert!(committed.contains("- --kubernetes\n"));
    assert!(
        !committed.contains("- --plaintext-xds"),
        "a rendered argument"
    );
    assert!(committed.contains("tokenreviews"));
}

#[test]
fn install_output_is_valid_kubernetes() {
    let exe = match kube_validate::validator() {
        Ok(exe) => exe,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let dir = TempDir::new("validate");
    let values = dir.0.join("values.yaml");
    std::fs::write(&values, OVERRIDES).unwrap();
    let mut files = Vec::new();
    for (name, args) in [
        ("defaults.yaml", vec!["install"]),
        (
            "overrides.yaml",
            vec!["install", "-f", values.to_str().unwrap()],
        ),
        (
            "list.json",
            vec!["install", "-o", "json", "--set", "controlPlane.replicas=1"],
        ),
    ] {
        let mut text = ok(&args);
        if name.ends_with(".json") {
            // The tool knows no `List`: its items, one document each.
            let list: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(list["kind"], "List");
            text = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| format!("---\n{d}\n"))
                .collect();
        }
        let path = dir.0.join(name.replace(".json", ".yaml"));
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    for version in VERSIONS {
        if let Err(out) = kube_validate::validate(&exe, version, &files) {
            panic!("Kubernetes {version} rejects install's output:\n{out}");
        }
    }
    // A negative control: the validator does see a misplaced field.
    let broken = ok(&["install"]).replace("minAvailable: 1", "minAvailable: 1\n  minAvailabel: 1");
    let path = dir.0.join("broken.yaml");
    std::fs::write(&path, broken).unwrap();
    let out = kube_validate::validate(&exe, VERSIONS[1], &[path]).unwrap_err();
    assert!(out.contains("minAvailabel"), "{out}");
}

#[test]
fn crd_schemas_and_the_validator_agree() {
    let python = match kube_validate::validator() {
        Ok(_) => kube_validate::python(),
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let schemas: Vec<(String, Value)> = tandemctl::install::crds::schemas();
    for (kind, s) in &schemas {
        schema::assert_structural(kind, s);
    }
    let schema_of = |doc: &Value| {
        let kind = doc["kind"].as_str().unwrap();
        schemas.iter().find(|(k, _)| k == kind).unwrap().1.clone()
    };

    let examples = schema::documented_examples(&workspace().join("docs"));
    assert!(
        examples.len() >= 3,
        "{} documented examples",
        examples.len()
    );
    let valid: Vec<Value> = examples
        .into_iter()
        .chain(schema::valid_documents())
        .collect();
    let cases: Vec<(Value, Value)> = valid.iter().map(|d| (schema_of(d), d.clone())).collect();
    for (doc, result) in valid.iter().zip(schema::check(&python, &cases)) {
        assert_eq!(result, None, "the schema refuses {doc}");
        tandem_resources::validate_documents(vec![doc.clone()])
            .unwrap_or_else(|e| panic!("Tandem refuses {doc}: {e}"));
    }

    let invalid = schema::invalid_documents();
    let cases: Vec<(Value, Value)> = invalid
        .iter()
        .map(|(_, d)| (schema_of(d), d.clone()))
        .collect();
    for ((what, doc), result) in invalid.iter().zip(schema::check(&python, &cases)) {
        assert!(result.is_some(), "the schema accepts {what}: {doc}");
        assert!(
            tandem_resources::validate_documents(vec![doc.clone()]).is_err(),
            "Tandem's validator accepts {what}: {doc}"
        );
    }
}

/// Values files `install -f` refuses; the chart's values.schema.json refuses them too.
const BAD_VALUES: [(&str, &str); 6] = [
    ("unknown.yaml", "proxy:\n  uidd: 1\n"),
    ("type.yaml", "proxy:\n  uid: root\n"),
    ("section.yaml", "controlPlane: 2\n"),
    ("range.yaml", "controlPlane:\n  replicas: 0\n"),
    ("enum.yaml", "webhook:\n  failurePolicy: Sometimes\n"),
    ("quote.yaml", "proxy:\n  image: 'a\"b'\n"),
];

#[test]
fn helm_values_schema_refuses_what_install_refuses() {
    let python = match kube_validate::validator() {
        Ok(_) => kube_validate::python(),
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let chart = workspace().join("deploy/helm/tandem");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart.join("values.schema.json")).unwrap())
            .unwrap();
    let defaults: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap()).unwrap();
    let merged = |user: &str| {
        let mut v = defaults.clone();
        helm::merge(&mut v, &serde_yaml::from_str(user).unwrap());
        v
    };
    let mut cases = vec![
        (schema.clone(), defaults.clone()),
        (schema.clone(), merged(OVERRIDES)),
    ];
    cases.extend(
        BAD_VALUES
            .iter()
            .map(|(_, text)| (schema.clone(), merged(text))),
    );
    let results = schema::check(&python, &cases);
    assert_eq!(results[0], None, "values.yaml");
    assert_eq!(results[1], None, "the overrides");
    let dir = TempDir::new("schema");
    for ((name, text), result) in BAD_VALUES.iter().zip(&results[2..]) {
        assert!(
            result.is_some(),
            "values.schema.json accepts {name}: {text}"
        );
        let file = dir.0.join(name);
        std::fs::write(&file, text).unwrap();
        assert!(
            !tandemctl(&["install", "-f", file.to_str().unwrap()])
                .status
                .success(),
            "{name}"
        );
    }
}

/// Every flag `install` gives the control plane is one it accepts: started with the
/// rendered arguments (listen addresses moved to port 0 on loopback, no cluster to reach),
/// it is refused by no usage error (clap exits 2); it fails later, or keeps running until
/// killed.
#[test]
fn the_control_plane_accepts_the_rendered_arguments() {
    let bin = tandem_tests::bins::locate(tandem_tests::bins::CONTROL_PLANE)
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = TempDir::new("args");
    let file = dir.0.join("values.yaml");
    std::fs::write(&file, OVERRIDES).unwrap();
    for args in [
        vec!["install"],
        vec!["install", "-f", file.to_str().unwrap()],
    ] {
        let docs = documents(&ok(&args));
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let rendered = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap();
        let args: Vec<String> = rendered
            .iter()
            .map(|a| {
                let a = a.as_str().unwrap();
                match a.split_once('=') {
                    Some((flag, _)) if flag.ends_with("-addr") => format!("{flag}=127.0.0.1:0"),
                    _ => a.to_string(),
                }
            })
            .collect();
        let mut child = Command::new(&bin)
            .args(&args)
            .current_dir(&dir.0)
            .env("KUBECONFIG", dir.0.join("no-kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("POD_NAME", "tandem-control-plane-0")
            .env("POD_NAMESPACE", "tandem-system")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_ne!(status.and_then(|s| s.code()), Some(2), "{args:?}: {stderr}");
        for usage in ["unexpected argument", "invalid value", "Usage:"] {
            assert!(!stderr.contains(usage), "{args:?}: {stderr}");
        }
    }
}

#[test]
fn wrong_options_name_the_key() {
    let dir = TempDir::new("errors");
    let cases: Vec<(Vec<String>, &str)> = {
        let file = |name: &str, text: &str| {
            let p = dir.0.join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        vec![
            (
                vec!["--set".into(), "controlPlane.replica=3".into()],
                "\"controlPlane.replica\"",
            ),
            (
                vec!["--set".into(), "controlPlane.replicas=two".into()],
                "controlPlane.replicas",
            ),
            (
                vec!["--set".into(), "webhook.failurePolicy=Maybe".into()],
                "webhook.failurePolicy",
            ),
            (
                vec!["-f".into(), file("unknown.yaml", "proxy:\n  uidd: 1\n")],
                "\"proxy.uidd\"",
            ),
            (
                vec!["-f".into(), file("type.yaml", "proxy:\n  uid: root\n")],
                "proxy.uid",
            ),
            (
                vec!["-f".into(), file("section.yaml", "controlPlane: 2\n")],
                "controlPlane",
            ),
            (
                vec![
                    "-f".into(),
                    file("range.yaml", "controlPlane:\n  replicas: 0\n"),
                ],
                "controlPlane.replicas",
            ),
        ]
    };
    for (args, key) in cases {
        let mut all = vec!["install"];
        all.extend(args.iter().map(String::as_str));
        let out = tandemctl(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{all:?} succeeded");
        assert!(out.stdout.is_empty(), "{all:?} printed manifests");
        assert!(stderr.contains(key), "{all:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{all:?}: one line: {stderr}");
    }
}

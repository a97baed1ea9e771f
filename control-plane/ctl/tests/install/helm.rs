//! A renderer of exactly the template constructs `tandemctl install --chart` emits, with
//! Helm's semantics for them, refusing everything else:
//! - `{{ .Values.a.b }}`: the value printed as Go's text/template prints it. Helm reads
//!   values.yaml numbers as float64, printed in `%v` form: integers below 1 000 000 as
//!   digits, larger ones in exponent form (`1e+06`), which this renderer refuses rather
//!   than imitates; strings as they are; booleans as `true`/`false`;
//! - `{{ .Values.a.b | quote }}`: sprig's `quote`, Go's `%q` of the printed value
//!   (modelled for printable ASCII; anything else is refused).
//!
//! A missing value (Helm prints `<no value>`), whitespace trimming (`{{-`), any other
//! action, function or pipeline is an error. User values are merged over the chart's
//! values.yaml as Helm coalesces them: maps deeply, anything else replaced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;

/// `text` with every action replaced by its output under `values`.
pub fn render(text: &str, values: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or("an unclosed {{")?;
        out.push_str(&action(&after[..close], values)?);
        rest = &after[close + 2..];
    }
    if rest.contains("}}") {
        return Err("a }} without {{".into());
    }
    out.push_str(rest);
    Ok(out)
}

fn action(inner: &str, values: &Value) -> Result<String, String> {
    let refuse = || Err(format!("unsupported template action {{{{{inner}}}}}"));
    let Some(body) = inner.strip_prefix(' ').and_then(|s| s.strip_suffix(' ')) else {
        return refuse();
    };
    let (path, quote) = match body.strip_suffix(" | quote") {
        Some(p) => (p, true),
        None => (body, false),
    };
    let Some(key) = path.strip_prefix(".Values.") else {
        return refuse();
    };
    let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    if !key.split('.').all(plain) {
        return refuse();
    }
    let mut v = values;
    for part in key.split('.') {
        v = v
            .get(part)
            .ok_or_else(|| format!(".Values.{key}: no such value (Helm prints <no value>)"))?;
    }
    let printed = print(key, v)?;
    if !quote {
        return Ok(printed);
    }
    if !printed.chars().all(|c| (' '..='~').contains(&c)) {
        return Err(format!(
            ".Values.{key}: quote is modelled for printable ASCII only"
        ));
    }
    Ok(format!(
        "\"{}\"",
        printed.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// Go's `%v` of a value Helm read from YAML.
fn print(key: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() < 1e6 {
                Ok(format!("{}", f as i64))
            } else {
                Err(format!(".Values.{key}: {n} prints as a float64 under Helm"))
            }
        }
        other => Err(format!(".Values.{key}: {other} is not a scalar")),
    }
}

/// `over` merged into `base` as Helm coalesces values.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

#[test]
fn the_renderer_refuses_what_it_does_not_model() {
    let values = serde_json::json!({"a": {"b": "x", "n": 1000000, "m": 12}});
    assert_eq!(
        render("k: {{ .Values.a.b | quote }}", &values).unwrap(),
        "k: \"x\""
    );
    assert_eq!(render("k: {{ .Values.a.m }}", &values).unwrap(), "k: 12");
    for bad in [
        "{{ .Values.a.n }}",
        "{{ .Values.a.c }}",
        "{{- .Values.a.b }}",
        "{{ .Release.Namespace }}",
        "{{ .Values.a.b | upper }}",
        "{{ if .Values.a.b }}x{{ end }}",
        "{{ include \"x\" . }}",
        "{{ .Values.a }}",
        "a }} b",
    ] {
        assert!(render(bad, &values).is_err(), "{bad} was rendered");
    }
}

//! A small parser of the Prometheus text exposition format (version 0.0.4), enough for
//! the proxies' own `/metrics`: comments and `# HELP`/`# TYPE` lines are skipped; every
//! other line is `name{label="value",...} value [timestamp]`.
//!
//! Written here rather than pulled in as a crate because the control plane needs only the
//! samples (no metadata, no exemplars) and the format is small; it is strict so that a
//! garbled scrape is rejected as a whole instead of yielding wrong numbers.

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, e.g. `tandem_requests_total` or `..._bucket`.
    pub name: String,
    /// Labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A line that is not valid exposition format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metrics line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Parses a whole exposition; the first invalid line fails it.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line).map_err(|reason| ParseError {
            line: i + 1,
            reason,
        })?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = parse_value(value)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("invalid timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("unexpected text after the value".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `k="v",...}` and returns the labels and what follows the `}`.
/// Label pairs in the order written.
type Labels = Vec<(String, String)>;

fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(tail) = s.strip_prefix('}') {
            return Ok((labels, tail));
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim();
        if !valid_name(key) {
            return Err(format!("invalid label name {key:?}"));
        }
        s = s[eq + 1..].trim_start();
        s = s.strip_prefix('"').ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    Some((_, c)) => return Err(format!("invalid escape \\{c} in a label value")),
                    None => return Err("unterminated label value".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        labels.push((key.to_string(), value));
        s = s[end + 1..].trim_start();
        if let Some(tail) = s.strip_prefix(',') {
            s = tail;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .map_err(|_| format!("invalid value {text:?}")),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters_histograms_and_skips_comments() {
        let text = r#"
# HELP tandem_requests_total HTTP requests by response status.
# TYPE tandem_requests_total counter
tandem_requests_total{backend="web-v2",code="200",direction="outbound",dst_service="web",route="default/web-split/rule-0"} 12
tandem_requests_total{backend="web-v2",code="503",direction="outbound",dst_service="web",route="default/web-split/rule-0"} 1
tandem_request_duration_seconds_bucket{backend="web-v2",direction="outbound",le="0.005"} 3
tandem_request_duration_seconds_bucket{backend="web-v2",direction="outbound",le="+Inf"} 13
tandem_request_duration_seconds_sum{backend="web-v2",direction="outbound"} 0.25
tandem_xds_connected 1
process_start_time_seconds 1.7e9 1700000000000
"#;
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 7);
        assert_eq!(s[0].name, "tandem_requests_total");
        assert_eq!(s[0].label("backend"), Some("web-v2"));
        assert_eq!(s[0].label("route"), Some("default/web-split/rule-0"));
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[3].label("le"), Some("+Inf"));
        assert_eq!(s[5].labels, vec![]);
        assert_eq!(s[5].value, 1.0);
        assert_eq!(s[6].value, 1.7e9);
    }

    #[test]
    fn label_values_unescape_and_may_hold_separators() {
        let s = parse(r#"m{a="x\"y",b="1,2}",c="back\\slash\n", } -Inf"#).unwrap();
        assert_eq!(s[0].label("a"), Some("x\"y"));
        assert_eq!(s[0].label("b"), Some("1,2}"));
        assert_eq!(s[0].label("c"), Some("back\\slash\n"));
        assert_eq!(s[0].value, f64::NEG_INFINITY);
        assert!(parse("m NaN").unwrap()[0].value.is_nan());
        assert_eq!(parse("m{} +Inf").unwrap()[0].value, f64::INFINITY);
    }

    #[test]
    fn garbage_is_rejected_with_its_line() {
        for (text, why) in [
            ("m", "no value"),
            ("m{a=\"1", "unterminated"),
            ("m{a=\"1\"", "expected ','"),
            ("m{a=1} 2", "quoted"),
            ("m{a=\"1\" b=\"2\"} 2", "expected ','"),
            ("m{1a=\"1\"} 2", "invalid label name"),
            ("1m 2", "invalid metric name"),
            ("m abc", "invalid value"),
            ("m 1 2 3", "unexpected text"),
            ("m 1 x", "invalid timestamp"),
            ("m{a=\"\\t\"} 1", "invalid escape"),
        ] {
            let e = parse(&format!("# ok\n{text}\n")).unwrap_err();
            assert_eq!(e.line, 2, "{text}");
            assert!(e.reason.contains(why), "{text}: {e}");
        }
    }
}

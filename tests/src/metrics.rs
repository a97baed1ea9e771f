//! A small parser for the Prometheus text exposition format.

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, including `_bucket`/`_sum`/`_count` suffixes.
    pub name: String,
    /// Labels, in name order.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// All samples of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Samples in exposition order.
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses a scrape; panics on a malformed sample line (that is a proxy bug).
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_line(l).unwrap_or_else(|e| panic!("bad metrics line {l:?}: {e}")))
            .collect();
        Metrics { samples }
    }

    /// Samples named `name` whose labels include every pair in `labels` (other labels and
    /// label order do not matter).
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the matching samples, or `None` when no sample matches.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels)
            .map(|s| s.value)
            .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
    }

    /// Like [`Metrics::get`], with 0 for no match (counters not yet incremented).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Whether any sample is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, used) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, &line[open + 1 + used..])
        }
        None => {
            let end = line.find(char::is_whitespace).ok_or("no value")?;
            (&line[..end], BTreeMap::new(), &line[end..])
        }
    };
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    Ok(Sample {
        name: name.trim().to_owned(),
        labels,
        value,
    })
}

/// Parses `a="x",b="y"}`; returns the labels and the bytes consumed including `}`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, usize), String> {
    let mut labels = BTreeMap::new();
    let mut chars = s.char_indices().peekable();
    loop {
        while chars
            .next_if(|(_, c)| *c == ',' || c.is_whitespace())
            .is_some()
        {}
        match chars.peek() {
            Some((i, '}')) => return Ok((labels, i + 1)),
            None => return Err("unterminated labels".into()),
            _ => {}
        }
        let mut key = String::new();
        for (_, c) in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {key} has no quoted value"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("dangling escape".into()),
                },
                Some((_, '"')) => break,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        }
        labels.insert(key.trim().to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_in_any_order_and_sums_matches() {
        let m = Metrics::parse(
            "# HELP x y\n# TYPE tandem_requests_total counter\n\
             tandem_requests_total{code=\"200\",direction=\"outbound\",dst_service=\"echo\"} 3\n\
             tandem_requests_total{dst_service=\"echo\",direction=\"outbound\",code=\"200\",tls=\"no\"} 2\n\
             tandem_requests_total{direction=\"inbound\",dst_service=\"a\\\"b\",code=\"200\"} 1\n\
             process_resident_memory_bytes 1.5e7\n",
        );
        let labels = [
            ("direction", "outbound"),
            ("dst_service", "echo"),
            ("code", "200"),
        ];
        assert_eq!(m.get("tandem_requests_total", &labels), Some(5.0));
        assert_eq!(
            m.get("tandem_requests_total", &[("dst_service", "a\"b")]),
            Some(1.0)
        );
        assert_eq!(m.get("tandem_requests_total", &[("code", "500")]), None);
        assert_eq!(m.get("process_resident_memory_bytes", &[]), Some(1.5e7));
    }
}

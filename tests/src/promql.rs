//! Just enough PromQL to check Grafana dashboards against the metrics real proxies export.
//!
//! A dashboard query that names a metric or label the proxy does not have draws an empty
//! panel, silently. `tests/tests/dashboards.rs` reads every query with [`selectors`] and
//! looks each metric and label up in real `/metrics`. What it finds per metric is the label
//! names the expression asks of it: its matchers, and the `by`/`without` labels of the
//! aggregations around it (`on`/`ignoring` of binary operations apply to both sides, the
//! labels of `group_left(...)` to the right side, of `group_right(...)` to the left).
//!
//! A parser rather than a regular expression, so that grouping labels are tied to the
//! metrics they group, and an unknown function is an error rather than a guess: extend
//! [`FUNCTIONS`] when a dashboard needs a new one. Grafana variables (`$pod`,
//! `[$__rate_interval]`) may stand where PromQL has a value or a duration.

use std::collections::BTreeSet;

/// A metric selected by an expression and the label names the expression uses on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The metric name as written (`..._bucket` included).
    pub name: String,
    /// Label names matched or grouped by.
    pub labels: BTreeSet<String>,
}

/// Functions the checker understands: none of them adds or renames labels, so the
/// labels used around them still belong to the metrics inside. (`label_replace` and
/// friends would break that and are left out on purpose.)
pub const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "hour",
    "idelta",
    "increase",
    "irate",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "sum_over_time",
    "time",
    "timestamp",
    "vector",
];

/// Aggregation operators (they take `by`/`without`).
const AGGREGATIONS: &[&str] = &[
    "avg", "bottomk", "count", "group", "max", "min", "quantile", "stddev", "stdvar", "sum", "topk",
];

/// Words that are never metric names.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "atan2",
    "bool",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "inf",
    "nan",
];

/// A token of an expression.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A metric, label, function or keyword name.
    Ident(String),
    /// A quoted string, unescaped.
    Str(String),
    /// A number or a duration.
    Num,
    /// A Grafana variable outside a string (`[$__rate_interval]`, `> $threshold`).
    Var,
    /// An operator or bracket, one of [`PUNCT`].
    Punct(&'static str),
}

/// Every selector in `expr`, or why it cannot be read.
pub fn selectors(expr: &str) -> Result<Vec<Selector>, String> {
    let mut p = Parser {
        toks: lex(expr)?,
        pos: 0,
        found: Vec::new(),
    };
    p.expr(0)?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected {:?}", p.toks[p.pos]));
    }
    Ok(p.found)
}

/// Operators and brackets, longest first where one is a prefix of another.
const PUNCT: &[&str] = &[
    "==", "!=", "=~", "!~", ">=", "<=", "(", ")", "{", "}", "[", "]", ",", "=", "<", ">", "+", "-",
    "*", "/", "%", "^", "@", ":",
];

/// The tokens of `s`; `#` comments are skipped.
fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            let mut text = String::new();
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err("unterminated string".into()),
                    Some(&q) if q == c => break,
                    Some('\\') if c != '`' => {
                        text.extend(b.get(i + 1));
                        i += 2;
                    }
                    Some(&ch) => {
                        text.push(ch);
                        i += 1;
                    }
                }
            }
            i += 1;
            out.push(Tok::Str(text));
        } else if c == '$' {
            i += 1;
            if b.get(i) == Some(&'{') {
                while i < b.len() && b[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
            }
            out.push(Tok::Var);
        } else if c == '[' && b.get(i + 1) == Some(&'[') {
            while i < b.len() && !(b[i] == ']' && b.get(i + 1) == Some(&']')) {
                i += 1;
            }
            i += 2;
            out.push(Tok::Var);
        } else if c.is_ascii_digit() || (c == '.' && b.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers and durations (`0.99`, `1e-3`, `5m`, `1h30m`).
            while i < b.len() {
                let exp_sign = (b[i] == '-' || b[i] == '+') && matches!(b[i - 1], 'e' | 'E');
                if b[i].is_ascii_alphanumeric() || b[i] == '.' || exp_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            out.push(Tok::Num);
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < b.len() && word(b[i]) {
                i += 1;
            }
            out.push(Tok::Ident(b[start..i].iter().collect()));
        } else if let Some(p) = PUNCT.iter().find(|p| {
            p.chars()
                .enumerate()
                .all(|(k, pc)| b.get(i + k) == Some(&pc))
        }) {
            i += p.len();
            out.push(Tok::Punct(p));
        } else {
            return Err(format!("unexpected character {c:?}"));
        }
    }
    Ok(out)
}

/// A recursive-descent parser that records every selector it passes.
struct Parser {
    /// The whole expression.
    toks: Vec<Tok>,
    /// The cursor into `toks`.
    pos: usize,
    /// Every selector so far, in order of appearance.
    found: Vec<Selector>,
}

/// Indices into `Parser::found` of the selectors below a node.
type Sels = Vec<usize>;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Tok::Punct(q)) if *q == p)
    }

    fn is_ident(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(i)) if i == w)
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        let yes = self.is_punct(p);
        self.pos += usize::from(yes);
        yes
    }

    fn eat_ident(&mut self, w: &str) -> bool {
        let yes = self.is_ident(w);
        self.pos += usize::from(yes);
        yes
    }

    fn expect(&mut self, p: &str) -> Result<(), String> {
        if self.eat_punct(p) {
            Ok(())
        } else {
            Err(format!("expected {p:?}, found {:?}", self.peek()))
        }
    }

    /// Binary operator at the cursor: (precedence, right-associative).
    fn binary_op(&self) -> Option<(u8, bool)> {
        match self.peek()? {
            Tok::Ident(w) => match w.as_str() {
                "or" => Some((1, false)),
                "and" | "unless" => Some((2, false)),
                "atan2" => Some((5, false)),
                _ => None,
            },
            Tok::Punct(p) => match *p {
                "==" | "!=" | "<" | ">" | "<=" | ">=" => Some((3, false)),
                "+" | "-" => Some((4, false)),
                "*" | "/" | "%" => Some((5, false)),
                "^" => Some((6, true)),
                _ => None,
            },
            _ => None,
        }
    }

    fn expr(&mut self, min: u8) -> Result<Sels, String> {
        let mut lhs = self.unary()?;
        while let Some((prec, right)) = self.binary_op() {
            if prec < min {
                break;
            }
            self.pos += 1;
            self.eat_ident("bool");
            let mut both = Vec::new();
            if self.eat_ident("on") || self.eat_ident("ignoring") {
                both = self.label_list()?;
            }
            let mut left_side = Vec::new();
            let mut right_side = Vec::new();
            if self.eat_ident("group_left") {
                if self.is_punct("(") {
                    right_side = self.label_list()?;
                }
            } else if self.eat_ident("group_right") && self.is_punct("(") {
                left_side = self.label_list()?;
            }
            let rhs = self.expr(if right { prec } else { prec + 1 })?;
            self.label(&lhs, &both);
            self.label(&rhs, &both);
            self.label(&lhs, &left_side);
            self.label(&rhs, &right_side);
            lhs.extend(rhs);
        }
        Ok(lhs)
    }

    fn label(&mut self, sels: &Sels, labels: &[String]) {
        for &i in sels {
            self.found[i].labels.extend(labels.iter().cloned());
        }
    }

    fn unary(&mut self) -> Result<Sels, String> {
        if self.eat_punct("-") || self.eat_punct("+") {
            return self.unary();
        }
        let sels = self.primary()?;
        self.postfix()?;
        Ok(sels)
    }

    /// Range, subquery, `offset` and `@` after a primary expression.
    fn postfix(&mut self) -> Result<(), String> {
        loop {
            if self.eat_punct("[") {
                while !self.eat_punct("]") {
                    if self.peek().is_none() {
                        return Err("unterminated range".into());
                    }
                    self.pos += 1;
                }
            } else if self.eat_ident("offset") {
                self.eat_punct("-");
                self.pos += 1;
            } else if self.eat_punct("@") {
                // A timestamp, or `start()` / `end()`.
                self.pos += 1;
                if self.eat_punct("(") {
                    self.expect(")")?;
                }
            } else {
                return Ok(());
            }
        }
    }

    fn primary(&mut self) -> Result<Sels, String> {
        let tok = self.peek().cloned().ok_or("expression ends too early")?;
        self.pos += 1;
        match tok {
            Tok::Num | Tok::Str(_) | Tok::Var => Ok(Vec::new()),
            Tok::Punct("(") => {
                let inner = self.expr(0)?;
                self.expect(")")?;
                Ok(inner)
            }
            Tok::Punct("{") => Err("a selector needs a metric name before `{`".into()),
            Tok::Ident(w) if AGGREGATIONS.contains(&w.as_str()) => {
                let mut grouping = self.grouping()?;
                let inner = self.args()?;
                if grouping.is_empty() {
                    grouping = self.grouping()?;
                }
                self.label(&inner, &grouping);
                Ok(inner)
            }
            Tok::Ident(w) if self.is_punct("(") => {
                if FUNCTIONS.contains(&w.as_str()) {
                    self.args()
                } else {
                    Err(format!(
                        "unknown function `{w}` (add it to promql::FUNCTIONS if it keeps labels)"
                    ))
                }
            }
            Tok::Ident(w) if KEYWORDS.contains(&w.as_str()) => {
                Err(format!("unexpected keyword `{w}`"))
            }
            Tok::Ident(name) => {
                let mut labels = BTreeSet::new();
                if self.eat_punct("{") {
                    labels = self.matchers()?;
                }
                self.found.push(Selector { name, labels });
                Ok(vec![self.found.len() - 1])
            }
            Tok::Punct(p) => Err(format!("unexpected `{p}`")),
        }
    }

    /// `by (...)` or `without (...)` if present.
    fn grouping(&mut self) -> Result<Vec<String>, String> {
        if self.eat_ident("by") || self.eat_ident("without") {
            self.label_list()
        } else {
            Ok(Vec::new())
        }
    }

    /// `( expr, ... )`: the selectors of every argument.
    fn args(&mut self) -> Result<Sels, String> {
        self.expect("(")?;
        let mut sels = Vec::new();
        if self.eat_punct(")") {
            return Ok(sels);
        }
        loop {
            sels.extend(self.expr(0)?);
            if self.eat_punct(")") {
                return Ok(sels);
            }
            self.expect(",")?;
        }
    }

    /// `( label, ... )`.
    fn label_list(&mut self) -> Result<Vec<String>, String> {
        self.expect("(")?;
        let mut labels = Vec::new();
        loop {
            if self.eat_punct(")") {
                return Ok(labels);
            }
            match self.peek().cloned() {
                Some(Tok::Ident(l) | Tok::Str(l)) => labels.push(l),
                other => return Err(format!("expected a label name, found {other:?}")),
            }
            self.pos += 1;
            if !self.is_punct(")") {
                self.expect(",")?;
            }
        }
    }

    /// `name op "value", ... }` after `{`: the label names.
    fn matchers(&mut self) -> Result<BTreeSet<String>, String> {
        let mut labels = BTreeSet::new();
        loop {
            if self.eat_punct("}") {
                return Ok(labels);
            }
            match self.peek().cloned() {
                Some(Tok::Ident(l) | Tok::Str(l)) => labels.insert(l),
                other => return Err(format!("expected a label name, found {other:?}")),
            };
            self.pos += 1;
            if !["=", "!=", "=~", "!~"].iter().any(|op| self.eat_punct(op)) {
                return Err(format!(
                    "expected a matcher operator, found {:?}",
                    self.peek()
                ));
            }
            match self.peek() {
                Some(Tok::Str(_) | Tok::Var) => self.pos += 1,
                other => return Err(format!("expected a quoted value, found {other:?}")),
            }
            if !self.is_punct("}") {
                self.expect(",")?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every selector of `expr` as `name{label,...}`, labels in name order.
    fn read(expr: &str) -> Vec<String> {
        let sels = selectors(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let labels = |s: &Selector| Vec::from_iter(s.labels.clone()).join(",");
        sels.iter()
            .map(|s| format!("{}{{{}}}", s.name, labels(s)))
            .collect()
    }

    #[test]
    fn grouping_labels_reach_the_metrics_they_group() {
        let s = read(
            "sum by (dst_service, backend) (rate(a{code!~\"5..\"}[5m])) / ignoring(backend) \
             group_left(route) sum by (dst_service) (rate(b[5m]) offset 1h) > 0.5",
        );
        let want = [
            "a{backend,code,dst_service}",
            "b{backend,dst_service,route}",
        ];
        assert_eq!(s, want);
        // `by` after the arguments, a Grafana variable as a matcher value, a function of
        // no selector.
        let s = read("min(x{p=~\"$pod\"} > 0) by (pod) - time()");
        assert_eq!(s, ["x{p,pod}"]);
        // `group_right` labels go to the left side; `on` to both.
        let s = read("a * on(pod) group_right(namespace) b");
        assert_eq!(s, ["a{namespace,pod}", "b{pod}"]);
    }

    #[test]
    fn grafana_variables_durations_and_numbers_are_values() {
        let q = "histogram_quantile(0.99, sum by (le) (rate(h_bucket{pod=~\"${pod:regex}\"}\
                 [$__rate_interval]))) > 1e-3 and rate(c[5m]) @ end() > [[threshold]]";
        assert_eq!(read(q), ["h_bucket{le,pod}", "c{}"]);
        assert_eq!(read("rate(c[1h30m:1m] offset -5m)"), ["c{}"]);
    }

    #[test]
    fn what_the_checker_cannot_vouch_for_is_an_error() {
        for (expr, why) in [
            // It makes a label: the ones used around it no longer all belong to `x`.
            ("label_join(x, \"a\", \",\", \"b\")", "unknown function"),
            ("{__name__=~\"tandem_.*\"}", "metric name before"),
            ("sum(rate(x[5m])", "found None"),
            ("x{pod=\"a}", "unterminated string"),
            ("x{pod}", "matcher operator"),
            ("rate(offset[5m])", "unexpected keyword"),
            ("up down", "unexpected Ident"),
        ] {
            let err = selectors(expr).unwrap_err();
            assert!(err.contains(why), "{expr}: {err}");
        }
    }
}

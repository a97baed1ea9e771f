//! A guarded canary's service level objectives and the judgement the controller makes on
//! them, once per analysis interval: roll back at the first breach, advance a step once
//! the step has lasted its time with enough requests and no breach, promote after the
//! last step. Pure: figures in, a decision with its reason out.
//!
//! Limits are kept as the user wrote them (`1%`, `+0.5%`, `500ms`, `1.5x`) so that the
//! route annotations that carry them read like the command that set them.

use std::fmt;
use std::time::Duration;

/// The requests a canary must have served in a step before it is judged healthy.
pub const DEFAULT_MIN_REQUESTS: u64 = 20;
/// How long each step lasts when healthy.
pub const DEFAULT_STEP_TIME: Duration = Duration::from_secs(30);

/// A limit on the canary's error rate (5xx answers, the proxies' own included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// At most this share, in parts per million: `1%`.
    Absolute(u32),
    /// At most the stable's share plus this, in parts per million: `+1%`.
    OverStable(u32),
}

/// A limit on the canary's 99th percentile latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyLimit {
    /// At most this, in milliseconds: `500ms`.
    Absolute(u64),
    /// At most the stable's p99 times this, in hundredths: `1.5x` is 150.
    TimesStable(u32),
}

/// A guarded canary's objectives and pace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// Error-rate limits (any may breach).
    pub max_error_rate: Vec<RateLimit>,
    /// Latency limits (any may breach).
    pub max_p99: Vec<LatencyLimit>,
    /// Requests the canary must serve in a step before it is judged healthy.
    pub min_requests: u64,
    /// How long a healthy step lasts.
    pub step_time: Duration,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            max_error_rate: Vec::new(),
            max_p99: Vec::new(),
            min_requests: DEFAULT_MIN_REQUESTS,
            step_time: DEFAULT_STEP_TIME,
        }
    }
}

/// One backend's figures over the step so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// Requests.
    pub requests: f64,
    /// Of which answered 5xx.
    pub errors: f64,
    /// 99th percentile latency, seconds (`None` without requests).
    pub p99_seconds: Option<f64>,
}

impl Figures {
    /// A backend's (or service's) figures over a window, as the telemetry sums them.
    pub fn from_stats(b: &crate::telemetry::BackendStats) -> Self {
        Figures {
            requests: b.requests,
            errors: b.requests * (1.0 - b.success_rate.unwrap_or(1.0)),
            p99_seconds: b.p99_seconds,
        }
    }

    /// The share of requests answered 5xx (0 without requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests > 0.0 {
            self.errors / self.requests
        } else {
            0.0
        }
    }
}

/// Why objectives as a client wrote them are not a [`Guard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectiveError {
    /// The error-rate limits do not parse.
    Rate(String),
    /// The p99 limits do not parse.
    P99(String),
    /// The minimum request count is outside 1..=1,000,000.
    MinRequests(u64),
    /// Neither an error-rate nor a p99 limit.
    Missing,
}

/// Parses and checks the objectives a guarded canary or a chaos experiment is given
/// (comma lists of limits, the requests needed before judging); the step time stays the
/// default for the caller to set.
pub fn objectives(
    rates: Option<&str>,
    p99s: Option<&str>,
    min_requests: Option<u64>,
) -> Result<Guard, ObjectiveError> {
    let mut g = Guard::default();
    if let Some(t) = rates {
        g.max_error_rate = parse_list(t, parse_rate).map_err(ObjectiveError::Rate)?;
    }
    if let Some(t) = p99s {
        g.max_p99 = parse_list(t, parse_latency).map_err(ObjectiveError::P99)?;
    }
    if g.max_error_rate.is_empty() && g.max_p99.is_empty() {
        return Err(ObjectiveError::Missing);
    }
    if let Some(n) = min_requests {
        if !(1..=1_000_000).contains(&n) {
            return Err(ObjectiveError::MinRequests(n));
        }
        g.min_requests = n;
    }
    Ok(g)
}

/// What the controller does after a judgement.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing yet; why (for `canary status`).
    Hold(String),
    /// Go to the next step.
    Advance(String),
    /// The last step held: everything to the canary.
    Promote(String),
    /// An objective is breached: everything back to the stable, at once.
    RollBack(String),
}

/// Judges the canary `canary` (figures since its step began, `elapsed` ago) against
/// `guard`, with the stable's figures for relative limits.
///
/// A breach is decided as soon as it is certain: the error rate counts at least
/// `min_requests` in its denominator, so a handful of failures among the first requests
/// rolls back at once when even a perfect rest of the step could not bring the rate
/// under the limit, yet one early failure never does. Relative limits and the p99 wait
/// for `min_requests` on both sides.
pub fn judge(
    guard: &Guard,
    canary_name: &str,
    canary: &Figures,
    stable: &Figures,
    elapsed: Duration,
    last_step: bool,
) -> Decision {
    let min = guard.min_requests as f64;
    let judged = canary.requests.max(min).max(1.0);
    let rate = canary.errors / judged;
    let enough = canary.requests >= min && canary.requests > 0.0;
    let stable_enough = stable.requests >= min && stable.requests > 0.0;
    for limit in &guard.max_error_rate {
        let (bound, what) = match limit {
            RateLimit::Absolute(ppm) => (f64::from(*ppm) / 1e6, format_rate(*ppm)),
            RateLimit::OverStable(ppm) => {
                if !(enough && stable_enough) {
                    continue;
                }
                let bound = stable.error_rate() + f64::from(*ppm) / 1e6;
                (
                    bound,
                    format!(
                        "{} (stable {} + {})",
                        percent(bound),
                        percent(stable.error_rate()),
                        format_rate(*ppm)
                    ),
                )
            }
        };
        if rate > bound {
            return Decision::RollBack(format!(
                "{canary_name} error rate {} > {what} over {} requests",
                percent(canary.errors / canary.requests.max(1.0)),
                canary.requests.round()
            ));
        }
    }
    if enough {
        for limit in &guard.max_p99 {
            let Some(p99) = canary.p99_seconds else {
                continue;
            };
            let (bound, what) = match limit {
                LatencyLimit::Absolute(ms) => (*ms as f64 / 1e3, format_ms(*ms)),
                LatencyLimit::TimesStable(hundredths) => {
                    let Some(s) = stable.p99_seconds.filter(|_| stable_enough) else {
                        continue;
                    };
                    let bound = s * f64::from(*hundredths) / 100.0;
                    (
                        bound,
                        format!(
                            "{} (stable {} × {})",
                            seconds(bound),
                            seconds(s),
                            format_times(*hundredths)
                        ),
                    )
                }
            };
            if p99 > bound {
                return Decision::RollBack(format!(
                    "{canary_name} p99 {} > {what} over {} requests",
                    seconds(p99),
                    canary.requests.round()
                ));
            }
        }
    }
    if elapsed < guard.step_time {
        return Decision::Hold(format!(
            "step healthy so far ({} requests, {} errors); {}s of {}s",
            canary.requests.round(),
            canary.errors.round(),
            elapsed.as_secs(),
            guard.step_time.as_secs()
        ));
    }
    if !enough {
        return Decision::Hold(format!(
            "waiting for {} requests to {canary_name} (has {})",
            guard.min_requests,
            canary.requests.round()
        ));
    }
    let why = format!(
        "{canary_name} healthy for {}s: error rate {} over {} requests{}",
        elapsed.as_secs(),
        percent(canary.error_rate()),
        canary.requests.round(),
        canary
            .p99_seconds
            .map(|p| format!(", p99 {}", seconds(p)))
            .unwrap_or_default()
    );
    if last_step {
        Decision::Promote(why)
    } else {
        Decision::Advance(why)
    }
}

/// A share as a percentage with at most one decimal (`12.5%`, `1%`).
pub fn percent(share: f64) -> String {
    let p = (share * 1000.0).round() / 10.0;
    if p == p.trunc() {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0}ms", s * 1e3)
    } else {
        format!("{s:.2}s")
    }
}

fn format_rate(ppm: u32) -> String {
    let p = f64::from(ppm) / 1e4;
    let text = format!("{p:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

fn format_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn format_times(hundredths: u32) -> String {
    let t = f64::from(hundredths) / 100.0;
    let text = format!("{t:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}x")
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateLimit::Absolute(ppm) => f.write_str(&format_rate(*ppm)),
            RateLimit::OverStable(ppm) => write!(f, "+{}", format_rate(*ppm)),
        }
    }
}

impl fmt::Display for LatencyLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LatencyLimit::Absolute(ms) => f.write_str(&format_ms(*ms)),
            LatencyLimit::TimesStable(h) => f.write_str(&format_times(*h)),
        }
    }
}

/// Parses an error-rate limit: `1%`, `0.5%`, `+1%` (over the stable's rate).
pub fn parse_rate(text: &str) -> Result<RateLimit, String> {
    let t = text.trim();
    let (over, rest) = match t.strip_prefix('+') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let number = rest
        .strip_suffix('%')
        .ok_or_else(|| format!("{text:?}: a percentage such as 1% or +0.5%"))?;
    let p: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: a percentage such as 1% or +0.5%"))?;
    if !(0.0..=100.0).contains(&p) || !p.is_finite() {
        return Err(format!("{text:?}: between 0% and 100%"));
    }
    let ppm = (p * 1e4).round() as u32;
    Ok(if over {
        RateLimit::OverStable(ppm)
    } else {
        RateLimit::Absolute(ppm)
    })
}

/// Parses a latency limit: `500ms`, `1s`, `1.5x` (times the stable's p99).
pub fn parse_latency(text: &str) -> Result<LatencyLimit, String> {
    let t = text.trim();
    if let Some(times) = t.strip_suffix('x') {
        let v: f64 = times
            .parse()
            .map_err(|_| format!("{text:?}: a duration such as 500ms, or a factor such as 1.5x"))?;
        if !(1.0..=1000.0).contains(&v) {
            return Err(format!("{text:?}: a factor from 1x to 1000x"));
        }
        return Ok(LatencyLimit::TimesStable((v * 100.0).round() as u32));
    }
    let d = crate::resources::duration::parse(t)
        .map_err(|e| format!("{text:?}: {e} (or a factor such as 1.5x)"))?;
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Err(format!("{text:?}: at least 1ms"));
    }
    Ok(LatencyLimit::Absolute(ms))
}

/// Parses a comma-separated list with `one`.
pub fn parse_list<T>(text: &str, one: fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(one)
        .collect()
}

/// Joins limits as [`parse_list`] reads them.
pub fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard {
            max_error_rate: vec![RateLimit::Absolute(10_000)],
            max_p99: vec![LatencyLimit::Absolute(500)],
            min_requests: 20,
            step_time: Duration::from_secs(10),
        }
    }

    fn figs(requests: f64, errors: f64, p99: f64) -> Figures {
        Figures {
            requests,
            errors,
            p99_seconds: Some(p99),
        }
    }

    #[test]
    fn limits_read_as_written_and_refuse_nonsense() {
        for text in ["1%", "0.5%", "+1%", "+0.25%", "100%"] {
            assert_eq!(parse_rate(text).unwrap().to_string(), text);
        }
        for text in ["500ms", "2s", "1.5x", "3x"] {
            assert_eq!(parse_latency(text).unwrap().to_string(), text);
        }
        assert_eq!(parse_rate("1%").unwrap(), RateLimit::Absolute(10_000));
        assert_eq!(
            parse_latency("1.5x").unwrap(),
            LatencyLimit::TimesStable(150)
        );
        for bad in ["1", "-1%", "101%", "x%", ""] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        for bad in ["0ms", "0.5x", "fast", "10"] {
            assert!(parse_latency(bad).is_err(), "{bad}");
        }
        let list = parse_list("1%, +0.5%", parse_rate).unwrap();
        assert_eq!(join(&list), "1%,+0.5%");
    }

    #[test]
    fn a_failing_canary_rolls_back_as_soon_as_the_breach_is_certain() {
        let g = guard();
        let stable = figs(400.0, 0.0, 0.01);
        // One failure in the first five requests: 1/20 = 5% > 1% even if the next 15
        // succeed.
        let d = judge(
            &g,
            "web-v2",
            &figs(5.0, 1.0, 0.01),
            &stable,
            Duration::ZERO,
            false,
        );
        assert_eq!(
            d,
            Decision::RollBack("web-v2 error rate 20% > 1% over 5 requests".into())
        );
        let d = judge(
            &g,
            "web-v2",
            &figs(412.0, 81.0, 0.01),
            &stable,
            Duration::from_secs(3),
            false,
        );
        assert_eq!(
            d,
            Decision::RollBack("web-v2 error rate 19.7% > 1% over 412 requests".into())
        );
        // Slow: p99 over the limit once there are enough requests.
        let d = judge(
            &g,
            "web-v2",
            &figs(30.0, 0.0, 0.9),
            &stable,
            Duration::ZERO,
            false,
        );
        assert_eq!(
            d,
            Decision::RollBack("web-v2 p99 900ms > 500ms over 30 requests".into())
        );
        let d = judge(
            &g,
            "web-v2",
            &figs(10.0, 0.0, 0.9),
            &stable,
            Duration::ZERO,
            false,
        );
        assert!(matches!(d, Decision::Hold(_)), "{d:?}");
    }

    #[test]
    fn a_healthy_step_advances_after_its_time_and_the_last_one_promotes() {
        let g = guard();
        let stable = figs(400.0, 2.0, 0.01);
        let healthy = figs(50.0, 0.0, 0.02);
        let early = judge(&g, "c", &healthy, &stable, Duration::from_secs(5), false);
        assert!(matches!(early, Decision::Hold(_)), "{early:?}");
        let d = judge(&g, "c", &healthy, &stable, Duration::from_secs(10), false);
        assert!(matches!(d, Decision::Advance(_)), "{d:?}");
        let d = judge(&g, "c", &healthy, &stable, Duration::from_secs(10), true);
        match d {
            Decision::Promote(why) => assert_eq!(
                why,
                "c healthy for 10s: error rate 0% over 50 requests, p99 20ms"
            ),
            other => panic!("{other:?}"),
        }
        // Too few requests: the step waits, however long it has lasted.
        let d = judge(
            &g,
            "c",
            &figs(3.0, 0.0, 0.01),
            &stable,
            Duration::from_secs(99),
            false,
        );
        assert_eq!(
            d,
            Decision::Hold("waiting for 20 requests to c (has 3)".into())
        );
    }

    #[test]
    fn relative_limits_compare_with_the_stable_once_both_have_enough_requests() {
        let g = Guard {
            max_error_rate: vec![RateLimit::OverStable(10_000)],
            max_p99: vec![LatencyLimit::TimesStable(200)],
            ..guard()
        };
        // Stable fails 5%: the canary may fail up to 6%.
        let stable = figs(1000.0, 50.0, 0.1);
        let d = judge(
            &g,
            "c",
            &figs(100.0, 5.0, 0.15),
            &stable,
            Duration::ZERO,
            false,
        );
        assert!(matches!(d, Decision::Hold(_)), "{d:?}");
        let d = judge(
            &g,
            "c",
            &figs(100.0, 7.0, 0.15),
            &stable,
            Duration::ZERO,
            false,
        );
        assert_eq!(
            d,
            Decision::RollBack("c error rate 7% > 6% (stable 5% + 1%) over 100 requests".into())
        );
        let d = judge(
            &g,
            "c",
            &figs(100.0, 0.0, 0.25),
            &stable,
            Duration::ZERO,
            false,
        );
        assert_eq!(
            d,
            Decision::RollBack("c p99 250ms > 200ms (stable 100ms × 2x) over 100 requests".into())
        );
        // A stable without traffic gives nothing to compare with: no relative breach.
        let idle = Figures::default();
        let d = judge(
            &g,
            "c",
            &figs(100.0, 50.0, 9.0),
            &idle,
            Duration::ZERO,
            false,
        );
        assert!(matches!(d, Decision::Hold(_)), "{d:?}");
    }
}

//! How long a policy retry waits: exponential from the route's base, capped at its
//! maximum, with the upper half jittered so that clients that failed together do not
//! retry together.

use std::time::Duration;

use tandem_xds::domain::ProxyRetry;

/// The wait before retry `n` (1-based): half of `base × 2^(n-1)` (capped) plus
/// `draw(half)`, a number in `0..half` (nanoseconds).
pub fn delay(r: &ProxyRetry, n: u32, draw: impl FnOnce(u64) -> u64) -> Duration {
    let exp = r
        .backoff_base
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(r.backoff_max.max(r.backoff_base));
    let half = exp / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_nanos(draw(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(base_ms: u64, max_ms: u64) -> ProxyRetry {
        ProxyRetry {
            attempts: 3,
            codes: Vec::new(),
            backoff_base: Duration::from_millis(base_ms),
            backoff_max: Duration::from_millis(max_ms),
            idempotent_only: true,
        }
    }

    #[test]
    fn the_jitter_spans_the_upper_half() {
        let r = retry(100, 10_000);
        assert_eq!(delay(&r, 1, |_| 0), Duration::from_millis(50));
        assert_eq!(
            delay(&r, 1, |half| half - 1),
            Duration::from_nanos(99_999_999)
        );
        assert_eq!(delay(&r, 3, |_| 0), Duration::from_millis(200));
    }

    #[test]
    fn the_cap_holds_and_a_cap_below_the_base_is_the_base() {
        assert_eq!(
            delay(&retry(100, 300), 10, |_| 0),
            Duration::from_millis(150)
        );
        assert_eq!(delay(&retry(100, 10), 1, |_| 0), Duration::from_millis(50));
        assert_eq!(
            delay(&retry(100, 1_000), 200, |_| 0),
            Duration::from_millis(500)
        );
    }
}

//! Cheap randomness for traffic decisions: weighted splits, sampled fractions, P2C picks
//! and jitter. They need good spread, not cryptographic quality, and must not contend
//! across worker threads.

use std::cell::Cell;

use tandem_xds::domain::Fraction;

/// A fast per-thread pseudo-random number in `0..bound` (bound > 0).
pub fn random_below(bound: u64) -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // Multiply-shift maps to the range without modulo bias worth caring about.
        ((u128::from(r) * u128::from(bound)) >> 64) as u64
    })
}

/// Whether a request falls in `fraction` (independently drawn each time).
pub fn sample(fraction: Fraction) -> bool {
    fraction >= Fraction::ALL || random_below(u64::from(Fraction::MILLION)) < u64::from(fraction.0)
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9);
    let local = 0u8;
    // Mix in a stack address so threads started in the same nanosecond still differ.
    (t ^ (&local as *const u8 as u64).rotate_left(32)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_range_and_fractions_hold() {
        assert!((0..10_000).all(|_| random_below(7) < 7));
        assert!((0..1000).all(|_| sample(Fraction::ALL)));
        assert!((0..1000).all(|_| !sample(Fraction(0))));
        let half = (0..20_000).filter(|_| sample(Fraction(500_000))).count();
        assert!((9_000..11_000).contains(&half), "{half}");
    }
}

//! The retry budget of one backend: retries may add at most a set share of the
//! requests (plus a small floor per second), measured over a sliding window. It is what
//! keeps a failing service from receiving a multiple of its normal load from retries.

use std::sync::Mutex;

use tandem_xds::domain::RetryBudget;

use crate::outbound::endpoint::now_nanos;

/// Seconds in the window.
const WINDOW_SECS: usize = 10;

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    /// The second (since the process origin) this bucket counts; stale buckets are reset.
    second: u64,
    requests: u32,
    retries: u32,
}

/// Requests and retries over the last [`WINDOW_SECS`] seconds.
#[derive(Debug, Default)]
pub struct Budget {
    buckets: Mutex<[Bucket; WINDOW_SECS]>,
}

impl Budget {
    /// Counts an original request (not a retry).
    pub fn deposit(&self) {
        self.update(now_nanos() / 1_000_000_000, |b| {
            b.requests = b.requests.saturating_add(1)
        });
    }

    /// Whether one more retry fits in `budget`; if so it is counted.
    pub fn withdraw(&self, budget: &RetryBudget) -> bool {
        let second = now_nanos() / 1_000_000_000;
        let Ok(mut buckets) = self.buckets.lock() else {
            return false;
        };
        let (mut requests, mut retries) = (0u64, 0u64);
        for b in buckets.iter() {
            if second.saturating_sub(b.second) < WINDOW_SECS as u64 {
                requests += u64::from(b.requests);
                retries += u64::from(b.retries);
            }
        }
        let allowed = requests * u64::from(budget.percent) / 100
            + u64::from(budget.min_retries_per_second) * WINDOW_SECS as u64;
        if retries >= allowed {
            return false;
        }
        let b = bucket(&mut buckets, second);
        b.retries = b.retries.saturating_add(1);
        true
    }

    fn update(&self, second: u64, f: impl FnOnce(&mut Bucket)) {
        if let Ok(mut buckets) = self.buckets.lock() {
            f(bucket(&mut buckets, second));
        }
    }
}

fn bucket(buckets: &mut [Bucket; WINDOW_SECS], second: u64) -> &mut Bucket {
    let b = &mut buckets[(second % WINDOW_SECS as u64) as usize];
    if b.second != second {
        *b = Bucket {
            second,
            ..Bucket::default()
        };
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_capped_at_the_ratio_plus_floor() {
        let budget = Budget::default();
        let policy = RetryBudget {
            percent: 20,
            min_retries_per_second: 1,
        };
        for _ in 0..1000 {
            budget.deposit();
        }
        // 20 % of 1000 plus 1/s over the 10 s window.
        let granted = (0..1000).filter(|_| budget.withdraw(&policy)).count();
        assert_eq!(granted, 210);
    }

    /// The window slides: once the requests that earned retries are older than the
    /// window, only the floor is left; new requests earn new retries.
    #[tokio::test(start_paused = true)]
    async fn the_window_slides_and_new_requests_refill_it() {
        let budget = Budget::default();
        let policy = RetryBudget {
            percent: 50,
            min_retries_per_second: 0,
        };
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!((0..100).filter(|_| budget.withdraw(&policy)).count(), 50);
        assert!(!budget.withdraw(&policy), "spent");
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        assert!(!budget.withdraw(&policy), "still inside the window");
        tokio::time::advance(std::time::Duration::from_secs(6)).await;
        assert!(
            !budget.withdraw(&policy),
            "no requests in the window: nothing earned"
        );
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!((0..10).filter(|_| budget.withdraw(&policy)).count(), 5);
    }
}

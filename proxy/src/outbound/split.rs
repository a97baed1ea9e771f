//! Stage 3, split: which backend of the route takes the request, by weight. A canary at
//! 5 % is a backend with weight 5 beside one with 95; weight 0 keeps a backend configured
//! but sends it nothing.

use std::sync::Arc;

use super::cluster::Cluster;
use crate::random::random_below;

/// A route's weighted backends.
#[derive(Debug)]
pub struct Split {
    backends: Vec<(Arc<Cluster>, u32)>,
    total: u64,
}

impl Split {
    /// Backends with their weights, in the route's order.
    pub fn new(backends: Vec<(Arc<Cluster>, u32)>) -> Self {
        let total = backends.iter().map(|(_, w)| u64::from(*w)).sum();
        Split { backends, total }
    }

    /// Picks a backend by weight; `None` if there is none with weight.
    pub fn pick(&self) -> Option<&Arc<Cluster>> {
        self.pick_at(random_below)
    }

    /// The pick for the point `draw(total)` returns (in `0..total`).
    fn pick_at(&self, draw: impl FnOnce(u64) -> u64) -> Option<&Arc<Cluster>> {
        if self.total == 0 {
            return None;
        }
        if self.backends.len() == 1 {
            return Some(&self.backends[0].0);
        }
        let mut point = draw(self.total);
        for (cluster, weight) in &self.backends {
            let w = u64::from(*weight);
            if point < w {
                return Some(cluster);
            }
            point -= w;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use tandem_xds::domain::CallPolicy;

    fn cluster(name: &str) -> Arc<Cluster> {
        Arc::new(Cluster::new(
            name,
            name,
            Protocol::Http1,
            &[],
            CallPolicy::default(),
            Arc::default(),
        ))
    }

    #[test]
    fn weights_cut_the_draw_into_ranges() {
        let split = Split::new(vec![
            (cluster("a"), 90),
            (cluster("b"), 0),
            (cluster("c"), 10),
        ]);
        let at = |p: u64| {
            &*split
                .pick_at(|total| {
                    assert_eq!(total, 100);
                    p
                })
                .unwrap()
                .name
        };
        assert_eq!(at(0), "a");
        assert_eq!(at(89), "a");
        assert_eq!(at(90), "c", "weight 0 never takes a point");
        assert_eq!(at(99), "c");
    }

    #[test]
    fn nothing_with_weight_picks_nothing_and_one_backend_needs_no_draw() {
        assert!(Split::new(vec![(cluster("a"), 0)]).pick().is_none());
        assert!(Split::new(Vec::new()).pick().is_none());
        let one = Split::new(vec![(cluster("a"), 3)]);
        let picked = one.pick_at(|_| unreachable!("a single backend needs no draw"));
        assert_eq!(&*picked.unwrap().name, "a");
    }
}

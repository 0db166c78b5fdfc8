//! Percentiles of recorded latencies.

/// The `p`-th percentile (0–100) of `sorted` by the nearest-rank method: the smallest value
/// with at least `p`% of the values at or below it. `None` for an empty slice.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
}

/// Latencies in microseconds, sorted once, with the percentiles the report shows.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Latencies {
    pub count: usize,
    pub p50_us: Option<u64>,
    pub p90_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
}

impl Latencies {
    /// Summarises `samples` (microseconds).
    pub fn of(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        Self {
            count: samples.len(),
            p50_us: percentile(&samples, 50.0),
            p90_us: percentile(&samples, 90.0),
            p99_us: percentile(&samples, 99.0),
            max_us: samples.last().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 99.5), Some(100));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        // Ten values: p50 is the 5th, p99 the 10th.
        let v = [10, 20, 30, 40, 50, 60, 70, 80, 90, 1000];
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(1000));
    }

    #[test]
    fn latencies_sort_before_ranking() {
        let l = Latencies::of(vec![900, 100, 300, 200, 500]);
        assert_eq!((l.count, l.p50_us, l.p99_us, l.max_us), (5, Some(300), Some(900), Some(900)));
        assert_eq!(Latencies::of(vec![]).p50_us, None);
    }
}

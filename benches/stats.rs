//! Order statistics of benchmark samples.
//!
//! Benchmark rounds are few (a handful) and noisy, so reports use the median
//! (robust to one slow round) with min and max beside it, and latency
//! distributions use nearest-rank percentiles (no interpolation between two
//! real measurements that never happened).

use serde::Serialize;

/// Median, min and max of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Middle value; the mean of the two middle values for an even count.
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Number of values.
    pub count: usize,
}

impl Summary {
    /// Summarises `values`; `None` when there are none (or any is NaN).
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            count: n,
        })
    }
}

/// `b / a` for each round that has both, where `a` and `b` are (round,
/// value) samples of two alternated configurations: pairing within a round
/// keeps drift on the machine between rounds out of the ratio.
pub fn ratios_by_round(a: &[(usize, f64)], b: &[(usize, f64)]) -> Vec<f64> {
    b.iter()
        .filter_map(|&(round, vb)| {
            let &(_, va) = a.iter().find(|&&(r, _)| r == round)?;
            (va > 0.0).then(|| vb / va)
        })
        .collect()
}

/// Nearest-rank percentile `p` (0..=100) of an ascending-sorted slice.
pub fn percentile_sorted<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    // Rank ceil(p/100 * n), 1-based; p = 0 means the minimum.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_pair_values_of_the_same_round() {
        let one = [(1, 5.0), (2, 4.0), (3, 6.0)];
        let two = [(2, 5.0), (1, 5.5), (4, 9.0)];
        // Round 4 has no single-shard run; round 3 no second.
        assert_eq!(ratios_by_round(&one, &two), vec![1.25, 1.1]);
        assert!(ratios_by_round(&[(1, 0.0)], &[(1, 1.0)]).is_empty());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let odd = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            (odd.median, odd.min, odd.max, odd.count),
            (2.0, 1.0, 3.0, 3)
        );
        let even = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(even.median, 2.5);
    }

    #[test]
    fn empty_or_nan_has_no_summary() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile_sorted(&v, 50.0), Some(50));
        assert_eq!(percentile_sorted(&v, 99.0), Some(99));
        assert_eq!(percentile_sorted(&v, 100.0), Some(100));
        assert_eq!(percentile_sorted(&v, 0.0), Some(1));
        assert_eq!(percentile_sorted(&[7u32], 99.0), Some(7));
        assert_eq!(percentile_sorted::<u32>(&[], 50.0), None);
        assert_eq!(percentile_sorted(&v, 101.0), None);
    }
}

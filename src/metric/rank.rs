//! Spearman's rank correlation between two saliency maps.
//!
//! Each map's pixels are ranked (1 = least salient, ties get the mean of the ranks they span),
//! and the score is the Pearson correlation of the two rank vectors, computed in f64. It is 1
//! when the maps order the pixels identically, -1 when one reverses the other, and near 0 when
//! the orders are unrelated. Ghorbani et al. (2019) use it as the global measure of how much an
//! attack reorders the explanation. Undefined (`None`) for a constant map (all ranks equal, so
//! zero variance), for non-finite values, for fewer than two pixels and for unequal lengths.
//!
//! With ties, the textbook shortcut `1 − 6·Σd²/(n(n²−1))` is wrong; Pearson on the average
//! ranks is the definition that handles them (and equals the shortcut when there are none).

use super::{fits, Direction, Metric};

/// Spearman's rank correlation of all pixels; range \[-1, 1\], higher is more similar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spearman;

impl Metric for Spearman {
    fn name(&self) -> &'static str {
        "spearman"
    }

    fn column(&self) -> String {
        "spearman".to_string()
    }

    fn direction(&self) -> Direction {
        Direction::HigherIsMoreSimilar
    }

    fn range(&self) -> (f64, f64) {
        (-1.0, 1.0)
    }

    fn score(&self, a: &[f32], b: &[f32], h: usize, w: usize) -> Option<f64> {
        if !fits(a, b, h, w) {
            return None;
        }
        spearman(a, b)
    }
}

/// 1-based ranks of `v` in ascending order; tied values all get the mean of the ranks they
/// span (`[5, 1, 5]` → `[2.5, 1, 2.5]`).
///
/// `-0.0` and `0.0` tie. NaN ranks above +∞ (IEEE total order), so the result is always
/// defined; [`spearman`] rejects non-finite input before ranking. (Widening to f64 is exact,
/// so these are the ranks [`average_ranks_f64`] gives.)
pub fn average_ranks(v: &[f32]) -> Vec<f64> {
    average_ranks_f64(&widen(v))
}

/// [`average_ranks`] of f64 values (maps normalised in f64, as the sanity checks' similarities
/// compute them).
pub fn average_ranks_f64(v: &[f64]) -> Vec<f64> {
    // Adding 0.0 turns -0.0 into +0.0, so that the total order below treats them as equal;
    // a total order is needed because `sort` may panic on an inconsistent comparator.
    let key = |i: usize| v[i] + 0.0;
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| key(i).total_cmp(&key(j)));
    let mut ranks = vec![0.0; v.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && key(order[end]).total_cmp(&key(order[start])).is_eq() {
            end += 1;
        }
        // Positions start..end hold ranks start+1 ..= end; their mean is (start + 1 + end) / 2.
        let mean = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = mean;
        }
        start = end;
    }
    ranks
}

/// f32 values as f64 (exact).
pub(super) fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// Spearman's rank correlation of `a` and `b`: the Pearson correlation of their average ranks.
///
/// `None` if the lengths differ, there are fewer than two values, a value is not finite, or
/// either side is constant (its ranks have no variance). Never NaN.
pub fn spearman(a: &[f32], b: &[f32]) -> Option<f64> {
    spearman_f64(&widen(a), &widen(b))
}

/// [`spearman`] of f64 values, under the same conditions.
pub fn spearman_f64(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 || !a.iter().chain(b).all(|x| x.is_finite()) {
        return None;
    }
    let (ra, rb) = (average_ranks_f64(a), average_ranks_f64(b));
    // Average ranks always sum to n(n+1)/2, so the mean is exactly (n+1)/2; deviations are
    // multiples of 1/2 and the sums below are exact, so a constant map gives exactly 0 variance.
    let mean = (a.len() as f64 + 1.0) / 2.0;
    let (mut cov, mut var_a, mut var_b) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        let (dx, dy) = (x - mean, y - mean);
        cov += dx * dy;
        var_a += dx * dx;
        var_b += dy * dy;
    }
    if var_a == 0.0 || var_b == 0.0 {
        return None;
    }
    // √(var_a·var_b) rather than √var_a·√var_b: IEEE sqrt(v·v) is exactly v, so identical
    // rankings give exactly 1. The clamp only removes rounding beyond ±1 in other cases.
    Some((cov / (var_a * var_b).sqrt()).clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(x: Option<f64>, want: f64) {
        let x = x.expect("defined");
        assert!((x - want).abs() < 1e-12, "{x} vs {want}");
    }

    #[test]
    fn average_ranks_of_distinct_and_tied_values() {
        assert_eq!(average_ranks(&[3.0, 1.0, 2.0]), vec![3.0, 1.0, 2.0]);
        // 5 and 5 share ranks 2 and 3 → 2.5 each.
        assert_eq!(average_ranks(&[5.0, 1.0, 5.0]), vec![2.5, 1.0, 2.5]);
        // Three zeros share ranks 1, 2, 3 → 2; then 4.
        assert_eq!(average_ranks(&[0.0, 7.0, -0.0, 0.0]), vec![2.0, 4.0, 2.0, 2.0]);
        assert_eq!(average_ranks(&[]), Vec::<f64>::new());
    }

    #[test]
    fn spearman_without_ties_matches_the_d_squared_formula() {
        // Ranks [1,2,3,4] vs [1,3,2,4]: d = [0,-1,1,0], Σd² = 2, n = 4:
        // 1 − 6·2 / (4·15) = 1 − 12/60 = 0.8.
        close(spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]), 0.8);
    }

    #[test]
    fn spearman_with_ties_is_pearson_of_average_ranks() {
        // a = [1, 2, 2, 3] → ranks [1, 2.5, 2.5, 4]; b = [1, 2, 3, 4] → ranks [1, 2, 3, 4].
        // Mean 2.5 for both. Deviations a: [-1.5, 0, 0, 1.5], b: [-1.5, -0.5, 0.5, 1.5].
        // cov = 2.25 + 0 + 0 + 2.25 = 4.5; var_a = 2.25·2 = 4.5; var_b = 2.25+0.25+0.25+2.25 = 5.
        // ρ = 4.5 / √(4.5·5) = 4.5 / √22.5 = √(4.5/5) = √0.9 ≈ 0.948683.
        // (The Σd² shortcut would give 1 − 6·0.5/60 = 0.95: wrong with ties.)
        close(spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]), 0.9f64.sqrt());
    }

    #[test]
    fn spearman_perfect_agreement_and_reversal() {
        // Monotone transforms keep the ranks: exactly ±1.
        let a = [0.1, 0.4, 0.2, 0.8, 0.3];
        let b: Vec<f32> = a.iter().map(|x| x * x * 10.0).collect();
        assert_eq!(spearman(&a, &b), Some(1.0));
        let c: Vec<f32> = a.iter().map(|x| 1.0 - x).collect();
        assert_eq!(spearman(&a, &c), Some(-1.0));
    }

    #[test]
    fn spearman_constant_map_is_none_not_nan() {
        let c = [0.0f32; 6];
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(spearman(&c, &v), None);
        assert_eq!(spearman(&v, &c), None);
        assert_eq!(spearman(&c, &c), None);
    }

    #[test]
    fn spearman_undefined_inputs_are_none() {
        assert_eq!(spearman(&[1.0, f32::NAN], &[1.0, 2.0]), None);
        assert_eq!(spearman(&[1.0, 2.0], &[f32::INFINITY, 2.0]), None);
        assert_eq!(spearman(&[1.0], &[1.0]), None);
        assert_eq!(spearman(&[], &[]), None);
        assert_eq!(spearman(&[1.0, 2.0], &[1.0, 2.0, 3.0]), None);
    }

    #[test]
    fn metric_score_uses_the_shape() {
        // A 2×2 map: same numbers as the d² example.
        close(Spearman.score(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0], 2, 2), 0.8);
        assert_eq!(Spearman.score(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0], 1, 3), None);
    }
}

//! Kendall's τ-b between two saliency maps: the balance of agreeing and disagreeing pixel pairs.
//!
//! For every pair of pixels (i, j) the two maps either order them the same way (concordant,
//! `(a_i − a_j)(b_i − b_j) > 0`), opposite ways (discordant, `< 0`), or at least one map ties
//! them. With `n₀ = n(n−1)/2` pairs, `n₁ = Σ t(t−1)/2` over the groups of `t` equal values of
//! `a` (pairs tied in `a`) and `n₂` the same for `b`,
//!
//! ```text
//! τ_b = (n_c − n_d) / √((n₀ − n₁)(n₀ − n₂))
//! ```
//!
//! Pairs tied in `a`, in `b` or in both count neither as concordant nor as discordant; the
//! denominator removes the tied pairs of each map separately, so a map compared with itself
//! scores exactly 1 however many ties it has, and its reversal exactly −1 (τ-b, Kendall 1945;
//! the same as `scipy.stats.kendalltau(variant="b")`). Range \[−1, 1\], higher is more similar.
//! It complements [`super::spearman`]: τ weighs every misordered pair equally, whereas
//! Spearman weighs large rank displacements more.
//!
//! Computed with Knight's algorithm (1966) in O(n log n): sort the pixels by `(a, b)`, count
//! the tied pairs `n₁` (equal `a`) and `n₃` (equal `a` and `b`) on the way, then merge-sort the
//! `b` values in that order; every exchange of a strictly greater `b` past a smaller one is one
//! discordant pair, so `n_c − n_d = n₀ − n₁ − n₂ + n₃ − 2·exchanges`. Counts are exact
//! integers; only the final ratio is floating point (f64). `-0.0` and `0.0` tie.
//!
//! Undefined (`None`) when the lengths differ, there are fewer than two values, a value is not
//! finite, or either map is constant (all its pairs are ties, so the denominator is 0).

use super::{fits, Direction, Metric};

/// Kendall's τ-b over all pixels; range \[−1, 1\], higher is more similar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KendallTauB;

impl Metric for KendallTauB {
    fn name(&self) -> &'static str {
        "kendall_tau_b"
    }

    fn column(&self) -> String {
        "kendall".to_string()
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
        kendall_tau_b(a, b)
    }
}

/// Kendall's τ-b of `a` and `b` (see the module docs), by Knight's O(n log n) algorithm.
///
/// `None` if the lengths differ, there are fewer than two values, a value is not finite, or
/// either side is constant. Never NaN.
pub fn kendall_tau_b(a: &[f32], b: &[f32]) -> Option<f64> {
    let n = a.len();
    if n != b.len() || n < 2 || !a.iter().chain(b).all(|x| x.is_finite()) {
        return None;
    }
    // Adding 0.0 turns -0.0 into +0.0, so that the total order treats them as equal (as
    // `average_ranks` does); the values are finite, so total order is the numeric order.
    let ka = |i: usize| a[i] + 0.0;
    let kb = |i: usize| b[i] + 0.0;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&i, &j| ka(i).total_cmp(&ka(j)).then(kb(i).total_cmp(&kb(j))));

    // n₁: pairs tied in a; n₃: pairs tied in a and b (runs of equal (a, b) inside runs of a).
    let (mut tied_a, mut tied_ab) = (0u64, 0u64);
    let mut run_a = 1u64;
    let mut run_ab = 1u64;
    for pair in order.windows(2) {
        let (i, j) = (pair[0], pair[1]);
        if ka(i) == ka(j) {
            run_a += 1;
            run_ab = if kb(i) == kb(j) { run_ab + 1 } else { pairs(run_ab, &mut tied_ab) };
        } else {
            run_a = pairs(run_a, &mut tied_a);
            run_ab = pairs(run_ab, &mut tied_ab);
        }
    }
    pairs(run_a, &mut tied_a);
    pairs(run_ab, &mut tied_ab);

    // Within a run of equal a the b values are already ascending, so every exchange the merge
    // sort makes is between pixels with strictly increasing a and strictly decreasing b.
    let mut ys: Vec<f32> = order.iter().map(|&i| kb(i)).collect();
    let exchanges = merge_sort_exchanges(&mut ys);

    // n₂: pairs tied in b, counted on the now sorted b values.
    let mut tied_b = 0u64;
    let mut run_b = 1u64;
    for pair in ys.windows(2) {
        run_b = if pair[0] == pair[1] { run_b + 1 } else { pairs(run_b, &mut tied_b) };
    }
    pairs(run_b, &mut tied_b);

    let total = n as u64 * (n as u64 - 1) / 2;
    if tied_a == total || tied_b == total {
        return None;
    }
    // n_c − n_d = (n₀ − n₁ − n₂ + n₃) − 2·n_d, in signed exact integers.
    // Signed: with many ties in both maps n₁ + n₂ can exceed n₀ (n₃ is counted in both).
    let untied = total as i128 - tied_a as i128 - tied_b as i128 + tied_ab as i128;
    let diff = untied - 2 * exchanges as i128;
    let (da, db) = ((total - tied_a) as f64, (total - tied_b) as f64);
    // √(da·db) rather than √da·√db: IEEE sqrt(v·v) is exactly v, so identical maps (da = db =
    // diff) give exactly 1. The clamp only removes rounding beyond ±1 for very large n.
    Some((diff as f64 / (da * db).sqrt()).clamp(-1.0, 1.0))
}

/// Adds the `t(t−1)/2` pairs of a run of `t` equal values to `acc` and returns 1, the length
/// of the next run.
fn pairs(t: u64, acc: &mut u64) -> u64 {
    *acc += t * (t - 1) / 2;
    1
}

/// Sorts `v` ascending (stable, bottom-up merge sort) and returns how many pairs `i < j` had
/// `v[i] > v[j]` strictly: the exchanges of Knight's algorithm. Equal values are not counted.
fn merge_sort_exchanges(v: &mut Vec<f32>) -> u64 {
    let n = v.len();
    let mut buf = vec![0.0f32; n];
    let mut exchanges = 0u64;
    let mut width = 1;
    while width < n {
        let mut lo = 0;
        while lo < n {
            let mid = (lo + width).min(n);
            let hi = (lo + 2 * width).min(n);
            let (mut i, mut j) = (lo, mid);
            for slot in &mut buf[lo..hi] {
                // Take from the left on ties (stable, not an exchange); a right value taken
                // first jumps over the `mid − i` left values that are strictly greater.
                if j >= hi || (i < mid && v[i] <= v[j]) {
                    *slot = v[i];
                    i += 1;
                } else {
                    *slot = v[j];
                    exchanges += (mid - i) as u64;
                    j += 1;
                }
            }
            lo = hi;
        }
        std::mem::swap(v, &mut buf);
        width *= 2;
    }
    exchanges
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn close(x: Option<f64>, want: f64) {
        let x = x.expect("defined");
        assert!((x - want).abs() < 1e-12, "{x} vs {want}");
    }

    /// τ-b straight from its definition, over all n(n−1)/2 pairs: the O(n²) reference.
    fn tau_b_by_pairs(a: &[f32], b: &[f32]) -> Option<f64> {
        let (mut con, mut dis, mut tied_a, mut tied_b, mut total) = (0i64, 0i64, 0i64, 0i64, 0i64);
        for i in 0..a.len() {
            for j in i + 1..a.len() {
                total += 1;
                let (x, y) = (a[i] - a[j], b[i] - b[j]);
                tied_a += i64::from(x == 0.0);
                tied_b += i64::from(y == 0.0);
                if x * y > 0.0 {
                    con += 1;
                } else if x * y < 0.0 {
                    dis += 1;
                }
            }
        }
        let den = ((total - tied_a) as f64 * (total - tied_b) as f64).sqrt();
        (den > 0.0).then(|| (con - dis) as f64 / den)
    }

    #[test]
    fn tau_b_with_a_tie_in_one_map() {
        // a = [1, 2, 2, 3], b = [1, 2, 3, 4]; the 6 pairs:
        // (0,1) C, (0,2) C, (0,3) C, (1,2) tied in a only, (1,3) C, (2,3) C.
        // n_c = 5, n_d = 0, n₀ = 6, n₁ = 1, n₂ = 0: τ_b = 5 / √(5·6) = 5/√30 ≈ 0.912871.
        close(kendall_tau_b(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]), 5.0 / 30f64.sqrt());
    }

    #[test]
    fn tau_b_with_ties_in_both_maps_and_a_discordant_pair() {
        // A 2×2 map a = [0, 0, 1, 2], b = [1, 0, 0, 2]; the 6 pairs:
        // (0,1) tied in a, (0,2) a up b down: D, (0,3) C, (1,2) tied in b, (1,3) C, (2,3) C.
        // n_c = 3, n_d = 1, n₁ = 1, n₂ = 1: τ_b = (3 − 1) / √(5·5) = 0.4.
        let (a, b) = ([0.0, 0.0, 1.0, 2.0], [1.0, 0.0, 0.0, 2.0]);
        close(kendall_tau_b(&a, &b), 0.4);
        close(KendallTauB.score(&a, &b, 2, 2), 0.4);
    }

    #[test]
    fn tau_b_with_a_pair_tied_in_both_maps() {
        // a = [1, 1, 2], b = [3, 3, 0]: (0,1) tied in both, (0,2) D, (1,2) D.
        // n_c = 0, n_d = 2, n₀ = 3, n₁ = n₂ = n₃ = 1: τ_b = −2 / √(2·2) = −1.
        assert_eq!(kendall_tau_b(&[1.0, 1.0, 2.0], &[3.0, 3.0, 0.0]), Some(-1.0));
    }

    #[test]
    fn tau_b_without_ties_counts_swapped_pairs() {
        // [1,2,3,4] vs [1,3,2,4]: only (1,2) is discordant; n_c = 5, n_d = 1: (5 − 1)/6 = 2/3.
        close(kendall_tau_b(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]), 2.0 / 3.0);
        // [4,3,2,1] vs [1,2,3,4]: all 6 discordant → −1.
        assert_eq!(kendall_tau_b(&[4.0, 3.0, 2.0, 1.0], &[1.0, 2.0, 3.0, 4.0]), Some(-1.0));
    }

    #[test]
    fn tau_b_identical_and_reversed_maps_with_ties_are_exact() {
        // Many ties (zeros from a ReLU) still give exactly ±1: the denominator drops the ties.
        let a = [0.0, 0.0, 0.3, 0.0, 0.7, 0.3, 0.0, 1.0];
        let c: Vec<f32> = a.iter().map(|x| 2.0 - x).collect();
        assert_eq!(kendall_tau_b(&a, &a), Some(1.0));
        assert_eq!(kendall_tau_b(&a, &c), Some(-1.0));
        // -0.0 and 0.0 tie, as in `average_ranks`.
        assert_eq!(kendall_tau_b(&[-0.0, 0.0, 1.0], &[0.0, -0.0, 1.0]), Some(1.0));
    }

    #[test]
    fn tau_b_matches_the_pairwise_definition_on_random_maps_with_ties() {
        let mut rng = crate::seed::rng(11);
        for n in [2usize, 3, 7, 50, 784] {
            for _ in 0..5 {
                // Values on a coarse grid, so that both maps have many ties.
                let mut draw = || (0..n).map(|_| f32::from(rng.random_range(0u8..6))).collect::<Vec<_>>();
                let (a, b) = (draw(), draw());
                let fast = kendall_tau_b(&a, &b);
                match tau_b_by_pairs(&a, &b) {
                    Some(want) => close(fast, want),
                    None => assert_eq!(fast, None, "n = {n}"),
                }
            }
        }
    }

    #[test]
    fn tau_b_is_symmetric() {
        let mut rng = crate::seed::rng(12);
        let a: Vec<f32> = (0..100).map(|_| f32::from(rng.random_range(0u8..9))).collect();
        let b: Vec<f32> = (0..100).map(|_| rng.random_range(0.0f32..1.0)).collect();
        assert_eq!(kendall_tau_b(&a, &b), kendall_tau_b(&b, &a));
    }

    #[test]
    fn merge_sort_counts_strict_inversions_only() {
        // [3, 1, 2, 2]: 3>1, 3>2, 3>2 → 3; the equal 2s are not an inversion.
        let mut v = vec![3.0, 1.0, 2.0, 2.0];
        assert_eq!(merge_sort_exchanges(&mut v), 3);
        assert_eq!(v, [1.0, 2.0, 2.0, 3.0]);
        // Reversed 5 distinct values: all 10 pairs inverted; odd length exercises the tail.
        let mut v = vec![5.0, 4.0, 3.0, 2.0, 1.0];
        assert_eq!(merge_sort_exchanges(&mut v), 10);
        assert_eq!(v, [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(merge_sort_exchanges(&mut Vec::new()), 0);
    }

    #[test]
    fn tau_b_constant_map_is_none_not_nan() {
        let c = [0.5f32; 5];
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(kendall_tau_b(&c, &v), None);
        assert_eq!(kendall_tau_b(&v, &c), None);
        assert_eq!(kendall_tau_b(&c, &c), None);
    }

    #[test]
    fn tau_b_undefined_inputs_are_none() {
        assert_eq!(kendall_tau_b(&[1.0, f32::NAN], &[1.0, 2.0]), None);
        assert_eq!(kendall_tau_b(&[1.0, 2.0], &[f32::NEG_INFINITY, 2.0]), None);
        assert_eq!(kendall_tau_b(&[1.0], &[1.0]), None);
        assert_eq!(kendall_tau_b(&[], &[]), None);
        assert_eq!(kendall_tau_b(&[1.0, 2.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(KendallTauB.score(&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 3.0, 4.0], 1, 3), None);
    }

    #[test]
    fn tau_b_with_most_pairs_tied_in_both_maps_does_not_overflow() {
        // Real saliency maps have large blank areas: 700 of 784 pixels zero in both maps, so
        // n₁ + n₂ > n₀. Regression: the unsigned n₀ − n₁ − n₂ + n₃ overflowed. Against the
        // pairwise definition.
        let a: Vec<f32> = (0..784).map(|i| if i < 84 { (i % 7) as f32 + 1.0 } else { 0.0 }).collect();
        let b: Vec<f32> = (0..784).map(|i| if i < 84 { (i % 5) as f32 + 1.0 } else { 0.0 }).collect();
        let (mut nc, mut nd, mut ta, mut tb) = (0i64, 0i64, 0i64, 0i64);
        for i in 0..784 {
            for j in i + 1..784 {
                let (da, db) = (a[i] - a[j], b[i] - b[j]);
                if da == 0.0 {
                    ta += 1;
                }
                if db == 0.0 {
                    tb += 1;
                }
                if da * db > 0.0 {
                    nc += 1;
                } else if da * db < 0.0 {
                    nd += 1;
                }
            }
        }
        let n0 = 784 * 783 / 2;
        let want = (nc - nd) as f64 / (((n0 - ta) as f64) * ((n0 - tb) as f64)).sqrt();
        let got = kendall_tau_b(&a, &b).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
}

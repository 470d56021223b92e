//! Top-k intersection: how many of the k most salient pixels stay among the k most salient.
//!
//! Ghorbani et al. (2019) call it the main measure of fragility, because a user looks at the
//! few brightest pixels of a map, not at its full ranking: the score is
//! `|topk(a) ∩ topk(b)| / k`, 1 when the same pixels lead both maps and 0 when none does.
//! Range \[0, 1\], higher is more similar.
//!
//! Ties at the k-th place are broken by the lower pixel index (row-major), so the selection is
//! deterministic. A map with many equal values (e.g. zeros from a ReLU) can thus share
//! "top" pixels by index alone; the paper's maps are dense enough that this rarely matters, but
//! keep k below the number of non-zero pixels when choosing it.

use super::{fits, Direction, Metric};
use std::cmp::Ordering;

/// The k of a top-k metric or attack that the config leaves unset, for an `h`×`w` image: the
/// same share of the pixels as k = 100 of Fashion-MNIST's 28×28 = 784 (12.8 %), that is
/// round(100·h·w / 784) (halves up), at least 1 and never more than the h·w pixels. So 28×28
/// keeps 100, 64×64 gets 522 and 224×224 gets 6,400.
pub fn auto_k(h: usize, w: usize) -> usize {
    let pixels = h as u128 * w as u128;
    let k = (200 * pixels + 784) / (2 * 784);
    usize::try_from(k).unwrap_or(usize::MAX).max(1)
}

/// Share of the `k` most salient pixels common to both maps; range \[0, 1\], higher is more
/// similar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopKIntersection {
    /// How many of the most salient pixels to compare (the paper uses 1000 on ImageNet; a
    /// config that gives none gets [`auto_k`] of the image size, 100 on 28×28 images).
    pub k: usize,
}

impl TopKIntersection {
    /// The intersection of the `k` most salient pixels.
    pub fn new(k: usize) -> Self {
        Self { k }
    }

    /// One metric per `k` in `ks`, in the given order, each `k` once (a repeated `k` would
    /// give two identical columns `top{k}_intersection`, so later repeats are dropped).
    pub fn for_ks(ks: &[usize]) -> Vec<Self> {
        let mut out: Vec<Self> = Vec::with_capacity(ks.len());
        for &k in ks {
            if !out.iter().any(|m| m.k == k) {
                out.push(Self::new(k));
            }
        }
        out
    }
}

impl Metric for TopKIntersection {
    fn name(&self) -> &'static str {
        "top_k_intersection"
    }

    fn column(&self) -> String {
        format!("top{}_intersection", self.k)
    }

    fn direction(&self) -> Direction {
        Direction::HigherIsMoreSimilar
    }

    fn range(&self) -> (f64, f64) {
        (0.0, 1.0)
    }

    fn score(&self, a: &[f32], b: &[f32], h: usize, w: usize) -> Option<f64> {
        if !fits(a, b, h, w) {
            return None;
        }
        top_k_intersection(a, b, self.k)
    }
}

/// Indices of the `k` largest values of `v`, largest first; among equal values the lower index
/// comes first (and wins a place at the cut-off). `k` is clamped to `v.len()`.
///
/// `-0.0` and `0.0` count as equal; NaN counts as larger than +∞ (IEEE total order).
pub fn top_k_indices(v: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(v.len());
    if k == 0 {
        return Vec::new();
    }
    // Descending value, then ascending index: a strict total order (no two elements compare
    // equal), so the selection and the sort agree and are deterministic.
    let key = |i: usize| v[i] + 0.0; // + 0.0 maps -0.0 to 0.0
    let cmp = |&i: &usize, &j: &usize| -> Ordering { key(j).total_cmp(&key(i)).then(i.cmp(&j)) };
    let mut idx: Vec<usize> = (0..v.len()).collect();
    if k < idx.len() {
        // O(n) partial selection; only the k winners get sorted.
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_unstable_by(cmp);
    idx
}

/// `|topk(a) ∩ topk(b)| / k` with `k` clamped to the map length (so identical maps always
/// score 1). `None` if the effective `k` is 0, the lengths differ or a value is not finite.
pub fn top_k_intersection(a: &[f32], b: &[f32], k: usize) -> Option<f64> {
    let k = k.min(a.len());
    if k == 0 || a.len() != b.len() || !a.iter().chain(b).all(|x| x.is_finite()) {
        return None;
    }
    let mut in_a = vec![false; a.len()];
    for i in top_k_indices(a, k) {
        in_a[i] = true;
    }
    let common = top_k_indices(b, k).into_iter().filter(|&i| in_a[i]).count();
    Some(common as f64 / k as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_indices_order_and_tie_break() {
        assert_eq!(top_k_indices(&[0.1, 0.9, 0.5, 0.7], 2), vec![1, 3]);
        // Values 3 at indices 1, 2 and 4 tie; k = 2 keeps the two lowest indices.
        assert_eq!(top_k_indices(&[1.0, 3.0, 3.0, 0.0, 3.0], 2), vec![1, 2]);
        // Sorted largest first, ties by index: 9@3, then 3@1, 3@2, 3@4.
        assert_eq!(top_k_indices(&[1.0, 3.0, 3.0, 9.0, 3.0], 4), vec![3, 1, 2, 4]);
        // k beyond the length is clamped; k = 0 is empty.
        assert_eq!(top_k_indices(&[2.0, 1.0], 5), vec![0, 1]);
        assert_eq!(top_k_indices(&[2.0, 1.0], 0), Vec::<usize>::new());
        // -0.0 and 0.0 are equal, so the lower index wins.
        assert_eq!(top_k_indices(&[-0.0, 0.0], 1), vec![0]);
    }

    #[test]
    fn top_k_intersection_by_hand() {
        // top3(a) = {0, 1, 2}; top3(b) = {1, 2, 5}: common {1, 2} → 2/3.
        let a = [0.9, 0.8, 0.7, 0.1, 0.2, 0.3];
        let b = [0.1, 0.8, 0.7, 0.2, 0.3, 0.9];
        assert_eq!(top_k_intersection(&a, &b, 3), Some(2.0 / 3.0));
        // top2(a) = {0, 1}; top2(b) = {5 (0.9), 1 (0.8)}: common {1} → 1/2.
        assert_eq!(top_k_intersection(&a, &b, 2), Some(0.5));
        // Truly disjoint: c's top2 = {4, 5}; with a's {0, 1} → 0.
        let c = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0];
        assert_eq!(top_k_intersection(&a, &c, 2), Some(0.0));
    }

    #[test]
    fn top_k_intersection_with_ties() {
        // a = [1, 1, 1, 0]: the three 1s tie; top2(a) = {0, 1} by lower index.
        // b = [0, 1, 1, 1]: top2(b) = {1, 2}. Common: {1} → 1/2.
        assert_eq!(top_k_intersection(&[1.0, 1.0, 1.0, 0.0], &[0.0, 1.0, 1.0, 1.0], 2), Some(0.5));
        // An all-zero map's top-k is its first k pixels, by the tie rule.
        assert_eq!(top_k_intersection(&[0.0; 4], &[1.0, 1.0, 0.0, 0.0], 2), Some(1.0));
    }

    #[test]
    fn top_k_intersection_edge_cases() {
        assert_eq!(top_k_intersection(&[1.0, 2.0], &[2.0, 1.0], 0), None);
        assert_eq!(top_k_intersection(&[], &[], 3), None);
        // k clamped to 2: both sets are everything → 1, not 2/5.
        assert_eq!(top_k_intersection(&[1.0, 2.0], &[2.0, 1.0], 5), Some(1.0));
        assert_eq!(top_k_intersection(&[1.0, f32::NAN], &[2.0, 1.0], 1), None);
        assert_eq!(top_k_intersection(&[1.0, 2.0], &[2.0], 1), None);
    }

    #[test]
    fn for_ks_builds_one_metric_per_distinct_k_in_order() {
        let cols: Vec<_> = TopKIntersection::for_ks(&[100, 10, 100, 50]).iter().map(|m| m.column()).collect();
        assert_eq!(cols, ["top100_intersection", "top10_intersection", "top50_intersection"]);
        assert_eq!(TopKIntersection::for_ks(&[]), Vec::new());
        assert_eq!(TopKIntersection::new(7), TopKIntersection { k: 7 });
    }

    #[test]
    fn the_automatic_k_keeps_the_default_studys_share_of_the_pixels() {
        // round(100·h·w/784): 78,400/784 = 100 exactly; 409,600/784 = 522.4 → 522;
        // 5,017,600/784 = 6,400 exactly; 100/784 = 0.13 → 0, raised to 1.
        assert_eq!(auto_k(28, 28), 100);
        assert_eq!(auto_k(64, 64), 522);
        assert_eq!(auto_k(224, 224), 6400);
        assert_eq!(auto_k(1, 1), 1);
        // 32×32 (CIFAR): 102,400/784 = 130.6 → 131; 7×8: 5,600/784 = 7.14 → 7.
        assert_eq!(auto_k(32, 32), 131);
        assert_eq!(auto_k(7, 8), 7);
        // Never more than the image: 100/784 < 1 of the pixels.
        for (h, w) in [(1, 2), (2, 2), (3, 5), (28, 1), (300, 7)] {
            assert!((1..=h * w).contains(&auto_k(h, w)), "{h}×{w}");
        }
    }

    #[test]
    fn metric_column_names_k() {
        assert_eq!(TopKIntersection { k: 25 }.column(), "top25_intersection");
        assert_eq!(TopKIntersection { k: 1 }.score(&[0.0, 1.0], &[1.0, 0.0], 1, 2), Some(0.0));
    }
}

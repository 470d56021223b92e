//! Pearson's correlation between two saliency maps: linear agreement of the pixel values.
//!
//! ```text
//! r = Σ (a_i − ā)(b_i − b̄) / √(Σ (a_i − ā)² · Σ (b_i − b̄)²)
//! ```
//!
//! over all `n = h·w` pixels, computed in f64 with the means taken first (two passes, no
//! `Σx² − n·x̄²` cancellation). Unlike [`super::spearman`] it looks at the values, not only at
//! their order: it is 1 when `b = s·a + t` with `s > 0`, −1 when `s < 0`. Unchanged by
//! rescaling or shifting either map, so it needs no normalisation of the maps. Range \[−1, 1\],
//! higher is more similar.
//!
//! Undefined (`None`) when the lengths differ, there are fewer than two values, a value is not
//! finite, or either map is constant (zero variance).

use super::{fits, Direction, Metric};

/// Pearson's correlation of all pixel values; range \[−1, 1\], higher is more similar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pearson;

impl Metric for Pearson {
    fn name(&self) -> &'static str {
        "pearson"
    }

    fn column(&self) -> String {
        "pearson".to_string()
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
        pearson(a, b)
    }
}

/// Pearson's correlation of `a` and `b` (see the module docs).
///
/// `None` if the lengths differ, there are fewer than two values, a value is not finite, or
/// either side is constant. Never NaN; exactly 1 for `pearson(a, a)`.
pub fn pearson(a: &[f32], b: &[f32]) -> Option<f64> {
    pearson_of(a, b)
}

/// [`pearson`] of f64 values (faithfulness correlation's attribution sums and output drops).
pub fn pearson_f64(a: &[f64], b: &[f64]) -> Option<f64> {
    pearson_of(a, b)
}

/// The one Pearson computation, for f32 and f64 values.
fn pearson_of<T: Copy + PartialEq + Into<f64>>(a: &[T], b: &[T]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 || !a.iter().chain(b).all(|&x| x.into().is_finite()) {
        return None;
    }
    // Checked on the values, not on the variance, so that "constant" does not depend on how the
    // mean rounds; a non-constant map then has a non-zero deviation whose square cannot
    // underflow in f64 (the smallest f32 difference is ~1e-45).
    let constant = |m: &[T]| m.iter().all(|&x| x == m[0]);
    if constant(a) || constant(b) {
        return None;
    }
    let mean = |m: &[T]| m.iter().map(|&x| x.into()).sum::<f64>() / m.len() as f64;
    let (ma, mb) = (mean(a), mean(b));
    let (mut cov, mut var_a, mut var_b) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x.into() - ma, y.into() - mb);
        cov += dx * dy;
        var_a += dx * dx;
        var_b += dy * dy;
    }
    // √(var_a·var_b) rather than √var_a·√var_b: IEEE sqrt(v·v) is exactly v, so identical maps
    // give exactly 1. The clamp only removes rounding beyond ±1 in other cases.
    Some((cov / (var_a * var_b).sqrt()).clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn close(x: Option<f64>, want: f64) {
        let x = x.expect("defined");
        assert!((x - want).abs() < 1e-12, "{x} vs {want}");
    }

    #[test]
    fn pearson_by_hand() {
        // a = [1, 2, 3, 4] (mean 2.5), b = [1, 3, 2, 5] (mean 2.75).
        // da = [-1.5, -0.5, 0.5, 1.5]; db = [-1.75, 0.25, -0.75, 2.25].
        // cov = 2.625 − 0.125 − 0.375 + 3.375 = 5.5; var_a = 2.25+0.25+0.25+2.25 = 5;
        // var_b = 3.0625 + 0.0625 + 0.5625 + 5.0625 = 8.75. r = 5.5 / √43.75 ≈ 0.831522.
        let (a, b) = ([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 5.0]);
        close(pearson(&a, &b), 5.5 / 43.75f64.sqrt());
        close(Pearson.score(&a, &b, 2, 2), 5.5 / 43.75f64.sqrt());
    }

    #[test]
    fn pearson_is_invariant_to_affine_maps() {
        // b = 3a + 1 → r = 1; c = 0.5 − 2a → r = −1 (up to rounding of the f32 transforms).
        let a = [0.1f32, 0.4, 0.2, 0.8, 0.3, 0.0];
        let b: Vec<f32> = a.iter().map(|x| 3.0 * x + 1.0).collect();
        let c: Vec<f32> = a.iter().map(|x| 0.5 - 2.0 * x).collect();
        assert!((pearson(&a, &b).expect("defined") - 1.0).abs() < 1e-6);
        assert!((pearson(&a, &c).expect("defined") + 1.0).abs() < 1e-6);
        assert_eq!(pearson(&a, &a), Some(1.0));
    }

    #[test]
    fn pearson_of_uncorrelated_vectors_is_zero() {
        // a = [1, 0, 1, 0] (mean 0.5), b = [1, 1, 0, 0] (mean 0.5): deviations ±0.5,
        // products [0.25, −0.25, −0.25, 0.25] sum to 0 → r = 0 exactly.
        assert_eq!(pearson(&[1.0, 0.0, 1.0, 0.0], &[1.0, 1.0, 0.0, 0.0]), Some(0.0));
    }

    #[test]
    fn pearson_is_symmetric_and_in_range_on_random_maps() {
        let mut rng = crate::seed::rng(21);
        for _ in 0..20 {
            let a: Vec<f32> = (0..49).map(|_| rng.random_range(0.0f32..1.0)).collect();
            let b: Vec<f32> = (0..49).map(|_| rng.random_range(0.0f32..1.0)).collect();
            let r = pearson(&a, &b).expect("defined");
            assert_eq!(Some(r), pearson(&b, &a));
            assert!((-1.0..=1.0).contains(&r), "{r}");
        }
    }

    #[test]
    fn pearson_undefined_inputs_are_none() {
        let v = [1.0, 2.0, 3.0];
        assert_eq!(pearson(&[0.2; 3], &v), None);
        assert_eq!(pearson(&v, &[0.0; 3]), None);
        assert_eq!(pearson(&[1.0, f32::NAN, 3.0], &v), None);
        assert_eq!(pearson(&v, &[1.0, 2.0, f32::INFINITY]), None);
        assert_eq!(pearson(&v, &[1.0, 2.0]), None);
        assert_eq!(pearson(&[1.0], &[2.0]), None);
        assert_eq!(pearson(&[], &[]), None);
        assert_eq!(Pearson.score(&v, &v, 2, 2), None);
    }
}

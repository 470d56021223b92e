//! Mean squared error between two saliency maps after normalising each to sum to one.
//!
//! ```text
//! p = a / Σa,   q = b / Σb,   mse = (1/n) Σ (p_i − q_i)²
//! ```
//!
//! over all `n = h·w` pixels, computed in f64. Normalising first makes the score ignore the
//! overall scale of a map (attribution magnitudes change with the logit, which an attack may
//! move) and compares where the saliency mass is, as a distribution over pixels. 0 for maps
//! that are positive multiples of each other; for non-negative maps at most `2/n` (all mass on
//! one pixel in `a` and on another in `b`), so compare values only at equal image sizes. The
//! reported range is \[0, ∞) because signed maps are accepted and can exceed `2/n`. Lower is
//! more similar.
//!
//! Undefined (`None`) when the lengths differ, the maps are empty, a value is not finite, or
//! either map sums to 0 (there is nothing to normalise; for a non-negative map that means all
//! zero).

use super::{fits, Direction, Metric};

/// Mean squared error of the two maps normalised to sum to one; range \[0, ∞), lower is more
/// similar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MseNormalized;

impl Metric for MseNormalized {
    fn name(&self) -> &'static str {
        "mse"
    }

    fn column(&self) -> String {
        "mse_normalized".to_string()
    }

    fn direction(&self) -> Direction {
        Direction::LowerIsMoreSimilar
    }

    fn range(&self) -> (f64, f64) {
        (0.0, f64::INFINITY)
    }

    fn score(&self, a: &[f32], b: &[f32], h: usize, w: usize) -> Option<f64> {
        if !fits(a, b, h, w) {
            return None;
        }
        mse_normalized(a, b)
    }
}

/// Mean squared error of `a / Σa` and `b / Σb` (see the module docs).
///
/// `None` if the lengths differ, a slice is empty, a value is not finite, or either side sums
/// to 0. Never NaN; exactly 0 for `mse_normalized(a, a)`.
pub fn mse_normalized(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() || a.is_empty() || !a.iter().chain(b).all(|x| x.is_finite()) {
        return None;
    }
    let sum = |m: &[f32]| m.iter().map(|&x| f64::from(x)).sum::<f64>();
    let (sa, sb) = (sum(a), sum(b));
    // The sum of finite f32 values in f64 cannot overflow; a sum of exactly 0 has no
    // normalisation.
    if sa == 0.0 || sb == 0.0 {
        return None;
    }
    let total: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) / sa - f64::from(y) / sb;
            d * d
        })
        .sum();
    Some(total / a.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn close(x: Option<f64>, want: f64) {
        let x = x.expect("defined");
        assert!((x - want).abs() < 1e-15, "{x} vs {want}");
    }

    #[test]
    fn mse_by_hand() {
        // a = [1, 1, 2, 0] → p = [0.25, 0.25, 0.5, 0]; b = [0, 2, 1, 1] → q = [0, 0.5, 0.25, 0.25].
        // p − q = [0.25, −0.25, 0.25, −0.25]; squares 0.0625 each; mean = 0.0625.
        let (a, b) = ([1.0, 1.0, 2.0, 0.0], [0.0, 2.0, 1.0, 1.0]);
        close(mse_normalized(&a, &b), 0.0625);
        close(MseNormalized.score(&a, &b, 2, 2), 0.0625);
    }

    #[test]
    fn mse_ignores_scale_and_peaks_at_disjoint_single_pixels() {
        // b = 4a normalises to the same distribution: exactly 0.
        let a = [0.5, 1.5, 0.0, 2.0];
        let b: Vec<f32> = a.iter().map(|x| 4.0 * x).collect();
        assert_eq!(mse_normalized(&a, &b), Some(0.0));
        assert_eq!(mse_normalized(&a, &a), Some(0.0));
        // All mass on pixel 0 vs on pixel 3 of 4: (1² + 1²)/4 = 2/n = 0.5, the maximum.
        assert_eq!(mse_normalized(&[3.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.1]), Some(0.5));
    }

    #[test]
    fn mse_is_symmetric_and_in_range_on_random_maps() {
        let mut rng = crate::seed::rng(51);
        let n = 49;
        for _ in 0..20 {
            let a: Vec<f32> = (0..n).map(|_| rng.random_range(0.0f32..1.0)).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.random_range(0.0f32..1.0)).collect();
            let m = mse_normalized(&a, &b).expect("defined");
            assert_eq!(Some(m), mse_normalized(&b, &a));
            // Non-negative maps: within [0, 2/n].
            assert!((0.0..=2.0 / n as f64).contains(&m), "{m}");
        }
    }

    #[test]
    fn mse_undefined_inputs_are_none() {
        let v = [1.0, 2.0, 3.0];
        assert_eq!(mse_normalized(&[0.0; 3], &v), None);
        assert_eq!(mse_normalized(&v, &[0.0, -0.0, 0.0]), None);
        assert_eq!(mse_normalized(&[1.0, f32::NAN, 3.0], &v), None);
        assert_eq!(mse_normalized(&v, &[1.0, f32::INFINITY, 3.0]), None);
        assert_eq!(mse_normalized(&v, &[1.0, 2.0]), None);
        assert_eq!(mse_normalized(&[], &[]), None);
        assert_eq!(MseNormalized.score(&v, &v, 2, 2), None);
    }
}

//! Cosine similarity between two saliency maps, taken as vectors of `h·w` pixel values.
//!
//! ```text
//! cos = Σ a_i·b_i / √(Σ a_i² · Σ b_i²)
//! ```
//!
//! computed in f64. It is Pearson's correlation without centring: unchanged by rescaling
//! either map by a positive factor, but not by shifting it, so a map's zero level matters
//! (which suits saliency, where 0 means "no evidence"). Range \[−1, 1\]; for non-negative maps,
//! as ours are, it lies in \[0, 1\], 0 when the maps have disjoint supports. Higher is more
//! similar.
//!
//! Undefined (`None`) when the lengths differ, the maps are empty, a value is not finite, or
//! either map is all zero (it has no direction).

use super::{fits, Direction, Metric};

/// Cosine similarity of the two maps as vectors; range \[−1, 1\] (\[0, 1\] for non-negative
/// maps), higher is more similar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cosine;

impl Metric for Cosine {
    fn name(&self) -> &'static str {
        "cosine"
    }

    fn column(&self) -> String {
        "cosine".to_string()
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
        cosine(a, b)
    }
}

/// Cosine similarity of `a` and `b` (see the module docs).
///
/// `None` if the lengths differ, a value is not finite, or either side is all zero (which
/// includes empty slices). Never NaN; exactly 1 for `cosine(a, a)`.
pub fn cosine(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() || !a.iter().chain(b).all(|x| x.is_finite()) {
        return None;
    }
    let (mut dot, mut norm_a, mut norm_b) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        norm_a += x * x;
        norm_b += y * y;
    }
    // The square of any non-zero f32 is a positive f64 (no underflow), so a norm is 0 exactly
    // when the map is all zero.
    if norm_a == 0.0 || norm_b == 0.0 {
        return None;
    }
    // √(norm_a·norm_b) rather than √norm_a·√norm_b: IEEE sqrt(v·v) is exactly v, so identical
    // maps give exactly 1. The clamp only removes rounding beyond ±1 in other cases.
    Some((dot / (norm_a * norm_b).sqrt()).clamp(-1.0, 1.0))
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
    fn cosine_by_hand() {
        // a = [1, 2, 2, 0], b = [2, 0, 1, 2]: a·b = 2 + 0 + 2 + 0 = 4; |a|² = 9, |b|² = 9.
        // cos = 4 / √81 = 4/9.
        let (a, b) = ([1.0, 2.0, 2.0, 0.0], [2.0, 0.0, 1.0, 2.0]);
        close(cosine(&a, &b), 4.0 / 9.0);
        close(Cosine.score(&a, &b, 2, 2), 4.0 / 9.0);
        // a = [3, 4], b = [4, 3]: 24 / (5·5) = 0.96.
        close(cosine(&[3.0, 4.0], &[4.0, 3.0]), 0.96);
    }

    #[test]
    fn cosine_extremes() {
        // Disjoint supports: a·b = 0 → 0. A positive multiple: exactly 1 here, since the
        // factor 2 is exact in floating point. Opposite vectors: −1.
        assert_eq!(cosine(&[1.0, 0.0, 0.0], &[0.0, 0.5, 2.0]), Some(0.0));
        assert_eq!(cosine(&[0.5, 1.5, 0.25], &[1.0, 3.0, 0.5]), Some(1.0));
        assert_eq!(cosine(&[0.5, -1.5], &[-0.5, 1.5]), Some(-1.0));
    }

    #[test]
    fn cosine_is_symmetric_and_in_range_on_random_maps() {
        let mut rng = crate::seed::rng(31);
        for _ in 0..20 {
            let a: Vec<f32> = (0..49).map(|_| rng.random_range(0.0f32..1.0)).collect();
            let b: Vec<f32> = (0..49).map(|_| rng.random_range(0.0f32..1.0)).collect();
            let c = cosine(&a, &b).expect("defined");
            assert_eq!(Some(c), cosine(&b, &a));
            // Non-negative maps: within [0, 1].
            assert!((0.0..=1.0).contains(&c), "{c}");
        }
    }

    #[test]
    fn cosine_undefined_inputs_are_none() {
        let v = [1.0, 2.0, 3.0];
        assert_eq!(cosine(&[0.0; 3], &v), None);
        assert_eq!(cosine(&v, &[0.0, -0.0, 0.0]), None);
        assert_eq!(cosine(&[1.0, f32::NAN, 3.0], &v), None);
        assert_eq!(cosine(&v, &[1.0, 2.0, f32::INFINITY]), None);
        assert_eq!(cosine(&v, &[1.0, 2.0]), None);
        assert_eq!(cosine(&[], &[]), None);
        assert_eq!(Cosine.score(&v, &v, 2, 2), None);
        // A constant non-zero map is fine for cosine (unlike Pearson): [1,1]·[1,3] = 4,
        // |.|² = 2 and 10 → 4/√20.
        close(cosine(&[1.0, 1.0], &[1.0, 3.0]), 4.0 / 20f64.sqrt());
    }
}

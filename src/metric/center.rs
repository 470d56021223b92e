//! Center shift: how far the saliency map's center of mass moved, in pixels.
//!
//! The center of mass of a map `m` of `h × w` non-negative values is
//! `(Σ m[r,c]·r / Σ m, Σ m[r,c]·c / Σ m)`, in pixel coordinates with (0, 0) the top-left pixel's
//! center. Ghorbani et al. (2019) introduced the center attack, which pushes this point away,
//! and report the Euclidean distance between the two centers: 0 for maps with the same center,
//! up to the image diagonal. Range \[0, ∞), lower is more similar. It ignores how the mass is
//! spread, so it complements the two ranking metrics.

use super::{fits, Direction, Metric};

/// Euclidean distance between the two maps' centers of mass, in pixels; range \[0, ∞), lower is
/// more similar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CenterShift;

impl Metric for CenterShift {
    fn name(&self) -> &'static str {
        "center_shift"
    }

    fn column(&self) -> String {
        "center_shift_px".to_string()
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
        center_shift(a, b, h, w)
    }
}

/// The center of mass `(row, col)` of the row-major `h × w` map `m`, in pixels, with the values
/// as weights (summed in f64).
///
/// `None` if `m.len() != h * w`, a value is negative (signed weights can put the "center"
/// outside the image, which means nothing here) or not finite, or the values sum to 0.
pub fn center_of_mass(m: &[f32], h: usize, w: usize) -> Option<(f64, f64)> {
    if w == 0 || h.checked_mul(w) != Some(m.len()) {
        return None;
    }
    let (mut total, mut row, mut col) = (0.0f64, 0.0f64, 0.0f64);
    for (i, &v) in m.iter().enumerate() {
        if !v.is_finite() || v < 0.0 {
            return None;
        }
        let v = f64::from(v);
        total += v;
        row += v * (i / w) as f64;
        col += v * (i % w) as f64;
    }
    // The sum of finite f32 values in f64 cannot overflow, but check anyway: cheap and explicit.
    if total == 0.0 || !total.is_finite() {
        return None;
    }
    Some((row / total, col / total))
}

/// Euclidean distance in pixels between the centers of mass of `a` and `b` (`h × w` each);
/// `None` where either center is undefined (see [`center_of_mass`]).
pub fn center_shift(a: &[f32], b: &[f32], h: usize, w: usize) -> Option<f64> {
    let (ra, ca) = center_of_mass(a, h, w)?;
    let (rb, cb) = center_of_mass(b, h, w)?;
    Some((ra - rb).hypot(ca - cb))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `h × w` map that is zero except `value` at (r, c).
    fn hot(h: usize, w: usize, r: usize, c: usize, value: f32) -> Vec<f32> {
        let mut m = vec![0.0; h * w];
        m[r * w + c] = value;
        m
    }

    #[test]
    fn center_of_single_hot_pixel_is_that_pixel() {
        // 4×5 map, only (2, 3) non-zero: Σ m·r / Σ m = 2, Σ m·c / Σ m = 3, whatever the value.
        assert_eq!(center_of_mass(&hot(4, 5, 2, 3, 0.7), 4, 5), Some((2.0, 3.0)));
    }

    #[test]
    fn center_of_two_equal_pixels_is_their_midpoint() {
        // (0, 0) and (2, 4), weight 1 each: row (0 + 2)/2 = 1, col (0 + 4)/2 = 2.
        let mut m = hot(3, 5, 0, 0, 1.0);
        m[2 * 5 + 4] = 1.0;
        assert_eq!(center_of_mass(&m, 3, 5), Some((1.0, 2.0)));
        // Unequal weights 1 at (0, 0) and 3 at (0, 4): col = (0·1 + 4·3)/4 = 3.
        let mut m = hot(1, 5, 0, 0, 1.0);
        m[4] = 3.0;
        assert_eq!(center_of_mass(&m, 1, 5), Some((0.0, 3.0)));
    }

    #[test]
    fn center_of_mass_undefined_cases() {
        assert_eq!(center_of_mass(&[0.0; 6], 2, 3), None);
        assert_eq!(center_of_mass(&[1.0, f32::NAN], 1, 2), None);
        assert_eq!(center_of_mass(&[1.0, f32::INFINITY], 1, 2), None);
        assert_eq!(center_of_mass(&[1.0, -0.5], 1, 2), None);
        assert_eq!(center_of_mass(&[1.0, 1.0, 1.0], 2, 2), None);
        assert_eq!(center_of_mass(&[], 0, 0), None);
    }

    #[test]
    fn center_shift_of_two_single_pixel_maps() {
        // (0, 0) vs (3, 4): √(3² + 4²) = 5 pixels.
        let a = hot(6, 6, 0, 0, 1.0);
        let b = hot(6, 6, 3, 4, 0.2);
        assert_eq!(center_shift(&a, &b, 6, 6), Some(5.0));
        assert_eq!(CenterShift.score(&a, &b, 6, 6), Some(5.0));
        assert_eq!(center_shift(&a, &a, 6, 6), Some(0.0));
        assert_eq!(center_shift(&a, &[0.0; 36], 6, 6), None);
    }
}

//! The noisy copies: uniform noise in the L∞ ball of radius r, clipped to the pixel range.
//!
//! Image `image_id` draws its noise from its own stream,
//! `seed::rng(seed::derive(settings.seed, &[image_id]))`, so its copies depend only on its id and
//! the settings, never on the batch it came in or its position there. The stream yields
//! `samples × len` values, sample-major: value j of sample k is draw number `k·len + j`, mapped to
//! u = r·(2v − 1) with v uniform in [0, 1), so u is uniform in [−r, r) (rounded to f32).
//! A noisy copy is clip(x + u, 0, 1), computed in f32 ([`perturb`]).

use super::RobustnessSettings;
use crate::seed;
use rand::Rng;

/// The raw noise of image `image_id`, [samples, len] flattened sample-major: each value
/// uniform in [−r, r), r = `settings.radius`, before any clipping.
pub fn noise(settings: &RobustnessSettings, image_id: u32, len: usize) -> Vec<f32> {
    let mut rng = seed::rng(seed::derive(settings.seed, &[u64::from(image_id)]));
    let r = settings.radius;
    (0..settings.samples * len).map(|_| (r * (2.0 * rng.random::<f64>() - 1.0)) as f32).collect()
}

/// The noisy copy clip(x + u, 0, 1) of one image `x` (flattened [C·H·W]) for one sample `u` of
/// the same length, element-wise in f32. Its effective perturbation δ = result − x is `u` where
/// no clipping happened and smaller in magnitude where it did.
pub fn perturb(x: &[f32], u: &[f32]) -> Vec<f32> {
    x.iter().zip(u).map(|(&a, &d)| (a + d).clamp(0.0, 1.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_keyed_by_image_id_and_seed_and_fills_the_ball() {
        let s = RobustnessSettings { radius: 0.5, samples: 3, seed: 7 };
        let a = noise(&s, 4, 1000);
        assert_eq!(a.len(), 3000);
        assert_eq!(a, noise(&s, 4, 1000));
        assert_ne!(a, noise(&s, 5, 1000));
        assert_ne!(a, noise(&RobustnessSettings { seed: 8, ..s }, 4, 1000));
        // Uniform on [−0.5, 0.5): mean 0 (sd of the mean of 3000 draws: 0.289/√3000 = 0.0053),
        // both halves of the ball reached.
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / 3000.0;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!(a.iter().all(|v| v.abs() <= 0.5));
        assert!(a.iter().any(|&v| v > 0.45) && a.iter().any(|&v| v < -0.45));
        // A longer image extends the same stream: the first sample's first values agree.
        assert_eq!(noise(&s, 4, 2000)[..1000], a[..1000]);
    }

    #[test]
    fn perturbation_is_clipped_to_the_pixel_range() {
        // 0.0 − 0.25 → 0 (clipped: δ = 0); 0.9 + 0.25 → 1 (δ = 0.1); 0.5 − 0.25 → 0.25.
        assert_eq!(perturb(&[0.0, 0.9, 0.5], &[-0.25, 0.25, -0.25]), vec![0.0, 1.0, 0.25]);
    }
}

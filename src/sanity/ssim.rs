//! SSIM as Adebayo et al.'s sanity checks compute it: scikit-image's `structural_similarity`
//! (0.15's `compare_ssim`) with `gaussian_weights=True, multichannel=True` and its defaults.
//!
//! For each channel of two maps already scaled to \[0, 1\] (jointly over all channels, see
//! [`super::similarity::unit_range`]), per pixel `p`, with Gaussian-weighted local means
//! `μ` over the 11×11 window of σ = 1.5 (scipy's `gaussian_filter`, truncate 3.5, weights
//! summing to 1):
//!
//! ```text
//! v_a  = N/(N−1) · (μ(a²) − μ(a)²)          N = 121: scikit-image's default sample covariance
//! v_ab = N/(N−1) · (μ(ab) − μ(a)μ(b))       (it is not switched off by gaussian_weights)
//! S(p) = (2μ(a)μ(b) + C1)(2v_ab + C2) / ((μ(a)² + μ(b)² + C1)(v_a + v_b + C2))
//! C1 = (0.01·L)², C2 = (0.03·L)², L = 2
//! ```
//!
//! averaged over the pixels at least 5 from every border (scikit-image crops the window's
//! radius), then over channels. `L = 2` is the dynamic range scikit-image 0.15 assumed for a
//! float32 image (its `dtype_range` is −1..1), which is what Adebayo's call used; current
//! scikit-image wants it passed. Shapes: `a`, `b` are `c·h·w` values, channel-major.
//!
//! How this differs from the study's [`crate::metric::ssim`], and why both exist: that one
//! scales each map to \[0, 1\] on its own, uses the population covariance and `L = 1`, and
//! averages over *all* pixels with the window renormalised at the borders, so that it is defined
//! for small maps and counts the border; this one reproduces the published sanity checks. They
//! share the Gaussian local means (`gaussian_means` in `metric::ssim`), which at the interior
//! pixels read here are whole-window means. `None` if a side is shorter than the window.

use crate::metric::{gaussian_means, GAUSSIAN_RADIUS};

/// Window taps `N` = 11·11, for the sample-covariance factor `N / (N − 1)`.
const TAPS: f64 = ((2 * GAUSSIAN_RADIUS + 1) * (2 * GAUSSIAN_RADIUS + 1)) as f64;
/// Dynamic range scikit-image 0.15 took for float32 images.
const DATA_RANGE: f64 = 2.0;
/// `(K1·L)²` with K1 = 0.01.
const C1: f64 = (0.01 * DATA_RANGE) * (0.01 * DATA_RANGE);
/// `(K2·L)²` with K2 = 0.03.
const C2: f64 = (0.03 * DATA_RANGE) * (0.03 * DATA_RANGE);

/// Mean over channels of each channel's interior-mean SSIM of the \[0, 1\]-scaled maps `a`, `b`
/// (`c·h·w` values, channel-major); `None` if a length does not fit or `h` or `w` < 11.
pub fn ssim(a: &[f64], b: &[f64], c: usize, h: usize, w: usize) -> Option<f64> {
    let side = 2 * GAUSSIAN_RADIUS + 1;
    let hw = h.checked_mul(w)?;
    if c == 0 || h < side || w < side || a.len() != c * hw || b.len() != c * hw {
        return None;
    }
    let total: f64 =
        (0..c).map(|k| channel_ssim(&a[k * hw..(k + 1) * hw], &b[k * hw..(k + 1) * hw], h, w)).sum();
    Some(total / c as f64)
}

/// One channel's SSIM averaged over the pixels whose window lies inside the image.
fn channel_ssim(a: &[f64], b: &[f64], h: usize, w: usize) -> f64 {
    let product = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).collect::<Vec<_>>();
    let (mu_a, mu_b) = (gaussian_means(a, h, w), gaussian_means(b, h, w));
    let aa = gaussian_means(&product(a, a), h, w);
    let bb = gaussian_means(&product(b, b), h, w);
    let ab = gaussian_means(&product(a, b), h, w);
    let cov_norm = TAPS / (TAPS - 1.0);
    let r = GAUSSIAN_RADIUS;
    let (mut sum, mut n) = (0.0, 0usize);
    for y in r..h - r {
        for x in r..w - r {
            let i = y * w + x;
            let (ma, mb) = (mu_a[i], mu_b[i]);
            let var_a = cov_norm * (aa[i] - ma * ma);
            let var_b = cov_norm * (bb[i] - mb * mb);
            let cov = cov_norm * (ab[i] - ma * mb);
            sum +=
                (2.0 * ma * mb + C1) * (2.0 * cov + C2) / ((ma * ma + mb * mb + C1) * (var_a + var_b + C2));
            n += 1;
        }
    }
    sum / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SSIM of one interior pixel straight from the definition: the 2-D window's weights
    /// normalised explicitly, two-pass weighted moments. Independent of the separable code.
    fn pixel_by_window(a: &[f64], b: &[f64], w: usize, y: usize, x: usize) -> f64 {
        let mut taps = Vec::new();
        for dy in -5i64..=5 {
            for dx in -5i64..=5 {
                let wt = (-((dy * dy + dx * dx) as f64) / (2.0 * 1.5 * 1.5)).exp();
                taps.push((wt, ((y as i64 + dy) as usize) * w + (x as i64 + dx) as usize));
            }
        }
        let z: f64 = taps.iter().map(|t| t.0).sum();
        let mean = |m: &[f64]| taps.iter().map(|&(wt, i)| wt * m[i]).sum::<f64>() / z;
        let (ma, mb) = (mean(a), mean(b));
        let moment = |f: &dyn Fn(usize) -> f64| taps.iter().map(|&(wt, i)| wt * f(i)).sum::<f64>() / z;
        let k = 121.0 / 120.0;
        let va = k * moment(&|i| (a[i] - ma) * (a[i] - ma));
        let vb = k * moment(&|i| (b[i] - mb) * (b[i] - mb));
        let vab = k * moment(&|i| (a[i] - ma) * (b[i] - mb));
        let (c1, c2) = (0.02f64.powi(2), 0.06f64.powi(2));
        (2.0 * ma * mb + c1) * (2.0 * vab + c2) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    }

    #[test]
    fn matches_the_definition_window_by_window() {
        // 13×12: interior 3×2 pixels; two channels with different content.
        let (h, w) = (13, 12);
        let a: Vec<f64> = (0..2 * h * w).map(|i| ((i * 37 % 101) as f64) / 100.0).collect();
        let b: Vec<f64> = (0..2 * h * w).map(|i| ((i * 53 % 97) as f64) / 96.0).collect();
        let mut want = 0.0;
        for k in 0..2 {
            let (ca, cb) = (&a[k * h * w..(k + 1) * h * w], &b[k * h * w..(k + 1) * h * w]);
            let mut s = 0.0;
            for y in 5..h - 5 {
                for x in 5..w - 5 {
                    s += pixel_by_window(ca, cb, w, y, x);
                }
            }
            want += s / 6.0 / 2.0;
        }
        let got = ssim(&a, &b, 2, h, w).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert_eq!(ssim(&a, &a, 2, h, w), Some(1.0));
    }

    #[test]
    fn too_small_or_misshapen_is_none() {
        let a = vec![0.5; 10 * 11];
        assert_eq!(ssim(&a, &a, 1, 10, 11), None);
        assert_eq!(ssim(&a, &a, 1, 11, 10), None);
        assert_eq!(ssim(&a, &a[1..], 1, 11, 10), None);
    }
}

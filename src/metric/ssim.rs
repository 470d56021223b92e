//! Structural similarity (SSIM) between two saliency maps, as images.
//!
//! Wang, Bovik, Sheikh and Simoncelli ("Image quality assessment: from error visibility to
//! structural similarity", IEEE TIP 2004) compare two images window by window on luminance,
//! contrast and structure; Adebayo et al. ("Sanity checks for saliency maps", NeurIPS 2018)
//! use it to compare saliency maps. Here, exactly:
//!
//! 1. Each map is scaled to \[0, 1\] on its own: `(m − min m) / (max m − min m)`, in f64. A
//!    constant map cannot be scaled and gives `None`. So the score ignores each map's offset
//!    and positive scale, and the dynamic range is `L = 1`.
//! 2. Around every pixel `p`, weighted local statistics with the 11×11 Gaussian window of
//!    σ = 1.5 (weights `exp(−(dr² + dc²) / (2σ²))` for offsets `|dr|, |dc| ≤ 5`):
//!    `μ_a = Σ w·a`, `σ_a² = Σ w·a² − μ_a²`, `σ_ab = Σ w·a·b − μ_a·μ_b` (population, not sample,
//!    covariance; likewise for `b`).
//! 3. `SSIM(p) = (2μ_aμ_b + C1)(2σ_ab + C2) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2))` with
//!    `C1 = (0.01·L)²` and `C2 = (0.03·L)²`.
//! 4. The score is the mean of `SSIM(p)` over **all** `h·w` pixels, each weighted equally.
//!
//! **Borders.** Where the window sticks out of the image, it is cut to the offsets that land
//! inside and its remaining weights are rescaled to sum to 1; no padding values are invented.
//! Equivalently, each local mean is the zero-padded Gaussian filter of the image divided by
//! the zero-padded filter of an all-ones image (normalised convolution). Since the window is
//! a product of two 1-D Gaussians and the cut window is a rectangle, this is computed exactly
//! as two separable 1-D passes, each renormalised over its in-image taps. Images smaller than
//! the window (down to 1×2) are thus defined too.
//!
//! At pixels at least 5 from every border the window is whole and `SSIM(p)` equals
//! scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
//! use_sample_covariance=False, data_range=1)` on the same scaled maps. The means differ:
//! scikit-image averages only those interior pixels (18×18 of a 28×28 image), we average all
//! pixels, so the border of the map — where saliency often is near zero and maps agree —
//! counts. [`ssim_map`] returns the per-pixel values for anyone who wants the interior mean.
//!
//! Range \[−1, 1\], higher is more similar; exactly 1 for identical maps (after scaling).
//! Undefined (`None`) when the lengths are not `h·w`, a value is not finite, or either map is
//! constant.

use super::{fits, Direction, Metric};

/// Half-width of the Gaussian window: 11×11 taps.
pub(crate) const RADIUS: usize = 5;
/// Standard deviation of the Gaussian window, in pixels.
const SIGMA: f64 = 1.5;
/// Luminance stabiliser `(K1·L)²` with `K1 = 0.01` and dynamic range `L = 1`.
const C1: f64 = 0.01 * 0.01;
/// Contrast stabiliser `(K2·L)²` with `K2 = 0.03` and dynamic range `L = 1`.
const C2: f64 = 0.03 * 0.03;

/// Mean SSIM of the two maps, each scaled to \[0, 1\]; range \[−1, 1\], higher is more similar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ssim;

impl Metric for Ssim {
    fn name(&self) -> &'static str {
        "ssim"
    }

    fn column(&self) -> String {
        "ssim".to_string()
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
        ssim(a, b, h, w)
    }
}

/// Mean SSIM over all pixels of the row-major `h × w` maps `a` and `b` (see the module docs).
///
/// `None` if a length is not `h * w`, a value is not finite, or either map is constant. Never
/// NaN; exactly 1 for `ssim(a, a, h, w)` when `a` is not constant.
pub fn ssim(a: &[f32], b: &[f32], h: usize, w: usize) -> Option<f64> {
    let map = ssim_map(a, b, h, w)?;
    // Sum of n ones is exactly n, so identical maps give exactly 1; the clamp only removes
    // rounding beyond ±1 in other cases.
    Some((map.iter().sum::<f64>() / map.len() as f64).clamp(-1.0, 1.0))
}

/// Per-pixel SSIM of the row-major `h × w` maps `a` and `b`, row-major, each map first scaled
/// to \[0, 1\], with the window cut and renormalised at the borders (see the module docs).
///
/// `None` under the same conditions as [`ssim`].
pub fn ssim_map(a: &[f32], b: &[f32], h: usize, w: usize) -> Option<Vec<f64>> {
    if !fits(a, b, h, w) {
        return None;
    }
    let (a, b) = (unit_scaled(a)?, unit_scaled(b)?);
    let g = gaussian_taps();
    let blur = |x: &[f64]| blur(x, h, w, &g);
    let product = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).collect::<Vec<_>>();
    let (mu_a, mu_b) = (blur(&a), blur(&b));
    let (aa, bb, ab) = (blur(&product(&a, &a)), blur(&product(&b, &b)), blur(&product(&a, &b)));
    let map = (0..a.len())
        .map(|i| {
            let (ma, mb) = (mu_a[i], mu_b[i]);
            let (var_a, var_b, cov) = (aa[i] - ma * ma, bb[i] - mb * mb, ab[i] - ma * mb);
            // Written so that a = b gives bit-identical numerator and denominator: 2·x is exact,
            // so 2·ma·mb = ma·ma + mb·mb and 2·cov = var_a + var_b to the last bit.
            let num = (2.0 * ma * mb + C1) * (2.0 * cov + C2);
            let den = (ma * ma + mb * mb + C1) * (var_a + var_b + C2);
            num / den
        })
        .collect();
    Some(map)
}

/// `(m − min) / (max − min)` in f64; `None` for an empty or constant map or a non-finite value.
fn unit_scaled(m: &[f32]) -> Option<Vec<f64>> {
    if !m.iter().all(|x| x.is_finite()) {
        return None;
    }
    let lo = m.iter().copied().reduce(f32::min)?;
    let hi = m.iter().copied().reduce(f32::max)?;
    if lo == hi {
        return None;
    }
    let (lo, span) = (f64::from(lo), f64::from(hi) - f64::from(lo));
    Some(m.iter().map(|&x| (f64::from(x) - lo) / span).collect())
}

/// The Gaussian-weighted local means of the row-major `h × w` image `x` (11×11 window, σ =
/// 1.5), the window cut and renormalised at the borders. At pixels at least [`RADIUS`] from
/// every border the window is whole: there these are scipy's `gaussian_filter(x, 1.5,
/// truncate=3.5)`, whatever its border mode (the sanity checks' SSIM reads only those).
pub(crate) fn gaussian_means(x: &[f64], h: usize, w: usize) -> Vec<f64> {
    blur(x, h, w, &gaussian_taps())
}

/// The 1-D Gaussian `exp(−d² / (2σ²))` for `d = −RADIUS ..= RADIUS`, unnormalised (every use
/// divides by the sum of the taps it keeps).
fn gaussian_taps() -> [f64; 2 * RADIUS + 1] {
    std::array::from_fn(|i| {
        let d = i as f64 - RADIUS as f64;
        (-d * d / (2.0 * SIGMA * SIGMA)).exp()
    })
}

/// The row-major `h × w` image `x` filtered with the separable window `g`, along rows then
/// along columns; each output is the weighted mean over the taps that fall inside the image.
fn blur(x: &[f64], h: usize, w: usize, g: &[f64; 2 * RADIUS + 1]) -> Vec<f64> {
    // Weighted mean of `at(k)` for k within RADIUS of `center` and below `len`; tap k − center.
    let mean_1d = |center: usize, len: usize, at: &dyn Fn(usize) -> f64| {
        let (mut sum, mut weight) = (0.0, 0.0);
        for k in center.saturating_sub(RADIUS)..len.min(center + RADIUS + 1) {
            let tap = g[k + RADIUS - center];
            sum += tap * at(k);
            weight += tap;
        }
        sum / weight
    };
    let mut rows = vec![0.0; x.len()];
    for r in 0..h {
        for c in 0..w {
            rows[r * w + c] = mean_1d(c, w, &|k| x[r * w + k]);
        }
    }
    let mut out = vec![0.0; x.len()];
    for r in 0..h {
        for c in 0..w {
            out[r * w + c] = mean_1d(r, h, &|k| rows[k * w + c]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn random_map(rng: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(0.0f32..1.0)).collect()
    }

    /// SSIM straight from the definition: for every pixel, the full 2-D window cut to the image,
    /// its weights summed and divided out explicitly, two-pass variances. Slow and independent
    /// of the separable code.
    fn ssim_by_windows(a: &[f32], b: &[f32], h: usize, w: usize) -> f64 {
        let scale = |m: &[f32]| {
            let lo = m.iter().fold(f64::INFINITY, |acc, &x| acc.min(f64::from(x)));
            let hi = m.iter().fold(f64::NEG_INFINITY, |acc, &x| acc.max(f64::from(x)));
            m.iter().map(|&x| (f64::from(x) - lo) / (hi - lo)).collect::<Vec<_>>()
        };
        let (a, b) = (scale(a), scale(b));
        let mut total = 0.0;
        for r in 0..h as i64 {
            for c in 0..w as i64 {
                let mut taps = Vec::new(); // (weight, pixel index)
                for i in 0..h as i64 {
                    for j in 0..w as i64 {
                        let (dr, dc) = ((i - r) as f64, (j - c) as f64);
                        if dr.abs() <= 5.0 && dc.abs() <= 5.0 {
                            let wt = (-(dr * dr + dc * dc) / (2.0 * 1.5 * 1.5)).exp();
                            taps.push((wt, (i * w as i64 + j) as usize));
                        }
                    }
                }
                let z: f64 = taps.iter().map(|t| t.0).sum();
                let avg = |f: &dyn Fn(usize) -> f64| taps.iter().map(|&(wt, k)| wt * f(k)).sum::<f64>() / z;
                let (ma, mb) = (avg(&|k| a[k]), avg(&|k| b[k]));
                let va = avg(&|k| (a[k] - ma) * (a[k] - ma));
                let vb = avg(&|k| (b[k] - mb) * (b[k] - mb));
                let cov = avg(&|k| (a[k] - ma) * (b[k] - mb));
                let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
                total +=
                    (2.0 * ma * mb + c1) * (2.0 * cov + c2) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            }
        }
        total / (h * w) as f64
    }

    #[test]
    fn identical_maps_score_exactly_one() {
        let mut rng = crate::seed::rng(41);
        for (h, w) in [(1, 2), (7, 7), (28, 28)] {
            let a = random_map(&mut rng, h * w);
            assert_eq!(ssim(&a, &a, h, w), Some(1.0), "{h}×{w}");
        }
        // Sparse maps with many zeros, too.
        let a = [0.0, 0.0, 3.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        assert_eq!(Ssim.score(&a, &a, 3, 3), Some(1.0));
    }

    #[test]
    fn two_pixel_maps_by_hand() {
        // a = [0, 1], b = [1, 0] as 1×2 images (already in [0, 1]). Only the offsets 0 and ±1
        // fall inside, with weights 1 and e = exp(−1/(2·1.5²)) = exp(−2/9); renormalised:
        // p = 1/(1+e) on the pixel itself, q = e/(1+e) on its neighbour.
        // Pixel 0: μ_a = q, μ_b = p; σ_a² = q − q² = pq, σ_b² = p − p² = pq;
        // σ_ab = E[ab] − μ_aμ_b = 0 − pq. Pixel 1 swaps p and q, giving the same value, so
        // SSIM = (2pq + C1)(C2 − 2pq) / ((p² + q² + C1)(2pq + C2)) ≈ −0.9723.
        let e = (-2.0f64 / 9.0).exp();
        let (p, q) = (1.0 / (1.0 + e), e / (1.0 + e));
        let (c1, c2) = (1e-4, 9e-4);
        let want = (2.0 * p * q + c1) * (c2 - 2.0 * p * q) / ((p * p + q * q + c1) * (2.0 * p * q + c2));
        let got = ssim(&[0.0, 1.0], &[1.0, 0.0], 1, 2).expect("defined");
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert!((got + 0.9723).abs() < 1e-4, "{got}");
    }

    #[test]
    fn matches_the_windowed_definition_on_small_maps() {
        // 7×7: every window is cut at some border. 13×17: some pixels have the whole window.
        let mut rng = crate::seed::rng(42);
        for (h, w) in [(7, 7), (13, 17), (3, 1)] {
            for _ in 0..3 {
                let (a, b) = (random_map(&mut rng, h * w), random_map(&mut rng, h * w));
                let (got, want) = (ssim(&a, &b, h, w).expect("defined"), ssim_by_windows(&a, &b, h, w));
                assert!((got - want).abs() < 1e-12, "{h}×{w}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn offset_and_positive_scale_do_not_matter() {
        // Integer-valued maps: adding 5 or doubling is exact in f32, and min–max scaling undoes
        // both exactly, so the scores are bit-identical.
        let mut rng = crate::seed::rng(43);
        let mut draw = || (0..49).map(|_| f32::from(rng.random_range(0u8..10))).collect::<Vec<_>>();
        let (a, b) = (draw(), draw());
        let shifted: Vec<f32> = a.iter().map(|x| x + 5.0).collect();
        let doubled: Vec<f32> = b.iter().map(|x| 2.0 * x).collect();
        let base = ssim(&a, &b, 7, 7);
        assert!(base.is_some());
        assert_eq!(ssim(&shifted, &b, 7, 7), base);
        assert_eq!(ssim(&a, &doubled, 7, 7), base);
    }

    #[test]
    fn is_symmetric_and_in_range_on_random_maps() {
        let mut rng = crate::seed::rng(44);
        for _ in 0..10 {
            let (a, b) = (random_map(&mut rng, 784), random_map(&mut rng, 784));
            let s = ssim(&a, &b, 28, 28).expect("defined");
            assert_eq!(Some(s), ssim(&b, &a, 28, 28));
            assert!((-1.0..=1.0).contains(&s), "{s}");
            // Independent noise maps share little structure.
            assert!(s.abs() < 0.2, "{s}");
        }
    }

    #[test]
    fn gaussian_window_is_cut_and_renormalised_at_borders() {
        // A constant image blurs to itself everywhere, corners included: the kept weights sum
        // to 1. An impulse in a corner of a 1×3 row: at pixel 0 the taps are 1, e, e⁴ (offsets
        // 0, 1, 2; e = exp(−2/9)) for values 1, 0, 0 → 1 / (1 + e + e⁴).
        let g = gaussian_taps();
        assert_eq!(g[RADIUS], 1.0);
        let flat = blur(&[0.25; 12], 3, 4, &g);
        assert!(flat.iter().all(|&v| (v - 0.25).abs() < 1e-15), "{flat:?}");
        let e = (-2.0f64 / 9.0).exp();
        let out = blur(&[1.0, 0.0, 0.0], 1, 3, &g);
        assert!((out[0] - 1.0 / (1.0 + e + e.powi(4))).abs() < 1e-15, "{out:?}");
    }

    #[test]
    fn undefined_inputs_are_none() {
        let v = [0.1, 0.5, 0.2, 0.9];
        assert_eq!(ssim(&[0.3; 4], &v, 2, 2), None);
        assert_eq!(ssim(&v, &[0.0; 4], 2, 2), None);
        assert_eq!(ssim(&[0.1, f32::NAN, 0.2, 0.9], &v, 2, 2), None);
        assert_eq!(ssim(&v, &[0.1, 0.5, f32::INFINITY, 0.9], 2, 2), None);
        assert_eq!(ssim(&v, &v, 1, 3), None);
        assert_eq!(ssim(&v, &v[..3], 2, 2), None);
        assert_eq!(ssim(&[1.0], &[1.0], 1, 1), None);
        assert_eq!(ssim(&[], &[], 0, 0), None);
        assert_eq!(Ssim.score(&v, &v, 4, 1), Some(1.0));
    }
}

//! RISE's blur, the canvas insertion starts from.
//!
//! Petsiuk et al. 2018 (RISE) start insertion from a blurred copy of the image:
//! `conv2d(x, gkern(klen, nsig), padding=klen//2)` with `klen = 11, nsig = 5`, each channel
//! blurred on its own, zeros beyond the border. Their `gkern` is not a sampled Gaussian but
//! scipy's `gaussian_filter` of a klen×klen delta (σ = nsig, `mode='reflect'`, `truncate=4`):
//! the 1-D weights w(t) ∝ exp(−t²/2σ²) for |t| ≤ ⌊4σ + 0.5⌋ (20 taps each side, normalised to
//! sum 1) folded back onto the klen cells by repeated reflection (period 2·klen), once per
//! axis, so the kernel is the outer product g gᵀ of the folded weights g. Computed in f64 and
//! rounded to f32 as `gkern` does (equal to scipy's in every f32 bit for 11 and 5, checked by
//! the fixture's `gkern`); the convolution sums in f64.
//!
//! Shapes: one image flat [C·H·W] in, the same out.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// RISE's Gaussian blur: a `klen`×`klen` kernel of width `sigma`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Blur {
    /// The kernel's side in pixels (odd, so that `padding = klen/2` keeps the image's size).
    pub klen: usize,
    /// The Gaussian's standard deviation in pixels (RISE's `nsig`).
    pub sigma: f64,
}

impl Default for Blur {
    /// RISE's `klen = 11, ksig = 5`.
    fn default() -> Self {
        Self { klen: 11, sigma: 5.0 }
    }
}

impl Blur {
    /// Errors unless `klen` is odd and `sigma` positive and finite.
    pub fn check(&self) -> Result<()> {
        if self.klen.is_multiple_of(2) || !(self.sigma.is_finite() && self.sigma > 0.0) {
            return Err(Error::Invalid(format!(
                "insertion blur: klen must be odd and sigma positive, got klen = {}, sigma = {}",
                self.klen, self.sigma
            )));
        }
        Ok(())
    }

    /// RISE's `gkern(klen, sigma)` for one channel, row-major [klen·klen].
    pub fn kernel(&self) -> Vec<f32> {
        let n = self.klen as i64;
        let radius = (4.0 * self.sigma + 0.5) as i64;
        // scipy's _gaussian_kernel1d: exp(-0.5 / σ² · t²), normalised below.
        let scale = -0.5 / (self.sigma * self.sigma);
        let weights: Vec<f64> = (-radius..=radius).map(|t| (scale * (t * t) as f64).exp()).collect();
        let total: f64 = weights.iter().sum();
        let reflect = |i: i64| {
            let j = i.rem_euclid(2 * n);
            if j < n {
                j
            } else {
                2 * n - 1 - j
            }
        };
        let mut g = vec![0f64; self.klen];
        for (i, gi) in g.iter_mut().enumerate() {
            for (t, w) in (-radius..=radius).zip(&weights) {
                if reflect(i as i64 + t) == n / 2 {
                    *gi += w / total;
                }
            }
        }
        g.iter().flat_map(|a| g.iter().map(move |b| (a * b) as f32)).collect()
    }

    /// `image` (flat [C·H·W]) blurred channel by channel, zero-padded by `klen/2`.
    pub fn apply(&self, image: &[f32], h: usize, w: usize) -> Vec<f32> {
        let kernel = self.kernel();
        let (k, r) = (self.klen, (self.klen / 2) as isize);
        let mut out = vec![0f32; image.len()];
        for (src, dst) in image.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w)) {
            for y in 0..h {
                for x in 0..w {
                    let mut acc = 0f64;
                    for ky in 0..k {
                        let sy = y as isize + ky as isize - r;
                        if sy < 0 || sy >= h as isize {
                            continue;
                        }
                        for kx in 0..k {
                            let sx = x as isize + kx as isize - r;
                            if sx >= 0 && sx < w as isize {
                                acc += kernel[ky * k + kx] as f64 * src[sy as usize * w + sx as usize] as f64;
                            }
                        }
                    }
                    dst[y * w + x] = acc as f32;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_is_symmetric_sums_to_one_and_peaks_in_the_middle() {
        let k = Blur::default().kernel();
        assert_eq!(k.len(), 121);
        let sum: f64 = k.iter().map(|&v| v as f64).sum();
        assert!((sum - 1.0).abs() < 1e-6, "{sum}");
        assert_eq!(k[0], k[120]);
        assert_eq!(k[10], k[110]);
        assert!(k.iter().all(|&v| v <= k[60]));
        // scipy's folded 1-D weights (printed by numpy): g[0] = 0.08795815, g[5] = 0.09398206.
        assert!((k[0] as f64 - 0.08795815f64.powi(2)).abs() < 1e-8);
        assert!((k[60] as f64 - 0.09398206f64.powi(2)).abs() < 1e-8);
    }

    #[test]
    fn a_constant_image_keeps_its_value_away_from_the_border() {
        let b = Blur { klen: 3, sigma: 1.0 };
        let out = b.apply(&[1.0; 25], 5, 5);
        assert!((out[12] - 1.0).abs() < 1e-6);
        assert!(out[0] < 0.9, "zero padding darkens the corner: {}", out[0]);
    }
}

//! KernelSHAP (Lundberg and Lee, NeurIPS 2017): LIME's machinery with the Shapley kernel.
//!
//! The Shapley kernel weighs a coalition of size k among F features by
//! π(k) = (F − 1) / (C(F, k)·k·(F − k)). The empty and the full coalitions (infinite weight:
//! they pin the intercept to f(baseline) and the sum of the values to f(x) − f(baseline)) get
//! weight 1e6, and there is no ridge penalty. With F ≤ `exact_max_features` every coalition
//! is enumerated with its kernel weight, which gives the exact Shapley values of the game
//! v(S) = f(x with only S kept)ₜ; otherwise N coalitions are sampled the way the kernel
//! weighs them — a size k with probability ∝ (F − 1)/(k(F − k)), then a uniform subset of that
//! size — each with weight 1. Features (a square grid, or SLIC superpixels of each image with
//! `segments = "slic"`, whose count F varies per image), shapes and seeding as in
//! [`super::surrogate`].

use super::surrogate::{
    coalition_values, explain_batch, weighted_ridge, FeatureSpec, Segmentation, DEFAULT_COMPACTNESS,
    DEFAULT_N_SEGMENTS,
};
use super::Attribution;
use crate::error::Result;
use crate::model::{Activation, Classifier};
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Weight standing in for the infinite kernel weight of the empty and full coalitions.
const PIN: f64 = 1e6;

/// KernelSHAP settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelShap {
    /// Number of sampled coalitions N (when not enumerating).
    pub samples: usize,
    /// How the image is cut into features: a square grid (default) or SLIC superpixels.
    pub segments: Segmentation,
    /// Grid cell side in pixels (`segments = "grid"` only); unset: about 7 cells along the
    /// shorter side, at least 4 pixels ([`super::surrogate::auto_cell`]).
    pub cell: Option<usize>,
    /// Approximate number of SLIC superpixels (`segments = "slic"` only).
    pub n_segments: usize,
    /// SLIC compactness m (`segments = "slic"` only; see [`slic`](mod@super::slic)).
    pub compactness: f64,
    /// Value of switched-off pixels.
    pub baseline: f32,
    /// Enumerate every coalition (exact Shapley values) when F is at most this.
    pub exact_max_features: usize,
    /// Seed of the sampling (the run's seed unless set).
    #[serde(skip)]
    pub seed: u64,
}

impl Default for KernelShap {
    fn default() -> Self {
        Self {
            samples: 1000,
            segments: Segmentation::Grid,
            cell: None,
            n_segments: DEFAULT_N_SEGMENTS,
            compactness: DEFAULT_COMPACTNESS,
            baseline: 0.0,
            exact_max_features: 12,
            seed: 0,
        }
    }
}

impl KernelShap {
    /// The feature settings.
    pub fn features(&self) -> FeatureSpec {
        let (segments, cell, n_segments, compactness) =
            (self.segments, self.cell, self.n_segments, self.compactness);
        FeatureSpec { segments, cell, n_segments, compactness }
    }
}

/// Binomial coefficient C(n, k) in f64.
fn choose(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

impl Attribution for KernelShap {
    fn name(&self) -> &'static str {
        "kernel_shap"
    }

    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        _act: Activation,
    ) -> Result<Tensor> {
        explain_batch(x, targets, self.seed, &self.features(), |image, target, features, nf, rng| {
            let mut z: Vec<Vec<f32>> = vec![vec![0.0; nf], vec![1.0; nf]];
            let mut weights = vec![PIN, PIN];
            if nf <= self.exact_max_features {
                for mask in 1..(1u64 << nf) - 1 {
                    let zs: Vec<f32> = (0..nf).map(|f| ((mask >> f) & 1) as f32).collect();
                    let k = mask.count_ones() as usize;
                    weights.push((nf - 1) as f64 / (choose(nf, k) * k as f64 * (nf - k) as f64));
                    z.push(zs);
                }
            } else {
                let size_weights: Vec<f64> =
                    (1..nf).map(|k| (nf - 1) as f64 / (k * (nf - k)) as f64).collect();
                let total: f64 = size_weights.iter().sum();
                let mut order: Vec<usize> = (0..nf).collect();
                for _ in 0..self.samples {
                    let mut u = rng.random::<f64>() * total;
                    let mut k = nf - 1;
                    for (i, w) in size_weights.iter().enumerate() {
                        if u < *w {
                            k = i + 1;
                            break;
                        }
                        u -= w;
                    }
                    order.shuffle(rng);
                    let mut zs = vec![0.0; nf];
                    for &f in &order[..k] {
                        zs[f] = 1.0;
                    }
                    z.push(zs);
                    weights.push(1.0);
                }
            }
            let y = coalition_values(model, image, target, features, &z, self.baseline)?;
            weighted_ridge(&z, &y, &weights, 0.0)
        })
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "samples": self.samples, "segments": self.segments, "cell": self.cell.map_or(serde_json::json!("auto"), |c| serde_json::json!(c)),
            "n_segments": self.n_segments, "compactness": self.compactness, "baseline": self.baseline,
            "exact_max_features": self.exact_max_features, "seed": self.seed,
            "features": self.features().describe(),
        })
    }

    fn check(&self, _model: &dyn Classifier) -> Result<()> {
        self.features().check(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::slic::{slic, DEFAULT_ITERATIONS};
    use crate::attribution::surrogate::testing::{assert_half_sums, two_tone, HalfSums};
    use candle_core::Device;

    #[test]
    fn kernel_shap_on_slic_segments_gives_each_segment_its_pixel_sum() {
        // v(S) = logit_t of the image with only the segments in S kept is additive:
        // v(S) = Σ_{f∈S} a_f, a_f the sum of segment f's pixels in the target's half. The
        // Shapley value of an additive game is φ_f = a_f. F ≤ 12, so every coalition is
        // enumerated and the fit is exact.
        let img = two_tone();
        let labels = slic(&img, 8, 16, 8, DEFAULT_COMPACTNESS, DEFAULT_ITERATIONS);
        assert!(*labels.iter().max().unwrap() < 12, "F ≤ 12");
        let shap = KernelShap { segments: Segmentation::Slic, n_segments: 8, ..KernelShap::default() };
        let model = HalfSums::new(8, 16);
        let x = Tensor::from_vec(img, (1, 1, 8, 16), &Device::Cpu).unwrap();
        for target in [0u32, 1] {
            let map = shap.attribute(&model, &x, &[target], Activation::Exact).unwrap();
            assert_half_sums(&map.flatten_all().unwrap().to_vec1::<f32>().unwrap(), &labels, target as usize);
        }
        let params = shap.params();
        assert_eq!((params["segments"].as_str(), params["n_segments"].as_u64()), (Some("slic"), Some(8)));
        assert!(shap.check(&model).is_ok());
        assert!(KernelShap { compactness: -1.0, ..shap }.check(&model).is_err());
    }
}

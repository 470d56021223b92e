//! LIME (Ribeiro, Singh and Guestrin, KDD 2016) on grid or SLIC superpixels.
//!
//! N coalitions z drawn with each feature on with probability ½; weights
//! π(z) = exp(−d(z, 1)² / width²) with d the cosine distance between z and the all-on
//! coalition (d = 1 − √(|z|/F)); a weighted ridge fit of the target logit (λ = `ridge`). The
//! all-on coalition (the image itself) is always among the samples. See [`super::surrogate`]
//! for the features, the fit and the shapes. Differences from Captum 0.9: Captum's default
//! surrogate is a Lasso and its default kernel width 1.0; ours follow the `lime` package's
//! image explainer (ridge, width 0.25). The `lime` package segments with quickshift by
//! default; here the features are a square grid (`segments = "grid"`, the default) or SLIC
//! superpixels of each image (`segments = "slic"`).

use super::surrogate::{
    coalition_values, explain_batch, weighted_ridge, FeatureSpec, Segmentation, DEFAULT_COMPACTNESS,
    DEFAULT_N_SEGMENTS,
};
use super::Attribution;
use crate::error::Result;
use crate::model::{Activation, Classifier};
use candle_core::Tensor;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// LIME settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lime {
    /// Number of sampled coalitions N.
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
    /// Width of the exponential kernel on the cosine distance.
    pub kernel_width: f64,
    /// Ridge penalty λ.
    pub ridge: f64,
    /// Value of switched-off pixels.
    pub baseline: f32,
    /// Seed of the sampling (the run's seed unless set).
    #[serde(skip)]
    pub seed: u64,
}

impl Default for Lime {
    fn default() -> Self {
        Self {
            samples: 1000,
            segments: Segmentation::Grid,
            cell: None,
            n_segments: DEFAULT_N_SEGMENTS,
            compactness: DEFAULT_COMPACTNESS,
            kernel_width: 0.25,
            ridge: 1.0,
            baseline: 0.0,
            seed: 0,
        }
    }
}

impl Lime {
    /// The feature settings.
    pub fn features(&self) -> FeatureSpec {
        let (segments, cell, n_segments, compactness) =
            (self.segments, self.cell, self.n_segments, self.compactness);
        FeatureSpec { segments, cell, n_segments, compactness }
    }
}

impl Attribution for Lime {
    fn name(&self) -> &'static str {
        "lime"
    }

    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        _act: Activation,
    ) -> Result<Tensor> {
        explain_batch(x, targets, self.seed, &self.features(), |image, target, features, nf, rng| {
            let mut z: Vec<Vec<f32>> = vec![vec![1.0; nf]];
            while z.len() < self.samples.max(2) {
                z.push((0..nf).map(|_| if rng.random_bool(0.5) { 1.0 } else { 0.0 }).collect());
            }
            let weights: Vec<f64> = z
                .iter()
                .map(|zs| {
                    let on: f32 = zs.iter().sum();
                    let d = 1.0 - (on as f64 / nf as f64).sqrt();
                    (-(d * d) / (self.kernel_width * self.kernel_width)).exp()
                })
                .collect();
            let y = coalition_values(model, image, target, features, &z, self.baseline)?;
            weighted_ridge(&z, &y, &weights, self.ridge)
        })
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "samples": self.samples, "segments": self.segments, "cell": self.cell.map_or(serde_json::json!("auto"), |c| serde_json::json!(c)),
            "n_segments": self.n_segments, "compactness": self.compactness,
            "kernel_width": self.kernel_width, "ridge": self.ridge, "baseline": self.baseline,
            "seed": self.seed, "features": self.features().describe(),
            "kernel": "exp(-cosine_distance^2 / width^2)",
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
    fn lime_on_slic_segments_puts_all_mass_on_the_target_half() {
        // The model's logit 0 is the sum of the left half's pixels, so the target logit of a
        // coalition is exactly linear in z: y(z) = Σ_f z_f·a_f with a_f the sum of segment f's
        // left-half pixels. With no penalty the weighted least-squares fit returns β = a
        // whatever the kernel weights: a segment inside the right half gets 0, one inside the
        // left half the sum of its pixels. Logit 1 (the right half) mirrors it.
        let img = two_tone();
        let labels = slic(&img, 8, 16, 8, DEFAULT_COMPACTNESS, DEFAULT_ITERATIONS);
        // SLIC follows the step between the halves: no segment crosses column 7|8.
        for p in 0..128 {
            for q in 0..128 {
                assert!(labels[p] != labels[q] || (p % 16 < 8) == (q % 16 < 8), "segment crosses");
            }
        }
        assert!(labels.iter().max().unwrap() + 1 >= 4, "too few segments: {labels:?}");
        let lime =
            Lime { samples: 300, segments: Segmentation::Slic, n_segments: 8, ridge: 0.0, ..Lime::default() };
        let model = HalfSums::new(8, 16);
        let x = Tensor::from_vec(img, (1, 1, 8, 16), &Device::Cpu).unwrap();
        for target in [0u32, 1] {
            let map = lime.attribute(&model, &x, &[target], Activation::Exact).unwrap();
            assert_half_sums(&map.flatten_all().unwrap().to_vec1::<f32>().unwrap(), &labels, target as usize);
        }
        let params = lime.params();
        assert_eq!((params["segments"].as_str(), params["n_segments"].as_u64()), (Some("slic"), Some(8)));
        assert_eq!(params["compactness"].as_f64(), Some(DEFAULT_COMPACTNESS));
        assert_eq!(Lime::default().params()["segments"], "grid");
    }
}

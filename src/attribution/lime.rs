//! LIME (Ribeiro, Singh and Guestrin, KDD 2016) on grid superpixels.
//!
//! N coalitions z drawn with each feature on with probability ½; weights
//! π(z) = exp(−d(z, 1)² / width²) with d the cosine distance between z and the all-on
//! coalition (d = 1 − √(|z|/F)); a weighted ridge fit of the target logit (λ = `ridge`). The
//! all-on coalition (the image itself) is always among the samples. See [`super::surrogate`]
//! for the features, the fit and the shapes. Differences from Captum 0.9: Captum's default
//! surrogate is a Lasso and its default kernel width 1.0; ours follow the `lime` package's
//! image explainer (ridge, width 0.25).

use super::surrogate::{coalition_values, explain_batch, weighted_ridge};
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
    /// Superpixel side in pixels (square grid).
    pub cell: usize,
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
        Self { samples: 1000, cell: 4, kernel_width: 0.25, ridge: 1.0, baseline: 0.0, seed: 0 }
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
        explain_batch(x, targets, self.seed, self.cell, |image, target, features, nf, rng| {
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
            "samples": self.samples, "cell": self.cell, "kernel_width": self.kernel_width,
            "ridge": self.ridge, "baseline": self.baseline, "seed": self.seed,
            "features": "square grid", "kernel": "exp(-cosine_distance^2 / width^2)",
        })
    }
}

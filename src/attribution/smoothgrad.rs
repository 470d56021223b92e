//! SmoothGrad (Smilkov et al. 2017): the mean gradient over noisy copies of the input.
//!
//! SG(x) = (1/S) Σₛ ∇ logit_t(x + εₛ), εₛ ~ N(0, σ²) per pixel, σ = `sigma` × (max − min of
//! the input range; 1 for pixels in [0,1]). The noisy copies are not clipped (as in Captum).
//! The noise of an image is drawn from a stream keyed by the seed and the image's exact pixel
//! values, so a map does not depend on the batch it was computed in. Shapes: [B,C,H,W] →
//! [B,C,H,W]; the B·S noisy copies are evaluated in chunks.

use super::{target_gradient, Attribution};
use crate::error::Result;
use crate::model::{Activation, Classifier};
use crate::seed;
use candle_core::Tensor;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// SmoothGrad over the plain gradient.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmoothGrad {
    /// Number of noisy samples S.
    pub samples: usize,
    /// Noise standard deviation as a fraction of the input range.
    pub sigma: f64,
    /// Seed of the noise (the run's seed unless set).
    #[serde(skip)]
    pub seed: u64,
}

impl Default for SmoothGrad {
    fn default() -> Self {
        Self { samples: 50, sigma: 0.15, seed: 0 }
    }
}

impl SmoothGrad {
    /// The noise [S,B,C,H,W] for images `x` [B,C,H,W].
    pub fn noise(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let b = dims[0];
        let per = dims[1] * dims[2] * dims[3];
        let flat = x.flatten_from(1)?.to_vec2::<f32>()?;
        let s = self.samples;
        let sigma = self.sigma; // input range is [0,1]
        let mut v = vec![0f32; s * b * per];
        for (i, img) in flat.iter().enumerate() {
            let mut rng = seed::rng(seed::mix(self.seed, seed::hash_f32s(img)));
            for k in 0..s {
                let row = &mut v[(k * b + i) * per..(k * b + i + 1) * per];
                for p in row.iter_mut() {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    *p = (z * sigma) as f32;
                }
            }
        }
        Ok(Tensor::from_vec(v, (s, b, dims[1], dims[2], dims[3]), x.device())?)
    }
}

impl Attribution for SmoothGrad {
    fn name(&self) -> &'static str {
        "smoothgrad"
    }

    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (b, s) = (dims[0], self.samples);
        let noisy = self.noise(x)?.broadcast_add(&x.unsqueeze(0)?)?;
        let flat = noisy.reshape((s * b, dims[1], dims[2], dims[3]))?;
        let reps: Vec<u32> = (0..s).flat_map(|_| targets.iter().copied()).collect();
        let g = target_gradient(model, &flat, &reps, act)?;
        Ok(g.reshape((s, b, dims[1], dims[2], dims[3]))?.mean(0)?)
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "samples": self.samples, "sigma": self.sigma, "seed": self.seed })
    }
}

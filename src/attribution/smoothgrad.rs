//! The noise tunnel: SmoothGrad, SmoothGrad² and VarGrad over any method.
//!
//! For S noisy copies x + εₛ, εₛ ~ N(0, σ²) per pixel, σ = `sigma` × (max − min of the input
//! range; 1 for pixels in [0,1]), and a wrapped method h (the plain gradient by default):
//! * `smoothgrad` (Smilkov et al. 2017): (1/S) Σₛ h(x + εₛ);
//! * `smoothgrad_sq`: (1/S) Σₛ h(x + εₛ)²;
//! * `vargrad` (Adebayo et al. 2018): (1/S) Σₛ h(x + εₛ)² − ((1/S) Σₛ h(x + εₛ))² (the
//!   population variance, as Captum computes it).
//!
//! The noisy copies are not clipped (as in Captum). The noise of an image is drawn from a
//! stream keyed by the seed and the image's exact pixel values, so a map does not depend on
//! the batch it was computed in. Shapes: [B,C,H,W] → [B,C,H,W] (Grad-CAM wrapped: [B,1,H,W]);
//! the B·S noisy copies go to the wrapped method, which evaluates them in chunks.

use super::{Attribution, Gradient};
use crate::error::Result;
use crate::model::{Activation, Classifier};
use crate::seed;
use candle_core::Tensor;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Settings shared by the three noise-tunnel methods (`methods.smoothgrad` in a config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoiseSettings {
    /// Number of noisy samples S.
    pub samples: usize,
    /// Noise standard deviation as a fraction of the input range.
    pub sigma: f64,
    /// The wrapped method's name (any method that is not itself a noise tunnel).
    pub wrap: String,
}

impl Default for NoiseSettings {
    fn default() -> Self {
        Self { samples: 50, sigma: 0.15, wrap: "gradient".into() }
    }
}

/// How the S maps of the noisy copies are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Their mean (SmoothGrad).
    Mean,
    /// The mean of their squares (SmoothGrad²).
    MeanSquare,
    /// Their population variance (VarGrad).
    Variance,
}

/// A noise tunnel over a wrapped method.
pub struct NoiseTunnel {
    /// Samples, σ and the wrapped method's name.
    pub settings: NoiseSettings,
    /// How the noisy maps are combined.
    pub aggregate: Aggregate,
    /// Seed of the noise.
    pub seed: u64,
    /// The wrapped method.
    pub inner: Arc<dyn Attribution>,
}

impl NoiseTunnel {
    /// SmoothGrad over the plain gradient with default settings.
    pub fn smoothgrad(seed: u64) -> Self {
        Self::new(Aggregate::Mean, NoiseSettings::default(), seed, Arc::new(Gradient))
    }

    /// A noise tunnel with the given pieces.
    pub fn new(
        aggregate: Aggregate,
        settings: NoiseSettings,
        seed: u64,
        inner: Arc<dyn Attribution>,
    ) -> Self {
        Self { settings, aggregate, seed, inner }
    }

    /// The noise [S,B,C,H,W] for images `x` [B,C,H,W].
    pub fn noise(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let b = dims[0];
        let per = dims[1] * dims[2] * dims[3];
        let flat = x.flatten_from(1)?.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        let s = self.settings.samples;
        let sigma = self.settings.sigma; // input range is [0,1]
        let mut v = vec![0f32; s * b * per];
        for (i, img) in flat.iter().enumerate() {
            let mut rng = seed::rng(seed::mix(self.seed, seed::hash_f32s(img)));
            for k in 0..s {
                for p in &mut v[(k * b + i) * per..(k * b + i + 1) * per] {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    *p = (z * sigma) as f32;
                }
            }
        }
        Ok(Tensor::from_vec(v, (s, b, dims[1], dims[2], dims[3]), x.device())?.to_dtype(x.dtype())?)
    }

    /// The S·B noisy copies of `x` [B,C,H,W] with noise drawn from `anchor`, sample-major
    /// [S·B,C,H,W] (row s·B + i is xᵢ + εₛᵢ), and their targets.
    fn noisy(&self, x: &Tensor, anchor: &Tensor, targets: &[u32]) -> Result<(Tensor, Vec<u32>)> {
        let (b, c, h, w) = x.dims4()?;
        let s = self.settings.samples;
        let noisy = self.noise(anchor)?.broadcast_add(&x.unsqueeze(0)?)?;
        let reps = (0..s).flat_map(|_| targets.iter().copied()).collect();
        Ok((noisy.reshape((s * b, c, h, w))?, reps))
    }

    /// The tunnel's map [B,…] from the wrapped maps `maps` [S·B,…] of the noisy copies.
    fn aggregate(&self, maps: &Tensor, b: usize) -> Result<Tensor> {
        let shape = [&[self.settings.samples, b][..], &maps.dims()[1..]].concat();
        let maps = maps.reshape(shape)?;
        Ok(match self.aggregate {
            Aggregate::Mean => maps.mean(0)?,
            Aggregate::MeanSquare => maps.sqr()?.mean(0)?,
            Aggregate::Variance => (maps.sqr()?.mean(0)? - maps.mean(0)?.sqr()?)?,
        })
    }
}

impl Attribution for NoiseTunnel {
    fn reads_derivatives(&self) -> bool {
        self.inner.reads_derivatives()
    }

    fn name(&self) -> &'static str {
        match self.aggregate {
            Aggregate::Mean => "smoothgrad",
            Aggregate::MeanSquare => "smoothgrad_sq",
            Aggregate::Variance => "vargrad",
        }
    }

    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor> {
        self.attribute_anchored(model, x, x, targets, act)
    }

    fn differentiable(&self) -> bool {
        self.inner.differentiable()
    }

    fn attribute_anchored(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        anchor: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor> {
        let (flat, reps) = self.noisy(x, anchor, targets)?;
        self.aggregate(&self.inner.attribute(model, &flat, &reps, act)?, x.dim(0)?)
    }

    fn passes_per_image(&self) -> usize {
        self.settings.samples.max(1) * self.inner.passes_per_image()
    }

    fn has_map_vjp(&self) -> bool {
        self.inner.has_map_vjp()
    }

    /// The noise is fixed by the anchor, so with mₖ the wrapped map at x + nₖ and J its
    /// vector–Jacobian product: ∇ₓ⟨mean mₖ, v⟩ = mean Jₖ(v); ∇ₓ⟨mean mₖ², v⟩ = mean Jₖ(2mₖ ⊙ v);
    /// ∇ₓ⟨mean mₖ² − m̄², v⟩ = mean Jₖ(2(mₖ − m̄) ⊙ v). The S·B products go to the wrapped
    /// method [`Classifier::rows_per_pass`] rows at a time, each with its fixed vector.
    fn map_then_vjp(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        anchor: &Tensor,
        targets: &[u32],
        act: Activation,
        loss_grad: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (flat, reps) = self.noisy(x, anchor, targets)?;
        let maps = self.inner.attribute(model, &flat, &reps, act)?;
        let v = loss_grad(&self.aggregate(&maps, x.dim(0)?)?)?;
        // Per noisy copy [S,B,…], like the maps.
        let shape = [&[self.settings.samples][..], v.dims()].concat();
        let per_sample = v.unsqueeze(0)?.broadcast_as(shape.as_slice())?;
        let u = match self.aggregate {
            Aggregate::Mean => per_sample.contiguous()?,
            Aggregate::MeanSquare | Aggregate::Variance => {
                let maps = maps.reshape(shape.as_slice())?;
                let centred = match self.aggregate {
                    Aggregate::Variance => maps.broadcast_sub(&maps.mean_keepdim(0)?)?,
                    _ => maps,
                };
                centred.mul(&per_sample)?.affine(2.0, 0.0)?
            }
        };
        let u = u.reshape(maps.shape())?;
        let parts = super::row_passes(flat.dim(0)?, &reps, super::rows_for(model, &flat)?, |start, len| {
            let (xs, us) = (flat.narrow(0, start, len)?, u.narrow(0, start, len)?);
            let ts = &reps[start..start + len];
            self.inner.map_then_vjp(model, &xs, &xs, ts, act, &mut |_| Ok(us.clone()))
        })?;
        let j = super::cat_rows(parts)?;
        Ok(j.reshape([&[self.settings.samples][..], x.dims()].concat())?.mean(0)?)
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "samples": self.settings.samples, "sigma": self.settings.sigma, "seed": self.seed,
            "wrap": self.inner.name(), "wrapped_params": self.inner.params(),
        })
    }

    fn check(&self, model: &dyn Classifier) -> Result<()> {
        self.inner.check(model)
    }
}

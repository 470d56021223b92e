//! Grad-CAM (Selvaraju et al., ICCV 2017) and guided Grad-CAM.
//!
//! For a layer with activations A [B,K,h,w]: weights αₖ = spatial mean of ∂ logit_t / ∂Aₖ;
//! map = relu(Σₖ αₖ Aₖ) [B,h,w], upsampled bilinearly to the input size with
//! align_corners = false (PyTorch's `F.interpolate(..., mode="bilinear")`), [B,1,H,W].
//! Default layer: the last conv layer's output after its nonlinearity, before pooling
//! (`conv2_relu` in `fmnist_cnn`); `conv2` takes the pre-activation instead.
//! Guided Grad-CAM = guided backprop ⊙ the upsampled Grad-CAM map, [B,C,H,W].
//!
//! The upsampling is a fixed linear map per axis (U_H [H,h], U_W [W,w]; map ↦ U_H·map·U_Wᵀ), so
//! the whole map stays a differentiable function of the input through the surrogate.

use super::{target_backward, Attribution};
use crate::error::{Error, Result};
use crate::model::{one_hot, Activation, Classifier, ReluRule};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// The bilinear interpolation matrix [out,inp] with align_corners = false: output index o
/// samples source coordinate (o + ½)·inp/out − ½, clamped at 0, between its two neighbours.
pub fn bilinear_matrix(out: usize, inp: usize, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; out * inp];
    let scale = inp as f64 / out as f64;
    for o in 0..out {
        let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(inp - 1);
        let i1 = (i0 + 1).min(inp - 1);
        let frac = (src - i0 as f64) as f32;
        m[o * inp + i0] += 1.0 - frac;
        m[o * inp + i1] += frac;
    }
    Ok(Tensor::from_vec(m, (out, inp), device)?)
}

/// Grad-CAM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GradCam {
    /// The layer whose activations are weighted (see [`Classifier::layers`]).
    pub layer: String,
}

impl Default for GradCam {
    fn default() -> Self {
        Self { layer: "conv2_relu".into() }
    }
}

impl GradCam {
    /// The map [B,1,H,W] (before any multiplication with guided backprop).
    pub fn cam(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor> {
        let (b, _, hh, ww) = x.dims4()?;
        let g = one_hot(targets, model.num_classes(), model.device())?.to_dtype(x.dtype())?;
        let (a, grad) = model.layer_gradient(x, &g, act, &self.layer)?;
        let (_, _, h, w) = a.dims4()?;
        if grad.dims() != a.dims() {
            return Err(Error::Invalid(format!(
                "layer `{}`: gradient and activation shapes differ",
                self.layer
            )));
        }
        let alpha = grad.mean_keepdim(3)?.mean_keepdim(2)?; // [B,K,1,1]
        let cam = a.broadcast_mul(&alpha)?.sum(1)?.relu()?; // [B,h,w]
        let dev = x.device();
        let uh = bilinear_matrix(hh, h, dev)?.to_dtype(x.dtype())?.broadcast_left(b)?;
        let uw = bilinear_matrix(ww, w, dev)?.to_dtype(x.dtype())?.t()?.broadcast_left(b)?;
        let up = uh.matmul(&cam.contiguous()?)?.matmul(&uw.contiguous()?)?;
        Ok(up.reshape((b, 1, hh, ww))?)
    }
}

impl Attribution for GradCam {
    fn name(&self) -> &'static str {
        "grad_cam"
    }

    fn differentiable(&self) -> bool {
        true
    }

    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor> {
        super::in_passes(x, targets, |xs, ts| self.cam(model, xs, ts, act))
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "layer": self.layer, "upsampling": "bilinear, align_corners = false" })
    }

    fn check(&self, model: &dyn Classifier) -> Result<()> {
        if model.layers().contains(&self.layer.as_str()) {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "Grad-CAM layer `{}`: model `{}` has no such layer (known: {})",
            self.layer,
            model.name(),
            model.layers().join(", ")
        )))
    }
}

/// Guided Grad-CAM: guided backprop ⊙ upsampled Grad-CAM.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuidedGradCam {
    /// The Grad-CAM part's settings.
    #[serde(flatten)]
    pub cam: GradCam,
}

impl Attribution for GuidedGradCam {
    fn name(&self) -> &'static str {
        "guided_grad_cam"
    }

    fn differentiable(&self) -> bool {
        true
    }

    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor> {
        let guided = target_backward(model, x, targets, act, ReluRule::Guided)?;
        let cam = super::in_passes(x, targets, |xs, ts| self.cam.cam(model, xs, ts, act))?;
        Ok(guided.broadcast_mul(&cam)?)
    }

    fn params(&self) -> serde_json::Value {
        self.cam.params()
    }

    fn check(&self, model: &dyn Classifier) -> Result<()> {
        self.cam.check(model)
    }
}

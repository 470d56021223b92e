//! Ablation-CAM (Desai and Ramaswamy, WACV 2020): each channel of a layer weighted by how much
//! of the target logit is lost when that channel is set to zero.
//!
//! Per image with activations A [K,h,w] at the layer and target logit y: y_k = the target
//! logit with channel k of the layer zeroed (only the network after the layer runs again,
//! [`Classifier::ablated_logits`], all channels batched); weights w_k = (y − y_k)/y; the map
//! relu(Σ_k w_k A_k), upsampled bilinearly to the input (align_corners = false) as Grad-CAM's,
//! [B,1,H,W]. As pytorch-grad-cam 1.5.7's `AblationCAM` (every channel ablated, its default)
//! where the layer's activations reach exactly 0 (after a ReLU: most layers one would pick);
//! where they do not, pytorch-grad-cam sets the channel to its minimum − 10⁷ (lower by another
//! 10⁷ for each further row of its batch) instead of zero, which is not followed here: zero is
//! the paper's ablation. Not differentiable: under attacks it is measured by transfer.

use super::gradcam::{bilinear_weights, cam_layer, check_cam_layer, upsample};
use super::Attribution;
use crate::error::{Error, Result};
use crate::model::{flat_f32, one_hot, Activation, Classifier};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// Ablation-CAM on a layer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AblationCam {
    /// The layer (see [`Classifier::layers`]); empty: the model's default layer.
    pub layer: String,
}

impl AblationCam {
    /// The channel weights (y − y_k)/y of image `x` [1,C,H,W] for class `target`, with `k`
    /// channels at `layer`.
    fn weights(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        target: u32,
        (layer, k): (&str, usize),
        act: Activation,
    ) -> Result<Vec<f64>> {
        let logit = |l: &Tensor| -> Result<Vec<f32>> {
            flat_f32(&l.narrow(1, target as usize, 1)?.to_dtype(DType::F32)?)
        };
        let y = f64::from(logit(&model.logits(x, act)?)?[0]);
        let channels: Vec<usize> = (0..k).collect();
        let ablated = model.ablated_logits(x, layer, &channels, act)?.ok_or_else(|| {
            Error::Invalid(format!("ablation_cam: model `{}` cannot re-run a part of itself", model.name()))
        })?;
        Ok(logit(&ablated)?.iter().map(|&yk| (y - f64::from(yk)) / y).collect())
    }

    /// The maps [B,1,H,W] of one pass's images.
    fn maps(&self, model: &dyn Classifier, x: &Tensor, targets: &[u32], act: Activation) -> Result<Tensor> {
        let (b, _, hh, ww) = x.dims4()?;
        let layer = cam_layer(self.name(), &self.layer, model)?;
        let seed = one_hot(targets, model.num_classes(), model.device())?.to_dtype(x.dtype())?;
        let (a, _) = model.layer_gradient(x, &seed, act, &layer)?;
        let (_, k, h, w) = a.dims4()?;
        let a = flat_f32(&a.to_dtype(DType::F32)?)?;
        let (uh, uw) = (bilinear_weights(hh, h), bilinear_weights(ww, w));
        let mut out = vec![0f32; b * hh * ww];
        for (i, up) in out.chunks_exact_mut(hh * ww).enumerate() {
            let weights = self.weights(model, &x.narrow(0, i, 1)?, targets[i], (&layer, k), act)?;
            let mut cam = vec![0f32; h * w];
            for (ak, &wk) in a[i * k * h * w..][..k * h * w].chunks_exact(h * w).zip(&weights) {
                cam.iter_mut().zip(ak).for_each(|(m, &v)| *m += wk as f32 * v);
            }
            cam.iter_mut().for_each(|v| *v = v.max(0.0));
            upsample(&cam, w, &uh, &uw, up);
        }
        Ok(Tensor::from_vec(out, (b, 1, hh, ww), x.device())?.to_dtype(x.dtype())?)
    }
}

impl Attribution for AblationCam {
    fn name(&self) -> &'static str {
        "ablation_cam"
    }

    fn differentiable(&self) -> bool {
        false
    }

    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor> {
        super::in_passes(model, x, targets, |xs, ts| self.maps(model, xs, ts, act))
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "layer": self.layer, "ablation": "channel set to 0, every channel" })
    }

    fn check(&self, model: &dyn Classifier) -> Result<()> {
        check_cam_layer(self.name(), &self.layer, model)
    }
}

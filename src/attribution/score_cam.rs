//! Score-CAM (Wang et al., CVPR workshops 2020): each channel of a layer weighted by how much
//! the target logit keeps when the input is masked by that channel.
//!
//! Per image x [C,H,W] with activations A [K,h,w] at the layer: each channel A_k upsampled to
//! the input (bilinear with align_corners = true, as pytorch-grad-cam's `UpsamplingBilinear2d`)
//! and scaled to [0, 1] by its own minimum and maximum (M_k = (U_k − min)/(max − min + 1e-8));
//! s_k = the target logit of x ⊙ M_k (one forward pass per channel, batched); weights
//! α = softmax(s) over the channels; the map relu(Σ_k α_k A_k), upsampled bilinearly to the
//! input (align_corners = false) as Grad-CAM's, [B,1,H,W]. As pytorch-grad-cam 1.5.7's
//! `ScoreCAM`. K forward passes per image (512 at resnet18's `layer4`): the costliest CAM.
//! The pass to the layer, rectification and upsampling are [`super::forward_cam`]'s.

use super::forward_cam::{target_logits, weighted_sum, LayerImage, LayerMap};
use super::gradcam::{bilinear_weights, upsample};
use crate::error::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// Score-CAM on a layer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreCam {
    /// The layer (see [`Classifier::layers`]); empty: the model's default layer.
    pub layer: String,
}

impl LayerMap for ScoreCam {
    fn name(&self) -> &'static str {
        "score_cam"
    }

    fn layer(&self) -> &str {
        &self.layer
    }

    fn map(&self, img: &LayerImage) -> Result<Vec<f32>> {
        let (model, x, a, (k, h, w)) = (img.model, &img.x, img.a, img.khw);
        let (_, c, hh, ww) = x.dims4()?;
        let (ch, cw) = (bilinear_weights(hh, h, true), bilinear_weights(ww, w, true));
        let mut masks = vec![0f32; k * hh * ww];
        for (ak, m) in a.chunks_exact(h * w).zip(masks.chunks_exact_mut(hh * ww)) {
            upsample(ak, w, &ch, &cw, m);
            let (lo, hi) =
                m.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, u), &v| (l.min(v), u.max(v)));
            m.iter_mut().for_each(|v| *v = (*v - lo) / (hi - lo + 1e-8));
        }
        // x ⊙ M_k for every channel k: [K, C, H, W], scored in the model's own row chunks.
        let masks = Tensor::from_vec(masks, (k, 1, hh, ww), x.device())?.to_dtype(x.dtype())?;
        let masked = masks.broadcast_mul(&x.broadcast_as((k, c, hh, ww))?)?;
        let rows = super::rows_for(model, &masked)?.max(1);
        let mut scores = Vec::with_capacity(k);
        for start in (0..k).step_by(rows) {
            let logits = model.logits(&masked.narrow(0, start, rows.min(k - start))?, img.act)?;
            scores.extend(target_logits(&logits, img.target)?);
        }
        // Softmax over the channels (in f64), then the weighted sum.
        let top = scores.iter().fold(f64::NEG_INFINITY, |m, &s| m.max(f64::from(s)));
        let e: Vec<f64> = scores.iter().map(|&s| (f64::from(s) - top).exp()).collect();
        let total: f64 = e.iter().sum();
        Ok(weighted_sum(a, e.iter().map(|&ek| (ek / total) as f32), h * w))
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "layer": self.layer,
            "masks": "bilinear, align_corners = true, min-max per channel",
            "weights": "softmax of the target logit over channels"
        })
    }
}

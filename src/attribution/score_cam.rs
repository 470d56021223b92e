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

use super::forward_cam::{weighted_sum, LayerMap};
use super::gradcam::upsample;
use crate::error::Result;
use crate::model::{flat_f32, Activation, Classifier};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// Score-CAM on a layer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreCam {
    /// The layer (see [`Classifier::layers`]); empty: the model's default layer.
    pub layer: String,
}

/// The bilinear interpolation matrix [out, inp] with align_corners = true: output index o
/// samples source coordinate o·(inp − 1)/(out − 1), row-major.
fn corner_weights(out: usize, inp: usize) -> Vec<f32> {
    let mut m = vec![0f32; out * inp];
    let scale = if out > 1 { (inp - 1) as f64 / (out - 1) as f64 } else { 0.0 };
    for o in 0..out {
        let src = o as f64 * scale;
        let i0 = (src.floor() as usize).min(inp - 1);
        let i1 = (i0 + 1).min(inp - 1);
        let frac = (src - i0 as f64) as f32;
        m[o * inp + i0] += 1.0 - frac;
        m[o * inp + i1] += frac;
    }
    m
}

impl LayerMap for ScoreCam {
    fn name(&self) -> &'static str {
        "score_cam"
    }

    fn layer(&self) -> &str {
        &self.layer
    }

    fn map(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        target: u32,
        _layer: &str,
        a: &[f32],
        (k, h, w): (usize, usize, usize),
        act: Activation,
    ) -> Result<Vec<f32>> {
        let (_, c, hh, ww) = x.dims4()?;
        let (ch, cw) = (corner_weights(hh, h), corner_weights(ww, w));
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
            let logits = model.logits(&masked.narrow(0, start, rows.min(k - start))?, act)?;
            scores.extend(flat_f32(&logits.narrow(1, target as usize, 1)?.to_dtype(DType::F32)?)?);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corner_weights_hit_both_ends() {
        // 2 → 5 with align_corners: sources 0, 0.25, 0.5, 0.75, 1.
        let m = corner_weights(5, 2);
        let want = [1.0, 0.0, 0.75, 0.25, 0.5, 0.5, 0.25, 0.75, 0.0, 1.0];
        assert!(m.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-7), "{m:?}");
        assert_eq!(corner_weights(3, 1), vec![1.0; 3]);
    }
}

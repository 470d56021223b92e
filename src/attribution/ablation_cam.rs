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
//! the paper's ablation. The pass to the layer, rectification and upsampling are
//! [`super::forward_cam`]'s.

use super::forward_cam::{target_logits, weighted_sum, LayerImage, LayerMap};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Ablation-CAM on a layer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AblationCam {
    /// The layer (see [`Classifier::layers`]); empty: the model's default layer.
    pub layer: String,
}

impl LayerMap for AblationCam {
    fn name(&self) -> &'static str {
        "ablation_cam"
    }

    fn layer(&self) -> &str {
        &self.layer
    }

    /// Σ_k w_k A_k with w_k = (y − y_k)/y.
    fn map(&self, img: &LayerImage) -> Result<Vec<f32>> {
        let (k, h, w) = img.khw;
        let y = f64::from(img.logit);
        let channels: Vec<usize> = (0..k).collect();
        let ablated = img.model.ablated_logits(&img.x, img.layer, &channels, img.act)?.ok_or_else(|| {
            Error::Invalid(format!(
                "ablation_cam: model `{}` cannot re-run a part of itself",
                img.model.name()
            ))
        })?;
        let weights =
            target_logits(&ablated, img.target)?.into_iter().map(|yk| ((y - f64::from(yk)) / y) as f32);
        Ok(weighted_sum(img.a, weights, h * w))
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "layer": self.layer, "ablation": "channel set to 0, every channel" })
    }
}

//! Deletion (Petsiuk, Das and Saenko, "RISE: Randomized input sampling for explanation of
//! black-box models", BMVC 2018): remove the pixels the map ranks first and watch the class's
//! probability fall. A faithful map makes it fall fast: lower area is better.
//!
//! As RISE's `CausalMetric(model, 'del', step, substrate_fn=torch.zeros_like)` (see
//! [`super::causal`]): the curve starts at the clean image's probability and ends at the
//! all-baseline image's, n + 1 points; the score is RISE's normalised `auc`. Defaults: a
//! baseline of 0 (RISE's `zeros_like`, black on \[0,1\] pixels) and one image row per step
//! (RISE: 224 pixels per step at 224×224). The probability is the softmax of the logits (RISE
//! wraps its models in `nn.Softmax`). Differences: the class is the caller's, not the model's
//! argmax; ties in the map go in index order (RISE: numpy's unspecified order).
//!
//! Shapes: see [`super`].

use super::causal::{play, resolve_step};
use super::perturb::Images;
use super::{Baseline, Batch, Better, Curve, Measure};
use crate::error::Result;
use crate::model::Classifier;
use serde::{Deserialize, Serialize};

/// Deletion settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Deletion {
    /// Pixels removed per step; unset: the image's width (one row).
    pub step: Option<usize>,
    /// What removed pixels become (default 0).
    pub baseline: Baseline,
}

impl Default for Deletion {
    fn default() -> Self {
        Self { step: None, baseline: Baseline::Value(0.0) }
    }
}

impl Measure for Deletion {
    fn name(&self) -> &'static str {
        "deletion"
    }

    fn better(&self) -> Better {
        Better::Lower
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "step": self.step.map_or(serde_json::json!("auto"), |s| serde_json::json!(s)),
            "baseline": self.baseline,
        })
    }

    fn evaluate(&self, model: &dyn Classifier, batch: &Batch) -> Result<Vec<Curve>> {
        let images = Images::read(model, batch)?;
        let step = resolve_step(self.step, &images)?;
        let finish: Vec<Vec<f32>> = images.pixels.iter().map(|p| self.baseline.fill(p)).collect();
        play(model, &images, (&images.pixels[..], &finish[..]), (batch.maps, batch.classes), step)
    }
}

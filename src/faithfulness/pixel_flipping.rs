//! Pixel flipping (Bach et al., "On pixel-wise explanations for non-linear classifier
//! decisions by layer-wise relevance propagation", PLoS ONE 2015), as Quantus 0.6.0's
//! `PixelFlipping` computes it: flip the pixels the map ranks first to a baseline,
//! `features_in_step` at a time, and record the class's probability after each step. A
//! faithful map makes it fall fast: lower area is better (Quantus' `score_direction`).
//!
//! The curve has n = ⌈H·W / features_in_step⌉ points, the probability *after* steps 1..n (no
//! point for the clean image, as Quantus), at the fractions min(i·step, H·W)/(H·W); the score is
//! Quantus' `return_auc_per_sample` value, `np.trapz(curve, dx=1)` ([`super::trapezoid`], not
//! divided by the length).
//!
//! Quantus defaults followed: `features_in_step = 1`; `perturb_func =
//! batch_baseline_replacement_by_indices` with `perturb_baseline = "black"`, which is the image's
//! minimum ([`Baseline::ImageMin`]), not 0; `softmax = True` (the probability, not the logit);
//! `abs = False` (the map's values are ranked as given: `argsort(-a)`); `normalise = True` with
//! `normalise_by_max`, which divides the whole batch of maps by its largest |value|, a positive
//! constant that leaves the order unchanged and is therefore not applied here.
//!
//! Deliberate differences: Quantus broadcasts a [B,1,H,W] map to the image's C channels and
//! ranks the C·H·W values, so with C > 1 its `features_in_step` counts channel values; here a
//! step flips whole pixels, every channel at once, so `features_in_step = k` here is Quantus'
//! `features_in_step = C·k` (the same pixels flip when the C copies of a pixel's value sort
//! next to each other, which they do when no two pixels tie). Quantus refuses a step that does
//! not divide the feature count; here the last step is then short. Ties in the map go in index
//! order (Quantus: numpy's unspecified `argsort` order).
//!
//! Shapes: see [`super`].

use super::perturb::{pixel_curves, step_counts, Images};
use super::{trapezoid, Baseline, Batch, Better, Curve, Measure};
use crate::error::{Error, Result};
use crate::model::Classifier;
use serde::{Deserialize, Serialize};

/// Pixel-flipping settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PixelFlipping {
    /// Pixels flipped per step (Quantus' `features_in_step`, default 1).
    pub features_in_step: usize,
    /// What flipped pixels become (Quantus' "black": the image's minimum).
    pub baseline: Baseline,
}

impl Default for PixelFlipping {
    fn default() -> Self {
        Self { features_in_step: 1, baseline: Baseline::ImageMin }
    }
}

impl Measure for PixelFlipping {
    fn name(&self) -> &'static str {
        "pixel_flipping"
    }

    fn better(&self) -> Better {
        Better::Lower
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "features_in_step": self.features_in_step, "baseline": self.baseline })
    }

    fn evaluate(&self, model: &dyn Classifier, batch: &Batch) -> Result<Vec<Curve>> {
        let step = self.features_in_step;
        if step == 0 {
            return Err(Error::Invalid("pixel_flipping: features_in_step must be at least 1".into()));
        }
        let images = Images::read(model, batch)?;
        // Quantus records no point before the first step.
        let counts = step_counts(images.area(), step, 1);
        let finish: Vec<Vec<f32>> = images.pixels.iter().map(|p| self.baseline.fill(p)).collect();
        pixel_curves(
            model,
            &images,
            (&images.pixels, &finish),
            (batch.maps, batch.classes),
            &counts,
            trapezoid,
        )
    }
}

//! Insertion (Petsiuk, Das and Saenko, "RISE: Randomized input sampling for explanation of
//! black-box models", BMVC 2018): start from a blurred copy of the image, put back the pixels
//! the map ranks first and watch the class's probability rise. A faithful map makes it rise
//! fast: higher area is better.
//!
//! As RISE's `CausalMetric(model, 'ins', step, substrate_fn=blur)` (see [`super::causal`]):
//! the curve starts at the blurred image's probability and ends at the clean image's, n + 1
//! points; the score is RISE's normalised `auc`. Defaults: RISE's blur (`klen = 11, ksig = 5`,
//! [`Blur`]) and one image row per step (RISE: 224 pixels per step at 224×224). The
//! probability is the softmax of the logits. Differences: the class is the caller's, not the
//! model's argmax; ties in the map go in index order (RISE: numpy's unspecified order).
//!
//! Shapes: see [`super`].

use super::causal::{play, resolve_step};
use super::perturb::Images;
use super::{Batch, Better, Blur, Curve, Measure};
use crate::error::Result;
use crate::model::Classifier;
use serde::{Deserialize, Serialize};

/// Insertion settings.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Insertion {
    /// Pixels inserted per step; unset: the image's width (one row).
    pub step: Option<usize>,
    /// The blur of the starting canvas.
    pub blur: Blur,
}

impl Measure for Insertion {
    fn name(&self) -> &'static str {
        "insertion"
    }

    fn better(&self) -> Better {
        Better::Higher
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "step": self.step.map_or(serde_json::json!("auto"), |s| serde_json::json!(s)),
            "blur_klen": self.blur.klen,
            "blur_sigma": self.blur.sigma,
        })
    }

    fn evaluate(&self, model: &dyn Classifier, batch: &Batch) -> Result<Vec<Curve>> {
        self.blur.check()?;
        let images = Images::read(model, batch)?;
        let step = resolve_step(self.step, &images)?;
        let (_, h, w) = images.shape;
        let start: Vec<Vec<f32>> = images.pixels.iter().map(|p| self.blur.apply(p, h, w)).collect();
        play(model, &images, (&start[..], &images.pixels[..]), (batch.maps, batch.classes), step)
    }
}

//! RISE's "causal metric", the game deletion and insertion both play (Petsiuk et al. 2018,
//! `CausalMetric` in github.com/eclique/RISE evaluation.py).
//!
//! From a `start` image, `step` pixels per step in descending order of the map take the
//! `finish` image's values, n = ⌈H·W / step⌉ steps (the last may be short); the curve is the
//! class's probability before every step and after the last, n + 1 points, at the fractions
//! min(i·step, H·W)/(H·W). The score is RISE's `auc`: the trapezoid area divided by n, i.e. the
//! area over \[0,1\]. RISE takes the model's top class; here the caller gives the class.

use super::perturb::{pixel_curves, step_counts, Images};
use super::{trapezoid, Curve};
use crate::error::{Error, Result};
use crate::model::Classifier;

/// Pixels per step: `step`, or unset the image's width (one row per step, as RISE's 224 at
/// 224×224).
pub(crate) fn resolve_step(step: Option<usize>, images: &Images) -> Result<usize> {
    match step {
        Some(0) => Err(Error::Invalid("deletion/insertion: step must be at least 1 pixel".into())),
        Some(s) => Ok(s),
        None => Ok(images.shape.2),
    }
}

/// The game's curves, from `start[b]` to `finish[b]` in the order of `maps[b]`.
pub(crate) fn play(
    model: &dyn Classifier,
    images: &Images,
    (start, finish): (&[Vec<f32>], &[Vec<f32>]),
    (maps, classes): (&[Vec<f32>], &[u32]),
    step: usize,
) -> Result<Vec<Curve>> {
    let counts = step_counts(images.area(), step, 0);
    // RISE's `auc`: the trapezoid area over [0,1], n + 1 points.
    let auc = |values: &[f64]| trapezoid(values) / (values.len() - 1) as f64;
    pixel_curves(model, images, (start, finish), (maps, classes), &counts, auc)
}

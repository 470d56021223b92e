//! What a steered attack optimises: the [`Objective`] trait and its per-batch [`Goal`].
//!
//! Every objective is a function of the attacked method's map after the paper's
//! post-processing, s = |map| summed over channels and normalised to sum to one per image
//! ([`crate::attribution::normalized_saliency`]), flattened to [n,H·W]. An objective knows
//! three things about it:
//! * a differentiable loss to *minimise*, evaluated on the softplus surrogate's maps (the
//!   attack direction);
//! * a rank of a real-model map, lower is better (lexicographic pair), by which the best
//!   label-keeping iterate is chosen;
//! * a measure, the objective's value in readable units (mass in a region, distance in pixels,
//!   MSE to a target map), which runs report before and after every attack as
//!   `<measure>_before` / `<measure>_after` columns for every method and attack, so that the
//!   random baselines can be compared with the steered attacks on the steered attack's own
//!   terms.
//!
//! The per-row state (the clean top-k set, the clean center of mass, a target map) is built
//! once per batch from the clean maps by [`Objective::prepare`].

use crate::attribution::Attribution;
use crate::error::Result;
use crate::metric::Direction;
use crate::model::Classifier;
use candle_core::{Device, Tensor};

/// What [`Objective::prepare`] may look at.
pub struct PrepareContext<'a> {
    /// The real model.
    pub model: &'a dyn Classifier,
    /// The attacked (or measured) method.
    pub method: &'a dyn Attribution,
    /// Clean real-model maps, normalised to sum to one, one per row [R][H·W].
    pub clean: &'a [Vec<f32>],
    /// Map height and width.
    pub h: usize,
    /// Map width.
    pub w: usize,
    /// Where tensors live.
    pub device: &'a Device,
}

/// An objective prepared for one batch of rows.
pub trait Goal: Send {
    /// The loss to minimise, summed over rows: `s` [n,H·W] are normalised surrogate maps of the
    /// rows `rows` (u32 indices into the batch, [n]). Differentiable in `s`.
    fn loss(&self, s: &Tensor, rows: &Tensor) -> Result<Tensor>;
    /// Rank of the normalised real-model map `map` of row `r`: lower is a better attack.
    fn rank(&self, r: usize, map: &[f32]) -> (f64, f64);
    /// The objective's value for the normalised map `map` of row `r`, in the measure's units.
    fn measure(&self, r: usize, map: &[f32]) -> f64;
}

/// A steered attack's objective.
pub trait Objective: Send + Sync {
    /// The attack's name in configs and tables (`top_k`).
    fn name(&self) -> &'static str;
    /// The measure's column stem in `samples.parquet` (`topk_mass`); its units are in the name
    /// or in docs/outputs.md's schema.
    fn measure_name(&self) -> &'static str;
    /// Which way of the measure means "the map moved less" (for reports).
    fn measure_direction(&self) -> Direction;
    /// Builds the per-row state of a batch.
    fn prepare(&self, cx: &PrepareContext) -> Result<Box<dyn Goal>>;
    /// The objective's own settings, for the run's metadata.
    fn params(&self) -> serde_json::Value;
}

/// `map` scaled to sum to one (an all-zero or non-finite map stays as it is).
pub fn normalized(map: &[f32]) -> Vec<f32> {
    let total: f64 = map.iter().map(|&v| v as f64).sum();
    if total > 0.0 && total.is_finite() {
        map.iter().map(|&v| (v as f64 / total) as f32).collect()
    } else {
        map.to_vec()
    }
}

/// A 0/1 mask of per-row pixel sets, [R,H·W], and the sets sorted for binary search.
pub(crate) fn set_mask(sets: &[Vec<usize>], hw: usize, device: &Device) -> Result<Tensor> {
    let mut mask = vec![0f32; sets.len() * hw];
    for (r, set) in sets.iter().enumerate() {
        for &i in set {
            mask[r * hw + i] = 1.0;
        }
    }
    Ok(Tensor::from_vec(mask, (sets.len(), hw), device)?)
}

//! A method's maps on a progressively randomised model (Adebayo et al. 2018, their Figure 2).
//!
//! For each step of a [`Schedule`] (a [`Randomization`] order over the network's blocks or
//! single layers, [`Granularity`]), the trained `state_dict` with that step's layers
//! re-initialised ([`reinitialize`]) is built into a model
//! ([`crate::model::from_state_dict`]) and the method's saliency maps are computed on it for
//! the classes the trained model predicted (Adebayo et al. explain the original prediction).
//! Shapes: images x [B,C,H,W]; each step's maps are the signed attributions [B][C·H·W],
//! channel-major (C = 1 for layer methods), which [`super::Similarity`] compares.

use super::block::Granularity;
use super::randomize::{key_order, param_layers, reinitialize, Randomization};
use crate::attribution::Attribution;
use crate::error::Result;
use crate::model::{from_state_dict, Normalize};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// A randomisation schedule: the order of the steps and what each step re-initialises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Cascading or independent, from the logits down.
    pub randomization: Randomization,
    /// Blocks of layers (Adebayo et al.'s Inception v3) or single layers.
    pub granularity: Granularity,
}

/// One step of a schedule: the block (or layer) it randomised last (cascading: the lowest so
/// far; independent: the only one) and the method's maps on that model.
#[derive(Debug, Clone)]
pub struct StepMaps {
    /// The name of the block the step adds (`layer4.1`, `fc`; see [`super::blocks`]), or of
    /// the layer (`layer4.1.conv2`) at [`Granularity::Layer`].
    pub layer: String,
    /// Signed attributions `[B][C·H·W]`, channel-major.
    pub maps: Vec<Vec<f32>>,
}

/// The trained model's `state_dict` and how to build it again.
pub struct TrainedModel<'a> {
    /// The architecture (`fmnist_cnn` or a torchvision name).
    pub name: &'a str,
    /// Its trained tensors.
    pub tensors: &'a HashMap<String, Tensor>,
    /// The file they came from (for error messages).
    pub source: &'a Path,
    /// Input normalisation inside the model, if any.
    pub normalize: Option<&'a Normalize>,
    /// Where the model runs.
    pub device: &'a Device,
}

/// `method`'s maps of `x` for classes `targets` at every step of `schedule` (from the logits
/// down), the re-initialisations drawn from `seed`.
pub fn randomized_maps(
    trained: &TrainedModel,
    schedule: Schedule,
    method: &dyn Attribution,
    x: &Tensor,
    targets: &[u32],
    seed: u64,
) -> Result<Vec<StepMaps>> {
    let units = schedule.granularity.units(param_layers(&key_order(trained.name, Some(trained.tensors))?));
    let mut out = Vec::with_capacity(units.len());
    for step in schedule.randomization.steps(units.len()) {
        let mut tensors = trained.tensors.clone();
        for layer in step.iter().flat_map(|&i| &units[i].layers) {
            reinitialize(&mut tensors, layer, seed)?;
        }
        let model =
            from_state_dict(trained.name, tensors, trained.source, trained.normalize, trained.device)?;
        method.check(model.as_ref())?;
        let maps = super::saliency_maps(method, model.as_ref(), x, targets)?;
        let layer = step.last().map_or(String::new(), |&i| units[i].name.clone());
        out.push(StepMaps { layer, maps });
    }
    Ok(out)
}

//! Sanity checks for saliency maps: does a map depend on the model at all?
//!
//! Adebayo et al. ("Sanity checks for saliency maps", NeurIPS 2018) re-initialise a trained
//! network's parameter layers, from the logits down one more at a time (*cascading*) or one at
//! a time with the rest trained (*independent*), and compare each method's map with the
//! original: a map that barely changes (guided backprop, guided Grad-CAM in their study) does
//! not explain the model. A study's ranking by fragility alone would call such a map the most
//! robust, so these checks sit beside it.
//!
//! Kindermans et al. ("The (un)reliability of saliency methods", 2017) ask the converse: a
//! model that computes the same function of a shifted input should get the same map
//! ([`input_invariance`]).
//!
//! Sixt et al. (ICML 2020) compare the map of the predicted class with the map of a random
//! other class ([`random_logit_maps`]): a map that hardly changes does not explain the
//! prediction.
//!
//! This module holds the model side: the list of a `state_dict`'s parameter layers in forward
//! order ([`param_layers`], [`key_order`]), their grouping into the architecture's blocks
//! ([`blocks`]: ResNet's `layer2.1`, MobileNet's `features.5`, as Adebayo et al. randomise
//! Inception v3 by `Mixed_7c`, …; the default [`Granularity`], single layers on request),
//! their re-initialisation by PyTorch's default initialisers ([`reinitialize`]), the
//! randomisation schedules ([`Randomization`], [`Schedule`]), and a method's maps at every
//! step of a schedule ([`randomized_maps`], each step named by its block or layer). The
//! randomised model is rebuilt from the modified `state_dict` with
//! [`crate::model::from_state_dict`] (batch norm is folded into the convolutions only then, so
//! a re-initialised convolution still meets its trained batch-norm statistics, as Adebayo's
//! code keeps them).
//!
//! Every check returns the methods' *signed* attributions as rows `[B][C·H·W]`, channel-major
//! (C = 1 for layer methods), and leaves their comparison to [`Similarity`]: Adebayo et al.'s
//! four measures as their code computes them (Spearman of the diverging and of the absolute
//! maps after PAIR's 99th-percentile clip, scikit-image's SSIM and Pearson of HOG features of
//! the maps scaled to \[0, 1\]; [`similarity`'s docs](Similarity) give each exactly), with
//! the pieces [`hog`] and [`ssim`] written after scikit-image. Input invariance compares the
//! signed rows directly ([`input_invariance`]).

mod block;
mod cascade;
pub mod hog;
mod invariance;
mod random_logit;
mod randomize;
mod similarity;
pub mod ssim;

pub use block::{blocks, Block, Granularity, GRANULARITIES};
pub use cascade::{randomized_maps, Schedule, StepMaps, TrainedModel};
pub use invariance::{input_invariance, shifted_model, SHIFT_NODE, TOLERANCE};
pub use random_logit::{other_class_maps, random_logit_maps, random_other_class, RandomLogitMaps};
pub use randomize::{key_order, param_layers, reinitialize, ParamKind, ParamLayer, Randomization};
pub use similarity::{diverging, grayscale, percentile, unit_range, Similarity, SIMILARITY_NAMES};

use crate::attribution::{attribution_rows, Attribution};
use crate::error::Result;
use crate::model::{Activation, Classifier};
use candle_core::Tensor;

/// `method`'s signed attributions of `x` for `targets` on the real `model`, as rows [B][C·H·W]
/// channel-major (C = 1 for layer methods such as Grad-CAM): what every check compares.
fn saliency_maps(
    method: &dyn Attribution,
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
) -> Result<Vec<Vec<f32>>> {
    attribution_rows(&method.attribute(model, x, targets, Activation::Exact)?)
}

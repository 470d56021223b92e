//! The random-logit test (Sixt, Granz and Landgraf, "When explanations lie: why many modified
//! BP attributions fail", ICML 2020; Quantus's `RandomLogit`).
//!
//! A map that explains *the prediction* should change when it is asked to explain another
//! class: compare the map for the predicted class with the map for a random other class. Sixt
//! et al. show that several modified-backpropagation methods (guided backprop, LRP-αβ, ...)
//! give nearly the same map for any class. The other class is drawn uniformly from the K − 1
//! classes that are not predicted, from a stream keyed by the seed and the image's key, so it
//! does not depend on the batch. Shapes: x [B,C,H,W]; maps are signed attributions [B][C·H·W],
//! channel-major (C = 1 for layer methods), compared by [`super::Similarity`].

use crate::attribution::Attribution;
use crate::error::{Error, Result};
use crate::model::Classifier;
use crate::seed;
use candle_core::Tensor;
use rand::Rng;

/// A class other than `predicted` among `classes`, drawn uniformly from `seed` and `key` (the
/// image's id or content hash).
pub fn random_other_class(seed: u64, key: u64, predicted: u32, classes: usize) -> Result<u32> {
    if classes < 2 || predicted as usize >= classes {
        return Err(Error::Invalid(format!(
            "random logit: class {predicted} of {classes} classes has no other class to draw"
        )));
    }
    let mut rng = seed::rng(seed::derive(seed, &[seed::hash_str("random_logit"), key]));
    let draw = rng.random_range(0..classes as u32 - 1);
    // Skip the predicted class: the K − 1 others equally likely.
    Ok(if draw >= predicted { draw + 1 } else { draw })
}

/// One batch's maps for the predicted and for a random other class.
#[derive(Debug, Clone)]
pub struct RandomLogitMaps {
    /// The signed attributions for the predicted classes `[B][C·H·W]`.
    pub own: Vec<Vec<f32>>,
    /// The signed attributions for the random other classes `[B][C·H·W]`.
    pub other: Vec<Vec<f32>>,
    /// The other class of each image.
    pub classes: Vec<u32>,
}

/// `method`'s maps of `x` for the `predicted` classes and for each image's random other class
/// (keys per image as in [`random_other_class`]).
pub fn random_logit_maps(
    model: &dyn Classifier,
    method: &dyn Attribution,
    x: &Tensor,
    predicted: &[u32],
    keys: &[u64],
    seed: u64,
) -> Result<RandomLogitMaps> {
    let (classes, other) = other_class_maps(model, method, x, predicted, keys, seed)?;
    let own = super::saliency_maps(method, model, x, predicted)?;
    Ok(RandomLogitMaps { own, other, classes })
}

/// Each image's random other class and `method`'s maps of `x` for it: [`random_logit_maps`]
/// without the maps of the predicted classes, for a caller that has them already (a study's
/// clean maps).
pub fn other_class_maps(
    model: &dyn Classifier,
    method: &dyn Attribution,
    x: &Tensor,
    predicted: &[u32],
    keys: &[u64],
    seed: u64,
) -> Result<(Vec<u32>, Vec<Vec<f32>>)> {
    let k = model.num_classes();
    let others: Vec<u32> = predicted
        .iter()
        .zip(keys)
        .map(|(&p, &key)| random_other_class(seed, key, p, k))
        .collect::<Result<_>>()?;
    let maps = super::saliency_maps(method, model, x, &others)?;
    Ok((others, maps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_class_is_never_the_predicted_one_and_each_other_is_drawn() {
        let mut seen = [0usize; 10];
        for key in 0..2000 {
            let c = random_other_class(3, key, 4, 10).unwrap();
            assert_ne!(c, 4);
            seen[c as usize] += 1;
            assert_eq!(random_other_class(3, key, 4, 10).unwrap(), c, "seeded");
        }
        // 2000 draws over 9 classes: about 222 each.
        for (c, &n) in seen.iter().enumerate() {
            assert!(c == 4 || (150..300).contains(&n), "class {c}: {n}");
        }
        assert!(random_other_class(0, 0, 0, 1).is_err());
        assert!(random_other_class(0, 0, 10, 10).is_err());
    }
}

//! Faithfulness of saliency maps: does the model lose its class when the pixels a map ranks
//! first are taken away (or regain it when they are put back first)?
//!
//! Fragility (the rest of this crate) asks whether a map stays put when the image barely
//! changes; faithfulness asks whether the map pointed at what the model uses in the first
//! place. Each measure orders the pixels by the map, perturbs the image step by step in that
//! order and records the model's softmax probability of the given class along the way:
//!
//! | measure | reference | curve (per image) | score | better |
//! |---|---|---|---|---|
//! | [`Deletion`] | Petsiuk et al. 2018 (RISE) | p(class) as the top pixels become the baseline (0), n+1 points | RISE's normalised AUC | lower |
//! | [`Insertion`] | Petsiuk et al. 2018 (RISE) | p(class) as the top pixels of the image replace a blurred copy, n+1 points | RISE's normalised AUC | higher |
//! | [`PixelFlipping`] | Bach et al. 2015, as Quantus 0.6.0 | p(class) after each step of flipping to the image's minimum, n points | trapezoid area | lower |
//! | [`RegionPerturbation`] | Samek et al. 2017, as Quantus 0.6.0 | p(class) of the image minus p(class) after each patch is flipped, most relevant patch first | trapezoid area | higher |
//!
//! Each module says which defaults of its reference it follows and where it differs; the
//! fixtures of `scripts/faithfulness_fixtures.py` (RISE's code and Quantus 0.6.0 on the shipped
//! model) pin all four to their references.
//!
//! Shapes: images `x` \[B,C,H,W\] (pixels in \[0,1\], f32); maps one flat row-major slice of
//! `H·W` values per image, already reduced over channels (|attribution| summed, as
//! [`crate::attribution::saliency`] makes them); one class per image. A step perturbs whole
//! pixels (every channel at once). Every perturbed image of a chunk of images is built into
//! one batch and run in the model's own pass size ([`crate::model::logits_in_passes`], the
//! exact model), so the numbers do not depend on the batch size or the number of threads.
//!
//! Ordering: pixels (and Quantus' patches) in descending order of the map, by a stable sort,
//! so ties keep ascending index order. The references use numpy's default `argsort` (RISE:
//! `flip(argsort(map))`, Quantus: `argsort(-map)`), whose order among ties is unspecified;
//! the fixtures use maps without ties.

mod baseline;
mod blur;
mod causal;
mod curve;
mod deletion;
mod insertion;
mod perturb;
mod pixel_flipping;
mod region_perturbation;

pub use baseline::Baseline;
pub use blur::Blur;
pub use curve::{trapezoid, Curve};
pub use deletion::Deletion;
pub use insertion::Insertion;
pub use perturb::descending_order;
pub use pixel_flipping::PixelFlipping;
pub use region_perturbation::RegionPerturbation;

use crate::error::Result;
use crate::model::Classifier;
use candle_core::Tensor;

/// Which scores mean a more faithful map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Better {
    /// Deletion, pixel flipping: the class's probability should fall fast.
    Lower,
    /// Insertion, region perturbation: the probability should rise fast, or the drop be large.
    Higher,
}

/// A faithfulness measure with its settings; settings in the value, data in the call.
pub trait Measure: Send + Sync {
    /// Its name in configs and output tables (one of [`MEASURE_NAMES`]).
    fn name(&self) -> &'static str;
    /// Which scores mean a more faithful map.
    fn better(&self) -> Better;
    /// Its settings as JSON, for the output's metadata.
    fn params(&self) -> serde_json::Value;
    /// The curve and score of each image of `x` \[B,C,H,W\] under its map (`maps[b]`, `H·W`
    /// values) and class (`classes[b]`). Errors when the shapes disagree, a map is not finite
    /// or a class is out of range.
    fn evaluate(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        maps: &[Vec<f32>],
        classes: &[u32],
    ) -> Result<Vec<Curve>>;
}

/// The measures [`by_name`] knows, in this order.
pub const MEASURE_NAMES: [&str; 4] = ["deletion", "insertion", "pixel_flipping", "region_perturbation"];

/// Builds a measure by name with its reference's default settings.
pub fn by_name(name: &str) -> Option<Box<dyn Measure>> {
    with_settings(name, None).and_then(|m| m.ok())
}

/// Builds a measure by name with the settings of its config table (`[faithfulness.deletion]`:
/// the fields of its settings struct; unset fields keep their defaults). `None` for an unknown
/// name; the error says which setting is wrong.
pub fn with_settings(
    name: &str,
    settings: Option<toml::Value>,
) -> Option<std::result::Result<Box<dyn Measure>, String>> {
    fn build<M: Measure + Default + serde::de::DeserializeOwned + 'static>(
        settings: Option<toml::Value>,
    ) -> std::result::Result<Box<dyn Measure>, String> {
        let m: M = match settings {
            Some(v) => v.try_into().map_err(|e: toml::de::Error| e.message().trim_end().to_string())?,
            None => M::default(),
        };
        Ok(Box::new(m))
    }
    Some(match name {
        "deletion" => build::<Deletion>(settings),
        "insertion" => build::<Insertion>(settings),
        "pixel_flipping" => build::<PixelFlipping>(settings),
        "region_perturbation" => build::<RegionPerturbation>(settings),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_name_builds_the_measure_of_that_name() {
        for name in MEASURE_NAMES {
            let m = by_name(name).unwrap();
            assert_eq!(m.name(), name);
            assert!(m.params().is_object());
        }
        assert!(by_name("aopc").is_none());
        let step: toml::Value = toml::from_str("step = 3").unwrap();
        assert_eq!(with_settings("deletion", Some(step)).unwrap().unwrap().params()["step"], 3);
        let bad: toml::Value = toml::from_str("stride = 3").unwrap();
        let e = with_settings("deletion", Some(bad)).unwrap().err().unwrap();
        assert!(e.contains("stride"), "{e}");
    }
}

//! Faithfulness of saliency maps: does the model lose its class when the pixels a map ranks
//! first are taken away (or regain it when they are put back first)?
//!
//! Fragility (the rest of this crate) asks whether a map stays put when the image barely
//! changes; faithfulness asks whether the map pointed at what the model uses in the first
//! place. Most measures order the pixels by the map, perturb the image step by step in that
//! order and record the model's softmax probability of the given class along the way; the
//! last two perturb at random and compare the output's change with the signed attributions.
//! Every curve point also records top-1: whether the class is still the model's arg-max.
//!
//! | measure | reference | curve (per image) | score | better |
//! |---|---|---|---|---|
//! | [`Deletion`] | Petsiuk et al. 2018 (RISE) | p(class) as the top pixels become the baseline (0), n+1 points | RISE's normalised AUC | lower |
//! | [`Insertion`] | Petsiuk et al. 2018 (RISE) | p(class) as the top pixels of the image replace a blurred copy, n+1 points | RISE's normalised AUC | higher |
//! | [`PixelFlipping`] | Bach et al. 2015, as Quantus 0.6.0 | p(class) after each step of flipping to the image's minimum, n points | trapezoid area | lower |
//! | [`RegionPerturbation`] | Samek et al. 2017, as Quantus 0.6.0 | p(class) of the image minus p(class) after each patch is flipped, most relevant patch first | trapezoid area | higher |
//! | [`Road`] `road_morf` | Rong et al. 2022 (ROAD), imputation as Quantus 0.6.0 | p(class) with the top 10, 20, …, 90 % of pixels removed by noisy linear imputation | mean of the curve | lower |
//! | [`Road`] `road_lerf` | the same | the same, least relevant pixels first | mean of the curve | higher |
//! | [`FaithfulnessCorrelation`] | Bhatt et al. 2020, as Quantus 0.6.0 | the class logit's drop per random subset of 224 values set to the image's minimum, 100 runs | Pearson(Σ attribution over the subset, drop) | higher |
//! | [`Infidelity`] | Yeh et al. 2019, as Captum 0.9 (`normalize=True`) | the class logit's drop per Gaussian perturbation (σ 0.003), 10 samples | normalised mean squared error of attribution·perturbation against the drop | lower |
//!
//! Deliberate differences, in short (each module has the details): ROAD at 10..90 % (Quantus
//! 1, 3, …, 99), with LeRF and a probability per point, ranking pixels rather than Quantus'
//! C·H·W broadcast of the map, its noise from the keyed stream; faithfulness correlation and
//! infidelity draw from keyed streams instead of numpy's global one; infidelity is Captum's
//! Gaussian definition, not Quantus' patch-replacement `Infidelity`.
//!
//! Each module says which defaults of its reference it follows and where it differs; the
//! fixtures of `scripts/faithfulness_fixtures.py` (RISE's code and Quantus 0.6.0 on the shipped
//! model) and `scripts/faithfulness_fixtures_random.py` (Quantus 0.6.0 and Captum 0.9, with the
//! random draws they used) pin all eight to their references.
//!
//! Shapes ([`Batch`]): images `x` \[B,C,H,W\] (pixels in \[0,1\], f32); maps one flat
//! row-major slice of `H·W` values per image, already reduced over channels (|attribution|
//! summed, as [`crate::attribution::saliency`] makes them); signed attributions one flat
//! channel-major slice of `C·H·W` values per image; one class and one key per image. A step
//! perturbs whole pixels (every channel at once); faithfulness correlation and infidelity
//! perturb single channel values. Every perturbed image of a chunk of images is built into one
//! batch and run in the model's own pass size ([`crate::model::logits_in_passes`], the exact
//! model), and random draws are keyed per image ([`Batch`]), so the numbers do not depend on
//! the batch size or the number of threads.
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
mod faithfulness_correlation;
mod imputation;
mod infidelity;
mod insertion;
mod perturb;
mod pixel_flipping;
mod region_perturbation;
mod road;

pub use baseline::Baseline;
pub use blur::Blur;
pub use curve::{trapezoid, Curve};
pub use deletion::Deletion;
pub use faithfulness_correlation::{faithfulness_correlation_with_subsets, FaithfulnessCorrelation};
pub use imputation::noisy_linear_imputation;
pub use infidelity::{infidelity_with_noise, Infidelity};
pub use insertion::Insertion;
pub use perturb::descending_order;
pub use pixel_flipping::PixelFlipping;
pub use region_perturbation::RegionPerturbation;
pub use road::{Road, RoadOrder};

use crate::error::Result;
use crate::model::Classifier;
use candle_core::Tensor;

/// Which scores mean a more faithful map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Better {
    /// Deletion, pixel flipping, ROAD MoRF, infidelity: the class's probability should fall
    /// fast, or the attribution's error be small.
    Lower,
    /// Insertion, region perturbation, ROAD LeRF, faithfulness correlation: the probability
    /// should rise fast or survive, the drop be large, or the correlation high.
    Higher,
}

/// One call's data: the images, their maps and attributions, their classes, and what keys the
/// random draws of the measures that make any.
///
/// A measure with random draws (ROAD's noise, faithfulness correlation's subsets, infidelity's
/// perturbations) seeds one stream per image from (`seed`, its own name, `keys[b]`), never from
/// the image's position in the batch, so an image gets the same numbers alone or among others.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The images \[B,C,H,W\].
    pub x: &'a Tensor,
    /// Saliency maps \[B\]\[H·W\]: |attribution| summed over channels
    /// ([`crate::attribution::saliency_rows`]).
    pub maps: &'a [Vec<f32>],
    /// Signed attributions \[B\]\[C·H·W\], channel-major
    /// ([`crate::attribution::attribution_rows`]).
    pub attributions: &'a [Vec<f32>],
    /// The class each image is explained for.
    pub classes: &'a [u32],
    /// One key per image (its id, or a content hash): random draws are keyed by it.
    pub keys: &'a [u64],
    /// The seed of every random draw.
    pub seed: u64,
}

/// A faithfulness measure with its settings; settings in the value, data in the call.
pub trait Measure: Send + Sync {
    /// Its name in configs and output tables (one of [`MEASURE_NAMES`]).
    fn name(&self) -> &'static str;
    /// Which scores mean a more faithful map.
    fn better(&self) -> Better;
    /// Its settings as JSON, for the output's metadata.
    fn params(&self) -> serde_json::Value;
    /// The curve and score of each image of `batch`. Errors when the shapes disagree, a map
    /// or attribution is not finite or a class is out of range.
    fn evaluate(&self, model: &dyn Classifier, batch: &Batch) -> Result<Vec<Curve>>;
}

/// The measures [`by_name`] knows, in this order.
pub const MEASURE_NAMES: [&str; 8] = [
    "deletion",
    "insertion",
    "pixel_flipping",
    "region_perturbation",
    "road_morf",
    "road_lerf",
    "faithfulness_correlation",
    "infidelity",
];

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
    fn parse<M: Default + serde::de::DeserializeOwned>(
        settings: Option<toml::Value>,
    ) -> std::result::Result<M, String> {
        match settings {
            Some(v) => v.try_into().map_err(|e: toml::de::Error| e.message().trim_end().to_string()),
            None => Ok(M::default()),
        }
    }
    fn build<M: Measure + Default + serde::de::DeserializeOwned + 'static>(
        settings: Option<toml::Value>,
    ) -> std::result::Result<Box<dyn Measure>, String> {
        Ok(Box::new(parse::<M>(settings)?))
    }
    Some(match name {
        "deletion" => build::<Deletion>(settings),
        "insertion" => build::<Insertion>(settings),
        "pixel_flipping" => build::<PixelFlipping>(settings),
        "region_perturbation" => build::<RegionPerturbation>(settings),
        "road_morf" | "road_lerf" => {
            let order = if name == "road_morf" { RoadOrder::Morf } else { RoadOrder::Lerf };
            if settings.as_ref().and_then(|v| v.get("order")).is_some() {
                return Some(Err(
                    "unknown field `order`: the measure's name (road_morf, road_lerf) sets it".into()
                ));
            }
            parse::<Road>(settings).map(|r| Box::new(Road { order, ..r }) as Box<dyn Measure>)
        }
        "faithfulness_correlation" => build::<FaithfulnessCorrelation>(settings),
        "infidelity" => build::<Infidelity>(settings),
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

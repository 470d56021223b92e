//! What a removed pixel becomes.
//!
//! RISE's deletion sets pixels to 0 (`torch.zeros_like`); Quantus' "black" (the default
//! `perturb_baseline` of pixel flipping and region perturbation) is not 0 but the image's own
//! minimum over all channels and pixels (`get_baseline_dict`: `arr.min(axis=…)` per image).
//! Quantus takes that minimum of the array being perturbed at each step, which never changes:
//! filling with the minimum cannot lower it, and the edge padding of region perturbation
//! repeats existing values. "white" is the maximum, likewise.

use serde::{Deserialize, Serialize};

/// The value a removed pixel takes (in every channel).
///
/// In TOML: `baseline = "image_min"`, `"image_max"`, or `baseline = { value = 0.0 }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// A fixed value (RISE's deletion: 0).
    Value(f32),
    /// The image's minimum over all its values: Quantus' "black".
    ImageMin,
    /// The image's maximum over all its values: Quantus' "white".
    ImageMax,
}

impl Baseline {
    /// An image shaped like `image` (flat [C·H·W]) filled with this baseline.
    pub fn fill(&self, image: &[f32]) -> Vec<f32> {
        let value = match self {
            Baseline::Value(v) => *v,
            Baseline::ImageMin => image.iter().copied().fold(f32::INFINITY, f32::min),
            Baseline::ImageMax => image.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        };
        vec![value; image.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_min_and_max_are_the_images_own() {
        let image = [0.3f32, 0.1, 0.7, 0.4];
        assert_eq!(Baseline::ImageMin.fill(&image), vec![0.1; 4]);
        assert_eq!(Baseline::ImageMax.fill(&image), vec![0.7; 4]);
        assert_eq!(Baseline::Value(0.5).fill(&image), vec![0.5; 4]);
    }

    #[test]
    fn baselines_read_from_toml() {
        #[derive(Deserialize)]
        struct S {
            baseline: Baseline,
        }
        let b = |t: &str| toml::from_str::<S>(t).unwrap().baseline;
        assert_eq!(b("baseline = \"image_min\""), Baseline::ImageMin);
        assert_eq!(b("baseline = { value = 0.25 }"), Baseline::Value(0.25));
    }
}

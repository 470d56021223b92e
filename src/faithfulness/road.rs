//! ROAD, RemOve And Debias (Rong, Leemann, Nguyen, Fiedler, Haghighi and Kasneci, "A consistent
//! and efficient evaluation strategy for attribution methods", ICML 2022; authors' code
//! github.com/tleemann/road_evaluation; Quantus 0.6.0's `ROAD`): remove a share of the pixels
//! in the map's order, fill them by noisy linear imputation ([`noisy_linear_imputation`]) so
//! that the filling does not leak which pixels went, and record whether the model still sees
//! the class.
//!
//! Two orders, two measures: `road_morf` removes the most relevant pixels first (a faithful
//! map makes the class vanish fast: lower is better), `road_lerf` the least relevant first (the
//! class should survive: higher is better). The curve has one point per percentage p (default
//! 10, 20, …, 90, the paper's): ⌊H·W·p/100⌋ pixels removed (Quantus' `int(a_size·p/100)`), the
//! value the class's softmax probability of the imputed image, `top1` whether the class is
//! still its arg-max (the paper's and Quantus' accuracy); fractions are the removed share.
//! The score is the mean of the values (the area under the curve over equally spaced
//! fractions, divided by their count).
//!
//! Noise: σ = 0.01 (the reference's) per imputed value, from a stream keyed by (seed, the
//! measure's name, the image's key, p), so each image and percentage draws the same noise in
//! any batch. The reference draws from numpy's global stream, so only the noise-free part is
//! compared with it (the fixtures use σ = 0); the noise's statistics and seeding are tested
//! on their own.
//!
//! Deliberate differences from Quantus 0.6.0: percentages 10..90 (Quantus' default is 1, 3, …,
//! 99) and a probability per point besides the accuracy; LeRF as well (Quantus: MoRF only);
//! pixels ranked by the map [H·W] and removed in every channel (Quantus broadcasts a [1,H,W]
//! map over C channels and counts its top indices among C·H·W, which indexes past the image's
//! pixels when C > 1; road_evaluation ranks pixels, as here). Ranking as the maps are given
//! (Quantus: `abs = False`; its `normalise_by_max` is a positive constant, which keeps the
//! order); ties in index order (MoRF: descending, LeRF: ascending, stable sorts).
//!
//! Shapes: see [`super`].

use super::imputation::noisy_linear_imputation;
use super::perturb::{descending_order, outcomes, Images};
use super::{Batch, Better, Curve, Measure};
use crate::error::{Error, Result};
use crate::model::Classifier;
use crate::seed;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Which pixels go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoadOrder {
    /// Most relevant first (`road_morf`).
    Morf,
    /// Least relevant first (`road_lerf`).
    Lerf,
}

/// ROAD settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Road {
    /// Which pixels are removed first.
    pub order: RoadOrder,
    /// The percentages of pixels removed, one curve point each (default 10, 20, …, 90).
    pub percentages: Vec<u32>,
    /// The standard deviation of the noise added to imputed values (default 0.01).
    pub noise: f32,
}

impl Default for Road {
    fn default() -> Self {
        Self { order: RoadOrder::Morf, percentages: (1..10).map(|i| 10 * i).collect(), noise: 0.01 }
    }
}

impl Road {
    /// The default settings in `order`.
    pub fn new(order: RoadOrder) -> Self {
        Self { order, ..Self::default() }
    }

    /// The pixels of `map` in removal order.
    fn ranking(&self, map: &[f32]) -> Vec<usize> {
        match self.order {
            RoadOrder::Morf => descending_order(map),
            // Ascending, ties in index order.
            RoadOrder::Lerf => descending_order(&map.iter().map(|v| -v).collect::<Vec<f32>>()),
        }
    }
}

impl Measure for Road {
    fn name(&self) -> &'static str {
        match self.order {
            RoadOrder::Morf => "road_morf",
            RoadOrder::Lerf => "road_lerf",
        }
    }

    fn better(&self) -> Better {
        match self.order {
            RoadOrder::Morf => Better::Lower,
            RoadOrder::Lerf => Better::Higher,
        }
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "order": self.order, "percentages": self.percentages, "noise": self.noise })
    }

    fn evaluate(&self, model: &dyn Classifier, batch: &Batch) -> Result<Vec<Curve>> {
        if self.percentages.is_empty()
            || self.percentages.iter().any(|&p| p >= 100)
            || !self.noise.is_finite()
        {
            return Err(Error::Invalid("road: percentages must be in 0..100 and the noise finite".into()));
        }
        let images = Images::read(model, batch)?;
        let area = images.area();
        let counts: Vec<usize> = self.percentages.iter().map(|&p| area * p as usize / 100).collect();
        let points = self.percentages.len();
        let rankings: Vec<Vec<usize>> = batch.maps.iter().map(|m| self.ranking(m)).collect();
        let imputed: Vec<Vec<f32>> = (0..images.pixels.len() * points)
            .into_par_iter()
            .map(|i| {
                let (b, k) = (i / points, i % points);
                let parts = [seed::hash_str(self.name()), batch.keys[b], u64::from(self.percentages[k])];
                let mut rng = seed::rng(seed::derive(batch.seed, &parts));
                let removed = &rankings[b][..counts[k]];
                noisy_linear_imputation(&images.pixels[b], images.shape, removed, self.noise, &mut rng)
            })
            .collect::<Result<_>>()?;
        let targets: Vec<u32> = (0..imputed.len()).map(|i| batch.classes[i / points]).collect();
        let found = outcomes(model, images.shape, &targets, |i, data| data.extend_from_slice(&imputed[i]))?;
        let fractions: Vec<f64> = counts.iter().map(|&n| n as f64 / area as f64).collect();
        Ok(found
            .chunks(points)
            .map(|o| {
                let values: Vec<f64> = o.iter().map(|o| o.probability).collect();
                let score = values.iter().sum::<f64>() / points as f64;
                Curve {
                    fractions: fractions.clone(),
                    values,
                    score,
                    top1: o.iter().map(|o| o.top1).collect(),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lerf_ranks_ascending_with_ties_in_index_order() {
        let map = [0.5, 2.0, 0.5, 3.0, 0.1];
        assert_eq!(Road::new(RoadOrder::Morf).ranking(&map), vec![3, 1, 0, 2, 4]);
        assert_eq!(Road::new(RoadOrder::Lerf).ranking(&map), vec![4, 0, 2, 1, 3]);
    }
}

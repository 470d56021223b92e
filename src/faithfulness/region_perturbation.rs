//! Region perturbation (Samek et al., "Evaluating the visualization of what a deep neural
//! network has learned", IEEE TNNLS 2017), as Quantus 0.6.0's `RegionPerturbation` computes
//! it: cut the image into `patch_size`² patches, rank them by the sum of the map over each,
//! flip the most relevant first (MoRF) and record how far the class's probability has dropped
//! after each patch. A faithful map makes it drop fast: higher area is better.
//!
//! The curve is p(x) − p(x after the first k patches) for k = 1..min(regions_evaluation,
//! patches), at the fractions of pixels flipped so far; the score is Quantus'
//! `calculate_auc(curve)` = `np.trapz(curve, dx=1)` ([`super::trapezoid`]; Quantus'
//! `get_auc_score` is its mean over images). Its `top1` is that of the perturbed image.
//!
//! Patches: when `patch_size` does not divide a side, Quantus pads the side by
//! ⌊(p − side mod p)/2⌋ before and the rest after (attributions with zeros, the image with its
//! edge values, cropped again before the model sees it), so the grid starts half a padding
//! before the image and border patches are partly outside: their sum is over their pixels in
//! the image, and only those pixels flip. Patches are numbered row by row (Quantus'
//! `get_block_indices`) and ranked by descending sum, ties in that order (a stable sort;
//! Quantus: numpy's unspecified `argsort(-sums)` order); sums are taken in f64 (Quantus: f32).
//!
//! Quantus defaults followed: `patch_size = 8`, `regions_evaluation = 100`, `order = "morf"`;
//! `perturb_baseline = "black"`, the image's minimum ([`Baseline::ImageMin`]); `softmax = True`;
//! `abs = False`; `normalise = True` (`normalise_by_max`: a positive constant over the batch,
//! which leaves the ranking unchanged and is not applied here). Differences: only MoRF (no
//! "random" or "lerf" order); [`Better::Higher`] although Quantus 0.6.0 labels the metric
//! `ScoreDirection.LOWER` (its curve is a drop, and Samek et al.'s AOPC for MoRF is better when
//! larger).
//!
//! Shapes: see [`super`].

use super::perturb::{play, Images, Schedule};
use super::{trapezoid, Baseline, Batch, Better, Curve, Measure};
use crate::error::{Error, Result};
use crate::model::Classifier;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Region-perturbation settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegionPerturbation {
    /// The side of a square patch in pixels (Quantus default 8).
    pub patch_size: usize,
    /// How many patches to flip, most relevant first (Quantus default 100).
    pub regions_evaluation: usize,
    /// What flipped pixels become (Quantus' "black": the image's minimum).
    pub baseline: Baseline,
}

impl Default for RegionPerturbation {
    fn default() -> Self {
        Self { patch_size: 8, regions_evaluation: 100, baseline: Baseline::ImageMin }
    }
}

impl Measure for RegionPerturbation {
    fn name(&self) -> &'static str {
        "region_perturbation"
    }

    fn better(&self) -> Better {
        Better::Higher
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "patch_size": self.patch_size,
            "regions_evaluation": self.regions_evaluation,
            "order": "morf",
            "baseline": self.baseline,
        })
    }

    fn evaluate(&self, model: &dyn Classifier, batch: &Batch) -> Result<Vec<Curve>> {
        if self.patch_size == 0 || self.regions_evaluation == 0 {
            return Err(Error::Invalid(
                "region_perturbation: patch_size and regions_evaluation must be at least 1".into(),
            ));
        }
        let images = Images::read(model, batch)?;
        let (_, h, w) = images.shape;
        let patches = patches(h, w, self.patch_size);
        let schedules: Vec<Schedule> = batch.maps.iter().map(|m| self.schedule(m, &patches)).collect();
        let finish: Vec<Vec<f32>> = images.pixels.iter().map(|p| self.baseline.fill(p)).collect();
        let outcomes = play(model, &images, (&images.pixels, &finish), &schedules, batch.classes)?;
        let area = images.area() as f64;
        Ok(outcomes
            .into_iter()
            .zip(&schedules)
            .map(|(o, s)| {
                let values: Vec<f64> = o[1..].iter().map(|q| o[0].probability - q.probability).collect();
                let fractions = s.counts[1..].iter().map(|&n| n as f64 / area).collect();
                let top1 = o[1..].iter().map(|q| q.top1).collect();
                Curve { fractions, score: trapezoid(&values), values, top1 }
            })
            .collect())
    }
}

impl RegionPerturbation {
    /// The clean image (0 pixels), then the pixels of the first 1, 2, … patches in descending
    /// order of the map's sum over each.
    fn schedule(&self, map: &[f32], patches: &[Vec<usize>]) -> Schedule {
        let sums: Vec<f64> = patches.iter().map(|p| p.iter().map(|&i| map[i] as f64).sum()).collect();
        let mut ranked: Vec<usize> = (0..patches.len()).collect();
        ranked.sort_by(|&a, &b| sums[b].partial_cmp(&sums[a]).unwrap_or(Ordering::Equal));
        let mut order = Vec::with_capacity(map.len());
        let mut counts = vec![0];
        for &p in ranked.iter().take(self.regions_evaluation) {
            order.extend_from_slice(&patches[p]);
            counts.push(order.len());
        }
        Schedule { order, counts }
    }
}

/// The pixel indices `y·w + x` inside each patch of Quantus' padded grid, patches row by row.
fn patches(h: usize, w: usize, size: usize) -> Vec<Vec<usize>> {
    // Quantus' get_padding_size: total = (size − side mod size) mod size, ⌊total/2⌋ before.
    let before = |side: usize| (size - side % size) % size / 2;
    let ranges = |side: usize| -> Vec<(usize, usize)> {
        let lo = before(side);
        (0..(side + lo).div_ceil(size))
            .map(|i| ((i * size).saturating_sub(lo), ((i + 1) * size - lo).min(side)))
            .collect()
    };
    let (rows, cols) = (ranges(h), ranges(w));
    rows.iter()
        .flat_map(|&(y0, y1)| {
            cols.iter()
                .map(move |&(x0, x1)| (y0..y1).flat_map(|y| (x0..x1).map(move |x| y * w + x)).collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_tile_the_image_as_quantus_pads_it() {
        // 28 with patch 4: 7×7 patches, no padding.
        let p = patches(28, 28, 4);
        assert_eq!(p.len(), 49);
        assert_eq!(p[0], vec![0, 1, 2, 3, 28, 29, 30, 31, 56, 57, 58, 59, 84, 85, 86, 87]);
        // 28 with patch 8: padded 2 + 28 + 2 = 32, 4×4 patches; the first covers rows and
        // columns 0..6 of the image, the second columns 6..14.
        let p = patches(28, 28, 8);
        assert_eq!(p.len(), 16);
        assert_eq!(p[0].len(), 36);
        assert_eq!(p[1][..8], [6, 7, 8, 9, 10, 11, 12, 13]);
        assert_eq!(p[5].len(), 64);
        // 5 with patch 4: total padding 3, 1 before (floor) and 2 after: [0,3) and [3,5).
        assert_eq!(patches(1, 5, 4), vec![vec![0, 1, 2], vec![3, 4]]);
        let mut all: Vec<usize> = patches(28, 28, 8).concat();
        all.sort_unstable();
        assert_eq!(all, (0..784).collect::<Vec<_>>());
    }

    #[test]
    fn patches_rank_by_their_sum_and_stop_after_regions_evaluation() {
        // 2×4 image, patch 2: patches {0,1,4,5} and {2,3,6,7}; the second sums higher.
        let rp = RegionPerturbation { patch_size: 2, regions_evaluation: 1, ..Default::default() };
        let s = rp.schedule(&[0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 2.0, 0.0], &patches(2, 4, 2));
        assert_eq!(s.order, vec![2, 3, 6, 7]);
        assert_eq!(s.counts, vec![0, 4]);
    }
}

//! Faithfulness correlation (Bhatt, Weller and Moura, "Evaluating and aggregating feature-based
//! model explanations", IJCAI 2020), as Quantus 0.6.0's `FaithfulnessCorrelation` computes it:
//! set a random subset of the input's values to a baseline, many times, and correlate the sum
//! of the attributions over each subset with the drop of the class's output it causes. A
//! faithful attribution predicts the drops: higher is better.
//!
//! Per image and run k: a subset S_k of `subset_size` distinct values of the image's C·H·W
//! (drawn uniformly without replacement, as Quantus' `np.random.choice(C·H·W, subset_size,
//! replace=False)`: single channel values, not whole pixels), x′ = x with S_k set to the
//! baseline, drop_k = f_c(x) − f_c(x′) on the logits (Quantus' `softmax = False` default for
//! this metric), sum_k = Σ_{i∈S_k} a_i over the signed attributions (`abs = False`). The score
//! is Pearson's correlation of (sum_k) and (drop_k) ([`crate::metric::pearson_f64`]; NaN when
//! either is constant, as scipy's `pearsonr`). The curve: values drop_k per run, top1 whether
//! the class is still the arg-max of x′, fractions subset_size/(C·H·W) (constant).
//!
//! Quantus defaults followed: `nr_runs = 100`, `subset_size = 224`, `perturb_baseline =
//! "black"` (the image's minimum, [`Baseline::ImageMin`]), `similarity_func =
//! correlation_pearson`, `abs = False`, `normalise = True` (`normalise_by_max`: a positive
//! factor on every attribution, which Pearson ignores, so not applied). Subsets: from a stream
//! keyed by (seed, "faithfulness_correlation", the image's key), run after run, by rand's
//! `index::sample` (Quantus: numpy's global stream, which the fixture replays and exports;
//! [`faithfulness_correlation_with_subsets`] takes such subsets explicitly).
//!
//! Shapes: see [`super`]; subsets index the flat channel-major [C·H·W] image.

use super::perturb::{logit_drops, Images};
use super::{Baseline, Batch, Better, Curve, Measure};
use crate::error::{Error, Result};
use crate::metric::pearson_f64;
use crate::model::Classifier;
use crate::seed;
use serde::{Deserialize, Serialize};

/// Faithfulness-correlation settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaithfulnessCorrelation {
    /// Random subsets per image (Quantus' `nr_runs`, default 100).
    pub nr_runs: usize,
    /// Input values per subset (Quantus' `subset_size`, default 224).
    pub subset_size: usize,
    /// What the subset's values become (Quantus' "black": the image's minimum).
    pub baseline: Baseline,
}

impl Default for FaithfulnessCorrelation {
    fn default() -> Self {
        Self { nr_runs: 100, subset_size: 224, baseline: Baseline::ImageMin }
    }
}

impl Measure for FaithfulnessCorrelation {
    fn name(&self) -> &'static str {
        "faithfulness_correlation"
    }

    fn better(&self) -> Better {
        Better::Higher
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "nr_runs": self.nr_runs, "subset_size": self.subset_size, "baseline": self.baseline })
    }

    fn evaluate(&self, model: &dyn Classifier, batch: &Batch) -> Result<Vec<Curve>> {
        let (_, c, h, w) = batch.x.dims4()?;
        let features = c * h * w;
        if self.nr_runs < 2 || self.subset_size == 0 || self.subset_size >= features {
            return Err(Error::Invalid(format!(
                "faithfulness_correlation: needs 2 or more runs and a subset of 1..{features} values"
            )));
        }
        let subsets: Vec<Vec<Vec<usize>>> =
            batch.keys.iter().map(|&key| self.subsets(batch.seed, key, features)).collect();
        faithfulness_correlation_with_subsets(model, batch, self.baseline, &subsets)
    }
}

impl FaithfulnessCorrelation {
    /// The subsets of the image keyed `key` under `seed`: `nr_runs` lists of `subset_size`
    /// distinct indices below `features` (see the module docs).
    pub fn subsets(&self, seed: u64, key: u64, features: usize) -> Vec<Vec<usize>> {
        let mut rng = seed::rng(seed::derive(seed, &[seed::hash_str(self.name()), key]));
        (0..self.nr_runs)
            .map(|_| rand::seq::index::sample(&mut rng, features, self.subset_size).into_vec())
            .collect()
    }
}

/// Faithfulness correlation of each image of `batch` over the given `subsets[b][k]` (indices
/// into the flat [C·H·W] image, distinct within a subset), their values set to `baseline`.
pub fn faithfulness_correlation_with_subsets(
    model: &dyn Classifier,
    batch: &Batch,
    baseline: Baseline,
    subsets: &[Vec<Vec<usize>>],
) -> Result<Vec<Curve>> {
    let images = Images::read(model, batch)?;
    let features = images.pixels.first().map_or(0, Vec::len);
    if subsets.len() != images.pixels.len() || subsets.iter().flatten().flatten().any(|&i| i >= features) {
        return Err(Error::Invalid(format!(
            "faithfulness_correlation: one list of subsets of 0..{features} per image"
        )));
    }
    let fills: Vec<Vec<f32>> = images.pixels.iter().map(|p| baseline.fill(p)).collect();
    let runs: Vec<usize> = subsets.iter().map(Vec::len).collect();
    let drops = logit_drops(model, &images, batch.classes, &runs, |b, k, data| {
        let at = data.len();
        data.extend_from_slice(&images.pixels[b]);
        for &i in &subsets[b][k] {
            data[at + i] = fills[b][i];
        }
    })?;
    Ok(drops
        .into_iter()
        .enumerate()
        .map(|(b, (values, top1))| {
            let sums: Vec<f64> = subsets[b]
                .iter()
                .map(|s| s.iter().map(|&i| f64::from(batch.attributions[b][i])).sum())
                .collect();
            let fractions = subsets[b].iter().map(|s| s.len() as f64 / features as f64).collect();
            let score = pearson_f64(&sums, &values).unwrap_or(f64::NAN);
            Curve { fractions, values, score, top1 }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_are_distinct_uniform_and_keyed() {
        let m = FaithfulnessCorrelation::default();
        let runs = m.subsets(3, 9, 784);
        assert_eq!(runs.len(), 100);
        let mut hits = vec![0usize; 784];
        for s in &runs {
            let mut sorted = s.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 224, "distinct");
            s.iter().for_each(|&i| hits[i] += 1);
        }
        // Each index is in a subset with probability 224/784: 28.6 of 100 runs, sd 4.5.
        let mean = hits.iter().sum::<usize>() as f64 / 784.0;
        assert!((mean - 28.57).abs() < 0.01 && hits.iter().all(|&h| (5..60).contains(&h)), "{mean}");
        assert_eq!(m.subsets(3, 9, 784), runs);
        assert_ne!(m.subsets(3, 10, 784), runs, "another image");
        assert_ne!(m.subsets(4, 9, 784), runs, "another seed");
    }
}

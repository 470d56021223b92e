//! Infidelity (Yeh, Hsieh, Suggala, Inouye and Ravikumar, "On the (in)fidelity and sensitivity
//! of explanations", NeurIPS 2019), as Captum 0.9's `captum.metrics.infidelity` computes it with
//! `normalize = True`: how badly the attribution, read as a linear model, predicts the change of
//! the class's output under small random perturbations. Lower is better.
//!
//! Per image, n perturbations I_k ~ N(0, σ²) on every input value (Captum's docstring example:
//! `noise = np.random.normal(0, 0.003, inputs.shape); return noise, inputs - noise`), perturbed
//! input x − I_k, drop_k = f_c(x) − f_c(x − I_k) on the logits (Captum calls the model as given;
//! here the class's logit), dot_k = Σ_i a_i·I_k,i over the signed attributions. Captum's
//! normalisation scales the attribution by the least-squares β = Σ dot·drop / Σ dot² (β = 0
//! when every dot is 0, Captum's `safe_div`), so the score is
//!
//! ```text
//! infidelity = (β²·Σ dot² − 2β·Σ dot·drop + Σ drop²) / n
//! ```
//!
//! in Captum's polynomial form, computed in f64. The curve: values drop_k per perturbation,
//! top1 whether the class is still the arg-max of x − I_k, fractions 1 (every value perturbed).
//!
//! Defaults: σ = 0.003 (Captum's docstring) and `n_perturb_samples = 10` (Captum's default).
//! Draws: a stream keyed by (seed, "infidelity", the image's key), perturbation after
//! perturbation, channel-major, N(0,1)·σ rounded to f32; [`infidelity_with_noise`] takes the
//! draws explicitly (the fixture exports Captum's). Quantus 0.6.0's `Infidelity` differs (patch
//! baseline replacement, not Gaussian noise); this follows Captum's definition on purpose.
//!
//! Shapes: see [`super`]; each perturbation flat [C·H·W], channel-major.

use super::perturb::{logit_drops, Images};
use super::{Batch, Better, Curve, Measure};
use crate::error::{Error, Result};
use crate::model::Classifier;
use crate::seed;
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// Infidelity settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Infidelity {
    /// Perturbations per image (Captum's `n_perturb_samples`, default 10).
    pub n_perturb_samples: usize,
    /// The standard deviation of the Gaussian perturbation (default 0.003).
    pub sigma: f32,
}

impl Default for Infidelity {
    fn default() -> Self {
        Self { n_perturb_samples: 10, sigma: 0.003 }
    }
}

impl Measure for Infidelity {
    fn name(&self) -> &'static str {
        "infidelity"
    }

    fn better(&self) -> Better {
        Better::Lower
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "n_perturb_samples": self.n_perturb_samples, "sigma": self.sigma, "normalize": true })
    }

    fn evaluate(&self, model: &dyn Classifier, batch: &Batch) -> Result<Vec<Curve>> {
        if self.n_perturb_samples == 0 || !(self.sigma.is_finite() && self.sigma > 0.0) {
            return Err(Error::Invalid(
                "infidelity: needs 1 or more perturbations and a positive sigma".into(),
            ));
        }
        let (_, c, h, w) = batch.x.dims4()?;
        let noise: Vec<Vec<Vec<f32>>> =
            batch.keys.iter().map(|&key| self.noise(batch.seed, key, c * h * w)).collect();
        infidelity_with_noise(model, batch, &noise)
    }
}

impl Infidelity {
    /// The perturbations of the image keyed `key` under `seed`: `n_perturb_samples` rows of
    /// `features` N(0, σ²) values (see the module docs).
    pub fn noise(&self, seed: u64, key: u64, features: usize) -> Vec<Vec<f32>> {
        let mut rng = seed::rng(seed::derive(seed, &[seed::hash_str(self.name()), key]));
        let mut draw = || (rng.sample::<f64, _>(StandardNormal) * f64::from(self.sigma)) as f32;
        (0..self.n_perturb_samples).map(|_| (0..features).map(|_| draw()).collect()).collect()
    }
}

/// Infidelity of each image of `batch` under the given perturbations `noise[b][k]` (flat
/// [C·H·W]); the model sees x − I.
pub fn infidelity_with_noise(
    model: &dyn Classifier,
    batch: &Batch,
    noise: &[Vec<Vec<f32>>],
) -> Result<Vec<Curve>> {
    let images = Images::read(model, batch)?;
    let features = images.pixels.first().map_or(0, Vec::len);
    if noise.len() != images.pixels.len()
        || noise.iter().any(|n| n.is_empty() || n.iter().any(|i| i.len() != features))
    {
        return Err(Error::Invalid(format!(
            "infidelity: one or more perturbations of {features} values per image"
        )));
    }
    let runs: Vec<usize> = noise.iter().map(Vec::len).collect();
    let drops = logit_drops(model, &images, batch.classes, &runs, |b, k, data| {
        data.extend(images.pixels[b].iter().zip(&noise[b][k]).map(|(x, i)| x - i));
    })?;
    Ok(drops
        .into_iter()
        .enumerate()
        .map(|(b, (values, top1))| {
            let a = &batch.attributions[b];
            let dots: Vec<f64> = noise[b]
                .iter()
                .map(|i| a.iter().zip(i).map(|(&a, &i)| f64::from(a) * f64::from(i)).sum())
                .collect();
            let fractions = vec![1.0; values.len()];
            Curve { fractions, score: normalized_infidelity(&dots, &values), values, top1 }
        })
        .collect())
}

/// Captum's normalised infidelity of the attribution-times-perturbation sums `dots` against the
/// output drops `drops` (see the module docs).
fn normalized_infidelity(dots: &[f64], drops: &[f64]) -> f64 {
    let aa: f64 = dots.iter().map(|d| d * d).sum();
    let ab: f64 = dots.iter().zip(drops).map(|(d, y)| d * y).sum();
    let bb: f64 = drops.iter().map(|y| y * y).sum();
    let beta = if aa == 0.0 { ab } else { ab / aa };
    (beta * beta * aa - 2.0 * beta * ab + bb) / dots.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_infidelity_is_the_residual_of_the_best_scaling() {
        // drops = 2·dots exactly: β = 2 and nothing is left.
        assert!(normalized_infidelity(&[1.0, -2.0, 0.5], &[2.0, -4.0, 1.0]).abs() < 1e-15);
        // dots (1, 1), drops (1, 3): β = 4/2 = 2, residuals (−1, 1), mean square 1.
        assert!((normalized_infidelity(&[1.0, 1.0], &[1.0, 3.0]) - 1.0).abs() < 1e-15);
        // All dots 0: Captum's safe_div divides by 1, β = Σ dot·drop = 0, the mean square drop.
        assert_eq!(normalized_infidelity(&[0.0, 0.0], &[1.0, 3.0]), 5.0);
    }

    #[test]
    fn the_noise_is_gaussian_of_sigma_and_keyed() {
        let m = Infidelity::default();
        let rows = m.noise(7, 42, 784);
        assert_eq!((rows.len(), rows[0].len()), (10, 784));
        let all: Vec<f64> = rows.concat().iter().map(|&v| f64::from(v)).collect();
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let sd = (all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (all.len() - 1) as f64).sqrt();
        // 7840 draws: the mean's standard error is 3.4e-5, the sd's 0.8 %.
        assert!(mean.abs() < 1.5e-4 && (sd / 0.003 - 1.0).abs() < 0.04, "mean {mean}, sd {sd}");
        assert_eq!(m.noise(7, 42, 784), rows);
        assert_ne!(m.noise(7, 43, 784), rows, "another image");
        assert_ne!(m.noise(8, 42, 784), rows, "another seed");
    }
}

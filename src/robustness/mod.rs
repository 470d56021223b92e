//! Sampling-based robustness of an attribution method at clean images: how far do the maps
//! move under small random noise that keeps the label?
//!
//! The attacks ([`crate::attack`]) search for the perturbation that moves a map most; the
//! estimates here are the random-noise baselines of the explanation-evaluation toolkits (Captum's
//! `sensitivity_max`, Quantus' robustness metrics), computed on the same images, so that the
//! damage an attack does can be set against what plain noise does, and the numbers compared with
//! those toolkits'.
//!
//! # Definitions
//!
//! For an image x (d = C·H·W pixels in [0, 1]) with clean prediction t (the `targets` passed to
//! [`estimate`]), raw attributions Φ(·) = `method.attribute(model, ·, t, Activation::Exact)`
//! (the method's own output, \[C,H,W\] or \[1,H,W\] per image: no absolute value, no channel
//! reduction, no normalisation), and N = `samples` noisy copies
//! x′ₖ = clip(x + uₖ, 0, 1), uₖ ~ Uniform(−r, r)^d independently per pixel, r = `radius`, with
//! δₖ = x′ₖ − x the effective (clipped) perturbation, ΔΦₖ = Φ(x′ₖ) − Φ(x), and K ⊆ {1..N} the
//! *kept* samples, those the real model (ReLU) still predicts as t:
//!
//! | column | estimate over k ∈ K | paper | range | more robust |
//! |---|---|---|---|---|
//! | `max_sensitivity` | maxₖ ‖ΔΦₖ‖₂ / ‖Φ(x)‖₂ | Yeh et al. 2019 | \[0, ∞) | lower |
//! | `avg_sensitivity` | meanₖ ‖ΔΦₖ‖₂ / ‖Φ(x)‖₂ | Yeh et al. 2019 | \[0, ∞) | lower |
//! | `local_lipschitz` | maxₖ ‖ΔΦₖ‖₂ / ‖δₖ‖₂ | Alvarez-Melis and Jaakkola 2018 | \[0, ∞) | lower |
//! | `relative_input_stability` | maxₖ ‖ΔΦₖ ⊘ Φ̃(x)‖₂ / max(‖δₖ ⊘ x̃‖₂, e_min) | Agarwal et al. 2022 | \[0, ∞) | lower |
//!
//! (Yeh, Hsieh, Suggala, Inouye and Ravikumar, "On the (in)fidelity and sensitivity of
//! explanations", NeurIPS 2019; Alvarez-Melis and Jaakkola, "On the robustness of
//! interpretability methods", ICML WHI 2018; Agarwal, Johnson, Pawelczyk, Krishna, Saxena,
//! Zitnik and Lakkaraju, "Rethinking stability for attribution-based explanations", 2022,
//! arXiv:2203.06877.)
//!
//! ‖·‖₂ is the Frobenius norm of the whole per-image tensor, computed in f64 from the f32
//! values. ⊘ is element-wise division, and Φ̃ = Φ + e·[Φ = 0], x̃ = x + e·[x = 0]: exact zeros
//! of the element-wise denominators are replaced by e = 1e-6 and every other entry is divided as
//! it is (so its sign is kept), which is what Quantus' `relative_input_stability_objective`
//! computes (`e_x + (e_x == 0) * eps_min`, and the same for x). e_min = 1e-6 floors the input
//! term as in Agarwal et al.'s definition and Quantus' docstring; Quantus' code adds e_min only
//! when that norm is exactly 0, which agrees with the max unless 0 < ‖δ ⊘ x̃‖₂ < 1e-6 (on pixels
//! in [0, 1] that needs every |δⱼ| < 1e-6·xⱼ). The constants are [`ratios::E`] and
//! [`ratios::E_MIN`]. Beware that on images with exact-zero pixels (Fashion-MNIST's background)
//! each moved zero pixel adds δⱼ/e to the input term, and each zero attribution that moves adds
//! its change / e to the output term, so these entries dominate RIS: compare RIS between methods
//! on the same images, not across datasets.
//!
//! # Conventions
//!
//! * **Clipping:** the noisy copies are clipped to [0, 1] (Captum and Quantus add the noise
//!   unclipped). The model was trained on [0, 1] and the attacks project onto the same set (the
//!   L∞ ball ∩ [0, 1]), so the noise explores the set the attacks search. δ is the clipped
//!   difference (on a zero pixel δⱼ = max(uⱼ, 0)); the Lipschitz and RIS denominators use it.
//! * **Excluded samples:** a sample whose prediction on the real model differs from the clean
//!   prediction t is dropped from every estimate; `kept_samples` = |K| counts the rest. (Captum
//!   keeps such samples; Quantus marks them NaN, and its `np.max` then makes the whole image
//!   NaN.) With |K| = 0 every estimate is `None`.
//! * **Other `None`s:** ‖Φ(x)‖₂ = 0 leaves both sensitivities undefined (`None`); a kept sample
//!   with δ = 0 (every pixel clipped back) is skipped by `local_lipschitz` (0/0), which is `None`
//!   when every kept sample has δ = 0; an estimate that meets a non-finite ratio (non-finite
//!   attributions) is `None`.
//! * **Seeding:** image i's noise is drawn from `seed::rng(seed::derive(seed, &[image_ids[i]]))`
//!   ([`noise`] returns it), so a row depends only on its image, its id and the settings, never
//!   on the batch. A method's own randomness (SmoothGrad, LIME) comes from the method's seed.
//!
//! # Shapes and cost
//!
//! `x` \[B,C,H,W\] → B rows. The B clean images and their B·N noisy copies go together, as one
//! tensor [B·(N+1),C,H,W] (clean rows first, then image 0's N copies, image 1's, ...), through
//! one `predict` call and one `method.attribute` call, which chunk internally; the clean rows'
//! predictions check that `targets` are the clean predictions.

pub mod ratios;
mod sample;

pub use ratios::{estimates, lipschitz, relative_input_stability, sensitivity, Estimates};
pub use sample::{noise, perturb};

use crate::attribution::Attribution;
use crate::error::{Error, Result};
use crate::model::{predict, Activation, Classifier};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// The output columns, in the order of [`RobustnessRow::values`]. Every one has range [0, ∞),
/// and lower means a more robust method (see the table in the module docs).
pub const ROBUSTNESS_COLUMNS: [&str; 4] =
    ["max_sensitivity", "avg_sensitivity", "local_lipschitz", "relative_input_stability"];

/// How the noisy copies are drawn (a `robustness` section in a config).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RobustnessSettings {
    /// Radius r of the L∞ ball the uniform noise is drawn from, on the pixels' [0, 1] scale
    /// (Captum's `perturb_radius`, default 0.02).
    pub radius: f64,
    /// Number N of noisy copies per image (Captum's `n_perturb_samples`, default 10).
    pub samples: usize,
    /// Seed of the noise; each image's stream is derived from it and the image's id.
    pub seed: u64,
}

impl Default for RobustnessSettings {
    fn default() -> Self {
        Self { radius: 0.02, samples: 10, seed: 0 }
    }
}

impl RobustnessSettings {
    /// Checks that `radius` is finite and positive and `samples` at least 1.
    pub fn validate(&self) -> Result<()> {
        if !(self.radius.is_finite() && self.radius > 0.0) {
            return Err(Error::Invalid(format!(
                "robustness.radius must be finite and > 0, got {}",
                self.radius
            )));
        }
        if self.samples == 0 {
            return Err(Error::Invalid("robustness.samples must be at least 1, got 0".into()));
        }
        Ok(())
    }
}

/// The robustness estimates of one method at one image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RobustnessRow {
    /// The image's id.
    pub image_id: u32,
    /// Max over the kept samples of ‖Φ(x′) − Φ(x)‖₂ / ‖Φ(x)‖₂.
    pub max_sensitivity: Option<f64>,
    /// Mean over the kept samples of ‖Φ(x′) − Φ(x)‖₂ / ‖Φ(x)‖₂.
    pub avg_sensitivity: Option<f64>,
    /// Max over the kept samples of ‖Φ(x) − Φ(x′)‖₂ / ‖x′ − x‖₂.
    pub local_lipschitz: Option<f64>,
    /// Max over the kept samples of the relative input stability ratio.
    pub relative_input_stability: Option<f64>,
    /// How many of the N noisy copies kept the clean prediction (the estimates' sample size).
    pub kept_samples: u32,
}

impl RobustnessRow {
    /// The four estimates in the order of [`ROBUSTNESS_COLUMNS`].
    pub fn values(&self) -> [Option<f64>; 4] {
        [self.max_sensitivity, self.avg_sensitivity, self.local_lipschitz, self.relative_input_stability]
    }
}

/// The robustness estimates of `method` at images `x` \[B,C,H,W\] (pixels in [0, 1]): one row per
/// image, in order. `image_ids` key each image's noise; `targets` must be the model's clean
/// predictions on `x` (as [`predict`] returns them), the classes the maps are computed for.
/// Fails on invalid settings, on mismatched lengths and when a target is not the clean
/// prediction.
pub fn estimate(
    model: &dyn Classifier,
    method: &dyn Attribution,
    x: &Tensor,
    image_ids: &[u32],
    targets: &[u32],
    settings: &RobustnessSettings,
) -> Result<Vec<RobustnessRow>> {
    settings.validate()?;
    let (b, c, h, w) = x.dims4()?;
    if image_ids.len() != b || targets.len() != b {
        return Err(Error::Invalid(format!(
            "robustness: {b} images but {} image ids and {} targets",
            image_ids.len(),
            targets.len()
        )));
    }
    let d = c * h * w;
    if b == 0 {
        return Ok(Vec::new());
    }
    if d == 0 {
        return Err(Error::Invalid(format!("robustness: empty images of shape [{c},{h},{w}]")));
    }
    let n = settings.samples;
    let clean = x.flatten_from(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let mut all = Vec::with_capacity(b * (n + 1) * d);
    for img in &clean {
        all.extend_from_slice(img);
    }
    for (img, &id) in clean.iter().zip(image_ids) {
        for u in noise(settings, id, d).chunks_exact(d) {
            all.extend(perturb(img, u));
        }
    }
    let rows = b * (n + 1);
    let batch = Tensor::from_slice(&all, (rows, c, h, w), x.device())?.to_dtype(x.dtype())?;
    let preds = predict(model, &batch)?;
    for (i, (&p, &t)) in preds.iter().zip(targets).enumerate() {
        if p != t {
            return Err(Error::Invalid(format!(
                "robustness: target {t} of image {} is not the model's prediction {p}; the \
                 estimates are defined at the clean prediction",
                image_ids[i]
            )));
        }
    }
    let mut reps = targets.to_vec();
    reps.extend(targets.iter().flat_map(|&t| std::iter::repeat_n(t, n)));
    let maps = method.attribute(model, &batch, &reps, Activation::Exact)?;
    if maps.dims().first() != Some(&rows) {
        return Err(Error::Invalid(format!(
            "robustness: method `{}` returned {:?} for {rows} images",
            method.name(),
            maps.dims()
        )));
    }
    let maps = maps.flatten_from(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let out = (0..b)
        .map(|i| {
            let kept: Vec<(&[f32], &[f32])> = (0..n)
                .map(|k| b + i * n + k)
                .filter(|&row| preds[row] == targets[i])
                .map(|row| (&all[row * d..(row + 1) * d], maps[row].as_slice()))
                .collect();
            let e = estimates(&clean[i], &maps[i], &kept);
            RobustnessRow {
                image_id: image_ids[i],
                max_sensitivity: e.max_sensitivity,
                avg_sensitivity: e.avg_sensitivity,
                local_lipschitz: e.local_lipschitz,
                relative_input_stability: e.relative_input_stability,
                kept_samples: u32::try_from(kept.len()).unwrap_or(u32::MAX),
            }
        })
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{Gradient, GradientXInput};
    use crate::model::{Backprop, Backward};
    use candle_core::Device;

    /// A linear classifier logits = x·Wᵀ + b on 1×4×4 images with two classes: class 0 has the
    /// weight `c` on every pixel, class 1 no weights and the bias `bias1`. Its gradient is
    /// constant in x, so gradient × input is c·x for class 0.
    struct Affine {
        w: Tensor, // [2,16]
        b: Tensor, // [2]
    }

    impl Affine {
        fn new(c: f32, bias1: f32) -> Self {
            let mut w = vec![c; 16];
            w.extend([0f32; 16]);
            Affine {
                w: Tensor::from_vec(w, (2, 16), &Device::Cpu).unwrap(),
                b: Tensor::new(&[0f32, bias1], &Device::Cpu).unwrap(),
            }
        }
    }

    impl Classifier for Affine {
        fn name(&self) -> &str {
            "affine"
        }
        fn input_shape(&self) -> (usize, usize, usize) {
            (1, 4, 4)
        }
        fn num_classes(&self) -> usize {
            2
        }
        fn device(&self) -> &candle_core::Device {
            self.w.device()
        }
        fn logits(&self, x: &Tensor, _act: Activation) -> Result<Tensor> {
            let b = x.dim(0)?;
            Ok(x.reshape((b, 16))?.matmul(&self.w.t()?)?.broadcast_add(&self.b)?)
        }
        fn backward(&self, x: &Tensor, pass: &Backward) -> Result<Backprop> {
            // No nonlinearity: every rule's backward pass is seed · W.
            let g = pass.seed.matmul(&self.w)?.reshape(x.shape())?;
            Ok(Backprop { logits: self.logits(x, pass.act)?, grad: g, layer: None })
        }
    }

    /// Images [B,1,4,4] from flattened pixel rows.
    fn batch(imgs: &[Vec<f32>]) -> Tensor {
        let flat: Vec<f32> = imgs.concat();
        Tensor::from_vec(flat, (imgs.len(), 1, 4, 4), &Device::Cpu).unwrap()
    }

    /// Interior images (pixels in [0.2, 0.8], never clipped by noise of radius ≤ 0.2).
    fn interior(k: usize) -> Vec<f32> {
        (0..16).map(|j| 0.2 + 0.6 * ((j * 7 + k * 3) % 16) as f32 / 15.0).collect()
    }

    fn norm(v: impl Iterator<Item = f64>) -> f64 {
        v.map(|a| a * a).sum::<f64>().sqrt()
    }

    /// Per-sample ‖δₖ‖₂ of image `x` with id `id`, δₖ = clip(x + uₖ) − x, recomputed from
    /// the sampler, with whether the sample is kept by `keep(x′)`.
    fn deltas(x: &[f32], id: u32, s: &RobustnessSettings, keep: impl Fn(&[f32]) -> bool) -> Vec<(f64, bool)> {
        noise(s, id, 16)
            .chunks_exact(16)
            .map(|u| {
                let xs = perturb(x, u);
                (norm(xs.iter().zip(x).map(|(&a, &b)| a as f64 - b as f64)), keep(&xs))
            })
            .collect()
    }

    fn rel_close(a: Option<f64>, b: f64, tol: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() <= tol * b.abs().max(1e-12))
    }

    #[test]
    fn gradient_is_exactly_stable_on_a_linear_model() {
        // The gradient of a linear logit is its weight row, whatever x: Φ(x′) = Φ(x) exactly,
        // so both sensitivities, the Lipschitz estimate and RIS (numerator 0) are 0.
        let model = Affine::new(-1.5, -100.0);
        let x = batch(&[interior(0), interior(1)]);
        let s = RobustnessSettings { radius: 0.05, samples: 10, seed: 3 };
        let rows = estimate(&model, &Gradient, &x, &[3, 8], &[0, 0], &s).unwrap();
        for r in rows {
            assert_eq!(r.values(), [Some(0.0); 4], "{r:?}");
            assert_eq!(r.kept_samples, 10);
        }
    }

    #[test]
    fn gradient_x_input_matches_closed_forms_on_a_linear_model() {
        // Class 0's logit is c·Σx with c = −1.5 (bias of class 1: −100, so class 0 always wins:
        // c·Σx ≥ −1.5·16 = −24). Gradient × input for class 0: Φ(x) = c·x. Hence
        // ‖Φ(x′) − Φ(x)‖ = |c|·‖δ‖ and ‖Φ(x)‖ = |c|·‖x‖, so each sample's sensitivity ratio is
        // ‖δₖ‖ / ‖x‖ (max and mean over the 10 samples), the Lipschitz ratio is |c| = 1.5 for
        // every sample, and with no zero in x or Φ(x), (Φ(x) − Φ(x′)) ⊘ Φ(x) = −δ ⊘ x =
        // (x − x′) ⊘ x, so RIS = 1 (the input term, ≈ 0.05·4/0.5, is far above e_min).
        let model = Affine::new(-1.5, -100.0);
        let imgs = [interior(0), interior(1)];
        let ids = [3u32, 8];
        let s = RobustnessSettings { radius: 0.05, samples: 10, seed: 3 };
        let rows = estimate(&model, &GradientXInput, &batch(&imgs), &ids, &[0, 0], &s).unwrap();
        for ((r, img), &id) in rows.iter().zip(&imgs).zip(&ids) {
            assert_eq!(r.image_id, id);
            assert_eq!(r.kept_samples, 10);
            let xn = norm(img.iter().map(|&v| v as f64));
            let ratios: Vec<f64> = deltas(img, id, &s, |_| true).iter().map(|(d, _)| d / xn).collect();
            let max = ratios.iter().copied().fold(0.0, f64::max);
            let mean = ratios.iter().sum::<f64>() / 10.0;
            // f32 rounding of c·x and c·x′ (≈ 6e-8 relative) against differences ≈ 0.03.
            assert!(rel_close(r.max_sensitivity, max, 1e-5), "{r:?} vs {max}");
            assert!(rel_close(r.avg_sensitivity, mean, 1e-5), "{r:?} vs {mean}");
            assert!(rel_close(r.local_lipschitz, 1.5, 1e-5), "{r:?}");
            assert!(rel_close(r.relative_input_stability, 1.0, 1e-4), "{r:?}");
        }
    }

    #[test]
    fn the_same_seed_reproduces_and_another_seed_differs() {
        let model = Affine::new(-1.5, -100.0);
        let x = batch(&[interior(0), interior(1)]);
        let s = RobustnessSettings { radius: 0.05, samples: 8, seed: 11 };
        let a = estimate(&model, &GradientXInput, &x, &[1, 2], &[0, 0], &s).unwrap();
        let b = estimate(&model, &GradientXInput, &x, &[1, 2], &[0, 0], &s).unwrap();
        assert_eq!(a, b);
        let other = RobustnessSettings { seed: 12, ..s };
        let c = estimate(&model, &GradientXInput, &x, &[1, 2], &[0, 0], &other).unwrap();
        for (p, q) in a.iter().zip(&c) {
            assert_ne!(p.max_sensitivity, q.max_sensitivity);
            assert_ne!(p.avg_sensitivity, q.avg_sensitivity);
        }
        // The image id keys the noise too: the same pixels under another id differ.
        let d = estimate(&model, &GradientXInput, &x, &[2, 1], &[0, 0], &s).unwrap();
        assert_ne!(a[0].avg_sensitivity, d[0].avg_sensitivity);
    }

    #[test]
    fn a_row_does_not_depend_on_the_batch_it_came_in() {
        // A batch of three equals three batches of one and the same batch reversed: the noise
        // is keyed by image id, not position.
        let model = Affine::new(-1.5, -100.0);
        let imgs = [interior(0), interior(1), interior(2)];
        let ids = [5u32, 9, 11];
        let s = RobustnessSettings { radius: 0.05, samples: 6, seed: 4 };
        let whole = estimate(&model, &GradientXInput, &batch(&imgs), &ids, &[0; 3], &s).unwrap();
        let rev: Vec<Vec<f32>> = imgs.iter().rev().cloned().collect();
        let rev_ids: Vec<u32> = ids.iter().rev().copied().collect();
        let mut reversed = estimate(&model, &GradientXInput, &batch(&rev), &rev_ids, &[0; 3], &s).unwrap();
        reversed.reverse();
        for i in 0..3 {
            let one = estimate(&model, &GradientXInput, &batch(&imgs[i..=i]), &ids[i..=i], &[0], &s).unwrap();
            for other in [&one[0], &reversed[i]] {
                assert_eq!(other.image_id, whole[i].image_id);
                assert_eq!(other.kept_samples, whole[i].kept_samples);
                for (a, b) in other.values().iter().zip(whole[i].values()) {
                    let (a, b) = (a.unwrap(), b.unwrap());
                    assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "image {i}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn samples_that_change_the_label_are_excluded() {
        // x = 0.5 everywhere sits just inside class 0: logit 0 = 2·Σx = 16, logit 1 = 15.95. A
        // noisy copy keeps class 0 iff 2·Σx′ > 15.95, i.e. Σδ > −0.025; with r = 0.05 the sum of
        // 16 draws has sd 0.05·√(16/3) ≈ 0.115, so about 40% of the samples flip (8 of 20 here). The
        // estimates must equal the closed forms of the gradient × input test (sensitivity
        // ‖δ‖/‖x‖, Lipschitz |c| = 2, RIS 1) over the kept samples only.
        let model = Affine::new(2.0, 15.95);
        let img = vec![0.5f32; 16];
        let s = RobustnessSettings { radius: 0.05, samples: 20, seed: 1 };
        let margin = |xs: &[f32]| 2.0 * xs.iter().map(|&v| v as f64).sum::<f64>() - 15.95;
        let ds = deltas(&img, 2, &s, |xs| margin(xs) > 0.0);
        // No sample so close to the boundary that f32 logits could decide it differently.
        for u in noise(&s, 2, 16).chunks_exact(16) {
            assert!(margin(&perturb(&img, u)).abs() > 1e-4);
        }
        let kept: Vec<f64> = ds.iter().filter(|(_, k)| *k).map(|(d, _)| d / 2.0).collect(); // ‖x‖ = 2
        assert!(!kept.is_empty() && kept.len() < 20, "{} kept", kept.len());

        let r = estimate(&model, &GradientXInput, &batch(&[img]), &[2], &[0], &s).unwrap()[0];
        assert_eq!(r.kept_samples as usize, kept.len());
        let max = kept.iter().copied().fold(0.0, f64::max);
        let mean = kept.iter().sum::<f64>() / kept.len() as f64;
        assert!(rel_close(r.max_sensitivity, max, 1e-5), "{r:?} vs {max}");
        assert!(rel_close(r.avg_sensitivity, mean, 1e-5), "{r:?} vs {mean}");
        assert!(rel_close(r.local_lipschitz, 2.0, 1e-5), "{r:?}");
        assert!(rel_close(r.relative_input_stability, 1.0, 1e-4), "{r:?}");
        // Over all 20 samples the mean would differ: the exclusion matters.
        let all_mean = ds.iter().map(|(d, _)| d / 2.0).sum::<f64>() / 20.0;
        assert!((all_mean - mean).abs() > 1e-4, "{all_mean} vs {mean}");
    }

    #[test]
    fn no_kept_sample_gives_no_estimates() {
        // x = 0: logit 0 = −Σx = 0 beats logit 1 = −1e-4. Clipping makes every noisy pixel
        // max(u, 0) ≥ 0, so −Σx′ < −1e-4 (class 1) unless nearly all 16 draws are negative:
        // with 10 samples, every one flips.
        let model = Affine::new(-1.0, -1e-4);
        let s = RobustnessSettings { radius: 0.05, samples: 10, seed: 2 };
        let r = estimate(&model, &GradientXInput, &batch(&[vec![0.0; 16]]), &[4], &[0], &s).unwrap()[0];
        assert_eq!(r.kept_samples, 0);
        assert_eq!(r.values(), [None; 4]);
    }

    #[test]
    fn a_zero_clean_map_has_no_sensitivity_but_a_lipschitz_estimate() {
        // x = 0 with class 0 always predicted (logit 0 = 100 − 1.5·Σx′ ≥ 98.8 > 0). Gradient ×
        // input: Φ(x) = 0, so the sensitivities are undefined. Φ(x′) = −1.5·x′ with
        // x′ = max(u, 0) = δ: Lipschitz ‖1.5·δ‖/‖δ‖ = 1.5; RIS divides both terms by e (x = 0,
        // Φ(x) = 0): ‖1.5·δ/e‖ / ‖δ/e‖ = 1.5.
        let mut model = Affine::new(-1.5, 0.0);
        model.b = Tensor::new(&[100f32, 0.0], &Device::Cpu).unwrap();
        let s = RobustnessSettings { radius: 0.05, samples: 10, seed: 2 };
        let r = estimate(&model, &GradientXInput, &batch(&[vec![0.0; 16]]), &[4], &[0], &s).unwrap()[0];
        assert_eq!(r.kept_samples, 10);
        assert_eq!((r.max_sensitivity, r.avg_sensitivity), (None, None));
        assert!(rel_close(r.local_lipschitz, 1.5, 1e-6), "{r:?}");
        assert!(rel_close(r.relative_input_stability, 1.5, 1e-6), "{r:?}");
    }

    #[test]
    fn settings_are_validated_and_deserialized_with_defaults() {
        assert!(RobustnessSettings::default().validate().is_ok());
        let d = RobustnessSettings::default();
        assert_eq!((d.radius, d.samples, d.seed), (0.02, 10, 0));
        for radius in [0.0, -0.1, f64::NAN, f64::INFINITY] {
            let err = RobustnessSettings { radius, ..d }.validate().unwrap_err();
            assert!(err.to_string().contains("robustness.radius"), "{err}");
        }
        let err = RobustnessSettings { samples: 0, ..d }.validate().unwrap_err();
        assert!(err.to_string().contains("robustness.samples"), "{err}");
        let s: RobustnessSettings = toml::from_str("radius = 0.05\nseed = 9").unwrap();
        assert_eq!(s, RobustnessSettings { radius: 0.05, samples: 10, seed: 9 });
        assert!(toml::from_str::<RobustnessSettings>("radius = 0.05\nsample = 3").is_err());
        // estimate validates too.
        let model = Affine::new(-1.5, -100.0);
        let x = batch(&[interior(0)]);
        let bad = RobustnessSettings { samples: 0, ..d };
        assert!(estimate(&model, &Gradient, &x, &[0], &[0], &bad).is_err());
    }

    #[test]
    fn mismatched_ids_and_targets_that_are_not_the_prediction_are_rejected() {
        let model = Affine::new(-1.5, -100.0);
        let x = batch(&[interior(0), interior(1)]);
        let s = RobustnessSettings::default();
        assert!(estimate(&model, &Gradient, &x, &[0], &[0, 0], &s).is_err());
        assert!(estimate(&model, &Gradient, &x, &[0, 1], &[0], &s).is_err());
        // Class 0 is predicted; class 1 is not the clean prediction.
        let err = estimate(&model, &Gradient, &x, &[0, 1], &[0, 1], &s).unwrap_err();
        assert!(err.to_string().contains("not the model's prediction"), "{err}");
        // An empty batch gives no rows.
        let empty = Tensor::zeros((0, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(estimate(&model, &Gradient, &empty, &[], &[], &s).unwrap().is_empty());
    }

    #[test]
    fn columns_name_the_row_values_in_order() {
        let r = RobustnessRow {
            image_id: 1,
            max_sensitivity: Some(1.0),
            avg_sensitivity: Some(2.0),
            local_lipschitz: Some(3.0),
            relative_input_stability: Some(4.0),
            kept_samples: 5,
        };
        let json = serde_json::to_value(r).unwrap();
        for (col, v) in ROBUSTNESS_COLUMNS.iter().zip(r.values()) {
            assert_eq!(json[col].as_f64(), v, "{col}");
        }
    }
}

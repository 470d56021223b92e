//! `top_k`: the top-k attack of Ghorbani, Abid and Zou (AAAI 2019).
//!
//! Minimises the attacked method's normalised saliency mass on the clean map's k most salient
//! pixels, D(x′) = Σ_{i ∈ K} s_i(x′) with s = |map| summed over channels / its total. The
//! direction is the exact gradient ∇D, taken through the softplus(β) surrogate: the map is the
//! model's explicit backward pass (a differentiable graph of x′), so one autograd `backward()`
//! of D gives the second derivative. Each step is
//! x ← Π(x − α·sign(∇D)), Π = projection onto the ε-ball around x₀ and [0,1].
//!
//! Every iterate is judged on the real (ReLU) model: one whose predicted class differs from
//! the target is never kept; among the others the one with the lowest top-k intersection with
//! the clean map (ties: lower mass on K) is the result. The clean image itself (iteration 0,
//! intersection 1) is the fallback. Shapes: rows [R,C,H,W]; maps [R,H·W].

use super::{linf_per_row, project, row_column, select_rows, Attack, AttackInput, Outcome};
use crate::attribution::{normalized_saliency, Attribution, MAX_ROWS_PER_PASS};
use crate::error::Result;
use crate::metric::top_k_indices;
use crate::model::{predict, Activation, Classifier};
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Settings of the top-k attack.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopKSettings {
    /// Size of the clean map's top set whose mass is minimised.
    pub k: usize,
    /// Number of sign-gradient steps.
    pub iterations: u32,
    /// Step size α as a fraction of ε.
    pub step: f64,
    /// β of the softplus surrogate used for the direction.
    pub beta: f64,
}

impl Default for TopKSettings {
    fn default() -> Self {
        Self { k: 100, iterations: 100, step: 0.1, beta: 10.0 }
    }
}

/// The top-k attack against one attribution method.
pub struct TopK {
    /// Its settings.
    pub settings: TopKSettings,
    /// The attacked method (the map whose top-k mass is minimised).
    pub method: Arc<dyn Attribution>,
}

/// Per-row top-k sets of flat maps [R][H·W], and their masks (1 on the set) [R,H·W].
fn top_sets(maps: &[Vec<f32>], k: usize) -> (Vec<Vec<usize>>, Vec<f32>) {
    let hw = maps.first().map_or(0, Vec::len);
    let mut mask = vec![0f32; maps.len() * hw];
    let sets = maps
        .iter()
        .enumerate()
        .map(|(r, m)| {
            let mut set = top_k_indices(m, k);
            set.sort_unstable(); // for binary search
            for &i in &set {
                mask[r * hw + i] = 1.0;
            }
            set
        })
        .collect();
    (sets, mask)
}

/// The attack objective D(x) = Σ_r Σ_{i ∈ K_r} s_{r,i}(x): the normalised saliency mass of
/// `method`'s map on each row's set K_r, given as a 0/1 `mask` [R,H·W]. A scalar tensor,
/// differentiable in `x` when `act` is the softplus surrogate.
pub fn top_k_objective(
    method: &dyn Attribution,
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    mask: &Tensor,
    act: Activation,
) -> Result<Tensor> {
    let attr = method.attribute(model, x, targets, act)?;
    let s = normalized_saliency(&attr)?.flatten_from(1)?;
    Ok(s.mul(mask)?.sum_all()?)
}

impl TopK {
    /// Real-model normalised saliency maps [R][H·W] of `x`.
    fn real_maps(&self, input: &AttackInput, x: &Tensor) -> Result<Vec<Vec<f32>>> {
        let attr = self.method.attribute(input.model, x, input.targets, Activation::Relu)?;
        Ok(normalized_saliency(&attr)?.flatten_from(1)?.to_vec2::<f32>()?)
    }
}

impl Attack for TopK {
    fn name(&self) -> &'static str {
        "top_k"
    }

    fn perturb(&self, input: &AttackInput) -> Result<Outcome> {
        let x0 = input.x;
        let rows = x0.dim(0)?;
        let k = self.settings.k;
        let clean = self.real_maps(input, x0)?;
        let (sets, mask) = top_sets(&clean, k);
        let hw = clean.first().map_or(0, Vec::len);
        let mask = Tensor::from_vec(mask, (rows, hw), x0.device())?;
        let alpha: Vec<f32> = input.eps.iter().map(|e| e * self.settings.step as f32).collect();
        let alpha = row_column(&alpha, x0)?;
        let surrogate = Activation::Softplus { beta: self.settings.beta };

        // Best label-keeping iterate so far: (intersection, mass on K); the clean image first.
        let mass_on = |m: &[f32], set: &[usize]| set.iter().map(|&i| m[i] as f64).sum::<f64>();
        let mut best = x0.clone();
        let mut score: Vec<(f64, f64)> = (0..rows).map(|r| (1.0, mass_on(&clean[r], &sets[r]))).collect();
        let mut iterations = vec![0u32; rows];
        let mut x = x0.clone();
        for it in 1..=self.settings.iterations {
            // The direction row chunk by row chunk: rows are independent, so each chunk's
            // objective has the same gradient as the whole sum, with smaller intermediates.
            let mut parts = Vec::new();
            for start in (0..rows).step_by(MAX_ROWS_PER_PASS) {
                let len = MAX_ROWS_PER_PASS.min(rows - start);
                let xv = Var::from_tensor(&x.narrow(0, start, len)?.detach())?;
                let objective = top_k_objective(
                    self.method.as_ref(),
                    input.model,
                    xv.as_tensor(),
                    &input.targets[start..start + len],
                    &mask.narrow(0, start, len)?,
                    surrogate,
                )?;
                let grads = objective.backward()?;
                // No gradient: the map does not depend on x here (e.g. a constant model).
                parts.push(match grads.get(xv.as_tensor()) {
                    Some(g) => g.clone(),
                    None => xv.as_tensor().zeros_like()?,
                });
            }
            let g = Tensor::cat(&parts, 0)?;
            let stepped = x.sub(&g.sign()?.broadcast_mul(&alpha)?)?;
            x = project(&stepped, x0, input.eps)?;

            let preds = predict(input.model, &x)?;
            let maps = self.real_maps(input, &x)?;
            let mut take = vec![false; rows];
            for r in 0..rows {
                if preds[r] != input.targets[r] {
                    continue;
                }
                let top = top_k_indices(&maps[r], k);
                let inter =
                    top.iter().filter(|i| sets[r].binary_search(i).is_ok()).count() as f64 / k.max(1) as f64;
                let cand = (inter, mass_on(&maps[r], &sets[r]));
                if cand.0 < score[r].0 || (cand.0 == score[r].0 && cand.1 < score[r].1) {
                    score[r] = cand;
                    iterations[r] = it;
                    take[r] = true;
                }
            }
            if take.iter().any(|&t| t) {
                best = select_rows(&take, &x, &best)?;
            }
        }
        let preds = predict(input.model, &best)?;
        let label_kept = preds.iter().zip(input.targets).map(|(p, t)| p == t).collect();
        let linf = linf_per_row(&best, x0)?;
        Ok(Outcome { x_adv: best, label_kept, iterations, linf })
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "k": self.settings.k, "iterations": self.settings.iterations,
            "step_fraction_of_eps": self.settings.step, "beta": self.settings.beta,
            "target_method": self.method.name(),
        })
    }
}

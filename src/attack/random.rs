//! `random_sign`: the random baseline of Ghorbani et al. (2019).
//!
//! x′ = clip(x + ε·sign(n), 0, 1) with n ~ N(0, I): a random corner of the L∞ ball. A draw that
//! changes the real model's label is discarded and redrawn, up to `tries` times; a row that
//! never keeps its label is reported with `label_kept = false` (its last draw is returned).

use super::{linf_per_row, project, row_column, select_rows, Attack, AttackInput, Outcome};
use crate::error::Result;
use crate::model::predict;
use crate::seed;
use candle_core::Tensor;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// Random sign perturbation with redraws.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RandomSign {
    /// Maximum number of draws per row.
    pub tries: u32,
}

impl Default for RandomSign {
    fn default() -> Self {
        Self { tries: 20 }
    }
}

impl Attack for RandomSign {
    fn name(&self) -> &'static str {
        "random_sign"
    }

    fn perturb(&self, input: &AttackInput) -> Result<Outcome> {
        let x0 = input.x;
        let rows = x0.dim(0)?;
        let per = x0.elem_count() / rows.max(1);
        let mut rngs: Vec<_> = input.seeds.iter().map(|&s| seed::rng(s)).collect();
        let mut best = x0.clone();
        let mut kept = vec![false; rows];
        let mut iterations = vec![0u32; rows];
        let tries = self.tries.max(1) as usize;
        for t in 0..tries {
            let pending: Vec<usize> = (0..rows).filter(|&r| !kept[r]).collect();
            if pending.is_empty() {
                break;
            }
            // Every row draws each try (so a row's draws depend only on its own seed); rows
            // already done ignore theirs.
            let mut signs = vec![0f32; rows * per];
            for (r, rng) in rngs.iter_mut().enumerate() {
                for s in &mut signs[r * per..(r + 1) * per] {
                    let z: f64 = StandardNormal.sample(rng);
                    *s = if z >= 0.0 { 1.0 } else { -1.0 };
                }
            }
            let signs = Tensor::from_vec(signs, x0.shape(), x0.device())?;
            let step = signs.broadcast_mul(&row_column(input.eps, x0)?)?;
            let candidate = project(&x0.add(&step)?, x0, input.eps)?;
            let preds = predict(input.model, &candidate)?;
            let mut take = vec![false; rows];
            for &r in &pending {
                iterations[r] += 1;
                if preds[r] == input.targets[r] {
                    kept[r] = true;
                }
                // Pending rows take this draw: the kept one, or the latest failed one.
                take[r] = true;
            }
            best = select_rows(&take, &candidate, &best)?;
            input.step(t + 1, tries);
        }
        let linf = linf_per_row(&best, x0)?;
        Ok(Outcome { x_adv: best, label_kept: kept, iterations, linf })
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "tries": self.tries })
    }
}

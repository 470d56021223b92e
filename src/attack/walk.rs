//! `random_walk`: the iterative random-sign walk of Ghorbani et al.'s reference code, the fair
//! baseline of the steered attacks.
//!
//! x ← Π(x + α·sign(n)), n ~ N(0, I) drawn afresh each iteration, with the same ε, step α and
//! iteration budget as a steered attack (Π: the ε-ball and [0,1]). Like the steered attacks
//! the walk continues through iterates that change the real model's label, and never returns
//! one: the result is the last label-keeping iterate (the clean image if there is none). It
//! is not steered by any objective, so it measures how far maps move under unguided
//! perturbations of the same size. Shapes: rows [R,C,H,W]; draws per row from the row's seed.

use super::steer::IterSettings;
use super::{linf_per_row, merge_rows, project, row_column, Attack, AttackInput, Outcome};
use crate::error::Result;
use crate::model::predict;
use crate::seed;
use candle_core::Tensor;
use rand_distr::{Distribution, StandardNormal};

/// The random-sign walk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomWalk {
    /// Iterations and step (the other fields of the shared settings do not apply).
    pub settings: IterSettings,
}

impl Attack for RandomWalk {
    fn name(&self) -> &'static str {
        "random_walk"
    }

    fn perturb(&self, input: &AttackInput) -> Result<Outcome> {
        let x0 = input.x;
        let rows = x0.dim(0)?;
        let per = x0.elem_count() / rows.max(1);
        let mut rngs: Vec<_> = input.seeds.iter().map(|&s| seed::rng(s)).collect();
        let alpha: Vec<f32> = input.eps.iter().map(|&e| self.settings.alpha(e)).collect();
        let alpha = row_column(&alpha, x0)?.to_dtype(x0.dtype())?;
        let all: Vec<usize> = (0..rows).collect();
        let mut x = x0.clone();
        let mut last = x0.clone();
        let mut iterations = vec![0u32; rows];
        for it in 1..=self.settings.iterations {
            let mut signs = vec![0f32; rows * per];
            for (r, rng) in rngs.iter_mut().enumerate() {
                for s in &mut signs[r * per..(r + 1) * per] {
                    let z: f64 = StandardNormal.sample(rng);
                    *s = if z >= 0.0 { 1.0 } else { -1.0 };
                }
            }
            let signs = Tensor::from_vec(signs, x0.shape(), x0.device())?.to_dtype(x0.dtype())?;
            x = project(&x.add(&signs.broadcast_mul(&alpha)?)?, x0, input.eps)?;
            let preds = predict(input.model, &x)?;
            let kept: Vec<usize> = all.iter().copied().filter(|&r| preds[r] == input.targets[r]).collect();
            iterations.fill(it);
            if !kept.is_empty() {
                let idx: Vec<u32> = kept.iter().map(|&r| r as u32).collect();
                let idx = Tensor::from_vec(idx, kept.len(), x0.device())?;
                last = merge_rows(&last, &kept, &x.index_select(&idx, 0)?)?;
            }
            input.step(it as usize, self.settings.iterations as usize);
        }
        let preds = predict(input.model, &last)?;
        let label_kept = preds.iter().zip(input.targets).map(|(p, t)| p == t).collect();
        let linf = linf_per_row(&last, x0)?;
        Ok(Outcome { x_adv: last, label_kept, iterations, linf })
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "iterations": self.settings.iterations, "step": self.settings.step })
    }
}

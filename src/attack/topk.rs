//! `top_k`: the top-k attack of Ghorbani, Abid and Zou (AAAI 2019).
//!
//! Minimises the attacked map's normalised mass on the clean map's k most salient pixels,
//! D(x′) = Σ_{i ∈ K} s_i(x′). Iterates are ranked on the real model by their top-k
//! intersection with the clean map (ties: the lower mass on K). The reported measure,
//! `topk_mass`, is the mass on K in [0, 1] (lower: the map moved more). Shapes: maps [n,H·W].
//! An unset k is [`auto_k`] of the image size (100 on 28×28), resolved when the maps are known
//! and recorded as `"auto"` in the settings.

use super::objective::{set_mask, Goal, Objective, PrepareContext};
use crate::error::Result;
use crate::metric::{auto_k, top_k_indices, Direction};
use candle_core::Tensor;

/// The top-k objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopKObjective {
    /// Size of the clean map's top set; `None`: [`auto_k`] of the image size.
    pub k: Option<usize>,
}

impl TopKObjective {
    /// The k used on an h×w image: the configured one, or [`auto_k`]`(h, w)`.
    pub fn resolved(&self, h: usize, w: usize) -> usize {
        self.k.unwrap_or_else(|| auto_k(h, w))
    }
}

struct TopKGoal {
    k: usize,
    sets: Vec<Vec<usize>>, // sorted
    mask: Tensor,          // [R,H·W]
}

impl TopKGoal {
    fn mass(&self, r: usize, map: &[f32]) -> f64 {
        self.sets[r].iter().map(|&i| map[i] as f64).sum()
    }
}

impl Goal for TopKGoal {
    fn loss(&self, s: &Tensor, rows: &Tensor) -> Result<Tensor> {
        Ok(s.mul(&self.mask.index_select(rows, 0)?.to_dtype(s.dtype())?)?.sum_all()?)
    }

    fn rank(&self, r: usize, map: &[f32]) -> (f64, f64) {
        let top = top_k_indices(map, self.k);
        let hits = top.iter().filter(|i| self.sets[r].binary_search(i).is_ok()).count();
        (hits as f64 / self.k.max(1) as f64, self.mass(r, map))
    }

    fn measure(&self, r: usize, map: &[f32]) -> f64 {
        self.mass(r, map)
    }
}

impl Objective for TopKObjective {
    fn name(&self) -> &'static str {
        "top_k"
    }

    fn measure_name(&self) -> &'static str {
        "topk_mass"
    }

    fn measure_direction(&self) -> Direction {
        Direction::HigherIsMoreSimilar
    }

    fn prepare(&self, cx: &PrepareContext) -> Result<Box<dyn Goal>> {
        let k = self.resolved(cx.h, cx.w);
        let sets: Vec<Vec<usize>> = cx
            .clean
            .iter()
            .map(|m| {
                let mut set = top_k_indices(m, k);
                set.sort_unstable();
                set
            })
            .collect();
        let mask = set_mask(&sets, cx.h * cx.w, cx.device)?;
        Ok(Box::new(TopKGoal { k, sets, mask }))
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "k": self.k.map_or(serde_json::json!("auto"), |k| serde_json::json!(k)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_k_scales_with_the_image_and_a_given_one_is_kept() {
        let auto = TopKObjective { k: None };
        assert_eq!(auto.resolved(28, 28), 100);
        assert_eq!(auto.resolved(64, 64), 522);
        assert_eq!(auto.resolved(224, 224), 6400);
        assert_eq!(auto.resolved(1, 1), 1);
        assert_eq!(auto.params()["k"], "auto");
        // The paper's ImageNet protocol: k = 1000 of 224×224, not 6,400.
        let given = TopKObjective { k: Some(1000) };
        assert_eq!(given.resolved(224, 224), 1000);
        assert_eq!(given.resolved(28, 28), 1000);
        assert_eq!(given.params()["k"], 1000);
    }
}

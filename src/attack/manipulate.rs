//! `manipulate`: make the map match a chosen target map (Dombrowski et al., NeurIPS 2019,
//! "Explanations can be manipulated and geometry is to blame").
//!
//! Loss = MSE(H·W·s(x′), H·W·t) + γ‖softmax(x′) − softmax(x)‖², minimised with Adam while the
//! softplus β of the surrogate grows geometrically (10 → 100 by default); γ and the optimiser
//! live in the shared iteration settings ([`super::IterSettings`]). s and t are normalised
//! maps (sum one); scaling both by H·W (mean one) makes the map term independent of the image
//! size, and γ = 25 then reproduces Dombrowski et al.'s weights (10¹¹ on the MSE of sum-one
//! 224×224 maps, 10⁶ on the MSE of 1000 class probabilities: 10¹¹/224⁴ ≈ 40 against
//! 10⁶/1000 = 1000, a ratio of 25). The target t is another image's map under the attacked
//! method (the image given by its index in the data file, explained for its own predicted
//! class), or a map from a file. Iterates are ranked on the real model by the map MSE; the
//! reported measure, `target_mse`, is that MSE before and after the attack (lower: closer to
//! the target). Shapes: maps [n,H·W], target [1,H·W].

use super::objective::{normalized, Goal, Objective, PrepareContext};
use crate::attribution::normalized_saliency;
use crate::error::{Error, Result};
use crate::metric::Direction;
use crate::model::{predict, Activation};
use candle_core::Tensor;

/// Where the target map comes from.
#[derive(Debug, Clone)]
pub enum TargetMap {
    /// Another image's map under the attacked method.
    Image {
        /// Its index in the data file.
        id: usize,
        /// The image [1,C,H,W].
        pixels: Tensor,
    },
    /// A map from a file (its |values| are normalised to sum to one).
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Values, row-major.
        data: Vec<f32>,
        /// Height.
        h: usize,
        /// Width.
        w: usize,
    },
}

/// The manipulation objective.
#[derive(Debug, Clone)]
pub struct ManipulateObjective {
    /// The target map's source.
    pub target: TargetMap,
}

struct TargetGoal {
    hw: f64,
    target: Vec<f32>,
    t: Tensor, // [1,H·W]
}

impl TargetGoal {
    fn mse(&self, map: &[f32]) -> f64 {
        let n = self.target.len().max(1) as f64;
        map.iter().zip(&self.target).map(|(&a, &b)| ((a as f64 - b as f64) * self.hw).powi(2)).sum::<f64>()
            / n
    }
}

impl Goal for TargetGoal {
    fn loss(&self, s: &Tensor, _rows: &Tensor) -> Result<Tensor> {
        let d = s.broadcast_sub(&self.t.to_dtype(s.dtype())?)?.affine(self.hw, 0.0)?;
        Ok(d.sqr()?.mean(1)?.sum_all()?)
    }

    fn rank(&self, _r: usize, map: &[f32]) -> (f64, f64) {
        (self.mse(map), 0.0)
    }

    fn measure(&self, _r: usize, map: &[f32]) -> f64 {
        self.mse(map)
    }
}

impl Objective for ManipulateObjective {
    fn name(&self) -> &'static str {
        "manipulate"
    }

    fn measure_name(&self) -> &'static str {
        "target_mse"
    }

    fn measure_direction(&self) -> Direction {
        Direction::HigherIsMoreSimilar
    }

    fn prepare(&self, cx: &PrepareContext) -> Result<Box<dyn Goal>> {
        let hw = cx.h * cx.w;
        let target = match &self.target {
            TargetMap::Image { id, pixels } => {
                let (_, _, h, w) = pixels.dims4()?;
                if (h, w) != (cx.h, cx.w) {
                    return Err(Error::Invalid(format!(
                        "attack `manipulate`: target image {id} is {h}×{w} as `[data]` prepares it, the \
                         model's maps are {}×{} (a model with its own resize or crop: give `target_map`)",
                        cx.h, cx.w
                    )));
                }
                let pixels = pixels.to_device(cx.device)?;
                let class = predict(cx.model, &pixels)?;
                let attr = cx.method.attribute(cx.model, &pixels, &class, Activation::Exact)?;
                normalized_saliency(&attr)?
                    .flatten_all()?
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1::<f32>()?
            }
            TargetMap::File { path, data, h, w } => {
                if (*h, *w) != (cx.h, cx.w) {
                    return Err(Error::data(
                        path,
                        format!("target map is {h}×{w}, the model's maps are {}×{}", cx.h, cx.w),
                    ));
                }
                normalized(&data.iter().map(|v| v.abs()).collect::<Vec<_>>())
            }
        };
        if target.len() != hw {
            return Err(Error::Invalid(format!("target map has {} pixels, expected {hw}", target.len())));
        }
        let t = Tensor::from_vec(target.clone(), (1, hw), cx.device)?;
        Ok(Box::new(TargetGoal { hw: hw as f64, target, t }))
    }

    fn params(&self) -> serde_json::Value {
        match &self.target {
            TargetMap::Image { id, .. } => serde_json::json!({ "target_image": id }),
            TargetMap::File { path, .. } => serde_json::json!({ "target_map": path }),
        }
    }
}

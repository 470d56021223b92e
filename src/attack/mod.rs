//! Label-keeping attacks on attribution maps.
//!
//! An attack perturbs images within an L∞ ball of radius ε (and the valid pixel range [0,1])
//! so that the real (ReLU) model's predicted class stays the same while the attribution map
//! moves (Ghorbani, Abid and Zou, AAAI 2019; Dombrowski et al., NeurIPS 2019). Every attack is
//! batched over *rows*: a row is one image under one budget ε, so a run stacks all ε of a
//! chunk of images into one batch. Shapes: `x` [R,C,H,W]; per-row ε, target class and seed.
//!
//! * Unsteered baselines: `random_sign` (one random corner of the ball, redrawn until the label
//!   is kept) and `random_walk` (the iterative random-sign walk).
//! * Steered attacks ([`Steered`]: one loop, [`steer`]) with an [`Objective`] each: `top_k`,
//!   `mass_center`, `targeted` (Ghorbani et al.) and `manipulate` (Dombrowski et al.), against
//!   any method whose map is differentiable through the softplus surrogate
//!   ([`crate::attribution::Attribution::differentiable`]).

mod center;
mod manipulate;
mod objective;
mod project;
mod random;
mod steer;
mod targeted;
mod topk;
mod walk;

pub use center::MassCenterObjective;
pub use manipulate::{ManipulateObjective, TargetMap};
pub use objective::{normalized, Goal, Objective, PrepareContext};
pub use project::project;
pub use random::RandomSign;
pub use steer::{objective_gradient, objective_loss, IterSettings, Optimizer, Steered, Step};
pub use targeted::{Region, TargetedObjective};
pub use topk::TopKObjective;
pub use walk::RandomWalk;

use crate::attribution::Attribution;
use crate::error::Result;
use crate::model::Classifier;
use candle_core::Tensor;

/// The rows to attack.
pub struct AttackInput<'a> {
    /// The real model (its softplus surrogate is used where an attack needs second derivatives).
    pub model: &'a dyn Classifier,
    /// Clean images [R,C,H,W], pixels in [0,1].
    pub x: &'a Tensor,
    /// L∞ budget of each row, on the [0,1] pixel scale.
    pub eps: &'a [f32],
    /// The class each row must keep (the clean prediction).
    pub targets: &'a [u32],
    /// A seed per row (derived from the run seed, the image id, the attack and ε).
    pub seeds: &'a [u64],
    /// The attacked method's clean maps of `x`, normalised to sum to one per row ([R][H·W],
    /// [`crate::attribution::normalized_saliency`] of the real model's map), where the caller
    /// has computed them already (a study does in its first stage); `None`: a steered attack
    /// computes them itself. Unused by the unsteered attacks.
    pub clean: Option<&'a [Vec<f32>]>,
    /// Called after each step (iteration, or draw) with the steps done and the total, for the
    /// run's progress line; `None`: nobody is watching.
    pub progress: Option<&'a (dyn Fn(usize, usize) + Sync)>,
}

impl AttackInput<'_> {
    /// Reports `done` of `total` steps to the progress callback, if any.
    pub fn step(&self, done: usize, total: usize) {
        if let Some(f) = self.progress {
            f(done, total);
        }
    }
}

/// What an attack produced, per row.
pub struct Outcome {
    /// Perturbed images [R,C,H,W].
    pub x_adv: Tensor,
    /// Whether the real model still predicts the target class on `x_adv`.
    pub label_kept: Vec<bool>,
    /// Iterations (draws, for `random_sign`) the attack ran on the row.
    pub iterations: Vec<u32>,
    /// ‖x_adv − x‖∞ actually used.
    pub linf: Vec<f32>,
}

/// A label-keeping perturbation method.
pub trait Attack: Send + Sync {
    /// The name used in configs and tables (`top_k`).
    fn name(&self) -> &'static str;
    /// Perturbs every row of `input`.
    fn perturb(&self, input: &AttackInput) -> Result<Outcome>;
    /// The attack's settings, for the run's metadata.
    fn params(&self) -> serde_json::Value;
    /// The objective a steered attack optimises (its measure is reported for every row).
    fn objective(&self) -> Option<&dyn Objective> {
        None
    }
    /// The method whose map a steered attack steers.
    fn target_method(&self) -> Option<&dyn Attribution> {
        None
    }
    /// Checks that the attack can run on `model`, before anything is computed.
    fn check(&self, _model: &dyn Classifier, _hw: (usize, usize)) -> Result<()> {
        Ok(())
    }
}

/// Names of the attacks this build knows.
pub const ATTACK_NAMES: [&str; 6] =
    ["random_sign", "random_walk", "top_k", "mass_center", "targeted", "manipulate"];

/// Per-row ‖a − b‖∞ of two [R,...] tensors.
pub fn linf_per_row(a: &Tensor, b: &Tensor) -> Result<Vec<f32>> {
    Ok(a.sub(b)?.abs()?.flatten_from(1)?.max(1)?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?)
}

/// `full` [R,...] with rows `rows` replaced by the rows of `new` [n,...], in order. Rows are
/// copied exactly (one gather), so a projected row stays exactly inside its box.
pub(crate) fn merge_rows(full: &Tensor, rows: &[usize], new: &Tensor) -> Result<Tensor> {
    let r = full.dim(0)?;
    let mut ids: Vec<u32> = (0..r as u32).collect();
    for (j, &i) in rows.iter().enumerate() {
        ids[i] = (r + j) as u32;
    }
    let ids = Tensor::from_vec(ids, r, full.device())?;
    Ok(Tensor::cat(&[full, new], 0)?.index_select(&ids, 0)?)
}

/// Row-wise choice between two [R,...] tensors: row r of `new` where `take[r]`, else of `old`.
pub(crate) fn select_rows(take: &[bool], new: &Tensor, old: &Tensor) -> Result<Tensor> {
    let rows: Vec<usize> = (0..take.len()).filter(|&r| take[r]).collect();
    let ids: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    let ids = Tensor::from_vec(ids, rows.len(), new.device())?;
    merge_rows(old, &rows, &new.index_select(&ids, 0)?)
}

/// A per-row scalar column [R,1,1,1] for broadcasting against images.
pub(crate) fn row_column(values: &[f32], like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::from_vec(values.to_vec(), (values.len(), 1, 1, 1), like.device())?)
}

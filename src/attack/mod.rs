//! Label-keeping attacks on attribution maps.
//!
//! An attack perturbs images within an L∞ ball of radius ε (and the valid pixel range [0,1])
//! so that the real (ReLU) model's predicted class stays the same while the attribution map
//! moves as much as possible (Ghorbani, Abid and Zou, AAAI 2019). Every attack is batched over
//! *rows*: a row is one image under one budget ε, so a run stacks all ε of a chunk of images
//! into one batch. Shapes: `x` [R,C,H,W]; per-row ε, target class and seed.

mod project;
mod random;
mod topk;

pub use project::project;
pub use random::RandomSign;
pub use topk::{top_k_objective, TopK, TopKSettings};

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
}

/// What an attack produced, per row.
pub struct Outcome {
    /// Perturbed images [R,C,H,W].
    pub x_adv: Tensor,
    /// Whether the real model still predicts the target class on `x_adv`.
    pub label_kept: Vec<bool>,
    /// Iterations (or tries) used to reach `x_adv`.
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
}

/// Names of the attacks this build knows.
pub const ATTACK_NAMES: [&str; 2] = ["random_sign", "top_k"];

/// Per-row ‖a − b‖∞ of two [R,...] tensors.
pub fn linf_per_row(a: &Tensor, b: &Tensor) -> Result<Vec<f32>> {
    Ok(a.sub(b)?.abs()?.flatten_from(1)?.max(1)?.to_vec1::<f32>()?)
}

/// Row-wise choice between two [R,...] tensors: row r of `new` where `take[r]`, else of `old`.
pub(crate) fn select_rows(take: &[bool], new: &Tensor, old: &Tensor) -> Result<Tensor> {
    let t: Vec<f32> = take.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
    let t = row_column(&t, new)?;
    Ok(new.broadcast_mul(&t)?.add(&old.broadcast_mul(&t.affine(-1.0, 1.0)?)?)?)
}

/// A per-row scalar column [R,1,1,1] for broadcasting against images.
pub(crate) fn row_column(values: &[f32], like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::from_vec(values.to_vec(), (values.len(), 1, 1, 1), like.device())?)
}

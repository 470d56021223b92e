//! Attribution methods: one relevance score per input pixel for one prediction.
//!
//! Every method implements [`Attribution`]: images `x` [B,C,H,W] and one target class per image
//! in, raw attributions [B,C,H,W] out (before any channel reduction). [`saliency`] is the one
//! post-processing that turns them into the maps the metrics and attacks use: |attribution|
//! summed over channels, [B,H,W], as in Ghorbani, Abid and Zou (AAAI 2019).
//!
//! All backpropagation-based methods go through one helper, [`target_backward`] (with
//! [`target_gradient`] its plain-gradient case), which chunks the model's explicit backward
//! pass; the perturbation methods share [`surrogate`] (LIME, KernelSHAP) and the chunked
//! forward pass. Passing [`Activation::Softplus`] computes the
//! same map on the smooth surrogate, as a differentiable function of `x`: that is how the
//! attacks get exact second-order directions.

mod ablation_cam;
mod attention;
mod attention_rollout;
pub mod beta_smooth;
mod cam;
mod chefer;
mod deeplift;
mod eigen_cam;
mod forward_cam;
mod gradcam;
mod gradient;
mod guided;
mod integrated;
mod lime;
mod lrp;
mod occlusion;
mod score_cam;
mod shap;
pub mod slic;
mod smoothgrad;
pub mod surrogate;

pub use ablation_cam::AblationCam;
pub use attention_rollout::{AttentionRollout, HeadFusion};
pub use beta_smooth::BetaSmooth;
pub use cam::CamWeighting;
pub use chefer::Chefer;
pub use deeplift::DeepLift;
pub use eigen_cam::EigenCam;
pub use gradcam::{bilinear_matrix, GradCam, GuidedGradCam};
pub use gradient::{Gradient, GradientXInput};
pub use guided::{Deconvnet, GuidedBackprop};
pub use integrated::{quadrature, IntegratedGradients, Quadrature, SteerSteps, DEFAULT_STEER_STEPS};
pub use lime::Lime;
pub use lrp::Lrp;
pub use occlusion::Occlusion;
pub use score_cam::ScoreCam;
pub use shap::KernelShap;
pub use slic::slic;
pub use smoothgrad::{Aggregate, NoiseSettings, NoiseTunnel};
pub use surrogate::Segmentation;

use crate::error::{Error, Result};
use crate::model::{one_hot, Activation, Backward, Classifier, Rule};
use candle_core::Tensor;
use std::sync::Arc;

pub use crate::model::MAX_ROWS_PER_PASS;

/// An attribution method.
pub trait Attribution: Send + Sync {
    /// The name used in configs and file names (`integrated_gradients`).
    fn name(&self) -> &str;
    /// Raw attributions [B,C,H,W] of `x` [B,C,H,W] for the classes `targets` (one per image),
    /// computed through the model with activation `act`.
    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor>;
    /// The method's hyperparameters, for the run's metadata.
    fn params(&self) -> serde_json::Value;
    /// Checks that the method can run on `model` (e.g. that a named layer exists), so that a
    /// run fails before computing anything.
    fn check(&self, _model: &dyn Classifier) -> Result<()> {
        Ok(())
    }
    /// Whether the map computed with [`Activation::Softplus`] is a differentiable function of
    /// `x` (a candle graph through the explicit backward pass), so that attacks can steer it
    /// directly; each such method is checked against finite differences in the tests. The
    /// others (occlusion, LIME, KernelSHAP) are only ever attacked by transfer.
    fn differentiable(&self) -> bool {
        false
    }
    /// Whether the map reads the derivatives of the network's nonlinearities (so that
    /// replacing them, as zennit's β-smoothing does, changes it). By default, whether it is
    /// differentiable (computed by backpropagation); LRP (relevance passes nonlinearities
    /// unchanged) and DeepLIFT (multipliers from the function's values) do not.
    fn reads_derivatives(&self) -> bool {
        self.differentiable()
    }
    /// A cheaper stand-in that steered attacks take their direction from and rank their
    /// iterates by, where the method has one (integrated gradients with `steer_steps` path
    /// points); the maps a study measures stay the method's own. `None`: the method itself.
    fn steering(&self) -> Option<Arc<dyn Attribution>> {
        None
    }
    /// How many backward passes one image's map costs (integrated gradients: its steps; a
    /// noise tunnel: its samples × the wrapped method's). Attacks size their second-order
    /// chunks by it: the autograd graph of a chunk holds every pass, so memory grows with it.
    fn passes_per_image(&self) -> usize {
        1
    }
    /// [`Attribution::attribute`] with the method's own randomness drawn from `anchor` (one
    /// image per row of `x`, the clean images) instead of from `x`. Attacks use it so that a
    /// noise tunnel's noise stays fixed over the iterations; deterministic methods ignore it.
    fn attribute_anchored(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        _anchor: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor> {
        self.attribute(model, x, targets, act)
    }

    /// The anchored map and, where the method's own pass computes them at `x`, the model's
    /// logits [B,K] there (a caller that needs both saves a forward pass). By default the
    /// map alone.
    fn attribute_with_logits(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        anchor: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok((self.attribute_anchored(model, x, anchor, targets, act)?, None))
    }

    /// Whether [`Attribution::map_then_vjp`] is implemented. Steered attacks then take their
    /// direction from it (no autograd graph) instead of from autograd through the map. Asked
    /// before the call, since the fallback needs the map's graph from the start (and a noise
    /// tunnel asks its wrapped method).
    fn has_map_vjp(&self) -> bool {
        false
    }

    /// The anchored map m [B,C,H,W] (Grad-CAM: [B,1,H,W]), then v = `loss_grad(m)` (shaped
    /// like m), then the vector–Jacobian product ∇ₓ Σ ⟨m(x), v⟩ [B,C,H,W] with v held fixed,
    /// through the model's explicit adjoints ([`Classifier::backward_adjoint`]): the direction
    /// of a loss of the map, as steered attacks take it. Where the map and the product share
    /// a model pass, they are computed in one. A `loss_grad` that ignores m and returns a
    /// fixed v gives the plain product ∇ₓ⟨m, v⟩. Only where [`Attribution::has_map_vjp`].
    #[allow(clippy::too_many_arguments)]
    fn map_then_vjp(
        &self,
        _model: &dyn Classifier,
        _x: &Tensor,
        _anchor: &Tensor,
        _targets: &[u32],
        _act: Activation,
        _loss_grad: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        Err(Error::Invalid(format!("method `{}` has no vector–Jacobian product", self.name())))
    }
}

/// The names of every method this build knows, in the order docs/methods.md lists them.
pub const METHOD_NAMES: [&str; 26] = [
    "gradient",
    "gradient_x_input",
    "integrated_gradients",
    "smoothgrad",
    "smoothgrad_sq",
    "vargrad",
    "guided_backprop",
    "deconvnet",
    "deeplift",
    "lrp_epsilon_plus",
    "lrp_epsilon_plus_flat",
    "lrp_epsilon_gamma_box",
    "lrp_epsilon_alpha2_beta1",
    "lrp_epsilon_alpha2_beta1_flat",
    "grad_cam",
    "grad_cam_plus_plus",
    "xgrad_cam",
    "hires_cam",
    "layer_cam",
    "score_cam",
    "eigen_cam",
    "ablation_cam",
    "guided_grad_cam",
    "occlusion",
    "lime",
    "kernel_shap",
];

/// The methods that read a vision transformer's attention (attention rollout, Chefer et al.'s
/// rule), in the order docs/methods.md lists them: they run only on models with attention
/// (their `check` refuses the others), so they are listed apart from [`METHOD_NAMES`], which
/// every model runs.
pub const ATTENTION_METHOD_NAMES: [&str; 2] = ["attention_rollout", "chefer"];

/// Gradient of each image's target logit with respect to the input: [B,C,H,W].
///
/// The one gradient helper every gradient-based method uses. Inputs with more than
/// [`MAX_ROWS_PER_PASS`] rows are processed in chunks (results are identical, since rows are
/// independent).
pub fn target_gradient(
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    act: Activation,
) -> Result<Tensor> {
    target_backward(model, x, targets, act, Rule::Gradient)
}

/// The target logits' gradients g at points `p` [N,C,H,W] and the Hessian–vector products
/// H(p)·u for `u` [N,C,H,W] (true gradient rule), [`MAX_ROWS_PER_PASS`] rows at a time.
pub fn target_hessian_vector(
    model: &dyn Classifier,
    p: &Tensor,
    targets: &[u32],
    u: &Tensor,
    act: Activation,
) -> Result<(Tensor, Tensor)> {
    let n = p.dim(0)?;
    if targets.len() != n || u.dims() != p.dims() {
        return Err(Error::Invalid(format!(
            "{} targets and vectors {:?} for points {:?}",
            targets.len(),
            u.dims(),
            p.dims()
        )));
    }
    let parts = row_passes(n, targets, rows_for(model, p)?, |start, len| {
        let g = one_hot(&targets[start..start + len], model.num_classes(), model.device())?
            .to_dtype(p.dtype())?;
        model.hessian_vector(&p.narrow(0, start, len)?, &g, &u.narrow(0, start, len)?, act)
    })?;
    cat_pairs(parts)
}

/// [`target_gradient`] with a modified backward rule through the ReLUs (guided backprop,
/// deconvnet): [B,C,H,W].
pub fn target_backward(
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    act: Activation,
    rule: Rule,
) -> Result<Tensor> {
    Ok(target_backward_with_logits(model, x, targets, act, rule)?.1)
}

/// [`target_backward`] and the logits [B,K] its forward pass computed on the way.
pub fn target_backward_with_logits(
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    act: Activation,
    rule: Rule,
) -> Result<(Tensor, Tensor)> {
    let parts = row_passes(x.dim(0)?, targets, rows_for(model, x)?, |start, len| {
        let g = one_hot(&targets[start..start + len], model.num_classes(), model.device())?
            .to_dtype(x.dtype())?;
        model.input_gradient(&x.narrow(0, start, len)?, &g, act, rule)
    })?;
    cat_pairs(parts)
}

/// The backward-pass map of each image's target under `rule` — M = g, or with
/// `times_input` M = g ⊙ (x − x₀) — then v = `loss_grad(M)`, then ∇ₓ⟨M(x), v⟩ with v held
/// fixed, through the model's explicit adjoint ([`Classifier::backward_adjoint`]):
/// ∇ₓ⟨g, v⟩ is the adjoint of v, and ∇ₓ⟨g ⊙ (x − x₀), v⟩ = v ⊙ g + the adjoint of
/// (x − x₀) ⊙ v. `baseline` x₀ ([1,C,H,W]) is the rescale rule's reference and, for
/// `times_input`, the point the map is measured from (zero when `None`). [B,C,H,W].
#[allow(clippy::too_many_arguments)]
pub fn backward_map_then_vjp(
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    act: Activation,
    rule: Rule,
    baseline: Option<&Tensor>,
    times_input: bool,
    loss_grad: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let seed = one_hot(targets, model.num_classes(), model.device())?.to_dtype(x.dtype())?;
    let pass = Backward { rule, baseline, ..Backward::gradient(&seed, act) };
    let delta = match baseline {
        Some(b) if times_input => x.broadcast_sub(b)?,
        _ => x.clone(),
    };
    let mut kept = None;
    let (bp, xbar) = model.backward_adjoint(x, &pass, &mut |bp| {
        if !times_input {
            return Ok((loss_grad(&bp.grad)?, None));
        }
        let v = loss_grad(&bp.grad.mul(&delta)?)?;
        let u = delta.mul(&v)?;
        kept = Some(v);
        Ok((u, None))
    })?;
    match kept {
        Some(v) => Ok(v.mul(&bp.grad)?.add(&xbar)?),
        None => Ok(xbar),
    }
}

/// Applies `f` to slices of [`Classifier::rows_per_pass`] rows of `x` (and their targets) and concatenates
/// the results: identical to one call, since rows are independent, with bounded memory.
pub fn in_passes<F>(model: &dyn Classifier, x: &Tensor, targets: &[u32], f: F) -> Result<Tensor>
where
    F: Fn(&Tensor, &[u32]) -> Result<Tensor>,
{
    let parts = row_passes(x.dim(0)?, targets, rows_for(model, x)?, |start, len| {
        f(&x.narrow(0, start, len)?, &targets[start..start + len])
    })?;
    cat_rows(parts)
}

/// Runs `f(start, len)` over consecutive slices of at most `rows` of `n` rows,
/// after checking that there is one target per row: the one chunking loop of the passes above.
fn row_passes<T>(
    n: usize,
    targets: &[u32],
    rows: usize,
    f: impl FnMut(usize, usize) -> Result<T>,
) -> Result<Vec<T>> {
    if targets.len() != n {
        return Err(Error::Invalid(format!("{} targets for {n} images", targets.len())));
    }
    let mut f = f;
    let rows = rows.max(1);
    (0..n).step_by(rows).map(|start| f(start, rows.min(n - start))).collect()
}

/// The rows per pass of `model` for images shaped like `x`.
fn rows_for(model: &dyn Classifier, x: &Tensor) -> Result<usize> {
    let (_, _, h, w) = x.dims4()?;
    Ok(model.rows_per_pass(h, w))
}

/// Concatenates row slices (one slice is returned as it is, without a copy).
fn cat_rows(mut parts: Vec<Tensor>) -> Result<Tensor> {
    if parts.len() == 1 {
        return Ok(parts.remove(0));
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// [`cat_rows`] for passes that return two tensors.
fn cat_pairs(parts: Vec<(Tensor, Tensor)>) -> Result<(Tensor, Tensor)> {
    let (a, b): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    Ok((cat_rows(a)?, cat_rows(b)?))
}

/// Saliency maps [B,H,W]: |attribution| summed over channels (the paper's post-processing).
pub fn saliency(attr: &Tensor) -> Result<Tensor> {
    Ok(attr.abs()?.sum(1)?)
}

/// [`saliency`] as flat f32 rows [B][H·W], the form tables, metrics and checks read.
pub fn saliency_rows(attr: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(saliency(attr)?.flatten_from(1)?.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?)
}

/// [`saliency`] of one signed row [C·H·W] (channel-major) of planes of `hw` = H·W values: the
/// flat map [H·W], |a| summed over the row's C = len/hw channels in order (for rows already out
/// of their tensor: the example panels). C is the map's own: 1 for the CAM family's maps of a
/// 3-channel image.
pub fn saliency_of_row(row: &[f32], hw: usize) -> Vec<f32> {
    let channels = row.len() / hw.max(1);
    (0..hw).map(|p| (0..channels).map(|k| row[k * hw + p].abs()).sum()).collect()
}

/// The signed attributions [B,C,H,W] as flat f32 rows [B][C·H·W] (channel-major, as PyTorch
/// lays them out): what measures that read the sign or the channels (faithfulness correlation,
/// infidelity, the signed Spearman of the sanity checks) are given.
pub fn attribution_rows(attr: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(attr.flatten_from(1)?.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?)
}

/// Saliency maps normalised to sum to one per image, [B,H,W] (the maps attack objectives use).
/// An all-zero map stays zero rather than becoming NaN.
pub fn normalized_saliency(attr: &Tensor) -> Result<Tensor> {
    let s = saliency(attr)?;
    let (b, h, w) = s.dims3()?;
    let total = s.reshape((b, h * w))?.sum_keepdim(1)?;
    // An all-zero map (a rectified Grad-CAM) divides by one: no 0/0, and no gradient of
    // 1/ε size that would meet a zero derivative downstream as inf·0 = NaN.
    let empty = total.le(0.0)?;
    let total = empty.where_cond(&total.ones_like()?, &total)?;
    Ok(s.reshape((b, h * w))?.broadcast_div(&total)?.reshape((b, h, w))?)
}

/// The noise-tunnel methods, which wrap another method.
pub const NOISE_METHODS: [&str; 3] = ["smoothgrad", "smoothgrad_sq", "vargrad"];

/// Builds a method by name with its default hyperparameters (configs override them through
/// [`crate::config`]).
pub fn by_name(name: &str, seed: u64) -> Option<Box<dyn Attribution>> {
    if let Some(kind) = CamWeighting::by_name(name) {
        return Some(Box::new(GradCam::of(kind)));
    }
    if let Some(kind) = crate::model::lrp::CompositeKind::by_name(name) {
        return Some(Box::new(Lrp::of(kind)));
    }
    match name {
        "gradient" => Some(Box::new(Gradient)),
        "gradient_x_input" => Some(Box::new(GradientXInput)),
        "integrated_gradients" => Some(Box::new(IntegratedGradients::default())),
        "smoothgrad" => Some(Box::new(NoiseTunnel::smoothgrad(seed))),
        "smoothgrad_sq" | "vargrad" => {
            let aggregate = if name == "vargrad" { Aggregate::Variance } else { Aggregate::MeanSquare };
            Some(Box::new(NoiseTunnel::new(aggregate, NoiseSettings::default(), seed, Arc::new(Gradient))))
        }
        "guided_backprop" => Some(Box::new(GuidedBackprop)),
        "deconvnet" => Some(Box::new(Deconvnet)),
        "guided_grad_cam" => Some(Box::new(GuidedGradCam::default())),
        "score_cam" => Some(Box::new(ScoreCam::default())),
        "eigen_cam" => Some(Box::new(EigenCam::default())),
        "ablation_cam" => Some(Box::new(AblationCam::default())),
        "attention_rollout" => Some(Box::new(AttentionRollout::default())),
        "chefer" => Some(Box::new(Chefer)),
        "deeplift" => Some(Box::new(DeepLift)),
        "occlusion" => Some(Box::new(Occlusion::default())),
        "lime" => Some(Box::new(Lime { seed, ..Lime::default() })),
        "kernel_shap" => Some(Box::new(KernelShap { seed, ..KernelShap::default() })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_saliency_is_the_tensor_saliency() {
        let data: Vec<f32> = (0..2 * 3 * 4 * 5).map(|i| (i as f32 * 0.37).sin()).collect();
        let t = Tensor::from_vec(data, (2, 3, 4, 5), &candle_core::Device::Cpu).unwrap();
        let want = saliency_rows(&t).unwrap();
        for (row, want) in attribution_rows(&t).unwrap().iter().zip(&want) {
            assert_eq!(&saliency_of_row(row, 4 * 5), want);
        }
        // A one-channel map (a CAM) of the same planes is its own saliency, in absolute value.
        let cam: Vec<f32> = (0..20).map(|i| (i as f32 * 0.37).sin()).collect();
        assert_eq!(saliency_of_row(&cam, 20), cam.iter().map(|v| v.abs()).collect::<Vec<_>>());
    }
}

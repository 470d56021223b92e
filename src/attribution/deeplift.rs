//! DeepLIFT with the rescale rule (Shrikumar, Greenside and Kundaje, ICML 2017).
//!
//! DL(x) = (x − x₀) ⊙ m(x), where m is the backward pass of logit_t with every nonlinearity's
//! derivative replaced by the multiplier (act(z) − act(z₀)) / (z − z₀) — z₀ its pre-activation
//! on the baseline x₀ — falling back to the plain derivative where |z − z₀| < 1e-6; max-pooling
//! routes the multiplier to the arg-max of the real input; linear layers and convolutions are
//! linear, so their multipliers are their weights. Baseline x₀ = 0. Shapes: [B,C,H,W] →
//! [B,C,H,W]. Summation-to-delta (Σ DL = logit_t(x) − logit_t(x₀)) holds exactly where the
//! pooling arg-maxes of x and x₀ agree; elsewhere it is approximate.
//!
//! Difference from Captum 0.9: Captum's DeepLift treats max-pooling with its own rescale of
//! the pooled outputs' difference; we route to the real input's arg-max, as Ghorbani et al.'s
//! reference code does.

use super::{backward_map_then_vjp, in_passes, Attribution};
use crate::error::Result;
use crate::model::{one_hot, Activation, Classifier, Rule};
use candle_core::Tensor;

/// DeepLIFT (rescale rule) with a zero baseline.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeepLift;

impl Attribution for DeepLift {
    fn reads_derivatives(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "deeplift"
    }

    fn differentiable(&self) -> bool {
        true
    }

    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor> {
        in_passes(model, x, targets, |xs, ts| {
            let g = one_hot(ts, model.num_classes(), model.device())?.to_dtype(xs.dtype())?;
            let (_, c, h, w) = xs.dims4()?;
            let baseline = candle_core::Tensor::zeros((1, c, h, w), xs.dtype(), xs.device())?;
            let m = model.rescale_gradient(xs, &baseline, &g, act)?;
            Ok(m.mul(&xs.broadcast_sub(&baseline)?)?)
        })
    }

    fn has_map_vjp(&self) -> bool {
        true
    }

    /// DL = m ⊙ (x − x₀): ∇ₓ⟨DL, v⟩ = v ⊙ m + the rescale pass's adjoint of (x − x₀) ⊙ v.
    fn map_then_vjp(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        _anchor: &Tensor,
        targets: &[u32],
        act: Activation,
        loss_grad: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let baseline = Tensor::zeros((1, c, h, w), x.dtype(), x.device())?;
        backward_map_then_vjp(model, x, targets, act, Rule::Rescale, Some(&baseline), true, loss_grad)
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "rule": "rescale", "baseline": "zero" })
    }
}

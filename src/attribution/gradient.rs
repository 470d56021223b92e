//! Vanilla gradient (Simonyan et al. 2014) and gradient × input (Shrikumar et al. 2016).
//!
//! `gradient`: ∂ logit_t / ∂x, the pre-softmax logit of the target class, as in Ghorbani et
//! al.'s reference code. `gradient_x_input`: x ⊙ ∂ logit_t / ∂x. Both [B,C,H,W].

use super::target_backward_with_logits;
use super::{backward_map_then_vjp, target_gradient, Attribution};
use crate::error::Result;
use crate::model::Rule;
use crate::model::{Activation, Classifier};
use candle_core::Tensor;

/// The gradient of the target logit with respect to the input.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gradient;

impl Attribution for Gradient {
    fn name(&self) -> &'static str {
        "gradient"
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
        target_gradient(model, x, targets, act)
    }

    fn has_map_vjp(&self) -> bool {
        true
    }

    fn attribute_with_logits(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        _anchor: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (logits, g) = target_backward_with_logits(model, x, targets, act, Rule::Gradient)?;
        Ok((g, Some(logits)))
    }

    /// One pass: the map g is the gradient the Hessian–vector product starts from;
    /// ∇ₓ⟨g(x), v⟩ = H(x)·v (the Hessian of the target logit is symmetric).
    fn map_then_vjp(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        _anchor: &Tensor,
        targets: &[u32],
        act: Activation,
        loss_grad: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        backward_map_then_vjp(model, x, targets, act, Rule::Gradient, None, false, loss_grad)
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

/// The input times the gradient of the target logit.
#[derive(Debug, Clone, Copy, Default)]
pub struct GradientXInput;

impl Attribution for GradientXInput {
    fn name(&self) -> &'static str {
        "gradient_x_input"
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
        Ok(target_gradient(model, x, targets, act)?.mul(x)?)
    }

    fn has_map_vjp(&self) -> bool {
        true
    }

    fn attribute_with_logits(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        _anchor: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (logits, g) = target_backward_with_logits(model, x, targets, act, Rule::Gradient)?;
        Ok((g.mul(x)?, Some(logits)))
    }

    /// One pass: the map x ⊙ g from the gradient g, then v, then
    /// ∇ₓ⟨x ⊙ g(x), v⟩ = v ⊙ g + H·(x ⊙ v).
    fn map_then_vjp(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        _anchor: &Tensor,
        targets: &[u32],
        act: Activation,
        loss_grad: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        backward_map_then_vjp(model, x, targets, act, Rule::Gradient, None, true, loss_grad)
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

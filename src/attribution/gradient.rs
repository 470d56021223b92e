//! Vanilla gradient (Simonyan et al. 2014) and gradient × input (Shrikumar et al. 2016).
//!
//! `gradient`: ∂ logit_t / ∂x, the pre-softmax logit of the target class, as in Ghorbani et
//! al.'s reference code. `gradient_x_input`: x ⊙ ∂ logit_t / ∂x. Both [B,C,H,W].

use super::{target_gradient, Attribution};
use crate::error::Result;
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

    fn params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

//! Guided backpropagation (Springenberg et al. 2015) and deconvnet (Zeiler and Fergus 2014).
//!
//! Both are the backward pass of the target logit with a modified rule at every ReLU
//! ([`Rule`]): guided backprop passes only positive gradients, and only where the forward
//! input was positive; deconvnet passes the positive part of the gradient whatever the forward
//! input. Max-pooling routes to the arg-max as usual (the "switches" of Zeiler and Fergus).
//! Shapes: x [B,C,H,W] → [B,C,H,W]. Through the softplus surrogate the forward-input factor
//! becomes sigmoid(βz), so guided backprop stays differentiable in x; deconvnet's map depends
//! on x only through the pooling switches, so it has no useful gradient for attacks.
//!
//! At a nonlinearity other than ReLU (ReLU6, leaky ReLU, sigmoid, tanh, SiLU, GELU,
//! HardSigmoid, HardSwish) the same rules apply: guided backprop is relu(g)·φ′(z) with the
//! function's own derivative, deconvnet relu(g). Captum's `GuidedBackprop` and
//! `Deconvolution` override only `nn.ReLU` modules and backpropagate every other activation's
//! plain gradient, so on a SiLU or GELU network without ReLUs Captum's guided backprop is the
//! gradient, while ours gates every nonlinearity; on ReLU networks the two agree (see
//! [`crate::model::nonlinearity`]).

use super::{backward_map_then_vjp, target_backward, target_backward_with_logits, Attribution};
use crate::error::Result;
use crate::model::{Activation, Classifier, Rule};
use candle_core::Tensor;

/// Guided backpropagation.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuidedBackprop;

impl Attribution for GuidedBackprop {
    fn name(&self) -> &'static str {
        "guided_backprop"
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
        target_backward(model, x, targets, act, Rule::Guided)
    }

    fn attribute_with_logits(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        _anchor: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (logits, g) = target_backward_with_logits(model, x, targets, act, Rule::Guided)?;
        Ok((g, Some(logits)))
    }

    fn has_map_vjp(&self) -> bool {
        true
    }

    fn map_then_vjp(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        _anchor: &Tensor,
        targets: &[u32],
        act: Activation,
        loss_grad: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        backward_map_then_vjp(model, x, targets, act, Rule::Guided, None, false, loss_grad)
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

/// Zeiler and Fergus's deconvnet.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deconvnet;

impl Attribution for Deconvnet {
    fn name(&self) -> &'static str {
        "deconvnet"
    }

    // The deconvnet map depends on x only through the max-pool routing (its ReLU rule looks at
    // the backward signal, never at the forward activations): piecewise constant, nothing to
    // steer with gradients. It is attacked by transfer only.
    fn differentiable(&self) -> bool {
        false
    }

    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor> {
        target_backward(model, x, targets, act, Rule::Deconvnet)
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

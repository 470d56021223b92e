//! Layer-wise relevance propagation under zennit's composites (Bach et al. 2015; Montavon et
//! al. 2019; zennit 0.5.1): `lrp_epsilon_plus`, `lrp_epsilon_plus_flat`,
//! `lrp_epsilon_gamma_box`, `lrp_epsilon_alpha2_beta1`, `lrp_epsilon_alpha2_beta1_flat`.
//!
//! The map is the relevance at the input, seeded with the target logit (zennit's
//! `attr_output` = one-hot ⊙ logits), so that it sums to the logit where every rule conserves
//! (no biases, ε → 0). The rules, the composites and what each op does are in
//! [`crate::model::lrp`]. Shapes: x [B,C,H,W] → [B,C,H,W].
//!
//! Attackable (Dombrowski et al., NeurIPS 2019, attack LRP maps): the relevance pass has an
//! explicit adjoint, smooth under the softplus surrogate.

use super::{backward_map_then_vjp, target_backward, target_backward_with_logits, Attribution};
use crate::error::{Error, Result};
use crate::model::lrp::{Composite, CompositeKind};
use crate::model::{Activation, Classifier, Rule};
use candle_core::Tensor;

/// LRP under one composite with its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lrp {
    /// The composite and its settings.
    pub composite: Composite,
}

impl Lrp {
    /// `kind` with zennit's default settings.
    pub fn of(kind: CompositeKind) -> Self {
        Self { composite: Composite::of(kind) }
    }

    fn rule(&self) -> Rule {
        Rule::Lrp(self.composite)
    }
}

impl Attribution for Lrp {
    fn reads_derivatives(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        self.composite.kind.name()
    }

    fn differentiable(&self) -> bool {
        true
    }

    fn check(&self, _model: &dyn Classifier) -> Result<()> {
        self.composite.validate().map_err(|e| Error::Invalid(format!("{}: {e}", self.name())))
    }

    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor> {
        target_backward(model, x, targets, act, self.rule())
    }

    fn attribute_with_logits(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        _anchor: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (logits, r) = target_backward_with_logits(model, x, targets, act, self.rule())?;
        Ok((r, Some(logits)))
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
        backward_map_then_vjp(model, x, targets, act, self.rule(), None, false, loss_grad)
    }

    fn params(&self) -> serde_json::Value {
        let c = &self.composite;
        let mut p = serde_json::json!({ "epsilon": c.epsilon, "stabilizer": c.stabilizer });
        if c.kind == CompositeKind::EpsilonGammaBox {
            p["gamma"] = serde_json::json!(c.gamma);
            p["low"] = serde_json::json!(c.low);
            p["high"] = serde_json::json!(c.high);
        }
        // Only where set: a run recorded before the setting existed stays the same study.
        if let Some(f) = c.first_layer {
            p["first_layer"] = serde_json::json!(f);
        }
        p
    }
}

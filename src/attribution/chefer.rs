//! Chefer, Gur and Wolf, "Generic attention-model explainability for interpreting bi-modal
//! and encoder-decoder transformers" (ICCV 2021): the self-attention rule, for vision
//! transformers (their ViT notebook's `generate_relevance`).
//!
//! Why: rollout weighs every head and token alike, whatever the class; this rule keeps only
//! the attention that raises the target's logit, by weighting each probability with its
//! gradient, so the map is class-specific.
//!
//! With A_l [B, heads, T, T] the probabilities of attention layer l (query × key) and ∇A_l
//! the gradient of the target's logit with respect to them: R = I [T,T]; for each layer in
//! forward order, Ā_l = mean over heads of relu(∇A_l ⊙ A_l), R ← R + Ā_l·R. The map is the
//! class token's row over the patches, R[0, 1:], on the patch grid, upsampled to the input,
//! [B,1,H,W] ([`super::attention`]). Not scaled to [0, 1].
//!
//! Differentiable to second order: the map reads A_l and ∇A_l, and the model's adjoint of
//! each layer's stopped pass carries both partial derivatives to the input, as Grad-CAM's
//! does for its layer; relu is differentiable wherever no product ∇A_l ⊙ A_l crosses zero.

use super::attention::{AttentionLayers, AttentionRule};
use super::Attribution;
use crate::error::{Error, Result};
use crate::model::Classifier;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// Chefer et al.'s relevance for self-attention (no settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chefer;

impl AttentionRule for Chefer {
    fn method(&self) -> &'static str {
        "chefer"
    }

    fn reads_gradients(&self) -> bool {
        true
    }

    fn relevance(&self, a: &[Tensor], g: &[Tensor]) -> Result<Tensor> {
        let first = a.first().ok_or_else(|| Error::Invalid("chefer: no layers".into()))?;
        let (b, _, t, _) = first.dims4()?;
        let mut r = Tensor::eye(t, first.dtype(), first.device())?.broadcast_as((b, t, t))?.contiguous()?;
        for (al, gl) in a.iter().zip(g) {
            let weighted = gl.mul(al)?.relu()?.mean(1)?;
            r = r.add(&weighted.matmul(&r)?)?;
        }
        Ok(r)
    }
}

impl Attribution for Chefer {
    fn name(&self) -> &'static str {
        "chefer"
    }

    super::attention::attention_passes!();

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "upsampling": "bilinear, align_corners = false" })
    }

    fn check(&self, model: &dyn Classifier) -> Result<()> {
        let (_, h, w) = model.input_shape();
        AttentionLayers::of(self.method(), model, (h, w)).map(|_| ())
    }
}

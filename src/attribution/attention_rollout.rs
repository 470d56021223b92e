//! Attention rollout (Abnar and Zuidema, "Quantifying attention flow in transformers", ACL
//! 2020), as jacobgil/vit-explain applies it to vision transformers (and Chefer et al. 2021
//! use it as a baseline): how much of each patch's embedding the class token's final
//! representation mixes in, following the attention of every layer and the residual path.
//!
//! Per attention layer l, with A_l [B, heads, T, T] its probabilities (query × key):
//! F_l = the heads fused (`head_fusion`: mean, max or min over heads); optionally the
//! smallest `discard_ratio`·T² entries of F_l set to zero per image (never the class token's
//! attention to itself, entry (0, 0), as vit-explain); Â_l = ½·F_l + ½·I (the residual
//! connection), each row divided by its sum; R = Â_L ⋯ Â_1. The map is the class token's row
//! over the patches, R[0, 1:], on the patch grid, upsampled to the input, [B,1,H,W]
//! ([`super::attention`]). Not scaled to [0, 1] as vit-explain does (the fragility metrics are
//! rank-based or scale-free). The map does not depend on the target class.
//!
//! Differentiable: rollout reads only the forward values A_l, so its input gradient is the
//! model's adjoint of each layer's probabilities. The fusions max and min are differentiable
//! almost everywhere (the arg-max head takes the gradient), and so is the discard: its
//! choice of entries is a mask held fixed, exact wherever no two entries swap order.

use super::attention::{AttentionLayers, AttentionRule};
use super::Attribution;
use crate::error::{Error, Result};
use crate::model::Classifier;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// How rollout fuses the heads of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadFusion {
    /// The mean over heads (vit-explain's and Abnar and Zuidema's default).
    #[default]
    Mean,
    /// The maximum over heads.
    Max,
    /// The minimum over heads.
    Min,
}

/// Attention rollout.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttentionRollout {
    /// How the heads of a layer are fused.
    pub head_fusion: HeadFusion,
    /// The fraction of each fused layer's T² entries, the smallest, set to zero (0: none).
    pub discard_ratio: f64,
}

impl AttentionRollout {
    /// Refuses a discard ratio outside [0, 1).
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(0.0..1.0).contains(&self.discard_ratio) {
            return Err(format!("`discard_ratio` must be in [0, 1), got {}", self.discard_ratio));
        }
        Ok(())
    }

    /// F [B,T,T] of one layer's probabilities `a` [B,heads,T,T].
    fn fuse(&self, a: &Tensor) -> Result<Tensor> {
        Ok(match self.head_fusion {
            HeadFusion::Mean => a.mean(1)?,
            HeadFusion::Max => a.max(1)?,
            HeadFusion::Min => a.min(1)?,
        })
    }

    /// F with its smallest `discard_ratio`·T² entries per image set to zero, (0, 0) kept: the
    /// entries chosen on the values, then a fixed 0/1 mask multiplied in.
    fn discard(&self, f: &Tensor) -> Result<Tensor> {
        let (b, t, _) = f.dims3()?;
        let n = ((t * t) as f64 * self.discard_ratio) as usize;
        if n == 0 {
            return Ok(f.clone());
        }
        let rows = f.detach().flatten_from(1)?.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        let mut mask = vec![1f32; b * t * t];
        for (row, m) in rows.iter().zip(mask.chunks_exact_mut(t * t)) {
            let mut order: Vec<usize> = (0..t * t).collect();
            order.sort_by(|&p, &q| row[p].total_cmp(&row[q]));
            order.iter().take(n).filter(|&&p| p != 0).for_each(|&p| m[p] = 0.0);
        }
        let mask = Tensor::from_vec(mask, (b, t, t), f.device())?.to_dtype(f.dtype())?;
        Ok(f.mul(&mask)?)
    }
}

impl AttentionRule for AttentionRollout {
    fn method(&self) -> &'static str {
        "attention_rollout"
    }

    fn reads_gradients(&self) -> bool {
        false
    }

    fn relevance(&self, a: &[Tensor], _g: &[Tensor]) -> Result<Tensor> {
        let first = a.first().ok_or_else(|| Error::Invalid("attention_rollout: no layers".into()))?;
        let (b, _, t, _) = first.dims4()?;
        let eye = Tensor::eye(t, first.dtype(), first.device())?.broadcast_as((b, t, t))?.contiguous()?;
        let mut r = eye.clone();
        for al in a {
            let f = self.discard(&self.fuse(al)?)?;
            let f = f.add(&eye)?.affine(0.5, 0.0)?;
            let f = f.broadcast_div(&f.sum_keepdim(2)?)?;
            r = f.matmul(&r)?;
        }
        Ok(r)
    }
}

impl Attribution for AttentionRollout {
    fn name(&self) -> &'static str {
        "attention_rollout"
    }

    super::attention::attention_passes!();

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "head_fusion": self.head_fusion,
            "discard_ratio": self.discard_ratio,
            "upsampling": "bilinear, align_corners = false",
        })
    }

    fn check(&self, model: &dyn Classifier) -> Result<()> {
        self.validate().map_err(|e| Error::Invalid(format!("attention_rollout: {e}")))?;
        let (_, h, w) = model.input_shape();
        AttentionLayers::of(self.method(), model, (h, w)).map(|_| ())
    }
}

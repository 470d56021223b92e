//! One token of a token map as a flat vector: the class token's final state, which feeds a
//! vision transformer's classifier (torchvision's `x[:, 0]` before `heads`; Dosovitskiy et
//! al. 2021, "An image is worth 16x16 words", eq. 4).
//!
//! Shapes: Map(D, T, 1) → Flat(D) (a token map, see [`crate::model::shape::Shape`]), the
//! token at row `index`. Linear: tangent = forward; the vector–Jacobian product puts the
//! gradient back at row `index`, zeros elsewhere. Backward rules: every rule passes it by its
//! gradient; LRP too ([`super::Relevance::Gradient`], conserving). Occlusion: its output is
//! flat, so it is part of the head.
//!
//! Layout on the CPU: a block [D, n, T] becomes rows [n, D].

use super::{CpuCx, CpuKept, Layer, TensorCx, TensorKept};
use crate::error::Result;
use crate::model::kernels::Buf;
use crate::model::shape::Shape;
use candle_core::Tensor;
use std::sync::Arc;

/// The token at row `index`, flat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectToken {
    /// The token's row (0: the class token).
    pub index: usize,
}

impl Layer for SelectToken {
    fn kind(&self) -> &'static str {
        "select_token"
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        let [x] = ins else { return Err(format!("takes 1 input, got {}", ins.len())) };
        let (d, t, w) = x.map()?;
        if w != 1 {
            return Err(format!("needs a token map D×T×1, got {x}"));
        }
        if self.index >= t {
            return Err(format!("selects token {} of {t}", self.index));
        }
        Ok(Shape::Flat(d))
    }

    fn tensor_forward(
        &self,
        _cx: &mut TensorCx,
        ins: &[&Tensor],
        _rank: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok((ins[0].narrow(2, self.index, 1)?.flatten_from(1)?, None))
    }

    fn tensor_vjp(&self, cx: &mut TensorCx, g: &Tensor, _kept: &TensorKept) -> Result<Vec<Tensor>> {
        let (d, t, _) = cx.ins[0].map().map_err(|m| cx.error(m))?;
        let b = cx.batch;
        let zeros = |n: usize| Tensor::zeros((b, d, n, 1), g.dtype(), g.device());
        // The gradient between the zeros of the other tokens (a concatenation, so that the
        // pass stays differentiable); empty parts left out.
        let (before, after) = (self.index, t - self.index - 1);
        let mut parts = Vec::with_capacity(3);
        if before > 0 {
            parts.push(zeros(before)?);
        }
        parts.push(g.reshape((b, d, 1, 1))?);
        if after > 0 {
            parts.push(zeros(after)?);
        }
        Ok(vec![Tensor::cat(&parts, 2)?])
    }

    fn cpu_forward(
        &self,
        cx: &mut CpuCx,
        ins: &[&Buf],
        _rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        let (d, t, _) = cx.in_map(0)?;
        let mut y = vec![0.0f32; cx.n * d];
        for (i, row) in ins[0].chunks_exact(t).enumerate() {
            // Row i is feature i / n of image i % n.
            y[(i % cx.n) * d + i / cx.n] = row[self.index];
        }
        Ok((Arc::new(y), None))
    }

    fn cpu_vjp(&self, cx: &mut CpuCx, g: &Buf, _kept: &CpuKept) -> Result<Vec<Buf>> {
        let (d, t, _) = cx.in_map(0)?;
        let mut gx = vec![0.0f32; d * cx.n * t];
        for (i, row) in gx.chunks_exact_mut(t).enumerate() {
            row[self.index] = g[(i % cx.n) * d + i / cx.n];
        }
        Ok(vec![Arc::new(gx)])
    }
}

/// A ViT's token pipeline on the test map's 81 tokens: the class token, the position
/// embedding, self-attention (so that the class token depends on the image), the class
/// token's features.
#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::{conv, Case};
    use super::{Attend, ClassToken, Op, PositionEmbedding, Scores, Softmax, Tokens};
    vec![Case::new("class token, position embedding, attention, select token", |b, x, r| {
        let t = b.push("tokens", Op::Tokens(Tokens), &[x]);
        let c = b.push("cls", Op::ClassToken(ClassToken { token: r.tensor(&[8], 1.0) }), &[t]);
        let table = r.tensor(&[8, 82], 0.5);
        let p = b.push("pos", Op::PositionEmbedding(PositionEmbedding { table, patch: None }), &[c]);
        let q = b.push("q", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[p]);
        let k = b.push("k", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[p]);
        let v = b.push("v", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[p]);
        let s = b.push("scores", Op::Scores(Scores { heads: 2, scale: 0.5 }), &[q, k]);
        let a = b.push("softmax", Op::Softmax(Softmax { groups: 2 }), &[s]);
        let o = b.push("attend", Op::Attend(Attend { heads: 2 }), &[a, v]);
        b.push("t", Op::SelectToken(SelectToken { index: 0 }), &[o])
    })]
}

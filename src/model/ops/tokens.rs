//! Patches to tokens: a feature map Map(C, H, W) becomes the token map Map(C, H·W, 1), the
//! H·W positions in row-major order as T = H·W tokens of C features (PyTorch:
//! `x.flatten(2).transpose(1, 2)`, torchvision's `VisionTransformer._process_input` after
//! its patch convolution `conv_proj`; Dosovitskiy et al. 2021, "An image is worth 16x16
//! words").
//!
//! Why no data moves: a token tensor [N, T, D] is represented as the map Map(D, T, 1)
//! (channels = features, rows = tokens; see [`crate::model::shape::Shape`]), so on both
//! layouts ([B, C, H, W] → [B, C, H·W, 1]; the CPU block [C, n, H·W] → [C, n, H·W]) the op
//! is a reshape. Linear: tangent = forward, vector–Jacobian product = the reshape back.
//!
//! Backward rules: every rule passes it by its gradient (it only moves values); LRP too
//! ([`super::Relevance::Gradient`], conserving). Occlusion: `reach` is None, so it starts
//! the head: in a transformer the first attention, two nodes later, mixes all tokens anyway.

use super::{CpuCx, CpuKept, Layer, TensorCx, TensorKept};
use crate::error::Result;
use crate::model::kernels::Buf;
use crate::model::shape::Shape;
use candle_core::Tensor;

/// Map(C, H, W) → Map(C, H·W, 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tokens;

impl Layer for Tokens {
    fn kind(&self) -> &'static str {
        "tokens"
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        let [x] = ins else { return Err(format!("takes 1 input, got {}", ins.len())) };
        let (c, h, w) = x.map()?;
        Ok(Shape::Map(c, h.checked_mul(w).ok_or("its output's size overflows")?, 1))
    }

    fn tensor_forward(
        &self,
        cx: &mut TensorCx,
        ins: &[&Tensor],
        _rank: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok((ins[0].reshape(cx.out.dims(cx.batch))?, None))
    }

    fn tensor_vjp(&self, cx: &mut TensorCx, g: &Tensor, _kept: &TensorKept) -> Result<Vec<Tensor>> {
        Ok(vec![g.reshape(cx.ins[0].dims(cx.batch))?])
    }

    fn cpu_forward(
        &self,
        _cx: &mut CpuCx,
        ins: &[&Buf],
        _rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        Ok((ins[0].clone(), None))
    }

    fn cpu_vjp(&self, _cx: &mut CpuCx, g: &Buf, _kept: &CpuKept) -> Result<Vec<Buf>> {
        Ok(vec![g.clone()])
    }
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::{conv, Case};
    use super::Op;
    vec![Case::new("tokens of a feature map, then a linear layer on each token", |b, x, r| {
        let t = b.push("tokens", Op::Tokens(Tokens), &[x]);
        let f = b.push("linear", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[t]);
        b.push("t", Op::Tokens(Tokens), &[f])
    })]
}

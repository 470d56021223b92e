//! The class token: a learned constant token prepended to the token sequence, whose final
//! state alone feeds the classifier (Dosovitskiy et al. 2021, "An image is worth 16x16
//! words", eq. 1, after BERT's [CLS]; torchvision:
//! `torch.cat([class_token.expand(n, -1, -1), x], dim=1)`).
//!
//! Shapes: Map(D, T, 1) → Map(D, T + 1, 1) (a token map, see
//! [`crate::model::shape::Shape`]); the token [D] is row 0, the input's tokens rows 1..=T.
//!
//! Affine: its tangent is the forward pass without the constant (zeros at row 0), its
//! vector–Jacobian product drops row 0. Backward rules: every rule passes it by its gradient;
//! LRP too ([`super::Relevance::Gradient`]): the relevance reaching the constant token stays
//! there, as a bias's share does. Occlusion: `reach` is None (the attention after it mixes
//! all tokens).
//!
//! Layout on the CPU: a block [D, n, T] becomes [D, n, T + 1], each (feature, image) row
//! gaining the token's feature in front.

use super::{CpuCx, CpuKept, Layer, Prepared, TensorCx, TensorKept};
use crate::error::Result;
use crate::model::kernels::Buf;
use crate::model::shape::Shape;
use candle_core::{DType, Tensor};
use std::sync::Arc;

/// Prepends the constant token `token` [D] at row 0.
#[derive(Debug, Clone)]
pub struct ClassToken {
    /// The token's D features.
    pub token: Tensor,
}

/// The token as plain values.
struct Token(Vec<f32>);

impl ClassToken {
    /// `first` [B, D, 1, 1] in front of the input's tokens `x`.
    fn tensor_cat(first: &Tensor, x: &Tensor) -> Result<Tensor> {
        Ok(Tensor::cat(&[first, x], 2)?)
    }

    /// Each (feature d, image) row of `x` [D, n, T] with `first(d)` in front.
    fn cpu_cat(cx: &CpuCx, x: &[f32], first: impl Fn(usize) -> f32) -> Result<Buf> {
        let (_, t, _) = cx.in_map(0)?;
        let mut y = Vec::with_capacity(x.len() + x.len() / t.max(1));
        for (i, row) in x.chunks_exact(t.max(1)).enumerate() {
            y.push(first(i / cx.n));
            y.extend_from_slice(row);
        }
        Ok(Arc::new(y))
    }
}

impl Layer for ClassToken {
    fn kind(&self) -> &'static str {
        "class_token"
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        let [x] = ins else { return Err(format!("takes 1 input, got {}", ins.len())) };
        let (d, t, w) = x.map()?;
        let len = self.token.dims1().map_err(|e| format!("token: {e}"))?;
        if w != 1 || t == 0 {
            return Err(format!("needs a token map D×T×1, got {x}"));
        }
        if len != d {
            return Err(format!("a token of {len} features for tokens of {d}"));
        }
        Ok(Shape::Map(d, t + 1, 1))
    }

    fn tensors(&self) -> Vec<(&'static str, &Tensor)> {
        vec![("token", &self.token)]
    }

    fn tensors_mut(&mut self) -> Vec<&mut Tensor> {
        vec![&mut self.token]
    }

    fn tensor_forward(
        &self,
        cx: &mut TensorCx,
        ins: &[&Tensor],
        _rank: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let d = self.token.dim(0)?;
        let first = cx.param(&self.token)?.reshape((1, d, 1, 1))?.broadcast_as((cx.batch, d, 1, 1))?;
        Ok((Self::tensor_cat(&first.contiguous()?, ins[0])?, None))
    }

    fn tensor_tangent(&self, cx: &mut TensorCx, ins: &[&Tensor], _kept: &TensorKept) -> Result<Tensor> {
        let d = self.token.dim(0)?;
        let zeros = Tensor::zeros((cx.batch, d, 1, 1), ins[0].dtype(), ins[0].device())?;
        Self::tensor_cat(&zeros, ins[0])
    }

    fn tensor_vjp(&self, cx: &mut TensorCx, g: &Tensor, _kept: &TensorKept) -> Result<Vec<Tensor>> {
        let (_, t, _) = cx.ins[0].map().map_err(|m| cx.error(m))?;
        Ok(vec![g.narrow(2, 1, t)?])
    }

    fn cpu_weights(&self) -> Result<Option<Prepared>> {
        Ok(Some(Box::new(Token(self.token.to_dtype(DType::F32)?.to_vec1::<f32>()?))))
    }

    fn cpu_forward(
        &self,
        cx: &mut CpuCx,
        ins: &[&Buf],
        _rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        let token = cx.weights::<Token>()?;
        Ok((Self::cpu_cat(cx, ins[0], |d| token.0[d])?, None))
    }

    fn cpu_tangent(&self, cx: &mut CpuCx, ins: &[&Buf], _kept: &CpuKept) -> Result<Buf> {
        Self::cpu_cat(cx, ins[0], |_| 0.0)
    }

    fn cpu_vjp(&self, cx: &mut CpuCx, g: &Buf, _kept: &CpuKept) -> Result<Vec<Buf>> {
        let (_, t, _) = cx.out_map()?;
        Ok(vec![Arc::new(g.chunks_exact(t).flat_map(|row| row[1..].iter().copied()).collect())])
    }
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::Case;
    use super::{Op, Tokens};
    vec![Case::new("class token in front of the tokens", |b, x, r| {
        let t = b.push("tokens", Op::Tokens(Tokens), &[x]);
        b.push("t", Op::ClassToken(ClassToken { token: r.tensor(&[8], 1.0) }), &[t])
    })]
}

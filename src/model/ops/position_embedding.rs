//! The position embedding: a learned constant of the token map's shape added to it, so that
//! attention, which is blind to order, knows where each patch came from (Dosovitskiy et al.
//! 2021, "An image is worth 16x16 words", eq. 1; torchvision's `Encoder.forward`:
//! `input + self.pos_embedding`, a [1, T, D] parameter).
//!
//! Shapes: Map(D, T, 1) → Map(D, T, 1) (a token map, see [`crate::model::shape::Shape`]);
//! the table is [D, T] (torchvision's [1, T, D] transposed). A ViT's input size is fixed by
//! its table: shape inference refuses another token count and says which input size the
//! table was made for.
//!
//! Affine: tangent and vector–Jacobian product are the identity. Backward rules: every rule
//! passes it by its gradient; LRP passes relevance unchanged ([`super::Relevance::Pass`], as
//! for a per-channel shift). Occlusion: `reach` is None (the attention after it mixes all
//! tokens).
//!
//! Layout on the CPU: a block [D, n, T]; row (d, image) gains the table's row d.

use super::{CpuCx, CpuKept, Layer, Prepared, TensorCx, TensorKept};
use crate::error::Result;
use crate::model::kernels::Buf;
use crate::model::shape::Shape;
use candle_core::{DType, Tensor};
use std::sync::Arc;

/// x + table.
#[derive(Debug, Clone)]
pub struct PositionEmbedding {
    /// The constant [D, T].
    pub table: Tensor,
    /// The side of a square patch, when known: only to name the input size the table fits
    /// in errors.
    pub patch: Option<usize>,
}

/// The table as plain values [D, T].
struct Table(Vec<f32>);

impl PositionEmbedding {
    /// The side of the square input that gives `t` tokens: a g×g grid of patches and a class
    /// token, t = g² + 1; None without a known patch size or for another count.
    fn side_of(&self, t: usize) -> Option<usize> {
        let g = (t.saturating_sub(1) as f64).sqrt().round() as usize;
        (g * g + 1 == t).then_some(g * self.patch?)
    }

    /// The side of the square input the table was made for (see [`PositionEmbedding::side_of`]).
    pub fn input_side(&self) -> Option<usize> {
        self.side_of(self.table.dim(1).ok()?)
    }

    /// What a token count `t` means as an image size, for errors: " (a 224×224 input at
    /// patch 16)", or nothing.
    fn input_size(&self, t: usize) -> String {
        match (self.side_of(t), self.patch) {
            (Some(s), Some(p)) => format!(" (a {s}×{s} input at patch {p})"),
            _ => String::new(),
        }
    }
}

impl Layer for PositionEmbedding {
    fn kind(&self) -> &'static str {
        "position_embedding"
    }

    fn relevance(&self) -> super::Relevance {
        super::Relevance::Pass
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        let [x] = ins else { return Err(format!("takes 1 input, got {}", ins.len())) };
        let (d, t) = self.table.dims2().map_err(|e| format!("table: {e}"))?;
        let (xd, xt, w) = x.map()?;
        if w != 1 {
            return Err(format!("needs a token map D×T×1, got {x}"));
        }
        if xd != d {
            return Err(format!("the position embedding has {d} features, the tokens {xd}"));
        }
        if xt != t {
            return Err(format!(
                "the position embedding has {t} tokens{}, this input gives {xt}{}: a vision \
                 transformer takes the input size its position embedding was trained for",
                self.input_size(t),
                self.input_size(xt)
            ));
        }
        Ok(*x)
    }

    fn tensors(&self) -> Vec<(&'static str, &Tensor)> {
        vec![("table", &self.table)]
    }

    fn tensors_mut(&mut self) -> Vec<&mut Tensor> {
        vec![&mut self.table]
    }

    fn tensor_forward(
        &self,
        cx: &mut TensorCx,
        ins: &[&Tensor],
        _rank: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (d, t) = self.table.dims2()?;
        Ok((ins[0].broadcast_add(&cx.param(&self.table)?.reshape((1, d, t, 1))?)?, None))
    }

    fn tensor_tangent(&self, _cx: &mut TensorCx, ins: &[&Tensor], _kept: &TensorKept) -> Result<Tensor> {
        Ok(ins[0].clone())
    }

    fn tensor_vjp(&self, _cx: &mut TensorCx, g: &Tensor, _kept: &TensorKept) -> Result<Vec<Tensor>> {
        Ok(vec![g.clone()])
    }

    fn cpu_weights(&self) -> Result<Option<Prepared>> {
        Ok(Some(Box::new(Table(self.table.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?))))
    }

    fn cpu_forward(
        &self,
        cx: &mut CpuCx,
        ins: &[&Buf],
        _rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        let table = &cx.weights::<Table>()?.0;
        let (_, t, _) = cx.out_map()?;
        let mut y = ins[0].to_vec();
        for (i, row) in y.chunks_exact_mut(t.max(1)).enumerate() {
            let d = i / cx.n;
            row.iter_mut().zip(&table[d * t..][..t]).for_each(|(v, &p)| *v += p);
        }
        Ok((Arc::new(y), None))
    }

    fn cpu_tangent(&self, _cx: &mut CpuCx, ins: &[&Buf], _kept: &CpuKept) -> Result<Buf> {
        Ok(ins[0].clone())
    }

    fn cpu_vjp(&self, _cx: &mut CpuCx, g: &Buf, _kept: &CpuKept) -> Result<Vec<Buf>> {
        Ok(vec![g.clone()])
    }
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::Case;
    use super::{ClassToken, Op, Tokens};
    vec![Case::new("position embedding after the class token", |b, x, r| {
        let t = b.push("tokens", Op::Tokens(Tokens), &[x]);
        let c = b.push("cls", Op::ClassToken(ClassToken { token: r.tensor(&[8], 1.0) }), &[t]);
        let table = r.tensor(&[8, 82], 0.5);
        b.push("t", Op::PositionEmbedding(PositionEmbedding { table, patch: None }), &[c])
    })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn another_token_count_names_both_input_sizes() {
        let table = Tensor::zeros((48, 197), DType::F32, &Device::Cpu).unwrap();
        let op = PositionEmbedding { table, patch: Some(16) };
        assert_eq!(op.infer(&[Shape::Map(48, 197, 1)]), Ok(Shape::Map(48, 197, 1)));
        let msg = op.infer(&[Shape::Map(48, 50, 1)]).unwrap_err();
        assert!(
            msg.contains("197 tokens (a 224×224 input at patch 16), this input gives 50 (a 112×112"),
            "{msg}"
        );
    }
}

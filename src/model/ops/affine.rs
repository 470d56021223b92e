//! Per-channel y = x·scale + shift on a map [B,C,H,W] or a flat vector [B,F] (one "channel"
//! per entry): input normalisation (x − mean)/std inside the model, or a batch norm that
//! follows no convolution. The tangent and the vector–Jacobian product are the scaling alone.
//! Occlusion: elementwise, so the changed rectangle stays as it is.

use super::{Conv, Import, Linear, Op};
use super::{CpuCx, CpuKept, Layer, Rect, TensorCx, TensorKept};
use crate::error::Result;
use crate::model::kernels::Buf;
use crate::model::mapping::{per_channel, per_channel_last, tensor, view, Const, Step};
use crate::model::shape::Shape;
use candle_core::Tensor;
use std::sync::Arc;

/// y = x·scale + shift per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Affine {
    /// Scale [C].
    pub scale: Vec<f32>,
    /// Shift [C].
    pub shift: Vec<f32>,
}

impl Affine {
    fn tensor_apply(&self, x: &Tensor, shift: bool) -> Result<Tensor> {
        let c = self.scale.len();
        let shape: Vec<usize> = if x.rank() == 4 { vec![1, c, 1, 1] } else { vec![1, c] };
        let param = |v: &[f32]| -> Result<Tensor> {
            Ok(Tensor::from_slice(v, c, x.device())?.to_dtype(x.dtype())?.reshape(shape.clone())?)
        };
        let y = x.broadcast_mul(&param(&self.scale)?)?;
        Ok(if shift { y.broadcast_add(&param(&self.shift)?)? } else { y })
    }

    /// In the block layout.
    fn cpu_apply(&self, cx: &CpuCx, x: &[f32], shift: bool) -> Buf {
        let mut y = x.to_vec();
        let t = |ci: usize| if shift { self.shift[ci] } else { 0.0 };
        match cx.out {
            Shape::Map(c, h, w) => {
                for (ci, row) in y.chunks_exact_mut(cx.n * h * w).enumerate().take(c) {
                    let (s, t) = (self.scale[ci], t(ci));
                    row.iter_mut().for_each(|v| *v = *v * s + t);
                }
            }
            Shape::Flat(f) => {
                for row in y.chunks_exact_mut(f) {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = *v * self.scale[j] + t(j);
                    }
                }
            }
        }
        Arc::new(y)
    }
}

impl Layer for Affine {
    fn kind(&self) -> &'static str {
        "affine"
    }

    fn relevance(&self) -> super::Relevance {
        super::Relevance::Pass
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        super::per_channel_shape(ins, ("scales", self.scale.len()), ("shifts", self.shift.len()))
    }

    fn values(&self) -> Vec<(&'static str, &[f32])> {
        vec![("scale", &self.scale), ("shift", &self.shift)]
    }

    fn tensor_forward(
        &self,
        _cx: &mut TensorCx,
        ins: &[&Tensor],
        _rank: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok((self.tensor_apply(ins[0], true)?, None))
    }

    fn tensor_tangent(&self, _cx: &mut TensorCx, ins: &[&Tensor], _kept: &TensorKept) -> Result<Tensor> {
        self.tensor_apply(ins[0], false)
    }

    fn tensor_vjp(&self, _cx: &mut TensorCx, g: &Tensor, _kept: &TensorKept) -> Result<Vec<Tensor>> {
        Ok(vec![self.tensor_apply(g, false)?])
    }

    fn cpu_forward(
        &self,
        cx: &mut CpuCx,
        ins: &[&Buf],
        _rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        Ok((self.cpu_apply(cx, ins[0], true), None))
    }

    fn cpu_tangent(&self, cx: &mut CpuCx, ins: &[&Buf], _kept: &CpuKept) -> Result<Buf> {
        Ok(self.cpu_apply(cx, ins[0], false))
    }

    fn cpu_vjp(&self, cx: &mut CpuCx, g: &Buf, _kept: &CpuKept) -> Result<Vec<Buf>> {
        Ok(vec![self.cpu_apply(cx, g, false)])
    }

    fn reach(&self, changed: &[&Rect], _out: (usize, usize)) -> Option<Rect> {
        changed.first().map(|r| (*r).clone())
    }

    fn region(&self, cx: &mut CpuCx, ins: &[&[f32]], r: &Rect, out: &mut [f32]) -> Result<()> {
        let (c, h, w) = cx.out_map()?;
        for (i, span) in r.spans(c, (h, w)).enumerate() {
            let ch = i / r.rows.len().max(1);
            let (s, t) = (self.scale[ch], self.shift[ch]);
            for (d, &v) in out[span.clone()].iter_mut().zip(&ins[0][span]) {
                *d = v * s + t;
            }
        }
        Ok(())
    }
}

/// ONNX Add, Sub, Mul, Div or Sum of computed value `x` (a channels-last view when `last`)
/// and a per-channel constant `c` (the first operand when `const_first`): y = x·scale + shift.
/// Absorbed by the layer it reads when nothing else reads that layer: a bias after MatMul (or
/// a bias-free Gemm or convolution) becomes the layer's bias, a per-channel affine after a
/// layer norm its γ and β; an [`Affine`] node otherwise.
pub(crate) fn onnx(im: &mut dyn Import, (x, last): (usize, bool), c: &Const, const_first: bool) -> Step<()> {
    let v = if last { per_channel_last(c, im.shape(x))? } else { per_channel(c, im.shape(x))? };
    let ones = vec![1.0f32; v.len()];
    let zeros = vec![0.0f32; v.len()];
    let (scale, shift) = match (im.op_type(), const_first) {
        ("Add" | "Sum", _) => (ones, v),
        ("Sub", false) => (ones, v.iter().map(|s| -s).collect()),
        ("Sub", true) => (vec![-1.0; v.len()], v),
        ("Mul", _) => (v, zeros),
        ("Div", false) if v.iter().all(|&d| d != 0.0) => (v.iter().map(|d| 1.0 / d).collect(), zeros),
        (op, _) => return Err(format!("{op} with these constants is not supported")),
    };
    if im.sole_reader_of(usize::from(const_first), x) && absorb(im, x, &scale, &shift)? {
        return im.set(view(x, last));
    }
    let id = im.push(Op::Affine(Affine { scale, shift }), &[x], "")?;
    im.set(view(id, last))
}

/// Folds y = x·scale + shift into node `x`'s own parameters where its op has room for them:
/// a shift into a missing bias, any affine into a layer norm's γ and β.
fn absorb(im: &mut dyn Import, x: usize, scale: &[f32], shift: &[f32]) -> Step<bool> {
    let shift_only = scale.iter().all(|&s| s == 1.0);
    match im.op_mut(x) {
        Some(Op::Linear(Linear { bias: bias @ None, .. }) | Op::Conv(Conv { bias: bias @ None, .. }))
            if shift_only =>
        {
            *bias = Some(tensor(shift.to_vec(), &[shift.len()])?);
            Ok(true)
        }
        Some(Op::LayerNorm(l)) => {
            for ((g, b), (s, t)) in l.weight.iter_mut().zip(&mut l.bias).zip(scale.iter().zip(shift)) {
                (*g, *b) = (*g * s, *b * s + t);
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::{conv, Case};
    use super::{Concat, Op};
    vec![
        Case::new("concat and affine", |b, x, r| {
            let c = b.push("branch", conv(r, 3, 8, [1, 1], 1, [0; 4], 1, 1), &[x]);
            let cat = b.push("cat", Op::Concat(Concat), &[x, c]);
            let scale = r.uniform(11, 1.0).iter().map(|v| 1.0 + 0.5 * *v as f32).collect();
            let shift = r.uniform(11, 0.2).iter().map(|v| *v as f32).collect();
            b.push("t", Op::Affine(Affine { scale, shift }), &[cat])
        }),
        Case::new("affine on a flat vector", |b, x, r| {
            let f = b.push("flat", Op::Flatten(super::Flatten), &[x]);
            let n = 8 * 9 * 9;
            let scale = r.uniform(n, 1.0).iter().map(|v| 1.0 + 0.5 * *v as f32).collect();
            let shift = r.uniform(n, 0.2).iter().map(|v| *v as f32).collect();
            b.push("t", Op::Affine(Affine { scale, shift }), &[f])
        }),
    ]
}

//! Concatenation of feature maps along channels (SqueezeNet's Fire modules, DenseNet,
//! Inception). Linear; its vector–Jacobian product splits the gradient back by channels. On
//! the CPU's channel-major blocks it is a plain append. Occlusion: the union of the inputs'
//! changed rectangles.

use super::{CpuCx, CpuKept, Layer, Rect, TensorCx, TensorKept};
use super::{Import, Op};
use crate::error::Result;
use crate::model::kernels::Buf;
use crate::model::mapping::{Step, Val};
use crate::model::shape::Shape;
use candle_core::Tensor;
use std::sync::Arc;

/// Concatenation along channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concat;

impl Layer for Concat {
    fn kind(&self) -> &'static str {
        "concat"
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        let Some(first) = ins.first() else { return Err("concatenates nothing".into()) };
        let (_, h, w) = first.map()?;
        let mut c = 0usize;
        for s in ins {
            let (ci, hi, wi) = s.map()?;
            if (hi, wi) != (h, w) {
                return Err(format!("concatenates {h}×{w} and {hi}×{wi} maps"));
            }
            c = ci.checked_add(c).ok_or("its channel count overflows")?;
        }
        Ok(Shape::Map(c, h, w))
    }

    fn tensor_forward(
        &self,
        _cx: &mut TensorCx,
        ins: &[&Tensor],
        _rank: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok((Tensor::cat(ins, 1)?, None))
    }

    fn tensor_vjp(&self, cx: &mut TensorCx, g: &Tensor, _kept: &TensorKept) -> Result<Vec<Tensor>> {
        let mut at = 0;
        let mut parts = Vec::with_capacity(cx.ins.len());
        for s in cx.ins {
            let c = s.channels();
            parts.push(g.narrow(1, at, c)?);
            at += c;
        }
        Ok(parts)
    }

    fn cpu_forward(
        &self,
        _cx: &mut CpuCx,
        ins: &[&Buf],
        _rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        Ok((Arc::new(ins.iter().flat_map(|b| b.iter().copied()).collect()), None))
    }

    fn cpu_vjp(&self, cx: &mut CpuCx, g: &Buf, _kept: &CpuKept) -> Result<Vec<Buf>> {
        let mut at = 0;
        let mut parts = Vec::with_capacity(cx.ins.len());
        for s in cx.ins {
            let len = s.len() * cx.n;
            parts.push(Arc::new(g[at..at + len].to_vec()));
            at += len;
        }
        Ok(parts)
    }

    fn reach(&self, changed: &[&Rect], _out: (usize, usize)) -> Option<Rect> {
        Rect::union_all(changed)
    }

    fn region(&self, cx: &mut CpuCx, ins: &[&[f32]], r: &Rect, out: &mut [f32]) -> Result<()> {
        let (_, oh, ow) = cx.out_map()?;
        let mut c0 = 0;
        for (x, s) in ins.iter().zip(cx.ins) {
            let ci = s.channels();
            let src = r.spans(ci, (oh, ow));
            let dst = r.spans(ci, (oh, ow)).map(|d| d.start + c0 * oh * ow..d.end + c0 * oh * ow);
            for (s, d) in src.zip(dst) {
                out[d].copy_from_slice(&x[s]);
            }
            c0 += ci;
        }
        Ok(())
    }
}

/// ONNX Concat of computed feature maps along channels (the importer joins constants itself:
/// shape arithmetic).
pub(crate) fn onnx(im: &mut dyn Import) -> Step<()> {
    let mut ins = Vec::new();
    for i in 0..im.inputs().len() {
        ins.push(im.node_in(i)?);
    }
    let axis = im.int("axis", i64::MIN);
    if !(axis == 1 || axis == -3) {
        return Err(format!("axis {axis}: only concatenation along channels (axis = 1) is supported"));
    }
    let id = im.push(Op::Concat(Concat), &ins, "")?;
    im.set(Val::Node(id))
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::{conv, Case};
    use super::Op;
    vec![Case::new("concat of three", |b, x, r| {
        let c = b.push("branch", conv(r, 3, 8, [1, 1], 1, [0; 4], 1, 1), &[x]);
        let d = b.push("branch2", conv(r, 2, 8, [3, 3], 1, [1; 4], 1, 1), &[x]);
        b.push("t", Op::Concat(Concat), &[x, c, d])
    })]
}

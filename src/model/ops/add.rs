//! Elementwise sum of two inputs of one shape (residual connections): linear, its tangent is
//! itself and its vector–Jacobian product passes the gradient to both inputs. Occlusion: the
//! union of the inputs' changed rectangles.

use super::{CpuCx, CpuKept, Layer, Rect, TensorCx, TensorKept};
use super::{Import, Op};
use crate::error::Result;
use crate::model::kernels::Buf;
use crate::model::mapping::{view, Step};
use crate::model::shape::Shape;
use candle_core::Tensor;
use std::sync::Arc;

/// a + b.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Add;

impl Layer for Add {
    fn kind(&self) -> &'static str {
        "add"
    }

    fn relevance(&self) -> super::Relevance {
        super::Relevance::Norm
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        let [a, b] = ins else { return Err(format!("takes 2 inputs, got {}", ins.len())) };
        if a != b {
            return Err(format!("adds {a} and {b}"));
        }
        Ok(*a)
    }

    fn tensor_forward(
        &self,
        _cx: &mut TensorCx,
        ins: &[&Tensor],
        _rank: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok((ins[0].add(ins[1])?, None))
    }

    fn tensor_vjp(&self, _cx: &mut TensorCx, g: &Tensor, _kept: &TensorKept) -> Result<Vec<Tensor>> {
        Ok(vec![g.clone(), g.clone()])
    }

    fn cpu_forward(
        &self,
        _cx: &mut CpuCx,
        ins: &[&Buf],
        _rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        Ok((Arc::new(ins[0].iter().zip(ins[1].iter()).map(|(a, b)| a + b).collect()), None))
    }

    fn cpu_vjp(&self, _cx: &mut CpuCx, g: &Buf, _kept: &CpuKept) -> Result<Vec<Buf>> {
        Ok(vec![g.clone(), g.clone()])
    }

    fn reach(&self, changed: &[&Rect], _out: (usize, usize)) -> Option<Rect> {
        Rect::union_all(changed)
    }

    fn region(&self, cx: &mut CpuCx, ins: &[&[f32]], r: &Rect, out: &mut [f32]) -> Result<()> {
        let (c, h, w) = cx.out_map()?;
        for span in r.spans(c, (h, w)) {
            for ((d, &u), &v) in out[span.clone()].iter_mut().zip(&ins[0][span.clone()]).zip(&ins[1][span]) {
                *d = u + v;
            }
        }
        Ok(())
    }
}

/// ONNX Add or Sum of two computed values `x` and `y` in one layout (`last`: both
/// channels-last views): a residual sum. The importer calls it once it has seen that neither
/// input is a constant.
pub(crate) fn onnx(im: &mut dyn Import, x: usize, y: usize, last: bool) -> Step<()> {
    let id = im.push(Op::Add(Add), &[x, y], "")?;
    im.set(view(id, last))
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::{conv, Case};
    use super::Op;
    vec![Case::new("residual add", |b, x, r| {
        let c = b.push("branch", conv(r, 8, 8, [3, 3], 1, [1; 4], 1, 1), &[x]);
        let a = b.act("branch_relu", crate::model::nonlinearity::Nonlinearity::Relu, c);
        b.push("t", Op::Add(Add), &[a, x])
    })]
}

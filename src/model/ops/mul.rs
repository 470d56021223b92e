//! The product of two activations, y = a ⊙ b, with one of them broadcast over the other's
//! spatial positions when it is a [B,C,1,1] map: squeeze-and-excitation's gating
//! x ⊙ σ(fc(pool(x))) (EfficientNet, MobileNetV3, RegNetY), or two maps of one shape.
//!
//! Unlike every other layer op it is not linear in its inputs, so its forward pass keeps them
//! ([`Layer::nonlinear`]): the vector–Jacobian product is g_a = R_a(g ⊙ b), g_b = R_b(g ⊙ a),
//! where R sums the broadcast positions back (R is the identity for an input of the output's
//! shape); the tangent is λ_a ⊙ b + a ⊙ λ_b; and the second-order adjoint adds, for the map's
//! dependence on the inputs through this product rule, the gradient of ⟨(g_a, g_b), λ⟩ with
//! respect to a and b: R_a(g ⊙ λ_b) and R_b(g ⊙ λ_a), so second-order attacks through an SE
//! block are exact.
//!
//! Backward rules: every rule (gradient, guided backprop, deconvnet, DeepLIFT's rescale)
//! passes the product by its plain gradient, as Captum's and zennit's hooks do, which modify
//! only the nonlinearities; the gate's sigmoid (or hard sigmoid) is a nonlinearity and gets
//! the rule there. LRP gives all relevance to the signal (the input of the output's shape) and
//! none to the gate ([`super::Relevance::Pass`]). Occlusion: a gate depends on the whole image, so the product starts the
//! head (recomputed whole).
//!
//! Layout on the CPU: a [C, n, 1] gate multiplies each H·W row of its [C, n, H·W] partner.

use super::{CpuCx, CpuKept, Layer, TensorCx, TensorKept};
use super::{Import, Op};
use crate::error::Result;
use crate::model::kernels::Buf;
use crate::model::mapping::{view, Step};
use crate::model::shape::Shape;
use candle_core::Tensor;
use std::sync::Arc;

/// a ⊙ b, one side possibly broadcast from [C,1,1].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mul;

impl Mul {
    /// `v` (of the output's shape) summed back to input `i`'s shape.
    fn tensor_reduce(cx: &TensorCx, i: usize, v: Tensor) -> Result<Tensor> {
        if cx.ins[i] == cx.out {
            return Ok(v);
        }
        Ok(v.sum_keepdim((2, 3))?)
    }

    /// The kept inputs (a, b).
    fn inputs<B>(cx_error: impl Fn(&str) -> crate::error::Error, kept: &[B]) -> Result<(&B, &B)> {
        match kept {
            [a, b] => Ok((a, b)),
            _ => Err(cx_error("internal: a product without its kept inputs")),
        }
    }
}

/// Positions per value of an input of `shape` in the output `out` (1, or H·W for a broadcast
/// [C,1,1] gate).
fn spread(shape: Shape, out: Shape) -> usize {
    out.len() / shape.len().max(1)
}

/// x ⊙ y on the CPU layout, where y has one value per `k` consecutive values of x.
fn times(x: &[f32], y: &[f32], k: usize) -> Vec<f32> {
    if k == 1 {
        return x.iter().zip(y).map(|(a, b)| a * b).collect();
    }
    x.chunks_exact(k).zip(y).flat_map(|(row, &s)| row.iter().map(move |v| v * s)).collect()
}

/// Sums each run of `k` consecutive values.
fn reduce(v: Vec<f32>, k: usize) -> Vec<f32> {
    if k == 1 {
        return v;
    }
    v.chunks_exact(k).map(|row| row.iter().sum()).collect()
}

/// a ⊙ b on the CPU layout (either side may be the gate).
fn product(a: &[f32], b: &[f32], (ka, kb): (usize, usize)) -> Vec<f32> {
    if ka == 1 {
        times(a, b, kb)
    } else {
        times(b, a, ka)
    }
}

impl Layer for Mul {
    fn kind(&self) -> &'static str {
        "mul"
    }

    fn relevance(&self) -> super::Relevance {
        super::Relevance::Pass
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        let [a, b] = ins else { return Err(format!("takes 2 inputs, got {}", ins.len())) };
        if a == b {
            return Ok(*a);
        }
        match (*a, *b) {
            (Shape::Map(c, h, w), Shape::Map(c2, 1, 1)) | (Shape::Map(c2, 1, 1), Shape::Map(c, h, w)) if c == c2 => {
                Ok(Shape::Map(c, h, w))
            }
            _ => Err(format!(
                "multiplies {a} and {b}: the shapes must be equal, or one a C×1×1 gate of the other's C channels"
            )),
        }
    }

    fn nonlinear(&self) -> bool {
        true
    }

    fn tensor_forward(
        &self,
        _cx: &mut TensorCx,
        ins: &[&Tensor],
        _rank: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok((ins[0].broadcast_mul(ins[1])?, None))
    }

    fn tensor_tangent(&self, cx: &mut TensorCx, ins: &[&Tensor], kept: &TensorKept) -> Result<Tensor> {
        let (a, b) = Self::inputs(|m| cx.error(m), kept.inputs)?;
        Ok(ins[0].broadcast_mul(b)?.broadcast_add(&a.broadcast_mul(ins[1])?)?)
    }

    fn tensor_vjp(&self, cx: &mut TensorCx, g: &Tensor, kept: &TensorKept) -> Result<Vec<Tensor>> {
        let (a, b) = Self::inputs(|m| cx.error(m), kept.inputs)?;
        Ok(vec![
            Self::tensor_reduce(cx, 0, g.broadcast_mul(b)?)?,
            Self::tensor_reduce(cx, 1, g.broadcast_mul(a)?)?,
        ])
    }

    fn tensor_second(
        &self,
        cx: &mut TensorCx,
        g: &Tensor,
        lam: &[&Tensor],
        _kept: &TensorKept,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![
            Some(Self::tensor_reduce(cx, 0, g.broadcast_mul(lam[1])?)?),
            Some(Self::tensor_reduce(cx, 1, g.broadcast_mul(lam[0])?)?),
        ])
    }

    fn cpu_forward(
        &self,
        cx: &mut CpuCx,
        ins: &[&Buf],
        _rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        let k = (spread(cx.ins[0], cx.out), spread(cx.ins[1], cx.out));
        Ok((Arc::new(product(ins[0], ins[1], k)), None))
    }

    fn cpu_tangent(&self, cx: &mut CpuCx, ins: &[&Buf], kept: &CpuKept) -> Result<Buf> {
        let (a, b) = Self::inputs(|m| cx.error(m), kept.inputs)?;
        let k = (spread(cx.ins[0], cx.out), spread(cx.ins[1], cx.out));
        let mut y = product(ins[0], b, k);
        for (d, v) in y.iter_mut().zip(product(a, ins[1], k)) {
            *d += v;
        }
        Ok(Arc::new(y))
    }

    fn cpu_vjp(&self, cx: &mut CpuCx, g: &Buf, kept: &CpuKept) -> Result<Vec<Buf>> {
        let (a, b) = Self::inputs(|m| cx.error(m), kept.inputs)?;
        let (ka, kb) = (spread(cx.ins[0], cx.out), spread(cx.ins[1], cx.out));
        Ok(vec![Arc::new(reduce(times(g, b, kb), ka)), Arc::new(reduce(times(g, a, ka), kb))])
    }

    fn cpu_second(&self, cx: &mut CpuCx, g: &Buf, lam: &[&Buf], _kept: &CpuKept) -> Result<Vec<Option<Buf>>> {
        let (ka, kb) = (spread(cx.ins[0], cx.out), spread(cx.ins[1], cx.out));
        Ok(vec![
            Some(Arc::new(reduce(times(g, lam[1], kb), ka))),
            Some(Arc::new(reduce(times(g, lam[0], ka), kb))),
        ])
    }
}

/// ONNX Mul of two computed values in one layout: squeeze-and-excitation's gating (x ⊙ gate,
/// a [N,C,1,1] gate broadcast), or a product of two maps of one shape.
pub(crate) fn onnx(im: &mut dyn Import, x: usize, y: usize, last: bool) -> Step<()> {
    let id = im.push(Op::Mul(Mul), &[x, y], "")?;
    im.set(view(id, last))
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::{conv, Case, Rng};
    use super::{AdaptiveAvgPool, Op};
    use crate::model::graph::{GraphBuilder, NodeId};
    use crate::model::nonlinearity::Nonlinearity;
    /// Squeeze-and-excitation: global pool → 1×1 conv → ReLU → 1×1 conv → `gate` (a
    /// nonlinearity) → x ⊙ gate (`gate_first`: gate ⊙ x, as torchvision's ONNX export writes).
    fn se(b: &mut GraphBuilder, x: NodeId, r: &mut Rng, gate: Nonlinearity, gate_first: bool) -> NodeId {
        let pre = b.push("pre", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[x]);
        let xs = b.act("pre_act", Nonlinearity::Silu, pre);
        let p = b.push("squeeze", Op::AdaptiveAvgPool(AdaptiveAvgPool([1, 1])), &[xs]);
        let f1 = b.push("fc1", conv(r, 4, 8, [1, 1], 1, [0; 4], 1, 1), &[p]);
        let a1 = b.act("fc1_act", Nonlinearity::Relu, f1);
        let f2 = b.push("fc2", conv(r, 8, 4, [1, 1], 1, [0; 4], 1, 1), &[a1]);
        let s = b.act("gate", gate, f2);
        let ins = if gate_first { [s, xs] } else { [xs, s] };
        b.push("t", Op::Mul(Mul), &ins)
    }
    vec![
        Case::new("squeeze-and-excitation gate (sigmoid)", |b, x, r| {
            se(b, x, r, Nonlinearity::Sigmoid, false)
        }),
        Case::new("squeeze-and-excitation gate first (hard sigmoid)", |b, x, r| {
            se(b, x, r, Nonlinearity::HardSigmoid { alpha: 1.0 / 6.0, beta: 0.5 }, true)
        }),
        Case::new("product of two maps of one shape", |b, x, r| {
            let u = b.push("u", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[x]);
            let v = b.push("v", conv(r, 8, 8, [3, 3], 1, [1; 4], 1, 1), &[x]);
            b.push("t", Op::Mul(Mul), &[u, v])
        }),
    ]
}

//! A fully connected layer y = x·Wᵀ + b on flat vectors [B,in] → [B,out] (PyTorch's
//! `Linear`, ONNX `Gemm` and `MatMul`). The tangent drops the bias; the vector–Jacobian
//! product is g·W. On the CPU one GEMM per block of images, so the weights are read once per
//! block.

use super::{Conv, Import, Mapping, Op};
use super::{CpuCx, CpuKept, Layer, Prepared, TensorCx, TensorKept};
use crate::error::Result;
use crate::model::kernels::gemm::{matmul, View};
use crate::model::kernels::{transpose, Buf};
use crate::model::mapping::{tensor, Step, Val};
use crate::model::shape::Shape;
use candle_core::{DType, Tensor};
use std::sync::Arc;

/// A fully connected layer y = x·Wᵀ + b.
#[derive(Debug, Clone)]
pub struct Linear {
    /// Weight [out, in].
    pub weight: Tensor,
    /// Bias [out].
    pub bias: Option<Tensor>,
}

/// A fully connected layer, flattened for the CPU kernels.
#[derive(Debug, Clone)]
struct LinearKernel {
    /// W [out, in].
    w: Vec<f32>,
    b: Vec<f32>,
    out: usize,
    inp: usize,
}

impl Linear {
    fn tensor_apply(&self, cx: &TensorCx, x: &Tensor, bias: bool) -> Result<Tensor> {
        let y = x.matmul(&cx.param(&self.weight)?.t()?)?;
        match (&self.bias, bias) {
            (Some(b), true) => Ok(y.broadcast_add(&cx.param(b)?)?),
            _ => Ok(y),
        }
    }

    fn cpu_apply(&self, cx: &CpuCx, x: &Buf, bias: bool) -> Result<Buf> {
        let l = cx.weights::<LinearKernel>()?;
        // yᵀ [out, n] = W [out, in] · xᵀ [in, n]: the weights on the left keep the right
        // operand row-major, the one form whose sums do not depend on the batch (see
        // kernels::gemm), and the weights are read once per block.
        let xt = transpose(x, cx.n, l.inp, 1);
        let mut yt = vec![0.0f32; l.out * cx.n];
        if bias {
            for (row, &b) in yt.chunks_exact_mut(cx.n).zip(&l.b) {
                row.fill(b);
            }
        }
        matmul(l.out, cx.n, l.inp, &mut yt, View::rows(&l.w, l.inp), View::rows(&xt, cx.n), true);
        Ok(Arc::new(transpose(&yt, l.out, cx.n, 1)))
    }
}

impl Layer for Linear {
    fn kind(&self) -> &'static str {
        "linear"
    }

    fn relevance(&self) -> super::Relevance {
        super::Relevance::Dense
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        let [x] = ins else { return Err(format!("takes 1 input, got {}", ins.len())) };
        let (o, i) = self.weight.dims2().map_err(|e| e.to_string())?;
        match x {
            Shape::Flat(f) if *f == i => Ok(Shape::Flat(o)),
            s => Err(format!("weight [{o},{i}] does not take an input of {s}")),
        }
    }

    fn tensors(&self) -> Vec<(&'static str, &Tensor)> {
        std::iter::once(("weight", &self.weight)).chain(self.bias.iter().map(|b| ("bias", b))).collect()
    }

    fn tensors_mut(&mut self) -> Vec<&mut Tensor> {
        std::iter::once(&mut self.weight).chain(self.bias.as_mut()).collect()
    }

    fn tensor_forward(
        &self,
        cx: &mut TensorCx,
        ins: &[&Tensor],
        _rank: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok((self.tensor_apply(cx, ins[0], true)?, None))
    }

    fn tensor_tangent(&self, cx: &mut TensorCx, ins: &[&Tensor], _kept: &TensorKept) -> Result<Tensor> {
        self.tensor_apply(cx, ins[0], false)
    }

    fn tensor_vjp(&self, cx: &mut TensorCx, g: &Tensor, _kept: &TensorKept) -> Result<Vec<Tensor>> {
        Ok(vec![g.matmul(&cx.param(&self.weight)?)?])
    }

    fn cpu_weights(&self) -> Result<Option<Prepared>> {
        let (out, inp) = self.weight.dims2()?;
        let w = self.weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let b = match &self.bias {
            Some(b) => b.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            None => vec![0.0; out],
        };
        Ok(Some(Box::new(LinearKernel { w, b, out, inp })))
    }

    fn cpu_forward(
        &self,
        cx: &mut CpuCx,
        ins: &[&Buf],
        _rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        Ok((self.cpu_apply(cx, ins[0], true)?, None))
    }

    fn cpu_tangent(&self, cx: &mut CpuCx, ins: &[&Buf], _kept: &CpuKept) -> Result<Buf> {
        self.cpu_apply(cx, ins[0], false)
    }

    fn cpu_vjp(&self, cx: &mut CpuCx, g: &Buf, _kept: &CpuKept) -> Result<Vec<Buf>> {
        let l = cx.weights::<LinearKernel>()?;
        let mut gx = vec![0.0f32; cx.n * l.inp];
        matmul(cx.n, l.inp, l.out, &mut gx, View::rows(g, l.out), View::rows(&l.w, l.inp), false);
        Ok(vec![Arc::new(gx)])
    }
}

/// Every case's head is a linear layer (layer_tests.rs); this one puts a second one, on a
/// flat vector in the middle of a network, under the layer stop (Grad-CAM on a flat node).
/// The ONNX ops this file maps: Gemm, and MatMul by a constant (on a channels-last view of a
/// map, a 1×1 convolution).
pub(super) const ONNX: &[(&str, Mapping)] = &[("Gemm", onnx_gemm), ("MatMul", onnx_matmul)];

/// Gemm of a flat vector and a constant B (alpha, beta, transB folded into the weights).
fn onnx_gemm(im: &mut dyn Import) -> Step<()> {
    let a = im.node_in(0)?;
    let b = im.const_in(1)?.ok_or("has no constant B")?;
    if im.int("transA", 0) != 0 {
        return Err("transA = 1 is not supported".into());
    }
    let &[r, c] = b.dims.as_slice() else { return Err(format!("B of shape {:?}", b.dims)) };
    if r == 0 || c == 0 {
        return Err(format!("B of shape {:?} is empty", b.dims));
    }
    let alpha = im.float("alpha", 1.0);
    let trans_b = im.int("transB", 0) != 0;
    let (out, inp) = if trans_b { (r, c) } else { (c, r) };
    let bv = b.f32s();
    // Weight [out, in]: B as stored with transB, Bᵀ without; alpha folded in.
    let weight: Vec<f32> = (0..out * inp)
        .map(|k| {
            let (o, i) = (k / inp, k % inp);
            alpha * if trans_b { bv[o * inp + i] } else { bv[i * out + o] }
        })
        .collect();
    let bias = match im.const_in(2)? {
        None => None,
        Some(cb) => {
            let beta = im.float("beta", 1.0);
            let v = cb.f32s();
            let v = match v.len() {
                1 => vec![v[0]; out],
                l if l == out => v,
                l => return Err(format!("C of {l} values for {out} outputs")),
            };
            Some(tensor(v.iter().map(|x| beta * x).collect(), &[out])?)
        }
    };
    let op = Op::Linear(Linear { weight: tensor(weight, &[out, inp])?, bias });
    let id = im.push(op, &[a], "")?;
    im.set(Val::Node(id))
}

/// MatMul by a constant [in, out]: a linear layer of a flat vector, or a 1×1 convolution of
/// the channels at each position of a channels-last view.
fn onnx_matmul(im: &mut dyn Import) -> Step<()> {
    let (a, last) = im.view_in(0)?;
    let b = im.const_in(1)?.ok_or("has no constant second input")?;
    let &[inp, out] = b.dims.as_slice() else { return Err(format!("B of shape {:?}", b.dims)) };
    if inp == 0 || out == 0 {
        return Err(format!("B of shape {:?} is empty", b.dims));
    }
    let bv = b.f32s();
    let weight: Vec<f32> = (0..out * inp).map(|k| bv[(k % inp) * out + k / inp]).collect();
    if last {
        let weight = tensor(weight, &[out, inp, 1, 1])?;
        let conv = Conv { weight, bias: None, stride: [1; 2], padding: [0; 4], dilation: [1; 2], groups: 1 };
        let id = im.push(Op::Conv(conv), &[a], "")?;
        return im.set(Val::Last(id));
    }
    let op = Op::Linear(Linear { weight: tensor(weight, &[out, inp])?, bias: None });
    let id = im.push(op, &[a], "")?;
    im.set(Val::Node(id))
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::Case;
    use super::{Flatten, Op};
    vec![Case::new("linear between flatten and the head", |b, x, r| {
        let f = b.push("flat", Op::Flatten(Flatten), &[x]);
        let lin = Linear { weight: r.tensor(&[20, 8 * 9 * 9], 1.0 / 24.0), bias: Some(r.tensor(&[20], 0.1)) };
        b.push("t", Op::Linear(lin), &[f])
    })]
}

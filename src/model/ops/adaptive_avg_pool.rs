//! Adaptive average pooling of a feature map [B,C,H,W] to a fixed [B,C,OH,OW] (PyTorch's
//! bins ⌊i·H/OH⌋ .. ⌈(i+1)·H/OH⌉); [1, 1] is global average pooling (ONNX
//! `GlobalAveragePool`, `ReduceMean` over H and W). Linear, on one gather table
//! ([`super::pool`]). Occlusion: it mixes all positions of a bin, so it starts the head.

use super::pool::{
    cpu_average, cpu_average_plan, cpu_average_vjp, tensor_average, tensor_average_vjp, Averaging, Gather,
};
use super::{CpuCx, CpuKept, Layer, Prepared, TensorCx, TensorKept};
use super::{Flatten, Import, Mapping, Op};
use crate::error::Result;
use crate::model::kernels::Buf;
use crate::model::mapping::{Step, Val};
use crate::model::shape::Shape;
use candle_core::Tensor;

/// Adaptive average pooling to (rows, columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveAvgPool(pub [usize; 2]);

impl Averaging for AdaptiveAvgPool {
    fn table(&self, hw: (usize, usize), ohw: (usize, usize)) -> Gather {
        Gather::adaptive(hw, ohw)
    }
}

impl Layer for AdaptiveAvgPool {
    fn kind(&self) -> &'static str {
        "adaptive_avg_pool"
    }

    fn relevance(&self) -> super::Relevance {
        super::Relevance::Norm
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        let [x] = ins else { return Err(format!("takes 1 input, got {}", ins.len())) };
        let (c, h, w) = x.map()?;
        let [oh, ow] = self.0;
        if h == 0 || w == 0 || oh == 0 || ow == 0 {
            return Err(format!("cannot pool {h}×{w} to {oh}×{ow}"));
        }
        Ok(Shape::Map(c, oh, ow))
    }

    fn tensor_forward(
        &self,
        cx: &mut TensorCx,
        ins: &[&Tensor],
        _rank: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok((tensor_average(self, cx, ins[0])?, None))
    }

    fn tensor_vjp(&self, cx: &mut TensorCx, g: &Tensor, _kept: &TensorKept) -> Result<Vec<Tensor>> {
        Ok(vec![tensor_average_vjp(self, cx, g)?])
    }

    fn cpu_plan(&self, ins: &[Shape], out: Shape) -> Result<Option<Prepared>> {
        cpu_average_plan(self, ins, out)
    }

    fn cpu_forward(
        &self,
        cx: &mut CpuCx,
        ins: &[&Buf],
        _rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        Ok((cpu_average(cx, ins[0])?, None))
    }

    fn cpu_vjp(&self, cx: &mut CpuCx, g: &Buf, _kept: &CpuKept) -> Result<Vec<Buf>> {
        Ok(vec![cpu_average_vjp(cx, g)?])
    }
}

/// The ONNX ops this file maps: GlobalAveragePool, and ReduceMean over the spatial axes.
pub(super) const ONNX: &[(&str, Mapping)] = &[("GlobalAveragePool", onnx_global), ("ReduceMean", onnx_mean)];

fn onnx_global(im: &mut dyn Import) -> Step<()> {
    let x = im.node_in(0)?;
    im.map_hw(x)?;
    let id = im.push(Op::AdaptiveAvgPool(AdaptiveAvgPool([1, 1])), &[x], "")?;
    im.set(Val::Node(id))
}

/// ReduceMean over the two spatial axes: global average pooling (flattened without
/// keepdims). The axes are an attribute before opset 18 and an input since.
fn onnx_mean(im: &mut dyn Import) -> Step<()> {
    let x = im.node_in(0)?;
    im.map_hw(x)?;
    let mut axes = im.axes(1, 4)?;
    axes.sort_unstable();
    if axes != [2, 3] {
        return Err(format!("ReduceMean over axes {axes:?}: only the spatial axes [2, 3] are supported"));
    }
    let pooled = im.push(Op::AdaptiveAvgPool(AdaptiveAvgPool([1, 1])), &[x], "")?;
    let id = if im.int("keepdims", 1) == 0 {
        im.push(Op::Flatten(Flatten), &[pooled], "/flatten")?
    } else {
        pooled
    };
    im.set(Val::Node(id))
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::Case;
    use super::Op;
    vec![
        Case::new("adaptive avg-pool 4×3", |b, x, _| {
            b.push("t", Op::AdaptiveAvgPool(AdaptiveAvgPool([4, 3])), &[x])
        }),
        Case::new("global average pool", |b, x, _| {
            b.push("t", Op::AdaptiveAvgPool(AdaptiveAvgPool([1, 1])), &[x])
        }),
    ]
}

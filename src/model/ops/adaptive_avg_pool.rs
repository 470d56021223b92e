//! Adaptive average pooling of a feature map [B,C,H,W] to a fixed [B,C,OH,OW] (PyTorch's
//! bins ⌊i·H/OH⌋ .. ⌈(i+1)·H/OH⌉); [1, 1] is global average pooling (ONNX
//! `GlobalAveragePool`, `ReduceMean` over H and W). Linear, on one gather table
//! ([`super::pool`]). Occlusion: it mixes all positions of a bin, so it starts the head.

use super::pool::{planes, Gather, TensorGather};
use super::{CpuCx, CpuKept, Layer, Prepared, TensorCx, TensorKept};
use crate::error::Result;
use crate::model::kernels::pool::{self as kernel, PoolTable};
use crate::model::kernels::Buf;
use crate::model::shape::Shape;
use candle_core::Tensor;
use std::sync::Arc;

/// Adaptive average pooling to (rows, columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveAvgPool(pub [usize; 2]);

impl AdaptiveAvgPool {
    fn gather<'c>(&self, cx: &'c mut TensorCx) -> Result<&'c TensorGather> {
        let (hw, ohw) = planes(cx.ins, cx.out).map_err(|m| cx.error(m))?;
        cx.cached(|cx| Gather::adaptive(hw, ohw).tensors(cx))
    }
}

impl Layer for AdaptiveAvgPool {
    fn kind(&self) -> &'static str {
        "adaptive_avg_pool"
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
        let out = cx.out.map().map_err(|m| cx.error(m))?;
        Ok((self.gather(cx)?.average(ins[0], out)?, None))
    }

    fn tensor_vjp(&self, cx: &mut TensorCx, g: &Tensor, _kept: &TensorKept) -> Result<Vec<Tensor>> {
        let input = cx.ins[0].map().map_err(|m| cx.error(m))?;
        Ok(vec![self.gather(cx)?.average_vjp(g, input)?])
    }

    fn cpu_plan(&self, ins: &[Shape], out: Shape) -> Result<Option<Prepared>> {
        let (hw, ohw) = planes(ins, out).map_err(crate::error::Error::Invalid)?;
        Ok(Some(Box::new(Gather::adaptive(hw, ohw).cpu(None, hw, ohw))))
    }

    fn cpu_forward(
        &self,
        cx: &mut CpuCx,
        ins: &[&Buf],
        _rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        let planes = cx.out.channels() * cx.n;
        Ok((Arc::new(kernel::avg_forward(cx.plan::<PoolTable>()?, ins[0], planes)), None))
    }

    fn cpu_vjp(&self, cx: &mut CpuCx, g: &Buf, _kept: &CpuKept) -> Result<Vec<Buf>> {
        let planes = cx.out.channels() * cx.n;
        Ok(vec![Arc::new(kernel::avg_vjp(cx.plan::<PoolTable>()?, g, planes))])
    }
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

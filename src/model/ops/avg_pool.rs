//! Average pooling of a feature map [B,C,H,W] → [B,C,OH,OW] (PyTorch's `AvgPool2d`, ONNX
//! `AveragePool`), with or without the padding counted in the divisor. Linear: its tangent is
//! itself, its vector–Jacobian product spreads each gradient over its window with the same
//! weights. Both executors read one gather table ([`super::pool`]).

use super::pool::{average_region, planes, Gather, TensorGather, Window};
use super::{CpuCx, CpuKept, Layer, Prepared, Rect, TensorCx, TensorKept};
use crate::error::Result;
use crate::model::kernels::pool::{self as kernel, PoolTable};
use crate::model::kernels::Buf;
use crate::model::shape::Shape;
use candle_core::Tensor;
use std::sync::Arc;

/// An average pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool {
    /// The window.
    pub window: Window,
    /// Whether padded positions count in the divisor.
    pub count_include_pad: bool,
}

impl AvgPool {
    fn table(&self, ins: &[Shape], out: Shape) -> std::result::Result<Gather, String> {
        let (hw, ohw) = planes(ins, out)?;
        Ok(Gather::window(&self.window, Some(self.count_include_pad), hw, ohw))
    }

    fn gather<'c>(&self, cx: &'c mut TensorCx) -> Result<&'c TensorGather> {
        let t = self.table(cx.ins, cx.out).map_err(|m| cx.error(m))?;
        cx.cached(|cx| t.tensors(cx))
    }
}

impl Layer for AvgPool {
    fn kind(&self) -> &'static str {
        "avg_pool"
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        self.window.infer(ins)
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
        let t = self.table(ins, out).map_err(crate::error::Error::Invalid)?;
        Ok(Some(Box::new(t.cpu(None, hw, ohw))))
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

    fn reach(&self, changed: &[&Rect], out: (usize, usize)) -> Option<Rect> {
        Some(self.window.reach(changed.first()?, out))
    }

    fn region(&self, cx: &mut CpuCx, ins: &[&[f32]], r: &Rect, out: &mut [f32]) -> Result<()> {
        let (c, _, ow) = cx.out_map()?;
        average_region(cx.plan::<PoolTable>()?, ins[0], c, r, ow, out);
        Ok(())
    }
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::{window, Case};
    use super::Op;
    vec![
        Case::new("avg-pool count_include_pad", |b, x, _| {
            b.push(
                "t",
                Op::AvgPool(AvgPool { window: window(3, 2, 1, false), count_include_pad: true }),
                &[x],
            )
        }),
        Case::new("avg-pool ceil_mode, no pad count", |b, x, _| {
            b.push(
                "t",
                Op::AvgPool(AvgPool { window: window(2, 2, 1, true), count_include_pad: false }),
                &[x],
            )
        }),
    ]
}

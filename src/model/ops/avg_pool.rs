//! Average pooling of a feature map [B,C,H,W] → [B,C,OH,OW] (PyTorch's `AvgPool2d`, ONNX
//! `AveragePool`), with or without the padding counted in the divisor. Linear: its tangent is
//! itself, its vector–Jacobian product spreads each gradient over its window with the same
//! weights. Both executors read one gather table ([`super::pool`]).

use super::pool::{
    average_region, cpu_average, cpu_average_plan, cpu_average_vjp, tensor_average, tensor_average_vjp,
    Averaging, Gather, Window,
};
use super::{CpuCx, CpuKept, Layer, Prepared, Rect, TensorCx, TensorKept};
use super::{Import, Mapping, Op};
use crate::error::Result;
use crate::model::kernels::pool::PoolTable;
use crate::model::kernels::Buf;
use crate::model::mapping::{Step, Val};
use crate::model::shape::Shape;
use candle_core::Tensor;

/// An average pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool {
    /// The window.
    pub window: Window,
    /// Whether padded positions count in the divisor.
    pub count_include_pad: bool,
}

impl Averaging for AvgPool {
    fn table(&self, hw: (usize, usize), ohw: (usize, usize)) -> Gather {
        Gather::window(&self.window, Some(self.count_include_pad), hw, ohw)
    }
}

impl Layer for AvgPool {
    fn kind(&self) -> &'static str {
        "avg_pool"
    }

    fn relevance(&self) -> super::Relevance {
        super::Relevance::Norm
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

    fn reach(&self, changed: &[&Rect], out: (usize, usize)) -> Option<Rect> {
        Some(self.window.reach(changed.first()?, out))
    }

    fn region(&self, cx: &mut CpuCx, ins: &[&[f32]], r: &Rect, out: &mut [f32]) -> Result<()> {
        let (c, _, ow) = cx.out_map()?;
        average_region(cx.plan::<PoolTable>()?, ins[0], c, r, ow, out);
        Ok(())
    }
}

/// The ONNX op this file maps.
pub(super) const ONNX: &[(&str, Mapping)] = &[("AveragePool", onnx)];

fn onnx(im: &mut dyn Import) -> Step<()> {
    let (x, window) = super::pool::onnx_window(&*im)?;
    let count_include_pad = im.int("count_include_pad", 0) != 0;
    let id = im.push(Op::AvgPool(AvgPool { window, count_include_pad }), &[x], "")?;
    im.set(Val::Node(id))
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

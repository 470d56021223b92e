//! Max-pooling of a feature map [B,C,H,W] → [B,C,OH,OW] (PyTorch's `MaxPool2d`, ONNX
//! `MaxPool`, global max pooling as a window over the whole map).
//!
//! Each window keeps its first maximum (strict >, row-major: PyTorch's choice) by a rank (the
//! input itself, or under the softplus surrogate the pre-activation of the nonlinearity
//! below: the same order in exact arithmetic, without float32's collapse of far-negative
//! softplus outputs to one tied zero; see [`crate::model::sweep`]). The route (the winner's
//! position) is kept: the gradient goes whole to it, and tangents follow it. Padding never
//! wins; a window of padding alone gives 0.

use super::pool::{planes, Gather, TensorGather, Window};
use super::{CpuCx, CpuKept, Layer, Prepared, Rect, TensorCx, TensorKept};
use super::{Import, Mapping, Op};
use crate::error::Result;
use crate::model::kernels::pool::{self as kernel, MaxGeometry, PoolTable};
use crate::model::kernels::Buf;
use crate::model::mapping::{Step, Val};
use crate::model::shape::Shape;
use candle_core::{Tensor, D};
use std::sync::Arc;

/// A max-pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool(pub Window);

impl MaxPool {
    fn gather<'c>(&self, cx: &'c mut TensorCx) -> Result<&'c TensorGather> {
        let (hw, ohw) = planes(cx.ins, cx.out).map_err(|m| cx.error(m))?;
        let win = self.0;
        cx.cached(|cx| Gather::window(&win, None, hw, ohw).tensors(cx))
    }

    /// The values of `x` at `route`: [B,C,OH,OW].
    fn pick(&self, cx: &mut TensorCx, x: &Tensor, route: &Tensor) -> Result<Tensor> {
        let (c, oh, ow) = cx.out.map().map_err(|m| cx.error(m))?;
        let win = self.gather(cx)?.windows(x, f64::NEG_INFINITY)?;
        // Padding positions never win, so a tangent's sentinel value (−∞) is never picked.
        Ok(win.gather(route, D::Minus1)?.reshape((x.dim(0)?, c, oh, ow))?)
    }
}

impl Layer for MaxPool {
    fn kind(&self) -> &'static str {
        "max_pool"
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        self.0.infer(ins)
    }

    fn routes(&self) -> bool {
        true
    }

    fn tensor_forward(
        &self,
        cx: &mut TensorCx,
        ins: &[&Tensor],
        rank: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let ranked = self.gather(cx)?.windows(rank.unwrap_or(ins[0]), f64::NEG_INFINITY)?;
        let route = ranked.detach().argmax_keepdim(D::Minus1)?.contiguous()?;
        Ok((self.pick(cx, ins[0], &route)?, Some(route)))
    }

    fn tensor_tangent(&self, cx: &mut TensorCx, ins: &[&Tensor], kept: &TensorKept) -> Result<Tensor> {
        let route = kept.route.ok_or_else(|| cx.error("max-pool without routes"))?;
        self.pick(cx, ins[0], route)
    }

    fn tensor_vjp(&self, cx: &mut TensorCx, g: &Tensor, kept: &TensorKept) -> Result<Vec<Tensor>> {
        let route = kept.route.ok_or_else(|| cx.error("max-pool without routes"))?;
        let input = cx.ins[0].map().map_err(|m| cx.error(m))?;
        let (b, c, oh, ow) = g.dims4()?;
        let t = self.gather(cx)?;
        // One-hot slots of the routes times g: a product, which autograd follows (candle
        // 0.11's backward of scatter_add fails on these shapes).
        let slot = Tensor::arange(0u32, t.k as u32, g.device())?.reshape((1, 1, 1, t.k))?;
        let hot = route.broadcast_eq(&slot)?.to_dtype(g.dtype())?;
        let spread = hot.broadcast_mul(&g.reshape((b, c, oh * ow, 1))?)?;
        Ok(vec![t.unwindow(&spread, input)?])
    }

    fn cpu_plan(&self, ins: &[Shape], out: Shape) -> Result<Option<Prepared>> {
        let (hw, ohw) = planes(ins, out).map_err(crate::error::Error::Invalid)?;
        Ok(Some(Box::new(Gather::window(&self.0, None, hw, ohw).cpu(Some(&self.0), hw, ohw))))
    }

    fn cpu_forward(
        &self,
        cx: &mut CpuCx,
        ins: &[&Buf],
        rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        let planes = cx.out.channels() * cx.n;
        let (out, route) =
            kernel::max_forward(cx.plan::<PoolTable>()?, ins[0], rank.unwrap_or(ins[0]), planes);
        Ok((Arc::new(out), Some(route)))
    }

    fn cpu_tangent(&self, cx: &mut CpuCx, ins: &[&Buf], kept: &CpuKept) -> Result<Buf> {
        let route = kept.route.ok_or_else(|| cx.error("max-pool without routes"))?;
        let planes = cx.out.channels() * cx.n;
        Ok(Arc::new(kernel::max_gather(cx.plan::<PoolTable>()?, ins[0], route, planes)))
    }

    fn cpu_vjp(&self, cx: &mut CpuCx, g: &Buf, kept: &CpuKept) -> Result<Vec<Buf>> {
        let route = kept.route.ok_or_else(|| cx.error("max-pool without routes"))?;
        let planes = cx.out.channels() * cx.n;
        Ok(vec![Arc::new(kernel::max_vjp(cx.plan::<PoolTable>()?, g, route, planes))])
    }

    fn reach(&self, changed: &[&Rect], out: (usize, usize)) -> Option<Rect> {
        Some(self.0.reach(changed.first()?, out))
    }

    fn region(&self, cx: &mut CpuCx, ins: &[&[f32]], r: &Rect, out: &mut [f32]) -> Result<()> {
        let t = cx.plan::<PoolTable>()?;
        let g = t.geometry.as_ref().ok_or_else(|| cx.error("internal: a max-pool table without geometry"))?;
        max_region(g, ins[0], cx.out.channels(), r, out);
        Ok(())
    }
}

/// A max-pool's outputs inside `r` of `c` planes from its input planes, each window scanned
/// in place from the pool's geometry (the first maximum, strict >, as the full pass keeps
/// it; a window of padding alone gives 0).
fn max_region(g: &MaxGeometry, x: &[f32], c: usize, r: &Rect, y: &mut [f32]) {
    let (len, out) = (g.h * g.w, g.oh * g.ow);
    for ch in 0..c {
        let xs = &x[ch * len..][..len];
        for oy in r.rows.clone() {
            let y0 = (oy * g.stride[0]) as isize - g.pad[0] as isize;
            let rows = y0.max(0) as usize..((y0 + g.kernel[0] as isize).max(0) as usize).min(g.h);
            for ox in r.cols.clone() {
                let x0 = (ox * g.stride[1]) as isize - g.pad[1] as isize;
                let cols = x0.max(0) as usize..((x0 + g.kernel[1] as isize).max(0) as usize).min(g.w);
                if rows.is_empty() || cols.is_empty() {
                    y[ch * out + oy * g.ow + ox] = 0.0;
                    continue;
                }
                // From the window's first value, keep any strictly larger one (a select).
                let mut best = xs[rows.start * g.w + cols.start];
                for iy in rows.clone() {
                    for &v in &xs[iy * g.w + cols.start..iy * g.w + cols.end] {
                        best = if v > best { v } else { best };
                    }
                }
                y[ch * out + oy * g.ow + ox] = best;
            }
        }
    }
}

/// The ONNX ops this file maps: MaxPool, and GlobalMaxPool (one window over the whole map).
pub(super) const ONNX: &[(&str, Mapping)] = &[("MaxPool", onnx), ("GlobalMaxPool", onnx_global)];

fn onnx(im: &mut dyn Import) -> Step<()> {
    let (x, window) = super::pool::onnx_window(&*im)?;
    let id = im.push(Op::MaxPool(MaxPool(window)), &[x], "")?;
    im.set(Val::Node(id))
}

fn onnx_global(im: &mut dyn Import) -> Step<()> {
    let x = im.node_in(0)?;
    let (_, h, w) = im.map_hw(x)?;
    let window = Window { kernel: [h, w], stride: [1, 1], padding: [0; 4], ceil_mode: false };
    let id = im.push(Op::MaxPool(MaxPool(window)), &[x], "")?;
    im.set(Val::Node(id))
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::{window, Case};
    use super::Op;
    vec![
        Case::new("max-pool 3×3 stride 2 padding 1", |b, x, _| {
            b.push("t", Op::MaxPool(MaxPool(window(3, 2, 1, false))), &[x])
        }),
        Case::new("max-pool 2×2 ceil_mode", |b, x, _| {
            b.push("t", Op::MaxPool(MaxPool(window(2, 2, 0, true))), &[x])
        }),
        Case::new("silu then max-pool (not monotone: pooled after)", |b, x, r| {
            let c = b.push("pre", super::cases::conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[x]);
            let a = b.act("a", crate::model::nonlinearity::Nonlinearity::Silu, c);
            b.push("t", Op::MaxPool(MaxPool(window(2, 2, 0, false))), &[a])
        }),
        Case::new("hard swish then max-pool", |b, x, r| {
            let c = b.push("pre", super::cases::conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[x]);
            let a = b.act("a", crate::model::nonlinearity::Nonlinearity::HardSwish, c);
            b.push("t", Op::MaxPool(MaxPool(window(2, 2, 0, false))), &[a])
        }),
    ]
}

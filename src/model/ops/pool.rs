//! What the pooling ops share: the window geometry and one gather table per node, read by
//! both executors so that they pool the same windows.
//!
//! A gather table lists, for each output position, the k input positions of its window in
//! row-major order (the plane length `h·w` standing for padding) and, for averages, their
//! weights. The tensor path gathers each window's values with one `index_select` over the
//! flattened plane (a sentinel element past the end stands for padding: −∞ for max, 0 for
//! averages) and reduces the window axis; the CPU kernels sweep the same table
//! ([`crate::model::kernels::pool`]). A max-pool keeps each window's first maximum (strict >)
//! and routes the gradient whole to it (candle's own `max_pool2d` backward divides it by the
//! window size; see ../shared/DESIGN.md).

use super::{CpuCx, Prepared, Rect, TensorCx};
use crate::error::{Error, Result};
use crate::model::kernels::pool::{self as kernel, MaxGeometry, PoolTable};
use crate::model::kernels::Buf;
use crate::model::mapping::{OnnxNode, Step};
use crate::model::shape::Shape;
use candle_core::{Tensor, D};
use std::sync::Arc;

/// The window of a max or average pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Kernel (rows, columns).
    pub kernel: [usize; 2],
    /// Stride (rows, columns).
    pub stride: [usize; 2],
    /// Implicit padding (top, left, bottom, right): never the maximum, and counted in an
    /// average only with `count_include_pad`.
    pub padding: [usize; 4],
    /// Round the output size up (PyTorch's `ceil_mode`; a window must still start inside the
    /// input or its leading padding).
    pub ceil_mode: bool,
}

impl Window {
    /// The output length along one axis (0 rows, 1 columns) for an input of `len`, or None
    /// when no window fits.
    pub fn out_len(&self, axis: usize, len: usize) -> Option<usize> {
        let (k, s) = (self.kernel[axis], self.stride[axis]);
        let (lead, trail) = (self.padding[axis], self.padding[axis + 2]);
        // Checked: pads or kernels near usize::MAX (a hostile file) must not wrap around.
        let padded = len.checked_add(lead)?.checked_add(trail)?;
        let span = padded.checked_sub(k)?;
        if s == 0 {
            return None;
        }
        let mut out = if self.ceil_mode { span.div_ceil(s) + 1 } else { span / s + 1 };
        // PyTorch: the last window must start inside the input or the leading padding.
        if self.ceil_mode && (out - 1) * s >= len + lead {
            out -= 1;
        }
        Some(out)
    }

    /// The output shape of a max or average pool of this window on `ins`.
    pub(super) fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        let [x] = ins else { return Err(format!("takes 1 input, got {}", ins.len())) };
        let (c, h, w) = x.map()?;
        // A pad as wide as the window makes windows of padding only (onnxruntime refuses).
        if (0..4).any(|i| self.padding[i] >= self.kernel[i % 2]) {
            return Err(format!("pads {:?} are not smaller than its {:?} window", self.padding, self.kernel));
        }
        let too_small = || format!("input {h}×{w} is smaller than its {:?} window", self.kernel);
        let oh = self.out_len(0, h).ok_or_else(too_small)?;
        let ow = self.out_len(1, w).ok_or_else(too_small)?;
        Ok(Shape::Map(c, oh, ow))
    }

    /// The output rectangle a changed input rectangle reaches (occlusion).
    pub(super) fn reach(&self, r: &Rect, (oh, ow): (usize, usize)) -> Rect {
        Rect {
            rows: super::reach(&r.rows, self.stride[0], self.padding[0], self.kernel[0], oh),
            cols: super::reach(&r.cols, self.stride[1], self.padding[1], self.kernel[1], ow),
        }
    }
}

/// (H, W) of a pool's input and (OH, OW) of its output.
pub(super) type Planes = ((usize, usize), (usize, usize));

/// The [`Planes`] of a pool with input shapes `ins` and output `out`.
pub(super) fn planes(ins: &[Shape], out: Shape) -> std::result::Result<Planes, String> {
    let (_, h, w) = ins.first().ok_or("no input")?.map()?;
    let (_, oh, ow) = out.map()?;
    Ok(((h, w), (oh, ow)))
}

/// A gather table: source indices (k per output position, row-major; `len` = padding) and,
/// for averages, weights.
#[derive(Debug, Clone)]
pub(super) struct Gather {
    pub index: Vec<u32>,
    pub weights: Option<Vec<f32>>,
    pub k: usize,
    /// Input plane length H·W (the padding index).
    pub len: usize,
    /// Output plane length OH·OW.
    pub out: usize,
}

impl Gather {
    /// The table of `win` from an input `h×w` to an output `oh×ow`; weights for an average
    /// (`average` = Some(count_include_pad)).
    pub fn window(
        win: &Window,
        average: Option<bool>,
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
    ) -> Self {
        let pad = (h * w) as u32;
        let k = win.kernel[0] * win.kernel[1];
        let mut idx = Vec::with_capacity(oh * ow * k);
        let mut wts = Vec::with_capacity(oh * ow * k);
        let include = average == Some(true);
        for (oy, ox) in (0..oh).flat_map(|y| (0..ow).map(move |x| (y, x))) {
            let mut count = 0usize;
            let start = idx.len();
            for ky in 0..win.kernel[0] {
                for kx in 0..win.kernel[1] {
                    let y = (oy * win.stride[0] + ky) as isize - win.padding[0] as isize;
                    let x = (ox * win.stride[1] + kx) as isize - win.padding[1] as isize;
                    let inside = y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w;
                    // count_include_pad counts the declared padding, not positions a
                    // ceil-mode window hangs past it (PyTorch).
                    let in_padded = y < (h + win.padding[2]) as isize && x < (w + win.padding[3]) as isize;
                    if inside {
                        idx.push((y as usize * w + x as usize) as u32);
                        count += 1;
                    } else {
                        idx.push(pad);
                        if include && in_padded {
                            count += 1;
                        }
                    }
                }
            }
            let norm = 1.0 / count.max(1) as f32;
            wts.extend(idx[start..].iter().map(|&i| if i == pad { 0.0 } else { norm }));
        }
        let weights = average.is_some().then_some(wts);
        Self { index: idx, weights, k, len: h * w, out: oh * ow }
    }

    /// Adaptive average pooling's table (PyTorch's bins ⌊i·H/out⌋ .. ⌈(i+1)·H/out⌉).
    pub fn adaptive((h, w): (usize, usize), (oh, ow): (usize, usize)) -> Self {
        let pad = (h * w) as u32;
        let bins = |o: usize, out: usize, len: usize| (o * len / out, ((o + 1) * len).div_ceil(out));
        let ky = (0..oh).map(|o| bins(o, oh, h)).map(|(a, b)| b - a).max().unwrap_or(1);
        let kx = (0..ow).map(|o| bins(o, ow, w)).map(|(a, b)| b - a).max().unwrap_or(1);
        let k = ky * kx;
        let mut idx = Vec::with_capacity(oh * ow * k);
        let mut wts = Vec::with_capacity(oh * ow * k);
        for oy in 0..oh {
            let (y0, y1) = bins(oy, oh, h);
            for ox in 0..ow {
                let (x0, x1) = bins(ox, ow, w);
                let norm = 1.0 / ((y1 - y0) * (x1 - x0)) as f32;
                for dy in 0..ky {
                    for dx in 0..kx {
                        let (y, x) = (y0 + dy, x0 + dx);
                        if y < y1 && x < x1 {
                            idx.push((y * w + x) as u32);
                            wts.push(norm);
                        } else {
                            idx.push(pad);
                            wts.push(0.0);
                        }
                    }
                }
            }
        }
        Self { index: idx, weights: Some(wts), k, len: h * w, out: oh * ow }
    }

    /// The CPU kernels' table, with a max-pool's geometry (`max`) for their row sweeps.
    pub fn cpu(self, max: Option<&Window>, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> PoolTable {
        let tiled = max
            .is_some_and(|win| win.kernel == [2, 2] && win.stride == [2, 2] && win.padding == [0; 4])
            && (2 * oh, 2 * ow) == (h, w);
        let geometry = max.map(|win| MaxGeometry {
            kernel: win.kernel,
            stride: win.stride,
            pad: [win.padding[0], win.padding[1]],
            h,
            w,
            oh,
            ow,
        });
        PoolTable {
            index: self.index,
            weights: self.weights,
            k: self.k,
            len: self.len,
            out: self.out,
            tiles: tiled.then_some((h, w)),
            geometry,
        }
    }

    /// The tensor path's table on the context's device.
    pub fn tensors(self, cx: &TensorCx) -> Result<TensorGather> {
        let positions = self.out;
        let index = Tensor::from_vec(self.index, positions * self.k, cx.device)?;
        let weights = match self.weights {
            Some(v) => Some(Tensor::from_vec(v, (positions, self.k), cx.device)?.to_dtype(cx.dtype)?),
            None => None,
        };
        Ok(TensorGather { index, weights, k: self.k, len: self.len })
    }
}

/// A gather table as tensors (the tensor path's cached data of a pooling node).
pub(super) struct TensorGather {
    pub index: Tensor,
    pub weights: Option<Tensor>,
    pub k: usize,
    pub len: usize,
}

impl TensorGather {
    /// Windows [B,C,OH·OW,k] of `x` [B,C,H,W], padding filled with `pad`.
    pub fn windows(&self, x: &Tensor, pad: f64) -> Result<Tensor> {
        let (b, c, _, _) = x.dims4()?;
        let flat = x.reshape((b, c, self.len))?;
        let sentinel = Tensor::full(pad, (b, c, 1), x.device())?.to_dtype(x.dtype())?;
        let flat = Tensor::cat(&[&flat, &sentinel], 2)?;
        let gathered = flat.index_select(&self.index, 2)?;
        Ok(gathered.reshape((b, c, gathered.dim(2)? / self.k, self.k))?)
    }

    /// The adjoint of [`TensorGather::windows`]: windows [B,C,OH·OW,k] summed back onto
    /// [B,C,H,W].
    pub fn unwindow(&self, g: &Tensor, (c, h, w): (usize, usize, usize)) -> Result<Tensor> {
        let b = g.dim(0)?;
        let flat = g.reshape((b, c, g.dim(2)? * self.k))?;
        let zeros = Tensor::zeros((b, c, self.len + 1), flat.dtype(), flat.device())?;
        let back = zeros.index_add(&self.index, &flat, 2)?;
        Ok(back.narrow(2, 0, h * w)?.reshape((b, c, h, w))?)
    }

    fn weights(&self) -> Result<Tensor> {
        self.weights.clone().ok_or_else(|| Error::Invalid("internal: an average without weights".into()))
    }

    /// The weighted average of each window of `x`: [B,C,OH,OW] (`out` = (C, OH, OW)).
    pub fn average(&self, x: &Tensor, (c, oh, ow): (usize, usize, usize)) -> Result<Tensor> {
        let win = self.windows(x, 0.0)?;
        let out = win.broadcast_mul(&self.weights()?.unsqueeze(0)?.unsqueeze(0)?)?.sum(D::Minus1)?;
        Ok(out.reshape((x.dim(0)?, c, oh, ow))?)
    }

    /// The vector–Jacobian product of [`TensorGather::average`] onto the input `(c, h, w)`.
    pub fn average_vjp(&self, g: &Tensor, input: (usize, usize, usize)) -> Result<Tensor> {
        let (b, c, oh, ow) = g.dims4()?;
        let spread =
            g.reshape((b, c, oh * ow, 1))?.broadcast_mul(&self.weights()?.unsqueeze(0)?.unsqueeze(0)?)?;
        self.unwindow(&spread, input)
    }
}

/// An average over gather-table windows: average pooling and adaptive average pooling, which
/// differ only in their table; the functions below are the [`super::Layer`] methods both share.
pub(super) trait Averaging {
    /// The gather table from an input plane `hw` to an output plane `ohw`.
    fn table(&self, hw: (usize, usize), ohw: (usize, usize)) -> Gather;
}

/// The tensor path's cached table of `op` at `cx`'s node.
fn tensor_table<'c>(op: &impl Averaging, cx: &'c mut TensorCx) -> Result<&'c TensorGather> {
    let (hw, ohw) = planes(cx.ins, cx.out).map_err(|m| cx.error(m))?;
    cx.cached(|cx| op.table(hw, ohw).tensors(cx))
}

/// The average of `x` on the tensor path.
pub(super) fn tensor_average(op: &impl Averaging, cx: &mut TensorCx, x: &Tensor) -> Result<Tensor> {
    let out = cx.out.map().map_err(|m| cx.error(m))?;
    tensor_table(op, cx)?.average(x, out)
}

/// The average's vector–Jacobian product on the tensor path.
pub(super) fn tensor_average_vjp(op: &impl Averaging, cx: &mut TensorCx, g: &Tensor) -> Result<Tensor> {
    let input = cx.ins[0].map().map_err(|m| cx.error(m))?;
    tensor_table(op, cx)?.average_vjp(g, input)
}

/// The CPU kernels' table of `op` at one input size.
pub(super) fn cpu_average_plan(op: &impl Averaging, ins: &[Shape], out: Shape) -> Result<Option<Prepared>> {
    let (hw, ohw) = planes(ins, out).map_err(Error::Invalid)?;
    Ok(Some(Box::new(op.table(hw, ohw).cpu(None, hw, ohw))))
}

/// The average of a block on the CPU kernels.
pub(super) fn cpu_average(cx: &CpuCx, x: &[f32]) -> Result<Buf> {
    let planes = cx.out.channels() * cx.n;
    Ok(Arc::new(kernel::avg_forward(cx.plan::<PoolTable>()?, x, planes)))
}

/// The average's vector–Jacobian product on the CPU kernels.
pub(super) fn cpu_average_vjp(cx: &CpuCx, g: &[f32]) -> Result<Buf> {
    let planes = cx.out.channels() * cx.n;
    Ok(Arc::new(kernel::avg_vjp(cx.plan::<PoolTable>()?, g, planes)))
}

/// An average's outputs inside `r` of `c` planes (output width `ow`) from its input planes
/// (occlusion).
pub(super) fn average_region(t: &PoolTable, x: &[f32], c: usize, r: &Rect, ow: usize, y: &mut [f32]) {
    let w = t.weights.as_deref().unwrap_or(&[]);
    for ch in 0..c {
        let xs = &x[ch * t.len..][..t.len];
        for oy in r.rows.clone() {
            for ox in r.cols.clone() {
                let o = oy * ow + ox;
                let win = &t.index[o * t.k..][..t.k];
                y[ch * t.out + o] = win
                    .iter()
                    .zip(&w[o * t.k..][..t.k])
                    .filter(|(&i, _)| (i as usize) < t.len)
                    .map(|(&i, &wt)| wt * xs[i as usize])
                    .sum();
            }
        }
    }
}

/// An ONNX MaxPool's or AveragePool's input node and window (2-D, undilated).
pub(super) fn onnx_window(im: &dyn OnnxNode) -> Step<(usize, Window)> {
    let x = im.node_in(0)?;
    let (_, h, w) = im.map_hw(x)?;
    let kernel = im.pair("kernel_shape", [0, 0], 1)?;
    if kernel == [0, 0] {
        return Err("has no kernel_shape".into());
    }
    let stride = im.pair("strides", [1, 1], 1)?;
    if im.pair("dilations", [1, 1], 1)? != [1, 1] {
        return Err("dilated pooling is not supported".into());
    }
    let padding = im.padding(kernel, stride, (h, w))?;
    Ok((x, Window { kernel, stride, padding, ceil_mode: im.int("ceil_mode", 0) != 0 }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::pool::max_forward;

    #[test]
    fn kernel_row_sweeps_route_like_the_table_scan() {
        // Values on a coarse grid (many ties, so the first-maximum rule is exercised), a
        // separate rank plane, and geometries with padding, ceil mode, unequal strides and
        // windows wider than the stride.
        let geometries = [
            ([3, 3], [2, 2], [1, 1, 1, 1], false),
            ([3, 3], [2, 2], [0, 0, 0, 0], true),
            ([2, 3], [1, 2], [1, 0, 1, 0], false),
            ([3, 2], [3, 1], [1, 1, 1, 1], true),
            ([1, 1], [2, 2], [0, 0, 0, 0], false),
        ];
        let (h, w, planes) = (9, 11, 3);
        let x: Vec<f32> = (0..planes * h * w).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        let rank: Vec<f32> = (0..planes * h * w).map(|i| ((i * 104_729) % 5) as f32).collect();
        for (kernel, stride, padding, ceil_mode) in geometries {
            let win = Window { kernel, stride, padding, ceil_mode };
            let (oh, ow) = (win.out_len(0, h).unwrap(), win.out_len(1, w).unwrap());
            let rows = Gather::window(&win, None, (h, w), (oh, ow)).cpu(Some(&win), (h, w), (oh, ow));
            let table = PoolTable { geometry: None, tiles: None, ..rows.clone() };
            // Ranked by the values themselves, and by a separate rank plane (the surrogate's).
            for r in [&x, &rank] {
                assert_eq!(max_forward(&table, &x, r, planes), max_forward(&rows, &x, r, planes), "{win:?}");
            }
        }
    }
}

//! 2-D convolution (cross-correlation, PyTorch's convention): [B,C,H,W] → [B,O,OH,OW] with a
//! kernel [O, C/groups, kh, kw], stride, asymmetric zero padding, dilation and groups (a
//! depthwise convolution has groups = C). Batch norms are folded into it when a graph is built.
//!
//! Tensor path: candle's `conv2d` after explicit zero padding (so asymmetric padding works);
//! its vector–Jacobian product is `conv_transpose2d` per group, cropped back to the input. A
//! 3×3, stride-1, padding-1, ungrouped convolution uses [`Conv3x3`] instead, whose own
//! autograd backward is made of matmuls (fast training). CPU path: one GEMM per group over a
//! block's images ([`ConvKernel`]). The tangent is the forward pass without the bias.
//! Occlusion recomputes only the output rectangle a changed input rectangle reaches, as one
//! GEMM per group over that rectangle's patches.

use super::pool::Window;
use super::{CpuCx, CpuKept, Layer, Prepared, Rect, TensorCx, TensorKept};
use super::{Import, Mapping, Op};
use crate::error::Result;
use crate::model::conv::Conv3x3;
use crate::model::kernels::conv::{valid, ConvKernel, Planes};
use crate::model::kernels::gemm::{matmul, View};
use crate::model::kernels::Buf;
use crate::model::mapping::{tensor, Step, Val};
use crate::model::shape::{Shape, MAX_NODE_VALUES};
use candle_core::{DType, Tensor};
use std::sync::Arc;

/// A 2-D convolution.
#[derive(Debug, Clone)]
pub struct Conv {
    /// Kernel [C_out, C_in/groups, kh, kw].
    pub weight: Tensor,
    /// Bias [C_out].
    pub bias: Option<Tensor>,
    /// Stride (rows, columns).
    pub stride: [usize; 2],
    /// Zero padding (top, left, bottom, right).
    pub padding: [usize; 4],
    /// Dilation (rows, columns).
    pub dilation: [usize; 2],
    /// Channel groups (C_in for a depthwise convolution).
    pub groups: usize,
}

impl Conv {
    /// The kernel's extent (rows, columns) with its dilation.
    fn span(&self) -> Option<[usize; 2]> {
        let d = self.weight.dims();
        let span = |dil: usize, k: usize| dil.checked_mul(k.saturating_sub(1))?.checked_add(1);
        Some([span(self.dilation[0], *d.get(2)?)?, span(self.dilation[1], *d.get(3)?)?])
    }

    /// The flattened weights the CPU kernels run (f32).
    pub(crate) fn kernel(&self) -> candle_core::Result<ConvKernel> {
        let (o, cg, kh, kw) = self.weight.dims4()?;
        let w = self.weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let b = match &self.bias {
            Some(b) => b.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            None => vec![0.0; o],
        };
        Ok(ConvKernel {
            w,
            b,
            o,
            c: cg * self.groups,
            groups: self.groups,
            k: [kh, kw],
            stride: self.stride,
            pad: [self.padding[0], self.padding[1]],
            dil: self.dilation,
        })
    }

    /// A stride-1, padding-1, undilated, ungrouped 3×3 convolution (the [`Conv3x3`] path).
    fn plain3(&self) -> bool {
        self.weight.dims()[2..] == [3, 3]
            && self.padding == [1; 4]
            && self.stride == [1; 2]
            && self.dilation == [1; 2]
            && self.groups == 1
    }

    /// Stride and dilation as candle takes them (equal on both axes).
    fn square(&self, cx: &TensorCx) -> Result<(usize, usize)> {
        if self.stride[0] != self.stride[1] || self.dilation[0] != self.dilation[1] {
            return Err(cx.error(format!(
                "the tensor path needs equal row and column strides and dilations, got {:?} and {:?}",
                self.stride, self.dilation
            )));
        }
        Ok((self.stride[0], self.dilation[0]))
    }

    fn tensor_apply(&self, cx: &TensorCx, x: &Tensor, bias: bool) -> Result<Tensor> {
        let w = cx.param(&self.weight)?;
        let out = if self.plain3() {
            Conv3x3::new(&w)?.forward(x)?
        } else {
            let (s, d) = self.square(cx)?;
            let [pt, pl, pb, pr] = self.padding;
            let xp = x.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
            xp.conv2d(&w, 0, s, d, self.groups)?
        };
        match (&self.bias, bias) {
            (Some(b), true) => {
                let o = b.dim(0)?;
                Ok(out.broadcast_add(&cx.param(b)?.reshape((1, o, 1, 1))?)?)
            }
            _ => Ok(out),
        }
    }

    fn planes(cx: &CpuCx) -> Result<Planes> {
        let ((_, h, w), (_, oh, ow)) = (cx.in_map(0)?, cx.out_map()?);
        Ok(Planes { n: cx.n, h, w, oh, ow })
    }

    fn cpu_apply(&self, cx: &mut CpuCx, x: &Buf, bias: bool) -> Result<Buf> {
        let p = Self::planes(cx)?;
        let k = cx.weights::<ConvKernel>()?;
        Ok(Arc::new(k.forward(x, p, bias, &mut *cx.scratch)))
    }
}

impl Layer for Conv {
    fn kind(&self) -> &'static str {
        "conv"
    }

    fn relevance(&self) -> super::Relevance {
        super::Relevance::Convolution
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        let [x] = ins else { return Err(format!("takes 1 input, got {}", ins.len())) };
        let (c, h, w) = x.map()?;
        let (o, ci, kh, kw) = self.weight.dims4().map_err(|e| e.to_string())?;
        if self.groups == 0 || ci * self.groups != c || o % self.groups != 0 {
            return Err(format!(
                "kernel [{o},{ci},{kh},{kw}] with {} groups does not take {c} channels",
                self.groups
            ));
        }
        let Some([sh, sw]) = self.span() else {
            return Err(format!("dilations {:?} of a {kh}×{kw} kernel overflow", self.dilation));
        };
        let window =
            Window { kernel: [sh, sw], stride: self.stride, padding: self.padding, ceil_mode: false };
        // The passes allocate the zero-padded input: bound it like an output.
        let p = self.padding;
        let padded = h
            .checked_add(p[0])
            .and_then(|v| v.checked_add(p[2]))
            .zip(w.checked_add(p[1]).and_then(|v| v.checked_add(p[3])))
            .and_then(|(ph, pw)| Shape::Map(c, ph, pw).checked_len())
            .filter(|&n| n <= MAX_NODE_VALUES);
        if padded.is_none() {
            return Err(format!(
                "pads {p:?} of a {c}×{h}×{w} input exceed the limit of {MAX_NODE_VALUES} values per image"
            ));
        }
        let too_small = || format!("input {h}×{w} is smaller than its {sh}×{sw} (dilated) kernel");
        let oh = window.out_len(0, h).ok_or_else(too_small)?;
        let ow = window.out_len(1, w).ok_or_else(too_small)?;
        Ok(Shape::Map(o, oh, ow))
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
        let (c, h, w) = cx.ins[0].map().map_err(|m| cx.error(m))?;
        let weight = cx.param(&self.weight)?;
        let (o, _, kh, kw) = weight.dims4()?;
        if self.plain3() {
            // The input-gradient of a padding-1 3×3 conv: a padding-1 conv of g with the
            // kernel's channels swapped and its taps flipped.
            let back = weight.transpose(0, 1)?.contiguous()?.flip(&[2, 3])?;
            return Ok(vec![Conv3x3::new(&back)?.forward(g)?]);
        }
        let (s, d) = self.square(cx)?;
        let [pt, pl, pb, pr] = self.padding;
        let (hp, wp) = (h + pt + pb, w + pl + pr);
        let (oh, ow) = (g.dim(2)?, g.dim(3)?);
        let out_pad_h = hp - ((oh - 1) * s + d * (kh - 1) + 1);
        let out_pad_w = wp - ((ow - 1) * s + d * (kw - 1) + 1);
        if out_pad_h != out_pad_w {
            return Err(cx.error("the tensor path needs equal leftover rows and columns"));
        }
        let groups = self.groups;
        let og = o / groups;
        let mut parts = Vec::with_capacity(groups);
        for gi in 0..groups {
            let gg = if groups == 1 { g.clone() } else { g.narrow(1, gi * og, og)?.contiguous()? };
            let wg =
                if groups == 1 { weight.clone() } else { weight.narrow(0, gi * og, og)?.contiguous()? };
            parts.push(gg.conv_transpose2d(&wg, 0, out_pad_h, s, d)?);
        }
        let full = if parts.len() == 1 { parts.remove(0) } else { Tensor::cat(&parts, 1)? };
        debug_assert_eq!(full.dim(1).ok(), Some(c));
        Ok(vec![full.narrow(2, pt, h)?.narrow(3, pl, w)?])
    }

    fn cpu_weights(&self) -> Result<Option<Prepared>> {
        Ok(Some(Box::new(self.kernel()?)))
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
        let p = Self::planes(cx)?;
        let k = cx.weights::<ConvKernel>()?;
        Ok(vec![Arc::new(k.vjp(g, p, &mut *cx.scratch))])
    }

    fn reach(&self, changed: &[&Rect], (oh, ow): (usize, usize)) -> Option<Rect> {
        let r = changed.first()?;
        let [kh, kw] = self.span()?;
        Some(Rect {
            rows: super::reach(&r.rows, self.stride[0], self.padding[0], kh, oh),
            cols: super::reach(&r.cols, self.stride[1], self.padding[1], kw, ow),
        })
    }

    fn region(&self, cx: &mut CpuCx, ins: &[&[f32]], r: &Rect, out: &mut [f32]) -> Result<()> {
        let ((_, h, w), (_, oh, ow)) = (cx.in_map(0)?, cx.out_map()?);
        let k = cx.weights::<ConvKernel>()?;
        conv_region(k, ins[0], (h, w), r, (oh, ow), out);
        Ok(())
    }
}

/// A convolution's outputs inside `r` (all channels) from input x [C, h, w], as one GEMM per
/// group over the rectangle's patches, written into y [O, oh, ow].
fn conv_region(
    k: &ConvKernel,
    x: &[f32],
    (h, w): (usize, usize),
    r: &Rect,
    (oh, ow): (usize, usize),
    y: &mut [f32],
) {
    let np = r.rows.len() * r.cols.len();
    if np == 0 {
        return;
    }
    let (cg, og, kk) = (k.c / k.groups, k.o / k.groups, k.k[0] * k.k[1]);
    let mut patches = vec![0.0f32; cg * kk * np];
    let mut vals = vec![0.0f32; og * np];
    for gi in 0..k.groups {
        // Entries that read padding are zero: only the inside ones are written below.
        patches.fill(0.0);
        for ci in 0..cg {
            let plane = &x[(gi * cg + ci) * h * w..][..h * w];
            for ky in 0..k.k[0] {
                for kx in 0..k.k[1] {
                    let row = &mut patches[((ci * k.k[0] + ky) * k.k[1] + kx) * np..][..np];
                    let ncols = r.cols.len();
                    // The rectangle's columns whose input column lies inside the row (the rest
                    // read padding and stay zero).
                    let off = (kx * k.dil[1]) as isize - k.pad[1] as isize;
                    let inside = valid(off, k.stride[1], w, r.cols.end);
                    let cols = inside.start.max(r.cols.start)..inside.end.max(r.cols.start);
                    for (oy, dst) in r.rows.clone().zip(row.chunks_exact_mut(ncols)) {
                        let iy = (oy * k.stride[0] + ky * k.dil[0]) as isize - k.pad[0] as isize;
                        if iy < 0 || iy >= h as isize || cols.is_empty() {
                            continue;
                        }
                        let src = &plane[iy as usize * w..][..w];
                        let ix0 = ((cols.start * k.stride[1]) as isize + off) as usize;
                        let dst = &mut dst[cols.start - r.cols.start..cols.end - r.cols.start];
                        for (j, d) in dst.iter_mut().enumerate() {
                            *d = src[ix0 + j * k.stride[1]];
                        }
                    }
                }
            }
        }
        for (o, row) in vals.chunks_exact_mut(np).enumerate() {
            row.fill(k.b[gi * og + o]);
        }
        let wg = &k.w[gi * og * cg * kk..][..og * cg * kk];
        matmul(og, np, cg * kk, &mut vals, View::rows(wg, cg * kk), View::rows(&patches, np), true);
        for (o, row) in vals.chunks_exact(np).enumerate() {
            let mut at = 0;
            for oy in r.rows.clone() {
                let dst = ((gi * og + o) * oh + oy) * ow;
                y[dst + r.cols.start..dst + r.cols.end].copy_from_slice(&row[at..at + r.cols.len()]);
                at += r.cols.len();
            }
        }
    }
}

/// The ONNX ops this file maps: Conv, and a zero Pad that a Conv absorbs.
pub(super) const ONNX: &[(&str, Mapping)] = &[("Conv", onnx), ("Pad", onnx_pad)];

/// Conv (2-D), absorbing a zero Pad right before it into its own padding.
fn onnx(im: &mut dyn Import) -> Step<()> {
    let (x, pre) = match im.val(0)? {
        Some(Val::Padded(x, p)) => (*x, *p),
        _ => (im.node_in(0)?, [0; 4]),
    };
    let w = im.const_in(1)?.ok_or("has no constant weight")?;
    let &[o, ci, kh, kw] = w.dims.as_slice() else {
        return Err(format!("weight of shape {:?}: only 2-D convolutions are supported", w.dims));
    };
    if [o, ci, kh, kw].contains(&0) {
        return Err(format!("weight of shape {:?} has an empty dimension", w.dims));
    }
    let bias = match im.const_in(2)? {
        Some(b) if b.len() == o => Some(tensor(b.f32s(), &[o])?),
        Some(b) => return Err(format!("bias of {} values for {o} output channels", b.len())),
        None => None,
    };
    if let Some(k) = im.ints_attr("kernel_shape") {
        if k != [kh as i64, kw as i64] {
            return Err(format!("kernel_shape {k:?} does not match the weight's {kh}×{kw}"));
        }
    }
    let stride = im.pair("strides", [1, 1], 1)?;
    let dilation = im.pair("dilations", [1, 1], 1)?;
    let groups = usize::try_from(im.int("group", 1)).ok().filter(|&g| g >= 1).ok_or("group must be ≥ 1")?;
    let (_, h, wd) = im.map_hw(x)?;
    let overflow = || format!("dilations {dilation:?} and pads overflow");
    let span = |d: usize, k: usize| d.checked_mul(k - 1).and_then(|v| v.checked_add(1));
    let k = [span(dilation[0], kh).ok_or_else(overflow)?, span(dilation[1], kw).ok_or_else(overflow)?];
    // auto_pad sizes its padding for the padded input.
    let add3 = |a: usize, b: usize, c: usize| a.checked_add(b).and_then(|v| v.checked_add(c));
    let padded_hw =
        (add3(h, pre[0], pre[2]).ok_or_else(overflow)?, add3(wd, pre[1], pre[3]).ok_or_else(overflow)?);
    let own = im.padding(k, stride, padded_hw)?;
    let mut padding = [0usize; 4];
    for i in 0..4 {
        padding[i] = own[i].checked_add(pre[i]).ok_or_else(overflow)?;
    }
    let weight = tensor(w.f32s(), &[o, ci, kh, kw])?;
    let id = im.push(Op::Conv(Conv { weight, bias, stride, padding, dilation, groups }), &[x], "")?;
    im.set(Val::Node(id))
}

/// A constant zero Pad of the two spatial axes, held until the Conv that reads it (pads as an
/// attribute before opset 11, an input since; `axes` from opset 18).
fn onnx_pad(im: &mut dyn Import) -> Step<()> {
    let x = im.node_in(0)?;
    im.map_hw(x)?;
    let mode = im.string("mode", "constant");
    if mode != "constant" {
        return Err(format!("mode `{mode}`: only constant zero padding is supported"));
    }
    let pads = match im.const_in(1)? {
        Some(c) => c.i64s().ok_or("non-integer pads")?,
        None => im.ints_attr("pads").unwrap_or_default(),
    };
    let value = match im.const_in(2)? {
        Some(c) => c.f32s().first().copied().unwrap_or(0.0),
        None => im.float("value", 0.0),
    };
    if value != 0.0 {
        return Err(format!("padding with {value}: only zero padding is supported"));
    }
    // Axes from opset 18; all four (N, C, H, W) before.
    let axes = Some(im.axes(3, 4)?).filter(|a| !a.is_empty()).unwrap_or_else(|| vec![0, 1, 2, 3]);
    // Begin values per axis, then end values, for `axes`; everything but H and W zero.
    let r = axes.len();
    let mut spatial = [0usize; 4];
    for (i, &axis) in axes.iter().enumerate() {
        let (begin, end) = match (pads.get(i), pads.get(i + r)) {
            (Some(&b), Some(&e)) if b >= 0 && e >= 0 => (b as usize, e as usize),
            _ => return Err(format!("pads {pads:?}: expected {} values ≥ 0", 2 * r)),
        };
        match axis {
            2 | 3 => {
                spatial[axis as usize - 2] = begin;
                spatial[axis as usize] = end;
            }
            _ if begin == 0 && end == 0 => {}
            _ => return Err(format!("pads {pads:?}: only the spatial axes can be padded")),
        }
    }
    im.set(Val::Padded(x, spatial))
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::{conv, Case};
    vec![
        Case::new("conv 3×3 stride 2 padding 1", |b, x, r| {
            b.push("t", conv(r, 6, 8, [3, 3], 2, [1; 4], 1, 1), &[x])
        }),
        Case::new("conv 1×1", |b, x, r| b.push("t", conv(r, 5, 8, [1, 1], 1, [0; 4], 1, 1), &[x])),
        Case::new("conv dilated, asymmetric padding", |b, x, r| {
            b.push("t", conv(r, 4, 8, [3, 2], 1, [2, 0, 1, 1], 2, 1), &[x])
        }),
        Case::new("grouped conv", |b, x, r| b.push("t", conv(r, 6, 8, [3, 3], 1, [1; 4], 1, 2), &[x])),
        Case::new("depthwise conv stride 2", |b, x, r| {
            b.push("t", conv(r, 8, 8, [3, 3], 2, [1; 4], 1, 8), &[x])
        }),
        Case::new("plain 3×3 conv (the Conv3x3 path)", |b, x, r| {
            b.push("t", conv(r, 6, 8, [3, 3], 1, [1; 4], 1, 1), &[x])
        }),
        Case::new("conv of depth > 512 (64 channels × 3×3)", |b, x, r| {
            let wide = b.push("wide", conv(r, 64, 8, [1, 1], 1, [0; 4], 1, 1), &[x]);
            b.push("t", conv(r, 8, 64, [3, 3], 2, [1; 4], 1, 1), &[wide])
        }),
    ]
}

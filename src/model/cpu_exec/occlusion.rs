//! Occlusion's shortcut on any graph: per window, recompute only what the window changes.
//!
//! An occluded copy differs from its clean image inside one small window, so most of every
//! node's values equal the clean pass's. Per image the clean pass runs once, keeping every
//! node; per window each spatial node (convolutions, nonlinearities, pools, adds, concats,
//! affines) is recomputed only over the rectangle of its output that the window reaches
//! (the reach grows through each convolution and pool), in working copies restored after the
//! window. The first nodes that mix all positions (flatten, linear, adaptive pooling) and
//! everything after them (the head) then run for all of an image's windows together as one
//! block, so a fully connected layer reads its weights once per image, not once per window.
//! For `fmnist_cnn` with 4×4 windows at stride 2 this does about a quarter of the arithmetic
//! of the occluded copies' full passes.
//!
//! Shapes: one image's node values [C, H, W] (a block of one image); windows (top, left) of
//! `size` [h, w] covering all channels; logits [P, K] per image.

use super::conv::ConvKernel;
use super::pool::{MaxGeometry, PoolTable};
use super::{NodeKernel, Prepared};
use crate::error::{Error, Result};
use crate::model::graph::{NodeId, Op, Shape};
use crate::model::nonlinearity::Activation;
use crate::model::sweep::{self, Purpose};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;

/// A rectangle of a feature map: rows × columns.
#[derive(Debug, Clone, PartialEq)]
struct Rect {
    rows: Range<usize>,
    cols: Range<usize>,
}

impl Rect {
    fn union(&self, o: &Rect) -> Rect {
        Rect {
            rows: self.rows.start.min(o.rows.start)..self.rows.end.max(o.rows.end),
            cols: self.cols.start.min(o.cols.start)..self.cols.end.max(o.cols.end),
        }
    }
}

/// The outputs o (of `out`) whose window [o·s − p, o·s − p + span) meets input range `r`.
fn reach(r: &Range<usize>, s: usize, p: usize, span: usize, out: usize) -> Range<usize> {
    // o·s − p + span > r.start and o·s − p < r.end.
    let lo = (r.start + p + 1).saturating_sub(span).div_ceil(s);
    let hi = ((r.end + p).div_ceil(s)).min(out);
    lo.min(hi)..hi
}

/// How each node changes under one window: `None` unchanged, a rectangle of a spatial
/// node, or (for the head) recomputed whole.
#[derive(Debug, Clone)]
enum Change {
    Clean,
    Rect(Rect),
    Head,
}

impl Prepared<'_> {
    fn map_hw(&self, id: NodeId) -> Option<(usize, usize, usize)> {
        match self.shapes[id] {
            Shape::Map(c, h, w) => Some((c, h, w)),
            Shape::Flat(_) => None,
        }
    }

    /// Which nodes one window at (top, left) of `size` changes, and how.
    fn changes(&self, (top, left): (usize, usize), size: [usize; 2]) -> Vec<Change> {
        let nodes = self.graph.nodes();
        let mut ch = vec![Change::Clean; nodes.len()];
        ch[0] = Change::Rect(Rect { rows: top..top + size[0], cols: left..left + size[1] });
        for (id, node) in nodes.iter().enumerate().skip(1) {
            let ins: Vec<&Change> = node.inputs.iter().map(|&i| &ch[i]).collect();
            if ins.iter().all(|c| matches!(c, Change::Clean)) {
                continue;
            }
            if ins.iter().any(|c| matches!(c, Change::Head)) || self.map_hw(id).is_none() {
                ch[id] = Change::Head;
                continue;
            }
            let rects: Vec<&Rect> =
                ins.iter().filter_map(|c| if let Change::Rect(r) = c { Some(r) } else { None }).collect();
            let (_, oh, ow) = self.map_hw(id).unwrap_or((0, 0, 0));
            ch[id] = match &node.op {
                Op::Conv(c) => {
                    let r = rects[0];
                    let (kh, kw) = (
                        c.dilation[0] * (c.weight.dims()[2] - 1) + 1,
                        c.dilation[1] * (c.weight.dims()[3] - 1) + 1,
                    );
                    Change::Rect(Rect {
                        rows: reach(&r.rows, c.stride[0], c.padding[0], kh, oh),
                        cols: reach(&r.cols, c.stride[1], c.padding[1], kw, ow),
                    })
                }
                Op::MaxPool(win) | Op::AvgPool { window: win, .. } => {
                    let r = rects[0];
                    Change::Rect(Rect {
                        rows: reach(&r.rows, win.stride[0], win.padding[0], win.kernel[0], oh),
                        cols: reach(&r.cols, win.stride[1], win.padding[1], win.kernel[1], ow),
                    })
                }
                Op::Act(_) | Op::Affine { .. } => Change::Rect(rects[0].clone()),
                Op::Add | Op::Concat => {
                    Change::Rect(rects.iter().skip(1).fold(rects[0].clone(), |a, b| a.union(b)))
                }
                Op::AdaptiveAvgPool(_) | Op::Flatten | Op::Linear(_) | Op::Input => Change::Head,
            };
        }
        ch
    }

    /// Logits [P·n, K] of `n` images `x` [n, C·H·W] with each window in turn set to `fill`
    /// (row k·n + i: image i under window k), under the real nonlinearities; `None` when a
    /// window does not fit.
    pub fn occluded_logits(
        &self,
        x: &[f32],
        n: usize,
        windows: &[(usize, usize)],
        size: [usize; 2],
        fill: f32,
    ) -> Result<Option<Vec<f32>>> {
        let Some((c, h, w)) = self.map_hw(0) else { return Ok(None) };
        if windows.iter().any(|&(r, cc)| size[0] == 0 || size[1] == 0 || r + size[0] > h || cc + size[1] > w)
        {
            return Ok(None);
        }
        let plans: Vec<Vec<Change>> = windows.iter().map(|&p| self.changes(p, size)).collect();
        let k = self.len(self.graph.output());
        let per = c * h * w;
        let per_image: Vec<Vec<f32>> = (0..n)
            .into_par_iter()
            .map(|i| self.occluded_image(&x[i * per..][..per], windows, size, fill, &plans))
            .collect::<Result<_>>()?;
        let p = windows.len();
        let mut out = vec![0.0; p * n * k];
        for (i, logits) in per_image.iter().enumerate() {
            for (win, row) in logits.chunks_exact(k).enumerate() {
                out[(win * n + i) * k..][..k].copy_from_slice(row);
            }
        }
        Ok(Some(out))
    }

    /// [`Prepared::occluded_logits`] for one image: [P, K].
    fn occluded_image(
        &self,
        x: &[f32],
        windows: &[(usize, usize)],
        size: [usize; 2],
        fill: f32,
        plans: &[Vec<Change>],
    ) -> Result<Vec<f32>> {
        let nodes = self.graph.nodes();
        let all: Vec<NodeId> = (0..nodes.len()).collect();
        let mut e = self.exec(1);
        let clean = sweep::forward(
            self.graph,
            &mut e,
            Arc::new(x.to_vec()),
            Activation::Exact,
            &all,
            Purpose::Values,
        )?;
        let clean: Vec<Vec<f32>> =
            clean.values.into_iter().map(|v| v.map(|b| b.to_vec()).unwrap_or_default()).collect();
        let mut work = clean.clone();
        let (_, h, w) = self.map_hw(0).unwrap_or((1, 1, 1));
        // The head: every node some window changes whole; its boundary: the other nodes it
        // reads, captured per window.
        let head: Vec<bool> =
            (0..nodes.len()).map(|id| plans.iter().any(|p| matches!(p[id], Change::Head))).collect();
        let boundary: Vec<NodeId> = (0..nodes.len())
            .filter(|&id| {
                !head[id] && nodes.iter().enumerate().any(|(j, nd)| head[j] && nd.inputs.contains(&id))
            })
            .collect();
        let mut captured: Vec<Vec<Vec<f32>>> = Vec::with_capacity(windows.len());
        for (&(top, left), plan) in windows.iter().zip(plans) {
            let window = Rect { rows: top..top + size[0], cols: left..left + size[1] };
            fill_rect(&mut work[0], (h, w), &window, Some(fill), &clean[0]);
            let mut touched = vec![(0, window)];
            for (id, change) in plan.iter().enumerate().skip(1) {
                if let (Change::Rect(r), false) = (change, head[id]) {
                    self.region(id, r, &mut work)?;
                    touched.push((id, r.clone()));
                }
            }
            captured.push(boundary.iter().map(|&b| work[b].clone()).collect());
            for (id, r) in touched {
                let dims = self.map_hw(id).map(|(_, hh, ww)| (hh, ww)).unwrap_or((1, 1));
                fill_rect(&mut work[id], dims, &r, None, &clean[id]);
            }
        }
        self.head(&captured, &boundary, &head)
    }

    /// Runs the head (every node the windows change whole) for all windows of one image in
    /// groups, from the captured boundary values: [P, K].
    fn head(&self, captured: &[Vec<Vec<f32>>], boundary: &[NodeId], compute: &[bool]) -> Result<Vec<f32>> {
        let nodes = self.graph.nodes();
        let out = self.graph.output();
        let p = captured.len();
        let bytes: usize = (0..nodes.len())
            .filter(|&i| compute[i] || boundary.contains(&i))
            .map(|i| self.len(i))
            .sum::<usize>()
            * 4;
        let group = (super::BLOCK_BYTES / bytes.max(1)).clamp(1, p.max(1));
        let mut logits = Vec::with_capacity(p * self.len(out));
        for start in (0..p).step_by(group) {
            let g = group.min(p - start);
            let mut e = self.exec(g);
            let mut preset: Vec<Option<super::Buf>> = vec![None; nodes.len()];
            for (j, &b) in boundary.iter().enumerate() {
                let mut rows = Vec::with_capacity(g * self.len(b));
                for c in &captured[start..start + g] {
                    rows.extend_from_slice(&c[j]);
                }
                preset[b] = Some(self.block_of(b, &rows, g));
            }
            let v = sweep::forward_masked(self.graph, &mut e, preset, compute, Activation::Exact)?;
            logits.extend(self.rows_of(out, &v, g));
        }
        Ok(logits)
    }

    /// Recomputes node `id`'s values inside `r` from its inputs' working values.
    fn region(&self, id: NodeId, r: &Rect, work: &mut [Vec<f32>]) -> Result<()> {
        let node = &self.graph.nodes()[id];
        let (c, oh, ow) =
            self.map_hw(id).ok_or_else(|| Error::Invalid("occlusion: flat node in a region".into()))?;
        let input = node.inputs[0];
        let mut out = std::mem::take(&mut work[id]);
        match &node.op {
            Op::Conv(_) => {
                let Some(NodeKernel::Conv(k)) = self.weights.nodes[id].as_ref() else {
                    return Err(super::wrong(id));
                };
                let (_, h, w) = self.map_hw(input).unwrap_or((0, 0, 0));
                conv_region(k, &work[input], (h, w), r, (oh, ow), &mut out);
            }
            Op::Act(kind) => {
                for ch in 0..c {
                    for y in r.rows.clone() {
                        let at = (ch * oh + y) * ow;
                        let span = at + r.cols.start..at + r.cols.end;
                        super::act::apply_into(
                            *kind,
                            Activation::Exact,
                            &work[input][span.clone()],
                            &mut out[span],
                        );
                    }
                }
            }
            Op::MaxPool(_) | Op::AvgPool { .. } => {
                let t = self.tables[id].as_ref().ok_or_else(|| super::wrong(id))?;
                pool_region(t, matches!(node.op, Op::MaxPool(_)), &work[input], c, r, ow, &mut out);
            }
            Op::Add => {
                let (a, b) = (&work[node.inputs[0]], &work[node.inputs[1]]);
                for ch in 0..c {
                    for y in r.rows.clone() {
                        let at = (ch * oh + y) * ow;
                        let span = at + r.cols.start..at + r.cols.end;
                        for ((d, &u), &v) in out[span.clone()].iter_mut().zip(&a[span.clone()]).zip(&b[span])
                        {
                            *d = u + v;
                        }
                    }
                }
            }
            Op::Concat => {
                let mut c0 = 0;
                for &i in &node.inputs {
                    let (ci, _, _) = self.map_hw(i).unwrap_or((0, 0, 0));
                    for ch in 0..ci {
                        for y in r.rows.clone() {
                            let (src, dst) = ((ch * oh + y) * ow, ((c0 + ch) * oh + y) * ow);
                            out[dst + r.cols.start..dst + r.cols.end]
                                .copy_from_slice(&work[i][src + r.cols.start..src + r.cols.end]);
                        }
                    }
                    c0 += ci;
                }
            }
            Op::Affine { scale, shift } => {
                for ch in 0..c {
                    for y in r.rows.clone() {
                        let at = (ch * oh + y) * ow;
                        for x in r.cols.clone() {
                            out[at + x] = work[input][at + x] * scale[ch] + shift[ch];
                        }
                    }
                }
            }
            _ => return Err(super::wrong(id)),
        }
        work[id] = out;
        Ok(())
    }
}

/// Sets `r` of every channel of `v` [C, h, w] to `fill`, or (without one) copies it from `src`.
fn fill_rect(v: &mut [f32], (h, w): (usize, usize), r: &Rect, fill: Option<f32>, src: &[f32]) {
    let c = v.len() / (h * w).max(1);
    for ch in 0..c {
        for y in r.rows.clone() {
            let at = (ch * h + y) * w;
            let row = &mut v[at + r.cols.start..at + r.cols.end];
            match fill {
                Some(f) => row.fill(f),
                None => row.copy_from_slice(&src[at + r.cols.start..at + r.cols.end]),
            }
        }
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
                    let inside = super::conv::valid(off, k.stride[1], w, r.cols.end);
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
        super::gemm::matmul(
            og,
            np,
            cg * kk,
            &mut vals,
            super::gemm::View::rows(wg, cg * kk),
            super::gemm::View::rows(&patches, np),
            true,
        );
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

/// A max-pool's outputs inside `r` of `c` planes from its input planes, each window scanned
/// in place from the pool's geometry (the table's order: the first maximum, strict >, as the
/// full pass keeps it; a window of padding alone gives 0).
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

/// A pool's outputs inside `r` of `c` planes (output width `ow`) from its input planes.
fn pool_region(t: &PoolTable, max: bool, x: &[f32], c: usize, r: &Rect, ow: usize, y: &mut [f32]) {
    if let (true, Some(g)) = (max, t.geometry.as_ref()) {
        return max_region(g, x, c, r, y);
    }
    let w = t.weights.as_deref().unwrap_or(&[]);
    for ch in 0..c {
        let xs = &x[ch * t.len..][..t.len];
        for oy in r.rows.clone() {
            for ox in r.cols.clone() {
                let o = oy * ow + ox;
                let win = &t.index[o * t.k..][..t.k];
                y[ch * t.out + o] = if max {
                    // The first maximum, as the full pass keeps it (strict >); padding never
                    // wins, and a window of padding alone gives 0 as in the full pass.
                    let mut best = f32::NEG_INFINITY;
                    let mut any = false;
                    for &i in win {
                        if (i as usize) < t.len {
                            let v = xs[i as usize];
                            if !any || v > best {
                                best = v;
                                any = true;
                            }
                        }
                    }
                    if any {
                        best
                    } else {
                        0.0
                    }
                } else {
                    win.iter()
                        .zip(&w[o * t.k..][..t.k])
                        .filter(|(&i, _)| (i as usize) < t.len)
                        .map(|(&i, &wt)| wt * xs[i as usize])
                        .sum()
                };
            }
        }
    }
}

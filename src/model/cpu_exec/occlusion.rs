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

use super::Prepared;
use crate::error::{Error, Result};
use crate::model::graph::{NodeId, Op, Shape};
use crate::model::kernels::act;
use crate::model::nonlinearity::Activation;
use crate::model::ops::Rect;
use crate::model::sweep::{self, Purpose};
use rayon::prelude::*;
use std::sync::Arc;

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
                Op::Act(_) => Change::Rect(rects[0].clone()),
                op => match op.layer().and_then(|l| l.reach(&rects, (oh, ow))) {
                    Some(r) => Change::Rect(r),
                    None => Change::Head,
                },
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
            let mut preset: Vec<Option<crate::model::kernels::Buf>> = vec![None; nodes.len()];
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
        let mut out = std::mem::take(&mut work[id]);
        if let Op::Act(kind) = &node.op {
            let input = &work[node.inputs[0]];
            for span in r.spans(c, (oh, ow)) {
                act::apply_into(*kind, Activation::Exact, &input[span.clone()], &mut out[span]);
            }
        } else {
            let ins: Vec<&[f32]> = node.inputs.iter().map(|&i| work[i].as_slice()).collect();
            let mut scratch = Vec::new();
            let (layer, mut cx) = self.op_cx(id, None, 1, &mut scratch)?;
            layer.region(&mut cx, &ins, r, &mut out)?;
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

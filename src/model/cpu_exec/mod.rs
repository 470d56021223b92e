//! Hand-written CPU passes of any [`Graph`]: the executor every call takes that autograd need
//! not see, when the model is f32 on the CPU.
//!
//! Why: candle runs each layer as a chain of generic ops, each allocating its output and
//! walking memory again, and its CPU convolution is slow on small channel counts
//! (../shared/DESIGN.md). Here a batch is cut into fixed blocks of images, one rayon task
//! each; inside a block every node's values are one buffer in channel-major layout
//! [C, n, H·W] (flat vectors [n, F]), so that a convolution is one GEMM per group over all the
//! block's images, concatenation along channels is a plain append, and nonlinearities,
//! pooling and their rules are single sweeps ([`super::kernels`]). Each layer op's arithmetic
//! is its own file's ([`super::ops`]: this executor gives it a [`CpuCx`] with its prepared
//! weights and gather tables); the passes themselves (forward, backward under a rule,
//! second-order adjoint) are the shared [`super::sweep`]. Occlusion's shortcut
//! ([`occlusion`]) recomputes, per window, only what the window changes.
//!
//! Determinism: the block size depends only on the graph and the image size, and every GEMM
//! inside a task is single-threaded, so every float operation, and every result, is the same
//! whatever the number of threads.

mod occlusion;

use super::graph::{Graph, NodeId, Nonlinearity, Op, Shape};
use super::kernels::pool::PoolTable;
use super::kernels::{act, transpose, Buf};
use super::lrp::{Modified, Plan, Pointwise};
use super::nonlinearity::{Activation, Rule};
use super::ops::{CpuCx, CpuKept, Kept, Layer, Prepared as OpData};
use super::sweep::{self, Exec, Forward, Purpose, Reference, Stage};
use super::{Backprop, Backward};
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::sync::Arc;

/// Bytes of node values per block the block size aims at (the first block of images whose
/// activations pass this stops growing); at most [`MAX_BLOCK`] images.
const BLOCK_BYTES: usize = 24 << 20;
/// Images per block at most (small networks: the fully connected layers then read their
/// weights once per 8 images).
const MAX_BLOCK: usize = 8;

/// A graph's weights prepared for the kernels (once per model): each layer op's
/// [`Layer::cpu_weights`].
#[derive(Debug)]
pub(crate) struct CpuWeights {
    nodes: Vec<Option<OpData>>,
}

impl CpuWeights {
    /// Flattens every parameter of `graph` (f32).
    pub fn new(graph: &Graph) -> Result<Self> {
        let nodes = graph
            .nodes()
            .iter()
            .map(|node| match node.op.layer() {
                Some(l) => l.cpu_weights(),
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(Self { nodes })
    }
}

/// A graph at one input size: shapes, each op's plan (gather tables) and the block size.
pub(crate) struct Prepared<'a> {
    graph: &'a Graph,
    weights: &'a CpuWeights,
    shapes: Vec<Shape>,
    /// Each node's input shapes.
    ins: Vec<Vec<Shape>>,
    plans: Vec<Option<OpData>>,
    /// Images per block.
    pub block: usize,
    /// The LRP composite on this graph, for [`Rule::Lrp`] passes.
    lrp: Option<&'a Plan>,
}

impl<'a> Prepared<'a> {
    /// Prepares `graph` for images of `hw` (rows, columns).
    pub fn new(graph: &'a Graph, weights: &'a CpuWeights, hw: (usize, usize)) -> Result<Self> {
        let shapes = graph.shapes(hw)?;
        let ins: Vec<Vec<Shape>> =
            graph.nodes().iter().map(|n| n.inputs.iter().map(|&i| shapes[i]).collect()).collect();
        let mut plans = Vec::with_capacity(shapes.len());
        for (id, node) in graph.nodes().iter().enumerate() {
            plans.push(match node.op.layer() {
                Some(l) => l
                    .cpu_plan(&ins[id], shapes[id])
                    .map_err(|e| Error::Invalid(format!("node `{}` ({}): {e}", node.name, node.op.kind())))?,
                None => None,
            });
        }
        let per_image: usize = shapes.iter().map(|s| s.len()).sum::<usize>().max(1) * 4;
        let block = (BLOCK_BYTES / per_image).clamp(1, MAX_BLOCK);
        Ok(Self { graph, weights, shapes, ins, plans, block, lrp: None })
    }

    /// The same with the LRP composite `plan` its [`Rule::Lrp`] passes run.
    pub fn with_lrp(mut self, plan: Option<&'a Plan>) -> Self {
        self.lrp = plan;
        self
    }

    /// Every node's output shape at this input size.
    pub fn shapes(&self) -> &[Shape] {
        &self.shapes
    }

    /// Values per image at node `id`.
    pub fn len(&self, id: NodeId) -> usize {
        self.shapes[id].len()
    }

    fn exec(&self, n: usize) -> CpuExec<'_> {
        CpuExec { p: self, n, scratch: Vec::new() }
    }

    /// Blocks of a batch of `b` images: (first image, images).
    fn blocks(&self, b: usize) -> Vec<(usize, usize)> {
        (0..b.div_ceil(self.block)).map(|k| (k * self.block, self.block.min(b - k * self.block))).collect()
    }

    /// Node `id`'s values for images [n, …] in the block layout.
    fn block_of(&self, id: NodeId, rows: &[f32], n: usize) -> Buf {
        Arc::new(match self.shapes[id] {
            Shape::Map(c, h, w) => transpose(rows, n, c, h * w),
            Shape::Flat(_) => rows.to_vec(),
        })
    }

    /// The inverse of [`Prepared::block_of`]: [n, …].
    fn rows_of(&self, id: NodeId, buf: &[f32], n: usize) -> Vec<f32> {
        match self.shapes[id] {
            Shape::Map(c, h, w) => transpose(buf, c, n, h * w),
            Shape::Flat(_) => buf.to_vec(),
        }
    }

    /// Node `id`'s layer op (or its copy with LRP's `modified` parameters) and its context
    /// for a block of `n` images.
    fn op_cx<'s>(
        &'s self,
        id: NodeId,
        modified: Option<&'s Modified>,
        n: usize,
        scratch: &'s mut Vec<f32>,
    ) -> Result<(&'s dyn Layer, CpuCx<'s>)> {
        let node = &self.graph.nodes()[id];
        let op = modified.map_or(&node.op, |m| &m.op);
        let layer = op
            .layer()
            .ok_or_else(|| Error::Invalid(format!("internal: node `{}` is not a layer op", node.name)))?;
        let weights = match modified {
            Some(m) => Some(m.cpu.as_deref().ok_or_else(|| {
                Error::Invalid(format!(
                    "internal: node `{}`: LRP's modified weights have no CPU data",
                    node.name
                ))
            })?),
            None => self.weights.nodes[id].as_deref(),
        };
        let data = (weights, self.plans[id].as_deref());
        Ok((layer, CpuCx::new(&node.name, (&self.ins[id], self.shapes[id]), n, data, scratch)))
    }
}

/// The kernel executor for one block of `n` images.
pub(crate) struct CpuExec<'a> {
    p: &'a Prepared<'a>,
    n: usize,
    scratch: Vec<f32>,
}

impl CpuExec<'_> {
    fn table(&self, id: NodeId) -> Result<&PoolTable> {
        self.p.plans[id]
            .as_deref()
            .and_then(|t| t.downcast_ref::<PoolTable>())
            .ok_or_else(|| Error::Invalid(format!("internal: node {id} has no pool table")))
    }
}

impl Exec for CpuExec<'_> {
    type Buf = Buf;
    type Route = Vec<u32>;

    fn forward(
        &mut self,
        id: NodeId,
        _op: &Op,
        ins: &[&Buf],
        rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        let (l, mut cx) = self.p.op_cx(id, None, self.n, &mut self.scratch)?;
        l.cpu_forward(&mut cx, ins, rank)
    }

    fn tangent(&mut self, id: NodeId, _op: &Op, ins: &[&Buf], kept: &Kept<Buf, Vec<u32>>) -> Result<Buf> {
        let (l, mut cx) = self.p.op_cx(id, None, self.n, &mut self.scratch)?;
        l.cpu_tangent(&mut cx, ins, &slices(kept))
    }

    fn vjp(&mut self, id: NodeId, _op: &Op, g: &Buf, kept: &Kept<Buf, Vec<u32>>) -> Result<Vec<Buf>> {
        let (l, mut cx) = self.p.op_cx(id, None, self.n, &mut self.scratch)?;
        l.cpu_vjp(&mut cx, g, &slices(kept))
    }

    fn second(
        &mut self,
        id: NodeId,
        _op: &Op,
        g: &Buf,
        lam: &[&Buf],
        kept: &Kept<Buf, Vec<u32>>,
    ) -> Result<Vec<Option<Buf>>> {
        let (l, mut cx) = self.p.op_cx(id, None, self.n, &mut self.scratch)?;
        l.cpu_second(&mut cx, g, lam, &slices(kept))
    }

    fn apply(&mut self, kind: Nonlinearity, act: Activation, z: Buf) -> Result<Buf> {
        let mut v = Arc::try_unwrap(z).unwrap_or_else(|shared| shared.to_vec());
        act::apply_in_place(kind, act, &mut v);
        Ok(Arc::new(v))
    }

    fn activate(&mut self, kind: Nonlinearity, act: Activation, z: &Buf) -> Result<(Buf, Buf)> {
        let (a, d) = act::activate(kind, act, z);
        Ok((Arc::new(a), Arc::new(d)))
    }

    fn rule_backward(
        &mut self,
        kind: Nonlinearity,
        act: Activation,
        rule: Rule,
        z: &Buf,
        d: &Buf,
        z0: Option<&Buf>,
        g: &Buf,
    ) -> Result<Buf> {
        Ok(Arc::new(act::rule_backward(kind, act, rule, (z, d, z0.map(|b| b.as_slice())), g)))
    }

    fn rule_adjoint(
        &mut self,
        kind: Nonlinearity,
        act: Activation,
        rule: Rule,
        z: &Buf,
        d: &Buf,
        z0: Option<&Buf>,
        g: &Buf,
        lam: &Buf,
    ) -> Result<(Buf, Option<Buf>)> {
        let (up, zbar) = act::rule_adjoint(kind, act, rule, (z, d, z0.map(|b| b.as_slice())), g, lam);
        Ok((Arc::new(up), zbar.map(Arc::new)))
    }

    fn pools_before_activating(&self) -> bool {
        true
    }

    fn activate_pooled(
        &mut self,
        pool: NodeId,
        kind: Nonlinearity,
        act: Activation,
        pooled: &Buf,
        route: &Vec<u32>,
    ) -> Result<(Buf, Buf)> {
        let (a, d) = act::activate(kind, act, pooled);
        // φ′ back at each window's routed position of z (the only ones a gradient reaches).
        let t = self.table(pool)?;
        let planes = self.p.shapes[pool].channels() * self.n;
        let mut full = vec![0.0f32; planes * t.len];
        for p in 0..planes {
            let plane = &mut full[p * t.len..][..t.len];
            for (&r, &dv) in route[p * t.out..][..t.out].iter().zip(&d[p * t.out..][..t.out]) {
                if (r as usize) < t.len {
                    plane[r as usize] = dv;
                }
            }
        }
        Ok((Arc::new(a), Arc::new(full)))
    }

    fn add(&mut self, a: &Buf, b: &Buf) -> Result<Buf> {
        Ok(Arc::new(a.iter().zip(b.iter()).map(|(a, b)| a + b).collect()))
    }

    fn zeros(&mut self, id: NodeId) -> Result<Buf> {
        Ok(Arc::new(vec![0.0; self.p.len(id) * self.n]))
    }

    fn pointwise(&mut self, op: Pointwise, a: &Buf, b: Option<&Buf>) -> Result<Buf> {
        Ok(Arc::new(op.slices(a, b.map(|b| b.as_slice()))))
    }

    /// Channel-major [C, n, H·W]: channel k is the k-th of `values.len()` equal runs.
    fn fill_like(&mut self, like: &Buf, values: &[f32]) -> Result<Buf> {
        let run = like.len() / values.len().max(1);
        Ok(Arc::new(values.iter().flat_map(|&v| std::iter::repeat_n(v, run)).collect()))
    }

    fn forward_modified(&mut self, id: NodeId, m: &Modified, ins: &[&Buf], bias: bool) -> Result<Buf> {
        let (l, mut cx) = self.p.op_cx(id, Some(m), self.n, &mut self.scratch)?;
        let none = Kept { route: None, inputs: &[] };
        if bias {
            Ok(l.cpu_forward(&mut cx, ins, None)?.0)
        } else {
            l.cpu_tangent(&mut cx, ins, &none)
        }
    }

    fn vjp_modified(&mut self, id: NodeId, m: &Modified, g: &Buf) -> Result<Vec<Buf>> {
        let (l, mut cx) = self.p.op_cx(id, Some(m), self.n, &mut self.scratch)?;
        l.cpu_vjp(&mut cx, g, &Kept { route: None, inputs: &[] })
    }
}

/// `kept` with its routes as a slice (what the ops read).
fn slices<'k>(kept: &Kept<'k, Buf, Vec<u32>>) -> CpuKept<'k> {
    Kept { route: kept.route.map(|r| r.as_slice()), inputs: kept.inputs }
}

/// A backward pass's result on flat rows [B, …] (images in order).
pub(crate) type Rows = Backprop<Vec<f32>>;

/// [`super::AdjointFn`] on flat rows.
pub(crate) type SliceAdjointFn<'a> = dyn FnMut(Rows) -> Result<(Vec<f32>, Option<Vec<f32>>)> + 'a;

impl<'a> Prepared<'a> {
    /// Logits [B, K] of `b` images `x` [B, C·H·W].
    pub fn logits(&self, x: &[f32], b: usize, act: Activation) -> Result<Vec<f32>> {
        let per = self.len(0);
        let out = self.graph.output();
        let parts: Vec<Vec<f32>> = self
            .blocks(b)
            .into_par_iter()
            .map(|(start, n)| {
                let mut e = self.exec(n);
                let fwd = sweep::forward(
                    self.graph,
                    &mut e,
                    self.block_of(0, &x[start * per..][..n * per], n),
                    act,
                    &[],
                    Purpose::Values,
                )?;
                Ok(self.rows_of(out, fwd.value(out)?, n))
            })
            .collect::<Result<_>>()?;
        Ok(parts.concat())
    }

    /// The forward pass of a baseline given as one image for every row (computed once, not
    /// once per block).
    fn shared_baseline(
        &'a self,
        pass: &Backward<[f32]>,
        purpose: Purpose,
    ) -> Result<Option<Forward<CpuExec<'a>>>> {
        let act = pass.act;
        match pass.baseline {
            Some(b0) if b0.len() == self.len(0) => {
                let mut e = self.exec(1);
                Ok(Some(sweep::forward(self.graph, &mut e, self.block_of(0, b0, 1), act, &[], purpose)?))
            }
            _ => Ok(None),
        }
    }

    /// A one-image forward pass's pre-activations repeated for a block of `n` images (all the
    /// rescale rule reads of a baseline pass).
    fn repeated(&self, one: &Forward<CpuExec<'a>>, n: usize) -> Forward<CpuExec<'a>> {
        let nodes = self.graph.nodes().len();
        let mut f = Forward::empty(nodes);
        for (id, z) in one.pre.iter().enumerate() {
            if let Some(z) = z {
                // [C, 1, len] → [C, n, len] (a flat [1, F] is one "channel" of F).
                let (c, len) = match self.shapes[self.graph.nodes()[id].inputs[0]] {
                    Shape::Map(c, h, w) => (c, h * w),
                    Shape::Flat(f) => (1, f),
                };
                let mut out = Vec::with_capacity(c * n * len);
                for plane in z.chunks_exact(len).take(c) {
                    for _ in 0..n {
                        out.extend_from_slice(plane);
                    }
                }
                f.pre[id] = Some(Arc::new(out));
            }
        }
        f
    }

    /// Stage one ([`sweep::stage`]) for the block of `n` images from `start`, with the rows
    /// of its result.
    #[allow(clippy::too_many_arguments)]
    fn block_state(
        &'a self,
        x: &[f32],
        (start, n): (usize, usize),
        pass: &Backward<[f32]>,
        stop: NodeId,
        shared: Option<&Forward<CpuExec<'a>>>,
        keep: bool,
    ) -> Result<(Stage<CpuExec<'a>>, Rows)> {
        let per = self.len(0);
        let k = self.len(self.graph.output());
        let mut e = self.exec(n);
        let reference = match (pass.baseline, shared) {
            // One baseline for every row: its pre-activations, computed once, repeated.
            (Some(_), Some(one)) => Some(Reference::Pass(self.repeated(one, n))),
            (Some(b0), None) => Some(Reference::Images(self.block_of(0, &b0[start * per..][..n * per], n))),
            (None, _) => None,
        };
        let out_id = self.graph.output();
        let x = self.block_of(0, &x[start * per..][..n * per], n);
        let seed = self.block_of(out_id, &pass.seed[start * k..][..n * k], n);
        let rules = (pass.act, pass.rule, self.lrp);
        let st = sweep::stage(self.graph, &mut e, x, seed, reference, rules, stop, keep)?;
        let rows = Backprop {
            logits: self.rows_of(out_id, &st.out.logits, n),
            grad: self.rows_of(stop, &st.out.grad, n),
            layer: st.out.layer.as_ref().map(|l| self.rows_of(stop, l, n)),
        };
        Ok((st, rows))
    }

    /// The backward pass of `pass` to node `stop` for `b` images `x`.
    pub fn backward(&self, x: &[f32], b: usize, pass: &Backward<[f32]>, stop: NodeId) -> Result<Rows> {
        let shared = self.shared_baseline(pass, Purpose::backward_to(stop, false))?;
        let parts: Vec<Rows> = self
            .blocks(b)
            .into_par_iter()
            .map(|block| Ok(self.block_state(x, block, pass, stop, shared.as_ref(), false)?.1))
            .collect::<Result<_>>()?;
        Ok(concat(parts))
    }

    /// The backward pass of `pass` to `stop`, then `then(out)` = (v, a) for the whole batch
    /// (shaped like `out.grad` and `out.layer`; `then` keeps `out`), then
    /// ∇ₓ(⟨grad, v⟩ + ⟨layer, a⟩) [B, C·H·W].
    pub fn adjoint(
        &self,
        x: &[f32],
        b: usize,
        pass: &Backward<[f32]>,
        stop: NodeId,
        then: &mut SliceAdjointFn,
    ) -> Result<Vec<f32>> {
        let blocks = self.blocks(b);
        let shared = self.shared_baseline(pass, Purpose::backward_to(stop, true))?;
        let (states, rows): (Vec<Stage<CpuExec>>, Vec<Rows>) = blocks
            .par_iter()
            .map(|&block| self.block_state(x, block, pass, stop, shared.as_ref(), true))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let (v, a) = then(concat(rows))?;
        // v is shaped like the gradient at the stop, a like the stop's output: the same shape.
        let gl = self.len(stop);
        if v.len() != b * gl || a.as_ref().is_some_and(|a| a.len() != b * gl) {
            return Err(Error::Invalid(format!(
                "adjoint: vectors of {} values for {b} rows of {gl}",
                v.len()
            )));
        }
        let parts: Vec<Vec<f32>> = states
            .par_iter()
            .zip(blocks.par_iter())
            .map(|(st, &(start, n))| {
                let mut e = self.exec(n);
                let vb = self.block_of(stop, &v[start * gl..][..n * gl], n);
                let ab = a.as_ref().map(|a| self.block_of(stop, &a[start * gl..][..n * gl], n));
                let xbar = st.adjoint(self.graph, &mut e, (pass.act, pass.rule, self.lrp), stop, vb, ab)?;
                Ok(self.rows_of(0, &xbar, n))
            })
            .collect::<Result<_>>()?;
        Ok(parts.concat())
    }
}

fn concat(parts: Vec<Rows>) -> Rows {
    let mut out = Rows::default();
    for p in parts {
        out.logits.extend(p.logits);
        out.grad.extend(p.grad);
        if let Some(l) = p.layer {
            out.layer.get_or_insert_with(Vec::new).extend(l);
        }
    }
    out
}

//! Hand-written CPU passes of any [`Graph`]: the executor every call takes that autograd need
//! not see, when the model is f32 on the CPU.
//!
//! Why: candle runs each layer as a chain of generic ops, each allocating its output and
//! walking memory again, and its CPU convolution is slow on small channel counts
//! (../shared/DESIGN.md). Here a batch is cut into fixed blocks of images, one rayon task
//! each; inside a block every node's values are one buffer in channel-major layout
//! [C, n, H·W] (flat vectors [n, F]), so that a convolution is one GEMM per group over all the
//! block's images ([`conv`]), concatenation along channels is a plain append, and
//! nonlinearities, pooling and their rules are single sweeps ([`act`], [`pool`]). The passes
//! themselves (forward, backward under a rule, second-order adjoint) are the shared
//! [`super::sweep`]; this module only supplies the arithmetic.
//!
//! Determinism: the block size depends only on the graph and the image size, and every GEMM
//! inside a task is single-threaded, so every float operation, and every result, is the same
//! whatever the number of threads.

mod act;
pub(crate) mod conv;
mod gemm;
mod occlusion;
pub(crate) mod pool;

use super::graph::{Graph, NodeId, Nonlinearity, Op, Shape};
use super::nonlinearity::{Activation, Rule};
use super::sweep::{self, Exec, Forward, Purpose};
use crate::error::{Error, Result};
use conv::{ConvKernel, Planes};
use gemm::{matmul, View};
use pool::{MaxGeometry, PoolTable};
use rayon::prelude::*;
use std::sync::Arc;

/// One node's values in a block.
pub(crate) type Buf = Arc<Vec<f32>>;

/// Bytes of node values per block the block size aims at (the first block of images whose
/// activations pass this stops growing); at most [`MAX_BLOCK`] images.
const BLOCK_BYTES: usize = 24 << 20;
/// Images per block at most (small networks: the fully connected layers then read their
/// weights once per 8 images).
const MAX_BLOCK: usize = 8;

/// A fully connected layer, flattened.
#[derive(Debug, Clone)]
pub(crate) struct LinearKernel {
    /// W [out, in].
    w: Vec<f32>,
    b: Vec<f32>,
    out: usize,
    inp: usize,
}

/// The flattened weights of every node that has some.
#[derive(Debug, Clone)]
pub(crate) enum NodeKernel {
    /// A convolution.
    Conv(ConvKernel),
    /// A fully connected layer.
    Linear(LinearKernel),
}

/// A graph's weights prepared for the kernels (once per model).
#[derive(Debug, Clone)]
pub(crate) struct CpuWeights {
    nodes: Vec<Option<NodeKernel>>,
}

impl CpuWeights {
    /// Flattens every parameter of `graph` (f32).
    pub fn new(graph: &Graph) -> Result<Self> {
        let mut nodes = Vec::with_capacity(graph.nodes().len());
        for node in graph.nodes() {
            nodes.push(match &node.op {
                Op::Conv(c) => Some(NodeKernel::Conv(ConvKernel::new(c)?)),
                Op::Linear(l) => {
                    let (out, inp) = l.weight.dims2()?;
                    let w = l.weight.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                    let b = match &l.bias {
                        Some(b) => b.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?,
                        None => vec![0.0; out],
                    };
                    Some(NodeKernel::Linear(LinearKernel { w, b, out, inp }))
                }
                _ => None,
            });
        }
        Ok(Self { nodes })
    }
}

/// A graph at one input size: shapes, pool tables and the block size.
pub(crate) struct Prepared<'a> {
    graph: &'a Graph,
    weights: &'a CpuWeights,
    shapes: Vec<Shape>,
    tables: Vec<Option<PoolTable>>,
    /// Images per block.
    pub block: usize,
}

impl<'a> Prepared<'a> {
    /// Prepares `graph` for images of `hw` (rows, columns).
    pub fn new(graph: &'a Graph, weights: &'a CpuWeights, hw: (usize, usize)) -> Result<Self> {
        let shapes = graph.shapes(hw)?;
        let mut tables = Vec::with_capacity(shapes.len());
        for (id, node) in graph.nodes().iter().enumerate() {
            tables.push(match &node.op {
                Op::MaxPool(_) | Op::AvgPool { .. } | Op::AdaptiveAvgPool(_) => {
                    let (Shape::Map(_, h, w), Shape::Map(_, oh, ow)) = (shapes[node.inputs[0]], shapes[id])
                    else {
                        return Err(Error::Invalid(format!("pool `{}` on a flat vector", node.name)));
                    };
                    let (index, weights, k) = super::tensor_exec::pool_table(&node.op, (h, w), (oh, ow));
                    let tiled = matches!(&node.op, Op::MaxPool(win)
                        if win.kernel == [2, 2] && win.stride == [2, 2] && win.padding == [0; 4])
                        && (2 * oh, 2 * ow) == (h, w);
                    let tiles = tiled.then_some((h, w));
                    let geometry = match &node.op {
                        Op::MaxPool(win) => Some(MaxGeometry {
                            kernel: win.kernel,
                            stride: win.stride,
                            pad: [win.padding[0], win.padding[1]],
                            h,
                            w,
                            oh,
                            ow,
                        }),
                        _ => None,
                    };
                    Some(PoolTable { index, weights, k, len: h * w, out: oh * ow, tiles, geometry })
                }
                _ => None,
            });
        }
        let per_image: usize = shapes.iter().map(|s| s.len()).sum::<usize>().max(1) * 4;
        let block = (BLOCK_BYTES / per_image).clamp(1, MAX_BLOCK);
        Ok(Self { graph, weights, shapes, tables, block })
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

    /// The inverse of [`Prepared::to_block`]: [n, …].
    fn rows_of(&self, id: NodeId, buf: &[f32], n: usize) -> Vec<f32> {
        match self.shapes[id] {
            Shape::Map(c, h, w) => transpose(buf, c, n, h * w),
            Shape::Flat(_) => buf.to_vec(),
        }
    }
}

/// [a, b, len] → [b, a, len].
fn transpose(x: &[f32], a: usize, b: usize, len: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; a * b * len];
    for i in 0..a {
        for j in 0..b {
            out[(j * a + i) * len..][..len].copy_from_slice(&x[(i * b + j) * len..][..len]);
        }
    }
    out
}

/// The kernel executor for one block of `n` images.
pub(crate) struct CpuExec<'a> {
    p: &'a Prepared<'a>,
    n: usize,
    scratch: Vec<f32>,
}

impl<'a> CpuExec<'a> {
    fn planes(&self, id: NodeId) -> Result<Planes> {
        let input = self.p.graph.nodes()[id].inputs[0];
        match (self.p.shapes[input], self.p.shapes[id]) {
            (Shape::Map(_, h, w), Shape::Map(_, oh, ow)) => Ok(Planes { n: self.n, h, w, oh, ow }),
            _ => Err(Error::Invalid(format!("node `{}` needs feature maps", self.p.graph.nodes()[id].name))),
        }
    }

    fn channels(&self, id: NodeId) -> usize {
        match self.p.shapes[id] {
            Shape::Map(c, _, _) => c,
            Shape::Flat(f) => f,
        }
    }

    fn table(&self, id: NodeId) -> Result<&PoolTable> {
        self.p.tables[id].as_ref().ok_or_else(|| Error::Invalid(format!("node {id} has no pool table")))
    }

    fn kernel(&self, id: NodeId) -> Result<&'a NodeKernel> {
        let weights: &'a CpuWeights = self.p.weights;
        weights.nodes[id].as_ref().ok_or_else(|| Error::Invalid(format!("node {id} has no weights")))
    }

    /// Per-channel y = x·scale (+ shift) in the block layout.
    fn affine(&self, id: NodeId, x: &[f32], scale: &[f32], shift: Option<&[f32]>) -> Vec<f32> {
        let mut y = x.to_vec();
        match self.p.shapes[id] {
            Shape::Map(c, h, w) => {
                let plane = self.n * h * w;
                for (ci, row) in y.chunks_exact_mut(plane).enumerate().take(c) {
                    let (s, t) = (scale[ci], shift.map_or(0.0, |t| t[ci]));
                    row.iter_mut().for_each(|v| *v = *v * s + t);
                }
            }
            Shape::Flat(f) => {
                for row in y.chunks_exact_mut(f) {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = *v * scale[j] + shift.map_or(0.0, |t| t[j]);
                    }
                }
            }
        }
        y
    }

    /// The linear ops (forward with `bias`, or their tangents without).
    fn linear_op(&mut self, id: NodeId, op: &Op, ins: &[&Buf], bias: bool) -> Result<Vec<f32>> {
        Ok(match op {
            Op::Conv(_) => {
                let p = self.planes(id)?;
                let NodeKernel::Conv(k) = self.kernel(id)? else { return Err(wrong(id)) };
                k.forward(ins[0], p, bias, &mut self.scratch)
            }
            Op::Linear(_) => {
                let NodeKernel::Linear(l) = self.kernel(id)? else { return Err(wrong(id)) };
                let mut y = vec![0.0f32; self.n * l.out];
                if bias {
                    for row in y.chunks_exact_mut(l.out) {
                        row.copy_from_slice(&l.b);
                    }
                }
                matmul(
                    self.n,
                    l.out,
                    l.inp,
                    &mut y,
                    View::rows(ins[0], l.inp),
                    View::transposed(&l.w, l.inp),
                    true,
                );
                y
            }
            Op::Flatten => {
                let input = self.p.graph.nodes()[id].inputs[0];
                match self.p.shapes[input] {
                    Shape::Map(c, h, w) => transpose(ins[0], c, self.n, h * w),
                    Shape::Flat(_) => ins[0].to_vec(),
                }
            }
            Op::Add => ins[0].iter().zip(ins[1].iter()).map(|(a, b)| a + b).collect(),
            Op::Concat => ins.iter().flat_map(|b| b.iter().copied()).collect(),
            Op::Affine { scale, shift } => self.affine(id, ins[0], scale, bias.then_some(shift.as_slice())),
            Op::AvgPool { .. } | Op::AdaptiveAvgPool(_) => {
                let planes = self.channels(id) * self.n;
                pool::avg_forward(self.table(id)?, ins[0], planes)
            }
            Op::Input | Op::Act(_) | Op::MaxPool(_) => return Err(wrong(id)),
        })
    }
}

fn wrong(id: NodeId) -> Error {
    Error::Invalid(format!("internal: node {id} reached the wrong kernel"))
}

impl Exec for CpuExec<'_> {
    type Buf = Buf;
    type Route = Vec<u32>;

    fn forward(
        &mut self,
        id: NodeId,
        op: &Op,
        ins: &[&Buf],
        rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        if let Op::MaxPool(_) = op {
            let planes = self.channels(id) * self.n;
            let (out, route) = pool::max_forward(self.table(id)?, ins[0], rank.unwrap_or(ins[0]), planes);
            return Ok((Arc::new(out), Some(route)));
        }
        Ok((Arc::new(self.linear_op(id, op, ins, true)?), None))
    }

    fn tangent(&mut self, id: NodeId, op: &Op, ins: &[&Buf], route: Option<&Vec<u32>>) -> Result<Buf> {
        if let Op::MaxPool(_) = op {
            let route = route.ok_or_else(|| wrong(id))?;
            let planes = self.channels(id) * self.n;
            return Ok(Arc::new(pool::max_gather(self.table(id)?, ins[0], route, planes)));
        }
        Ok(Arc::new(self.linear_op(id, op, ins, false)?))
    }

    fn vjp(&mut self, id: NodeId, op: &Op, g: &Buf, route: Option<&Vec<u32>>) -> Result<Vec<Buf>> {
        let node = &self.p.graph.nodes()[id];
        let one = |v: Vec<f32>| vec![Arc::new(v)];
        Ok(match op {
            Op::Conv(_) => {
                let p = self.planes(id)?;
                let NodeKernel::Conv(k) = self.kernel(id)? else { return Err(wrong(id)) };
                one(k.vjp(g, p, &mut self.scratch))
            }
            Op::Linear(_) => {
                let NodeKernel::Linear(l) = self.kernel(id)? else { return Err(wrong(id)) };
                let mut gx = vec![0.0f32; self.n * l.inp];
                matmul(self.n, l.inp, l.out, &mut gx, View::rows(g, l.out), View::rows(&l.w, l.inp), false);
                one(gx)
            }
            Op::Flatten => match self.p.shapes[node.inputs[0]] {
                Shape::Map(c, h, w) => one(transpose(g, self.n, c, h * w)),
                Shape::Flat(_) => vec![g.clone()],
            },
            Op::Add => vec![g.clone(), g.clone()],
            Op::Concat => {
                let mut at = 0;
                let mut parts = Vec::with_capacity(node.inputs.len());
                for &i in &node.inputs {
                    let len = self.p.shapes[i].len() * self.n;
                    parts.push(Arc::new(g[at..at + len].to_vec()));
                    at += len;
                }
                parts
            }
            Op::Affine { scale, .. } => one(self.affine(id, g, scale, None)),
            Op::MaxPool(_) => {
                let route = route.ok_or_else(|| wrong(id))?;
                let planes = self.channels(id) * self.n;
                one(pool::max_vjp(self.table(id)?, g, route, planes))
            }
            Op::AvgPool { .. } | Op::AdaptiveAvgPool(_) => {
                let planes = self.channels(id) * self.n;
                one(pool::avg_vjp(self.table(id)?, g, planes))
            }
            Op::Input | Op::Act(_) => return Err(wrong(id)),
        })
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
        let planes = self.channels(pool) * self.n;
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
}

/// What one pass over a batch returns, rows [B, …] (images in order).
#[derive(Debug, Default)]
pub(crate) struct BatchOut {
    /// Logits [B, K].
    pub logits: Vec<f32>,
    /// The backward pass's result at the stop node [B, …] (empty for a forward pass).
    pub grad: Vec<f32>,
    /// The stop node's output [B, …] (layer stops only).
    pub layer: Vec<f32>,
}

/// A backward pass's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pass<'s> {
    /// Upstream gradient of the logits [B, K].
    pub seed: &'s [f32],
    /// The nonlinearities' rule.
    pub rule: Rule,
    /// The rescale rule's reference images: one [C·H·W] for all, or [B, C·H·W].
    pub baseline: Option<&'s [f32]>,
    /// The stop node (0: the input).
    pub stop: NodeId,
}

/// [`super::AdjointFn`] on flat slices.
pub(crate) type SliceAdjointFn<'a> = dyn FnMut(BatchOut) -> Result<(Vec<f32>, Option<Vec<f32>>)> + 'a;

/// One block's forward passes and backward state, kept between the two stages of
/// [`adjoint_batch`].
struct BlockState<'a> {
    fwd: Forward<CpuExec<'a>>,
    base: Option<Forward<CpuExec<'a>>>,
    upstream: Vec<Option<Buf>>,
    out: BatchOut,
}

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
        pass: &Pass,
        act: Activation,
        purpose: Purpose,
    ) -> Result<Option<Forward<CpuExec<'a>>>> {
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
        let mut f = Forward {
            values: vec![None; nodes],
            pre: vec![None; nodes],
            deriv: vec![None; nodes],
            routes: Vec::new(),
        };
        f.routes.resize_with(nodes, || None);
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

    /// Stage one for one block: forward passes (and the baseline's) and the backward pass.
    #[allow(clippy::too_many_arguments)]
    fn block_state(
        &'a self,
        x: &[f32],
        start: usize,
        n: usize,
        act: Activation,
        pass: &Pass,
        shared: Option<&Forward<CpuExec<'a>>>,
        keep: bool,
    ) -> Result<BlockState<'a>> {
        let per = self.len(0);
        let k = self.len(self.graph.output());
        let mut e = self.exec(n);
        let keep_nodes: Vec<NodeId> = if pass.stop > 0 { vec![pass.stop] } else { Vec::new() };
        let purpose = Purpose::backward_to(pass.stop, keep);
        let fwd = sweep::forward(
            self.graph,
            &mut e,
            self.block_of(0, &x[start * per..][..n * per], n),
            act,
            &keep_nodes,
            purpose,
        )?;
        let base = match (pass.baseline, shared) {
            // One baseline for every row: its pre-activations, computed once, repeated.
            (Some(_), Some(one)) => Some(self.repeated(one, n)),
            (Some(b0), None) => {
                let rows = &b0[start * per..][..n * per];
                Some(sweep::forward(self.graph, &mut e, self.block_of(0, rows, n), act, &[], purpose)?)
            }
            (None, _) => None,
        };
        let out_id = self.graph.output();
        let mut seeds: Vec<Option<Buf>> = vec![None; self.graph.nodes().len()];
        seeds[out_id] = Some(self.block_of(out_id, &pass.seed[start * k..][..n * k], n));
        let sweep::Backwarded { grad: g, upstream } =
            sweep::backward(self.graph, &mut e, &fwd, base.as_ref(), seeds, act, pass.rule, pass.stop, keep)?;
        let out = BatchOut {
            logits: self.rows_of(out_id, fwd.value(out_id)?, n),
            grad: self.rows_of(pass.stop, &g, n),
            layer: if pass.stop > 0 { self.rows_of(pass.stop, fwd.value(pass.stop)?, n) } else { Vec::new() },
        };
        Ok(BlockState { fwd, base, upstream, out })
    }

    /// The backward pass of `pass` for `b` images `x`.
    pub fn backward(&self, x: &[f32], b: usize, act: Activation, pass: &Pass) -> Result<BatchOut> {
        let shared = self.shared_baseline(pass, act, Purpose::backward_to(pass.stop, false))?;
        let parts: Vec<BatchOut> = self
            .blocks(b)
            .into_par_iter()
            .map(|(start, n)| Ok(self.block_state(x, start, n, act, pass, shared.as_ref(), false)?.out))
            .collect::<Result<_>>()?;
        Ok(concat(parts))
    }

    /// The backward pass of `pass`, then `then(out)` = (v, a) for the whole batch (shaped like
    /// `out.grad` and `out.layer`; `then` keeps `out`), then ∇ₓ(⟨grad, v⟩ + ⟨layer, a⟩)
    /// [B, C·H·W].
    pub fn adjoint(
        &self,
        x: &[f32],
        b: usize,
        act: Activation,
        pass: &Pass,
        then: &mut SliceAdjointFn,
    ) -> Result<Vec<f32>> {
        let blocks = self.blocks(b);
        let shared = self.shared_baseline(pass, act, Purpose::backward_to(pass.stop, true))?;
        let mut states: Vec<BlockState> = blocks
            .par_iter()
            .map(|&(start, n)| self.block_state(x, start, n, act, pass, shared.as_ref(), true))
            .collect::<Result<_>>()?;
        let out = concat(states.iter_mut().map(|st| std::mem::take(&mut st.out)).collect());
        let (v, a) = then(out)?;
        // v is shaped like the gradient at the stop, a like the stop's output: the same shape.
        let gl = self.len(pass.stop);
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
                let vb = self.block_of(pass.stop, &v[start * gl..][..n * gl], n);
                let ab = a.as_ref().map(|a| self.block_of(pass.stop, &a[start * gl..][..n * gl], n));
                let xbar = sweep::adjoint(
                    self.graph,
                    &mut e,
                    &st.fwd,
                    st.base.as_ref(),
                    &st.upstream,
                    act,
                    pass.rule,
                    pass.stop,
                    vb,
                    ab,
                )?;
                Ok(self.rows_of(0, &xbar, n))
            })
            .collect::<Result<_>>()?;
        Ok(parts.concat())
    }
}

fn concat(parts: Vec<BatchOut>) -> BatchOut {
    let mut out = BatchOut::default();
    for p in parts {
        out.logits.extend(p.logits);
        out.grad.extend(p.grad);
        out.layer.extend(p.layer);
    }
    out
}

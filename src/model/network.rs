//! [`Network`]: any [`Graph`] as a [`Classifier`], implemented once.
//!
//! Every call picks an executor: the CPU kernels ([`super::cpu_exec`]) when the images, the
//! other tensors of the call and every weight are f32 on the CPU and outside any autograd
//! graph; otherwise the candle executor ([`super::tensor_exec`]), which runs on any device
//! and which autograd can differentiate. Both run the same passes ([`super::sweep`]).
//!
//! A pass stopped at a layer returns the layer's values and gradient as the node gives them,
//! except a vision transformer's token layer, which layer methods see as its patch grid
//! ([`super::grid`]: [B, D, gh, gw], the class token dropped); adjoint vectors are given in
//! that same shape.

use super::cpu_exec::{CpuWeights, Prepared};
use super::graph::{Graph, NodeId, Shape};
use super::grid::Grid;
use super::lrp::Plan;
use super::nonlinearity::{Activation, Rule};
use super::sweep::{self, Purpose, Reference};
use super::tensor_exec::TensorExec;
use super::{flat_f32, plain_cpu_f32, AdjointFn, Backprop, Backward, Classifier};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::sync::{Arc, Mutex};

/// The memory one model call may take for its activations: a Network sizes its passes
/// ([`Classifier::rows_per_pass`]) to stay under it. `fmnist_cnn` (about 1 MB per image)
/// stays at [`super::MAX_ROWS_PER_PASS`] rows; resnet50 at 224×224 gets a few rows a pass.
pub const PASS_BYTES: usize = 2 << 30;

/// A classifier given as a layer graph.
#[derive(Debug, Clone)]
pub struct Network {
    name: String,
    graph: Graph,
    /// The nominal input (C, H, W) (what `fragility models` lists).
    nominal: (usize, usize, usize),
    /// Whether only the nominal size fits (a fully connected layer reads the flattened map).
    fixed_size: bool,
    default_layer: String,
    classes: usize,
    device: Device,
    cpu: Option<Arc<CpuWeights>>,
    /// The LRP composites used so far on this graph, with their modified parameters (made
    /// once per composite and settings).
    lrp: Arc<Mutex<Vec<Arc<Plan>>>>,
}

impl Network {
    /// Wraps `graph` (parameters already on `device`) as the model `name` with nominal input
    /// size `hw` and Grad-CAM default layer `default_layer`.
    pub fn new(
        name: &str,
        graph: Graph,
        hw: (usize, usize),
        default_layer: &str,
        device: &Device,
    ) -> Result<Self> {
        let classes = graph.classes(hw)?;
        if graph.find(default_layer).is_none() {
            return Err(Error::Invalid(format!(
                "model `{name}`: default layer `{default_layer}` is not in the graph"
            )));
        }
        // A fixed size: the graph fails one pixel larger.
        let fixed_size = graph.shapes((hw.0 + 1, hw.1 + 1)).is_err();
        let plain = graph.tensors().iter().all(|t| t.device().is_cpu() && !t.track_op());
        let cpu = if plain { Some(Arc::new(CpuWeights::new(&graph)?)) } else { None };
        Ok(Self {
            name: name.into(),
            nominal: (graph.channels(), hw.0, hw.1),
            fixed_size,
            default_layer: default_layer.into(),
            classes,
            device: device.clone(),
            cpu,
            graph,
            lrp: Arc::default(),
        })
    }

    /// The plan of `rule`'s composite on this graph (made on first use), for LRP passes.
    fn lrp_plan(&self, rule: Rule) -> Result<Option<Arc<Plan>>> {
        let Rule::Lrp(composite) = rule else { return Ok(None) };
        let mut plans = self.lrp.lock().map_err(|_| Error::Invalid("LRP plans: a thread panicked".into()))?;
        if let Some(p) = plans.iter().find(|p| p.composite == composite) {
            return Ok(Some(p.clone()));
        }
        let hw = (self.nominal.1, self.nominal.2);
        let plan = Arc::new(Plan::new(&self.graph, composite, hw, self.cpu.is_some())?);
        plans.push(plan.clone());
        Ok(Some(plan))
    }

    /// The same model with every pass on candle ops (the path autograd sees), for checking
    /// and benchmarking the CPU kernels against it.
    pub fn without_kernels(mut self) -> Self {
        self.cpu = None;
        self
    }

    /// Whether the CPU kernels serve plain calls.
    pub fn has_kernels(&self) -> bool {
        self.cpu.is_some()
    }

    /// The layer graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The Grad-CAM default layer.
    pub fn default_layer(&self) -> &str {
        &self.default_layer
    }

    /// Checks that images of `hw` fit the graph: (H, W).
    fn size_of(&self, x: &Tensor) -> Result<(usize, usize, usize)> {
        let (b, c, h, w) = x.dims4()?;
        self.check_size(c, h, w)?;
        Ok((b, h, w))
    }

    /// Checks images of `c` channels and `h`×`w` pixels against the model's input.
    fn check_size(&self, c: usize, h: usize, w: usize) -> Result<()> {
        if c != self.nominal.0 {
            return Err(Error::Invalid(format!(
                "model `{}` takes {} input channels, got images with {c}",
                self.name, self.nominal.0
            )));
        }
        if self.fixed_size && (h, w) != (self.nominal.1, self.nominal.2) {
            return Err(Error::Invalid(format!(
                "model `{}` takes {}×{} images, got {h}×{w}",
                self.name, self.nominal.1, self.nominal.2
            )));
        }
        Ok(())
    }

    /// The CPU kernels prepared for `x`'s size, when they can serve a call on `x` and `others`.
    fn kernels_for(&self, x: &Tensor, others: &[&Tensor]) -> Result<Option<Prepared<'_>>> {
        let Some(cpu) = self.cpu.as_deref() else { return Ok(None) };
        if !(plain_cpu_f32(x) && others.iter().all(|t| plain_cpu_f32(t))) {
            return Ok(None);
        }
        let (_, h, w) = self.size_of(x)?;
        Ok(Some(Prepared::new(&self.graph, cpu, (h, w))?))
    }

    /// The node a layer name refers to, or an error listing the names.
    fn node(&self, layer: Option<&str>) -> Result<NodeId> {
        let Some(layer) = layer else { return Ok(0) };
        self.graph.find(layer).ok_or_else(|| {
            Error::Invalid(format!(
                "model `{}` has no layer `{layer}` (known: {})",
                self.name,
                self.layers().join(", ")
            ))
        })
    }

    /// The patch grid layer methods see node `stop` as, for images `x` (see the module docs).
    fn grid(&self, stop: NodeId, x: &Tensor) -> Result<Option<Grid>> {
        if stop == 0 {
            return Ok(None);
        }
        let (_, h, w) = self.size_of(x)?;
        Ok(Grid::of(&self.graph, &self.graph.shapes((h, w))?, stop))
    }

    fn check_seed(&self, seed: &Tensor, b: usize) -> Result<()> {
        if seed.dims() != [b, self.classes] {
            return Err(Error::Invalid(format!(
                "upstream gradient of shape {:?} for {b} images and {} classes",
                seed.dims(),
                self.classes
            )));
        }
        Ok(())
    }

    /// The candle path's forward and backward passes.
    fn tensor_backward(&self, x: &Tensor, pass: &Backward, stop: NodeId) -> Result<Backprop> {
        let (b, h, w) = self.size_of(x)?;
        let shapes = self.graph.shapes((h, w))?;
        let mut e = TensorExec::new(&self.graph, &shapes, b, x.dtype(), x.device());
        let plan = self.lrp_plan(pass.rule)?;
        Ok(self.tensor_stage(&mut e, &shapes, x, pass, plan.as_deref(), stop, false)?.1)
    }

    /// The CPU executor's result as tensors.
    fn backprop_of(
        &self,
        out: Backprop<Vec<f32>>,
        shapes: &[Shape],
        stop: NodeId,
        b: usize,
    ) -> Result<Backprop> {
        let dev = &self.device;
        let logits = Tensor::from_vec(out.logits, (b, self.classes), dev)?;
        let grad = Tensor::from_vec(out.grad, shapes[stop].dims(b), dev)?;
        let layer = out.layer.map(|l| Tensor::from_vec(l, shapes[stop].dims(b), dev)).transpose()?;
        Ok(Backprop { logits, grad, layer })
    }

    /// The candle path's stage one ([`sweep::stage`]) for `pass` at `x`.
    #[allow(clippy::too_many_arguments)]
    fn tensor_stage<'e>(
        &self,
        e: &mut TensorExec<'e>,
        shapes: &[Shape],
        x: &Tensor,
        pass: &Backward,
        plan: Option<&Plan>,
        stop: NodeId,
        keep: bool,
    ) -> Result<(sweep::Stage<TensorExec<'e>>, Backprop)> {
        let b = x.dim(0)?;
        let reference = match (pass.rule, pass.baseline) {
            (Rule::Rescale, Some(b0)) => {
                Some(Reference::Images(b0.to_dtype(x.dtype())?.broadcast_as(x.shape())?.contiguous()?))
            }
            _ => None,
        };
        let out = self.graph.output();
        let seed = pass.seed.to_dtype(x.dtype())?.reshape(shapes[out].dims(b))?;
        let rules = (pass.act, pass.rule, plan);
        let st = sweep::stage(&self.graph, e, x.clone(), seed, reference, rules, stop, keep)?;
        let bp = Backprop {
            logits: st.out.logits.reshape((b, self.classes))?,
            grad: st.out.grad.clone(),
            layer: st.out.layer.clone(),
        };
        Ok((st, bp))
    }
}

impl Classifier for Network {
    fn name(&self) -> &str {
        &self.name
    }

    fn network(&self) -> Option<&Network> {
        Some(self)
    }

    fn input_shape(&self) -> (usize, usize, usize) {
        self.nominal
    }

    fn num_classes(&self) -> usize {
        self.classes
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn logits(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let (b, h, w) = self.size_of(x)?;
        if let Some(p) = self.kernels_for(x, &[])? {
            let logits = p.logits(&flat_f32(x)?, b, act)?;
            return Ok(Tensor::from_vec(logits, (b, self.classes), x.device())?);
        }
        let shapes = self.graph.shapes((h, w))?;
        let mut e = TensorExec::new(&self.graph, &shapes, b, x.dtype(), x.device());
        let fwd = sweep::forward(&self.graph, &mut e, x.clone(), act, &[], Purpose::Values)?;
        Ok(fwd.value(self.graph.output())?.reshape((b, self.classes))?)
    }

    fn backward(&self, x: &Tensor, pass: &Backward) -> Result<Backprop> {
        let b = self.size_of(x)?.0;
        self.check_seed(pass.seed, b)?;
        let stop = self.node(pass.layer)?;
        let others: Vec<&Tensor> = std::iter::once(pass.seed).chain(pass.baseline).collect();
        if let Some(p) = self.kernels_for(x, &others)? {
            let plan = self.lrp_plan(pass.rule)?;
            let p = p.with_lrp(plan.as_deref());
            let (seed, base) = (flat_f32(pass.seed)?, pass.baseline.map(flat_f32).transpose()?);
            check_baseline(base.as_deref(), x)?;
            let out = p.backward(&flat_f32(x)?, b, &flat_pass(pass, &seed, base.as_deref()), stop)?;
            return viewed(self.backprop_of(out, p.shapes(), stop, b)?, self.grid(stop, x)?);
        }
        viewed(self.tensor_backward(x, pass, stop)?, self.grid(stop, x)?)
    }

    fn backward_adjoint(
        &self,
        x: &Tensor,
        pass: &Backward,
        then: &mut AdjointFn,
    ) -> Result<(Backprop, Tensor)> {
        let b = self.size_of(x)?.0;
        self.check_seed(pass.seed, b)?;
        let stop = self.node(pass.layer)?;
        let others: Vec<&Tensor> = std::iter::once(pass.seed).chain(pass.baseline).collect();
        let Some(p) = self.kernels_for(x, &others)? else {
            return self.tensor_adjoint(x, pass, stop, then);
        };
        let plan = self.lrp_plan(pass.rule)?;
        let p = p.with_lrp(plan.as_deref());
        let shapes = p.shapes();
        let (seed, base) = (flat_f32(pass.seed)?, pass.baseline.map(flat_f32).transpose()?);
        check_baseline(base.as_deref(), x)?;
        let mut kept = None;
        let grid = self.grid(stop, x)?;
        let xbar =
            p.adjoint(&flat_f32(x)?, b, &flat_pass(pass, &seed, base.as_deref()), stop, &mut |out| {
                let bp = viewed(self.backprop_of(out, shapes, stop, b)?, grid)?;
                let (v, a) = then(&bp)?;
                if v.dims() != bp.grad.dims()
                    || a.as_ref().is_some_and(|a| Some(a.dims()) != bp.layer.as_ref().map(|l| l.dims()))
                {
                    return Err(Error::Invalid(format!(
                        "adjoint vector of shape {:?} for a map of {:?}",
                        v.dims(),
                        bp.grad.dims()
                    )));
                }
                let (v, a) = unviewed((v, a), grid)?;
                let v = flat_f32(&v.detach().to_dtype(DType::F32)?)?;
                let a = a.map(|a| flat_f32(&a.detach().to_dtype(DType::F32)?)).transpose()?;
                kept = Some(bp);
                Ok((v, a))
            })?;
        let bp = kept.ok_or_else(|| Error::Invalid("adjoint: no backward pass".into()))?;
        Ok((bp, Tensor::from_vec(xbar, x.dims(), x.device())?))
    }

    fn accepts(&self, c: usize, h: usize, w: usize) -> Result<()> {
        self.check_size(c, h, w)?;
        self.graph
            .shapes((h, w))
            .map(|_| ())
            .map_err(|e| Error::Invalid(format!("model `{}` cannot take {h}×{w} images: {e}", self.name)))
    }

    fn occluded_logits(
        &self,
        x: &Tensor,
        windows: &[(usize, usize)],
        size: [usize; 2],
        fill: f32,
        act: Activation,
    ) -> Result<Option<Tensor>> {
        if act != Activation::Exact {
            return Ok(None);
        }
        let Some(p) = self.kernels_for(x, &[])? else { return Ok(None) };
        let b = x.dim(0)?;
        let Some(out) = p.occluded_logits(&flat_f32(x)?, b, windows, size, fill)? else { return Ok(None) };
        Ok(Some(Tensor::from_vec(out, (windows.len() * b, self.classes), x.device())?))
    }

    /// The layer's output and every value its downstream part reads from elsewhere, computed
    /// once; then that part alone, for chunks of `channels` as batches, on the tensor path.
    fn ablated_logits(
        &self,
        x: &Tensor,
        layer: &str,
        channels: &[usize],
        act: Activation,
    ) -> Result<Option<Tensor>> {
        let (b, h, w) = self.size_of(x)?;
        let stop = self.node(Some(layer))?;
        let (n, graph) = (channels.len(), &self.graph);
        if b != 1 || n == 0 {
            return Err(Error::Invalid(format!("ablation: one image and some channels, got {b} and {n}")));
        }
        let shapes = graph.shapes((h, w))?;
        let Shape::Map(k, ..) = shapes[stop] else {
            return Err(Error::Invalid(format!("ablation: layer `{layer}` is not a feature map")));
        };
        if let Some(&c) = channels.iter().find(|&&c| c >= k) {
            return Err(Error::Invalid(format!("ablation: layer `{layer}` has {k} channels, not {}", c + 1)));
        }
        // Recomputed: the nodes downstream of the layer; given: the layer and what they read.
        let mut compute = sweep::downstream(graph, stop);
        compute[stop] = false;
        let mut read = vec![false; compute.len()];
        read[stop] = true;
        for (node, _) in graph.nodes().iter().zip(&compute).filter(|(_, &c)| c) {
            node.inputs.iter().for_each(|&i| read[i] |= !compute[i]);
        }
        let given: Vec<NodeId> = (0..read.len()).filter(|&i| read[i]).collect();
        let mut e = TensorExec::new(graph, &shapes, 1, x.dtype(), x.device());
        let fwd = sweep::forward(graph, &mut e, x.clone(), act, &given, Purpose::Values)?;
        // The downstream part for chunks of channels, each row a copy of it within PASS_BYTES.
        let per_row: usize =
            (0..compute.len()).filter(|&i| compute[i] || given.contains(&i)).map(|i| shapes[i].len()).sum();
        let rows = (PASS_BYTES / (per_row * 4 * 2).max(1)).max(1);
        let mut parts = Vec::new();
        for chunk in channels.chunks(rows) {
            let m = chunk.len();
            let mut keep = vec![1f32; m * k];
            for (j, &c) in chunk.iter().enumerate() {
                keep[j * k + c] = 0.0;
            }
            let keep = Tensor::from_vec(keep, (m, k, 1, 1), x.device())?.to_dtype(x.dtype())?;
            let mut values: Vec<Option<Tensor>> = vec![None; compute.len()];
            for &i in &given {
                let v = fwd.value(i)?;
                let mut dims = v.dims().to_vec();
                dims[0] = m;
                let v = v.broadcast_as(dims)?;
                values[i] = Some(if i == stop { v.broadcast_mul(&keep)? } else { v.contiguous()? });
            }
            let mut e = TensorExec::new(graph, &shapes, m, x.dtype(), x.device());
            parts.push(
                sweep::forward_masked(graph, &mut e, values, &compute, act)?.reshape((m, self.classes))?,
            );
        }
        Ok(Some(Tensor::cat(&parts, 0)?))
    }

    /// Rows whose passes fit [`PASS_BYTES`]: every node's values, its gradient and what the
    /// second-order adjoint keeps, about three copies of the activations per image.
    fn rows_per_pass(&self, h: usize, w: usize) -> usize {
        let per_image: usize = match self.graph.shapes((h, w)) {
            Ok(shapes) => shapes.iter().map(|s| s.len()).sum::<usize>() * 4 * 3,
            Err(_) => return super::MAX_ROWS_PER_PASS,
        };
        (PASS_BYTES / per_image.max(1)).clamp(1, super::MAX_ROWS_PER_PASS)
    }

    fn layers(&self) -> Vec<String> {
        let hw = (self.nominal.1, self.nominal.2);
        self.graph.map_names(hw).into_iter().filter(|n| n != "input").collect()
    }

    fn default_layer(&self) -> Option<String> {
        // The input is what an importer names when no feature map qualifies: never a layer.
        (self.default_layer != "input").then(|| self.default_layer.clone())
    }
}

impl Network {
    /// The candle path's second-order adjoint (explicit, no autograd graph).
    fn tensor_adjoint(
        &self,
        x: &Tensor,
        pass: &Backward,
        stop: NodeId,
        then: &mut AdjointFn,
    ) -> Result<(Backprop, Tensor)> {
        let (b, h, w) = self.size_of(x)?;
        let x = x.detach();
        let shapes = self.graph.shapes((h, w))?;
        let mut e = TensorExec::new(&self.graph, &shapes, b, x.dtype(), x.device());
        let plan = self.lrp_plan(pass.rule)?;
        let (st, bp) = self.tensor_stage(&mut e, &shapes, &x, pass, plan.as_deref(), stop, true)?;
        let grid = if stop == 0 { None } else { Grid::of(&self.graph, &shapes, stop) };
        let bp = viewed(bp, grid)?;
        let (v, a) = unviewed(then(&bp)?, grid)?;
        let v = v.detach().to_dtype(x.dtype())?;
        let a = a.map(|a| a.detach().to_dtype(x.dtype())).transpose()?;
        let xbar = st.adjoint(&self.graph, &mut e, (pass.act, pass.rule, plan.as_deref()), stop, v, a)?;
        Ok((bp, xbar))
    }
}

/// `bp` with the stop node's values and gradient as layer methods see them (`grid`: a token
/// layer's patch grid, see the module docs).
fn viewed(bp: Backprop, grid: Option<Grid>) -> Result<Backprop> {
    let Some(g) = grid else { return Ok(bp) };
    let layer = bp.layer.as_ref().map(|l| g.view(l)).transpose()?;
    Ok(Backprop { logits: bp.logits, grad: g.view(&bp.grad)?, layer })
}

/// Adjoint vectors given at the view ([`viewed`]) back in the stop node's shape.
fn unviewed((v, a): (Tensor, Option<Tensor>), grid: Option<Grid>) -> Result<(Tensor, Option<Tensor>)> {
    let Some(g) = grid else { return Ok((v, a)) };
    Ok((g.unview(&v)?, a.as_ref().map(|a| g.unview(a)).transpose()?))
}

/// `pass` on the flattened tensors the CPU executor reads (the baseline only for the rescale
/// rule).
fn flat_pass<'s>(pass: &Backward<'s>, seed: &'s [f32], baseline: Option<&'s [f32]>) -> Backward<'s, [f32]> {
    Backward {
        seed,
        act: pass.act,
        rule: pass.rule,
        baseline: baseline.filter(|_| pass.rule == Rule::Rescale),
        layer: pass.layer,
    }
}

/// A flattened baseline holds one image or one per row of `x`.
fn check_baseline(base: Option<&[f32]>, x: &Tensor) -> Result<()> {
    let Some(base) = base else { return Ok(()) };
    let (b, per) = (x.dim(0)?, x.elem_count() / x.dim(0)?.max(1));
    if base.len() != per && base.len() != b * per {
        return Err(Error::Invalid(format!("a baseline of {} values for images of {per}", base.len())));
    }
    Ok(())
}

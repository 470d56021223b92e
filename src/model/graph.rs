//! The model as data: a topologically ordered graph of named layers.
//!
//! Every network the harness studies is a [`Graph`]: node 0 is the image batch, every other
//! node applies one [`Op`] to earlier nodes, and one node gives the logits. Nodes carry the
//! names of the PyTorch modules (or ONNX nodes) they come from (`layer4.1.conv2`,
//! `features.12`), and containers get [aliases](Graph::alias) to the node that produces their
//! output (`layer4` → its last block's final ReLU), so that Grad-CAM's `layer` names any of
//! them. Batch norm is folded into the preceding convolution when the graph is built
//! ([`fold_batch_norm`]); the graph itself only knows the ops below.
//!
//! What runs a graph is elsewhere: [`super::sweep`] holds the forward pass, the backward pass
//! under a [`super::Rule`] and the second-order adjoint, written once over an executor
//! trait; [`super::tensor_exec`] executes them on candle tensors (any device, and the path
//! autograd sees) and [`super::cpu_exec`] on plain f32 slices on the CPU; each op's own
//! arithmetic is in [`super::ops`].
//!
//! Shapes: images [B,C,H,W]; a node's output is either a feature map [B,C,H,W]
//! ([`Shape::Map`]) or a flat vector [B,F] ([`Shape::Flat`]), inferred for a given input size
//! by [`Graph::shapes`].

use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use std::collections::BTreeMap;

/// The index of a node in its graph (0 is the input).
pub type NodeId = usize;

pub use super::nonlinearity::Nonlinearity;
pub use super::ops::{
    fold_batch_norm, AdaptiveAvgPool, Add, Affine, Attend, AvgPool, BatchNorm, Channels, ClassToken, Concat,
    Conv, Flatten, LayerNorm, Linear, MaxPool, Mul, Op, PositionEmbedding, Scores, SelectToken, Softmax,
    Tokens, Window,
};
pub use super::shape::{Shape, MAX_NODE_VALUES};

/// One node: a named op applied to earlier nodes.
#[derive(Debug, Clone)]
pub struct Node {
    /// The module or ONNX name (`layer1.0.conv1`).
    pub name: String,
    /// What it computes.
    pub op: Op,
    /// The nodes it reads, in the op's order.
    pub inputs: Vec<NodeId>,
}

/// A network: nodes in topological order, the logits node, and container aliases.
#[derive(Debug, Clone)]
pub struct Graph {
    nodes: Vec<Node>,
    output: NodeId,
    aliases: BTreeMap<String, NodeId>,
    /// Input channels.
    channels: usize,
}

impl Graph {
    /// The nodes in topological order (node 0 is the input).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node whose output is the logits.
    pub fn output(&self) -> NodeId {
        self.output
    }

    /// Input channels C.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The node a name refers to: a node's own name or a container alias.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.aliases.get(name).copied().or_else(|| self.nodes.iter().position(|n| n.name == name))
    }

    /// Every name [`Graph::find`] accepts for a node (not the input) with a feature-map output
    /// at input size `hw`, in graph order (a node's own name, then its aliases).
    pub fn map_names(&self, hw: (usize, usize)) -> Vec<String> {
        let Ok(shapes) = self.shapes(hw) else { return Vec::new() };
        let mut out = Vec::new();
        for (id, node) in self.nodes.iter().enumerate().skip(1) {
            if !matches!(shapes[id], Shape::Map(..)) {
                continue;
            }
            out.push(node.name.clone());
            out.extend(self.aliases.iter().filter(|(_, &v)| v == id).map(|(k, _)| k.clone()));
        }
        out
    }

    /// The output shape of every node for input images of size `hw` (rows, columns), or an
    /// error naming the first node whose input does not fit.
    pub fn shapes(&self, (h, w): (usize, usize)) -> Result<Vec<Shape>> {
        let mut shapes: Vec<Shape> = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let ins: Vec<Shape> = node.inputs.iter().map(|&i| shapes[i]).collect();
            let shape = infer(&node.op, &ins, (self.channels, h, w))
                .map_err(|m| Error::Invalid(format!("node `{}` ({}): {m}", node.name, node.op.kind())))?;
            shapes.push(shape);
        }
        Ok(shapes)
    }

    /// The input size (rows, columns) the graph only takes, if it fixes one: a vision
    /// transformer's, from its position embedding's tokens and patch size.
    pub fn fixed_input(&self) -> Option<(usize, usize)> {
        self.nodes.iter().find_map(|n| match &n.op {
            Op::PositionEmbedding(p) => p.input_side().map(|s| (s, s)),
            _ => None,
        })
    }

    /// The number of classes K: the length of the logits at input size `hw`.
    pub fn classes(&self, hw: (usize, usize)) -> Result<usize> {
        match self.shapes(hw)?[self.output] {
            Shape::Flat(k) => Ok(k),
            Shape::Map(c, 1, 1) => Ok(c),
            s => Err(Error::Invalid(format!("the output node gives a {s} map, not logits"))),
        }
    }

    /// For every node, the nodes that read it.
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut out = vec![Vec::new(); self.nodes.len()];
        for (id, node) in self.nodes.iter().enumerate() {
            for &i in &node.inputs {
                out[i].push(id);
            }
        }
        out
    }

    /// The input of node `id` when it is a monotone nonlinearity (a max-pool reading such a
    /// nonlinearity's output ranks its windows by that input under the surrogate; see
    /// [`super::sweep`]).
    pub fn act_input(&self, id: NodeId) -> Option<NodeId> {
        match self.nodes[id].op {
            Op::Act(kind) if kind.monotone() => Some(self.nodes[id].inputs[0]),
            _ => None,
        }
    }

    /// The same graph with a per-channel `x·scale + shift` node named `normalize` reading the
    /// input, in front of everything that read the input: input normalisation
    /// ((x − mean)/std) inside the model, so that images, attacks and ε stay in [0,1] pixels.
    pub fn with_input_affine(&self, scale: Vec<f32>, shift: Vec<f32>) -> Result<Graph> {
        self.with_input_node("normalize", scale, shift)
    }

    /// [`Graph::with_input_affine`] with the new node named `name` (a sanity check's input
    /// shift goes in front of a model's own normalisation).
    pub fn with_input_node(&self, name: &str, scale: Vec<f32>, shift: Vec<f32>) -> Result<Graph> {
        if scale.len() != self.channels || shift.len() != self.channels {
            return Err(Error::Invalid(format!(
                "normalisation of {} channels for a model with {} input channels",
                scale.len(),
                self.channels
            )));
        }
        let mut nodes = Vec::with_capacity(self.nodes.len() + 1);
        nodes.push(self.nodes[0].clone());
        nodes.push(Node { name: name.into(), op: Op::Affine(Affine { scale, shift }), inputs: vec![0] });
        for node in &self.nodes[1..] {
            let mut n = node.clone();
            n.inputs = n.inputs.iter().map(|&i| i + 1).collect();
            nodes.push(n);
        }
        if self.nodes.iter().any(|n| n.name == name) {
            return Err(Error::Invalid(format!("the graph already has a node named `{name}`")));
        }
        let aliases =
            self.aliases.iter().map(|(k, &v)| (k.clone(), if v == 0 { 0 } else { v + 1 })).collect();
        // `self` was checked when it was built: only the new node needs the check.
        check_node_finite(&nodes[1])?;
        Ok(Graph { nodes, output: self.output + 1, aliases, channels: self.channels })
    }

    /// The same graph with every parameter tensor passed through `f` (moving it to a device,
    /// detaching it).
    pub fn map_tensors(&self, f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>) -> Result<Graph> {
        let mut g = self.clone();
        for node in &mut g.nodes {
            if let Some(layer) = node.op.layer_mut() {
                for t in layer.tensors_mut() {
                    *t = f(t)?;
                }
            }
        }
        Ok(g)
    }

    /// Refuses a graph with a NaN or infinite parameter, naming the node and the parameter:
    /// the one finiteness check every model passes (state_dict, ONNX, `fmnist_cnn`), run on
    /// the final graph, after batch norms were folded and constants computed, because a finite
    /// checkpoint can still fold into NaN (a negative running variance) and ReLU would hide
    /// the NaN behind plausible-looking logits.
    pub fn check_finite(&self) -> Result<()> {
        self.nodes.iter().try_for_each(check_node_finite)
    }

    /// All parameter tensors, in node order (weight, then bias).
    pub fn tensors(&self) -> Vec<&Tensor> {
        self.nodes
            .iter()
            .filter_map(|n| n.op.layer())
            .flat_map(|l| l.tensors().into_iter().map(|(_, t)| t))
            .collect()
    }
}

/// [`Graph::check_finite`] for one node: its parameters, named in the error.
fn check_node_finite(node: &Node) -> Result<()> {
    let bad = |what: &str, v: f32, i: usize| {
        Error::Invalid(format!(
            "node `{}` ({}): {what} holds {v} at index {i} (after folding batch norms and \
             constants; NaN and infinite parameters are refused)",
            node.name,
            node.op.kind()
        ))
    };
    let first = |v: &[f32]| v.iter().position(|x| !x.is_finite()).map(|i| (v[i], i));
    match &node.op {
        Op::Act(kind) => {
            if let Err((what, v)) = kind.check() {
                return Err(bad(what, v, 0));
            }
        }
        op => {
            let Some(layer) = op.layer() else { return Ok(()) };
            for (what, t) in layer.tensors() {
                if let Some((v, i)) = first_non_finite(t)? {
                    return Err(bad(what, v, i));
                }
            }
            for (what, v) in layer.values() {
                if let Some((v, i)) = first(v) {
                    return Err(bad(what, v, i));
                }
            }
        }
    }
    Ok(())
}

/// The first NaN or infinite value of `t` (as f32) and its flat index, read a slice at a
/// time so that a large layer is never copied whole.
fn first_non_finite(t: &Tensor) -> Result<Option<(f32, usize)>> {
    const SLICE: usize = 1 << 20;
    let flat = t.flatten_all()?;
    let n = flat.elem_count();
    let mut start = 0;
    while start < n {
        let len = SLICE.min(n - start);
        let part = flat.narrow(0, start, len)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        if let Some(i) = part.iter().position(|v| !v.is_finite()) {
            return Ok(Some((part[i], start + i)));
        }
        start += len;
    }
    Ok(None)
}

/// One node's output shape from its inputs' shapes (images of `input` = (C, H, W)), or what
/// does not fit; every size is computed with checked arithmetic and bounded by
/// [`MAX_NODE_VALUES`], so no pass allocates for a shape that wrapped around or is absurd.
pub(crate) fn infer(
    op: &Op,
    ins: &[Shape],
    input: (usize, usize, usize),
) -> std::result::Result<Shape, String> {
    let shape = match op {
        Op::Input => Shape::Map(input.0, input.1, input.2),
        Op::Act(_) => match ins {
            [x] => *x,
            _ => return Err(format!("takes 1 input, got {}", ins.len())),
        },
        op => op.layer().ok_or("internal: an op without a layer")?.infer(ins)?,
    };
    match shape.checked_len() {
        Some(n) if n <= MAX_NODE_VALUES => Ok(shape),
        _ => Err(format!("its output of {shape} values per image exceeds the limit of {MAX_NODE_VALUES}")),
    }
}

/// Builds a [`Graph`] node by node; each method returns the new node's id.
#[derive(Debug)]
pub struct GraphBuilder {
    nodes: Vec<Node>,
    aliases: BTreeMap<String, NodeId>,
    channels: usize,
    /// Every node's name, so that [`GraphBuilder::has_name`] is a lookup, not a scan (an
    /// importer asks for each node it adds: a scan made a 100k-node import quadratic).
    names: std::collections::HashSet<String>,
}

impl GraphBuilder {
    /// A graph whose input has `channels` channels (node 0, named `input`).
    pub fn new(channels: usize) -> Self {
        let input = Node { name: "input".into(), op: Op::Input, inputs: Vec::new() };
        let names = std::collections::HashSet::from([input.name.clone()]);
        Self { nodes: vec![input], aliases: BTreeMap::new(), channels, names }
    }

    /// The nodes so far.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The input node.
    pub fn input(&self) -> NodeId {
        0
    }

    /// Appends a node applying `op` to `inputs`.
    pub fn push(&mut self, name: impl Into<String>, op: Op, inputs: &[NodeId]) -> NodeId {
        let name = name.into();
        self.names.insert(name.clone());
        self.nodes.push(Node { name, op, inputs: inputs.to_vec() });
        self.nodes.len() - 1
    }

    /// Appends a nonlinearity.
    pub fn act(&mut self, name: impl Into<String>, kind: Nonlinearity, input: NodeId) -> NodeId {
        self.push(name, Op::Act(kind), &[input])
    }

    /// Appends a convolution with square kernel stride, symmetric padding and dilation.
    pub fn conv(
        &mut self,
        name: impl Into<String>,
        input: NodeId,
        (weight, bias): (Tensor, Option<Tensor>),
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> NodeId {
        let conv =
            Conv { weight, bias, stride: [stride; 2], padding: [padding; 4], dilation: [1; 2], groups };
        self.push(name, Op::Conv(conv), &[input])
    }

    /// Appends a fully connected layer.
    pub fn linear(
        &mut self,
        name: impl Into<String>,
        input: NodeId,
        (weight, bias): (Tensor, Option<Tensor>),
    ) -> NodeId {
        self.push(name, Op::Linear(Linear { weight, bias }), &[input])
    }

    /// Appends a square max-pool (PyTorch's `MaxPool2d(kernel, stride, padding, ceil_mode)`).
    pub fn max_pool(
        &mut self,
        name: impl Into<String>,
        input: NodeId,
        kernel: usize,
        stride: usize,
        padding: usize,
        ceil_mode: bool,
    ) -> NodeId {
        let w = Window { kernel: [kernel; 2], stride: [stride; 2], padding: [padding; 4], ceil_mode };
        self.push(name, Op::MaxPool(MaxPool(w)), &[input])
    }

    /// Names `node` also as `alias` (a container whose output it is).
    pub fn alias(&mut self, alias: impl Into<String>, node: NodeId) {
        self.aliases.insert(alias.into(), node);
    }

    /// The op of node `id`, to change it in place (an importer folding a batch norm or a
    /// bias into the layer before it).
    pub fn op_mut(&mut self, id: NodeId) -> Option<&mut Op> {
        self.nodes.get_mut(id).map(|n| &mut n.op)
    }

    /// Whether a node or alias already has this name.
    pub fn has_name(&self, name: &str) -> bool {
        self.aliases.contains_key(name) || self.names.contains(name)
    }

    /// The id of the most recent node.
    pub fn last(&self) -> NodeId {
        self.nodes.len() - 1
    }

    /// Finishes the graph with `output` as the logits node, checking that every input refers
    /// to an earlier node and that names are unique.
    pub fn finish(self, output: NodeId) -> Result<Graph> {
        let mut seen = std::collections::HashSet::new();
        for (id, node) in self.nodes.iter().enumerate() {
            if !seen.insert(node.name.as_str()) {
                return Err(Error::Invalid(format!("two nodes are named `{}`", node.name)));
            }
            if (id == 0) != matches!(node.op, Op::Input) || node.inputs.iter().any(|&i| i >= id) {
                return Err(Error::Invalid(format!("node `{}` is out of topological order", node.name)));
            }
        }
        if output == 0 || output >= self.nodes.len() {
            return Err(Error::Invalid(format!("output node {output} does not exist")));
        }
        let g = Graph { nodes: self.nodes, output, aliases: self.aliases, channels: self.channels };
        g.check_finite()?;
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn window_sizes_follow_pytorch() {
        // MaxPool2d(3, 2, ceil_mode=True) on 55 → 27 (SqueezeNet); on 13 → 6.
        let w = Window { kernel: [3; 2], stride: [2; 2], padding: [0; 4], ceil_mode: true };
        assert_eq!(w.out_len(0, 55), Some(27));
        assert_eq!(w.out_len(0, 13), Some(6));
        assert_eq!(w.out_len(0, 14), Some(7)); // floor would give 6
                                               // MaxPool2d(3, 2, padding=1) on 112 → 56 (ResNet); a 2×2 on 1 fits nowhere.
        let r = Window { kernel: [3; 2], stride: [2; 2], padding: [1; 4], ceil_mode: false };
        assert_eq!(r.out_len(0, 112), Some(56));
        let t = Window { kernel: [2; 2], stride: [2; 2], padding: [0; 4], ceil_mode: false };
        assert_eq!(t.out_len(0, 1), None);
        // ceil_mode with padding: 5 + 2·1 = 7, k 2, s 2 → ceil(5/2)+1 = 4, but the fourth
        // window would start at 6 ≥ 5 + 1: dropped → 3 (PyTorch gives 3).
        let p = Window { kernel: [2; 2], stride: [2; 2], padding: [1; 4], ceil_mode: true };
        assert_eq!(p.out_len(0, 5), Some(3));
    }

    #[test]
    fn shapes_name_the_node_that_does_not_fit() {
        let dev = Device::Cpu;
        let mut b = GraphBuilder::new(1);
        let w = Tensor::zeros((4, 1, 3, 3), DType::F32, &dev).unwrap();
        let c = b.conv("conv", 0, (w, None), 1, 0, 1);
        let f = b.push("flatten", Op::Flatten(Flatten), &[c]);
        let lw = Tensor::zeros((2, 4 * 4 * 4), DType::F32, &dev).unwrap();
        let out = b.linear("fc", f, (lw, None));
        b.alias("features", c);
        let g = b.finish(out).unwrap();
        assert_eq!(g.shapes((6, 6)).unwrap()[out], Shape::Flat(2));
        assert_eq!(g.classes((6, 6)).unwrap(), 2);
        let err = g.shapes((7, 6)).unwrap_err().to_string();
        assert!(err.contains("`fc`") && err.contains("64"), "{err}");
        assert_eq!(g.find("features"), Some(c));
        assert_eq!(g.map_names((6, 6)), vec!["conv", "features"]);
    }
}

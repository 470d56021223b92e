//! ONNX nodes mapped onto the layer graph's ops.
//!
//! Walks the file's nodes in order (the standard requires a topological order) and keeps,
//! for every ONNX value name, either the graph node that computes it or the constant it holds.
//! Each supported op becomes one [`Op`] (or none: Identity, Dropout and shape no-ops only
//! rename a value); constants are folded where the graph has no op for them: a batch norm
//! after a convolution is folded into its kernel, an Add after MatMul (or a bias-free
//! convolution) becomes the layer's bias, Mul/Sub/Div/Add by a per-channel constant after a
//! layer norm become its scale and bias, and elsewhere one affine node (the in-graph input
//! normalisation of many exports). A feature map transposed to channels-last ([0, 2, 3, 1],
//! ConvNeXt) stays one graph node seen through a view until it is transposed back: a
//! LayerNormalization over the last axis there normalises the channels at each position, a
//! MatMul by a constant is a 1×1 convolution, and elementwise ops act as on the map. Shapes
//! are inferred node by node at the import size, so that a node that does not fit is named by
//! its ONNX name.

use super::proto::{Attribute, GraphProto, NodeProto};
use super::tensor::{decode, Const};
use crate::model::graph::{
    fold_batch_norm, infer, AdaptiveAvgPool, Add, Affine, AvgPool, BatchNorm, Channels, Concat, Conv,
    Flatten, GraphBuilder, LayerNorm, Linear, MaxPool, Mul, NodeId, Nonlinearity, Op, Shape, Window,
};
use candle_core::{Device, Tensor};
use std::collections::HashMap;

/// The ONNX ops the importer maps (standard domain, opsets 9 to 21).
pub const SUPPORTED_OPS: [&str; 40] = [
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "Div",
    "Dropout",
    "Flatten",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Identity",
    "LeakyRelu",
    "LogSoftmax",
    "MatMul",
    "MaxPool",
    "Mul",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Softmax",
    "Squeeze",
    "Sub",
    "Unsqueeze",
    "Cast",
    "Sum",
    "Shape",
    "Gather",
    "Transpose",
    "Pad",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Gelu",
    "Slice",
    "LayerNormalization",
    "Split",
];

/// One ONNX value during the import: a graph node's output, a constant, or a node's output
/// zero-padded by a Pad (top, left, bottom, right) that the Conv reading it absorbs.
#[derive(Debug, Clone)]
enum Val {
    Node(NodeId),
    Const(Const),
    Padded(NodeId, [usize; 4]),
    /// A feature map viewed as [N, g, C/g, H, W] (the first step of a channel shuffle).
    Grouped(NodeId, usize),
    /// That view with its two group axes swapped, [N, C/g, g, H, W] (the second step).
    Swapped(NodeId, usize),
    /// A feature map [N, C, H, W] viewed channels-last, [N, H, W, C] (a Transpose with perm
    /// [0, 2, 3, 1]): ConvNeXt's LayerNorm, its MatMuls on channels (1×1 convolutions), and
    /// elementwise ops keep the view until the Transpose back.
    Last(NodeId),
}

/// What reading a half-done channel shuffle anywhere else says.
const SHUFFLE_ONLY: &str = "reads a 5-D view of a feature map: only a channel shuffle (Reshape to \
                            [N, g, C/g, H, W], Transpose [0, 2, 1, 3, 4], Reshape back) is supported";

/// What reading a channels-last view anywhere else says.
const LAST_ONLY: &str = "reads a channels-last view of a feature map (Transpose [0, 2, 3, 1]): only \
                         LayerNormalization over the last axis, MatMul by a constant, elementwise ops and \
                         the Transpose [0, 3, 1, 2] back are supported there";

/// What reading a Pad's output anywhere but in a Conv says.
const PAD_ONLY_BEFORE_CONV: &str = "reads a Pad's output: a Pad is supported only right before a Conv";

type Step<T> = std::result::Result<T, String>;

/// The batch size in shape arithmetic (`Shape` of a computed value): a symbol, carried through
/// Gather, Unsqueeze and Concat of constants into a Reshape, where it means "the batch".
const BATCH: i64 = i64::MIN;

/// The import state: the graph so far, its shapes, and what every value name holds.
pub(super) struct Importer {
    pub(super) builder: GraphBuilder,
    pub(super) shapes: Vec<Shape>,
    input: (usize, usize, usize),
    values: HashMap<String, Val>,
    /// How often each value name is read (by nodes or as the graph's output).
    uses: HashMap<String, usize>,
    /// The value name each graph node wrote (its output in the file).
    written: HashMap<NodeId, String>,
    /// The graph output's value name.
    output: String,
    /// The declared batch size, when fixed (exports with a fixed batch reshape to it).
    batch: Option<i64>,
    /// Notices for the user (a dropped final softmax).
    pub(super) notices: Vec<String>,
    /// Whether the file's input is channels-last, opened by a Transpose to channels-first.
    nhwc: bool,
    /// The default-domain opset (a softmax's default axis depends on it).
    pub(super) opset: i64,
}

fn attr<'n>(n: &'n NodeProto, name: &str) -> Option<&'n Attribute> {
    n.attributes.iter().find(|a| a.name == name)
}

fn int(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).and_then(|a| a.i).unwrap_or(default)
}

fn float(n: &NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).and_then(|a| a.f).unwrap_or(default)
}

fn string(n: &NodeProto, name: &str, default: &str) -> String {
    attr(n, name)
        .and_then(|a| a.s.as_ref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or(default.into())
}

/// A two-element attribute (strides, dilations, kernel_shape) as usizes ≥ `min`.
fn pair(n: &NodeProto, name: &str, default: [usize; 2], min: usize) -> Step<[usize; 2]> {
    let Some(a) = attr(n, name) else { return Ok(default) };
    match a.ints.as_slice() {
        &[r, c] if r >= min as i64 && c >= min as i64 => Ok([r as usize, c as usize]),
        v => Err(format!("attribute `{name}` = {v:?}: expected two values ≥ {min} (2-D only)")),
    }
}

/// The padding (top, left, bottom, right) of a conv or pool with effective kernel `k` and
/// stride `s` on an input of `hw`: explicit `pads`, or `auto_pad`.
fn padding(n: &NodeProto, k: [usize; 2], s: [usize; 2], hw: (usize, usize)) -> Step<[usize; 4]> {
    match string(n, "auto_pad", "NOTSET").as_str() {
        "NOTSET" => match attr(n, "pads").map(|a| a.ints.as_slice()) {
            None => Ok([0; 4]),
            Some(&[t, l, b, r]) if [t, l, b, r].iter().all(|&p| p >= 0) => {
                Ok([t as usize, l as usize, b as usize, r as usize])
            }
            Some(v) => Err(format!("attribute `pads` = {v:?}: expected four values ≥ 0 (2-D only)")),
        },
        "VALID" => Ok([0; 4]),
        mode @ ("SAME_UPPER" | "SAME_LOWER") => {
            // Output ⌈in/s⌉; the padding that makes it so, the odd pixel at the end (UPPER)
            // or the beginning (LOWER).
            let mut p = [0; 4];
            for (axis, len) in [hw.0, hw.1].into_iter().enumerate() {
                let out = len.div_ceil(s[axis]);
                let total = (out.saturating_sub(1) * s[axis])
                    .checked_add(k[axis])
                    .ok_or(format!("`{mode}` padding of a {}-wide kernel overflows", k[axis]))?
                    .saturating_sub(len);
                let lead = if mode == "SAME_UPPER" { total / 2 } else { total - total / 2 };
                p[axis] = lead;
                p[axis + 2] = total - lead;
            }
            Ok(p)
        }
        other => Err(format!("attribute `auto_pad` = `{other}` is not an ONNX value")),
    }
}

/// A layer's parameter tensor; NaN or infinite values are refused (every map would be NaN).
fn tensor(values: Vec<f32>, dims: &[usize]) -> Step<Tensor> {
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(format!("its parameters hold {v} (NaN and infinite weights are refused)"));
    }
    Tensor::from_vec(values, dims, &Device::Cpu).map_err(|e| e.to_string())
}

/// `c` as one value per channel of a `channels`-wide input, if it broadcasts that way over
/// [N,C,H,W] (map) or [N,F] (flat): a scalar, [C,1,1] / [1,C,1,1] (maps) or [F] / [1,F] (flat).
fn per_channel(c: &Const, shape: Shape) -> Step<Vec<f32>> {
    let v = c.f32s();
    let (width, ok) = match shape {
        Shape::Map(ch, _, _) => {
            let d: Vec<usize> = c.dims.iter().copied().skip_while(|&d| d == 1).collect();
            (ch, v.len() == 1 || (v.len() == ch && c.dims.len() >= 3 && d.len() == 3 && d[1..] == [1, 1]))
        }
        Shape::Flat(f) => (f, v.len() == 1 || (v.len() == f && c.dims.last() == Some(&f))),
    };
    if !ok {
        return Err(format!(
            "a constant of shape {:?} does not broadcast per channel over a {shape} input",
            c.dims
        ));
    }
    Ok(if v.len() == 1 { vec![v[0]; width] } else { v })
}

/// `c` as one value per channel of a channels-last view of a `shape` map: a scalar, or C
/// values along the last axis ([C], [1, C], [1, 1, C], [1, 1, 1, C]).
fn per_channel_last(c: &Const, shape: Shape) -> Step<Vec<f32>> {
    let (v, ch) = (c.f32s(), shape.channels());
    let lead_ones = c.dims.len() <= 4 && c.dims.iter().rev().skip(1).all(|&d| d == 1);
    if v.len() == 1 {
        return Ok(vec![v[0]; ch]);
    }
    if v.len() != ch || c.dims.last() != Some(&ch) || !lead_ones {
        return Err(format!(
            "a constant of shape {:?} does not broadcast per channel over a channels-last view of a {shape} map",
            c.dims
        ));
    }
    Ok(v)
}

/// A node's output in the layout it was read in.
fn view(id: NodeId, last: bool) -> Val {
    if last {
        Val::Last(id)
    } else {
        Val::Node(id)
    }
}

impl Val {
    /// A computed value that ops may read in its layout: the node and whether it is a
    /// channels-last view ([`view`]'s inverse); None for constants and the other views.
    fn computed(&self) -> Option<(NodeId, bool)> {
        match *self {
            Val::Node(x) => Some((x, false)),
            Val::Last(x) => Some((x, true)),
            _ => None,
        }
    }
}

impl Importer {
    /// An importer for `graph` whose image input (value `input`) has `chw` and a batch of
    /// `batch` (when fixed).
    /// With `nhwc`, the Transposes reading the input are dropped (the images are [N,C,H,W]).
    pub(super) fn new(
        graph: &GraphProto,
        nodes: &[NodeProto],
        input: &str,
        chw: (usize, usize, usize),
        batch: Option<i64>,
        nhwc: bool,
    ) -> Self {
        let mut uses: HashMap<String, usize> = HashMap::new();
        for n in nodes {
            for i in n.inputs.iter().filter(|i| !i.is_empty()) {
                *uses.entry(i.clone()).or_default() += 1;
            }
        }
        let output = graph.outputs.first().map(|o| o.name.clone()).unwrap_or_default();
        *uses.entry(output.clone()).or_default() += 1;
        let mut builder = GraphBuilder::new(chw.0);
        if input != "input" {
            builder.alias(input, 0);
        }
        let mut values = HashMap::new();
        values.insert(input.to_string(), Val::Node(0));
        Self {
            builder,
            shapes: vec![Shape::Map(chw.0, chw.1, chw.2)],
            input: chw,
            values,
            uses,
            written: HashMap::from([(0, input.to_string())]),
            output,
            batch,
            notices: Vec::new(),
            nhwc,
            opset: *super::OPSETS.end(),
        }
    }

    /// Records an initializer.
    pub(super) fn constant(&mut self, name: &str, c: Const) {
        self.values.insert(name.to_string(), Val::Const(c));
    }

    /// The node computing the graph's output.
    pub(super) fn output(&self) -> Step<NodeId> {
        match self.values.get(&self.output) {
            Some(Val::Node(id)) => Ok(*id),
            Some(Val::Const(_)) => Err(format!("the graph output `{}` is a constant", self.output)),
            Some(Val::Padded(..)) => Err(format!("the graph output `{}` is a Pad's", self.output)),
            Some(Val::Grouped(..) | Val::Swapped(..)) => {
                Err(format!("the graph output `{}` is a 5-D view of a feature map", self.output))
            }
            Some(Val::Last(_)) => {
                Err(format!("the graph output `{}` is a channels-last view of a feature map", self.output))
            }
            None => Err(format!("no node writes the graph output `{}`", self.output)),
        }
    }

    fn val(&self, n: &NodeProto, i: usize) -> Step<Option<&Val>> {
        match n.inputs.get(i).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(name) => self
                .values
                .get(name)
                .map(Some)
                .ok_or_else(|| format!("reads `{name}`, which no earlier node writes")),
        }
    }

    /// An op's `axes`: the constant input `i` (newer opsets) or the attribute (older ones);
    /// empty when neither is given. Negative axes are counted from the end of `rank`.
    fn axes(&self, n: &NodeProto, i: usize, rank: i64) -> Step<Vec<i64>> {
        let axes = match self.const_in(n, i)? {
            Some(c) => c.i64s().ok_or("non-integer axes")?,
            None => attr(n, "axes").map(|a| a.ints.clone()).unwrap_or_default(),
        };
        Ok(axes.iter().map(|&a| if a < 0 { a + rank } else { a }).collect())
    }

    fn node_in(&self, n: &NodeProto, i: usize) -> Step<NodeId> {
        match self.val(n, i)? {
            Some(Val::Node(id)) => Ok(*id),
            Some(Val::Const(_)) => Err(format!("input {i} is a constant where a computed value is expected")),
            Some(Val::Padded(..)) => Err(PAD_ONLY_BEFORE_CONV.into()),
            Some(Val::Grouped(..) | Val::Swapped(..)) => Err(SHUFFLE_ONLY.into()),
            Some(Val::Last(_)) => Err(LAST_ONLY.into()),
            None => Err(format!("input {i} is missing")),
        }
    }

    /// A computed input that may be a channels-last view: the node and whether it is viewed so.
    fn view_in(&self, n: &NodeProto, i: usize) -> Step<(NodeId, bool)> {
        match self.val(n, i)?.and_then(Val::computed) {
            Some(c) => Ok(c),
            None => Ok((self.node_in(n, i)?, false)),
        }
    }

    fn const_in(&self, n: &NodeProto, i: usize) -> Step<Option<Const>> {
        match self.val(n, i)? {
            Some(Val::Const(c)) => Ok(Some(c.clone())),
            Some(Val::Node(_) | Val::Padded(..) | Val::Grouped(..) | Val::Swapped(..) | Val::Last(_)) => {
                Err(format!(
                    "input {i} (`{}`) is computed from the image; only constants are supported there",
                    n.inputs[i]
                ))
            }
            None => Ok(None),
        }
    }

    fn map_hw(&self, id: NodeId) -> Step<(usize, usize, usize)> {
        match self.shapes[id] {
            Shape::Map(c, h, w) => Ok((c, h, w)),
            s => Err(format!("needs a feature map, got a flat vector of {s}")),
        }
    }

    /// Whether node `id` wrote exactly the value `n` reads as input 0, and nothing else reads
    /// it: it may then absorb `n` (a batch norm into a conv, a bias into a linear layer).
    fn sole_reader(&self, n: &NodeProto, id: NodeId) -> bool {
        self.sole_reader_of(n, 0, id)
    }

    /// [`Importer::sole_reader`] for input `i` of `n`.
    fn sole_reader_of(&self, n: &NodeProto, i: usize, id: NodeId) -> bool {
        let Some(name) = n.inputs.get(i) else { return false };
        self.written.get(&id) == Some(name) && self.uses.get(name) == Some(&1)
    }

    /// Appends a graph node for `n` (named `suffix` after its ONNX name for a second node).
    fn push(&mut self, n: &NodeProto, op: Op, inputs: &[NodeId], suffix: &str) -> Step<NodeId> {
        let base =
            if n.name.is_empty() { n.outputs.first().cloned().unwrap_or_default() } else { n.name.clone() };
        let mut name = format!("{base}{suffix}");
        let mut k = 1;
        while name.is_empty() || self.builder.has_name(&name) {
            name = format!("{base}{suffix}#{k}");
            k += 1;
        }
        let ins: Vec<Shape> = inputs.iter().map(|&i| self.shapes[i]).collect();
        let shape = infer(&op, &ins, self.input)?;
        let id = self.builder.push(name, op, inputs);
        self.shapes.push(shape);
        Ok(id)
    }

    /// Binds `n`'s first output to `val`, naming a node output by its value name too.
    fn set(&mut self, n: &NodeProto, val: Val) -> Step<()> {
        self.check_outputs(n)?;
        for extra in n.outputs.iter().skip(1).filter(|o| !o.is_empty()) {
            if self.uses.contains_key(extra) {
                return Err(format!("its output `{extra}` is read, but only the first output is supported"));
            }
        }
        let out = n.outputs.first().filter(|o| !o.is_empty()).ok_or("has no output")?.clone();
        self.bind(n, out, val);
        Ok(())
    }

    /// SSA: every value name is defined once (onnxruntime refuses a redefinition, which would
    /// silently rebind what later nodes, or the graph output, read).
    fn check_outputs(&self, n: &NodeProto) -> Step<()> {
        for (i, o) in n.outputs.iter().enumerate().filter(|(_, o)| !o.is_empty()) {
            if self.values.contains_key(o) || n.outputs[..i].contains(o) {
                return Err(format!("redefines the value `{o}` (each value name may be defined once)"));
            }
        }
        Ok(())
    }

    /// Binds value name `out` (an output of `n`) to `val`, naming a node output by it too (and
    /// by the node's name, when free).
    fn bind(&mut self, n: &NodeProto, out: String, val: Val) {
        if let Val::Node(id) | Val::Last(id) = val {
            for name in [&n.name, &out] {
                if !name.is_empty() && !self.builder.has_name(name) {
                    self.builder.alias(name.clone(), id);
                }
            }
            self.written.insert(id, out.clone());
        }
        self.values.insert(out, val);
    }

    /// Imports one node.
    pub(super) fn node(&mut self, n: &NodeProto) -> Step<()> {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(format!("domain `{}` is not supported (standard ONNX ops only)", n.domain));
        }
        match n.op_type.as_str() {
            "Conv" => self.conv(n),
            "Pad" => self.pad(n),
            "BatchNormalization" => self.batch_norm(n),
            "Relu" => self.act(n, Nonlinearity::Relu),
            "LeakyRelu" => self.act(n, Nonlinearity::LeakyRelu(float(n, "alpha", 0.01))),
            "Sigmoid" => self.act(n, Nonlinearity::Sigmoid),
            "Tanh" => self.act(n, Nonlinearity::Tanh),
            super::fuse::SILU => self.act(n, Nonlinearity::Silu),
            "HardSwish" => self.act(n, Nonlinearity::HardSwish),
            "HardSigmoid" => self.hard_sigmoid(n),
            "Gelu" => match string(n, "approximate", "none").as_str() {
                "none" => self.act(n, Nonlinearity::Gelu),
                "tanh" => self.act(n, Nonlinearity::GeluTanh),
                other => Err(format!("approximate = `{other}`: `none` and `tanh` are supported")),
            },
            "Erf" => Err("Erf is supported only inside exact GELU, x·(1 + erf(x/√2))/2 as PyTorch \
                          exports it before opset 20"
                .into()),
            "Clip" => self.clip(n),
            "MaxPool" | "AveragePool" => self.pool(n),
            "GlobalAveragePool" => self.global_pool(n, false),
            "GlobalMaxPool" => self.global_pool(n, true),
            "ReduceMean" => self.reduce_mean(n),
            "Flatten" => self.flatten(n),
            "Reshape" | "Squeeze" => self.reshape(n),
            "Unsqueeze" => self.constant_only(n),
            "Shape" => self.shape_of(n),
            "Transpose" => self.transpose(n),
            "LayerNormalization" => self.layer_norm(n),
            "Slice" => self.slice(n),
            "Split" => self.split(n),
            "Gather" => self.gather(n),
            "Gemm" => self.gemm(n),
            "MatMul" => self.matmul(n),
            "Add" | "Sub" | "Mul" | "Div" | "Sum" => self.arith(n),
            "Concat" => self.concat(n),
            "Identity" | "Dropout" => self.identity(n),
            "Cast" => match (self.val(n, 0)?, int(n, "to", 1)) {
                (Some(Val::Node(_)), 1) => self.identity(n),
                (Some(Val::Node(_)), to) => {
                    Err(format!("Cast of the image's values to type {to} (float only)"))
                }
                _ => self.constant_only(n),
            },
            "Constant" => self.constant_node(n),
            "Softmax" | "LogSoftmax" => self.softmax(n),
            _ => Err(format!("unsupported op (supported: {})", sorted_ops().join(", "))),
        }
    }

    /// The Transposes of a channels-last input, of a channel shuffle, and to and from a
    /// channels-last view of a feature map.
    fn transpose(&mut self, n: &NodeProto) -> Step<()> {
        let perm = attr(n, "perm").map(|p| p.ints.clone()).unwrap_or_default();
        match (self.val(n, 0)?.cloned(), perm.as_slice()) {
            (Some(Val::Node(0)), _) if self.nhwc => self.identity(n),
            (Some(Val::Grouped(x, g)), [0, 2, 1, 3, 4]) => self.set(n, Val::Swapped(x, g)),
            (Some(Val::Node(x)), [0, 2, 3, 1]) if matches!(self.shapes[x], Shape::Map(..)) => {
                self.set(n, Val::Last(x))
            }
            (Some(Val::Last(x)), [0, 3, 1, 2]) => self.set(n, Val::Node(x)),
            _ => Err(format!(
                "Transpose with perm {perm:?}: only the channels-last input's Transpose to channels-first, \
                 a channel shuffle's [0, 2, 1, 3, 4], and a feature map's [0, 2, 3, 1] to channels-last \
                 and [0, 3, 1, 2] back are supported"
            )),
        }
    }

    /// LayerNormalization over the last axis: of a channels-last view (the channels at each
    /// position, ConvNeXt's LayerNorm) or of a flat vector; scale and bias optional.
    fn layer_norm(&mut self, n: &NodeProto) -> Step<()> {
        let (x, last) = self.view_in(n, 0)?;
        let rank = match self.shapes[x] {
            Shape::Map(..) if last => 4,
            Shape::Flat(_) => 2,
            s => {
                return Err(format!(
                    "LayerNormalization of a {s} map in channels-first order: only over \
                                     channels-last data's last axis or a flat vector"
                ))
            }
        };
        let axis = int(n, "axis", -1);
        if !(axis == -1 || axis == rank - 1) {
            return Err(format!("axis {axis}: only normalisation over the last axis is supported"));
        }
        let c = self.shapes[x].channels();
        // No scale: γ = 1 (the fused form of older opsets, whose Mul γ and Add β fold in after).
        let weight = match self.const_in(n, 1)? {
            Some(w) => w.f32s(),
            None => vec![1.0; c],
        };
        let bias = match self.const_in(n, 2)? {
            Some(b) => b.f32s(),
            None => vec![0.0; c],
        };
        // Lengths and ε are checked by the op's shape inference in `push`, finiteness with every
        // parameter when the graph is finished.
        let eps = float(n, "epsilon", 1e-5);
        let id = self.push(n, Op::LayerNorm(LayerNorm { weight, bias, eps }), &[x], "")?;
        self.set(n, view(id, last))
    }

    fn conv(&mut self, n: &NodeProto) -> Step<()> {
        // A zero Pad right before the convolution adds to its own padding.
        let (x, pre) = match self.val(n, 0)? {
            Some(Val::Padded(x, p)) => (*x, *p),
            _ => (self.node_in(n, 0)?, [0; 4]),
        };
        let w = self.const_in(n, 1)?.ok_or("has no constant weight")?;
        let &[o, ci, kh, kw] = w.dims.as_slice() else {
            return Err(format!("weight of shape {:?}: only 2-D convolutions are supported", w.dims));
        };
        if [o, ci, kh, kw].contains(&0) {
            return Err(format!("weight of shape {:?} has an empty dimension", w.dims));
        }
        let bias = match self.const_in(n, 2)? {
            Some(b) if b.len() == o => Some(tensor(b.f32s(), &[o])?),
            Some(b) => return Err(format!("bias of {} values for {o} output channels", b.len())),
            None => None,
        };
        if let Some(k) = attr(n, "kernel_shape") {
            if k.ints != [kh as i64, kw as i64] {
                return Err(format!("kernel_shape {:?} does not match the weight's {kh}×{kw}", k.ints));
            }
        }
        let stride = pair(n, "strides", [1, 1], 1)?;
        let dilation = pair(n, "dilations", [1, 1], 1)?;
        let groups =
            usize::try_from(int(n, "group", 1)).ok().filter(|&g| g >= 1).ok_or("group must be ≥ 1")?;
        let (_, h, wd) = self.map_hw(x)?;
        let overflow = || format!("dilations {dilation:?} and pads overflow");
        let span = |d: usize, k: usize| d.checked_mul(k - 1).and_then(|v| v.checked_add(1));
        let k = [span(dilation[0], kh).ok_or_else(overflow)?, span(dilation[1], kw).ok_or_else(overflow)?];
        // auto_pad sizes its padding for the padded input.
        let add3 = |a: usize, b: usize, c: usize| a.checked_add(b).and_then(|v| v.checked_add(c));
        let padded_hw =
            (add3(h, pre[0], pre[2]).ok_or_else(overflow)?, add3(wd, pre[1], pre[3]).ok_or_else(overflow)?);
        let own = padding(n, k, stride, padded_hw)?;
        let mut padding = [0usize; 4];
        for i in 0..4 {
            padding[i] = own[i].checked_add(pre[i]).ok_or_else(overflow)?;
        }
        let weight = tensor(w.f32s(), &[o, ci, kh, kw])?;
        let id =
            self.push(n, Op::Conv(Conv { weight, bias, stride, padding, dilation, groups }), &[x], "")?;
        self.set(n, Val::Node(id))
    }

    /// A constant zero Pad of the two spatial axes, held until the Conv that reads it (pads as an
    /// attribute before opset 11, an input since; `axes` from opset 18).
    fn pad(&mut self, n: &NodeProto) -> Step<()> {
        let x = self.node_in(n, 0)?;
        self.map_hw(x)?;
        let mode = string(n, "mode", "constant");
        if mode != "constant" {
            return Err(format!("mode `{mode}`: only constant zero padding is supported"));
        }
        let pads = match self.const_in(n, 1)? {
            Some(c) => c.i64s().ok_or("non-integer pads")?,
            None => attr(n, "pads").map(|a| a.ints.clone()).unwrap_or_default(),
        };
        let value = match self.const_in(n, 2)? {
            Some(c) => c.f32s().first().copied().unwrap_or(0.0),
            None => float(n, "value", 0.0),
        };
        if value != 0.0 {
            return Err(format!("padding with {value}: only zero padding is supported"));
        }
        // Axes from opset 18; all four (N, C, H, W) before.
        let axes = Some(self.axes(n, 3, 4)?).filter(|a| !a.is_empty()).unwrap_or_else(|| vec![0, 1, 2, 3]);
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
        self.set(n, Val::Padded(x, spatial))
    }

    fn batch_norm(&mut self, n: &NodeProto) -> Step<()> {
        if int(n, "training_mode", 0) != 0 {
            return Err("training_mode = 1: export the model in eval mode".into());
        }
        let x = self.node_in(n, 0)?;
        let mut p = Vec::new();
        for (i, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "var")] {
            let v = self.const_in(n, i)?.ok_or(format!("has no constant {what}"))?.f32s();
            let len = v.len();
            p.push(tensor(v, &[len])?);
        }
        let [weight, bias, mean, var] = <[Tensor; 4]>::try_from(p).map_err(|_| "four tensors expected")?;
        // The same eval-mode batch norm, scale/shift and fold as the state_dict builders'.
        let bn = BatchNorm { weight, bias, mean, var, eps: f64::from(float(n, "epsilon", 1e-5)) };
        if self.sole_reader(n, x) {
            if let Some(Op::Conv(conv)) = self.builder.op_mut(x) {
                let (w, b) =
                    fold_batch_norm(&conv.weight, conv.bias.as_ref(), &bn).map_err(|e| e.to_string())?;
                (conv.weight, conv.bias) = (w, b);
                return self.set(n, Val::Node(x));
            }
        }
        let (scale, shift) = bn.scale_shift().map_err(|e| e.to_string())?;
        let id = self.push(n, Op::Affine(Affine { scale, shift }), &[x], "")?;
        self.set(n, Val::Node(id))
    }

    /// An elementwise nonlinearity (of a map, a flat vector or a channels-last view).
    fn act(&mut self, n: &NodeProto, kind: Nonlinearity) -> Step<()> {
        let (x, last) = self.view_in(n, 0)?;
        let id = self.push(n, Op::Act(kind), &[x], "")?;
        self.set(n, view(id, last))
    }

    /// HardSigmoid(alpha, beta) = clamp(alpha·x + beta, 0, 1), for alpha > 0.
    fn hard_sigmoid(&mut self, n: &NodeProto) -> Step<()> {
        let (alpha, beta) = (float(n, "alpha", 0.2), float(n, "beta", 0.5));
        if !(alpha > 0.0 && alpha.is_finite() && beta.is_finite()) {
            return Err(format!("alpha = {alpha}, beta = {beta}: a finite alpha > 0 is supported"));
        }
        self.act(n, Nonlinearity::HardSigmoid { alpha, beta })
    }

    /// Clip(0, 6) is ReLU6 and Clip(0, ∞) ReLU; the bounds are attributes before opset 11
    /// and optional constant inputs since.
    fn clip(&mut self, n: &NodeProto) -> Step<()> {
        let bound = |i: usize, name: &str, default: f32| -> Step<f32> {
            if let Some(c) = self.const_in(n, i)? {
                return c.f32s().first().copied().ok_or(format!("empty `{name}` input"));
            }
            Ok(float(n, name, default))
        };
        let (lo, hi) = (bound(1, "min", f32::NEG_INFINITY)?, bound(2, "max", f32::INFINITY)?);
        let kind = match (lo, hi) {
            (0.0, 6.0) => Nonlinearity::Relu6,
            (0.0, h) if h >= f32::MAX => Nonlinearity::Relu,
            _ => {
                return Err(format!(
                    "Clip({lo}, {hi}): only Clip(0, 6) (ReLU6) and Clip(0, ∞) (ReLU) are supported"
                ))
            }
        };
        self.act(n, kind)
    }

    fn pool(&mut self, n: &NodeProto) -> Step<()> {
        let x = self.node_in(n, 0)?;
        let (_, h, w) = self.map_hw(x)?;
        let kernel = pair(n, "kernel_shape", [0, 0], 1)?;
        if kernel == [0, 0] {
            return Err("has no kernel_shape".into());
        }
        let stride = pair(n, "strides", [1, 1], 1)?;
        if pair(n, "dilations", [1, 1], 1)? != [1, 1] {
            return Err("dilated pooling is not supported".into());
        }
        let padding = padding(n, kernel, stride, (h, w))?;
        let window = Window { kernel, stride, padding, ceil_mode: int(n, "ceil_mode", 0) != 0 };
        let op = if n.op_type == "MaxPool" {
            Op::MaxPool(MaxPool(window))
        } else {
            Op::AvgPool(AvgPool { window, count_include_pad: int(n, "count_include_pad", 0) != 0 })
        };
        let id = self.push(n, op, &[x], "")?;
        self.set(n, Val::Node(id))
    }

    fn global_pool(&mut self, n: &NodeProto, max: bool) -> Step<()> {
        let x = self.node_in(n, 0)?;
        let (_, h, w) = self.map_hw(x)?;
        let op = if max {
            Op::MaxPool(MaxPool(Window { kernel: [h, w], stride: [1, 1], padding: [0; 4], ceil_mode: false }))
        } else {
            Op::AdaptiveAvgPool(AdaptiveAvgPool([1, 1]))
        };
        let id = self.push(n, op, &[x], "")?;
        self.set(n, Val::Node(id))
    }

    /// ReduceMean over the two spatial axes: global average pooling (flattened without
    /// keepdims). The axes are an attribute before opset 18 and an input since.
    fn reduce_mean(&mut self, n: &NodeProto) -> Step<()> {
        let x = self.node_in(n, 0)?;
        self.map_hw(x)?;
        let mut axes = self.axes(n, 1, 4)?;
        axes.sort_unstable();
        if axes != [2, 3] {
            return Err(format!("ReduceMean over axes {axes:?}: only the spatial axes [2, 3] are supported"));
        }
        let pooled = self.push(n, Op::AdaptiveAvgPool(AdaptiveAvgPool([1, 1])), &[x], "")?;
        let id = if int(n, "keepdims", 1) == 0 {
            self.push(n, Op::Flatten(Flatten), &[pooled], "/flatten")?
        } else {
            pooled
        };
        self.set(n, Val::Node(id))
    }

    fn flatten(&mut self, n: &NodeProto) -> Step<()> {
        let x = self.node_in(n, 0)?;
        let axis = int(n, "axis", 1);
        if !(axis == 1 || (axis == -3 && matches!(self.shapes[x], Shape::Map(..)))) {
            return Err(format!("axis {axis}: only flattening after the batch axis (axis = 1) is supported"));
        }
        self.flat(n, x)
    }

    /// `x` as [N, F]: a Flatten node for a map, `x` itself when already flat.
    fn flat(&mut self, n: &NodeProto, x: NodeId) -> Step<()> {
        let id = match self.shapes[x] {
            Shape::Map(..) => self.push(n, Op::Flatten(Flatten), &[x], "")?,
            Shape::Flat(_) => x,
        };
        self.set(n, Val::Node(id))
    }

    /// Reshape and Squeeze: only the forms that flatten a map to [N, F] (or leave the shape
    /// as it is). A leading −1 / 0 / the fixed batch size is the batch axis.
    fn reshape(&mut self, n: &NodeProto) -> Step<()> {
        let x = match self.val(n, 0)? {
            Some(Val::Node(id)) => *id,
            Some(Val::Const(_)) => return self.constant_only(n),
            Some(Val::Padded(..)) => return Err(PAD_ONLY_BEFORE_CONV.into()),
            Some(Val::Swapped(x, g)) if n.op_type == "Reshape" => {
                let (x, g) = (*x, *g);
                return self.unshuffle(n, x, g);
            }
            Some(Val::Grouped(..) | Val::Swapped(..)) => return Err(SHUFFLE_ONLY.into()),
            Some(Val::Last(_)) => return Err(LAST_ONLY.into()),
            None => return Err("input 0 is missing".into()),
        };
        let shape = self.shapes[x];
        let dims: Vec<usize> = match shape {
            Shape::Map(c, h, w) => vec![c, h, w],
            Shape::Flat(f) => vec![f],
        };
        if n.op_type == "Squeeze" {
            let mut axes = self.axes(n, 1, dims.len() as i64 + 1)?;
            axes.sort_unstable();
            return match shape {
                Shape::Map(_, 1, 1) if axes.is_empty() || axes == [2, 3] => self.flat(n, x),
                Shape::Flat(_) if axes.is_empty() => self.flat(n, x),
                _ => Err(format!("Squeeze of axes {axes:?} of a {shape} input is not supported")),
            };
        }
        let target =
            self.const_in(n, 1)?.ok_or("has no constant target shape")?.i64s().ok_or("non-integer shape")?;
        let len = shape.len() as i64;
        let batch_ok = |d: i64| d == 0 || d == -1 || d == BATCH || Some(d) == self.batch || d == 1;
        let copy = |i: usize, d: i64| if d == 0 { dims.get(i - 1).map(|&v| v as i64) } else { Some(d) };
        match target.as_slice() {
            &[b, f] if batch_ok(b) && (copy(1, f) == Some(len) || (f == -1 && b != -1)) => self.flat(n, x),
            t if t.len() == dims.len() + 1
                && batch_ok(t[0])
                && t.iter().enumerate().skip(1).all(|(i, &d)| copy(i, d) == Some(dims[i - 1] as i64)) =>
            {
                self.set(n, Val::Node(x))
            }
            // A channel shuffle's first step: [N, C, H, W] viewed as [N, g, C/g, H, W].
            &[b, g, cg, h, w]
                if batch_ok(b)
                    && g > 0
                    && matches!(shape, Shape::Map(c, hh, ww)
                        if (h, w) == (hh as i64, ww as i64) && (cg == -1 || g * cg == c as i64) && c as i64 % g == 0) =>
            {
                self.set(n, Val::Grouped(x, g as usize))
            }
            t => Err(format!(
                "Reshape of a {shape} input to {t:?}: only flattening to [N, F] and a channel shuffle's \
                 [N, g, C/g, H, W] are supported"
            )),
        }
    }

    /// A channel shuffle's last step: the [N, C/g, g, H, W] view of `x` back to [N, C, H, W],
    /// which permutes x's channels.
    fn unshuffle(&mut self, n: &NodeProto, x: NodeId, g: usize) -> Step<()> {
        let (c, h, w) = self.map_hw(x)?;
        let target =
            self.const_in(n, 1)?.ok_or("has no constant target shape")?.i64s().ok_or("non-integer shape")?;
        let fits =
            |i: usize, want: usize| target.get(i).is_some_and(|&d| d == want as i64 || d == -1 || d == 0);
        let batch = target.first().is_some_and(|&d| d == 0 || d == -1 || d == BATCH || Some(d) == self.batch);
        if !(target.len() == 4 && batch && fits(1, c) && fits(2, h) && fits(3, w)) {
            return Err(format!(
                "Reshape of a channel shuffle's view to {target:?}: only back to [N, {c}, {h}, {w}]"
            ));
        }
        let id = self.push(n, Op::Channels(Channels::shuffle(c, g)), &[x], "")?;
        self.set(n, Val::Node(id))
    }

    /// Slice of a feature map's channels (ShuffleNet's split into halves) with constant
    /// bounds, step 1.
    fn slice(&mut self, n: &NodeProto) -> Step<()> {
        let x = match self.val(n, 0)? {
            Some(Val::Const(_)) => return Err("Slice of a constant is not supported".into()),
            _ => self.node_in(n, 0)?,
        };
        let (c, _, _) = self.map_hw(x)?;
        let list = |i: usize, attr_name: &str| -> Step<Option<Vec<i64>>> {
            Ok(match self.const_in(n, i)? {
                Some(v) => Some(v.i64s().ok_or("non-integer Slice bounds")?),
                None => attr(n, attr_name).map(|a| a.ints.clone()),
            })
        };
        let starts = list(1, "starts")?.ok_or("has no starts")?;
        let ends = list(2, "ends")?.ok_or("has no ends")?;
        let axes = list(3, "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = list(4, "steps")?.unwrap_or_else(|| vec![1; starts.len()]);
        let &[start] = starts.as_slice() else {
            return Err("only a Slice along one axis is supported".into());
        };
        let (&[end], &[axis], &[step]) = (ends.as_slice(), axes.as_slice(), steps.as_slice()) else {
            return Err("only a Slice along one axis is supported".into());
        };
        if !(axis == 1 || axis == -3) || step != 1 {
            return Err(format!("Slice along axis {axis} with step {step}: only channels (axis 1), step 1"));
        }
        let clamp = |v: i64| (if v < 0 { v.saturating_add(c as i64) } else { v }).clamp(0, c as i64) as usize;
        let (a, b) = (clamp(start), clamp(end));
        if a >= b {
            return Err(format!("Slice of channels {start}..{end} of {c} is empty"));
        }
        let id = self.push(n, Op::Channels(Channels { index: (a..b).collect() }), &[x], "")?;
        self.set(n, Val::Node(id))
    }

    /// Split of a feature map's channels (torch.chunk as the dynamo exporter writes it): each
    /// output a channel selection. Sizes from the `split` input (opset 13) or attribute, else
    /// equal parts for the outputs (`num_outputs` from opset 18: parts of ⌈C/k⌉, the last
    /// smaller).
    fn split(&mut self, n: &NodeProto) -> Step<()> {
        let x = self.node_in(n, 0)?;
        let (c, _, _) = self.map_hw(x)?;
        let axis = int(n, "axis", 0);
        if !(axis == 1 || axis == -3) {
            return Err(format!("Split along axis {axis}: only channels (axis 1)"));
        }
        let k = n.outputs.len();
        let sizes: Vec<i64> = match self.const_in(n, 1)? {
            Some(v) => v.i64s().ok_or("non-integer split sizes")?,
            None => match attr(n, "split") {
                Some(a) => a.ints.clone(),
                None => {
                    let part = c.div_ceil(k.max(1)) as i64;
                    (0..k as i64).map(|i| part.min(c as i64 - i * part).max(0)).collect()
                }
            },
        };
        if sizes.len() != k || sizes.iter().any(|&v| v <= 0) || sizes.iter().sum::<i64>() != c as i64 {
            return Err(format!("Split of {c} channels into sizes {sizes:?} for {k} outputs"));
        }
        self.check_outputs(n)?;
        let mut start = 0usize;
        for (i, &size) in sizes.iter().enumerate() {
            let range = start..start + size as usize;
            start = range.end;
            let out = n.outputs[i].clone();
            if out.is_empty() {
                continue;
            }
            let op = Op::Channels(Channels { index: range.collect() });
            let id = self.push(n, op, &[x], &format!("/{i}"))?;
            self.bind(n, out, Val::Node(id));
        }
        Ok(())
    }

    /// Shape ops on constants (what an exporter left of shape arithmetic): the values keep
    /// their order, the dimensions change.
    fn constant_only(&mut self, n: &NodeProto) -> Step<()> {
        let Some(Val::Const(c)) = self.val(n, 0)?.cloned() else {
            return Err("is only supported on constants".into());
        };
        let dims = match n.op_type.as_str() {
            "Unsqueeze" => {
                // The output's rank counts the new axes: read them as given, then resolve.
                let axes = self.axes(n, 1, 0)?;
                let rank = (c.dims.len() + axes.len()) as i64;
                let mut at: Vec<i64> = axes.iter().map(|&a| if a < 0 { a + rank } else { a }).collect();
                at.sort_unstable();
                let mut dims = c.dims.clone();
                for a in at {
                    let a =
                        usize::try_from(a).ok().filter(|&a| a <= dims.len()).ok_or("axis out of range")?;
                    dims.insert(a, 1);
                }
                dims
            }
            "Squeeze" => {
                let axes = self.axes(n, 1, c.dims.len() as i64)?;
                let keep = |(i, &d): &(usize, &usize)| {
                    if axes.is_empty() {
                        d != 1
                    } else {
                        !axes.contains(&(*i as i64))
                    }
                };
                c.dims.iter().enumerate().filter(keep).map(|(_, &d)| d).collect()
            }
            "Reshape" => {
                let t = self
                    .const_in(n, 1)?
                    .ok_or("has no constant target shape")?
                    .i64s()
                    .ok_or("non-integer shape")?;
                let known: i64 = t
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| {
                        if d == 0 {
                            c.dims.get(i).map_or(1, |&v| v as i64)
                        } else if d < 0 {
                            1
                        } else {
                            d
                        }
                    })
                    .product();
                t.iter()
                    .enumerate()
                    .map(|(i, &d)| match d {
                        0 => c.dims.get(i).copied().unwrap_or(1),
                        -1 if known > 0 => c.len() / known as usize,
                        d => d.max(0) as usize,
                    })
                    .collect()
            }
            _ => c.dims.clone(),
        };
        if dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(c.len()) {
            return Err(format!("{} of a constant of shape {:?} to {dims:?}", n.op_type, c.dims));
        }
        self.set(n, Val::Const(Const { dims, values: c.values }))
    }

    /// The shape of a computed value as an integer constant, its batch size a symbol.
    fn shape_of(&mut self, n: &NodeProto) -> Step<()> {
        let x = self.node_in(n, 0)?;
        let mut dims = vec![BATCH];
        match self.shapes[x] {
            Shape::Map(c, h, w) => dims.extend([c as i64, h as i64, w as i64]),
            Shape::Flat(f) => dims.push(f as i64),
        }
        let rank = dims.len() as i64;
        let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
        let (start, end) = (clamp(int(n, "start", 0)), clamp(int(n, "end", rank)));
        let dims = dims.get(start..end.max(start)).unwrap_or_default().to_vec();
        let len = dims.len();
        self.set(n, Val::Const(Const { dims: vec![len], values: super::tensor::Values::I64(dims) }))
    }

    /// Gather along axis 0 of a 1-D integer constant (shape arithmetic).
    fn gather(&mut self, n: &NodeProto) -> Step<()> {
        let data = self.const_in(n, 0)?.ok_or("is only supported on constants")?;
        let idx = self.const_in(n, 1)?.ok_or("has no constant indices")?;
        if data.dims.len() != 1 || int(n, "axis", 0) != 0 {
            return Err("only Gather along axis 0 of a 1-D constant (shape arithmetic) is supported".into());
        }
        let v = data.i64s().ok_or("Gather of a non-integer constant")?;
        let mut out = Vec::new();
        for i in idx.i64s().ok_or("non-integer indices")? {
            let j = if i < 0 { i + v.len() as i64 } else { i };
            out.push(
                *usize::try_from(j).ok().and_then(|j| v.get(j)).ok_or(format!("index {i} out of range"))?,
            );
        }
        let dims = if idx.dims.is_empty() { vec![] } else { vec![out.len()] };
        self.set(n, Val::Const(Const { dims, values: super::tensor::Values::I64(out) }))
    }

    fn gemm(&mut self, n: &NodeProto) -> Step<()> {
        let a = self.node_in(n, 0)?;
        let b = self.const_in(n, 1)?.ok_or("has no constant B")?;
        if int(n, "transA", 0) != 0 {
            return Err("transA = 1 is not supported".into());
        }
        let &[r, c] = b.dims.as_slice() else { return Err(format!("B of shape {:?}", b.dims)) };
        if r == 0 || c == 0 {
            return Err(format!("B of shape {:?} is empty", b.dims));
        }
        let alpha = float(n, "alpha", 1.0);
        let trans_b = int(n, "transB", 0) != 0;
        let (out, inp) = if trans_b { (r, c) } else { (c, r) };
        let bv = b.f32s();
        // Weight [out, in]: B as stored with transB, Bᵀ without; alpha folded in.
        let weight: Vec<f32> = (0..out * inp)
            .map(|k| {
                let (o, i) = (k / inp, k % inp);
                alpha * if trans_b { bv[o * inp + i] } else { bv[i * out + o] }
            })
            .collect();
        let bias = match self.const_in(n, 2)? {
            None => None,
            Some(cb) => {
                let beta = float(n, "beta", 1.0);
                let v = cb.f32s();
                let v = match v.len() {
                    1 => vec![v[0]; out],
                    l if l == out => v,
                    l => return Err(format!("C of {l} values for {out} outputs")),
                };
                Some(tensor(v.iter().map(|x| beta * x).collect(), &[out])?)
            }
        };
        let op = Op::Linear(Linear { weight: tensor(weight, &[out, inp])?, bias });
        let id = self.push(n, op, &[a], "")?;
        self.set(n, Val::Node(id))
    }

    fn matmul(&mut self, n: &NodeProto) -> Step<()> {
        let (a, last) = self.view_in(n, 0)?;
        let b = self.const_in(n, 1)?.ok_or("has no constant second input")?;
        let &[inp, out] = b.dims.as_slice() else { return Err(format!("B of shape {:?}", b.dims)) };
        if inp == 0 || out == 0 {
            return Err(format!("B of shape {:?} is empty", b.dims));
        }
        let bv = b.f32s();
        let weight: Vec<f32> = (0..out * inp).map(|k| bv[(k % inp) * out + k / inp]).collect();
        if last {
            // On the channels at each position: a 1×1 convolution.
            let weight = tensor(weight, &[out, inp, 1, 1])?;
            let conv =
                Conv { weight, bias: None, stride: [1; 2], padding: [0; 4], dilation: [1; 2], groups: 1 };
            let id = self.push(n, Op::Conv(conv), &[a], "")?;
            return self.set(n, Val::Last(id));
        }
        let op = Op::Linear(Linear { weight: tensor(weight, &[out, inp])?, bias: None });
        let id = self.push(n, op, &[a], "")?;
        self.set(n, Val::Node(id))
    }

    /// Add, Sub, Mul, Div, Sum: of two computed values (Add/Sum: a residual sum), or of a
    /// computed value and a per-channel constant (an affine node, or a linear layer's bias).
    fn arith(&mut self, n: &NodeProto) -> Step<()> {
        let op = n.op_type.as_str();
        let (a, b) = (self.val(n, 0)?.cloned(), self.val(n, 1)?.cloned());
        // Both computed values in one layout (channels-first, or both channels-last views).
        let (ca, cb) = (a.as_ref().and_then(Val::computed), b.as_ref().and_then(Val::computed));
        if let (Some((_, la)), Some((_, lb))) = (ca, cb) {
            if la != lb {
                return Err(format!(
                    "{op} of a channels-last view and a channels-first value is not supported"
                ));
            }
        }
        match (ca, cb, a, b) {
            (Some((x, last)), None, _, None) if op == "Sum" => self.set(n, view(x, last)),
            (Some((x, last)), Some((y, _)), ..) if (op == "Add" || op == "Sum") && n.inputs.len() == 2 => {
                let id = self.push(n, Op::Add(Add), &[x, y], "")?;
                self.set(n, view(id, last))
            }
            // Squeeze-and-excitation's gating (x ⊙ gate, a [N,C,1,1] gate broadcast), or a
            // product of two maps of one shape.
            (Some((x, last)), Some((y, _)), ..) if op == "Mul" => {
                let id = self.push(n, Op::Mul(Mul), &[x, y], "")?;
                self.set(n, view(id, last))
            }
            (Some((x, last)), None, _, Some(Val::Const(c))) => self.affine(n, (x, last), &c, false),
            (None, Some((x, last)), Some(Val::Const(c)), _) => self.affine(n, (x, last), &c, true),
            (None, None, Some(Val::Const(a)), Some(Val::Const(b))) => self.fold_constants(n, &a, &b),
            _ => {
                Err(format!("{op} of these inputs is not supported (two computed values: Add and Mul only)"))
            }
        }
    }

    /// x ∘ c (or c ∘ x when `const_first`) as y = x·scale + shift per channel; `x` may be a
    /// channels-last view (then c broadcasts over its last axis).
    fn affine(&mut self, n: &NodeProto, (x, last): (NodeId, bool), c: &Const, const_first: bool) -> Step<()> {
        let v = if last { per_channel_last(c, self.shapes[x])? } else { per_channel(c, self.shapes[x])? };
        let ones = vec![1.0f32; v.len()];
        let zeros = vec![0.0f32; v.len()];
        let (scale, shift) = match (n.op_type.as_str(), const_first) {
            ("Add" | "Sum", _) => (ones, v),
            ("Sub", false) => (ones, v.iter().map(|s| -s).collect()),
            ("Sub", true) => (vec![-1.0; v.len()], v),
            ("Mul", _) => (v, zeros),
            ("Div", false) if v.iter().all(|&d| d != 0.0) => (v.iter().map(|d| 1.0 / d).collect(), zeros),
            (op, _) => return Err(format!("{op} with these constants is not supported")),
        };
        // Absorbed by the layer it reads when nothing else reads that layer: a bias after
        // MatMul (or a bias-free Gemm or convolution) becomes the layer's bias, a per-channel
        // affine after a layer norm its γ and β.
        if self.sole_reader_of(n, usize::from(const_first), x) {
            let shift_only = scale.iter().all(|&s| s == 1.0);
            let len = shift.len();
            let absorbed = match self.builder.op_mut(x) {
                Some(
                    Op::Linear(Linear { bias: bias @ None, .. }) | Op::Conv(Conv { bias: bias @ None, .. }),
                ) if shift_only => {
                    *bias = Some(tensor(shift.clone(), &[len])?);
                    true
                }
                Some(Op::LayerNorm(l)) => {
                    for ((g, b), (s, t)) in l.weight.iter_mut().zip(&mut l.bias).zip(scale.iter().zip(&shift))
                    {
                        (*g, *b) = (*g * s, *b * s + t);
                    }
                    true
                }
                _ => false,
            };
            if absorbed {
                return self.set(n, view(x, last));
            }
        }
        let id = self.push(n, Op::Affine(Affine { scale, shift }), &[x], "")?;
        self.set(n, view(id, last))
    }

    /// Two constants of one shape (or one a scalar), combined elementwise.
    fn fold_constants(&mut self, n: &NodeProto, a: &Const, b: &Const) -> Step<()> {
        let (av, bv) = (a.f32s(), b.f32s());
        if !(av.len() == bv.len() || av.len() == 1 || bv.len() == 1) {
            return Err(format!("{} of constants of shapes {:?} and {:?}", n.op_type, a.dims, b.dims));
        }
        // The result has the shape of the operand that is not a one-value broadcast: an empty
        // constant with a scalar gives an empty constant (not the scalar's one value).
        let (dims, len) = if bv.len() == 1 { (a.dims.clone(), av.len()) } else { (b.dims.clone(), bv.len()) };
        if let (super::tensor::Values::I64(ai), super::tensor::Values::I64(bi)) = (&a.values, &b.values) {
            // Shape arithmetic on integers, as ONNX computes it (Div truncates); the batch
            // symbol stays a symbol.
            let at = |v: &[i64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
            let mut values = Vec::with_capacity(len);
            for i in 0..len {
                let (x, y) = (at(ai, i), at(bi, i));
                values.push(if x == BATCH || y == BATCH {
                    BATCH
                } else {
                    match n.op_type.as_str() {
                        "Sub" => x.checked_sub(y),
                        "Mul" => x.checked_mul(y),
                        "Div" => x.checked_div(y),
                        _ => x.checked_add(y),
                    }
                    .ok_or_else(|| format!("{} of {x} and {y} overflows or divides by zero", n.op_type))?
                });
            }
            return self.set(n, Val::Const(Const { dims, values: super::tensor::Values::I64(values) }));
        }
        let at = |v: &[f32], i: usize| if v.len() == 1 { v[0] } else { v[i] };
        let f = |x: f32, y: f32| match n.op_type.as_str() {
            "Sub" => x - y,
            "Mul" => x * y,
            "Div" => x / y,
            _ => x + y,
        };
        let values = (0..len).map(|i| f(at(&av, i), at(&bv, i))).collect();
        self.set(n, Val::Const(Const { dims, values: super::tensor::Values::F32(values) }))
    }

    fn concat(&mut self, n: &NodeProto) -> Step<()> {
        if let Some(Val::Const(_)) = self.val(n, 0)? {
            // Shape arithmetic: 1-D integer constants joined end to end.
            let mut out = Vec::new();
            for i in 0..n.inputs.len() {
                let c = self.const_in(n, i)?.ok_or("input missing")?;
                out.extend(c.i64s().ok_or("Concat of non-integer constants")?);
            }
            let len = out.len();
            return self
                .set(n, Val::Const(Const { dims: vec![len], values: super::tensor::Values::I64(out) }));
        }
        let mut ins = Vec::new();
        for i in 0..n.inputs.len() {
            ins.push(self.node_in(n, i)?);
        }
        let axis = int(n, "axis", i64::MIN);
        if !(axis == 1 || axis == -3) {
            return Err(format!("axis {axis}: only concatenation along channels (axis = 1) is supported"));
        }
        let id = self.push(n, Op::Concat(Concat), &ins, "")?;
        self.set(n, Val::Node(id))
    }

    fn identity(&mut self, n: &NodeProto) -> Step<()> {
        let v = self.val(n, 0)?.cloned().ok_or("input 0 is missing")?;
        self.set(n, v)
    }

    fn constant_node(&mut self, n: &NodeProto) -> Step<()> {
        use super::tensor::Values;
        let a = n.attributes.first().ok_or("has no value attribute")?;
        let c = match a.name.as_str() {
            "value" => decode(a.t.as_ref().ok_or("`value` holds no tensor")?)?,
            "value_float" => Const { dims: vec![], values: Values::F32(vec![a.f.unwrap_or(0.0)]) },
            "value_floats" => Const { dims: vec![a.floats.len()], values: Values::F32(a.floats.clone()) },
            "value_int" => Const { dims: vec![], values: Values::I64(vec![a.i.unwrap_or(0)]) },
            "value_ints" => Const { dims: vec![a.ints.len()], values: Values::I64(a.ints.clone()) },
            other => return Err(format!("attribute `{other}` is not supported")),
        };
        self.set(n, Val::Const(c))
    }

    /// A softmax that gives the graph's output is dropped: maps explain the logits.
    fn softmax(&mut self, n: &NodeProto) -> Step<()> {
        if n.outputs.first() != Some(&self.output) {
            return Err("a softmax is supported only as the graph's final node (it is dropped)".into());
        }
        let x = self.node_in(n, 0)?;
        // Only a softmax over the class axis (1 of [N, K] or [N, K, 1, 1]) leaves the arg-max
        // and the ranking of the logits as they are; the default axis is 1 before opset 13 and
        // −1 since.
        let rank = match self.shapes[x] {
            Shape::Map(..) => 4,
            Shape::Flat(_) => 2,
        };
        let axis = int(n, "axis", if self.opset < 13 { 1 } else { -1 });
        if (if axis < 0 { axis + rank } else { axis }) != 1 {
            return Err(format!(
                "a final {} over axis {axis} of a rank-{rank} output is not over the classes (axis 1); \
                 only a class softmax can be dropped",
                n.op_type
            ));
        }
        self.notices.push(format!(
            "dropped the final {} `{}`: maps and attacks use the logits before it",
            n.op_type,
            if n.name.is_empty() { &self.output } else { &n.name }
        ));
        self.set(n, Val::Node(x))
    }
}

/// The supported op names, sorted.
pub fn sorted_ops() -> Vec<&'static str> {
    let mut v = SUPPORTED_OPS.to_vec();
    v.sort_unstable();
    v
}

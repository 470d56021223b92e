//! ONNX nodes mapped onto the layer graph's ops.
//!
//! Walks the file's nodes in order (the standard requires a topological order) and keeps,
//! for every ONNX value name, either the graph node that computes it, the constant it holds,
//! or a view of a graph node ([`Val`]). Each op file maps its own ONNX ops
//! ([`crate::model::ops::import`]: Conv and Pad in conv.rs, BatchNormalization in
//! batch_norm.rs, Gemm and MatMul in linear.rs, each nonlinearity in its file under
//! [`crate::model::nonlinearity`], ...), reading the node through [`OnnxNode`] and building
//! through [`Import`], which the importer implements here. What stays here is what no op
//! owns: the value bookkeeping (names, single definition, who reads what), the views (a
//! Transpose of a feature map to channels-last and back, ConvNeXt; the steps of a channel
//! shuffle, ShuffleNet; Reshape and Squeeze to [N, F]), shape arithmetic on constants (Shape,
//! Gather, Unsqueeze, Concat and Add/Sub/Mul/Div of constants), the choice among the ops an
//! Add, Mul or Concat becomes, and the ops that only rename a value (Identity, Dropout, Cast,
//! a final Softmax). Shapes are inferred node by node at the import size, so that a node that
//! does not fit is named by its ONNX name.

use super::proto::{Attribute, GraphProto, NodeProto};
use super::tensor::decode;
use crate::model::graph::{infer, GraphBuilder, NodeId, Nonlinearity, Op, Shape};
use crate::model::mapping::{
    self, view, Const, OnnxNode, Step, Val, Values, BATCH, LAST_ONLY, PAD_ONLY_BEFORE_CONV, SHUFFLE_ONLY,
};
use crate::model::ops::{self, add, affine, channels, concat, flatten, mul, Import};
use std::collections::HashMap;

/// How the importer maps one of its own ops.
type Own = fn(&mut Cx) -> Step<()>;

/// The ops the importer maps itself (the rest are the op files', [`ops::onnx_ops`]). Erf
/// (refused with an explanation: it is supported fused into GELU) and the fused SiLU (not an
/// ONNX op) are not listed.
const OWN_OPS: [(&str, Own); 18] = [
    ("Add", |cx| cx.arith()),
    ("Sub", |cx| cx.arith()),
    ("Mul", |cx| cx.arith()),
    ("Div", |cx| cx.arith()),
    ("Sum", |cx| cx.arith()),
    ("Concat", |cx| cx.concat()),
    ("Reshape", |cx| cx.reshape()),
    ("Squeeze", |cx| cx.reshape()),
    ("Unsqueeze", |cx| cx.constant_only()),
    ("Transpose", |cx| cx.transpose()),
    ("Shape", |cx| cx.shape_of()),
    ("Gather", |cx| cx.gather()),
    ("Constant", |cx| cx.constant_node()),
    ("Identity", |cx| cx.identity()),
    ("Dropout", |cx| cx.identity()),
    ("Cast", |cx| cx.cast()),
    ("Softmax", |cx| cx.softmax()),
    ("LogSoftmax", |cx| cx.softmax()),
];

/// The ONNX ops the importer maps (standard domain, opsets 9 to 21), sorted.
pub fn supported_ops() -> Vec<&'static str> {
    let mut v: Vec<&str> = mapping::names(&[&OWN_OPS]).chain(ops::onnx_ops()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

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

    /// Imports one node.
    pub(super) fn node(&mut self, n: &NodeProto) -> Step<()> {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(format!("domain `{}` is not supported (standard ONNX ops only)", n.domain));
        }
        Cx { im: self, n }.dispatch()
    }
}

/// The importer at one node: what an op's mapping drives ([`OnnxNode`], [`Import`]).
struct Cx<'a> {
    im: &'a mut Importer,
    n: &'a NodeProto,
}

impl Cx<'_> {
    fn attr(&self, name: &str) -> Option<&Attribute> {
        self.n.attributes.iter().find(|a| a.name == name)
    }

    /// The importer's own ops, then the op files' and the nonlinearities'.
    fn dispatch(&mut self) -> Step<()> {
        let op = self.n.op_type.as_str();
        if let Some(own) = mapping::find(&[&OWN_OPS], op) {
            return own(self);
        }
        match op {
            "Erf" => Err("Erf is supported only inside exact GELU, x·(1 + erf(x/√2))/2 as PyTorch \
                          exports it before opset 20"
                .into()),
            super::fuse::SILU => ops::act(self, Nonlinearity::Silu),
            _ => ops::import(self).unwrap_or_else(|| {
                Err(format!("unsupported op (supported: {})", supported_ops().join(", ")))
            }),
        }
    }

    /// A float Cast of a computed value is the value; a Cast of a constant keeps its values.
    fn cast(&mut self) -> Step<()> {
        match (self.val(0)?, self.int("to", 1)) {
            (Some(Val::Node(_)), 1) => self.identity(),
            (Some(Val::Node(_)), to) => Err(format!("Cast of the image's values to type {to} (float only)")),
            _ => self.constant_only(),
        }
    }
}

impl OnnxNode for Cx<'_> {
    fn op_type(&self) -> &str {
        &self.n.op_type
    }

    fn inputs(&self) -> &[String] {
        &self.n.inputs
    }

    fn outputs(&self) -> &[String] {
        &self.n.outputs
    }

    fn int_attr(&self, name: &str) -> Option<i64> {
        self.attr(name).and_then(|a| a.i)
    }

    fn float_attr(&self, name: &str) -> Option<f32> {
        self.attr(name).and_then(|a| a.f)
    }

    fn string_attr(&self, name: &str) -> Option<String> {
        self.attr(name).and_then(|a| a.s.as_ref()).map(|s| String::from_utf8_lossy(s).into_owned())
    }

    fn ints_attr(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    fn val(&self, i: usize) -> Step<Option<&Val>> {
        match self.n.inputs.get(i).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(name) => self
                .im
                .values
                .get(name)
                .map(Some)
                .ok_or_else(|| format!("reads `{name}`, which no earlier node writes")),
        }
    }

    fn shape(&self, id: usize) -> Shape {
        self.im.shapes[id]
    }

    fn fixed_batch(&self) -> Option<i64> {
        self.im.batch
    }

    fn sole_reader_of(&self, i: usize, id: usize) -> bool {
        let Some(name) = self.n.inputs.get(i) else { return false };
        self.im.written.get(&id) == Some(name) && self.im.uses.get(name) == Some(&1)
    }
}

impl Import for Cx<'_> {
    fn push(&mut self, op: Op, inputs: &[usize], suffix: &str) -> Step<usize> {
        let n = self.n;
        let base =
            if n.name.is_empty() { n.outputs.first().cloned().unwrap_or_default() } else { n.name.clone() };
        let mut name = format!("{base}{suffix}");
        let mut k = 1;
        while name.is_empty() || self.im.builder.has_name(&name) {
            name = format!("{base}{suffix}#{k}");
            k += 1;
        }
        let ins: Vec<Shape> = inputs.iter().map(|&i| self.im.shapes[i]).collect();
        let shape = infer(&op, &ins, self.im.input)?;
        let id = self.im.builder.push(name, op, inputs);
        self.im.shapes.push(shape);
        Ok(id)
    }

    fn op_mut(&mut self, id: usize) -> Option<&mut Op> {
        self.im.builder.op_mut(id)
    }

    /// SSA: every value name is defined once (onnxruntime refuses a redefinition, which would
    /// silently rebind what later nodes, or the graph output, read).
    fn check_outputs(&self) -> Step<()> {
        let outs = &self.n.outputs;
        for (i, o) in outs.iter().enumerate().filter(|(_, o)| !o.is_empty()) {
            if self.im.values.contains_key(o) || outs[..i].contains(o) {
                return Err(format!("redefines the value `{o}` (each value name may be defined once)"));
            }
        }
        Ok(())
    }

    /// Binds output `i` to `val`, naming a node output by its value name too (and by the
    /// node's name, when free).
    fn bind(&mut self, i: usize, val: Val) {
        let (n, out) = (self.n, self.n.outputs[i].clone());
        if let Val::Node(id) | Val::Last(id) = val {
            for name in [&n.name, &out] {
                if !name.is_empty() && !self.im.builder.has_name(name) {
                    self.im.builder.alias(name.clone(), id);
                }
            }
            self.im.written.insert(id, out.clone());
        }
        self.im.values.insert(out, val);
    }

    fn set(&mut self, val: Val) -> Step<()> {
        self.check_outputs()?;
        for extra in self.n.outputs.iter().skip(1).filter(|o| !o.is_empty()) {
            if self.im.uses.contains_key(extra) {
                return Err(format!("its output `{extra}` is read, but only the first output is supported"));
            }
        }
        if self.n.outputs.first().is_none_or(|o| o.is_empty()) {
            return Err("has no output".into());
        }
        self.bind(0, val);
        Ok(())
    }
}

/// The views, shape arithmetic and value-renaming ops (see the module docs).
impl Cx<'_> {
    /// The Transposes of a channels-last input, of a channel shuffle, and to and from a
    /// channels-last view of a feature map.
    fn transpose(&mut self) -> Step<()> {
        let perm = self.ints_attr("perm").unwrap_or_default();
        match (self.val(0)?.cloned(), perm.as_slice()) {
            (Some(Val::Node(0)), _) if self.im.nhwc => self.identity(),
            (Some(Val::Grouped(x, g)), [0, 2, 1, 3, 4]) => self.set(Val::Swapped(x, g)),
            (Some(Val::Node(x)), [0, 2, 3, 1]) if matches!(self.shape(x), Shape::Map(..)) => {
                self.set(Val::Last(x))
            }
            (Some(Val::Last(x)), [0, 3, 1, 2]) => self.set(Val::Node(x)),
            _ => Err(format!(
                "Transpose with perm {perm:?}: only the channels-last input's Transpose to channels-first, \
                 a channel shuffle's [0, 2, 1, 3, 4], and a feature map's [0, 2, 3, 1] to channels-last \
                 and [0, 3, 1, 2] back are supported"
            )),
        }
    }

    /// Reshape and Squeeze: only the forms that flatten a map to [N, F] (or leave the shape
    /// as it is). A leading −1 / 0 / the fixed batch size is the batch axis.
    fn reshape(&mut self) -> Step<()> {
        let x = match self.val(0)? {
            Some(Val::Node(id)) => *id,
            Some(Val::Const(_)) => return self.constant_only(),
            Some(Val::Padded(..)) => return Err(PAD_ONLY_BEFORE_CONV.into()),
            Some(Val::Swapped(x, g)) if self.n.op_type == "Reshape" => {
                let (x, g) = (*x, *g);
                return channels::unshuffle(self, x, g);
            }
            Some(Val::Grouped(..) | Val::Swapped(..)) => return Err(SHUFFLE_ONLY.into()),
            Some(Val::Last(_)) => return Err(LAST_ONLY.into()),
            None => return Err("input 0 is missing".into()),
        };
        let shape = self.shape(x);
        let dims: Vec<usize> = match shape {
            Shape::Map(c, h, w) => vec![c, h, w],
            Shape::Flat(f) => vec![f],
        };
        if self.n.op_type == "Squeeze" {
            let mut axes = self.axes(1, dims.len() as i64 + 1)?;
            axes.sort_unstable();
            return match shape {
                Shape::Map(_, 1, 1) if axes.is_empty() || axes == [2, 3] => flatten::flat(self, x),
                Shape::Flat(_) if axes.is_empty() => flatten::flat(self, x),
                _ => Err(format!("Squeeze of axes {axes:?} of a {shape} input is not supported")),
            };
        }
        let target =
            self.const_in(1)?.ok_or("has no constant target shape")?.i64s().ok_or("non-integer shape")?;
        let len = shape.len() as i64;
        let batch_ok = |d: i64| d == 0 || d == -1 || d == BATCH || Some(d) == self.im.batch || d == 1;
        let copy = |i: usize, d: i64| if d == 0 { dims.get(i - 1).map(|&v| v as i64) } else { Some(d) };
        match target.as_slice() {
            &[b, f] if batch_ok(b) && (copy(1, f) == Some(len) || (f == -1 && b != -1)) => {
                flatten::flat(self, x)
            }
            t if t.len() == dims.len() + 1
                && batch_ok(t[0])
                && t.iter().enumerate().skip(1).all(|(i, &d)| copy(i, d) == Some(dims[i - 1] as i64)) =>
            {
                self.set(Val::Node(x))
            }
            // A channel shuffle's first step: [N, C, H, W] viewed as [N, g, C/g, H, W].
            &[b, g, cg, h, w]
                if batch_ok(b)
                    && g > 0
                    && matches!(shape, Shape::Map(c, hh, ww)
                        if (h, w) == (hh as i64, ww as i64) && (cg == -1 || g * cg == c as i64) && c as i64 % g == 0) =>
            {
                self.set(Val::Grouped(x, g as usize))
            }
            t => Err(format!(
                "Reshape of a {shape} input to {t:?}: only flattening to [N, F] and a channel shuffle's \
                 [N, g, C/g, H, W] are supported"
            )),
        }
    }

    /// Shape ops on constants (what an exporter left of shape arithmetic): the values keep
    /// their order, the dimensions change.
    fn constant_only(&mut self) -> Step<()> {
        let Some(Val::Const(c)) = self.val(0)?.cloned() else {
            return Err("is only supported on constants".into());
        };
        let dims = match self.n.op_type.as_str() {
            "Unsqueeze" => {
                // The output's rank counts the new axes: read them as given, then resolve.
                let axes = self.axes(1, 0)?;
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
                let axes = self.axes(1, c.dims.len() as i64)?;
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
                    .const_in(1)?
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
            return Err(format!("{} of a constant of shape {:?} to {dims:?}", self.n.op_type, c.dims));
        }
        self.set(Val::Const(Const { dims, values: c.values }))
    }

    /// The shape of a computed value as an integer constant, its batch size a symbol.
    fn shape_of(&mut self) -> Step<()> {
        let x = self.node_in(0)?;
        let mut dims = vec![BATCH];
        match self.shape(x) {
            Shape::Map(c, h, w) => dims.extend([c as i64, h as i64, w as i64]),
            Shape::Flat(f) => dims.push(f as i64),
        }
        let rank = dims.len() as i64;
        let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
        let (start, end) = (clamp(self.int("start", 0)), clamp(self.int("end", rank)));
        let dims = dims.get(start..end.max(start)).unwrap_or_default().to_vec();
        let len = dims.len();
        self.set(Val::Const(Const { dims: vec![len], values: Values::I64(dims) }))
    }

    /// Gather along axis 0 of a 1-D integer constant (shape arithmetic).
    fn gather(&mut self) -> Step<()> {
        let data = self.const_in(0)?.ok_or("is only supported on constants")?;
        let idx = self.const_in(1)?.ok_or("has no constant indices")?;
        if data.dims.len() != 1 || self.int("axis", 0) != 0 {
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
        self.set(Val::Const(Const { dims, values: Values::I64(out) }))
    }

    /// Add, Sub, Mul, Div, Sum: of two computed values (Add/Sum: a residual sum), or of a
    /// computed value and a per-channel constant (an affine node, or a linear layer's bias).
    fn arith(&mut self) -> Step<()> {
        let op = self.n.op_type.as_str();
        let (a, b) = (self.val(0)?.cloned(), self.val(1)?.cloned());
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
            (Some((x, last)), None, _, None) if op == "Sum" => self.set(view(x, last)),
            (Some((x, last)), Some((y, _)), ..)
                if (op == "Add" || op == "Sum") && self.n.inputs.len() == 2 =>
            {
                add::onnx(self, x, y, last)
            }
            (Some((x, last)), Some((y, _)), ..) if op == "Mul" => mul::onnx(self, x, y, last),
            (Some((x, last)), None, _, Some(Val::Const(c))) => affine::onnx(self, (x, last), &c, false),
            (None, Some((x, last)), Some(Val::Const(c)), _) => affine::onnx(self, (x, last), &c, true),
            (None, None, Some(Val::Const(a)), Some(Val::Const(b))) => self.fold_constants(&a, &b),
            _ => {
                Err(format!("{op} of these inputs is not supported (two computed values: Add and Mul only)"))
            }
        }
    }

    /// Two constants of one shape (or one a scalar), combined elementwise.
    fn fold_constants(&mut self, a: &Const, b: &Const) -> Step<()> {
        let (av, bv) = (a.f32s(), b.f32s());
        if !(av.len() == bv.len() || av.len() == 1 || bv.len() == 1) {
            return Err(format!("{} of constants of shapes {:?} and {:?}", self.n.op_type, a.dims, b.dims));
        }
        // The result has the shape of the operand that is not a one-value broadcast: an empty
        // constant with a scalar gives an empty constant (not the scalar's one value).
        let (dims, len) = if bv.len() == 1 { (a.dims.clone(), av.len()) } else { (b.dims.clone(), bv.len()) };
        if let (Values::I64(ai), Values::I64(bi)) = (&a.values, &b.values) {
            // Shape arithmetic on integers, as ONNX computes it (Div truncates); the batch
            // symbol stays a symbol.
            let at = |v: &[i64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
            let mut values = Vec::with_capacity(len);
            for i in 0..len {
                let (x, y) = (at(ai, i), at(bi, i));
                values.push(if x == BATCH || y == BATCH {
                    BATCH
                } else {
                    match self.n.op_type.as_str() {
                        "Sub" => x.checked_sub(y),
                        "Mul" => x.checked_mul(y),
                        "Div" => x.checked_div(y),
                        _ => x.checked_add(y),
                    }
                    .ok_or_else(|| {
                        format!("{} of {x} and {y} overflows or divides by zero", self.n.op_type)
                    })?
                });
            }
            return self.set(Val::Const(Const { dims, values: Values::I64(values) }));
        }
        let at = |v: &[f32], i: usize| if v.len() == 1 { v[0] } else { v[i] };
        let f = |x: f32, y: f32| match self.n.op_type.as_str() {
            "Sub" => x - y,
            "Mul" => x * y,
            "Div" => x / y,
            _ => x + y,
        };
        let values = (0..len).map(|i| f(at(&av, i), at(&bv, i))).collect();
        self.set(Val::Const(Const { dims, values: Values::F32(values) }))
    }

    /// Concat: of 1-D integer constants (shape arithmetic) here, of feature maps in
    /// [`concat::onnx`].
    fn concat(&mut self) -> Step<()> {
        if let Some(Val::Const(_)) = self.val(0)? {
            // Shape arithmetic: 1-D integer constants joined end to end.
            let mut out = Vec::new();
            for i in 0..self.n.inputs.len() {
                let c = self.const_in(i)?.ok_or("input missing")?;
                out.extend(c.i64s().ok_or("Concat of non-integer constants")?);
            }
            let len = out.len();
            return self.set(Val::Const(Const { dims: vec![len], values: Values::I64(out) }));
        }
        concat::onnx(self)
    }

    /// Identity, Dropout (eval mode) and a float Cast of a computed value: the same value.
    fn identity(&mut self) -> Step<()> {
        let v = self.val(0)?.cloned().ok_or("input 0 is missing")?;
        self.set(v)
    }

    /// A Constant node's value.
    fn constant_node(&mut self) -> Step<()> {
        let a = self.n.attributes.first().ok_or("has no value attribute")?;
        let c = match a.name.as_str() {
            "value" => decode(a.t.as_ref().ok_or("`value` holds no tensor")?)?,
            "value_float" => Const { dims: vec![], values: Values::F32(vec![a.f.unwrap_or(0.0)]) },
            "value_floats" => Const { dims: vec![a.floats.len()], values: Values::F32(a.floats.clone()) },
            "value_int" => Const { dims: vec![], values: Values::I64(vec![a.i.unwrap_or(0)]) },
            "value_ints" => Const { dims: vec![a.ints.len()], values: Values::I64(a.ints.clone()) },
            other => return Err(format!("attribute `{other}` is not supported")),
        };
        self.set(Val::Const(c))
    }

    /// A softmax that gives the graph's output is dropped: maps explain the logits.
    fn softmax(&mut self) -> Step<()> {
        if self.n.outputs.first() != Some(&self.im.output) {
            return Err("a softmax is supported only as the graph's final node (it is dropped)".into());
        }
        let x = self.node_in(0)?;
        // Only a softmax over the class axis (1 of [N, K] or [N, K, 1, 1]) leaves the arg-max
        // and the ranking of the logits as they are; the default axis is 1 before opset 13 and
        // −1 since.
        let rank = match self.shape(x) {
            Shape::Map(..) => 4,
            Shape::Flat(_) => 2,
        };
        let axis = self.int("axis", if self.im.opset < 13 { 1 } else { -1 });
        if (if axis < 0 { axis + rank } else { axis }) != 1 {
            return Err(format!(
                "a final {} over axis {axis} of a rank-{rank} output is not over the classes (axis 1); \
                 only a class softmax can be dropped",
                self.n.op_type
            ));
        }
        self.im.notices.push(format!(
            "dropped the final {} `{}`: maps and attacks use the logits before it",
            self.n.op_type,
            if self.n.name.is_empty() { &self.im.output } else { &self.n.name }
        ));
        self.set(Val::Node(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node of `op` reading `x` (a 3×4×4 map), on a fresh importer.
    fn import_one(op: &str) -> Step<()> {
        let graph = GraphProto::default();
        let n = NodeProto {
            inputs: vec!["x".into()],
            outputs: vec!["y".into()],
            name: "n".into(),
            op_type: op.into(),
            ..NodeProto::default()
        };
        let mut im = Importer::new(&graph, std::slice::from_ref(&n), "x", (3, 4, 4), None, false);
        im.node(&n)
    }

    #[test]
    fn every_listed_op_reaches_its_mapping_and_no_other_does() {
        let listed = supported_ops();
        assert_eq!(listed.len(), 40, "{listed:?}");
        for op in &listed {
            // A bare node may lack what the op needs; it must never be called unsupported.
            if let Err(e) = import_one(op) {
                assert!(!e.starts_with("unsupported op"), "{op}: {e}");
            }
        }
        for op in ["Sin", "Erf", "Mish", "Resize", "Softplus"] {
            let e = import_one(op).unwrap_err();
            assert!(op == "Erf" || e.starts_with("unsupported op"), "{op}: {e}");
        }
        // Op types the op files map (a sample of each table) and the nonlinearities.
        for op in ["Conv", "Pad", "BatchNormalization", "Gemm", "ReduceMean", "Split", "Clip", "Gelu"] {
            assert!(listed.contains(&op), "{op}");
        }
        assert!(import_one("Relu").is_ok() && import_one("Sigmoid").is_ok());
    }
}

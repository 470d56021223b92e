//! What an op's ONNX mapping reads of the node being imported: its attributes, and its
//! inputs as the importer holds them (a graph node, a constant, or a view of a graph node).
//!
//! Each op maps its own ONNX nodes in its own file ([`super::ops`], one `ONNX` table per op
//! file; the nonlinearities in [`super::nonlinearity`]); the importer ([`super::onnx`]) keeps
//! the value bookkeeping and the shape arithmetic on constants, and dispatches every other
//! node to those tables. This module is the interface between the two and depends on
//! neither: [`OnnxNode`] is the read side (attributes, inputs, shapes), which the
//! nonlinearities need to read their parameters; [`super::ops::Import`] adds the graph
//! building.

use super::shape::Shape;
use candle_core::{Device, Tensor};

/// A mapping's result: an error message naming what does not fit (the importer prefixes the
/// node's name and op).
pub(crate) type Step<T> = std::result::Result<T, String>;

/// The batch size in shape arithmetic (`Shape` of a computed value): a symbol, carried through
/// Gather, Unsqueeze and Concat of constants into a Reshape, where it means "the batch".
pub(crate) const BATCH: i64 = i64::MIN;

/// A constant's values: floating point as f32, integers as i64.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// float, float16, bfloat16 or double elements.
    F32(Vec<f32>),
    /// int8/16/32/64 and uint8/16/32 elements.
    I64(Vec<i64>),
}

/// A decoded constant: dimensions and values (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Const {
    /// Dimensions (empty for a scalar).
    pub dims: Vec<usize>,
    /// The values.
    pub values: Values,
}

impl Const {
    /// The elements as f32 (integers converted).
    pub fn f32s(&self) -> Vec<f32> {
        match &self.values {
            Values::F32(v) => v.clone(),
            Values::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The elements as integers, or None for a floating-point tensor with a fractional value.
    pub fn i64s(&self) -> Option<Vec<i64>> {
        match &self.values {
            Values::I64(v) => Some(v.clone()),
            Values::F32(v) => v.iter().map(|&x| (x.fract() == 0.0).then_some(x as i64)).collect(),
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match &self.values {
            Values::F32(v) => v.len(),
            Values::I64(v) => v.len(),
        }
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One ONNX value during the import: a graph node's output (by node index), a constant, or a
/// view of a graph node that only certain ops may read.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Node(usize),
    Const(Const),
    /// A node's output zero-padded by a Pad (top, left, bottom, right) that the Conv reading
    /// it absorbs.
    Padded(usize, [usize; 4]),
    /// A feature map viewed as [N, g, C/g, H, W] (the first step of a channel shuffle).
    Grouped(usize, usize),
    /// That view with its two group axes swapped, [N, C/g, g, H, W] (the second step).
    Swapped(usize, usize),
    /// A feature map [N, C, H, W] viewed channels-last, [N, H, W, C] (a Transpose with perm
    /// [0, 2, 3, 1]): ConvNeXt's LayerNorm, its MatMuls on channels (1×1 convolutions), and
    /// elementwise ops keep the view until the Transpose back.
    Last(usize),
}

impl Val {
    /// A computed value that ops may read in its layout: the node and whether it is a
    /// channels-last view ([`view`]'s inverse); None for constants and the other views.
    pub(crate) fn computed(&self) -> Option<(usize, bool)> {
        match *self {
            Val::Node(x) => Some((x, false)),
            Val::Last(x) => Some((x, true)),
            _ => None,
        }
    }
}

/// A node's output in the layout it was read in.
pub(crate) fn view(id: usize, last: bool) -> Val {
    if last {
        Val::Last(id)
    } else {
        Val::Node(id)
    }
}

/// What reading a half-done channel shuffle anywhere else says.
pub(crate) const SHUFFLE_ONLY: &str = "reads a 5-D view of a feature map: only a channel shuffle (Reshape \
                                       to [N, g, C/g, H, W], Transpose [0, 2, 1, 3, 4], Reshape back) is \
                                       supported";

/// What reading a channels-last view anywhere else says.
pub(crate) const LAST_ONLY: &str = "reads a channels-last view of a feature map (Transpose [0, 2, 3, 1]): \
                                    only LayerNormalization over the last axis, MatMul by a constant, \
                                    elementwise ops and the Transpose [0, 3, 1, 2] back are supported there";

/// What reading a Pad's output anywhere but in a Conv says.
pub(crate) const PAD_ONLY_BEFORE_CONV: &str =
    "reads a Pad's output: a Pad is supported only right before a Conv";

/// The node being imported, as its mapping reads it.
pub(crate) trait OnnxNode {
    /// The op type (`Conv`).
    fn op_type(&self) -> &str;

    /// The input value names (empty for an omitted optional input).
    fn inputs(&self) -> &[String];

    /// The output value names.
    fn outputs(&self) -> &[String];

    /// An integer attribute.
    fn int_attr(&self, name: &str) -> Option<i64>;

    /// A float attribute.
    fn float_attr(&self, name: &str) -> Option<f32>;

    /// A string attribute.
    fn string_attr(&self, name: &str) -> Option<String>;

    /// A list-of-integers attribute.
    fn ints_attr(&self, name: &str) -> Option<Vec<i64>>;

    /// Input `i` as the importer holds it; None when omitted, an error when no earlier node
    /// writes it.
    fn val(&self, i: usize) -> Step<Option<&Val>>;

    /// The inferred shape of graph node `id`.
    fn shape(&self, id: usize) -> Shape;

    /// The file's declared batch size, when fixed (exports with a fixed batch reshape to it).
    fn fixed_batch(&self) -> Option<i64>;

    /// Whether graph node `id` wrote exactly the value this node reads as input `i`, and
    /// nothing else reads it: it may then absorb this node (a batch norm into a conv, a bias
    /// into a linear layer).
    fn sole_reader_of(&self, i: usize, id: usize) -> bool;

    /// [`OnnxNode::int_attr`] or `default`.
    fn int(&self, name: &str, default: i64) -> i64 {
        self.int_attr(name).unwrap_or(default)
    }

    /// [`OnnxNode::float_attr`] or `default`.
    fn float(&self, name: &str, default: f32) -> f32 {
        self.float_attr(name).unwrap_or(default)
    }

    /// [`OnnxNode::string_attr`] or `default`.
    fn string(&self, name: &str, default: &str) -> String {
        self.string_attr(name).unwrap_or_else(|| default.into())
    }

    /// Input `i` as a graph node (not a constant, not a view).
    fn node_in(&self, i: usize) -> Step<usize> {
        match self.val(i)? {
            Some(Val::Node(id)) => Ok(*id),
            Some(Val::Const(_)) => Err(format!("input {i} is a constant where a computed value is expected")),
            Some(Val::Padded(..)) => Err(PAD_ONLY_BEFORE_CONV.into()),
            Some(Val::Grouped(..) | Val::Swapped(..)) => Err(SHUFFLE_ONLY.into()),
            Some(Val::Last(_)) => Err(LAST_ONLY.into()),
            None => Err(format!("input {i} is missing")),
        }
    }

    /// A computed input that may be a channels-last view: the node and whether it is viewed so.
    fn view_in(&self, i: usize) -> Step<(usize, bool)> {
        match self.val(i)?.and_then(Val::computed) {
            Some(c) => Ok(c),
            None => Ok((self.node_in(i)?, false)),
        }
    }

    /// Input `i` as a constant (None when omitted); a computed value is refused.
    fn const_in(&self, i: usize) -> Step<Option<Const>> {
        match self.val(i)? {
            Some(Val::Const(c)) => Ok(Some(c.clone())),
            Some(_) => Err(format!(
                "input {i} (`{}`) is computed from the image; only constants are supported there",
                self.inputs()[i]
            )),
            None => Ok(None),
        }
    }

    /// An op's `axes`: the constant input `i` (newer opsets) or the attribute (older ones);
    /// empty when neither is given. Negative axes are counted from the end of `rank`.
    fn axes(&self, i: usize, rank: i64) -> Step<Vec<i64>> {
        let axes = match self.const_in(i)? {
            Some(c) => c.i64s().ok_or("non-integer axes")?,
            None => self.ints_attr("axes").unwrap_or_default(),
        };
        Ok(axes.iter().map(|&a| if a < 0 { a + rank } else { a }).collect())
    }

    /// Graph node `id`'s (C, H, W), or an error if it is a flat vector.
    fn map_hw(&self, id: usize) -> Step<(usize, usize, usize)> {
        match self.shape(id) {
            Shape::Map(c, h, w) => Ok((c, h, w)),
            s => Err(format!("needs a feature map, got a flat vector of {s}")),
        }
    }

    /// A two-element attribute (strides, dilations, kernel_shape) as usizes ≥ `min`.
    fn pair(&self, name: &str, default: [usize; 2], min: usize) -> Step<[usize; 2]> {
        let Some(v) = self.ints_attr(name) else { return Ok(default) };
        match v.as_slice() {
            &[r, c] if r >= min as i64 && c >= min as i64 => Ok([r as usize, c as usize]),
            v => Err(format!("attribute `{name}` = {v:?}: expected two values ≥ {min} (2-D only)")),
        }
    }

    /// The padding (top, left, bottom, right) of a conv or pool with effective kernel `k` and
    /// stride `s` on an input of `hw`: explicit `pads`, or `auto_pad`.
    fn padding(&self, k: [usize; 2], s: [usize; 2], hw: (usize, usize)) -> Step<[usize; 4]> {
        match self.string("auto_pad", "NOTSET").as_str() {
            "NOTSET" => match self.ints_attr("pads").as_deref() {
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
}

/// The entry for ONNX op type `op` in per-file tables of (op type, entry): the lookup of the op
/// files' mappings and of the nonlinearities.
pub(crate) fn find<T: Copy>(tables: &[&[(&'static str, T)]], op: &str) -> Option<T> {
    tables.iter().flat_map(|t| t.iter()).find(|(name, _)| *name == op).map(|&(_, entry)| entry)
}

/// Every op type of per-file tables like [`find`]'s.
pub(crate) fn names<T>(
    tables: &'static [&'static [(&'static str, T)]],
) -> impl Iterator<Item = &'static str> {
    tables.iter().flat_map(|t| t.iter().map(|&(name, _)| name))
}

/// A layer's parameter tensor; NaN or infinite values are refused (every map would be NaN).
pub(crate) fn tensor(values: Vec<f32>, dims: &[usize]) -> Step<Tensor> {
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(format!("its parameters hold {v} (NaN and infinite weights are refused)"));
    }
    Tensor::from_vec(values, dims, &Device::Cpu).map_err(|e| e.to_string())
}

/// `c` as one value per channel of a `channels`-wide input, if it broadcasts that way over
/// [N,C,H,W] (map) or [N,F] (flat): a scalar, [C,1,1] / [1,C,1,1] (maps) or [F] / [1,F] (flat).
pub(crate) fn per_channel(c: &Const, shape: Shape) -> Step<Vec<f32>> {
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
pub(crate) fn per_channel_last(c: &Const, shape: Shape) -> Step<Vec<f32>> {
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

//! The op table: every layer op of a [`super::graph::Graph`] in one file each, behind one
//! trait.
//!
//! A layer op ([`Layer`]) is everything a node does besides the input and the elementwise
//! nonlinearities ([`super::nonlinearity`], whose rules the passes apply themselves): its
//! shape inference, its forward pass, tangent (the linear part: the forward pass without the
//! bias, max-pools along their routes) and vector–Jacobian product on both executors (the
//! candle tensor path, [`super::tensor_exec`], which is also the CUDA path and the one
//! autograd sees; and the CPU kernels, [`super::cpu_exec`]), and its part in occlusion's
//! shortcut (which output rectangle a changed input rectangle reaches, and that rectangle's
//! values). The executors and the passes ([`super::sweep`]) only dispatch here; no op is
//! spelled out anywhere else. Each file also holds its cases of the layer test table
//! (`cases()`), which [`registry!`] requires: an op cannot be registered without being
//! tested (src/model/layer_tests.rs runs every case through parity, autograd and
//! finite-difference checks).
//!
//! Each file also maps the ONNX nodes that become its op (an `ONNX` table of op type and
//! mapping, listed in [`ONNX`] below; a mapping reads the node through [`Import`]); the
//! importer ([`super::onnx`]) keeps only the value bookkeeping, the views and the shape
//! arithmetic on constants, and asks [`import`] for everything else. An elementwise
//! nonlinearity's ONNX op names are in its own file under [`super::nonlinearity`].
//!
//! Adding an op: a file with its struct, `impl Layer`, its cases and its `ONNX` table; one
//! line in [`registry!`] below and one in [`ONNX`].
//!
//! Layouts: on the tensor path feature maps are [B,C,H,W] and flat vectors [B,F]; on the CPU
//! path one block of n images is channel-major, [C, n, H·W] (flat vectors [n, F]). A token
//! sequence [T, D] of a transformer (PyTorch's [N, T, D]) is the feature map Map(D, T, 1):
//! channels = features, rows = tokens, one column ([`super::shape::Shape`]); so it is
//! [B, D, T, 1] on the tensor path and [D, n, T] on the CPU, a linear layer on each token is
//! a 1×1 [`Conv`], the layer norm over features is [`LayerNorm`] and the residual sum [`Add`];
//! only the ops that mix tokens are new ([`Tokens`], [`ClassToken`], [`PositionEmbedding`],
//! [`SelectToken`], and attention: [`Scores`], [`Softmax`], [`Attend`]).

mod act;
mod adaptive_avg_pool;
pub(crate) mod add;
pub(crate) mod affine;
mod attend;
mod avg_pool;
mod batch_norm;
mod bilinear;
#[cfg(test)]
pub(crate) mod cases;
pub(crate) mod channels;
mod class_token;
pub(crate) mod concat;
mod conv;
pub(crate) mod flatten;
mod layer_norm;
mod linear;
mod max_pool;
pub(crate) mod mul;
mod pool;
mod position_embedding;
mod scores;
mod select_token;
mod softmax;
mod tokens;

pub use adaptive_avg_pool::AdaptiveAvgPool;
pub use add::Add;
pub use affine::Affine;
pub use attend::Attend;
pub use avg_pool::AvgPool;
pub use batch_norm::{fold_batch_norm, BatchNorm};
pub use channels::Channels;
pub use class_token::ClassToken;
pub use concat::Concat;
pub use conv::Conv;
pub use flatten::Flatten;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use max_pool::MaxPool;
pub use mul::Mul;
pub use pool::Window;
pub use position_embedding::PositionEmbedding;
pub use scores::Scores;
pub use select_token::SelectToken;
pub use softmax::Softmax;
pub use tokens::Tokens;

pub(crate) use act::map as act;

use super::kernels::Buf;
use super::mapping::{OnnxNode, Step, Val};
use super::nonlinearity::Nonlinearity;
use super::shape::Shape;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::any::Any;
use std::ops::Range;

/// Prepared data an op keeps per model or per input size (flattened weights, gather
/// tables), typed by the op that made it.
pub(crate) type Prepared = Box<dyn Any + Send + Sync>;

/// One layer op on both executors (see the module docs). `ins` are the op's inputs in node
/// order; the tangent of an op without bias or routes is its forward pass (the default).
pub(crate) trait Layer: std::fmt::Debug + Send + Sync {
    /// A short name of the op's kind, for listings and errors.
    fn kind(&self) -> &'static str;

    /// The output shape from the inputs' shapes, or what does not fit (the graph bounds the
    /// result's size).
    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String>;

    /// Parameter tensors by name (weight, then bias), in a fixed order.
    fn tensors(&self) -> Vec<(&'static str, &Tensor)> {
        Vec::new()
    }

    /// The same tensors, to replace them (moving a graph to a device or dtype).
    fn tensors_mut(&mut self) -> Vec<&mut Tensor> {
        Vec::new()
    }

    /// Parameters kept as plain values, by name (checked finite with the tensors).
    fn values(&self) -> Vec<(&'static str, &[f32])> {
        Vec::new()
    }

    /// How layer-wise relevance propagation passes the op ([`super::lrp`]): by default as its
    /// gradient, which conserves relevance for the ops that only route or copy values
    /// (max-pooling's winner takes all, flattening, channel selections, concatenation).
    fn relevance(&self) -> Relevance {
        Relevance::Gradient
    }

    /// Whether a max-pool: it routes by a rank and may run before a monotone nonlinearity
    /// (see [`super::sweep`]).
    fn routes(&self) -> bool {
        false
    }

    /// The output on the tensor path (with bias); a max-pool ranks windows by `rank` when
    /// given and returns its routes.
    fn tensor_forward(
        &self,
        cx: &mut TensorCx,
        ins: &[&Tensor],
        rank: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)>;

    /// The linear part applied to tangents `ins` (no bias; max-pools follow their routes; a
    /// nonlinear op linearised at its kept inputs).
    fn tensor_tangent(&self, cx: &mut TensorCx, ins: &[&Tensor], kept: &TensorKept) -> Result<Tensor> {
        let _ = kept;
        Ok(self.tensor_forward(cx, ins, None)?.0)
    }

    /// One gradient per input from the output's gradient `g`.
    fn tensor_vjp(&self, cx: &mut TensorCx, g: &Tensor, kept: &TensorKept) -> Result<Vec<Tensor>>;

    /// Whether the op is not linear in its inputs (a product of two of them): its forward
    /// pass keeps its inputs for the backward pass, and the second-order adjoint takes its
    /// [`Layer::tensor_second`] terms.
    fn nonlinear(&self) -> bool {
        false
    }

    /// A nonlinear op's second-order terms: with `g` the backward pass's gradient at its
    /// output and `lam` the adjoint sweep's tangents of its inputs, the gradient of
    /// ⟨vjp(g), lam⟩ with respect to each input (held g fixed); None where zero.
    fn tensor_second(
        &self,
        cx: &mut TensorCx,
        g: &Tensor,
        lam: &[&Tensor],
        kept: &TensorKept,
    ) -> Result<Vec<Option<Tensor>>> {
        let _ = (cx, g, kept);
        Ok(vec![None; lam.len()])
    }

    /// [`Layer::tensor_second`] on one block.
    fn cpu_second(&self, cx: &mut CpuCx, g: &Buf, lam: &[&Buf], kept: &CpuKept) -> Result<Vec<Option<Buf>>> {
        let _ = (cx, g, kept);
        Ok(vec![None; lam.len()])
    }

    /// The op's data for the CPU kernels, made once per model (flattened weights).
    fn cpu_weights(&self) -> Result<Option<Prepared>> {
        Ok(None)
    }

    /// The op's data for the CPU kernels at one input size (gather tables).
    fn cpu_plan(&self, ins: &[Shape], out: Shape) -> Result<Option<Prepared>> {
        let _ = (ins, out);
        Ok(None)
    }

    /// [`Layer::tensor_forward`] on one block.
    fn cpu_forward(
        &self,
        cx: &mut CpuCx,
        ins: &[&Buf],
        rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)>;

    /// [`Layer::tensor_tangent`] on one block.
    fn cpu_tangent(&self, cx: &mut CpuCx, ins: &[&Buf], kept: &CpuKept) -> Result<Buf> {
        let _ = kept;
        Ok(self.cpu_forward(cx, ins, None)?.0)
    }

    /// [`Layer::tensor_vjp`] on one block.
    fn cpu_vjp(&self, cx: &mut CpuCx, g: &Buf, kept: &CpuKept) -> Result<Vec<Buf>>;

    /// Occlusion: the rectangle of the output (of `out` rows × columns) that the changed
    /// rectangles of its inputs (`changed`, those inputs that changed) reach, or None when
    /// the op mixes all positions (then it and everything after it run whole).
    fn reach(&self, changed: &[&Rect], out: (usize, usize)) -> Option<Rect> {
        let _ = (changed, out);
        None
    }

    /// Occlusion: the output's values inside `r` (every channel) for one image (`cx.n` = 1),
    /// from the inputs' values `ins`, written into `out` (the rest of `out` is left as is).
    fn region(&self, cx: &mut CpuCx, ins: &[&[f32]], r: &Rect, out: &mut [f32]) -> Result<()> {
        let _ = (ins, r, out);
        Err(cx.error("has no occlusion region pass"))
    }
}

/// An op's part in layer-wise relevance propagation ([`Layer::relevance`]; the rules
/// themselves are in [`super::lrp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relevance {
    /// The vector–Jacobian product, unchanged.
    Gradient,
    /// Relevance passes unchanged to the first input of the output's shape, none to the
    /// others (zennit's `Pass`: batch norm, an affine map, layer norm; squeeze-and-excitation's
    /// product gives it all to the signal, none to the gate).
    Pass,
    /// zennit's `Norm`: each input's share in proportion to its contribution, xᵢ ⊙ Jᵀ(R /
    /// stab(y)) (residual sums, average pooling).
    Norm,
    /// A layer with weights: the composite's rule for convolutions.
    Convolution,
    /// A layer with weights: the composite's rule for dense layers.
    Dense,
}

/// What a node's forward pass kept for its backward and adjoint passes: a max-pool's routes
/// (`route`), a nonlinear op's inputs (`inputs`, empty for the others).
pub(crate) struct Kept<'k, B, R: ?Sized> {
    /// The routes of a max-pool.
    pub route: Option<&'k R>,
    /// The inputs of a nonlinear op.
    pub inputs: &'k [B],
}

/// [`Kept`] on the tensor path.
pub(crate) type TensorKept<'k> = Kept<'k, Tensor, Tensor>;
/// [`Kept`] on the CPU path.
pub(crate) type CpuKept<'k> = Kept<'k, Buf, [u32]>;

/// Generates [`Op`] and its dispatch from one list: the registry.
macro_rules! registry {
    ($( $(#[$doc:meta])* $variant:ident($module:ident::$ty:ident), )*) => {
        /// A layer: what a node computes from its inputs.
        #[derive(Debug, Clone)]
        pub enum Op {
            /// The image batch (node 0 only).
            Input,
            /// Elementwise nonlinearity of one input (map or flat).
            Act(Nonlinearity),
            $( $(#[$doc])* $variant($module::$ty), )*
        }

        impl Op {
            /// The layer op, for every node but the input and the nonlinearities.
            pub(crate) fn layer(&self) -> Option<&dyn Layer> {
                match self {
                    Op::Input | Op::Act(_) => None,
                    $( Op::$variant(op) => Some(op), )*
                }
            }

            /// [`Op::layer`], mutable.
            pub(crate) fn layer_mut(&mut self) -> Option<&mut dyn Layer> {
                match self {
                    Op::Input | Op::Act(_) => None,
                    $( Op::$variant(op) => Some(op), )*
                }
            }
        }

        /// Every registered op's layer test cases, by module.
        #[cfg(test)]
        pub(crate) fn layer_cases() -> Vec<(&'static str, Vec<cases::Case>)> {
            vec![$( (stringify!($module), $module::cases()), )*]
        }
    };
}

registry! {
    /// Convolution of one feature map.
    Conv(conv::Conv),
    /// Fully connected layer of one flat vector.
    Linear(linear::Linear),
    /// Max-pooling of one feature map; the gradient goes whole to each window's first maximum.
    MaxPool(max_pool::MaxPool),
    /// Average pooling of one feature map.
    AvgPool(avg_pool::AvgPool),
    /// Adaptive average pooling to a fixed output size ([1, 1] is global average pooling).
    AdaptiveAvgPool(adaptive_avg_pool::AdaptiveAvgPool),
    /// [B,C,H,W] → [B,C·H·W] in NCHW order.
    Flatten(flatten::Flatten),
    /// Elementwise sum of two inputs of one shape (residual connections).
    Add(add::Add),
    /// Concatenation of feature maps along channels.
    Concat(concat::Concat),
    /// Per-channel y = x·scale + shift (input normalisation, a batch norm after no conv).
    Affine(affine::Affine),
    /// The product of two activations, one possibly a [C,1,1] gate (squeeze-and-excitation).
    Mul(mul::Mul),
    /// A fixed selection of channels (ShuffleNet's channel shuffle and split).
    Channels(channels::Channels),
    /// Layer normalisation over the channels at each position (ConvNeXt, transformers).
    LayerNorm(layer_norm::LayerNorm),
    /// A feature map's positions as tokens, Map(C,H,W) → Map(C,H·W,1) (vision transformers).
    Tokens(tokens::Tokens),
    /// A learned class token prepended to the tokens, Map(D,T,1) → Map(D,T+1,1).
    ClassToken(class_token::ClassToken),
    /// A learned position embedding added to the tokens.
    PositionEmbedding(position_embedding::PositionEmbedding),
    /// One token of a token map as a flat vector (the class token before the classifier).
    SelectToken(select_token::SelectToken),
    /// Attention scores of queries and keys per head, Map(D,T,1)² → Map(heads·T,T,1).
    Scores(scores::Scores),
    /// Softmax over each of equal groups of channels (attention over each head's keys).
    Softmax(softmax::Softmax),
    /// Attention's weighted sum of values per head, Map(heads·T,T,1) × Map(D,T,1) → Map(D,T,1).
    Attend(attend::Attend),
}

impl Op {
    /// A short name of the op's kind, for listings and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Act(kind) => kind.name(),
            op => op.layer().map_or("?", |l| l.kind()),
        }
    }
}

/// The importer as an op's ONNX mapping drives it: the node being imported ([`OnnxNode`])
/// and the graph being built.
pub(crate) trait Import: OnnxNode {
    /// Appends a graph node computing `op` from `inputs`, named after the ONNX node (plus
    /// `suffix` for a second node of one ONNX node); its shape is inferred at the import size.
    fn push(&mut self, op: Op, inputs: &[usize], suffix: &str) -> Step<usize>;

    /// The op of graph node `id`, to absorb this node into it.
    fn op_mut(&mut self, id: usize) -> Option<&mut Op>;

    /// Refuses an output name that is already defined (each value name is defined once).
    fn check_outputs(&self) -> Step<()>;

    /// Binds output `i` to `val` (after [`Import::check_outputs`]).
    fn bind(&mut self, i: usize, val: Val);

    /// Binds the first output to `val`; the others must be unread.
    fn set(&mut self, val: Val) -> Step<()>;
}

/// One ONNX op's mapping onto the graph.
pub(crate) type Mapping = fn(&mut dyn Import) -> Step<()>;

/// Every op file's ONNX table: the op types it maps, one line per file. Add, Sub, Mul, Div,
/// Sum and Concat are not here: which op they become depends on whether their inputs are
/// constants, so the importer decides and calls [`add`], [`mul`], [`affine`] or [`concat`].
const ONNX: [&[(&str, Mapping)]; 9] = [
    conv::ONNX,
    batch_norm::ONNX,
    linear::ONNX,
    max_pool::ONNX,
    avg_pool::ONNX,
    adaptive_avg_pool::ONNX,
    flatten::ONNX,
    channels::ONNX,
    layer_norm::ONNX,
];

/// Maps the node `im` is importing when an op file or a nonlinearity knows its op type;
/// None when none does.
pub(crate) fn import(im: &mut dyn Import) -> Option<Step<()>> {
    let op = im.op_type().to_string();
    if let Some(map) = super::mapping::find(&ONNX, &op) {
        return Some(map(im));
    }
    let parse = super::nonlinearity::onnx(&op)?;
    Some(parse(&*im).and_then(|kind| act(im, kind)))
}

/// The op types [`import`] maps.
pub(crate) fn onnx_ops() -> impl Iterator<Item = &'static str> {
    super::mapping::names(&ONNX).chain(super::nonlinearity::onnx_ops())
}

/// The error of an op at a node, naming it.
fn node_error(name: &str, kind: &str, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("node `{name}` ({kind}): {msg}"))
}

/// What an op sees of the candle executor at its node.
pub(crate) struct TensorCx<'a> {
    /// The node's name (for errors).
    pub name: &'a str,
    /// The inputs' shapes.
    pub ins: &'a [Shape],
    /// The output's shape.
    pub out: Shape,
    /// Images in the batch.
    pub batch: usize,
    /// The pass's dtype (parameters are cast to it).
    pub dtype: DType,
    /// The pass's device.
    pub device: &'a Device,
    cache: &'a mut Option<Prepared>,
}

impl<'a> TensorCx<'a> {
    /// The context of a node; `cache` is the node's slot for data kept between calls.
    pub fn new(
        name: &'a str,
        ins: &'a [Shape],
        out: Shape,
        (batch, dtype, device): (usize, DType, &'a Device),
        cache: &'a mut Option<Prepared>,
    ) -> Self {
        Self { name, ins, out, batch, dtype, device, cache }
    }

    /// An error naming the node.
    pub fn error(&self, msg: impl std::fmt::Display) -> Error {
        node_error(self.name, "tensor path", msg)
    }

    /// `t` in the pass's dtype.
    pub fn param(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.to_dtype(self.dtype)?)
    }

    /// The node's cached data of type T, built by `build` on first use.
    pub fn cached<T: Any + Send + Sync>(&mut self, build: impl FnOnce(&Self) -> Result<T>) -> Result<&T> {
        if self.cache.is_none() {
            let made = build(self)?;
            *self.cache = Some(Box::new(made));
        }
        let name = self.name;
        self.cache
            .as_ref()
            .and_then(|b| b.downcast_ref::<T>())
            .ok_or_else(|| node_error(name, "tensor path", "internal: cached data of another type"))
    }
}

/// What an op sees of the CPU executor at its node, for one block of `n` images.
pub(crate) struct CpuCx<'a> {
    /// The node's name (for errors).
    pub name: &'a str,
    /// The inputs' shapes.
    pub ins: &'a [Shape],
    /// The output's shape.
    pub out: Shape,
    /// Images in the block.
    pub n: usize,
    weights: Option<&'a (dyn Any + Send + Sync)>,
    plan: Option<&'a (dyn Any + Send + Sync)>,
    /// Reusable working memory.
    pub scratch: &'a mut Vec<f32>,
}

impl<'a> CpuCx<'a> {
    /// The context of a node with its prepared `weights` and `plan` (see [`Layer`]).
    pub fn new(
        name: &'a str,
        (ins, out): (&'a [Shape], Shape),
        n: usize,
        (weights, plan): (Option<&'a (dyn Any + Send + Sync)>, Option<&'a (dyn Any + Send + Sync)>),
        scratch: &'a mut Vec<f32>,
    ) -> Self {
        Self { name, ins, out, n, weights, plan, scratch }
    }

    /// An error naming the node.
    pub fn error(&self, msg: impl std::fmt::Display) -> Error {
        node_error(self.name, "CPU kernels", msg)
    }

    /// The op's weights, as [`Layer::cpu_weights`] made them.
    pub fn weights<T: Any>(&self) -> Result<&'a T> {
        self.weights.and_then(|w| w.downcast_ref::<T>()).ok_or_else(|| self.error("internal: no weights"))
    }

    /// The op's plan at this size, as [`Layer::cpu_plan`] made it.
    pub fn plan<T: Any>(&self) -> Result<&'a T> {
        self.plan.and_then(|w| w.downcast_ref::<T>()).ok_or_else(|| self.error("internal: no plan"))
    }

    /// (C, H, W) of input `i`.
    pub fn in_map(&self, i: usize) -> Result<(usize, usize, usize)> {
        self.ins[i].map().map_err(|m| self.error(m))
    }

    /// (C, H, W) of the output.
    pub fn out_map(&self) -> Result<(usize, usize, usize)> {
        self.out.map().map_err(|m| self.error(m))
    }
}

/// A rectangle of a feature map: rows × columns (occlusion).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rect {
    /// Rows.
    pub rows: Range<usize>,
    /// Columns.
    pub cols: Range<usize>,
}

impl Rect {
    /// The smallest rectangle holding both.
    pub fn union(&self, o: &Rect) -> Rect {
        Rect {
            rows: self.rows.start.min(o.rows.start)..self.rows.end.max(o.rows.end),
            cols: self.cols.start.min(o.cols.start)..self.cols.end.max(o.cols.end),
        }
    }

    /// The union of several (None for none).
    pub fn union_all(rects: &[&Rect]) -> Option<Rect> {
        let (first, rest) = rects.split_first()?;
        Some(rest.iter().fold((*first).clone(), |a, b| a.union(b)))
    }

    /// The flat index ranges of this rectangle's rows in each of `c` planes of `h`×`w`,
    /// in order (channel, row).
    pub fn spans(&self, c: usize, (h, w): (usize, usize)) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..c).flat_map(move |ch| {
            self.rows.clone().map(move |y| {
                let at = (ch * h + y) * w;
                at + self.cols.start..at + self.cols.end
            })
        })
    }
}

/// The shape of a one-input op with two per-channel parameter vectors (`a`, `b`: name and
/// length), which keeps its input's shape: what does not fit names both counts.
pub(crate) fn per_channel_shape(
    ins: &[Shape],
    (a, a_len): (&str, usize),
    (b, b_len): (&str, usize),
) -> std::result::Result<Shape, String> {
    let [x] = ins else { return Err(format!("takes 1 input, got {}", ins.len())) };
    let c = x.channels();
    if a_len != c || b_len != c {
        return Err(format!("{a_len} {a} and {b_len} {b} for {c} channels"));
    }
    Ok(*x)
}

/// The outputs o (of `out`) whose window [o·s − p, o·s − p + span) meets input range `r`.
pub(crate) fn reach(r: &Range<usize>, s: usize, p: usize, span: usize, out: usize) -> Range<usize> {
    // o·s − p + span > r.start and o·s − p < r.end.
    let lo = (r.start + p + 1).saturating_sub(span).div_ceil(s);
    let hi = ((r.end + p).div_ceil(s)).min(out);
    lo.min(hi)..hi
}

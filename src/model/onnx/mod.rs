//! Any convolutional classifier exported to ONNX, imported onto the layer graph.
//!
//! `[model] onnx = "model.onnx"` in a study config, or `fragility explain --model model.onnx`:
//! the file's weights and structure become a [`Graph`], which then runs on the same kernels,
//! with the same methods and attacks, as a torchvision architecture built from its
//! `state_dict`. The reading happens in three steps:
//!
//! 1. [`proto`]: the protobuf messages, decoded by hand (no `protoc` on the build machine,
//!    every length checked against the bytes present);
//! 2. [`tensor`]: initializers and constants decoded into numbers, sizes checked against data;
//! 3. [`fuse`]: activations that exporters write as several nodes (SiLU, HardSwish, GELU
//!    before opset 20), and layer normalisation before opset 17, fused into one node;
//! 4. [`import`]: nodes mapped onto graph ops (see [`supported_ops`]), batch norms folded into
//!    convolutions, per-channel constant arithmetic into affine nodes (or a layer norm's scale
//!    and bias), channels-last views (ConvNeXt's blocks) kept on the channels-first map, a
//!    final softmax dropped with a notice.
//!
//! The file must have one image input [N,C,H,W] (N fixed or symbolic) and one output (the
//! logits). Graph nodes are named by their ONNX node names, and every ONNX value name is an
//! alias of the node computing it, so Grad-CAM's `layer` takes either. The Grad-CAM default is
//! the last feature map larger than 1×1 that every path to the logits passes through: the last
//! 4-D activation before global pooling.

mod external;
mod fuse;
pub mod import;
pub mod proto;
pub mod tensor;

pub use import::supported_ops;

use super::graph::{Graph, Shape};
use crate::error::{Error, Result};
use std::path::Path;

/// The largest `.onnx` file read: protobuf's own 2 GiB message limit.
pub const MAX_FILE_BYTES: u64 = 2 << 30;

/// The opsets whose semantics the importer follows; a newer file is imported with a notice.
pub const OPSETS: std::ops::RangeInclusive<i64> = 9..=21;

/// An imported network.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The layer graph.
    pub graph: Graph,
    /// The input size (rows, columns): as the file declares it, or the size given for a file
    /// with a symbolic size.
    pub hw: (usize, usize),
    /// The Grad-CAM default layer (a node name); None when no feature map larger than 1×1
    /// lies on every path to the logits.
    pub default_layer: Option<String>,
    /// What the import changed that the user should know (a dropped softmax).
    pub notices: Vec<String>,
    /// The default opset version.
    pub opset: i64,
}

impl Imported {
    /// One line per node: name, op and output shape at [`Imported::hw`].
    pub fn listing(&self) -> Vec<(String, &'static str, Shape)> {
        let shapes = self.graph.shapes(self.hw).unwrap_or_default();
        self.graph.nodes().iter().zip(shapes).map(|(n, s)| (n.name.clone(), n.op.kind(), s)).collect()
    }
}

/// Loads the ONNX model at `path`; `hw` sizes a file whose input size is symbolic.
pub fn load(path: &Path, hw: Option<(usize, usize)>) -> Result<Imported> {
    // The crate's one bounded reader: a regular file of at most 2 GiB (protobuf's own limit).
    let bytes = crate::data::read_capped(path, MAX_FILE_BYTES)?;
    let mut model = proto::decode_model(&bytes)
        .map_err(|e| Error::data(path, format!("not a readable ONNX model (truncated or corrupt?): {e}")))?;
    drop(bytes);
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut budget = external::MAX_EXTERNAL_BYTES;
    for t in model.graph.initializers.iter_mut().filter(|t| t.external) {
        external::load(t, dir, &mut budget)
            .map_err(|m| Error::data(path, format!("initializer `{}`: {m}", t.name)))?;
    }
    import(&model, hw).map_err(|m| Error::data(path, m))
}

/// The image input's name and dimensions (batch, C, H, W), from the graph inputs that are not
/// initializers.
fn image_input(g: &proto::GraphProto) -> std::result::Result<(String, Vec<Option<i64>>), String> {
    let weights: std::collections::HashSet<&str> = g.initializers.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&proto::ValueInfo> =
        g.inputs.iter().filter(|i| !weights.contains(i.name.as_str())).collect();
    if inputs.len() != 1 || g.outputs.len() != 1 {
        let names = |v: Vec<&str>| v.join(", ");
        return Err(format!(
            "the graph has {} inputs ({}) and {} outputs ({}); exactly one image input and one logits output are supported",
            inputs.len(),
            names(inputs.iter().map(|i| i.name.as_str()).collect()),
            g.outputs.len(),
            names(g.outputs.iter().map(|o| o.name.as_str()).collect())
        ));
    }
    let i = inputs[0];
    if i.dims.len() != 4 || !matches!(i.elem_type, 0 | 1) {
        return Err(format!(
            "input `{}` is {} of {} dimensions; expected float images [N, C, H, W]",
            i.name,
            if i.elem_type == 1 { "float" } else { "not float" },
            i.dims.len()
        ));
    }
    Ok((i.name.clone(), i.dims.clone()))
}

/// Whether every node reading the image input is a Transpose from channels-last to
/// channels-first.
fn is_nhwc(g: &proto::GraphProto, input: &str) -> bool {
    let readers: Vec<&proto::NodeProto> =
        g.nodes.iter().filter(|n| n.inputs.iter().any(|i| i == input)).collect();
    !readers.is_empty()
        && readers.iter().all(|n| {
            n.op_type == "Transpose"
                && n.attributes.iter().any(|a| a.name == "perm" && a.ints == [0, 3, 1, 2])
        })
}

/// Imports a decoded model.
pub fn import(model: &proto::Model, hw: Option<(usize, usize)>) -> std::result::Result<Imported, String> {
    let opset = model.opsets.iter().find(|(d, _)| d.is_empty() || d == "ai.onnx").map_or(0, |o| o.1);
    if opset < *OPSETS.start() {
        return Err(format!("opset {opset}: supported are opsets {} to {}", OPSETS.start(), OPSETS.end()));
    }
    let g = &model.graph;
    if g.sparse {
        return Err("sparse initializers are not supported".into());
    }
    let (input, dims) = image_input(g)?;
    let positive = |d: Option<i64>| d.filter(|&v| v > 0).map(|v| v as usize);
    // Channels-last files (Keras through tf2onnx) open with Transpose(perm [0, 3, 1, 2]) of an
    // [N, H, W, C] input: the harness's images are [N, C, H, W] already, so that transpose is
    // dropped and the dimensions read in that order.
    let nhwc = is_nhwc(g, &input);
    let (ci, hi, wi) = if nhwc { (3, 1, 2) } else { (1, 2, 3) };
    let c = positive(dims[ci]).ok_or(format!("input `{input}` has no fixed channel count"))?;
    let size = match (positive(dims[hi]), positive(dims[wi])) {
        (Some(h), Some(w)) => (h, w),
        _ => hw.ok_or(format!(
            "input `{input}` has a symbolic size; give the image size (resize/crop) to import it"
        ))?,
    };
    let nodes = fuse::fuse(g);
    let mut im = import::Importer::new(g, &nodes, &input, (c, size.0, size.1), dims[0], nhwc);
    im.opset = opset;
    for t in &g.initializers {
        let c = tensor::decode(t).map_err(|m| format!("initializer `{}`: {m}", t.name))?;
        im.constant(&t.name, c);
    }
    for n in &nodes {
        im.node(n).map_err(|m| {
            let name = if n.name.is_empty() { n.outputs.first().map_or("", |s| s) } else { &n.name };
            format!("node `{name}` ({}): {m}", n.op_type)
        })?;
    }
    let output = im.output()?;
    let default_layer = default_layer(&im.builder, &im.shapes, output);
    let mut notices = std::mem::take(&mut im.notices);
    if opset > *OPSETS.end() {
        notices.push(format!(
            "opset {opset} is newer than the importer knows ({}); read with its semantics",
            OPSETS.end()
        ));
    }
    let graph = im.builder.finish(output).map_err(|e| e.to_string())?;
    graph.classes(size).map_err(|e| e.to_string())?;
    Ok(Imported { graph, hw: size, default_layer, notices, opset })
}

/// The last feature map larger than 1×1 that every path from the image to the logits passes
/// through (the last 4-D activation before global pooling); None when there is none (the
/// input is no Grad-CAM layer).
///
/// In topological order, node `d` lies on every path exactly when no edge of a path to the
/// output jumps over it (from a node before `d` to one after it).
fn default_layer(b: &super::graph::GraphBuilder, shapes: &[Shape], output: usize) -> Option<String> {
    let nodes = b.nodes();
    let mut needed = vec![false; nodes.len()];
    needed[output] = true;
    // Edges (u → v) jumping over the nodes strictly between u and v, as a difference array.
    let mut jumped = vec![0i64; nodes.len() + 1];
    for id in (0..nodes.len()).rev() {
        if needed[id] {
            for &i in &nodes[id].inputs {
                needed[i] = true;
                if id > i + 1 {
                    jumped[i + 1] += 1;
                    jumped[id] -= 1;
                }
            }
        }
    }
    let mut over = 0;
    let mut pick = 0;
    for id in 0..nodes.len() {
        over += jumped[id];
        if id > 0 && needed[id] && over == 0 && matches!(shapes[id], Shape::Map(_, h, w) if h * w > 1) {
            pick = id;
        }
    }
    (pick > 0).then(|| nodes[pick].name.clone())
}

//! torchvision's image classifiers as [`Graph`]s, built from their PyTorch `state_dict`s.
//!
//! Each builder reads a torchvision model's weights by their PyTorch keys through
//! [`Weights`] and lays out the same network as torchvision's `forward` in eval mode:
//! dropout is left out and every batch norm is folded into the convolution before it
//! ([`fold_batch_norm`]). Nodes are named by PyTorch module path, as torch.fx names them
//! (`layer1.0.conv1`, `layer1.0.relu_1` for a ReLU module's second use, `layer1.0.add` for
//! a residual sum); a folded batch norm's path (`layer1.0.bn1`) and every container
//! (`layer1.0`, `layer1`, `features.3`) are aliases of the node giving their output, so
//! Grad-CAM's `layer` can name any of them.
//!
//! The number of classes and the input channels are not fixed: they are read from the
//! weights (the last layer's out-features and the first convolution's in-channels), so a
//! ResNet fine-tuned on 10 grey-scale classes loads like the ImageNet one.
//!
//! Shapes: images [B,C,H,W], nominally 224×224 ([`Architecture::input`]; a vision
//! transformer takes only the size its position embedding fixes, [`Graph::fixed_input`]);
//! logits [B,K].

mod convnext;
mod efficientnet;
mod mobilenet;
mod mobilenet_v3;
mod regnet;
mod resnet;
mod shufflenet;
mod squeezenet;
mod vgg;
mod vit;

use super::graph::{
    fold_batch_norm, AdaptiveAvgPool, Flatten, Graph, GraphBuilder, LayerNorm, Mul, NodeId, Nonlinearity, Op,
};
use super::weights::{Weights, BATCH_NORM_EPS};
use crate::error::{Error, Result};

/// One torchvision architecture: its name, its default Grad-CAM layer and its builder.
#[derive(Debug, Clone, Copy)]
pub struct Architecture {
    /// torchvision's function name (`resnet18`).
    pub name: &'static str,
    /// The node or container Grad-CAM uses by default: the last convolutional feature map
    /// (a vision transformer's last block's `ln_1`, seen as its patch grid).
    pub default_layer: &'static str,
    /// The nominal input size (rows, columns) the ImageNet weights were trained at.
    pub input: (usize, usize),
    /// Builds the graph from a `state_dict`, taking every tensor it needs (the caller calls
    /// [`Weights::finish`] to reject leftovers).
    pub build: fn(&mut Weights) -> Result<Graph>,
}

impl Architecture {
    /// Builds the graph from `weights` and checks that no tensor is left over.
    pub fn load(&self, mut weights: Weights) -> Result<Graph> {
        // The graph's own checks (finite parameters after folding) name a node: say the file.
        let graph = (self.build)(&mut weights).map_err(|e| match e {
            Error::Invalid(m) => Error::data(weights.source(), m),
            e => e,
        })?;
        weights.finish(self.name)?;
        Ok(graph)
    }
}

/// A 224×224 architecture.
const fn arch(
    name: &'static str,
    default_layer: &'static str,
    build: fn(&mut Weights) -> Result<Graph>,
) -> Architecture {
    Architecture { name, default_layer, input: (224, 224), build }
}

/// Every architecture this module builds.
pub const ARCHITECTURES: [Architecture; 23] = [
    arch("resnet18", "layer4", resnet::resnet18),
    arch("resnet34", "layer4", resnet::resnet34),
    arch("resnet50", "layer4", resnet::resnet50),
    arch("resnet101", "layer4", resnet::resnet101),
    arch("squeezenet1_0", "features.12", squeezenet::squeezenet1_0),
    arch("squeezenet1_1", "features.12", squeezenet::squeezenet1_1),
    arch("mobilenet_v2", "features.18", mobilenet::mobilenet_v2),
    arch("mobilenet_v3_small", "features.12", mobilenet_v3::mobilenet_v3_small),
    arch("mobilenet_v3_large", "features.16", mobilenet_v3::mobilenet_v3_large),
    arch("vgg11", "features.19", vgg::vgg11),
    arch("vgg16", "features.29", vgg::vgg16),
    arch("vgg11_bn", "features.27", vgg::vgg11_bn),
    arch("vgg16_bn", "features.42", vgg::vgg16_bn),
    arch("alexnet", "features.11", vgg::alexnet),
    arch("efficientnet_b0", "features.8", efficientnet::efficientnet_b0),
    arch("shufflenet_v2_x1_0", "conv5", shufflenet::shufflenet_v2_x1_0),
    arch("regnet_y_400mf", "trunk_output", regnet::regnet_y_400mf),
    arch("convnext_tiny", "features.7", convnext::convnext_tiny),
    arch("vit_b_16", vit::DEFAULT_LAYER, vit::vit_b_16),
    arch("vit_b_32", vit::DEFAULT_LAYER, vit::vit_b_32),
    arch("vit_l_16", vit::DEFAULT_LAYER, vit::vit_l_16),
    arch("vit_l_32", vit::DEFAULT_LAYER, vit::vit_l_32),
    arch("vit_h_14", vit::DEFAULT_LAYER, vit::vit_h_14),
];

/// The architecture called `name` (torchvision's function name), if any.
pub fn architecture(name: &str) -> Option<&'static Architecture> {
    ARCHITECTURES.iter().find(|a| a.name == name)
}

/// A convolution as torchvision declares it; `inputs: None` means the input channels come
/// from the weights (a first convolution). `bn_eps` is the ε of a batch norm folded into it
/// (a module setting, not in the `state_dict`).
#[derive(Debug, Clone, Copy)]
struct ConvSpec {
    inputs: Option<usize>,
    outputs: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    groups: usize,
    bias: bool,
    bn_eps: f64,
}

impl ConvSpec {
    /// `Conv2d(inputs, outputs, kernel)`: stride 1, no padding, one group, no bias; a folded
    /// batch norm has PyTorch's default ε.
    const fn new(inputs: Option<usize>, outputs: usize, kernel: usize) -> Self {
        Self {
            inputs,
            outputs,
            kernel,
            stride: 1,
            padding: 0,
            groups: 1,
            bias: false,
            bn_eps: BATCH_NORM_EPS,
        }
    }

    const fn stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }

    const fn padding(self, padding: usize) -> Self {
        Self { padding, ..self }
    }

    const fn groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }

    const fn bias(self) -> Self {
        Self { bias: true, ..self }
    }

    /// The folded batch norm's ε (`BatchNorm2d(eps=...)`).
    const fn bn_eps(self, bn_eps: f64) -> Self {
        Self { bn_eps, ..self }
    }
}

/// Takes the kernel `{name}.weight` (and `{name}.bias`) for `spec`; with `bn`, folds the
/// batch norm stored under that prefix into it.
fn conv_params(
    w: &mut Weights,
    name: &str,
    bn: Option<&str>,
    spec: ConvSpec,
) -> Result<(candle_core::Tensor, Option<candle_core::Tensor>)> {
    let k = Some(spec.kernel);
    let per_group = spec.inputs.map(|c| c / spec.groups);
    let weight = w.take(&format!("{name}.weight"), &[Some(spec.outputs), per_group, k, k])?;
    let bias = if spec.bias { Some(w.take(&format!("{name}.bias"), &[Some(spec.outputs)])?) } else { None };
    match bn {
        Some(prefix) => {
            let bn = w.batch_norm(prefix, spec.outputs, spec.bn_eps)?;
            fold_batch_norm(&weight, bias.as_ref(), &bn).map_err(|e| match e {
                Error::Invalid(m) => Error::data(w.source(), format!("`{prefix}`: {m}")),
                e => e,
            })
        }
        None => Ok((weight, bias)),
    }
}

/// Appends the convolution `name` (with the batch norm `bn` folded in and aliased to it).
fn conv(
    b: &mut GraphBuilder,
    w: &mut Weights,
    name: &str,
    bn: Option<&str>,
    input: NodeId,
    spec: ConvSpec,
) -> Result<NodeId> {
    let params = conv_params(w, name, bn, spec)?;
    let id = b.conv(name, input, params, spec.stride, spec.padding, spec.groups);
    if let Some(bn) = bn {
        b.alias(bn, id);
    }
    Ok(id)
}

/// Starts a graph at its first convolution `name` (in-channels free: they set the graph's
/// input channels), with the batch norm `bn` folded in. The convolution is the builder's
/// [`GraphBuilder::last`] node.
fn stem(w: &mut Weights, name: &str, bn: Option<&str>, spec: ConvSpec) -> Result<GraphBuilder> {
    let (weight, bias) = conv_params(w, name, bn, ConvSpec { inputs: None, ..spec })?;
    let mut b = GraphBuilder::new(weight.dim(1)? * spec.groups);
    let id = b.conv(name, b.input(), (weight, bias), spec.stride, spec.padding, spec.groups);
    if let Some(bn) = bn {
        b.alias(bn, id);
    }
    Ok(b)
}

/// Appends the linear layer `name` from `inputs` features to `outputs` (None: the number of
/// classes, read from the weights), with bias.
fn linear(
    b: &mut GraphBuilder,
    w: &mut Weights,
    name: &str,
    input: NodeId,
    inputs: usize,
    outputs: Option<usize>,
) -> Result<NodeId> {
    let weight = w.take(&format!("{name}.weight"), &[outputs, Some(inputs)])?;
    let bias = w.take(&format!("{name}.bias"), &[Some(weight.dim(0)?)])?;
    Ok(b.linear(name, input, (weight, Some(bias))))
}

/// A `Linear` `{name}` from `inputs` to `outputs` channels applied at each position (of a
/// feature map, or to each token of a token map), as a 1×1 convolution with the same weights
/// ([out, in] as [out, in, 1, 1]).
fn pointwise(
    b: &mut GraphBuilder,
    w: &mut Weights,
    name: &str,
    x: NodeId,
    (inputs, outputs): (usize, usize),
) -> Result<NodeId> {
    let weight = w
        .take(&format!("{name}.weight"), &[Some(outputs), Some(inputs)])?
        .reshape((outputs, inputs, 1, 1))?;
    let bias = w.take(&format!("{name}.bias"), &[Some(outputs)])?;
    Ok(b.conv(name, x, (weight, Some(bias)), 1, 0, 1))
}

/// Appends the layer norm `{p}` over `channels` (`{p}.weight`, `{p}.bias`) with ε `eps` (a
/// module setting, not in the `state_dict`).
fn layer_norm(
    b: &mut GraphBuilder,
    w: &mut Weights,
    p: &str,
    x: NodeId,
    channels: usize,
    eps: f32,
) -> Result<NodeId> {
    let (weight, bias) = w.layer_norm(p, channels)?;
    Ok(b.push(p, Op::LayerNorm(LayerNorm { weight, bias, eps }), &[x]))
}

/// Appends a ReLU.
fn relu(b: &mut GraphBuilder, name: &str, input: NodeId) -> NodeId {
    b.act(name, Nonlinearity::Relu, input)
}

/// torchvision's `SqueezeExcitation` `{p}` on `x` (`channels` wide, squeezed to `squeeze`)
/// with `act` between its 1×1 convolutions and the gate `gate` after them:
/// x ⊙ gate(fc2(act(fc1(avgpool(x))))), the product named `{p}.mul` and aliased as `{p}`.
fn squeeze_excitation(
    b: &mut GraphBuilder,
    w: &mut Weights,
    p: &str,
    x: NodeId,
    (channels, squeeze): (usize, usize),
    (act, gate): (Nonlinearity, Nonlinearity),
) -> Result<NodeId> {
    let pooled = b.push(format!("{p}.avgpool"), Op::AdaptiveAvgPool(AdaptiveAvgPool([1, 1])), &[x]);
    let s = conv(b, w, &format!("{p}.fc1"), None, pooled, ConvSpec::new(Some(channels), squeeze, 1).bias())?;
    let s = b.act(format!("{p}.activation"), act, s);
    let s = conv(b, w, &format!("{p}.fc2"), None, s, ConvSpec::new(Some(squeeze), channels, 1).bias())?;
    let g = b.act(format!("{p}.scale_activation"), gate, s);
    let y = b.push(format!("{p}.mul"), Op::Mul(Mul), &[g, x]);
    b.alias(p, y);
    Ok(y)
}

/// Appends `AdaptiveAvgPool2d(size)` named `name` and torch.flatten(x, 1) named `flatten`;
/// returns the flatten node.
fn pool_and_flatten(b: &mut GraphBuilder, name: &str, input: NodeId, size: usize) -> NodeId {
    let pooled = b.push(name, Op::AdaptiveAvgPool(AdaptiveAvgPool([size, size])), &[input]);
    b.push("flatten", Op::Flatten(Flatten), &[pooled])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::graph::Shape;
    use candle_core::{DType, Device, Tensor};
    use std::collections::HashMap;

    /// The parameters torchvision counts: every tensor but batch-norm statistics.
    fn parameter_count(dict: &HashMap<String, Tensor>) -> usize {
        dict.iter()
            .filter(|(k, _)| {
                !["running_mean", "running_var", "num_batches_tracked"].iter().any(|s| k.ends_with(s))
            })
            .map(|(_, t)| t.elem_count())
            .sum()
    }

    /// A synthesized `state_dict` of `name` for `classes` classes and `channels` channels.
    pub(crate) fn state_dict(name: &str, classes: usize, channels: usize) -> HashMap<String, Tensor> {
        let arch = architecture(name).unwrap();
        let mut w = Weights::synthesize(classes, channels, &Device::Cpu);
        (arch.build)(&mut w).unwrap();
        w.into_state_dict()
    }

    /// Builds `name` from synthesized ImageNet weights and checks torchvision's parameter
    /// count, 1000 logits at 224×224 and the default layer's feature map; then loads a
    /// 10-class, 1-channel state_dict back through the ordinary path and checks both are
    /// read from it. (One build of each size: the VGGs hold ~130 M parameters.)
    pub(crate) fn check_architecture(name: &str, parameters: usize, default_map: Shape) {
        let arch = architecture(name).unwrap();
        let dict = state_dict(name, 1000, 3);
        assert_eq!(parameter_count(&dict), parameters, "{name}");
        let graph = arch.load(Weights::from_tensors(dict, name)).unwrap();
        let shapes = graph.shapes(arch.input).unwrap();
        assert_eq!(shapes[graph.output()], Shape::Flat(1000), "{name}");
        let layer = graph.find(arch.default_layer).unwrap();
        assert_eq!(shapes[layer], default_map, "{name}: {}", arch.default_layer);
        // The last feature map: a nonlinearity's output (a Fire module's concatenation, a
        // ConvNeXt block's residual sum).
        assert!(matches!(graph.nodes()[layer].op, Op::Act(_) | Op::Concat(_) | Op::Add(_)), "{name}");
        drop(graph);

        let graph = arch.load(Weights::from_tensors(state_dict(name, 10, 1), name)).unwrap();
        assert_eq!(graph.channels(), 1, "{name}");
        assert_eq!(graph.classes(arch.input).unwrap(), 10, "{name}");
    }

    #[test]
    fn every_architecture_is_found_by_name() {
        for arch in &ARCHITECTURES {
            assert_eq!(architecture(arch.name).unwrap().name, arch.name);
        }
        assert!(architecture("resnet19").is_none());
    }

    #[test]
    fn a_missing_key_is_named_with_its_shape() {
        let mut dict = state_dict("squeezenet1_1", 1000, 3);
        dict.remove("features.3.expand3x3.weight");
        let arch = architecture("squeezenet1_1").unwrap();
        let err = arch.load(Weights::from_tensors(dict, "sq.safetensors")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(msg.contains("sq.safetensors"), "{msg}");
        assert!(
            msg.contains("missing tensor `features.3.expand3x3.weight` (expected shape [64, 16, 3, 3])"),
            "{msg}"
        );
    }

    #[test]
    fn a_wrongly_shaped_key_is_named_with_both_shapes() {
        let mut dict = state_dict("squeezenet1_1", 1000, 3);
        dict.insert(
            "features.4.squeeze.weight".into(),
            Tensor::zeros((16, 64, 1, 1), DType::F32, &Device::Cpu).unwrap(),
        );
        let arch = architecture("squeezenet1_1").unwrap();
        let msg = arch.load(Weights::from_tensors(dict, "sq.safetensors")).unwrap_err().to_string();
        assert!(msg.contains("`features.4.squeeze.weight`"), "{msg}");
        assert!(msg.contains("[16, 64, 1, 1]") && msg.contains("[16, 128, 1, 1]"), "{msg}");
    }

    #[test]
    fn an_extra_key_is_named_with_its_shape() {
        let mut dict = state_dict("squeezenet1_1", 1000, 3);
        dict.insert("classifier.9.weight".into(), Tensor::zeros((5, 2), DType::F32, &Device::Cpu).unwrap());
        let arch = architecture("squeezenet1_1").unwrap();
        let msg = arch.load(Weights::from_tensors(dict, "sq.safetensors")).unwrap_err().to_string();
        assert!(msg.contains("unexpected tensor `classifier.9.weight` (shape [5, 2])"), "{msg}");
        assert!(msg.contains("squeezenet1_1"), "{msg}");
    }

    #[test]
    fn a_saved_state_dict_with_batch_counters_loads_from_a_file() {
        // mobilenet_v2's synthesized state_dict carries `*.num_batches_tracked` i64 scalars,
        // as PyTorch saves them; the file round trip goes through safetensors.
        let dict = state_dict("mobilenet_v2", 1000, 3);
        let counter = &dict["features.1.conv.0.1.num_batches_tracked"];
        assert_eq!((counter.dtype(), counter.rank()), (DType::I64, 0));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mobilenet_v2.safetensors");
        candle_core::safetensors::save(&dict, &path).unwrap();
        let arch = architecture("mobilenet_v2").unwrap();
        let graph = arch.load(Weights::load(&path, &Device::Cpu).unwrap()).unwrap();
        assert_eq!(graph.classes((224, 224)).unwrap(), 1000);
        // And without them.
        let without: HashMap<String, Tensor> =
            dict.into_iter().filter(|(k, _)| !k.ends_with("num_batches_tracked")).collect();
        arch.load(Weights::from_tensors(without, "r.safetensors")).unwrap();
    }
}

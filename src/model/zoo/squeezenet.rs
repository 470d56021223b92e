//! SqueezeNet 1.0 and 1.1 (Iandola et al. 2016) as torchvision defines them.
//!
//! `features` is a stem convolution (`features.0`, with bias) and ReLU (`features.1`), then
//! Fire modules and `MaxPool2d(3, 2, ceil_mode=True)` pools. A Fire module `features.N`
//! squeezes to s channels (`squeeze` 1×1 + `squeeze_activation`), expands in two branches
//! (`expand1x1` 1×1 and `expand3x3` 3×3 padding 1, each + ReLU) and concatenates them,
//! 1×1 first (`features.N.cat`, which `features.N` aliases). The head is `classifier.1`, a
//! 1×1 convolution to the classes, its ReLU `classifier.2`, global average pooling
//! `classifier.3` and `flatten` (dropout `classifier.0` is left out).
//!
//! At 224×224: 1.0's 7×7 stride-2 stem gives 109², 1.1's 3×3 stride-2 stem 111²; both reach
//! [512,13,13] at the last Fire module `features.12`.

use super::{conv, relu, stem, ConvSpec};
use crate::error::Result;
use crate::model::graph::{AdaptiveAvgPool, Concat, Flatten, Graph, GraphBuilder, NodeId, Op};
use crate::model::weights::Weights;

/// One module of `features` after the stem.
#[derive(Debug, Clone, Copy)]
enum Layer {
    /// `MaxPool2d(3, 2, ceil_mode=True)`.
    Pool,
    /// `Fire(squeeze, expand)`: expand1x1 and expand3x3 both have `expand` channels.
    Fire(usize, usize),
}

/// The Fire module `{p}` on `inputs` channels; returns its concatenation.
fn fire(
    b: &mut GraphBuilder,
    w: &mut Weights,
    p: &str,
    x: NodeId,
    (inputs, squeeze, expand): (usize, usize, usize),
) -> Result<NodeId> {
    let s = conv(b, w, &format!("{p}.squeeze"), None, x, ConvSpec::new(Some(inputs), squeeze, 1).bias())?;
    let s = relu(b, &format!("{p}.squeeze_activation"), s);
    let e1 = conv(b, w, &format!("{p}.expand1x1"), None, s, ConvSpec::new(Some(squeeze), expand, 1).bias())?;
    let e1 = relu(b, &format!("{p}.expand1x1_activation"), e1);
    let spec = ConvSpec::new(Some(squeeze), expand, 3).padding(1).bias();
    let e3 = conv(b, w, &format!("{p}.expand3x3"), None, s, spec)?;
    let e3 = relu(b, &format!("{p}.expand3x3_activation"), e3);
    let cat = b.push(format!("{p}.cat"), Op::Concat(Concat), &[e1, e3]);
    b.alias(p, cat);
    Ok(cat)
}

/// A SqueezeNet: stem `Conv2d(C, stem_channels, stem_kernel, stride=2)`, then `layers` as
/// `features.3`, `features.4`, ...
fn squeezenet(
    w: &mut Weights,
    (stem_channels, stem_kernel): (usize, usize),
    layers: &[Layer],
) -> Result<Graph> {
    let spec = ConvSpec::new(None, stem_channels, stem_kernel).stride(2).bias();
    let mut b = stem(w, "features.0", None, spec)?;
    let x = b.last();
    let x = relu(&mut b, "features.1", x);
    let mut x = b.max_pool("features.2", x, 3, 2, 0, true);
    let mut channels = stem_channels;
    for (i, layer) in layers.iter().enumerate() {
        let name = format!("features.{}", i + 3);
        x = match *layer {
            Layer::Pool => b.max_pool(name, x, 3, 2, 0, true),
            Layer::Fire(squeeze, expand) => {
                let y = fire(&mut b, w, &name, x, (channels, squeeze, expand))?;
                channels = 2 * expand;
                y
            }
        };
    }
    b.alias("features", x);
    let weight = w.take("classifier.1.weight", &[None, Some(channels), Some(1), Some(1)])?;
    let classes = weight.dim(0)?;
    let bias = w.take("classifier.1.bias", &[Some(classes)])?;
    let x = b.conv("classifier.1", x, (weight, Some(bias)), 1, 0, 1);
    let x = relu(&mut b, "classifier.2", x);
    let pooled = b.push("classifier.3", Op::AdaptiveAvgPool(AdaptiveAvgPool([1, 1])), &[x]);
    b.alias("classifier", pooled);
    let logits = b.push("flatten", Op::Flatten(Flatten), &[pooled]);
    b.finish(logits)
}

/// torchvision's `squeezenet1_0`: 7×7 stem of 96 channels.
pub fn squeezenet1_0(w: &mut Weights) -> Result<Graph> {
    use Layer::{Fire, Pool};
    let layers = [
        Fire(16, 64),
        Fire(16, 64),
        Fire(32, 128),
        Pool,
        Fire(32, 128),
        Fire(48, 192),
        Fire(48, 192),
        Fire(64, 256),
        Pool,
        Fire(64, 256),
    ];
    squeezenet(w, (96, 7), &layers)
}

/// torchvision's `squeezenet1_1`: 3×3 stem of 64 channels, pools earlier (2.4× less compute).
pub fn squeezenet1_1(w: &mut Weights) -> Result<Graph> {
    use Layer::{Fire, Pool};
    let layers = [
        Fire(16, 64),
        Fire(16, 64),
        Pool,
        Fire(32, 128),
        Fire(32, 128),
        Pool,
        Fire(48, 192),
        Fire(48, 192),
        Fire(64, 256),
        Fire(64, 256),
    ];
    squeezenet(w, (64, 3), &layers)
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_architecture;
    use crate::model::graph::Shape;
    use crate::model::weights::Weights;
    use candle_core::Device;

    #[test]
    fn squeezenet1_0_matches_torchvision() {
        check_architecture("squeezenet1_0", 1_248_424, Shape::Map(512, 13, 13));
    }

    #[test]
    fn squeezenet1_1_matches_torchvision() {
        check_architecture("squeezenet1_1", 1_235_496, Shape::Map(512, 13, 13));
    }

    #[test]
    fn fire_concatenates_expand1x1_then_expand3x3() {
        let g = super::squeezenet1_1(&mut Weights::synthesize(1000, 3, &Device::Cpu)).unwrap();
        let shapes = g.shapes((224, 224)).unwrap();
        let cat = g.find("features.3").unwrap();
        assert_eq!(g.nodes()[cat].name, "features.3.cat");
        let inputs: Vec<&str> = g.nodes()[cat].inputs.iter().map(|&i| g.nodes()[i].name.as_str()).collect();
        assert_eq!(inputs, ["features.3.expand1x1_activation", "features.3.expand3x3_activation"]);
        // Ceil-mode pools: 111 → 55 → 27 → 13.
        assert_eq!(shapes[g.find("features.2").unwrap()], Shape::Map(64, 55, 55));
        assert_eq!(shapes[g.find("features.5").unwrap()], Shape::Map(128, 27, 27));
        assert_eq!(shapes[g.find("classifier.3").unwrap()], Shape::Map(1000, 1, 1));
    }
}

//! ResNet-18/34/50/101 (He et al. 2016) as torchvision defines them.
//!
//! Stem: `conv1` 7×7 stride 2 (+`bn1`), `relu`, `maxpool` 3×3 stride 2 padding 1:
//! [C,224,224] → [64,56,56]. Four stages `layer1`..`layer4` of blocks with 64, 128, 256, 512
//! planes, each stage after the first halving the size in its first block (the 1×1
//! `downsample.0` conv + `downsample.1` batch norm carries the shortcut); then `avgpool`
//! (global), `flatten`, `fc`. At 224×224 `layer4` gives [512·e,7,7], e = 1 for the
//! BasicBlock (resnet18/34) and 4 for the Bottleneck (resnet50/101), whose stride sits on the
//! 3×3 `conv2` (torchvision's "ResNet v1.5").
//!
//! Node names follow torch.fx: a block applies its one `relu` module two (BasicBlock) or
//! three (Bottleneck) times, as `relu`, `relu_1`, `relu_2`; the residual sum is `add`; the
//! block and the stage are aliases of the block's last ReLU.

use super::{conv, linear, pool_and_flatten, relu, stem, ConvSpec};
use crate::error::Result;
use crate::model::graph::{Add, Graph, GraphBuilder, NodeId, Op};
use crate::model::weights::Weights;

/// The two residual blocks of torchvision's ResNets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// Two 3×3 convolutions; expansion 1.
    Basic,
    /// 1×1 reduce, 3×3 (strided), 1×1 expand; expansion 4.
    Bottleneck,
}

impl Block {
    /// Output channels per plane.
    fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

/// One block `{p}` (`layer2.0`) from `inplanes` channels to `planes·expansion`; returns its
/// output node (the final ReLU).
fn block(
    b: &mut GraphBuilder,
    w: &mut Weights,
    kind: Block,
    p: &str,
    x: NodeId,
    (inplanes, planes, stride): (usize, usize, usize),
) -> Result<NodeId> {
    let outplanes = planes * kind.expansion();
    let main = match kind {
        Block::Basic => {
            let spec = ConvSpec::new(Some(inplanes), planes, 3).stride(stride).padding(1);
            let y = conv(b, w, &format!("{p}.conv1"), Some(&format!("{p}.bn1")), x, spec)?;
            let y = relu(b, &format!("{p}.relu"), y);
            let spec = ConvSpec::new(Some(planes), planes, 3).padding(1);
            conv(b, w, &format!("{p}.conv2"), Some(&format!("{p}.bn2")), y, spec)?
        }
        Block::Bottleneck => {
            let spec = ConvSpec::new(Some(inplanes), planes, 1);
            let y = conv(b, w, &format!("{p}.conv1"), Some(&format!("{p}.bn1")), x, spec)?;
            let y = relu(b, &format!("{p}.relu"), y);
            let spec = ConvSpec::new(Some(planes), planes, 3).stride(stride).padding(1);
            let y = conv(b, w, &format!("{p}.conv2"), Some(&format!("{p}.bn2")), y, spec)?;
            let y = relu(b, &format!("{p}.relu_1"), y);
            let spec = ConvSpec::new(Some(planes), outplanes, 1);
            conv(b, w, &format!("{p}.conv3"), Some(&format!("{p}.bn3")), y, spec)?
        }
    };
    let identity = if stride != 1 || inplanes != outplanes {
        let spec = ConvSpec::new(Some(inplanes), outplanes, 1).stride(stride);
        let d = format!("{p}.downsample");
        let y = conv(b, w, &format!("{d}.0"), Some(&format!("{d}.1")), x, spec)?;
        b.alias(d, y);
        y
    } else {
        x
    };
    let sum = b.push(format!("{p}.add"), Op::Add(Add), &[main, identity]);
    let last = match kind {
        Block::Basic => "relu_1",
        Block::Bottleneck => "relu_2",
    };
    let out = relu(b, &format!("{p}.{last}"), sum);
    b.alias(p, out);
    Ok(out)
}

/// A ResNet with `layers[i]` blocks in stage i+1.
fn resnet(w: &mut Weights, kind: Block, layers: [usize; 4]) -> Result<Graph> {
    let mut b = stem(w, "conv1", Some("bn1"), ConvSpec::new(None, 64, 7).stride(2).padding(3))?;
    let x = b.last();
    let x = relu(&mut b, "relu", x);
    let mut x = b.max_pool("maxpool", x, 3, 2, 1, false);
    let mut inplanes = 64;
    for (stage, &blocks) in layers.iter().enumerate() {
        let planes = 64 << stage;
        for i in 0..blocks {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let p = format!("layer{}.{i}", stage + 1);
            x = block(&mut b, w, kind, &p, x, (inplanes, planes, stride))?;
            inplanes = planes * kind.expansion();
        }
        b.alias(format!("layer{}", stage + 1), x);
    }
    let x = pool_and_flatten(&mut b, "avgpool", x, 1);
    let logits = linear(&mut b, w, "fc", x, inplanes, None)?;
    b.finish(logits)
}

/// torchvision's `resnet18`: BasicBlocks [2, 2, 2, 2].
pub fn resnet18(w: &mut Weights) -> Result<Graph> {
    resnet(w, Block::Basic, [2, 2, 2, 2])
}

/// torchvision's `resnet34`: BasicBlocks [3, 4, 6, 3].
pub fn resnet34(w: &mut Weights) -> Result<Graph> {
    resnet(w, Block::Basic, [3, 4, 6, 3])
}

/// torchvision's `resnet50`: Bottlenecks [3, 4, 6, 3].
pub fn resnet50(w: &mut Weights) -> Result<Graph> {
    resnet(w, Block::Bottleneck, [3, 4, 6, 3])
}

/// torchvision's `resnet101`: Bottlenecks [3, 4, 23, 3].
pub fn resnet101(w: &mut Weights) -> Result<Graph> {
    resnet(w, Block::Bottleneck, [3, 4, 23, 3])
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_architecture;
    use crate::model::graph::Shape;
    use crate::model::weights::Weights;
    use candle_core::Device;

    #[test]
    fn resnet18_matches_torchvision() {
        check_architecture("resnet18", 11_689_512, Shape::Map(512, 7, 7));
    }

    #[test]
    fn resnet34_matches_torchvision() {
        check_architecture("resnet34", 21_797_672, Shape::Map(512, 7, 7));
    }

    #[test]
    fn resnet50_matches_torchvision() {
        check_architecture("resnet50", 25_557_032, Shape::Map(2048, 7, 7));
    }

    #[test]
    fn resnet101_matches_torchvision() {
        check_architecture("resnet101", 44_549_160, Shape::Map(2048, 7, 7));
    }

    #[test]
    fn resnet_nodes_are_named_like_torch_fx() {
        let g = super::resnet50(&mut Weights::synthesize(1000, 3, &Device::Cpu)).unwrap();
        let shapes = g.shapes((224, 224)).unwrap();
        let name = |n: &str| g.nodes()[g.find(n).unwrap()].name.clone();
        assert_eq!(name("bn1"), "conv1");
        assert_eq!(name("layer1.0.bn2"), "layer1.0.conv2");
        assert_eq!(name("layer2.0.downsample.1"), "layer2.0.downsample.0");
        assert_eq!(name("layer1"), "layer1.2.relu_2");
        assert_eq!(name("layer4.2"), "layer4.2.relu_2");
        // v1.5: the stride is on conv2, so conv1 of layer2.0 still sees 56×56.
        assert_eq!(shapes[g.find("layer2.0.conv1").unwrap()], Shape::Map(128, 56, 56));
        assert_eq!(shapes[g.find("layer2.0.conv2").unwrap()], Shape::Map(128, 28, 28));
        assert_eq!(shapes[g.find("layer2.0.add").unwrap()], Shape::Map(512, 28, 28));
        assert_eq!(shapes[g.find("maxpool").unwrap()], Shape::Map(64, 56, 56));
        let add = &g.nodes()[g.find("layer1.1.add").unwrap()];
        // The identity shortcut of layer1.1 is layer1.0's output.
        assert_eq!(add.inputs[1], g.find("layer1.0").unwrap());
    }
}

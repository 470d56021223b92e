//! VGG-11/16 with and without batch norm (Simonyan and Zisserman 2015) and AlexNet
//! (Krizhevsky et al. 2012) as torchvision defines them: plain stacks of convolutions, ReLUs
//! and max-pools (`features.N`, each module its own node), then a fully connected head.
//!
//! VGG: every convolution is 3×3 padding 1 with bias, followed by a ReLU (with `_bn`: by a
//! batch norm, folded into it and aliased, then the ReLU), so `features` indices count 2 (3)
//! modules per convolution and 1 per 2×2 pool. At 224×224 the last ReLU gives [512,14,14],
//! the last pool [512,7,7]; the head is `avgpool` (adaptive, 7×7), `flatten`, `classifier.0`
//! (25088→4096), ReLU `.1`, `.3` (4096→4096), ReLU `.4`, `.6` (→ classes).
//!
//! AlexNet: `features` conv 11×11/4 pad 2 (64), pool 3/2, conv 5×5 pad 2 (192), pool,
//! convs 3×3 pad 1 (384, 256, 256), pool: the last ReLU `features.11` gives [256,13,13].
//! Head: `avgpool` (adaptive, 6×6), `flatten`, `classifier.1` (9216→4096), ReLU `.2`, `.4`
//! (4096→4096), ReLU `.5`, `.6` (→ classes). Dropout is left out throughout.

use super::{conv, linear, pool_and_flatten, relu, stem, ConvSpec};
use crate::error::{Error, Result};
use crate::model::graph::{Graph, GraphBuilder, NodeId};
use crate::model::weights::Weights;

/// One entry of torchvision's VGG configuration.
#[derive(Debug, Clone, Copy)]
enum Layer {
    /// 3×3 convolution (padding 1) to this many channels, then ReLU.
    Conv(usize),
    /// `MaxPool2d(2, 2)`.
    Pool,
}

use Layer::{Conv as C, Pool as M};

/// torchvision's cfg "A" (vgg11).
const VGG11: [Layer; 13] = [C(64), M, C(128), M, C(256), C(256), M, C(512), C(512), M, C(512), C(512), M];

/// torchvision's cfg "D" (vgg16).
const VGG16: [Layer; 18] = [
    C(64),
    C(64),
    M,
    C(128),
    C(128),
    M,
    C(256),
    C(256),
    C(256),
    M,
    C(512),
    C(512),
    C(512),
    M,
    C(512),
    C(512),
    C(512),
    M,
];

/// Appends the classifier head: linear layers named `names` with ReLUs named `relus` after
/// all but the last; the last layer's out-features are the classes.
fn head(
    b: &mut GraphBuilder,
    w: &mut Weights,
    x: NodeId,
    inputs: usize,
    names: [&str; 3],
    relus: [&str; 2],
) -> Result<NodeId> {
    let x = linear(b, w, names[0], x, inputs, Some(4096))?;
    let x = relu(b, relus[0], x);
    let x = linear(b, w, names[1], x, 4096, Some(4096))?;
    let x = relu(b, relus[1], x);
    linear(b, w, names[2], x, 4096, None)
}

/// A VGG from its configuration (which starts with a convolution), with or without batch
/// norm.
fn vgg(w: &mut Weights, cfg: &[Layer], batch_norm: bool) -> Result<Graph> {
    let [C(first), rest @ ..] = cfg else {
        return Err(Error::Invalid("a VGG configuration starts with a convolution".into()));
    };
    let mut index = 0;
    let mut next = move || {
        index += 1;
        format!("features.{}", index - 1)
    };
    let conv_name = next();
    let bn_name = batch_norm.then(&mut next);
    let spec = ConvSpec::new(None, *first, 3).padding(1).bias();
    let mut b = stem(w, &conv_name, bn_name.as_deref(), spec)?;
    let x = b.last();
    let mut x = relu(&mut b, &next(), x);
    let mut channels = *first;
    for layer in rest {
        x = match *layer {
            M => b.max_pool(next(), x, 2, 2, 0, false),
            C(out) => {
                let conv_name = next();
                let bn_name = batch_norm.then(&mut next);
                let spec = ConvSpec::new(Some(channels), out, 3).padding(1).bias();
                let y = conv(&mut b, w, &conv_name, bn_name.as_deref(), x, spec)?;
                channels = out;
                relu(&mut b, &next(), y)
            }
        };
    }
    b.alias("features", x);
    let x = pool_and_flatten(&mut b, "avgpool", x, 7);
    let names = ["classifier.0", "classifier.3", "classifier.6"];
    let logits = head(&mut b, w, x, channels * 7 * 7, names, ["classifier.1", "classifier.4"])?;
    b.finish(logits)
}

/// torchvision's `vgg11` (cfg "A", no batch norm).
pub fn vgg11(w: &mut Weights) -> Result<Graph> {
    vgg(w, &VGG11, false)
}

/// torchvision's `vgg16` (cfg "D", no batch norm).
pub fn vgg16(w: &mut Weights) -> Result<Graph> {
    vgg(w, &VGG16, false)
}

/// torchvision's `vgg11_bn` (cfg "A" with batch norm).
pub fn vgg11_bn(w: &mut Weights) -> Result<Graph> {
    vgg(w, &VGG11, true)
}

/// torchvision's `vgg16_bn` (cfg "D" with batch norm).
pub fn vgg16_bn(w: &mut Weights) -> Result<Graph> {
    vgg(w, &VGG16, true)
}

/// torchvision's `alexnet` (the "one weird trick" variant torchvision ships: 64, 192, 384,
/// 256, 256 channels).
pub fn alexnet(w: &mut Weights) -> Result<Graph> {
    let mut b = stem(w, "features.0", None, ConvSpec::new(None, 64, 11).stride(4).padding(2).bias())?;
    let x = b.last();
    let x = relu(&mut b, "features.1", x);
    let x = b.max_pool("features.2", x, 3, 2, 0, false);
    let x = conv(&mut b, w, "features.3", None, x, ConvSpec::new(Some(64), 192, 5).padding(2).bias())?;
    let x = relu(&mut b, "features.4", x);
    let x = b.max_pool("features.5", x, 3, 2, 0, false);
    let x = conv(&mut b, w, "features.6", None, x, ConvSpec::new(Some(192), 384, 3).padding(1).bias())?;
    let x = relu(&mut b, "features.7", x);
    let x = conv(&mut b, w, "features.8", None, x, ConvSpec::new(Some(384), 256, 3).padding(1).bias())?;
    let x = relu(&mut b, "features.9", x);
    let x = conv(&mut b, w, "features.10", None, x, ConvSpec::new(Some(256), 256, 3).padding(1).bias())?;
    let x = relu(&mut b, "features.11", x);
    let x = b.max_pool("features.12", x, 3, 2, 0, false);
    b.alias("features", x);
    let x = pool_and_flatten(&mut b, "avgpool", x, 6);
    let names = ["classifier.1", "classifier.4", "classifier.6"];
    let logits = head(&mut b, w, x, 256 * 6 * 6, names, ["classifier.2", "classifier.5"])?;
    b.finish(logits)
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_architecture;
    use crate::model::graph::Shape;

    // One test per architecture: each builds ~130 M synthesized (lazily zeroed) parameters.

    #[test]
    fn vgg11_matches_torchvision() {
        check_architecture("vgg11", 132_863_336, Shape::Map(512, 14, 14));
    }

    #[test]
    fn vgg16_matches_torchvision() {
        check_architecture("vgg16", 138_357_544, Shape::Map(512, 14, 14));
    }

    #[test]
    fn vgg11_bn_matches_torchvision() {
        check_architecture("vgg11_bn", 132_868_840, Shape::Map(512, 14, 14));
    }

    #[test]
    fn vgg16_bn_matches_torchvision() {
        check_architecture("vgg16_bn", 138_365_992, Shape::Map(512, 14, 14));
    }

    #[test]
    fn alexnet_matches_torchvision() {
        check_architecture("alexnet", 61_100_840, Shape::Map(256, 13, 13));
    }
}

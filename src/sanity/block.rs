//! Blocks of parameter layers: the units a deep network is randomised by (Adebayo et al. 2018).
//!
//! Adebayo et al. re-initialise Inception v3 by block (`Mixed_7c`, `Mixed_7b`, …,
//! `Conv2d_1a_3x3`) and the logits, not by single layer: a cascade over ResNet-50's 107 or
//! MobileNetV2's 105 parameter layers is 100+ model rebuilds per method and a figure nobody can
//! read. A *block* is what a reader of the architecture calls one, found from torchvision's
//! module names ([`blocks`]) by one rule for every family:
//!
//! 1. A layer's block is its name up to its first *index* component (`3`, or RegNet's
//!    `block2-3`), and on through the indices right after it while they name a container,
//!    not the layer itself: `layer1.0.conv1` → `layer1.0` (ResNet's BasicBlock or
//!    Bottleneck, `downsample` included), `features.5.conv.1` → `features.5` (MobileNet's
//!    inverted residual, SqueezeNet's Fire), `features.2.1.block.0.0` → `features.2.1`
//!    (EfficientNet's MBConv and ConvNeXt's CNBlock inside a stage), `features.0.0` →
//!    `features.0`, `trunk_output.block2.block2-1.f.a.0` → `trunk_output.block2.block2-1`.
//!    A layer in a plain sequence is its own block (VGG's `features.3`, `classifier.6`); a
//!    name with no index is its top-level module (`conv1`, `fc`, `Mixed_5b.branch1x1.conv`
//!    → `Mixed_5b`).
//! 2. A batch norm goes with the convolution before it (`bn1` with `conv1`, VGG-BN's
//!    `features.1` with `features.0`).
//! 3. A block is named by the outermost module that holds exactly its layers: ShuffleNet's
//!    stem `conv1.0` + `conv1.1` is `conv1`, MobileNetV2's lone `classifier.1` is
//!    `classifier`, EfficientNet's one-block stage `features.1.0` is `features.1`.
//!
//! So resnet18 has 10 blocks (`conv1`, `layer1.0` … `layer4.1`, `fc`), mobilenet_v2 20
//! (`features.0` … `features.18`, `classifier`), efficientnet_b0 19, and fmnist_cnn's four
//! layers are four blocks. [`Granularity`] chooses blocks or single layers for a study.

use super::randomize::{ParamKind, ParamLayer};
use serde::Serialize;

/// What a randomisation step re-initialises: a block of layers or one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// A block of layers ([`blocks`]), as Adebayo et al. randomise Inception v3.
    Block,
    /// One parameter layer.
    Layer,
}

/// The granularities' names in configs, in [`Granularity`] order.
pub const GRANULARITIES: [&str; 2] = ["block", "layer"];

impl Granularity {
    /// Its name in configs and run.json.
    pub fn name(self) -> &'static str {
        GRANULARITIES[self as usize]
    }

    /// The granularity called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Block, Self::Layer].into_iter().find(|g| g.name() == name)
    }

    /// The units of forward-ordered `layers` at this granularity, in forward order.
    pub fn units(self, layers: Vec<ParamLayer>) -> Vec<Block> {
        match self {
            Self::Block => blocks(layers),
            Self::Layer => {
                layers.into_iter().map(|l| Block { name: l.name.clone(), layers: vec![l] }).collect()
            }
        }
    }
}

/// Parameter layers randomised together, under one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The module holding them (`layer4.1`, `fc`), or the layer's own name.
    pub name: String,
    /// Its layers, in forward order.
    pub layers: Vec<ParamLayer>,
}

/// Whether a name component indexes a sequence: `3`, RegNet's `block2-3`, or a vision
/// transformer's `encoder_layer_3` (a word without digits, `_`, a number; not Inception's
/// `branch5x5_1`).
fn is_index(component: &str) -> bool {
    let tail = match component.rsplit_once('_') {
        Some((word, n)) if !word.bytes().any(|b| b.is_ascii_digit()) => n,
        _ => component.rsplit_once('-').map_or(component, |(_, t)| t),
    };
    !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit())
}

/// Rule 1: the block prefix of the layer called `name`.
fn block_prefix(name: &str) -> &str {
    let parts: Vec<&str> = name.split('.').collect();
    let Some(first) = parts.iter().position(|c| is_index(c)) else { return parts[0] };
    let mut end = first + 1;
    while end + 1 < parts.len() && is_index(parts[end]) {
        end += 1;
    }
    let len = parts[..end].iter().map(|c| c.len() + 1).sum::<usize>() - 1;
    &name[..len]
}

/// The blocks of forward-ordered `layers` (see the module docs), in forward order; every
/// layer is in exactly one block.
pub fn blocks(layers: Vec<ParamLayer>) -> Vec<Block> {
    // Rules 1 and 2: runs of layers with one prefix, a batch norm joining its convolution.
    let mut runs: Vec<(String, std::ops::Range<usize>)> = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let prefix = block_prefix(&layer.name);
        let after_conv = i > 0 && layer.kind == ParamKind::BatchNorm && layers[i - 1].kind == ParamKind::Conv;
        match runs.last_mut() {
            Some((name, range)) if *name == prefix || after_conv => range.end = i + 1,
            _ => runs.push((prefix.to_string(), i..i + 1)),
        }
    }
    // Rule 3: widen each name to the outermost module holding exactly its layers.
    let names: Vec<String> = runs.iter().map(|(name, range)| widen(name, range, &layers)).collect();
    let mut layers = layers.into_iter();
    names
        .into_iter()
        .zip(runs)
        .map(|(name, (_, range))| Block { name, layers: layers.by_ref().take(range.len()).collect() })
        .collect()
}

/// `name` widened while its parent module holds no layer outside `range`.
fn widen(name: &str, range: &std::ops::Range<usize>, layers: &[ParamLayer]) -> String {
    let mut name = name;
    while let Some((parent, _)) = name.rsplit_once('.') {
        let inside = format!("{parent}.");
        let outside =
            layers.iter().enumerate().any(|(i, l)| l.name.starts_with(&inside) && !range.contains(&i));
        if outside {
            break;
        }
        name = parent;
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sanity::{key_order, param_layers};

    /// `arch`'s block names and each block's layer count.
    fn blocks_of(arch: &str) -> Vec<(String, usize)> {
        let layers = param_layers(&key_order(arch, None).unwrap());
        let n = layers.len();
        let out: Vec<(String, usize)> =
            blocks(layers).into_iter().map(|b| (b.name, b.layers.len())).collect();
        assert_eq!(out.iter().map(|b| b.1).sum::<usize>(), n, "{arch}: every layer in one block");
        out
    }

    fn names(blocks: &[(String, usize)]) -> Vec<&str> {
        blocks.iter().map(|b| b.0.as_str()).collect()
    }

    #[test]
    fn resnets_group_each_basic_block_or_bottleneck_with_its_downsample() {
        let b = blocks_of("resnet18");
        let mut want = vec!["conv1"];
        let stages: Vec<String> =
            (1..=4).flat_map(|s| (0..2).map(move |i| format!("layer{s}.{i}"))).collect();
        want.extend(stages.iter().map(String::as_str));
        want.push("fc");
        assert_eq!(names(&b), want);
        // conv1 + bn1; two conv–bn pairs, three with the downsample; fc.
        let sizes: Vec<usize> = b.iter().map(|b| b.1).collect();
        assert_eq!(sizes, [2, 4, 4, 6, 4, 6, 4, 6, 4, 1]);
        // ResNet-50: 16 Bottlenecks (3 + 4 + 6 + 3), the first of each stage with downsample.
        let b = blocks_of("resnet50");
        assert_eq!(b.len(), 18);
        assert_eq!((b[1].0.as_str(), b[1].1, b[2].1), ("layer1.0", 8, 6));
        assert_eq!(blocks_of("resnet34").len(), 18);
        assert_eq!(blocks_of("resnet101").len(), 35);
    }

    #[test]
    fn inverted_residual_networks_group_by_features_index() {
        let b = blocks_of("mobilenet_v2");
        let want: Vec<String> =
            (0..=18).map(|i| format!("features.{i}")).chain(["classifier".to_string()]).collect();
        assert_eq!(names(&b), want);
        assert_eq!((b[0].1, b[1].1, b[2].1, b[18].1, b[19].1), (2, 4, 6, 2, 1));
        // MobileNetV3: the squeeze-excitation convolutions inside their block; two linears.
        for (arch, blocks) in [("mobilenet_v3_small", 13), ("mobilenet_v3_large", 17)] {
            let b = blocks_of(arch);
            let want: Vec<String> = (0..blocks)
                .map(|i| format!("features.{i}"))
                .chain(["classifier.0".into(), "classifier.3".into()])
                .collect();
            assert_eq!(names(&b), want, "{arch}");
        }
        assert_eq!(blocks_of("mobilenet_v3_small")[1].1, 6);
    }

    #[test]
    fn staged_networks_group_by_the_block_inside_each_stage() {
        // EfficientNet-B0: stem, MBConv blocks 1 + 2 + 2 + 3 + 3 + 4 + 1, head conv, classifier.
        let b = blocks_of("efficientnet_b0");
        assert_eq!(b.len(), 19);
        assert_eq!(names(&b)[..4], ["features.0", "features.1", "features.2.0", "features.2.1"]);
        assert_eq!(names(&b)[15..], ["features.6.3", "features.7", "features.8", "classifier"]);
        assert_eq!((b[0].1, b[1].1, b[2].1), (2, 6, 8));
        // ConvNeXt-T: stem, CNBlocks 3 + 3 + 9 + 3 with a downsampling conv between stages.
        let b = blocks_of("convnext_tiny");
        assert_eq!(b.len(), 1 + 18 + 3 + 1);
        assert_eq!(
            names(&b)[..6],
            ["features.0", "features.1.0", "features.1.1", "features.1.2", "features.2", "features.3.0"]
        );
        assert_eq!(b[1].1, 3);
        // RegNetY-400MF: stem, 1 + 3 + 6 + 6 Y-blocks (proj included), fc.
        let b = blocks_of("regnet_y_400mf");
        assert_eq!(b.len(), 18);
        // A one-block stage is named by the stage.
        assert_eq!(names(&b)[..3], ["stem", "trunk_output.block1", "trunk_output.block2.block2-0"]);
        assert_eq!((b[1].1, b[3].1), (10, 8));
        // ShuffleNetV2: stem, 4 + 8 + 4 units, conv5, fc.
        let b = blocks_of("shufflenet_v2_x1_0");
        assert_eq!(b.len(), 1 + 16 + 2);
        assert_eq!(names(&b)[..3], ["conv1", "stage2.0", "stage2.1"]);
        assert_eq!(names(&b)[17..], ["conv5", "fc"]);
        assert_eq!((b[1].1, b[2].1), (10, 6));
    }

    #[test]
    fn squeezenet_groups_each_fire_module() {
        let b = blocks_of("squeezenet1_1");
        let want = [
            "features.0",
            "features.3",
            "features.4",
            "features.6",
            "features.7",
            "features.9",
            "features.10",
        ];
        assert_eq!(names(&b)[..7], want);
        assert_eq!(names(&b)[7..], ["features.11", "features.12", "classifier"]);
        assert!(b[1..9].iter().all(|b| b.1 == 3));
        assert_eq!(blocks_of("squeezenet1_0").len(), 10);
    }

    #[test]
    fn plain_sequences_are_layer_by_layer_with_batch_norm_beside_its_convolution() {
        let b = blocks_of("vgg11_bn");
        assert_eq!(names(&b)[..2], ["features.0", "features.4"]);
        assert_eq!(names(&b)[8..], ["classifier.0", "classifier.3", "classifier.6"]);
        assert_eq!(b.iter().map(|b| b.1).collect::<Vec<_>>(), [2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1]);
        assert_eq!(blocks_of("vgg16").len(), 16);
        assert_eq!(blocks_of("vgg11").len(), 11);
        assert_eq!(blocks_of("alexnet").len(), 8);
        let cnn = blocks_of("fmnist_cnn");
        assert_eq!(cnn, [("conv1".into(), 1), ("conv2".into(), 1), ("fc1".into(), 1), ("fc2".into(), 1)]);
    }

    #[test]
    fn every_architecture_has_unique_block_names_and_layers_keep_their_own() {
        for arch in crate::model::zoo::ARCHITECTURES.iter().map(|a| a.name) {
            let b = blocks_of(arch);
            let mut seen = std::collections::HashSet::new();
            assert!(b.iter().all(|b| seen.insert(b.0.clone())), "{arch}: {:?}", names(&b));
        }
        let layers = param_layers(&key_order("resnet18", None).unwrap());
        let units = Granularity::Layer.units(layers.clone());
        assert_eq!(units.len(), 41);
        assert!(units.iter().zip(&layers).all(|(u, l)| u.name == l.name && u.layers == [l.clone()]));
    }

    #[test]
    fn names_without_an_index_group_by_their_top_level_module() {
        // Inception v3's torchvision names (fragility has no builder for it).
        let layer = |name: &str, kind| ParamLayer { name: name.into(), kind, keys: Vec::new() };
        let (c, n, l) = (ParamKind::Conv, ParamKind::BatchNorm, ParamKind::Linear);
        let layers = vec![
            layer("Conv2d_1a_3x3.conv", c),
            layer("Conv2d_1a_3x3.bn", n),
            layer("Mixed_5b.branch1x1.conv", c),
            layer("Mixed_5b.branch1x1.bn", n),
            layer("Mixed_5b.branch5x5_1.conv", c),
            layer("Mixed_5b.branch5x5_1.bn", n),
            layer("Mixed_5b.branch_pool.conv", c),
            layer("fc", l),
        ];
        let b: Vec<(String, usize)> = blocks(layers).into_iter().map(|b| (b.name, b.layers.len())).collect();
        assert_eq!(b, [("Conv2d_1a_3x3".into(), 2), ("Mixed_5b".into(), 5), ("fc".into(), 1)]);
    }

    #[test]
    fn granularities_have_their_config_names() {
        assert_eq!(Granularity::from_name("block"), Some(Granularity::Block));
        assert_eq!(Granularity::from_name("layer").map(Granularity::name), Some("layer"));
        assert_eq!(Granularity::from_name("blocks"), None);
    }
}

//! MobileNetV3 small and large (Howard et al. 2019, "Searching for MobileNetV3") as
//! torchvision 0.29 defines them (`models/mobilenetv3.py`), width multiplier 1.0, without the
//! reduced tail or dilation (torchvision's defaults).
//!
//! Every batch norm is `BatchNorm2d(eps=1e-3)` ([`BN_EPS`], not PyTorch's default 1e-5; the
//! ε is not stored in a `state_dict`). `features.0` is a `Conv2dNormActivation` (3×3 stride-2
//! conv `.0`, batch norm `.1`, Hardswish `.2`) to 16 channels; `features.1`.. are inverted
//! residual blocks, one per row of torchvision's `InvertedResidualConfig` table ([`SMALL`]:
//! `features.1`..`features.11`; [`LARGE`]: `features.1`..`features.15`); the last feature is a
//! 1×1 `Conv2dNormActivation` with Hardswish to 6× the last block's channels (`features.12`,
//! [576,7,7] at 224×224, for small; `features.16`, [960,7,7], for large). The head is
//! `avgpool` (global average pooling), `flatten`, `classifier.0` (linear to 1024 or 1280
//! features), Hardswish `classifier.1` and `classifier.3` (linear to the classes; dropout
//! `classifier.2` is left out).
//!
//! An inverted residual block `features.N` is a `Sequential` called `block`, whose layers
//! `block.K` are numbered in order: a 1×1 expansion `Conv2dNormActivation` (only when the
//! expanded channels differ from the input's), the k×k depthwise `Conv2dNormActivation`
//! (groups = channels, padding (k − 1)/2, the row's stride), a squeeze-and-excitation module
//! (rows marked SE), and the linear 1×1 projection `Conv2dNormActivation` (conv `.0`, batch
//! norm `.1`, no activation). The activations are ReLU or Hardswish by row. Blocks with stride
//! 1 and as many output as input channels add their input: `features.N.add` (torchvision
//! writes `result += input`, which torch.fx traces as an add).
//!
//! Squeeze-and-excitation `{p}` (torchvision's `ops.SqueezeExcitation` with a Hardsigmoid
//! gate) on a [C,H,W] map x: `{p}.avgpool` global average pool to [C,1,1], `{p}.fc1` a 1×1
//! conv with bias to S = `make_divisible(C/4, 8)` channels, ReLU `{p}.activation`, `{p}.fc2` a
//! 1×1 conv with bias back to C, Hardsigmoid `{p}.scale_activation` (clamp(z/6 + 1/2, 0, 1)),
//! then the product `{p}.mul` = scale ⊙ x ([C,1,1] broadcast over H×W). The product is the
//! functional `scale * input` of `SqueezeExcitation.forward`; it is named as torchvision's
//! feature-extraction tracer names a functional op (module path + `mul`, as for `add`).
//!
//! Aliases: `{p}` for every `Conv2dNormActivation` and SE module (its last node), its batch
//! norm `{p}.1` for the folded conv, `features.N.block` for the projection, `features.N` for
//! the block's output (the add where there is one), `features` for the last feature map.

use super::{conv, linear, pool_and_flatten, squeeze_excitation, stem, ConvSpec};
use crate::error::Result;
use crate::model::graph::{Add, Graph, GraphBuilder, NodeId, Nonlinearity, Op};
use crate::model::weights::Weights;

/// The ε of every batch norm in torchvision's MobileNetV3 (`partial(nn.BatchNorm2d,
/// eps=0.001, momentum=0.01)`).
const BN_EPS: f64 = 1e-3;

/// PyTorch's `nn.Hardsigmoid`: clamp(z/6 + 1/2, 0, 1).
const HARD_SIGMOID: Nonlinearity = Nonlinearity::HardSigmoid { alpha: 1.0 / 6.0, beta: 0.5 };

/// A block's activation: the tables' "RE" (ReLU) or "HS" (Hardswish).
#[derive(Debug, Clone, Copy)]
enum Act {
    Re,
    Hs,
}

impl Act {
    const fn nonlinearity(self) -> Nonlinearity {
        match self {
            Act::Re => Nonlinearity::Relu,
            Act::Hs => Nonlinearity::HardSwish,
        }
    }
}

/// One row of torchvision's `InvertedResidualConfig` table (dilation 1, width 1.0).
#[derive(Debug, Clone, Copy)]
struct Bneck {
    inputs: usize,
    kernel: usize,
    expanded: usize,
    outputs: usize,
    se: bool,
    act: Act,
    stride: usize,
}

/// `bneck_conf(input_channels, kernel, expanded_channels, out_channels, use_se, activation,
/// stride, 1)`.
const fn bneck(
    inputs: usize,
    kernel: usize,
    expanded: usize,
    outputs: usize,
    se: bool,
    act: Act,
    stride: usize,
) -> Bneck {
    Bneck { inputs, kernel, expanded, outputs, se, act, stride }
}

use Act::{Hs, Re};

/// `mobilenet_v3_large`'s blocks.
const LARGE: [Bneck; 15] = [
    bneck(16, 3, 16, 16, false, Re, 1),
    bneck(16, 3, 64, 24, false, Re, 2),
    bneck(24, 3, 72, 24, false, Re, 1),
    bneck(24, 5, 72, 40, true, Re, 2),
    bneck(40, 5, 120, 40, true, Re, 1),
    bneck(40, 5, 120, 40, true, Re, 1),
    bneck(40, 3, 240, 80, false, Hs, 2),
    bneck(80, 3, 200, 80, false, Hs, 1),
    bneck(80, 3, 184, 80, false, Hs, 1),
    bneck(80, 3, 184, 80, false, Hs, 1),
    bneck(80, 3, 480, 112, true, Hs, 1),
    bneck(112, 3, 672, 112, true, Hs, 1),
    bneck(112, 5, 672, 160, true, Hs, 2),
    bneck(160, 5, 960, 160, true, Hs, 1),
    bneck(160, 5, 960, 160, true, Hs, 1),
];

/// `mobilenet_v3_large`'s `last_channel` (classifier.0's out-features) before rounding.
const LARGE_LAST: usize = 1280;

/// `mobilenet_v3_small`'s blocks.
const SMALL: [Bneck; 11] = [
    bneck(16, 3, 16, 16, true, Re, 2),
    bneck(16, 3, 72, 24, false, Re, 2),
    bneck(24, 3, 88, 24, false, Re, 1),
    bneck(24, 5, 96, 40, true, Hs, 2),
    bneck(40, 5, 240, 40, true, Hs, 1),
    bneck(40, 5, 240, 40, true, Hs, 1),
    bneck(40, 5, 120, 48, true, Hs, 1),
    bneck(48, 5, 144, 48, true, Hs, 1),
    bneck(48, 5, 288, 96, true, Hs, 2),
    bneck(96, 5, 576, 96, true, Hs, 1),
    bneck(96, 5, 576, 96, true, Hs, 1),
];

/// `mobilenet_v3_small`'s `last_channel` before rounding.
const SMALL_LAST: usize = 1024;

/// torchvision's `_make_divisible(v, divisor)`: v rounded to the nearest multiple of
/// `divisor` (halves up), at least `divisor`, and bumped up by one `divisor` if that lost more
/// than 10 % of v. At width 1.0 every channel count in the tables is already a multiple of 8;
/// it matters for the squeeze channels (large's 72/4 = 18 → 24).
const fn make_divisible(v: usize, divisor: usize) -> usize {
    let rounded = (v + divisor / 2) / divisor * divisor;
    let new = if rounded > divisor { rounded } else { divisor };
    // new < 0.9·v
    if 10 * new < 9 * v {
        new + divisor
    } else {
        new
    }
}

/// A `Conv2dNormActivation` `{p}` (conv `{p}.0`, batch norm `{p}.1`, activation `{p}.2` if
/// any), aliased as `{p}`; returns its last node.
fn conv_norm_act(
    b: &mut GraphBuilder,
    w: &mut Weights,
    p: &str,
    x: NodeId,
    spec: ConvSpec,
    act: Option<Nonlinearity>,
) -> Result<NodeId> {
    let mut y = conv(b, w, &format!("{p}.0"), Some(&format!("{p}.1")), x, spec.bn_eps(BN_EPS))?;
    if let Some(act) = act {
        y = b.act(format!("{p}.2"), act, y);
    }
    b.alias(p, y);
    Ok(y)
}

/// The inverted residual block `{p}` of one table row.
fn inverted_residual(
    b: &mut GraphBuilder,
    w: &mut Weights,
    p: &str,
    x: NodeId,
    cfg: Bneck,
) -> Result<NodeId> {
    let act = Some(cfg.act.nonlinearity());
    let mut y = x;
    // `block.K`: the Sequential's layers, numbered as they are appended.
    let mut k = 0;
    let mut layer = || {
        let name = format!("{p}.block.{k}");
        k += 1;
        name
    };
    if cfg.expanded != cfg.inputs {
        let spec = ConvSpec::new(Some(cfg.inputs), cfg.expanded, 1);
        y = conv_norm_act(b, w, &layer(), y, spec, act)?;
    }
    let spec = ConvSpec::new(Some(cfg.expanded), cfg.expanded, cfg.kernel)
        .stride(cfg.stride)
        .padding((cfg.kernel - 1) / 2)
        .groups(cfg.expanded);
    y = conv_norm_act(b, w, &layer(), y, spec, act)?;
    if cfg.se {
        let squeeze = make_divisible(cfg.expanded / 4, 8);
        y = squeeze_excitation(
            b,
            w,
            &layer(),
            y,
            (cfg.expanded, squeeze),
            (Nonlinearity::Relu, HARD_SIGMOID),
        )?;
    }
    let spec = ConvSpec::new(Some(cfg.expanded), cfg.outputs, 1);
    y = conv_norm_act(b, w, &layer(), y, spec, None)?;
    b.alias(format!("{p}.block"), y);
    if cfg.stride == 1 && cfg.inputs == cfg.outputs {
        y = b.push(format!("{p}.add"), Op::Add(Add), &[y, x]);
    }
    b.alias(p, y);
    Ok(y)
}

/// torchvision's `MobileNetV3(settings, last_channel)`.
fn mobilenet_v3(w: &mut Weights, settings: &[Bneck], last_channel: usize) -> Result<Graph> {
    let first = settings.first().map_or(16, |s| s.inputs);
    let spec = ConvSpec::new(None, first, 3).stride(2).padding(1).bn_eps(BN_EPS);
    let mut b = stem(w, "features.0.0", Some("features.0.1"), spec)?;
    let x = b.last();
    let mut x = b.act("features.0.2", Nonlinearity::HardSwish, x);
    b.alias("features.0", x);
    for (i, cfg) in settings.iter().enumerate() {
        x = inverted_residual(&mut b, w, &format!("features.{}", i + 1), x, *cfg)?;
    }
    let inputs = settings.last().map_or(first, |s| s.outputs);
    let outputs = 6 * inputs;
    let p = format!("features.{}", settings.len() + 1);
    let spec = ConvSpec::new(Some(inputs), outputs, 1);
    x = conv_norm_act(&mut b, w, &p, x, spec, Some(Nonlinearity::HardSwish))?;
    b.alias("features", x);
    let x = pool_and_flatten(&mut b, "avgpool", x, 1);
    let hidden = make_divisible(last_channel, 8);
    let x = linear(&mut b, w, "classifier.0", x, outputs, Some(hidden))?;
    let x = b.act("classifier.1", Nonlinearity::HardSwish, x);
    let logits = linear(&mut b, w, "classifier.3", x, hidden, None)?;
    b.finish(logits)
}

/// torchvision's `mobilenet_v3_small` (width 1.0).
pub fn mobilenet_v3_small(w: &mut Weights) -> Result<Graph> {
    mobilenet_v3(w, &SMALL, SMALL_LAST)
}

/// torchvision's `mobilenet_v3_large` (width 1.0).
pub fn mobilenet_v3_large(w: &mut Weights) -> Result<Graph> {
    mobilenet_v3(w, &LARGE, LARGE_LAST)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check_architecture, state_dict};
    use super::*;
    use crate::model::graph::Shape;
    use candle_core::Device;

    #[test]
    fn mobilenet_v3_small_matches_torchvision() {
        check_architecture("mobilenet_v3_small", 2_542_856, Shape::Map(576, 7, 7));
    }

    #[test]
    fn mobilenet_v3_large_matches_torchvision() {
        check_architecture("mobilenet_v3_large", 5_483_032, Shape::Map(960, 7, 7));
    }

    #[test]
    fn make_divisible_follows_torchvision() {
        // _make_divisible(v, 8) for the squeeze channels both tables need.
        let squeeze: Vec<usize> = [16, 72, 96, 120, 144, 240, 288, 480, 576, 672, 960]
            .iter()
            .map(|c| make_divisible(c / 4, 8))
            .collect();
        assert_eq!(squeeze, [8, 24, 24, 32, 40, 64, 72, 120, 144, 168, 240]);
        assert_eq!((make_divisible(1024, 8), make_divisible(1280, 8)), (1024, 1280));
        // Rounds halves up (12 → 16) and to nearest (35 → 32), never below the divisor (1 → 8),
        // and never loses 10 % (11 → 8 → 16), as Python's gives.
        let got = [12, 35, 1, 11].map(|v| make_divisible(v, 8));
        assert_eq!(got, [16, 32, 8, 16]);
    }

    #[test]
    fn mobilenet_v3_small_blocks_are_named_like_torchvision() {
        let mut w = Weights::synthesize(1000, 3, &Device::Cpu);
        let g = mobilenet_v3_small(&mut w).unwrap();
        let keys: Vec<String> = w.recorded().into_iter().map(|(k, _)| k).collect();
        let has = |k: &str| keys.iter().any(|x| x == k);
        // features.1 (16 → 16 expanded): no expansion; depthwise block.0, SE block.1,
        // projection block.2.
        assert!(has("features.1.block.0.0.weight") && has("features.1.block.0.1.running_var"));
        assert!(has("features.1.block.1.fc1.bias") && has("features.1.block.1.fc2.weight"));
        assert!(has("features.1.block.2.1.weight") && !has("features.1.block.3.0.weight"));
        // features.2 has an expansion and no SE; features.4 both.
        assert!(has("features.2.block.2.0.weight") && !has("features.2.block.1.fc1.weight"));
        assert!(has("features.4.block.2.fc1.weight") && has("features.4.block.3.0.weight"));
        assert!(has("classifier.0.bias") && has("classifier.3.weight") && !has("classifier.2.weight"));

        let name = |n: &str| g.nodes()[g.find(n).unwrap()].name.clone();
        assert_eq!(name("features.0"), "features.0.2");
        assert_eq!(name("features.1"), "features.1.block.2.0");
        assert_eq!(name("features.1.block.1"), "features.1.block.1.mul");
        assert_eq!(name("features.1.block.2.1"), "features.1.block.2.0");
        assert_eq!(name("features.3"), "features.3.add");
        assert_eq!(name("features.3.block"), "features.3.block.2.0");
        assert_eq!(name("features.12"), "features.12.2");
        assert_eq!(name("features"), "features.12.2");

        let node = |n: &str| &g.nodes()[g.find(n).unwrap()];
        let act = |n: &str| match node(n).op {
            Op::Act(a) => a,
            ref op => panic!("{n}: {op:?}"),
        };
        assert_eq!(act("features.1.block.1.scale_activation"), HARD_SIGMOID);
        assert_eq!(act("features.1.block.1.activation"), Nonlinearity::Relu);
        assert_eq!(act("features.2.block.0.2"), Nonlinearity::Relu);
        assert_eq!(act("features.4.block.0.2"), Nonlinearity::HardSwish);
        assert_eq!(act("classifier.1"), Nonlinearity::HardSwish);
        let mul = node("features.4.block.2.mul");
        assert_eq!(
            mul.inputs,
            [g.find("features.4.block.2.scale_activation").unwrap(), g.find("features.4.block.1").unwrap()]
        );
        match &node("features.4.block.1.0").op {
            Op::Conv(c) => assert_eq!((c.groups, c.stride, c.padding), (96, [2, 2], [2; 4])),
            op => panic!("{op:?}"),
        }

        let shapes = g.shapes((224, 224)).unwrap();
        let shape = |n: &str| shapes[g.find(n).unwrap()];
        assert_eq!(shape("features.1"), Shape::Map(16, 56, 56));
        assert_eq!(shape("features.1.block.1.fc1"), Shape::Map(8, 1, 1));
        assert_eq!(shape("features.3"), Shape::Map(24, 28, 28));
        assert_eq!(shape("features.8"), Shape::Map(48, 14, 14));
        assert_eq!(shape("features.11"), Shape::Map(96, 7, 7));
        assert_eq!(shape("classifier.0"), Shape::Flat(1024));
    }

    #[test]
    fn mobilenet_v3_large_blocks_are_named_like_torchvision() {
        let mut w = Weights::synthesize(1000, 3, &Device::Cpu);
        let g = mobilenet_v3_large(&mut w).unwrap();
        let keys: Vec<String> = w.recorded().into_iter().map(|(k, _)| k).collect();
        let has = |k: &str| keys.iter().any(|x| x == k);
        // features.1 (16 → 16, no SE): depthwise block.0, projection block.1, and a residual.
        assert!(has("features.1.block.1.0.weight") && !has("features.1.block.2.0.weight"));
        // 72 / 4 = 18 squeeze channels round to 24.
        let fc1 = w.recorded().into_iter().find(|(k, _)| k == "features.4.block.2.fc1.weight").unwrap();
        assert_eq!(fc1.1, [24, 72, 1, 1]);

        let name = |n: &str| g.nodes()[g.find(n).unwrap()].name.clone();
        assert_eq!(name("features.1"), "features.1.add");
        assert_eq!(name("features.2"), "features.2.block.2.0");
        assert_eq!(name("features.11"), "features.11.block.3.0");
        assert_eq!(name("features.12"), "features.12.add");
        assert_eq!(name("features.16"), "features.16.2");

        let shapes = g.shapes((224, 224)).unwrap();
        let shape = |n: &str| shapes[g.find(n).unwrap()];
        assert_eq!(shape("features.1"), Shape::Map(16, 112, 112));
        assert_eq!(shape("features.6"), Shape::Map(40, 28, 28));
        assert_eq!(shape("features.10"), Shape::Map(80, 14, 14));
        assert_eq!(shape("features.15"), Shape::Map(160, 7, 7));
        assert_eq!(shape("classifier.0"), Shape::Flat(1280));
    }

    #[test]
    fn batch_norms_fold_with_torchvisions_eps() {
        // Synthesized batch norms are γ = 1, β = 0, mean 0, var 1: the folded kernel is the
        // kernel times 1/√(1 + ε), ε = 1e-3 (1e-5 would be off by 5e-4).
        let dict = state_dict("mobilenet_v3_small", 10, 3);
        let raw = dict["features.0.0.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let g = mobilenet_v3_small(&mut Weights::from_tensors(dict, "m.safetensors")).unwrap();
        let Op::Conv(c) = &g.nodes()[g.find("features.0.0").unwrap()].op else { panic!() };
        let folded = c.weight.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = 1.0 / (1.0f64 + 1e-3).sqrt();
        for (f, r) in folded.iter().zip(&raw) {
            assert!((*f as f64 - *r as f64 * scale).abs() <= 1e-7 * r.abs() as f64 + 1e-9, "{f} {r}");
        }
    }
}

//! EfficientNet-B0 (Tan and Le 2019) as torchvision defines it (`efficientnet_b0`: width and
//! depth multipliers 1.0).
//!
//! `features.0` is a `Conv2dNormActivation` (3×3 stride-2 conv `.0`, batch norm `.1`, SiLU
//! `.2`) to 32 channels; `features.1`..`features.7` are the seven stages of MBConv blocks from
//! the settings (expansion, kernel, stride, in, out, layers) below, block i of stage s named
//! `features.{s}.{i}`; `features.8` is a 1×1 `Conv2dNormActivation` to 1280 channels with SiLU.
//! The head is global average pooling `avgpool`, `flatten` and `classifier.1` (dropout
//! `classifier.0` is left out).
//!
//! An MBConv block `{p}` is `{p}.block`: with expansion t > 1 a 1×1 `Conv2dNormActivation`
//! `block.0` to t·C_in channels with SiLU; a k×k depthwise `Conv2dNormActivation` (stride s in
//! a stage's first block, SiLU); squeeze-and-excitation `block.{k+1}` (`avgpool`, the 1×1
//! convolutions `fc1` to max(1, C_in/4) channels and `fc2` back, with biases, SiLU `activation`
//! between them and sigmoid `scale_activation` after, and the gate's product with the block's
//! features, named `block.{k+1}.mul`); and the 1×1 projection `block.{k+2}` (conv `.0`, batch
//! norm `.1`, no activation). A block with stride 1 and C_in = C_out adds its input
//! (`{p}.add`; stochastic depth is the identity in eval mode). `{p}` aliases the block's
//! output. At 224×224 `features.8` gives [1280,7,7].

use super::{conv, linear, pool_and_flatten, squeeze_excitation, stem, ConvSpec};
use crate::error::Result;
use crate::model::graph::{Add, Graph, GraphBuilder, NodeId, Nonlinearity, Op};
use crate::model::weights::Weights;

/// torchvision's B0 stages: expansion, kernel, stride, input and output channels, blocks.
const SETTINGS: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
];

/// A `Conv2dNormActivation` `{p}` with SiLU (conv `{p}.0`, batch norm `{p}.1`, SiLU `{p}.2`),
/// aliased as `{p}`; returns the SiLU.
fn conv_norm_silu(
    b: &mut GraphBuilder,
    w: &mut Weights,
    p: &str,
    x: NodeId,
    spec: ConvSpec,
) -> Result<NodeId> {
    let y = conv(b, w, &format!("{p}.0"), Some(&format!("{p}.1")), x, spec)?;
    let y = b.act(format!("{p}.2"), Nonlinearity::Silu, y);
    b.alias(p, y);
    Ok(y)
}

/// The MBConv block `{p}` from `inputs` to `outputs` channels.
fn mbconv(
    b: &mut GraphBuilder,
    w: &mut Weights,
    p: &str,
    x: NodeId,
    (expansion, kernel, stride, inputs, outputs): (usize, usize, usize, usize, usize),
) -> Result<NodeId> {
    let hidden = inputs * expansion;
    let mut y = x;
    let mut k = 0;
    if hidden != inputs {
        y = conv_norm_silu(b, w, &format!("{p}.block.0"), y, ConvSpec::new(Some(inputs), hidden, 1))?;
        k += 1;
    }
    let spec =
        ConvSpec::new(Some(hidden), hidden, kernel).stride(stride).padding((kernel - 1) / 2).groups(hidden);
    y = conv_norm_silu(b, w, &format!("{p}.block.{k}"), y, spec)?;
    let se = format!("{p}.block.{}", k + 1);
    y = squeeze_excitation(
        b,
        w,
        &se,
        y,
        (hidden, (inputs / 4).max(1)),
        (Nonlinearity::Silu, Nonlinearity::Sigmoid),
    )?;
    let proj = format!("{p}.block.{}", k + 2);
    y = conv(
        b,
        w,
        &format!("{proj}.0"),
        Some(&format!("{proj}.1")),
        y,
        ConvSpec::new(Some(hidden), outputs, 1),
    )?;
    b.alias(&proj, y);
    b.alias(format!("{p}.block"), y);
    if stride == 1 && inputs == outputs {
        y = b.push(format!("{p}.add"), Op::Add(Add), &[y, x]);
    }
    b.alias(p, y);
    Ok(y)
}

/// torchvision's `efficientnet_b0`.
pub fn efficientnet_b0(w: &mut Weights) -> Result<Graph> {
    let mut b =
        stem(w, "features.0.0", Some("features.0.1"), ConvSpec::new(None, 32, 3).stride(2).padding(1))?;
    let x = b.last();
    let mut x = b.act("features.0.2", Nonlinearity::Silu, x);
    b.alias("features.0", x);
    for (s, &(t, k, stride, inputs, outputs, n)) in SETTINGS.iter().enumerate() {
        let stage = format!("features.{}", s + 1);
        for i in 0..n {
            let (cin, st) = if i == 0 { (inputs, stride) } else { (outputs, 1) };
            x = mbconv(&mut b, w, &format!("{stage}.{i}"), x, (t, k, st, cin, outputs))?;
        }
        b.alias(stage, x);
    }
    let last = 1280;
    x = conv_norm_silu(&mut b, w, "features.8", x, ConvSpec::new(Some(320), last, 1))?;
    b.alias("features", x);
    let x = pool_and_flatten(&mut b, "avgpool", x, 1);
    let logits = linear(&mut b, w, "classifier.1", x, last, None)?;
    b.finish(logits)
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_architecture;
    use crate::model::graph::{Op, Shape};
    use crate::model::weights::Weights;
    use candle_core::Device;

    #[test]
    fn efficientnet_b0_matches_torchvision() {
        check_architecture("efficientnet_b0", 5_288_548, Shape::Map(1280, 7, 7));
    }

    #[test]
    fn efficientnet_b0_blocks_are_named_like_torchvision() {
        let mut w = Weights::synthesize(1000, 3, &Device::Cpu);
        let g = super::efficientnet_b0(&mut w).unwrap();
        let keys: Vec<String> = w.recorded().into_iter().map(|(k, _)| k).collect();
        // The t = 1 block has no expansion: depthwise block.0, SE block.1, projection block.2.
        for key in [
            "features.1.0.block.0.0.weight",
            "features.1.0.block.1.fc1.bias",
            "features.1.0.block.2.1.running_var",
            "features.2.0.block.2.fc2.weight",
            "features.2.1.block.3.0.weight",
            "features.8.1.weight",
        ] {
            assert!(keys.contains(&key.to_string()), "{key}");
        }
        let name = |n: &str| g.nodes()[g.find(n).unwrap()].name.clone();
        assert_eq!(name("features.2.1"), "features.2.1.add");
        assert_eq!(name("features.2.0"), "features.2.0.block.3.0");
        assert_eq!(name("features.2.0.block.2"), "features.2.0.block.2.mul");
        assert_eq!(name("features.8"), "features.8.2");
        let dw = &g.nodes()[g.find("features.3.0.block.1.0").unwrap()];
        match &dw.op {
            Op::Conv(c) => assert_eq!((c.groups, c.stride, c.padding), (144, [2, 2], [2; 4])),
            op => panic!("{op:?}"),
        }
        let shapes = g.shapes((224, 224)).unwrap();
        assert_eq!(shapes[g.find("features.7").unwrap()], Shape::Map(320, 7, 7));
        assert_eq!(shapes[g.find("features.2.0.block.2.fc1").unwrap()], Shape::Map(4, 1, 1));
    }
}

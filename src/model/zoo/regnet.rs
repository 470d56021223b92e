//! RegNetY-400MF (Radosavovic et al. 2020) as torchvision defines it (`regnet_y_400mf`).
//!
//! `stem` (3×3 stride-2 conv `.0`, batch norm `.1`, ReLU `.2`) to 32 channels, then the four
//! stages `trunk_output.block{s}` of residual bottleneck blocks `trunk_output.block{s}.block{s}-{i}`
//! with the widths, depths and group width 8 that torchvision's `BlockParams` computes for
//! this model (depth 16, w₀ 48, wₐ 27.89, wₘ 2.09; listed below), global average pooling
//! `avgpool`, `flatten` and `fc`.
//!
//! A block `{p}` computes `f` (`f.a`: 1×1 conv + batch norm + ReLU; `f.b`: 3×3 grouped conv,
//! stride 2 in a stage's first block, + batch norm + ReLU; `f.se`: squeeze-and-excitation to
//! round(0.25·C_in) channels with ReLU and a sigmoid gate; `f.c`: 1×1 conv + batch norm), adds
//! the shortcut (`proj`: 1×1 conv, stride as `f.b`, + batch norm, where the width or the size
//! changes; else the input) as `{p}.add`, and applies its ReLU `{p}.activation`, which `{p}`
//! aliases. At 224×224 `trunk_output` gives [440,7,7].

use super::{conv, linear, pool_and_flatten, relu, squeeze_excitation, stem, ConvSpec};
use crate::error::Result;
use crate::model::graph::{Add, Graph, GraphBuilder, NodeId, Nonlinearity, Op};
use crate::model::weights::Weights;

/// The stages torchvision's `BlockParams` gives regnet_y_400mf: output width and blocks
/// (stride 2 in each stage's first block, group width 8, bottleneck multiplier 1).
const STAGES: [(usize, usize); 4] = [(48, 1), (104, 3), (208, 6), (440, 6)];
/// Channels per group of every 3×3 convolution.
const GROUP_WIDTH: usize = 8;
/// Squeeze-and-excitation's width as a share of the block's input width.
const SE_RATIO: f64 = 0.25;

/// A `Conv2dNormActivation` `{p}` (conv `{p}.0`, batch norm `{p}.1`, and a ReLU `{p}.2` when
/// `act`), aliased as `{p}`.
fn conv_norm(
    b: &mut GraphBuilder,
    w: &mut Weights,
    p: &str,
    x: NodeId,
    spec: ConvSpec,
    act: bool,
) -> Result<NodeId> {
    let y = conv(b, w, &format!("{p}.0"), Some(&format!("{p}.1")), x, spec)?;
    let y = if act { relu(b, &format!("{p}.2"), y) } else { y };
    b.alias(p, y);
    Ok(y)
}

/// The residual bottleneck block `{p}` from `inputs` to `outputs` channels.
fn block(
    b: &mut GraphBuilder,
    w: &mut Weights,
    p: &str,
    x: NodeId,
    (inputs, outputs, stride): (usize, usize, usize),
) -> Result<NodeId> {
    let shortcut = if inputs != outputs || stride != 1 {
        conv_norm(
            b,
            w,
            &format!("{p}.proj"),
            x,
            ConvSpec::new(Some(inputs), outputs, 1).stride(stride),
            false,
        )?
    } else {
        x
    };
    let f = format!("{p}.f");
    let y = conv_norm(b, w, &format!("{f}.a"), x, ConvSpec::new(Some(inputs), outputs, 1), true)?;
    let spec =
        ConvSpec::new(Some(outputs), outputs, 3).stride(stride).padding(1).groups(outputs / GROUP_WIDTH);
    let y = conv_norm(b, w, &format!("{f}.b"), y, spec, true)?;
    let squeeze = (SE_RATIO * inputs as f64).round() as usize;
    let y = squeeze_excitation(
        b,
        w,
        &format!("{f}.se"),
        y,
        (outputs, squeeze),
        (Nonlinearity::Relu, Nonlinearity::Sigmoid),
    )?;
    let y = conv_norm(b, w, &format!("{f}.c"), y, ConvSpec::new(Some(outputs), outputs, 1), false)?;
    b.alias(&f, y);
    let sum = b.push(format!("{p}.add"), Op::Add(Add), &[shortcut, y]);
    let out = relu(b, &format!("{p}.activation"), sum);
    b.alias(p, out);
    Ok(out)
}

/// torchvision's `regnet_y_400mf`.
pub fn regnet_y_400mf(w: &mut Weights) -> Result<Graph> {
    let mut b = stem(w, "stem.0", Some("stem.1"), ConvSpec::new(None, 32, 3).stride(2).padding(1))?;
    let x = b.last();
    let mut x = relu(&mut b, "stem.2", x);
    b.alias("stem", x);
    let mut channels = 32;
    for (s, &(outputs, depth)) in STAGES.iter().enumerate() {
        let stage = format!("trunk_output.block{}", s + 1);
        for i in 0..depth {
            let stride = if i == 0 { 2 } else { 1 };
            x = block(&mut b, w, &format!("{stage}.block{}-{i}", s + 1), x, (channels, outputs, stride))?;
            channels = outputs;
        }
        b.alias(stage, x);
    }
    b.alias("trunk_output", x);
    let x = pool_and_flatten(&mut b, "avgpool", x, 1);
    let logits = linear(&mut b, w, "fc", x, channels, None)?;
    b.finish(logits)
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_architecture;
    use crate::model::graph::{Op, Shape};
    use crate::model::weights::Weights;
    use candle_core::Device;

    #[test]
    fn regnet_y_400mf_matches_torchvision() {
        check_architecture("regnet_y_400mf", 4_344_144, Shape::Map(440, 7, 7));
    }

    #[test]
    fn regnet_blocks_are_named_and_grouped_like_torchvision() {
        let mut w = Weights::synthesize(1000, 3, &Device::Cpu);
        let g = super::regnet_y_400mf(&mut w).unwrap();
        let keys: Vec<String> = w.recorded().into_iter().map(|(k, _)| k).collect();
        for key in [
            "trunk_output.block1.block1-0.proj.0.weight",
            "trunk_output.block1.block1-0.f.se.fc1.bias",
            "trunk_output.block2.block2-2.f.c.1.running_mean",
        ] {
            assert!(keys.contains(&key.to_string()), "{key}");
        }
        assert!(!keys.contains(&"trunk_output.block2.block2-1.proj.0.weight".to_string()));
        let name = |n: &str| g.nodes()[g.find(n).unwrap()].name.clone();
        assert_eq!(name("trunk_output"), "trunk_output.block4.block4-5.activation");
        let op = |n: &str| g.nodes()[g.find(n).unwrap()].op.clone();
        match op("trunk_output.block3.block3-1.f.b.0") {
            Op::Conv(c) => assert_eq!((c.groups, c.stride), (26, [1, 1])),
            op => panic!("{op:?}"),
        }
        let shapes = g.shapes((224, 224)).unwrap();
        // The first block's squeeze: round(0.25 · 32) = 8 channels; later blocks' from 104.
        assert_eq!(shapes[g.find("trunk_output.block1.block1-0.f.se.fc1").unwrap()], Shape::Map(8, 1, 1));
        assert_eq!(shapes[g.find("trunk_output.block2.block2-1.f.se.fc1").unwrap()], Shape::Map(26, 1, 1));
        assert_eq!(shapes[g.find("trunk_output.block2").unwrap()], Shape::Map(104, 28, 28));
    }
}

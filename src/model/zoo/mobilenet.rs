//! MobileNetV2 (Sandler et al. 2018) as torchvision defines it, width multiplier 1.0.
//!
//! `features.0` is a `Conv2dNormActivation` (3×3 stride-2 conv `.0`, batch norm `.1`,
//! ReLU6 `.2`) to 32 channels; `features.1`..`features.17` are inverted residual blocks
//! from the settings (t, c, n, s) below; `features.18` is a 1×1 `Conv2dNormActivation` to
//! 1280 channels. The head is global average pooling `avgpool` (functional in torchvision),
//! `flatten` and `classifier.1` (dropout `classifier.0` is left out).
//!
//! An inverted residual block `features.N` with expansion t: `conv.0` a 1×1 expansion to
//! t·C_in channels (absent for t = 1), then a 3×3 depthwise `Conv2dNormActivation` (groups =
//! channels, stride s in a stage's first block), then the linear 1×1 projection `conv.{k}`
//! with its batch norm `conv.{k+1}`; blocks with stride 1 and C_in = C_out add their input
//! (`features.N.add`). `features.N` aliases the block's output, `features.N.conv` the
//! projection. At 224×224 `features.18` gives [1280,7,7].

use super::{conv, linear, pool_and_flatten, stem, ConvSpec};
use crate::error::Result;
use crate::model::graph::{Add, Graph, GraphBuilder, NodeId, Nonlinearity, Op};
use crate::model::weights::Weights;

/// torchvision's inverted residual settings: expansion t, output channels c, repeats n,
/// first stride s.
const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// A `Conv2dNormActivation` `{p}` (conv `{p}.0`, batch norm `{p}.1`, ReLU6 `{p}.2`), aliased
/// as `{p}`; returns the ReLU6.
fn conv_norm_act(
    b: &mut GraphBuilder,
    w: &mut Weights,
    p: &str,
    x: NodeId,
    spec: ConvSpec,
) -> Result<NodeId> {
    let y = conv(b, w, &format!("{p}.0"), Some(&format!("{p}.1")), x, spec)?;
    let y = b.act(format!("{p}.2"), Nonlinearity::Relu6, y);
    b.alias(p, y);
    Ok(y)
}

/// The inverted residual block `{p}` from `inputs` to `outputs` channels.
fn inverted_residual(
    b: &mut GraphBuilder,
    w: &mut Weights,
    p: &str,
    x: NodeId,
    (inputs, outputs, stride, expansion): (usize, usize, usize, usize),
) -> Result<NodeId> {
    let hidden = inputs * expansion;
    let mut y = x;
    let mut k = 0;
    if expansion != 1 {
        y = conv_norm_act(b, w, &format!("{p}.conv.0"), y, ConvSpec::new(Some(inputs), hidden, 1))?;
        k += 1;
    }
    let spec = ConvSpec::new(Some(hidden), hidden, 3).stride(stride).padding(1).groups(hidden);
    y = conv_norm_act(b, w, &format!("{p}.conv.{k}"), y, spec)?;
    let spec = ConvSpec::new(Some(hidden), outputs, 1);
    y = conv(b, w, &format!("{p}.conv.{}", k + 1), Some(&format!("{p}.conv.{}", k + 2)), y, spec)?;
    b.alias(format!("{p}.conv"), y);
    if stride == 1 && inputs == outputs {
        y = b.push(format!("{p}.add"), Op::Add(Add), &[x, y]);
    }
    b.alias(p, y);
    Ok(y)
}

/// torchvision's `mobilenet_v2` (width 1.0).
pub fn mobilenet_v2(w: &mut Weights) -> Result<Graph> {
    let mut b =
        stem(w, "features.0.0", Some("features.0.1"), ConvSpec::new(None, 32, 3).stride(2).padding(1))?;
    let x = b.last();
    let mut x = b.act("features.0.2", Nonlinearity::Relu6, x);
    b.alias("features.0", x);
    let mut channels = 32;
    let mut index = 1;
    for (t, c, n, s) in SETTINGS {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            x = inverted_residual(&mut b, w, &format!("features.{index}"), x, (channels, c, stride, t))?;
            channels = c;
            index += 1;
        }
    }
    let last = 1280;
    x = conv_norm_act(&mut b, w, &format!("features.{index}"), x, ConvSpec::new(Some(channels), last, 1))?;
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
    fn mobilenet_v2_matches_torchvision() {
        check_architecture("mobilenet_v2", 3_504_872, Shape::Map(1280, 7, 7));
    }

    #[test]
    fn mobilenet_v2_blocks_are_named_like_torchvision() {
        let mut w = Weights::synthesize(1000, 3, &Device::Cpu);
        let g = super::mobilenet_v2(&mut w).unwrap();
        let keys: Vec<String> = w.recorded().into_iter().map(|(k, _)| k).collect();
        // The t = 1 block has no expansion: its depthwise conv is conv.0, projection conv.1.
        assert!(keys.contains(&"features.1.conv.0.0.weight".to_string()));
        assert!(keys.contains(&"features.1.conv.2.running_var".to_string()));
        assert!(keys.contains(&"features.2.conv.3.weight".to_string()));
        assert!(!keys.contains(&"features.1.conv.3.weight".to_string()));
        let name = |n: &str| g.nodes()[g.find(n).unwrap()].name.clone();
        assert_eq!(name("features.0"), "features.0.2");
        assert_eq!(name("features.3"), "features.3.add");
        assert_eq!(name("features.2"), "features.2.conv.2");
        assert_eq!(name("features.18"), "features.18.2");
        let dw = &g.nodes()[g.find("features.2.conv.1.0").unwrap()];
        match &dw.op {
            Op::Conv(c) => assert_eq!((c.groups, c.stride), (96, [2, 2])),
            op => panic!("{op:?}"),
        }
        let shapes = g.shapes((224, 224)).unwrap();
        assert_eq!(shapes[g.find("features.17").unwrap()], Shape::Map(320, 7, 7));
        assert_eq!(shapes[g.find("features.13").unwrap()], Shape::Map(96, 14, 14));
    }
}

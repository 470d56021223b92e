//! ShuffleNetV2 (Ma et al. 2018) as torchvision defines it (`shufflenet_v2_x1_0`).
//!
//! `conv1` (3×3 stride-2 conv `.0`, batch norm `.1`, ReLU `.2`) to 24 channels, `maxpool`
//! (3×3, stride 2, padding 1), the stages `stage2`..`stage4` of inverted residual units
//! (4, 8 and 4 units to 116, 232 and 464 channels), `conv5` (1×1 conv `.0`, batch norm `.1`,
//! ReLU `.2`) to 1024 channels, the global mean `mean` (`x.mean([2, 3])`), `flatten` and `fc`.
//!
//! A unit `stage{s}.{i}`: the first of a stage (stride 2) runs `branch1` (3×3 depthwise conv
//! `.0` with batch norm `.1`, 1×1 conv `.2`, batch norm `.3`, ReLU `.4`) and `branch2` on the
//! whole input; the others split the channels in halves (`chunk`, `chunk_1`: torch.chunk) and
//! run `branch2` on the second. `branch2` is a 1×1 conv `.0` + batch norm `.1` + ReLU `.2`, a
//! 3×3 depthwise conv `.3` + batch norm `.4`, a 1×1 conv `.5` + batch norm `.6` + ReLU `.7`.
//! The two halves are concatenated (`cat`) and shuffled in two groups (`channel_shuffle`: the
//! view–transpose–view as one channel permutation, [`crate::model::ops::Channels`]), which the
//! unit's name aliases. At 224×224 `conv5` gives [1024,7,7].

use super::{conv, linear, pool_and_flatten, relu, stem, ConvSpec};
use crate::error::Result;
use crate::model::graph::{Channels, Concat, Graph, GraphBuilder, NodeId, Op};
use crate::model::weights::Weights;

/// torchvision's x1.0 stages: units and output channels of `stage2`..`stage4`.
const STAGES: [(usize, usize); 3] = [(4, 116), (8, 232), (4, 464)];

/// A 1×1 conv `{p}.{i}` with batch norm `{p}.{i+1}` (and a ReLU `{p}.{i+2}` when `act`).
fn pointwise(
    b: &mut GraphBuilder,
    w: &mut Weights,
    p: &str,
    i: usize,
    x: NodeId,
    (cin, cout): (usize, usize),
    act: bool,
) -> Result<NodeId> {
    let y = conv(
        b,
        w,
        &format!("{p}.{i}"),
        Some(&format!("{p}.{}", i + 1)),
        x,
        ConvSpec::new(Some(cin), cout, 1),
    )?;
    Ok(if act { relu(b, &format!("{p}.{}", i + 2), y) } else { y })
}

/// A 3×3 depthwise conv `{p}.{i}` (stride `stride`, padding 1) with batch norm `{p}.{i+1}`.
fn depthwise(
    b: &mut GraphBuilder,
    w: &mut Weights,
    p: &str,
    i: usize,
    x: NodeId,
    c: usize,
    stride: usize,
) -> Result<NodeId> {
    let spec = ConvSpec::new(Some(c), c, 3).stride(stride).padding(1).groups(c);
    conv(b, w, &format!("{p}.{i}"), Some(&format!("{p}.{}", i + 1)), x, spec)
}

/// The unit `{p}` from `inputs` to `outputs` channels.
fn unit(
    b: &mut GraphBuilder,
    w: &mut Weights,
    p: &str,
    x: NodeId,
    (inputs, outputs, stride): (usize, usize, usize),
) -> Result<NodeId> {
    let half = outputs / 2;
    let (left, right, right_in) = if stride > 1 {
        let b1 = format!("{p}.branch1");
        let y = depthwise(b, w, &b1, 0, x, inputs, stride)?;
        let y = pointwise(b, w, &b1, 2, y, (inputs, half), true)?;
        b.alias(&b1, y);
        (y, x, inputs)
    } else {
        let x1 =
            b.push(format!("{p}.chunk"), Op::Channels(Channels { index: (0..inputs / 2).collect() }), &[x]);
        let x2 = b.push(
            format!("{p}.chunk_1"),
            Op::Channels(Channels { index: (inputs / 2..inputs).collect() }),
            &[x],
        );
        (x1, x2, inputs / 2)
    };
    let b2 = format!("{p}.branch2");
    let y = pointwise(b, w, &b2, 0, right, (right_in, half), true)?;
    let y = depthwise(b, w, &b2, 3, y, half, stride)?;
    let y = pointwise(b, w, &b2, 5, y, (half, half), true)?;
    b.alias(&b2, y);
    let cat = b.push(format!("{p}.cat"), Op::Concat(Concat), &[left, y]);
    let out = b.push(format!("{p}.channel_shuffle"), Op::Channels(Channels::shuffle(outputs, 2)), &[cat]);
    b.alias(p, out);
    Ok(out)
}

/// torchvision's `shufflenet_v2_x1_0`.
pub fn shufflenet_v2_x1_0(w: &mut Weights) -> Result<Graph> {
    let mut b = stem(w, "conv1.0", Some("conv1.1"), ConvSpec::new(None, 24, 3).stride(2).padding(1))?;
    let x = b.last();
    let x = relu(&mut b, "conv1.2", x);
    b.alias("conv1", x);
    let mut x = b.max_pool("maxpool", x, 3, 2, 1, false);
    let mut channels = 24;
    for (s, &(units, outputs)) in STAGES.iter().enumerate() {
        let stage = format!("stage{}", s + 2);
        for i in 0..units {
            let stride = if i == 0 { 2 } else { 1 };
            x = unit(&mut b, w, &format!("{stage}.{i}"), x, (channels, outputs, stride))?;
            channels = outputs;
        }
        b.alias(stage, x);
    }
    let last = 1024;
    let x = pointwise(&mut b, w, "conv5", 0, x, (channels, last), true)?;
    b.alias("conv5", x);
    let x = pool_and_flatten(&mut b, "mean", x, 1);
    let logits = linear(&mut b, w, "fc", x, last, None)?;
    b.finish(logits)
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_architecture;
    use crate::model::graph::{Op, Shape};
    use crate::model::weights::Weights;
    use candle_core::Device;

    #[test]
    fn shufflenet_v2_x1_0_matches_torchvision() {
        check_architecture("shufflenet_v2_x1_0", 2_278_604, Shape::Map(1024, 7, 7));
    }

    #[test]
    fn shufflenet_units_split_branch_and_shuffle_like_torchvision() {
        let mut w = Weights::synthesize(1000, 3, &Device::Cpu);
        let g = super::shufflenet_v2_x1_0(&mut w).unwrap();
        let keys: Vec<String> = w.recorded().into_iter().map(|(k, _)| k).collect();
        for key in [
            "stage2.0.branch1.0.weight",
            "stage2.0.branch1.3.running_var",
            "stage2.1.branch2.5.weight",
            "conv5.1.bias",
        ] {
            assert!(keys.contains(&key.to_string()), "{key}");
        }
        assert!(!keys.contains(&"stage2.1.branch1.0.weight".to_string()));
        let name = |n: &str| g.nodes()[g.find(n).unwrap()].name.clone();
        assert_eq!(name("stage3.2"), "stage3.2.channel_shuffle");
        assert_eq!(name("conv5"), "conv5.2");
        let op = |n: &str| g.nodes()[g.find(n).unwrap()].op.clone();
        match op("stage2.1.chunk_1") {
            Op::Channels(c) => assert_eq!(c.index, (58..116).collect::<Vec<_>>()),
            op => panic!("{op:?}"),
        }
        match op("stage2.1.channel_shuffle") {
            Op::Channels(c) => assert_eq!(&c.index[..4], &[0, 58, 1, 59]),
            op => panic!("{op:?}"),
        }
        let shapes = g.shapes((224, 224)).unwrap();
        assert_eq!(shapes[g.find("stage3").unwrap()], Shape::Map(232, 14, 14));
        assert_eq!(shapes[g.find("stage2.1.branch2").unwrap()], Shape::Map(58, 28, 28));
    }
}

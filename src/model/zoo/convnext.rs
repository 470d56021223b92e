//! ConvNeXt-T (Liu et al. 2022, "A ConvNet for the 2020s") as torchvision defines it
//! (`convnext_tiny`: stages of 3, 3, 9, 3 blocks at 96, 192, 384, 768 channels).
//!
//! `features.0` is the stem: a 4×4 stride-4 convolution `features.0.0` (with bias) and a
//! `LayerNorm2d` `features.0.1` (ε = 1e-6, over the channels at each position). Stage s
//! (0..4) is `features.{2s+1}`, a sequence of `CNBlock`s `features.{2s+1}.{i}`; between stages,
//! `features.{2s+2}` downsamples: `LayerNorm2d` `.0`, then a 2×2 stride-2 convolution `.1`.
//! The head is global average pooling `avgpool`, `LayerNorm2d` `classifier.0`, `flatten`
//! (`classifier.1`) and the linear layer `classifier.2`.
//!
//! A `CNBlock` `{p}` on x (C channels) is `{p}.block`: a 7×7 depthwise convolution `block.0`
//! (padding 3, bias); the channels-last `nn.LayerNorm` `block.2` (ε = 1e-6), here over the
//! channels of the channels-first map (the permutes `block.1` and `block.6` are layouts, not
//! ops); the `nn.Linear` layers `block.3` (C → 4C) and `block.5` (4C → C) on the channels at
//! each position, here 1×1 convolutions with the same weights ([out, in] as [out, in, 1, 1]),
//! exact GELU `block.4` between them; then the product with the learned per-channel
//! `layer_scale` ([C, 1, 1]; an affine node `{p}.mul`) and the residual sum `{p}.add` with x
//! (stochastic depth is the identity in eval mode). `{p}` aliases the sum.
//!
//! There is no nonlinearity after a block: the last feature map (Grad-CAM's default layer,
//! `features.7`, [768, 7, 7] at 224×224) is the last block's residual sum, as
//! pytorch-grad-cam's users pick `model.features[-1]` for torchvision's ConvNeXt.

use super::{conv, linear, pointwise, ConvSpec};
use crate::error::Result;
use crate::model::graph::{
    AdaptiveAvgPool, Add, Affine, Flatten, Graph, GraphBuilder, NodeId, Nonlinearity, Op,
};
use crate::model::weights::Weights;

/// ConvNeXt's LayerNorm ε (`partial(nn.LayerNorm, eps=1e-6)`).
const EPS: f32 = 1e-6;

/// Appends the layer norm `{p}` over `channels` with ConvNeXt's ε.
fn layer_norm(b: &mut GraphBuilder, w: &mut Weights, p: &str, x: NodeId, channels: usize) -> Result<NodeId> {
    super::layer_norm(b, w, p, x, channels, EPS)
}

/// The `CNBlock` `{p}` on `x` of `c` channels.
fn block(b: &mut GraphBuilder, w: &mut Weights, p: &str, x: NodeId, c: usize) -> Result<NodeId> {
    let dw = ConvSpec::new(Some(c), c, 7).padding(3).groups(c).bias();
    let y = conv(b, w, &format!("{p}.block.0"), None, x, dw)?;
    let y = layer_norm(b, w, &format!("{p}.block.2"), y, c)?;
    let y = pointwise(b, w, &format!("{p}.block.3"), y, (c, 4 * c))?;
    let y = b.act(format!("{p}.block.4"), Nonlinearity::Gelu, y);
    let y = pointwise(b, w, &format!("{p}.block.5"), y, (4 * c, c))?;
    b.alias(format!("{p}.block"), y);
    let scale =
        w.take(&format!("{p}.layer_scale"), &[Some(c), Some(1), Some(1)])?.flatten_all()?.to_vec1::<f32>()?;
    let y = b.push(format!("{p}.mul"), Op::Affine(Affine { scale, shift: vec![0.0; c] }), &[y]);
    let y = b.push(format!("{p}.add"), Op::Add(Add), &[y, x]);
    b.alias(p, y);
    Ok(y)
}

/// torchvision's `convnext_tiny`.
pub fn convnext_tiny(w: &mut Weights) -> Result<Graph> {
    convnext(w, &[(96, 3), (192, 3), (384, 9), (768, 3)])
}

/// A ConvNeXt with `stages` of (channels, blocks).
fn convnext(w: &mut Weights, stages: &[(usize, usize)]) -> Result<Graph> {
    let first = stages[0].0;
    let mut b = super::stem(w, "features.0.0", None, ConvSpec::new(None, first, 4).stride(4).bias())?;
    let stem = b.last();
    let mut x = layer_norm(&mut b, w, "features.0.1", stem, first)?;
    b.alias("features.0", x);
    for (s, &(c, n)) in stages.iter().enumerate() {
        let stage = format!("features.{}", 2 * s + 1);
        for i in 0..n {
            x = block(&mut b, w, &format!("{stage}.{i}"), x, c)?;
        }
        b.alias(&stage, x);
        if let Some(&(next, _)) = stages.get(s + 1) {
            let p = format!("features.{}", 2 * s + 2);
            x = layer_norm(&mut b, w, &format!("{p}.0"), x, c)?;
            x = conv(
                &mut b,
                w,
                &format!("{p}.1"),
                None,
                x,
                ConvSpec::new(Some(c), next, 2).stride(2).bias(),
            )?;
            b.alias(&p, x);
        }
    }
    b.alias("features", x);
    let last = stages[stages.len() - 1].0;
    let pooled = b.push("avgpool", Op::AdaptiveAvgPool(AdaptiveAvgPool([1, 1])), &[x]);
    let normed = layer_norm(&mut b, w, "classifier.0", pooled, last)?;
    let flat = b.push("classifier.1", Op::Flatten(Flatten), &[normed]);
    b.alias("flatten", flat);
    let logits = linear(&mut b, w, "classifier.2", flat, last, None)?;
    b.finish(logits)
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_architecture;
    use crate::model::graph::{Op, Shape};
    use crate::model::weights::Weights;
    use candle_core::Device;

    #[test]
    fn convnext_tiny_matches_torchvision() {
        check_architecture("convnext_tiny", 28_589_128, Shape::Map(768, 7, 7));
    }

    #[test]
    fn convnext_tiny_blocks_are_named_like_torchvision() {
        let mut w = Weights::synthesize(1000, 3, &Device::Cpu);
        let g = super::convnext_tiny(&mut w).unwrap();
        let keys: Vec<String> = w.recorded().into_iter().map(|(k, _)| k).collect();
        for key in [
            "features.0.1.weight",
            "features.1.0.layer_scale",
            "features.2.0.bias",
            "features.2.1.weight",
            "features.5.8.block.3.weight",
            "features.7.2.block.5.bias",
            "classifier.0.weight",
            "classifier.2.bias",
        ] {
            assert!(keys.contains(&key.to_string()), "{key}");
        }
        let name = |n: &str| g.nodes()[g.find(n).unwrap()].name.clone();
        assert_eq!(name("features.7"), "features.7.2.add");
        assert_eq!(name("features.1.0.block"), "features.1.0.block.5");
        assert_eq!(name("features.4"), "features.4.1");
        let shapes = g.shapes((224, 224)).unwrap();
        assert_eq!(shapes[g.find("features.0").unwrap()], Shape::Map(96, 56, 56));
        assert_eq!(shapes[g.find("features.5.8.block.3").unwrap()], Shape::Map(1536, 14, 14));
        match &g.nodes()[g.find("features.3.0.block.2").unwrap()].op {
            Op::LayerNorm(l) => assert_eq!((l.weight.len(), l.eps), (192, 1e-6)),
            op => panic!("{op:?}"),
        }
    }
}

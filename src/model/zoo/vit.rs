//! Vision transformers (Dosovitskiy et al. 2021, "An image is worth 16x16 words: transformers
//! for image recognition at scale") as torchvision's `VisionTransformer` defines them:
//! `vit_b_16`, `vit_b_32` (12 heads), `vit_l_16`, `vit_l_32`, `vit_h_14` (16 heads).
//!
//! The network, with torchvision's keys and torch.fx's node names (tokens are token maps
//! Map(D, T, 1), see [`crate::model::shape::Shape`]):
//! * `conv_proj`: the patch embedding, a p×p stride-p convolution (with bias) to D channels;
//!   `permute`: its (H/p)·(W/p) positions as tokens in row-major order ([`Tokens`]);
//! * `cat`: the learned `class_token` [1, 1, D] in front ([`ClassToken`]); `encoder.add`: the
//!   learned `encoder.pos_embedding` [1, T, D] added ([`PositionEmbedding`]): T = (H/p)·(W/p)
//!   + 1 is fixed by it, and so is the input size;
//! * `encoder.layers.encoder_layer_{i}` (aliasing its output `add_1`): x + attention(ln_1(x))
//!   as `add`, then + mlp(ln_2(·)) as `add_1`. Both layer norms have ε = 1e-6. The attention
//!   `self_attention` (PyTorch's `nn.MultiheadAttention`, aliasing its `out_proj`) reads q, k
//!   and v as three 1×1 convolutions `.q`, `.k`, `.v` from the three row blocks of
//!   `in_proj_weight` [3D, D] and `in_proj_bias`, then `.scores` ([`Scores`], scale
//!   1/√(D/heads)), `.softmax` ([`Softmax`] over each head's keys), `.attend` ([`Attend`]) and
//!   the 1×1 convolution `.out_proj`. The MLP `mlp` (aliasing `mlp.3`) is the linear layer
//!   `mlp.0` (D → MLP width), exact GELU `mlp.1`, the linear layer `mlp.3` (back to D);
//!   older checkpoints' `mlp.linear_1`/`linear_2` are renamed to these, as torchvision's
//!   loading hook does. Dropout is the identity in eval mode;
//! * `encoder.ln` (aliased `encoder`), `getitem`: the class token's features ([`SelectToken`],
//!   `x[:, 0]`), `heads.head` (aliased `heads`): the classifier.
//!
//! The width D, the patch size, the number of layers, the MLP width, the classes and the
//! input channels are read from the weights (a small ViT loads like the ImageNet ones); the
//! number of heads is not in a `state_dict`, so it comes from the architecture's name.
//!
//! Grad-CAM's default layer is the last block's `ln_1`, pytorch-grad-cam's documented choice
//! for vision transformers: `encoder.layers.last.ln_1`, an alias (a static name for every
//! depth), as is `encoder.layers.last` for the last block.
//!
//! Nominal input 224×224: torchvision's constructors default to it, and the ImageNet weights
//! of every ViT but `vit_h_14` (whose only weights, SWAG's, are 518×518: its position
//! embedding says so when another size is given) are trained at it.

use super::{layer_norm, linear, pointwise, ConvSpec};
use crate::error::{Error, Result};
use crate::model::graph::{
    Add, Attend, ClassToken, Graph, GraphBuilder, NodeId, Nonlinearity, Op, PositionEmbedding, Scores,
    SelectToken, Softmax, Tokens,
};
use crate::model::weights::Weights;

/// The layer norms' ε (`partial(nn.LayerNorm, eps=1e-6)`).
const EPS: f32 = 1e-6;

/// Grad-CAM's default layer (see the module docs).
pub(super) const DEFAULT_LAYER: &str = "encoder.layers.last.ln_1";

/// The nominal input side.
const INPUT: usize = 224;

/// A ViT as torchvision's constructor declares it; only `heads` is not read from the weights
/// (the others are the sizes a synthesized `state_dict` gets).
#[derive(Debug, Clone, Copy)]
struct Spec {
    patch: usize,
    layers: usize,
    heads: usize,
    hidden: usize,
    mlp: usize,
}

/// torchvision's `vit_b_16`.
pub fn vit_b_16(w: &mut Weights) -> Result<Graph> {
    vit(w, Spec { patch: 16, layers: 12, heads: 12, hidden: 768, mlp: 3072 })
}

/// torchvision's `vit_b_32`.
pub fn vit_b_32(w: &mut Weights) -> Result<Graph> {
    vit(w, Spec { patch: 32, layers: 12, heads: 12, hidden: 768, mlp: 3072 })
}

/// torchvision's `vit_l_16`.
pub fn vit_l_16(w: &mut Weights) -> Result<Graph> {
    vit(w, Spec { patch: 16, layers: 24, heads: 16, hidden: 1024, mlp: 4096 })
}

/// torchvision's `vit_l_32`.
pub fn vit_l_32(w: &mut Weights) -> Result<Graph> {
    vit(w, Spec { patch: 32, layers: 24, heads: 16, hidden: 1024, mlp: 4096 })
}

/// torchvision's `vit_h_14`.
pub fn vit_h_14(w: &mut Weights) -> Result<Graph> {
    vit(w, Spec { patch: 14, layers: 32, heads: 16, hidden: 1280, mlp: 5120 })
}

/// The ViT of `spec`'s heads, its sizes read from `w`.
fn vit(w: &mut Weights, spec: Spec) -> Result<Graph> {
    let d = w.size_or("conv_proj.weight", 0, spec.hidden);
    let patch = w.size_or("conv_proj.weight", 2, spec.patch);
    if spec.heads == 0 || !d.is_multiple_of(spec.heads) {
        return Err(Error::data(
            w.source(),
            format!(
                "hidden size {d} (`conv_proj.weight`) does not split into {} attention heads",
                spec.heads
            ),
        ));
    }
    let mut b = super::stem(w, "conv_proj", None, ConvSpec::new(None, d, patch).stride(patch).bias())?;
    let x = b.push("permute", Op::Tokens(Tokens), &[b.last()]);
    let mut x = embed(&mut b, w, x, (d, patch))?;
    let layers = w.count_or(|i| format!("encoder.layers.encoder_layer_{i}."), spec.layers);
    for i in 0..layers {
        let p = format!("encoder.layers.encoder_layer_{i}");
        let (ln_1, out) = block(&mut b, w, &p, x, (d, spec.heads, spec.mlp))?;
        b.alias("encoder.layers.last.ln_1", ln_1);
        x = out;
    }
    b.alias("encoder.layers", x);
    b.alias("encoder.layers.last", x);
    let x = layer_norm(&mut b, w, "encoder.ln", x, d, EPS)?;
    b.alias("encoder", x);
    let x = b.push("getitem", Op::SelectToken(SelectToken { index: 0 }), &[x]);
    let logits = linear(&mut b, w, "heads.head", x, d, None)?;
    b.alias("heads", logits);
    b.finish(logits)
}

/// The class token in front of the tokens `x` and the position embedding added
/// (`cat`, `encoder.add`).
fn embed(b: &mut GraphBuilder, w: &mut Weights, x: NodeId, (d, patch): (usize, usize)) -> Result<NodeId> {
    let token = w.take("class_token", &[Some(1), Some(1), Some(d)])?.flatten_all()?;
    let x = b.push("cat", Op::ClassToken(ClassToken { token }), &[x]);
    let key = "encoder.pos_embedding";
    let nominal = (INPUT / patch.max(1)).pow(2) + 1;
    let t = w.size_or(key, 1, nominal);
    let table = w.take(key, &[Some(1), Some(t), Some(d)])?.reshape((t, d))?.t()?.contiguous()?;
    Ok(b.push("encoder.add", Op::PositionEmbedding(PositionEmbedding { table, patch: Some(patch) }), &[x]))
}

/// The `EncoderBlock` `{p}` on the tokens `x` of `d` features (`mlp`: the nominal MLP width,
/// which the weights override): its `ln_1` and its output.
fn block(
    b: &mut GraphBuilder,
    w: &mut Weights,
    p: &str,
    x: NodeId,
    (d, heads, mlp): (usize, usize, usize),
) -> Result<(NodeId, NodeId)> {
    let ln_1 = layer_norm(b, w, &format!("{p}.ln_1"), x, d, EPS)?;
    let y = self_attention(b, w, &format!("{p}.self_attention"), ln_1, (d, heads))?;
    let x = b.push(format!("{p}.add"), Op::Add(Add), &[y, x]);
    let y = layer_norm(b, w, &format!("{p}.ln_2"), x, d, EPS)?;
    for (old, new) in [("linear_1", "0"), ("linear_2", "3")] {
        for t in ["weight", "bias"] {
            w.rename(&format!("{p}.mlp.{old}.{t}"), &format!("{p}.mlp.{new}.{t}"));
        }
    }
    let m = w.size_or(&format!("{p}.mlp.0.weight"), 0, mlp);
    let y = pointwise(b, w, &format!("{p}.mlp.0"), y, (d, m))?;
    let y = b.act(format!("{p}.mlp.1"), Nonlinearity::Gelu, y);
    let y = pointwise(b, w, &format!("{p}.mlp.3"), y, (m, d))?;
    b.alias(format!("{p}.mlp"), y);
    let out = b.push(format!("{p}.add_1"), Op::Add(Add), &[x, y]);
    b.alias(p, out);
    Ok((ln_1, out))
}

/// `nn.MultiheadAttention` `{p}` of `heads` heads on the tokens `x` of `d` features, as
/// self-attention (query = key = value = x).
fn self_attention(
    b: &mut GraphBuilder,
    w: &mut Weights,
    p: &str,
    x: NodeId,
    (d, heads): (usize, usize),
) -> Result<NodeId> {
    let weight = w.take(&format!("{p}.in_proj_weight"), &[Some(3 * d), Some(d)])?;
    let bias = w.take(&format!("{p}.in_proj_bias"), &[Some(3 * d)])?;
    let mut qkv = [0; 3];
    for (i, name) in ["q", "k", "v"].iter().enumerate() {
        let wi = weight.narrow(0, i * d, d)?.contiguous()?.reshape((d, d, 1, 1))?;
        let bi = bias.narrow(0, i * d, d)?.contiguous()?;
        qkv[i] = b.conv(format!("{p}.{name}"), x, (wi, Some(bi)), 1, 0, 1);
    }
    let scale = 1.0 / ((d / heads) as f64).sqrt();
    let s = b.push(format!("{p}.scores"), Op::Scores(Scores { heads, scale }), &[qkv[0], qkv[1]]);
    let a = b.push(format!("{p}.softmax"), Op::Softmax(Softmax { groups: heads }), &[s]);
    let o = b.push(format!("{p}.attend"), Op::Attend(Attend { heads }), &[a, qkv[2]]);
    let out = pointwise(b, w, &format!("{p}.out_proj"), o, (d, d))?;
    b.alias(p, out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{architecture, tests::state_dict};
    use crate::model::graph::{Op, Shape};
    use crate::model::ops::cases::Rng;
    use crate::model::weights::Weights;
    use crate::model::{Activation, Classifier, Network};
    use candle_core::{DType, Device, Tensor, D};
    use std::collections::HashMap;

    /// torchvision's `VisionTransformer(image_size=32, patch_size=16, num_layers=2,
    /// num_heads=12, hidden_dim=48, mlp_dim=96, num_classes=10)` with random weights: the
    /// fixture's configuration (4 patches and the class token).
    fn small_dict(r: &mut Rng) -> HashMap<String, Tensor> {
        let (d, m) = (48, 96);
        let mut dict = HashMap::new();
        let mut put = |k: &str, dims: &[usize], s: f64| {
            dict.insert(k.to_string(), r.tensor(dims, s).to_dtype(DType::F32).unwrap());
        };
        put("conv_proj.weight", &[d, 3, 16, 16], 0.05);
        put("conv_proj.bias", &[d], 0.1);
        put("class_token", &[1, 1, d], 1.0);
        put("encoder.pos_embedding", &[1, 5, d], 0.5);
        for i in 0..2 {
            let p = format!("encoder.layers.encoder_layer_{i}");
            for (k, dims, s) in [
                ("ln_1.weight", vec![d], 1.0),
                ("ln_1.bias", vec![d], 0.2),
                ("self_attention.in_proj_weight", vec![3 * d, d], 0.4),
                ("self_attention.in_proj_bias", vec![3 * d], 0.2),
                ("self_attention.out_proj.weight", vec![d, d], 0.2),
                ("self_attention.out_proj.bias", vec![d], 0.1),
                ("ln_2.weight", vec![d], 1.0),
                ("ln_2.bias", vec![d], 0.2),
                ("mlp.0.weight", vec![m, d], 0.2),
                ("mlp.0.bias", vec![m], 0.1),
                ("mlp.3.weight", vec![d, m], 0.15),
                ("mlp.3.bias", vec![d], 0.1),
            ] {
                put(&format!("{p}.{k}"), &dims, s);
            }
        }
        put("encoder.ln.weight", &[d], 1.0);
        put("encoder.ln.bias", &[d], 0.2);
        put("heads.head.weight", &[10, d], 0.2);
        put("heads.head.bias", &[10], 0.1);
        dict
    }

    /// Layer norm over the last axis (ε = 1e-6).
    fn ln(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        let c = x.broadcast_sub(&x.mean_keepdim(D::Minus1).unwrap()).unwrap();
        let s = (c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + 1e-6).unwrap().sqrt().unwrap();
        c.broadcast_div(&s).unwrap().broadcast_mul(w).unwrap().broadcast_add(b).unwrap()
    }

    /// x·Wᵀ + b on the last axis.
    fn lin(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        x.broadcast_matmul(&w.t().unwrap()).unwrap().broadcast_add(b).unwrap()
    }

    /// torchvision's `VisionTransformer.forward`, written out on [N, T, D] tensors (f64), as
    /// PyTorch lays it out: the reference the graph must equal.
    fn by_hand(dict: &HashMap<String, Tensor>, x: &Tensor, heads: usize) -> Tensor {
        let g = |k: &str| dict[k].to_dtype(DType::F64).unwrap();
        let y = x.conv2d(&g("conv_proj.weight"), 0, 16, 1, 1).unwrap();
        let y = y.broadcast_add(&g("conv_proj.bias").reshape((1, 48, 1, 1)).unwrap()).unwrap();
        let (n, d, gh, gw) = y.dims4().unwrap();
        let t = y.reshape((n, d, gh * gw)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let cls = g("class_token").broadcast_as((n, 1, d)).unwrap().contiguous().unwrap();
        let mut t = Tensor::cat(&[&cls, &t], 1).unwrap().broadcast_add(&g("encoder.pos_embedding")).unwrap();
        let tokens = t.dim(1).unwrap();
        let dh = d / heads;
        for i in 0..2 {
            let p = |k: &str| g(&format!("encoder.layers.encoder_layer_{i}.{k}"));
            let h = ln(&t, &p("ln_1.weight"), &p("ln_1.bias"));
            let qkv = lin(&h, &p("self_attention.in_proj_weight"), &p("self_attention.in_proj_bias"));
            let split = |j: usize| {
                let part = qkv.narrow(2, j * d, d).unwrap();
                part.reshape((n, tokens, heads, dh)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap()
            };
            let (q, k, v) = (split(0), split(1), split(2));
            let s = (q.matmul(&k.t().unwrap()).unwrap() / (dh as f64).sqrt()).unwrap();
            let e = s.broadcast_sub(&s.max_keepdim(D::Minus1).unwrap()).unwrap().exp().unwrap();
            let a = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
            let o = a.matmul(&v).unwrap().transpose(1, 2).unwrap().reshape((n, tokens, d)).unwrap();
            let o = lin(&o, &p("self_attention.out_proj.weight"), &p("self_attention.out_proj.bias"));
            t = (t + o).unwrap();
            let h = ln(&t, &p("ln_2.weight"), &p("ln_2.bias"));
            let h = lin(&h, &p("mlp.0.weight"), &p("mlp.0.bias")).gelu_erf().unwrap();
            t = (&t + lin(&h, &p("mlp.3.weight"), &p("mlp.3.bias"))).unwrap();
        }
        let t = ln(&t, &g("encoder.ln.weight"), &g("encoder.ln.bias"));
        let cls = t.narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
        lin(&cls, &g("heads.head.weight"), &g("heads.head.bias"))
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
        let (a, b) = (a.to_dtype(DType::F64).unwrap(), b.to_dtype(DType::F64).unwrap());
        let d = (&a - &b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        d / b.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn a_small_vit_equals_torchvisions_forward_by_hand() {
        let mut r = Rng(5);
        let dict = small_dict(&mut r);
        let x = r.tensor(&[2, 3, 32, 32], 0.5).affine(1.0, 0.5).unwrap();
        let want = by_hand(&dict, &x, 12);
        let arch = architecture("vit_b_16").unwrap();
        let graph = arch.load(Weights::from_tensors(dict, "small.safetensors")).unwrap();
        let shapes = graph.shapes((32, 32)).unwrap();
        let at = |n: &str| shapes[graph.find(n).unwrap()];
        assert_eq!(at("permute"), Shape::Map(48, 4, 1));
        assert_eq!(at("encoder.add"), Shape::Map(48, 5, 1));
        assert_eq!(at("encoder.layers.encoder_layer_1.self_attention.scores"), Shape::Map(60, 5, 1));
        assert_eq!(at("encoder.layers.encoder_layer_0.mlp.1"), Shape::Map(96, 5, 1));
        assert_eq!(at("getitem"), Shape::Flat(48));
        let name = |n: &str| graph.nodes()[graph.find(n).unwrap()].name.clone();
        assert_eq!(name(arch.default_layer), "encoder.layers.encoder_layer_1.ln_1");
        assert_eq!(
            name("encoder.layers.encoder_layer_0.self_attention"),
            "encoder.layers.encoder_layer_0.self_attention.out_proj"
        );
        assert_eq!(name("encoder.layers"), "encoder.layers.encoder_layer_1.add_1");
        assert_eq!(name("encoder"), "encoder.ln");
        assert_eq!(name("heads"), "heads.head");
        match &graph.nodes()[graph.find("encoder.layers.encoder_layer_0.self_attention.scores").unwrap()].op {
            Op::Scores(s) => assert_eq!((s.heads, s.scale), (12, 0.5)),
            op => panic!("{op:?}"),
        }
        let net = Network::new("vit_b_16", graph, (32, 32), arch.default_layer, &Device::Cpu).unwrap();
        let fast = net.logits(&x.to_dtype(DType::F32).unwrap(), Activation::Exact).unwrap();
        assert!(max_rel(&fast, &want) < 1e-5, "CPU kernels: {}", max_rel(&fast, &want));
        let slow = net.clone().without_kernels();
        let slow = slow.logits(&x.to_dtype(DType::F32).unwrap(), Activation::Exact).unwrap();
        assert!(max_rel(&slow, &want) < 1e-5, "candle path: {}", max_rel(&slow, &want));
    }

    /// Every rule's map and its explicit adjoint (what attacks steer by) through attention,
    /// softmax, layer norms and the token ops: the adjoint against autograd through the
    /// candle path's pass (f64, softplus surrogate), the CPU kernels against the candle path
    /// (f32). LRP passes attention's products and softmax as their gradient, whose
    /// second-order terms the relevance adjoint adds too.
    #[test]
    fn every_rule_and_its_adjoint_run_through_a_small_vit() {
        use crate::model::lrp::{Composite, COMPOSITES};
        use crate::model::{autograd_backward_adjoint, one_hot, Backward, Rule};
        let mut r = Rng(9);
        let dict = small_dict(&mut r);
        let arch = architecture("vit_b_16").unwrap();
        let graph = arch.load(Weights::from_tensors(dict, "small")).unwrap();
        let g64 = graph.map_tensors(&|t| t.to_dtype(DType::F64)).unwrap();
        let dev = Device::Cpu;
        let slow = Network::new("vit", g64, (32, 32), arch.default_layer, &dev).unwrap().without_kernels();
        let fast = Network::new("vit", graph, (32, 32), arch.default_layer, &dev).unwrap();
        let x = r.tensor(&[1, 3, 32, 32], 0.5).affine(1.0, 0.5).unwrap();
        let v = r.tensor(&[1, 3, 32, 32], 1.0);
        let seed = one_hot(&[3], 10, &dev).unwrap().to_dtype(DType::F64).unwrap();
        let act = Activation::Softplus { beta: 3.0 };
        let lrp = COMPOSITES.map(|k| Rule::Lrp(Composite::of(k)));
        for rule in [Rule::Gradient, Rule::Guided, Rule::Deconvnet].into_iter().chain(lrp) {
            let pass = Backward { rule, ..Backward::gradient(&seed, act) };
            let (bs, hs) = slow.backward_adjoint(&x, &pass, &mut |_| Ok((v.clone(), None))).unwrap();
            let (_, ha) =
                autograd_backward_adjoint(&slow, &x, &pass, &mut |_| Ok((v.clone(), None))).unwrap();
            assert!(max_rel(&hs, &ha) < 1e-9, "{rule:?}: adjoint vs autograd {:e}", max_rel(&hs, &ha));
            let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let (x32, seed32, v32) = (f32(&x), f32(&seed), f32(&v));
            let pass32 = Backward { rule, ..Backward::gradient(&seed32, act) };
            let (bf, hf) = fast.backward_adjoint(&x32, &pass32, &mut |_| Ok((v32.clone(), None))).unwrap();
            assert!(
                max_rel(&bf.grad, &bs.grad) < 1e-4,
                "{rule:?}: kernels' map {:e}",
                max_rel(&bf.grad, &bs.grad)
            );
            assert!(max_rel(&hf, &hs) < 1e-3, "{rule:?}: kernels' adjoint {:e}", max_rel(&hf, &hs));
        }
    }

    /// Occlusion's shortcut on a transformer: the patch convolution is recomputed over the
    /// window's reach, everything from the tokens on (which mix all positions) whole.
    #[test]
    fn occlusion_equals_full_passes_over_the_occluded_copies() {
        let mut r = Rng(4);
        let dict = small_dict(&mut r);
        let arch = architecture("vit_b_16").unwrap();
        let graph = arch.load(Weights::from_tensors(dict, "small")).unwrap();
        let net = Network::new("vit", graph, (32, 32), arch.default_layer, &Device::Cpu).unwrap();
        let x = r.tensor(&[2, 3, 32, 32], 0.5).affine(1.0, 0.5).unwrap().to_dtype(DType::F32).unwrap();
        let windows = [(0usize, 0usize), (10, 20), (24, 24)];
        let got = net.occluded_logits(&x, &windows, [8, 8], 0.5, Activation::Exact).unwrap().unwrap();
        let mut copies = Vec::new();
        for &(top, left) in &windows {
            let mask = Tensor::ones((32, 32), DType::F32, &Device::Cpu).unwrap();
            let hole = Tensor::zeros((8, 8), DType::F32, &Device::Cpu).unwrap();
            let mask = mask.slice_assign(&[top..top + 8, left..left + 8], &hole).unwrap();
            let fill = ((1.0 - &mask).unwrap() * 0.5).unwrap();
            copies.push(x.broadcast_mul(&mask).unwrap().broadcast_add(&fill).unwrap());
        }
        let want = net.logits(&Tensor::cat(&copies, 0).unwrap(), Activation::Exact).unwrap();
        assert!(max_rel(&got, &want) < 1e-5, "{}", max_rel(&got, &want));
    }

    #[test]
    fn vit_b_16_and_b_32_have_torchvisions_parameter_counts() {
        for (name, count, tokens) in [("vit_b_16", 86_567_656, 197), ("vit_b_32", 88_224_232, 50)] {
            let dict = state_dict(name, 1000, 3);
            assert_eq!(dict.values().map(|t| t.elem_count()).sum::<usize>(), count, "{name}");
            assert_eq!(dict["encoder.pos_embedding"].dims(), [1, tokens, 768], "{name}");
            assert!(dict.contains_key("encoder.layers.encoder_layer_11.mlp.3.bias"), "{name}");
            assert!(!dict.contains_key("encoder.layers.encoder_layer_12.mlp.3.bias"), "{name}");
        }
    }

    #[test]
    fn another_input_size_names_the_position_embedding() {
        let dict = small_dict(&mut Rng(1));
        let graph = architecture("vit_b_16").unwrap().load(Weights::from_tensors(dict, "v")).unwrap();
        assert_eq!(graph.classes((32, 32)).unwrap(), 10);
        let msg = graph.shapes((64, 64)).unwrap_err().to_string();
        assert!(msg.contains("`encoder.add`"), "{msg}");
        assert!(msg.contains("5 tokens (a 32×32 input at patch 16), this input gives 17 (a 64×64"), "{msg}");
    }

    #[test]
    fn a_width_that_does_not_split_into_the_heads_is_refused() {
        let mut dict = small_dict(&mut Rng(1));
        dict.insert(
            "conv_proj.weight".into(),
            Tensor::zeros((40, 3, 16, 16), DType::F32, &Device::Cpu).unwrap(),
        );
        let err =
            architecture("vit_b_16").unwrap().load(Weights::from_tensors(dict, "v.safetensors")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("v.safetensors") && msg.contains("hidden size 40"), "{msg}");
        assert!(msg.contains("12 attention heads"), "{msg}");
    }

    #[test]
    fn a_missing_key_is_named_and_old_mlp_keys_load() {
        let mut dict = small_dict(&mut Rng(1));
        dict.remove("encoder.layers.encoder_layer_1.self_attention.in_proj_bias");
        let arch = architecture("vit_b_16").unwrap();
        let msg = arch.load(Weights::from_tensors(dict, "v")).unwrap_err().to_string();
        assert!(
            msg.contains("missing tensor `encoder.layers.encoder_layer_1.self_attention.in_proj_bias` (expected shape [144])"),
            "{msg}"
        );
        // torchvision's loading hook renames MLPBlock's `linear_1`/`linear_2`; so do we.
        let mut dict = small_dict(&mut Rng(1));
        for (old, new) in [("linear_1", "0"), ("linear_2", "3")] {
            for t in ["weight", "bias"] {
                let k = format!("encoder.layers.encoder_layer_0.mlp.{new}.{t}");
                let v = dict.remove(&k).unwrap();
                dict.insert(format!("encoder.layers.encoder_layer_0.mlp.{old}.{t}"), v);
            }
        }
        arch.load(Weights::from_tensors(dict, "v")).unwrap();
    }
}

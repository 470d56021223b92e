//! One table over every layer kind: for each, a small graph (the layer between a
//! convolution and a linear head, random weights) is checked three ways:
//!
//! 1. the explicit backward pass equals candle's autograd through the forward pass (f64);
//! 2. the explicit second-order adjoint ∇ₓ⟨M(x), v⟩ of the map M under every rule (and of a
//!    pass stopped at the layer, with its activation weighted too) equals a central finite
//!    difference of ⟨M(x), v⟩ along a random direction (f64, softplus surrogate);
//! 3. the CPU kernels equal the candle path (f32): logits, every rule's map, a layer stop,
//!    and the adjoint.

use super::graph::{Conv, GraphBuilder, Linear, NodeId, Nonlinearity, Op, Window};
use super::{Activation, Backward, Classifier, Network, Rule};
use candle_core::{DType, Device, Tensor, Var};

/// A case: its name and how the layer under test is built on top of a conv's output node
/// (8 channels, 9×9), returning the layer's node.
type Build = fn(&mut GraphBuilder, NodeId, &mut Rng) -> NodeId;

struct Rng(u64);

impl Rng {
    fn uniform(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    fn tensor(&mut self, dims: &[usize], scale: f64) -> Tensor {
        let n = dims.iter().product();
        Tensor::from_vec(self.uniform(n, scale), dims, &Device::Cpu).unwrap()
    }
}

#[allow(clippy::too_many_arguments)]
fn conv(
    rng: &mut Rng,
    o: usize,
    c: usize,
    k: [usize; 2],
    stride: usize,
    pad: [usize; 4],
    dil: usize,
    groups: usize,
) -> Op {
    let scale = 1.5 / ((c / groups * k[0] * k[1]) as f64).sqrt();
    Op::Conv(Conv {
        weight: rng.tensor(&[o, c / groups, k[0], k[1]], scale),
        bias: Some(rng.tensor(&[o], 0.1)),
        stride: [stride; 2],
        padding: pad,
        dilation: [dil; 2],
        groups,
    })
}

fn window(k: usize, s: usize, p: usize, ceil: bool) -> Window {
    Window { kernel: [k; 2], stride: [s; 2], padding: [p; 4], ceil_mode: ceil }
}

const CASES: [(&str, Build); 23] = [
    ("conv 3×3 stride 2 padding 1", |b, x, r| b.push("t", conv(r, 6, 8, [3, 3], 2, [1; 4], 1, 1), &[x])),
    ("conv 1×1", |b, x, r| b.push("t", conv(r, 5, 8, [1, 1], 1, [0; 4], 1, 1), &[x])),
    ("conv dilated, asymmetric padding", |b, x, r| {
        b.push("t", conv(r, 4, 8, [3, 2], 1, [2, 0, 1, 1], 2, 1), &[x])
    }),
    ("grouped conv", |b, x, r| b.push("t", conv(r, 6, 8, [3, 3], 1, [1; 4], 1, 2), &[x])),
    ("depthwise conv stride 2", |b, x, r| b.push("t", conv(r, 8, 8, [3, 3], 2, [1; 4], 1, 8), &[x])),
    ("relu6", |b, x, _| b.act("t", Nonlinearity::Relu6, x)),
    ("leaky relu", |b, x, _| b.act("t", Nonlinearity::LeakyRelu(0.1), x)),
    ("max-pool 3×3 stride 2 padding 1", |b, x, _| b.push("t", Op::MaxPool(window(3, 2, 1, false)), &[x])),
    ("max-pool 2×2 ceil_mode", |b, x, _| b.push("t", Op::MaxPool(window(2, 2, 0, true)), &[x])),
    ("avg-pool count_include_pad", |b, x, _| {
        b.push("t", Op::AvgPool { window: window(3, 2, 1, false), count_include_pad: true }, &[x])
    }),
    ("avg-pool ceil_mode, no pad count", |b, x, _| {
        b.push("t", Op::AvgPool { window: window(2, 2, 1, true), count_include_pad: false }, &[x])
    }),
    ("adaptive avg-pool 4×3", |b, x, _| b.push("t", Op::AdaptiveAvgPool([4, 3]), &[x])),
    ("residual add", |b, x, r| {
        let c = b.push("branch", conv(r, 8, 8, [3, 3], 1, [1; 4], 1, 1), &[x]);
        let a = b.act("branch_relu", Nonlinearity::Relu, c);
        b.push("t", Op::Add, &[a, x])
    }),
    ("concat and affine", |b, x, r| {
        let c = b.push("branch", conv(r, 3, 8, [1, 1], 1, [0; 4], 1, 1), &[x]);
        let cat = b.push("cat", Op::Concat, &[x, c]);
        let scale = r.uniform(11, 1.0).iter().map(|v| 1.0 + 0.5 * *v as f32).collect();
        let shift = r.uniform(11, 0.2).iter().map(|v| *v as f32).collect();
        b.push("t", Op::Affine { scale, shift }, &[cat])
    }),
    // The activations added with the one-definition nonlinearities (appended: the seeds of
    // the cases above stay as they were).
    ("sigmoid", |b, x, r| signed_act(b, x, r, Nonlinearity::Sigmoid)),
    ("tanh", |b, x, r| signed_act(b, x, r, Nonlinearity::Tanh)),
    ("silu", |b, x, r| signed_act(b, x, r, Nonlinearity::Silu)),
    ("gelu", |b, x, r| signed_act(b, x, r, Nonlinearity::Gelu)),
    ("gelu tanh", |b, x, r| signed_act(b, x, r, Nonlinearity::GeluTanh)),
    ("hard sigmoid", |b, x, r| signed_act(b, x, r, Nonlinearity::HardSigmoid { alpha: 0.2, beta: 0.5 })),
    ("hard swish", |b, x, r| signed_act(b, x, r, Nonlinearity::HardSwish)),
    ("silu then max-pool (not monotone: pooled after)", |b, x, r| {
        let c = b.push("pre", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[x]);
        let a = b.act("a", Nonlinearity::Silu, c);
        b.push("t", Op::MaxPool(window(2, 2, 0, false)), &[a])
    }),
    ("hard swish then max-pool", |b, x, r| {
        let c = b.push("pre", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[x]);
        let a = b.act("a", Nonlinearity::HardSwish, c);
        b.push("t", Op::MaxPool(window(2, 2, 0, false)), &[a])
    }),
];

/// `kind` after a 1×1 convolution, so that it sees inputs of both signs (a case's layer reads
/// a ReLU's output).
fn signed_act(b: &mut GraphBuilder, x: NodeId, r: &mut Rng, kind: Nonlinearity) -> NodeId {
    let c = b.push("pre", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[x]);
    b.act("t", kind, c)
}

/// The case's network (input 2 channels, 9×9; conv 3×3 → ReLU → the layer → ReLU →
/// max-pool 2×2 → flatten → linear 5), in `dtype`.
fn network(build: Build, seed: u64, dtype: DType) -> Network {
    let mut r = Rng(seed);
    let mut b = GraphBuilder::new(2);
    let c = b.push("conv", conv(&mut r, 8, 2, [3, 3], 1, [1; 4], 1, 1), &[0]);
    let a = b.act("conv_relu", Nonlinearity::Relu, c);
    let t = build(&mut b, a, &mut r);
    let ta = b.act("t_relu", Nonlinearity::Relu, t);
    let p = b.push("pool", Op::MaxPool(window(2, 2, 0, true)), &[ta]);
    let f = b.push("flatten", Op::Flatten, &[p]);
    let graph = b.finish(f).unwrap();
    let flat = match graph.shapes((9, 9)).unwrap()[f] {
        super::Shape::Flat(n) => n,
        s => panic!("{s}"),
    };
    let mut b2 = GraphBuilder::new(2);
    // Rebuild with the head (the flat size is known now).
    let mut r = Rng(seed);
    let c = b2.push("conv", conv(&mut r, 8, 2, [3, 3], 1, [1; 4], 1, 1), &[0]);
    let a = b2.act("conv_relu", Nonlinearity::Relu, c);
    let t = build(&mut b2, a, &mut r);
    let ta = b2.act("t_relu", Nonlinearity::Relu, t);
    let p = b2.push("pool", Op::MaxPool(window(2, 2, 0, true)), &[ta]);
    let f = b2.push("flatten", Op::Flatten, &[p]);
    let head =
        Linear { weight: r.tensor(&[5, flat], 1.0 / (flat as f64).sqrt()), bias: Some(r.tensor(&[5], 0.1)) };
    let out = b2.push("fc", Op::Linear(head), &[f]);
    let graph = b2.finish(out).unwrap().map_tensors(&|t| t.to_dtype(dtype)).unwrap();
    Network::new("case", graph, (9, 9), "t", &Device::Cpu).unwrap()
}

fn inputs(seed: u64, dtype: DType) -> (Tensor, Tensor) {
    let mut r = Rng(seed ^ 0x9e37);
    let x = r.tensor(&[2, 2, 9, 9], 0.5).affine(1.0, 0.5).unwrap().to_dtype(dtype).unwrap();
    let seed_t = r.tensor(&[2, 5], 1.0).to_dtype(dtype).unwrap();
    (x, seed_t)
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    a.to_dtype(DType::F64)
        .unwrap()
        .mul(&b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    let d = (&a - &b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
    d / b.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap().max(1e-30)
}

#[test]
fn explicit_backward_equals_autograd_for_every_layer() {
    for (i, (name, build)) in CASES.iter().enumerate() {
        let net = network(*build, 11 + i as u64, DType::F64).without_kernels();
        let (x, seed) = inputs(i as u64, DType::F64);
        for act in [Activation::Exact, Activation::Softplus { beta: 3.0 }] {
            let explicit = net.backward(&x, &Backward::gradient(&seed, act)).unwrap().grad;
            let xv = Var::from_tensor(&x).unwrap();
            let loss = net.logits(xv.as_tensor(), act).unwrap().mul(&seed).unwrap().sum_all().unwrap();
            let auto = loss.backward().unwrap().get(xv.as_tensor()).unwrap().clone();
            let err = max_rel(&explicit, &auto);
            assert!(err < 1e-10, "{name} {act:?}: explicit vs autograd {err}");
        }
    }
}

#[test]
fn adjoints_equal_finite_differences_for_every_layer_and_rule() {
    let act = Activation::Softplus { beta: 3.0 };
    for (i, (name, build)) in CASES.iter().enumerate() {
        let net = network(*build, 21 + i as u64, DType::F64).without_kernels();
        let (x, seed) = inputs(100 + i as u64, DType::F64);
        let baseline = x.affine(0.3, 0.1).unwrap();
        let mut r = Rng(7 + i as u64);
        let u = r.tensor(x.dims(), 1.0);
        for (rule, layer) in
            [(Rule::Gradient, None), (Rule::Guided, None), (Rule::Rescale, None), (Rule::Gradient, Some("t"))]
        {
            let pass = Backward {
                seed: &seed,
                act,
                rule,
                baseline: (rule == Rule::Rescale).then_some(&baseline),
                layer,
            };
            let probe = net.backward(&x, &pass).unwrap();
            let v = r.tensor(probe.grad.dims(), 1.0);
            let a = probe.layer.as_ref().map(|l| r.tensor(l.dims(), 1.0));
            let (_, xbar) = net.backward_adjoint(&x, &pass, &mut |_| Ok((v.clone(), a.clone()))).unwrap();
            let f = |t: f64| -> f64 {
                let xt = (&x + u.affine(t, 0.0).unwrap()).unwrap();
                let bp = net.backward(&xt, &pass).unwrap();
                dot(&bp.grad, &v) + bp.layer.as_ref().zip(a.as_ref()).map_or(0.0, |(l, a)| dot(l, a))
            };
            let h = 1e-5;
            let fd = (f(h) - f(-h)) / (2.0 * h);
            let analytic = dot(&xbar, &u);
            let err = (fd - analytic).abs() / fd.abs().max(1e-8);
            assert!(err < 1e-5, "{name} {rule:?} {layer:?}: adjoint {analytic} vs finite difference {fd}");
        }
    }
}

#[test]
fn kernels_equal_the_candle_path_for_every_layer() {
    for (i, (name, build)) in CASES.iter().enumerate() {
        let fast = network(*build, 31 + i as u64, DType::F32);
        let slow = fast.clone().without_kernels();
        assert!(fast.has_kernels());
        let (x, seed) = inputs(200 + i as u64, DType::F32);
        let baseline = x.affine(0.3, 0.1).unwrap();
        for act in [Activation::Exact, Activation::Softplus { beta: 3.0 }] {
            let tol = 1e-4;
            assert!(
                max_rel(&fast.logits(&x, act).unwrap(), &slow.logits(&x, act).unwrap()) < tol,
                "{name} logits"
            );
            for (rule, layer) in [
                (Rule::Gradient, None),
                (Rule::Guided, None),
                (Rule::Deconvnet, None),
                (Rule::Rescale, None),
                (Rule::Gradient, Some("t")),
            ] {
                let pass = Backward {
                    seed: &seed,
                    act,
                    rule,
                    baseline: (rule == Rule::Rescale).then_some(&baseline),
                    layer,
                };
                let (bf, bs) = (fast.backward(&x, &pass).unwrap(), slow.backward(&x, &pass).unwrap());
                assert!(
                    max_rel(&bf.grad, &bs.grad) < tol,
                    "{name} {act:?} {rule:?} {layer:?}: {}",
                    max_rel(&bf.grad, &bs.grad)
                );
                if let (Some(lf), Some(ls)) = (&bf.layer, &bs.layer) {
                    assert!(max_rel(lf, ls) < tol, "{name} layer values");
                }
                let mut r = Rng(3);
                let v = r.tensor(bs.grad.dims(), 1.0).to_dtype(DType::F32).unwrap();
                let a = bs.layer.as_ref().map(|l| r.tensor(l.dims(), 1.0).to_dtype(DType::F32).unwrap());
                let (_, xf) = fast.backward_adjoint(&x, &pass, &mut |_| Ok((v.clone(), a.clone()))).unwrap();
                let (_, xs) = slow.backward_adjoint(&x, &pass, &mut |_| Ok((v.clone(), a.clone()))).unwrap();
                if max_rel(&xs, &xs.zeros_like().unwrap()) > 0.0 {
                    assert!(
                        max_rel(&xf, &xs) < 1e-3,
                        "{name} {act:?} {rule:?} {layer:?} adjoint: {}",
                        max_rel(&xf, &xs)
                    );
                }
            }
        }
    }
}

//! The layer test table, generated: every case of every op registered in [`super::ops`]
//! (each op file lists its own in `cases()`, and the registry will not compile without it)
//! and one case per nonlinearity of [`super::nonlinearity`]'s list. Each case builds the layer
//! in a small graph (the layer between a convolution and a linear head, random weights),
//! checked three ways:
//!
//! 1. the explicit backward pass equals candle's autograd through the forward pass (f64);
//! 2. the explicit second-order adjoint ∇ₓ⟨M(x), v⟩ of the map M under every rule (and of a
//!    pass stopped at the layer, with its activation weighted too) equals a central finite
//!    difference of ⟨M(x), v⟩ along a random direction (f64, softplus surrogate);
//! 3. the CPU kernels equal the candle path (f32): logits, every rule's map, a layer stop,
//!    and the adjoint; and they do not depend on how a batch is split into blocks, or on the
//!    number of threads.

use super::graph::{Flatten, GraphBuilder, Linear, MaxPool, NodeId, Nonlinearity, Op, Shape};
use super::nonlinearity::tests::ALL as NONLINEARITIES;
use super::ops::cases::{conv, signed_act, window, Case, Rng};
use super::{Activation, Backward, Classifier, Network, Rule};
use candle_core::{DType, Device, Tensor, Var};

/// Every case: each registered op's, then each nonlinearity's, with a seed that depends only
/// on the case's module and its place there (a new case elsewhere does not move them).
fn cases() -> Vec<(String, Case, u64)> {
    let mut out = Vec::new();
    for (module, list) in super::ops::layer_cases() {
        assert!(!list.is_empty(), "op module `{module}` registers no test case");
        let base = module.bytes().fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        for (i, case) in list.into_iter().enumerate() {
            out.push((format!("{module}: {}", case.name), case, base.wrapping_add(i as u64 * 101)));
        }
    }
    for (i, kind) in NONLINEARITIES.into_iter().enumerate() {
        let case = Case::new("nonlinearity", move |b, x, r| signed_act(b, x, r, kind));
        out.push((format!("nonlinearity {kind:?}"), case, 7000 + i as u64 * 101));
    }
    out
}

/// The case's network (input 2 channels, 9×9; conv 3×3 → ReLU → the layer `t` → ReLU →
/// max-pool 2×2 (when the layer gives a map of at least 2×2) → flatten → linear 5), in
/// `dtype`.
fn network(case: &Case, seed: u64, dtype: DType) -> Network {
    let body = |b: &mut GraphBuilder, r: &mut Rng| -> NodeId {
        let c = b.push("conv", conv(r, 8, 2, [3, 3], 1, [1; 4], 1, 1), &[0]);
        let a = b.act("conv_relu", Nonlinearity::Relu, c);
        let t = (case.build)(b, a, r);
        assert_eq!(b.nodes()[t].name, "t", "{}: the layer under test must be named `t`", case.name);
        b.act("t_relu", Nonlinearity::Relu, t)
    };
    // The body alone first: the head's width depends on the layer's output shape.
    let mut probe = GraphBuilder::new(2);
    let ta = body(&mut probe, &mut Rng(seed));
    let shape = probe.finish(ta).unwrap().shapes((9, 9)).unwrap()[ta];
    let mut b = GraphBuilder::new(2);
    let mut r = Rng(seed);
    let ta = body(&mut b, &mut r);
    let (f, flat) = match shape {
        Shape::Map(c, h, w) if h >= 2 && w >= 2 => {
            let p = b.push("pool", Op::MaxPool(MaxPool(window(2, 2, 0, true))), &[ta]);
            (b.push("flatten", Op::Flatten(Flatten), &[p]), c * h.div_ceil(2) * w.div_ceil(2))
        }
        s => (b.push("flatten", Op::Flatten(Flatten), &[ta]), s.len()),
    };
    let head =
        Linear { weight: r.tensor(&[5, flat], 1.0 / (flat as f64).sqrt()), bias: Some(r.tensor(&[5], 0.1)) };
    let out = b.push("fc", Op::Linear(head), &[f]);
    let graph = b.finish(out).unwrap().map_tensors(&|t| t.to_dtype(dtype)).unwrap();
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
    for (name, case, s) in cases() {
        let net = network(&case, s + 11, DType::F64).without_kernels();
        let (x, seed) = inputs(s, DType::F64);
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
    for (name, case, s) in cases() {
        let net = network(&case, s + 21, DType::F64).without_kernels();
        let (x, seed) = inputs(s + 100, DType::F64);
        let baseline = x.affine(0.3, 0.1).unwrap();
        let mut r = Rng(s + 7);
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
            let analytic = dot(&xbar, &u);
            let fd = |h: f64| (f(h) - f(-h)) / (2.0 * h);
            let err = |fd: f64| (fd - analytic).abs() / fd.abs().max(1e-8);
            let mut fd1 = fd(1e-5);
            // The rescale rule switches to its limit where |z − z₀| ≤ 1e-6, where its map jumps
            // a little: a unit that close to its baseline value (the self-attention cases have
            // one at 1.2e-6) spoils one step's difference, seldom two.
            if rule == Rule::Rescale && err(fd1) >= 1e-5 {
                fd1 = fd(3e-6);
            }
            assert!(
                err(fd1) < 1e-5,
                "{name} {rule:?} {layer:?}: adjoint {analytic} vs finite difference {fd1}"
            );
        }
    }
}

#[test]
fn kernels_equal_the_candle_path_for_every_layer() {
    for (name, case, s) in cases() {
        let fast = network(&case, s + 31, DType::F32);
        let slow = fast.clone().without_kernels();
        assert!(fast.has_kernels());
        let (x, seed) = inputs(s + 200, DType::F32);
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

#[test]
fn kernels_do_not_depend_on_threads_or_batch_split_for_every_layer() {
    let act = Activation::Softplus { beta: 3.0 };
    for (name, case, s) in cases() {
        let net = network(&case, s + 41, DType::F32);
        let (x, seed) = inputs(s + 300, DType::F32);
        let run = |x: &Tensor, seed: &Tensor| -> Vec<f32> {
            let pass = Backward { seed, act, rule: Rule::Guided, baseline: None, layer: None };
            let bp = net.backward(x, &pass).unwrap();
            let v = bp.grad.ones_like().unwrap();
            let (_, xbar) = net.backward_adjoint(x, &pass, &mut |_| Ok((v.clone(), None))).unwrap();
            [bp.logits, bp.grad, xbar]
                .iter()
                .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .collect()
        };
        let pool = |threads: usize| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let one = pool(1).install(|| run(&x, &seed));
        let two = pool(2).install(|| run(&x, &seed));
        assert_eq!(one, two, "{name}: threads change the result");
        // Image 1 alone against its row of the batch of two.
        let alone = run(&x.narrow(0, 1, 1).unwrap(), &seed.narrow(0, 1, 1).unwrap());
        let both = run(&x, &seed);
        let (k, per) = (5, x.elem_count() / 2);
        let row = |v: &[f32]| -> Vec<f32> {
            [&v[k..2 * k], &v[2 * k + per..2 * k + 2 * per], &v[2 * k + 2 * per + per..]].concat()
        };
        assert_eq!(alone, row(&both), "{name}: the batch changes an image's result");
    }
}

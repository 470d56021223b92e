//! The explicit backward pass against candle's autograd and finite differences.

use crate::common::*;
use candle_core::{DType, Device, Tensor, Var};
use fragility::attack::top_k_objective;
use fragility::attribution::Gradient;
use fragility::model::{one_hot, Activation, Classifier, ReluRule};

/// Autograd gradient of Σ_b logits[b, t_b] with respect to x.
fn autograd_gradient(model: &dyn Classifier, x: &Tensor, targets: &[u32], act: Activation) -> Vec<f32> {
    let xv = Var::from_tensor(x).unwrap();
    let g = one_hot(targets, 10, &Device::Cpu).unwrap().to_dtype(x.dtype()).unwrap();
    let obj = model.logits(xv.as_tensor(), act).unwrap().mul(&g).unwrap().sum_all().unwrap();
    flat(obj.backward().unwrap().get(xv.as_tensor()).unwrap())
}

#[test]
fn explicit_gradient_equals_autograd_on_real_images_with_ties() {
    // Real images have large blank areas where every max-pool window ties: both routes must
    // send the gradient to the first arg-max only.
    let model = random_model(3, DType::F32);
    let set = shipped_images();
    let x = images(&set, &[0, 1, 2, 3, 4, 5]);
    let targets = [0u32, 3, 9, 1, 5, 7];
    for act in [Activation::Relu, Activation::Softplus { beta: 10.0 }] {
        let g = one_hot(&targets, 10, &Device::Cpu).unwrap();
        let explicit = flat(&model.input_gradient(&x, &g, act, ReluRule::Gradient).unwrap().1);
        let auto = autograd_gradient(&model, &x, &targets, act);
        let tol = 1e-5 * max_abs(&auto).max(1e-3);
        assert!(max_abs_diff(&explicit, &auto) <= tol, "{act:?}: {} > {tol}", max_abs_diff(&explicit, &auto));
    }
}

/// Central difference of the scalar `f` along direction `v` at `x` (f64).
fn directional_fd(f: impl Fn(&Tensor) -> f64, x: &Tensor, v: &Tensor, h: f64) -> f64 {
    let xp = (x + (v * h).unwrap()).unwrap();
    let xm = (x - (v * h).unwrap()).unwrap();
    (f(&xp) - f(&xm)) / (2.0 * h)
}

#[test]
fn top_k_attack_direction_is_the_exact_second_derivative() {
    // The top-k objective D(x) (normalised |gradient map| mass on a fixed pixel set) through the
    // softplus surrogate. Its autograd gradient goes through the explicit backward pass, i.e.
    // it is a second derivative of the network. Check ∇D·v against central differences along
    // seeded random directions, in f64 at random continuous inputs. D is smooth only while no
    // max-pool arg-max switches (the routing jumps there), so a direction counts only where the
    // central differences at h and h/10 agree, i.e. no switch lies within ±h.
    let model = random_model(11, DType::F64);
    let dev = Device::Cpu;
    let x = seeded_uniform(&[2, 1, 28, 28], 0.0, 1.0, 100);
    let targets = [2u32, 6];
    let mut m = vec![0f64; 2 * 784];
    for (i, v) in m.iter_mut().enumerate() {
        *v = if (i * 7919) % 13 < 3 { 1.0 } else { 0.0 };
    }
    let mask = Tensor::from_vec(m, (2, 784), &dev).unwrap();
    let act = Activation::Softplus { beta: 10.0 };
    let objective = |x: &Tensor| {
        top_k_objective(&Gradient, &model, x, &targets, &mask, act).unwrap().to_scalar::<f64>().unwrap()
    };
    let xv = Var::from_tensor(&x).unwrap();
    let d = top_k_objective(&Gradient, &model, xv.as_tensor(), &targets, &mask, act).unwrap();
    let grad = d.backward().unwrap().get(xv.as_tensor()).unwrap().clone();
    let mut checked = 0;
    for seed in 0..12 {
        let v = seeded_uniform(&[2, 1, 28, 28], -1.0, 1.0, 200 + seed);
        let analytic = grad.mul(&v).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        let (coarse, fine) =
            (directional_fd(objective, &x, &v, 1e-6), directional_fd(objective, &x, &v, 1e-7));
        if (coarse - fine).abs() > 1e-5 * fine.abs().max(1e-9) {
            continue; // an arg-max switch within ±h along v
        }
        let rel = (analytic - fine).abs() / fine.abs().max(1e-12);
        assert!(rel < 1e-5, "direction {seed}: autograd {analytic} vs finite difference {fine}");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} directions free of arg-max switches");
}

#[test]
fn surrogate_gradient_map_has_a_nonzero_second_order_gradient() {
    // The softplus surrogate's derivative sigmoid(βz) depends on x, so the map has a non-zero
    // gradient. Guards against accidentally detaching the surrogate's derivative.
    let model = random_model(5, DType::F64);
    let x = seeded_uniform(&[1, 1, 28, 28], 0.0, 1.0, 5);
    let mask = Tensor::ones((1, 784), DType::F64, &Device::Cpu).unwrap().narrow(1, 0, 392).unwrap();
    let mask = Tensor::cat(&[mask.clone(), mask.zeros_like().unwrap()], 1).unwrap();
    let xv = Var::from_tensor(&x).unwrap();
    let d =
        top_k_objective(&Gradient, &model, xv.as_tensor(), &[4], &mask, Activation::Softplus { beta: 10.0 })
            .unwrap();
    let g = flat(d.backward().unwrap().get(xv.as_tensor()).unwrap());
    assert!(max_abs(&g) > 0.0);
}

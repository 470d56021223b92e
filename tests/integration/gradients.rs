//! The explicit backward pass against candle's autograd and finite differences.

use crate::common::*;
use candle_core::{DType, Device, Tensor, Var};
use fragility::attack::{objective_gradient, objective_loss, Objective, PrepareContext, TopKObjective};
use fragility::attribution::beta_smooth::Form;
use fragility::attribution::{
    by_name, normalized_saliency, Aggregate, Attribution, BetaSmooth, Gradient, IntegratedGradients,
    NoiseSettings, NoiseTunnel, METHOD_NAMES,
};
use fragility::model::{one_hot, Activation, Classifier, Network, Rule};
use std::sync::Arc;

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
    for act in [Activation::Exact, Activation::Softplus { beta: 10.0 }] {
        let g = one_hot(&targets, 10, &Device::Cpu).unwrap();
        let explicit = flat(&model.input_gradient(&x, &g, act, Rule::Gradient).unwrap().1);
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

/// The methods whose maps attacks steer directly, with small settings for f64 checks.
fn differentiable_methods() -> Vec<Arc<dyn Attribution>> {
    let all: Vec<Arc<dyn Attribution>> = METHOD_NAMES
        .iter()
        .map(|&n| -> Arc<dyn Attribution> {
            match n {
                "integrated_gradients" => {
                    Arc::new(IntegratedGradients { steps: 8, ..IntegratedGradients::default() })
                }
                "smoothgrad" | "smoothgrad_sq" | "vargrad" => {
                    let aggregate = match n {
                        "smoothgrad" => Aggregate::Mean,
                        "smoothgrad_sq" => Aggregate::MeanSquare,
                        _ => Aggregate::Variance,
                    };
                    let settings = NoiseSettings { samples: 3, ..NoiseSettings::default() };
                    Arc::new(NoiseTunnel::new(aggregate, settings, 7, Arc::new(Gradient)))
                }
                n => Arc::from(by_name(n, 7).unwrap()),
            }
        })
        .collect();
    let mut methods: Vec<_> = all.into_iter().filter(|m| m.differentiable()).collect();
    // β-smoothed maps (the softplus(2) network, not the objective's softplus(10)): the
    // direction must be the smoothed map's own derivative.
    for inner in ["gradient", "lrp_epsilon_plus_flat", "grad_cam", "guided_backprop"] {
        let inner: Arc<dyn Attribution> = Arc::from(by_name(inner, 7).unwrap());
        methods.push(Arc::new(BetaSmooth::new(2.0, Form::Network, inner).unwrap()));
    }
    methods
}

/// The top-k loss of `method` on a fixed pixel set, through the softplus surrogate, in f64.
fn top_k_loss(
    method: &dyn Attribution,
    model: &dyn Classifier,
    x: &Tensor,
    anchor: &Tensor,
    targets: &[u32],
) -> Tensor {
    // Pixel sets: every pixel i with (i·7919) mod 13 < 3, the same for both rows.
    let clean: Vec<Vec<f32>> =
        (0..2).map(|_| (0..784).map(|i| if (i * 7919) % 13 < 3 { 1.0 } else { 0.0 }).collect()).collect();
    let goal = TopKObjective { k: Some(784 * 3 / 13) }
        .prepare(&PrepareContext { model, method, clean: &clean, h: 28, w: 28, device: &Device::Cpu })
        .unwrap();
    let rows = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
    let act = Activation::Softplus { beta: 10.0 };
    objective_loss(goal.as_ref(), method, model, x, anchor, targets, &rows, act, 0.0, None).unwrap()
}

#[test]
fn every_attack_direction_is_the_exact_second_derivative() {
    // For every method attacks can steer: the top-k loss D(x) (normalised |map| mass on a fixed
    // pixel set) through the softplus surrogate. Its autograd gradient goes through the
    // explicit backward pass, i.e. it is a second derivative of the network. Check ∇D·v
    // against central differences along seeded random directions, in f64 at random continuous
    // inputs. D is smooth only while no max-pool arg-max (or DeepLIFT's fallback, or
    // Grad-CAM's ReLU) switches, so a direction counts only where the central differences at
    // h and h/10 agree, i.e. no switch lies within ±h. Noise tunnels are anchored at x (the
    // noise stays fixed while x moves), as in the attacks.
    let model = random_model(11, DType::F64);
    let x = seeded_uniform(&[2, 1, 28, 28], 0.0, 1.0, 100);
    let targets = [2u32, 6];
    let methods = differentiable_methods();
    let names: Vec<&str> = methods.iter().map(|m| m.name()).collect();
    for want in
        ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "guided_backprop", "deeplift"]
    {
        assert!(names.contains(&want), "{want} must be attackable; attackable: {names:?}");
    }
    for method in &methods {
        let m = method.as_ref();
        let objective = |y: &Tensor| top_k_loss(m, &model, y, &x, &targets).to_scalar::<f64>().unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let d = top_k_loss(m, &model, xv.as_tensor(), &x, &targets);
        let grads = d.backward().unwrap();
        let grad =
            grads.get(xv.as_tensor()).unwrap_or_else(|| panic!("{}: the map does not depend on x", m.name()));
        assert!(max_abs(&flat(grad)) > 0.0, "{}: zero attack direction", m.name());
        let mut checked = 0;
        for seed in 0..10 {
            let v = seeded_uniform(&[2, 1, 28, 28], -1.0, 1.0, 200 + seed);
            let analytic = grad.mul(&v).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
            let (coarse, fine) =
                (directional_fd(objective, &x, &v, 1e-6), directional_fd(objective, &x, &v, 1e-7));
            if (coarse - fine).abs() > 1e-5 * fine.abs().max(1e-9) {
                continue; // a switch within ±h along v
            }
            let rel = (analytic - fine).abs() / fine.abs().max(1e-12);
            assert!(
                rel < 1e-5,
                "{} direction {seed}: autograd {analytic} vs finite difference {fine}",
                m.name()
            );
            checked += 1;
        }
        assert!(checked >= 4, "{}: only {checked} directions free of switches", m.name());
    }
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
    let act = Activation::Softplus { beta: 10.0 };
    let s = normalized_saliency(&Gradient.attribute(&model, xv.as_tensor(), &[4], act).unwrap()).unwrap();
    let d = s.flatten_from(1).unwrap().mul(&mask).unwrap().sum_all().unwrap();
    let g = flat(d.backward().unwrap().get(xv.as_tensor()).unwrap());
    assert!(max_abs(&g) > 0.0);
}

#[test]
fn vector_jacobian_directions_equal_autograd_through_the_map() {
    // Every differentiable method has a vector–Jacobian product: attacks take their direction
    // from the model's explicit adjoint (H·v for the gradient family; the adjoint of the
    // guided, rescale and layer-stopped passes for the others), without an autograd graph
    // through the map; on the shipped model the CPU kernels compute them. The result must be
    // autograd's gradient of the same loss: exactly (f64, random model, autograd H·v) and to
    // float32 rounding (shipped model, kernels, real images, with the γ softmax term on).
    let methods: Vec<_> = differentiable_methods().into_iter().filter(|m| m.has_map_vjp()).collect();
    let names: Vec<&str> = methods.iter().map(|m| m.name()).collect();
    assert_eq!(
        names,
        [
            "gradient",
            "gradient_x_input",
            "integrated_gradients",
            "smoothgrad",
            "smoothgrad_sq",
            "vargrad",
            "guided_backprop",
            "deeplift",
            "lrp_epsilon_plus",
            "lrp_epsilon_plus_flat",
            "lrp_epsilon_gamma_box",
            "lrp_epsilon_alpha2_beta1",
            "lrp_epsilon_alpha2_beta1_flat",
            "grad_cam",
            "grad_cam_plus_plus",
            "xgrad_cam",
            "hires_cam",
            "layer_cam",
            "guided_grad_cam",
            "gradient_beta_smooth2",
            "lrp_epsilon_plus_flat_beta_smooth2",
            "grad_cam_beta_smooth2",
            "guided_backprop_beta_smooth2"
        ]
    );
    let set = shipped_images();
    let cases: [(Network, Tensor, f64, f64); 2] = [
        (random_model(11, DType::F64), seeded_uniform(&[2, 1, 28, 28], 0.0, 1.0, 100), 0.0, 1e-9),
        (shipped_model(), images(&set, &[0, 1]), 25.0, 2e-4),
    ];
    let targets = [2u32, 6];
    let rows = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
    let act = Activation::Softplus { beta: 10.0 };
    for (model, x, gamma, tol) in &cases {
        let p0 = candle_nn::ops::softmax(&model.logits(x, Activation::Exact).unwrap(), 1).unwrap();
        for method in &methods {
            let m = method.as_ref();
            let clean: Vec<Vec<f32>> =
                (0..2).map(|_| (0..784).map(|i| ((i * 7919) % 13 < 3) as u8 as f32).collect()).collect();
            let goal = TopKObjective { k: Some(784 * 3 / 13) }
                .prepare(&PrepareContext {
                    model,
                    method: m,
                    clean: &clean,
                    h: 28,
                    w: 28,
                    device: &Device::Cpu,
                })
                .unwrap();
            let fast =
                objective_gradient(goal.as_ref(), m, model, x, x, &targets, &rows, act, *gamma, Some(&p0))
                    .unwrap();
            let xv = Var::from_tensor(x).unwrap();
            let loss = objective_loss(
                goal.as_ref(),
                m,
                model,
                xv.as_tensor(),
                x,
                &targets,
                &rows,
                act,
                *gamma,
                Some(&p0),
            )
            .unwrap();
            let auto = loss.backward().unwrap().get(xv.as_tensor()).unwrap().to_dtype(DType::F64).unwrap();
            let max = |t: &Tensor| t.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            let scale = max(&auto);
            assert!(scale > 0.0, "{}: zero direction", m.name());
            let d = max(&(fast.to_dtype(DType::F64).unwrap() - &auto).unwrap()) / scale;
            assert!(d < *tol, "{} ({:?}): relative difference {d}", m.name(), x.dtype());
        }
    }
}

#[test]
fn attention_attack_directions_are_exact() {
    // The attention methods run only on vision transformers, so the tests above (on the CNN)
    // leave them out: here the top-k loss of their maps on the fixture's ViT (64×64, a 4×4
    // patch grid), in f64 on the candle path. The attacks' direction (the explicit adjoint of
    // each layer's stopped pass, `map_then_vjp`) equals autograd through the map, and ∇D·v
    // equals central differences wherever the differences at h and h/10 agree.
    let model = crate::attention::vit(64).without_kernels();
    let x = crate::torchvision::fixture_dir().join("attention_vit_b_16.safetensors");
    let x = candle_core::safetensors::load(x, &Device::Cpu).unwrap()["x_64"].clone();
    let targets = [5u32, 3];
    let rows = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
    let act = Activation::Softplus { beta: 10.0 };
    let clean: Vec<Vec<f32>> =
        (0..2).map(|_| (0..4096).map(|i| ((i * 7919) % 13 < 3) as u8 as f32).collect()).collect();
    for name in fragility::attribution::ATTENTION_METHOD_NAMES {
        let m: Arc<dyn Attribution> = Arc::from(by_name(name, 7).unwrap());
        let m = m.as_ref();
        assert!(m.differentiable() && m.has_map_vjp(), "{name}");
        let cx =
            PrepareContext { model: &model, method: m, clean: &clean, h: 64, w: 64, device: &Device::Cpu };
        let goal = TopKObjective { k: Some(4096 * 3 / 13) }.prepare(&cx).unwrap();
        let loss = |y: &Tensor| {
            objective_loss(goal.as_ref(), m, &model, y, &x, &targets, &rows, act, 0.0, None).unwrap()
        };
        let fast =
            objective_gradient(goal.as_ref(), m, &model, &x, &x, &targets, &rows, act, 0.0, None).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let auto = loss(xv.as_tensor()).backward().unwrap().get(xv.as_tensor()).unwrap().clone();
        let max = |t: &Tensor| t.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(max(&auto) > 0.0, "{name}: zero direction");
        let d = max(&(&fast - &auto).unwrap()) / max(&auto);
        assert!(d < 1e-9, "{name}: adjoint vs autograd {d}");
        let mut checked = 0;
        for seed in 0..4 {
            let v = seeded_uniform(&[2, 3, 64, 64], -1.0, 1.0, 300 + seed);
            let f = |y: &Tensor| loss(y).to_scalar::<f64>().unwrap();
            let (coarse, fine) = (directional_fd(f, &x, &v, 1e-5), directional_fd(f, &x, &v, 1e-6));
            if (coarse - fine).abs() > 1e-4 * fine.abs().max(1e-9) {
                continue; // a switch within ±h along v
            }
            let analytic = fast.mul(&v).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
            // Against the step h = 1e-5: at 1e-6 the map's own rounding (1e-14 of a loss of
            // order one, over 2h) is 1e-5 of these derivatives (about 6e-5).
            let rel = (analytic - coarse).abs() / coarse.abs().max(1e-12);
            assert!(rel < 1e-5, "{name} direction {seed}: adjoint {analytic} vs finite difference {coarse}");
            checked += 1;
        }
        assert!(checked >= 2, "{name}: only {checked} directions free of switches");
    }
}

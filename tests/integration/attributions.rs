//! Every attribution method through the same invariants, plus analytic identities.

use crate::common::*;
use candle_core::{DType, Device, Tensor};
use fragility::attribution::{
    by_name, quadrature, Attribution, IntegratedGradients, KernelShap, Lime, Occlusion, Quadrature,
    METHOD_NAMES,
};
use fragility::model::{Activation, Backprop, Backward, Classifier};

/// A linear classifier logits = x·Wᵀ + b on 1×4×4 images, 3 classes.
struct Linear {
    w: Tensor, // [3,16]
    b: Tensor, // [3]
}

impl Linear {
    fn new() -> Self {
        let w: Vec<f32> = (0..48).map(|i| ((i * 37 % 11) as f32 - 5.0) / 4.0).collect();
        Linear {
            w: Tensor::from_vec(w, (3, 16), &Device::Cpu).unwrap(),
            b: Tensor::new(&[0.5f32, -1.0, 2.0], &Device::Cpu).unwrap(),
        }
    }
}

impl Classifier for Linear {
    fn name(&self) -> &str {
        "linear"
    }
    fn input_shape(&self) -> (usize, usize, usize) {
        (1, 4, 4)
    }
    fn num_classes(&self) -> usize {
        3
    }
    fn device(&self) -> &Device {
        self.w.device()
    }
    fn logits(&self, x: &Tensor, _act: Activation) -> fragility::Result<Tensor> {
        let b = x.dim(0)?;
        Ok(x.reshape((b, 16))?.matmul(&self.w.t()?)?.broadcast_add(&self.b)?)
    }
    fn backward(&self, x: &Tensor, pass: &Backward) -> fragility::Result<Backprop> {
        // No nonlinearity: every rule's backward pass is seed · W.
        let g = pass.seed.matmul(&self.w)?.reshape(x.shape())?;
        Ok(Backprop { logits: self.logits(x, pass.act)?, grad: g, layer: None })
    }
}

fn all_methods() -> Vec<Box<dyn Attribution>> {
    METHOD_NAMES.iter().map(|n| by_name(n, 42).unwrap()).collect()
}

#[test]
fn on_a_linear_model_the_gradient_family_gives_the_weights_and_w_times_x() {
    // logit_t = w_t·x + b_t, so ∇ = w_t everywhere: gradient = w_t, SmoothGrad = mean of w_t
    // = w_t, gradient × input = w_t ⊙ x, IG with a zero baseline = x ⊙ Σ wᵢ·w_t = w_t ⊙ x
    // (quadrature weights sum to one) for every quadrature rule, and DeepLIFT (multipliers =
    // weights) = w_t ⊙ (x − 0). The noise tunnel over a constant gradient: SmoothGrad² = w_t²
    // and VarGrad = 0.
    let model = Linear::new();
    let x = seeded_uniform(&[2, 1, 4, 4], 0.0, 1.0, 1).to_dtype(DType::F32).unwrap();
    let targets = [2u32, 0];
    let w = model.w.to_vec2::<f32>().unwrap();
    let xs = flat(&x);
    let want_grad: Vec<f32> = targets.iter().flat_map(|&t| w[t as usize].clone()).collect();
    let want_gxi: Vec<f32> = want_grad.iter().zip(&xs).map(|(a, b)| a * b).collect();
    // The CAM family (every name with `cam`) needs a conv layer, which the linear model lacks;
    // LRP's rules are the layer graph's (a hand-written classifier's backward pass knows no
    // rules; tests/integration/lrp.rs); the perturbation methods have their own tests below.
    let own_test = |n: &str| {
        n.contains("cam") || n.starts_with("lrp_") || ["occlusion", "lime", "kernel_shap"].contains(&n)
    };
    for m in all_methods().into_iter().filter(|m| !own_test(m.name())) {
        let got = flat(&m.attribute(&model, &x, &targets, Activation::Exact).unwrap());
        let want_sq: Vec<f32> = want_grad.iter().map(|w| w * w).collect();
        let zeros = vec![0f32; want_grad.len()];
        let want = match m.name() {
            // No ReLU in a linear model: guided backprop and deconvnet are the gradient.
            "gradient" | "smoothgrad" | "guided_backprop" | "deconvnet" => &want_grad,
            "smoothgrad_sq" => &want_sq,
            "vargrad" => &zeros,
            _ => &want_gxi,
        };
        assert!(max_abs_diff(&got, want) < 1e-5, "{}", m.name());
    }
    for rule in [Quadrature::Trapezoid, Quadrature::LeftRiemann, Quadrature::RightRiemann] {
        let ig = IntegratedGradients { steps: 7, quadrature: rule, ..IntegratedGradients::default() };
        let got = flat(&ig.attribute(&model, &x, &targets, Activation::Exact).unwrap());
        assert!(max_abs_diff(&got, &want_gxi) < 1e-5, "{rule:?}");
    }
}

#[test]
fn every_method_has_the_input_shape_finite_values_and_is_batch_independent() {
    // A batch of 7 equals 7 batches of 1, and the same seed gives identical maps.
    let model = random_model(1, DType::F32);
    let set = shipped_images();
    let ids: Vec<usize> = (10..17).collect();
    let x = images(&set, &ids);
    let targets = [0u32, 1, 2, 3, 4, 5, 6];
    for m in all_methods() {
        let whole = m.attribute(&model, &x, &targets, Activation::Exact).unwrap();
        assert_eq!(whole.dims(), &[7, 1, 28, 28], "{}", m.name());
        let whole = flat(&whole);
        assert!(whole.iter().all(|v| v.is_finite()), "{}", m.name());
        for (i, &id) in ids.iter().enumerate() {
            let one =
                flat(&m.attribute(&model, &images(&set, &[id]), &targets[i..=i], Activation::Exact).unwrap());
            let part = &whole[i * 784..(i + 1) * 784];
            let tol = 1e-5 * max_abs(part).max(1e-6);
            assert!(max_abs_diff(&one, part) <= tol, "{} image {i}", m.name());
        }
        let again =
            flat(&by_name(m.name(), 42).unwrap().attribute(&model, &x, &targets, Activation::Exact).unwrap());
        assert_eq!(again, whole, "{} is not deterministic", m.name());
    }
    // A different seed changes SmoothGrad's noise, hence its map.
    let other =
        flat(&by_name("smoothgrad", 43).unwrap().attribute(&model, &x, &targets, Activation::Exact).unwrap());
    let sg =
        flat(&by_name("smoothgrad", 42).unwrap().attribute(&model, &x, &targets, Activation::Exact).unwrap());
    assert_ne!(other, sg);
}

#[test]
fn integrated_gradients_is_complete_on_the_real_model() {
    // Completeness: Σ IG(x) = logit_t(x) − logit_t(0), up to the quadrature error. On the ReLU
    // network the integrand is piecewise smooth; 50 Gauss–Legendre nodes resolve it to well
    // under 1% of the logit gap on the shipped model.
    let model = shipped_model();
    let set = shipped_images();
    let ids: Vec<usize> = (0..8).collect();
    let x = images(&set, &ids);
    let targets = fragility::model::predict(&model, &x).unwrap();
    let ig =
        flat(&IntegratedGradients::default().attribute(&model, &x, &targets, Activation::Exact).unwrap());
    let lx = model.logits(&x, Activation::Exact).unwrap().to_vec2::<f32>().unwrap();
    let l0 = model.logits(&x.zeros_like().unwrap(), Activation::Exact).unwrap().to_vec2::<f32>().unwrap();
    for i in 0..ids.len() {
        let t = targets[i] as usize;
        let sum: f64 = ig[i * 784..(i + 1) * 784].iter().map(|&v| v as f64).sum();
        let gap = (lx[i][t] - l0[i][t]) as f64;
        assert!((sum - gap).abs() <= 1e-2 * gap.abs().max(1.0), "image {i}: Σ IG {sum} vs gap {gap}");
    }
}

#[test]
fn quadrature_weights_sum_to_one_for_every_rule() {
    for rule in
        [Quadrature::GaussLegendre, Quadrature::Trapezoid, Quadrature::LeftRiemann, Quadrature::RightRiemann]
    {
        for n in [1, 2, 50, 100] {
            let (a, w) = quadrature(rule, n);
            assert_eq!(a.len(), n);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{rule:?} {n}");
        }
    }
}

/// fmnist_cnn with hand-set weights that reduce it to a function of two block maxima.
///
/// conv1: channel 0 copies the input (centre tap 1, bias 0); channels 1–31 have zero weights
/// and bias −1 (always off). conv2: channel 0 copies conv1's channel 0; the others are off.
/// After the two pools, p[0] = A = max of x over rows 0–3 × cols 0–3 and p[1] = B = max over
/// rows 0–3 × cols 4–7 (flattened indices 0 and 1 of channel 0). fc1: u0 = relu(A − B),
/// u1 = relu(A + B), u2 = relu(A − 10) (always off); every other unit has zero weights and
/// bias, except u3 = relu(A − 0.5). fc2: logit_0 = u0 − u1 + u2, logit_1 = u0 + u1,
/// logit_2 = u3; other logits 0.
fn two_block_cnn() -> fragility::model::Network {
    let dev = Device::Cpu;
    let mut c1w = vec![0f32; 32 * 9];
    c1w[4] = 1.0; // channel 0, centre tap
    let mut c1b = vec![-1f32; 32];
    c1b[0] = 0.0;
    let mut c2w = vec![0f32; 64 * 32 * 9];
    c2w[4] = 1.0; // output 0, input 0, centre tap
    let mut c2b = vec![-1f32; 64];
    c2b[0] = 0.0;
    let mut f1w = vec![0f32; 128 * 3136];
    let mut f1b = vec![0f32; 128];
    f1w[0] = 1.0; // u0: A − B
    f1w[1] = -1.0;
    f1w[3136] = 1.0; // u1: A + B
    f1w[3136 + 1] = 1.0;
    f1w[2 * 3136] = 1.0; // u2: A − 10
    f1b[2] = -10.0;
    f1w[3 * 3136] = 1.0; // u3: A − 0.5
    f1b[3] = -0.5;
    let mut f2w = vec![0f32; 10 * 128];
    f2w[0] = 1.0;
    f2w[1] = -1.0;
    f2w[2] = 1.0;
    f2w[128] = 1.0;
    f2w[129] = 1.0;
    f2w[2 * 128 + 3] = 1.0;
    let t = |v: Vec<f32>, s: &[usize]| Tensor::from_vec(v, s, &dev).unwrap();
    fragility::model::fmnist_cnn::new(
        t(c1w, &[32, 1, 3, 3]),
        t(c1b, &[32]),
        t(c2w, &[64, 32, 3, 3]),
        t(c2b, &[64]),
        t(f1w, &[128, 3136]),
        t(f1b, &[128]),
        t(f2w, &[10, 128]),
        t(vec![0f32; 10], &[10]),
    )
    .unwrap()
}

#[test]
fn relu_rules_on_a_hand_built_cnn() {
    // Image: 0 except x(1,2) = 0.9 (the maximum A of block A) and x(2,5) = 0.5 (B). Then
    // u0 = 0.4, u1 = 1.4, u2 = 0 (z = −9.1), logit_0 = 0.4 − 1.4 = −1.0. Upstream at fc1's
    // output: (1, −1, 1).
    // * gradient: the ReLU of u2 is off, so ∂/∂A = 1·1 + (−1)·1 = 0 and ∂/∂B = −1 − 1 = −2:
    //   the map is −2 at (2,5) and 0 elsewhere.
    // * guided: at fc1, relu(1, −1, 1) ⊙ step(0.4, 1.4, −9.1) = (1, 0, 0), so ∂/∂A = 1 and
    //   ∂/∂B = −1; at conv2's ReLU the −1 is cut: the map is 1 at (1,2) and 0 elsewhere.
    // * deconvnet: at fc1, relu(1, −1, 1) = (1, 0, 1) whatever z, so ∂/∂A = 1 + 1 = 2 and
    //   ∂/∂B = −1, cut at conv2: the map is 2 at (1,2) and 0 elsewhere.
    let model = two_block_cnn();
    let x = two_block_image();
    let logits = model.logits(&x, Activation::Exact).unwrap().to_vec2::<f32>().unwrap();
    assert!((logits[0][0] + 1.0).abs() < 1e-6, "{:?}", logits[0]);
    let expect = |name: &str, pixel: usize, value: f32| {
        let map = flat(&by_name(name, 0).unwrap().attribute(&model, &x, &[0], Activation::Exact).unwrap());
        let mut want = vec![0f32; 784];
        want[pixel] = value;
        assert!(
            max_abs_diff(&map, &want) < 1e-6,
            "{name}: {:?}",
            map.iter().enumerate().filter(|(_, v)| **v != 0.0).collect::<Vec<_>>()
        );
    };
    expect("gradient", 2 * 28 + 5, -2.0);
    expect("guided_backprop", 28 + 2, 1.0);
    expect("deconvnet", 28 + 2, 2.0);
}

/// The two-block test image: 0 except x(1,2) = 0.9 (block A's maximum) and x(2,5) = 0.5 (B's).
fn two_block_image() -> Tensor {
    let mut img = vec![0f32; 784];
    img[28 + 2] = 0.9;
    img[2 * 28 + 5] = 0.5;
    Tensor::from_vec(img, (1, 1, 28, 28), &Device::Cpu).unwrap()
}

#[test]
fn grad_cam_on_a_hand_built_cnn() {
    // Layer conv2_relu: channel 0 equals pool1 of x, so a(0,1) = 0.9 and a(1,2) = 0.5 on the
    // 14×14 grid; every other channel is 0. Target 1: logit_1 = (A − B) + (A + B) = 2A, so
    // ∂/∂a is 2 at (0,1) (A's arg-max) and 0 elsewhere: α₀ = 2/196, cam = (2/196)·a, i.e.
    // 1.8/196 at (0,1) and 1.0/196 at (1,2). Bilinear ×2 with align_corners = false: output o
    // samples o/2 − 1/4 (clamped at 0), so rows/cols weights U[0] = (1), U[1] = (.75,.25),
    // U[2] = (.25,.75), U[3] = (0,.75,.25), U[4] = (0,.25,.75). Hence
    //   up(0,2) = 1·.75·1.8/196, up(0,3) = .75·1.8/196, up(3,4) = .75·.75·1.0/196,
    //   up(2,3) = .25·.75·1.8/196 + .75·.25·1.0/196, and Σ up = 4·Σ cam = 11.2/196.
    // Target 0 (logit_0 = −2B): α₀ = −2/196 < 0 on a non-negative map, so the ReLU gives 0.
    let model = two_block_cnn();
    let x = two_block_image();
    let cam = flat(&by_name("grad_cam", 0).unwrap().attribute(&model, &x, &[1], Activation::Exact).unwrap());
    let at = |r: usize, c: usize| cam[r * 28 + c];
    for (r, c, want) in
        [(0, 2, 0.75 * 1.8), (0, 3, 0.75 * 1.8), (3, 4, 0.5625), (2, 3, 0.1875 * 2.8), (10, 10, 0.0)]
    {
        assert!((at(r, c) - want / 196.0).abs() < 1e-7, "({r},{c}): {} vs {}", at(r, c), want / 196.0);
    }
    assert!((cam.iter().sum::<f32>() - 11.2 / 196.0).abs() < 1e-6);
    let zero = flat(&by_name("grad_cam", 0).unwrap().attribute(&model, &x, &[0], Activation::Exact).unwrap());
    assert!(zero.iter().all(|&v| v == 0.0));

    // Guided Grad-CAM, target 1: guided backprop is 2 at (1,2) (fc1 upstream (1,1,0), so
    // ∂/∂A = 2 and ∂/∂B = −1 + 1 = 0), times up(1,2) = .75·.75·1.8/196: 2.025/196 there, 0
    // elsewhere.
    let ggc =
        flat(&by_name("guided_grad_cam", 0).unwrap().attribute(&model, &x, &[1], Activation::Exact).unwrap());
    let mut want = vec![0f32; 784];
    want[28 + 2] = 2.025 / 196.0;
    assert!(max_abs_diff(&ggc, &want) < 1e-7);
}

#[test]
fn deeplift_rescale_on_a_hand_built_cnn() {
    // Zero baseline: the reference pre-activations are 0 for the copied channels and
    // (0, 0, −10, −0.5) at fc1.
    // * Target 2, logit_2 = relu(A − 0.5): z = 0.4, z₀ = −0.5, multiplier (0.4 − 0)/0.9 = 4/9
    //   (the gradient would say 1); the copy layers have z = 0.9 against z₀ = 0, multiplier 1.
    //   So m = 4/9 at (1,2) and DeepLIFT = 4/9 · 0.9 = 0.4 there, 0 elsewhere: exactly
    //   logit_2(x) − logit_2(0) = 0.4 − 0 (summation to delta). Gradient × input gives 0.9.
    // * Target 0, logit_0 = −2B: multipliers 1 on the active units, (0 − 0)/0.9 = 0 on u2,
    //   so m = −2 at (2,5) and DeepLIFT = −2 · 0.5 = −1.0 = logit_0(x) − logit_0(0).
    let model = two_block_cnn();
    let x = two_block_image();
    let dl = by_name("deeplift", 0).unwrap();
    let map2 = flat(&dl.attribute(&model, &x, &[2], Activation::Exact).unwrap());
    let mut want = vec![0f32; 784];
    want[28 + 2] = 0.4;
    assert!(max_abs_diff(&map2, &want) < 1e-6, "target 2: {}", map2[28 + 2]);
    let map0 = flat(&dl.attribute(&model, &x, &[0], Activation::Exact).unwrap());
    let mut want = vec![0f32; 784];
    want[2 * 28 + 5] = -1.0;
    assert!(max_abs_diff(&map0, &want) < 1e-6);
}

#[test]
fn deeplift_sums_to_the_logit_difference_on_the_real_model() {
    // Summation to delta holds exactly where x's and the baseline's pooling arg-maxes agree;
    // on real images they differ in places (measured: within 1.5% of the logit gap on these 8
    // images), so allow 3%.
    let model = shipped_model();
    let set = shipped_images();
    let ids: Vec<usize> = (0..8).collect();
    let x = images(&set, &ids);
    let targets = fragility::model::predict(&model, &x).unwrap();
    let dl =
        flat(&by_name("deeplift", 0).unwrap().attribute(&model, &x, &targets, Activation::Exact).unwrap());
    let lx = model.logits(&x, Activation::Exact).unwrap().to_vec2::<f32>().unwrap();
    let l0 = model.logits(&x.zeros_like().unwrap(), Activation::Exact).unwrap().to_vec2::<f32>().unwrap();
    for i in 0..ids.len() {
        let t = targets[i] as usize;
        let sum: f64 = dl[i * 784..(i + 1) * 784].iter().map(|&v| v as f64).sum();
        let gap = (lx[i][t] - l0[i][t]) as f64;
        assert!((sum - gap).abs() <= 0.03 * gap.abs().max(1.0), "image {i}: Σ DeepLIFT {sum} vs gap {gap}");
    }
}

#[test]
fn occlusion_on_a_linear_model_by_hand() {
    // Linear model, 4×4 image, target t: occluding a window with baseline 0 drops the logit by
    // Σ_{p ∈ window} w_t[p]·x[p]. 2×2 windows with stride 1 sit at 3×3 positions; pixel (0,0)
    // is covered by the window at (0,0) only, pixel (1,1) by the four windows at (0,0), (0,1),
    // (1,0), (1,1), so its value is the mean of their four drops. With stride 2 the four
    // windows tile the image and each pixel gets its own window's drop.
    let model = Linear::new();
    let x = seeded_uniform(&[1, 1, 4, 4], 0.0, 1.0, 4).to_dtype(DType::F32).unwrap();
    let xs = flat(&x);
    let w = model.w.to_vec2::<f32>().unwrap();
    let t = 1usize;
    let contrib: Vec<f32> = (0..16).map(|p| w[t][p] * xs[p]).collect();
    let drop = |r: usize, c: usize| {
        contrib[r * 4 + c] + contrib[r * 4 + c + 1] + contrib[(r + 1) * 4 + c] + contrib[(r + 1) * 4 + c + 1]
    };
    let occ = Occlusion { window: Some([2, 2]), stride: Some(1), baseline: 0.0 };
    let map = flat(&occ.attribute(&model, &x, &[t as u32], Activation::Exact).unwrap());
    assert!((map[0] - drop(0, 0)).abs() < 1e-6);
    let centre = (drop(0, 0) + drop(0, 1) + drop(1, 0) + drop(1, 1)) / 4.0;
    assert!((map[5] - centre).abs() < 1e-6, "{} vs {centre}", map[5]);
    let tiles = Occlusion { window: Some([2, 2]), stride: Some(2), baseline: 0.0 };
    let map = flat(&tiles.attribute(&model, &x, &[t as u32], Activation::Exact).unwrap());
    for r in 0..4 {
        for c in 0..4 {
            let want = drop(r / 2 * 2, c / 2 * 2);
            assert!((map[r * 4 + c] - want).abs() < 1e-6, "({r},{c})");
        }
    }
    // A baseline of 1 drops the logit by Σ w·(x − 1) instead.
    let ones = Occlusion { window: Some([2, 2]), stride: Some(2), baseline: 1.0 };
    let map = flat(&ones.attribute(&model, &x, &[t as u32], Activation::Exact).unwrap());
    let want: f32 = [0, 1, 4, 5].iter().map(|&p| w[t][p] * (xs[p] - 1.0)).sum();
    assert!((map[0] - want).abs() < 1e-6);
}

#[test]
fn lime_and_kernel_shap_recover_a_linear_model_exactly() {
    // One feature per pixel (cell 1, F = 16) and no penalty: the target logit of a coalition is
    // b_t + Σ_p w_t[p]·x[p]·z_p, exactly linear in z, so the weighted least-squares fit returns
    // β_p = w_t[p]·x[p] whatever the sample weights (LIME's kernel, or KernelSHAP's sampled
    // coalitions with the pinned empty and full ones).
    let model = Linear::new();
    let x = seeded_uniform(&[2, 1, 4, 4], 0.0, 1.0, 8).to_dtype(DType::F32).unwrap();
    let targets = [0u32, 2];
    let xs = flat(&x);
    let w = model.w.to_vec2::<f32>().unwrap();
    let want: Vec<f32> = (0..32).map(|i| w[targets[i / 16] as usize][i % 16] * xs[i]).collect();
    let lime = Lime { samples: 300, cell: Some(1), ridge: 0.0, seed: 1, ..Lime::default() };
    let got = flat(&lime.attribute(&model, &x, &targets, Activation::Exact).unwrap());
    assert!(max_abs_diff(&got, &want) < 1e-4, "lime");
    let shap = KernelShap { samples: 300, cell: Some(1), seed: 1, ..KernelShap::default() };
    let got = flat(&shap.attribute(&model, &x, &targets, Activation::Exact).unwrap());
    assert!(max_abs_diff(&got, &want) < 1e-4, "kernel_shap");
}

#[test]
fn kernel_shap_with_every_coalition_gives_exact_shapley_values() {
    // 3×3 grid of 10-pixel cells (F = 9 ≤ 12): every coalition is enumerated. Reference: the
    // Shapley formula φ_i = Σ_{S ∌ i} |S|!(F−|S|−1)!/F! · (v(S ∪ {i}) − v(S)), with v(S) the
    // shipped model's target logit on the image with only the cells in S kept (others 0),
    // computed here directly from the model.
    let model = shipped_model();
    let set = shipped_images();
    let x = images(&set, &[3]);
    let t = fragility::model::predict(&model, &x).unwrap()[0];
    let (features, nf) = fragility::attribution::surrogate::grid_features(28, 28, 10);
    assert_eq!(nf, 9);
    let img = flat(&x);
    let masked: Vec<f32> = (0..1usize << nf)
        .flat_map(|s| (0..784).map(move |p| (s, p)))
        .map(|(s, p)| if (s >> features[p]) & 1 == 1 { img[p] } else { 0.0 })
        .collect();
    let batch = Tensor::from_vec(masked, (1 << nf, 1, 28, 28), &Device::Cpu).unwrap();
    let v: Vec<f64> = fragility::model::logits_in_passes(&model, &batch)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
        .iter()
        .map(|l| l[t as usize] as f64)
        .collect();
    let fact = |n: usize| (1..=n).map(|k| k as f64).product::<f64>();
    let phi: Vec<f64> = (0..nf)
        .map(|i| {
            (0..1usize << nf)
                .filter(|s| (s >> i) & 1 == 0)
                .map(|s| {
                    let k = s.count_ones() as usize;
                    fact(k) * fact(nf - k - 1) / fact(nf) * (v[s | 1 << i] - v[s])
                })
                .sum()
        })
        .collect();
    let shap = KernelShap { cell: Some(10), ..KernelShap::default() };
    let map = flat(&shap.attribute(&model, &x, &[t], Activation::Exact).unwrap());
    for (p, &f) in features.iter().enumerate() {
        assert!(
            (map[p] as f64 - phi[f]).abs() < 1e-3 * phi.iter().fold(1.0f64, |a, b| a.max(b.abs())),
            "feature {f}: {} vs {}",
            map[p],
            phi[f]
        );
    }
    // Efficiency: Σ φ = v(all) − v(none).
    let total: f64 = phi.iter().sum();
    assert!((total - (v[(1 << nf) - 1] - v[0])).abs() < 1e-3);
}

#[test]
fn lime_with_slic_segments_parses_from_a_config_and_is_constant_on_each_superpixel() {
    // `methods.lime = { segments = "slic", n_segments = 30 }`: the other keys keep their
    // defaults (compactness 3, cell 4 unused), KernelSHAP stays on the grid, and the map of an
    // image is one value per SLIC superpixel of that image. An unknown segmentation is refused.
    let text = shipped_study(
        "[methods]\nnames = [\"lime\", \"kernel_shap\"]\nlime = { segments = \"slic\", n_segments = 30 }\n[attacks]\nnames = [\"random_sign\"]\nepsilons = [0.1]\n",
    );
    let path = root().join("slic.toml"); // never read: `parse` takes the text
    let plan = fragility::config::Plan::parse(&path, &text).unwrap();
    let lime = plan.methods().iter().find(|m| m.name() == "lime").unwrap();
    let params = lime.params();
    assert_eq!(params["segments"], "slic");
    assert_eq!(params["n_segments"], 30);
    assert_eq!(params["compactness"], 3.0);
    assert_eq!(params["cell"], "auto");
    let shap = plan.methods().iter().find(|m| m.name() == "kernel_shap").unwrap();
    assert_eq!(shap.params()["segments"], "grid");

    let model = shipped_model();
    let x = images(&shipped_images(), &[0]);
    lime.check(&model).unwrap();
    let map = flat(&lime.attribute(&model, &x, &[9], Activation::Exact).unwrap());
    let labels = fragility::attribution::slic(&flat(&x), 28, 28, 30, 3.0, 10);
    let k = labels.iter().max().unwrap() + 1;
    assert!((20..=40).contains(&k), "{k} superpixels for 30 requested");
    for p in 0..784 {
        let first = labels.iter().position(|&l| l == labels[p]).unwrap();
        assert_eq!(map[p], map[first], "pixel {p} differs from its superpixel");
    }

    let bad = text.replace("segments = \"slic\"", "segments = \"quickshift\"");
    let Err(err) = fragility::config::Plan::parse(&path, &bad) else { panic!("quickshift accepted") };
    assert!(err.to_string().contains("quickshift"), "{err}");
}

//! Tests of the nonlinearities: the rules by hand, every function against finite differences,
//! its f32, f64 and tensor forms against each other, surrogates against the real functions.

use super::*;

#[test]
fn the_relu_rescale_sweep_is_the_scalar_rule() {
    // Far apart, across the kink, within and just outside RESCALE_EPS, equal, signed zeros.
    let zs = [-2.0f32, -1e-7, -0.0, 0.0, 3e-7, 1e-6, 2.5e-6, 0.75, 4.0];
    for &z in &zs {
        for &z0 in &zs {
            let want = rescale(Nonlinearity::Relu, Activation::Exact, z, z0).0;
            assert_eq!(relu_rescale(z, z0).to_bits(), want.to_bits(), "z={z} z0={z0}");
        }
    }
}

const KINDS: [Nonlinearity; 3] = [Nonlinearity::Relu, Nonlinearity::Relu6, Nonlinearity::LeakyRelu(0.1)];

#[test]
fn surrogate_derivatives_match_differences_and_approach_the_real_function() {
    let act = Activation::Softplus { beta: 3.0 };
    for kind in KINDS {
        for z in [-2.0f32, -0.3, 0.0, 0.4, 5.7, 6.2, 9.0] {
            let (_, d, s) = eval(kind, act, z);
            let h = 1e-2f32;
            let f = |z: f32| f64::from(eval(kind, act, z).0);
            let fd = (f(z + h) - f(z - h)) / (2.0 * f64::from(h));
            assert!((f64::from(d) - fd).abs() < 1e-3, "{kind:?} φ′({z}): {d} vs {fd}");
            let fd2 = (f64::from(eval(kind, act, z + h).1) - f64::from(eval(kind, act, z - h).1)) / 0.02;
            assert!((f64::from(s) - fd2).abs() < 1e-2, "{kind:?} φ″({z}): {s} vs {fd2}");
        }
        // Large β: the surrogate is within ln 2/β of the real function.
        let sharp = Activation::Softplus { beta: 1000.0 };
        for z in [-3.0f32, 0.5, 3.0, 7.0] {
            let (real, soft) = (eval(kind, Activation::Exact, z).0, eval(kind, sharp, z).0);
            assert!((real - soft).abs() < 2e-3, "{kind:?} {z}: {real} vs {soft}");
        }
    }
    // ReLU6 is flat above 6 and below 0: real derivative 0 there, 1 between.
    assert_eq!(eval(Nonlinearity::Relu6, Activation::Exact, 7.0), (6.0, 0.0, 0.0));
    assert_eq!(eval(Nonlinearity::Relu6, Activation::Exact, 3.0), (3.0, 1.0, 0.0));
    assert_eq!(eval(Nonlinearity::LeakyRelu(0.1), Activation::Exact, -2.0), (-0.2, 0.1, 0.0));
}

#[test]
fn rules_by_hand() {
    let relu = Activation::Exact;
    let k = Nonlinearity::Relu;
    // z = 2 (open), z = −1 (closed); upstream g = −3 and 4.
    assert_eq!(backward(k, relu, Rule::Gradient, 2.0, 1.0, 0.0, -3.0), -3.0);
    assert_eq!(backward(k, relu, Rule::Guided, 2.0, 1.0, 0.0, -3.0), 0.0);
    assert_eq!(backward(k, relu, Rule::Guided, 2.0, 1.0, 0.0, 4.0), 4.0);
    assert_eq!(backward(k, relu, Rule::Guided, -1.0, 0.0, 0.0, 4.0), 0.0);
    assert_eq!(backward(k, relu, Rule::Deconvnet, -1.0, 0.0, 0.0, 4.0), 4.0);
    // Rescale from z₀ = −1 to z = 3: m = (3 − 0)/(3 + 1) = 0.75.
    assert_eq!(backward(k, relu, Rule::Rescale, 3.0, 1.0, -1.0, 4.0), 3.0);
    // ReLU6 from z₀ = 0 to z = 8: m = 6/8.
    assert_eq!(backward(Nonlinearity::Relu6, relu, Rule::Rescale, 8.0, 0.0, 0.0, 1.0), 0.75);
}

/// Every function, with the parameters the importers produce (the kernels' tests use it too).
pub(crate) const ALL: [Nonlinearity; 11] = [
    Nonlinearity::Relu,
    Nonlinearity::Relu6,
    Nonlinearity::LeakyRelu(0.1),
    Nonlinearity::Sigmoid,
    Nonlinearity::Tanh,
    Nonlinearity::Silu,
    Nonlinearity::Gelu,
    Nonlinearity::GeluTanh,
    Nonlinearity::HardSigmoid { alpha: 1.0 / 6.0, beta: 0.5 },
    Nonlinearity::HardSigmoid { alpha: 0.2, beta: 0.5 },
    Nonlinearity::HardSwish,
];

/// Points away from every kink (0, 6, ±3, ±2.5).
const POINTS: [f64; 9] = [-4.3, -2.1, -0.7, -0.05, 0.4, 1.3, 2.6, 4.4, 6.7];

const ACTS: [Activation; 3] =
    [Activation::Exact, Activation::Softplus { beta: 3.0 }, Activation::SmoothDerivative { beta: 3.0 }];

#[test]
fn first_and_second_derivatives_match_central_differences_in_f64() {
    let h = 1e-5;
    for kind in ALL {
        for act in ACTS {
            for z in POINTS {
                let (v, d, s) = eval_at(kind, act, z);
                if let Activation::SmoothDerivative { beta } = act {
                    // The real value with the surrogate's derivatives (checked as the surrogate).
                    let (real, surrogate) = (
                        eval_at(kind, Activation::Exact, z),
                        eval_at(kind, Activation::Softplus { beta }, z),
                    );
                    assert_eq!((v, d, s), (real.0, surrogate.1, surrogate.2), "{kind:?} {act:?} at {z}");
                    continue;
                }
                let f = |z: f64| eval_at(kind, act, z);
                let fd = (f(z + h).0 - f(z - h).0) / (2.0 * h);
                let fd2 = (f(z + h).1 - f(z - h).1) / (2.0 * h);
                assert!((d - fd).abs() < 1e-7, "{kind:?} {act:?} φ′({z}): {d} vs {fd}");
                assert!((s - fd2).abs() < 1e-7, "{kind:?} {act:?} φ″({z}): {s} vs {fd2}");
            }
        }
    }
}

#[test]
fn the_f32_and_f64_forms_agree() {
    for kind in ALL {
        for act in ACTS {
            for z in POINTS.into_iter().chain([-80.0, 0.0, 80.0]) {
                let (a, b) = (eval(kind, act, z as f32), eval_at(kind, act, z));
                for (x, y) in [(a.0, b.0), (a.1, b.1), (a.2, b.2)] {
                    let tol = 2e-6 * (1.0 + y.abs());
                    assert!((f64::from(x) - y).abs() <= tol, "{kind:?} {act:?} at {z}: {a:?} vs {b:?}");
                }
            }
        }
    }
}

#[test]
fn the_tensor_form_equals_the_scalar_form() {
    let dev = candle_core::Device::Cpu;
    let zs: Vec<f64> = POINTS.into_iter().chain([-80.0, 0.0, 80.0]).collect();
    for kind in ALL {
        for act in ACTS {
            for dtype in [DType::F64, DType::F32] {
                let z = Tensor::new(zs.as_slice(), &dev).unwrap().to_dtype(dtype).unwrap();
                let (v, d, s) = eval_tensor(kind, act, &z, true).unwrap();
                let got =
                    [v, d, s.unwrap()].map(|t| t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap());
                let rel = if dtype == DType::F64 { 1e-12 } else { 2e-6 };
                for (i, &zi) in zs.iter().enumerate() {
                    let want = eval_at(kind, act, zi);
                    for (g, w) in [(got[0][i], want.0), (got[1][i], want.1), (got[2][i], want.2)] {
                        assert!(
                            (g - w).abs() <= rel * (1.0 + w.abs()),
                            "{kind:?} {act:?} {dtype:?} at {zi}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn surrogates_approach_the_real_function_and_smooth_functions_have_none() {
    for kind in ALL {
        let (sharp, soft) = (Activation::Softplus { beta: 1000.0 }, Activation::Softplus { beta: 1.0 });
        for z in POINTS {
            let real = eval_at(kind, Activation::Exact, z);
            if kind.kinked() {
                let near = eval_at(kind, sharp, z);
                assert!((near.0 - real.0).abs() < 5e-3, "{kind:?} {z}: {near:?} vs {real:?}");
                assert!((near.1 - real.1).abs() < 5e-3, "{kind:?} φ′ {z}: {near:?} vs {real:?}");
            } else {
                assert_eq!(eval_at(kind, soft, z), real, "{kind:?} is smooth: no surrogate");
            }
        }
    }
}

#[test]
fn smooth_functions_keep_their_second_derivative_under_every_activation() {
    for kind in ALL.into_iter().filter(|k| !k.kinked()) {
        for act in ACTS {
            assert!(!kind.flat_second(act), "{kind:?}");
            assert!(eval(kind, act, 0.5).2.abs() > 1e-3, "{kind:?} {act:?} φ″(0.5)");
        }
    }
    // HardSwish is piecewise quadratic: φ″ = 1/3 between its kinks, even exactly.
    assert!(!Nonlinearity::HardSwish.flat_second(Activation::Exact));
    assert!((eval(Nonlinearity::HardSwish, Activation::Exact, 1.0).2 - 1.0 / 3.0).abs() < 1e-7);
    assert!(Nonlinearity::Relu6.flat_second(Activation::Exact));
    assert!(!Nonlinearity::Relu6.flat_second(Activation::Softplus { beta: 2.0 }));
}

#[test]
fn known_values() {
    let ex = |kind, z: f64| eval_at(kind, Activation::Exact, z).0;
    // Φ(1) = 0.841344746068543; the tanh form at 1 is 0.841191990608276 (PyTorch's values).
    assert!((ex(Nonlinearity::Gelu, 1.0) - 0.841_344_746_068_543).abs() < 1e-14);
    assert!((ex(Nonlinearity::GeluTanh, 1.0) - 0.841_191_990_608_276_8).abs() < 1e-14);
    assert!((ex(Nonlinearity::Silu, 1.0) - 0.731_058_578_630_004_9).abs() < 1e-15);
    assert!((ex(Nonlinearity::Sigmoid, -2.0) - 0.119_202_922_022_118).abs() < 1e-14);
    assert!((ex(Nonlinearity::HardSwish, 1.0) - 2.0 / 3.0).abs() < 1e-7);
    assert_eq!(ex(Nonlinearity::HardSwish, -3.5), 0.0);
    assert!((ex(Nonlinearity::HardSigmoid { alpha: 0.2, beta: 0.5 }, 1.0) - 0.7).abs() < 1e-7);
    assert!(!Nonlinearity::Silu.monotone() && !Nonlinearity::HardSwish.monotone());
    assert!(Nonlinearity::Sigmoid.monotone() && Nonlinearity::Relu6.monotone());
}

#[test]
fn every_rules_adjoint_is_its_partial_derivatives_for_every_function() {
    // ∂ρ/∂z by central differences of ρ in z (d recomputed at each z), ∂ρ/∂g likewise, over
    // every function and both activations (points off the kinks).
    for kind in ALL {
        for act in ACTS {
            for rule in [Rule::Gradient, Rule::Guided, Rule::Deconvnet, Rule::Rescale] {
                // DeepLIFT's multiplier reads φ, whose derivative SmoothDerivative replaces:
                // the two do not combine (β-smoothing refuses DeepLIFT in that form).
                if let (Rule::Rescale, Activation::SmoothDerivative { .. }) = (rule, act) {
                    continue;
                }
                for (z, z0, g) in
                    [(0.7f32, -0.4f32, 1.3f32), (-0.2, 0.5, -0.8), (4.5, 1.0, 0.9), (6.5, 1.0, 0.9)]
                {
                    let rho =
                        |z: f32, g: f32| f64::from(backward(kind, act, rule, z, eval(kind, act, z).1, z0, g));
                    let h = 1e-2;
                    let dz = (rho(z + h, g) - rho(z - h, g)) / 0.02;
                    let dg = (rho(z, g + h) - rho(z, g - h)) / 0.02;
                    let (ag, az) = adjoint(kind, act, rule, z, eval(kind, act, z).1, z0, g, 1.0);
                    let what = format!("{kind:?} {act:?} {rule:?} at {z}");
                    assert!((f64::from(ag) - dg).abs() < 2e-3, "{what} ∂g: {ag} vs {dg}");
                    assert!((f64::from(az) - dz).abs() < 5e-3, "{what} ∂z: {az} vs {dz}");
                }
            }
        }
    }
}

//! Sanity checks (Adebayo et al. 2018) on the shipped CNN: cascading randomisation from the
//! logits down destroys the gradient map while guided backprop's ignores the classifier
//! layers, their qualitative finding; the schedules and seeds behave as documented.

use crate::common::*;
use candle_core::Device;
use fragility::attribution::{by_name, Attribution};
use fragility::metric::spearman;
use fragility::model::{load, predict, Classifier};
use fragility::sanity::{randomized_maps, Randomization, TrainedModel};

/// Mean Spearman correlation of each step's maps with the trained model's maps, per step.
fn similarity(method: &str, schedule: Randomization, seed: u64) -> (Vec<String>, Vec<f64>) {
    let dev = Device::Cpu;
    let path = shipped_weights();
    let tensors = fragility::model::weights::Weights::load(&path, &dev).unwrap().into_state_dict();
    let model = load("fmnist_cnn", &path, None, &dev).unwrap();
    let x = images(&shipped_images(), &(0..16).collect::<Vec<_>>());
    let targets = predict(model.as_ref(), &x).unwrap();
    let m: Box<dyn Attribution> = by_name(method, 0).unwrap();
    let attr = m.attribute(model.as_ref(), &x, &targets, fragility::model::Activation::Exact).unwrap();
    let trained =
        fragility::attribution::saliency(&attr).unwrap().flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
    let t =
        TrainedModel { name: "fmnist_cnn", tensors: &tensors, source: &path, normalize: None, device: &dev };
    let steps = randomized_maps(&t, schedule, m.as_ref(), &x, &targets, seed).unwrap();
    let layers = steps.iter().map(|s| s.layer.clone()).collect();
    let means = steps
        .iter()
        .map(|s| {
            let v: Vec<f64> = s.maps.iter().zip(&trained).map(|(a, b)| spearman(a, b).unwrap()).collect();
            v.iter().sum::<f64>() / v.len() as f64
        })
        .collect();
    (layers, means)
}

#[test]
fn cascading_randomisation_destroys_the_gradient_map_and_guided_backprop_ignores_the_classifier() {
    let (layers, gradient) = similarity("gradient", Randomization::Cascading, 0);
    assert_eq!(layers, ["fc2", "fc1", "conv2", "conv1"]);
    let (_, guided) = similarity("guided_backprop", Randomization::Cascading, 0);
    // Measured (seed 0, 16 images): gradient 0.35, 0.17, 0.10, 0.10; guided backprop 0.74,
    // 0.63, 0.48, 0.28. The gradient map follows the classifier layers (fc2, fc1) and is near
    // 0 once they are random; guided backprop barely notices them (Adebayo et al.'s finding on
    // Inception) and loses its similarity only with the convolutions, which on this two-layer
    // CNN are the whole feature extractor.
    assert!(*gradient.last().unwrap() < 0.2, "gradient after full randomisation: {gradient:?}");
    assert!(gradient[1] < 0.25, "gradient with both classifier layers random: {gradient:?}");
    assert!(guided[1] > 0.55, "guided backprop with both classifier layers random: {guided:?}");
    for (g, b) in guided.iter().zip(&gradient) {
        assert!(g > &(b + 0.15), "guided backprop {guided:?} against gradient {gradient:?}");
    }
}

#[test]
fn independent_randomisation_takes_one_layer_at_a_time_and_seeds_fix_the_draws() {
    let (layers, a) = similarity("gradient", Randomization::Independent, 5);
    assert_eq!(layers, ["fc2", "fc1", "conv2", "conv1"]);
    // The logits layer is the first step of both schedules: the same model, the same maps.
    let (_, cascading) = similarity("gradient", Randomization::Cascading, 5);
    assert_eq!(a[0], cascading[0]);
    assert_eq!(similarity("gradient", Randomization::Independent, 5).1, a);
    assert_ne!(similarity("gradient", Randomization::Independent, 6).1, a);
}

/// Kindermans et al.'s input invariance on the shipped CNN with their shift of the input from
/// [0,1] to [−1,0]: the gradient, guided backprop and Grad-CAM maps are unchanged, gradient ×
/// input, integrated gradients and DeepLIFT (both from a zero baseline) are not, as they report.
#[test]
fn input_invariance_passes_the_gradient_and_fails_gradient_times_input() {
    let net = shipped_model();
    let x = images(&shipped_images(), &(0..8).collect::<Vec<_>>());
    let targets = predict(&net, &x).unwrap();
    let shifted = fragility::sanity::shifted_model(&net, -1.0).unwrap();
    // The same function: the logits of x − 1 on the shifted model are those of x.
    let a = shifted.logits(&x.affine(1.0, -1.0).unwrap(), fragility::model::Activation::Exact).unwrap();
    let b = net.logits(&x, fragility::model::Activation::Exact).unwrap();
    assert!(max_abs_diff(&flat(&a), &flat(&b)) < 1e-4);
    let worst = |method: &str| {
        let m = by_name(method, 0).unwrap();
        let v = fragility::sanity::input_invariance(&net, m.as_ref(), &x, &targets, -1.0).unwrap();
        v.into_iter().fold(0.0f64, f64::max)
    };
    for method in ["gradient", "guided_backprop", "grad_cam"] {
        let d = worst(method);
        assert!(d < fragility::sanity::TOLERANCE, "{method}: {d}");
    }
    for method in ["gradient_x_input", "integrated_gradients", "deeplift"] {
        let d = worst(method);
        assert!(d > 0.1, "{method}: {d}");
    }
}

/// Sixt et al.'s random-logit test on the shipped CNN: the gradient map of a random other
/// class shares far less with the predicted class's map than guided backprop's does.
#[test]
fn random_logit_moves_the_gradient_map_more_than_guided_backprop() {
    let net = shipped_model();
    let ids: Vec<usize> = (0..16).collect();
    let x = images(&shipped_images(), &ids);
    let targets = predict(&net, &x).unwrap();
    let keys: Vec<u64> = ids.iter().map(|&i| i as u64).collect();
    let mean_similarity = |method: &str| {
        let m = by_name(method, 0).unwrap();
        let r = fragility::sanity::random_logit_maps(&net, m.as_ref(), &x, &targets, &keys, 0).unwrap();
        assert!(r.classes.iter().zip(&targets).all(|(c, t)| c != t));
        r.own.iter().zip(&r.other).map(|(a, b)| spearman(a, b).unwrap()).sum::<f64>() / r.own.len() as f64
    };
    let (gradient, guided) = (mean_similarity("gradient"), mean_similarity("guided_backprop"));
    // Measured (seed 0, 16 images): gradient 0.26, guided backprop 0.66.
    assert!(guided > gradient + 0.2, "guided backprop {guided}, gradient {gradient}");
}

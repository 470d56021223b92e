//! Sanity checks (Adebayo et al. 2018) on the shipped CNN: cascading randomisation from the
//! logits down destroys the gradient map while guided backprop's ignores the classifier
//! layers, their qualitative finding, by all four of their similarities
//! ([`fragility::sanity::Similarity`]); the schedules and seeds behave as documented, and a
//! torchvision network is randomised block by block (or layer by layer on request).

use crate::common::*;
use candle_core::Device;
use fragility::attribution::{attribution_rows, by_name, Attribution};
use fragility::model::{load, predict, Classifier};
use fragility::sanity::{
    key_order, param_layers, randomized_maps, Granularity, Randomization, Schedule, Similarity, StepMaps,
    TrainedModel,
};

/// Fashion-MNIST's map side.
const SIDE: usize = 28;

/// The mean over image pairs of each similarity (in [`Similarity::ALL`] order) between rows of
/// signed attributions [C·28·28]; every score must be defined.
fn mean_similarities(a: &[Vec<f32>], b: &[Vec<f32>]) -> [f64; 4] {
    Similarity::ALL.map(|s| {
        let scores: Vec<f64> = a
            .iter()
            .zip(b)
            .map(|(x, y)| s.score(x, y, x.len() / (SIDE * SIDE), SIDE, SIDE).expect("a defined similarity"))
            .collect();
        scores.iter().sum::<f64>() / scores.len() as f64
    })
}

/// Per step of `schedule`, the mean similarities of the step's maps with the trained model's
/// maps (16 shipped images, their predicted classes).
fn similarity(method: &str, schedule: Randomization, seed: u64) -> (Vec<String>, Vec<[f64; 4]>) {
    let dev = Device::Cpu;
    let path = shipped_weights();
    let tensors = fragility::model::weights::Weights::load(&path, &dev).unwrap().into_state_dict();
    let model = load("fmnist_cnn", &path, None, &dev).unwrap();
    let x = images(&shipped_images(), &(0..16).collect::<Vec<_>>());
    let targets = predict(model.as_ref(), &x).unwrap();
    let m: Box<dyn Attribution> = by_name(method, 0).unwrap();
    let attr = m.attribute(model.as_ref(), &x, &targets, fragility::model::Activation::Exact).unwrap();
    let trained = attribution_rows(&attr).unwrap();
    let t =
        TrainedModel { name: "fmnist_cnn", tensors: &tensors, source: &path, normalize: None, device: &dev };
    let schedule = Schedule { randomization: schedule, granularity: Granularity::Block };
    let steps = randomized_maps(&t, schedule, m.as_ref(), &x, &targets, seed).unwrap();
    let layers = steps.iter().map(|s| s.layer.clone()).collect();
    (layers, steps.iter().map(|s| mean_similarities(&s.maps, &trained)).collect())
}

/// One similarity's column of a step table.
fn column(steps: &[[f64; 4]], s: Similarity) -> Vec<f64> {
    steps.iter().map(|v| v[s as usize]).collect()
}

#[test]
fn cascading_randomisation_destroys_the_gradient_map_and_guided_backprop_ignores_the_classifier() {
    let (layers, gradient) = similarity("gradient", Randomization::Cascading, 0);
    assert_eq!(layers, ["fc2", "fc1", "conv2", "conv1"]);
    let (_, guided) = similarity("guided_backprop", Randomization::Cascading, 0);
    // Measured (seed 0, 16 images; steps fc2, fc1, conv2, conv1):
    //                 gradient                       guided backprop
    //   spearman      −0.151, −0.008, 0.013, 0.022   0.873, 0.791, 0.684, 0.584
    //   spearman_abs   0.351,  0.169, 0.101, 0.100   0.742, 0.635, 0.476, 0.282
    //   ssim           0.114,  0.169, 0.123, 0.126   0.856, 0.801, 0.644, 0.592
    //   hog_pearson    0.464,  0.208, 0.181, 0.126   0.770, 0.725, 0.640, 0.588
    // The gradient map follows the classifier layers (fc2, fc1) and is near 0 once they are
    // random (its signed map is already uncorrelated, even reversed, with fc2 alone random: the
    // class direction is what flips; its SSIM of signed maps scaled to [0, 1] is low at every
    // step); guided backprop barely notices them (Adebayo et al.'s finding on Inception) and
    // loses similarity only with the convolutions, which on this two-layer CNN are the whole
    // feature extractor. The same holds by all four similarities.
    for s in Similarity::ALL {
        let (gradient, guided) = (column(&gradient, s), column(&guided, s));
        let name = s.name();
        assert!(*gradient.last().unwrap() < 0.2, "{name}: gradient after full randomisation: {gradient:?}");
        assert!(gradient[1] < 0.25, "{name}: gradient with both classifier layers random: {gradient:?}");
        assert!(guided[1] > 0.55, "{name}: guided backprop with both classifier layers random: {guided:?}");
        for (g, b) in guided.iter().zip(&gradient) {
            assert!(g > &(b + 0.15), "{name}: guided backprop {guided:?} against gradient {gradient:?}");
        }
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
        mean_similarities(&r.own, &r.other)
    };
    let (gradient, guided) = (mean_similarity("gradient"), mean_similarity("guided_backprop"));
    // Measured (seed 0, 16 images), gradient against guided backprop: spearman −0.150 / 0.820,
    // spearman_abs 0.264 / 0.658, ssim 0.122 / 0.849, hog_pearson 0.327 / 0.701.
    for s in Similarity::ALL {
        let (gradient, guided) = (gradient[s as usize], guided[s as usize]);
        assert!(guided > gradient + 0.2, "{}: guided backprop {guided}, gradient {gradient}", s.name());
    }
}

/// The gradient maps of two random 32×32 images on resnet18 (synthetic weights, as the
/// torchvision fixtures) at every cascading step of `granularity`.
fn resnet18_cascade(granularity: Granularity) -> Vec<StepMaps> {
    let dev = Device::Cpu;
    let keys = crate::torchvision::fixture_dir().join("resnet18.keys.json");
    let tensors = crate::synthetic::synthetic_state_dict(&keys, &dev);
    let source = std::path::PathBuf::from("resnet18 (synthetic)");
    let model = fragility::model::from_state_dict("resnet18", tensors.clone(), &source, None, &dev).unwrap();
    let x = seeded_uniform(&[2, 3, 32, 32], 0.0, 1.0, 22).to_dtype(candle_core::DType::F32).unwrap();
    let targets = predict(model.as_ref(), &x).unwrap();
    let t =
        TrainedModel { name: "resnet18", tensors: &tensors, source: &source, normalize: None, device: &dev };
    let schedule = Schedule { randomization: Randomization::Cascading, granularity };
    randomized_maps(&t, schedule, by_name("gradient", 0).unwrap().as_ref(), &x, &targets, 3).unwrap()
}

#[test]
fn resnet18_cascades_over_its_blocks_and_over_its_layers_on_request() {
    let blocks = resnet18_cascade(Granularity::Block);
    let names: Vec<&str> = blocks.iter().map(|s| s.layer.as_str()).collect();
    assert_eq!(
        names,
        [
            "fc", "layer4.1", "layer4.0", "layer3.1", "layer3.0", "layer2.1", "layer2.0", "layer1.1",
            "layer1.0", "conv1"
        ]
    );
    // Layer by layer: the 41 parameter layers from the logits down.
    let layers = resnet18_cascade(Granularity::Layer);
    let all: Vec<String> =
        param_layers(&key_order("resnet18", None).unwrap()).into_iter().rev().map(|l| l.name).collect();
    assert_eq!(layers.iter().map(|s| s.layer.clone()).collect::<Vec<_>>(), all);
    assert_eq!(
        &all[..6],
        ["fc", "layer4.1.bn2", "layer4.1.conv2", "layer4.1.bn1", "layer4.1.conv1", "layer4.0.downsample.1"]
    );
    // A block step re-initialises exactly its block's layers, drawn as the layer steps draw
    // them: the model after `layer4.1` is the one after `layer4.1.conv1` (fc + 4 layers), the
    // model after `layer4.0` the one after `layer4.0.conv1` (+ 6 more).
    for (block, layer) in [(0, 0), (1, 4), (2, 10), (9, 40)] {
        assert_eq!(blocks[block].maps, layers[layer].maps, "{}", blocks[block].layer);
    }
    // And each step moves the map.
    assert!(blocks.windows(2).all(|w| w[0].maps != w[1].maps));
}

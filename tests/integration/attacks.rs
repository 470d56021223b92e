//! Attack invariants and the paper's headline effect.

use crate::common::*;
use candle_core::{DType, Tensor};
use fragility::attack::{Attack, AttackInput, Outcome, RandomSign, TopK, TopKSettings};
use fragility::attribution::{saliency, Attribution, Gradient};
use fragility::metric::top_k_intersection;
use fragility::model::{predict, Activation, Classifier, FmnistCnn};
use std::sync::Arc;

fn attack_rows(
    model: &dyn Classifier,
    attack: &dyn Attack,
    x: &Tensor,
    eps: &[f32],
    seeds: &[u64],
) -> (Outcome, Vec<u32>) {
    let targets = predict(model, x).unwrap();
    let input = AttackInput { model, x, eps, targets: &targets, seeds };
    (attack.perturb(&input).unwrap(), targets)
}

/// The invariants every attack must keep: inside the ε-ball and [0,1], label kept where said,
/// the reported L∞ is the real one.
fn check_invariants(model: &dyn Classifier, x: &Tensor, eps: &[f32], out: &Outcome, targets: &[u32]) {
    let a = flat(&out.x_adv);
    let b = flat(x);
    let per = a.len() / eps.len();
    let preds = predict(model, &out.x_adv).unwrap();
    for r in 0..eps.len() {
        let row_a = &a[r * per..(r + 1) * per];
        let row_b = &b[r * per..(r + 1) * per];
        let linf = max_abs_diff(row_a, row_b);
        assert!(linf <= eps[r] + 1e-6, "row {r}: ‖δ‖∞ = {linf} > ε = {}", eps[r]);
        assert!((linf - out.linf[r]).abs() < 1e-6, "row {r}: reported L∞ {} vs {linf}", out.linf[r]);
        assert!(row_a.iter().all(|&v| (0.0..=1.0).contains(&v)), "row {r} leaves [0,1]");
        assert_eq!(out.label_kept[r], preds[r] == targets[r], "row {r}: label_kept is wrong");
    }
}

fn setup() -> (FmnistCnn, Tensor, Vec<f32>, Vec<u64>) {
    let model = random_model(9, DType::F32);
    let set = shipped_images();
    let x1 = images(&set, &[20, 21, 22]);
    let x = Tensor::cat(&[x1.clone(), x1], 0).unwrap(); // the same 3 images at two ε
    let eps = vec![0.02, 0.02, 0.02, 0.1, 0.1, 0.1];
    let seeds = vec![1, 2, 3, 4, 5, 6];
    (model, x, eps, seeds)
}

#[test]
fn random_sign_keeps_the_invariants_and_is_reproducible() {
    let (model, x, eps, seeds) = setup();
    let attack = RandomSign { tries: 5 };
    let (out, targets) = attack_rows(&model, &attack, &x, &eps, &seeds);
    check_invariants(&model, &x, &eps, &out, &targets);
    // A random sign step moves every pixel by exactly ε unless clipped at 0 or 1.
    assert!(out.linf.iter().zip(&eps).all(|(l, e)| (l - e).abs() < 1e-6));
    let (again, _) = attack_rows(&model, &attack, &x, &eps, &seeds);
    assert_eq!(flat(&again.x_adv), flat(&out.x_adv));
    // Row results depend on the row's own seed only, not on the other rows.
    let (single, _) = attack_rows(&model, &attack, &x.narrow(0, 4, 1).unwrap(), &eps[4..5], &seeds[4..5]);
    assert_eq!(flat(&single.x_adv), flat(&out.x_adv.narrow(0, 4, 1).unwrap()));
}

#[test]
fn top_k_keeps_the_invariants_and_is_reproducible() {
    let (model, x, eps, seeds) = setup();
    let attack = TopK {
        settings: TopKSettings { k: 50, iterations: 5, step: 0.25, beta: 10.0 },
        method: Arc::new(Gradient),
    };
    let (out, targets) = attack_rows(&model, &attack, &x, &eps, &seeds);
    check_invariants(&model, &x, &eps, &out, &targets);
    assert!(out.label_kept.iter().all(|&k| k), "the best iterate always keeps the label");
    let (again, _) = attack_rows(&model, &attack, &x, &eps, &seeds);
    assert_eq!(flat(&again.x_adv), flat(&out.x_adv));
}

#[test]
fn top_k_attack_moves_the_gradient_map_more_than_random_noise() {
    // Ghorbani et al.'s headline: at the same ε, the targeted attack lowers the top-k
    // intersection of the gradient map far more than random sign noise. Shipped model,
    // 12 test images, ε = 0.05, k = 100, 30 iterations.
    let model = shipped_model();
    let set = shipped_images();
    let x = images(&set, &(0..12).collect::<Vec<_>>());
    let eps = vec![0.05f32; 12];
    let seeds: Vec<u64> = (0..12).collect();
    let clean =
        saliency(&Gradient.attribute(&model, &x, &predict(&model, &x).unwrap(), Activation::Relu).unwrap())
            .unwrap();
    let mean_intersection = |out: &Outcome, targets: &[u32]| {
        let after =
            saliency(&Gradient.attribute(&model, &out.x_adv, targets, Activation::Relu).unwrap()).unwrap();
        let (a, b) = (flat(&clean), flat(&after));
        (0..12)
            .map(|r| top_k_intersection(&a[r * 784..(r + 1) * 784], &b[r * 784..(r + 1) * 784], 100).unwrap())
            .sum::<f64>()
            / 12.0
    };
    let (random, targets) = attack_rows(&model, &RandomSign { tries: 20 }, &x, &eps, &seeds);
    let topk = TopK {
        settings: TopKSettings { iterations: 30, ..TopKSettings::default() },
        method: Arc::new(Gradient),
    };
    let (targeted, _) = attack_rows(&model, &topk, &x, &eps, &seeds);
    check_invariants(&model, &x, &eps, &targeted, &targets);
    let (ri, ti) = (mean_intersection(&random, &targets), mean_intersection(&targeted, &targets));
    assert!(ti < ri - 0.1, "top-k intersection: targeted {ti:.3} vs random {ri:.3}");
}

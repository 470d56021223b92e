//! Attention rollout and Chefer et al.'s rule against PyTorch, their vector–Jacobian products
//! against finite differences and autograd, and their refusal of models without attention.
//!
//! The fixture (tests/fixtures/torchvision/attention_vit_b_16.safetensors, made by
//! scripts/attention_fixtures.py in float64 and stored so) holds both maps of the small ViT
//! of the vit_b_16 fixture at its 32×32 (a 2×2 patch grid) and, with the position embedding
//! the weight formula draws for 17 tokens, at 64×64 (a 4×4 grid).

use crate::common::*;
use crate::synthetic::{synthetic_state_dict, synthetic_tensor};
use crate::torchvision::{fixture_dir, rel};
use candle_core::{DType, Device, Tensor, Var};
use fragility::attribution::{AttentionRollout, Attribution, Chefer, HeadFusion};
use fragility::model::weights::Weights;
use fragility::model::{zoo, Activation, Classifier, Network};
use std::collections::HashMap;

/// The fixture's ViT for `size`×`size` images.
pub(crate) fn vit(size: usize) -> Network {
    let dev = Device::Cpu;
    let a = zoo::architecture("vit_b_16").unwrap();
    let mut dict = synthetic_state_dict(&fixture_dir().join("vit_b_16.keys.json"), &dev);
    let t = (size / 16).pow(2) + 1;
    let table = synthetic_tensor("encoder.pos_embedding", &[1, t, 48]);
    dict.insert("encoder.pos_embedding".into(), Tensor::from_vec(table, (1, t, 48), &dev).unwrap());
    let graph = a.load(Weights::from_tensors(dict, "vit_b_16 (synthetic)")).unwrap();
    let hw = graph.fixed_input().unwrap();
    assert_eq!(hw, (size, size));
    Network::new("vit_b_16", graph, hw, a.default_layer, &dev).unwrap()
}

fn fixture() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_dir().join("attention_vit_b_16.safetensors"), &Device::Cpu)
        .unwrap()
}

/// Each fixture map's name and the method that computes it.
fn methods() -> Vec<(&'static str, Box<dyn Attribution>)> {
    let rollout = |head_fusion, discard_ratio| Box::new(AttentionRollout { head_fusion, discard_ratio });
    vec![
        ("rollout_mean", rollout(HeadFusion::Mean, 0.0)),
        ("rollout_max", rollout(HeadFusion::Max, 0.0)),
        ("rollout_min", rollout(HeadFusion::Min, 0.0)),
        ("rollout_mean_discard0.5", rollout(HeadFusion::Mean, 0.5)),
        ("chefer", Box::new(Chefer)),
    ]
}

/// Both maps at both grids: the candle path in f64 to 1e-10 of the scale, the CPU kernels in
/// f32 to 1e-5.
#[test]
fn attention_maps_equal_pytorch() {
    let f = fixture();
    for size in [32, 64] {
        let model = vit(size);
        let exact_model = model.clone().without_kernels();
        let x = &f[&format!("x_{size}")];
        let targets: Vec<u32> =
            f[&format!("targets_{size}")].to_vec1::<i64>().unwrap().iter().map(|&t| t as u32).collect();
        let logits = exact_model.logits(x, Activation::Exact).unwrap();
        assert!(rel(&logits, &f[&format!("logits_{size}")]) < 1e-10, "{size}: logits");
        for (name, m) in methods() {
            let want = &f[&format!("{name}_{size}")];
            let exact = m.attribute(&exact_model, x, &targets, Activation::Exact).unwrap();
            assert!(rel(&exact, want) < 1e-10, "{name} {size} (f64): {}", rel(&exact, want));
            let x32 = x.to_dtype(DType::F32).unwrap();
            let fast = m.attribute(&model, &x32, &targets, Activation::Exact).unwrap();
            assert_eq!(fast.dtype(), DType::F32);
            assert!(rel(&fast, want) < 1e-5, "{name} {size} (f32 kernels): {}", rel(&fast, want));
        }
    }
}

/// The product ∇ₓ⟨M, v⟩ of each map (the attacks' direction) at the 4×4 grid: in f64 on the
/// candle path equal to autograd through the map (which differentiates the explicit backward
/// passes) and to central differences of ⟨M, v⟩ along seeded directions; on the kernels in
/// f32 equal to the f64 product to float32 rounding.
#[test]
fn attention_map_vjps_equal_finite_differences_and_autograd() {
    let f = fixture();
    let model = vit(64);
    let exact = model.clone().without_kernels();
    let x = &f["x_64"];
    let targets = [5u32, 5];
    let v = seeded_uniform(&[2, 1, 64, 64], -1.0, 1.0, 3);
    let act = Activation::Exact;
    for (name, m) in methods() {
        let xbar = m.map_then_vjp(&exact, x, x, &targets, act, &mut |_| Ok(v.clone())).unwrap();
        let loss = |y: &Tensor| -> Tensor {
            m.attribute(&exact, y, &targets, act).unwrap().mul(&v).unwrap().sum_all().unwrap()
        };
        let xv = Var::from_tensor(x).unwrap();
        let auto = loss(xv.as_tensor()).backward().unwrap().get(xv.as_tensor()).unwrap().clone();
        assert!(rel(&xbar, &auto) < 1e-9, "{name}: adjoint vs autograd {}", rel(&xbar, &auto));
        let mut checked = 0;
        for seed in 0..4 {
            let u = seeded_uniform(&[2, 3, 64, 64], -1.0, 1.0, 10 + seed);
            let at = |h: f64| -> f64 {
                let d = |s: f64| loss(&(x + (&u * (s * h)).unwrap()).unwrap()).to_scalar::<f64>().unwrap();
                (d(1.0) - d(-1.0)) / (2.0 * h)
            };
            let (coarse, fine) = (at(1e-5), at(1e-6));
            if (coarse - fine).abs() > 1e-4 * fine.abs().max(1e-9) {
                continue; // a discard mask or relu switches within ±h along u
            }
            let analytic = xbar.mul(&u).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
            assert!(
                (analytic - fine).abs() < 1e-5 * fine.abs().max(1e-9),
                "{name} {seed}: {analytic} vs {fine}"
            );
            checked += 1;
        }
        assert!(checked >= 2, "{name}: only {checked} directions free of switches");
        let x32 = x.to_dtype(DType::F32).unwrap();
        let v32 = v.to_dtype(DType::F32).unwrap();
        let fast = m.map_then_vjp(&model, &x32, &x32, &targets, act, &mut |_| Ok(v32.clone())).unwrap();
        assert_eq!(fast.dtype(), DType::F32);
        assert!(rel(&fast, &xbar) < 1e-3, "{name}: kernels vs f64 {}", rel(&fast, &xbar));
    }
}

/// Models without attention are refused before anything is computed, naming the model and
/// the method; so is a discard ratio outside [0, 1).
#[test]
fn attention_methods_refuse_models_without_attention() {
    let cnn = random_model(3, DType::F32);
    for m in [Box::new(AttentionRollout::default()) as Box<dyn Attribution>, Box::new(Chefer)] {
        let err = m.check(&cnn).unwrap_err().to_string();
        assert!(err.contains(m.name()) && err.contains("fmnist_cnn") && err.contains("Softmax"), "{err}");
        assert!(m.check(&vit(32)).is_ok());
    }
    let bad = AttentionRollout { discard_ratio: 1.0, ..AttentionRollout::default() };
    assert!(bad.check(&vit(32)).unwrap_err().to_string().contains("discard_ratio"));
}

/// `[methods] attention_rollout = { … }` sets rollout's options (chefer has none); a discard
/// ratio outside [0, 1) is refused at parsing, naming the field; and the parsed methods refuse
/// the config's CNN by name.
#[test]
fn attention_rollout_options_parse_from_a_config() {
    let table = "attention_rollout = { head_fusion = \"max\", discard_ratio = 0.25 }";
    let text = shipped_study(&format!(
        "[methods]\nnames = [\"attention_rollout\", \"chefer\"]\n{table}\n[attacks]\nnames = [\"random_sign\"]\nepsilons = [0.1]\n"
    ));
    let path = root().join("attention.toml"); // never read: `parse` takes the text
    let plan = fragility::config::Plan::parse(&path, &text).unwrap();
    let rollout = plan.methods().iter().find(|m| m.name() == "attention_rollout").unwrap();
    assert_eq!(rollout.params()["head_fusion"], "max");
    assert_eq!(rollout.params()["discard_ratio"], 0.25);
    for m in plan.methods() {
        let err = m.check(&shipped_model()).unwrap_err().to_string();
        assert!(err.contains(m.name()) && err.contains("fmnist_cnn"), "{err}");
    }
    let bad = text.replace("discard_ratio = 0.25", "discard_ratio = 1.5");
    let Err(err) = fragility::config::Plan::parse(&path, &bad) else {
        panic!("a discard ratio of 1.5 accepted")
    };
    assert!(
        err.to_string().contains("methods.attention_rollout") && err.to_string().contains("discard_ratio"),
        "{err}"
    );
}

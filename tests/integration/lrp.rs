//! LRP under zennit's composites: the maps against zennit 0.5.1 (scripts/lrp_fixtures.py:
//! vgg11, resnet18 and mobilenet_v2 with the torchvision fixtures' synthetic weights, float64,
//! canonized as zennit's ResNet canonizer does, every residual sum and average pool Norm),
//! conservation on every architecture, and the map's explicit adjoint (what attacks steer by)
//! against autograd through the relevance pass.

use crate::common::seeded_uniform;
use crate::synthetic::synthetic_state_dict;
use crate::torchvision::{fixture_dir, network, pearson};
use candle_core::{DType, Device, Tensor, Var};
use fragility::attribution::{Attribution, Lrp};
use fragility::model::lrp::{Composite, CompositeKind, FirstLayer, COMPOSITES};
use fragility::model::weights::Weights;
use fragility::model::{
    autograd_backward_adjoint, one_hot, zoo, Activation, Backward, Classifier, Network, Rule,
};

/// Per image: max |a − b| / max |b| and Pearson's r.
pub(crate) fn compare(ours: &Tensor, want: &Tensor) -> Vec<(f64, f64)> {
    let rows = |t: &Tensor| -> Vec<Vec<f64>> {
        let b = t.dim(0).unwrap();
        let v = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        v.chunks_exact(v.len() / b).map(|c| c.to_vec()).collect()
    };
    rows(ours)
        .iter()
        .zip(rows(want))
        .map(|(a, b)| {
            let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let d = a.iter().zip(&b).fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
            (d / scale, pearson(a, &b))
        })
        .collect()
}

/// The composite of a fixture key: `name` or `name@setting=value,…`.
fn composite_of(key: &str) -> Composite {
    let (name, settings) = key.split_once('@').unwrap_or((key, ""));
    let mut c = Composite::of(CompositeKind::by_name(name).unwrap());
    for kv in settings.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap();
        if k == "first_layer" {
            c.first_layer = Some(match v {
                "w_square" => FirstLayer::WSquare,
                "flat" => FirstLayer::Flat,
                other => panic!("unknown first layer {other}"),
            });
            continue;
        }
        let v: f32 = v.parse().unwrap();
        match k {
            "epsilon" => c.epsilon = v,
            "gamma" => c.gamma = v,
            "low" => c.low = v,
            "high" => c.high = v,
            other => panic!("unknown setting {other}"),
        }
    }
    c
}

/// Every composite (and two with other settings, two with another first-layer rule: w², flat
/// in place of z^B) equals zennit on vgg11, resnet18 and
/// mobilenet_v2, on the CPU kernels and on the candle path, in float32 against zennit's
/// float64: within 1e-3 of each map's largest relevance, Pearson ≥ 0.9999. A wrong rule,
/// first layer, residual or pooling treatment changes a map by order one.
#[test]
fn lrp_equals_zennit() {
    for arch in ["vgg11", "resnet18", "mobilenet_v2"] {
        let fast = network(arch);
        let slow = network(arch).without_kernels();
        let f = candle_core::safetensors::load(
            fixture_dir().join(format!("lrp_{arch}.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let x = &f["x"];
        let targets: Vec<u32> = f["targets"].to_vec1::<i64>().unwrap().iter().map(|&t| t as u32).collect();
        let mut keys: Vec<&String> =
            f.keys().filter(|k| k.starts_with("lrp_") && !k.ends_with("@nobias")).collect();
        keys.sort();
        assert_eq!(keys.len(), 9, "{arch}: {keys:?}");
        for key in keys {
            let method = Lrp { composite: composite_of(key) };
            for (path, model) in [("kernels", &fast), ("candle", &slow)] {
                let ours = method.attribute(model, x, &targets, Activation::Exact).unwrap();
                for (i, (d, r)) in compare(&ours, &f[key]).into_iter().enumerate() {
                    assert!(
                        d < 1e-3 && r > 0.9999,
                        "{arch} {key} ({path}) image {i}: difference {d:e}, Pearson {r}"
                    );
                }
            }
        }
    }
}

/// The zero-bias state dict of `arch`: every entry ending in `.bias` or `running_mean` zero
/// (convolution, linear, batch-norm and layer-norm shifts), so that every folded bias is zero.
fn unbiased(arch: &str) -> Network {
    let a = zoo::architecture(arch).unwrap();
    let dev = Device::Cpu;
    let mut dict = synthetic_state_dict(&fixture_dir().join(format!("{arch}.keys.json")), &dev);
    for (k, t) in dict.iter_mut() {
        if k.ends_with(".bias") || k.ends_with("running_mean") {
            *t = t.zeros_like().unwrap();
        }
    }
    let graph = a.load(Weights::from_tensors(dict, format!("{arch} (synthetic, no biases)"))).unwrap();
    Network::new(arch, graph, a.input, a.default_layer, &dev).unwrap()
}

/// Conservation: without biases and with ε → 0 (1e-30 here: without biases the SiLU networks'
/// activations and logits are of order 1e-7 at these weights) the relevance sums to the target
/// logit (to 1e-4 of Σ|R|, float32) wherever each rule's denominators are not zero. ε, γ, z^B,
/// flat and Norm conserve on every architecture: `lrp_epsilon_gamma_box` is checked on all of
/// them (residual sums, DenseNet's and SqueezeNet's concatenations, squeeze-and-excitation
/// products, ShuffleNet's channel shuffle, ConvNeXt's layer norms). z⁺ loses the relevance of
/// outputs whose positive contributions are all zero, which only a convolution not followed by
/// a ReLU can pass on (ShuffleNet's and MobileNetV3's linear depthwise convolutions, SiLU and
/// GELU networks; zennit 0.5.1 loses the same 35% on shufflenet_v2_x1_0, checked by hand), and
/// α-β gains α·R at outputs whose negative part is empty (a kernel of one sign on non-negative
/// inputs): those composites are checked on the ReLU networks where every convolution feeds a
/// ReLU. Also zennit's own maps without biases (resnet18).
#[test]
fn relevance_sums_to_the_logit_without_biases() {
    let relu_after_every_conv = |arch: &str| ["resnet", "vgg", "alexnet"].iter().any(|p| arch.starts_with(p));
    let x = seeded_uniform(&[2, 3, 64, 64], 0.0, 1.0, 30).to_dtype(DType::F32).unwrap();
    let (mut report, mut failed) = (Vec::new(), Vec::new());
    // Not the vision transformers: relevance passes attention's products and softmax as their
    // gradient (plain LRP has no rule for them), which does not conserve it.
    for arch in zoo::ARCHITECTURES.iter().map(|a| a.name).filter(|a| !a.starts_with("vit_")) {
        let model = unbiased(arch);
        let logits = model.logits(&x, Activation::Exact).unwrap().to_vec2::<f32>().unwrap();
        let targets: Vec<u32> = logits
            .iter()
            .map(|l| l.iter().enumerate().fold(0, |b, (i, v)| if *v > l[b] { i } else { b }) as u32)
            .collect();
        for kind in COMPOSITES {
            let checked = kind == CompositeKind::EpsilonGammaBox || relu_after_every_conv(arch);
            let c = Composite { epsilon: 1e-30, stabilizer: 1e-30, ..Composite::of(kind) };
            let r = Lrp { composite: c }.attribute(&model, &x, &targets, Activation::Exact).unwrap();
            let r = r.flatten_from(1).unwrap().to_dtype(DType::F64).unwrap();
            let sums = r.sum(1).unwrap().to_vec1::<f64>().unwrap();
            let mass = r.abs().unwrap().sum(1).unwrap().to_vec1::<f64>().unwrap();
            for i in 0..sums.len() {
                let logit = f64::from(logits[i][targets[i] as usize]);
                let d = (sums[i] - logit).abs() / mass[i];
                let line = format!(
                    "{arch} {} image {i}: Σ R {:.6} logit {logit:.6} ({d:.1e})",
                    kind.name(),
                    sums[i]
                );
                if checked && d > 1e-4 {
                    failed.push(line.clone());
                }
                report.push(line);
            }
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failed.is_empty(), "not conserved:\n{}", failed.join("\n"));
    // zennit's own: resnet18 without biases, relevance against the zero-bias logits.
    let f =
        candle_core::safetensors::load(fixture_dir().join("lrp_resnet18.safetensors"), &Device::Cpu).unwrap();
    let targets: Vec<u32> = f["targets"].to_vec1::<i64>().unwrap().iter().map(|&t| t as u32).collect();
    let model = unbiased("resnet18");
    for key in ["lrp_epsilon_plus", "lrp_epsilon_gamma_box"] {
        let ours = Lrp { composite: composite_of(key) }
            .attribute(&model, &f["x"], &targets, Activation::Exact)
            .unwrap();
        for (i, (d, r)) in compare(&ours, &f[&format!("{key}@nobias")]).into_iter().enumerate() {
            assert!(d < 1e-3 && r > 0.9999, "resnet18 {key}@nobias image {i}: difference {d:e}, Pearson {r}");
        }
    }
}

/// What attacks steer by: ∇ₓ⟨R(x), v⟩ from the relevance pass's explicit adjoint against
/// autograd through the candle path's relevance pass, in float64 under the softplus surrogate;
/// and the CPU kernels (float32) against the candle path in float32, map and adjoint, on the
/// real model and the surrogate. For every composite, on networks with every op LRP treats
/// differently: residual sums and average pooling (Norm), max-pooling, concatenation,
/// squeeze-and-excitation products (Pass to the signal), channel shuffles and layer norms.
#[test]
fn the_relevance_adjoint_equals_autograd() {
    let d = |a: &Tensor, b: &Tensor| compare(a, b).iter().fold(0.0f64, |m, (d, _)| m.max(*d));
    for arch in ["resnet18", "squeezenet1_1", "mobilenet_v3_small", "shufflenet_v2_x1_0", "convnext_tiny"] {
        let (fast, slow32) = (network(arch), network(arch).without_kernels());
        let dev = Device::Cpu;
        let f32 = |t: Tensor| t.to_dtype(DType::F32).unwrap();
        let x = f32(seeded_uniform(&[1, 3, 32, 32], 0.0, 1.0, 31));
        let seed = one_hot(&[7], 10, &dev).unwrap();
        let v = f32(seeded_uniform(&[1, 3, 32, 32], -1.0, 1.0, 32));
        let graph64 = fast.graph().map_tensors(&|t| t.to_dtype(DType::F64)).unwrap();
        let slow = Network::new(arch, graph64, (224, 224), fast.default_layer(), &dev).unwrap();
        let (x64, v64, seed64) = (
            x.to_dtype(DType::F64).unwrap(),
            v.to_dtype(DType::F64).unwrap(),
            seed.to_dtype(DType::F64).unwrap(),
        );
        for kind in COMPOSITES {
            let rule = Rule::Lrp(Composite::of(kind));
            let surrogate = Activation::Softplus { beta: 10.0 };
            // Autograd in float64 on the networks with residual sums, concatenations and
            // products (the others' ops pass relevance as a copy or their gradient).
            if ["resnet18", "squeezenet1_1", "mobilenet_v3_small"].contains(&arch) {
                let pass64 = Backward { rule, ..Backward::gradient(&seed64, surrogate) };
                let (_, hs) = slow.backward_adjoint(&x64, &pass64, &mut |_| Ok((v64.clone(), None))).unwrap();
                let xv = Var::from_tensor(&x64).unwrap();
                let (_, ha) = autograd_backward_adjoint(&slow, xv.as_tensor(), &pass64, &mut |_| {
                    Ok((v64.clone(), None))
                })
                .unwrap();
                assert!(
                    d(&hs, &ha) < 1e-9,
                    "{arch} {}: adjoint vs autograd (f64) {:e}",
                    kind.name(),
                    d(&hs, &ha)
                );
            }
            for act in [Activation::Exact, surrogate] {
                let what = format!("{arch} {} {act:?}", kind.name());
                let pass = Backward { rule, ..Backward::gradient(&seed, act) };
                let (bf, hf) = fast.backward_adjoint(&x, &pass, &mut |_| Ok((v.clone(), None))).unwrap();
                let (bs, hs) = slow32.backward_adjoint(&x, &pass, &mut |_| Ok((v.clone(), None))).unwrap();
                // Float32 rounding differs between the two paths' summation orders, and LRP's
                // maps are ill-conditioned where a Norm or ε denominator is near zero (most on
                // the surrogate, crate::model::lrp; ConvNeXt's z⁺ too): the largest values move
                // by up to about 1% (the directions' by up to 10%), the maps and directions stay
                // the same (Pearson). A wrong op or
                // rule on one path changes them by order one.
                let (map, dir) = (compare(&bf.grad, &bs.grad)[0], compare(&hf, &hs)[0]);
                assert!(
                    map.0 < 2e-2 && map.1 > 0.9999 && dir.0 < 0.2 && dir.1 > 0.999,
                    "{what}: kernels vs candle: map {map:?}, direction {dir:?} (max difference, Pearson)"
                );
            }
        }
    }
}

/// A study's `[methods]` names the composites and sets them in their own tables; the settings
/// reach the method (its metadata and its map: ε = 0.25 on the dense layers changes it), and
/// settings that do not belong or are out of range are refused with the field named.
#[test]
fn lrp_composites_are_configured_in_a_study() {
    use crate::common::{images, root, shipped_images, shipped_model, shipped_study};
    let config = |tables: &str| {
        shipped_study(&format!(
            "[methods]\nnames = [\"lrp_epsilon_plus_flat\", \"lrp_epsilon_gamma_box\"]\n{tables}\n[attacks]\nnames = [\"top_k\"]\nepsilons = [0.1]\ntarget_method = \"lrp_epsilon_plus_flat\"\n"
        ))
    };
    let path = root().join("lrp.toml"); // never read: `parse` takes the text
    let tables = "lrp_epsilon_plus_flat = { epsilon = 0.25, first_layer = \"w_square\" }\nlrp_epsilon_gamma_box = { gamma = 0.5, low = -0.5, high = 1.5 }";
    let plan = fragility::config::Plan::parse(&path, &config(tables)).unwrap();
    let get = |n: &str| plan.methods().iter().find(|m| m.name() == n).unwrap().clone();
    let (flat, gamma) = (get("lrp_epsilon_plus_flat"), get("lrp_epsilon_gamma_box"));
    assert_eq!(flat.params()["epsilon"], 0.25);
    assert_eq!(flat.params()["first_layer"], "w_square");
    assert!(gamma.params().get("first_layer").is_none(), "an unset first_layer is left out of the record");
    assert_eq!(gamma.params()["gamma"], 0.5);
    assert_eq!(gamma.params()["low"], -0.5);
    let (model, x) = (shipped_model(), images(&shipped_images(), &[0, 1]));
    let configured = flat.attribute(&model, &x, &[9, 2], Activation::Exact).unwrap();
    let default =
        Lrp::of(CompositeKind::EpsilonPlusFlat).attribute(&model, &x, &[9, 2], Activation::Exact).unwrap();
    assert!(compare(&configured, &default)[0].0 > 1e-3, "ε and the first layer did not reach the map");
    for (tables, want) in [
        (
            "lrp_epsilon_plus_flat = { gamma = 0.5 }",
            "`methods.lrp_epsilon_plus_flat`: `gamma`, `low` and `high`",
        ),
        (
            "lrp_epsilon_gamma_box = { low = 1.0, high = 0.0 }",
            "`methods.lrp_epsilon_gamma_box`: the box needs finite low < high",
        ),
        (
            "lrp_epsilon_plus_flat = { epsilon = 0.0 }",
            "`methods.lrp_epsilon_plus_flat`: epsilon must be finite and > 0",
        ),
        ("lrp_epsilon_plus_flat = { beta = 1.0 }", "unknown field `beta`"),
        ("lrp_epsilon_plus_flat = { first_layer = \"z_plus\" }", "unknown variant `z_plus`"),
    ] {
        let Err(err) = fragility::config::Plan::parse(&path, &config(tables)) else {
            panic!("{tables}: accepted")
        };
        let err = err.to_string();
        assert!(err.contains(want), "{tables}: {err}");
    }
}

//! β-smoothing (Dombrowski et al. 2019): maps on the softplus(β) network against PyTorch
//! autograd and zennit through the same network (scripts/beta_smooth_fixtures.py), the
//! prediction kept on the real network, and the names a user writes.

use crate::lrp::compare;
use crate::synthetic::synthetic_state_dict;
use crate::torchvision::{fixture_dir, network};
use candle_core::{DType, Device};
use fragility::attribution::beta_smooth::Form;
use fragility::attribution::{beta_smooth, Attribution, BetaSmooth, Gradient, Lrp};
use fragility::model::lrp::CompositeKind;
use fragility::model::weights::Weights;
use fragility::model::zoo;
use fragility::model::{Activation, Classifier, Network};
use std::sync::Arc;

/// `arch` with the synthetic weights in float64 from the start (batch norm folded in float64:
/// folded in float32, its 1e-7 rounding alone moves the ε-rule's near-zero denominators).
fn network64(arch: &str) -> Network {
    let a = zoo::architecture(arch).unwrap();
    let dev = Device::Cpu;
    let dict = synthetic_state_dict(&fixture_dir().join(format!("{arch}.keys.json")), &dev)
        .into_iter()
        .map(|(k, t)| (k, t.to_dtype(DType::F64).unwrap()))
        .collect();
    let graph = a.load(Weights::from_tensors(dict, format!("{arch} (synthetic, float64)"))).unwrap();
    Network::new(arch, graph, a.input, a.default_layer, &dev).unwrap()
}

/// The gradient and LRP ε-plus-flat, β-smoothed at β = 1, 3, 10, equal PyTorch's gradient and
/// zennit's LRP through the network with nn.Softplus(β) in place of every nn.ReLU (vgg11,
/// resnet18), and the gradient smoothed in the backward form equals zennit's `BetaSmooth`
/// (the ReLU network, each ReLU's derivative sigmoid(βz)): to 1e-5 of each map's largest value on the candle path in float64 (the
/// fixtures are float64 results rounded to float32), and in float32 on both executors to
/// Pearson ≥ 0.9998 (a max-pool window whose two largest values round to one order in
/// float32 moves a gradient pixel; LRP's denominators near zero amplify float32 rounding to
/// 5% of the largest relevance at a few pixels). resnet18's LRP differs from zennit's by up to
/// 3e-3 even in float64: under softplus every unit is alive, so the residual sums' Norm
/// divides relevance by sums that cross zero (identity + branch ≈ 0), and the last bits of a
/// sum computed in another order (batch norm folded by us, merged by zennit) are amplified
/// by 1/sum; the relevance no longer sums to the logit (zennit: −57 against 1.95 at β = 1).
/// The logits the wrapper's caller sees stay the ReLU network's. The smoothed maps differ
/// from the plain ones and from each other by order one (Pearson 0.02–0.86 to the plain
/// gradient in the fixtures), so a smoothing that is ignored, applied to the wrong pass, or
/// given another β fails.
#[test]
fn beta_smoothed_maps_equal_the_softplus_network_in_pytorch_and_zennit() {
    for arch in ["vgg11", "resnet18"] {
        let f = candle_core::safetensors::load(
            fixture_dir().join(format!("beta_smooth_{arch}.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let x = &f["x"];
        let x64 = x.to_dtype(DType::F64).unwrap();
        let targets: Vec<u32> = f["targets"].to_vec1::<i64>().unwrap().iter().map(|&t| t as u32).collect();
        let (fast, slow) = (network(arch), network(arch).without_kernels());
        let slow64 = network64(arch);
        for beta in [1.0, 3.0, 10.0] {
            let methods: [(Arc<dyn Attribution>, Form, String); 3] = [
                (Arc::new(Gradient), Form::Network, format!("gradient@beta={beta}")),
                (
                    Arc::new(Lrp::of(CompositeKind::EpsilonPlusFlat)),
                    Form::Network,
                    format!("lrp_epsilon_plus_flat@beta={beta}"),
                ),
                (Arc::new(Gradient), Form::Backward, format!("gradient@beta_backward={beta}")),
            ];
            for (inner, form, key) in methods {
                let method = BetaSmooth::new(beta, form, inner).unwrap();
                let want = &f[&key];
                let ours = method.attribute(&slow64, &x64, &targets, Activation::Exact).unwrap();
                // Residual sums under softplus: see the test's docs.
                let tol = if arch == "resnet18" && key.starts_with("lrp") { 1e-2 } else { 1e-5 };
                for (i, (d, r)) in compare(&ours, want).into_iter().enumerate() {
                    assert!(
                        d < tol && r > 0.99999,
                        "{arch} {} (float64) image {i}: difference {d:e}, Pearson {r}",
                        method.name()
                    );
                }
                for (path, model) in [("kernels", &fast), ("candle", &slow)] {
                    let ours = method.attribute(model, x, &targets, Activation::Exact).unwrap();
                    for (i, (d, r)) in compare(&ours, want).into_iter().enumerate() {
                        assert!(
                            d < 0.1 && r > 0.9998,
                            "{arch} {} ({path}) image {i}: difference {d:e}, Pearson {r}",
                            method.name()
                        );
                    }
                    let (_, logits) =
                        method.attribute_with_logits(model, x, x, &targets, Activation::Exact).unwrap();
                    assert!(
                        logits.is_none(),
                        "{}: the softplus network's logits were handed on",
                        method.name()
                    );
                }
            }
            // The softplus network itself: its logits are PyTorch's.
            let logits = fast.logits(x, Activation::Softplus { beta }).unwrap();
            let (d, _) = compare(&logits, &f[&format!("logits@beta={beta}")])[0];
            assert!(d < 1e-4, "{arch} softplus({beta}) logits: {d:e}");
        }
    }
}

/// `<method>_beta_smooth<β>` is the method on the softplus network, wherever a method is
/// named; forward-only methods and malformed β are refused with the name.
#[test]
fn smoothed_names_resolve_and_bad_ones_are_refused() {
    use fragility::explain::methods_by_name;
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let asked =
        ["gradient", "gradient_beta_smooth3", "smoothgrad_beta_smooth0.5", "grad_cam_beta_smooth_backward2"];
    let ms = methods_by_name(&names(&asked), 0).unwrap();
    let got: Vec<&str> = ms.iter().map(|m| m.name()).collect();
    assert_eq!(got, asked);
    assert_eq!(ms[3].params()["form"], "backward");
    assert!(ms[1].differentiable() && ms[2].differentiable());
    assert!(ms[1].params()["beta_smooth"] == 3.0 && ms[1].params()["method"] == "gradient");
    for (bad, says) in [
        (vec!["occlusion_beta_smooth3"], "`occlusion` is not one"),
        (vec!["score_cam_beta_smooth3"], "`score_cam` is not one"),
        (vec!["deconvnet_beta_smooth3"], "`deconvnet` is not one"),
        (vec!["gradient_beta_smooth0"], "β > 0"),
        (vec!["gradient_beta_smoothx"], "β > 0"),
        (vec!["gradiant_beta_smooth3"], "unknown method `gradiant`"),
        (vec!["lrp_epsilon_plus_beta_smooth_backward3"], "does not read the ReLUs' derivatives"),
        (vec!["deeplift_beta_smooth_backward3"], "does not read the ReLUs' derivatives"),
        (vec!["smoothgrad_beta_smooth_backward"], "β > 0 after `_beta_smooth_backward`"),
        (vec!["gradient_beta_smooth3", "gradient_beta_smooth3.0"], "given twice"),
    ] {
        let e =
            methods_by_name(&names(&bad), 0).err().unwrap_or_else(|| panic!("{bad:?} accepted")).to_string();
        assert!(e.contains(says), "{bad:?}: {e}");
    }
    assert_eq!(
        beta_smooth::name_of("lrp_epsilon_alpha2_beta1", 10.0, Form::Network),
        "lrp_epsilon_alpha2_beta1_beta_smooth10"
    );
}

/// In a study: smoothed names in `[methods] names` and as the attack's target, the wrapped
/// method's own settings table applying to it; the error for a bad name names the field and
/// the line.
#[test]
fn beta_smoothed_methods_are_configured_in_a_study() {
    use crate::common::{root, shipped_study};
    let config = |names: &str, target: &str| {
        shipped_study(&format!(
            "[methods]\nnames = [{names}]\nlrp_epsilon_plus_flat = {{ epsilon = 0.25 }}\n[attacks]\nnames = [\"top_k\"]\nepsilons = [0.1]\ntarget_method = \"{target}\"\n"
        ))
    };
    let path = root().join("beta.toml"); // never read: `parse` takes the text
    let names = r#""gradient", "gradient_beta_smooth3", "lrp_epsilon_plus_flat_beta_smooth10""#;
    let plan = fragility::config::Plan::parse(&path, &config(names, "gradient_beta_smooth3")).unwrap();
    let got: Vec<&str> = plan.methods().iter().map(|m| m.name()).collect();
    assert_eq!(got, ["gradient", "gradient_beta_smooth3", "lrp_epsilon_plus_flat_beta_smooth10"]);
    let lrp = &plan.methods()[2].params();
    assert_eq!(
        (lrp["beta_smooth"].as_f64(), lrp["method_params"]["epsilon"].as_f64()),
        (Some(10.0), Some(0.25))
    );
    for (names, target, want) in [
        (r#""gradient", "occlusion_beta_smooth3""#, "gradient", "`occlusion` is not one"),
        (r#""gradient_beta_smooth3", "gradient_beta_smooth3.0""#, "gradient", "listed before"),
        (r#""gradient""#, "lime_beta_smooth1", "`lime` is not one"),
    ] {
        let Err(err) = fragility::config::Plan::parse(&path, &config(names, target)) else {
            panic!("{names} / {target}: accepted")
        };
        let err = err.to_string();
        assert!(err.contains(want) && err.contains("line"), "{names} / {target}: {err}");
    }
}

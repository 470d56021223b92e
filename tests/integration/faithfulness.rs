//! Faithfulness measures against their references on the shipped model
//! (tests/fixtures/faithfulness/fmnist_cnn.safetensors, made by scripts/faithfulness_fixtures.py:
//! RISE's `CausalMetric` code for deletion and insertion, Quantus 0.6.0 for pixel flipping and
//! region perturbation), plus invariants that hold for any model.

use crate::common::*;
use candle_core::{DType, Device, Tensor};
use fragility::attribution::{attribution_rows, by_name as method, saliency};
use fragility::faithfulness::{
    by_name, descending_order, faithfulness_correlation_with_subsets, infidelity_with_noise,
    noisy_linear_imputation, Baseline, Batch, Blur, Curve, Deletion, FaithfulnessCorrelation, Infidelity,
    Insertion, Measure, PixelFlipping, RegionPerturbation, Road, RoadOrder, MEASURE_NAMES,
};
use fragility::model::{logits_in_passes, target_probability, Activation};
use fragility::seed;
use std::collections::HashMap;

/// Curves are compared point by point as |got − want| / max(|want|, floor): relative where the
/// value is a probability of some size, absolute below FLOOR (float32 softmax values of 1e-12
/// carry no relative precision). Quantus' region curve is a difference p(x) − p(x′) of two
/// float32 probabilities, so its floor is the image's clean probability p(x): a drop of 4e-5
/// from p(x) = 0.9998 is known only to a few float32 ulps of p(x) (~1e-7), in the reference too.
const FLOOR: f64 = 1e-3;
const TOL: f64 = 1e-5;

struct Fixture {
    x: Tensor,
    classes: Vec<u32>,
    maps: Vec<Vec<f32>>,
    /// fragility's signed gradient attributions of the fixture's images.
    attributions: Vec<Vec<f32>>,
    keys: Vec<u64>,
    tensors: HashMap<String, Tensor>,
}

fn fixture() -> Fixture {
    let path = root().join("tests/fixtures/faithfulness/fmnist_cnn.safetensors");
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let x = tensors["x"].clone();
    let classes: Vec<u32> = tensors["classes"].to_vec1::<i64>().unwrap().iter().map(|&c| c as u32).collect();
    let maps = tensors["maps"].flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
    let attributions = signed_gradients(&x, &classes);
    let keys = (0..classes.len() as u64).collect();
    Fixture { x, classes, maps, attributions, keys, tensors }
}

/// fragility's gradient attributions of `x` for `classes`, signed, [B][C·H·W].
fn signed_gradients(x: &Tensor, classes: &[u32]) -> Vec<Vec<f32>> {
    let attr =
        method("gradient", 0).unwrap().attribute(&shipped_model(), x, classes, Activation::Exact).unwrap();
    attribution_rows(&attr).unwrap()
}

/// A batch of `x` with these maps and classes, and the fixture's attributions and keys.
fn batch_of<'a>(f: &'a Fixture, x: &'a Tensor, maps: &'a [Vec<f32>], classes: &'a [u32]) -> Batch<'a> {
    let n = classes.len().min(f.keys.len());
    Batch { x, maps, attributions: &f.attributions[..n], classes, keys: &f.keys[..n], seed: 0 }
}

impl Fixture {
    fn rows(&self, key: &str) -> Vec<Vec<f64>> {
        // Every dimension but the last is a row: [B,2,784] gives 2·B rows.
        let t = &self.tensors[key];
        t.flatten_to(t.rank() - 2).unwrap().to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
    }

    fn values(&self, key: &str) -> Vec<f64> {
        self.tensors[key].to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
    }

    fn batch(&self) -> Batch<'_> {
        batch_of(self, &self.x, &self.maps, &self.classes)
    }

    fn run(&self, m: &dyn Measure) -> Vec<Curve> {
        m.evaluate(&shipped_model(), &self.batch()).unwrap()
    }

    /// The largest error (see [`FLOOR`]) of the curves and scores against `key` and `auc_key`,
    /// printed and checked against [`TOL`].
    fn check(&self, what: &str, got: &[Curve], key: &str, auc_key: Option<&str>) -> f64 {
        self.check_with_floors(what, got, key, auc_key, &vec![FLOOR; self.classes.len()])
    }

    /// [`Fixture::check`] with a floor per image.
    fn check_with_floors(
        &self,
        what: &str,
        got: &[Curve],
        key: &str,
        auc_key: Option<&str>,
        floors: &[f64],
    ) -> f64 {
        let want = self.rows(key);
        assert_eq!(got.len(), want.len(), "{what}: images");
        let mut worst = 0f64;
        for (b, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.values.len(), w.len(), "{what}: points of image {b}");
            assert_eq!(g.fractions.len(), w.len(), "{what}: fractions of image {b}");
            worst = worst.max(max_error(&g.values, w, floors[b]));
        }
        let mut worst_auc = 0f64;
        if let Some(auc_key) = auc_key {
            let scores: Vec<f64> = got.iter().map(|c| c.score).collect();
            worst_auc = max_error(&scores, &self.values(auc_key), FLOOR);
        }
        println!("{what}: curves max error {worst:.2e}, scores {worst_auc:.2e}");
        assert!(
            worst <= TOL && worst_auc <= TOL,
            "{what}: curves {worst:.2e}, scores {worst_auc:.2e} > {TOL}"
        );
        worst.max(worst_auc)
    }
}

fn max_error(got: &[f64], want: &[f64], floor: f64) -> f64 {
    got.iter().zip(want).map(|(g, w)| (g - w).abs() / w.abs().max(floor)).fold(0.0, f64::max)
}

fn clean_probabilities(f: &Fixture, x: &Tensor) -> Vec<f64> {
    target_probability(&logits_in_passes(&shipped_model(), x).unwrap(), &f.classes).unwrap()
}

#[test]
fn the_fixture_model_is_the_shipped_one() {
    let f = fixture();
    let logits = logits_in_passes(&shipped_model(), &f.x).unwrap();
    let d = max_abs_diff(&flat(&logits), &flat(&f.tensors["logits"]));
    assert!(d <= 1e-4 * max_abs(&flat(&f.tensors["logits"])), "logits differ by {d}");
    // The maps are fragility's own gradient saliency, to float32 rounding.
    let attr = method("gradient", 0)
        .unwrap()
        .attribute(&shipped_model(), &f.x, &f.classes, Activation::Exact)
        .unwrap();
    let ours = flat(&saliency(&attr).unwrap());
    let want: Vec<f32> = f.maps.concat();
    assert!(max_abs_diff(&ours, &want) <= 1e-5 * max_abs(&want));
}

#[test]
fn rise_blur_equals_rises_gkern_and_conv2d() {
    let f = fixture();
    assert_eq!(Blur::default().kernel(), flat(&f.tensors["gkern"]), "gkern(11, 5), every bit");
    let want = flat(&f.tensors["blurred"]);
    let got: Vec<f32> = flat(&f.x).chunks(784).flat_map(|img| Blur::default().apply(img, 28, 28)).collect();
    assert!(max_abs_diff(&got, &want) <= 1e-6, "{}", max_abs_diff(&got, &want));
}

#[test]
fn deletion_and_insertion_equal_rises_causal_metric() {
    let f = fixture();
    let step = Some(28);
    f.check("deletion", &f.run(&Deletion { step, ..Default::default() }), "deletion", Some("deletion_auc"));
    f.check(
        "insertion",
        &f.run(&Insertion { step, ..Default::default() }),
        "insertion",
        Some("insertion_auc"),
    );
    // Unset, the step is one row: 28 pixels at 28×28, RISE's 224 at 224×224.
    assert_eq!(f.run(&Deletion::default()), f.run(&Deletion { step, ..Default::default() }));
    let fractions = &f.run(&Deletion::default())[0].fractions;
    assert_eq!((fractions.len(), fractions[1], fractions[28]), (29, 1.0 / 28.0, 1.0));
}

#[test]
fn pixel_flipping_equals_quantus_0_6() {
    let f = fixture();
    let rows = PixelFlipping { features_in_step: 28, ..Default::default() };
    f.check("pixel_flipping", &f.run(&rows), "pixel_flipping", Some("pixel_flipping_auc"));
    let one = f.run(&PixelFlipping::default());
    f.check(
        "pixel_flipping@1",
        &one,
        "pixel_flipping@features_in_step=1",
        Some("pixel_flipping_auc@features_in_step=1"),
    );
    assert_eq!((one[0].fractions[0], one[0].fractions[783]), (1.0 / 784.0, 1.0));
}

#[test]
fn region_perturbation_equals_quantus_0_6() {
    let f = fixture();
    let clean = clean_probabilities(&f, &f.x);
    let four = RegionPerturbation { patch_size: 4, ..Default::default() };
    let (key, auc) = ("region_perturbation", Some("region_perturbation_auc"));
    f.check_with_floors("region_perturbation", &f.run(&four), key, auc, &clean);
    let (key, auc) = ("region_perturbation@patch_size=8", Some("region_perturbation_auc@patch_size=8"));
    f.check_with_floors(
        "region_perturbation@8 (padded)",
        &f.run(&RegionPerturbation::default()),
        key,
        auc,
        &clean,
    );
    let ten = RegionPerturbation { patch_size: 4, regions_evaluation: 10, ..Default::default() };
    let key = "region_perturbation@regions_evaluation=10";
    f.check_with_floors("region_perturbation@10", &f.run(&ten), key, None, &clean);
    // The first point has one 4×4 patch flipped, the last all 49.
    let curves = f.run(&four);
    assert_eq!((curves[0].fractions[0], curves[0].fractions[48]), (16.0 / 784.0, 1.0));
}

#[test]
fn deletion_of_a_black_image_by_a_black_baseline_is_flat() {
    let f = fixture();
    let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
    let curves = Deletion::default()
        .evaluate(&shipped_model(), &batch_of(&f, &x, &f.maps[..2], &f.classes[..2]))
        .unwrap();
    for c in &curves {
        assert!(c.values.iter().all(|&v| v == c.values[0]), "{:?}", c.values);
        assert!(
            (c.score - c.values[0]).abs() <= 1e-12 * c.values[0],
            "the area of a flat curve over [0,1] is its height"
        );
    }
}

#[test]
fn deletion_starts_clean_and_ends_at_the_baseline_insertion_ends_clean() {
    let f = fixture();
    let clean = clean_probabilities(&f, &f.x);
    let black = clean_probabilities(&f, &f.x.zeros_like().unwrap());
    let blurred = clean_probabilities(&f, &f.tensors["blurred"]);
    let del = f.run(&Deletion::default());
    let ins = f.run(&Insertion::default());
    for b in 0..f.classes.len() {
        assert_eq!(del[b].values[0], clean[b], "deletion starts at the clean image");
        assert_eq!(*del[b].values.last().unwrap(), black[b], "deletion ends at the baseline image");
        assert_eq!(*ins[b].values.last().unwrap(), clean[b], "insertion ends at the clean image");
        assert!((ins[b].values[0] - blurred[b]).abs() <= 1e-5, "insertion starts at RISE's blurred image");
    }
    // Region perturbation's curve is the drop from the clean probability; pixel flipping's last
    // point is the image filled with its own minimum (0.1 for the fixture's fourth image).
    let pf = f.run(&PixelFlipping { features_in_step: 28, ..Default::default() });
    let filled = (f.x.min_keepdim(3).unwrap().min_keepdim(2).unwrap().broadcast_as(f.x.shape()).unwrap())
        .contiguous()
        .unwrap();
    assert_eq!(flat(&filled.narrow(0, 3, 1).unwrap())[0], 0.1f32);
    let floor = clean_probabilities(&f, &filled);
    for b in 0..f.classes.len() {
        assert_eq!(*pf[b].values.last().unwrap(), floor[b]);
    }
    // top-1 at the ends is the model's own prediction of those images.
    let predicted = |x: &Tensor| fragility::model::predict(&shipped_model(), x).unwrap();
    let (black_top, filled_top) = (predicted(&f.x.zeros_like().unwrap()), predicted(&filled));
    let rp = f.run(&RegionPerturbation { patch_size: 4, ..Default::default() });
    for b in 0..f.classes.len() {
        assert!(del[b].top1[0] && *ins[b].top1.last().unwrap(), "the clean image's class is its arg-max");
        assert_eq!(*del[b].top1.last().unwrap(), black_top[b] == f.classes[b]);
        assert_eq!(*pf[b].top1.last().unwrap(), filled_top[b] == f.classes[b]);
        assert_eq!(*rp[b].top1.last().unwrap(), filled_top[b] == f.classes[b], "all 49 patches flipped");
        assert_eq!((pf[b].top1.len(), rp[b].top1.len()), (pf[b].values.len(), rp[b].values.len()));
    }
}

#[test]
fn one_image_alone_gives_the_numbers_it_gets_in_a_batch_at_any_thread_count() {
    let f = fixture();
    let model = shipped_model();
    for name in MEASURE_NAMES {
        let m = by_name(name).unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| m.evaluate(&model, &f.batch()).unwrap())
        };
        let all = run(2);
        assert_eq!(all, run(1), "{name}: 1 and 2 threads");
        for (b, in_batch) in all.iter().enumerate() {
            let x = f.x.narrow(0, b, 1).unwrap();
            let one = Batch {
                x: &x,
                maps: &f.maps[b..=b],
                attributions: &f.attributions[b..=b],
                classes: &f.classes[b..=b],
                keys: &f.keys[b..=b],
                seed: 0,
            };
            let alone = m.evaluate(&model, &one).unwrap();
            assert_eq!(&alone[0], in_batch, "{name}: image {b} alone");
        }
    }
}

#[test]
fn gradient_maps_delete_faster_than_random_maps() {
    let model = shipped_model();
    let ids: Vec<usize> = (100..116).collect();
    let x = images(&shipped_images(), &ids);
    let classes = fragility::model::predict(&model, &x).unwrap();
    let attr = method("gradient", 0).unwrap().attribute(&model, &x, &classes, Activation::Exact).unwrap();
    let maps = saliency(&attr).unwrap().flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
    let random: Vec<Vec<f32>> = (0..ids.len())
        .map(|i| flat(&seeded_uniform(&[784], 0.0, 1.0, 7 + i as u64).to_dtype(DType::F32).unwrap()))
        .collect();
    let attributions = attribution_rows(&attr).unwrap();
    let keys: Vec<u64> = ids.iter().map(|&i| i as u64).collect();
    let mean = |maps: &[Vec<f32>]| {
        let batch =
            Batch { x: &x, maps, attributions: &attributions, classes: &classes, keys: &keys, seed: 0 };
        let c = Deletion::default().evaluate(&model, &batch).unwrap();
        c.iter().map(|c| c.score).sum::<f64>() / c.len() as f64
    };
    let (grad, rand) = (mean(&maps), mean(&random));
    println!("deletion AUC: gradient {grad:.4}, random {rand:.4}");
    assert!(grad < rand, "gradient {grad} vs random {rand}");
}

#[test]
fn mismatched_maps_and_classes_are_refused() {
    let f = fixture();
    let model = shipped_model();
    let m = Deletion::default();
    let refused = |b: Batch| m.evaluate(&model, &b).is_err();
    assert!(refused(Batch { maps: &f.maps[..3], ..f.batch() }), "one map short");
    assert!(refused(Batch { keys: &f.keys[..3], ..f.batch() }), "one key short");
    assert!(refused(Batch { attributions: &f.attributions[..3], ..f.batch() }), "one attribution short");
    let mut short = f.maps.clone();
    short[2].pop();
    assert!(refused(Batch { maps: &short, ..f.batch() }), "a map of 783 values");
    let mut nan = f.maps.clone();
    nan[1][5] = f32::NAN;
    assert!(refused(Batch { maps: &nan, ..f.batch() }), "a NaN in a map");
    let mut inf = f.attributions.clone();
    inf[0][7] = f32::INFINITY;
    assert!(refused(Batch { attributions: &inf, ..f.batch() }), "an infinite attribution");
    assert!(refused(Batch { classes: &[0, 1, 2, 10], ..f.batch() }), "class 10 of 10");
    assert!(Deletion { step: Some(0), ..Default::default() }.evaluate(&model, &f.batch()).is_err());
    assert!(PixelFlipping { features_in_step: 0, ..Default::default() }
        .evaluate(&model, &f.batch())
        .is_err());
}

/// tests/fixtures/faithfulness/random_measures.safetensors (scripts/faithfulness_fixtures_random.py):
/// the same four images, their signed gradients, and ROAD, faithfulness correlation and
/// infidelity by Quantus 0.6.0 and Captum 0.9 with the random draws they used.
fn random_fixture() -> Fixture {
    let path = root().join("tests/fixtures/faithfulness/random_measures.safetensors");
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let x = tensors["x"].clone();
    let classes: Vec<u32> = tensors["classes"].to_vec1::<i64>().unwrap().iter().map(|&c| c as u32).collect();
    let maps = tensors["maps"].flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
    let attributions = tensors["attributions"].flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
    let keys = (0..classes.len() as u64).collect();
    Fixture { x, classes, maps, attributions, keys, tensors }
}

#[test]
fn the_random_fixtures_attributions_are_fragilitys_signed_gradients() {
    let f = random_fixture();
    let ours = signed_gradients(&f.x, &f.classes).concat();
    let want = f.attributions.concat();
    assert!(max_abs_diff(&ours, &want) <= 1e-5 * max_abs(&want));
    assert_eq!(f.maps, fixture().maps);
}

#[test]
fn road_without_noise_equals_quantus_0_6_imputation() {
    let f = random_fixture();
    let model = shipped_model();
    let imputed = f.rows("road_imputed");
    for (order, key, slot) in [(RoadOrder::Morf, "road_morf", 0), (RoadOrder::Lerf, "road_lerf", 1)] {
        let road = Road { noise: 0.0, ..Road::new(order) };
        let curves = road.evaluate(&model, &f.batch()).unwrap();
        f.check(key, &curves, key, None);
        let top1 = f.tensors[&format!("{key}_top1")].to_vec2::<i64>().unwrap();
        for (b, c) in curves.iter().enumerate() {
            assert_eq!(
                c.top1,
                top1[b].iter().map(|&t| t == 1).collect::<Vec<_>>(),
                "{key} top-1 of image {b}"
            );
            assert_eq!((c.fractions[0], c.fractions[8]), (78.0 / 784.0, 705.0 / 784.0));
            // The imputed image at 90 %, pixel by pixel.
            let mut order_map = f.maps[b].clone();
            if order == RoadOrder::Lerf {
                order_map.iter_mut().for_each(|v| *v = -*v);
            }
            let removed = &descending_order(&order_map)[..705];
            let image = flat(&f.x.narrow(0, b, 1).unwrap());
            let ours = noisy_linear_imputation(&image, (1, 28, 28), removed, 0.0, &mut seed::rng(0)).unwrap();
            let want: Vec<f32> = imputed[2 * b + slot].iter().map(|&v| v as f32).collect();
            let d = max_abs_diff(&ours, &want);
            println!("{key}: image {b} imputed at 90 % within {d:.2e}");
            assert!(d <= 1e-5, "{key}: image {b} imputed {d}");
        }
    }
}

#[test]
fn seeded_measures_differ_between_seeds_and_repeat_within_one() {
    let f = random_fixture();
    let model = shipped_model();
    for name in MEASURE_NAMES
        .into_iter()
        .filter(|n| n.starts_with("road") || *n == "faithfulness_correlation" || *n == "infidelity")
    {
        let m = by_name(name).unwrap();
        let run = |seed| m.evaluate(&model, &Batch { seed, ..f.batch() }).unwrap();
        assert_eq!(run(1), run(1), "{name}: one seed, the same numbers");
        assert_ne!(run(1), run(2), "{name}: two seeds");
    }
}

#[test]
fn faithfulness_correlation_with_quantus_subsets_equals_quantus_0_6() {
    let f = random_fixture();
    let subsets: Vec<Vec<Vec<usize>>> = f.tensors["fc_subsets"]
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec3::<i64>()
        .unwrap()
        .into_iter()
        .map(|runs| runs.into_iter().map(|s| s.into_iter().map(|i| i as usize).collect()).collect())
        .collect();
    let curves =
        faithfulness_correlation_with_subsets(&shipped_model(), &f.batch(), Baseline::ImageMin, &subsets)
            .unwrap();
    // Drops are logit differences of order 1: compared absolutely below 1.
    let drops = f.rows("fc_drops");
    let worst = curves.iter().zip(&drops).map(|(c, d)| max_error(&c.values, d, 1.0)).fold(0.0, f64::max);
    let scores: Vec<f64> = curves.iter().map(|c| c.score).collect();
    let worst_score = max_error(&scores, &f.values("faithfulness_correlation"), FLOOR);
    println!("faithfulness correlation: drops {worst:.2e}, scores {worst_score:.2e}");
    assert!(worst <= TOL && worst_score <= TOL, "drops {worst:.2e}, scores {worst_score:.2e}");
    assert_eq!(curves[0].fractions, vec![224.0 / 784.0; 50]);
}

#[test]
fn infidelity_with_captums_noise_equals_captum_0_9() {
    let f = random_fixture();
    let noise: Vec<Vec<Vec<f32>>> = f.tensors["infid_noise"].to_vec3::<f32>().unwrap();
    let curves = infidelity_with_noise(&shipped_model(), &f.batch(), &noise).unwrap();
    let scores: Vec<f64> = curves.iter().map(|c| c.score).collect();
    let worst = max_error(&scores, &f.values("infidelity"), FLOOR);
    println!("infidelity: scores {worst:.2e} ({scores:?})");
    assert!(worst <= TOL, "{worst:.2e}");
    assert_eq!(curves[0].values.len(), 10);
}

#[test]
fn the_seeded_measures_are_the_explicit_ones_on_their_own_draws() {
    let f = random_fixture();
    let model = shipped_model();
    let batch = Batch { seed: 11, ..f.batch() };
    let fc = FaithfulnessCorrelation { nr_runs: 5, subset_size: 100, ..Default::default() };
    let subsets: Vec<_> = f.keys.iter().map(|&k| fc.subsets(11, k, 784)).collect();
    let explicit = faithfulness_correlation_with_subsets(&model, &batch, fc.baseline, &subsets).unwrap();
    assert_eq!(fc.evaluate(&model, &batch).unwrap(), explicit);
    assert_eq!(explicit[0].fractions, vec![100.0 / 784.0; 5]);
    let inf = Infidelity::default();
    let noise: Vec<_> = f.keys.iter().map(|&k| inf.noise(11, k, 784)).collect();
    assert_eq!(inf.evaluate(&model, &batch).unwrap(), infidelity_with_noise(&model, &batch, &noise).unwrap());
}

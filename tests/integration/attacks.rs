//! Attack invariants over every attack, and each steered attack against its random baseline.

use crate::common::*;
use candle_core::{DType, Tensor};
use fragility::attack::{
    normalized, Attack, AttackInput, IterSettings, ManipulateObjective, MassCenterObjective, Objective,
    Optimizer, Outcome, PrepareContext, RandomSign, RandomWalk, Region, Steered, Step, TargetMap,
    TargetedObjective, TopKObjective, ATTACK_NAMES,
};
use fragility::attribution::{normalized_saliency, saliency, Attribution, Gradient};
use fragility::model::{predict, Activation, Classifier, Network};
use std::sync::Arc;

fn attack_rows(
    model: &dyn Classifier,
    attack: &dyn Attack,
    x: &Tensor,
    eps: &[f32],
    seeds: &[u64],
) -> (Outcome, Vec<u32>) {
    let targets = predict(model, x).unwrap();
    let input = AttackInput { model, x, eps, targets: &targets, seeds, clean: None, progress: None };
    (attack.perturb(&input).unwrap(), targets)
}

/// The invariants every attack must keep: inside the ε-ball and [0,1], label kept where said,
/// the reported L∞ is the real one.
fn check_invariants(
    model: &dyn Classifier,
    x: &Tensor,
    eps: &[f32],
    out: &Outcome,
    targets: &[u32],
    name: &str,
) {
    let a = flat(&out.x_adv);
    let b = flat(x);
    let per = a.len() / eps.len();
    let preds = predict(model, &out.x_adv).unwrap();
    for r in 0..eps.len() {
        let row_a = &a[r * per..(r + 1) * per];
        let row_b = &b[r * per..(r + 1) * per];
        let linf = max_abs_diff(row_a, row_b);
        assert!(linf <= eps[r] + 1e-6, "{name} row {r}: ‖δ‖∞ = {linf} > ε = {}", eps[r]);
        assert!((linf - out.linf[r]).abs() < 1e-6, "{name} row {r}: reported L∞ {} vs {linf}", out.linf[r]);
        assert!(row_a.iter().all(|&v| (0.0..=1.0).contains(&v)), "{name} row {r} leaves [0,1]");
        assert_eq!(out.label_kept[r], preds[r] == targets[r], "{name} row {r}: label_kept is wrong");
    }
}

fn setup() -> (Network, Tensor, Vec<f32>, Vec<u64>) {
    let model = random_model(9, DType::F32);
    let set = shipped_images();
    let x1 = images(&set, &[20, 21, 22]);
    let x = Tensor::cat(&[x1.clone(), x1], 0).unwrap(); // the same 3 images at two ε
    let eps = vec![0.02, 0.02, 0.02, 0.1, 0.1, 0.1];
    let seeds = vec![1, 2, 3, 4, 5, 6];
    (model, x, eps, seeds)
}

fn short(iterations: u32) -> IterSettings {
    IterSettings { iterations, step: Step::FractionOfEps(0.25), ..IterSettings::ghorbani() }
}

fn objective(name: &str) -> Arc<dyn Objective> {
    match name {
        "top_k" => Arc::new(TopKObjective { k: Some(50) }),
        "mass_center" => Arc::new(MassCenterObjective),
        "targeted" => Arc::new(TargetedObjective { region: Region::Rect { x0: 0, y0: 0, x1: 10, y1: 10 } }),
        "manipulate" => {
            let pixels = images(&shipped_images(), &[7]);
            Arc::new(ManipulateObjective { target: TargetMap::Image { id: 7, pixels } })
        }
        other => panic!("no objective {other}"),
    }
}

/// Every attack this build knows, with short settings, against the gradient map.
fn every_attack(iterations: u32) -> Vec<Arc<dyn Attack>> {
    ATTACK_NAMES
        .iter()
        .map(|&n| -> Arc<dyn Attack> {
            match n {
                "random_sign" => Arc::new(RandomSign { tries: 5 }),
                "random_walk" => Arc::new(RandomWalk { settings: short(iterations) }),
                _ => {
                    let settings = if n == "manipulate" {
                        IterSettings { iterations, ..IterSettings::dombrowski() }
                    } else {
                        short(iterations)
                    };
                    Arc::new(Steered { objective: objective(n), method: Arc::new(Gradient), settings })
                }
            }
        })
        .collect()
}

#[test]
fn every_attack_keeps_the_invariants_is_reproducible_and_row_independent() {
    let (model, x, eps, seeds) = setup();
    for attack in every_attack(4) {
        let name = attack.name();
        let (out, targets) = attack_rows(&model, attack.as_ref(), &x, &eps, &seeds);
        check_invariants(&model, &x, &eps, &out, &targets, name);
        if name != "random_sign" {
            // The steered attacks and the walk fall back to the clean image (or the last
            // label-keeping iterate): every row keeps its label.
            assert!(out.label_kept.iter().all(|&k| k), "{name}: {:?}", out.label_kept);
        }
        assert!(out.linf.iter().any(|&l| l > 0.0), "{name} moved no row");
        let (again, _) = attack_rows(&model, attack.as_ref(), &x, &eps, &seeds);
        assert_eq!(flat(&again.x_adv), flat(&out.x_adv), "{name} is not reproducible");
        // A row's result depends on its own data and seed only, not on the other rows.
        let (single, _) =
            attack_rows(&model, attack.as_ref(), &x.narrow(0, 4, 1).unwrap(), &eps[4..5], &seeds[4..5]);
        let diff = max_abs_diff(&flat(&single.x_adv), &flat(&out.x_adv.narrow(0, 4, 1).unwrap()));
        assert!(diff <= 1e-6, "{name}: row 4 alone differs from row 4 in the batch by {diff}");
    }
}

#[test]
fn every_attack_reports_its_steps_in_order_without_changing_its_result() {
    let (model, x, eps, seeds) = setup();
    let targets = predict(&model, &x).unwrap();
    let restarted = Steered {
        objective: objective("top_k"),
        method: Arc::new(Gradient),
        settings: IterSettings { restarts: 1, ..short(3) },
    };
    let mut attacks = every_attack(4);
    attacks.push(Arc::new(restarted));
    for (i, attack) in attacks.iter().enumerate() {
        let name = attack.name();
        let steps = std::sync::Mutex::new(Vec::new());
        let record = |done: usize, total: usize| steps.lock().unwrap().push((done, total));
        let input = AttackInput {
            model: &model,
            x: &x,
            eps: &eps,
            targets: &targets,
            seeds: &seeds,
            clean: None,
            progress: Some(&record),
        };
        let out = attack.perturb(&input).unwrap();
        let steps = steps.into_inner().unwrap();
        // random_sign stops drawing once every row kept its label; the others run every step:
        // 4 iterations, or 2 starts × 3 for the restarted top_k.
        let want = match (name, i == attacks.len() - 1) {
            ("random_sign", _) => (1..=steps.len()).map(|d| (d, 5)).collect::<Vec<_>>(),
            (_, true) => (1..=6).map(|d| (d, 6)).collect(),
            _ => (1..=4).map(|d| (d, 4)).collect(),
        };
        assert!(!steps.is_empty(), "{name} reported no step");
        assert_eq!(steps, want, "{name}");
        let (quiet, _) = attack_rows(&model, attack.as_ref(), &x, &eps, &seeds);
        assert_eq!(flat(&quiet.x_adv), flat(&out.x_adv), "{name}: watching changed the result");
    }
}

#[test]
fn random_sign_steps_to_a_corner_of_the_ball() {
    let (model, x, eps, seeds) = setup();
    let (out, _) = attack_rows(&model, &RandomSign { tries: 5 }, &x, &eps, &seeds);
    // A random sign step moves every pixel by exactly ε unless clipped at 0 or 1.
    assert!(out.linf.iter().zip(&eps).all(|(l, e)| (l - e).abs() < 1e-6));
}

#[test]
fn restarts_patience_and_adam_keep_the_invariants() {
    // Restarts start from random points of the ball; patience stops stalled rows early; Adam
    // replaces the signed step. None of them may break the box or the label.
    let (model, x, eps, seeds) = setup();
    let settings = IterSettings { restarts: 2, patience: 2, optimizer: Optimizer::Adam, ..short(6) };
    let attack = Steered { objective: objective("top_k"), method: Arc::new(Gradient), settings };
    let (out, targets) = attack_rows(&model, &attack, &x, &eps, &seeds);
    check_invariants(&model, &x, &eps, &out, &targets, "top_k restarts");
    assert!(out.label_kept.iter().all(|&k| k));
    // Each row ran at most 3 starts × 6 iterations, and patience cut at least one start short.
    assert!(out.iterations.iter().all(|&i| i <= 18), "{:?}", out.iterations);
    assert!(out.iterations.iter().any(|&i| i < 18), "patience never stopped a row: {:?}", out.iterations);
    // A different seed gives different restarts.
    let other: Vec<u64> = seeds.iter().map(|s| s + 100).collect();
    let (moved, _) = attack_rows(&model, &attack, &x, &eps, &other);
    assert_ne!(flat(&moved.x_adv), flat(&out.x_adv));
}

/// The objective's measure (on the real model) of `method`'s maps of `x` against the clean
/// maps of `x0`, per row.
fn measures(
    model: &dyn Classifier,
    objective: &dyn Objective,
    method: &dyn Attribution,
    x0: &Tensor,
    x: &Tensor,
) -> Vec<f64> {
    let targets = predict(model, x0).unwrap();
    let norm = |x: &Tensor| -> Vec<Vec<f32>> {
        let s = saliency(&method.attribute(model, x, &targets, Activation::Exact).unwrap()).unwrap();
        s.flatten_from(1).unwrap().to_vec2::<f32>().unwrap().iter().map(|m| normalized(m)).collect()
    };
    let clean = norm(x0);
    let goal = objective
        .prepare(&PrepareContext { model, method, clean: &clean, h: 28, w: 28, device: model.device() })
        .unwrap();
    norm(x).iter().enumerate().map(|(r, m)| goal.measure(r, m)).collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn each_steered_attack_beats_the_random_walk_on_its_own_objective() {
    // On the shipped model, 6 test images at ε = 0.02 and 0.1 with the same budget (20
    // iterations of 0.1·ε; manipulate: 20 Adam steps): at each ε the steered attack must beat
    // the unsteered walk on its own measure — lower top-k mass, larger center distance, more
    // mass in the region, lower MSE to the target.
    let model = shipped_model();
    let set = shipped_images();
    let x1 = images(&set, &[0, 1, 2, 3, 4, 5]);
    let x = Tensor::cat(&[x1.clone(), x1], 0).unwrap();
    let eps: Vec<f32> = [0.02f32, 0.1].iter().flat_map(|&e| [e; 6]).collect();
    let seeds: Vec<u64> = (0..12).collect();
    let budget = IterSettings { iterations: 20, ..IterSettings::ghorbani() };
    let walk = RandomWalk { settings: budget };
    let (random, targets) = attack_rows(&model, &walk, &x, &eps, &seeds);
    check_invariants(&model, &x, &eps, &random, &targets, "random_walk");
    for name in ["top_k", "mass_center", "targeted", "manipulate"] {
        let settings = if name == "manipulate" {
            IterSettings { iterations: 20, ..IterSettings::dombrowski() }
        } else {
            budget
        };
        let obj = objective(name);
        let attack = Steered { objective: obj.clone(), method: Arc::new(Gradient), settings };
        let (steered, _) = attack_rows(&model, &attack, &x, &eps, &seeds);
        check_invariants(&model, &x, &eps, &steered, &targets, name);
        let r = measures(&model, obj.as_ref(), &Gradient, &x, &random.x_adv);
        let s = measures(&model, obj.as_ref(), &Gradient, &x, &steered.x_adv);
        for (e, rows) in [(0.02, 0..6), (0.1, 6..12)] {
            let (r, s) = (mean(&r[rows.clone()]), mean(&s[rows]));
            let steered_wins = match name {
                "mass_center" | "targeted" => s > r,
                _ => s < r,
            };
            assert!(steered_wins, "{name} at ε = {e}: steered {s:.4} vs random walk {r:.4}");
        }
    }
}

#[test]
fn objectives_have_hand_derived_losses_ranks_and_measures() {
    // 2×2 maps, row-major: index = 2·row + col.
    let model = random_model(1, DType::F32);
    let dev = candle_core::Device::Cpu;
    let prepare = |o: &dyn Objective, clean: Vec<Vec<f32>>| {
        o.prepare(&PrepareContext {
            model: &model,
            method: &Gradient,
            clean: &clean,
            h: 2,
            w: 2,
            device: &dev,
        })
        .unwrap()
    };
    let rows = Tensor::new(&[0u32], &dev).unwrap();
    let scalar = |t: Tensor| t.to_scalar::<f32>().unwrap();

    // top_k, k = 2: the clean map [0.1, 0.4, 0.2, 0.3] has top set {1, 3}. The map
    // [0.4, 0.1, 0.3, 0.2] has top set {0, 2}: intersection 0, mass on {1, 3} = 0.1 + 0.2.
    let g = prepare(&TopKObjective { k: Some(2) }, vec![vec![0.1, 0.4, 0.2, 0.3]]);
    let m = [0.4f32, 0.1, 0.3, 0.2];
    let (inter, mass) = g.rank(0, &m);
    assert_eq!(inter, 0.0);
    assert!((mass - 0.3).abs() < 1e-6 && (g.measure(0, &m) - 0.3).abs() < 1e-6);
    let s = Tensor::new(&[m], &dev).unwrap();
    assert!((scalar(g.loss(&s, &rows).unwrap()) - 0.3).abs() < 1e-6);

    // mass_center: clean [1, 0, 0, 0] has its center at (0, 0); [0, 0, 0, 1] at (1, 1):
    // distance √2; the loss is its negative, rank (−√2, 0).
    let g = prepare(&MassCenterObjective, vec![vec![1.0, 0.0, 0.0, 0.0]]);
    let m = [0.0f32, 0.0, 0.0, 1.0];
    assert!((g.measure(0, &m) - 2f64.sqrt()).abs() < 1e-9);
    assert!((g.rank(0, &m).0 + 2f64.sqrt()).abs() < 1e-9);
    let s = Tensor::new(&[m], &dev).unwrap();
    assert!((scalar(g.loss(&s, &rows).unwrap()) + 2f32.sqrt()).abs() < 1e-5);

    // targeted, region x ∈ [1, 2), y ∈ [0, 2): pixels 1 and 3. Map [0.1, 0.4, 0.2, 0.3]:
    // mass 0.7, loss −0.7.
    let region = Region::Rect { x0: 1, y0: 0, x1: 2, y1: 2 };
    let g = prepare(&TargetedObjective { region }, vec![vec![0.25; 4]]);
    let m = [0.1f32, 0.4, 0.2, 0.3];
    assert!((g.measure(0, &m) - 0.7).abs() < 1e-6);
    let s = Tensor::new(&[m], &dev).unwrap();
    assert!((scalar(g.loss(&s, &rows).unwrap()) + 0.7).abs() < 1e-6);

    // manipulate, target map [1, 1, 1, 1] → 0.25 each. The map [0.5, 0.5, 0, 0] scaled by
    // H·W = 4 is [2, 2, 0, 0] against [1, 1, 1, 1]: every squared difference is 1, MSE 1.
    let target = TargetMap::File { path: "t.npy".into(), data: vec![1.0; 4], h: 2, w: 2 };
    let g = prepare(&ManipulateObjective { target }, vec![vec![0.25; 4]]);
    let m = [0.5f32, 0.5, 0.0, 0.0];
    assert!((g.measure(0, &m) - 1.0).abs() < 1e-9);
    assert!((g.rank(0, &[0.25; 4]).0).abs() < 1e-12);
    let s = Tensor::new(&[m], &dev).unwrap();
    assert!((scalar(g.loss(&s, &rows).unwrap()) - 1.0).abs() < 1e-6);

    // A region that does not fit, or a target map of the wrong size, is an error.
    let off = Region::Rect { x0: 0, y0: 0, x1: 3, y1: 1 };
    assert!(TargetedObjective { region: off }
        .prepare(&PrepareContext {
            model: &model,
            method: &Gradient,
            clean: &[vec![0.25; 4]],
            h: 2,
            w: 2,
            device: &dev
        })
        .is_err());
}

/// Counts the images whose maps it computes (its own `attribute*` calls), around the gradient;
/// its stand-in for steering, if given, counts into its own counter.
struct Counting {
    images: std::sync::atomic::AtomicUsize,
    stand_in: Option<Arc<Counting>>,
}

impl Counting {
    fn new(stand_in: Option<Arc<Counting>>) -> Self {
        Self { images: 0.into(), stand_in }
    }
    fn count(&self, x: &Tensor) {
        self.images.fetch_add(x.dim(0).unwrap(), std::sync::atomic::Ordering::Relaxed);
    }
    fn images(&self) -> usize {
        self.images.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Attribution for Counting {
    fn name(&self) -> &str {
        "gradient"
    }
    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        t: &[u32],
        act: Activation,
    ) -> fragility::Result<Tensor> {
        self.count(x);
        Gradient.attribute(model, x, t, act)
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn differentiable(&self) -> bool {
        true
    }
    fn steering(&self) -> Option<Arc<dyn Attribution>> {
        self.stand_in.clone().map(|s| s as Arc<dyn Attribution>)
    }
}

/// A method with a steering stand-in (integrated gradients' `steer_steps`) is measured once,
/// on the clean images (the goal is set on its own map), and every step's direction and every
/// iterate's ranking use the stand-in.
#[test]
fn a_steering_stand_in_steers_and_ranks_every_iterate() {
    let (model, x, eps, seeds) = setup();
    let stand_in = Arc::new(Counting::new(None));
    let method = Arc::new(Counting::new(Some(stand_in.clone())));
    let attack = Steered { objective: objective("top_k"), method: method.clone(), settings: short(3) };
    let (out, targets) = attack_rows(&model, &attack, &x, &eps, &seeds);
    check_invariants(&model, &x, &eps, &out, &targets, "top_k with a stand-in");
    let rows = eps.len();
    assert_eq!(method.images(), rows, "the method itself: the clean maps only");
    // The stand-in: its clean maps, then per iteration one direction and one ranking map of
    // every row (no patience here).
    assert_eq!(stand_in.images(), rows + 3 * 2 * rows);
}

/// A study hands a steered attack its target method's clean maps from its first stage (the
/// images once, stacked at every ε): the attack then does not compute them again, and its
/// result is bit for bit the one it reaches computing them itself on the stacked rows.
#[test]
fn clean_maps_handed_to_an_attack_are_not_recomputed_and_change_nothing() {
    let (model, x, eps, seeds) = setup();
    let targets = predict(&model, &x).unwrap();
    let three = x.narrow(0, 0, 3).unwrap();
    let stand_in = Arc::new(Counting::new(None));
    for (name, method) in [
        ("integrated_gradients", fragility::attribution::by_name("integrated_gradients", 5).unwrap()),
        ("smoothgrad", fragility::attribution::by_name("smoothgrad", 5).unwrap()),
        ("deeplift", fragility::attribution::by_name("deeplift", 5).unwrap()),
    ] {
        let method: Arc<dyn Attribution> = Arc::from(method);
        let attr = method.attribute(&model, &three, &targets[..3], Activation::Exact).unwrap();
        let once = normalized_saliency(&attr).unwrap().flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
        let stacked: Vec<Vec<f32>> = once.iter().chain(&once).cloned().collect();
        let attack = Steered { objective: objective("top_k"), method, settings: short(3) };
        let computed = attack_rows(&model, &attack, &x, &eps, &seeds).0;
        let input = AttackInput {
            model: &model,
            x: &x,
            eps: &eps,
            targets: &targets,
            seeds: &seeds,
            clean: Some(&stacked),
            progress: None,
        };
        let handed = attack.perturb(&input).unwrap();
        assert_eq!(flat(&handed.x_adv), flat(&computed.x_adv), "{name}: a different perturbation");
        assert_eq!(handed.iterations, computed.iterations, "{name}");
        assert_eq!(handed.label_kept, computed.label_kept, "{name}");
    }
    // Not recomputed: a method with a stand-in is then never asked for a map at all.
    let method = Arc::new(Counting::new(Some(stand_in.clone())));
    let attack = Steered { objective: objective("top_k"), method: method.clone(), settings: short(2) };
    let given = vec![normalized(&vec![1.0; 28 * 28]); eps.len()];
    let input = AttackInput {
        model: &model,
        x: &x,
        eps: &eps,
        targets: &targets,
        seeds: &seeds,
        clean: Some(&given),
        progress: None,
    };
    attack.perturb(&input).unwrap();
    assert_eq!(method.images(), 0);
    assert_eq!(stand_in.images(), eps.len() + 2 * 2 * eps.len());
    // A count that does not fit the rows is an error, not a silent misalignment.
    let input = AttackInput { clean: Some(&given[..2]), ..input };
    assert!(attack.perturb(&input).is_err());
}

/// The chosen default (issue: steering through integrated gradients at gradient cost): an
/// attack on integrated gradients steers by 8 Gauss–Legendre points, recorded in its params;
/// `steer_steps = "full"` or a map of at most 8 points steers by the map itself, and the
/// method's own params never change with the setting.
#[test]
fn integrated_gradients_are_steered_by_eight_points_unless_the_config_asks_for_the_full_path() {
    let config = |ig: &str| {
        shipped_study(&format!(
            "[methods]\nnames = [\"integrated_gradients\"]\n{ig}\n[attacks]\nnames = [\"top_k\"]\nepsilons = [0.1]\ntarget_method = \"integrated_gradients\"\n"
        ))
    };
    let path = root().join("steer.toml"); // never read: `parse` takes the text
    let params = |ig: &str| {
        let plan = fragility::config::Plan::parse(&path, &config(ig)).unwrap();
        (plan.attacks()[0].params(), plan.methods()[0].params())
    };
    let (attack, method) = params("");
    assert_eq!(attack["steering"]["steps"], 8, "{attack}");
    assert_eq!(attack["steering"]["quadrature"], "gauss_legendre");
    assert_eq!(
        method,
        serde_json::json!({ "steps": 50, "quadrature": "gauss_legendre", "baseline": "zero" })
    );
    let (attack, m4) = params("integrated_gradients = { steer_steps = 4 }");
    assert_eq!((attack["steering"]["steps"].as_u64(), m4), (Some(4), method.clone()));
    for ig in [
        r#"integrated_gradients = { steer_steps = "full" }"#,
        "integrated_gradients = { steps = 8, quadrature = \"right_riemann\" }",
    ] {
        let (attack, _) = params(ig);
        assert!(attack.get("steering").is_none(), "{ig}: {attack}");
    }
}

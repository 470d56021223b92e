//! Throughput of every attribution method and attack step on the shipped model, on this CPU.
//!
//!     cargo bench --bench throughput            # all groups
//!     cargo bench --bench throughput -- attacks/    # one group (methods/, attacks/, matmul/)
//!
//! Figures are images (maps) per second at batch 64 and 256; the attacks group counts
//! image-iterations per second. Results are recorded in reports/bench/README.md.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fragility::attack::{
    Attack, AttackInput, IterSettings, ManipulateObjective, MassCenterObjective, Objective, RandomWalk,
    Region, Steered, TargetMap, TargetedObjective, TopKObjective,
};
use fragility::attribution::{
    by_name, Aggregate, Attribution, Gradient, IntegratedGradients, NoiseSettings, NoiseTunnel, METHOD_NAMES,
};
use fragility::data::load_images;
use fragility::model::{predict, Activation, Network};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn setup(batch: usize) -> (Network, Tensor, Vec<u32>) {
    fragility::alloc::tune();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model =
        fragility::model::fmnist_cnn::load(&root.join("assets/models/fmnist_cnn.safetensors"), &Device::Cpu)
            .unwrap();
    let set = load_images(&root.join("assets/fashion-mnist/t10k-images-1000-idx3-ubyte.gz")).unwrap();
    let x = Tensor::from_vec(set.data[..batch * 784].to_vec(), (batch, 1, 28, 28), &Device::Cpu).unwrap();
    let targets = predict(&model, &x).unwrap();
    (model, x, targets)
}

/// Batch sizes per method: 64 and 256 for the gradient-based methods; the perturbation
/// methods (thousands of forward passes per image) at smaller batches, to keep a run of the
/// whole bench within minutes.
fn batches(name: &str) -> &'static [usize] {
    match name {
        "occlusion" => &[64, 256],
        "lime" | "kernel_shap" => &[16],
        _ => &[64, 256],
    }
}

fn methods(c: &mut Criterion) {
    let mut group = c.benchmark_group("methods");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for batch in [64, 256] {
        let (model, x, _) = setup(batch);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new("forward", batch), |b| {
            b.iter(|| fragility::model::Classifier::logits(&model, &x, Activation::Exact).unwrap())
        });
    }
    for name in METHOD_NAMES {
        let m = by_name(name, 0).unwrap();
        for &batch in batches(name) {
            let (model, x, targets) = setup(batch);
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_function(BenchmarkId::new(name, batch), |b| {
                b.iter(|| m.attribute(&model, &x, &targets, Activation::Exact).unwrap())
            });
        }
    }
    group.finish();
}

/// One steered attack (or the walk) with `iterations` per call against `method`.
fn attack(name: &str, method: Arc<dyn Attribution>, iterations: u32) -> Arc<dyn Attack> {
    let settings = if name == "manipulate" {
        IterSettings { iterations, ..IterSettings::dombrowski() }
    } else {
        IterSettings { iterations, ..IterSettings::ghorbani() }
    };
    let objective: Arc<dyn Objective> = match name {
        "random_walk" => return Arc::new(RandomWalk { settings }),
        "top_k" => Arc::new(TopKObjective { k: Some(100) }),
        "mass_center" => Arc::new(MassCenterObjective),
        "targeted" => Arc::new(TargetedObjective { region: Region::Rect { x0: 0, y0: 0, x1: 10, y1: 10 } }),
        _ => {
            let pixels = setup(1).1;
            Arc::new(ManipulateObjective { target: TargetMap::Image { id: 0, pixels } })
        }
    };
    Arc::new(Steered { objective, method, settings })
}

/// Attack throughput in image-iterations per second: every attack against the gradient map,
/// and top_k against every attackable method, at batch 64 and 256 (integrated
/// gradients with 8 steps and SmoothGrad with 8 samples: their cost grows linearly with
/// either). Each call runs 2 iterations after computing the clean maps once, as in a run.
fn attacks(c: &mut Criterion) {
    let mut group = c.benchmark_group("attacks");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    let iterations = 2;
    let mut cases: Vec<(&str, Arc<dyn Attribution>, usize)> = Vec::new();
    for name in ["random_walk", "top_k", "mass_center", "targeted", "manipulate"] {
        for batch in [64, 256] {
            cases.push((name, Arc::new(Gradient), batch));
        }
    }
    let ig = IntegratedGradients { steps: 8, ..IntegratedGradients::default() };
    let sg = NoiseTunnel::new(
        Aggregate::Mean,
        NoiseSettings { samples: 8, ..NoiseSettings::default() },
        0,
        Arc::new(Gradient),
    );
    let others: Vec<Arc<dyn Attribution>> = vec![
        Arc::from(by_name("gradient_x_input", 0).unwrap()),
        Arc::new(ig),
        Arc::new(sg),
        Arc::from(by_name("guided_backprop", 0).unwrap()),
        Arc::from(by_name("deeplift", 0).unwrap()),
        Arc::from(by_name("grad_cam", 0).unwrap()),
    ];
    for m in others {
        for batch in [64, 256] {
            cases.push(("top_k", m.clone(), batch));
        }
    }
    for (name, method, batch) in cases {
        let (model, x, targets) = setup(batch);
        let eps = vec![0.05f32; batch];
        let seeds: Vec<u64> = (0..batch as u64).collect();
        let a = attack(name, method.clone(), iterations);
        group.throughput(Throughput::Elements((batch * iterations as usize) as u64));
        let id = if name == "random_walk" { name.to_string() } else { format!("{name}/{}", method.name()) };
        group.bench_function(BenchmarkId::new(id, batch), |b| {
            b.iter(|| {
                let input = AttackInput {
                    model: &model,
                    x: &x,
                    eps: &eps,
                    targets: &targets,
                    seeds: &seeds,
                    clean: None,
                    progress: None,
                };
                a.perturb(&input).unwrap()
            })
        });
    }
    group.finish();
}

/// The machine's matrix-multiply rate, the ceiling the methods' figures are compared with:
/// FLOP/s (criterion's elem/s) of candle's f32 matmul (the `gemm` crate our kernels call, on
/// all rayon threads) at 1024³, and at conv2's per-image shape, [64, 288]·[288, 196].
fn matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for (m, k, n) in [(1024, 1024, 1024), (64, 288, 196)] {
        let a = Tensor::rand(0f32, 1f32, (m, k), &Device::Cpu).unwrap();
        let b = Tensor::rand(0f32, 1f32, (k, n), &Device::Cpu).unwrap();
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.bench_function(BenchmarkId::new("f32", format!("{m}x{k}x{n}")), |bench| {
            bench.iter(|| a.matmul(&b).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, methods, attacks, matmul);
criterion_main!(benches);

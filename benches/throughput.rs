//! Throughput of every attribution method and attack step on the shipped model, on this CPU.
//!
//!     cargo bench --bench throughput            # all groups
//!     cargo bench --bench throughput -- topk    # one group
//!
//! Figures are images (maps) per second at batch 64 and 256; the attack group counts
//! image-iterations per second. Results are recorded in reports/bench/README.md.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fragility::attack::{Attack, AttackInput, TopK, TopKSettings};
use fragility::attribution::{by_name, Gradient, METHOD_NAMES};
use fragility::data::load_images;
use fragility::model::{predict, Activation, FmnistCnn};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn setup(batch: usize) -> (FmnistCnn, Tensor, Vec<u32>) {
    fragility::alloc::tune();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = FmnistCnn::load(&root.join("assets/models/fmnist_cnn.safetensors"), &Device::Cpu).unwrap();
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
        "occlusion" => &[64],
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
            b.iter(|| fragility::model::Classifier::logits(&model, &x, Activation::Relu).unwrap())
        });
    }
    for name in METHOD_NAMES {
        let m = by_name(name, 0).unwrap();
        for &batch in batches(name) {
            let (model, x, targets) = setup(batch);
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_function(BenchmarkId::new(name, batch), |b| {
                b.iter(|| m.attribute(&model, &x, &targets, Activation::Relu).unwrap())
            });
        }
    }
    group.finish();
}

fn topk(c: &mut Criterion) {
    let mut group = c.benchmark_group("topk");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for batch in [64, 256] {
        let (model, x, targets) = setup(batch);
        let eps = vec![0.05f32; batch];
        let seeds: Vec<u64> = (0..batch as u64).collect();
        // 5 iterations per call; throughput in image-iterations (the clean map is computed once
        // per call, as in a run).
        let iterations = 5;
        let attack = TopK {
            settings: TopKSettings { iterations, ..TopKSettings::default() },
            method: Arc::new(Gradient),
        };
        group.throughput(Throughput::Elements((batch * iterations as usize) as u64));
        group.bench_function(BenchmarkId::new("top_k_gradient", batch), |b| {
            b.iter(|| {
                let input = AttackInput { model: &model, x: &x, eps: &eps, targets: &targets, seeds: &seeds };
                attack.perturb(&input).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, methods, topk);
criterion_main!(benches);

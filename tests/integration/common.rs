//! Shared fixtures: models with fixed weights, the shipped images, temporary folders.

use candle_core::{DType, Device, Tensor};
use fragility::data::{load_images, load_labels, ImageSet};
use fragility::model::Network;
use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn shipped_weights() -> PathBuf {
    root().join("assets/models/fmnist_cnn.safetensors")
}

/// The shipped 1,000 Fashion-MNIST test images with labels.
pub fn shipped_images() -> ImageSet {
    let dir = root().join("assets/fashion-mnist");
    let labels = load_labels(&dir.join("t10k-labels-1000-idx1-ubyte.gz")).unwrap();
    load_images(&dir.join("t10k-images-1000-idx3-ubyte.gz"))
        .unwrap()
        .with_labels(labels, Path::new("labels"))
        .unwrap()
}

/// A study config of the shipped CNN on the shipped test images (`out = "out"`, every image,
/// `correct_only = false`), then `rest` (its `[methods]` and `[attacks]` tables): for tests
/// that parse a plan from text (`Plan::parse` never reads the config's own path).
pub fn shipped_study(rest: &str) -> String {
    let images = root().join("assets/fashion-mnist/t10k-images-1000-idx3-ubyte.gz");
    format!(
        "out = \"out\"\n[model]\nname = \"fmnist_cnn\"\nweights = {:?}\n[data]\nimages = {:?}\ncorrect_only = false\n{rest}",
        shipped_weights().display().to_string(),
        images.display().to_string(),
    )
}

/// The shipped trained model.
pub fn shipped_model() -> Network {
    fragility::model::fmnist_cnn::load(&shipped_weights(), &Device::Cpu).unwrap()
}

/// fmnist_cnn with PyTorch-default random weights from `seed`, in `dtype`.
pub fn random_model(seed: u64, dtype: DType) -> Network {
    let vars = fragility::train::init_vars(seed, &Device::Cpu).unwrap();
    let t: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().detach().to_dtype(dtype).unwrap()).collect();
    fragility::model::fmnist_cnn::new(
        t[0].clone(),
        t[1].clone(),
        t[2].clone(),
        t[3].clone(),
        t[4].clone(),
        t[5].clone(),
        t[6].clone(),
        t[7].clone(),
    )
    .unwrap()
}

/// Images `ids` of `set` as a [B,1,28,28] tensor.
pub fn images(set: &ImageSet, ids: &[usize]) -> Tensor {
    fragility::run::batch_tensor(set, ids, &Device::Cpu).unwrap()
}

pub fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn max_abs(a: &[f32]) -> f32 {
    a.iter().map(|x| x.abs()).fold(0.0, f32::max)
}

/// Pearson correlation in f64.
pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().map(|&x| x as f64).sum::<f64>() / n;
    let mb = b.iter().map(|&x| x as f64).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa * sbb).sqrt()
}

/// A reproducible tensor of `shape` with entries uniform in [lo, hi) (f64), from `seed`.
pub fn seeded_uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Tensor {
    use rand::Rng;
    let mut rng = fragility::seed::rng(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Runs the fragility binary with `args` in `cwd` and kills it (SIGKILL) as soon as `file`
/// exists: an interrupted study, for the resume tests.
pub fn killed_once_written(args: &[&str], cwd: &std::path::Path, file: &std::path::Path) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fragility"))
        .args(args)
        .current_dir(cwd)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !file.exists() {
        assert!(t.elapsed().as_secs() < 120, "{} not written", file.display());
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

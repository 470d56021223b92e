//! `fragility train`: trains `fmnist_cnn` on Fashion-MNIST with candle.
//!
//! Adam (β = 0.9, 0.999, no weight decay) on the cross-entropy of the logits, PyTorch's default
//! initialisation (weights and biases U(−1/√fan_in, 1/√fan_in)), mini-batches reshuffled every
//! epoch; every random choice comes from the config's seed. `labels = "permuted"` trains on
//! the training labels permuted over the images (Adebayo et al.'s data-randomisation test).
//! The weights are saved as safetensors with PyTorch's names, and a JSON file beside them
//! records the test accuracy, the seed, the settings and the time.

use crate::data::{load_images, load_labels, ImageSet};
use crate::error::{Error, Result};
use crate::model::{Activation, Classifier, Network, PARAM_SHAPES};
use crate::run::{batch_tensor, predict_all, progress_bar};
use crate::seed;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Training settings (`configs/train_fmnist.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Seed of the initialisation and the shuffling.
    #[serde(default)]
    pub seed: u64,
    /// Folder with the four Fashion-MNIST idx files (gzip or raw).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Passes over the 60,000 training images.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Images per Adam step.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Adam learning rate.
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    /// Where to write the weights (relative to the config file's folder).
    pub out: PathBuf,
    /// "cpu", "cuda" or "auto".
    #[serde(default = "default_device")]
    pub device: String,
    /// The training labels as given, or permuted (Adebayo et al.'s data-randomisation test:
    /// a model that can only memorise, whose maps a faithful method must tell apart).
    #[serde(default)]
    pub labels: TrainLabels,
}

/// Which labels the model is trained on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainLabels {
    /// The dataset's labels.
    #[default]
    Original,
    /// The dataset's labels randomly permuted over the images (seeded by `seed`): the label
    /// counts stay, any link between image and label is gone.
    Permuted,
}

/// The labels `fit` trains on: `labels`, or a seeded permutation of them.
pub fn training_labels(labels: &[i64], how: TrainLabels, seed_value: u64) -> Vec<i64> {
    let mut out = labels.to_vec();
    if how == TrainLabels::Permuted {
        out.shuffle(&mut seed::rng(seed::derive(seed_value, &[3])));
    }
    out
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/usr/share/datasets/fashion-mnist")
}
fn default_epochs() -> usize {
    3
}
fn default_batch() -> usize {
    64
}
fn default_lr() -> f64 {
    1e-3
}
fn default_device() -> String {
    "cpu".into()
}

impl TrainConfig {
    /// Reads and validates a training config; relative paths resolve against its folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::config::read_config_text(path)?;
        let mut cfg: TrainConfig = toml::from_str(&text).map_err(|e| Error::Config {
            file: path.to_path_buf(),
            line: e.span().map(|s| crate::config::line_of(&text, s.start)),
            message: e.message().trim_end().to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        cfg.out = base.join(&cfg.out);
        cfg.data_dir = base.join(&cfg.data_dir);
        let bad = |m: &str| Error::Config { file: path.to_path_buf(), line: None, message: m.to_string() };
        if cfg.epochs == 0 || cfg.batch_size == 0 {
            return Err(bad("fields `epochs` and `batch_size` must be at least 1"));
        }
        if !(cfg.learning_rate > 0.0 && cfg.learning_rate.is_finite()) {
            return Err(bad("field `learning_rate` must be a finite number > 0"));
        }
        Ok(cfg)
    }
}

/// Loads one split (`train` or `t10k`) of Fashion-MNIST from `dir`, accepting `.gz` or raw files.
pub fn load_split(dir: &Path, split: &str) -> Result<ImageSet> {
    let find = |stem: &str| -> Result<PathBuf> {
        for name in [format!("{stem}.gz"), stem.to_string()] {
            let p = dir.join(name);
            if p.exists() {
                return Ok(p);
            }
        }
        Err(Error::data(
            dir.join(format!("{stem}.gz")),
            "Fashion-MNIST file not found (install Debian's dataset-fashion-mnist package, or set `data_dir`)",
        ))
    };
    let images = find(&format!("{split}-images-idx3-ubyte"))?;
    let labels = find(&format!("{split}-labels-idx1-ubyte"))?;
    load_images(&images)?.with_labels(load_labels(&labels)?, &labels)
}

/// A freshly initialised model (PyTorch's default init) as trainable variables.
pub fn init_vars(seed_value: u64, device: &Device) -> Result<Vec<Var>> {
    let mut rng = seed::rng(seed_value);
    PARAM_SHAPES
        .iter()
        .enumerate()
        .map(|(i, (_, shape))| {
            // fan_in of the layer this tensor belongs to (weights come before their biases).
            let w_shape = PARAM_SHAPES[i - i % 2].1;
            let fan_in: usize = w_shape[1..].iter().product();
            let bound = 1.0 / (fan_in as f64).sqrt();
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound) as f32).collect();
            Ok(Var::from_tensor(&Tensor::from_vec(v, *shape, device)?)?)
        })
        .collect()
}

fn model_of(vars: &[Var]) -> Result<Network> {
    let t: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    crate::model::fmnist_cnn::new(
        t[0].clone(),
        t[1].clone(),
        t[2].clone(),
        t[3].clone(),
        t[4].clone(),
        t[5].clone(),
        t[6].clone(),
        t[7].clone(),
    )
}

/// Runs `steps` Adam steps (or `epochs` full passes when `steps` is None) over `train` and
/// returns the trained model and the loss of every step.
pub fn fit(
    cfg: &TrainConfig,
    train: &ImageSet,
    device: &Device,
    steps: Option<usize>,
    progress: bool,
) -> Result<(Network, Vec<f32>)> {
    let labels = train.labels.as_ref().ok_or_else(|| Error::Invalid("training images need labels".into()))?;
    let labels = training_labels(labels, cfg.labels, cfg.seed);
    let vars = init_vars(seed::derive(cfg.seed, &[1]), device)?;
    let model = model_of(&vars)?;
    let params = ParamsAdamW { lr: cfg.learning_rate, weight_decay: 0.0, ..Default::default() };
    let mut opt = AdamW::new(vars.clone(), params)?;
    let per_epoch = train.n.div_ceil(cfg.batch_size);
    let total = steps.unwrap_or(per_epoch * cfg.epochs);
    let bar = progress_bar(progress, total as u64);
    let mut rng = seed::rng(seed::derive(cfg.seed, &[2]));
    let mut order: Vec<usize> = (0..train.n).collect();
    let mut losses = Vec::with_capacity(total);
    let mut step = 0;
    'epochs: for epoch in 0.. {
        order.shuffle(&mut rng);
        for batch in order.chunks(cfg.batch_size) {
            if step == total {
                break 'epochs;
            }
            let x = batch_tensor(train, batch, device)?;
            let y: Vec<u32> = batch.iter().map(|&i| labels[i] as u32).collect();
            let y = Tensor::from_vec(y, batch.len(), device)?;
            let logits = model.logits(&x, Activation::Exact)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            opt.backward_step(&loss)?;
            let l = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            losses.push(l);
            step += 1;
            bar.inc(1);
            if step % 50 == 0 {
                bar.set_message(format!("epoch {} loss {l:.4}", epoch + 1));
            }
        }
    }
    bar.finish_and_clear();
    let detached: Vec<Var> =
        vars.iter().map(|v| Var::from_tensor(&v.as_tensor().detach())).collect::<candle_core::Result<_>>()?;
    Ok((model_of(&detached)?, losses))
}

/// Share of `set`'s images that `model` classifies correctly.
pub fn accuracy(model: &dyn Classifier, set: &ImageSet, device: &Device) -> Result<f64> {
    let labels = set.labels.as_ref().ok_or_else(|| Error::Invalid("accuracy needs labels".into()))?;
    let (preds, _) = predict_all(model, set, device)?;
    let correct = preds.iter().zip(labels).filter(|(p, l)| **p as i64 == **l).count();
    Ok(correct as f64 / set.n.max(1) as f64)
}

/// `fragility train CONFIG`: trains, evaluates on the test split, writes the weights and a
/// JSON record beside them (`<weights>.json`). Returns the test accuracy.
pub fn train_command(config: &Path, progress: bool) -> Result<f64> {
    let cfg = TrainConfig::load(config)?;
    let device = crate::device::resolve(&cfg.device)?;
    let train = load_split(&cfg.data_dir, "train")?;
    let test = load_split(&cfg.data_dir, "t10k")?;
    let t0 = Instant::now();
    let (model, losses) = fit(&cfg, &train, &device, None, progress)?;
    let seconds = t0.elapsed().as_secs_f64();
    let acc = accuracy(&model, &test, &device)?;
    crate::model::fmnist_cnn::save(&model, &cfg.out)?;
    let record = serde_json::json!({
        "model": "fmnist_cnn",
        "test_accuracy": acc,
        "test_images": test.n,
        "train_images": train.n,
        "seed": cfg.seed,
        "settings": cfg,
        "final_loss_mean_last_100_steps": losses.iter().rev().take(100).sum::<f32>() / losses.len().clamp(1, 100) as f32,
        "train_seconds": seconds,
        "threads": candle_core::utils::get_num_threads(),
        "command": format!("fragility train {}", config.display()),
        "fragility_version": env!("CARGO_PKG_VERSION"),
    });
    let json_path = cfg.out.with_extension("json");
    let text = serde_json::to_string_pretty(&record).map_err(|e| Error::Invalid(e.to_string()))?;
    crate::atomic::write_bytes(&json_path, text.as_bytes())?;
    let trained_on = match cfg.labels {
        TrainLabels::Original => "",
        TrainLabels::Permuted => " (trained on permuted labels)",
    };
    println!(
        "test accuracy {:.2}%{trained_on} on {} images; seed {}; {:.0} s; weights {}",
        100.0 * acc,
        test.n,
        cfg.seed,
        seconds,
        cfg.out.display()
    );
    Ok(acc)
}

//! Throughput of torchvision architectures (resnet18, resnet50, squeezenet1_1 by default;
//! efficientnet_b0, mobilenet_v3_large and convnext_tiny with `--models`) at 224×224 on this
//! CPU: the counterpart of `benches/pytorch_models.py`, run on the same
//! machine with the same number of threads.
//!
//!     RAYON_NUM_THREADS=2 cargo bench --profile dev --bench models -- --json /tmp/models.json
//!     RAYON_NUM_THREADS=2 cargo bench --bench models       # release profile (a cold build)
//!     # smoke test (seconds):
//!     cargo bench --profile dev --bench models -- --size 64 --batches 1 --reps 1 --models resnet18
//!
//! Models: 3 channels, 1000 classes, random weights (see [`randomize`]), ImageNet
//! normalisation as the model's first node, loaded through [`fragility::model::load`] from a
//! safetensors file, as the command line loads them. Images: seeded uniform pixels in [0,1];
//! targets: the model's own predictions. Workloads, each at every batch size (default 16, 8):
//!
//! * `forward`: the logits (ReLU model), in images per second, with GFLOP/s from the
//!   published multiply–accumulate counts ([`PUBLISHED_GMAC`]);
//! * `gradient`, `integrated_gradients` (50 Gauss–Legendre steps, zero baseline: the crate's
//!   default) and `grad_cam` (the model's default layer: `layer4`, `features.12`), through
//!   [`by_name`], in maps per second;
//! * `top_k`: one [`Steered`] top-k attack (k = 1000) against the gradient map, a few
//!   iterations per call after the clean maps, as `benches/throughput.rs` times it, in
//!   image-iterations per second;
//! * not by default: the rest of the CAM family (`grad_cam_plus_plus`, ... against
//!   pytorch-grad-cam on the PyTorch side) and LRP's composites (`lrp_epsilon_plus_flat`, ...
//!   against zennit), in maps per second.
//!
//! `--save-weights DIR` keeps the weights as PyTorch state_dicts, so that
//! `benches/pytorch_models.py --weights-dir DIR` runs the very same network (both JSON files
//! then hold the same logits of a grey image, to float rounding).
//!
//! Each workload runs `--warmup` times untimed, then `--reps` times (default 3); the table
//! shows the best repetition and the median. Threads: rayon's pool (`RAYON_NUM_THREADS`, which
//! candle reads too). Peak RSS is `VmHWM` from /proc/self/status, reset before each workload
//! through /proc/self/clear_refs where the kernel allows it (the JSON says whether it did).
//! Options: `--help`.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use fragility::attack::{Attack, AttackInput, IterSettings, Steered, TopKObjective};
use fragility::attribution::{by_name, Attribution, Gradient, IntegratedGradients};
use fragility::model::weights::Weights;
use fragility::model::{predict, zoo, Activation, Classifier, Normalize, Op, Shape};
use fragility::seed;
use rand::Rng;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Multiply–accumulates (GMAC) per 224×224 image of the convolutions and linear layers, as
/// published: 1.82 / 4.11 / 0.35 are the counts of the `ptflops` / `fvcore`-style counters
/// for torchvision's models (torchvision's model docs list the same quantity, 1.81 / 4.09 /
/// 0.35, in a column headed "GFLOPS"). One MAC is 2 FLOP. At other sizes they are scaled by
/// our own count of conv and linear MACs ([`count_gmac`]), which the table prints beside them.
///
/// The newer families, from torchvision's model docs ("GFLOPS", the same quantity):
/// efficientnet_b0 0.39, mobilenet_v3_large 0.22, convnext_tiny 4.46, vgg11 7.61.
const PUBLISHED_GMAC: [(&str, f64); 7] = [
    ("resnet18", 1.82),
    ("resnet50", 4.11),
    ("squeezenet1_1", 0.35),
    ("efficientnet_b0", 0.39),
    ("mobilenet_v3_large", 0.22),
    ("convnext_tiny", 4.46),
    ("vgg11", 7.61),
];

const ALL_METHODS: [&str; 17] = [
    "forward",
    "gradient",
    "integrated_gradients",
    "grad_cam",
    "top_k",
    "grad_cam_plus_plus",
    "xgrad_cam",
    "hires_cam",
    "layer_cam",
    "score_cam",
    "eigen_cam",
    "ablation_cam",
    "lrp_epsilon_plus",
    "lrp_epsilon_plus_flat",
    "lrp_epsilon_gamma_box",
    "lrp_epsilon_alpha2_beta1",
    "lrp_epsilon_alpha2_beta1_flat",
];

/// Throughput of torchvision architectures at 224×224 (see the file's docs).
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Architectures, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "resnet18,resnet50,squeezenet1_1")]
    models: Vec<String>,
    /// Workloads, comma-separated (forward, gradient, integrated_gradients, grad_cam, top_k;
    /// also the rest of the CAM family and LRP's composites, e.g. lrp_epsilon_plus_flat).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "forward,gradient,integrated_gradients,grad_cam,top_k"
    )]
    methods: Vec<String>,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,8")]
    batches: Vec<usize>,
    /// Timed repetitions per workload.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Untimed runs before the repetitions.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Integrated-gradients steps (Gauss–Legendre).
    #[arg(long, default_value_t = 50)]
    ig_steps: usize,
    /// top_k attack: iterations per timed call (after the clean maps).
    #[arg(long, default_value_t = 2)]
    attack_iterations: u32,
    /// top_k attack: size of the clean map's top set.
    #[arg(long, default_value_t = 1000)]
    k: usize,
    /// top_k attack: L∞ budget on the [0,1] pixel scale.
    #[arg(long, default_value_t = 0.05)]
    eps: f32,
    /// Seed of the weights and the images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write every figure to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep each model's random weights as DIR/<model>.safetensors (a PyTorch state_dict;
    /// `benches/pytorch_models.py --weights-dir DIR` loads them), instead of a temporary file.
    #[arg(long, value_name = "DIR")]
    save_weights: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One measured workload.
#[derive(serde::Serialize)]
struct Row {
    model: String,
    method: String,
    batch: usize,
    unit: &'static str,
    /// Images (or image-iterations) per call.
    work: usize,
    best_per_s: f64,
    median_per_s: f64,
    seconds: Vec<f64>,
    /// Forward only: 2 × MAC per image × best images/s.
    gflops_best: Option<f64>,
    /// Peak resident memory of the process during the workload (MB).
    peak_rss_mb: Option<f64>,
}

/// Replaces every floating tensor of a synthesized `state_dict` with seeded random values,
/// each tensor from its own stream (seed, key), so that activations resemble a trained
/// network's rather than the zeros `Weights::synthesize` makes:
///
/// * conv and linear weights, and their biases: U(±1/√fan_in), fan_in = the product of the
///   weight's dimensions after the first (PyTorch's default init of `Conv2d` and `Linear`);
/// * batch norm: γ = 1 + U(±0.1), β = U(±0.1), running mean U(±0.1), running variance
///   1 + U(0, 0.1);
/// * layer norm (a one-dimensional `weight` with no running statistics): γ = 1 + U(±0.1),
///   β = U(±0.1); ConvNeXt's `layer_scale` U(0.5, 1) (torchvision's 1e-6 would make every
///   block the identity).
///
/// Integer tensors (batch counters) are kept. `benches/pytorch_models.py` applies the same
/// rule to torchvision's modules.
fn randomize(dict: HashMap<String, Tensor>, seed_: u64) -> Result<HashMap<String, Tensor>> {
    let fan_in = |key: &str| -> Option<usize> {
        let w = dict.get(key)?;
        (w.rank() >= 2).then(|| w.dims()[1..].iter().product())
    };
    let mut out = HashMap::with_capacity(dict.len());
    for (key, t) in &dict {
        if !t.dtype().is_float() {
            out.insert(key.clone(), t.clone());
            continue;
        }
        let (prefix, leaf) = key.rsplit_once('.').unwrap_or(("", key.as_str()));
        let batch_norm = dict.contains_key(&format!("{prefix}.running_var"));
        // A one-dimensional weight without statistics: a layer norm's γ (its β beside it).
        let layer_norm = !batch_norm && dict.get(&format!("{prefix}.weight")).is_some_and(|w| w.rank() == 1);
        let (lo, hi) = match leaf {
            "running_mean" => (-0.1, 0.1),
            "running_var" => (1.0, 1.1),
            "weight" if batch_norm || layer_norm => (0.9, 1.1),
            "bias" if batch_norm || layer_norm => (-0.1, 0.1),
            "layer_scale" => (0.5, 1.0),
            "weight" | "bias" => {
                let n = fan_in(&format!("{prefix}.weight"))
                    .with_context(|| format!("`{key}`: no conv or linear weight to take fan_in from"))?;
                let b = 1.0 / (n as f32).sqrt();
                (-b, b)
            }
            _ => bail!("`{key}`: no rule for this tensor"),
        };
        let mut rng = seed::rng(seed::derive(seed_, &[seed::hash_str(key)]));
        let v: Vec<f32> = (0..t.elem_count()).map(|_| rng.random_range(lo..hi)).collect();
        out.insert(key.clone(), Tensor::from_vec(v, t.dims(), t.device())?);
    }
    Ok(out)
}

/// Multiply–accumulates of the convolutions and linear layers of `graph` per image at
/// `hw`, in GMAC.
fn count_gmac(graph: &fragility::model::Graph, hw: (usize, usize)) -> Result<f64> {
    let shapes = graph.shapes(hw)?;
    let mut macs = 0usize;
    for (node, shape) in graph.nodes().iter().zip(&shapes) {
        macs += match (&node.op, shape) {
            (Op::Conv(c), Shape::Map(..)) => shape.len() * c.weight.dims()[1..].iter().product::<usize>(),
            (Op::Linear(l), _) => l.weight.elem_count(),
            _ => 0,
        };
    }
    Ok(macs as f64 / 1e9)
}

/// The model `name` with random weights (3 channels, 1000 classes) and ImageNet
/// normalisation, loaded from a safetensors file (in `keep`, else a temporary folder) through
/// the crate's loading path; with its conv + linear GMAC per image at `hw` and at 224×224.
fn build(
    name: &str,
    seed_: u64,
    hw: (usize, usize),
    keep: Option<&std::path::Path>,
) -> Result<(Arc<dyn Classifier>, f64, f64)> {
    if fragility::model::is_onnx(name) {
        // An ONNX export (any weights): the import's speed against the same architecture's
        // build, e.g. `--models resnet18,/tmp/resnet18.onnx`.
        let m = fragility::model::onnx::load(std::path::Path::new(name), Some(hw))?;
        let (at_size, at_224) = (count_gmac(&m.graph, hw)?, count_gmac(&m.graph, (224, 224))?);
        let model = fragility::model::load_sized(
            name,
            std::path::Path::new(name),
            Some(&Normalize::imagenet()),
            &Device::Cpu,
            Some(hw),
        )?;
        return Ok((model, at_size, at_224));
    }
    let arch = zoo::architecture(name).with_context(|| format!("unknown architecture `{name}`"))?;
    let mut w = Weights::synthesize(1000, 3, &Device::Cpu);
    (arch.build)(&mut w)?;
    let dict = randomize(w.into_state_dict(), seed::derive(seed_, &[seed::hash_str(name)]))?;
    let (at_size, at_224) = {
        let graph = arch.load(Weights::from_tensors(dict.clone(), name))?;
        (count_gmac(&graph, hw)?, count_gmac(&graph, (224, 224))?)
    };
    let tmp = tempfile::tempdir()?;
    let dir = match keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
        None => tmp.path(),
    };
    let path = dir.join(format!("{name}.safetensors"));
    candle_core::safetensors::save(&dict, &path)?;
    drop(dict);
    let model = fragility::model::load(name, &path, Some(&Normalize::imagenet()), &Device::Cpu)?;
    Ok((model, at_size, at_224))
}

/// `b` images [b,3,s,s] of seeded uniform pixels in [0,1]; image i depends on (seed, i)
/// only, so a smaller batch is a prefix of a larger one.
fn images(b: usize, s: usize, seed_: u64) -> Result<Tensor> {
    let per = 3 * s * s;
    let mut v = Vec::with_capacity(b * per);
    for i in 0..b {
        let mut rng = seed::rng(seed::derive(seed_, &[seed::hash_str("image"), i as u64]));
        v.extend((0..per).map(|_| rng.random_range(0.0f32..=1.0)));
    }
    Ok(Tensor::from_vec(v, (b, 3, s, s), &Device::Cpu)?)
}

/// Hands freed heap memory back to the kernel (which [`fragility::alloc::tune`] otherwise
/// keeps for reuse), then resets the process's peak RSS (`VmHWM`) to the resident memory
/// now; whether the kernel allowed the reset. So each workload's peak is its own, not the
/// previous model's.
fn reset_peak_rss() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of glibc's arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process's peak RSS (`VmHWM`) in MB, where /proc has it.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs `f` `warmup` times, then `reps` times timed: the seconds of each timed run.
fn timed(warmup: usize, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f()?;
            Ok(t.elapsed().as_secs_f64())
        })
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The timed call of workload `method` on `x` [b,3,s,s]: (the call, work per call).
#[allow(clippy::type_complexity)]
fn workload<'a>(
    args: &'a Args,
    method: &str,
    model: &'a dyn Classifier,
    x: &'a Tensor,
    targets: &'a [u32],
) -> Result<(Box<dyn FnMut() -> Result<()> + 'a>, usize)> {
    let b = x.dim(0)?;
    Ok(match method {
        "forward" => (Box::new(move || Ok(model.logits(x, Activation::Exact).map(drop)?)), b),
        "top_k" => {
            let pixels = x.dim(2)? * x.dim(3)?;
            let attack = Steered {
                objective: Arc::new(TopKObjective { k: Some(args.k.min(pixels)) }),
                method: Arc::new(Gradient),
                settings: IterSettings { iterations: args.attack_iterations, ..IterSettings::ghorbani() },
            };
            let eps = vec![args.eps; b];
            let seeds: Vec<u64> = (0..b as u64).collect();
            let call = move || {
                let input =
                    AttackInput { model, x, eps: &eps, targets, seeds: &seeds, clean: None, progress: None };
                attack.perturb(&input).map(drop)?;
                Ok(())
            };
            (Box::new(call), b * args.attack_iterations as usize)
        }
        name => {
            let m: Box<dyn Attribution> = if name == "integrated_gradients" {
                Box::new(IntegratedGradients { steps: args.ig_steps, ..IntegratedGradients::default() })
            } else {
                by_name(name, args.seed).with_context(|| format!("unknown method `{name}`"))?
            };
            m.check(model)?;
            (Box::new(move || Ok(m.attribute(model, x, targets, Activation::Exact).map(drop)?)), b)
        }
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    fragility::alloc::tune();
    for m in &args.methods {
        if !ALL_METHODS.contains(&m.as_str()) {
            bail!("unknown workload `{m}` (known: {})", ALL_METHODS.join(", "));
        }
    }
    if args.batches.is_empty() || args.batches.contains(&0) || args.reps == 0 {
        bail!("--batches must be positive and --reps at least 1");
    }
    let threads = rayon::current_num_threads();
    let s = args.size;
    let profile = if cfg!(debug_assertions) { "dev" } else { "release" };
    eprintln!(
        "models: {} at {s}×{s}, batches {:?}, {} reps after {} warm-up; {threads} rayon threads, \
         candle {} threads; {profile} profile",
        args.models.join(", "),
        args.batches,
        args.reps,
        args.warmup,
        candle_core::utils::get_num_threads(),
    );
    let x_all = images(*args.batches.iter().max().unwrap(), s, args.seed)?;
    let mut rows: Vec<Row> = Vec::new();
    let mut model_info = Vec::new();
    let mut rss_reset = true;
    for name in &args.models {
        let t = Instant::now();
        let (model, gmac_size, gmac_224) = build(name, args.seed, (s, s), args.save_weights.as_deref())?;
        // A cross-check for shared weights: the logits of a uniformly grey image.
        let grey = Tensor::full(0.5f32, (1, 3, s, s), &Device::Cpu)?;
        let grey: Vec<f32> = model.logits(&grey, Activation::Exact)?.flatten_all()?.to_vec1()?;
        let grey_argmax = (0..grey.len()).max_by(|&i, &j| grey[i].total_cmp(&grey[j]));
        let published = PUBLISHED_GMAC.iter().find(|(n, _)| n == name).map(|p| p.1);
        // Published count at 224, scaled by our own count elsewhere; our count where none.
        let gmac = published.map_or(gmac_size, |p| p * gmac_size / gmac_224);
        eprintln!(
            "{name}: built in {:.1} s; conv+linear {gmac_224:.3} GMAC at 224 (published {}), \
             {gmac:.3} GMAC per image used at {s}",
            t.elapsed().as_secs_f64(),
            published.map_or("—".into(), |p| format!("{p}")),
        );
        model_info.push(serde_json::json!({
            "model": name, "gmac_published_224": published, "gmac_counted_224": gmac_224,
            "gmac_counted": gmac_size, "gmac_used": gmac,
            "grey_logits_first5": &grey[..5.min(grey.len())], "grey_argmax": grey_argmax,
        }));
        for &b in &args.batches {
            let x = x_all.narrow(0, 0, b)?.contiguous()?;
            let targets = predict(model.as_ref(), &x)?;
            for method in &args.methods {
                let (mut call, work) = workload(&args, method, model.as_ref(), &x, &targets)?;
                rss_reset &= reset_peak_rss();
                let seconds = timed(args.warmup, args.reps, &mut call)?;
                drop(call);
                let best = seconds.iter().copied().fold(f64::INFINITY, f64::min);
                let row = Row {
                    model: name.clone(),
                    method: method.clone(),
                    batch: b,
                    unit: if method == "top_k" { "image-iterations/s" } else { "images/s" },
                    work,
                    best_per_s: work as f64 / best,
                    median_per_s: work as f64 / median(&seconds),
                    gflops_best: (method == "forward").then(|| 2.0 * gmac * work as f64 / best),
                    peak_rss_mb: peak_rss_mb(),
                    seconds,
                };
                eprintln!(
                    "  {name:14} {method:22} batch {b:3}: {:9.2} {} best, {:9.2} median{}, peak RSS {}",
                    row.best_per_s,
                    row.unit,
                    row.median_per_s,
                    row.gflops_best.map_or(String::new(), |g| format!(" ({g:.1} GFLOP/s)")),
                    row.peak_rss_mb.map_or("—".into(), |m| format!("{m:.0} MB")),
                );
                rows.push(row);
            }
        }
    }
    print_table(&args, &rows, threads);
    if let Some(path) = &args.json {
        let report = serde_json::json!({
            "bench": "models", "profile": profile, "size": s, "reps": args.reps, "warmup": args.warmup,
            "threads": threads, "candle_threads": candle_core::utils::get_num_threads(),
            "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
            "ig_steps": args.ig_steps, "attack_iterations": args.attack_iterations,
            "k": args.k, "eps": args.eps, "seed": args.seed, "dtype": format!("{:?}", DType::F32),
            "normalize": "imagenet", "peak_rss_reset_per_workload": rss_reset,
            "models": model_info, "results": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}

/// A markdown table: one row per model and workload, per batch "best (median)".
fn print_table(args: &Args, rows: &[Row], threads: usize) {
    let s = args.size;
    println!(
        "\n### fragility, {s}×{s}, {threads} threads: best (median) of {} repetitions after {} warm-up\n",
        args.reps, args.warmup
    );
    let head: Vec<String> = args.batches.iter().map(|b| format!("batch {b}")).collect();
    println!("| model | workload | {} | GFLOP/s (forward, best) | peak RSS (MB) |", head.join(" | "));
    println!("|---|---|{}---|---|", "---|".repeat(args.batches.len()));
    for name in &args.models {
        for method in &args.methods {
            let of = |b: usize| rows.iter().find(|r| &r.model == name && &r.method == method && r.batch == b);
            let cells: Vec<String> = args
                .batches
                .iter()
                .map(|&b| {
                    of(b).map_or("—".into(), |r| format!("{:.2} ({:.2})", r.best_per_s, r.median_per_s))
                })
                .collect();
            let gflops: Vec<String> =
                args.batches.iter().filter_map(|&b| of(b)?.gflops_best).map(|g| format!("{g:.1}")).collect();
            let rss = args.batches.iter().filter_map(|&b| of(b)?.peak_rss_mb).fold(0.0, f64::max);
            let label = if method == "top_k" {
                format!("top_k attack, image-it/s ({} it, k {})", args.attack_iterations, args.k)
            } else if method == "integrated_gradients" {
                format!("integrated_gradients ({} steps)", args.ig_steps)
            } else {
                method.clone()
            };
            println!(
                "| {name} | {label} | {} | {} | {rss:.0} |",
                cells.join(" | "),
                if gflops.is_empty() { "—".into() } else { gflops.join(" / ") }
            );
        }
    }
}

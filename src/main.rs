//! The `fragility` command line: a thin layer over the library that maps errors to exit codes
//! (2 for bad input, 1 for failures while running) and prints the error with its cause.

use clap::{Parser, Subcommand};
use fragility::config::Plan;
use fragility::explain::{explain, ExplainRequest};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Measure how fragile the attribution maps of image classifiers are.
///
/// Reads a TOML experiment, computes attribution maps, perturbs the images with label-keeping
/// attacks (Ghorbani, Abid and Zou, AAAI 2019), recomputes the maps and scores how much they
/// moved. `fragility CONFIG.toml` is short for `fragility run CONFIG.toml`.
#[derive(Parser)]
#[command(name = "fragility", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of its largest variant (explain's options) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a fragility experiment: writes samples.parquet, summary.parquet, plots/*.png and
    /// run.json to the config's `out` folder (and, with `[sanity]` or `[faithfulness]` in the
    /// config, sanity.parquet, faithfulness.parquet and faithfulness_curves.parquet: see
    /// docs/checks.md).
    Run {
        /// The experiment config (see experiments/fragility.toml).
        config: PathBuf,
        /// Print only the headline (no progress bar).
        #[arg(long)]
        quiet: bool,
        /// Recompute even if the output folder holds a finished run (which is otherwise left
        /// as it is) or an interrupted one (which is otherwise continued).
        #[arg(long)]
        force: bool,
        /// Run only part i of n of the images (0-based, e.g. 2/8), into OUT/shards/i-of-n/;
        /// combine the parts with `fragility merge OUT`. Without it, a Slurm array task
        /// (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT) or a Kubernetes indexed job
        /// (JOB_COMPLETION_INDEX with FRAGILITY_SHARDS=n) picks its part itself.
        #[arg(long)]
        shard: Option<String>,
        /// Print the full summary table (every method × attack × ε × metric) after the
        /// headline.
        #[arg(long)]
        verbose: bool,
    },
    /// Combine the finished shards of a study (OUT/shards/i-of-n/) into OUT: the same
    /// samples.parquet, summary.parquet, plots and index.html as a single run.
    Merge {
        /// The study's output folder (the config's `out`).
        dir: PathBuf,
        /// Replace a finished study of other settings or inputs in the folder (which is
        /// otherwise refused).
        #[arg(long)]
        force: bool,
    },
    /// Regenerate summary.parquet, plots/*.png and index.html of a finished study from its
    /// samples.parquet (and run.json, if present) alone.
    Report {
        /// The study's output folder (holding samples.parquet).
        dir: PathBuf,
        /// Print the full summary table (every method × attack × ε × metric) after the
        /// headline, and every file written.
        #[arg(long)]
        verbose: bool,
    },
    /// Compare two runs of the same study (e.g. two model versions) and flag regressions.
    ///
    /// Matches summary rows by method × attack × target method × ε × metric. A row regresses
    /// when the current mean is worse (less similar maps) than the baseline's by more than its
    /// threshold and the 95% bootstrap intervals do not overlap: --tolerance for metrics with
    /// a bounded range, --relative-tolerance × the baseline mean for the others. A mean that
    /// became undefined (or defined) is reported, and fails a metric named with --metric.
    /// Writes compare.parquet and compare.md. Exit code: 0 no failure, 1 a regression (or a
    /// watched mean that became undefined or defined), 2 an error (e.g. the runs used
    /// different settings).
    Compare {
        /// Output folder of the baseline run.
        baseline: PathBuf,
        /// Output folder of the current run.
        current: PathBuf,
        /// Smallest change that counts for metrics with a bounded range (Spearman, Kendall,
        /// Pearson, cosine, SSIM, top-k intersection), in the metric's units.
        #[arg(long, default_value_t = 0.02)]
        tolerance: f64,
        /// Smallest change that counts for every other column (center shift in pixels,
        /// normalised MSE, attack measures, robustness), as a fraction of the baseline mean.
        #[arg(long, default_value_t = 0.1)]
        relative_tolerance: f64,
        /// Compare only these metric columns (repeatable; default: all). A named metric whose
        /// mean became undefined or defined fails the comparison.
        #[arg(long = "metric")]
        metrics: Vec<String>,
        /// Where compare.parquet and compare.md go (default: the current run's folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print every compared row, not only those that changed.
        #[arg(long)]
        all: bool,
    },
    /// Train fmnist_cnn on Fashion-MNIST (see configs/train_fmnist.toml).
    Train {
        /// The training config.
        config: PathBuf,
    },
    /// Write attribution maps for a set of images as .npy files.
    Explain {
        /// Model architecture (`fragility models` lists them), or an ONNX file (a value ending
        /// in .onnx; its weights are inside it).
        #[arg(long, default_value = "fmnist_cnn")]
        model: String,
        /// Safetensors weights (a PyTorch state_dict saved with safetensors.torch.save_file);
        /// required unless --model is an .onnx file.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Input normalisation inside the model: `imagenet` (torchvision's mean and std) or
        /// `MEANS/STDS`, e.g. 0.5,0.5,0.5/0.25,0.25,0.25. Images stay in [0,1].
        #[arg(long)]
        normalize: Option<String>,
        /// Images: .npy (float32 N×C×H×W in [0,1], or uint8), idx (raw or .gz), or a folder of
        /// PNG/JPEG files (class sub-folders, or a flat folder).
        #[arg(long)]
        images: PathBuf,
        /// Explain only the first N images.
        #[arg(long, value_name = "N", conflicts_with = "ids")]
        count: Option<usize>,
        /// Explain only these images: 0-based ids in the file, comma-separated, ranges
        /// included (e.g. 3,7,12,40-47); the outputs keep this order (DIR/ids.npy lists it).
        #[arg(long, value_name = "IDS")]
        ids: Option<String>,
        /// Resize every image so that its shorter side has this many pixels (antialiased
        /// bilinear), e.g. 256.
        #[arg(long)]
        resize: Option<usize>,
        /// Cut the central square of this size after resizing, e.g. 224.
        #[arg(long)]
        crop: Option<usize>,
        /// Convert the images to 1 (grey) or 3 (RGB) channels.
        #[arg(long)]
        channels: Option<usize>,
        /// Comma-separated methods, with default settings: gradient, gradient_x_input,
        /// integrated_gradients, smoothgrad, smoothgrad_sq, vargrad, guided_backprop, deconvnet,
        /// deeplift, lrp_epsilon_plus, lrp_epsilon_plus_flat, lrp_epsilon_gamma_box,
        /// lrp_epsilon_alpha2_beta1, lrp_epsilon_alpha2_beta1_flat (LRP under zennit's
        /// composites), grad_cam, grad_cam_plus_plus, xgrad_cam, hires_cam, layer_cam,
        /// score_cam, eigen_cam, ablation_cam, guided_grad_cam, occlusion, lime, kernel_shap.
        /// Any of those whose map is differentiable (all but deconvnet, score_cam, eigen_cam,
        /// ablation_cam, occlusion, lime, kernel_shap) may be β-smoothed by name:
        /// `gradient_beta_smooth3` is the gradient of the network with softplus(β = 3) in place
        /// of its ReLUs (Dombrowski et al. 2019), the prediction still the real network's.
        #[arg(long, value_delimiter = ',', default_value = "gradient")]
        methods: Vec<String>,
        /// β-smooth every listed method: compute it on the network with softplus(β) in place
        /// of every ReLU (and ReLU6, leaky ReLU, HardSigmoid, HardSwish, each through its
        /// softplus form); the prediction and the target class stay the real network's.
        /// Smaller β is smoother. The maps are written as <method>_beta_smooth<β>.npy.
        #[arg(long, value_name = "BETA")]
        beta_smooth: Option<f64>,
        /// What --beta-smooth replaces: `network` (Dombrowski et al.: the softplus network,
        /// forward and backward; <method>_beta_smooth<β>) or `backward` (zennit's BetaSmooth:
        /// the real forward pass, each ReLU's derivative sigmoid(βz);
        /// <method>_beta_smooth_backward<β>; not for LRP, deconvnet or DeepLIFT).
        #[arg(long, value_name = "FORM", default_value = "network", requires = "beta_smooth",
              value_parser = ["network", "backward"])]
        beta_smooth_form: String,
        /// Output folder: <method>.npy (float32 [N,C,H,W]), preds.npy (int64 [N]), logits.npy,
        /// ids.npy (int64 [N]: each row's image id). New, empty, or one an earlier explain
        /// wrote, whose files a rerun replaces (all together); other files are refused.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the stochastic methods (smoothgrad).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Images per batch.
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// Device: cpu, cuda, cuda:N or auto.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// How many of the first images each method's PNG grid (DIR/<method>.png) shows; 0 for none.
        #[arg(long, default_value_t = 8)]
        grid_images: usize,
        /// Explain this class for every image instead of each image's predicted class.
        #[arg(long)]
        target: Option<u32>,
        /// Class names for the grids' labels, in label order: a file with one name per line,
        /// or a comma-separated list (one per output of the model). A folder of class
        /// sub-folders names them by default; otherwise the grids show class numbers.
        #[arg(long, value_name = "FILE|NAMES")]
        classes: Option<String>,
    },
    /// List the model architectures (name, Grad-CAM default layer, nominal input size), or,
    /// given an .onnx file, its imported layer graph: node, op, output shape, and the Grad-CAM
    /// default layer.
    Models {
        /// An ONNX file to import and list.
        onnx: Option<PathBuf>,
        /// The input size (e.g. 224 or 224x224) for an ONNX file whose size is symbolic.
        #[arg(long)]
        size: Option<String>,
    },
}

const SUBCOMMANDS: [&str; 9] =
    ["run", "report", "merge", "compare", "train", "explain", "models", "help", "--help"];

/// `fragility models`: one line per architecture, the Grad-CAM column as wide as its longest
/// layer name.
fn list_models() {
    let archs = fragility::model::zoo::ARCHITECTURES;
    let cam = archs.iter().map(|a| a.default_layer.chars().count()).max().unwrap_or(0).max(10);
    println!("{:<20} {:<cam$} {:<10} weights", "model", "grad_cam", "input");
    println!(
        "{:<20} {:<cam$} {:<10} assets/models/fmnist_cnn.safetensors",
        "fmnist_cnn", "conv2_relu", "1×28×28"
    );
    for a in archs {
        let input = format!("C×{}×{}", a.input.0, a.input.1);
        println!(
            "{:<20} {:<cam$} {:<10} torchvision state_dict (C and classes from the weights)",
            a.name, a.default_layer, input
        );
    }
    println!("any CNN exported to ONNX: `--model FILE.onnx` / `[model] onnx = ...`; `fragility models FILE.onnx` lists its graph");
    println!("a ViT's input size is fixed by its position embedding (224×224 for torchvision's weights)");
}

/// `fragility models FILE.onnx`: the imported graph, one node per line.
fn list_onnx(path: &std::path::Path, size: Option<&str>) -> fragility::Result<()> {
    let hw = size
        .map(|s| {
            let (h, w) = s.split_once(['x', '×']).unwrap_or((s, s));
            match (h.trim().parse::<usize>(), w.trim().parse::<usize>()) {
                (Ok(h), Ok(w)) if h > 0 && w > 0 => Ok((h, w)),
                _ => Err(fragility::Error::Invalid(format!(
                    "--size `{s}`: expected N or HxW, e.g. 224 or 224x224"
                ))),
            }
        })
        .transpose()?;
    let m = fragility::model::onnx::load(path, hw)?;
    for n in &m.notices {
        eprintln!("{}: {n}", path.display());
    }
    let shapes = m.graph.shapes(m.hw)?;
    let classes = m.graph.classes(m.hw)?;
    println!(
        "{}: opset {}, input {}×{}×{}, {} classes, {} nodes",
        path.display(),
        m.opset,
        m.graph.channels(),
        m.hw.0,
        m.hw.1,
        classes,
        shapes.len()
    );
    println!("{:<48} {:<18} output", "node", "op");
    for (name, op, shape) in m.listing() {
        let mark = if Some(&name) == m.default_layer.as_ref() { "  ← grad_cam default" } else { "" };
        println!("{name:<48} {op:<18} {shape}{mark}");
    }
    match &m.default_layer {
        Some(layer) => println!("grad_cam default layer: {layer}"),
        None => println!(
            "grad_cam default layer: none (no feature map larger than 1×1 lies on every path to the \
             logits); give grad_cam a `layer` from the maps above, if any"
        ),
    }
    Ok(())
}

/// `fragility compare`: 0 no failure, 1 a regression (or a watched mean that became undefined
/// or defined), 2 any error.
fn compare(
    baseline: &std::path::Path,
    current: &std::path::Path,
    tolerance: fragility::report::compare::Tolerance,
    metrics: &[String],
    out: Option<&std::path::Path>,
    all: bool,
) -> ExitCode {
    use fragility::report::compare as c;
    let result = c::compare(baseline, current, tolerance, metrics).and_then(|report| {
        let files = c::write_compare(out.unwrap_or(current), &report, baseline, current)?;
        Ok((report, files))
    });
    match result {
        Ok((report, files)) => {
            c::print_compare(&report, all);
            for f in files {
                eprintln!("wrote {}", f.display());
            }
            if report.failures().next().is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Prints a study's headline (and with `verbose` the whole summary first) on stdout.
fn print_derived(d: &fragility::report::Derived, verbose: bool) {
    if verbose {
        fragility::report::summary::print_summary(&d.summary);
        println!();
    }
    print!("{}", d.headline.text());
    // The page's path follows on stderr: let the headline reach the terminal first.
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

fn main() -> ExitCode {
    fragility::alloc::tune();
    // A bare config path means `run`.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(first) = args.get(1).and_then(|a| a.to_str()) {
        if !first.starts_with('-') && !SUBCOMMANDS.contains(&first) {
            args.insert(1, "run".into());
        }
    }
    let cli = Cli::parse_from(args);
    let progress = std::io::stderr().is_terminal();
    if let Command::Compare { baseline, current, tolerance, relative_tolerance, metrics, out, all } =
        &cli.command
    {
        let tolerance =
            fragility::report::compare::Tolerance { absolute: *tolerance, relative: *relative_tolerance };
        return compare(baseline, current, tolerance, metrics, out.as_deref(), *all);
    }
    let result = match cli.command {
        Command::Run { config, quiet, force, shard, verbose } => Plan::load(&config).and_then(|plan| {
            let shard = match shard {
                Some(text) => Some(fragility::run::Shard::parse(&text).map_err(fragility::Error::Invalid)?),
                None => fragility::run::Shard::from_env(|k| std::env::var(k).ok())
                    .map_err(fragility::Error::Invalid)?,
            };
            let opts = fragility::run::RunOptions { progress: progress && !quiet, force, shard };
            let report = fragility::run::run(&plan, &opts)?;
            if report.already_finished {
                eprintln!(
                    "{} already holds this finished run ({} rows); nothing to do (--force recomputes it)",
                    fragility::report::tidy_path(&report.out).display(),
                    report.rows
                );
                return Ok(());
            }
            if let Some(d) = &report.derived {
                print_derived(d, verbose);
            }
            // A full run's headline says this in its first line; a shard prints no headline.
            if let Some(asked) = report.requested.filter(|&n| n > report.images && report.derived.is_none()) {
                eprintln!(
                    "note: data.count asks for {asked} images, but only {} qualified (correctly classified) and were studied",
                    report.images
                );
            }
            eprintln!(
                "{} images, {} rows in {:.1} s → {}",
                report.images,
                report.rows,
                report.seconds,
                fragility::report::tidy_path(&report.out).display()
            );
            if report.derived.is_some() {
                eprintln!("page: {}", fragility::report::tidy_path(&report.out.join("index.html")).display());
            }
            Ok(())
        }),
        Command::Report { dir, verbose } => fragility::report::regenerate(&dir).map(|d| {
            print_derived(&d, verbose);
            if verbose {
                for f in &d.files {
                    eprintln!("wrote {}", fragility::report::tidy_path(f).display());
                }
            }
            eprintln!("page: {}", fragility::report::tidy_path(&dir.join("index.html")).display());
        }),
        Command::Compare { .. } => unreachable!("handled above"),
        Command::Merge { dir, force } => fragility::run::merge(&dir, force).map(|report| {
            eprintln!(
                "shards merged: {} images, {} rows → {}",
                report.images,
                report.rows,
                fragility::report::tidy_path(&report.out).display()
            );
            if let Some(d) = &report.derived {
                print_derived(d, false);
            }
        }),
        Command::Train { config } => fragility::train::train_command(&config, progress).map(|_| ()),
        Command::Models { onnx: None, .. } => {
            list_models();
            Ok(())
        }
        Command::Models { onnx: Some(path), size } => list_onnx(&path, size.as_deref()),
        Command::Explain {
            model,
            weights,
            normalize,
            images,
            count,
            ids,
            resize,
            crop,
            channels,
            methods,
            beta_smooth,
            beta_smooth_form,
            out,
            seed,
            batch_size,
            device,
            grid_images,
            target,
            classes,
        } => {
            let methods = match beta_smooth {
                Some(b) if !(b.is_finite() && b > 0.0) => {
                    Err(fragility::Error::Invalid(format!("--beta-smooth: β must be finite and > 0, not {b}")))
                }
                Some(b) => {
                    use fragility::attribution::beta_smooth::{name_of, Form};
                    let form = if beta_smooth_form == "backward" { Form::Backward } else { Form::Network };
                    Ok(methods.iter().map(|m| name_of(m, b, form)).collect())
                }
                None => Ok(methods),
            };
            let normalize = normalize
                .map(|n| fragility::model::Normalize::parse(&n))
                .transpose()
                .map_err(|e| fragility::Error::Invalid(format!("--normalize {e}")));
            let selection = fragility::selection::Selection::from_args(count, ids.as_deref());
            let image_options = fragility::data::ImageOptions { resize, crop, channels };
            let weights = match (fragility::model::is_onnx(&model), weights) {
                (true, None) => Ok(PathBuf::from(&model)),
                (true, Some(_)) => Err(fragility::Error::Invalid(
                    "--weights: an ONNX model holds its own weights; leave --weights out".into(),
                )),
                (false, Some(w)) => Ok(w),
                (false, None) => {
                    // The built-in network's trained weights ship in the repository: say where.
                    let hint = if model == "fmnist_cnn" {
                        " (this repository ships its trained weights: --weights assets/models/fmnist_cnn.safetensors)"
                    } else {
                        " (a PyTorch state_dict saved as safetensors)"
                    };
                    Err(fragility::Error::Invalid(format!("--weights is required for model `{model}`{hint}")))
                }
            };
            normalize
                .and_then(|normalize| weights.map(|weights| (normalize, weights)))
                .and_then(|(normalize, weights)| selection.map(|selection| (normalize, weights, selection)))
                .and_then(|(normalize, weights, selection)| {
                    methods.map(|methods| (normalize, weights, selection, methods))
                })
                .map(|(normalize, weights, selection, methods)| ExplainRequest {
                    model,
                    weights,
                    normalize,
                    images,
                    selection,
                    image_options,
                    methods,
                    out,
                    seed,
                    batch_size,
                    device,
                    grid_images,
                    target,
                    classes: classes.clone(),
                })
                .and_then(|req| explain(&req, progress))
                .map(|files| {
                    for f in files {
                        println!("{}", f.display());
                    }
                })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every variant's message already includes its cause.
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

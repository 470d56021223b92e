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

#[derive(Subcommand)]
enum Command {
    /// Run a fragility experiment: writes samples.parquet, summary.parquet, plots/*.png and
    /// run.json to the config's `out` folder.
    Run {
        /// The experiment config (see experiments/fragility.toml).
        config: PathBuf,
        /// Print only the summary table (no progress bar).
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
    },
    /// Compare two runs of the same study (e.g. two model versions) and flag regressions.
    ///
    /// Matches summary rows by method × attack × target method × ε × metric. A row regresses
    /// when the current mean is worse (less similar maps) than the baseline's by more than
    /// --tolerance and the 95% bootstrap intervals do not overlap. Writes compare.parquet and
    /// compare.md. Exit code: 0 no regression, 1 a regression, 2 an error (e.g. the runs used
    /// different settings).
    Compare {
        /// Output folder of the baseline run.
        baseline: PathBuf,
        /// Output folder of the current run.
        current: PathBuf,
        /// Smallest change of a mean that counts, in the metric's units.
        #[arg(long, default_value_t = 0.02)]
        tolerance: f64,
        /// Compare only these metric columns (repeatable; default: all).
        #[arg(long = "metric")]
        metrics: Vec<String>,
        /// Where compare.parquet and compare.md go (default: the current run's folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print every compared row, not only regressions and improvements.
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
        /// Model architecture (`fragility models` lists them).
        #[arg(long, default_value = "fmnist_cnn")]
        model: String,
        /// Safetensors weights (a PyTorch state_dict saved with safetensors.torch.save_file).
        #[arg(long)]
        weights: PathBuf,
        /// Input normalisation inside the model: `imagenet` (torchvision's mean and std) or
        /// `MEANS/STDS`, e.g. 0.5,0.5,0.5/0.25,0.25,0.25. Images stay in [0,1].
        #[arg(long)]
        normalize: Option<String>,
        /// Images: .npy (float32 N×C×H×W in [0,1], or uint8), idx (raw or .gz), or a folder of
        /// PNG/JPEG files (class sub-folders, or a flat folder).
        #[arg(long)]
        images: PathBuf,
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
        /// deeplift, grad_cam, guided_grad_cam, occlusion, lime, kernel_shap.
        #[arg(long, value_delimiter = ',', default_value = "gradient")]
        methods: Vec<String>,
        /// Output folder: <method>.npy (float32 [N,C,H,W]), preds.npy (int64 [N]), logits.npy.
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
    },
    /// List the model architectures: name, Grad-CAM default layer, nominal input size.
    Models,
}

const SUBCOMMANDS: [&str; 9] =
    ["run", "report", "merge", "compare", "train", "explain", "models", "help", "--help"];

/// `fragility models`: one line per architecture.
fn list_models() {
    println!("{:<16} {:<14} {:<10} weights", "model", "grad_cam", "input");
    println!(
        "{:<16} {:<14} {:<10} assets/models/fmnist_cnn.safetensors",
        "fmnist_cnn", "conv2_relu", "1×28×28"
    );
    for a in fragility::model::zoo::ARCHITECTURES {
        let input = format!("C×{}×{}", a.input.0, a.input.1);
        println!(
            "{:<16} {:<14} {:<10} torchvision state_dict (C and classes from the weights)",
            a.name, a.default_layer, input
        );
    }
}

/// `fragility compare`: 0 no regression, 1 a regression, 2 any error.
fn compare(
    baseline: &std::path::Path,
    current: &std::path::Path,
    tolerance: f64,
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
            if report.regressions().next().is_some() {
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
    if let Command::Compare { baseline, current, tolerance, metrics, out, all } = &cli.command {
        return compare(baseline, current, *tolerance, metrics, out.as_deref(), *all);
    }
    let result = match cli.command {
        Command::Run { config, quiet, force, shard } => Plan::load(&config).and_then(|plan| {
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
                    report.out.display(),
                    report.rows
                );
                return Ok(());
            }
            if let Some(asked) = report.requested.filter(|&n| n > report.images) {
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
                report.out.display()
            );
            Ok(())
        }),
        Command::Report { dir } => fragility::report::regenerate(&dir).map(|(summary, files)| {
            fragility::report::summary::print_summary(&summary);
            for f in files {
                eprintln!("wrote {}", f.display());
            }
        }),
        Command::Compare { .. } => unreachable!("handled above"),
        Command::Merge { dir, force } => fragility::run::merge(&dir, force).map(|report| {
            eprintln!(
                "shards merged: {} images, {} rows → {}",
                report.images,
                report.rows,
                report.out.display()
            );
        }),
        Command::Train { config } => fragility::train::train_command(&config, progress).map(|_| ()),
        Command::Models => {
            list_models();
            Ok(())
        }
        Command::Explain {
            model,
            weights,
            normalize,
            images,
            resize,
            crop,
            channels,
            methods,
            out,
            seed,
            batch_size,
            device,
            grid_images,
            target,
        } => {
            let normalize = normalize
                .map(|n| fragility::model::Normalize::parse(&n))
                .transpose()
                .map_err(|e| fragility::Error::Invalid(format!("--normalize {e}")));
            let image_options = fragility::data::ImageOptions { resize, crop, channels };
            normalize
                .map(|normalize| ExplainRequest {
                    model,
                    weights,
                    normalize,
                    images,
                    image_options,
                    methods,
                    out,
                    seed,
                    batch_size,
                    device,
                    grid_images,
                    target,
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

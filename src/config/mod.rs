//! Run configuration: TOML parsed once into a validated [`Plan`].
//!
//! The raw structs mirror the file (serde, `deny_unknown_fields`); [`Plan::load`] checks every
//! value and resolves paths (relative to the config file's folder), methods and attacks, so
//! nothing downstream reads TOML. Every error names the file, the line and the field.
//! See `experiments/fragility.toml` for a commented example of every key, and [`models`] for
//! `[[model]]`, a study of several models.

mod checks;
mod models;

pub use checks::{FaithfulnessPlan, SanityPlan, SanityTest, SANITY_TESTS};
pub use models::{check_label, in_model, ModelPlan, MAX_LABEL};

use crate::attack::{
    Attack, IterSettings, ManipulateObjective, MassCenterObjective, Objective, Optimizer, RandomSign,
    RandomWalk, Region, Steered, Step, TargetMap, TargetedObjective, TopKObjective, ATTACK_NAMES,
};
use crate::attribution::{
    beta_smooth, by_name, AblationCam, Aggregate, AttentionRollout, Attribution, CamWeighting, EigenCam,
    GradCam, GuidedGradCam, IntegratedGradients, KernelShap, Lime, Lrp, NoiseSettings, NoiseTunnel,
    Occlusion, ScoreCam, METHOD_NAMES, NOISE_METHODS,
};
use crate::data::ImageOptions;
use crate::error::{Error, Result};
use crate::model::lrp::{Composite, CompositeKind, FirstLayer, COMPOSITES};
use candle_core::Device;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// The study's title on its page (default: the output folder's name).
    title: Option<Spanned<String>>,
    #[serde(default)]
    seed: u64,
    #[serde(default = "default_device")]
    device: Spanned<String>,
    out: Spanned<String>,
    #[serde(default = "default_batch")]
    batch_size: Spanned<usize>,
    model: models::RawModels,
    data: RawData,
    methods: RawMethods,
    /// Optional only where `[sanity]` or `[faithfulness]` is given: a study of those alone.
    attacks: Option<RawAttacks>,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    report: RawReport,
    robustness: Option<Spanned<RawRobustness>>,
    sanity: Option<Spanned<checks::RawSanity>>,
    faithfulness: Option<Spanned<checks::RawFaithfulness>>,
}

/// `[robustness]`: sampling-robustness estimates of every method at the clean images.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRobustness {
    #[serde(default = "default_radius")]
    radius: f64,
    #[serde(default = "default_samples")]
    samples: usize,
}

fn default_radius() -> f64 {
    0.02
}

fn default_samples() -> usize {
    10
}

/// `[report]`: what goes into the study's folder besides the tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    /// Example panels (the paper's figure 1) for the first this many studied images.
    #[serde(default = "default_examples")]
    examples: usize,
}

impl Default for RawReport {
    fn default() -> Self {
        Self { examples: default_examples() }
    }
}

fn default_examples() -> usize {
    3
}

fn default_device() -> Spanned<String> {
    Spanned::new(0..0, "cpu".into())
}

fn default_batch() -> Spanned<usize> {
    Spanned::new(0..0, 50)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    images: Spanned<String>,
    labels: Option<Spanned<String>>,
    /// The class names in label order: a file of names, one per line (for a folder of class
    /// sub-folders), or the list itself.
    classes: Option<Spanned<RawClasses>>,
    count: Option<Spanned<usize>>,
    #[serde(default = "yes")]
    correct_only: bool,
    /// Shorter side after resizing (antialiased bilinear).
    resize: Option<Spanned<usize>>,
    /// Central square crop after resizing.
    crop: Option<Spanned<usize>>,
    /// Convert to 1 (grey) or 3 (RGB) channels.
    channels: Option<Spanned<usize>>,
}

/// `[data] classes`: a file of class names or the names themselves.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawClasses {
    File(String),
    Names(Vec<String>),
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMethods {
    names: Spanned<Vec<Spanned<String>>>,
    integrated_gradients: Option<Spanned<IntegratedGradients>>,
    smoothgrad: Option<Spanned<NoiseSettings>>,
    grad_cam: Option<Spanned<GradCam>>,
    attention_rollout: Option<Spanned<AttentionRollout>>,
    occlusion: Option<Spanned<Occlusion>>,
    lime: Option<Spanned<Lime>>,
    kernel_shap: Option<Spanned<KernelShap>>,
    lrp_epsilon_plus: Option<Spanned<RawLrp>>,
    lrp_epsilon_plus_flat: Option<Spanned<RawLrp>>,
    lrp_epsilon_gamma_box: Option<Spanned<RawLrp>>,
    lrp_epsilon_alpha2_beta1: Option<Spanned<RawLrp>>,
    lrp_epsilon_alpha2_beta1_flat: Option<Spanned<RawLrp>>,
}

/// An LRP composite's settings table (unset: zennit's defaults, see [`Composite::of`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLrp {
    epsilon: Option<f32>,
    stabilizer: Option<f32>,
    gamma: Option<f32>,
    low: Option<f32>,
    high: Option<f32>,
    first_layer: Option<FirstLayer>,
}

impl RawMethods {
    /// The settings table of composite `kind`, if given.
    fn lrp(&self, kind: CompositeKind) -> Option<&Spanned<RawLrp>> {
        match kind {
            CompositeKind::EpsilonPlus => self.lrp_epsilon_plus.as_ref(),
            CompositeKind::EpsilonPlusFlat => self.lrp_epsilon_plus_flat.as_ref(),
            CompositeKind::EpsilonGammaBox => self.lrp_epsilon_gamma_box.as_ref(),
            CompositeKind::EpsilonAlpha2Beta1 => self.lrp_epsilon_alpha2_beta1.as_ref(),
            CompositeKind::EpsilonAlpha2Beta1Flat => self.lrp_epsilon_alpha2_beta1_flat.as_ref(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttacks {
    names: Spanned<Vec<Spanned<String>>>,
    epsilons: Spanned<Vec<Spanned<f64>>>,
    #[serde(default = "default_target")]
    target_method: Spanned<OneOrMany>,
    random_sign: Option<Spanned<RandomSign>>,
    random_walk: Option<Spanned<RawSteer>>,
    top_k: Option<Spanned<RawSteer>>,
    mass_center: Option<Spanned<RawSteer>>,
    targeted: Option<Spanned<RawSteer>>,
    manipulate: Option<Spanned<RawSteer>>,
}

/// `target_method = "gradient"` or `target_method = ["gradient", "deeplift"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn default_target() -> Spanned<OneOrMany> {
    Spanned::new(0..0, OneOrMany::One("gradient".into()))
}

/// The settings table of a steered attack (and of `random_walk`), as written; which fields
/// apply to which attack is checked in [`Plan::parse`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSteer {
    iterations: Option<u32>,
    step: Option<f64>,
    step_absolute: Option<f64>,
    beta: Option<f64>,
    beta_end: Option<f64>,
    restarts: Option<u32>,
    patience: Option<u32>,
    optimizer: Option<Optimizer>,
    gamma: Option<f64>,
    k: Option<usize>,
    region: Option<[usize; 4]>,
    mask: Option<String>,
    target_image: Option<usize>,
    target_map: Option<String>,
}

impl RawSteer {
    /// The fields that were given, by name.
    fn given(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut add = |on: bool, n: &'static str| {
            if on {
                v.push(n)
            }
        };
        add(self.iterations.is_some(), "iterations");
        add(self.step.is_some(), "step");
        add(self.step_absolute.is_some(), "step_absolute");
        add(self.beta.is_some(), "beta");
        add(self.beta_end.is_some(), "beta_end");
        add(self.restarts.is_some(), "restarts");
        add(self.patience.is_some(), "patience");
        add(self.optimizer.is_some(), "optimizer");
        add(self.gamma.is_some(), "gamma");
        add(self.k.is_some(), "k");
        add(self.region.is_some(), "region");
        add(self.mask.is_some(), "mask");
        add(self.target_image.is_some(), "target_image");
        add(self.target_map.is_some(), "target_map");
        v
    }

    /// The loop settings: `defaults` overridden by the given fields, validated.
    fn settings(&self, defaults: IterSettings) -> std::result::Result<IterSettings, String> {
        let mut s = defaults;
        if let Some(v) = self.iterations {
            if v == 0 {
                return Err("`iterations` must be at least 1".into());
            }
            s.iterations = v;
        }
        let positive = |v: f64, n: &str| {
            if v > 0.0 && v.is_finite() {
                Ok(v)
            } else {
                Err(format!("`{n}` must be finite and > 0, got {v}"))
            }
        };
        match (self.step, self.step_absolute) {
            (Some(_), Some(_)) => {
                return Err("give `step` (a fraction of ε) or `step_absolute`, not both".into())
            }
            (Some(f), None) => s.step = Step::FractionOfEps(positive(f, "step")?),
            (None, Some(a)) => s.step = Step::Absolute(positive(a, "step_absolute")?),
            (None, None) => {}
        }
        if let Some(b) = self.beta {
            s.beta = positive(b, "beta")?;
            if self.beta_end.is_none() && defaults.beta_end == defaults.beta {
                s.beta_end = s.beta;
            }
        }
        if let Some(b) = self.beta_end {
            s.beta_end = positive(b, "beta_end")?;
        }
        if let Some(r) = self.restarts {
            s.restarts = r;
        }
        if let Some(p) = self.patience {
            s.patience = p;
        }
        if let Some(o) = self.optimizer {
            s.optimizer = o;
        }
        if let Some(g) = self.gamma {
            if !(g >= 0.0 && g.is_finite()) {
                return Err(format!("`gamma` must be finite and ≥ 0, got {g}"));
            }
            s.gamma = g;
        }
        Ok(s)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// Unset: one k, [`crate::metric::auto_k`] of the image size.
    #[serde(default)]
    top_k: Option<Spanned<KList>>,
}

/// `top_k = 100` or `top_k = [10, 100]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum KList {
    One(usize),
    Many(Vec<usize>),
}

/// A validated run: everything [`crate::run`] needs, with paths resolved.
pub struct Plan {
    /// The config file this plan came from.
    pub config_path: PathBuf,
    /// The study's title on its page and in the terminal, if the config gives one.
    pub title: Option<String>,
    /// The one seed that fixes every random choice.
    pub seed: u64,
    /// Where tensors live.
    pub device: Device,
    /// Output folder (samples.parquet, summary.parquet, plots/, run.json).
    pub out: PathBuf,
    /// Images per chunk (each chunk is attacked at every ε at once).
    pub batch_size: usize,
    /// The model, or the models of a study of several (`[[model]]`), in config order; at
    /// least one.
    pub models: Vec<ModelPlan>,
    /// Images: an idx or npy file, or a folder of PNG/JPEG files.
    pub images: PathBuf,
    /// Label file (idx or npy; for a flat folder of images, a CSV of file,label), if any.
    pub labels: Option<PathBuf>,
    /// Class names of a folder of class sub-folders, one per line, in label order.
    pub classes: Option<PathBuf>,
    /// Class names given in the config itself (`[data] classes = [...]`), in label order; the
    /// run checks that there is one per output of the model.
    pub class_names: Option<Vec<String>>,
    /// The config line of `[data] classes`, for the error when the list does not fit the model.
    pub class_names_line: Option<usize>,
    /// `[data]`'s resize, crop and channel conversion (each model's own settings go over
    /// them: [`ModelPlan::image_options`]).
    pub image_options: ImageOptions,
    /// How many images to study (after filtering); all if `None`.
    pub count: Option<usize>,
    /// Keep only images the model classifies correctly (as the paper does).
    pub correct_only: bool,
    /// L∞ budgets on the [0,1] pixel scale.
    pub epsilons: Vec<f64>,
    /// The k of each top-k intersection metric (at least one, distinct, each ≥ 1); `None`
    /// when the config gives none: one k, [`crate::metric::auto_k`] of the image size (see
    /// [`Plan::metric_ks_for`]).
    pub metric_ks: Option<Vec<usize>>,
    /// How many of the first studied images get example panels (clean and perturbed image with
    /// every method's map, per attack, at the largest ε) in `examples/`.
    pub examples: usize,
    /// Sampling-robustness settings (seeded by the run's seed), if the config asks for them.
    pub robustness: Option<crate::robustness::RobustnessSettings>,
    /// The sanity checks (`[sanity]`), if the config asks for them.
    pub sanity: Option<SanityPlan>,
    /// The faithfulness measures (`[faithfulness]`), if the config asks for them.
    pub faithfulness: Option<FaithfulnessPlan>,
    /// The resolved settings, for run.json.
    pub resolved: serde_json::Value,
    /// Every input file the study reads, with the config field that names it, in a fixed
    /// order: what the study's [`crate::fingerprint::Fingerprint`] hashes.
    pub inputs: Vec<(String, PathBuf)>,
    /// Settings that can only be checked against the model and the data, with their lines.
    pub late: LateChecks,
}

/// Settings checked once the model and the images are known ([`Plan::check_against`]), with
/// the config lines to name in an error.
#[derive(Debug, Clone, Default)]
pub struct LateChecks {
    /// `data.count`, if given.
    pub count: Option<(usize, Option<usize>)>,
    /// The occlusion window, if a method uses occlusion.
    pub occlusion_window: Option<([usize; 2], Option<usize>)>,
    /// `attacks.top_k.k` if `top_k` runs: the k the config gives (`None`: automatic, which
    /// always fits the image).
    pub attack_k: Option<(Option<usize>, Option<usize>)>,
    /// `metrics.top_k`'s largest k, if the config gives it (the automatic k always fits).
    pub metric_k: Option<(usize, Option<usize>)>,
}

/// The most bytes a config file may have (a real one is a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The 1-based line of byte `offset` in `text` (for error messages about TOML files).
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The text of a config file (a study's or a training one): a regular file of at most
/// [`MAX_CONFIG_BYTES`], UTF-8 (an invalid byte is named with its line).
pub fn read_config_text(path: &Path) -> Result<String> {
    let bad = |message: String| Error::Config { file: path.to_path_buf(), line: None, message };
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(bad("is a folder or a device, not a config file".into()));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(bad(format!(
            "{} bytes is too large for a config file (at most {MAX_CONFIG_BYTES})",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_CONFIG_BYTES + 1), &mut bytes)
        })
        .map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = line_of(&String::from_utf8_lossy(&e.as_bytes()[..at]), at);
        Error::Config {
            file: path.to_path_buf(),
            line: Some(line),
            message: format!("not UTF-8 text (invalid byte at offset {at})"),
        }
    })
}

/// Builds config errors that name the file and the line of a span.
struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> Option<usize> {
        if span.start == 0 && span.end == 0 {
            return None; // a default value: no line in the file
        }
        Some(line_of(self.text, span.start))
    }

    fn err(&self, span: std::ops::Range<usize>, message: String) -> Error {
        Error::Config { file: self.file.to_path_buf(), line: self.line(span), message }
    }

    fn path(&self, field: &str, value: &Spanned<String>) -> Result<PathBuf> {
        let base = self.file.parent().unwrap_or(Path::new(""));
        let p = base.join(value.get_ref());
        let Ok(meta) = std::fs::metadata(&p) else {
            return Err(
                self.err(value.span(), format!("field `{field}`: file {} does not exist", p.display()))
            );
        };
        // Only images may be a folder; a device or a pipe (e.g. /dev/zero) may never end.
        let folder_ok = field == "data.images";
        if !(meta.is_file() || (folder_ok && meta.is_dir())) {
            let what = if meta.is_dir() { "a folder" } else { "not a regular file" };
            return Err(self
                .err(value.span(), format!("field `{field}`: {} is {what}; expected a file", p.display())));
        }
        Ok(p)
    }
}

/// A list of class names must name at least one class, and no name may be blank or repeated.
fn check_class_names(names: &[String]) -> std::result::Result<(), String> {
    if names.is_empty() {
        return Err("the list names no class".into());
    }
    if let Some(i) = names.iter().position(|n| n.trim().is_empty()) {
        return Err(format!("name {i} is blank"));
    }
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(format!("`{n}` is listed twice"));
        }
    }
    Ok(())
}

impl Plan {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Plan> {
        let text = read_config_text(path)?;
        Self::parse(path, &text)
    }

    /// Validates config `text` read from `path` (relative paths resolve against its folder).
    pub fn parse(path: &Path, text: &str) -> Result<Plan> {
        let cx = Ctx { file: path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let line = cx.line(span.clone());
            let quoted = line
                .and_then(|l| text.lines().nth(l - 1))
                .map(|l| format!(" (in `{}`)", l.trim()))
                .unwrap_or_default();
            Error::Config {
                file: path.to_path_buf(),
                line,
                message: format!("{}{quoted}", e.message().trim_end()),
            }
        })?;

        let device = crate::device::resolve(raw.device.get_ref())
            .map_err(|e| cx.err(raw.device.span(), format!("field `device`: {e}")))?;
        if *raw.batch_size.get_ref() == 0 {
            return Err(cx.err(raw.batch_size.span(), "field `batch_size` must be at least 1".into()));
        }
        let images = cx.path("data.images", &raw.data.images)?;
        let labels = raw.data.labels.as_ref().map(|l| cx.path("data.labels", l)).transpose()?;
        let class_names_line = raw.data.classes.as_ref().and_then(|c| cx.line(c.span()));
        let (classes, class_names) = match &raw.data.classes {
            None => (None, None),
            Some(c) => match c.get_ref() {
                RawClasses::File(f) => {
                    (Some(cx.path("data.classes", &Spanned::new(c.span(), f.clone()))?), None)
                }
                RawClasses::Names(names) => {
                    check_class_names(names)
                        .map_err(|e| cx.err(c.span(), format!("field `data.classes`: {e}")))?;
                    (None, Some(names.clone()))
                }
            },
        };
        let image_options = ImageOptions {
            resize: raw.data.resize.as_ref().map(|v| *v.get_ref()),
            crop: raw.data.crop.as_ref().map(|v| *v.get_ref()),
            channels: raw.data.channels.as_ref().map(|v| *v.get_ref()),
        };
        let data_span = [&raw.data.resize, &raw.data.crop, &raw.data.channels]
            .iter()
            .find_map(|v| v.as_ref().map(|v| v.span()))
            .unwrap_or(raw.data.images.span());
        if let Err(e) = image_options.validate() {
            return Err(cx.err(data_span, format!("section `data`: {e}")));
        }
        let sources = models::sources(&cx, &raw.model, &image_options, data_span)?;
        let folder_labels = images.is_dir();
        if raw.data.correct_only && labels.is_none() && !folder_labels {
            return Err(cx.err(
                raw.data.images.span(),
                "field `data.correct_only` is true (the default) but no `data.labels` file is given".into(),
            ));
        }
        if let Some(c) = &raw.data.count {
            if *c.get_ref() == 0 {
                return Err(cx.err(c.span(), "field `data.count` must be at least 1".into()));
            }
        }

        let sanity = raw.sanity.as_ref().map(|s| checks::sanity(&cx, s)).transpose()?;
        let faithfulness = raw.faithfulness.as_ref().map(|f| checks::faithfulness(&cx, f)).transpose()?;
        if raw.attacks.is_none() && sanity.is_none() && faithfulness.is_none() {
            return Err(cx.err(
                0..0,
                "missing section `attacks` (a study needs attacks, or a `[sanity]` or `[faithfulness]` section to run alone)".into(),
            ));
        }
        let epsilons = match &raw.attacks {
            Some(a) => parse_epsilons(&cx, &a.epsilons)?,
            None => Vec::new(),
        };
        if let Some(r) = raw.attacks.as_ref().and_then(|a| a.random_sign.as_ref()) {
            if r.get_ref().tries == 0 {
                return Err(cx.err(r.span(), "field `attacks.random_sign.tries` must be at least 1".into()));
            }
        }
        // Methods and attacks are built per model: a method may resolve a setting from its
        // model (Grad-CAM's default layer).
        let mut models = Vec::new();
        let mut factory = None;
        for mut m in sources {
            let f = MethodFactory::parse(&cx, &raw, &m.name)?;
            let make_method = |name: &Spanned<String>, field: &str| f.make(&cx, name, field);
            m.methods = f.listed(&cx, &raw.methods.names)?;
            m.attacks = match &raw.attacks {
                Some(a) => {
                    let data = DataSource {
                        images: &images,
                        labels: labels.as_deref(),
                        classes: classes.as_deref(),
                        opts: &image_options,
                    };
                    build_attacks(&cx, a, &make_method, &data)?
                }
                None => Vec::new(),
            };
            models.push(m);
            factory.get_or_insert(f);
        }
        // `sources` gives at least one model.
        let Some(factory) = factory else { return Err(cx.err(0..0, "no model".into())) };
        let metric_ks = raw.metrics.top_k.as_ref().map(|k| parse_metric_ks(&cx, k)).transpose()?;

        let robustness = match &raw.robustness {
            Some(r) => {
                let v = r.get_ref();
                let settings = crate::robustness::RobustnessSettings {
                    radius: v.radius,
                    samples: v.samples,
                    seed: raw.seed,
                };
                settings.validate().map_err(|e| cx.err(r.span(), format!("field `robustness`: {e}")))?;
                Some(settings)
            }
            None => None,
        };
        let base = path.parent().unwrap_or(Path::new(""));
        let out = base.join(raw.out.get_ref());
        check_out(&cx, &raw.out, &out)?;
        let listed = |n: &str| raw.methods.names.get_ref().iter().any(|m| m.get_ref() == n);
        let attack_listed = |n: &str| attack_listed(&raw, n);
        let noise_listed = NOISE_METHODS.iter().any(|n| listed(n));
        let late = LateChecks {
            count: raw.data.count.as_ref().map(|c| (*c.get_ref(), cx.line(c.span()))),
            // Only a window given in the config can be too large: the default scales with the
            // image and never exceeds it.
            occlusion_window: (listed("occlusion") || (noise_listed && factory.noise.wrap == "occlusion"))
                .then_some(factory.occlusion.window)
                .flatten()
                .map(|w| (w, raw.methods.occlusion.as_ref().and_then(|o| cx.line(o.span())))),
            attack_k: attack_listed("top_k").then(|| {
                let sec = raw.attacks.as_ref().and_then(|a| a.top_k.as_ref());
                (sec.and_then(|s| s.get_ref().k), sec.and_then(|s| cx.line(s.span())))
            }),
            metric_k: metric_ks
                .as_ref()
                .zip(raw.metrics.top_k.as_ref())
                .map(|(ks, given)| (ks.iter().copied().max().unwrap_or(0), cx.line(given.span()))),
        };
        let inputs = study_inputs(&raw, base, &models, &images, &labels, &classes);
        let title = match &raw.title {
            Some(t) if t.get_ref().trim().is_empty() || t.get_ref().contains(['\n', '\r']) => {
                return Err(cx.err(t.span(), "field `title`: give one line of text (or leave it out)".into()))
            }
            t => t.as_ref().map(|t| t.get_ref().trim().to_string()),
        };
        let mut plan = Plan {
            config_path: path.to_path_buf(),
            title,
            seed: raw.seed,
            device,
            out,
            batch_size: *raw.batch_size.get_ref(),
            models,
            images,
            labels,
            classes,
            class_names,
            class_names_line,
            image_options,
            count: raw.data.count.map(|c| c.into_inner()),
            correct_only: raw.data.correct_only,
            epsilons,
            metric_ks,
            examples: raw.report.examples,
            robustness,
            sanity,
            faithfulness,
            resolved: serde_json::Value::Null,
            inputs,
            late,
        };
        plan.resolved = plan.settings_json(raw.device.get_ref());
        Ok(plan)
    }

    /// Every setting as run.json records it (and the fingerprint hashes it), with `device` as
    /// the config wrote it.
    fn settings_json(&self, device: &str) -> serde_json::Value {
        // Input files as the config wrote them: the same study from any working folder.
        let base = self.config_path.parent().unwrap_or(Path::new(""));
        let path = |p: &Path| as_written(base, p);
        let mut v = serde_json::json!({
            "config": self.config_path.display().to_string(),
            "seed": self.seed,
            "device": device,
            "out": self.out.display().to_string(),
            "batch_size": self.batch_size,

            "data": {
                "images": path(&self.images),
                "labels": self.labels.as_deref().map(path),
                "count": self.count,
                "classes": match (&self.classes, &self.class_names) {
                    (Some(file), _) => serde_json::json!(path(file)),
                    (None, Some(names)) => serde_json::json!(names),
                    (None, None) => serde_json::Value::Null,
                },
                "resize": self.image_options.resize,
                "crop": self.image_options.crop,
                "channels": self.image_options.channels,
                "correct_only": self.correct_only,
            },
            "methods": methods_json(self.methods()),
            "attacks": attacks_json(self.attacks()),
            "epsilons": self.epsilons,
            "metrics": { "top_k": self.metric_ks.as_ref().map_or(serde_json::json!("auto"), |ks| serde_json::json!(ks)) },
            "report": { "examples": self.examples },
            "robustness": self.robustness.map(|r| serde_json::json!({ "radius": r.radius, "samples": r.samples })),
        });
        if let [one] = self.models.as_slice() {
            // A one-model study records its model as before several models existed, the
            // model's own image settings as `data`'s: its fingerprint is unchanged.
            v["model"] = one.settings_json(false, base);
            v["data"]["resize"] = serde_json::json!(one.image_options.resize);
            v["data"]["crop"] = serde_json::json!(one.image_options.crop);
            v["data"]["channels"] = serde_json::json!(one.image_options.channels);
        } else {
            let methods = methods_json(self.methods());
            let attacks = attacks_json(self.attacks());
            v["models"] = self
                .models
                .iter()
                .map(|m| {
                    let mut e = m.settings_json(true, base);
                    // What a method or attack resolved from its model (Grad-CAM's layer).
                    let (own_m, own_a) = (methods_json(&m.methods), attacks_json(&m.attacks));
                    if own_m != methods || own_a != attacks {
                        e["methods"] = own_m;
                        e["attacks"] = own_a;
                    }
                    e
                })
                .collect();
        }
        // An attack's mask or target-map file, as the config wrote it too.
        let written = |attacks: &mut serde_json::Value| {
            for a in attacks.as_array_mut().into_iter().flatten() {
                for key in ["mask", "target_map"] {
                    if let Some(p) = a["params"].get(key).and_then(|p| p.as_str()).map(str::to_string) {
                        a["params"][key] = serde_json::json!(as_written(base, Path::new(&p)));
                    }
                }
            }
        };
        written(&mut v["attacks"]);
        for m in v.get_mut("models").and_then(|m| m.as_array_mut()).into_iter().flatten() {
            if let Some(a) = m.get_mut("attacks") {
                written(a);
            }
        }
        // Only when given: a study without them keeps the identity it had before they existed.
        if let (Some(s), Some(o)) = (&self.sanity, v.as_object_mut()) {
            o.insert("sanity".into(), s.settings_json());
        }
        if let (Some(f), Some(o)) = (&self.faithfulness, v.as_object_mut()) {
            o.insert("faithfulness".into(), f.settings_json());
        }
        // Only when given, and never part of the fingerprint (a new title is the same study).
        if let (Some(t), Some(o)) = (&self.title, v.as_object_mut()) {
            o.insert("title".into(), serde_json::json!(t));
        }
        v
    }

    /// The methods, as the first model runs them: names and order are the same for every
    /// model (settings a method resolves from its model are in [`ModelPlan::methods`]).
    pub fn methods(&self) -> &[Arc<dyn Attribution>] {
        self.models.first().map_or(&[], |m| &m.methods)
    }

    /// The attacks, as the first model runs them (names and order are every model's).
    pub fn attacks(&self) -> &[Arc<dyn Attack>] {
        self.models.first().map_or(&[], |m| &m.attacks)
    }

    /// Whether the study compares several models (`[[model]]` tables).
    pub fn several_models(&self) -> bool {
        self.models.len() > 1
    }
}

/// `path` (resolved from the config's folder `base`) as the config wrote it: relative to the
/// config's folder where it lies below it as resolved (`experiments/../assets/x` from the
/// repository root and `../assets/x` from `experiments/` both record `../assets/x`), else as
/// given (an absolute path). The record, and so the study's identity, then does not depend
/// on the working folder a study is run from.
pub(crate) fn as_written(base: &Path, path: &Path) -> String {
    path.strip_prefix(base).unwrap_or(path).display().to_string()
}

/// Methods as `run.json` records them: name → parameters.
fn methods_json(methods: &[Arc<dyn Attribution>]) -> serde_json::Value {
    serde_json::Value::Object(methods.iter().map(|m| (m.name().to_string(), m.params())).collect())
}

/// Attacks as `run.json` records them, in order.
fn attacks_json(attacks: &[Arc<dyn Attack>]) -> serde_json::Value {
    attacks.iter().map(|a| serde_json::json!({ "name": a.name(), "params": a.params() })).collect()
}

impl Plan {
    /// The k of each top-k intersection metric on h×w images: the configured ones, or the one
    /// [`crate::metric::auto_k`]`(h, w)` (100 on 28×28).
    pub fn metric_ks_for(&self, h: usize, w: usize) -> Vec<usize> {
        self.metric_ks.clone().unwrap_or_else(|| vec![crate::metric::auto_k(h, w)])
    }

    /// What the settings record as `"auto"`, resolved for h×w images, by config field (for
    /// run.json): `{"image_size": [h, w], "metrics.top_k": [k], "attacks.top_k.k": k}`, with
    /// only the fields left unset. A function of the images alone, so a resumed run, its
    /// shards and their merge all resolve the same values.
    pub fn automatic(&self, h: usize, w: usize) -> serde_json::Value {
        let mut auto = serde_json::Map::new();
        auto.insert("image_size".into(), serde_json::json!([h, w]));
        if self.metric_ks.is_none() {
            auto.insert("metrics.top_k".into(), serde_json::json!(self.metric_ks_for(h, w)));
        }
        if let Some((None, _)) = self.late.attack_k {
            auto.insert("attacks.top_k.k".into(), serde_json::json!(crate::metric::auto_k(h, w)));
        }
        serde_json::Value::Object(auto)
    }

    /// Checks the settings that depend on the model and the images (`set`, for a model of
    /// `classes` classes) before anything is written: `data.count` at most the images in the
    /// file, an occlusion window and every k at most the image, labels in 0..classes.
    pub fn check_against(&self, set: &crate::data::ImageSet, classes: usize) -> Result<()> {
        let err = |line: Option<usize>, message: String| Error::Config {
            file: self.config_path.clone(),
            line,
            message,
        };
        let pixels = set.h * set.w;
        if let Some((count, line)) = self.late.count {
            if count > set.n {
                return Err(err(
                    line,
                    format!(
                        "field `data.count`: {count} images asked for, but {} holds {}",
                        self.images.display(),
                        set.n
                    ),
                ));
            }
        }
        if let Some(([wh, ww], line)) = self.late.occlusion_window {
            if wh > set.h || ww > set.w {
                return Err(err(
                    line,
                    format!(
                        "field `methods.occlusion.window`: {wh}×{ww} is larger than the {}×{} images",
                        set.h, set.w
                    ),
                ));
            }
        }
        if let Some((Some(k), line)) = self.late.attack_k {
            if k > pixels {
                return Err(err(
                    line,
                    format!("field `attacks.top_k.k`: {k} is more than the {pixels} pixels of an image"),
                ));
            }
        }
        if let Some((k, line)) = self.late.metric_k {
            if k > pixels {
                return Err(err(
                    line,
                    format!("field `metrics.top_k`: {k} is more than the {pixels} pixels of an image"),
                ));
            }
        }
        if let Some(labels) = &set.labels {
            if let Some((i, v)) = labels.iter().enumerate().find(|(_, &v)| v < 0 || v >= classes as i64) {
                let file = self.labels.as_ref().unwrap_or(&self.images);
                return Err(Error::data(
                    file,
                    format!(
                        "label {v} of image {i} is outside 0..{} (the model has {classes} classes)",
                        classes.saturating_sub(1)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `out` must be a folder of its own: not `""` or `"."`, not the file system's root, not a
/// file or a dangling link ([`crate::manifest::check_out_dir`]), and not a folder that holds
/// other things and no study of ours (the config's own folder, a home folder): a run would
/// litter it. (Files of others in a study's folder are never touched, see
/// [`crate::manifest`].)
fn check_out(cx: &Ctx, raw: &Spanned<String>, out: &Path) -> Result<()> {
    let err = |why: String| cx.err(raw.span(), format!("field `out`: {why}"));
    let given = raw.get_ref().trim();
    if given.is_empty() || given == "." {
        return Err(err("give a folder of its own for the study's output (e.g. \"out\")".into()));
    }
    if out.parent().is_none() || out.canonicalize().is_ok_and(|p| p.parent().is_none()) {
        return Err(err(format!("{} is the root folder; give a folder of its own", out.display())));
    }
    crate::manifest::check_out_dir(out, "`out`").map_err(|e| err(e.to_string()))?;
    match crate::manifest::foreign_entry(out) {
        Some(name) => Err(err(format!(
            "{} already holds other files (e.g. {name}) and no study; give an empty or new folder",
            out.display()
        ))),
        None => Ok(()),
    }
}

/// Builds a method from its name (and the config field that named it).
/// `attacks.epsilons`: at least one, each finite and ≥ 0, none twice (its rows would count
/// twice and narrow the intervals).
fn parse_epsilons(cx: &Ctx, list: &Spanned<Vec<Spanned<f64>>>) -> Result<Vec<f64>> {
    if list.get_ref().is_empty() {
        return Err(cx.err(list.span(), "field `attacks.epsilons` is empty".into()));
    }
    let mut epsilons = Vec::new();
    for (i, e) in list.get_ref().iter().enumerate() {
        let v = *e.get_ref();
        if !(v.is_finite() && v >= 0.0) {
            let msg = format!("field `attacks.epsilons[{i}]`: ε must be a finite number ≥ 0, got {v}");
            return Err(cx.err(e.span(), msg));
        }
        if epsilons.contains(&v) {
            let msg = format!(
                "field `attacks.epsilons[{i}]`: ε = {v} is listed twice (its rows would count twice)"
            );
            return Err(cx.err(e.span(), msg));
        }
        epsilons.push(v);
    }
    Ok(epsilons)
}

/// `metrics.top_k`: one k or a list of distinct k, each ≥ 1.
fn parse_metric_ks(cx: &Ctx, top_k: &Spanned<KList>) -> Result<Vec<usize>> {
    let ks = match top_k.get_ref() {
        KList::One(k) => vec![*k],
        KList::Many(v) => v.clone(),
    };
    let distinct = ks.iter().enumerate().all(|(i, k)| !ks[..i].contains(k));
    if ks.is_empty() || ks.contains(&0) || !distinct {
        let msg =
            format!("field `metrics.top_k` must be one k or a list of distinct k, each ≥ 1; got {ks:?}");
        return Err(cx.err(top_k.span(), msg));
    }
    Ok(ks)
}

/// Whether `[attacks] names` lists `name`.
fn attack_listed(raw: &RawConfig, name: &str) -> bool {
    raw.attacks.as_ref().is_some_and(|a| a.names.get_ref().iter().any(|m| m.get_ref() == name))
}

/// Every input file the study reads, by its field: what the fingerprint hashes.
fn study_inputs(
    raw: &RawConfig,
    base: &Path,
    models: &[ModelPlan],
    images: &Path,
    labels: &Option<PathBuf>,
    classes: &Option<PathBuf>,
) -> Vec<(String, PathBuf)> {
    let attack_listed = |n: &str| attack_listed(raw, n);
    let mut inputs: Vec<(String, PathBuf)> = match models {
        [one] => vec![("model.weights".to_string(), one.weights.clone())],
        several => {
            several.iter().map(|m| (format!("model.{}.weights", m.label), m.weights.clone())).collect()
        }
    };
    inputs.push(("data.images".to_string(), images.to_path_buf()));
    inputs.extend(labels.iter().map(|l| ("data.labels".to_string(), l.clone())));
    inputs.extend(classes.iter().map(|c| ("data.classes".to_string(), c.clone())));
    if let (true, Some(m)) = (
        attack_listed("targeted"),
        raw.attacks.as_ref().and_then(|a| a.targeted.as_ref()?.get_ref().mask.clone()),
    ) {
        inputs.push(("attacks.targeted.mask".to_string(), base.join(m)));
    }
    if let (true, Some(m)) = (
        attack_listed("manipulate"),
        raw.attacks.as_ref().and_then(|a| a.manipulate.as_ref()?.get_ref().target_map.clone()),
    ) {
        inputs.push(("attacks.manipulate.target_map".to_string(), base.join(m)));
    }
    inputs
}

/// Every method's settings from `[methods]`, checked: what builds a method (listed, wrapped
/// by a noise tunnel, or steered by an attack) from its name.
struct MethodFactory {
    ig: IntegratedGradients,
    cam: GradCam,
    rollout: AttentionRollout,
    occlusion: Occlusion,
    lime: Lime,
    shap: KernelShap,
    /// Every LRP composite with its settings.
    lrp: Vec<Composite>,
    noise: NoiseSettings,
    seed: u64,
}

impl MethodFactory {
    /// Reads and checks `[methods]`' settings tables (not yet the names).
    fn parse(cx: &Ctx, raw: &RawConfig, model_name: &str) -> Result<Self> {
        let m = &raw.methods;
        let bad = |span: std::ops::Range<usize>, msg: &str| cx.err(span, msg.into());
        let ig = match &m.integrated_gradients {
            Some(s) if s.get_ref().steps == 0 => {
                return Err(bad(s.span(), "field `methods.integrated_gradients.steps` must be at least 1"))
            }
            Some(s) => *s.get_ref(),
            None => IntegratedGradients::default(),
        };
        // One layer setting for the CAM family and guided Grad-CAM; the model checks the name.
        let mut cam = m.grad_cam.as_ref().map(|c| c.get_ref().clone()).unwrap_or_default();
        if cam.layer.is_empty() {
            // An ONNX model's default is known once it is read: "" asks the model for it.
            cam.layer = crate::model::default_layer(model_name).unwrap_or_default().to_string();
        }
        let rollout = match &m.attention_rollout {
            Some(r) => {
                let v = *r.get_ref();
                v.validate()
                    .map_err(|e| bad(r.span(), &format!("field `methods.attention_rollout`: {e}")))?;
                v
            }
            None => AttentionRollout::default(),
        };
        let occlusion = match &m.occlusion {
            Some(o) => {
                let v = *o.get_ref();
                if v.window.is_some_and(|w| w.contains(&0)) || v.stride == Some(0) || !v.baseline.is_finite()
                {
                    let msg = "field `methods.occlusion`: `window` sizes and `stride` must be ≥ 1, `baseline` finite";
                    return Err(bad(o.span(), msg));
                }
                v
            }
            None => Occlusion::default(),
        };
        let lime = match &m.lime {
            Some(l) => {
                let v = *l.get_ref();
                let width_ok = v.kernel_width.is_finite() && v.kernel_width > 0.0;
                if v.samples < 2 || v.cell == Some(0) || !width_ok || v.ridge.is_nan() || v.ridge < 0.0 {
                    let msg =
                        "field `methods.lime`: `samples` ≥ 2, `cell` ≥ 1, `kernel_width` > 0, `ridge` ≥ 0";
                    return Err(bad(l.span(), msg));
                }
                Lime { seed: raw.seed, ..v }
            }
            None => Lime { seed: raw.seed, ..Lime::default() },
        };
        let shap = match &m.kernel_shap {
            Some(k) => {
                let v = *k.get_ref();
                if v.samples == 0 || v.cell == Some(0) || v.exact_max_features > 20 {
                    let msg =
                        "field `methods.kernel_shap`: `samples` ≥ 1, `cell` ≥ 1, `exact_max_features` ≤ 20";
                    return Err(bad(k.span(), msg));
                }
                KernelShap { seed: raw.seed, ..v }
            }
            None => KernelShap { seed: raw.seed, ..KernelShap::default() },
        };
        let mut lrp = Vec::with_capacity(COMPOSITES.len());
        for kind in COMPOSITES {
            let mut c = Composite::of(kind);
            if let Some(t) = m.lrp(kind) {
                let (v, field) = (t.get_ref(), format!("methods.{}", kind.name()));
                if kind != CompositeKind::EpsilonGammaBox && (v.gamma.or(v.low).or(v.high)).is_some() {
                    let msg = format!(
                        "field `{field}`: `gamma`, `low` and `high` are settings of lrp_epsilon_gamma_box only"
                    );
                    return Err(cx.err(t.span(), msg));
                }
                c.epsilon = v.epsilon.unwrap_or(c.epsilon);
                c.stabilizer = v.stabilizer.unwrap_or(c.stabilizer);
                c.gamma = v.gamma.unwrap_or(c.gamma);
                c.low = v.low.unwrap_or(c.low);
                c.high = v.high.unwrap_or(c.high);
                c.first_layer = v.first_layer;
                c.validate().map_err(|e| cx.err(t.span(), format!("field `{field}`: {e}")))?;
            }
            lrp.push(c);
        }
        let mut factory = Self {
            ig,
            cam,
            rollout,
            occlusion,
            lime,
            shap,
            lrp,
            noise: NoiseSettings::default(),
            seed: raw.seed,
        };
        if let Some(s) = &m.smoothgrad {
            let v = s.get_ref().clone();
            if v.samples == 0 || !(v.sigma >= 0.0 && v.sigma.is_finite()) {
                let msg =
                    "field `methods.smoothgrad`: `samples` must be at least 1 and `sigma` finite and ≥ 0";
                return Err(bad(s.span(), msg));
            }
            if factory.base(&v.wrap).is_none() {
                let wrappable: Vec<&str> =
                    METHOD_NAMES.iter().filter(|m| !NOISE_METHODS.contains(m)).copied().collect();
                return Err(cx.err(
                    s.span(),
                    format!(
                        "field `methods.smoothgrad.wrap`: `{}` is not a method that can be wrapped (known: {})",
                        v.wrap,
                        wrappable.join(", ")
                    ),
                ));
            }
            factory.noise = v;
        }
        Ok(factory)
    }

    /// A method that wraps nothing, with its configured settings (`None` for a noise tunnel or
    /// an unknown name).
    fn base(&self, name: &str) -> Option<Arc<dyn Attribution>> {
        if let Some(kind) = CamWeighting::by_name(name) {
            return Some(Arc::new(GradCam { kind, ..self.cam.clone() }));
        }
        if let Some(c) = self.lrp.iter().find(|c| c.kind.name() == name) {
            return Some(Arc::new(Lrp { composite: *c }));
        }
        match name {
            "integrated_gradients" => Some(Arc::new(self.ig)),
            "occlusion" => Some(Arc::new(self.occlusion)),
            "lime" => Some(Arc::new(self.lime)),
            "kernel_shap" => Some(Arc::new(self.shap)),
            "guided_grad_cam" => Some(Arc::new(GuidedGradCam { cam: self.cam.clone() })),
            "score_cam" => Some(Arc::new(ScoreCam { layer: self.cam.layer.clone() })),
            "eigen_cam" => Some(Arc::new(EigenCam { layer: self.cam.layer.clone() })),
            "ablation_cam" => Some(Arc::new(AblationCam { layer: self.cam.layer.clone() })),
            "attention_rollout" => Some(Arc::new(self.rollout)),
            n if NOISE_METHODS.contains(&n) => None,
            n => by_name(n, self.seed).map(Arc::from),
        }
    }

    /// The method `name` (given in `field`), noise tunnels wrapping `methods.smoothgrad.wrap`,
    /// `<method>_beta_smooth<β>` the method on the softplus(β) network.
    fn make(&self, cx: &Ctx, name: &Spanned<String>, field: &str) -> Result<Arc<dyn Attribution>> {
        self.build(name.get_ref()).map_err(|e| cx.err(name.span(), format!("field `{field}`: {e}")))
    }

    /// [`MethodFactory::make`] by name alone; the error says why the name builds nothing.
    fn build(&self, name: &str) -> std::result::Result<Arc<dyn Attribution>, String> {
        beta_smooth::resolve(name, &|n| self.plain(n))
    }

    /// A listed method that is not β-smoothed, if `name` is one.
    fn plain(&self, name: &str) -> Option<Arc<dyn Attribution>> {
        let aggregate = match name {
            "smoothgrad" => Aggregate::Mean,
            "smoothgrad_sq" => Aggregate::MeanSquare,
            "vargrad" => Aggregate::Variance,
            n => return self.base(n),
        };
        let inner = self.base(&self.noise.wrap)?;
        Some(Arc::new(NoiseTunnel::new(aggregate, self.noise.clone(), self.seed, inner)))
    }

    /// The methods of `methods.names`: at least one, none twice.
    fn listed(&self, cx: &Ctx, names: &Spanned<Vec<Spanned<String>>>) -> Result<Vec<Arc<dyn Attribution>>> {
        if names.get_ref().is_empty() {
            return Err(cx.err(names.span(), "field `methods.names` lists no method".into()));
        }
        let mut methods = Vec::new();
        for (i, n) in names.get_ref().iter().enumerate() {
            if names.get_ref()[..i].iter().any(|m| m.get_ref() == n.get_ref()) {
                return Err(
                    cx.err(n.span(), format!("field `methods.names`: `{}` is listed twice", n.get_ref()))
                );
            }
            let method = self.make(cx, n, "methods.names")?;
            // Two spellings of one smoothed method (`…_beta_smooth3.0`, `…_beta_smooth3`).
            if methods.iter().any(|m: &Arc<dyn Attribution>| m.name() == method.name()) {
                let msg =
                    format!("field `methods.names`: `{}` is `{}`, listed before", n.get_ref(), method.name());
                return Err(cx.err(n.span(), msg));
            }
            methods.push(method);
        }
        Ok(methods)
    }
}

type MethodMaker<'a> = dyn Fn(&Spanned<String>, &str) -> Result<Arc<dyn Attribution>> + 'a;

/// The fields of a steered attack's table that only some attacks take.
const ONLY_FOR: [(&str, &str); 5] = [
    ("k", "top_k"),
    ("region", "targeted"),
    ("mask", "targeted"),
    ("target_image", "manipulate"),
    ("target_map", "manipulate"),
];

/// Builds `attacks.names` × `attacks.target_method` (the steered attacks get one instance per
/// target method; the random baselines one in all).
fn build_attacks(
    cx: &Ctx,
    a: &RawAttacks,
    make_method: &MethodMaker,
    data: &DataSource,
) -> Result<Vec<Arc<dyn Attack>>> {
    let target_span = a.target_method.span();
    let target_names: Vec<String> = match a.target_method.get_ref() {
        OneOrMany::One(n) => vec![n.clone()],
        OneOrMany::Many(v) => v.clone(),
    };
    if target_names.is_empty() {
        return Err(cx.err(target_span, "field `attacks.target_method` lists no method".into()));
    }
    let mut targets = Vec::new();
    for (i, n) in target_names.iter().enumerate() {
        if target_names[..i].contains(n) {
            return Err(
                cx.err(target_span.clone(), format!("field `attacks.target_method`: `{n}` is listed twice"))
            );
        }
        targets.push(make_method(&Spanned::new(target_span.clone(), n.clone()), "attacks.target_method")?);
    }
    let section = |name: &str| -> Option<&Spanned<RawSteer>> {
        match name {
            "random_walk" => a.random_walk.as_ref(),
            "top_k" => a.top_k.as_ref(),
            "mass_center" => a.mass_center.as_ref(),
            "targeted" => a.targeted.as_ref(),
            "manipulate" => a.manipulate.as_ref(),
            _ => None,
        }
    };
    // Fields that do not apply to an attack are errors, not silently ignored.
    for name in ["random_walk", "top_k", "mass_center", "targeted", "manipulate"] {
        let Some(sec) = section(name) else { continue };
        for field in sec.get_ref().given() {
            let applies = match name {
                "random_walk" => matches!(field, "iterations" | "step" | "step_absolute"),
                _ => ONLY_FOR.iter().all(|(f, who)| *f != field || *who == name),
            };
            if !applies {
                return Err(
                    cx.err(sec.span(), format!("field `attacks.{name}.{field}` does not apply to {name}"))
                );
            }
        }
    }
    let settings_of = |name: &str, defaults: IterSettings| -> Result<IterSettings> {
        match section(name) {
            Some(sec) => sec
                .get_ref()
                .settings(defaults)
                .map_err(|e| cx.err(sec.span(), format!("field `attacks.{name}`: {e}"))),
            None => Ok(defaults),
        }
    };
    let names = a.names.get_ref();
    let mut attacks: Vec<Arc<dyn Attack>> = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let name = n.get_ref().as_str();
        if names[..i].iter().any(|m| m.get_ref() == n.get_ref()) {
            return Err(cx.err(n.span(), format!("field `attacks.names`: `{name}` is listed twice")));
        }
        let objective: Arc<dyn Objective> = match name {
            "random_sign" => {
                attacks.push(Arc::new(a.random_sign.as_ref().map(|s| *s.get_ref()).unwrap_or_default()));
                continue;
            }
            "random_walk" => {
                // Same budget as top_k unless given: the fair baseline of the steered attacks.
                let budget = settings_of("top_k", IterSettings::ghorbani())?;
                attacks.push(Arc::new(RandomWalk { settings: settings_of("random_walk", budget)? }));
                continue;
            }
            "top_k" => {
                // Unset: auto_k of the image size, resolved when the maps are known.
                let k = a.top_k.as_ref().and_then(|s| s.get_ref().k);
                if k == Some(0) {
                    return Err(cx.err(
                        a.top_k.as_ref().map_or(0..0, |s| s.span()),
                        "field `attacks.top_k.k` must be at least 1".into(),
                    ));
                }
                Arc::new(TopKObjective { k })
            }
            "mass_center" => Arc::new(MassCenterObjective),
            "targeted" => Arc::new(TargetedObjective { region: region(cx, a.targeted.as_ref())? }),
            "manipulate" => {
                Arc::new(ManipulateObjective { target: target_map(cx, a.manipulate.as_ref(), data)? })
            }
            other => {
                return Err(cx.err(
                    n.span(),
                    format!(
                        "field `attacks.names`: unknown attack `{other}` (known: {})",
                        ATTACK_NAMES.join(", ")
                    ),
                ))
            }
        };
        let defaults =
            if name == "manipulate" { IterSettings::dombrowski() } else { IterSettings::ghorbani() };
        let settings = settings_of(name, defaults)?;
        for method in &targets {
            if !method.differentiable() {
                return Err(cx.err(
                    target_span.clone(),
                    format!(
                        "field `attacks.target_method`: `{}`'s map is not differentiable through the surrogate, so \
                         `{name}` cannot steer it (attack a differentiable method and measure this one by transfer)",
                        method.name()
                    ),
                ));
            }
            attacks.push(Arc::new(Steered {
                objective: objective.clone(),
                method: method.clone(),
                settings,
            }));
        }
    }
    if attacks.is_empty() {
        return Err(cx.err(a.names.span(), "field `attacks.names` lists no attack".into()));
    }
    Ok(attacks)
}

/// The `targeted` attack's region: `region = [x0, y0, x1, y1]` or `mask = "file"`.
fn region(cx: &Ctx, sec: Option<&Spanned<RawSteer>>) -> Result<Region> {
    let missing = || {
        cx.err(
            sec.map_or(0..0, |s| s.span()),
            "field `attacks.targeted`: give the target region as `region = [x0, y0, x1, y1]` (pixels, \
             end-exclusive) or `mask = \"file.npy\"` (or .png)"
                .into(),
        )
    };
    let sec = sec.ok_or_else(missing)?;
    match (&sec.get_ref().region, &sec.get_ref().mask) {
        (Some(_), Some(_)) => {
            Err(cx.err(sec.span(), "field `attacks.targeted`: give `region` or `mask`, not both".into()))
        }
        (Some([x0, y0, x1, y1]), None) => {
            if x0 >= x1 || y0 >= y1 {
                return Err(cx.err(
                    sec.span(),
                    format!("field `attacks.targeted.region`: [{x0}, {y0}, {x1}, {y1}] is empty (need x0 < x1, y0 < y1)"),
                ));
            }
            Ok(Region::Rect { x0: *x0, y0: *y0, x1: *x1, y1: *y1 })
        }
        (None, Some(m)) => {
            let path = cx.path("attacks.targeted.mask", &Spanned::new(sec.span(), m.clone()))?;
            let map = crate::data::load_map(&path)?;
            Ok(Region::Mask { path, data: map.data, h: map.h, w: map.w })
        }
        (None, None) => Err(missing()),
    }
}

/// Where `[data]`'s images come from and how they are prepared: the `manipulate` attack's
/// `target_image` is read as the study reads its images, so that the id names the same image
/// at the same size (resized, cropped and converted as `[data]` says).
struct DataSource<'a> {
    images: &'a Path,
    labels: Option<&'a Path>,
    classes: Option<&'a Path>,
    opts: &'a ImageOptions,
}

/// The `manipulate` attack's target: `target_image = id` or `target_map = "file"`.
fn target_map(cx: &Ctx, sec: Option<&Spanned<RawSteer>>, data: &DataSource) -> Result<TargetMap> {
    let missing = || {
        cx.err(
            sec.map_or(0..0, |s| s.span()),
            "field `attacks.manipulate`: give the target as `target_image = N` (an image of the data file) \
             or `target_map = \"file.npy\"` (or .png)"
                .into(),
        )
    };
    let sec = sec.ok_or_else(missing)?;
    match (sec.get_ref().target_image, &sec.get_ref().target_map) {
        (Some(_), Some(_)) => Err(cx.err(
            sec.span(),
            "field `attacks.manipulate`: give `target_image` or `target_map`, not both".into(),
        )),
        (Some(id), None) => {
            let images = data.images;
            // A folder's labels CSV orders nothing and a file's labels are not read here.
            let labels = data.labels.filter(|_| images.is_dir());
            let set = crate::data::load_images_with(images, data.opts, data.classes, labels)?;
            if id >= set.n {
                return Err(cx.err(
                    sec.span(),
                    format!(
                        "field `attacks.manipulate.target_image`: {id} is out of range ({} has {} images)",
                        images.display(),
                        set.n
                    ),
                ));
            }
            let pixels = candle_core::Tensor::from_vec(
                set.image(id).to_vec(),
                (1, set.c, set.h, set.w),
                &Device::Cpu,
            )?;
            Ok(TargetMap::Image { id, pixels })
        }
        (None, Some(m)) => {
            let path = cx.path("attacks.manipulate.target_map", &Spanned::new(sec.span(), m.clone()))?;
            let map = crate::data::load_map(&path)?;
            Ok(TargetMap::File { path, data: map.data, h: map.h, w: map.w })
        }
        (None, None) => Err(missing()),
    }
}

//! Run configuration: TOML parsed once into a validated [`Plan`].
//!
//! The raw structs mirror the file (serde, `deny_unknown_fields`); [`Plan::load`] checks every
//! value and resolves paths (relative to the config file's folder), methods and attacks, so
//! nothing downstream reads TOML. Every error names the file, the line and the field.
//! See `experiments/fragility.toml` for a commented example of every key.

use crate::attack::{Attack, RandomSign, TopK, TopKSettings, ATTACK_NAMES};
use crate::attribution::{
    by_name, Aggregate, Attribution, GradCam, GuidedGradCam, IntegratedGradients, KernelShap, Lime,
    NoiseSettings, NoiseTunnel, Occlusion, METHOD_NAMES, NOISE_METHODS,
};
use crate::error::{Error, Result};
use candle_core::Device;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    seed: u64,
    #[serde(default = "default_device")]
    device: Spanned<String>,
    out: Spanned<String>,
    #[serde(default = "default_batch")]
    batch_size: Spanned<usize>,
    model: RawModel,
    data: RawData,
    methods: RawMethods,
    attacks: RawAttacks,
    #[serde(default)]
    metrics: RawMetrics,
}

fn default_device() -> Spanned<String> {
    Spanned::new(0..0, "cpu".into())
}

fn default_batch() -> Spanned<usize> {
    Spanned::new(0..0, 50)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: Spanned<String>,
    weights: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    images: Spanned<String>,
    labels: Option<Spanned<String>>,
    count: Option<Spanned<usize>>,
    #[serde(default = "yes")]
    correct_only: bool,
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
    occlusion: Option<Spanned<Occlusion>>,
    lime: Option<Spanned<Lime>>,
    kernel_shap: Option<Spanned<KernelShap>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttacks {
    names: Spanned<Vec<Spanned<String>>>,
    epsilons: Spanned<Vec<Spanned<f64>>>,
    #[serde(default = "default_target")]
    target_method: Spanned<String>,
    random_sign: Option<Spanned<RandomSign>>,
    top_k: Option<Spanned<TopKSettings>>,
}

fn default_target() -> Spanned<String> {
    Spanned::new(0..0, "gradient".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default = "default_k")]
    top_k: Spanned<usize>,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self { top_k: default_k() }
    }
}

fn default_k() -> Spanned<usize> {
    Spanned::new(0..0, 100)
}

/// A validated run: everything [`crate::run`] needs, with paths resolved.
pub struct Plan {
    /// The config file this plan came from.
    pub config_path: PathBuf,
    /// The one seed that fixes every random choice.
    pub seed: u64,
    /// Where tensors live.
    pub device: Device,
    /// Output folder (samples.parquet, summary.parquet, plots/, run.json).
    pub out: PathBuf,
    /// Images per chunk (each chunk is attacked at every ε at once).
    pub batch_size: usize,
    /// Model architecture name.
    pub model: String,
    /// Safetensors weights.
    pub weights: PathBuf,
    /// Image file (idx or npy).
    pub images: PathBuf,
    /// Label file, if any (needed for `correct_only`).
    pub labels: Option<PathBuf>,
    /// How many images to study (after filtering); all if `None`.
    pub count: Option<usize>,
    /// Keep only images the model classifies correctly (as the paper does).
    pub correct_only: bool,
    /// Attribution methods to measure.
    pub methods: Vec<Arc<dyn Attribution>>,
    /// Attacks to run.
    pub attacks: Vec<Arc<dyn Attack>>,
    /// L∞ budgets on the [0,1] pixel scale.
    pub epsilons: Vec<f64>,
    /// k of the top-k intersection metric.
    pub metric_k: usize,
    /// The resolved settings, for run.json.
    pub resolved: serde_json::Value,
}

/// The 1-based line of byte `offset` in `text` (for error messages about TOML files).
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
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
        if !p.exists() {
            return Err(
                self.err(value.span(), format!("field `{field}`: file {} does not exist", p.display()))
            );
        }
        Ok(p)
    }
}

impl Plan {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Plan> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
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
        if raw.model.name.get_ref() != "fmnist_cnn" {
            return Err(cx.err(
                raw.model.name.span(),
                format!(
                    "field `model.name`: unknown model `{}` (known: fmnist_cnn)",
                    raw.model.name.get_ref()
                ),
            ));
        }
        let weights = cx.path("model.weights", &raw.model.weights)?;
        let images = cx.path("data.images", &raw.data.images)?;
        let labels = raw.data.labels.as_ref().map(|l| cx.path("data.labels", l)).transpose()?;
        if raw.data.correct_only && labels.is_none() {
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

        let ig = match &raw.methods.integrated_gradients {
            Some(s) => {
                let v = *s.get_ref();
                if v.steps == 0 {
                    return Err(cx.err(
                        s.span(),
                        "field `methods.integrated_gradients.steps` must be at least 1".into(),
                    ));
                }
                v
            }
            None => IntegratedGradients::default(),
        };
        // One layer setting for Grad-CAM and guided Grad-CAM; the model checks the name.
        let cam = raw.methods.grad_cam.as_ref().map(|c| c.get_ref().clone()).unwrap_or_default();
        let unknown = |name: &Spanned<String>, field: &str| {
            cx.err(
                name.span(),
                format!(
                    "field `{field}`: unknown method `{}` (known: {})",
                    name.get_ref(),
                    METHOD_NAMES.join(", ")
                ),
            )
        };
        let occlusion = match &raw.methods.occlusion {
            Some(o) => {
                let v = *o.get_ref();
                if v.window.contains(&0) || v.stride == 0 || !v.baseline.is_finite() {
                    return Err(cx.err(
                        o.span(),
                        "field `methods.occlusion`: `window` sizes and `stride` must be ≥ 1, `baseline` finite".into(),
                    ));
                }
                v
            }
            None => Occlusion::default(),
        };
        let lime = match &raw.methods.lime {
            Some(l) => {
                let v = *l.get_ref();
                let width_ok = v.kernel_width.is_finite() && v.kernel_width > 0.0;
                if v.samples < 2 || v.cell == 0 || !width_ok || v.ridge.is_nan() || v.ridge < 0.0 {
                    return Err(cx.err(
                        l.span(),
                        "field `methods.lime`: `samples` ≥ 2, `cell` ≥ 1, `kernel_width` > 0, `ridge` ≥ 0"
                            .into(),
                    ));
                }
                Lime { seed: raw.seed, ..v }
            }
            None => Lime { seed: raw.seed, ..Lime::default() },
        };
        let shap = match &raw.methods.kernel_shap {
            Some(k) => {
                let v = *k.get_ref();
                if v.samples == 0 || v.cell == 0 || v.exact_max_features > 20 {
                    return Err(cx.err(
                        k.span(),
                        "field `methods.kernel_shap`: `samples` ≥ 1, `cell` ≥ 1, `exact_max_features` ≤ 20"
                            .into(),
                    ));
                }
                KernelShap { seed: raw.seed, ..v }
            }
            None => KernelShap { seed: raw.seed, ..KernelShap::default() },
        };
        // Methods that wrap nothing, with their configured settings.
        let base_method = |name: &str| -> Option<Arc<dyn Attribution>> {
            match name {
                "integrated_gradients" => Some(Arc::new(ig)),
                "grad_cam" => Some(Arc::new(cam.clone())),
                "occlusion" => Some(Arc::new(occlusion)),
                "lime" => Some(Arc::new(lime)),
                "kernel_shap" => Some(Arc::new(shap)),
                "guided_grad_cam" => Some(Arc::new(GuidedGradCam { cam: cam.clone() })),
                n if NOISE_METHODS.contains(&n) => None,
                n => by_name(n, raw.seed).map(Arc::from),
            }
        };
        let noise = match &raw.methods.smoothgrad {
            Some(s) => {
                let v = s.get_ref().clone();
                if v.samples == 0 || !(v.sigma >= 0.0 && v.sigma.is_finite()) {
                    return Err(cx.err(
                        s.span(),
                        "field `methods.smoothgrad`: `samples` must be at least 1 and `sigma` finite and ≥ 0"
                            .into(),
                    ));
                }
                if base_method(&v.wrap).is_none() {
                    return Err(cx.err(
                        s.span(),
                        format!(
                            "field `methods.smoothgrad.wrap`: `{}` is not a method that can be wrapped (known: {})",
                            v.wrap,
                            METHOD_NAMES.iter().filter(|m| !NOISE_METHODS.contains(m)).copied().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                v
            }
            None => NoiseSettings::default(),
        };
        let make_method = |name: &Spanned<String>, field: &str| -> Result<Arc<dyn Attribution>> {
            let aggregate = match name.get_ref().as_str() {
                "smoothgrad" => Aggregate::Mean,
                "smoothgrad_sq" => Aggregate::MeanSquare,
                "vargrad" => Aggregate::Variance,
                n => return base_method(n).ok_or_else(|| unknown(name, field)),
            };
            let inner = base_method(&noise.wrap).ok_or_else(|| unknown(name, field))?;
            Ok(Arc::new(NoiseTunnel::new(aggregate, noise.clone(), raw.seed, inner)))
        };
        if raw.methods.names.get_ref().is_empty() {
            return Err(cx.err(raw.methods.names.span(), "field `methods.names` lists no method".into()));
        }
        let mut methods = Vec::new();
        for (i, n) in raw.methods.names.get_ref().iter().enumerate() {
            if raw.methods.names.get_ref()[..i].iter().any(|m| m.get_ref() == n.get_ref()) {
                return Err(
                    cx.err(n.span(), format!("field `methods.names`: `{}` is listed twice", n.get_ref()))
                );
            }
            methods.push(make_method(n, "methods.names")?);
        }

        let eps_list = raw.attacks.epsilons.get_ref();
        if eps_list.is_empty() {
            return Err(cx.err(raw.attacks.epsilons.span(), "field `attacks.epsilons` is empty".into()));
        }
        let mut epsilons = Vec::new();
        for (i, e) in eps_list.iter().enumerate() {
            let v = *e.get_ref();
            if !(v.is_finite() && v >= 0.0) {
                return Err(cx.err(
                    e.span(),
                    format!("field `attacks.epsilons[{i}]`: ε must be a finite number ≥ 0, got {v}"),
                ));
            }
            epsilons.push(v);
        }
        let target = make_method(&raw.attacks.target_method, "attacks.target_method")?;
        let rs = raw.attacks.random_sign.as_ref().map(|s| *s.get_ref()).unwrap_or_default();
        let tk = match &raw.attacks.top_k {
            Some(s) => {
                let v = *s.get_ref();
                if v.k == 0 || !(v.step > 0.0 && v.step.is_finite()) || !(v.beta > 0.0 && v.beta.is_finite())
                {
                    return Err(cx.err(
                        s.span(),
                        "field `attacks.top_k`: `k` must be ≥ 1, `step` and `beta` finite and > 0".into(),
                    ));
                }
                v
            }
            None => TopKSettings::default(),
        };
        let mut attacks: Vec<Arc<dyn Attack>> = Vec::new();
        for n in raw.attacks.names.get_ref() {
            attacks.push(match n.get_ref().as_str() {
                "random_sign" => Arc::new(rs),
                "top_k" => Arc::new(TopK { settings: tk, method: target.clone() }),
                other => {
                    return Err(cx.err(
                        n.span(),
                        format!(
                            "field `attacks.names`: unknown attack `{other}` (known: {})",
                            ATTACK_NAMES.join(", ")
                        ),
                    ))
                }
            });
        }
        if attacks.is_empty() {
            return Err(cx.err(raw.attacks.names.span(), "field `attacks.names` lists no attack".into()));
        }
        let metric_k = *raw.metrics.top_k.get_ref();
        if metric_k == 0 {
            return Err(cx.err(raw.metrics.top_k.span(), "field `metrics.top_k` must be at least 1".into()));
        }

        let base = path.parent().unwrap_or(Path::new(""));
        let out = base.join(raw.out.get_ref());
        let resolved = serde_json::json!({
            "config": path.display().to_string(),
            "seed": raw.seed,
            "device": raw.device.get_ref(),
            "out": out.display().to_string(),
            "batch_size": raw.batch_size.get_ref(),
            "model": { "name": raw.model.name.get_ref(), "weights": weights.display().to_string() },
            "data": {
                "images": images.display().to_string(),
                "labels": labels.as_ref().map(|l| l.display().to_string()),
                "count": raw.data.count.as_ref().map(|c| *c.get_ref()),
                "correct_only": raw.data.correct_only,
            },
            "methods": methods.iter().map(|m| (m.name().to_string(), m.params())).collect::<serde_json::Map<_, _>>(),
            "attacks": attacks.iter().map(|a| (a.name().to_string(), a.params())).collect::<serde_json::Map<_, _>>(),
            "epsilons": epsilons,
            "metrics": { "top_k": metric_k },
        });
        Ok(Plan {
            config_path: path.to_path_buf(),
            seed: raw.seed,
            device,
            out,
            batch_size: *raw.batch_size.get_ref(),
            model: raw.model.name.into_inner(),
            weights,
            images,
            labels,
            count: raw.data.count.map(|c| c.into_inner()),
            correct_only: raw.data.correct_only,
            methods,
            attacks,
            epsilons,
            metric_k,
            resolved,
        })
    }
}

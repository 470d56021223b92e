//! `[model]` or `[[model]]`: the model, or the models, a study measures.
//!
//! One `[model]` table is a study of one model (the common case, and every study before
//! several models could be compared). Several `[[model]]` tables make one study of all of
//! them on the same images (issue 24): each table names its model as a single one does
//! (`name` + `weights`, or `onnx`; `normalize`), adds a `label` that names it in tables, plots
//! and the headline, and may set its own `resize`, `crop` and `channels` over `[data]`'s, since
//! models trained at different sizes study the same images at their own size (MobileNetV2 at
//! 64×64, ResNet-20 at 28×28). Everything else (methods, attacks, budgets, metrics, seed) is
//! the study's and the same for every model; only what a method resolves from its model
//! (Grad-CAM's default layer) differs, so methods and attacks are built per model.

use super::Ctx;
use crate::data::ImageOptions;
use crate::error::{Error, Result};
use crate::model::Normalize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

/// Most characters of a model's label (it goes into file names and table headers).
pub const MAX_LABEL: usize = 40;

/// One `[model]` or `[[model]]` table, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    /// How tables, plots and the headline name the model (several models only; default: the
    /// architecture's name or the ONNX file's stem).
    label: Option<Spanned<String>>,
    /// A built-in architecture (`fragility models`), with `weights`.
    name: Option<Spanned<String>>,
    weights: Option<Spanned<String>>,
    /// An ONNX file (weights inside), instead of `name` and `weights`.
    onnx: Option<Spanned<String>>,
    /// `"imagenet"` or `{ mean = [...], std = [...] }`.
    normalize: Option<Spanned<RawNormalize>>,
    /// This model's image size and channels, over `[data]`'s.
    resize: Option<Spanned<usize>>,
    crop: Option<Spanned<usize>>,
    channels: Option<Spanned<usize>>,
}

/// `normalize`: a preset name or explicit per-channel statistics.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawNormalize {
    Preset(String),
    Stats { mean: Vec<f32>, std: Vec<f32> },
}

/// `[model]` (a table) or `[[model]]` (an array of tables).
#[derive(Debug)]
pub(super) enum RawModels {
    One(Box<RawModel>),
    Many(Vec<RawModel>),
}

// By hand rather than `#[serde(untagged)]`: an untagged enum buffers its input, which loses
// the TOML spans (every error would lose its line) and turns a typo into "did not match any
// variant". Dispatching on the value's kind keeps toml's own errors and spans.
impl<'de> Deserialize<'de> for RawModels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Kind;
        impl<'de> Visitor<'de> for Kind {
            type Value = RawModels;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a [model] table or [[model]] tables")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<RawModels, A::Error> {
                RawModel::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|m| RawModels::One(Box::new(m)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<RawModels, A::Error> {
                Vec::<RawModel>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(RawModels::Many)
            }
        }
        d.deserialize_any(Kind)
    }
}

/// One model of a study, checked: where it comes from, how it sees the images, and the
/// methods and attacks as built for it.
pub struct ModelPlan {
    /// How tables, plots and the headline name the model: unique in the study, letters,
    /// digits, `-`, `_` and `.` only.
    pub label: String,
    /// Whether the config gave the label (a one-model study records it only then).
    pub label_given: bool,
    /// The architecture's name, or the ONNX file's path (see [`crate::model::is_onnx`]).
    pub name: String,
    /// Safetensors weights, or the ONNX file itself.
    pub weights: PathBuf,
    /// Input normalisation inside the model, if any.
    pub normalize: Option<Normalize>,
    /// Resize, crop and channel conversion of every image for this model: `[data]`'s, with
    /// the model's own settings over them.
    pub image_options: ImageOptions,
    /// The study's methods as built for this model (same names and order for every model).
    pub methods: Vec<std::sync::Arc<dyn crate::attribution::Attribution>>,
    /// The study's attacks as built for this model (same names and order for every model).
    pub attacks: Vec<std::sync::Arc<dyn crate::attack::Attack>>,
}

impl ModelPlan {
    /// The model as `run.json` records it (and the fingerprint hashes it). A one-model study
    /// records exactly what it did before several models existed (its resize lives in
    /// `data`), so its fingerprint is unchanged.
    /// The model's settings as run.json records them, its files as the config wrote them
    /// (relative to the config's folder `base`, see [`super::as_written`]).
    pub(super) fn settings_json(&self, several: bool, base: &std::path::Path) -> serde_json::Value {
        let mut v = serde_json::json!({
            // An ONNX model's name is its file.
            "name": super::as_written(base, std::path::Path::new(&self.name)),
            "weights": super::as_written(base, &self.weights),
            "normalize": self.normalize,
        });
        if several || self.label_given {
            v["label"] = serde_json::json!(self.label);
        }
        if several {
            v["resize"] = serde_json::json!(self.image_options.resize);
            v["crop"] = serde_json::json!(self.image_options.crop);
            v["channels"] = serde_json::json!(self.image_options.channels);
        }
        v
    }
}

/// The models of `raw` (at least one, labels unique), each with `[data]`'s image options
/// (`data`, spanned at `data_span` for errors) under its own; their methods and attacks are
/// left empty for the caller to build (they need the whole config).
pub(super) fn sources(
    cx: &Ctx,
    raw: &RawModels,
    data: &ImageOptions,
    data_span: std::ops::Range<usize>,
) -> Result<Vec<ModelPlan>> {
    let tables: Vec<(&RawModel, String)> = match raw {
        RawModels::One(m) => vec![(m.as_ref(), "model".to_string())],
        RawModels::Many(v) if v.is_empty() => {
            return Err(
                cx.err(0..0, "`model` lists no model: give a [model] table or [[model]] tables".into())
            )
        }
        RawModels::Many(v) => v.iter().enumerate().map(|(i, m)| (m, format!("model[{i}]"))).collect(),
    };
    let mut out: Vec<ModelPlan> = Vec::new();
    for (m, field) in tables {
        let s = source(cx, m, &field, data, data_span.clone())?;
        if let Some(first) = out.iter().find(|o| o.label == s.label) {
            let span = m.label.as_ref().map_or(0..0, |l| l.span());
            return Err(cx.err(
                span,
                format!(
                    "field `{field}.label`: `{}` names two models ({} and {}); give each [[model]] its own `label`",
                    s.label, first.name, s.name
                ),
            ));
        }
        out.push(s);
    }
    Ok(out)
}

/// One model table, checked (`field` is how errors name it: `model` or `model[i]`).
fn source(
    cx: &Ctx,
    m: &RawModel,
    field: &str,
    data: &ImageOptions,
    data_span: std::ops::Range<usize>,
) -> Result<ModelPlan> {
    let (name, weights) = origin(cx, m, field)?;
    let normalize = match &m.normalize {
        None => None,
        Some(n) => Some(
            match n.get_ref() {
                RawNormalize::Preset(p) if p == "imagenet" => Ok(Normalize::imagenet()),
                RawNormalize::Preset(p) => Err(format!("unknown preset `{p}` (known: imagenet)")),
                RawNormalize::Stats { mean, std } => Normalize::new(mean.clone(), std.clone()),
            }
            .map_err(|e| cx.err(n.span(), format!("field `{field}.normalize`: {e}")))?,
        ),
    };
    let own = |v: &Option<Spanned<usize>>| v.as_ref().map(|v| *v.get_ref());
    let image_options = ImageOptions {
        resize: own(&m.resize).or(data.resize),
        crop: own(&m.crop).or(data.crop),
        channels: own(&m.channels).or(data.channels),
    };
    if let Err(e) = image_options.validate() {
        let span = [&m.resize, &m.crop, &m.channels].iter().find_map(|v| v.as_ref().map(|v| v.span()));
        let place = if span.is_some() { format!("table `{field}`") } else { "section `data`".into() };
        return Err(cx.err(span.unwrap_or(data_span), format!("{place}: {e}")));
    }
    let (label, label_given) = match &m.label {
        Some(l) => {
            check_label(l.get_ref()).map_err(|e| cx.err(l.span(), format!("field `{field}.label`: {e}")))?;
            (l.get_ref().clone(), true)
        }
        None => {
            let label = default_label(&name);
            let span = m.name.as_ref().or(m.onnx.as_ref()).map_or(0..0, |s| s.span());
            check_label(&label).map_err(|e| {
                cx.err(
                    span,
                    format!("table `{field}`: its default label `{label}` will not do ({e}); give a `label`"),
                )
            })?;
            (label, false)
        }
    };
    let (methods, attacks) = (Vec::new(), Vec::new());
    Ok(ModelPlan { label, label_given, name, weights, normalize, image_options, methods, attacks })
}

/// The model's source: (model name, weights file). An ONNX model's name is its resolved path
/// (ending in `.onnx`, see [`crate::model::is_onnx`]), and it is its own weights file.
fn origin(cx: &Ctx, m: &RawModel, field: &str) -> Result<(String, PathBuf)> {
    match (&m.name, &m.weights, &m.onnx) {
        (None, None, Some(onnx)) => {
            let p = cx.path(&format!("{field}.onnx"), onnx)?;
            if !crate::model::is_onnx(&p.to_string_lossy()) {
                return Err(
                    cx.err(onnx.span(), format!("field `{field}.onnx`: {} does not end in .onnx", p.display()))
                );
            }
            Ok((p.to_string_lossy().into_owned(), p))
        }
        (Some(name), Some(weights), None) => {
            if !crate::model::model_names().contains(&name.get_ref().as_str()) {
                return Err(cx.err(
                    name.span(),
                    format!(
                        "field `{field}.name`: unknown model `{}` (known: {}; an ONNX file goes in `{field}.onnx`)",
                        name.get_ref(),
                        crate::model::model_names().join(", ")
                    ),
                ));
            }
            Ok((name.get_ref().clone(), cx.path(&format!("{field}.weights"), weights)?))
        }
        (_, _, Some(onnx)) => Err(cx.err(
            onnx.span(),
            format!("field `{field}.onnx`: an ONNX file holds its own weights; give it without `name` and `weights`"),
        )),
        (Some(name), None, None) => Err(cx.err(
            name.span(),
            format!("field `{field}.weights` is missing (the safetensors state_dict)"),
        )),
        (None, Some(w), None) => {
            Err(cx.err(w.span(), format!("field `{field}.name` is missing (`fragility models` lists them)")))
        }
        (None, None, None) => {
            let span = m.label.as_ref().map_or(0..0, |l| l.span());
            Err(cx.err(span, format!("table `{field}` needs `name` and `weights`, or `onnx`")))
        }
    }
}

/// A model's label when the config gives none: the architecture, or the ONNX file's stem.
fn default_label(name: &str) -> String {
    if crate::model::is_onnx(name) {
        let stem = std::path::Path::new(name).file_stem().map(|s| s.to_string_lossy().into_owned());
        stem.unwrap_or_default()
    } else {
        name.to_string()
    }
}

/// A label goes into file names and table headers: 1 to [`MAX_LABEL`] letters, digits, `-`,
/// `_` or `.`, not starting with `.`.
pub fn check_label(label: &str) -> std::result::Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if label.is_empty() || label.len() > MAX_LABEL || label.starts_with('.') || !label.chars().all(ok) {
        return Err(format!(
            "a label is 1 to {MAX_LABEL} letters, digits, `-`, `_` or `.` (not starting with `.`), got {label:?}"
        ));
    }
    Ok(())
}

/// The error for a model setting that needs the model and its images, naming the model in a
/// study of several (`several`).
pub fn in_model(several: bool, label: &str, e: Error) -> Error {
    if !several {
        return e;
    }
    match e {
        Error::Config { file, line, message } => {
            Error::Config { file, line, message: format!("model `{label}`: {message}") }
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Plan;
    use super::*;
    use std::path::Path;

    /// A study config of `models` (TOML tables) on the shipped images, parsed as if written
    /// in the repository's `experiments/` folder.
    fn plan(models: &str, data: &str) -> crate::error::Result<Plan> {
        let text = format!(
            "out = \"../target/unused-out\"\n{models}\n[data]\nimages = \"../assets/fashion-mnist/t10k-images-1000-idx3-ubyte.gz\"\n\
             labels = \"../assets/fashion-mnist/t10k-labels-1000-idx1-ubyte.gz\"\n{data}\n\
             [methods]\nnames = [\"gradient\", \"grad_cam\"]\n[attacks]\nnames = [\"random_sign\"]\nepsilons = [0.1]\n"
        );
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/test.toml");
        Plan::parse(&path, &text)
    }

    const CNN: &str = "name = \"fmnist_cnn\"\nweights = \"../assets/models/fmnist_cnn.safetensors\"\n";
    const RESNET: &str = "onnx = \"../assets/models/cifar_resnet20_fmnist.onnx\"\n";
    const MOBILENET: &str =
        "name = \"mobilenet_v2\"\nweights = \"../assets/models/mobilenet_v2_fmnist.safetensors\"\n";

    #[test]
    fn one_model_is_recorded_as_before_several_existed() {
        let p = plan(&format!("[model]\n{CNN}"), "resize = 32").unwrap();
        assert!(!p.several_models());
        let v = &p.resolved;
        assert_eq!(v["model"]["name"], "fmnist_cnn");
        assert!(v["model"].get("label").is_none() && v.get("models").is_none());
        assert_eq!(v["data"]["resize"], 32);
        assert_eq!(p.inputs[0].0, "model.weights");
        // The model's own resize is the study's image size, recorded where it always was.
        let p = plan(&format!("[model]\n{CNN}resize = 40\n"), "resize = 32").unwrap();
        assert_eq!(p.resolved["data"]["resize"], 40);
        assert_eq!(p.models[0].image_options.resize, Some(40));
    }

    #[test]
    fn several_models_get_labels_their_own_image_settings_and_methods() {
        let models = format!("[[model]]\n{CNN}\n[[model]]\n{RESNET}\n[[model]]\n{MOBILENET}resize = 64\n");
        let p = plan(&models, "resize = 28").unwrap();
        let labels: Vec<&str> = p.models.iter().map(|m| m.label.as_str()).collect();
        // Defaults: the architecture's name, the ONNX file's stem.
        assert_eq!(labels, ["fmnist_cnn", "cifar_resnet20_fmnist", "mobilenet_v2"]);
        assert_eq!(p.models[1].image_options.resize, Some(28));
        assert_eq!(p.models[2].image_options.resize, Some(64));
        let v = &p.resolved;
        assert!(v.get("model").is_none());
        assert_eq!(v["models"][2]["resize"], 64);
        assert_eq!(v["models"][0]["label"], "fmnist_cnn");
        // Grad-CAM's default layer is the model's: recorded with each model that differs.
        let layer = |i: usize| v["models"][i]["methods"]["grad_cam"]["layer"].clone();
        assert_ne!(layer(2), serde_json::Value::Null);
        assert_ne!(layer(2), v["methods"]["grad_cam"]["layer"]);
        let inputs: Vec<&str> = p.inputs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            inputs[..3],
            ["model.fmnist_cnn.weights", "model.cifar_resnet20_fmnist.weights", "model.mobilenet_v2.weights"]
        );
        // A label changes the study's identity (it names the rows).
        let renamed = plan(&models.replacen("[[model]]\n", "[[model]]\nlabel = \"c\"\n", 1), "").unwrap();
        assert_eq!(renamed.resolved["models"][0]["label"], "c");
    }

    #[test]
    fn labels_must_be_file_name_safe_and_unique() {
        for good in ["cnn", "resnet-20_v1.2", "A"] {
            assert!(check_label(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "ü", &"x".repeat(MAX_LABEL + 1)] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
        let e = plan(&format!("[[model]]\n{CNN}\n[[model]]\n{CNN}"), "").err().unwrap().to_string();
        assert!(e.contains("`fmnist_cnn` names two models"), "{e}");
        let e = plan("model = []\n", "").err().unwrap().to_string();
        assert!(e.contains("lists no model"), "{e}");
    }
}

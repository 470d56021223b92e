//! `fragility explain`: attribution maps for a set of images, as `.npy` files.
//!
//! Writes `DIR/<method>.npy` (float32 [N,C,H,W] — C = 1 for Grad-CAM —, raw attributions for the predicted class, or
//! for one chosen class with `--target`, before any channel reduction), `DIR/preds.npy` (int64 [N]), `DIR/logits.npy` (float32
//! [N,K]) and `DIR/ids.npy` (int64 [N]: each row's position in the image file), plus
//! `DIR/<method>.png`: the first images with the method's maps as heat-map overlays. The N
//! images are the whole file or a [`Selection`] of it (`--count`, `--ids`). Every method is
//! computed (and every input checked) before the first file is written.

use crate::attribution::{by_name, Attribution, METHOD_NAMES};
use crate::data::{write_npy_f32, write_npy_i64};
use crate::error::{Error, Result};
use crate::model::{self, logits_in_passes, Activation};
use crate::report::heatmap::{write_heatmap_grid, Panel};
use crate::run::{batch_tensor, progress_bar};
use crate::selection::Selection;
use candle_core::Tensor;
use std::path::{Path, PathBuf};

/// What to explain.
#[derive(Debug, Clone)]
pub struct ExplainRequest {
    /// Model architecture name.
    pub model: String,
    /// Safetensors weights.
    pub weights: PathBuf,
    /// Input normalisation inside the model, if any.
    pub normalize: Option<crate::model::Normalize>,
    /// Images (.npy, idx, or a folder of PNG/JPEG files).
    pub images: PathBuf,
    /// Which of them to explain.
    pub selection: Selection,
    /// Resize, crop and channel conversion of the images.
    pub image_options: crate::data::ImageOptions,
    /// Method names.
    pub methods: Vec<String>,
    /// Output folder.
    pub out: PathBuf,
    /// Seed of the stochastic methods.
    pub seed: u64,
    /// Images per batch.
    pub batch_size: usize,
    /// Device name ("cpu", "cuda", "auto").
    pub device: String,
    /// How many of the first images the per-method PNG grid shows (0: no PNG).
    pub grid_images: usize,
    /// The class every map explains; `None`: each image's predicted class.
    pub target: Option<u32>,
}

/// Resolves method names (for `explain` and tests), rejecting unknown ones.
pub fn methods_by_name(names: &[String], seed: u64) -> Result<Vec<Box<dyn Attribution>>> {
    names
        .iter()
        .map(|n| {
            by_name(n, seed).ok_or_else(|| {
                Error::Invalid(format!("unknown method `{n}` (known: {})", METHOD_NAMES.join(", ")))
            })
        })
        .collect()
}

/// Computes and writes the maps; returns the files written.
pub fn explain(req: &ExplainRequest, progress: bool) -> Result<Vec<PathBuf>> {
    if req.batch_size == 0 {
        return Err(Error::Invalid("--batch-size must be at least 1".into()));
    }
    let methods = methods_by_name(&req.methods, req.seed)?;
    let device = crate::device::resolve(&req.device)?;
    let set = crate::data::load_images_with(&req.images, &req.image_options, None, None)?;
    let model =
        model::load_sized(&req.model, &req.weights, req.normalize.as_ref(), &device, Some((set.h, set.w)))?;
    for m in &methods {
        m.check(model.as_ref())?;
    }
    if let Some(t) = req.target {
        if t as usize >= model.num_classes() {
            return Err(Error::Invalid(format!(
                "--target {t}: model `{}` has classes 0..{}",
                req.model,
                model.num_classes() - 1
            )));
        }
    }
    model.accepts(set.c, set.h, set.w).map_err(|e| {
        let hint = crate::data::convertible_channels(model.input_shape().0, set.c)
            .map(|c| format!("; add `--channels {c}` to convert them"));
        Error::data(&req.images, format!("{e}{}", hint.unwrap_or_default()))
    })?;
    let (h, w) = (set.h, set.w);
    let ids = req.selection.resolve(set.n)?;
    let n = ids.len();
    let mut logits_all: Vec<f32> = Vec::new();
    let mut preds_all: Vec<i64> = Vec::new();
    let mut maps: Vec<Vec<f32>> = vec![Vec::new(); methods.len()];
    let bar = progress_bar(progress, n as u64);
    for chunk in ids.chunks(req.batch_size) {
        let x = batch_tensor(&set, chunk, &device)?;
        let logits = logits_in_passes(model.as_ref(), &x)?;
        let preds = logits.argmax(1)?.to_vec1::<u32>()?;
        logits_all.extend(logits.flatten_all()?.to_vec1::<f32>()?);
        preds_all.extend(preds.iter().map(|&p| p as i64));
        let targets: Vec<u32> = match req.target {
            Some(t) => vec![t; preds.len()],
            None => preds.clone(),
        };
        for (m, method) in methods.iter().enumerate() {
            let a: Tensor = method.attribute(model.as_ref(), &x, &targets, Activation::Relu)?;
            maps[m].extend(a.flatten_all()?.to_vec1::<f32>()?);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let out: &Path = &req.out;
    let mut files = Vec::new();
    // Each method's own channel count: the input's, or 1 for a layer method (Grad-CAM) on
    // RGB images.
    let channels_of = |data: &[f32]| data.len() / (n * h * w).max(1);
    for (method, data) in methods.iter().zip(&maps) {
        let p = out.join(format!("{}.npy", method.name()));
        write_npy_f32(&p, data, &[n, channels_of(data), h, w])?;
        files.push(p);
    }
    let shown = req.grid_images.min(n);
    if shown > 0 {
        // The image (RGB in colour, grey otherwise) and saliency (|attribution| summed over
        // channels) per panel.
        let hw = h * w;
        for (method, data) in methods.iter().zip(&maps) {
            let c = channels_of(data);
            let sal: Vec<Vec<f32>> = (0..shown)
                .map(|i| (0..hw).map(|p| (0..c).map(|ch| data[(i * c + ch) * hw + p].abs()).sum()).collect())
                .collect();
            let panels: Vec<Panel> = (0..shown)
                .map(|i| Panel {
                    image: set.image(ids[i]),
                    map: &sal[i],
                    label: match req.target {
                        Some(t) => format!("#{} pred {} → {t}", ids[i], preds_all[i]),
                        None => format!("#{} pred {}", ids[i], preds_all[i]),
                    },
                })
                .collect();
            let p = out.join(format!("{}.png", method.name()));
            write_heatmap_grid(&p, method.name(), &panels, h, w)?;
            files.push(p);
        }
    }
    let p = out.join("preds.npy");
    write_npy_i64(&p, &preds_all, &[n])?;
    files.push(p);
    let p = out.join("logits.npy");
    write_npy_f32(&p, &logits_all, &[n, model.num_classes()])?;
    files.push(p);
    let p = out.join("ids.npy");
    write_npy_i64(&p, &ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), &[n])?;
    files.push(p);
    Ok(files)
}

//! `fragility explain`: attribution maps for a set of images, as `.npy` files.
//!
//! Writes `DIR/<method>.npy` (float32 [N,C,H,W] — C = 1 for Grad-CAM —, raw attributions for the predicted class, or
//! for one chosen class with `--target`, before any channel reduction), `DIR/preds.npy` (int64 [N]), `DIR/logits.npy` (float32
//! [N,K]), `DIR/ids.npy` (int64 [N]: each row's position in the image file or folder) and
//! `DIR/sources.txt` (one line per row, in the same order: the row's file, relative to the
//! images folder, or `name[i]` for image i of an npy/idx file; a line break inside a name is
//! written as `\n`), plus
//! `DIR/<method>.png`: the first images with the method's maps as heat-map overlays. The N
//! images are the whole file or a [`Selection`] of it (`--count`, `--ids`). Every method is
//! computed (and every input checked) before the first file is written, and one run's files
//! replace the previous run's together (see [`explain`]): never a mix of two runs.

use crate::attribution::{beta_smooth, by_name, saliency_of_row, Attribution};
use crate::data::{write_npy_f32, write_npy_i64};
use crate::error::{Error, Result};
use crate::manifest::{check_out_dir, Kind, Manifest};
use crate::model::{self, logits_in_passes, Activation};
use crate::report::heatmap::{write_heatmap_grid, Panel};
use crate::run::{batch_tensor, progress_bar};
use crate::selection::Selection;
use candle_core::Tensor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// `--classes`: a file of class names (one per line) or a comma-separated list, for the
    /// grids' labels; `None`: the image folder's class names, if any.
    pub classes: Option<String>,
}

/// The class names the grids show: `--classes` (a file if one exists at that path, else a
/// comma-separated list), else the image folder's; each list must name every output of the
/// model.
fn grid_class_names(
    req: &ExplainRequest,
    set: &crate::data::ImageSet,
    classes: usize,
) -> Result<Option<Vec<String>>> {
    let names = match &req.classes {
        Some(arg) if Path::new(arg).is_file() => crate::data::read_classes(Path::new(arg))?,
        Some(arg) => arg.split(',').map(|n| n.trim().to_string()).collect(),
        None => return Ok(set.class_names.clone().filter(|n| n.len() == classes)),
    };
    if names.len() != classes || names.iter().any(String::is_empty) {
        return Err(Error::Invalid(format!(
            "--classes: {} names given, but the model has {classes} classes (give one non-empty name per class, in label order)",
            names.len()
        )));
    }
    Ok(Some(names))
}

/// A class as a grid label: `3 Dress` with names, else `3`.
fn class_label(class: i64, names: Option<&[String]>) -> String {
    match names.and_then(|n| n.get(usize::try_from(class).ok()?)) {
        Some(name) => format!("{class} {name}"),
        None => class.to_string(),
    }
}

/// Resolves method names (for `explain` and tests), rejecting unknown ones and repeats (two
/// identical maps would be written over each other). `<method>_beta_smooth<β>` is the method
/// on the softplus(β) network ([`crate::attribution::beta_smooth`]).
pub fn methods_by_name(names: &[String], seed: u64) -> Result<Vec<Arc<dyn Attribution>>> {
    let mut methods: Vec<Arc<dyn Attribution>> = Vec::with_capacity(names.len());
    for n in names {
        let m = beta_smooth::resolve(n, &|m| by_name(m, seed).map(Arc::from))
            .map_err(|e| Error::Invalid(format!("--methods: {e}")))?;
        if methods.iter().any(|o| o.name() == m.name()) {
            return Err(Error::Invalid(format!("--methods: `{n}` is given twice")));
        }
        methods.push(m);
    }
    Ok(methods)
}

/// What `explain` computed, in the order of its images.
struct Computed {
    /// The images explained (ids in the file).
    ids: Vec<usize>,
    /// Logits [N,K], flattened.
    logits: Vec<f32>,
    /// Predicted classes.
    preds: Vec<i64>,
    /// Each method's attributions [N,C,H,W], flattened.
    maps: Vec<Vec<f32>>,
    /// The model's class count.
    classes: usize,
}

/// The selected images, preprocessed, in the order of the returned ids. The images of a file
/// are selected before they are resized, cropped or converted, so that `--count 1 --resize
/// 2000` resizes one image, not the whole file; a folder is listed first and only its selected
/// files are decoded.
fn selected_images(req: &ExplainRequest) -> Result<(crate::data::ImageSet, Vec<usize>)> {
    let opts = &req.image_options;
    if req.images.is_dir() {
        // Listed first, then only the selected files decoded and resized.
        return crate::data::load_folder_picked(&req.images, opts, None, None, |n| req.selection.resolve(n));
    }
    opts.validate()?;
    let raw = crate::data::load_images_with(&req.images, &crate::data::ImageOptions::default(), None, None)?;
    let ids = req.selection.resolve(raw.n)?;
    let raw = if matches!(req.selection, Selection::All) { raw } else { raw.select(&ids) };
    Ok((raw.preprocess(opts, &req.images)?, ids))
}

/// Computes and writes the maps; returns the files written.
///
/// The output folder is explain's own (see [`crate::manifest`]): a folder holding a file an
/// earlier explain did not write is refused before the model and the images are loaded. All
/// maps are computed before anything is written; the files are then written into
/// `DIR/.staging/`, and only when every one is there are they renamed into place and the
/// previous run's other files (e.g. maps of methods no longer asked for) removed. Why so: a
/// run that fails while computing or writing leaves the previous run complete and untouched
/// (no ids of one run beside maps of another), and the switch is a few renames in one folder;
/// a kill during those leaves every file listed in the manifest, and the next explain into
/// the folder replaces them all.
pub fn explain(req: &ExplainRequest, progress: bool) -> Result<Vec<PathBuf>> {
    if req.batch_size == 0 {
        return Err(Error::Invalid("--batch-size must be at least 1".into()));
    }
    let methods = methods_by_name(&req.methods, req.seed)?;
    check_out_dir(&req.out, "--out")?;
    let take = || Manifest::take(&req.out, Kind::Explain, "--out", &[]);
    let early = if req.out.is_dir() { Some(take()?) } else { None };
    let device = crate::device::resolve(&req.device)?;
    let (set, ids) = selected_images(req)?;
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
    let class_names = grid_class_names(req, &set, model.num_classes())?;
    let computed = compute(req, &methods, model.as_ref(), &set, ids, &device, progress)?;
    // A new folder is created (and locked) only now, when everything has been computed.
    let (_lock, mut manifest) = match early {
        Some(taken) => taken,
        None => take()?,
    };
    let names = output_names(&methods, req.grid_images.min(computed.ids.len()) > 0);
    replace_outputs(&mut manifest, &names, |dir| {
        write_outputs(dir, req, &methods, &set, &computed, class_names.as_deref())
    })
}

/// The private folder the next run's files are written into before they replace the last's.
const STAGING: &str = ".staging";

/// The files one run writes, by name.
fn output_names(methods: &[Arc<dyn Attribution>], grids: bool) -> Vec<String> {
    let mut names: Vec<String> = methods.iter().map(|m| format!("{}.npy", m.name())).collect();
    if grids {
        names.extend(methods.iter().map(|m| format!("{}.png", m.name())));
    }
    names.extend(["preds.npy", "logits.npy", "ids.npy", "sources.txt"].map(String::from));
    names
}

/// Replaces the previous run's files in the manifest's folder with `names`, which `write`
/// writes into the folder it is given (`.staging/`): only when it succeeds are they renamed
/// into place and the files of ours the new run did not write removed; when it fails, the
/// staging folder goes and the previous run stays as it was.
fn replace_outputs(
    manifest: &mut Manifest,
    names: &[String],
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<Vec<PathBuf>> {
    let out = manifest.dir().to_path_buf();
    manifest.remove_leftovers()?;
    // What a run killed while staging left.
    manifest.remove(STAGING)?;
    let staged: Vec<String> = names.iter().map(|n| format!("{STAGING}/{n}")).collect();
    manifest.claim(&staged)?;
    if let Err(e) = write(&out.join(STAGING)) {
        manifest.remove(STAGING)?;
        return Err(e);
    }
    manifest.claim(names)?;
    for n in names {
        let (from, to) = (out.join(STAGING).join(n), out.join(n));
        std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
    }
    let stale: Vec<String> = manifest
        .files()
        .filter(|f| !names.iter().any(|n| n == f) && !f.starts_with(&format!("{STAGING}/")))
        .map(String::from)
        .collect();
    for f in stale {
        manifest.remove(&f)?;
    }
    manifest.remove(STAGING)?;
    Ok(names.iter().map(|n| out.join(n)).collect())
}

/// Every method's maps, the logits and the predictions of images `ids`, batch by batch.
fn compute(
    req: &ExplainRequest,
    methods: &[Arc<dyn Attribution>],
    model: &dyn crate::model::Classifier,
    set: &crate::data::ImageSet,
    ids: Vec<usize>,
    device: &candle_core::Device,
    progress: bool,
) -> Result<Computed> {
    let mut c = Computed {
        ids: Vec::new(),
        logits: Vec::new(),
        preds: Vec::new(),
        maps: vec![Vec::new(); methods.len()],
        classes: model.num_classes(),
    };
    let bar = progress_bar(progress, ids.len() as u64);
    // `set` holds the selected images in the order of `ids`: batches take positions.
    let positions: Vec<usize> = (0..ids.len()).collect();
    for chunk in positions.chunks(req.batch_size) {
        let x = batch_tensor(set, chunk, device)?;
        let logits = logits_in_passes(model, &x)?;
        let preds = logits.argmax(1)?.to_vec1::<u32>()?;
        c.logits.extend(logits.flatten_all()?.to_vec1::<f32>()?);
        c.preds.extend(preds.iter().map(|&p| p as i64));
        let targets: Vec<u32> = match req.target {
            Some(t) => vec![t; preds.len()],
            None => preds.clone(),
        };
        for (m, method) in methods.iter().enumerate() {
            let a: Tensor = method.attribute(model, &x, &targets, Activation::Exact)?;
            c.maps[m].extend(a.flatten_all()?.to_vec1::<f32>()?);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    c.ids = ids;
    Ok(c)
}

/// Writes the files of [`output_names`] into `dir`.
fn write_outputs(
    dir: &Path,
    req: &ExplainRequest,
    methods: &[Arc<dyn Attribution>],
    set: &crate::data::ImageSet,
    c: &Computed,
    class_names: Option<&[String]>,
) -> Result<()> {
    let (n, h, w) = (c.ids.len(), set.h, set.w);
    // Each method's own channel count: the input's, or 1 for a layer method (Grad-CAM) on
    // RGB images.
    let channels_of = |data: &[f32]| data.len() / (n * h * w).max(1);
    for (method, data) in methods.iter().zip(&c.maps) {
        write_npy_f32(&dir.join(format!("{}.npy", method.name())), data, &[n, channels_of(data), h, w])?;
    }
    let shown = req.grid_images.min(n);
    if shown > 0 {
        // The image (RGB in colour, grey otherwise) and saliency (|attribution| summed over
        // channels) per panel.
        let hw = h * w;
        for (method, data) in methods.iter().zip(&c.maps) {
            let ch = channels_of(data);
            let sal: Vec<Vec<f32>> =
                (0..shown).map(|i| saliency_of_row(&data[i * ch * hw..][..ch * hw], hw)).collect();
            let panels: Vec<Panel> = (0..shown)
                .map(|i| Panel {
                    image: set.image(i),
                    map: &sal[i],
                    label: {
                        let pred = class_label(c.preds[i], class_names);
                        match req.target {
                            Some(t) => {
                                format!("#{} pred {pred} → {}", c.ids[i], class_label(t.into(), class_names))
                            }
                            None => format!("#{} pred {pred}", c.ids[i]),
                        }
                    },
                })
                .collect();
            write_heatmap_grid(&dir.join(format!("{}.png", method.name())), method.name(), &panels, h, w)?;
        }
    }
    write_npy_i64(&dir.join("preds.npy"), &c.preds, &[n])?;
    write_npy_f32(&dir.join("logits.npy"), &c.logits, &[n, c.classes])?;
    write_npy_i64(&dir.join("ids.npy"), &c.ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), &[n])?;
    crate::atomic::write_bytes(&dir.join("sources.txt"), sources_text(set).as_bytes())
}

/// `sources.txt`: the source of each image of `set` (the selected ones, in row order), one per
/// line (a line break in a name escaped).
fn sources_text(set: &crate::data::ImageSet) -> String {
    (0..set.n).map(|i| set.source(i).replace('\n', "\\n").replace('\r', "\\r") + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn write<'a>(files: &'a [(&'a str, &'a str)]) -> impl FnOnce(&Path) -> Result<()> + 'a {
        move |dir: &Path| {
            for (n, text) in files {
                crate::atomic::write_bytes(&dir.join(n), text.as_bytes())?;
            }
            Ok(())
        }
    }

    #[test]
    fn a_run_replaces_the_previous_runs_files_together_or_not_at_all() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("maps");
        let (_lock, mut m) = Manifest::take(&out, Kind::Explain, "--out", &[]).unwrap();
        let first = names(&["gradient.npy", "smoothgrad.npy", "ids.npy"]);
        replace_outputs(
            &mut m,
            &first,
            write(&[("gradient.npy", "g1"), ("smoothgrad.npy", "s1"), ("ids.npy", "i1")]),
        )
        .unwrap();
        // A run that fails after writing some of its files changes nothing.
        let failing = |dir: &Path| -> Result<()> {
            crate::atomic::write_bytes(&dir.join("gradient.npy"), b"g2")?;
            Err(Error::Invalid("boom".into()))
        };
        assert!(replace_outputs(&mut m, &names(&["gradient.npy", "ids.npy"]), failing).is_err());
        let read = |n: &str| std::fs::read_to_string(out.join(n)).unwrap();
        assert_eq!(
            (read("gradient.npy"), read("smoothgrad.npy"), read("ids.npy")),
            ("g1".into(), "s1".into(), "i1".into())
        );
        assert!(!out.join(STAGING).exists());
        // A run with fewer methods leaves no map of the method it no longer computes.
        replace_outputs(
            &mut m,
            &names(&["gradient.npy", "ids.npy"]),
            write(&[("gradient.npy", "g3"), ("ids.npy", "i3")]),
        )
        .unwrap();
        assert_eq!((read("gradient.npy"), read("ids.npy")), ("g3".into(), "i3".into()));
        assert!(!out.join("smoothgrad.npy").exists() && !out.join(STAGING).exists());
        let mut left: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".fragility-manifest.json", ".lock", "gradient.npy", "ids.npy"]);
    }

    #[test]
    fn grid_labels_show_the_class_number_and_its_name() {
        let names: Vec<String> = ["cat", "dog"].map(String::from).to_vec();
        assert_eq!(class_label(1, Some(&names)), "1 dog");
        assert_eq!(class_label(1, None), "1");
        // A class beyond the names (never from a checked list, but not a panic either).
        assert_eq!(class_label(5, Some(&names)), "5");
    }

    #[test]
    fn sources_are_one_line_per_row_in_row_order() {
        let set = crate::data::ImageSet {
            data: vec![0.0; 3],
            n: 3,
            c: 1,
            h: 1,
            w: 1,
            labels: None,
            class_names: None,
            sources: vec!["a.png".into(), "odd\nname.png".into(), "c/d.png".into()],
        };
        assert_eq!(super::sources_text(&set.select(&[2, 0, 1])), "c/d.png\na.png\nodd\\nname.png\n");
    }
}

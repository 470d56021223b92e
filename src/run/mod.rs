//! The fragility study: the loop of ../shared/DESIGN.md.
//!
//! For each chunk of (correctly classified) images: compute every method's clean map once;
//! for each attack, stack the chunk at every ε into one batch of rows, perturb, recompute every
//! method's map on the perturbed rows and score each against its clean map. Rows go to
//! `samples.parquet`; `summary.parquet`, one plot per metric and `run.json` follow. Nothing is
//! written until every row is computed, and each file is written atomically.

mod checks;
mod chunk;
mod qualify;

use crate::config::{ModelPlan, Plan};
use crate::data::{load_labels, ImageSet};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::lock::OutLock;
use crate::manifest::{check_out_dir, Kind, Manifest};
use crate::model::{self, logits_in_passes, target_probability, Classifier};
use crate::progress::Progress;
use crate::report::checks::{CheckKind, CheckTable, CASCADE_EXAMPLE, CHECK_KINDS};
use crate::report::images::{check_same_study, read_record, traces_json, traces_of_models, ImageTraces};
use crate::report::index::write_derived_owned;
use crate::report::summary::{attack_label, SAMPLING};
use crate::report::{write_samples, SampleRow, SampleTable};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a finished run reports back.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The output folder.
    pub out: PathBuf,
    /// Images studied.
    pub images: usize,
    /// Images asked for (`data.count`), if given: more than `images` when fewer qualified.
    pub requested: Option<usize>,
    /// Rows written to samples.parquet.
    pub rows: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// The folder already held this finished run: nothing was computed or written.
    pub already_finished: bool,
    /// The summary and headline, where this call wrote them (not for a shard or a finished
    /// run left in place).
    pub derived: Option<crate::report::Derived>,
}

/// Converts images `ids` of `set` to a tensor [B,C,H,W] on `device`.
pub fn batch_tensor(set: &ImageSet, ids: &[usize], device: &Device) -> Result<Tensor> {
    let sub = set.select(ids);
    Ok(Tensor::from_vec(sub.data, (ids.len(), set.c, set.h, set.w), device)?)
}

/// Predicted classes and their softmax probabilities for every image of `set`.
pub fn predict_all(model: &dyn Classifier, set: &ImageSet, device: &Device) -> Result<(Vec<u32>, Vec<f64>)> {
    let mut preds = Vec::with_capacity(set.n);
    let mut probs = Vec::with_capacity(set.n);
    let ids: Vec<usize> = (0..set.n).collect();
    for chunk in ids.chunks(256) {
        let logits = logits_in_passes(model, &batch_tensor(set, chunk, device)?)?;
        let p = logits.argmax(1)?.to_vec1::<u32>()?;
        probs.extend(target_probability(&logits, &p)?);
        preds.extend(p);
    }
    Ok((preds, probs))
}

/// One of `count` deterministic parts of a study (0-based `index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which part, 0-based.
    pub index: usize,
    /// How many parts.
    pub count: usize,
}

impl Shard {
    /// Parses `i/n` (0 ≤ i < n).
    pub fn parse(text: &str) -> std::result::Result<Shard, String> {
        let bad = || format!("--shard wants i/n with 0 ≤ i < n (e.g. 0/4), got {text:?}");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// The shard an array job assigns: Slurm (`SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN`
    /// of `SLURM_ARRAY_TASK_COUNT`) or a Kubernetes indexed job (`JOB_COMPLETION_INDEX` of
    /// `FRAGILITY_SHARDS`); `None` outside an array job.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> std::result::Result<Option<Shard>, String> {
        let num = |name: &str| -> std::result::Result<Option<usize>, String> {
            var(name)
                .map(|v| v.trim().parse().map_err(|_| format!("{name}={v:?} is not a number")))
                .transpose()
        };
        // (index, count, where they come from): messages quote the variables' values.
        let (index, count, source) = match (num("SLURM_ARRAY_TASK_ID")?, num("SLURM_ARRAY_TASK_COUNT")?) {
            (Some(id), Some(count)) => {
                let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
                let index = id
                    .checked_sub(min)
                    .ok_or_else(|| format!("SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}"))?;
                let source = format!(
                    "SLURM_ARRAY_TASK_ID={id} − SLURM_ARRAY_TASK_MIN={min} with SLURM_ARRAY_TASK_COUNT={count}"
                );
                (index, count, source)
            }
            _ => match (num("JOB_COMPLETION_INDEX")?, num("FRAGILITY_SHARDS")?) {
                (Some(i), Some(n)) => (i, n, format!("JOB_COMPLETION_INDEX={i} with FRAGILITY_SHARDS={n}")),
                (Some(_), None) => {
                    return Err("JOB_COMPLETION_INDEX is set: give the shard count as FRAGILITY_SHARDS".into())
                }
                _ => return Ok(None),
            },
        };
        if index < count {
            Ok(Some(Shard { index, count }))
        } else {
            Err(format!("shard index {index} is not below the shard count {count} ({source})"))
        }
    }

    /// The shard's folder inside a study's output folder.
    pub fn dir(&self, out: &Path) -> PathBuf {
        out.join("shards").join(format!("{}-of-{}", self.index, self.count))
    }
}

/// How to run a plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Recompute even if the output folder holds a finished or an interrupted run.
    pub force: bool,
    /// Run only this part of the images (chunk k goes to shard k mod n).
    pub shard: Option<Shard>,
}

/// The identity of the study `plan` describes: its settings (everything but the config's own
/// path and `out`) and the content of every input file. A finished or interrupted run
/// continues only with the same fingerprint.
pub fn fingerprint(plan: &Plan) -> Result<Fingerprint> {
    Fingerprint::compute(&crate::fingerprint::hashed_settings(&plan.resolved), &plan.inputs)
}

/// The record of an interrupted run inside `.partial/`.
const STUDY_FILE: &str = "study.json";

/// The finished study in `dir` (its `run.json` and `samples.parquet`), if there is one: its
/// record, and what differs from `fp` (`None`: the same study).
fn finished_study(dir: &Path, fp: &Fingerprint) -> Result<Option<(serde_json::Value, Option<String>)>> {
    let run_json = dir.join("run.json");
    if !(run_json.is_file() && dir.join("samples.parquet").is_file()) {
        return Ok(None);
    }
    let meta = read_record(&run_json)?;
    let diff = fp.difference(Fingerprint::from_json(&meta).as_ref());
    Ok(Some((meta, diff)))
}

/// Without `--force`, the report of the finished study in `dir` (locked by the caller) if it
/// is this study, an error if it is another one, `None` if there is none.
fn already_finished(
    manifest: &mut Manifest,
    fp: &Fingerprint,
    opts: &RunOptions,
) -> Result<Option<RunReport>> {
    let dir = manifest.dir().to_path_buf();
    if opts.force {
        return Ok(None);
    }
    let Some((meta, diff)) = finished_study(&dir, fp)? else { return Ok(None) };
    if let Some(diff) = diff {
        return Err(Error::Invalid(format!(
            "{} holds a finished run of another study ({diff}); rerun with --force to replace it, or set another `out`",
            dir.display()
        )));
    }
    // Killed after run.json was written but before .partial/ was removed.
    if dir.join(".partial").exists() {
        manifest.remove(".partial")?;
    }
    let requested = meta["images"]["requested"].as_u64().map(|n| n as usize);
    Ok(Some(RunReport {
        out: dir.clone(),
        images: meta["images"]["studied"].as_u64().unwrap_or(0) as usize,
        requested: requested.filter(|_| opts.shard.is_none()),
        rows: meta["rows"].as_u64().unwrap_or(0) as usize,
        seconds: 0.0,
        files: Vec::new(),
        already_finished: true,
        derived: None,
    }))
}

/// Makes `.partial/` ready for this study and records it there (`study.json`): trusts its
/// chunks only if its record matches `fp` (`--force` has removed it before). Returns whether
/// chunks of an earlier, interrupted run of this study are there to continue.
fn prepare_partial(partial: &Path, fp: &Fingerprint, dir: &Path) -> Result<bool> {
    let has_chunks = std::fs::read_dir(partial)
        .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("chunk-")))
        .unwrap_or(false);
    let record = partial.join(STUDY_FILE);
    let refuse = |why: String| {
        Error::Invalid(format!(
            "{} holds an interrupted run of another study ({why}); rerun with --force to discard it, or set another `out`",
            dir.display()
        ))
    };
    // Without chunks there is nothing to lose (e.g. a run that failed before its first chunk):
    // the folder is simply taken over by this study.
    if record.is_file() && has_chunks {
        if let Some(diff) = fp.difference(Fingerprint::from_json(&read_record(&record)?).as_ref()) {
            return Err(refuse(diff));
        }
    } else if has_chunks {
        return Err(refuse("its chunks have no record of their study".into()));
    }
    std::fs::create_dir_all(partial).map_err(|e| Error::io(partial, e))?;
    let mut json = fp.to_json();
    // The settings themselves, so that a later mismatch can name the ones that differ.
    json["settings"] = fp.values.clone().unwrap_or(serde_json::Value::Null);
    let text = serde_json::to_string_pretty(&json).map_err(|e| Error::Invalid(e.to_string()))?;
    crate::atomic::write_bytes(&record, text.as_bytes())?;
    Ok(has_chunks)
}

/// Removes `path` if it exists.
fn remove_file_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Removes the example panels and plots of ours of whatever study the folder held before,
/// file by file (a user's file in `plots/` or `examples/` stays).
fn remove_derived(manifest: &mut Manifest) -> Result<()> {
    manifest.remove("examples")?;
    // A study without checks must not leave an earlier study's check tables beside its own.
    for kind in CHECK_KINDS {
        manifest.remove(kind.file())?;
    }
    manifest.remove("plots")
}

/// One model of a study with the images as it sees them, checked against each other and
/// against every setting that depends on them.
struct Loaded {
    model: std::sync::Arc<dyn Classifier>,
    /// An index into the study's image sets: models with the same image settings share one.
    set: usize,
    /// The trained `state_dict`, where a sanity test re-initialises the model's layers.
    tensors: Option<std::collections::HashMap<String, Tensor>>,
}

/// Every model of `plan` and the images as each sees them (one set per distinct image
/// setting), checked against each other and against every setting that depends on them,
/// before anything is written. Models of one study must tell the same classes apart.
fn load_checked(plan: &Plan) -> Result<(Vec<Loaded>, Vec<ImageSet>)> {
    let mut sets: Vec<(crate::data::ImageOptions, ImageSet)> = Vec::new();
    let mut loaded: Vec<Loaded> = Vec::new();
    for spec in &plan.models {
        let set = match sets.iter().position(|(o, _)| *o == spec.image_options) {
            Some(i) => i,
            None => {
                let set = load_study_images(
                    &plan.images,
                    plan.labels.as_deref(),
                    plan.classes.as_deref(),
                    &spec.image_options,
                )?;
                sets.push((spec.image_options, set));
                sets.len() - 1
            }
        };
        let model = load_model(plan, spec, &sets[set].1)
            .map_err(|e| crate::config::in_model(plan.several_models(), &spec.label, e))?;
        if let Some(first) = loaded.first() {
            let (a, b) = (first.model.num_classes(), model.num_classes());
            if a != b {
                return Err(Error::Config {
                    file: plan.config_path.clone(),
                    line: None,
                    message: format!(
                        "model `{}` has {b} classes but model `{}` has {a}: the models of one study must classify the same classes",
                        spec.label, plan.models[0].label
                    ),
                });
            }
        }
        let randomizes = plan.sanity.as_ref().is_some_and(|s| s.tests.iter().any(|t| t.randomizes()));
        let tensors = if randomizes {
            if model::is_onnx(&spec.name) {
                return Err(checks::no_state_dict(spec));
            }
            Some(model::weights::Weights::load(&spec.weights, &plan.device)?.into_state_dict())
        } else {
            None
        };
        loaded.push(Loaded { model, set, tensors });
    }
    Ok((loaded, sets.into_iter().map(|(_, s)| s).collect()))
}

/// The model `spec` of `plan`, checked against `set` (the images as it sees them) and against
/// every setting that depends on them.
fn load_model(plan: &Plan, spec: &ModelPlan, set: &ImageSet) -> Result<std::sync::Arc<dyn Classifier>> {
    let model = model::load_sized(
        &spec.name,
        &spec.weights,
        spec.normalize.as_ref(),
        &plan.device,
        Some((set.h, set.w)),
    )?;
    model.accepts(set.c, set.h, set.w).map_err(|e| {
        let hint = crate::data::convertible_channels(model.input_shape().0, set.c)
            .map(|c| format!("; set `channels = {c}` in the config's [data] table to convert them"));
        Error::data(&plan.images, format!("{e}{}", hint.unwrap_or_default()))
    })?;
    plan.check_against(set, model.num_classes())?;
    for m in &spec.methods {
        m.check(model.as_ref()).map_err(|e| Error::Config {
            file: plan.config_path.clone(),
            line: None,
            message: format!("method `{}`: {e}", m.name()),
        })?;
    }
    for a in &spec.attacks {
        a.check(model.as_ref(), (set.h, set.w)).map_err(|e| Error::Config {
            file: plan.config_path.clone(),
            line: None,
            message: format!("attack `{}`: {e}", a.name()),
        })?;
    }
    Ok(model)
}

/// Runs the study described by `plan` (see [`RunOptions`]). Rows are written chunk by chunk
/// to `<out>/.partial/` as they are computed, so a killed run continues where it stopped when
/// started again; the final tables equal those of an uninterrupted run. A finished run in
/// `out` is left as it is (the report says so) unless `force`.
///
/// Everything that can be checked is checked before the first write: the config, the input
/// files, the model against the images and the settings. Then the folder is locked
/// ([`OutLock`]) for the rest of the run, and its state (a finished study, an interrupted
/// one, chunks) is trusted only if its fingerprint matches this study's.
pub fn run(plan: &Plan, opts: &RunOptions) -> Result<RunReport> {
    let t0 = Instant::now();
    let dir = match opts.shard {
        Some(s) => s.dir(&plan.out),
        None => plan.out.clone(),
    };
    check_out_dir(&dir, "`out`")?;
    let fp = fingerprint(plan)?;
    // An existing folder is locked at once, checked to hold nothing this run would write but
    // did not write, and a finished study in it answered, before the model and the images
    // are loaded (which can take minutes on a large data set).
    let mut early = if dir.is_dir() { Some(take_study(plan, &dir, opts)?) } else { None };
    if let Some((_, manifest)) = early.as_mut() {
        if let Some(report) = already_finished(manifest, &fp, opts)? {
            return Ok(report);
        }
    }
    let (loaded, sets) = load_checked(plan)?;
    let first_set = &sets[loaded[0].set];
    let class_names = study_class_names(plan, first_set, loaded[0].model.num_classes())?;
    let t_load = t0.elapsed().as_secs_f64();
    let predictions: Vec<(Vec<u32>, Vec<f64>)> = loaded
        .iter()
        .map(|l| predict_all(l.model.as_ref(), &sets[l.set], &plan.device))
        .collect::<Result<_>>()?;
    let (ids, eligible) = select_images(plan, first_set, &predictions)?;

    // A new folder is created (and locked) only now, when everything has been checked.
    let (_lock, mut manifest) = match early {
        Some(taken) => taken,
        None => take_study(plan, &dir, opts)?,
    };
    manifest.remove_leftovers()?;
    if let Some(report) = already_finished(&mut manifest, &fp, opts)? {
        return Ok(report);
    }
    if opts.force {
        manifest.remove(".partial")?;
    }
    // Every file of the study is recorded as ours before it is written.
    let mut ours: Vec<String> = study_files(plan, opts).iter().map(|f| f.to_string()).collect();
    ours.push(format!(".partial/{STUDY_FILE}"));
    manifest.claim(&ours)?;
    let partial = dir.join(".partial");
    let resuming = prepare_partial(&partial, &fp, &dir)?;
    // From here the folder holds no finished study until the new run.json is written: a kill
    // while the new tables replace the old ones leaves an interrupted run, not a mixed one.
    remove_file_if_present(&dir.join("run.json"))?;
    if !resuming {
        // A fresh computation: no panel or plot of an earlier study may stay beside the new ones.
        remove_derived(&mut manifest)?;
    }
    manifest.claim(&example_files(plan, &ids[..plan.examples.min(ids.len())]))?;

    // Chunk k (of `batch_size` images) belongs to shard k mod n: the same chunks, hence the
    // same computations, as in a single run.
    let chunks: Vec<(usize, &[usize])> = ids
        .chunks(plan.batch_size)
        .enumerate()
        .filter(|(k, _)| opts.shard.is_none_or(|s| k % s.count == s.index))
        .collect();
    let studied: Vec<usize> = chunks.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    let several = plan.several_models();
    // Every stage runs once per model on every image.
    let (stages, first_attack_stage) = chunk::stages(plan, studied.len() * plan.models.len());
    let bar = Progress::new(opts.progress, &stages);
    let mut done = Chunks {
        parts: Vec::new(),
        checks: check_kinds(plan).into_iter().map(|k| CheckTable::new(k, several)).collect(),
        seconds: chunk::Seconds::new(plan),
        resumed: 0,
    };
    for ((spec, l), (preds, probs)) in plan.models.iter().zip(&loaded).zip(&predictions) {
        let set = &sets[l.set];
        let columns = chunk::Columns::new(plan, spec, (set.h, set.w));
        let study = chunk::Study {
            plan,
            spec,
            label: if several { &spec.label } else { "" },
            model: l.model.as_ref(),
            set,
            preds,
            probs,
            class_names: class_names.as_deref(),
            columns: &columns,
            // Example panels go to the first `examples` studied images (of all shards).
            example_ids: &ids[..plan.examples.min(ids.len())],
            dir: &dir,
            bar: &bar,
            first_attack_stage,
            trained: l.tensors.as_ref().map(|tensors| crate::sanity::TrainedModel {
                name: &spec.name,
                tensors,
                source: &spec.weights,
                normalize: spec.normalize.as_ref(),
                device: &plan.device,
            }),
        };
        compute_chunks(&study, &chunks, &partial, &mut done)?;
    }
    bar.finish();

    let model_sets: Vec<&ImageSet> = loaded.iter().map(|l| &sets[l.set]).collect();
    let table = assemble(plan, done.parts, traces_of_models(&model_sets, &studied), fp.id());
    let checks = sorted_checks(plan, done.checks);
    let seconds = t0.elapsed().as_secs_f64();
    let mut images = serde_json::json!({
        "in_file": first_set.n,
        "eligible": eligible,
        "requested": plan.count,
        "studied": studied.len(),
        "ids": studied,
        "list": traces_json(&table.images),
    });
    let qualified = |(preds, _): &(Vec<u32>, Vec<f64>), classes: usize| {
        qualify::record(preds, first_set.labels.as_deref(), classes)
    };
    if several {
        images["models"] = plan
            .models
            .iter()
            .zip(&loaded)
            .zip(&predictions)
            .map(|((spec, l), p)| {
                serde_json::json!({
                    "label": spec.label,
                    "eligible": eligible_ids(plan, first_set, std::slice::from_ref(p)).len(),
                    "predictions": qualified(p, l.model.num_classes()),
                })
            })
            .collect();
    } else {
        images["predictions"] = qualified(&predictions[0], loaded[0].model.num_classes());
    }
    let timings = (t_load, &done.seconds, seconds);
    let mut meta = run_record(plan, opts, &fp, images, done.resumed, table.rows.len(), timings);
    // The values the settings leave "auto", as this study's images resolve them.
    meta["automatic"] = if several {
        let per_model: Vec<serde_json::Value> = plan
            .models
            .iter()
            .zip(&model_sets)
            .map(|(spec, set)| {
                let mut auto = plan.automatic(set.h, set.w);
                auto["label"] = serde_json::json!(spec.label);
                auto
            })
            .collect();
        serde_json::json!({ "models": per_model })
    } else {
        plan.automatic(first_set.h, first_set.w)
    };
    // A shard leaves summary, plots and page to `fragility merge`.
    let (files, derived) = write_finished(&mut manifest, (&table, &checks), &meta, opts.shard.is_none())?;
    manifest.remove(".partial")?;
    Ok(RunReport {
        out: dir.clone(),
        images: studied.len(),
        requested: opts.shard.map_or(plan.count, |_| None),
        rows: table.rows.len(),
        seconds,
        files,
        already_finished: false,
        derived,
    })
}

/// The files at the top of a study's folder that `run` writes: a shard leaves the summary
/// and the page to `merge`.
fn study_files(plan: &Plan, opts: &RunOptions) -> Vec<&'static str> {
    let mut files: Vec<&str> = match opts.shard {
        Some(_) => vec!["samples.parquet", "run.json"],
        None => crate::manifest::STUDY_FILES.to_vec(),
    };
    files.extend(check_kinds(plan).into_iter().map(CheckKind::file));
    files
}

/// Takes the study folder `dir` (its lock and manifest), refusing one holding a file this run
/// would write but fragility did not (see [`crate::manifest`]).
fn take_study(plan: &Plan, dir: &Path, opts: &RunOptions) -> Result<(OutLock, Manifest)> {
    Manifest::take(dir, Kind::Study, "`out`", &study_files(plan, opts))
}

/// The example panels a run writes (`examples/<attack>_image<id>.png`, after `<label>.` in a
/// study of several models): every attack on each of `ids`, for every model.
fn example_files(plan: &Plan, ids: &[usize]) -> Vec<String> {
    let mut files = Vec::new();
    let cascades =
        plan.sanity.as_ref().is_some_and(|s| s.tests.contains(&crate::config::SanityTest::Cascading));
    for spec in &plan.models {
        let model = if plan.several_models() { spec.label.as_str() } else { "" };
        let mut labels: Vec<String> = plan
            .attacks()
            .iter()
            .map(|a| attack_label(a.name(), a.target_method().map(|t| t.name())))
            .collect();
        if cascades {
            labels.push(CASCADE_EXAMPLE.to_string());
        }
        for label in &labels {
            for &id in ids {
                files.push(format!("examples/{}", chunk::example_name(model, label, id)));
            }
        }
    }
    files
}

/// The rows of a run's chunks, computed or read back, with what it took.
struct Chunks {
    /// Per model: its label, its metric columns with their directions, and its rows.
    parts: Vec<ModelRows>,
    /// The check tables' rows of every model, one table per kind the study asks for.
    checks: Vec<CheckTable>,
    /// Seconds each stage took (over the computed chunks of every model).
    seconds: chunk::Seconds,
    /// How many chunks an interrupted run had finished.
    resumed: usize,
}

/// One model's rows in its own metric columns (models at different image sizes have
/// different top-k columns).
struct ModelRows {
    label: String,
    columns: Vec<String>,
    directions: Vec<crate::metric::Direction>,
    rows: Vec<SampleRow>,
}

/// The chunk file of chunk `k` of the model labelled `label` (empty: a study of one model).
fn chunk_file(partial: &Path, label: &str, k: usize) -> PathBuf {
    if label.is_empty() {
        partial.join(format!("chunk-{k:06}.parquet"))
    } else {
        partial.join(format!("chunk-{k:06}.{label}.parquet"))
    }
}

/// The chunk file of a check table's rows of chunk `k` (`.partial/sanity/chunk-000003.parquet`).
fn check_chunk_file(partial: &Path, kind: CheckKind, label: &str, k: usize) -> PathBuf {
    let folder = partial.join(kind.file().trim_end_matches(".parquet"));
    chunk_file(&folder, label, k)
}

/// Checks that a check table of `.partial/` holds only this study's model, images and
/// methods for `chunk` (its samples chunk has passed [`check_chunk`]).
fn check_check_chunk(
    path: &Path,
    table: &CheckTable,
    plan: &Plan,
    (label, chunk): (&str, &[usize]),
) -> Result<()> {
    let bad = |why: String| {
        Error::data(
            path,
            format!("{why}: this chunk does not belong to the study; rerun with --force to recompute"),
        )
    };
    if table.models().iter().any(|m| m != label) {
        return Err(bad(format!("a row of another model than {label:?}")));
    }
    if let Some(id) =
        table.counts("image_id").into_iter().flatten().find(|&&i| !chunk.contains(&(i as usize)))
    {
        return Err(bad(format!("image {id} is not one of the chunk's images")));
    }
    let studied = |m: &String| plan.methods().iter().any(|s| s.name() == m);
    if let Some(m) = table.text("method").into_iter().flatten().find(|m| !studied(m)) {
        return Err(bad(format!("method `{m}` is not studied")));
    }
    Ok(())
}

/// The check tables `plan` asks for, in the order they are written.
fn check_kinds(plan: &Plan) -> Vec<CheckKind> {
    CHECK_KINDS
        .into_iter()
        .filter(|k| match k {
            CheckKind::Sanity => plan.sanity.is_some(),
            CheckKind::Faithfulness | CheckKind::Curves => plan.faithfulness.is_some(),
        })
        .collect()
}

/// Every chunk `(k, images)` of `chunks` for the study's model: read back from `partial/`
/// (checked to belong to the study) where an interrupted run finished it, else computed and
/// written there at once. Adds the model's rows to `done`.
fn compute_chunks(
    study: &chunk::Study,
    chunks: &[(usize, &[usize])],
    partial: &Path,
    done: &mut Chunks,
) -> Result<()> {
    let plan = study.plan;
    let mut rows = Vec::new();
    let of_model = if study.label.is_empty() { String::new() } else { format!("{}: ", study.label) };
    for (pos, &(k, chunk)) in chunks.iter().enumerate() {
        let chunk_file = chunk_file(partial, study.label, k);
        if chunk_file.is_file() {
            let table = crate::report::read_samples(&chunk_file)?;
            check_chunk(&chunk_file, &table, plan, (study.label, chunk), &study.columns.names)?;
            for t in done.checks.iter_mut() {
                let path = check_chunk_file(partial, t.kind, study.label, k);
                let (back, _) = CheckTable::read(&path, t.kind)?;
                check_check_chunk(&path, &back, plan, (study.label, chunk))?;
                t.append(back)?;
            }
            rows.extend(table.rows);
            done.resumed += 1;
            study.bar.resume(chunk.len());
            continue;
        }
        let detail = format!("{of_model}chunk {}/{} ({} images)", pos + 1, chunks.len(), chunk.len());
        let tables = study.chunk(chunk, &detail, &mut done.seconds)?;
        // The chunk is done: keep its rows on disk before anything else can go wrong, the
        // samples last (their file marks the chunk as finished).
        for (t, new) in done.checks.iter_mut().zip(tables.checks) {
            let path = check_chunk_file(partial, t.kind, study.label, k);
            if let Some(folder) = path.parent() {
                std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
            }
            new.write(&path, "")?;
            t.append(new)?;
        }
        write_samples(&chunk_file, &tables.samples)?;
        rows.extend(tables.samples.rows);
    }
    done.parts.push(ModelRows {
        label: study.label.to_string(),
        columns: study.columns.names.clone(),
        directions: study.columns.directions.clone(),
        rows,
    });
    Ok(())
}

/// The study's table from every model's rows: one model's as they are; several models' in
/// the union of their metric columns (in order of first appearance), each row with nulls in
/// the columns of the other models, and each model's columns recorded.
fn assemble(plan: &Plan, parts: Vec<ModelRows>, images: ImageTraces, study: String) -> SampleTable {
    let mut metric_columns: Vec<String> = Vec::new();
    let mut directions = Vec::new();
    for p in &parts {
        for (c, d) in p.columns.iter().zip(&p.directions) {
            if !metric_columns.contains(c) {
                metric_columns.push(c.clone());
                directions.push(*d);
            }
        }
    }
    let several = parts.len() > 1;
    let model_metrics = if several {
        parts.iter().map(|p| (p.label.clone(), p.columns.clone())).collect()
    } else {
        Vec::new()
    };
    let mut rows = Vec::new();
    for p in parts {
        let at: Vec<usize> =
            p.columns.iter().filter_map(|c| metric_columns.iter().position(|m| m == c)).collect();
        for mut r in p.rows {
            let mut wide = vec![None; metric_columns.len()];
            for (v, &j) in r.metrics.iter().zip(&at) {
                wide[j] = *v;
            }
            r.metrics = wide;
            rows.push(r);
        }
    }
    SampleTable {
        metric_columns,
        directions,
        rows: sorted(plan, rows),
        seed: plan.seed,
        images,
        study: Some(study),
        model_metrics,
    }
}

/// `run.json`: versions, settings, images, row count, timings (load, clean maps, per sanity
/// test, per faithfulness measure, per attack, total) and the study's fingerprint.
fn run_record(
    plan: &Plan,
    opts: &RunOptions,
    fp: &Fingerprint,
    images: serde_json::Value,
    resumed: usize,
    rows: usize,
    (load, seconds, total): (f64, &chunk::Seconds, f64),
) -> serde_json::Value {
    let mut meta = serde_json::json!({
        "fragility_version": env!("CARGO_PKG_VERSION"),
        "candle_version": "0.11.1",
        "git_revision": git_revision(),
        "settings": plan.resolved,
        "seed": plan.seed,
        "threads": candle_core::utils::get_num_threads(),
        "shard": opts.shard.map(|s| serde_json::json!({ "index": s.index, "count": s.count })),
        "resumed_chunks": resumed,
        "images": images,
        "rows": rows,
        "timings_s": {
            "load": load,
            "maps": seconds.maps,
            "sanity": plan.sanity.iter().flat_map(|p| &p.tests).zip(&seconds.sanity).map(|(t, s)| {
                (t.name().to_string(), serde_json::json!(s))
            }).collect::<serde_json::Map<_, _>>(),
            "faithfulness": plan.faithfulness.iter().flat_map(|p| &p.measures).zip(&seconds.faithfulness).map(|(m, s)| {
                (m.name().to_string(), serde_json::json!(s))
            }).collect::<serde_json::Map<_, _>>(),
            "attacks": plan.attacks().iter().zip(&seconds.attacks).map(|(a, s)| {
                (attack_label(a.name(), a.target_method().map(|t| t.name())), serde_json::json!(s))
            }).collect::<serde_json::Map<_, _>>(),
            "total": total,
        },
    });
    if let (Some(m), serde_json::Value::Object(keys)) = (meta.as_object_mut(), fp.to_json()) {
        m.extend(keys);
    }
    meta
}

/// The images a study may use, in file order: with labels and `correct_only`, those every
/// model of `predictions` (each model's predicted classes, by image) classifies correctly;
/// all of them otherwise.
fn eligible_ids(plan: &Plan, set: &ImageSet, predictions: &[(Vec<u32>, Vec<f64>)]) -> Vec<usize> {
    (0..set.n)
        .filter(|&i| match (&set.labels, plan.correct_only) {
            (Some(l), true) => predictions.iter().all(|(p, _)| l[i] == p[i] as i64),
            _ => true,
        })
        .collect()
}

/// The images to study, in file order: the eligible ones ([`eligible_ids`]), at most
/// `count`; and how many qualified.
fn select_images(
    plan: &Plan,
    set: &ImageSet,
    predictions: &[(Vec<u32>, Vec<f64>)],
) -> Result<(Vec<usize>, usize)> {
    let mut ids = eligible_ids(plan, set, predictions);
    let eligible = ids.len();
    if let Some(n) = plan.count {
        ids.truncate(n);
    }
    if ids.is_empty() {
        let by = if plan.several_models() { " by every model" } else { "" };
        return Err(Error::Invalid(format!(
            "{}: no image to study ({} images, none classified correctly{by})",
            plan.images.display(),
            set.n
        )));
    }
    Ok((ids, eligible))
}

/// The check tables in one order whatever the chunking: model, method, test or measure in
/// config order, then image.
fn sorted_checks(plan: &Plan, tables: Vec<CheckTable>) -> Vec<CheckTable> {
    let models: Vec<String> = plan.models.iter().map(|m| m.label.clone()).collect();
    let methods: Vec<String> = plan.methods().iter().map(|m| m.name().to_string()).collect();
    let sanity = plan.sanity.iter().flat_map(|s| s.tests.iter().map(|t| t.name().to_string()));
    let measures = plan.faithfulness.iter().flat_map(|f| f.measures.iter().map(|m| m.name().to_string()));
    let tests: Vec<String> = sanity.chain(measures).collect();
    tables.into_iter().map(|t| t.sorted(&models, &methods, &tests)).collect()
}

/// `rows` in a deterministic order whatever the chunking: model, method, attack (in config
/// order, each target method after the other), image, ε.
fn sorted(plan: &Plan, mut rows: Vec<SampleRow>) -> Vec<SampleRow> {
    let model_order: Vec<String> = match plan.several_models() {
        true => plan.models.iter().map(|m| m.label.clone()).collect(),
        false => Vec::new(),
    };
    let method_order: Vec<String> = plan.methods().iter().map(|m| m.name().to_string()).collect();
    let attack_order: Vec<(String, Option<String>)> = plan
        .attacks()
        .iter()
        .map(|a| (a.name().to_string(), a.target_method().map(|t| t.name().to_string())))
        .chain(std::iter::once((SAMPLING.to_string(), None)))
        .collect();
    sort_rows(&mut rows, &model_order, &method_order, &attack_order);
    rows
}

/// Checks that a chunk file of `.partial/` holds what this study computes for `chunk`: its
/// columns and seed, only its images, methods, attacks and ε, and every attack row. A stale
/// or foreign chunk is refused (naming the file), never merged in silently.
fn check_chunk(
    path: &Path,
    table: &SampleTable,
    plan: &Plan,
    (label, chunk): (&str, &[usize]),
    columns: &[String],
) -> Result<()> {
    let bad = |why: String| {
        Error::data(
            path,
            format!("{why}: this chunk does not belong to the study; rerun with --force to recompute"),
        )
    };
    if table.metric_columns != columns || table.seed != plan.seed {
        return Err(bad("other metric columns or another seed".into()));
    }
    let attacks: Vec<(&str, Option<&str>)> =
        plan.attacks().iter().map(|a| (a.name(), a.target_method().map(|t| t.name()))).collect();
    let mut attack_rows = 0;
    for r in &table.rows {
        if r.model != label {
            return Err(bad(format!("a row of model {:?}, not of {label:?}", r.model)));
        }
        if !chunk.contains(&(r.image_id as usize)) {
            return Err(bad(format!("image {} is not one of the chunk's images", r.image_id)));
        }
        if !plan.methods().iter().any(|m| m.name() == r.method) {
            return Err(bad(format!("method `{}` is not studied", r.method)));
        }
        if r.attack == SAMPLING && plan.robustness.is_some() {
            continue;
        }
        if !attacks.contains(&(r.attack.as_str(), r.target_method.as_deref()))
            || !plan.epsilons.contains(&r.epsilon)
        {
            return Err(bad(format!("attack `{}` at ε = {} is not studied", r.attack, r.epsilon)));
        }
        attack_rows += 1;
    }
    let want = chunk.len() * plan.methods().len() * plan.attacks().len() * plan.epsilons.len();
    if attack_rows != want {
        return Err(bad(format!("{attack_rows} attack rows, expected {want}")));
    }
    Ok(())
}

/// The class names the example panels show: the config's `[data] classes` list, which must
/// name every output of the model, or the names of an image folder's classes.
fn study_class_names(plan: &Plan, set: &ImageSet, model_classes: usize) -> Result<Option<Vec<String>>> {
    match &plan.class_names {
        Some(names) if names.len() != model_classes => Err(Error::Config {
            file: plan.config_path.clone(),
            line: plan.class_names_line,
            message: format!(
                "field `data.classes`: lists {} class names, but the model `{}` has {model_classes} classes",
                names.len(),
                plan.models[0].label
            ),
        }),
        Some(names) => Ok(Some(names.clone())),
        None => Ok(set.class_names.clone()),
    }
}

/// Writes a finished study into the manifest's folder: `samples.parquet`; with `derived`,
/// the summary, plots and `index.html`; and `run.json` last, whose presence marks the study as
/// finished. Each file is recorded in the manifest before it is written. Shared by `run` and
/// `merge`. Returns the files written and, with `derived`, what was derived.
fn write_finished(
    manifest: &mut Manifest,
    (table, checks): (&SampleTable, &[CheckTable]),
    meta: &serde_json::Value,
    derived: bool,
) -> Result<(Vec<PathBuf>, Option<crate::report::Derived>)> {
    let out = manifest.dir().to_path_buf();
    manifest.claim(&["samples.parquet", "run.json"])?;
    let mut files = vec![out.join("samples.parquet")];
    write_samples(&files[0], table)?;
    let study = table.study.clone().unwrap_or_default();
    for t in checks {
        manifest.claim(&[t.kind.file()])?;
        let path = out.join(t.kind.file());
        t.write(&path, &study)?;
        files.push(path);
    }
    let text = serde_json::to_string_pretty(meta).map_err(|e| Error::Invalid(e.to_string()))?;
    let mut result = None;
    if derived {
        // The page shows run.json as `report` will read it back (serde_json's float parsing
        // may differ from the in-memory value in the last bit), so a regenerated page is
        // identical.
        let meta: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::Invalid(e.to_string()))?;
        let d = write_derived_owned(manifest, table, Some(&meta))?;
        files.extend(d.files.iter().cloned());
        result = Some(d);
    }
    let run_json = out.join("run.json");
    crate::atomic::write_bytes(&run_json, text.as_bytes())?;
    files.push(run_json);
    Ok((files, result))
}

/// Sorts rows by model, method, then attack × target method (all in the given orders; no
/// models: a study of one), image, ε.
pub fn sort_rows(
    rows: &mut [SampleRow],
    models: &[String],
    methods: &[String],
    attacks: &[(String, Option<String>)],
) {
    let model_pos = |n: &str| models.iter().position(|m| m == n);
    let method_pos = |n: &str| methods.iter().position(|m| m == n);
    let attack_pos =
        |r: &SampleRow| attacks.iter().position(|(a, t)| *a == r.attack && *t == r.target_method);
    rows.sort_by(|a, b| {
        (model_pos(&a.model), method_pos(&a.method), attack_pos(a), a.image_id)
            .cmp(&(model_pos(&b.model), method_pos(&b.method), attack_pos(b), b.image_id))
            .then(a.epsilon.total_cmp(&b.epsilon))
    });
}

/// `fragility merge OUT`: combines the finished shards in `OUT/shards/` into `OUT`'s
/// `samples.parquet`, `run.json`, summary, plots and page — the same tables as a single run.
///
/// Holds `OUT`'s lock like `run`, and follows its rule: a finished study of other settings or
/// inputs in `OUT` is replaced only with `force` (and then its panels and plots go too).
pub fn merge(out: &Path, force: bool) -> Result<RunReport> {
    let t0 = Instant::now();
    check_out_dir(out, "DIR")?;
    let shards_dir = out.join("shards");
    let shards = shard_folders(&shards_dir)?;
    // The check tables the shards wrote (shard 0's, checked against the others' below).
    let kinds: Vec<CheckKind> = match shards.first() {
        Some((_, p)) => CHECK_KINDS.into_iter().filter(|k| p.join(k.file()).is_file()).collect(),
        None => Vec::new(),
    };
    let mut writes = crate::manifest::STUDY_FILES.to_vec();
    writes.extend(kinds.iter().map(|k| k.file()));
    let (_lock, mut manifest) = Manifest::take(out, Kind::Study, "DIR", &writes)?;
    manifest.remove_leftovers()?;
    let count = shards
        .first()
        .map(|(s, _)| s.count)
        .ok_or_else(|| Error::data(&shards_dir, "no shard folders (i-of-n)"))?;
    if shards.iter().any(|(s, _)| s.count != count) {
        return Err(Error::data(&shards_dir, "shard folders of different shard counts"));
    }
    let missing: Vec<usize> = (0..count).filter(|i| !shards.iter().any(|(s, _)| s.index == *i)).collect();
    if !missing.is_empty() {
        return Err(Error::data(&shards_dir, format!("shards {missing:?} of {count} are missing")));
    }
    let mut tables = Vec::new();
    let mut metas = Vec::new();
    // Each shard's lock too: a shard still running (or rerun) is not read half-way.
    let mut shard_locks = Vec::new();
    for (s, p) in &shards {
        shard_locks.push(OutLock::acquire(p)?);
        let run_json = p.join("run.json");
        if !run_json.is_file() {
            return Err(Error::data(
                p,
                format!("shard {}/{} has not finished (no run.json)", s.index, s.count),
            ));
        }
        let meta = read_record(&run_json)?;
        let samples = p.join("samples.parquet");
        let table = crate::report::read_samples(&samples)?;
        check_same_study(&samples, table.study.as_deref(), &run_json, &meta)?;
        metas.push(meta);
        tables.push(table);
    }
    let fps: Vec<Option<Fingerprint>> = metas.iter().map(Fingerprint::from_json).collect();
    let Some(fp) = fps[0].clone() else {
        return Err(Error::data(
            &shards[0].1,
            "its run.json records no study fingerprint (an older version, or damaged)",
        ));
    };
    for ((s, p), other) in shards.iter().zip(&fps).skip(1) {
        if let Some(diff) = fp.difference(other.as_ref()) {
            return Err(Error::data(
                p,
                format!("shard {}/{} ran another study than shard 0 ({diff}); rerun it", s.index, s.count),
            ));
        }
    }
    if let Some((_, Some(diff))) = finished_study(out, &fp)? {
        if !force {
            return Err(Error::Invalid(format!(
                "{} holds a finished run of another study ({diff}); rerun `fragility merge --force` to replace it",
                out.display()
            )));
        }
        remove_derived(&mut manifest)?;
    }
    manifest.claim(&writes)?;
    remove_file_if_present(&out.join("run.json"))?;
    let first = &tables[0];
    if tables.iter().any(|t| {
        t.metric_columns != first.metric_columns
            || t.seed != first.seed
            || t.model_metrics != first.model_metrics
    }) {
        return Err(Error::data(&shards_dir, "the shards' tables have different columns or seeds"));
    }
    // The config's order of methods and attacks, as the first shard with rows lists them.
    let (mut methods, mut attacks) = (Vec::<String>::new(), Vec::<(String, Option<String>)>::new());
    for r in tables.iter().flat_map(|t| &t.rows) {
        if !methods.contains(&r.method) {
            methods.push(r.method.clone());
        }
        let a = (r.attack.clone(), r.target_method.clone());
        if !attacks.contains(&a) {
            attacks.push(a);
        }
    }
    let (metric_columns, directions, seed, model_metrics) =
        (first.metric_columns.clone(), first.directions.clone(), first.seed, first.model_metrics.clone());
    let images: ImageTraces = tables.iter().flat_map(|t| t.images.clone()).collect();
    let mut rows: Vec<SampleRow> = tables.into_iter().flat_map(|t| t.rows).collect();
    let models: Vec<String> = model_metrics.iter().map(|(m, _)| m.clone()).collect();
    sort_rows(&mut rows, &models, &methods, &attacks);
    let table =
        SampleTable { metric_columns, directions, rows, seed, images, study: Some(fp.id()), model_metrics };
    let mut ids: Vec<u64> = metas
        .iter()
        .flat_map(|m| m["images"]["ids"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_u64())
        .collect();
    ids.sort_unstable();
    let mut meta = metas[0].clone();
    meta["shard"] = serde_json::json!({ "merged": count });
    meta["images"]["studied"] = serde_json::json!(ids.len());
    meta["images"]["ids"] = serde_json::json!(ids);
    meta["images"]["list"] = traces_json(&table.images);
    meta["rows"] = serde_json::json!(table.rows.len());
    meta["timings_s"] =
        serde_json::json!({ "shards": metas.iter().map(|m| m["timings_s"].clone()).collect::<Vec<_>>() });
    let checks = merged_checks(&shards, &kinds, &fp.id(), &table)?;
    let (files, derived) = write_finished(&mut manifest, (&table, &checks), &meta, true)?;
    Ok(RunReport {
        out: out.to_path_buf(),
        images: ids.len(),
        requested: None,
        rows: table.rows.len(),
        seconds: t0.elapsed().as_secs_f64(),
        files,
        already_finished: false,
        derived,
    })
}

/// The shards' check tables of `kinds`, each shard's checked to be of the study `study`,
/// concatenated in one order (as a single run sorts them: models as `table` lists them, then
/// methods and tests in the order they first appear, which is the config's).
fn merged_checks(
    shards: &[(Shard, PathBuf)],
    kinds: &[CheckKind],
    study: &str,
    table: &SampleTable,
) -> Result<Vec<CheckTable>> {
    let several = !table.model_metrics.is_empty();
    let models: Vec<String> = table.model_metrics.iter().map(|(m, _)| m.clone()).collect();
    let mut out = Vec::new();
    for &kind in kinds {
        let mut all = CheckTable::new(kind, several);
        for (s, p) in shards {
            let path = p.join(kind.file());
            if !path.is_file() {
                return Err(Error::data(
                    p,
                    format!("shard {}/{} has no {} (shard 0 has)", s.index, s.count, kind.file()),
                ));
            }
            let (t, id) = CheckTable::read(&path, kind)?;
            if id.as_deref() != Some(study) {
                return Err(Error::data(
                    &path,
                    "this table belongs to another study than the shard's samples.parquet",
                ));
            }
            all.append(t)?;
        }
        let group = if kind == CheckKind::Sanity { "test" } else { "measure" };
        let (methods, tests) = (all.distinct("method"), all.distinct(group));
        out.push(all.sorted(&models, &methods, &tests));
    }
    Ok(out)
}

/// The shard folders in `shards_dir`, by shard count and index. Names are read strictly: only
/// the spelling `run --shard i/n` writes (`i-of-n`, no leading zeros or signs), so one shard
/// copied under another spelling (`00-of-2`) is never counted twice; anything else there is
/// refused, naming it.
fn shard_folders(shards_dir: &Path) -> Result<Vec<(Shard, PathBuf)>> {
    let entries = std::fs::read_dir(shards_dir).map_err(|e| Error::io(shards_dir, e))?;
    let mut shards: Vec<(Shard, PathBuf)> = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io(shards_dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let shard = name
            .split_once("-of-")
            .and_then(|(i, n)| Shard::parse(&format!("{i}/{n}")).ok())
            .filter(|s| format!("{}-of-{}", s.index, s.count) == name && e.path().is_dir());
        match shard {
            Some(s) => shards.push((s, e.path())),
            None => {
                return Err(Error::data(
                    e.path(),
                    "not a shard folder: `run --shard i/n` writes shards/i-of-n (e.g. 0-of-2, no leading zeros); move it out of shards/",
                ))
            }
        }
    }
    shards.sort_by_key(|(s, _)| (s.count, s.index));
    Ok(shards)
}

fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A progress bar on stderr with its rate and time left (for `explain` and `train`, whose
/// steps all cost alike; a study's stages do not, see [`crate::progress`]), hidden when `show`
/// is false.
pub fn progress_bar(show: bool, len: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} · {per_sec} · {eta} left {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(500));
    bar
}

/// The images of a study with their labels: a folder of PNG/JPEG files (labels from its
/// class sub-folders, or from `labels` as a CSV of file,label), or an idx/npy file with an
/// optional idx/npy `labels` file; then resized, cropped and converted as `opts` says.
pub fn load_study_images(
    images: &Path,
    labels: Option<&Path>,
    classes: Option<&Path>,
    opts: &crate::data::ImageOptions,
) -> Result<ImageSet> {
    if images.is_dir() {
        return crate::data::load_images_with(images, opts, classes, labels);
    }
    let set = crate::data::load_images_with(images, opts, classes, None)?;
    match labels {
        Some(l) => set.with_labels(load_labels(l)?, l),
        None => Ok(set),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parses_i_of_n() {
        assert_eq!(Shard::parse("2/8"), Ok(Shard { index: 2, count: 8 }));
        assert_eq!(Shard::parse(" 0 / 1 "), Ok(Shard { index: 0, count: 1 }));
        for bad in ["8/8", "1/0", "a/3", "3", "-1/3", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Shard { index: 1, count: 3 }.dir(Path::new("o")), Path::new("o/shards/1-of-3"));
    }

    #[test]
    fn shard_comes_from_slurm_or_an_indexed_job() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(Shard::from_env(env(&[])), Ok(None));
        const SLURM: [(&str, &str); 3] =
            [("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "3")];
        assert_eq!(Shard::from_env(env(&SLURM)), Ok(Some(Shard { index: 2, count: 4 })));
        const K8S: [(&str, &str); 2] = [("JOB_COMPLETION_INDEX", "1"), ("FRAGILITY_SHARDS", "3")];
        assert_eq!(Shard::from_env(env(&K8S)), Ok(Some(Shard { index: 1, count: 3 })));
        assert!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "1")])).is_err());
        // Errors quote the variables plainly (they printed `None` / `Some(4)`).
        let e = Shard::from_env(env(&[("SLURM_ARRAY_TASK_ID", "4"), ("SLURM_ARRAY_TASK_COUNT", "4")]))
            .unwrap_err();
        assert_eq!(
            e,
            "shard index 4 is not below the shard count 4 \
             (SLURM_ARRAY_TASK_ID=4 − SLURM_ARRAY_TASK_MIN=0 with SLURM_ARRAY_TASK_COUNT=4)"
        );
        const BELOW: [(&str, &str); 3] =
            [("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "3")];
        let e = Shard::from_env(env(&BELOW)).unwrap_err();
        assert_eq!(e, "SLURM_ARRAY_TASK_ID=1 is below SLURM_ARRAY_TASK_MIN=3");
        let e =
            Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "0"), ("FRAGILITY_SHARDS", "0")])).unwrap_err();
        assert!(!e.contains("Some") && !e.contains("None") && e.contains("FRAGILITY_SHARDS=0"), "{e}");
        assert!(
            Shard::from_env(env(&[("SLURM_ARRAY_TASK_ID", "x"), ("SLURM_ARRAY_TASK_COUNT", "4")])).is_err()
        );
    }
}

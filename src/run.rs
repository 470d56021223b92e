//! The fragility study: the loop of ../shared/DESIGN.md.
//!
//! For each chunk of (correctly classified) images: compute every method's clean map once;
//! for each attack, stack the chunk at every ε into one batch of rows, perturb, recompute every
//! method's map on the perturbed rows and score each against its clean map. Rows go to
//! `samples.parquet`; `summary.parquet`, one plot per metric and `run.json` follow. Nothing is
//! written until every row is computed, and each file is written atomically.

use crate::attack::{normalized, AttackInput, Goal, Objective, PrepareContext};
use crate::attribution::saliency;
use crate::config::Plan;
use crate::data::{load_labels, ImageSet};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::lock::OutLock;
use crate::metric::all_metrics;
use crate::metric::Direction;
use crate::model::{self, logits_in_passes, target_probability, Activation, Classifier};
use crate::progress::Progress;
use crate::report::figure::{class_text, example_file, write_figure, Figure, FigureRow};
use crate::report::summary::{attack_label, SAMPLING};
use crate::report::{write_derived, write_samples, SampleRow, SampleTable};
use crate::robustness::{estimate, ROBUSTNESS_COLUMNS};
use crate::seed;
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

/// Flat saliency maps [R][H·W] (|attribution| summed over channels) as f32 rows.
fn maps(attr: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(saliency(attr)?.flatten_from(1)?.to_vec2::<f32>()?)
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
        let (index, count) = match (num("SLURM_ARRAY_TASK_ID")?, num("SLURM_ARRAY_TASK_COUNT")?) {
            (Some(id), Some(count)) => (id.checked_sub(num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0)), count),
            _ => match (num("JOB_COMPLETION_INDEX")?, num("FRAGILITY_SHARDS")?) {
                (Some(i), Some(n)) => (Some(i), n),
                (Some(_), None) => {
                    return Err("JOB_COMPLETION_INDEX is set: give the shard count as FRAGILITY_SHARDS".into())
                }
                _ => return Ok(None),
            },
        };
        match index {
            Some(index) if index < count => Ok(Some(Shard { index, count })),
            _ => Err(format!("array task index {index:?} is not below the task count {count}")),
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
    let mut v = plan.resolved.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("config");
        o.remove("out");
    }
    Fingerprint::compute(&v, &plan.inputs)
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = crate::data::read_capped(path, MAX_RECORD_BYTES)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::data(path, format!("not JSON: {e}")))
}

/// The most bytes a `run.json` or `study.json` may have (one lists every studied image id).
const MAX_RECORD_BYTES: u64 = 256 << 20;

/// The record of an interrupted run inside `.partial/`.
const STUDY_FILE: &str = "study.json";

/// The finished study in `dir` (its `run.json` and `samples.parquet`), if there is one: its
/// record, and what differs from `fp` (`None`: the same study).
fn finished_study(dir: &Path, fp: &Fingerprint) -> Result<Option<(serde_json::Value, Option<String>)>> {
    let run_json = dir.join("run.json");
    if !(run_json.is_file() && dir.join("samples.parquet").is_file()) {
        return Ok(None);
    }
    let meta = read_json(&run_json)?;
    let diff = fp.difference(Fingerprint::from_json(&meta).as_ref());
    Ok(Some((meta, diff)))
}

/// Removes what a killed process may have left in `dir` (which the caller has locked): the
/// temporary files of atomic writes (`.NAME.tmpPID`), in the folder and its `plots/`,
/// `examples/` and `.partial/`. Shard folders have their own locks and are left alone.
fn remove_leftovers(dir: &Path) -> Result<()> {
    for sub in ["", "plots", "examples", ".partial"] {
        let folder = dir.join(sub);
        let Ok(entries) = std::fs::read_dir(&folder) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let temp = name.starts_with('.')
                && name
                    .rsplit_once(".tmp")
                    .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
            if temp && e.path().is_file() {
                std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
            }
        }
    }
    Ok(())
}

/// Without `--force`, the report of the finished study in `dir` (locked by the caller) if it
/// is this study, an error if it is another one, `None` if there is none.
fn already_finished(dir: &Path, fp: &Fingerprint, opts: &RunOptions) -> Result<Option<RunReport>> {
    if opts.force {
        return Ok(None);
    }
    let Some((meta, diff)) = finished_study(dir, fp)? else { return Ok(None) };
    if let Some(diff) = diff {
        return Err(Error::Invalid(format!(
            "{} holds a finished run of another study ({diff}); rerun with --force to replace it, or set another `out`",
            dir.display()
        )));
    }
    // Killed after run.json was written but before .partial/ was removed.
    let partial = dir.join(".partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    }
    let requested = meta["images"]["requested"].as_u64().map(|n| n as usize);
    Ok(Some(RunReport {
        out: dir.to_path_buf(),
        images: meta["images"]["studied"].as_u64().unwrap_or(0) as usize,
        requested: requested.filter(|_| opts.shard.is_none()),
        rows: meta["rows"].as_u64().unwrap_or(0) as usize,
        seconds: 0.0,
        files: Vec::new(),
        already_finished: true,
        derived: None,
    }))
}

/// Makes `.partial/` ready for this study and records it there (`study.json`): discards it
/// with `force`; otherwise trusts its chunks only if its record matches `fp`. Returns whether
/// chunks of an earlier, interrupted run of this study are there to continue.
fn prepare_partial(partial: &Path, fp: &Fingerprint, force: bool, dir: &Path) -> Result<bool> {
    if force && partial.exists() {
        std::fs::remove_dir_all(partial).map_err(|e| Error::io(partial, e))?;
    }
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
        if let Some(diff) = fp.difference(Fingerprint::from_json(&read_json(&record)?).as_ref()) {
            return Err(refuse(diff));
        }
    } else if has_chunks {
        return Err(refuse("its chunks have no record of their study".into()));
    }
    std::fs::create_dir_all(partial).map_err(|e| Error::io(partial, e))?;
    let text = serde_json::to_string_pretty(&fp.to_json()).map_err(|e| Error::Invalid(e.to_string()))?;
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

/// Removes the example panels and plots of whatever study `dir` held before.
fn remove_derived(dir: &Path) -> Result<()> {
    for sub in ["examples", "plots"] {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}

/// The model and the images of `plan`, checked against each other and against every setting
/// that depends on them, before anything is written.
fn load_checked(plan: &Plan) -> Result<(std::sync::Arc<dyn Classifier>, ImageSet)> {
    let set = load_study_images(
        &plan.images,
        plan.labels.as_deref(),
        plan.classes.as_deref(),
        &plan.image_options,
    )?;
    let model = model::load_sized(&plan.model, &plan.weights, plan.normalize.as_ref(), &plan.device, Some((set.h, set.w)))?;
    model.accepts(set.c, set.h, set.w).map_err(|e| Error::data(&plan.images, e.to_string()))?;
    plan.check_against(&set, model.num_classes())?;
    for m in &plan.methods {
        m.check(model.as_ref()).map_err(|e| Error::Config {
            file: plan.config_path.clone(),
            line: None,
            message: format!("method `{}`: {e}", m.name()),
        })?;
    }
    for a in &plan.attacks {
        a.check(model.as_ref(), (set.h, set.w)).map_err(|e| Error::Config {
            file: plan.config_path.clone(),
            line: None,
            message: format!("attack `{}`: {e}", a.name()),
        })?;
    }
    Ok((model, set))
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
    let progress = opts.progress;
    let dir = match opts.shard {
        Some(s) => s.dir(&plan.out),
        None => plan.out.clone(),
    };
    let fp = fingerprint(plan)?;
    // An existing folder is locked at once, and a finished study in it answered before the
    // model and the images are loaded (which can take minutes on a large data set).
    let early_lock = if dir.is_dir() { Some(OutLock::acquire(&dir)?) } else { None };
    if early_lock.is_some() {
        if let Some(report) = already_finished(&dir, &fp, opts)? {
            return Ok(report);
        }
    }
    let dev = &plan.device;
    let (model, set) = load_checked(plan)?;
    let class_names = study_class_names(plan, &set, model.num_classes())?;
    let (h, w) = (set.h, set.w);
    let t_load = t0.elapsed().as_secs_f64();

    let (preds, probs) = predict_all(model.as_ref(), &set, dev)?;
    let mut ids: Vec<usize> = (0..set.n)
        .filter(|&i| match (&set.labels, plan.correct_only) {
            (Some(l), true) => l[i] == preds[i] as i64,
            _ => true,
        })
        .collect();
    let eligible = ids.len();
    if let Some(n) = plan.count {
        ids.truncate(n);
    }
    if ids.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no image to study ({} images, none classified correctly)",
            plan.images.display(),
            set.n
        )));
    }

    // A new folder is created (and locked) only now, when everything has been checked.
    let _lock = match early_lock {
        Some(lock) => lock,
        None => OutLock::acquire(&dir)?,
    };
    remove_leftovers(&dir)?;
    if let Some(report) = already_finished(&dir, &fp, opts)? {
        return Ok(report);
    }
    let partial = dir.join(".partial");
    let resuming = prepare_partial(&partial, &fp, opts.force, &dir)?;
    // From here the folder holds no finished study until the new run.json is written: a kill
    // while the new tables replace the old ones leaves an interrupted run, not a mixed one.
    remove_file_if_present(&dir.join("run.json"))?;
    if !resuming {
        // A fresh computation: no panel or plot of an earlier study may stay beside the new ones.
        remove_derived(&dir)?;
    }

    let metrics = all_metrics(&plan.metric_ks);
    // Each steered attack's objective is also measured on every row (every method, every
    // attack), before and after: one pair of columns per distinct measure.
    let mut measures: Vec<&dyn Objective> = Vec::new();
    for a in &plan.attacks {
        if let Some(o) = a.objective() {
            if !measures.iter().any(|m| m.measure_name() == o.measure_name()) {
                measures.push(o);
            }
        }
    }
    let mut metric_columns: Vec<String> = metrics.iter().map(|m| m.column()).collect();
    let mut directions: Vec<_> = metrics.iter().map(|m| m.direction()).collect();
    for o in &measures {
        for when in ["before", "after"] {
            metric_columns.push(format!("{}_{when}", o.measure_name()));
            directions.push(o.measure_direction());
        }
    }
    // The sampling-robustness estimates (rows of the pseudo-attack `sampling`) come last.
    let attack_columns = metric_columns.len();
    if plan.robustness.is_some() {
        for c in ROBUSTNESS_COLUMNS {
            metric_columns.push(c.to_string());
            directions.push(Direction::LowerIsMoreSimilar);
        }
    }
    // Chunk k (of `batch_size` images) belongs to shard k mod n: the same chunks, hence the
    // same computations, as in a single run.
    let chunks: Vec<(usize, &[usize])> = ids
        .chunks(plan.batch_size)
        .enumerate()
        .filter(|(k, _)| opts.shard.is_none_or(|s| k % s.count == s.index))
        .collect();
    let studied: Vec<usize> = chunks.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    // Example panels go to the first `examples` studied images (of all shards).
    let example_ids = &ids[..plan.examples.min(ids.len())];
    // Progress stages: the clean maps, the robustness estimates, each attack; each processes
    // every studied image of this run once.
    let mut stages = vec![("clean maps".to_string(), studied.len())];
    if plan.robustness.is_some() {
        stages.push(("sampling robustness".to_string(), studied.len()));
    }
    let first_attack_stage = stages.len();
    for a in &plan.attacks {
        stages.push((attack_label(a.name(), a.target_method().map(|t| t.name())), studied.len()));
    }
    let bar = Progress::new(progress, &stages);
    let mut rows = Vec::new();
    let mut attack_seconds = vec![0f64; plan.attacks.len()];
    let mut resumed = 0usize;
    let eps_count = plan.epsilons.len();
    for (pos, &(k, chunk)) in chunks.iter().enumerate() {
        let chunk_file = partial.join(format!("chunk-{k:06}.parquet"));
        if chunk_file.is_file() {
            let table = crate::report::read_samples(&chunk_file)?;
            check_chunk(&chunk_file, &table, plan, chunk, &metric_columns)?;
            rows.extend(table.rows);
            resumed += 1;
            bar.resume(chunk.len());
            continue;
        }
        let detail = format!("chunk {}/{} ({} images)", pos + 1, chunks.len(), chunk.len());
        bar.begin(0, chunk.len(), detail.clone());
        let mut chunk_rows = Vec::new();
        let x = batch_tensor(&set, chunk, dev)?;
        let targets: Vec<u32> = chunk.iter().map(|&i| preds[i]).collect();
        let clean: Vec<Vec<Vec<f32>>> = plan
            .methods
            .iter()
            .map(|m| maps(&m.attribute(model.as_ref(), &x, &targets, Activation::Relu)?))
            .collect::<Result<_>>()?;
        // goals[mi][k]: measure k prepared on method mi's clean maps, with their clean values.
        let mut goals = Vec::with_capacity(plan.methods.len());
        let mut measured_before = Vec::with_capacity(plan.methods.len());
        for (mi, method) in plan.methods.iter().enumerate() {
            let normal: Vec<Vec<f32>> = clean[mi].iter().map(|m| normalized(m)).collect();
            let cx = PrepareContext {
                model: model.as_ref(),
                method: method.as_ref(),
                clean: &normal,
                h,
                w,
                device: dev,
            };
            let g: Vec<Box<dyn Goal>> = measures.iter().map(|o| o.prepare(&cx)).collect::<Result<_>>()?;
            measured_before.push(
                g.iter()
                    .map(|g| normal.iter().enumerate().map(|(i, m)| g.measure(i, m)).collect())
                    .collect::<Vec<Vec<f64>>>(),
            );
            goals.push(g);
        }
        bar.end();
        // Rows are ε-major: row e·B + i is image i of the chunk at ε_e.
        let b = chunk.len();
        // Example panels: the chunk's images among the first `examples` studied, at the largest ε.
        let example_rows: Vec<usize> = (0..b).filter(|&i| example_ids.contains(&chunk[i])).collect();
        let largest =
            (0..eps_count).max_by(|&a, &b| plan.epsilons[a].total_cmp(&plan.epsilons[b])).unwrap_or(0);
        let x_rows = if example_rows.is_empty() { Vec::new() } else { flat_rows(&x)? };
        let xs = Tensor::cat(&vec![x.clone(); eps_count], 0)?;
        let row_targets: Vec<u32> = (0..eps_count).flat_map(|_| targets.iter().copied()).collect();
        let row_eps: Vec<f32> =
            plan.epsilons.iter().flat_map(|&e| std::iter::repeat_n(e as f32, b)).collect();
        if let Some(settings) = &plan.robustness {
            bar.begin(1, b, detail.clone());
            let image_ids: Vec<u32> = chunk.iter().map(|&i| i as u32).collect();
            for (mi, method) in plan.methods.iter().enumerate() {
                for r in estimate(model.as_ref(), method.as_ref(), &x, &image_ids, &targets, settings)? {
                    let id = r.image_id as usize;
                    let mut values = vec![None; attack_columns];
                    values.extend(r.values().iter().map(|v| v.filter(|v| v.is_finite())));
                    chunk_rows.push(SampleRow {
                        image_id: r.image_id,
                        label: set.labels.as_ref().map_or(-1, |l| l[id]),
                        predicted: preds[id] as i64,
                        method: method.name().to_string(),
                        attack: SAMPLING.to_string(),
                        target_method: None,
                        epsilon: settings.radius,
                        label_kept: true,
                        iterations: r.kept_samples,
                        linf: settings.radius,
                        confidence_before: probs[id],
                        confidence_after: probs[id],
                        metrics: values,
                    });
                }
                bar.step(mi + 1, plan.methods.len());
            }
            bar.end();
        }
        for (ai, attack) in plan.attacks.iter().enumerate() {
            let target = attack.target_method().map(|t| t.name().to_string());
            let label = attack_label(attack.name(), target.as_deref());
            bar.begin(first_attack_stage + ai, b, detail.clone());
            let ta = Instant::now();
            let seeds: Vec<u64> = (0..eps_count)
                .flat_map(|e| {
                    let eps_bits = plan.epsilons[e].to_bits();
                    chunk.iter().map(move |&i| {
                        let mut key = vec![seed::hash_str(attack.name()), i as u64, eps_bits];
                        if let Some(t) = attack.target_method() {
                            key.push(seed::hash_str(t.name()));
                        }
                        seed::derive(plan.seed, &key)
                    })
                })
                .collect();
            let input = AttackInput {
                model: model.as_ref(),
                x: &xs,
                eps: &row_eps,
                targets: &row_targets,
                seeds: &seeds,
                progress: Some(&|done, total| bar.step(done, total)),
            };
            let outcome = attack.perturb(&input)?;
            let after_logits = logits_in_passes(model.as_ref(), &outcome.x_adv)?;
            let after_conf = target_probability(&after_logits, &row_targets)?;
            let after_pred: Vec<u32> = if example_rows.is_empty() {
                Vec::new()
            } else {
                after_logits.argmax(1)?.to_vec1::<u32>()?
            };
            // Per example image (its index in the chunk): each method's perturbed map and the
            // image's scores for it.
            let mut panels: Vec<(usize, MethodMaps)> = Vec::new();
            for (mi, method) in plan.methods.iter().enumerate() {
                let after = maps(&method.attribute(
                    model.as_ref(),
                    &outcome.x_adv,
                    &row_targets,
                    Activation::Relu,
                )?)?;
                for &i in &example_rows {
                    let r = largest * b + i;
                    let entry = (
                        method.name().to_string(),
                        after[r].clone(),
                        example_scores(&metrics, &clean[mi][i], &after[r], (h, w)),
                    );
                    match panels.iter_mut().find(|(j, _)| *j == i) {
                        Some((_, v)) => v.push(entry),
                        None => panels.push((i, vec![entry])),
                    }
                }
                for (r, map) in after.iter().enumerate() {
                    let (e, i) = (r / b, r % b);
                    let id = chunk[i];
                    let mut values: Vec<Option<f64>> =
                        metrics.iter().map(|m| m.score(&clean[mi][i], map, h, w)).collect();
                    let normal = normalized(map);
                    for (k, g) in goals[mi].iter().enumerate() {
                        let finite = |v: f64| Some(v).filter(|v| v.is_finite());
                        values.push(finite(measured_before[mi][k][i]));
                        values.push(finite(g.measure(i, &normal)));
                    }
                    values.resize(metric_columns.len(), None);
                    chunk_rows.push(SampleRow {
                        image_id: id as u32,
                        label: set.labels.as_ref().map_or(-1, |l| l[id]),
                        predicted: preds[id] as i64,
                        method: method.name().to_string(),
                        attack: attack.name().to_string(),
                        target_method: target.clone(),
                        epsilon: plan.epsilons[e],
                        label_kept: outcome.label_kept[r],
                        iterations: outcome.iterations[r],
                        linf: outcome.linf[r] as f64,
                        confidence_before: probs[id],
                        confidence_after: after_conf[r],
                        metrics: values,
                    });
                }
            }
            for (i, after_maps) in &panels {
                let id = chunk[*i];
                let r = largest * b + i;
                let names = class_names.as_deref();
                let classes = (
                    format!("before: {}", class_text(preds[id] as i64, names, probs[id])),
                    format!("after: {}", class_text(after_pred[r] as i64, names, after_conf[r])),
                );
                write_example(
                    &dir,
                    &label,
                    (id, classes),
                    plan.epsilons[largest],
                    (&x_rows[*i], &clean, *i),
                    (&flat_rows(&outcome.x_adv.narrow(0, r, 1)?)?[0], after_maps),
                    plan,
                    (h, w),
                )?;
            }
            attack_seconds[ai] += ta.elapsed().as_secs_f64();
            bar.end();
        }
        // The chunk is done: keep its rows on disk before anything else can go wrong.
        let table = SampleTable {
            metric_columns: metric_columns.clone(),
            directions: directions.clone(),
            rows: chunk_rows,
            seed: plan.seed,
        };
        write_samples(&chunk_file, &table)?;
        rows.extend(table.rows);
    }
    bar.finish();

    // Deterministic row order whatever the chunking: method, attack (in config order, each
    // target method after the other), image, ε.
    let method_order: Vec<String> = plan.methods.iter().map(|m| m.name().to_string()).collect();
    let attack_order: Vec<(String, Option<String>)> = plan
        .attacks
        .iter()
        .map(|a| (a.name().to_string(), a.target_method().map(|t| t.name().to_string())))
        .chain(std::iter::once((SAMPLING.to_string(), None)))
        .collect();
    sort_rows(&mut rows, &method_order, &attack_order);
    let table = SampleTable { metric_columns, directions, rows, seed: plan.seed };
    let out = &dir;
    let seconds = t0.elapsed().as_secs_f64();
    let meta = serde_json::json!({
        "fragility_version": env!("CARGO_PKG_VERSION"),
        "candle_version": "0.11.1",
        "git_revision": git_revision(),
        "settings": plan.resolved,
        "seed": plan.seed,
        "threads": candle_core::utils::get_num_threads(),
        "shard": opts.shard.map(|s| serde_json::json!({ "index": s.index, "count": s.count })),
        "resumed_chunks": resumed,
        "images": {
            "in_file": set.n,
            "eligible": eligible,
            "requested": plan.count,
            "studied": studied.len(),
            "ids": studied,
        },
        "rows": table.rows.len(),
        "timings_s": {
            "load": t_load,
            "attacks": plan.attacks.iter().zip(&attack_seconds).map(|(a, s)| {
                (attack_label(a.name(), a.target_method().map(|t| t.name())), serde_json::json!(s))
            }).collect::<serde_json::Map<_, _>>(),
            "total": seconds,
        },
    });
    let mut meta = meta;
    if let (Some(m), serde_json::Value::Object(keys)) = (meta.as_object_mut(), fp.to_json()) {
        m.extend(keys);
    }
    // A shard leaves summary, plots and page to `fragility merge`.
    let (files, derived) = write_finished(out, &table, &meta, opts.shard.is_none())?;
    std::fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    Ok(RunReport {
        out: out.clone(),
        images: studied.len(),
        requested: opts.shard.map_or(plan.count, |_| None),
        rows: table.rows.len(),
        seconds,
        files,
        already_finished: false,
        derived,
    })
}

/// Checks that a chunk file of `.partial/` holds what this study computes for `chunk`: its
/// columns and seed, only its images, methods, attacks and ε, and every attack row. A stale
/// or foreign chunk is refused (naming the file), never merged in silently.
fn check_chunk(
    path: &Path,
    table: &SampleTable,
    plan: &Plan,
    chunk: &[usize],
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
        plan.attacks.iter().map(|a| (a.name(), a.target_method().map(|t| t.name()))).collect();
    let mut attack_rows = 0;
    for r in &table.rows {
        if !chunk.contains(&(r.image_id as usize)) {
            return Err(bad(format!("image {} is not one of the chunk's images", r.image_id)));
        }
        if !plan.methods.iter().any(|m| m.name() == r.method) {
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
    let want = chunk.len() * plan.methods.len() * plan.attacks.len() * plan.epsilons.len();
    if attack_rows != want {
        return Err(bad(format!("{attack_rows} attack rows, expected {want}")));
    }
    Ok(())
}

/// Each method's name with its flat perturbed map and the image's scores for it.
type MethodMaps = Vec<(String, Vec<f32>, String)>;

/// Flat f32 rows of a [B,...] tensor.
fn flat_rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.flatten_from(1)?.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?)
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
                plan.model
            ),
        }),
        Some(names) => Ok(Some(names.clone())),
        None => Ok(set.class_names.clone()),
    }
}

/// "top-100 ∩ 0.450, Spearman 0.520": the image's own scores of one method's two maps (the
/// first top-k intersection and Spearman, as far as the study measures them).
fn example_scores(
    metrics: &[Box<dyn crate::metric::Metric>],
    clean: &[f32],
    after: &[f32],
    (h, w): (usize, usize),
) -> String {
    let top = metrics.iter().find(|m| crate::report::labels::top_k_of(&m.column()).is_some());
    let rank = metrics.iter().find(|m| m.column() == "spearman");
    let mut parts = Vec::new();
    if let Some(m) = top {
        let k = crate::report::labels::top_k_of(&m.column()).unwrap_or(0);
        parts.push(format!(
            "top-{k} ∩ {}",
            m.score(clean, after, h, w).map_or("–".into(), |v| format!("{v:.3}"))
        ));
    }
    if let Some(m) = rank {
        parts.push(format!(
            "Spearman {}",
            m.score(clean, after, h, w).map_or("–".into(), |v| format!("{v:.3}"))
        ));
    }
    parts.join(", ")
}

/// Writes `examples/<attack>_image<id>.png`, the paper's figure 1 at budget `eps`: per method,
/// the clean image and its map, the perturbed image and its map, with the class and its
/// confidence before and after (`classes`) and the image's scores per method.
#[allow(clippy::too_many_arguments)]
fn write_example(
    dir: &Path,
    attack_label: &str,
    (image_id, (before, after)): (usize, (String, String)),
    eps: f64,
    (clean_image, clean_maps, i): (&[f32], &[Vec<Vec<f32>>], usize),
    (adv_image, adv_maps): (&[f32], &MethodMaps),
    plan: &Plan,
    (h, w): (usize, usize),
) -> Result<()> {
    let rows = adv_maps
        .iter()
        .enumerate()
        .map(|(mi, (name, adv_map, scores))| FigureRow {
            method: name.clone(),
            clean_map: &clean_maps[mi][i],
            perturbed_map: adv_map,
            scores: scores.clone(),
        })
        .collect();
    let path = dir.join("examples").join(example_file(attack_label, image_id));
    let figure = Figure {
        title: format!("image {image_id}, {attack_label}, ε = {eps} (seed {})", plan.seed),
        image: clean_image,
        perturbed: adv_image,
        size: (h, w),
        before,
        after,
        rows,
    };
    write_figure(&path, &figure)
}

/// Writes a finished study into `out`: `samples.parquet`; with `derived`, the summary, plots
/// and `index.html`; and `run.json` last, whose presence marks the study as finished. Shared
/// by `run` and `merge`. Returns the files written and, with `derived`, what was derived.
fn write_finished(
    out: &Path,
    table: &SampleTable,
    meta: &serde_json::Value,
    derived: bool,
) -> Result<(Vec<PathBuf>, Option<crate::report::Derived>)> {
    let mut files = vec![out.join("samples.parquet")];
    write_samples(&files[0], table)?;
    let text = serde_json::to_string_pretty(meta).map_err(|e| Error::Invalid(e.to_string()))?;
    let mut result = None;
    if derived {
        // The page shows run.json as `report` will read it back (serde_json's float parsing
        // may differ from the in-memory value in the last bit), so a regenerated page is
        // identical.
        let meta: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::Invalid(e.to_string()))?;
        let d = write_derived(out, table, Some(&meta))?;
        files.extend(d.files.iter().cloned());
        result = Some(d);
    }
    let run_json = out.join("run.json");
    crate::atomic::write_bytes(&run_json, text.as_bytes())?;
    files.push(run_json);
    Ok((files, result))
}

/// Sorts rows by method, then attack × target method (both in the given orders), image, ε.
pub fn sort_rows(rows: &mut [SampleRow], methods: &[String], attacks: &[(String, Option<String>)]) {
    let method_pos = |n: &str| methods.iter().position(|m| m == n);
    let attack_pos =
        |r: &SampleRow| attacks.iter().position(|(a, t)| *a == r.attack && *t == r.target_method);
    rows.sort_by(|a, b| {
        (method_pos(&a.method), attack_pos(a), a.image_id)
            .cmp(&(method_pos(&b.method), attack_pos(b), b.image_id))
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
    let shards_dir = out.join("shards");
    let entries = std::fs::read_dir(&shards_dir).map_err(|e| Error::io(&shards_dir, e))?;
    let _lock = OutLock::acquire(out)?;
    remove_leftovers(out)?;
    let mut shards: Vec<(Shard, PathBuf)> = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io(&shards_dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(s) = name.split_once("-of-").and_then(|(i, n)| Shard::parse(&format!("{i}/{n}")).ok()) {
            shards.push((s, e.path()));
        }
    }
    shards.sort_by_key(|(s, _)| (s.count, s.index));
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
        metas.push(read_json(&run_json)?);
        tables.push(crate::report::read_samples(&p.join("samples.parquet"))?);
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
        remove_derived(out)?;
    }
    remove_file_if_present(&out.join("run.json"))?;
    let first = &tables[0];
    if tables.iter().any(|t| t.metric_columns != first.metric_columns || t.seed != first.seed) {
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
    let (metric_columns, directions, seed) =
        (first.metric_columns.clone(), first.directions.clone(), first.seed);
    let mut rows: Vec<SampleRow> = tables.into_iter().flat_map(|t| t.rows).collect();
    sort_rows(&mut rows, &methods, &attacks);
    let table = SampleTable { metric_columns, directions, rows, seed };
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
    meta["rows"] = serde_json::json!(table.rows.len());
    meta["timings_s"] =
        serde_json::json!({ "shards": metas.iter().map(|m| m["timings_s"].clone()).collect::<Vec<_>>() });
    let (files, derived) = write_finished(out, &table, &meta, true)?;
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
        assert!(
            Shard::from_env(env(&[("SLURM_ARRAY_TASK_ID", "4"), ("SLURM_ARRAY_TASK_COUNT", "4")])).is_err()
        );
        assert!(
            Shard::from_env(env(&[("SLURM_ARRAY_TASK_ID", "x"), ("SLURM_ARRAY_TASK_COUNT", "4")])).is_err()
        );
    }
}

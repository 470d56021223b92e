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
use crate::data::{load_images, load_labels, ImageSet};
use crate::error::{Error, Result};
use crate::metric::all_metrics;
use crate::model::{self, logits_in_passes, target_probability, Activation, Classifier};
use crate::report::{write_derived, write_samples, SampleRow, SampleTable};
use crate::seed;
use candle_core::{Device, Tensor};
use std::path::PathBuf;
use std::time::Instant;

/// What a finished run reports back.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The output folder.
    pub out: PathBuf,
    /// Images studied.
    pub images: usize,
    /// Rows written to samples.parquet.
    pub rows: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Files written.
    pub files: Vec<PathBuf>,
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

/// Runs the study described by `plan`; `progress` shows a progress bar on the terminal.
pub fn run(plan: &Plan, progress: bool) -> Result<RunReport> {
    let t0 = Instant::now();
    let dev = &plan.device;
    let model = model::load(&plan.model, &plan.weights, dev)?;
    let mut set = load_images(&plan.images)?;
    if let Some(l) = &plan.labels {
        set = set.with_labels(load_labels(l)?, l)?;
    }
    let (c, h, w) = model.input_shape();
    if (set.c, set.h, set.w) != (c, h, w) {
        return Err(Error::data(
            &plan.images,
            format!("images are {}×{}×{}, model `{}` expects {c}×{h}×{w}", set.c, set.h, set.w, plan.model),
        ));
    }
    for m in &plan.methods {
        m.check(model.as_ref()).map_err(|e| Error::Config {
            file: plan.config_path.clone(),
            line: None,
            message: format!("method `{}`: {e}", m.name()),
        })?;
    }
    for a in &plan.attacks {
        a.check(model.as_ref()).map_err(|e| Error::Config {
            file: plan.config_path.clone(),
            line: None,
            message: format!("attack `{}`: {e}", a.name()),
        })?;
    }
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
    let chunks: Vec<&[usize]> = ids.chunks(plan.batch_size).collect();
    let bar = progress_bar(progress, (chunks.len() * plan.attacks.len()) as u64);
    let mut rows = Vec::new();
    let mut attack_seconds = vec![0f64; plan.attacks.len()];
    let eps_count = plan.epsilons.len();
    for chunk in &chunks {
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
        // Rows are ε-major: row e·B + i is image i of the chunk at ε_e.
        let b = chunk.len();
        let xs = Tensor::cat(&vec![x.clone(); eps_count], 0)?;
        let row_targets: Vec<u32> = (0..eps_count).flat_map(|_| targets.iter().copied()).collect();
        let row_eps: Vec<f32> =
            plan.epsilons.iter().flat_map(|&e| std::iter::repeat_n(e as f32, b)).collect();
        for (ai, attack) in plan.attacks.iter().enumerate() {
            let target = attack.target_method().map(|t| t.name().to_string());
            let label = match &target {
                Some(t) => format!("{} → {t}", attack.name()),
                None => attack.name().to_string(),
            };
            bar.set_message(format!("{label} on images {}..{}", chunk[0], chunk[b - 1]));
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
            };
            let outcome = attack.perturb(&input)?;
            let after_conf =
                target_probability(&logits_in_passes(model.as_ref(), &outcome.x_adv)?, &row_targets)?;
            for (mi, method) in plan.methods.iter().enumerate() {
                let after = maps(&method.attribute(
                    model.as_ref(),
                    &outcome.x_adv,
                    &row_targets,
                    Activation::Relu,
                )?)?;
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
                    rows.push(SampleRow {
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
            attack_seconds[ai] += ta.elapsed().as_secs_f64();
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    // Deterministic row order whatever the chunking: method, attack (in config order, each
    // target method after the other), image, ε.
    let method_pos = |n: &str| plan.methods.iter().position(|m| m.name() == n);
    let attack_pos = |r: &SampleRow| {
        plan.attacks.iter().position(|a| {
            a.name() == r.attack && a.target_method().map(|t| t.name()) == r.target_method.as_deref()
        })
    };
    rows.sort_by(|a, b| {
        (method_pos(&a.method), attack_pos(a), a.image_id)
            .cmp(&(method_pos(&b.method), attack_pos(b), b.image_id))
            .then(a.epsilon.total_cmp(&b.epsilon))
    });
    let mut metric_columns: Vec<String> = metrics.iter().map(|m| m.column()).collect();
    let mut directions: Vec<_> = metrics.iter().map(|m| m.direction()).collect();
    for o in &measures {
        for when in ["before", "after"] {
            metric_columns.push(format!("{}_{when}", o.measure_name()));
            directions.push(o.measure_direction());
        }
    }
    let table = SampleTable { metric_columns, directions, rows, seed: plan.seed };
    let out = &plan.out;
    let mut files = vec![out.join("samples.parquet")];
    write_samples(&files[0], &table)?;
    let seconds = t0.elapsed().as_secs_f64();
    let meta = serde_json::json!({
        "fragility_version": env!("CARGO_PKG_VERSION"),
        "candle_version": "0.11.1",
        "git_revision": git_revision(),
        "settings": plan.resolved,
        "seed": plan.seed,
        "threads": candle_core::utils::get_num_threads(),
        "images": { "in_file": set.n, "eligible": eligible, "studied": ids.len(), "ids": ids },
        "rows": table.rows.len(),
        "timings_s": {
            "load": t_load,
            "attacks": plan.attacks.iter().zip(&attack_seconds).map(|(a, s)| {
                let label = match a.target_method() { Some(t) => format!("{} → {}", a.name(), t.name()), None => a.name().to_string() };
                (label, serde_json::json!(s))
            }).collect::<serde_json::Map<_, _>>(),
            "total": seconds,
        },
    });
    let run_json = out.join("run.json");
    let text = serde_json::to_string_pretty(&meta).map_err(|e| Error::Invalid(e.to_string()))?;
    crate::atomic::write_bytes(&run_json, text.as_bytes())?;
    files.push(run_json);
    // Summary, plots (one per metric and per measure after the attack) and index.html.
    let (summary, derived) = write_derived(out, &table, Some(&meta))?;
    files.extend(derived);
    crate::report::summary::print_summary(&summary);
    Ok(RunReport { out: out.clone(), images: ids.len(), rows: table.rows.len(), seconds, files })
}

fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A progress bar on stderr, hidden when `show` is false.
pub fn progress_bar(show: bool, len: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(500));
    bar
}

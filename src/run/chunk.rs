//! One chunk of a study, in named stages: the clean maps (and each steered attack's measure
//! prepared on them), the sampling-robustness rows, then per attack the perturbation, the
//! perturbed maps, their scores and the example panels.
//!
//! Shapes: the chunk's images x [B,C,H,W]; an attack sees them stacked at every ε, ε-major
//! ([E·B,C,H,W], row e·B + i is image i at ε_e); maps are flat saliencies [H·W] per row.

use super::{attack_label, batch_tensor, SAMPLING};
use crate::attack::{normalized, Attack, AttackInput, Goal, Objective, PrepareContext};
use crate::attribution::{attribution_rows, normalized_saliency, saliency_rows};
use crate::config::{ModelPlan, Plan};
use crate::data::ImageSet;
use crate::error::Result;
use crate::metric::{all_metrics, Direction, Metric};
use crate::model::{logits_in_passes, target_probability, Activation, Classifier};
use crate::progress::Progress;
use crate::report::figure::{class_text, example_file, write_figure, Figure, FigureRow};
use crate::report::{SampleRow, SampleTable};
use crate::robustness::{estimate, RobustnessSettings, ROBUSTNESS_COLUMNS};
use crate::seed;
use candle_core::Tensor;
use std::path::Path;
use std::time::Instant;

/// The metric columns of a study's table: every similarity metric, each steered attack's
/// measure before and after (one pair per distinct measure, on every row), then the
/// sampling-robustness estimates.
pub(super) struct Columns<'a> {
    pub(super) metrics: Vec<Box<dyn Metric>>,
    measures: Vec<&'a dyn Objective>,
    pub(super) names: Vec<String>,
    pub(super) directions: Vec<Direction>,
    /// The columns attack rows fill (the robustness estimates come after them).
    attack_columns: usize,
}

impl<'a> Columns<'a> {
    /// The columns of `plan`'s study of `model` on h×w images (an unset top-k resolves to
    /// the image's).
    pub(super) fn new(plan: &Plan, model: &'a ModelPlan, (h, w): (usize, usize)) -> Self {
        let metrics = all_metrics(&plan.metric_ks_for(h, w));
        let mut measures: Vec<&dyn Objective> = Vec::new();
        for o in model.attacks.iter().filter_map(|a| a.objective()) {
            if !measures.iter().any(|m| m.measure_name() == o.measure_name()) {
                measures.push(o);
            }
        }
        let mut names: Vec<String> = metrics.iter().map(|m| m.column()).collect();
        let mut directions: Vec<_> = metrics.iter().map(|m| m.direction()).collect();
        for o in &measures {
            for when in ["before", "after"] {
                names.push(format!("{}_{when}", o.measure_name()));
                directions.push(o.measure_direction());
            }
        }
        let attack_columns = names.len();
        if plan.robustness.is_some() {
            for c in ROBUSTNESS_COLUMNS {
                names.push(c.to_string());
                directions.push(Direction::LowerIsMoreSimilar);
            }
        }
        Self { metrics, measures, names, directions, attack_columns }
    }
}

/// The progress stages of a run over `images` images (of every model): the clean maps, the
/// robustness estimates, each attack. Returns them and the index of the first attack's stage.
pub(super) fn stages(plan: &Plan, images: usize) -> (Vec<(String, usize)>, usize) {
    let mut stages = vec![("clean maps".to_string(), images)];
    if plan.robustness.is_some() {
        stages.push(("sampling robustness".to_string(), images));
    }
    if plan.sanity.is_some() {
        stages.push(("sanity checks".to_string(), images));
    }
    if plan.faithfulness.is_some() {
        stages.push(("faithfulness".to_string(), images));
    }
    let first_attack = stages.len();
    for a in plan.attacks() {
        stages.push((attack_label(a.name(), a.target_method().map(|t| t.name())), images));
    }
    (stages, first_attack)
}

/// Everything a chunk reads: the study's settings, the model (its settings, label and
/// network), the images as it sees them and its predictions, the table's columns, the images
/// that get example panels, and where the panels go.
pub(super) struct Study<'a> {
    pub(super) plan: &'a Plan,
    pub(super) spec: &'a ModelPlan,
    /// The rows' `model`: the label in a study of several models, empty for one.
    pub(super) label: &'a str,
    pub(super) model: &'a dyn Classifier,
    pub(super) set: &'a ImageSet,
    pub(super) preds: &'a [u32],
    pub(super) probs: &'a [f64],
    pub(super) class_names: Option<&'a [String]>,
    pub(super) columns: &'a Columns<'a>,
    pub(super) example_ids: &'a [usize],
    pub(super) dir: &'a Path,
    pub(super) bar: &'a Progress,
    pub(super) first_attack_stage: usize,
    /// The model's trained `state_dict`, where a sanity test re-initialises its layers.
    pub(super) trained: Option<crate::sanity::TrainedModel<'a>>,
}

/// What a chunk computes: its rows of `samples.parquet` and of each check table the study
/// asks for.
pub(super) struct ChunkTables {
    pub(super) samples: SampleTable,
    pub(super) checks: Vec<crate::report::checks::CheckTable>,
}

/// Seconds spent in each stage over the chunks a run computes (of every model; chunks read
/// back on resume count nothing), as run.json's `timings_s` records them.
#[derive(Debug, Clone, Default)]
pub(super) struct Seconds {
    /// Stage 1: every method's clean maps (and the attack metrics prepared on them).
    pub(super) maps: f64,
    /// Per sanity test, in the plan's order.
    pub(super) sanity: Vec<f64>,
    /// Per faithfulness measure, in the plan's order.
    pub(super) faithfulness: Vec<f64>,
    /// Per attack, in the plan's order (each with the re-measurement of every method).
    pub(super) attacks: Vec<f64>,
}

impl Seconds {
    /// All zero, one entry per test, measure and attack of `plan`.
    pub(super) fn new(plan: &crate::config::Plan) -> Self {
        Self {
            maps: 0.0,
            sanity: vec![0.0; plan.sanity.as_ref().map_or(0, |s| s.tests.len())],
            faithfulness: vec![0.0; plan.faithfulness.as_ref().map_or(0, |f| f.measures.len())],
            attacks: vec![0.0; plan.attacks().len()],
        }
    }
}

/// A chunk's clean maps [method][image][pixel], for the methods a steered attack targets the
/// same maps normalised as attacks read them ([`normalized_saliency`]), and per method each
/// measure prepared on them with its clean values [method][measure][image].
struct Clean {
    maps: Vec<Vec<Vec<f32>>>,
    /// The signed attributions [method][image][C·H·W], where a check reads them.
    signed: Vec<Vec<Vec<f32>>>,
    normal: Vec<Option<Vec<Vec<f32>>>>,
    goals: Vec<Vec<Box<dyn Goal>>>,
    before: Vec<Vec<Vec<f64>>>,
}

/// The chunk stacked at every ε (ε-major), with each row's target, budget and seed source.
struct Stacked {
    xs: Tensor,
    targets: Vec<u32>,
    eps: Vec<f32>,
    /// The index of the largest ε (the example panels show it).
    largest: usize,
}

/// Each method's name with its flat perturbed map and the image's scores for it.
type MethodMaps = Vec<(String, Vec<f32>, String)>;

/// Flat f32 rows of a [B,...] tensor.
fn flat_rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.flatten_from(1)?.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?)
}

impl Study<'_> {
    fn hw(&self) -> (usize, usize) {
        (self.set.h, self.set.w)
    }

    /// The rows of the images `chunk` (`detail` names it in the progress line); adds each
    /// stage's seconds to `seconds`.
    pub(super) fn chunk(&self, chunk: &[usize], detail: &str, seconds: &mut Seconds) -> Result<ChunkTables> {
        let plan = self.plan;
        let x = batch_tensor(self.set, chunk, &plan.device)?;
        let targets: Vec<u32> = chunk.iter().map(|&i| self.preds[i]).collect();
        self.bar.begin(0, chunk.len(), detail.to_string());
        let t = Instant::now();
        let clean = self.clean(&x, &targets)?;
        seconds.maps += t.elapsed().as_secs_f64();
        self.bar.end();
        let mut rows = Vec::new();
        if let Some(settings) = &plan.robustness {
            self.bar.begin(1, chunk.len(), detail.to_string());
            rows.extend(self.robustness_rows(chunk, &x, &targets, settings)?);
            self.bar.end();
        }
        let checks = self.checks(chunk, detail, (&x, &targets), &clean, seconds)?;
        let stacked = if self.spec.attacks.is_empty() { None } else { Some(self.stack(&x, &targets)?) };
        for (ai, attack) in self.spec.attacks.iter().enumerate() {
            self.bar.begin(self.first_attack_stage + ai, chunk.len(), detail.to_string());
            let t = Instant::now();
            let Some(stacked) = &stacked else { break };
            rows.extend(self.attack_rows(attack.as_ref(), chunk, &x, &clean, stacked)?);
            seconds.attacks[ai] += t.elapsed().as_secs_f64();
            self.bar.end();
        }
        // A chunk of one model of several is a table of that one model, labelled.
        let model_metrics = match self.label {
            "" => Vec::new(),
            label => vec![(label.to_string(), self.columns.names.clone())],
        };
        let samples = SampleTable {
            model_metrics,
            metric_columns: self.columns.names.clone(),
            directions: self.columns.directions.clone(),
            rows,
            seed: plan.seed,
            images: crate::report::images::traces_of(self.set, chunk),
            study: None,
        };
        Ok(ChunkTables { samples, checks })
    }

    /// Stages 3 and 4: the sanity checks and the faithfulness measures on the clean maps,
    /// where the study asks for them; adds each test's and measure's seconds to `seconds`.
    fn checks(
        &self,
        chunk: &[usize],
        detail: &str,
        (x, targets): (&Tensor, &[u32]),
        clean: &Clean,
        seconds: &mut Seconds,
    ) -> Result<Vec<crate::report::checks::CheckTable>> {
        let maps: Vec<super::checks::MethodMaps> = (0..clean.signed.len())
            .map(|index| super::checks::MethodMaps {
                index,
                signed: &clean.signed[index],
                saliency: &clean.maps[index],
            })
            .collect();
        let mut stage = 1 + usize::from(self.plan.robustness.is_some());
        let mut tables = Vec::new();
        if let Some(sanity) = &self.plan.sanity {
            self.bar.begin(stage, chunk.len(), detail.to_string());
            tables.push(self.sanity_table(sanity, chunk, (x, targets), &maps, &mut seconds.sanity)?);
            self.bar.end();
            stage += 1;
        }
        if self.plan.faithfulness.is_some() {
            self.bar.begin(stage, chunk.len(), detail.to_string());
            tables.extend(self.faithfulness_tables(chunk, (x, targets), &maps, &mut seconds.faithfulness)?);
            self.bar.end();
        }
        Ok(tables)
    }

    /// Stage 1: every method's clean maps, and each measure prepared on them.
    fn clean(&self, x: &Tensor, targets: &[u32]) -> Result<Clean> {
        let (h, w) = self.hw();
        let mut out = Clean {
            maps: Vec::new(),
            signed: Vec::new(),
            normal: Vec::new(),
            goals: Vec::new(),
            before: Vec::new(),
        };
        let checks = self.plan.sanity.is_some() || self.plan.faithfulness.is_some();
        for method in &self.spec.methods {
            let attr = method.attribute(self.model, x, targets, Activation::Exact)?;
            if checks {
                out.signed.push(attribution_rows(&attr)?);
            }
            let targeted =
                self.spec.attacks.iter().filter_map(|a| a.target_method()).any(|t| same(t, method.as_ref()));
            out.normal.push(if targeted { Some(flat_rows(&normalized_saliency(&attr)?)?) } else { None });
            let m = saliency_rows(&attr)?;
            let normal: Vec<Vec<f32>> = m.iter().map(|m| normalized(m)).collect();
            let cx = PrepareContext {
                model: self.model,
                method: method.as_ref(),
                clean: &normal,
                h,
                w,
                device: &self.plan.device,
            };
            let goals: Vec<Box<dyn Goal>> =
                self.columns.measures.iter().map(|o| o.prepare(&cx)).collect::<Result<_>>()?;
            out.before.push(
                goals
                    .iter()
                    .map(|g| normal.iter().enumerate().map(|(i, m)| g.measure(i, m)).collect())
                    .collect(),
            );
            out.goals.push(goals);
            out.maps.push(m);
        }
        Ok(out)
    }

    /// A row of `chunk`'s image `id` for `method` (label, prediction and clean confidence
    /// filled in).
    fn row(&self, id: usize, method: &str, attack: &str) -> SampleRow {
        SampleRow {
            model: self.label.to_string(),
            image_id: id as u32,
            label: self.set.labels.as_ref().map_or(-1, |l| l[id]),
            predicted: self.preds[id] as i64,
            method: method.to_string(),
            attack: attack.to_string(),
            target_method: None,
            epsilon: 0.0,
            label_kept: true,
            iterations: 0,
            linf: 0.0,
            confidence_before: self.probs[id],
            confidence_after: self.probs[id],
            metrics: Vec::new(),
        }
    }

    /// Stage 2: the sampling-robustness estimates, one row per image and method.
    fn robustness_rows(
        &self,
        chunk: &[usize],
        x: &Tensor,
        targets: &[u32],
        settings: &RobustnessSettings,
    ) -> Result<Vec<SampleRow>> {
        let image_ids: Vec<u32> = chunk.iter().map(|&i| i as u32).collect();
        let mut rows = Vec::new();
        for (mi, method) in self.spec.methods.iter().enumerate() {
            for r in estimate(self.model, method.as_ref(), x, &image_ids, targets, settings)? {
                let mut values = vec![None; self.columns.attack_columns];
                values.extend(r.values().iter().map(|v| v.filter(|v| v.is_finite())));
                rows.push(SampleRow {
                    epsilon: settings.radius,
                    iterations: r.kept_samples,
                    linf: settings.radius,
                    metrics: values,
                    ..self.row(r.image_id as usize, method.name(), SAMPLING)
                });
            }
            self.bar.step(mi + 1, self.spec.methods.len());
        }
        Ok(rows)
    }

    /// The chunk at every ε, ε-major.
    fn stack(&self, x: &Tensor, targets: &[u32]) -> Result<Stacked> {
        let eps = &self.plan.epsilons;
        let b = targets.len();
        Ok(Stacked {
            xs: Tensor::cat(&vec![x.clone(); eps.len()], 0)?,
            targets: (0..eps.len()).flat_map(|_| targets.iter().copied()).collect(),
            eps: eps.iter().flat_map(|&e| std::iter::repeat_n(e as f32, b)).collect(),
            largest: (0..eps.len()).max_by(|&a, &b| eps[a].total_cmp(&eps[b])).unwrap_or(0),
        })
    }

    /// Each row's seed: from the run's seed, the attack (and its target method), the image
    /// and ε, so that a row does not depend on the chunking or on the other rows. Not on the
    /// model: in a study of several models, every model's random baseline draws the same
    /// noise for an image (common random numbers, so the models' differences are theirs).
    fn seeds(&self, attack: &dyn Attack, chunk: &[usize]) -> Vec<u64> {
        let plan = self.plan;
        plan.epsilons
            .iter()
            .flat_map(|e| {
                let eps_bits = e.to_bits();
                chunk.iter().map(move |&i| {
                    let mut key = vec![seed::hash_str(attack.name()), i as u64, eps_bits];
                    if let Some(t) = attack.target_method() {
                        key.push(seed::hash_str(t.name()));
                    }
                    seed::derive(plan.seed, &key)
                })
            })
            .collect()
    }

    /// Stage 3, one attack: perturb the stacked chunk, recompute every method's map, score it
    /// against the clean map (and each measure), and draw the example panels.
    fn attack_rows(
        &self,
        attack: &dyn Attack,
        chunk: &[usize],
        x: &Tensor,
        clean: &Clean,
        st: &Stacked,
    ) -> Result<Vec<SampleRow>> {
        let (plan, b, hw) = (self.plan, chunk.len(), self.hw());
        let seeds = self.seeds(attack, chunk);
        let clean_of_target = self.clean_of_target(attack, clean, st.eps.len() / b.max(1));
        let input = AttackInput {
            model: self.model,
            x: &st.xs,
            eps: &st.eps,
            targets: &st.targets,
            seeds: &seeds,
            clean: clean_of_target.as_deref(),
            progress: Some(&|done, total| self.bar.step(done, total)),
        };
        let outcome = attack.perturb(&input)?;
        let after_logits = logits_in_passes(self.model, &outcome.x_adv)?;
        let after_conf = target_probability(&after_logits, &st.targets)?;
        let target = attack.target_method().map(|t| t.name().to_string());
        // Example panels: the chunk's images among the first `examples` studied, at the largest ε.
        let example_rows: Vec<usize> = (0..b).filter(|&i| self.example_ids.contains(&chunk[i])).collect();
        let mut panels: Vec<(usize, MethodMaps)> = example_rows.iter().map(|&i| (i, Vec::new())).collect();
        let mut rows = Vec::new();
        for (mi, method) in self.spec.methods.iter().enumerate() {
            let after = saliency_rows(&method.attribute(
                self.model,
                &outcome.x_adv,
                &st.targets,
                Activation::Exact,
            )?)?;
            for (i, panel) in &mut panels {
                let r = st.largest * b + *i;
                let scores = example_scores(&self.columns.metrics, &clean.maps[mi][*i], &after[r], hw);
                panel.push((method.name().to_string(), after[r].clone(), scores));
            }
            for (r, map) in after.iter().enumerate() {
                let (e, i) = (r / b, r % b);
                rows.push(SampleRow {
                    target_method: target.clone(),
                    epsilon: plan.epsilons[e],
                    label_kept: outcome.label_kept[r],
                    iterations: outcome.iterations[r],
                    linf: outcome.linf[r] as f64,
                    confidence_after: after_conf[r],
                    metrics: self.scores(clean, mi, i, map),
                    ..self.row(chunk[i], method.name(), attack.name())
                });
            }
        }
        if !panels.is_empty() {
            let after_pred = after_logits.argmax(1)?.to_vec1::<u32>()?;
            let label = attack_label(attack.name(), target.as_deref());
            let x_rows = flat_rows(x)?;
            for (i, after_maps) in &panels {
                let (id, r) = (chunk[*i], st.largest * b + i);
                let names = self.class_names;
                let classes = (
                    format!("before: {}", class_text(self.preds[id] as i64, names, self.probs[id])),
                    format!("after: {}", class_text(after_pred[r] as i64, names, after_conf[r])),
                );
                write_example(
                    self.dir,
                    (self.label, &label),
                    (id, classes),
                    plan.epsilons[st.largest],
                    (&x_rows[*i], &clean.maps, *i),
                    (&flat_rows(&outcome.x_adv.narrow(0, r, 1)?)?[0], after_maps),
                    plan,
                    hw,
                )?;
            }
        }
        Ok(rows)
    }

    /// The steered attack's target method's clean maps, from stage 1, stacked `budgets` times
    /// as the attack's rows are (ε-major), where the study measures that method with the same
    /// settings; `None` for the other attacks (a steered one then computes them itself).
    fn clean_of_target(&self, attack: &dyn Attack, clean: &Clean, budgets: usize) -> Option<Vec<Vec<f32>>> {
        let target = attack.target_method()?;
        let mi = self.spec.methods.iter().position(|m| same(m.as_ref(), target))?;
        let normal = clean.normal[mi].as_ref()?;
        Some((0..budgets).flat_map(|_| normal.iter().cloned()).collect())
    }

    /// The metric values of method `mi`'s perturbed `map` of image `i`: each metric against
    /// the clean map, then each measure before and after (NaN and ∞ stored as missing).
    fn scores(&self, clean: &Clean, mi: usize, i: usize, map: &[f32]) -> Vec<Option<f64>> {
        let (h, w) = self.hw();
        let mut values: Vec<Option<f64>> =
            self.columns.metrics.iter().map(|m| m.score(&clean.maps[mi][i], map, h, w)).collect();
        let normal = normalized(map);
        let finite = |v: f64| Some(v).filter(|v| v.is_finite());
        for (k, g) in clean.goals[mi].iter().enumerate() {
            values.push(finite(clean.before[mi][k][i]));
            values.push(finite(g.measure(i, &normal)));
        }
        values.resize(self.columns.names.len(), None);
        values
    }
}

/// Whether two methods compute the same map: the same name and settings (a study builds the
/// measured methods and the attacks' targets from the same `[methods]` tables).
fn same(a: &dyn crate::attribution::Attribution, b: &dyn crate::attribution::Attribution) -> bool {
    a.name() == b.name() && a.params() == b.params()
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
    (model, attack_label): (&str, &str),
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
    let path = dir.join("examples").join(example_name(model, attack_label, image_id));
    let of_model = if model.is_empty() { String::new() } else { format!("{model}: ") };
    let figure = Figure {
        title: format!(
            "{of_model}image {image_id}, {attack_label}, ε = {} (seed {})",
            crate::report::labels::epsilon(eps),
            plan.seed
        ),
        image: clean_image,
        perturbed: adv_image,
        size: (h, w),
        before,
        after,
        rows,
    };
    write_figure(&path, &figure)
}

/// The example panel's file name in `examples/`: [`example_file`], after `<label>.` in a
/// study of several models (`model` non-empty).
pub(super) fn example_name(model: &str, attack_label: &str, image_id: usize) -> String {
    let file = example_file(attack_label, image_id);
    if model.is_empty() {
        file
    } else {
        format!("{model}.{file}")
    }
}

//! The chunk stages of `[sanity]` and `[faithfulness]`: every method's clean maps of the
//! chunk (stage 1's, the maps the attacks are measured against) checked for model
//! sensitivity (Adebayo et al. 2018, Sixt et al. 2020, Kindermans et al. 2017: see
//! [`crate::sanity`]) and scored for faithfulness ([`crate::faithfulness`]).
//!
//! Rows go to the three tables of [`crate::report::checks`]. Within a method and a test (or
//! measure) they are made image by image, then step by step, then similarity by similarity,
//! so that [`CheckTable::sorted`] gives one order whatever the chunking. Every random choice
//! is keyed by the run's seed and the image's id (and a layer's name), never by the chunk.
//!
//! Shapes: the chunk's images x [B,C,H,W]; signed maps [B][C·H·W] (sanity), saliency maps
//! [B][H·W] (faithfulness).

use super::chunk::Study;
use crate::attribution::{saliency_of_row, Attribution};
use crate::config::{SanityPlan, SanityTest};
use crate::error::{Error, Result};
use crate::faithfulness::Batch;
use crate::report::checks::{Cell, CheckKind, CheckTable, CASCADE_EXAMPLE, INVARIANCE_SIMILARITY};
use crate::report::heatmap::{write_heatmap_rows, Panel};
use crate::sanity::{input_invariance, other_class_maps, randomized_maps, Randomization, Schedule, StepMaps};
use candle_core::Tensor;
use std::time::Instant;

/// One method's example maps: its name, its trained saliency maps [B][H·W] and its cascading
/// steps.
type CascadeExample<'a> = (String, &'a [Vec<f32>], Vec<StepMaps>);

/// A chunk's clean maps of one method, as the checks read them.
pub(super) struct MethodMaps<'a> {
    /// The method's position in the study's list.
    pub index: usize,
    /// Signed attributions [B][C·H·W].
    pub signed: &'a [Vec<f32>],
    /// Saliency [B][H·W].
    pub saliency: &'a [Vec<f32>],
}

/// What one sanity test of one method reads and where its rows go.
struct SanityRows<'t, 'a> {
    t: &'t mut CheckTable,
    plan: &'a SanityPlan,
    chunk: &'a [usize],
    x: &'a Tensor,
    targets: &'a [u32],
    m: &'a MethodMaps<'a>,
    method: &'a dyn Attribution,
    /// The images' (C, H, W).
    chw: (usize, usize, usize),
    test: SanityTest,
}

impl SanityRows<'_, '_> {
    /// The rows of image `i` (id `id`) comparing its clean map with `map` by every similarity,
    /// at step `step` (0 where the test has no steps) after randomising `layer` ("" for none).
    fn push_similarities(
        &mut self,
        label: &str,
        (i, id): (usize, usize),
        (step, layer): (usize, &str),
        map: &[f32],
    ) -> Result<()> {
        // The map's own channels: 1 for the CAM family's maps of a colour image.
        let (_, h, w) = self.chw;
        let c = map.len() / (h * w).max(1);
        for sim in &self.plan.similarities {
            let v = sim.score(&self.m.signed[i], map, c, h, w);
            self.t
                .push(label, &sanity_cells(id, self.method.name(), self.test, step, layer, sim.name(), v))?;
        }
        Ok(())
    }
}

impl Study<'_> {
    /// The chunk's `sanity.parquet` rows: every test of `plan` for every method; adds each
    /// test's seconds to `seconds` (in the plan's order).
    pub(super) fn sanity_table(
        &self,
        plan: &SanityPlan,
        chunk: &[usize],
        (x, targets): (&Tensor, &[u32]),
        maps: &[MethodMaps],
        seconds: &mut [f64],
    ) -> Result<CheckTable> {
        let mut t = CheckTable::new(CheckKind::Sanity, !self.label.is_empty());
        let mut examples: Vec<CascadeExample> = Vec::new();
        for (done, m) in maps.iter().enumerate() {
            if let Some(steps) = self.sanity_rows(&mut t, plan, chunk, (x, targets), m, seconds)? {
                examples.push((self.spec.methods[m.index].name().to_string(), m.saliency, steps));
            }
            self.bar.step(done + 1, maps.len());
        }
        self.cascade_panels(chunk, x, &examples)?;
        Ok(t)
    }

    /// The example panels of progressive randomisation (`examples/sanity_cascading_image<id>.png`):
    /// for each example image of the chunk, a row per method: its map on the trained model, then
    /// after each cascading step.
    fn cascade_panels(&self, chunk: &[usize], x: &Tensor, examples: &[CascadeExample]) -> Result<()> {
        if examples.is_empty() {
            return Ok(());
        }
        let (_, _, h, w) = x.dims4()?;
        for (i, &id) in chunk.iter().enumerate() {
            if !self.example_ids.contains(&id) {
                continue;
            }
            let image = x.get(i)?.flatten_all()?.to_vec1::<f32>()?;
            let step_maps: Vec<Vec<Vec<f32>>> = examples
                .iter()
                .map(|(_, _, steps)| steps.iter().map(|s| saliency_of_row(&s.maps[i], h * w)).collect())
                .collect();
            let rows: Vec<Vec<Panel>> = examples
                .iter()
                .zip(&step_maps)
                .map(|((method, trained, steps), maps)| {
                    let first = Panel { image: &image, map: &trained[i], label: method.clone() };
                    let rest = steps.iter().zip(maps).map(|(s, m)| Panel {
                        image: &image,
                        map: m,
                        label: s.layer.clone(),
                    });
                    std::iter::once(first).chain(rest).collect()
                })
                .collect();
            let rows: Vec<&[Panel]> = rows.iter().map(Vec::as_slice).collect();
            let of_model = if self.label.is_empty() { String::new() } else { format!("{}: ", self.label) };
            let title = format!(
                "{of_model}image {id}: trained, then re-initialised from the logits (seed {})",
                self.plan.seed
            );
            let name = super::chunk::example_name(self.label, CASCADE_EXAMPLE, id);
            let path = self.dir.join("examples").join(name);
            if let Some(folder) = path.parent() {
                std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
            }
            write_heatmap_rows(&path, &title, &rows, h, w)?;
        }
        Ok(())
    }

    /// The chunk's `faithfulness.parquet` and `faithfulness_curves.parquet` rows: every
    /// measure for every method; adds each measure's seconds to `seconds` (in the plan's
    /// order).
    pub(super) fn faithfulness_tables(
        &self,
        chunk: &[usize],
        (x, targets): (&Tensor, &[u32]),
        maps: &[MethodMaps],
        seconds: &mut [f64],
    ) -> Result<[CheckTable; 2]> {
        let several = !self.label.is_empty();
        let mut f = CheckTable::new(CheckKind::Faithfulness, several);
        let mut c = CheckTable::new(CheckKind::Curves, several);
        for (done, m) in maps.iter().enumerate() {
            self.faithfulness_rows((&mut f, &mut c), chunk, (x, targets), m, seconds)?;
            self.bar.step(done + 1, maps.len());
        }
        Ok([f, c])
    }

    /// One method's sanity rows for every test of the plan, each test's seconds added to
    /// `seconds`; its cascading steps' maps where the plan has the cascading test.
    fn sanity_rows(
        &self,
        t: &mut CheckTable,
        plan: &SanityPlan,
        chunk: &[usize],
        (x, targets): (&Tensor, &[u32]),
        m: &MethodMaps,
        seconds: &mut [f64],
    ) -> Result<Option<Vec<StepMaps>>> {
        let mut cascade = None;
        let method = self.spec.methods[m.index].as_ref();
        let chw = x.dims4().map(|(_, c, h, w)| (c, h, w))?;
        for (&test, seconds) in plan.tests.iter().zip(seconds) {
            let started = Instant::now();
            let rows = SanityRows { t: &mut *t, plan, chunk, x, targets, m, method, chw, test };
            match test {
                SanityTest::Cascading | SanityTest::Independent => {
                    let steps = self.randomisation_rows(rows)?;
                    if test == SanityTest::Cascading {
                        cascade = Some(steps);
                    }
                }
                SanityTest::RandomLogit => self.random_logit_rows(rows)?,
                SanityTest::InputInvariance => self.invariance_rows(rows)?,
            }
            *seconds += started.elapsed().as_secs_f64();
        }
        Ok(cascade)
    }

    /// Cascading or independent randomisation: each step's maps against the trained model's,
    /// by every similarity; the steps' maps returned (the cascading example panels draw them).
    fn randomisation_rows(&self, mut r: SanityRows) -> Result<Vec<StepMaps>> {
        let randomization = match r.test {
            SanityTest::Cascading => Randomization::Cascading,
            _ => Randomization::Independent,
        };
        let schedule = Schedule { randomization, granularity: r.plan.granularity };
        let trained = self.trained.as_ref().ok_or_else(|| no_state_dict(self.spec))?;
        let steps = randomized_maps(trained, schedule, r.method, r.x, r.targets, self.plan.seed)?;
        for (i, &id) in r.chunk.iter().enumerate() {
            for (s, step) in steps.iter().enumerate() {
                r.push_similarities(self.label, (i, id), (s + 1, &step.layer), &step.maps[i])?;
            }
        }
        Ok(steps)
    }

    /// Random logit: the maps of a seeded random other class against the predicted class's
    /// (the clean maps the study has), by every similarity.
    fn random_logit_rows(&self, mut r: SanityRows) -> Result<()> {
        let keys: Vec<u64> = r.chunk.iter().map(|&i| i as u64).collect();
        let (_, other) = other_class_maps(self.model, r.method, r.x, r.targets, &keys, self.plan.seed)?;
        for (i, &id) in r.chunk.iter().enumerate() {
            r.push_similarities(self.label, (i, id), (0, ""), &other[i])?;
        }
        Ok(())
    }

    /// Input invariance: the relative L1 change of each map under the compensated shift.
    fn invariance_rows(&self, r: SanityRows) -> Result<()> {
        let method = r.method;
        let net = self.model.network().ok_or_else(|| {
            Error::Invalid(format!("input invariance: model `{}` is not a layer graph", self.spec.label))
        })?;
        let d = input_invariance(net, method, r.x, r.targets, r.plan.input_shift)?;
        for (&id, v) in r.chunk.iter().zip(d) {
            let v = Some(v).filter(|v| v.is_finite());
            r.t.push(self.label, &sanity_cells(id, method.name(), r.test, 0, "", INVARIANCE_SIMILARITY, v))?;
        }
        Ok(())
    }

    /// One method's faithfulness rows (scores and curves) for every measure of the plan, each
    /// measure's seconds added to `seconds`.
    fn faithfulness_rows(
        &self,
        (f, c): (&mut CheckTable, &mut CheckTable),
        chunk: &[usize],
        (x, targets): (&Tensor, &[u32]),
        m: &MethodMaps,
        seconds: &mut [f64],
    ) -> Result<()> {
        let Some(plan) = &self.plan.faithfulness else { return Ok(()) };
        let method = self.spec.methods[m.index].name();
        let keys: Vec<u64> = chunk.iter().map(|&i| i as u64).collect();
        let (_, channels, h, w) = x.dims4()?;
        let attributions = on_every_channel(m.signed, (channels, h * w));
        let batch = Batch {
            x,
            maps: m.saliency,
            attributions: &attributions,
            classes: targets,
            keys: &keys,
            seed: self.plan.seed,
        };
        for (measure, seconds) in plan.measures.iter().zip(seconds) {
            let started = Instant::now();
            let curves = measure.evaluate(self.model, &batch)?;
            for (&id, curve) in chunk.iter().zip(&curves) {
                let score = Some(curve.score).filter(|v| v.is_finite());
                f.push(
                    self.label,
                    &[
                        Cell::Count(id as u32),
                        Cell::Text(method),
                        Cell::Text(measure.name()),
                        Cell::Number(score),
                    ],
                )?;
                let points = curve.fractions.iter().zip(&curve.values).zip(&curve.top1);
                for (j, ((&fraction, &value), &top1)) in points.enumerate() {
                    c.push(
                        self.label,
                        &[
                            Cell::Count(id as u32),
                            Cell::Text(method),
                            Cell::Text(measure.name()),
                            Cell::Count(j as u32),
                            Cell::Number(Some(fraction)),
                            Cell::Number(Some(value)),
                            Cell::Flag(top1),
                        ],
                    )?;
                }
            }
            *seconds += started.elapsed().as_secs_f64();
        }
        Ok(())
    }
}

/// A sanity row's cells.
fn sanity_cells<'a>(
    id: usize,
    method: &'a str,
    test: SanityTest,
    step: usize,
    layer: &'a str,
    similarity: &'a str,
    value: Option<f64>,
) -> [Cell<'a>; 7] {
    [
        Cell::Count(id as u32),
        Cell::Text(method),
        Cell::Text(test.name()),
        Cell::Count(step as u32),
        Cell::Text(layer),
        Cell::Text(similarity),
        Cell::Number(value),
    ]
}

/// The error of a randomisation test on a model without a `state_dict` (an ONNX file).
pub(super) fn no_state_dict(spec: &crate::config::ModelPlan) -> Error {
    Error::Invalid(format!(
        "model `{}`: the randomisation tests re-initialise a state_dict's layers; an ONNX model has none (use `random_logit` and `input_invariance`, or the model's state_dict)",
        spec.label
    ))
}

/// Signed attribution rows with `c` channels of `hw` pixels each: a one-channel map (the CAM
/// family's [B,1,H,W] of a colour image) is the same relevance on every channel, as the
/// measures that perturb every channel of a pixel (faithfulness correlation, infidelity) read
/// it; rows with every channel are kept as they are.
fn on_every_channel(rows: &[Vec<f32>], (c, hw): (usize, usize)) -> Vec<Vec<f32>> {
    rows.iter().map(|r| if c > 1 && r.len() == hw { r.repeat(c) } else { r.clone() }).collect()
}

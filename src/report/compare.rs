//! `fragility compare BASELINE CURRENT`: regression tracking between two runs of one study.
//!
//! Users track the stability of their models' explanations from one model version to the next
//! in their own CI: run the same experiment on both versions, then compare. The two runs'
//! images are paired first ([`super::pairing`]: same id and same image hash); the statistics
//! of each run are recomputed from its `samples.parquet` on the common images alone, with the
//! functions that wrote its `summary.parquet` (so on identical image sets they are the
//! summary's numbers), and matched by method × attack × target method × ε × metric. When the
//! runs do not have all their images in common, or images are paired by id alone (tables of an
//! older version have no hashes), the first line of the output says so with the counts; too
//! few common images are refused (exit 2). Each run's `samples.parquet` (and `summary.parquet`)
//! must belong to the study its `run.json` records ([`super::images::check_same_study`]), and
//! a table that repeats a row is refused. A row
//! is a **regression** when the current mean is worse than the baseline's by more than the
//! row's threshold ("worse" = less similar maps, i.e. lower for higher-is-more-similar
//! metrics, higher for the others) *and* the two 95% bootstrap intervals do not overlap; an
//! **improvement** is the same the other way round; everything else is **unchanged**.
//! Requiring both guards against flagging noise (intervals) and against flagging tiny but
//! certain shifts (threshold).
//!
//! The threshold suits each metric's scale ([`Tolerance`]): for a metric with a bounded range
//! (correlations, cosine, SSIM, top-k intersection: the metric's own metadata says so) it is
//! an absolute change in the metric's units (`--tolerance`, default 0.02); for any other
//! column (center shift in pixels, normalised MSE around 1e-6, attack measures, robustness
//! estimates) it is a fraction of the baseline's mean (`--relative-tolerance`, default 0.1),
//! so that a doubled MSE is flagged although it moved by 1e-6.
//!
//! A mean that is undefined (no value, NaN, or infinite: an infinite mean cannot be compared
//! and is never "unchanged") on one side only **became undefined** or
//! **became defined**: a change that is always reported, and a failure (exit 1) for the
//! metrics named with `--metric`, since the numbers a user watches can no longer be compared.
//! Undefined on both sides (or without intervals) is **undefined**.
//!
//! The two runs must have studied the same thing: the settings of their `run.json` are
//! compared (methods and their parameters, attacks and theirs, budgets, metrics, image count,
//! seed, robustness settings; not paths nor the model weights, which are what changes between versions), and any
//! difference is an error naming the keys. So are the content hashes of their data inputs
//! (images, labels, masks: see [`crate::fingerprint`]), where both runs recorded them. Outputs: a table on stdout, `compare.parquet` and
//! `compare.md` (written atomically into the chosen folder). The command exits 0 (no
//! failure), 1 (a regression, or a watched mean that became (un)defined) or 2 (an error).
//!
//! Two studies of several models (`[[model]]` tables, a `model` column in their tables) are
//! compared model by model: rows are matched by model label too, a model only one side has is
//! named on the first lines and not compared ([`super::pairing::pair_models`]), and a study of
//! one model against a study of several is refused (exit 2). Their top-k settings left to
//! `"auto"` resolve per model (`automatic.models`), so each model's k is what is compared.

use super::images::{check_same_study, read_record};
use super::pairing::{check_no_duplicates, pair, pair_models, restrict, ModelPairing, Pairing};
use super::summary::{summarize, SummaryRow};
use super::table::{read_samples, read_study, table_error, SampleTable};
use crate::atomic;
use crate::error::{Error, Result};
use crate::metric::Direction;
use polars::prelude::{Column, DataFrame};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The verdict on one matched row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Worse by more than the threshold, intervals disjoint.
    Regression,
    /// Better by more than the threshold, intervals disjoint.
    Improvement,
    /// Neither.
    Unchanged,
    /// The baseline's mean is defined, the current one is missing or NaN.
    BecameUndefined,
    /// The baseline's mean is missing or NaN, the current one is defined.
    BecameDefined,
    /// Both means undefined, or an interval missing on either side.
    Undefined,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Regression => "regression",
            Status::Improvement => "improvement",
            Status::Unchanged => "unchanged",
            Status::BecameUndefined => "became undefined",
            Status::BecameDefined => "became defined",
            Status::Undefined => "undefined",
        }
    }

    /// Whether the row is a change worth listing (everything but unchanged and undefined).
    pub fn is_change(self) -> bool {
        !matches!(self, Status::Unchanged | Status::Undefined)
    }
}

/// How much a mean must move to count, per metric scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// For metrics with a bounded range (correlations, SSIM, top-k intersection): a change in
    /// the metric's units.
    pub absolute: f64,
    /// For every other column (center shift, normalised MSE, attack measures, robustness): a
    /// fraction of the baseline's |mean|.
    pub relative: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self { absolute: 0.02, relative: 0.1 }
    }
}

impl Tolerance {
    /// The threshold, in the metric's units, for a row of `column` whose baseline mean is
    /// `baseline`: absolute where the metric's range is bounded, relative otherwise.
    pub fn threshold(&self, column: &str, baseline: f64) -> f64 {
        match crate::metric::range_of_column(column) {
            Some((lo, hi)) if lo.is_finite() && hi.is_finite() => self.absolute,
            _ => self.relative * baseline.abs(),
        }
    }
}

/// One matched row.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The baseline's summary row.
    pub baseline: SummaryRow,
    /// The current run's summary row.
    pub current: SummaryRow,
    /// The metric's direction.
    pub direction: Direction,
    /// How much worse the current mean is (positive = less similar maps), in metric units.
    pub worse_by: Option<f64>,
    /// The smallest change that counts for this row, in metric units (see [`Tolerance`]).
    pub threshold: Option<f64>,
    /// The verdict.
    pub status: Status,
}

/// What `compare` found.
#[derive(Debug, Clone)]
pub struct CompareReport {
    /// Every matched row, in the baseline's order.
    pub rows: Vec<Comparison>,
    /// The tolerances used.
    pub tolerance: Tolerance,
    /// The metric columns named with `--metric` (empty: all compared, none watched).
    pub watched: Vec<String>,
    /// The images the two runs have in common (the statistics are over these).
    pub pairing: Pairing,
    /// The models of two studies of several models: those compared, and those only one has.
    pub models: ModelPairing,
}

impl CompareReport {
    /// Whether the runs are studies of several models (the rows carry models' labels).
    pub fn several(&self) -> bool {
        self.rows.iter().any(|c| !c.baseline.model.is_empty())
    }

    /// The lines that open the output: which images were compared, and which models were not.
    pub fn notes(&self) -> Vec<String> {
        self.pairing.first_line().into_iter().chain(self.models.note()).collect()
    }

    /// The rows flagged as regressions.
    pub fn regressions(&self) -> impl Iterator<Item = &Comparison> {
        self.rows.iter().filter(|c| c.status == Status::Regression)
    }

    /// The rows that make `compare` fail: regressions, and watched metrics whose mean became
    /// undefined or defined.
    pub fn failures(&self) -> impl Iterator<Item = &Comparison> {
        self.rows.iter().filter(|c| match c.status {
            Status::Regression => true,
            Status::BecameUndefined | Status::BecameDefined => self.watched.contains(&c.baseline.metric),
            _ => false,
        })
    }
}

/// A mean that can be compared: present and finite (an infinite mean is as undefined as a
/// NaN: no difference to it means anything).
fn defined(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}

/// Judges one pair of summary rows of a metric column: how much worse the current mean is,
/// the threshold that applies, and the verdict.
pub fn judge(
    baseline: &SummaryRow,
    current: &SummaryRow,
    direction: Direction,
    tolerance: &Tolerance,
) -> (Option<f64>, Option<f64>, Status) {
    let (b, c) = match (defined(baseline.mean), defined(current.mean)) {
        (Some(b), Some(c)) => (b, c),
        (Some(_), None) => return (None, None, Status::BecameUndefined),
        (None, Some(_)) => return (None, None, Status::BecameDefined),
        (None, None) => return (None, None, Status::Undefined),
    };
    let worse_by = match direction {
        Direction::HigherIsMoreSimilar => b - c,
        Direction::LowerIsMoreSimilar => c - b,
    };
    let threshold = tolerance.threshold(&baseline.metric, b);
    let (Some(bl), Some(bh), Some(cl), Some(ch)) =
        (baseline.ci_low, baseline.ci_high, current.ci_low, current.ci_high)
    else {
        return (Some(worse_by), Some(threshold), Status::Undefined);
    };
    let disjoint = ch < bl || cl > bh;
    let status = if worse_by > threshold && disjoint {
        Status::Regression
    } else if -worse_by > threshold && disjoint {
        Status::Improvement
    } else {
        Status::Unchanged
    };
    (Some(worse_by), Some(threshold), status)
}

type Key = (String, String, String, Option<String>, u64, String);

fn key(r: &SummaryRow) -> Key {
    let (m, a, t) = (r.model.clone(), r.method.clone(), r.attack.clone());
    (m, a, t, r.target_method.clone(), r.epsilon.to_bits(), r.metric.clone())
}

/// The settings of a run that must agree between baseline and current.
const COMPARED_SETTINGS: [&str; 7] =
    ["methods", "attacks", "epsilons", "metrics", "seed", "data.count", "robustness"];

/// A run's settings, with each `"auto"` top-k replaced by the value its images resolved it to
/// (run.json's `automatic`), so that k = 100 given and k left automatic at 28×28 compare equal;
/// in a study of several models (`settings.models`) each top-k setting becomes a map from
/// label to that model's value ([`resolve_per_model`]), over the models in `compared` (the
/// models both runs have; all where it is empty).
fn settings(v: &serde_json::Value, compared: &[String]) -> serde_json::Value {
    let mut settings = v.get("settings").cloned().unwrap_or(serde_json::Value::Null);
    let labels: Option<Vec<String>> = settings.get("models").and_then(|m| m.as_array()).map(|models| {
        let labels = models.iter().map(|m| m["label"].as_str().unwrap_or_default().to_string());
        labels.filter(|l| compared.is_empty() || compared.contains(l)).collect()
    });
    match labels {
        Some(labels) => resolve_per_model(&mut settings, &labels, v.get("automatic")),
        None => resolve_automatic(&mut settings, v.get("automatic")),
    }
    settings
}

/// Replaces the top-k settings of a study of the models `labels` (`metrics.top_k`, the `k` of
/// each `top_k` attack) by maps from label to each model's value: the value given, or for
/// `"auto"` what `automatic.models` records that the model's images resolved it to.
fn resolve_per_model(
    settings: &mut serde_json::Value,
    labels: &[String],
    automatic: Option<&serde_json::Value>,
) {
    let resolved = |label: &str, key: &str| -> serde_json::Value {
        let models = automatic.and_then(|a| a.get("models")).and_then(|m| m.as_array());
        let model = models.and_then(|ms| ms.iter().find(|m| m["label"] == label));
        model.and_then(|m| m.get(key)).cloned().unwrap_or_else(|| "auto".into())
    };
    let per_model = |given: &serde_json::Value, key: &str| -> serde_json::Value {
        let each = labels
            .iter()
            .map(|l| (l.clone(), if given == "auto" { resolved(l, key) } else { given.clone() }));
        serde_json::Value::Object(each.collect())
    };
    if let Some(given) = settings["metrics"].get("top_k").cloned() {
        settings["metrics"]["top_k"] = per_model(&given, "metrics.top_k");
    }
    if let Some(attacks) = settings.get_mut("attacks").and_then(|a| a.as_array_mut()) {
        for a in attacks.iter_mut().filter(|a| a["name"] == "top_k") {
            if let Some(given) = a["params"].get("k").cloned() {
                a["params"]["k"] = per_model(&given, "attacks.top_k.k");
            }
        }
    }
}

/// A run's `samples.parquet`, checked: it belongs to the study `meta` (its `run.json`)
/// records, and so does its `summary.parquet` where present; no row is repeated.
fn read_run_table(dir: &Path, meta: &serde_json::Value) -> Result<SampleTable> {
    let (run_json, samples, summary) =
        (dir.join("run.json"), dir.join("samples.parquet"), dir.join("summary.parquet"));
    let table = read_samples(&samples)?;
    check_same_study(&samples, table.study.as_deref(), &run_json, meta)?;
    if summary.is_file() {
        check_same_study(&summary, read_study(&summary)?.as_deref(), &run_json, meta)?;
    }
    check_no_duplicates(&samples, &table)?;
    Ok(table)
}

/// Replaces the `"auto"` top-k of `settings` by the resolved values of `automatic`.
fn resolve_automatic(settings: &mut serde_json::Value, automatic: Option<&serde_json::Value>) {
    let Some(auto) = automatic else { return };
    if let Some(ks) = auto.get("metrics.top_k") {
        if settings["metrics"]["top_k"] == "auto" {
            settings["metrics"]["top_k"] = ks.clone();
        }
    }
    if let (Some(k), Some(attacks)) =
        (auto.get("attacks.top_k.k"), settings.get_mut("attacks").and_then(|a| a.as_array_mut()))
    {
        for a in attacks.iter_mut().filter(|a| a["name"] == "top_k" && a["params"]["k"] == "auto") {
            a["params"]["k"] = k.clone();
        }
    }
}

/// Whether input field `field` is a model's weights: `model.weights`, or the weights of one of
/// several models (a field that starts with `model` and ends with `weights`).
fn is_weights(field: &str) -> bool {
    field.starts_with("model") && field.ends_with("weights")
}

/// The content hashes a run recorded of its data inputs (images, labels, classes, masks,
/// target maps: everything but the weights, which are what changes between versions).
fn data_hashes(v: &serde_json::Value) -> Vec<(String, String)> {
    let fp = crate::fingerprint::Fingerprint::from_json(v);
    fp.map(|fp| fp.inputs.into_iter().filter(|i| !is_weights(&i.field)).map(|i| (i.field, i.hash)).collect())
        .unwrap_or_default()
}

/// The data inputs whose contents differ between two runs (runs that recorded no hashes,
/// from older versions, are not compared).
fn differing_data(baseline: &serde_json::Value, current: &serde_json::Value) -> Vec<String> {
    let (b, c) = (data_hashes(baseline), data_hashes(current));
    b.iter()
        .filter(|(field, hash)| c.iter().any(|(f, h)| f == field && h != hash))
        .map(|(field, _)| format!("`{field}`"))
        .collect()
}

fn lookup<'a>(v: &'a serde_json::Value, dotted: &str) -> Option<&'a serde_json::Value> {
    dotted.split('.').try_fold(v, |v, k| v.get(k))
}

/// Compares the runs in `baseline` and `current`; `metrics` (empty: all) restricts the
/// compared metric columns.
pub fn compare(
    baseline: &Path,
    current: &Path,
    tolerance: Tolerance,
    metrics: &[String],
) -> Result<CompareReport> {
    for (flag, v) in [("--tolerance", tolerance.absolute), ("--relative-tolerance", tolerance.relative)] {
        if !(v >= 0.0 && v.is_finite()) {
            return Err(Error::Invalid(format!("{flag} must be finite and ≥ 0, got {v}")));
        }
    }
    let (mb, mc) = (read_record(&baseline.join("run.json"))?, read_record(&current.join("run.json"))?);
    let (base, cur) = (read_run_table(baseline, &mb)?, read_run_table(current, &mc)?);
    let models =
        pair_models(&baseline.join("samples.parquet"), &current.join("samples.parquet"), &base, &cur)?;
    check_comparable((baseline, current), &mb, &mc, &models.common)?;
    let pairing = pair(&base, &cur);
    pairing.check(baseline, current)?;
    let summary = |t: &SampleTable| -> Vec<SummaryRow> {
        summarize(&restrict(t, &pairing.common)).into_iter().filter(|r| models.keeps(&r.model)).collect()
    };
    let (base_rows, cur_rows) = (summary(&base), summary(&cur));
    let directions: HashMap<String, Direction> =
        cur.metric_columns.iter().cloned().zip(cur.directions.iter().copied()).collect();
    for m in metrics {
        if !directions.contains_key(m) {
            let mut known: Vec<&String> = directions.keys().collect();
            known.sort();
            return Err(Error::Invalid(format!("--metric {m}: no such metric column (known: {known:?})")));
        }
    }
    let rows = match_rows(&base_rows, &cur_rows, &directions, metrics, &tolerance)?;
    Ok(CompareReport { rows, tolerance, watched: metrics.to_vec(), pairing, models })
}

/// Refuses runs whose study settings (see [`COMPARED_SETTINGS`]; for several models, those of
/// the models in `compared`) or data inputs differ (`mb`, `mc`: their parsed `run.json`).
fn check_comparable(
    (baseline, current): (&Path, &Path),
    mb: &serde_json::Value,
    mc: &serde_json::Value,
    compared: &[String],
) -> Result<()> {
    let (sb, sc) = (settings(mb, compared), settings(mc, compared));
    let differing: Vec<&str> =
        COMPARED_SETTINGS.iter().copied().filter(|k| lookup(&sb, k) != lookup(&sc, k)).collect();
    if !differing.is_empty() {
        let detail: Vec<String> = differing
            .iter()
            .map(|k| {
                let show = |v: Option<&serde_json::Value>| v.map_or("(missing)".into(), |v| v.to_string());
                format!("`{k}`: baseline {} vs current {}", show(lookup(&sb, k)), show(lookup(&sc, k)))
            })
            .collect();
        return Err(Error::Invalid(format!(
            "{} and {} used different settings, so their numbers are not comparable: {}",
            baseline.display(),
            current.display(),
            detail.join("; ")
        )));
    }
    let changed = differing_data(mb, mc);
    if !changed.is_empty() {
        return Err(Error::Invalid(format!(
            "{} and {} studied different data (the contents of {} differ), so their numbers are not comparable",
            baseline.display(),
            current.display(),
            changed.join(", ")
        )));
    }
    Ok(())
}

/// Matches the summary rows of the two runs (restricted to `metrics`, all if empty) by
/// (model ×) method × attack × target method × ε × metric and judges each pair; rows without a match
/// on the other side are an error.
fn match_rows(
    base_rows: &[SummaryRow],
    cur_rows: &[SummaryRow],
    directions: &HashMap<String, Direction>,
    metrics: &[String],
    tolerance: &Tolerance,
) -> Result<Vec<Comparison>> {
    let wanted = |r: &SummaryRow| metrics.is_empty() || metrics.contains(&r.metric);
    let cur: HashMap<Key, &SummaryRow> = cur_rows.iter().filter(|r| wanted(r)).map(|r| (key(r), r)).collect();
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    for b in base_rows.iter().filter(|r| wanted(r)) {
        let Some(c) = cur.get(&key(b)) else {
            let model = if b.model.is_empty() { String::new() } else { format!("model {} / ", b.model) };
            missing.push(format!(
                "{model}{} / {} / ε {} / {}",
                b.method,
                b.attack_label(),
                b.epsilon,
                b.metric
            ));
            continue;
        };
        let direction = *directions
            .get(&b.metric)
            .ok_or_else(|| Error::Invalid(format!("the current run has no metric column {}", b.metric)))?;
        let (worse_by, threshold, status) = judge(b, c, direction, tolerance);
        rows.push(Comparison {
            baseline: b.clone(),
            current: (*c).clone(),
            direction,
            worse_by,
            threshold,
            status,
        });
    }
    let base_keys: std::collections::HashSet<Key> = base_rows.iter().filter(|r| wanted(r)).map(key).collect();
    let extra = cur.keys().filter(|k| !base_keys.contains(*k)).count();
    if !missing.is_empty() || extra > 0 {
        return Err(Error::Invalid(format!(
            "the summaries do not have the same rows: {} baseline rows have no current match{}{}",
            missing.len(),
            missing.first().map_or(String::new(), |m| format!(" (first: {m})")),
            if extra > 0 { format!("; {extra} current rows have no baseline match") } else { String::new() }
        )));
    }
    Ok(rows)
}

/// Writes `compare.parquet` and `compare.md` into `out`; returns their paths.
pub fn write_compare(
    out: &Path,
    report: &CompareReport,
    baseline: &Path,
    current: &Path,
) -> Result<Vec<PathBuf>> {
    // The folder's lock and manifest, as for every output: a `compare.parquet` or `compare.md`
    // that fragility did not write is refused, never overwritten.
    crate::manifest::check_out_dir(out, "--out")?;
    let _lock = crate::lock::OutLock::acquire(out)?;
    let mut manifest = crate::manifest::Manifest::open(out, crate::manifest::Kind::Study, "--out")?;
    manifest.claim(&["compare.parquet", "compare.md"])?;
    let rows = &report.rows;
    let pq = out.join("compare.parquet");
    let f = |g: fn(&Comparison) -> Option<f64>| rows.iter().map(g).collect::<Vec<Option<f64>>>();
    let model = report.several().then(|| {
        Column::new("model".into(), rows.iter().map(|c| c.baseline.model.as_str()).collect::<Vec<_>>())
    });
    let columns = model.into_iter().chain([
        Column::new("method".into(), rows.iter().map(|c| c.baseline.method.as_str()).collect::<Vec<_>>()),
        Column::new("attack".into(), rows.iter().map(|c| c.baseline.attack.as_str()).collect::<Vec<_>>()),
        Column::new(
            "target_method".into(),
            rows.iter().map(|c| c.baseline.target_method.as_deref()).collect::<Vec<_>>(),
        ),
        Column::new("epsilon".into(), rows.iter().map(|c| c.baseline.epsilon).collect::<Vec<_>>()),
        Column::new("metric".into(), rows.iter().map(|c| c.baseline.metric.as_str()).collect::<Vec<_>>()),
        Column::new(
            "higher_is_more_similar".into(),
            rows.iter().map(|c| c.direction == Direction::HigherIsMoreSimilar).collect::<Vec<_>>(),
        ),
        Column::new("baseline_mean".into(), f(|c| c.baseline.mean)),
        Column::new("baseline_ci_low".into(), f(|c| c.baseline.ci_low)),
        Column::new("baseline_ci_high".into(), f(|c| c.baseline.ci_high)),
        Column::new("current_mean".into(), f(|c| c.current.mean)),
        Column::new("current_ci_low".into(), f(|c| c.current.ci_low)),
        Column::new("current_ci_high".into(), f(|c| c.current.ci_high)),
        Column::new("worse_by".into(), f(|c| c.worse_by)),
        Column::new("threshold".into(), f(|c| c.threshold)),
        Column::new("status".into(), rows.iter().map(|c| c.status.as_str()).collect::<Vec<_>>()),
    ]);
    let mut df = DataFrame::new(rows.len(), columns.collect()).map_err(table_error(&pq))?;
    super::parquet::write_table(&pq, &mut df, Vec::new())?;
    let md = out.join("compare.md");
    atomic::write_bytes(&md, markdown(report, baseline, current).as_bytes())?;
    Ok(vec![pq, md])
}

fn count(report: &CompareReport, s: Status) -> usize {
    report.rows.iter().filter(|c| c.status == s).count()
}

/// "3 regressions, 1 improvements, ..., 2 undefined": every status's count.
fn counts(report: &CompareReport) -> String {
    [
        (Status::Regression, "regressions"),
        (Status::Improvement, "improvements"),
        (Status::Unchanged, "unchanged"),
        (Status::BecameUndefined, "became undefined"),
        (Status::BecameDefined, "became defined"),
        (Status::Undefined, "undefined"),
    ]
    .iter()
    .map(|(s, label)| format!("{} {label}", count(report, *s)))
    .collect::<Vec<_>>()
    .join(", ")
}

/// The thresholds in words (the same line in the Markdown and on the terminal).
fn tolerance_words(t: &Tolerance) -> String {
    format!(
        "thresholds: {} on bounded metrics (correlations, SSIM, top-k), {}% of the baseline mean on the others",
        t.absolute,
        t.relative * 100.0
    )
}

/// The Markdown summary: counts, then every row that changed.
pub fn markdown(report: &CompareReport, baseline: &Path, current: &Path) -> String {
    let mut m = String::new();
    for note in report.notes() {
        let _ = writeln!(m, "**{note}**\n");
    }
    let _ = writeln!(m, "# fragility compare\n");
    let _ = writeln!(m, "- baseline: `{}`\n- current: `{}`", baseline.display(), current.display());
    let _ = writeln!(
        m,
        "- {}; a change past its threshold counts only where the 95% bootstrap intervals do not overlap\n",
        tolerance_words(&report.tolerance)
    );
    let (head, tail) =
        counts(report).split_once(", ").map_or((String::new(), String::new()), |(h, t)| (h.into(), t.into()));
    let _ = writeln!(m, "**{head}**, {tail}, of {} rows.\n", report.rows.len());
    let flagged: Vec<&Comparison> = report.rows.iter().filter(|c| c.status.is_change()).collect();
    if !flagged.is_empty() {
        let header = header(report.several());
        let _ = writeln!(m, "| {} |", header.join(" | "));
        let _ = writeln!(m, "|{}", "---|".repeat(header.len()));
        for c in flagged {
            let _ = writeln!(m, "{}", line(c, " | ", report.several()));
        }
    }
    m
}

fn fmt_row(r: &SummaryRow) -> String {
    use super::summary::show;
    match (defined(r.mean), r.ci_low, r.ci_high) {
        (Some(_), Some(_), Some(_)) => format!("{} [{}, {}]", show(r.mean), show(r.ci_low), show(r.ci_high)),
        (Some(_), _, _) => show(r.mean),
        _ => "–".into(),
    }
}

/// A change in metric units, readable at any scale (1e-6 for the normalised MSE).
fn fmt_change(v: Option<f64>, sign: bool) -> String {
    match v {
        None => "–".into(),
        Some(v) if v != 0.0 && v.abs() < 1e-3 => {
            if sign {
                format!("{v:+.2e}")
            } else {
                format!("{v:.2e}")
            }
        }
        Some(v) => {
            if sign {
                format!("{v:+.4}")
            } else {
                format!("{v:.4}")
            }
        }
    }
}

/// One row's cells joined by `sep` (with the model's label after the status for `several`).
fn line(c: &Comparison, sep: &str, several: bool) -> String {
    let mut cells = vec![
        c.status.as_str().to_string(),
        c.baseline.method.clone(),
        c.baseline.attack_label(),
        c.baseline.epsilon.to_string(),
        c.baseline.metric.clone(),
        fmt_row(&c.baseline),
        fmt_row(&c.current),
        fmt_change(c.worse_by, true),
        fmt_change(c.threshold, false),
    ];
    if several {
        cells.insert(1, c.baseline.model.clone());
    }
    format!("{}{}{}", sep.trim_start(), cells.join(sep), sep.trim_end())
}

/// The columns of the table of rows (terminal and Markdown), with `model` after the status for
/// studies of several models.
fn header(several: bool) -> Vec<&'static str> {
    let mut h = HEADER.to_vec();
    if several {
        h.insert(1, "model");
    }
    h
}

/// The columns of the table of rows (terminal and Markdown).
const HEADER: [&str; 9] = [
    "status",
    "method",
    "attack",
    "ε",
    "metric",
    "baseline (95% CI)",
    "current (95% CI)",
    "worse by",
    "threshold",
];

/// Prints the note on the images compared (first, where there is one), the rows that changed
/// (all rows with `all`) under a header line, and the counts.
pub fn print_compare(report: &CompareReport, all: bool) {
    for note in report.notes() {
        println!("{note}");
    }
    let shown: Vec<&Comparison> = report.rows.iter().filter(|c| all || c.status.is_change()).collect();
    if !shown.is_empty() {
        println!("{}", header(report.several()).join("  "));
    }
    for c in shown {
        println!("{}", line(c, "  ", report.several()));
    }
    println!("{}\n{}", counts(report), tolerance_words(&report.tolerance));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mean: f64, lo: f64, hi: f64) -> SummaryRow {
        SummaryRow {
            model: String::new(),
            method: "gradient".into(),
            attack: "top_k".into(),
            target_method: Some("gradient".into()),
            epsilon: 0.1,
            metric: "spearman".into(),
            n: 100,
            nulls: 0,
            mean: Some(mean),
            std: Some(0.1),
            median: Some(mean),
            ci_low: Some(lo),
            ci_high: Some(hi),
            label_kept_rate: 1.0,
        }
    }

    #[test]
    fn judge_needs_both_the_tolerance_and_disjoint_intervals() {
        let up = Direction::HigherIsMoreSimilar;
        let t = Tolerance::default();
        let base = row(0.50, 0.48, 0.52);
        // 0.45: worse by 0.05 > 0.02, intervals [0.43, 0.47] and [0.48, 0.52] disjoint.
        let (worse, threshold, status) = judge(&base, &row(0.45, 0.43, 0.47), up, &t);
        assert_eq!(status, Status::Regression);
        assert!((worse.unwrap() - 0.05).abs() < 1e-12);
        // Spearman's range is [-1, 1]: the absolute tolerance applies.
        assert_eq!(threshold, Some(0.02));
        // Worse by 0.05 but overlapping intervals: noise.
        assert_eq!(judge(&base, &row(0.45, 0.40, 0.49), up, &t).2, Status::Unchanged);
        // Disjoint but within the tolerance: a small, certain shift.
        assert_eq!(judge(&base, &row(0.515, 0.5205, 0.53), up, &t).2, Status::Unchanged);
        // Better by 0.1, disjoint.
        assert_eq!(judge(&base, &row(0.60, 0.58, 0.62), up, &t).2, Status::Improvement);
        // For a lower-is-similar metric the same move up is a regression.
        let down = Direction::LowerIsMoreSimilar;
        assert_eq!(judge(&base, &row(0.60, 0.58, 0.62), down, &t).2, Status::Regression);
    }

    fn mse(mean: f64, lo: f64, hi: f64) -> SummaryRow {
        SummaryRow { metric: "mse_normalized".into(), ..row(mean, lo, hi) }
    }

    #[test]
    fn an_mse_regression_at_the_1e6_scale_is_flagged_relative_to_the_baseline() {
        let down = Direction::LowerIsMoreSimilar;
        let t = Tolerance::default();
        // 2.0e-6 → 3.0e-6, intervals [1.9, 2.1]e-6 and [2.9, 3.1]e-6: worse by 1e-6, more than
        // 0.1 × 2.0e-6 = 2e-7.
        let (worse, threshold, status) =
            judge(&mse(2.0e-6, 1.9e-6, 2.1e-6), &mse(3.0e-6, 2.9e-6, 3.1e-6), down, &t);
        assert_eq!(status, Status::Regression);
        assert!((worse.unwrap() - 1.0e-6).abs() < 1e-18);
        assert!((threshold.unwrap() - 2.0e-7).abs() < 1e-18);
        // An absolute 0.02, as for the bounded metrics, could never see it.
        let absolute_only = Tolerance { absolute: 0.02, relative: 1e4 };
        assert_eq!(
            judge(&mse(2.0e-6, 1.9e-6, 2.1e-6), &mse(3.0e-6, 2.9e-6, 3.1e-6), down, &absolute_only).2,
            Status::Unchanged
        );
        // 2.0e-6 → 2.1e-6 (5%), disjoint intervals: within the 10%.
        assert_eq!(
            judge(&mse(2.0e-6, 1.99e-6, 2.01e-6), &mse(2.1e-6, 2.09e-6, 2.11e-6), down, &t).2,
            Status::Unchanged
        );
        // Lower MSE: an improvement.
        assert_eq!(
            judge(&mse(2.0e-6, 1.9e-6, 2.1e-6), &mse(1.0e-6, 0.9e-6, 1.1e-6), down, &t).2,
            Status::Improvement
        );
    }

    #[test]
    fn a_mean_that_becomes_nan_or_missing_is_a_change() {
        let up = Direction::HigherIsMoreSimilar;
        let t = Tolerance::default();
        let base = row(0.50, 0.48, 0.52);
        for gone in [None, Some(f64::NAN)] {
            let cur = SummaryRow { mean: gone, ..row(0.0, 0.0, 0.0) };
            assert_eq!(judge(&base, &cur, up, &t), (None, None, Status::BecameUndefined));
            assert_eq!(judge(&cur, &base, up, &t), (None, None, Status::BecameDefined));
            assert_eq!(judge(&cur, &cur, up, &t), (None, None, Status::Undefined));
        }
        // Only a watched metric fails the comparison.
        let cur = SummaryRow { mean: Some(f64::NAN), ..row(0.0, 0.0, 0.0) };
        let (worse_by, threshold, status) = judge(&base, &cur, up, &t);
        let c =
            Comparison { baseline: base.clone(), current: cur, direction: up, worse_by, threshold, status };
        let pairing = Pairing {
            baseline_n: 3,
            current_n: 3,
            common: [0, 1, 2].into(),
            differing_hashes: 0,
            by_id_only: None,
        };
        let mut report = CompareReport {
            rows: vec![c],
            tolerance: t,
            watched: Vec::new(),
            pairing,
            models: Default::default(),
        };
        assert!(markdown(&report, Path::new("b"), Path::new("c")).starts_with("# fragility compare"));
        assert_eq!(report.failures().count(), 0);
        assert!(counts(&report).contains("1 became undefined"), "{}", counts(&report));
        report.watched = vec!["spearman".into()];
        assert_eq!(report.failures().count(), 1);
        assert_eq!(report.regressions().count(), 0);
    }

    #[test]
    fn an_infinite_mean_is_a_change_never_unchanged() {
        let up = Direction::HigherIsMoreSimilar;
        let t = Tolerance::default();
        let base = row(0.50, 0.48, 0.52);
        for inf in [f64::INFINITY, f64::NEG_INFINITY] {
            let cur = SummaryRow { mean: Some(inf), ..row(0.5, 0.48, 0.52) };
            assert_eq!(judge(&base, &cur, up, &t).2, Status::BecameUndefined);
            assert_eq!(judge(&cur, &base, up, &t).2, Status::BecameDefined);
            // Infinite on both sides: nothing to compare, and not "unchanged".
            assert_eq!(judge(&cur, &cur, up, &t).2, Status::Undefined);
        }
    }

    #[test]
    fn an_automatic_k_compares_as_the_value_it_resolved_to() {
        let auto = serde_json::json!({
            "metrics": { "top_k": "auto" },
            "attacks": [
                { "name": "random_sign", "params": { "tries": 1 } },
                { "name": "top_k", "params": { "k": "auto", "target_method": "gradient" } },
            ],
        });
        let given = serde_json::json!({
            "metrics": { "top_k": [100] },
            "attacks": [
                { "name": "random_sign", "params": { "tries": 1 } },
                { "name": "top_k", "params": { "k": 100, "target_method": "gradient" } },
            ],
        });
        let mut resolved = auto.clone();
        resolve_automatic(
            &mut resolved,
            Some(&serde_json::json!({ "metrics.top_k": [100], "attacks.top_k.k": 100 })),
        );
        assert_eq!(resolved, given);
        // At 64×64 the automatic k is 522: not the same settings as a given 100.
        let mut at64 = auto.clone();
        resolve_automatic(
            &mut at64,
            Some(&serde_json::json!({ "metrics.top_k": [522], "attacks.top_k.k": 522 })),
        );
        assert_ne!(at64, given);
        assert_eq!(at64["attacks"][1]["params"]["k"], 522);
        // A run without the record (an older version) keeps its settings as they are.
        let mut old = auto.clone();
        resolve_automatic(&mut old, None);
        assert_eq!(old, auto);
    }

    /// A study of `models` (label, mean) in `dir`: gradient under top_k → gradient at ε 0.1 on
    /// six images, spearman the model's mean plus 0.01 per image id; `top_k` left automatic.
    fn study(dir: &Path, models: &[(&str, f64)]) {
        use crate::report::images::ImageTrace;
        use crate::report::table::SampleRow;
        let row = |model: &str, image_id: u32, v: f64| SampleRow {
            model: model.into(),
            image_id,
            label: 1,
            predicted: 1,
            method: "gradient".into(),
            attack: "top_k".into(),
            target_method: Some("gradient".into()),
            epsilon: 0.1,
            label_kept: true,
            iterations: 1,
            linf: 0.1,
            confidence_before: 0.9,
            confidence_after: 0.8,
            metrics: vec![Some(v + 0.01 * f64::from(image_id))],
        };
        let several = models.iter().any(|(m, _)| !m.is_empty());
        let table = SampleTable {
            metric_columns: vec!["spearman".into()],
            directions: vec![Direction::HigherIsMoreSimilar],
            rows: models.iter().flat_map(|&(m, v)| (0..6).map(move |i| row(m, i, v))).collect(),
            seed: 1,
            images: (0..6)
                .map(|i| (i, ImageTrace { source: format!("f[{i}]"), hash: format!("h{i}") }))
                .collect(),
            study: None,
            model_metrics: if several {
                models.iter().map(|(m, _)| (m.to_string(), vec!["spearman".to_string()])).collect()
            } else {
                Vec::new()
            },
        };
        std::fs::create_dir_all(dir).unwrap();
        crate::report::write_samples(&dir.join("samples.parquet"), &table).unwrap();
        let labels: Vec<serde_json::Value> =
            models.iter().map(|(m, _)| serde_json::json!({ "label": m })).collect();
        let auto: Vec<serde_json::Value> =
            models.iter().map(|(m, _)| serde_json::json!({ "label": m, "metrics.top_k": [100] })).collect();
        let run = if several {
            serde_json::json!({ "settings": { "models": labels, "metrics": { "top_k": "auto" } },
                "automatic": { "models": auto } })
        } else {
            serde_json::json!({ "settings": { "metrics": { "top_k": [100] } } })
        };
        std::fs::write(dir.join("run.json"), run.to_string()).unwrap();
    }

    #[test]
    fn two_studies_of_several_models_are_compared_model_by_model() {
        let dir = tempfile::tempdir().unwrap();
        let (base, cur) = (dir.path().join("base"), dir.path().join("cur"));
        study(&base, &[("a", 0.8), ("b", 0.8)]);
        study(&cur, &[("a", 0.8), ("b", 0.5)]);
        let report = compare(&base, &cur, Tolerance::default(), &[]).unwrap();
        let rows: Vec<(&str, Status)> =
            report.rows.iter().map(|c| (c.baseline.model.as_str(), c.status)).collect();
        assert_eq!(rows, [("a", Status::Unchanged), ("b", Status::Regression)]);
        assert!(report.notes().is_empty());
        let out = dir.path().join("out");
        write_compare(&out, &report, &base, &cur).unwrap();
        use polars::prelude::{ParquetReader, SerReader};
        let df =
            ParquetReader::new(std::fs::File::open(out.join("compare.parquet")).unwrap()).finish().unwrap();
        assert_eq!(df.get_column_names()[0].as_str(), "model");
        let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
        assert!(
            md.contains("| status | model | method |") && md.contains("| regression | b | gradient |"),
            "{md}"
        );
        // A model only one side has is named first, and the others are still compared.
        study(&cur, &[("a", 0.8), ("c", 0.5)]);
        let report = compare(&base, &cur, Tolerance::default(), &[]).unwrap();
        assert_eq!(report.rows.len(), 1);
        assert_eq!(
            report.notes(),
            ["Not compared: model b is only in the baseline; model c is only in the current run (models \
              are paired by label)."]
        );
        assert!(markdown(&report, &base, &cur).starts_with("**Not compared: model b"));
    }

    #[test]
    fn a_study_of_one_model_is_not_compared_with_one_of_several() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        study(&one, &[("", 0.8)]);
        study(&two, &[("a", 0.8), ("b", 0.8)]);
        let err = compare(&one, &two, Tolerance::default(), &[]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        let (a, b) = (one.join("samples.parquet"), two.join("samples.parquet"));
        assert!(msg.contains(&format!("{} is a study of one model", a.display())), "{msg}");
        assert!(msg.contains(&format!("{} is a study of several models (a, b)", b.display())), "{msg}");
        // Two studies of one model compare as they always did: no model column anywhere.
        let report = compare(&one, &one, Tolerance::default(), &[]).unwrap();
        assert!(!report.several() && report.rows[0].baseline.model.is_empty());
    }

    #[test]
    fn the_top_k_of_several_models_compares_per_model() {
        let run = |top_k: serde_json::Value, auto: [u64; 2]| {
            serde_json::json!({
                "settings": { "models": [{ "label": "mobilenet" }, { "label": "resnet20" }],
                    "metrics": { "top_k": top_k },
                    "attacks": [{ "name": "top_k", "params": { "k": "auto", "target_method": "gradient" } }] },
                "automatic": { "models": [
                    { "label": "mobilenet", "image_size": [64, 64], "metrics.top_k": [auto[0]], "attacks.top_k.k": auto[0] },
                    { "label": "resnet20", "image_size": [32, 32], "metrics.top_k": [auto[1]], "attacks.top_k.k": auto[1] },
                ] },
            })
        };
        let s = settings(&run("auto".into(), [522, 100]), &[]);
        assert_eq!(s["metrics"]["top_k"], serde_json::json!({ "mobilenet": [522], "resnet20": [100] }));
        assert_eq!(s["attacks"][0]["params"]["k"], serde_json::json!({ "mobilenet": 522, "resnet20": 100 }));
        // Given [100] for both models equals automatic k's that resolved to 100 for both.
        assert_eq!(
            settings(&run(serde_json::json!([100]), [100, 100]), &[])["metrics"],
            settings(&run("auto".into(), [100, 100]), &[])["metrics"]
        );
        assert_ne!(
            settings(&run(serde_json::json!([100]), [522, 100]), &[])["metrics"],
            s["metrics"].clone() /* auto 522 | 100 */
        );
        // A record without `automatic` keeps "auto" per model, and does not fail.
        let mut bare = run("auto".into(), [1, 1]);
        bare.as_object_mut().unwrap().remove("automatic");
        assert_eq!(settings(&bare, &[])["metrics"]["top_k"]["resnet20"], "auto");
        assert!(is_weights("model.weights") && is_weights("models[1].weights") && !is_weights("data.labels"));
    }

    #[test]
    fn thresholds_follow_each_metric_scale() {
        let t = Tolerance { absolute: 0.05, relative: 0.2 };
        assert_eq!(t.threshold("top100_intersection", 0.7), 0.05);
        assert_eq!(t.threshold("ssim", -0.3), 0.05);
        assert!((t.threshold("center_shift_px", 2.0) - 0.4).abs() < 1e-12);
        assert!((t.threshold("mse_normalized", -1e-6) - 2e-7).abs() < 1e-20);
        // Attack measures are not metrics: relative.
        assert!((t.threshold("top_mass_after", 0.5) - 0.1).abs() < 1e-12);
        assert_eq!(fmt_change(Some(1.5e-6), true), "+1.50e-6");
        assert_eq!(fmt_change(Some(-0.25), true), "-0.2500");
        assert_eq!(fmt_change(Some(2e-7), false), "2.00e-7");
    }
}

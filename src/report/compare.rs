//! `fragility compare BASELINE CURRENT`: regression tracking between two runs of one study.
//!
//! Users track the stability of their models' explanations from one model version to the next
//! in their own CI: run the same experiment on both versions, then compare. Rows of the two
//! `summary.parquet` files are matched by method × attack × target method × ε × metric. A row
//! is a **regression** when the current mean is worse than the baseline's by more than the
//! tolerance (in the metric's units; "worse" = less similar maps, i.e. lower for
//! higher-is-more-similar metrics, higher for the others) *and* the two 95% bootstrap
//! intervals do not overlap; an **improvement** is the same the other way round; everything
//! else is **unchanged** (or **undefined** where a mean is missing). Requiring both guards
//! against flagging noise (intervals) and against flagging tiny but certain shifts (tolerance).
//!
//! The two runs must have studied the same thing: the settings of their `run.json` are
//! compared (methods and their parameters, attacks and theirs, budgets, metrics, image count,
//! seed, robustness settings; not paths nor the model weights, which are what changes between versions), and any
//! difference is an error naming the keys. So are the content hashes of their data inputs
//! (images, labels, masks: see [`crate::fingerprint`]), where both runs recorded them. Outputs: a table on stdout, `compare.parquet` and
//! `compare.md` (written atomically into the chosen folder). The command exits 0 (no
//! regression), 1 (a regression) or 2 (an error).

use super::summary::{read_summary, SummaryRow};
use super::table::{read_directions, table_error};
use crate::atomic;
use crate::error::{Error, Result};
use crate::metric::Direction;
use polars::prelude::{Column, DataFrame, ParquetCompression, ParquetWriter};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The verdict on one matched row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Worse by more than the tolerance, intervals disjoint.
    Regression,
    /// Better by more than the tolerance, intervals disjoint.
    Improvement,
    /// Neither.
    Unchanged,
    /// A mean (or interval) is missing on either side.
    Undefined,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Regression => "regression",
            Status::Improvement => "improvement",
            Status::Unchanged => "unchanged",
            Status::Undefined => "undefined",
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
    /// The verdict.
    pub status: Status,
}

/// What `compare` found.
#[derive(Debug, Clone)]
pub struct CompareReport {
    /// Every matched row, in the baseline's order.
    pub rows: Vec<Comparison>,
    /// The tolerance used.
    pub tolerance: f64,
}

impl CompareReport {
    /// The rows flagged as regressions.
    pub fn regressions(&self) -> impl Iterator<Item = &Comparison> {
        self.rows.iter().filter(|c| c.status == Status::Regression)
    }
}

/// Judges one pair of summary rows.
pub fn judge(
    baseline: &SummaryRow,
    current: &SummaryRow,
    direction: Direction,
    tolerance: f64,
) -> (Option<f64>, Status) {
    let (Some(b), Some(c)) = (baseline.mean, current.mean) else {
        return (None, Status::Undefined);
    };
    let worse_by = match direction {
        Direction::HigherIsMoreSimilar => b - c,
        Direction::LowerIsMoreSimilar => c - b,
    };
    let (Some(bl), Some(bh), Some(cl), Some(ch)) =
        (baseline.ci_low, baseline.ci_high, current.ci_low, current.ci_high)
    else {
        return (Some(worse_by), Status::Undefined);
    };
    let disjoint = ch < bl || cl > bh;
    let status = if worse_by > tolerance && disjoint {
        Status::Regression
    } else if -worse_by > tolerance && disjoint {
        Status::Improvement
    } else {
        Status::Unchanged
    };
    (Some(worse_by), status)
}

type Key = (String, String, Option<String>, u64, String);

fn key(r: &SummaryRow) -> Key {
    (r.method.clone(), r.attack.clone(), r.target_method.clone(), r.epsilon.to_bits(), r.metric.clone())
}

/// The settings of a run that must agree between baseline and current.
const COMPARED_SETTINGS: [&str; 7] =
    ["methods", "attacks", "epsilons", "metrics", "seed", "data.count", "robustness"];

fn settings(dir: &Path) -> Result<serde_json::Value> {
    let p = dir.join("run.json");
    let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::data(&p, format!("not JSON: {e}")))?;
    Ok(v.get("settings").cloned().unwrap_or(serde_json::Value::Null))
}

/// The content hashes a run recorded of its data inputs (images, labels, classes, masks,
/// target maps: everything but the weights, which are what changes between versions).
fn data_hashes(dir: &Path) -> Result<Vec<(String, String)>> {
    let p = dir.join("run.json");
    let v: serde_json::Value = serde_json::from_slice(&crate::data::read_capped(&p, 256 << 20)?)
        .map_err(|e| Error::data(&p, format!("not JSON: {e}")))?;
    let fp = crate::fingerprint::Fingerprint::from_json(&v);
    Ok(fp
        .map(|fp| {
            fp.inputs.into_iter().filter(|i| i.field != "model.weights").map(|i| (i.field, i.hash)).collect()
        })
        .unwrap_or_default())
}

/// The data inputs whose contents differ between two runs (runs that recorded no hashes,
/// from older versions, are not compared).
fn differing_data(baseline: &Path, current: &Path) -> Result<Vec<String>> {
    let (b, c) = (data_hashes(baseline)?, data_hashes(current)?);
    Ok(b.iter()
        .filter(|(field, hash)| c.iter().any(|(f, h)| f == field && h != hash))
        .map(|(field, _)| format!("`{field}`"))
        .collect())
}

fn lookup<'a>(v: &'a serde_json::Value, dotted: &str) -> Option<&'a serde_json::Value> {
    dotted.split('.').try_fold(v, |v, k| v.get(k))
}

/// Compares the runs in `baseline` and `current`; `metrics` (empty: all) restricts the
/// compared metric columns.
pub fn compare(baseline: &Path, current: &Path, tolerance: f64, metrics: &[String]) -> Result<CompareReport> {
    if !(tolerance >= 0.0 && tolerance.is_finite()) {
        return Err(Error::Invalid(format!("--tolerance must be finite and ≥ 0, got {tolerance}")));
    }
    let (sb, sc) = (settings(baseline)?, settings(current)?);
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
    let changed = differing_data(baseline, current)?;
    if !changed.is_empty() {
        return Err(Error::Invalid(format!(
            "{} and {} studied different data (the contents of {} differ), so their numbers are not comparable",
            baseline.display(),
            current.display(),
            changed.join(", ")
        )));
    }
    let base_rows = read_summary(&baseline.join("summary.parquet"))?;
    let cur_rows = read_summary(&current.join("summary.parquet"))?;
    let directions: HashMap<String, Direction> =
        read_directions(&current.join("samples.parquet"))?.into_iter().collect();
    for m in metrics {
        if !directions.contains_key(m) {
            let mut known: Vec<&String> = directions.keys().collect();
            known.sort();
            return Err(Error::Invalid(format!("--metric {m}: no such metric column (known: {known:?})")));
        }
    }
    let wanted = |r: &SummaryRow| metrics.is_empty() || metrics.contains(&r.metric);
    let cur: HashMap<Key, &SummaryRow> = cur_rows.iter().filter(|r| wanted(r)).map(|r| (key(r), r)).collect();
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    for b in base_rows.iter().filter(|r| wanted(r)) {
        let Some(c) = cur.get(&key(b)) else {
            missing.push(format!("{} / {} / ε {} / {}", b.method, b.attack_label(), b.epsilon, b.metric));
            continue;
        };
        let direction = *directions.get(&b.metric).ok_or_else(|| {
            Error::data(current.join("samples.parquet"), format!("no direction for {}", b.metric))
        })?;
        let (worse_by, status) = judge(b, c, direction, tolerance);
        rows.push(Comparison { baseline: b.clone(), current: (*c).clone(), direction, worse_by, status });
    }
    let extra = cur.len() + missing.len() - base_rows.iter().filter(|r| wanted(r)).count();
    if !missing.is_empty() || extra > 0 {
        return Err(Error::Invalid(format!(
            "the summaries do not have the same rows: {} baseline rows have no current match{}{}",
            missing.len(),
            missing.first().map_or(String::new(), |m| format!(" (first: {m})")),
            if extra > 0 { format!("; {extra} current rows have no baseline match") } else { String::new() }
        )));
    }
    Ok(CompareReport { rows, tolerance })
}

/// Writes `compare.parquet` and `compare.md` into `out`; returns their paths.
pub fn write_compare(
    out: &Path,
    report: &CompareReport,
    baseline: &Path,
    current: &Path,
) -> Result<Vec<PathBuf>> {
    let rows = &report.rows;
    let pq = out.join("compare.parquet");
    let f = |g: fn(&Comparison) -> Option<f64>| rows.iter().map(g).collect::<Vec<Option<f64>>>();
    let columns = vec![
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
        Column::new("status".into(), rows.iter().map(|c| c.status.as_str()).collect::<Vec<_>>()),
    ];
    let mut df = DataFrame::new(rows.len(), columns).map_err(table_error(&pq))?;
    atomic::write_with(&pq, |w| {
        ParquetWriter::new(w)
            .with_compression(ParquetCompression::Zstd(None))
            .finish(&mut df)
            .map(|_| ())
            .map_err(table_error(&pq))
    })?;
    let md = out.join("compare.md");
    atomic::write_bytes(&md, markdown(report, baseline, current).as_bytes())?;
    Ok(vec![pq, md])
}

fn count(report: &CompareReport, s: Status) -> usize {
    report.rows.iter().filter(|c| c.status == s).count()
}

/// The Markdown summary: counts, then every regression and improvement.
pub fn markdown(report: &CompareReport, baseline: &Path, current: &Path) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# fragility compare\n");
    let _ = writeln!(m, "- baseline: `{}`\n- current: `{}`", baseline.display(), current.display());
    let _ = writeln!(
        m,
        "- tolerance: {} (metric units), and the 95% bootstrap intervals must not overlap\n",
        report.tolerance
    );
    let _ = writeln!(
        m,
        "**{} regressions**, {} improvements, {} unchanged, {} undefined, of {} rows.\n",
        count(report, Status::Regression),
        count(report, Status::Improvement),
        count(report, Status::Unchanged),
        count(report, Status::Undefined),
        report.rows.len()
    );
    let flagged: Vec<&Comparison> =
        report.rows.iter().filter(|c| matches!(c.status, Status::Regression | Status::Improvement)).collect();
    if !flagged.is_empty() {
        let _ = writeln!(
            m,
            "| status | method | attack | ε | metric | baseline (95% CI) | current (95% CI) | worse by |"
        );
        let _ = writeln!(m, "|---|---|---|---|---|---|---|---|");
        for c in flagged {
            let _ = writeln!(m, "{}", line(c, " | "));
        }
    }
    m
}

fn fmt_row(r: &SummaryRow) -> String {
    use super::summary::show;
    match (r.mean, r.ci_low, r.ci_high) {
        (Some(_), Some(_), Some(_)) => format!("{} [{}, {}]", show(r.mean), show(r.ci_low), show(r.ci_high)),
        (Some(_), _, _) => show(r.mean),
        _ => "–".into(),
    }
}

fn line(c: &Comparison, sep: &str) -> String {
    let cells = [
        c.status.as_str().to_string(),
        c.baseline.method.clone(),
        c.baseline.attack_label(),
        c.baseline.epsilon.to_string(),
        c.baseline.metric.clone(),
        fmt_row(&c.baseline),
        fmt_row(&c.current),
        c.worse_by.map_or("–".into(), |w| format!("{w:+.4}")),
    ];
    format!("{}{}{}", sep.trim_start(), cells.join(sep), sep.trim_end())
}

/// Prints the regressions and improvements (all rows with `all`) and the counts.
pub fn print_compare(report: &CompareReport, all: bool) {
    for c in &report.rows {
        if all || matches!(c.status, Status::Regression | Status::Improvement) {
            println!("{}", line(c, "  "));
        }
    }
    println!(
        "{} regressions, {} improvements, {} unchanged, {} undefined (tolerance {})",
        count(report, Status::Regression),
        count(report, Status::Improvement),
        count(report, Status::Unchanged),
        count(report, Status::Undefined),
        report.tolerance
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mean: f64, lo: f64, hi: f64) -> SummaryRow {
        SummaryRow {
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
        let base = row(0.50, 0.48, 0.52);
        // 0.45: worse by 0.05 > 0.02, intervals [0.43, 0.47] and [0.48, 0.52] disjoint.
        let (worse, status) = judge(&base, &row(0.45, 0.43, 0.47), up, 0.02);
        assert_eq!(status, Status::Regression);
        assert!((worse.unwrap() - 0.05).abs() < 1e-12);
        // Worse by 0.05 but overlapping intervals: noise.
        assert_eq!(judge(&base, &row(0.45, 0.40, 0.49), up, 0.02).1, Status::Unchanged);
        // Disjoint but within the tolerance: a small, certain shift.
        assert_eq!(judge(&base, &row(0.515, 0.5205, 0.53), up, 0.02).1, Status::Unchanged);
        // Better by 0.1, disjoint.
        assert_eq!(judge(&base, &row(0.60, 0.58, 0.62), up, 0.02).1, Status::Improvement);
        // For a lower-is-similar metric the same move up is a regression.
        let down = Direction::LowerIsMoreSimilar;
        assert_eq!(judge(&base, &row(0.60, 0.58, 0.62), down, 0.02).1, Status::Regression);
        // A missing mean is undefined, never a regression.
        let none = SummaryRow { mean: None, ..row(0.0, 0.0, 0.0) };
        assert_eq!(judge(&base, &none, up, 0.02), (None, Status::Undefined));
    }
}

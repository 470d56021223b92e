//! The summary table, `summary.parquet`: one row per (model ×) method × attack × ε × metric.
//!
//! The per-sample table is too long to read; the question the paper asks is "how far do the
//! maps of method M move under attack A at budget ε", which is a mean over images. Only the
//! rows whose attack kept the label enter the statistics (a perturbation that changes the
//! class is not a fragility result); how often the label was kept is reported beside them.
//! The aggregation is plain Rust over the rows (our polars build has no lazy/group-by
//! feature, and the groups are few), and its order is deterministic: groups appear in the
//! order of their first row.
//!
//! Columns, in this order:
//!
//! | column            | type      | meaning                                                      |
//! |-------------------|-----------|--------------------------------------------------------------|
//! | `model`           | str       | the model's label: only in a study of several models         |
//! | `method`          | str       | attribution method                                           |
//! | `attack`          | str       | attack                                                       |
//! | `target_method`   | str, null | the method a steered attack steered; null for random baselines |
//! | `epsilon`         | f64       | L∞ budget on the [0, 1] pixel scale                          |
//! | `metric`          | str       | metric column of `samples.parquet` (its units are in its name)|
//! | `n`               | u32       | label-kept rows with a value for the metric                  |
//! | `nulls`           | u32       | label-kept rows where the metric is undefined                |
//! | `mean`            | f64, null | mean over the `n` values, in the metric's units; null if n = 0 |
//! | `std`             | f64, null | sample standard deviation (divisor n − 1); null if n < 2     |
//! | `median`          | f64, null | median of the `n` values (mean of the middle two for even n) |
//! | `ci_low`, `ci_high` | f64, null | 95% percentile-bootstrap confidence interval of the mean: [`BOOTSTRAP_RESAMPLES`] resamples with replacement, the 2.5th and 97.5th percentiles of their means; seeded by the run's seed and the group, so it is reproducible; null if n = 0 |
//! | `label_kept_rate` | f64       | label-kept rows / all rows of the group, in [0, 1]           |
//!
//! In a study of several models each model has its own groups, over its own metric columns
//! only (a model whose images are another size has another `top{k}_intersection`), and the
//! bootstrap seed of a group also hashes the model's label; a study of one model has no
//! `model` column and its seeds are those of the versions before models had labels, so its
//! summary is unchanged.

use crate::error::{Error, Result};
use crate::report::table::{required, table_error, SampleRow, SampleTable};
use polars::prelude::{Column, DataFrame, ParquetReader, PolarsError, SerReader};
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

/// The columns of `summary.parquet`, in file order.
pub const SUMMARY_COLUMNS: [&str; 13] = [
    "method",
    "attack",
    "target_method",
    "epsilon",
    "metric",
    "n",
    "nulls",
    "mean",
    "std",
    "median",
    "ci_low",
    "ci_high",
    "label_kept_rate",
];

/// The `attack` of the sampling-robustness rows (no attack: uniform noise of radius
/// `epsilon`, see [`crate::robustness`]); only the robustness columns are summarised for them,
/// and only the other columns for the attacks.
pub const SAMPLING: &str = "sampling";

/// Whether metric column `column` is summarised for rows of attack `attack`.
pub fn applies(attack: &str, column: &str) -> bool {
    (attack == SAMPLING) == crate::robustness::ROBUSTNESS_COLUMNS.contains(&column)
}

/// Resamples of the bootstrap confidence interval.
pub const BOOTSTRAP_RESAMPLES: usize = 1000;

/// The optional first column of a summary of several models.
pub const MODEL_COLUMN: &str = super::table::MODEL_COLUMN;

/// Statistics of one metric over the images of one (model ×) method × attack × ε.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// The model's label in a study of several models; empty in a study of one model.
    pub model: String,
    /// The attribution method.
    pub method: String,
    /// The attack.
    pub attack: String,
    /// The method a steered attack steered (`None` for the random baselines).
    pub target_method: Option<String>,
    /// The L∞ budget on the [0, 1] pixel scale.
    pub epsilon: f64,
    /// The metric's column name in `samples.parquet`.
    pub metric: String,
    /// Number of label-kept rows with a (finite) value of the metric.
    pub n: u32,
    /// Number of label-kept rows where the metric is null (or not finite).
    pub nulls: u32,
    /// Mean of the `n` values; `None` when `n = 0`.
    pub mean: Option<f64>,
    /// Sample standard deviation of the `n` values (divisor `n − 1`); `None` when `n < 2`.
    pub std: Option<f64>,
    /// Median of the `n` values; `None` when `n = 0`.
    pub median: Option<f64>,
    /// Lower end of the 95% bootstrap confidence interval of the mean; `None` when `n = 0`.
    pub ci_low: Option<f64>,
    /// Upper end of the 95% bootstrap confidence interval of the mean; `None` when `n = 0`.
    pub ci_high: Option<f64>,
    /// Label-kept rows divided by all rows of the group.
    pub label_kept_rate: f64,
}

/// The values collected for one group before the statistics are taken.
struct Group {
    /// Index of the first row of the group (gives the group its name).
    first_row: usize,
    /// Index of the metric column.
    metric: usize,
    /// Finite values of label-kept rows.
    values: Vec<f64>,
    /// Label-kept rows without a finite value.
    nulls: u32,
    /// Label-kept rows.
    kept: u32,
    /// All rows.
    total: u32,
}

impl SummaryRow {
    /// The attack as plots and printed tables name it: `top_k → gradient` for a steered
    /// attack, the bare name for a random baseline.
    pub fn attack_label(&self) -> String {
        attack_label(&self.attack, self.target_method.as_deref())
    }
}

/// `top_k → gradient` for a steered attack and its target method, the bare name otherwise: how
/// plots, printed tables, progress messages and timings name an attack.
pub fn attack_label(attack: &str, target_method: Option<&str>) -> String {
    match target_method {
        Some(t) => format!("{attack} → {t}"),
        None => attack.to_string(),
    }
}

/// Median of `values` (mean of the two middle values for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// 95% percentile-bootstrap confidence interval of the mean of `values`: the means of
/// [`BOOTSTRAP_RESAMPLES`] resamples (with replacement, drawn from `seed`), sorted; the
/// interval runs from the one at rank ⌊0.025·B⌋ to the one at rank ⌈0.975·B⌉ − 1 (0-based).
/// `None` if `values` is empty; a single value (or identical values) gives a zero-width interval.
pub fn bootstrap_ci(values: &[f64], seed: u64) -> Option<(f64, f64)> {
    use rand::Rng;
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    let mut rng = crate::seed::rng(seed);
    let mut means: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let b = BOOTSTRAP_RESAMPLES as f64;
    let lo = (0.025 * b).floor() as usize;
    let hi = ((0.975 * b).ceil() as usize).saturating_sub(1);
    Some((means[lo], means[hi.min(means.len() - 1)]))
}

/// A statistic for display: four decimals, or four significant digits in scientific notation
/// for magnitudes below 10⁻³ (the normalised MSE is ~10⁻⁶), `-` for none.
pub fn show(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v != 0.0 && v.abs() < 1e-3 => format!("{v:.3e}"),
        Some(v) => format!("{v:.4}"),
    }
}

/// Prints the summary as a fixed-width table on stdout (the end of `run` and `report`), with a
/// `model` column first in a study of several models.
pub fn print_summary(rows: &[SummaryRow]) {
    let width = rows.iter().map(|r| r.model.chars().count()).max().unwrap_or(0).max(5);
    let model = |m: &str| if of_models(rows) { format!("{m:<width$} ") } else { String::new() };
    println!(
        "{}{:<22} {:<30} {:>7} {:<26} {:>5} {:>9} {:>21} {:>6}",
        model("model"),
        "method",
        "attack",
        "epsilon",
        "metric",
        "n",
        "mean",
        "95% CI",
        "kept"
    );
    for r in rows {
        let ci = match (r.ci_low, r.ci_high) {
            (Some(l), Some(h)) => format!("[{}, {}]", show(Some(l)), show(Some(h))),
            _ => "-".into(),
        };
        println!(
            "{}{:<22} {:<30} {:>7} {:<26} {:>5} {:>9} {:>21} {:>5.0}%",
            model(&r.model),
            r.method,
            r.attack_label(),
            super::labels::epsilon(r.epsilon),
            r.metric,
            r.n,
            show(r.mean),
            ci,
            100.0 * r.label_kept_rate
        );
    }
}

/// Mean and sample standard deviation of `values`, each `None` where undefined.
///
/// Two passes (mean, then squared deviations) rather than Σx² − n·mean², which cancels
/// catastrophically when the spread is small next to the mean (rank correlations near 1).
fn mean_std(values: &[f64]) -> (Option<f64>, Option<f64>) {
    if values.is_empty() {
        return (None, None);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.len() >= 2)
        .then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    // Finite inputs give no NaN except when a sum overflows to +∞ and −∞ at once; a NaN would
    // poison every later reader, so such a statistic is reported as missing.
    (Some(mean).filter(|m| !m.is_nan()), std.filter(|s| !s.is_nan()))
}

/// The bootstrap seed of the group of `first` (its first row) and metric `column`: the run's
/// seed and the group's key, with the model's label only in a study of several models (so
/// that a study of one model keeps the seeds, and the intervals, of earlier versions).
fn group_seed(seed: u64, first: &SampleRow, column: &str) -> u64 {
    let mut key = vec![
        crate::seed::hash_str(&first.method),
        crate::seed::hash_str(&first.attack),
        crate::seed::hash_str(first.target_method.as_deref().unwrap_or("")),
        first.epsilon.to_bits(),
        crate::seed::hash_str(column),
    ];
    if !first.model.is_empty() {
        key.push(crate::seed::hash_str(&first.model));
    }
    crate::seed::derive(seed, &key)
}

/// Reduces the per-sample table to one row per (model ×) method × attack × ε × metric.
///
/// Groups are ordered by their first appearance in `table.rows` (row by row, metrics in column
/// order); a model's groups cover only its own metric columns ([`SampleTable::has_metric`]). Only label-kept rows enter `n`, `nulls`, `mean` and `std`. A non-finite metric value
/// is counted as null: metrics return `None` where they are undefined, so a NaN or ±∞ is an
/// upstream bug that would otherwise poison the whole group's mean. The output holds no NaN.
pub fn summarize(table: &SampleTable) -> Vec<SummaryRow> {
    type GroupKey<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, u64, usize);
    let mut index: HashMap<GroupKey, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for (i, row) in table.rows.iter().enumerate() {
        // 0.0 and −0.0 are the same budget; normalise before keying on the bits.
        let eps_bits = if row.epsilon == 0.0 { 0.0f64 } else { row.epsilon }.to_bits();
        for metric in 0..table.metric_columns.len() {
            if !applies(&row.attack, &table.metric_columns[metric]) || !table.has_metric(&row.model, metric) {
                continue;
            }
            let key = (
                row.model.as_str(),
                row.method.as_str(),
                row.attack.as_str(),
                row.target_method.as_deref(),
                eps_bits,
                metric,
            );
            let g = *index.entry(key).or_insert_with(|| {
                groups.push(Group { first_row: i, metric, values: Vec::new(), nulls: 0, kept: 0, total: 0 });
                groups.len() - 1
            });
            let group = &mut groups[g];
            group.total += 1;
            if row.label_kept {
                group.kept += 1;
                match row.metrics.get(metric).copied().flatten().filter(|v| v.is_finite()) {
                    Some(v) => group.values.push(v),
                    None => group.nulls += 1,
                }
            }
        }
    }
    groups
        .into_iter()
        .map(|g| {
            let first = &table.rows[g.first_row];
            let (mean, std) = mean_std(&g.values);
            let ci = bootstrap_ci(&g.values, group_seed(table.seed, first, &table.metric_columns[g.metric]));
            SummaryRow {
                model: first.model.clone(),
                method: first.method.clone(),
                attack: first.attack.clone(),
                target_method: first.target_method.clone(),
                epsilon: first.epsilon,
                metric: table.metric_columns[g.metric].clone(),
                n: g.values.len() as u32,
                nulls: g.nulls,
                mean,
                std,
                median: median(&g.values),
                ci_low: ci.map(|c| c.0),
                ci_high: ci.map(|c| c.1),
                // `total ≥ 1`: a group exists only once a row has entered it.
                label_kept_rate: f64::from(g.kept) / f64::from(g.total),
            }
        })
        .collect()
}

/// Whether `rows` are of a study of several models (some row has a model's label).
pub fn of_models(rows: &[SummaryRow]) -> bool {
    rows.iter().any(|r| !r.model.is_empty())
}

/// Builds the DataFrame of `rows` (columns as in the module docs: `model` first only for a
/// study of several models).
fn summary_frame(rows: &[SummaryRow]) -> std::result::Result<DataFrame, PolarsError> {
    fn col<'a, T, F: Fn(&'a SummaryRow) -> T>(rows: &'a [SummaryRow], f: F) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    let model = of_models(rows).then(|| Column::new(MODEL_COLUMN.into(), col(rows, |r| r.model.as_str())));
    let columns = model.into_iter().chain([
        Column::new("method".into(), col(rows, |r| r.method.as_str())),
        Column::new("attack".into(), col(rows, |r| r.attack.as_str())),
        Column::new("target_method".into(), col(rows, |r| r.target_method.as_deref())),
        Column::new("epsilon".into(), col(rows, |r| r.epsilon)),
        Column::new("metric".into(), col(rows, |r| r.metric.as_str())),
        Column::new("n".into(), col(rows, |r| r.n)),
        Column::new("nulls".into(), col(rows, |r| r.nulls)),
        Column::new("mean".into(), col(rows, |r| r.mean)),
        Column::new("std".into(), col(rows, |r| r.std)),
        Column::new("median".into(), col(rows, |r| r.median)),
        Column::new("ci_low".into(), col(rows, |r| r.ci_low)),
        Column::new("ci_high".into(), col(rows, |r| r.ci_high)),
        Column::new("label_kept_rate".into(), col(rows, |r| r.label_kept_rate)),
    ]);
    DataFrame::new(rows.len(), columns.collect())
}

/// Writes the summary rows to `path` as Parquet (Zstandard), atomically, with the fingerprint
/// id of the study they summarise (`study`, metadata `fragility.study`, as in
/// `samples.parquet`) where known.
pub fn write_summary(path: &Path, rows: &[SummaryRow], study: Option<&str>) -> Result<()> {
    let mut df = summary_frame(rows).map_err(table_error(path))?;
    let metadata = study.map(|s| (super::table::STUDY_KEY.to_string(), s.to_string())).into_iter().collect();
    super::parquet::write_table(path, &mut df, metadata)
}

/// Reads a table written by [`write_summary`] (for `fragility report`, which plots an
/// existing run without recomputing it).
///
/// Fails with [`Error::Data`] (exit 2) if the file is unreadable, the columns differ from the
/// documented ones, a column has the wrong type or a non-nullable column holds a null.
pub fn read_summary(path: &Path) -> Result<Vec<SummaryRow>> {
    crate::report::table::guarded(path, || read_summary_unchecked(path))
}

fn read_summary_unchecked(path: &Path) -> Result<Vec<SummaryRow>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let df = ParquetReader::new(file).finish().map_err(table_error(path))?;
    let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
    let several = names.first().is_some_and(|n| n == MODEL_COLUMN);
    if names[usize::from(several)..] != SUMMARY_COLUMNS {
        return Err(Error::data(
            path,
            format!("columns are {names:?}, expected {SUMMARY_COLUMNS:?} (after `{MODEL_COLUMN}` for several models)"),
        ));
    }
    let column = |name: &str| df.column(name).map_err(table_error(path));
    let model: Vec<&str> = if several {
        required(path, MODEL_COLUMN, column(MODEL_COLUMN)?.str().map_err(table_error(path))?.iter())?
    } else {
        vec![""; df.height()]
    };
    let method = required(path, "method", column("method")?.str().map_err(table_error(path))?.iter())?;
    let attack = required(path, "attack", column("attack")?.str().map_err(table_error(path))?.iter())?;
    let target_method: Vec<Option<&str>> =
        column("target_method")?.str().map_err(table_error(path))?.iter().collect();
    let epsilon = required(path, "epsilon", column("epsilon")?.f64().map_err(table_error(path))?.iter())?;
    let metric = required(path, "metric", column("metric")?.str().map_err(table_error(path))?.iter())?;
    let n = required(path, "n", column("n")?.u32().map_err(table_error(path))?.iter())?;
    let nulls = required(path, "nulls", column("nulls")?.u32().map_err(table_error(path))?.iter())?;
    let mean: Vec<Option<f64>> = column("mean")?.f64().map_err(table_error(path))?.iter().collect();
    let std: Vec<Option<f64>> = column("std")?.f64().map_err(table_error(path))?.iter().collect();
    let opt = |name: &str| -> Result<Vec<Option<f64>>> {
        Ok(column(name)?.f64().map_err(table_error(path))?.iter().collect())
    };
    let (med, ci_low, ci_high) = (opt("median")?, opt("ci_low")?, opt("ci_high")?);
    let label_kept_rate = required(
        path,
        "label_kept_rate",
        column("label_kept_rate")?.f64().map_err(table_error(path))?.iter(),
    )?;
    Ok((0..df.height())
        .map(|i| SummaryRow {
            model: model[i].to_string(),
            method: method[i].to_string(),
            attack: attack[i].to_string(),
            target_method: target_method[i].map(str::to_string),
            epsilon: epsilon[i],
            metric: metric[i].to_string(),
            n: n[i],
            nulls: nulls[i],
            mean: mean[i],
            std: std[i],
            median: med[i],
            ci_low: ci_low[i],
            ci_high: ci_high[i],
            label_kept_rate: label_kept_rate[i],
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Direction;
    use crate::report::table::SampleRow;

    fn row(method: &str, attack: &str, kept: bool, m: [Option<f64>; 2]) -> SampleRow {
        SampleRow {
            model: String::new(),
            image_id: 0,
            label: 1,
            predicted: 1,
            method: method.into(),
            attack: attack.into(),
            target_method: None,
            epsilon: 0.03,
            label_kept: kept,
            iterations: 1,
            linf: 0.03,
            confidence_before: 0.9,
            confidence_after: 0.7,
            metrics: m.to_vec(),
        }
    }

    /// Three groups per metric, interleaved so that first-appearance order is tested:
    /// gradient/top_k (5 rows), gradient/random_sign (1 row), smoothgrad/top_k (1 row, not kept).
    fn hand_table() -> SampleTable {
        SampleTable {
            model_metrics: Vec::new(),
            metric_columns: vec!["spearman".into(), "center_shift_px".into()],
            directions: vec![Direction::HigherIsMoreSimilar, Direction::LowerIsMoreSimilar],
            rows: vec![
                row("gradient", "top_k", true, [Some(0.5), None]),
                row("gradient", "random_sign", true, [Some(0.4), Some(2.0)]),
                row("gradient", "top_k", true, [Some(0.7), None]),
                row("smoothgrad", "top_k", false, [Some(0.2), Some(1.0)]),
                row("gradient", "top_k", true, [None, None]),
                row("gradient", "top_k", false, [Some(0.1), Some(3.0)]),
                row("gradient", "top_k", true, [Some(0.9), Some(f64::NAN)]),
            ],
            seed: 3,
            images: Default::default(),
            study: None,
        }
    }

    fn expect(
        (method, attack, metric): (&str, &str, &str),
        n: u32,
        nulls: u32,
        mean: Option<f64>,
        std: Option<f64>,
        label_kept_rate: f64,
    ) -> SummaryRow {
        SummaryRow {
            model: String::new(),
            method: method.into(),
            attack: attack.into(),
            target_method: None,
            epsilon: 0.03,
            metric: metric.into(),
            n,
            nulls,
            mean,
            std,
            median: None,
            ci_low: None,
            ci_high: None,
            label_kept_rate,
        }
    }

    fn assert_close(got: &[SummaryRow], want: &[SummaryRow]) {
        assert_eq!(got.len(), want.len(), "{got:#?}");
        let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-12,
            (a, b) => a == b,
        };
        for (g, w) in got.iter().zip(want) {
            let same_stats = close(g.mean, w.mean) && close(g.std, w.std);
            // The median and the interval are checked by their own tests.
            let strip = |r: &SummaryRow| SummaryRow {
                mean: None,
                std: None,
                median: None,
                ci_low: None,
                ci_high: None,
                ..r.clone()
            };
            let same_rest = strip(g) == strip(w);
            assert!(same_stats && same_rest, "got {g:#?}\nwant {w:#?}");
        }
    }

    #[test]
    fn summarize_matches_hand_computed_statistics() {
        // gradient/top_k has 5 rows, 4 of them label-kept (rows 0, 2, 4, 6): rate 4/5 = 0.8.
        //   spearman over kept rows: 0.5, 0.7, null, 0.9 (row 5's 0.1 is not kept)
        //     n = 3, nulls = 1, mean = 2.1 / 3 = 0.7,
        //     std = sqrt(((−0.2)² + 0² + 0.2²) / (3 − 1)) = sqrt(0.04) = 0.2.
        //   center_shift_px over kept rows: null, null, null, NaN (counts as null); row 5's 3.0
        //     is not kept: n = 0, nulls = 4, mean and std None.
        // gradient/random_sign: 1 kept row, spearman 0.4 and center 2.0: n = 1, mean = the
        //   value, std None (n < 2), rate 1.
        // smoothgrad/top_k: its only row lost the label: n = 0, nulls = 0, rate 0.
        // Order: first appearance, row by row, metrics in column order.
        let want = [
            expect(("gradient", "top_k", "spearman"), 3, 1, Some(0.7), Some(0.2), 0.8),
            expect(("gradient", "top_k", "center_shift_px"), 0, 4, None, None, 0.8),
            expect(("gradient", "random_sign", "spearman"), 1, 0, Some(0.4), None, 1.0),
            expect(("gradient", "random_sign", "center_shift_px"), 1, 0, Some(2.0), None, 1.0),
            expect(("smoothgrad", "top_k", "spearman"), 0, 0, None, None, 0.0),
            expect(("smoothgrad", "top_k", "center_shift_px"), 0, 0, None, None, 0.0),
        ];
        assert_close(&summarize(&hand_table()), &want);
    }

    #[test]
    fn summarize_separates_epsilons_and_never_yields_nan() {
        let mut table = hand_table();
        table.rows[2].epsilon = 0.06;
        let rows = summarize(&table);
        // Row 2 now forms its own gradient/top_k group at ε = 0.06, after row 1's groups.
        let keys: Vec<(&str, &str, f64)> =
            rows.iter().map(|r| (r.method.as_str(), r.attack.as_str(), r.epsilon)).collect();
        assert_eq!(keys[4], ("gradient", "top_k", 0.06));
        assert_eq!(rows[4].mean, Some(0.7));
        assert_eq!(rows.len(), 8);
        for r in &rows {
            let values = [r.mean, r.std, Some(r.label_kept_rate)];
            assert!(values.iter().flatten().all(|v| !v.is_nan()), "{r:?}");
        }
    }

    #[test]
    fn summarize_of_empty_table_is_empty() {
        let table = SampleTable { rows: vec![], ..hand_table() };
        assert!(summarize(&table).is_empty());
    }

    #[test]
    fn summary_round_trip_keeps_values_and_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.parquet");
        let rows = summarize(&hand_table());
        write_summary(&path, &rows, Some("00000000000000aa")).unwrap();
        assert_eq!(crate::report::table::read_study(&path).unwrap().as_deref(), Some("00000000000000aa"));
        assert_eq!(read_summary(&path).unwrap(), rows);
    }

    #[test]
    fn summary_file_has_the_documented_columns_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.parquet");
        write_summary(&path, &summarize(&hand_table()), None).unwrap();
        let df = ParquetReader::new(File::open(&path).unwrap()).finish().unwrap();
        let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, SUMMARY_COLUMNS);
    }

    #[test]
    fn failed_summary_write_leaves_no_file() {
        // The target is an existing folder: the rename fails after the bytes were written.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.parquet");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), b"x").unwrap();
        assert!(write_summary(&path, &summarize(&hand_table()), None).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(path.is_dir());
    }

    #[test]
    fn a_study_of_several_models_is_summarised_per_model_over_its_own_columns() {
        let table = crate::report::table::tests::two_model_table();
        let rows = summarize(&table);
        let keys: Vec<(&str, &str, &str)> =
            rows.iter().map(|r| (r.model.as_str(), r.attack.as_str(), r.metric.as_str())).collect();
        // Model a has both metrics; b only spearman: no row of b for center_shift_px.
        assert_eq!(
            keys,
            [
                ("a", "random_sign", "spearman"),
                ("a", "random_sign", "center_shift_px"),
                ("a", "top_k", "spearman"),
                ("a", "top_k", "center_shift_px"),
                ("b", "random_sign", "spearman"),
                ("b", "top_k", "spearman"),
            ]
        );
        // Each model's statistics are those of its rows alone.
        for model in ["a", "b"] {
            let alone = summarize(&table.of_model(model));
            let mine: Vec<SummaryRow> = rows
                .iter()
                .filter(|r| r.model == model)
                .map(|r| SummaryRow { model: String::new(), ..r.clone() })
                .collect();
            assert_eq!(mine, alone, "{model}");
        }
    }

    #[test]
    fn a_study_of_one_model_keeps_the_seeds_of_earlier_versions() {
        // The bootstrap seed of a group of one model hashes exactly what it always did, so a
        // study of one model keeps its intervals; a model's label changes them.
        let rows = summarize(&hand_table());
        let h = crate::seed::hash_str;
        let key = [h("gradient"), h("top_k"), h(""), 0.03f64.to_bits(), h("spearman")];
        let want = bootstrap_ci(&[0.5, 0.7, 0.9], crate::seed::derive(3, &key)).unwrap();
        assert_eq!((rows[0].ci_low, rows[0].ci_high), (Some(want.0), Some(want.1)));
        // Twenty spread values, so that another seed gives another interval.
        let mut labelled = hand_table();
        labelled.rows =
            (0..20).map(|i| row("gradient", "top_k", true, [Some(f64::from(i) / 20.0), None])).collect();
        let rows = summarize(&labelled);
        labelled.model_metrics = vec![("m".into(), labelled.metric_columns.clone())];
        labelled.rows.iter_mut().for_each(|r| r.model = "m".into());
        let other = summarize(&labelled);
        assert_eq!((other[0].model.as_str(), other[0].mean), ("m", rows[0].mean));
        assert_ne!((other[0].ci_low, other[0].ci_high), (rows[0].ci_low, rows[0].ci_high));
    }

    #[test]
    fn summary_of_several_models_round_trips_with_a_leading_model_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.parquet");
        let rows = summarize(&crate::report::table::tests::two_model_table());
        write_summary(&path, &rows, None).unwrap();
        let df = ParquetReader::new(File::open(&path).unwrap()).finish().unwrap();
        let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
        assert_eq!(names[0], MODEL_COLUMN);
        assert_eq!(names[1..], SUMMARY_COLUMNS);
        assert_eq!(read_summary(&path).unwrap(), rows);
    }

    #[test]
    fn median_by_hand() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[0.9, 0.5, 0.7]), Some(0.7));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5)); // (2 + 3) / 2
                                                              // The gradient/top_k spearman group of the hand table: kept values 0.5, 0.7, 0.9.
        let rows = summarize(&hand_table());
        assert_eq!(rows[0].median, Some(0.7));
    }

    #[test]
    fn bootstrap_interval_is_seeded_bracketing_and_of_the_right_width() {
        // Degenerate cases: no value, one value, identical values.
        assert_eq!(bootstrap_ci(&[], 1), None);
        assert_eq!(bootstrap_ci(&[0.25], 1), Some((0.25, 0.25)));
        assert_eq!(bootstrap_ci(&[2.0; 9], 1), Some((2.0, 2.0)));
        // 400 values spread evenly over [0, 1): σ ≈ 1/√12, so the 95% interval of the mean
        // is about ±1.96·σ/√400 = ±0.0283 around 0.49875.
        let v: Vec<f64> = (0..400).map(|i| i as f64 / 400.0).collect();
        let (lo, hi) = bootstrap_ci(&v, 7).unwrap();
        let m = v.iter().sum::<f64>() / 400.0;
        assert!(lo < m && m < hi, "({lo}, {hi}) vs {m}");
        let half = 1.96 * (1.0f64 / 12.0).sqrt() / 20.0;
        assert!(((hi - lo) / 2.0 - half).abs() < 0.15 * half, "half-width {} vs {half}", (hi - lo) / 2.0);
        assert_eq!(bootstrap_ci(&v, 7), Some((lo, hi)), "same seed, same interval");
        assert_ne!(bootstrap_ci(&v, 8), Some((lo, hi)), "another seed, another interval");
        // In the summary: inside [min, max] of the group, reproducible, and keyed by the seed.
        let rows = summarize(&hand_table());
        let (lo, hi) = (rows[0].ci_low.unwrap(), rows[0].ci_high.unwrap());
        assert!((0.5..=0.9).contains(&lo) && (0.5..=0.9).contains(&hi) && lo <= hi, "({lo}, {hi})");
        assert_eq!(summarize(&hand_table()), rows);
        assert_eq!(rows[1].ci_low, None, "n = 0 has no interval");
    }
}

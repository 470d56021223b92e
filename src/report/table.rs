//! The per-sample table, `samples.parquet`: one row per image × method × attack × ε.
//!
//! This is the run's primary output; the summary and the plots are derived from it, so it keeps
//! every measured value (including the rows whose attack lost the label, flagged by
//! `label_kept`) and can be re-analysed without re-running anything.
//!
//! Columns, in this order:
//!
//! | column              | type        | meaning                                                   |
//! |---------------------|-------------|-----------------------------------------------------------|
//! | `model`             | str         | the model's `label`: only in a study of several models (`[[model]]` tables) |
//! | `image_id`          | u32         | the image's position: in the npy/idx file, or in the folder's order (docs/commands.md) |
//! | `source`            | str         | the image's file: its path relative to the images folder, or `name[i]` in an npy/idx file |
//! | `image_hash`        | str         | content hash of the image's pixels as studied (after resize, crop, channels), 16 hex digits |
//! | `label`             | i64         | the true class                                            |
//! | `predicted`         | i64         | the class predicted on the clean image (the attack target)|
//! | `method`            | str         | attribution method, e.g. `gradient`                       |
//! | `attack`            | str         | attack, e.g. `random_sign`, `top_k`                       |
//! | `target_method`     | str, null   | the method a steered attack steered; null for the random baselines |
//! | `epsilon`           | f64         | L∞ budget, on the [0, 1] pixel scale                      |
//! | `label_kept`        | bool        | whether the perturbed image keeps the predicted class     |
//! | `iterations`        | u32         | iterations the attack ran on the row, over all starts (draws, for `random_sign`) |
//! | `linf`              | f64         | ‖x′ − x‖∞ actually used, same scale as `epsilon`          |
//! | `confidence_before` | f64         | softmax probability of `predicted` on the clean image     |
//! | `confidence_after`  | f64         | the same on the perturbed image                           |
//! | one per metric      | f64, null   | the metric's value, named by the metric (units in the name, e.g. `center_shift_px`); null where it is undefined |
//! | `<measure>_before`, `<measure>_after` | f64, null | each steered attack's objective measure (e.g. `region_mass`) on the clean and the perturbed map |
//!
//! Whether a higher metric value means more similar maps is stored in the file's key-value
//! metadata (key `fragility.direction.<metric>`, value `higher_is_more_similar` or
//! `lower_is_more_similar`), and so is the run's seed (`fragility.seed`), so that a later
//! `fragility report` can rebuild the summary from the file alone, and the study's fingerprint
//! (`fragility.study`, the `fingerprint` of its `run.json`), so that a table and a record of
//! different studies are never read together (see [`super::images`]).
//! Tables written before images were traced have no `source` and `image_hash` columns; they
//! are still read (with no traces).
//!
//! A study of several models writes one table for all of them, with the `model` column first.
//! Models may see the images at different sizes, so a metric whose k scales with the image
//! (`top_k_<k>`) can be one model's column and not another's: the metadata key
//! `fragility.model_metrics` records each model's metric columns (a JSON list of
//! `[label, [names]]` pairs), and a row holds null in the columns of the other models. In such a study an image's
//! `image_hash` covers its pixels as every model studied them ([`super::images`]).
//! The file is Zstandard-compressed and written atomically.

use super::images::{traces_from_columns, ImageTraces};
use crate::atomic;
use crate::error::{Error, Result};
use crate::metric::Direction;
use polars::prelude::{Column, DataFrame, ParquetReader, PolarsError, SerReader};
use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

/// The fixed columns of `samples.parquet`, in file order; the metric columns follow them.
pub const FIXED_COLUMNS: [&str; 12] = [
    "image_id",
    "label",
    "predicted",
    "method",
    "attack",
    "target_method",
    "epsilon",
    "label_kept",
    "iterations",
    "linf",
    "confidence_before",
    "confidence_after",
];

/// Key-value metadata key of the run's seed.
const SEED_KEY: &str = "fragility.seed";

/// Key-value metadata key of the study's fingerprint id (also in its `run.json`).
pub(crate) const STUDY_KEY: &str = "fragility.study";

/// Key-value metadata key of each model's metric columns in a study of several models.
const MODEL_METRICS_KEY: &str = "fragility.model_metrics";

/// The optional first column of a study of several models.
pub const MODEL_COLUMN: &str = "model";

/// The trace columns, right after `image_id` (absent from tables of older versions).
pub const TRACE_COLUMNS: [&str; 2] = ["source", "image_hash"];

/// Key-value metadata key of the content hash of the file's data pages (everything before
/// the footer), checked before any page is decoded: polars 0.55 aborts the process (an
/// allocation of exabytes) or panics on some corrupt pages instead of returning an error, so
/// a damaged table must be caught before it reaches the decoder.
const PAGES_HASH_KEY: &str = "fragility.pages_hash";

/// Prefix of the key-value metadata keys that record each metric's direction.
const DIRECTION_KEY_PREFIX: &str = "fragility.direction.";

/// One row of `samples.parquet`: one (model ×) image × method × attack × ε.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    /// The model's label in a study of several models; empty in a study of one model (whose
    /// table has no `model` column).
    pub model: String,
    /// Index of the image in the input file.
    pub image_id: u32,
    /// The true label.
    pub label: i64,
    /// The class predicted on the clean image (the class the attack must keep).
    pub predicted: i64,
    /// The attribution method, e.g. `"gradient"`.
    pub method: String,
    /// The attack, e.g. `"random_sign"`, `"top_k"`.
    pub attack: String,
    /// The method a steered attack steered (`None` for the random baselines).
    pub target_method: Option<String>,
    /// The L∞ budget on the [0, 1] pixel scale.
    pub epsilon: f64,
    /// Whether the perturbed image is still classified as `predicted`.
    pub label_kept: bool,
    /// Iterations the attack ran on the row, over all starts (draws, for `random_sign`).
    pub iterations: u32,
    /// ‖x′ − x‖∞ actually used, on the same scale as `epsilon`.
    pub linf: f64,
    /// Softmax probability of `predicted` on the clean image.
    pub confidence_before: f64,
    /// Softmax probability of `predicted` on the perturbed image.
    pub confidence_after: f64,
    /// One value per metric, in the order of [`SampleTable::metric_columns`]; `None` where the
    /// metric is undefined for this pair of maps.
    pub metrics: Vec<Option<f64>>,
}

/// The whole per-sample table: the metric columns' names and directions, and the rows.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleTable {
    /// The metric columns' names, in file order (e.g. `"spearman"`, `"center_shift_px"`).
    pub metric_columns: Vec<String>,
    /// For each metric column, whether a higher value means more similar maps.
    pub directions: Vec<Direction>,
    /// The rows.
    pub rows: Vec<SampleRow>,
    /// The run's seed (stored in the file's metadata as `fragility.seed`); the summary's
    /// bootstrap draws from it.
    pub seed: u64,
    /// Each image's source and content hash, by image id (the `source` and `image_hash`
    /// columns); empty for a table of an older version, which has no such columns.
    pub images: ImageTraces,
    /// The fingerprint id of the study that wrote the table (metadata `fragility.study`);
    /// `None` for an older table.
    pub study: Option<String>,
    /// In a study of several models, each model's metric columns (label → names, in the order
    /// of [`SampleTable::metric_columns`]), in the models' order; empty for one model, whose
    /// rows have every column.
    pub model_metrics: Vec<(String, Vec<String>)>,
}

impl SampleTable {
    /// Checks that the table is well formed: one direction per metric column, metric names
    /// unique and distinct from the fixed columns, and one metric value per column in every row.
    pub fn validate(&self) -> Result<()> {
        if self.directions.len() != self.metric_columns.len() {
            return Err(Error::Invalid(format!(
                "sample table has {} metric columns but {} directions",
                self.metric_columns.len(),
                self.directions.len()
            )));
        }
        for (i, name) in self.metric_columns.iter().enumerate() {
            if FIXED_COLUMNS.contains(&name.as_str()) {
                return Err(Error::Invalid(format!(
                    "metric column {name:?} has the name of a fixed column of the sample table"
                )));
            }
            if self.metric_columns[..i].contains(name) {
                return Err(Error::Invalid(format!(
                    "metric column {name:?} appears twice in the sample table"
                )));
            }
        }
        self.validate_models()?;
        if let Some((i, row)) = first_duplicate(&self.rows) {
            return Err(Error::Invalid(format!("sample row {i} repeats {row}")));
        }
        for (i, row) in self.rows.iter().enumerate() {
            if !self.images.is_empty() && !self.images.contains_key(&row.image_id) {
                return Err(Error::Invalid(format!("sample row {i}: image {} has no source", row.image_id)));
            }
            if row.metrics.len() != self.metric_columns.len() {
                return Err(Error::Invalid(format!(
                    "sample row {i} has {} metric values, expected {} ({:?})",
                    row.metrics.len(),
                    self.metric_columns.len(),
                    self.metric_columns
                )));
            }
        }
        Ok(())
    }
}

impl SampleTable {
    /// The models of a study of several models, in their order (empty for one model).
    pub fn models(&self) -> Vec<&str> {
        self.model_metrics.iter().map(|(m, _)| m.as_str()).collect()
    }

    /// Whether metric column `column` (an index into [`SampleTable::metric_columns`]) is one
    /// of `model`'s (always, in a study of one model).
    pub fn has_metric(&self, model: &str, column: usize) -> bool {
        match self.model_metrics.iter().find(|(m, _)| m == model) {
            Some((_, names)) => self.metric_columns.get(column).is_some_and(|c| names.contains(c)),
            None => self.model_metrics.is_empty(),
        }
    }

    /// The rows of `model` alone, as the table of a study of that one model (its metric
    /// columns only, no `model` column); the whole table for an empty `model` in a study of
    /// one model.
    pub fn of_model(&self, model: &str) -> SampleTable {
        let keep: Vec<usize> =
            (0..self.metric_columns.len()).filter(|&j| self.has_metric(model, j)).collect();
        SampleTable {
            metric_columns: keep.iter().map(|&j| self.metric_columns[j].clone()).collect(),
            directions: keep.iter().map(|&j| self.directions[j]).collect(),
            rows: self
                .rows
                .iter()
                .filter(|r| r.model == model)
                .map(|r| SampleRow {
                    model: String::new(),
                    metrics: keep.iter().map(|&j| r.metrics.get(j).copied().flatten()).collect(),
                    ..r.clone()
                })
                .collect(),
            seed: self.seed,
            images: self.images.clone(),
            study: self.study.clone(),
            model_metrics: Vec::new(),
        }
    }

    /// A table of one model has no model labels; one of several has each row's label among
    /// [`SampleTable::model_metrics`], whose columns are the table's, and no value in another
    /// model's column.
    fn validate_models(&self) -> Result<()> {
        for (i, (m, names)) in self.model_metrics.iter().enumerate() {
            if m.is_empty() || self.model_metrics[..i].iter().any(|(o, _)| o == m) {
                return Err(Error::Invalid(format!("model label {m:?} is empty or listed twice")));
            }
            if let Some(c) = names.iter().find(|c| !self.metric_columns.contains(c)) {
                return Err(Error::Invalid(format!("model {m:?}: metric column {c:?} is not in the table")));
            }
        }
        for (i, row) in self.rows.iter().enumerate() {
            if self.model_metrics.is_empty() != row.model.is_empty()
                || (!row.model.is_empty() && !self.models().contains(&row.model.as_str()))
            {
                return Err(Error::Invalid(format!(
                    "sample row {i}: model {:?} is not one of the table's models {:?}",
                    row.model,
                    self.models()
                )));
            }
            let foreign =
                (0..row.metrics.len()).find(|&j| row.metrics[j].is_some() && !self.has_metric(&row.model, j));
            if let Some(j) = foreign {
                return Err(Error::Invalid(format!(
                    "sample row {i}: model {:?} has a value in {:?}, which is not one of its metrics",
                    row.model, self.metric_columns[j]
                )));
            }
        }
        Ok(())
    }
}

/// What identifies a row: model × image × method × attack × target method × ε (−0 as 0).
type RowKey<'a> = (&'a str, u32, &'a str, &'a str, Option<&'a str>, u64);

fn row_key(r: &SampleRow) -> RowKey<'_> {
    let eps = if r.epsilon == 0.0 { 0.0f64 } else { r.epsilon };
    (&r.model, r.image_id, &r.method, &r.attack, r.target_method.as_deref(), eps.to_bits())
}

/// A row's identity in words, for errors.
fn describe(r: &SampleRow) -> String {
    let model = if r.model.is_empty() { String::new() } else { format!("model {} / ", r.model) };
    format!(
        "{model}image {} / {} / {} / ε {}",
        r.image_id,
        r.method,
        super::summary::attack_label(&r.attack, r.target_method.as_deref()),
        r.epsilon
    )
}

/// The first row of `rows` that repeats an earlier one's image × method × attack × ε (a
/// duplicated row would count twice in every mean): its index and the row in words.
pub fn first_duplicate(rows: &[SampleRow]) -> Option<(usize, String)> {
    let mut seen = HashSet::new();
    rows.iter().enumerate().find(|(_, r)| !seen.insert(row_key(r))).map(|(i, r)| (i, describe(r)))
}

/// The metadata value that records `direction`.
fn direction_tag(direction: Direction) -> &'static str {
    match direction {
        Direction::HigherIsMoreSimilar => "higher_is_more_similar",
        Direction::LowerIsMoreSimilar => "lower_is_more_similar",
    }
}

/// The inverse of [`direction_tag`].
fn parse_direction(tag: &str) -> Option<Direction> {
    match tag {
        "higher_is_more_similar" => Some(Direction::HigherIsMoreSimilar),
        "lower_is_more_similar" => Some(Direction::LowerIsMoreSimilar),
        _ => None,
    }
}

/// Wraps a polars error with the table's path.
pub(super) fn table_error(path: &Path) -> impl Fn(PolarsError) -> Error + '_ {
    move |source| Error::Table { path: path.to_path_buf(), source }
}

/// Builds the DataFrame of `table` (columns as in the module docs).
fn samples_frame(table: &SampleTable) -> std::result::Result<DataFrame, PolarsError> {
    let rows = &table.rows;
    fn col<'a, T, F: Fn(&'a SampleRow) -> T>(rows: &'a [SampleRow], f: F) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    let mut columns = Vec::new();
    if !table.model_metrics.is_empty() {
        columns.push(Column::new(MODEL_COLUMN.into(), col(rows, |r| r.model.as_str())));
    }
    columns.push(Column::new("image_id".into(), col(rows, |r| r.image_id)));
    if !table.images.is_empty() {
        // `validate` has checked that every row's image has a trace.
        let trace = |r: &SampleRow| table.images.get(&r.image_id);
        columns.push(Column::new("source".into(), col(rows, |r| trace(r).map(|t| t.source.as_str()))));
        columns.push(Column::new("image_hash".into(), col(rows, |r| trace(r).map(|t| t.hash.as_str()))));
    }
    columns.extend([
        Column::new("label".into(), col(rows, |r| r.label)),
        Column::new("predicted".into(), col(rows, |r| r.predicted)),
        Column::new("method".into(), col(rows, |r| r.method.as_str())),
        Column::new("attack".into(), col(rows, |r| r.attack.as_str())),
        Column::new("target_method".into(), col(rows, |r| r.target_method.as_deref())),
        Column::new("epsilon".into(), col(rows, |r| r.epsilon)),
        Column::new("label_kept".into(), col(rows, |r| r.label_kept)),
        Column::new("iterations".into(), col(rows, |r| r.iterations)),
        Column::new("linf".into(), col(rows, |r| r.linf)),
        Column::new("confidence_before".into(), col(rows, |r| r.confidence_before)),
        Column::new("confidence_after".into(), col(rows, |r| r.confidence_after)),
    ]);
    for (j, name) in table.metric_columns.iter().enumerate() {
        // `validate` has checked every row's length, so `get` only guards against misuse.
        let values: Vec<Option<f64>> = rows.iter().map(|r| r.metrics.get(j).copied().flatten()).collect();
        columns.push(Column::new(name.as_str().into(), values));
    }
    DataFrame::new(rows.len(), columns)
}

/// Writes `table` to `path` as Parquet (Zstandard), atomically.
pub fn write_samples(path: &Path, table: &SampleTable) -> Result<()> {
    table.validate()?;
    let mut df = samples_frame(table).map_err(table_error(path))?;
    let mut directions: Vec<(String, String)> = table
        .metric_columns
        .iter()
        .zip(&table.directions)
        .map(|(name, d)| (format!("{DIRECTION_KEY_PREFIX}{name}"), direction_tag(*d).to_string()))
        .collect();
    directions.push((SEED_KEY.to_string(), table.seed.to_string()));
    if let Some(study) = &table.study {
        directions.push((STUDY_KEY.to_string(), study.clone()));
    }
    if !table.model_metrics.is_empty() {
        let by_model = serde_json::json!(table.model_metrics);
        directions.push((MODEL_METRICS_KEY.to_string(), by_model.to_string()));
    }
    let encode = |kv: Vec<(String, String)>, df: &mut DataFrame| super::parquet::encode_table(path, df, kv);
    // The writer is deterministic and the metadata sits in the footer, after the pages: so
    // the pages of a second encoding with their hash in the metadata are the pages hashed.
    let first = encode(directions.clone(), &mut df)?;
    let hash =
        pages_hash(&first).ok_or_else(|| Error::Invalid("the Parquet writer wrote no footer".into()))?;
    directions.push((PAGES_HASH_KEY.to_string(), format!("{hash:016x}")));
    let bytes = encode(directions, &mut df)?;
    if pages_hash(&bytes) != Some(hash) {
        return Err(Error::Invalid(
            "the Parquet writer is not deterministic; cannot checksum the table".into(),
        ));
    }
    atomic::write_bytes(path, &bytes)
}

/// The content hash of a Parquet file's data pages: the bytes before its footer (`None` if
/// the file does not end in a footer length and `PAR1`).
fn pages_hash(bytes: &[u8]) -> Option<u64> {
    let n = bytes.len();
    if n < 12 || &bytes[n - 4..] != b"PAR1" {
        return None;
    }
    let footer = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().ok()?) as usize;
    let end = n.checked_sub(8)?.checked_sub(footer)?;
    let mut h = crate::fingerprint::ContentHash::default();
    h.update(&bytes[..end]);
    Some(h.finish())
}

/// Checks the data pages of the table at `path` against the hash its metadata records (`want`;
/// a file without one, written before the hash was recorded, is trusted as it is).
fn verify_pages(path: &Path, want: Option<String>) -> Result<()> {
    let Some(want) = want else {
        return Ok(());
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    match pages_hash(&bytes) {
        Some(h) if format!("{h:016x}") == want => Ok(()),
        _ => Err(Error::data(path, "corrupt table: its data pages do not match their recorded hash")),
    }
}

/// Collects a column that may hold no null (a null means a malformed file).
pub(super) fn required<T, I>(path: &Path, name: &str, values: I) -> Result<Vec<T>>
where
    I: IntoIterator<Item = Option<T>>,
{
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| Error::data(path, format!("column {name:?}: null in row {i}"))))
        .collect()
}

/// The metric columns of a `samples.parquet` and their directions, from its metadata alone
/// (the rows are not read).
pub fn read_directions(path: &Path) -> Result<Vec<(String, Direction)>> {
    guarded(path, || read_directions_unchecked(path))
}

fn read_directions_unchecked(path: &Path) -> Result<Vec<(String, Direction)>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = ParquetReader::new(file);
    let meta = reader.get_metadata().map_err(table_error(path))?.clone();
    let kv = meta.key_value_metadata().clone().unwrap_or_default();
    Ok(kv
        .iter()
        .filter_map(|e| {
            let name = e.key.strip_prefix(DIRECTION_KEY_PREFIX)?;
            Some((name.to_string(), parse_direction(e.value.as_deref()?)?))
        })
        .collect())
}

/// The study fingerprint id a table of ours (samples or summary) records in its metadata
/// (`None`: a table of an older version); the rows are not read.
pub fn read_study(path: &Path) -> Result<Option<String>> {
    guarded(path, || {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut reader = ParquetReader::new(file);
        let meta = reader.get_metadata().map_err(table_error(path))?.clone();
        let kv = meta.key_value_metadata().clone().unwrap_or_default();
        Ok(kv.iter().find(|e| e.key == STUDY_KEY).and_then(|e| e.value.clone()))
    })
}

/// Reads a table written by [`write_samples`].
///
/// Fails with [`Error::Data`] (bad input, exit 2) if the file is not Parquet or is truncated,
/// a column has the wrong type, the fixed columns are missing or out of order, hold a null, or
/// a metric column has no recorded direction.
pub fn read_samples(path: &Path) -> Result<SampleTable> {
    guarded(path, || read_samples_unchecked(path))
}

/// Runs a Parquet read of `path`: polars' errors become bad input ([`unreadable`]), and so
/// does a panic of its decoder on a corrupt page (polars 0.55 asserts on some malformed
/// encodings instead of returning an error; the fuzz tests found them).
pub(super) fn guarded<T>(path: &Path, read: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
        .unwrap_or_else(|_| Err(Error::data(path, "corrupt Parquet table: the decoder failed on it")))
        .map_err(unreadable)
}

/// A Parquet error while reading a table is bad input (a truncated or foreign file), exit 2:
/// [`Error::Table`] stays for failures while writing.
pub(super) fn unreadable(e: Error) -> Error {
    match e {
        Error::Table { path, source } => Error::data(path, format!("not a readable table: {source}")),
        e => e,
    }
}

fn read_samples_unchecked(path: &Path) -> Result<SampleTable> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = ParquetReader::new(file);
    let metadata =
        reader.get_metadata().map_err(table_error(path))?.key_value_metadata().clone().unwrap_or_default();
    verify_pages(path, metadata.iter().find(|kv| kv.key == PAGES_HASH_KEY).and_then(|kv| kv.value.clone()))?;
    let df = reader.finish().map_err(table_error(path))?;

    let mut names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
    // A study of several models leads with the `model` column.
    let several = names.first().is_some_and(|n| n == MODEL_COLUMN);
    if several {
        names.remove(0);
    }
    // The trace columns, where present, follow `image_id`; the rest is laid out as before.
    let traced = names.get(1..3).is_some_and(|t| t == TRACE_COLUMNS);
    if traced {
        names.drain(1..3);
    }
    for (i, want) in FIXED_COLUMNS.iter().enumerate() {
        match names.get(i) {
            Some(got) if got == want => {}
            got => {
                return Err(Error::data(
                    path,
                    format!("column {i} is {got:?}, expected {want:?} (columns: {names:?})"),
                ))
            }
        }
    }
    let metric_columns = names[FIXED_COLUMNS.len()..].to_vec();
    let directions = metric_columns
        .iter()
        .map(|name| {
            let key = format!("{DIRECTION_KEY_PREFIX}{name}");
            let tag = metadata.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_deref());
            tag.and_then(parse_direction).ok_or_else(|| {
                Error::data(
                    path,
                    format!("metric column {name:?}: metadata {key:?} is {tag:?}, expected a direction"),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;

    let column = |name: &str| df.column(name).map_err(table_error(path));
    let image_id = required(path, "image_id", column("image_id")?.u32().map_err(table_error(path))?.iter())?;
    let images = if traced {
        let source = required(path, "source", column("source")?.str().map_err(table_error(path))?.iter())?;
        let hash =
            required(path, "image_hash", column("image_hash")?.str().map_err(table_error(path))?.iter())?;
        traces_from_columns(path, &image_id, &source, &hash)?
    } else {
        ImageTraces::new()
    };
    let label = required(path, "label", column("label")?.i64().map_err(table_error(path))?.iter())?;
    let predicted =
        required(path, "predicted", column("predicted")?.i64().map_err(table_error(path))?.iter())?;
    let method = required(path, "method", column("method")?.str().map_err(table_error(path))?.iter())?;
    let attack = required(path, "attack", column("attack")?.str().map_err(table_error(path))?.iter())?;
    let target_method: Vec<Option<&str>> =
        column("target_method")?.str().map_err(table_error(path))?.iter().collect();
    let epsilon = required(path, "epsilon", column("epsilon")?.f64().map_err(table_error(path))?.iter())?;
    let label_kept =
        required(path, "label_kept", column("label_kept")?.bool().map_err(table_error(path))?.iter())?;
    let iterations =
        required(path, "iterations", column("iterations")?.u32().map_err(table_error(path))?.iter())?;
    let linf = required(path, "linf", column("linf")?.f64().map_err(table_error(path))?.iter())?;
    let confidence_before = required(
        path,
        "confidence_before",
        column("confidence_before")?.f64().map_err(table_error(path))?.iter(),
    )?;
    let confidence_after = required(
        path,
        "confidence_after",
        column("confidence_after")?.f64().map_err(table_error(path))?.iter(),
    )?;
    let metric_values = metric_columns
        .iter()
        .map(|name| {
            let values: Vec<Option<f64>> = column(name)?.f64().map_err(table_error(path))?.iter().collect();
            Ok(values)
        })
        .collect::<Result<Vec<_>>>()?;

    let model: Vec<&str> = if several {
        required(path, MODEL_COLUMN, column(MODEL_COLUMN)?.str().map_err(table_error(path))?.iter())?
    } else {
        vec![""; df.height()]
    };
    let rows = (0..df.height())
        .map(|i| SampleRow {
            model: model[i].to_string(),
            image_id: image_id[i],
            label: label[i],
            predicted: predicted[i],
            method: method[i].to_string(),
            attack: attack[i].to_string(),
            target_method: target_method[i].map(str::to_string),
            epsilon: epsilon[i],
            label_kept: label_kept[i],
            iterations: iterations[i],
            linf: linf[i],
            confidence_before: confidence_before[i],
            confidence_after: confidence_after[i],
            metrics: metric_values.iter().map(|column| column[i]).collect(),
        })
        .collect();
    // Files written before the seed was recorded read as seed 0.
    let seed = match metadata.iter().find(|kv| kv.key == SEED_KEY).and_then(|kv| kv.value.as_deref()) {
        Some(v) => {
            v.parse().map_err(|_| Error::data(path, format!("metadata {SEED_KEY:?} is {v:?}, not a u64")))?
        }
        None => 0,
    };
    let study = metadata.iter().find(|kv| kv.key == STUDY_KEY).and_then(|kv| kv.value.clone());
    let model_metrics = if several {
        let text = metadata.iter().find(|kv| kv.key == MODEL_METRICS_KEY).and_then(|kv| kv.value.as_deref());
        parse_model_metrics(text).ok_or_else(|| {
            Error::data(path, format!("a `model` column, but metadata {MODEL_METRICS_KEY:?} is {text:?}"))
        })?
    } else {
        Vec::new()
    };
    let table = SampleTable { metric_columns, directions, rows, seed, images, study, model_metrics };
    table.validate_models().map_err(|e| Error::data(path, e.to_string()))?;
    Ok(table)
}

/// The models' metric columns as [`write_samples`] records them (a JSON list of
/// `[label, [columns]]` pairs, in the models' order); `None` if `text` is not that.
fn parse_model_metrics(text: Option<&str>) -> Option<Vec<(String, Vec<String>)>> {
    let models: Vec<(String, Vec<String>)> = serde_json::from_str(text?).ok()?;
    (!models.is_empty()).then_some(models)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::images::ImageTrace;
    use super::*;

    /// A small table with two metrics of opposite directions and some nulls.
    pub(crate) fn example_table() -> SampleTable {
        let row = |image_id: u32, attack: &str, epsilon: f64, kept: bool, m: [Option<f64>; 2]| SampleRow {
            model: String::new(),
            image_id,
            label: 3,
            predicted: 3,
            method: "gradient".into(),
            attack: attack.into(),
            target_method: (attack == "top_k").then(|| "gradient".to_string()),
            epsilon,
            label_kept: kept,
            iterations: 7,
            linf: epsilon * 0.5,
            confidence_before: 0.9,
            confidence_after: 0.8,
            metrics: m.to_vec(),
        };
        SampleTable {
            model_metrics: Vec::new(),
            metric_columns: vec!["spearman".into(), "center_shift_px".into()],
            directions: vec![Direction::HigherIsMoreSimilar, Direction::LowerIsMoreSimilar],
            rows: vec![
                row(0, "random_sign", 0.01, true, [Some(0.9), Some(1.5)]),
                row(1, "top_k", 8.0 / 255.0, false, [None, Some(0.0)]),
                row(2, "top_k", 8.0 / 255.0, true, [None, None]),
            ],
            seed: 42,
            images: (0..3)
                .map(|i| (i, ImageTrace { source: format!("f.npy[{i}]"), hash: format!("{:016x}", 100 + i) }))
                .collect(),
            study: Some("0123456789abcdef".into()),
        }
    }

    /// [`example_table`] as a study of two models, `a` with both metrics and `b` with
    /// `spearman` only (as models at two image sizes have different top-k columns).
    pub(crate) fn two_model_table() -> SampleTable {
        let one = example_table();
        let mut rows = Vec::new();
        for m in ["a", "b"] {
            for r in &one.rows {
                let metrics = if m == "a" { r.metrics.clone() } else { vec![r.metrics[0], None] };
                rows.push(SampleRow { model: m.into(), metrics, ..r.clone() });
            }
        }
        SampleTable {
            rows,
            model_metrics: vec![
                ("a".into(), vec!["spearman".into(), "center_shift_px".into()]),
                ("b".into(), vec!["spearman".into()]),
            ],
            ..one
        }
    }

    #[test]
    fn a_table_of_several_models_reads_back_with_each_models_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.parquet");
        let table = two_model_table();
        write_samples(&path, &table).unwrap();
        let df = ParquetReader::new(File::open(&path).unwrap()).finish().unwrap();
        assert_eq!(df.get_column_names()[0].as_str(), MODEL_COLUMN);
        let back = read_samples(&path).unwrap();
        assert_eq!(back, table);
        assert_eq!(back.models(), ["a", "b"]);
        assert!(back.has_metric("a", 1) && !back.has_metric("b", 1) && back.has_metric("b", 0));
        // One model's rows are the table of a study of that model alone.
        let b = back.of_model("b");
        assert_eq!(b.metric_columns, ["spearman"]);
        assert_eq!(b.rows.len(), 3);
        assert!(b.rows.iter().all(|r| r.model.is_empty() && r.metrics.len() == 1));
        // The same image under two models is two rows, not a repeat; under one model it is.
        let mut bad = table.clone();
        bad.rows[3].metrics[1] = Some(1.0);
        let err = write_samples(&path, &bad).unwrap_err().to_string();
        assert!(err.contains("\"b\" has a value in \"center_shift_px\""), "{err}");
        let mut bad = table.clone();
        bad.rows[0].model = "c".into();
        assert!(write_samples(&path, &bad)
            .unwrap_err()
            .to_string()
            .contains("not one of the table's models"));
        let mut bad = table;
        bad.rows[4].model = "a".into();
        bad.rows[4].metrics = bad.rows[1].metrics.clone();
        let err = write_samples(&path, &bad).unwrap_err().to_string();
        assert!(err.contains("repeats model a / image 1"), "{err}");
    }

    #[test]
    fn tables_of_older_versions_without_traces_or_study_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.parquet");
        let table = SampleTable { images: ImageTraces::new(), study: None, ..example_table() };
        write_samples(&path, &table).unwrap();
        let df = ParquetReader::new(File::open(&path).unwrap()).finish().unwrap();
        assert!(df.column("source").is_err());
        assert_eq!(read_samples(&path).unwrap(), table);
        assert_eq!(read_study(&path).unwrap(), None);
    }

    #[test]
    fn a_row_repeated_or_without_a_trace_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.parquet");
        let mut table = example_table();
        table.rows.push(table.rows[1].clone());
        let err = write_samples(&path, &table).unwrap_err();
        assert!(
            err.to_string().contains("sample row 3 repeats image 1 / gradient / top_k → gradient"),
            "{err}"
        );
        assert_eq!(
            first_duplicate(&table.rows),
            Some((3, "image 1 / gradient / top_k → gradient / ε 0.03137254901960784".to_string()))
        );
        let mut table = example_table();
        table.images.remove(&2);
        assert!(write_samples(&path, &table).unwrap_err().to_string().contains("image 2 has no source"));
        assert!(!path.exists());
    }

    #[test]
    fn corrupt_pages_are_refused_before_the_decoder_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.parquet");
        write_samples(&p, &example_table()).unwrap();
        let good = std::fs::read(&p).unwrap();
        assert_eq!(read_samples(&p).unwrap(), example_table());
        // Two bytes in the first column's page headers: the change the fuzz test found to make
        // polars 0.55 abort on an allocation of 2^61 bytes.
        let mut bad = good.clone();
        bad[31] ^= 0x7f;
        bad[54] ^= 0x80;
        std::fs::write(&p, &bad).unwrap();
        let err = read_samples(&p).unwrap_err();
        assert!(err.to_string().contains("do not match their recorded hash"), "{err}");
        assert_eq!(err.exit_code(), 2);
        assert_ne!(pages_hash(&good), pages_hash(&bad));
    }

    #[test]
    fn samples_round_trip_keeps_values_nulls_and_directions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.parquet");
        let table = example_table();
        write_samples(&path, &table).unwrap();
        assert_eq!(read_samples(&path).unwrap(), table);
    }

    #[test]
    fn samples_round_trip_of_an_empty_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.parquet");
        // The traces are those of the rows' images: none.
        let table = SampleTable { rows: vec![], images: ImageTraces::new(), ..example_table() };
        write_samples(&path, &table).unwrap();
        assert_eq!(read_samples(&path).unwrap(), table);
    }

    #[test]
    fn samples_file_has_the_documented_columns_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.parquet");
        write_samples(&path, &example_table()).unwrap();
        let df = ParquetReader::new(File::open(&path).unwrap()).finish().unwrap();
        let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
        let mut want: Vec<String> = FIXED_COLUMNS.iter().map(|s| s.to_string()).collect();
        want.splice(1..1, TRACE_COLUMNS.iter().map(|s| s.to_string()));
        want.extend(["spearman".to_string(), "center_shift_px".to_string()]);
        assert_eq!(names, want);
    }

    #[test]
    fn samples_file_is_zstd_compressed() {
        // Guards the claim in the module docs: our polars build (features = ["parquet"]) does
        // include the Zstandard codec.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.parquet");
        write_samples(&path, &example_table()).unwrap();
        let mut reader = ParquetReader::new(File::open(&path).unwrap());
        let metadata = reader.get_metadata().unwrap();
        let codecs: Vec<String> = metadata
            .row_groups
            .iter()
            .flat_map(|g| g.parquet_columns().iter().map(|c| format!("{:?}", c.compression())))
            .collect();
        assert_eq!(codecs.len(), FIXED_COLUMNS.len() + TRACE_COLUMNS.len() + 2);
        assert!(codecs.iter().all(|c| c == "Zstd"), "{codecs:?}");
    }

    #[test]
    fn row_with_wrong_metric_count_is_rejected_and_no_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.parquet");
        let mut table = example_table();
        table.rows[1].metrics.pop();
        let err = write_samples(&path, &table).unwrap_err();
        assert!(err.to_string().contains("sample row 1 has 1 metric values"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn failed_write_leaves_no_file() {
        // The target is an existing folder, so the final rename fails after the Parquet bytes
        // were written to the temporary file: neither a file nor the temporary may remain.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.parquet");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), b"x").unwrap();
        assert!(write_samples(&path, &example_table()).is_err());
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "only the folder itself remains");
        assert!(path.is_dir());
    }

    #[test]
    fn missing_direction_metadata_is_a_data_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.parquet");
        let mut df = samples_frame(&example_table()).unwrap();
        let mut f = File::create(&path).unwrap();
        polars::prelude::ParquetWriter::new(&mut f).finish(&mut df).unwrap();
        let err = read_samples(&path).unwrap_err();
        assert!(matches!(err, Error::Data { .. }), "{err}");
        assert!(err.to_string().contains("fragility.direction.spearman"), "{err}");
    }
}

//! The tables of a study's sanity checks and faithfulness measures: `sanity.parquet`,
//! `faithfulness.parquet` and `faithfulness_curves.parquet`.
//!
//! `samples.parquet` holds one row per image × method × attack × ε; these three are long
//! tables of their own, one row per value, so that the sanity checks (Adebayo et al. 2018,
//! Sixt et al. 2020, Kindermans et al. 2017) and the faithfulness measures (RISE, Quantus)
//! sit beside the fragility rows of the same images, models and clean maps:
//!
//! | file | columns |
//! |---|---|
//! | `sanity.parquet` | image_id, method, test, step, layer, similarity, value |
//! | `faithfulness.parquet` | image_id, method, measure, value |
//! | `faithfulness_curves.parquet` | image_id, method, measure, step, fraction, score, top1 |
//!
//! A study of several models leads each with a `model` column, as `samples.parquet` does.
//! `step` orders a test's rows (the randomisation step: 1 = the logits layer re-initialised;
//! 0 where the test has no steps) and a curve's points; `layer` names the block (`layer4.1`,
//! `fc`; the layer, `layer4.1.conv2`, under `[sanity] granularity = "layer"`) a
//! randomisation step re-initialised last (empty where none); `value` is null where a
//! similarity is undefined (a constant map). `top1` says whether the class is still the
//! model's top class at that point of the curve.
//!
//! Tables are column-oriented in memory ([`CheckTable`]): a chunk of a study builds its rows,
//! an interrupted run reads them back from `.partial/`, and `merge` concatenates the shards';
//! [`CheckTable::sorted`] puts them in one order whatever the chunking (model, method,
//! test or measure in config order, then image; a test's own rows in the order computed).

use super::parquet::write_table;
use super::table::{guarded, required, table_error, MODEL_COLUMN, STUDY_KEY};
use crate::error::{Error, Result};
use polars::prelude::{Column, DataFrame, ParquetReader, SerReader};
use std::fs::File;
use std::path::Path;

/// The `similarity` of input invariance's rows in `sanity.parquet`: ‖map₂ − map₁‖₁ / ‖map₁‖₁
/// (a method passes at most [`crate::sanity::TOLERANCE`]).
pub const INVARIANCE_SIMILARITY: &str = "relative_l1";

/// The attack label of the example panels of cascading randomisation
/// (`examples/sanity_cascading_image<id>.png`): the run writes them, the page captions them.
pub const CASCADE_EXAMPLE: &str = "sanity_cascading";

/// The check tables of the study `study` in folder `out` (those present, in [`CHECK_KINDS`]
/// order); a table of another study (left by an older version) is not read as this one's.
pub fn read_checks(out: &Path, study: Option<&str>) -> Result<Vec<CheckTable>> {
    let mut tables = Vec::new();
    for kind in CHECK_KINDS {
        let path = out.join(kind.file());
        if path.is_file() {
            let (t, id) = CheckTable::read(&path, kind)?;
            if study.is_none() || id.as_deref() == study {
                tables.push(t);
            }
        }
    }
    Ok(tables)
}

/// Which of the three tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// `sanity.parquet`.
    Sanity,
    /// `faithfulness.parquet`.
    Faithfulness,
    /// `faithfulness_curves.parquet`.
    Curves,
}

/// The type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Text,
    Count,
    Number,
    /// A number that may be null.
    MaybeNumber,
    Flag,
}

/// Every kind, in the order a study writes them.
pub const CHECK_KINDS: [CheckKind; 3] = [CheckKind::Sanity, CheckKind::Faithfulness, CheckKind::Curves];

impl CheckKind {
    /// The file name in a study's folder.
    pub fn file(self) -> &'static str {
        match self {
            CheckKind::Sanity => "sanity.parquet",
            CheckKind::Faithfulness => "faithfulness.parquet",
            CheckKind::Curves => "faithfulness_curves.parquet",
        }
    }

    /// The columns after `model` (which leads in a study of several models).
    fn columns(self) -> &'static [(&'static str, Type)] {
        use Type::*;
        match self {
            CheckKind::Sanity => &[
                ("image_id", Count),
                ("method", Text),
                ("test", Text),
                ("step", Count),
                ("layer", Text),
                ("similarity", Text),
                ("value", MaybeNumber),
            ],
            CheckKind::Faithfulness => {
                &[("image_id", Count), ("method", Text), ("measure", Text), ("value", MaybeNumber)]
            }
            CheckKind::Curves => &[
                ("image_id", Count),
                ("method", Text),
                ("measure", Text),
                ("step", Count),
                ("fraction", Number),
                ("score", Number),
                ("top1", Flag),
            ],
        }
    }
}

/// One column's values.
#[derive(Debug, Clone, PartialEq)]
enum Values {
    Text(Vec<String>),
    Count(Vec<u32>),
    Number(Vec<Option<f64>>),
    Flag(Vec<bool>),
}

impl Values {
    fn empty(t: Type) -> Self {
        match t {
            Type::Text => Values::Text(Vec::new()),
            Type::Count => Values::Count(Vec::new()),
            Type::Number | Type::MaybeNumber => Values::Number(Vec::new()),
            Type::Flag => Values::Flag(Vec::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Values::Text(v) => v.len(),
            Values::Count(v) => v.len(),
            Values::Number(v) => v.len(),
            Values::Flag(v) => v.len(),
        }
    }

    fn extend(&mut self, other: Values) -> Result<()> {
        match (self, other) {
            (Values::Text(a), Values::Text(b)) => a.extend(b),
            (Values::Count(a), Values::Count(b)) => a.extend(b),
            (Values::Number(a), Values::Number(b)) => a.extend(b),
            (Values::Flag(a), Values::Flag(b)) => a.extend(b),
            _ => return Err(Error::Invalid("check tables of different columns".into())),
        }
        Ok(())
    }

    fn permuted(&self, order: &[usize]) -> Values {
        fn pick<T: Clone>(v: &[T], order: &[usize]) -> Vec<T> {
            order.iter().map(|&i| v[i].clone()).collect()
        }
        match self {
            Values::Text(v) => Values::Text(pick(v, order)),
            Values::Count(v) => Values::Count(pick(v, order)),
            Values::Number(v) => Values::Number(pick(v, order)),
            Values::Flag(v) => Values::Flag(pick(v, order)),
        }
    }

    fn column(&self, name: &str) -> Column {
        match self {
            Values::Text(v) => Column::new(name.into(), v.iter().map(String::as_str).collect::<Vec<_>>()),
            Values::Count(v) => Column::new(name.into(), v.clone()),
            Values::Number(v) => Column::new(name.into(), v.clone()),
            Values::Flag(v) => Column::new(name.into(), v.clone()),
        }
    }
}

/// One cell of a row being added ([`CheckTable::push`]), in the table's column order.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    /// A text column.
    Text(&'a str),
    /// A count column (image id, step).
    Count(u32),
    /// A number column (null where `None`).
    Number(Option<f64>),
    /// A flag column.
    Flag(bool),
}

/// One of the three tables, column by column.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckTable {
    /// Which table.
    pub kind: CheckKind,
    /// Whether it has the `model` column (a study of several models).
    pub several: bool,
    /// The model of each row (empty strings for a study of one).
    models: Vec<String>,
    /// The other columns, in [`CheckKind::columns`] order.
    values: Vec<Values>,
}

impl CheckTable {
    /// An empty table.
    pub fn new(kind: CheckKind, several: bool) -> Self {
        let values = kind.columns().iter().map(|&(_, t)| Values::empty(t)).collect();
        Self { kind, several, models: Vec::new(), values }
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether it has no row.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Adds a row of model `model`: one cell per column of [`CheckKind::columns`], in order.
    pub fn push(&mut self, model: &str, cells: &[Cell]) -> Result<()> {
        let columns = self.kind.columns();
        if cells.len() != columns.len() {
            return Err(Error::Invalid(format!("{}: a row of {} cells", self.kind.file(), cells.len())));
        }
        for ((values, cell), &(name, t)) in self.values.iter_mut().zip(cells).zip(columns) {
            match (values, *cell) {
                (Values::Text(v), Cell::Text(s)) => v.push(s.to_string()),
                (Values::Count(v), Cell::Count(n)) => v.push(n),
                (Values::Number(v), Cell::Number(x)) if x.is_some() || t == Type::MaybeNumber => v.push(x),
                (Values::Flag(v), Cell::Flag(b)) => v.push(b),
                _ => {
                    return Err(Error::Invalid(format!("{}: column `{name}` got {cell:?}", self.kind.file())))
                }
            }
        }
        self.models.push(model.to_string());
        Ok(())
    }

    /// Appends `other`'s rows (a table of the same kind).
    pub fn append(&mut self, other: CheckTable) -> Result<()> {
        if other.kind != self.kind {
            return Err(Error::Invalid("appending a check table of another kind".into()));
        }
        self.models.extend(other.models);
        for (a, b) in self.values.iter_mut().zip(other.values) {
            a.extend(b)?;
        }
        Ok(())
    }

    /// The text column `name` (`method`, `test`, `layer`, ...), if the table has it.
    pub fn text(&self, name: &str) -> Option<&[String]> {
        match self.at(name)? {
            Values::Text(v) => Some(v),
            _ => None,
        }
    }

    /// The count column `name` (`image_id`, `step`), if the table has it.
    pub fn counts(&self, name: &str) -> Option<&[u32]> {
        match self.at(name)? {
            Values::Count(v) => Some(v),
            _ => None,
        }
    }

    /// The number column `name` (`value`, `fraction`, `score`), if the table has it.
    pub fn numbers(&self, name: &str) -> Option<&[Option<f64>]> {
        match self.at(name)? {
            Values::Number(v) => Some(v),
            _ => None,
        }
    }

    /// The model of each row.
    pub fn models(&self) -> &[String] {
        &self.models
    }

    /// The rows of model `label` (all rows of a study of one model, whose label is empty).
    pub fn of_model(&self, label: &str) -> CheckTable {
        let order: Vec<usize> = (0..self.len()).filter(|&i| self.models[i] == label).collect();
        CheckTable {
            kind: self.kind,
            several: self.several,
            models: order.iter().map(|&i| self.models[i].clone()).collect(),
            values: self.values.iter().map(|v| v.permuted(&order)).collect(),
        }
    }

    /// The distinct values of text column `name` in order of first appearance.
    pub fn distinct(&self, name: &str) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for v in self.text(name).into_iter().flatten() {
            if !seen.contains(v) {
                seen.push(v.clone());
            }
        }
        seen
    }

    fn at(&self, name: &str) -> Option<&Values> {
        let i = self.kind.columns().iter().position(|(n, _)| *n == name)?;
        self.values.get(i)
    }

    /// The rows in one order whatever the chunking: by model, method and test (or measure)
    /// in the given orders (names not listed go last), then image id; rows that tie keep
    /// their order (a test's steps and similarities, a curve's points).
    pub fn sorted(mut self, models: &[String], methods: &[String], tests: &[String]) -> CheckTable {
        let pos = |order: &[String], name: &str| order.iter().position(|m| m == name).unwrap_or(order.len());
        let group = match self.kind {
            CheckKind::Sanity => "test",
            CheckKind::Faithfulness | CheckKind::Curves => "measure",
        };
        let (method, test, image) = (self.text("method"), self.text(group), self.counts("image_id"));
        let (Some(method), Some(test), Some(image)) = (method, test, image) else { return self };
        let key = |i: usize| {
            (pos(models, &self.models[i]), pos(methods, &method[i]), pos(tests, &test[i]), image[i])
        };
        let mut order: Vec<usize> = (0..self.len()).collect();
        // A stable sort: ties keep the order they were computed in.
        order.sort_by_key(|&i| key(i));
        self.models = order.iter().map(|&i| self.models[i].clone()).collect();
        self.values = self.values.iter().map(|v| v.permuted(&order)).collect();
        self
    }

    fn frame(&self, path: &Path) -> Result<DataFrame> {
        let mut columns = Vec::new();
        if self.several {
            columns.push(Column::new(
                MODEL_COLUMN.into(),
                self.models.iter().map(String::as_str).collect::<Vec<_>>(),
            ));
        }
        for (v, (name, _)) in self.values.iter().zip(self.kind.columns()) {
            columns.push(v.column(name));
        }
        DataFrame::new(self.len(), columns).map_err(table_error(path))
    }

    /// Writes the table to `path` (atomically), recording the study's fingerprint id.
    pub fn write(&self, path: &Path, study: &str) -> Result<()> {
        if self.values.iter().any(|v| v.len() != self.len()) {
            return Err(Error::Invalid(format!("{}: columns of different lengths", self.kind.file())));
        }
        let mut df = self.frame(path)?;
        write_table(path, &mut df, vec![(STUDY_KEY.to_string(), study.to_string())])
    }

    /// Reads a table of `kind` written by [`CheckTable::write`], with the study id it
    /// records. Bad input (not Parquet, other columns or types, a null where none may be)
    /// is an error naming the file.
    pub fn read(path: &Path, kind: CheckKind) -> Result<(CheckTable, Option<String>)> {
        guarded(path, || read_unchecked(path, kind))
    }
}

fn read_unchecked(path: &Path, kind: CheckKind) -> Result<(CheckTable, Option<String>)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = ParquetReader::new(file);
    let meta =
        reader.get_metadata().map_err(table_error(path))?.key_value_metadata().clone().unwrap_or_default();
    let study = meta.iter().find(|kv| kv.key == STUDY_KEY).and_then(|kv| kv.value.clone());
    let df = reader.finish().map_err(table_error(path))?;
    let mut names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
    let several = names.first().is_some_and(|n| n == MODEL_COLUMN);
    if several {
        names.remove(0);
    }
    let want: Vec<&str> = kind.columns().iter().map(|(n, _)| *n).collect();
    if names != want {
        return Err(Error::data(path, format!("columns {names:?}, expected {want:?}")));
    }
    let column = |name: &str| df.column(name).map_err(table_error(path));
    let mut values = Vec::new();
    for &(name, t) in kind.columns() {
        let c = column(name)?;
        let v = match t {
            Type::Text => {
                let v: Vec<&str> = required(path, name, c.str().map_err(table_error(path))?.iter())?;
                Values::Text(v.into_iter().map(str::to_string).collect())
            }
            Type::Count => Values::Count(required(path, name, c.u32().map_err(table_error(path))?.iter())?),
            Type::Number => Values::Number(
                required(path, name, c.f64().map_err(table_error(path))?.iter())?
                    .into_iter()
                    .map(Some)
                    .collect(),
            ),
            Type::MaybeNumber => Values::Number(c.f64().map_err(table_error(path))?.iter().collect()),
            Type::Flag => Values::Flag(required(path, name, c.bool().map_err(table_error(path))?.iter())?),
        };
        values.push(v);
    }
    let models = if several {
        let v: Vec<&str> =
            required(path, MODEL_COLUMN, column(MODEL_COLUMN)?.str().map_err(table_error(path))?.iter())?;
        v.into_iter().map(str::to_string).collect()
    } else {
        vec![String::new(); df.height()]
    };
    Ok((CheckTable { kind, several, models, values }, study))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sanity_row<'a>(
        image: u32,
        method: &'a str,
        test: &'a str,
        step: u32,
        value: Option<f64>,
    ) -> Vec<Cell<'a>> {
        vec![
            Cell::Count(image),
            Cell::Text(method),
            Cell::Text(test),
            Cell::Count(step),
            Cell::Text("fc2"),
            Cell::Text("spearman"),
            Cell::Number(value),
        ]
    }

    #[test]
    fn a_table_reads_back_unchanged_with_its_study_and_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sanity.parquet");
        let mut t = CheckTable::new(CheckKind::Sanity, false);
        t.push("", &sanity_row(3, "gradient", "cascading", 1, Some(0.5))).unwrap();
        t.push("", &sanity_row(3, "gradient", "cascading", 2, None)).unwrap();
        t.write(&p, "abc").unwrap();
        let (back, study) = CheckTable::read(&p, CheckKind::Sanity).unwrap();
        assert_eq!(back, t);
        assert_eq!(study.as_deref(), Some("abc"));
        assert_eq!(back.numbers("value").unwrap(), [Some(0.5), None]);
        // Another kind's file is refused, naming its columns.
        let e = CheckTable::read(&p, CheckKind::Faithfulness).unwrap_err().to_string();
        assert!(e.contains("sanity.parquet") && e.contains("expected"), "{e}");
    }

    #[test]
    fn a_cell_of_the_wrong_type_or_a_short_row_is_refused() {
        let mut t = CheckTable::new(CheckKind::Faithfulness, false);
        assert!(t.push("", &[Cell::Count(1), Cell::Text("gradient"), Cell::Text("deletion")]).is_err());
        assert!(t
            .push("", &[Cell::Text("1"), Cell::Text("g"), Cell::Text("deletion"), Cell::Number(None)])
            .is_err());
        let mut c = CheckTable::new(CheckKind::Curves, false);
        let row = [
            Cell::Count(1),
            Cell::Text("g"),
            Cell::Text("d"),
            Cell::Count(0),
            Cell::Number(None),
            Cell::Number(Some(1.0)),
            Cell::Flag(true),
        ];
        assert!(c.push("", &row).is_err(), "a curve's fraction may not be null");
        assert!(t.is_empty() && c.is_empty());
    }

    #[test]
    fn sorting_puts_chunks_in_one_order_and_keeps_a_tests_own_order() {
        // Two chunks (images 7 and 2) in the order a sharded run might deliver them.
        let mut a = CheckTable::new(CheckKind::Sanity, false);
        for (img, method, step) in [(7, "guided_backprop", 1), (7, "gradient", 2), (7, "gradient", 1)] {
            a.push("", &sanity_row(img, method, "cascading", step, Some(step as f64))).unwrap();
        }
        let mut b = CheckTable::new(CheckKind::Sanity, false);
        b.push("", &sanity_row(2, "gradient", "cascading", 1, None)).unwrap();
        a.append(b).unwrap();
        let s = a.sorted(&[], &["gradient".into(), "guided_backprop".into()], &["cascading".into()]);
        assert_eq!(s.counts("image_id").unwrap(), [2, 7, 7, 7]);
        assert_eq!(s.text("method").unwrap(), ["gradient", "gradient", "gradient", "guided_backprop"]);
        // Image 7's gradient rows keep their computed order (step 2 before step 1).
        assert_eq!(s.counts("step").unwrap(), [1, 2, 1, 1]);
    }
}

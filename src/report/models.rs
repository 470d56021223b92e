//! The headline of a study of several models: the models side by side, then each model's own.
//!
//! A study may give several `[[model]]` tables and measure the same images with each (one
//! `samples.parquet` with a `model` column, see [`super::table`]). What a reader asks first is
//! which model's explanations are more fragile, so [`ModelsHeadline`] puts the models in the
//! columns of one table per headline metric: its rows are the method × attack rows the headline
//! of one model shows, less the transfers (random baselines and the ★ attacks on the map they
//! steer), its cells the mean and 95% bootstrap interval at the largest ε. One sentence per
//! attacked method says under its steered attack which model's maps moved more, with both
//! intervals and whether they overlap (withdrawn, as in [`Headline::with_caveats`], when the
//! sample is too small for intervals). Each model's own [`Headline`] follows, built from its
//! rows of the summary (so its numbers are those of `summary.parquet`).
//!
//! Models may see the images at different sizes, so their top-k columns differ
//! (`top522_intersection`, `top100_intersection`): a metric of the side-by-side table is a
//! *kind* ([`kind`]: the top-k intersection whatever its k, or else one column), to which each
//! model contributes its own column; the metric's name then lists each model's k.
//!
//! [`StudyHeadline`] is what a study's report holds: the headline of one model, exactly as
//! before, or that of several; `text()` (terminal) and `html()` (page) render either from the
//! same data, so they cannot disagree.

use super::checks::{CheckKind, CheckTable};
use super::headline::{main_metrics, more_similar, overlap_clause, unreliable, withdraw_interval_claims};
use super::headline::{Estimate, Headline, ATTACKED_MARK};
use super::index::escape;
use super::labels::{describe, epsilon, top_k_of};
use super::scorecard::{CardInputs, Scorecard};
use super::summary::SummaryRow;
use super::SampleTable;
use crate::metric::Direction;
use std::cmp::Ordering;
use std::fmt::Write as _;

/// The kind of every top-k intersection column, whatever its k.
pub const TOP_K_KIND: &str = "top-k";

/// Each model's metric columns with their directions, by label in the models' order: one entry
/// with an empty label for a study of one model.
pub type ModelColumns = Vec<(String, Vec<(String, Direction)>)>;

/// The metric columns of each model of `table` (see [`ModelColumns`]).
pub fn model_columns(table: &SampleTable) -> ModelColumns {
    let all: Vec<(String, Direction)> =
        table.metric_columns.iter().cloned().zip(table.directions.iter().copied()).collect();
    if table.model_metrics.is_empty() {
        return vec![(String::new(), all)];
    }
    table
        .model_metrics
        .iter()
        .map(|(label, names)| {
            (label.clone(), all.iter().filter(|(c, _)| names.contains(c)).cloned().collect())
        })
        .collect()
}

/// What `column` is when models are lined up: [`TOP_K_KIND`] for a top-k intersection, else
/// the column itself.
pub fn kind(column: &str) -> &str {
    if top_k_of(column).is_some() {
        TOP_K_KIND
    } else {
        column
    }
}

/// One metric of the side-by-side table.
#[derive(Debug, Clone, PartialEq)]
pub struct SideMetric {
    /// The metric in words with its unit; a top-k whose k differs between models lists each
    /// model's k (`top-k intersection (fraction; k = 522 | 100)`).
    pub name: String,
    /// Which way is more similar.
    pub direction: Direction,
    /// Each model's column of this kind, in the models' order; `None` where it has none.
    pub columns: Vec<Option<String>>,
}

impl SideMetric {
    /// Whether every model that has the metric has the same column (the same k).
    fn uniform(&self) -> bool {
        let mut present = self.columns.iter().flatten();
        let first = present.next();
        present.all(|c| Some(c) == first)
    }

    /// The metric's name in a sentence: the column's, or the generic top-k's.
    pub fn words(&self) -> String {
        match self.columns.iter().flatten().next() {
            Some(c) if self.uniform() => describe(c).name,
            _ => "top-k intersection".into(),
        }
    }

    /// A model's value in a sentence: with its k where the models' k differ.
    fn show(&self, model: usize, v: &Estimate) -> String {
        let k = self.columns[model].as_deref().and_then(top_k_of);
        match k {
            Some(k) if !self.uniform() => format!("{} (k = {k})", v.show()),
            _ => v.show(),
        }
    }
}

/// One method under one attack, every model's value side by side.
#[derive(Debug, Clone, PartialEq)]
pub struct SideRow {
    /// The attribution method.
    pub method: String,
    /// The attack as tables name it (`top_k → gradient`).
    pub attack: String,
    /// The attack steers this very method's map (★); otherwise a random baseline.
    pub attacked: bool,
    /// `values[m][k]`: metric m of model k at the largest ε, `None` where undefined.
    pub values: Vec<Vec<Option<Estimate>>>,
}

/// The headline of a study of several models.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelsHeadline {
    /// The models' labels, in their order.
    pub models: Vec<String>,
    /// The largest budget, at which the models are compared; `None` without any row.
    pub epsilon: Option<f64>,
    /// The metrics of the side-by-side table.
    pub metrics: Vec<SideMetric>,
    /// The rows of the side-by-side table: per method, its random baselines, then its ★ row.
    pub rows: Vec<SideRow>,
    /// One sentence per attacked method: which model's maps are more fragile.
    pub sentences: Vec<String>,
    /// What to know before reading the numbers ([`super::caveats`]); shown first.
    pub caveats: Vec<String>,
    /// Each model's own headline, by label.
    pub each: Vec<(String, Headline)>,
}

/// Less similar first under `direction` (the more fragile maps first).
fn fragile_first(direction: Direction, a: f64, b: f64) -> Ordering {
    if more_similar(direction, b, a) {
        Ordering::Less
    } else if more_similar(direction, a, b) {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

/// The metrics of the side-by-side headline of `models`: the kinds of each model's headline
/// metrics, in order of first appearance, each with every model's column.
pub fn side_metrics(models: &ModelColumns) -> Vec<SideMetric> {
    let main: Vec<Vec<(String, Direction)>> = models.iter().map(|(_, c)| main_metrics(c)).collect();
    let mut out: Vec<SideMetric> = Vec::new();
    for (k, metrics) in main.iter().enumerate() {
        for (column, direction) in metrics {
            let slot = out.iter().position(|m| m.columns.iter().flatten().any(|c| kind(c) == kind(column)));
            let slot = slot.unwrap_or_else(|| {
                out.push(SideMetric {
                    name: String::new(),
                    direction: *direction,
                    columns: vec![None; main.len()],
                });
                out.len() - 1
            });
            out[slot].columns[k] = Some(column.clone());
        }
    }
    for m in &mut out {
        m.name = match m.columns.iter().flatten().next() {
            Some(c) if m.uniform() => describe(c).axis(),
            _ => {
                let ks: Vec<String> = m
                    .columns
                    .iter()
                    .map(|c| c.as_deref().and_then(top_k_of).map_or("–".into(), |k| k.to_string()))
                    .collect();
                format!("top-k intersection (fraction; k = {})", ks.join(" | "))
            }
        };
    }
    out
}

/// The value of `metric` at ε `eps` in model `k`'s headline row `method` × `attack`.
fn cell(
    h: &Headline,
    metric: &SideMetric,
    k: usize,
    (method, attack): (&str, &str),
    eps: f64,
) -> Option<Estimate> {
    let column = metric.columns[k].as_deref()?;
    let m = h.metrics.iter().position(|(c, _)| c == column)?;
    let e = h.epsilons.iter().position(|x| *x == eps)?;
    let row = h.rows.iter().find(|r| r.method == method && r.attack == attack)?;
    row.values[m][e]
}

/// The side-by-side rows: every model's random baselines and ★ rows (not its transfers), per
/// method in order of first appearance, random baselines first.
fn side_rows(each: &[(String, Headline)], metrics: &[SideMetric], eps: Option<f64>) -> Vec<SideRow> {
    let mut keys: Vec<(&str, &str, bool)> = Vec::new();
    for r in each.iter().flat_map(|(_, h)| &h.rows).filter(|r| !r.steered || r.attacked) {
        if !keys.iter().any(|k| k.0 == r.method && k.1 == r.attack) {
            keys.push((&r.method, &r.attack, r.attacked));
        }
    }
    let methods: Vec<&str> = keys.iter().fold(Vec::new(), |mut v, k| {
        if !v.contains(&k.0) {
            v.push(k.0);
        }
        v
    });
    keys.sort_by_key(|k| (methods.iter().position(|m| *m == k.0), k.2));
    keys.iter()
        .map(|&(method, attack, attacked)| SideRow {
            method: method.into(),
            attack: attack.into(),
            attacked,
            values: metrics
                .iter()
                .map(|m| {
                    let at =
                        |(k, (_, h)): (usize, &(String, Headline))| cell(h, m, k, (method, attack), eps?);
                    each.iter().enumerate().map(at).collect()
                })
                .collect(),
        })
        .collect()
}

impl ModelsHeadline {
    /// Builds the headline of a study of several models from its summary (whose rows carry
    /// the models' labels) and each model's metric columns.
    pub fn build(summary: &[SummaryRow], models: &ModelColumns) -> ModelsHeadline {
        let each: Vec<(String, Headline)> = models
            .iter()
            .map(|(label, columns)| {
                let mine: Vec<SummaryRow> = summary.iter().filter(|r| r.model == *label).cloned().collect();
                (label.clone(), Headline::build(&mine, columns))
            })
            .collect();
        let epsilon = each.iter().filter_map(|(_, h)| h.epsilons.last().copied()).max_by(f64::total_cmp);
        let metrics = side_metrics(models);
        let rows = side_rows(&each, &metrics, epsilon);
        let mut h = ModelsHeadline {
            models: models.iter().map(|(l, _)| l.clone()).collect(),
            epsilon,
            metrics,
            rows,
            sentences: Vec::new(),
            caveats: Vec::new(),
            each,
        };
        h.sentences = h.rows.iter().filter(|r| r.attacked).filter_map(|r| h.sentence(r)).collect();
        h
    }

    /// The headline with `caveats` first; a caveat that the intervals are unreliable also
    /// withdraws every claim about overlapping intervals, here and in each model's headline.
    pub fn with_caveats(mut self, caveats: Vec<String>) -> ModelsHeadline {
        if unreliable(&caveats) {
            withdraw_interval_claims(&mut self.sentences);
            for (_, h) in &mut self.each {
                withdraw_interval_claims(&mut h.sentences);
            }
        }
        self.caveats = caveats;
        self
    }

    /// The models compared on a ★ row by the first metric: "Under top_k → gradient at ε = 0.1,
    /// the gradient maps of b are more fragile than those of a: ...". `None` where fewer than
    /// two models have a value.
    fn sentence(&self, row: &SideRow) -> Option<String> {
        let (metric, eps) = (self.metrics.first()?, epsilon(self.epsilon?));
        let mut cells: Vec<(usize, Estimate)> =
            row.values[0].iter().enumerate().filter_map(|(k, v)| Some((k, (*v)?))).collect();
        cells.sort_by(|a, b| fragile_first(metric.direction, a.1.mean, b.1.mean));
        let (&(most, v), &(least, u)) = (cells.first()?, cells.last()?);
        if most == least {
            return None;
        }
        let (name, words) = (|k: usize| self.models[k].as_str(), metric.words());
        let others: Vec<String> = cells[1..cells.len() - 1]
            .iter()
            .map(|(k, e)| format!("{}: {}", name(*k), metric.show(*k, e)))
            .collect();
        let others = if others.is_empty() { String::new() } else { format!(" ({})", others.join("; ")) };
        let claim = if !more_similar(metric.direction, u.mean, v.mean) {
            format!("the {} maps of {} are as fragile as those of {}", row.method, name(most), name(least))
        } else if cells.len() == 2 {
            format!(
                "the {} maps of {} are more fragile than those of {}",
                row.method,
                name(most),
                name(least)
            )
        } else {
            format!(
                "the {} maps of {} are the most fragile and those of {} the least",
                row.method,
                name(most),
                name(least)
            )
        };
        Some(format!(
            "Under {} at ε = {eps}, {claim}: their {words} is {} against {}{others}{}.",
            row.attack,
            metric.show(most, &v),
            metric.show(least, &u),
            overlap_clause(&v, &u)
        ))
    }
}

/// The headline of a study: of one model, or of several side by side.
#[derive(Debug, Clone, PartialEq)]
pub enum StudyHeadline {
    /// A study of one model: its headline, as in every earlier version.
    One(Headline),
    /// A study of several models.
    Several(ModelsHeadline),
}

impl StudyHeadline {
    /// The headline of `table`'s study from its summary (see [`super::summarize`]).
    pub fn build(summary: &[SummaryRow], table: &SampleTable) -> StudyHeadline {
        let mut models = model_columns(table);
        if table.model_metrics.is_empty() {
            let (_, columns) = models.remove(0);
            StudyHeadline::One(Headline::build(summary, &columns))
        } else {
            StudyHeadline::Several(ModelsHeadline::build(summary, &models))
        }
    }

    /// The headline with `caveats` shown first (see [`Headline::with_caveats`]).
    pub fn with_caveats(self, caveats: Vec<String>) -> StudyHeadline {
        match self {
            StudyHeadline::One(h) => StudyHeadline::One(h.with_caveats(caveats)),
            StudyHeadline::Several(h) => StudyHeadline::Several(h.with_caveats(caveats)),
        }
    }

    /// The headline with each model's scorecard ([`super::scorecard`]) from the study's
    /// check tables (`sanity.parquet`, `faithfulness.parquet`); unchanged without them.
    pub fn with_checks(
        self,
        summary: &[SummaryRow],
        table: &SampleTable,
        checks: &[CheckTable],
    ) -> StudyHeadline {
        let find = |kind: CheckKind| checks.iter().find(|t| t.kind == kind);
        let (sanity, faithfulness) = (find(CheckKind::Sanity), find(CheckKind::Faithfulness));
        if sanity.is_none() && faithfulness.is_none() {
            return self;
        }
        let card = |label: &str, h: &Headline| -> Option<Scorecard> {
            let (s, f) = (sanity.map(|t| t.of_model(label)), faithfulness.map(|t| t.of_model(label)));
            let rows: Vec<SummaryRow> = summary.iter().filter(|r| r.model == label).cloned().collect();
            // The study's methods in order: the attack rows', then the checks' (a study of
            // checks alone has no attack rows).
            let mut methods: Vec<String> = Vec::new();
            let listed = table.rows.iter().filter(|r| r.model == label).map(|r| r.method.clone());
            let checked = [&s, &f].into_iter().flatten().flat_map(|t| t.distinct("method"));
            for m in listed.chain(checked) {
                if !methods.contains(&m) {
                    methods.push(m);
                }
            }
            let (ranking, ranked_by) = h.ranking();
            Scorecard::build(&CardInputs {
                methods,
                ranking,
                ranked_by,
                summary: &rows,
                sanity: s.as_ref(),
                faithfulness: f.as_ref(),
            })
        };
        match self {
            StudyHeadline::One(h) => match card("", &h) {
                Some(c) => StudyHeadline::One(h.with_scorecard(c)),
                None => StudyHeadline::One(h),
            },
            StudyHeadline::Several(mut m) => {
                for (label, h) in m.each.iter_mut() {
                    if let Some(c) = card(label, h) {
                        *h = h.clone().with_scorecard(c);
                    }
                }
                StudyHeadline::Several(m)
            }
        }
    }

    /// The headline as fixed-width text for the terminal.
    pub fn text(&self) -> String {
        match self {
            StudyHeadline::One(h) => h.text(),
            StudyHeadline::Several(h) => h.text(),
        }
    }

    /// The headline as HTML, for the page.
    pub fn html(&self) -> String {
        match self {
            StudyHeadline::One(h) => h.html(),
            StudyHeadline::Several(h) => h.html(),
        }
    }
}

impl ModelsHeadline {
    /// The budget the table is at, in words (` at ε = 0.1`), empty without any row.
    fn at(&self) -> String {
        self.epsilon.map_or(String::new(), |e| format!(" at ε = {}", epsilon(e)))
    }

    /// The headline as fixed-width text: caveats, the side-by-side tables, the sentences, then
    /// each model's headline under its label.
    pub fn text(&self) -> String {
        let mut t = String::new();
        for c in &self.caveats {
            let _ = writeln!(t, "{c}");
        }
        if !self.rows.is_empty() {
            let _ = writeln!(
                t,
                "\nModels side by side{}: mean over label-kept images [95% bootstrap interval]; \
                 {ATTACKED_MARK} = the attack steers this map",
                self.at()
            );
        }
        let width = self.rows.iter().map(|r| r.method.chars().count()).max().unwrap_or(6).max(6);
        let awidth = self.rows.iter().map(|r| r.attack.chars().count() + 2).max().unwrap_or(6).max(6);
        // A study of checks alone has no attack rows: no side-by-side tables to show.
        let metrics = if self.rows.is_empty() { &[][..] } else { &self.metrics[..] };
        for (m, metric) in metrics.iter().enumerate() {
            let _ = writeln!(t, "\n{} ({})", metric.name, super::plot::direction_text(metric.direction));
            let _ = write!(t, "{:<width$}  {:<awidth$}", "method", "attack");
            for label in &self.models {
                let _ = write!(t, "  {label:<26}");
            }
            t.push('\n');
            for r in &self.rows {
                let attack =
                    if r.attacked { format!("{} {ATTACKED_MARK}", r.attack) } else { r.attack.clone() };
                let pad = awidth.saturating_sub(attack.chars().count());
                let _ = write!(t, "{:<width$}  {attack}{}", r.method, " ".repeat(pad));
                for v in &r.values[m] {
                    let _ = write!(t, "  {:<26}", v.map_or("-".into(), |v| v.show()));
                }
                t.push('\n');
            }
        }
        if !self.sentences.is_empty() {
            t.push('\n');
        }
        for s in &self.sentences {
            let _ = writeln!(t, "{s}");
        }
        for (label, h) in &self.each {
            let _ = write!(t, "\n=== Model {label} ===\n{}", h.text());
        }
        t.lines().map(str::trim_end).collect::<Vec<_>>().join("\n").trim_start().to_string() + "\n"
    }

    /// The side-by-side table of metric `m` (`metric`) as HTML.
    fn html_table(&self, m: usize, metric: &SideMetric) -> String {
        let mut h = String::new();
        let _ = writeln!(
            h,
            "<table class=\"headline models\">\n<caption>{} ({}){}: each model's mean over the \
             label-kept images [95% bootstrap interval]; {ATTACKED_MARK} marks the attack on the \
             map it steers.</caption>",
            escape(&metric.name),
            super::plot::direction_text(metric.direction),
            self.at()
        );
        h.push_str("<tr><th>method</th><th>attack</th>");
        for label in &self.models {
            let _ = write!(h, "<th>{}</th>", escape(label));
        }
        h.push_str("</tr>\n");
        for r in &self.rows {
            let (class, mark) = if r.attacked {
                ("attacked", format!(" {ATTACKED_MARK}"))
            } else {
                ("random", String::new())
            };
            let _ = write!(
                h,
                "<tr class=\"{class}\"><td class=\"t\">{}</td><td class=\"t\">{}{mark}</td>",
                escape(&r.method),
                escape(&r.attack)
            );
            for v in &r.values[m] {
                let _ = write!(h, "<td>{}</td>", v.map_or("–".into(), |v| escape(&v.show())));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
        h
    }

    /// The headline as HTML: caveats, the sentences, one side-by-side table per metric, then
    /// each model's headline under a heading with its label.
    pub fn html(&self) -> String {
        let heading = "<h3 id=\"models\">Models side by side</h3>\n";
        let mut h = super::headline::caveats_and_sentences_html(&self.caveats, heading, &self.sentences);
        let metrics = if self.rows.is_empty() { &[][..] } else { &self.metrics[..] };
        for (m, metric) in metrics.iter().enumerate() {
            h.push_str(&self.html_table(m, metric));
        }
        for (label, headline) in &self.each {
            let l = escape(label);
            let _ = write!(h, "<h3 id=\"model-{l}\">Model <code>{l}</code></h3>\n{}", headline.html());
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::summary::SAMPLING;

    fn row(
        model: &str,
        (method, attack, target): (&str, &str, Option<&str>),
        eps: f64,
        metric: &str,
        mean: f64,
    ) -> SummaryRow {
        SummaryRow {
            model: model.into(),
            ..crate::report::headline::tests::row(method, attack, target, eps, metric, mean)
        }
    }

    /// Two models at two image sizes (so top-522 against top-100): gradient attacked by top_k,
    /// smoothgrad by transfer, random_sign, ε 0.01 and 0.1; spearman is the top-k − 0.1.
    fn hand() -> (Vec<SummaryRow>, ModelColumns) {
        let up = Direction::HigherIsMoreSimilar;
        let models: ModelColumns = vec![
            ("mobilenet".into(), vec![("top522_intersection".into(), up), ("spearman".into(), up)]),
            ("resnet20".into(), vec![("top100_intersection".into(), up), ("spearman".into(), up)]),
        ];
        let cases = [
            (("gradient", "random_sign", None), [[0.8, 0.6], [0.8, 0.5]]),
            (("gradient", "top_k", Some("gradient")), [[0.7, 0.5], [0.6, 0.2]]),
            (("smoothgrad", "top_k", Some("gradient")), [[0.9, 0.9], [0.9, 0.8]]),
        ];
        let mut s = Vec::new();
        for (k, (model, columns)) in models.iter().enumerate() {
            for (key, means) in cases {
                for (e, eps) in [0.01, 0.1].into_iter().enumerate() {
                    s.push(row(model, key, eps, &columns[0].0, means[k][e]));
                    s.push(row(model, key, eps, "spearman", means[k][e] - 0.1));
                }
            }
            s.push(SummaryRow {
                attack: SAMPLING.into(),
                ..row(model, ("gradient", "x", None), 0.02, "max_sensitivity", 0.1)
            });
        }
        (s, models)
    }

    #[test]
    fn the_models_stand_side_by_side_at_the_largest_budget() {
        let (summary, models) = hand();
        let h = ModelsHeadline::build(&summary, &models);
        assert_eq!(h.models, ["mobilenet", "resnet20"]);
        assert_eq!(h.epsilon, Some(0.1));
        let names: Vec<&str> = h.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["top-k intersection (fraction; k = 522 | 100)", "Spearman rank correlation"]);
        // The random baseline and the ★ row; the transfer to smoothgrad is left to each model.
        let rows: Vec<(&str, &str, bool)> =
            h.rows.iter().map(|r| (r.method.as_str(), r.attack.as_str(), r.attacked)).collect();
        assert_eq!(rows, [("gradient", "random_sign", false), ("gradient", "top_k → gradient", true)]);
        let cells: Vec<String> = h.rows[1].values[0].iter().map(|v| v.unwrap().show()).collect();
        assert_eq!(cells, ["0.500 [0.480, 0.520]", "0.200 [0.180, 0.220]"]);
        assert_eq!(h.rows[1].values[1][1].unwrap().show(), "0.100 [0.080, 0.120]");
        assert_eq!(
            h.sentences,
            ["Under top_k → gradient at ε = 0.1, the gradient maps of resnet20 are more fragile than \
              those of mobilenet: their top-k intersection is 0.200 [0.180, 0.220] (k = 100) against \
              0.500 [0.480, 0.520] (k = 522); the intervals do not overlap."]
        );
        // Each model's own headline, over its rows alone, transfers included.
        assert_eq!(h.each.len(), 2);
        assert_eq!(h.each[1].1.metrics[0].0, "top100_intersection");
        assert!(h.each[1].1.rows.iter().any(|r| r.method == "smoothgrad"));
    }

    #[test]
    fn text_and_html_show_the_models_side_by_side_then_each_model() {
        let (summary, models) = hand();
        let h = ModelsHeadline::build(&summary, &models);
        let text = h.text();
        assert!(text.starts_with("Models side by side at ε = 0.1"), "{text}");
        assert!(
            text.contains("top-k intersection (fraction; k = 522 | 100) (higher = more similar)"),
            "{text}"
        );
        let header = text.lines().find(|l| l.starts_with("method")).unwrap();
        assert!(
            header.contains("mobilenet") && header.find("mobilenet") < header.find("resnet20"),
            "{header}"
        );
        assert!(text.contains("top_k → gradient ★  0.500 [0.480, 0.520]"), "{text}");
        assert!(text.contains("the gradient maps of resnet20 are more fragile"), "{text}");
        let (a, b) =
            (text.find("=== Model mobilenet ===").unwrap(), text.find("=== Model resnet20 ===").unwrap());
        assert!(a < b && text[a..].contains("top-522 intersection"), "{text}");
        let html = h.html();
        assert!(html.contains("<tr><th>method</th><th>attack</th><th>mobilenet</th><th>resnet20</th></tr>"));
        assert!(html.contains(
            "<tr class=\"attacked\"><td class=\"t\">gradient</td><td class=\"t\">top_k → gradient ★</td>\
             <td>0.500 [0.480, 0.520]</td><td>0.200 [0.180, 0.220]</td></tr>"
        ));
        assert!(html.contains("<p>Under top_k → gradient at ε = 0.1, the gradient maps of resnet20"));
        assert!(
            html.find("<h3 id=\"model-mobilenet\">").unwrap()
                < html.find("<h3 id=\"model-resnet20\">").unwrap()
        );
        assert_eq!(html.matches("<table class=\"headline models\">").count(), 2);
    }

    #[test]
    fn a_tiny_sample_withdraws_the_interval_claims_of_every_model() {
        let (summary, models) = hand();
        let caveat = format!("With n = 2, {}: ...", crate::report::caveats::UNRELIABLE);
        let h = StudyHeadline::Several(ModelsHeadline::build(&summary, &models)).with_caveats(vec![caveat]);
        let text = h.text();
        assert!(text.starts_with("With n = 2"), "{text}");
        assert!(
            text.contains("are more fragile than those of mobilenet") && !text.contains("overlap"),
            "{text}"
        );
    }

    #[test]
    fn three_models_name_the_most_and_least_fragile_with_the_same_k() {
        let up = Direction::HigherIsMoreSimilar;
        let key = ("gradient", "top_k", Some("gradient"));
        let summary: Vec<SummaryRow> = [("a", 0.5), ("b", 0.3), ("c", 0.4)]
            .into_iter()
            .map(|(m, v)| row(m, key, 0.1, "top100_intersection", v))
            .collect();
        let models: ModelColumns = ["a", "b", "c"]
            .iter()
            .map(|m| (m.to_string(), vec![("top100_intersection".into(), up)]))
            .collect();
        let h = ModelsHeadline::build(&summary, &models);
        assert_eq!(h.metrics[0].name, "top-100 intersection (fraction)");
        assert_eq!(
            h.sentences,
            ["Under top_k → gradient at ε = 0.1, the gradient maps of b are the most fragile and those \
              of a the least: their top-100 intersection is 0.300 [0.280, 0.320] against 0.500 \
              [0.480, 0.520] (c: 0.400 [0.380, 0.420]); the intervals do not overlap."]
        );
    }

    #[test]
    fn a_study_of_one_model_keeps_its_headline() {
        let table = crate::report::table::tests::example_table();
        let summary = crate::report::summarize(&table);
        let columns: Vec<(String, Direction)> =
            table.metric_columns.iter().cloned().zip(table.directions.iter().copied()).collect();
        assert_eq!(
            StudyHeadline::build(&summary, &table),
            StudyHeadline::One(Headline::build(&summary, &columns))
        );
        let two = crate::report::table::tests::two_model_table();
        assert_eq!(
            model_columns(&two)[1],
            ("b".to_string(), vec![("spearman".to_string(), Direction::HigherIsMoreSimilar)])
        );
    }
}

//! The scorecard: one row per method with its three axes side by side — how fragile its map
//! is, how faithful, and whether it depends on the model at all.
//!
//! A study that ranks methods by fragility alone would call a constant map the most robust:
//! Adebayo et al. ("Sanity checks for saliency maps", NeurIPS 2018) show that guided backprop
//! barely changes when the network's weights are randomised. So wherever a study has run
//! `[sanity]` (or `[faithfulness]`), the headline shows this card beside its ranking, and a
//! sentence names the robust methods that fail a sanity check.
//!
//! Columns (each where the study has it), every cell a mean over images with its 95%
//! bootstrap interval:
//! - **fragility**: the first top-k intersection at the largest ε under the strongest attack
//!   on the method's own map (the headline's ranking; higher = more robust);
//! - **sampling robustness**: `avg_sensitivity` of `[robustness]` (lower = more robust);
//! - **each faithfulness measure**: its score (the measure's own direction);
//! - **cascading**: the similarity of the maps after every layer is re-initialised with the
//!   trained maps (`ssim` if the study computed it, else its first similarity; lower = more
//!   model-sensitive), **random logit**: the same similarity between the maps of the
//!   predicted and of a random other class (lower = more class-sensitive), **input
//!   invariance**: pass where every image's map stays within [`crate::sanity::TOLERANCE`].
//!
//! A method *fails* cascading or random logit when that mean similarity is above
//! [`SIMILARITY_LIMIT`] (a map that keeps more than half its structure once the model, or the
//! class, is gone), and input invariance when any image's map moves.

use super::checks::CheckTable;
use super::headline::{num, Estimate};
use super::summary::{bootstrap_ci, SummaryRow, SAMPLING};
use crate::faithfulness::Better;
use std::fmt::Write as _;

/// Above this mean similarity to the trained (or own-class) maps, a method fails the
/// cascading or the random-logit test.
pub const SIMILARITY_LIMIT: f64 = 0.5;

/// The robustness column the card shows.
const ROBUSTNESS_COLUMN: &str = "avg_sensitivity";

/// The similarity the card shows where the study computed it.
const PREFERRED_SIMILARITY: &str = "ssim";

/// One column of the card.
#[derive(Debug, Clone, PartialEq)]
pub struct CardColumn {
    /// Its title (`deletion AUC`, `cascading (ssim)`).
    pub title: String,
    /// Which values are better.
    pub better: Better,
}

/// One cell: an estimate, a pass/fail verdict, or nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum CardCell {
    /// No value for this method.
    Missing,
    /// A mean with its interval, and whether it fails a sanity check.
    Value(Estimate, bool),
    /// Input invariance: images whose map moved, of all images.
    Verdict { moved: usize, of: usize },
}

impl CardCell {
    fn show(&self) -> String {
        match self {
            CardCell::Missing => "-".into(),
            CardCell::Value(e, false) => e.show(),
            CardCell::Value(e, true) => format!("{} ✗", e.show()),
            CardCell::Verdict { moved: 0, .. } => "pass".into(),
            CardCell::Verdict { moved, of } => format!("fail ({moved} of {of} images) ✗"),
        }
    }

    fn fails(&self) -> bool {
        matches!(self, CardCell::Value(_, true) | CardCell::Verdict { moved: 1.., .. })
    }
}

/// The card of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Scorecard {
    /// Its columns.
    pub columns: Vec<CardColumn>,
    /// Per method (in the study's order), its cells in column order.
    pub rows: Vec<(String, Vec<CardCell>)>,
    /// What the card says, in sentences (the robust methods that fail a check).
    pub sentences: Vec<String>,
}

/// A method's fragility at the largest ε under its strongest attack: (method, attack, value),
/// least robust first (the headline's ranking, [`super::headline::Headline::ranking`]).
pub type Ranking = Vec<(String, String, Estimate)>;

/// What the card is built from, for one model.
pub struct CardInputs<'a> {
    /// The methods in the study's order.
    pub methods: Vec<String>,
    /// The headline's ranking, with the metric's words and the largest ε (empty without
    /// attacks).
    pub ranking: Ranking,
    /// `(metric words, ε)` of the ranking.
    pub ranked_by: Option<(String, f64)>,
    /// The model's summary rows (for sampling robustness).
    pub summary: &'a [SummaryRow],
    /// The model's `sanity.parquet` rows, if the study has them.
    pub sanity: Option<&'a CheckTable>,
    /// The model's `faithfulness.parquet` rows, if the study has them.
    pub faithfulness: Option<&'a CheckTable>,
}

/// A mean with its bootstrap interval (seeded by the names, so a card is reproducible).
fn estimate(values: &[f64], method: &str, column: &str) -> Option<Estimate> {
    let key = [crate::seed::hash_str(method), crate::seed::hash_str(column)];
    mean_interval(values, crate::seed::derive(0, &key))
}

/// The mean of `values` with its 95% bootstrap interval drawn from `seed`; `None` without
/// values (the scorecard's cells and the check figures' points).
pub(crate) fn mean_interval(values: &[f64], seed: u64) -> Option<Estimate> {
    if values.is_empty() {
        return None;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let ci = bootstrap_ci(values, seed);
    Some(Estimate { mean, low: ci.map(|c| c.0), high: ci.map(|c| c.1) })
}

/// The finite values of `table`'s `value` column on rows where `keep(row)`.
fn values_where(table: &CheckTable, keep: impl Fn(usize) -> bool) -> Vec<f64> {
    let values = table.numbers("value").unwrap_or(&[]);
    (0..table.len()).filter(|&i| keep(i)).filter_map(|i| values[i]).filter(|v| v.is_finite()).collect()
}

impl Scorecard {
    /// The card of one model; `None` where the study has neither sanity checks nor
    /// faithfulness measures (the headline is then the whole story it can tell).
    pub fn build(inputs: &CardInputs) -> Option<Scorecard> {
        if inputs.sanity.is_none() && inputs.faithfulness.is_none() {
            return None;
        }
        let mut columns = Vec::new();
        let mut cells: Vec<Vec<CardCell>> = vec![Vec::new(); inputs.methods.len()];
        let mut add = |column: CardColumn, of: &dyn Fn(&str) -> CardCell| {
            for (m, row) in inputs.methods.iter().zip(cells.iter_mut()) {
                row.push(of(m));
            }
            columns.push(column);
        };
        if let Some((words, eps)) = &inputs.ranked_by {
            let title = format!("{words} at ε = {} (strongest attack)", super::labels::epsilon(*eps));
            let of = |m: &str| {
                let found = inputs.ranking.iter().find(|(r, _, _)| r == m);
                found.map_or(CardCell::Missing, |(_, _, e)| CardCell::Value(*e, false))
            };
            add(CardColumn { title, better: Better::Higher }, &of);
        }
        let robust = |m: &str| -> Option<Estimate> {
            let r = inputs
                .summary
                .iter()
                .find(|r| r.method == m && r.attack == SAMPLING && r.metric == ROBUSTNESS_COLUMN)?;
            Some(Estimate { mean: r.mean?, low: r.ci_low, high: r.ci_high })
        };
        if inputs.methods.iter().any(|m| robust(m).is_some()) {
            let of = |m: &str| robust(m).map_or(CardCell::Missing, |e| CardCell::Value(e, false));
            add(
                CardColumn { title: "sampling robustness (avg sensitivity)".into(), better: Better::Lower },
                &of,
            );
        }
        if let Some(f) = inputs.faithfulness {
            faithfulness_columns(f, &mut add);
        }
        if let Some(s) = inputs.sanity {
            sanity_columns(s, &mut add);
        }
        let rows: Vec<(String, Vec<CardCell>)> = inputs.methods.iter().cloned().zip(cells).collect();
        let sentences = sentences(&columns, &rows, &inputs.ranking);
        Some(Scorecard { columns, rows, sentences })
    }

    /// The checks `method` fails, as words (`cascading randomisation (ssim 0.81 [0.77, 0.84])`).
    pub fn failures(&self, method: &str) -> Vec<String> {
        let Some((_, cells)) = self.rows.iter().find(|(m, _)| m == method) else { return Vec::new() };
        self.columns
            .iter()
            .zip(cells)
            .filter(|(_, c)| c.fails())
            .map(|(col, c)| format!("{} ({})", col.title, c.show().trim_end_matches(" ✗")))
            .collect()
    }

    /// The card's table as fixed-width text for the terminal (its sentences go with the
    /// headline's).
    pub fn table_text(&self) -> String {
        let mut t = String::from(
            "Scorecard: mean over images [95% bootstrap interval]; ✗ = fails the sanity check\n",
        );
        let width = self.rows.iter().map(|(m, _)| m.len()).max().unwrap_or(6).max(6);
        for (j, c) in self.columns.iter().enumerate() {
            let better = if c.better == Better::Higher { "higher is better" } else { "lower is better" };
            let _ = writeln!(t, "  [{}] {} ({better})", j + 1, c.title);
        }
        let _ = write!(t, "{:<width$}", "method");
        for j in 0..self.columns.len() {
            let _ = write!(t, "  {:<26}", format!("[{}]", j + 1));
        }
        t.push('\n');
        for (m, cells) in &self.rows {
            let _ = write!(t, "{m:<width$}");
            for c in cells {
                let _ = write!(t, "  {:<26}", c.show());
            }
            t.push('\n');
        }
        t.lines().map(str::trim_end).collect::<Vec<_>>().join("\n") + "\n"
    }

    /// The card's table as HTML (its sentences go with the headline's).
    pub fn table_html(&self) -> String {
        use super::index::escape;
        let mut h = String::from("<h3>Scorecard: robust, faithful, model-sensitive?</h3>\n");
        h.push_str("<table class=\"scorecard\"><tr><th>method</th>");
        for c in &self.columns {
            let better = if c.better == Better::Higher { "higher is better" } else { "lower is better" };
            let _ = write!(h, "<th>{}<br><small>{better}</small></th>", escape(&c.title));
        }
        h.push_str("</tr>\n");
        for (m, cells) in &self.rows {
            let _ = write!(h, "<tr><td>{}</td>", escape(m));
            for c in cells {
                let class = if c.fails() { " class=\"fails\"" } else { "" };
                let _ = write!(h, "<td{class}>{}</td>", escape(&c.show()));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n<p><small>✗ = fails the sanity check: similarity above ");
        let _ = writeln!(
            h,
            "{} after full randomisation or to a random class, or a map that moves under a compensated input shift.</small></p>",
            num(SIMILARITY_LIMIT)
        );
        h
    }
}

/// Adds a column: its heading and each method's cell.
type AddColumn<'a> = dyn FnMut(CardColumn, &dyn Fn(&str) -> CardCell) + 'a;

/// One column per faithfulness measure of `f`, in the order they appear.
fn faithfulness_columns(f: &CheckTable, add: &mut AddColumn) {
    let (Some(methods), Some(measures)) = (f.text("method"), f.text("measure")) else { return };
    for measure in f.distinct("measure") {
        let measure = measure.as_str();
        let better = crate::faithfulness::by_name(measure).map_or(Better::Higher, |m| m.better());
        let of = |method: &str| {
            let v = values_where(f, |i| methods[i] == method && measures[i] == measure);
            estimate(&v, method, measure).map_or(CardCell::Missing, |e| CardCell::Value(e, false))
        };
        add(CardColumn { title: measure.to_string(), better }, &of);
    }
}

/// The sanity columns of `s`: cascading after the last step, random logit, input invariance.
fn sanity_columns(s: &CheckTable, add: &mut AddColumn) {
    let (Some(methods), Some(tests), Some(sims), Some(steps)) =
        (s.text("method"), s.text("test"), s.text("similarity"), s.counts("step"))
    else {
        return;
    };
    let has = |sim: &str| sims.iter().any(|x| x == sim);
    let shown = if has(PREFERRED_SIMILARITY) {
        PREFERRED_SIMILARITY.to_string()
    } else {
        sims.iter().find(|x| *x != super::checks::INVARIANCE_SIMILARITY).cloned().unwrap_or_default()
    };
    for (test, title) in [("cascading", "cascading randomisation"), ("random_logit", "random logit")] {
        if !tests.iter().any(|t| t == test) {
            continue;
        }
        let last = (0..s.len()).filter(|&i| tests[i] == test).map(|i| steps[i]).max().unwrap_or(0);
        let column = format!("{title} ({shown})");
        let of = |method: &str| {
            let v = values_where(s, |i| {
                methods[i] == method && tests[i] == test && sims[i] == shown && steps[i] == last
            });
            estimate(&v, method, &column)
                .map_or(CardCell::Missing, |e| CardCell::Value(e, e.mean > SIMILARITY_LIMIT))
        };
        add(CardColumn { title: column.clone(), better: Better::Lower }, &of);
    }
    if tests.iter().any(|t| t == "input_invariance") {
        let of = |method: &str| {
            let v = values_where(s, |i| methods[i] == method && tests[i] == "input_invariance");
            if v.is_empty() {
                return CardCell::Missing;
            }
            let moved = v.iter().filter(|&&d| d > crate::sanity::TOLERANCE).count();
            CardCell::Verdict { moved, of: v.len() }
        };
        add(CardColumn { title: "input invariance".into(), better: Better::Higher }, &of);
    }
}

/// The card's sentences: the least fragile method's sanity verdict, and the other methods at
/// least as robust as the median that fail a check; without a ranking, the methods that fail.
fn sentences(columns: &[CardColumn], rows: &[(String, Vec<CardCell>)], ranking: &Ranking) -> Vec<String> {
    let fails = |m: &str| -> Vec<String> {
        let Some((_, cells)) = rows.iter().find(|(r, _)| r == m) else { return Vec::new() };
        columns.iter().zip(cells).filter(|(_, c)| c.fails()).map(|(col, _)| col.title.clone()).collect()
    };
    let mut out = Vec::new();
    if let Some((best, attack, e)) = ranking.last() {
        let f = fails(best);
        out.push(if f.is_empty() {
            format!("{best}, the least fragile method ({} under {attack}), passes every sanity check run.", e.show())
        } else {
            format!(
                "{best} is the least fragile method ({} under {attack}), but it fails {}: robustness alone does not make it an explanation of the model.",
                e.show(),
                f.join(" and ")
            )
        });
        // The robust half of the ranking (least fragile last), other than the best.
        let robust: Vec<String> = ranking[ranking.len() / 2..ranking.len() - 1]
            .iter()
            .filter(|(m, _, _)| !fails(m).is_empty())
            .map(|(m, _, _)| format!("{m} ({})", fails(m).join(", ")))
            .collect();
        if !robust.is_empty() {
            out.push(format!(
                "Also among the less fragile half but failing a sanity check: {}.",
                robust.join("; ")
            ));
        }
    } else {
        let failing: Vec<String> = rows
            .iter()
            .filter(|(m, _)| !fails(m).is_empty())
            .map(|(m, _)| format!("{m} ({})", fails(m).join(", ")))
            .collect();
        if !failing.is_empty() {
            out.push(format!("Failing a sanity check: {}.", failing.join("; ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::checks::{Cell, CheckKind};

    /// Sanity rows: per method, 4 images at cascading step 1 and 2 (ssim `last` at step 2)
    /// and input invariance `moved` (relative L1 per image).
    fn sanity(rows: &[(&str, f64, [f64; 4])]) -> CheckTable {
        let mut t = CheckTable::new(CheckKind::Sanity, false);
        for &(method, last, moved) in rows {
            for image in 0..4u32 {
                for (step, v) in [(1, 0.9), (2, last)] {
                    let cells = [
                        Cell::Count(image),
                        Cell::Text(method),
                        Cell::Text("cascading"),
                        Cell::Count(step),
                        Cell::Text("fc"),
                        Cell::Text("ssim"),
                        Cell::Number(Some(v)),
                    ];
                    t.push("", &cells).unwrap();
                }
                let cells = [
                    Cell::Count(image),
                    Cell::Text(method),
                    Cell::Text("input_invariance"),
                    Cell::Count(0),
                    Cell::Text(""),
                    Cell::Text(crate::report::checks::INVARIANCE_SIMILARITY),
                    Cell::Number(Some(moved[image as usize])),
                ];
                t.push("", &cells).unwrap();
            }
        }
        t
    }

    fn ranked(method: &str, mean: f64) -> (String, String, Estimate) {
        (
            method.into(),
            "top_k → gradient".into(),
            Estimate { mean, low: Some(mean - 0.01), high: Some(mean + 0.01) },
        )
    }

    #[test]
    fn the_least_fragile_method_is_named_with_the_sanity_check_it_fails() {
        let s = sanity(&[("gradient", 0.1, [0.0; 4]), ("guided_backprop", 0.8, [0.0, 0.0, 0.5, 0.0])]);
        let inputs = CardInputs {
            methods: vec!["gradient".into(), "guided_backprop".into()],
            ranking: vec![ranked("gradient", 0.3), ranked("guided_backprop", 0.7)],
            ranked_by: Some(("top-100 intersection".into(), 0.1)),
            summary: &[],
            sanity: Some(&s),
            faithfulness: None,
        };
        let card = Scorecard::build(&inputs).unwrap();
        let titles: Vec<&str> = card.columns.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "top-100 intersection at ε = 0.1 (strongest attack)",
                "cascading randomisation (ssim)",
                "input invariance"
            ]
        );
        // The last step's similarity, not the first's.
        assert_eq!(
            card.rows[0].1[1],
            CardCell::Value(Estimate { mean: 0.1, low: Some(0.1), high: Some(0.1) }, false)
        );
        assert_eq!(card.rows[1].1[2], CardCell::Verdict { moved: 1, of: 4 });
        let s0 = &card.sentences[0];
        assert!(s0.starts_with("guided_backprop is the least fragile method"), "{s0}");
        assert!(s0.contains("cascading randomisation (ssim) and input invariance"), "{s0}");
        assert_eq!(card.failures("gradient"), Vec::<String>::new());
        assert_eq!(card.failures("guided_backprop").len(), 2);
        assert!(card.table_text().contains("fail (1 of 4 images) ✗"), "{}", card.table_text());
    }

    #[test]
    fn a_least_fragile_method_that_passes_is_said_to_and_without_checks_there_is_no_card() {
        let s = sanity(&[("gradient", 0.1, [0.0; 4]), ("smoothgrad", 0.2, [0.0; 4])]);
        let mut inputs = CardInputs {
            methods: vec!["gradient".into(), "smoothgrad".into()],
            ranking: vec![ranked("gradient", 0.3), ranked("smoothgrad", 0.6)],
            ranked_by: Some(("top-100 intersection".into(), 0.1)),
            summary: &[],
            sanity: Some(&s),
            faithfulness: None,
        };
        let card = Scorecard::build(&inputs).unwrap();
        assert!(card.sentences[0].contains("smoothgrad, the least fragile method"), "{:?}", card.sentences);
        assert!(card.sentences[0].contains("passes every sanity check run"));
        inputs.sanity = None;
        assert!(Scorecard::build(&inputs).is_none());
    }
}

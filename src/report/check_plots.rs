//! The figures of the checks, beside the fragility charts in `plots/`:
//!
//! - `sanity_cascading.png`: Adebayo et al.'s Figure 2 — the similarity of each method's maps
//!   to the trained model's maps as the layers are re-initialised from the logits down (x = how
//!   many layers; 0 = the trained model, similarity 1), one panel per similarity, one line per
//!   method over its 95% bootstrap band;
//! - `sanity_independent.png`: the same with one layer re-initialised at a time (x = which
//!   layer, from the logits down);
//! - `faithfulness_curves.png`: each faithfulness measure's mean curve (the model's score for
//!   the class as the pixels the map ranks first are perturbed), one panel per measure.
//!
//! In a study of several models each figure is drawn per model (`sanity_cascading.<label>.png`).
//! The figures are drawn by [`super::plot`]'s chart (as summary rows whose "ε" is the x
//! value), so they share its colours, bands and legibility rules.

use super::checks::{CheckKind, CheckTable};
use super::plot::{distinct, render_worded, write_rendered, ChartWords};
use super::scorecard::mean_interval;
use super::summary::SummaryRow;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// One figure: its file stem, words, and which rows it draws.
struct Figure {
    stem: &'static str,
    kind: CheckKind,
    /// The sanity test it draws (sanity figures only).
    test: Option<&'static str>,
    title: &'static str,
    axis: &'static str,
    x_axis: &'static str,
}

const FIGURES: [Figure; 3] = [
    Figure {
        stem: "sanity_cascading",
        kind: CheckKind::Sanity,
        test: Some("cascading"),
        title: "Cascading randomisation (Adebayo et al. 2018): lower = more model-sensitive",
        axis: "similarity to the trained model's map",
        x_axis: "layers re-initialised, from the logits down (0 = trained)",
    },
    Figure {
        stem: "sanity_independent",
        kind: CheckKind::Sanity,
        test: Some("independent"),
        title: "Independent randomisation, one layer at a time: lower = more model-sensitive",
        axis: "similarity to the trained model's map",
        x_axis: "layer re-initialised, counted from the logits (0 = trained)",
    },
    Figure {
        stem: "faithfulness_curves",
        kind: CheckKind::Curves,
        test: None,
        title: "Faithfulness curves: the class's score as the top-ranked pixels are perturbed",
        axis: "score of the class (mean over images)",
        x_axis: "fraction of the image perturbed",
    },
];

/// The figure's file for model `label` (empty: a study of one model).
fn file(out: &Path, stem: &str, label: &str) -> PathBuf {
    let name = if label.is_empty() { format!("{stem}.png") } else { format!("{stem}.{label}.png") };
    out.join("plots").join(name)
}

/// The chart rows of `figure` from `table` (one model's rows): per panel (similarity or
/// measure), method and x, the mean over images with its bootstrap interval.
fn chart_rows(figure: &Figure, table: &CheckTable) -> Vec<SummaryRow> {
    let (Some(methods), Some(steps)) = (table.text("method"), table.counts("step")) else {
        return Vec::new();
    };
    let (panel_column, value_column) = match figure.kind {
        CheckKind::Sanity => ("similarity", "value"),
        _ => ("measure", "score"),
    };
    let (Some(panels), Some(values)) = (table.text(panel_column), table.numbers(value_column)) else {
        return Vec::new();
    };
    let x_of = |i: usize| match figure.kind {
        CheckKind::Sanity => f64::from(steps[i]),
        _ => table.numbers("fraction").and_then(|f| f[i]).unwrap_or(f64::NAN),
    };
    let keep = |i: usize| figure.test.is_none_or(|t| table.text("test").is_some_and(|c| c[i] == t));
    // (panel, method, x) → the values, in order of first appearance.
    type Key<'k> = (&'k str, &'k str, f64);
    let mut groups: Vec<(Key, Vec<f64>)> = Vec::new();
    for i in (0..table.len()).filter(|&i| keep(i)) {
        let key = (panels[i].as_str(), methods[i].as_str(), x_of(i));
        let Some(v) = values[i].filter(|v| v.is_finite()) else { continue };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, vs)) => vs.push(v),
            None => groups.push((key, vec![v])),
        }
    }
    // A measure whose points all sit at one x (faithfulness correlation's runs, infidelity's
    // samples) has no curve to draw.
    let spread = |panel: &str| {
        let mut xs = groups.iter().filter(|((p, _, _), _)| *p == panel).map(|((_, _, x), _)| *x);
        xs.next().is_some_and(|first| xs.any(|x| x != first))
    };
    let flat: Vec<&str> = groups.iter().map(|((p, _, _), _)| *p).filter(|p| !spread(p)).collect();
    groups.retain(|((p, _, _), _)| !flat.contains(p));
    let mut rows: Vec<SummaryRow> = Vec::new();
    if figure.kind == CheckKind::Sanity {
        // The trained model's map is identical to itself: every line starts at 1.
        let starts: Vec<(&str, &str)> =
            groups.iter().map(|((p, m, _), _)| (*p, *m)).fold(Vec::new(), |mut v, k| {
                if !v.contains(&k) {
                    v.push(k);
                }
                v
            });
        rows.extend(starts.into_iter().map(|(p, m)| row(p, m, 0.0, &[1.0], figure.stem)));
    }
    rows.extend(groups.iter().map(|((p, m, x), vs)| row(p, m, *x, vs, figure.stem)));
    rows
}

/// A chart row: panel `panel`, line `method`, at `x`, the mean of `values` with its interval.
fn row(panel: &str, method: &str, x: f64, values: &[f64], chart: &str) -> SummaryRow {
    let key = [crate::seed::hash_str(panel), crate::seed::hash_str(method), x.to_bits()];
    let e = mean_interval(values, crate::seed::derive(0, &key));
    SummaryRow {
        model: String::new(),
        method: method.to_string(),
        attack: panel.to_string(),
        target_method: None,
        epsilon: x,
        metric: chart.to_string(),
        n: values.len() as u32,
        nulls: 0,
        mean: e.map(|e| e.mean),
        std: None,
        median: None,
        ci_low: e.and_then(|e| e.low),
        ci_high: e.and_then(|e| e.high),
        label_kept_rate: 1.0,
    }
}

/// The models of `tables` (the empty label of a study of one model).
fn labels(tables: &[CheckTable]) -> Vec<String> {
    distinct(tables.iter().flat_map(|t| t.models()), |m| m.as_str()).into_iter().map(String::from).collect()
}

/// Each figure `tables` can draw, with its file in `out` and its chart rows.
fn figures(out: &Path, tables: &[CheckTable]) -> Vec<(PathBuf, &'static Figure, Vec<SummaryRow>)> {
    let mut found = Vec::new();
    for label in labels(tables) {
        for figure in &FIGURES {
            let Some(table) = tables.iter().find(|t| t.kind == figure.kind) else { continue };
            let rows = chart_rows(figure, &table.of_model(&label));
            if rows.iter().any(|r| r.epsilon > 0.0 || figure.kind == CheckKind::Curves) {
                found.push((file(out, figure.stem, &label), figure, rows));
            }
        }
    }
    found
}

/// The files [`write_check_plots`] writes for `tables` into `out` (PNG and SVG of each).
pub fn check_plot_files(out: &Path, tables: &[CheckTable]) -> Vec<PathBuf> {
    figures(out, tables).into_iter().flat_map(|(p, _, _)| [p.with_extension("svg"), p]).collect()
}

/// Draws every figure `tables` can draw into `out/plots/` (PNG and SVG, atomically).
pub fn write_check_plots(out: &Path, tables: &[CheckTable]) -> Result<()> {
    for (path, figure, rows) in figures(out, tables) {
        let words = ChartWords {
            title: figure.title.to_string(),
            axis: figure.axis.to_string(),
            lines: "method",
            x_axis: figure.x_axis,
        };
        let image = render_worded(&rows, figure.stem, &words)
            .map_err(|message| Error::Plot { path: path.clone(), message })?;
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
        }
        write_rendered(&path, &image)?;
    }
    Ok(())
}

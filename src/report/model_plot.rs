//! The comparison charts of a study of several models, `plots/models-<kind>.png` (and `.svg`).
//!
//! Each model's own charts (`plots/<metric>.<label>.png`) show its methods; which model's maps
//! move more must then be read across figures. A comparison chart answers it in one: for a
//! metric of the side-by-side headline ([`super::models::side_metrics`]: the top-k
//! intersection whatever each model's k, Spearman, the center shift), the mean against ε with
//! one panel per attacked method under its steered attack (the ★ rows) and one line per model
//! over its 95% bootstrap band. It is [`super::plot`]'s chart with the models in the place of
//! the methods, so it follows the same legibility rules; a model has the same colour in every
//! comparison chart (the models' order).
//!
//! File names: `models-` and the metric's kind (`models-top-k.png`, `models-spearman.png`);
//! a kind never holds a dot and the `-` is in no metric column's name, so no per-model chart
//! (`<metric>.<label>.png`) can take the name.

use super::models::{model_columns, side_metrics, SideMetric, TOP_K_KIND};
use super::plot::{render_worded, write_rendered, ChartWords};
use super::summary::{SummaryRow, SAMPLING};
use super::SampleTable;
use crate::error::{Error, Result};
use std::path::Path;

/// The file name of the comparison chart of `metric` (PNG; the SVG beside it).
pub fn chart_file(metric: &SideMetric) -> String {
    format!("models-{}.png", chart_kind(metric))
}

/// The kind of `metric`: [`TOP_K_KIND`] or its one column.
fn chart_kind(metric: &SideMetric) -> &str {
    metric.columns.iter().flatten().next().map_or(TOP_K_KIND, |c| super::models::kind(c))
}

/// Whether the study attacks a method's own map with model `model`'s images.
fn attacks_own_map(table: &SampleTable, model: &str) -> bool {
    table.rows.iter().any(|r| {
        r.model == model && r.attack != SAMPLING && r.target_method.as_deref() == Some(r.method.as_str())
    })
}

/// The metrics with a comparison chart in a study of `table`: those of the side-by-side headline
/// for which some model that has the metric attacks a method's own map; none for a study of
/// one model.
pub fn charts(table: &SampleTable) -> Vec<SideMetric> {
    if table.model_metrics.is_empty() {
        return Vec::new();
    }
    let models = table.models();
    let attacked: Vec<bool> = models.iter().map(|m| attacks_own_map(table, m)).collect();
    side_metrics(&model_columns(table))
        .into_iter()
        .filter(|m| m.columns.iter().zip(&attacked).any(|(c, a)| c.is_some() && *a))
        .collect()
}

/// The rows a comparison chart draws: each model's ★ rows of its column of `metric`, named by
/// the model in the place of the method and by the attack's label (`top_k → gradient`, which
/// names the attacked method) in the place of the attack.
fn chart_rows(summary: &[SummaryRow], metric: &SideMetric, models: &[&str]) -> Vec<SummaryRow> {
    let mut out = Vec::new();
    for (model, column) in models.iter().zip(&metric.columns) {
        let Some(column) = column else { continue };
        let own = |r: &&SummaryRow| {
            r.model == *model
                && r.metric == *column
                && r.attack != SAMPLING
                && r.target_method.as_deref() == Some(r.method.as_str())
        };
        out.extend(summary.iter().filter(own).map(|r| SummaryRow {
            method: model.to_string(),
            attack: r.attack_label(),
            target_method: None,
            metric: chart_kind(metric).to_string(),
            ..r.clone()
        }));
    }
    out
}

/// Draws the comparison chart of `metric` from the summary of a study of `models` and writes
/// it to `path` as PNG and beside it as SVG, atomically. Fails with [`Error::Plot`] when no
/// model has a ★ row of the metric.
pub fn plot_models(path: &Path, summary: &[SummaryRow], metric: &SideMetric, models: &[&str]) -> Result<()> {
    let rows = chart_rows(summary, metric, models);
    let words = ChartWords {
        title: format!("{} by model ({})", metric.words(), super::plot::direction_text(metric.direction)),
        axis: metric.name.clone(),
        lines: "model",
        x_axis: super::plot::X_LABEL,
    };
    let image = render_worded(&rows, chart_kind(metric), &words)
        .map_err(|message| Error::Plot { path: path.to_path_buf(), message })?;
    write_rendered(path, &image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::table::tests::two_model_table;

    #[test]
    fn a_comparison_chart_draws_one_line_per_model_of_the_attacked_rows() {
        let table = two_model_table();
        let summary = crate::report::summarize(&table);
        // Spearman is the one metric both models have; center_shift_px is a's alone, and a
        // attacks gradient's map too, so it has a chart with one line.
        let charts = charts(&table);
        let files: Vec<String> = charts.iter().map(chart_file).collect();
        assert_eq!(files, ["models-spearman.png", "models-center_shift_px.png"]);
        let rows = chart_rows(&summary, &charts[0], &table.models());
        let lines: Vec<(&str, &str)> = rows.iter().map(|r| (r.method.as_str(), r.attack.as_str())).collect();
        assert_eq!(lines, [("a", "top_k → gradient"), ("b", "top_k → gradient")]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(&files[0]);
        plot_models(&path, &summary, &charts[0], &table.models()).unwrap();
        let svg = std::fs::read_to_string(path.with_extension("svg")).unwrap();
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>')?.1.split_once("</text>"))
            .map(|t| t.0.trim())
            .collect();
        assert!(texts.contains(&"Spearman rank correlation by model (higher = more similar)"), "{texts:?}");
        assert!(texts.contains(&"model") && texts.contains(&"a") && texts.contains(&"b"), "{texts:?}");
        // No chart for a study of one model.
        assert!(super::charts(&crate::report::table::tests::example_table()).is_empty());
    }
}

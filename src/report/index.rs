//! The function that (re)writes every derived output of a study from its sample table:
//! `summary.parquet`, the plots (PNG and SVG), the headline and `index.html` (whose HTML is
//! [`super::page`]'s).
//!
//! [`write_derived`] is shared by `fragility run` (after the rows are computed) and
//! `fragility report DIR` (from `samples.parquet` alone): summary, plots and page always come
//! from the same code, so a regenerated report equals the original.

use super::checks::{read_checks, CheckTable};
use super::models::StudyHeadline;
use super::page::{index_html, PlotEntry, PlotSet};
use super::{plot_metric, summarize, write_summary, SampleTable, SummaryRow};
use crate::atomic;
use crate::error::Result;
use crate::manifest::{Kind, Manifest};
use std::path::{Path, PathBuf};

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The plotted columns: every metric and every `<measure>_after` (the `_before` columns are
/// flat lines at the clean value).
pub fn plotted_columns(table: &SampleTable) -> Vec<(String, crate::metric::Direction)> {
    table
        .metric_columns
        .iter()
        .zip(&table.directions)
        .filter(|(c, _)| !c.ends_with("_before"))
        .map(|(c, d)| (c.clone(), *d))
        .collect()
}

/// What [`write_derived`] computed and wrote.
#[derive(Debug, Clone)]
pub struct Derived {
    /// The summary rows (also in `summary.parquet`).
    pub summary: Vec<SummaryRow>,
    /// The headline (the top of the page, and what a run prints): of one model, or of
    /// several side by side.
    pub headline: StudyHeadline,
    /// The files written, the page last.
    pub files: Vec<PathBuf>,
}

/// `path` without `.` components and with each `..` cancelling the component before it (on
/// the text alone: `experiments/../reports/x` is `reports/x`), for showing paths to a user.
pub fn tidy_path(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}

/// The labels whose rows have their own plots: the models of a study of several models, the
/// one empty label of a study of one model.
fn plotted_models(table: &SampleTable) -> Vec<String> {
    if table.model_metrics.is_empty() {
        vec![String::new()]
    } else {
        table.models().iter().map(|m| m.to_string()).collect()
    }
}

/// The plots of `table` (the table of one model, its rows labelled `model`): one per plotted
/// column, with its per-image distribution where there is any label-kept finite value to show.
fn plot_entries_of(table: &SampleTable, model: &str) -> Vec<PlotEntry> {
    plotted_columns(table)
        .into_iter()
        .map(|(column, direction)| {
            let j = table.metric_columns.iter().position(|c| *c == column);
            let distribution = table
                .rows
                .iter()
                .any(|r| r.label_kept && j.and_then(|j| r.metrics[j]).is_some_and(f64::is_finite));
            PlotEntry { column, direction, distribution, model: model.to_string() }
        })
        .collect()
}

/// The plots of `table`: each model's (see [`plot_entries_of`]), in the models' order, and the
/// comparison charts of a study of several models.
fn plot_set(table: &SampleTable) -> PlotSet {
    let models = plotted_models(table);
    if table.rows.is_empty() {
        // A study of sanity checks or faithfulness alone: no attack, nothing against ε.
        return PlotSet { entries: Vec::new(), charts: Vec::new(), models };
    }
    let entries = if table.model_metrics.is_empty() {
        plot_entries_of(table, "")
    } else {
        models.iter().flat_map(|m| plot_entries_of(&table.of_model(m), m)).collect()
    };
    PlotSet { entries, charts: super::model_plot::charts(table), models }
}

/// The files [`write_derived`] writes for `table` into `out`, in its order (the page last).
pub fn derived_paths(out: &Path, table: &SampleTable, checks: &[CheckTable]) -> Vec<PathBuf> {
    let mut files = vec![out.join("summary.parquet")];
    let plots = plot_set(table);
    for e in &plots.entries {
        let p = out.join("plots").join(e.file());
        files.extend([p.with_extension("svg"), p]);
        if e.distribution {
            let d = out.join("plots").join(e.distribution_file());
            files.extend([d.with_extension("svg"), d]);
        }
    }
    for chart in &plots.charts {
        let p = out.join("plots").join(super::model_plot::chart_file(chart));
        files.extend([p.with_extension("svg"), p]);
    }
    files.extend(super::check_plots::check_plot_files(out, checks));
    files.push(out.join("index.html"));
    files
}

/// The summary rows of `model` (all rows for the empty label of a study of one model).
fn rows_of(summary: &[SummaryRow], model: &str) -> Vec<SummaryRow> {
    summary.iter().filter(|r| r.model == model).cloned().collect()
}

/// Writes every chart of `plots` into `out/plots/`: each model's metric and distribution
/// charts, then the comparison charts.
fn write_plots(out: &Path, table: &SampleTable, summary: &[SummaryRow], plots: &PlotSet) -> Result<()> {
    for model in &plots.models {
        let (mine, rows) = (table.of_model(model), rows_of(summary, model));
        for e in plots.entries.iter().filter(|e| e.model == *model) {
            plot_metric(&out.join("plots").join(e.file()), &rows, &e.column, e.direction)?;
            if e.distribution {
                let d = out.join("plots").join(e.distribution_file());
                super::distribution::plot_distribution(&d, &mine, &e.column, e.direction)?;
            }
        }
    }
    let models: Vec<&str> = plots.models.iter().map(String::as_str).collect();
    for chart in &plots.charts {
        let p = out.join("plots").join(super::model_plot::chart_file(chart));
        super::model_plot::plot_models(&p, summary, chart, &models)?;
    }
    Ok(())
}

/// Writes `summary.parquet`, the plots (`plots/<column>.png`, for several models
/// `plots/<column>.<label>.png` and `plots/models-<kind>.png`) and `index.html` into `out`
/// from `table`; `run` is the content of `run.json` if known (its settings go into the page).
pub fn write_derived(out: &Path, table: &SampleTable, run: Option<&serde_json::Value>) -> Result<Derived> {
    let summary = summarize(table);
    let checks = read_checks(out, table.study.as_deref())?;
    let headline = StudyHeadline::build(&summary, table)
        .with_caveats(super::caveats::caveats(run))
        .with_checks(&summary, table, &checks);
    write_summary(&out.join("summary.parquet"), &summary, table.study.as_deref())?;
    let plots = plot_set(table);
    write_plots(out, table, &summary, &plots)?;
    super::check_plots::write_check_plots(out, &checks)?;
    let check_figures: Vec<String> = super::check_plots::check_plot_files(out, &checks)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let page = out.join("index.html");
    let figures = (&example_files(out, table)[..], &check_figures[..]);
    let html = index_html(out, table, &summary, &headline, &plots, figures, run);
    atomic::write_bytes(&page, html.as_bytes())?;
    Ok(Derived { summary, headline, files: derived_paths(out, table, &checks) })
}

/// [`write_derived`] into a folder of ours: its files are recorded in `manifest` before they
/// are written (refusing one that is not ours), and plots of ours that this table no longer
/// draws (an earlier study's) are removed, file by file.
pub fn write_derived_owned(
    manifest: &mut Manifest,
    table: &SampleTable,
    run: Option<&serde_json::Value>,
) -> Result<Derived> {
    let out = manifest.dir().to_path_buf();
    let checks = read_checks(&out, table.study.as_deref())?;
    let rels: Vec<String> = derived_paths(&out, table, &checks).iter().map(|p| manifest.rel(p)).collect();
    manifest.claim(&rels)?;
    let derived = write_derived(&out, table, run)?;
    let stale: Vec<String> = manifest
        .files()
        .filter(|f| f.starts_with("plots/") && !rels.iter().any(|r| r == f))
        .map(String::from)
        .collect();
    for f in stale {
        manifest.remove(&f)?;
    }
    Ok(derived)
}

/// The PNG files in `out/examples/` (the run's figure-1 panels): steered attacks before
/// random baselines, each by attack in the table's order, then by image; files the table does not explain come last, by name. None if the
/// folder does not exist.
fn example_files(out: &Path, table: &SampleTable) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(out.join("examples"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    let mut attacks: Vec<(bool, String)> = Vec::new();
    let mut images: Vec<u32> = Vec::new();
    for r in &table.rows {
        let label =
            (r.target_method.is_none(), super::summary::attack_label(&r.attack, r.target_method.as_deref()));
        if !attacks.contains(&label) {
            attacks.push(label);
        }
        if !images.contains(&r.image_id) {
            images.push(r.image_id);
        }
    }
    images.sort_unstable();
    // Steered attacks first (the paper's figure 1 shows one), each in the study's order.
    attacks.sort_by_key(|(random, _)| *random);
    let mut ordered: Vec<String> = Vec::new();
    for (_, a) in &attacks {
        for &i in &images {
            let f = super::figure::example_file(a, i as usize);
            if names.contains(&f) {
                ordered.push(f);
            }
        }
    }
    let rest: Vec<String> = names.into_iter().filter(|n| !ordered.contains(n)).collect();
    ordered.extend(rest);
    ordered
}

/// `fragility report DIR`: reads `DIR/samples.parquet` (and `DIR/run.json` if present), checks
/// that both come from the same study ([`super::images::check_same_study`]), and rewrites the
/// derived outputs with [`write_derived_owned`]: only over files of ours (a page or summary
/// someone else wrote there is refused before anything is read).
pub fn regenerate(dir: &Path) -> Result<Derived> {
    crate::manifest::check_out_dir(dir, "DIR")?;
    let samples = dir.join("samples.parquet");
    if !samples.is_file() {
        return Err(crate::error::Error::data(
            dir,
            "no samples.parquet here: give the output folder of a finished run",
        ));
    }
    // Not while a run or a merge writes into the folder, and only over files of ours.
    let (_lock, mut manifest) = Manifest::take(dir, Kind::Study, "DIR", &["summary.parquet", "index.html"])?;
    manifest.remove_leftovers()?;
    let table = super::read_samples(&samples)?;
    let run_json = dir.join("run.json");
    let run = if run_json.is_file() { Some(super::images::read_record(&run_json)?) } else { None };
    if let Some(meta) = &run {
        super::images::check_same_study(&samples, table.study.as_deref(), &run_json, meta)?;
    }
    write_derived_owned(&mut manifest, &table, run.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_leaves_the_list_of_images_to_run_json() {
        let dir = tempfile::tempdir().unwrap();
        let table = crate::report::table::tests::example_table();
        let run = serde_json::json!({
            "settings": { "seed": 42 },
            "images": { "ids": [0, 1, 2], "list": [{ "id": 0, "source": "only-in-run-json.png", "hash": "0" }] },
        });
        write_derived(dir.path(), &table, Some(&run)).unwrap();
        let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
        assert!(!html.contains("only-in-run-json.png"));
        assert!(html.contains("each image&#39;s source and hash: see run.json"), "{html}");
    }

    /// A folder holding the two-model table's samples.parquet and a run.json of its study.
    fn two_model_study(dir: &Path) -> SampleTable {
        let table = crate::report::table::tests::two_model_table();
        crate::report::write_samples(&dir.join("samples.parquet"), &table).unwrap();
        let run = serde_json::json!({
            "fingerprint": table.study,
            "settings": { "seed": 42, "models": [{ "label": "a", "name": "resnet20" }, { "label": "b", "name": "b" }] },
            "images": { "studied": 3, "requested": 3, "eligible": 3, "in_file": 3, "models": [
                { "label": "a", "eligible": 3, "predictions": { "accuracy": 1.0 } },
                { "label": "b", "eligible": 3, "predictions": { "accuracy": 1.0 } },
            ] },
        });
        std::fs::write(dir.join("run.json"), run.to_string()).unwrap();
        table
    }

    #[test]
    fn a_study_of_several_models_shows_each_models_plots_side_by_side() {
        let dir = tempfile::tempdir().unwrap();
        let table = two_model_study(dir.path());
        let run = crate::report::images::read_record(&dir.path().join("run.json")).unwrap();
        std::fs::create_dir_all(dir.path().join("examples")).unwrap();
        std::fs::write(dir.path().join("examples/b.top_k-gradient_image2.png"), b"png").unwrap();
        let derived = write_derived(dir.path(), &table, Some(&run)).unwrap();
        let plots = dir.path().join("plots");
        // b has no center shift column: no chart of it; no chart without a model's label.
        for f in ["spearman.a.png", "spearman.b.svg", "center_shift_px.a.png", "spearman_distribution.b.png"]
        {
            assert!(plots.join(f).is_file(), "{f}");
        }
        for f in ["center_shift_px.b.png", "spearman.png"] {
            assert!(!plots.join(f).exists(), "{f}");
        }
        assert!(plots.join("models-spearman.png").is_file() && plots.join("models-spearman.svg").is_file());
        assert!(derived.files.iter().all(|f| f.exists()));
        assert_eq!(derived.files, derived_paths(dir.path(), &table, &[]));
        assert!(matches!(derived.headline, StudyHeadline::Several(_)));
        let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
        // One row per metric, the models' charts side by side in it.
        let row = html.split("<div class=\"models\">").nth(1).unwrap().split("</div>").next().unwrap();
        let (a, b) = (
            row.find("src=\"plots/spearman.a.png\"").unwrap(),
            row.find("src=\"plots/spearman.b.png\"").unwrap(),
        );
        assert!(a < b, "{row}");
        assert!(html.contains("<figcaption><b>a</b>: <b>Spearman rank correlation</b> against ε"));
        assert!(html.contains("<img src=\"plots/models-spearman.png\""));
        assert!(
            html.contains("of the models <code>a</code> (resnet20), <code>b</code>"),
            "what was measured"
        );
        assert!(html.contains("<h3 id=\"models\">Models side by side</h3>"));
        // An example panel names its model, attack and image.
        assert!(
            html.contains("Model <code>b</code>, image 2, attack <code>top_k-gradient</code>"),
            "example caption"
        );
        assert!(html.contains("<thead><tr><th>model</th><th>method</th>"));
        assert!(html.contains("classified correctly by every model") || html.contains("n = 3 images"));
        assert_eq!(html.matches("<tr><td class=\"t\">").count(), derived.summary.len());
    }

    #[test]
    fn report_regenerates_a_study_of_several_models() {
        let dir = tempfile::tempdir().unwrap();
        two_model_study(dir.path());
        let derived = regenerate(dir.path()).unwrap();
        assert!(derived.summary.iter().any(|r| r.model == "b"));
        let summary = crate::report::read_summary(&dir.path().join("summary.parquet")).unwrap();
        assert_eq!(summary, derived.summary);
        assert!(dir.path().join("plots/center_shift_px_distribution.a.svg").is_file());
        // Again, over its own files; a plot of ours that the table no longer draws goes.
        let mut manifest = Manifest::open(dir.path(), Kind::Study, "DIR").unwrap();
        manifest.claim(&["plots/old.a.png".to_string()]).unwrap();
        drop(manifest);
        std::fs::write(dir.path().join("plots/old.a.png"), b"png").unwrap();
        let again = regenerate(dir.path()).unwrap();
        assert_eq!(again.files, derived.files);
        assert!(!dir.path().join("plots/old.a.png").exists());
        assert!(again.headline.text().contains("=== Model b ==="));
    }

    #[test]
    fn escape_covers_the_five_characters() {
        assert_eq!(escape(r#"<a href="x">&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn page_links_every_plot_relatively_and_lists_every_summary_row() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("study<1>");
        let table = crate::report::table::tests::example_table();
        let run =
            serde_json::json!({ "settings": { "seed": 42, "note": "<b>", "model": { "name": "cnn" } } });
        let derived = write_derived(&out, &table, Some(&run)).unwrap();
        let html = std::fs::read_to_string(out.join("index.html")).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
        assert!(html.contains("<title>study&lt;1&gt;</title>"), "title not escaped");
        for column in ["spearman", "center_shift_px"] {
            assert!(html.contains(&format!("<img src=\"plots/{column}.png\"")), "{column}");
            assert!(out.join("plots").join(format!("{column}.png")).exists());
            let svg = std::fs::read_to_string(out.join("plots").join(format!("{column}.svg"))).unwrap();
            assert!(svg.starts_with("<svg"), "{column}.svg");
        }
        assert_eq!(html.matches("<tr><td").count(), derived.summary.len());
        assert!(html.contains("&lt;b&gt;") && !html.contains("<b>\""), "settings not escaped");
        assert!(!html.contains("src=\"/") && !html.contains("http"), "only relative links");
        // summary, 2 metric plots and 2 distribution plots (each PNG and SVG), page.
        assert_eq!(derived.files.len(), 1 + 2 * 2 + 2 * 2 + 1);
        assert!(derived.files.iter().all(|f| f.exists()));
        assert!(html.contains("<img src=\"plots/spearman_distribution.png\""));
    }

    #[test]
    fn page_sections_come_in_reading_order() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("fragility");
        let table = crate::report::table::tests::example_table();
        std::fs::create_dir_all(out.join("examples")).unwrap();
        std::fs::write(out.join("examples/top_k-gradient_image3.png"), b"png").unwrap();
        let run = serde_json::json!({ "settings": { "model": { "name": "fmnist_cnn" } } });
        write_derived(&out, &table, Some(&run)).unwrap();
        let html = std::fs::read_to_string(out.join("index.html")).unwrap();
        assert!(html.contains("<title>fragility</title>") && html.contains("<h1>fragility</h1>"));
        assert!(html.contains("model <code>fmnist_cnn</code>"), "what was measured");
        let at = |needle: &str| html.find(needle).unwrap_or_else(|| panic!("no {needle}"));
        let order = [
            "<nav id=\"contents\">",
            "<h2 id=\"headline\">",
            "<table class=\"headline\">",
            "<h2 id=\"examples\">",
            "<img src=\"examples/top_k-gradient_image3.png\"",
            "<h2 id=\"plots\">",
            "<figcaption><b>Spearman rank correlation</b> against ε",
            "<h2 id=\"summary\">",
            "<input id=\"summary-filter\"",
            "<h2 id=\"settings\">",
            "<script>",
        ];
        for pair in order.windows(2) {
            assert!(at(pair[0]) < at(pair[1]), "{} before {}", pair[0], pair[1]);
        }
        // Every section in the contents; captions say what the band is.
        for id in ["headline", "examples", "plots", "summary", "settings"] {
            assert!(html.contains(&format!("<a href=\"#{id}\">")), "{id}");
        }
        assert!(html.contains("the band is the 95% bootstrap confidence interval of the mean"));
        // The caption of the center shift plot says which way is more similar.
        assert!(html.contains("<b>center-of-mass shift (px)</b> against ε"));
        assert!(html.contains("(lower = more similar)"));
    }

    #[test]
    fn example_figures_show_steered_attacks_first_then_by_image() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        std::fs::create_dir_all(out.join("examples")).unwrap();
        // The table: random_sign on image 0, top_k → gradient on images 1 and 2.
        let table = crate::report::table::tests::example_table();
        for f in
            ["random_sign_image0.png", "top_k-gradient_image2.png", "top_k-gradient_image1.png", "zz.png"]
        {
            std::fs::write(out.join("examples").join(f), b"png").unwrap();
        }
        std::fs::write(out.join("examples/notes.txt"), b"not a figure").unwrap();
        assert_eq!(
            example_files(out, &table),
            ["top_k-gradient_image1.png", "top_k-gradient_image2.png", "random_sign_image0.png", "zz.png"]
        );
        assert!(example_files(&out.join("missing"), &table).is_empty());
    }

    #[test]
    fn shown_paths_lose_dot_and_dot_dot() {
        assert_eq!(tidy_path(Path::new("experiments/../reports/x")), Path::new("reports/x"));
        assert_eq!(tidy_path(Path::new("./a/./b/../c")), Path::new("a/c"));
        assert_eq!(tidy_path(Path::new("../up/x")), Path::new("../up/x"));
        assert_eq!(tidy_path(Path::new("/abs/./y/../z")), Path::new("/abs/z"));
    }
}

//! The HTML of `index.html`: what a researcher opens first.
//!
//! Order, top to bottom, so that what was measured and what it showed come before any detail:
//! the study's name and one paragraph on what was measured; a table of contents; the headline
//! (sentences, then the paper's table: [`super::headline`]); the paper's figure 1 for the example
//! images (`examples/*.png`, when the run wrote any); every plot with a caption saying what the
//! metric is, which way is more similar, k, n and what the band is; the summary table, which
//! an inline script lets the reader filter and sort; the settings (`run.json`).
//!
//! Self-contained: one inline stylesheet and one inline script, images by relative paths
//! (`plots/<metric>.png`, `.svg` beside each), no network, so the folder can be moved, zipped
//! or served as it is. Without the script the page still reads (the table is merely static).
//!
//! A study of several models shows its models side by side ([`super::models`]) at the top,
//! then its comparison charts (`plots/models-<kind>.png`), then one row per metric with each
//! model's chart (`plots/<metric>.<label>.png`) beside the others'; its summary table has a
//! `model` column. The page of a study of one model is byte for byte what it was before.

use super::index::escape;
use super::labels::{describe, top_k_of};
use super::models::StudyHeadline;
use super::summary::{show, SummaryRow, BOOTSTRAP_RESAMPLES};
use super::SampleTable;
use crate::metric::Direction;
use std::fmt::Write as _;

/// One plotted column: its name, direction, and whether a per-image distribution plot exists.
#[derive(Debug, Clone)]
pub struct PlotEntry {
    /// The metric column.
    pub column: String,
    /// Which way is more similar.
    pub direction: Direction,
    /// `plots/<column>_distribution.png` was written.
    pub distribution: bool,
    /// The model whose rows it draws, in a study of several models; empty for one model.
    pub model: String,
}

impl PlotEntry {
    /// The chart's file name in `plots/` with `suffix` after the column:
    /// `<column><suffix>.png`, `<column><suffix>.<model>.png` in a study of several models
    /// (model labels are letters, digits, `-`, `_` and `.`, so the name is a plain file name).
    fn named(&self, suffix: &str) -> String {
        if self.model.is_empty() {
            format!("{}{suffix}.png", self.column)
        } else {
            format!("{}{suffix}.{}.png", self.column, self.model)
        }
    }

    /// The mean-vs-ε chart's file name in `plots/` (PNG; the SVG beside it).
    pub fn file(&self) -> String {
        self.named("")
    }

    /// The distribution chart's file name in `plots/` (PNG; the SVG beside it).
    pub fn distribution_file(&self) -> String {
        self.named("_distribution")
    }
}

/// Every chart of a study: each model's, and the comparison charts of several models.
#[derive(Debug, Clone)]
pub struct PlotSet {
    /// The charts of each metric column, model after model (in a study of several models).
    pub entries: Vec<PlotEntry>,
    /// The metrics with a comparison chart ([`super::model_plot`]); empty for one model.
    pub charts: Vec<super::models::SideMetric>,
    /// The models' labels, in their order (one empty label for a study of one model).
    pub models: Vec<String>,
}

impl PlotSet {
    /// Whether the study has several models.
    fn several(&self) -> bool {
        self.models.iter().any(|m| !m.is_empty())
    }
}

const STYLE: &str = "body { font-family: sans-serif; margin: 2em auto; max-width: 1250px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; }
nav { background: #f4f4f4; padding: 0.5em 1em; border-radius: 4px; }
nav a { margin-right: 1.2em; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1.5em; }
caption { text-align: left; font-size: 14px; padding: 0.3em 0; caption-side: top; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #eee; } td.t { text-align: left; }
tr.attacked td { font-weight: bold; background: #fff4e0; }
tr.random td { color: #555; }
#summary-table th { cursor: pointer; user-select: none; }
figure { margin: 1em 0 2em; }
figcaption { font-size: 14px; color: #333; max-width: 1100px; }
img { max-width: 100%; border: 1px solid #ddd; }
.sentences p { font-size: 16px; margin: 0.4em 0; }
.caveats p { font-size: 16px; margin: 0.4em 0; padding: 0.3em 0.6em; background: #fff8d8; border-left: 4px solid #d9a400; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
";

/// The style a page of several models adds: a row of figures, one per model.
const MODELS_STYLE: &str = ".models { display: flex; gap: 1em; align-items: flex-start; }
.models figure { flex: 1 1 0; min-width: 0; margin: 0.5em 0 1.5em; }
";

/// Sorts the summary table by a clicked header (numbers as numbers) and filters its rows by
/// the words typed in the box (every word must occur in the row).
const SCRIPT: &str = "(function () {
  var table = document.getElementById('summary-table');
  var box = document.getElementById('summary-filter');
  var count = document.getElementById('summary-count');
  if (!table || !box) { return; }
  var body = table.tBodies[0];
  function filter() {
    var words = box.value.toLowerCase().split(/\\s+/).filter(Boolean), shown = 0;
    Array.prototype.forEach.call(body.rows, function (r) {
      var text = r.textContent.toLowerCase();
      var ok = words.every(function (w) { return text.indexOf(w) >= 0; });
      r.style.display = ok ? '' : 'none';
      if (ok) { shown += 1; }
    });
    count.textContent = shown + ' of ' + body.rows.length + ' rows';
  }
  box.addEventListener('input', filter);
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
    th.title = 'sort';
    th.addEventListener('click', function () {
      var up = th.getAttribute('data-sort') !== 'up';
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute('data-sort'); });
      th.setAttribute('data-sort', up ? 'up' : 'down');
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[i].textContent, y = b.cells[i].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return up ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  filter();
})();
";

/// The study's name: the output folder's name.
pub fn study_name(out: &std::path::Path) -> String {
    out.file_name().map_or("study".into(), |n| n.to_string_lossy().into_owned())
}

/// The page's title: the config's `title` (recorded in run.json), else the study's name.
fn page_title(out: &std::path::Path, run: Option<&serde_json::Value>) -> String {
    run.and_then(|r| r["settings"]["title"].as_str()).map_or_else(|| study_name(out), str::to_string)
}

/// Distinct values in order of first appearance.
fn distinct<T: PartialEq + Clone>(values: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// The models of a study of several models: `<code>label</code> (name)` each, the name from
/// `run.json`'s `settings.models` where it is recorded.
fn models_in_words(table: &SampleTable, run: Option<&serde_json::Value>) -> String {
    let recorded = run.and_then(|r| r["settings"]["models"].as_array());
    let name = |label: &str| {
        recorded?.iter().find(|m| m["label"] == label).and_then(|m| m["name"].as_str()).map(escape)
    };
    let each: Vec<String> = table
        .models()
        .iter()
        .map(|m| {
            let named = name(m).filter(|n| n != m).map_or(String::new(), |n| format!(" ({n})"));
            format!("<code>{}</code>{named}", escape(m))
        })
        .collect();
    each.join(", ")
}

/// The paragraph under the title: what was measured.
fn measured(table: &SampleTable, run: Option<&serde_json::Value>) -> String {
    let images = distinct(table.rows.iter().map(|r| r.image_id)).len();
    let methods = distinct(table.rows.iter().map(|r| r.method.clone()));
    let attacks = distinct(
        table
            .rows
            .iter()
            .filter(|r| r.attack != super::summary::SAMPLING)
            .map(|r| super::summary::attack_label(&r.attack, r.target_method.as_deref())),
    );
    let mut eps =
        distinct(table.rows.iter().filter(|r| r.attack != super::summary::SAMPLING).map(|r| r.epsilon));
    eps.sort_by(f64::total_cmp);
    let eps: Vec<String> = eps.iter().map(|e| super::labels::epsilon(*e)).collect();
    let model = if table.model_metrics.is_empty() {
        run.and_then(|r| r["settings"]["model"]["name"].as_str())
            .map(|m| format!(" of the model <code>{}</code>", escape(m)))
            .unwrap_or_default()
    } else {
        format!(" of the models {}", models_in_words(table, run))
    };
    let code =
        |v: &[String]| v.iter().map(|m| format!("<code>{}</code>", escape(m))).collect::<Vec<_>>().join(", ");
    format!(
        "<p>How far the attribution maps{model} move when an image is perturbed without changing \
         its predicted class (Ghorbani, Abid and Zou, AAAI 2019). {images} images; {} methods ({}); \
         attacks {}; L∞ budgets ε = {} on the [0, 1] pixel scale. {} rows in \
         <code>samples.parquet</code>, seed {}. Every statistic is over the images whose perturbed \
         copy kept the predicted label; intervals are 95% percentile-bootstrap intervals of the \
         mean ({BOOTSTRAP_RESAMPLES} resamples).</p>",
        methods.len(),
        code(&methods),
        code(&attacks),
        eps.join(", "),
        table.rows.len(),
        table.seed
    )
}

/// The SVG beside the PNG `file`.
fn svg(file: &str) -> String {
    format!("{}.svg", file.strip_suffix(".png").unwrap_or(file))
}

/// The caption of a mean-vs-ε plot.
fn plot_caption(entry: &PlotEntry, summary: &[SummaryRow]) -> String {
    let d = describe(&entry.column);
    let rows: Vec<&SummaryRow> =
        summary.iter().filter(|r| r.metric == entry.column && r.model == entry.model).collect();
    let (lo, hi) = rows.iter().fold((u32::MAX, 0), |(lo, hi), r| (lo.min(r.n), hi.max(r.n)));
    let n = if rows.is_empty() {
        String::new()
    } else if lo == hi {
        format!(" n = {lo} images per point.")
    } else {
        format!(" n = {lo}–{hi} images per point (label-kept images with a value).")
    };
    let k = top_k_of(&entry.column).map(|k| format!(" k = {k}.")).unwrap_or_default();
    let reference = if entry.column.ends_with("_after") {
        " The dashed line of each method's colour is its value on the clean map."
    } else {
        ""
    };
    format!(
        "<b>{}</b> against ε: {} ({}). One line per method, the mean over the images; the band is \
         the 95% bootstrap confidence interval of the mean.{k}{n}{reference} \
         <a href=\"plots/{c}\">SVG</a>",
        escape(&d.axis()),
        escape(&d.meaning),
        super::plot::direction_text(entry.direction),
        c = escape(&svg(&entry.file()))
    )
}

/// The figure of an entry's mean-vs-ε chart, its caption led by the model's label in a study
/// of several models.
fn figure(entry: &PlotEntry, summary: &[SummaryRow]) -> String {
    let (c, file) = (escape(&entry.column), escape(&entry.file()));
    let id = file.strip_suffix(".png").unwrap_or(&file);
    let (of, by) = model_words(entry);
    format!(
        "<figure id=\"plot-{id}\"><img src=\"plots/{file}\" alt=\"{c}{of} against epsilon\">\n<figcaption>{by}{}</figcaption></figure>",
        plot_caption(entry, summary)
    )
}

/// What names an entry's model: in the alt text (` of model m`) and before the caption
/// (`<b>m</b>: `); both empty for a study of one model.
fn model_words(entry: &PlotEntry) -> (String, String) {
    if entry.model.is_empty() {
        (String::new(), String::new())
    } else {
        let m = escape(&entry.model);
        (format!(" of model {m}"), format!("<b>{m}</b>: "))
    }
}

/// The figure of an entry's per-image distribution chart.
fn distribution_figure(entry: &PlotEntry) -> String {
    let (c, file) = (escape(&entry.column), escape(&entry.distribution_file()));
    let (of, by) = model_words(entry);
    format!(
        "<figure><img src=\"plots/{file}\" alt=\"{c}{of} per image, box plots\">\n\
         <figcaption>{by}{} per image: the box spans the quartiles, the line inside is the median, \
         the whiskers reach the furthest values within 1.5 interquartile ranges, dots are the \
         images beyond. <a href=\"plots/{}\">SVG</a></figcaption></figure>",
        escape(&describe(&entry.column).axis()),
        escape(&svg(&entry.distribution_file()))
    )
}

/// The entries of several models in rows: one row per metric, one entry per model (a model's
/// i-th top-k column shares the row of the others' i-th, whatever their k), rows in order of
/// first appearance.
fn plot_rows(entries: &[PlotEntry]) -> Vec<Vec<&PlotEntry>> {
    let mut keys: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<&PlotEntry>> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let key = if top_k_of(&e.column).is_some() {
            let earlier = entries[..i].iter().filter(|o| o.model == e.model && top_k_of(&o.column).is_some());
            format!("{}#{}", super::models::TOP_K_KIND, earlier.count())
        } else {
            e.column.clone()
        };
        match keys.iter().position(|k| *k == key) {
            Some(r) => rows[r].push(e),
            None => {
                keys.push(key);
                rows.push(vec![e]);
            }
        }
    }
    rows
}

/// The plots of a study of several models: the comparison charts, then a row per metric with
/// each model's chart side by side (and a row of their distributions).
fn models_plots(plots: &PlotSet, summary: &[SummaryRow]) -> String {
    let mut h = String::from(
        "<p>First the models compared on each headline metric, then each model's charts side by \
         side, one row per metric.</p>\n",
    );
    for chart in &plots.charts {
        let file = escape(&super::model_plot::chart_file(chart));
        let _ = writeln!(
            h,
            "<figure id=\"plot-{id}\"><img src=\"plots/{file}\" alt=\"{name} by model against epsilon\">\n\
             <figcaption><b>{name}</b> against ε, by model ({}): one panel per attacked method under \
             its steered attack, one line per model, the mean over the images; the band is the 95% \
             bootstrap confidence interval of the mean. <a href=\"plots/{}\">SVG</a></figcaption></figure>",
            super::plot::direction_text(chart.direction),
            svg(&file),
            id = file.strip_suffix(".png").unwrap_or(&file),
            name = escape(&chart.name),
        );
    }
    for row in plot_rows(&plots.entries) {
        h.push_str("<div class=\"models\">\n");
        for e in &row {
            let _ = writeln!(h, "{}", figure(e, summary));
        }
        h.push_str("</div>\n");
        if row.iter().any(|e| e.distribution) {
            h.push_str("<div class=\"models\">\n");
            for e in row.iter().filter(|e| e.distribution) {
                let _ = writeln!(h, "{}", distribution_figure(e));
            }
            h.push_str("</div>\n");
        }
    }
    h
}

/// The caption of an example panel `examples/<attack>_image<id>.png`.
fn example_caption(file: &str, models: &[&str]) -> String {
    let stem = file.strip_suffix(".png").unwrap_or(file);
    // A study of several models writes `<label>.<attack>_image<id>.png` (labels hold no `_image`).
    let (model, stem) = match models.iter().find_map(|m| Some((*m, stem.strip_prefix(m)?.strip_prefix('.')?)))
    {
        Some((m, rest)) => (format!("Model <code>{}</code>, image", escape(m)), rest),
        None => ("Image".to_string(), stem),
    };
    let (attack, image) = stem.rsplit_once("_image").unwrap_or((stem, "?"));
    if attack == super::checks::CASCADE_EXAMPLE {
        return format!(
            "{model} {}, cascading model-parameter randomisation (Adebayo et al. 2018): a row per \
             method, its map on the trained model, then after each step that re-initialises one more \
             layer (or block) from the logits down, the column named by the one it re-initialised; \
             each map scaled to its own maximum.",
            escape(image)
        );
    }
    format!(
        "{model} {}, attack <code>{}</code> at the largest ε: per method, the original image and its \
         map, then the perturbed image and its map (the paper's figure 1), with the class and \
         confidence before and after and the image's own top-k intersection and Spearman correlation.",
        escape(image),
        escape(attack)
    )
}

/// The summary table, with its filter box.
fn summary_table(summary: &[SummaryRow]) -> String {
    let several = super::summary::of_models(summary);
    let mut h = format!(
        "<p><label>Filter: <input id=\"summary-filter\" type=\"search\" size=\"40\" \
         placeholder=\"e.g. gradient top_k spearman\"></label> <span id=\"summary-count\"></span> \
         (click a header to sort)</p>\n<table id=\"summary-table\">\n<thead><tr>{}<th>method</th>\
         <th>attack</th><th>target method</th><th>ε</th><th>metric</th><th>n</th><th>nulls</th>\
         <th>mean</th><th>95% CI</th><th>median</th><th>std</th><th>label kept</th></tr></thead>\n<tbody>\n",
        if several { "<th>model</th>" } else { "" }
    );
    for r in summary {
        let ci = match (r.ci_low, r.ci_high) {
            (Some(l), Some(hi)) => format!("[{}, {}]", show(Some(l)), show(Some(hi))),
            _ => "–".into(),
        };
        let model =
            if several { format!("<td class=\"t\">{}</td>", escape(&r.model)) } else { String::new() };
        let _ = writeln!(
            h,
            "<tr>{model}<td class=\"t\">{}</td><td class=\"t\">{}</td><td class=\"t\">{}</td><td>{}</td>\
             <td class=\"t\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}%</td></tr>",
            escape(&r.method),
            escape(&r.attack),
            escape(r.target_method.as_deref().unwrap_or("–")),
            r.epsilon,
            escape(&r.metric),
            r.n,
            r.nulls,
            show(r.mean),
            ci,
            show(r.median),
            show(r.std),
            100.0 * r.label_kept_rate
        );
    }
    h.push_str("</tbody>\n</table>\n");
    h
}

/// The page's HTML. `examples` are the file names in `examples/` (sorted).
pub fn index_html(
    out: &std::path::Path,
    table: &SampleTable,
    summary: &[SummaryRow],
    headline: &StudyHeadline,
    plots: &PlotSet,
    (examples, checks): (&[String], &[String]),
    run: Option<&serde_json::Value>,
) -> String {
    let name = escape(&page_title(out, run));
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{name}</title>\n<style>\n{STYLE}{}</style>\n</head>\n<body>\n<h1>{name}</h1>\n{}\n",
        if plots.several() { MODELS_STYLE } else { "" },
        measured(table, run)
    );
    let mut toc = vec![("headline", "Headline")];
    if !examples.is_empty() {
        toc.push(("examples", "Example images (figure 1)"));
    }
    toc.push(("plots", "Plots"));
    if !checks.is_empty() {
        toc.push(("checks", "Sanity checks and faithfulness"));
    }
    toc.push(("summary", "Summary table"));
    if run.is_some() {
        toc.push(("settings", "Settings"));
    }
    h.push_str("<nav id=\"contents\"><b>Contents:</b> ");
    for (id, title) in &toc {
        let _ = write!(h, "<a href=\"#{id}\">{title}</a>");
    }
    h.push_str("</nav>\n");
    let _ = write!(h, "<h2 id=\"headline\">Headline</h2>\n{}", headline.html());
    if !examples.is_empty() {
        h.push_str("<h2 id=\"examples\">Example images (figure 1)</h2>\n");
        for file in examples {
            let f = escape(file);
            let _ = writeln!(
                h,
                "<figure><img src=\"examples/{f}\" alt=\"example panel {f}\">\n<figcaption>{}</figcaption></figure>",
                example_caption(file, &table.models())
            );
        }
    }
    h.push_str("<h2 id=\"plots\">Plots</h2>\n");
    if plots.several() {
        h.push_str(&models_plots(plots, summary));
    } else {
        for entry in &plots.entries {
            let _ = writeln!(h, "{}", figure(entry, summary));
            if entry.distribution {
                let _ = writeln!(h, "{}", distribution_figure(entry));
            }
        }
    }
    if !checks.is_empty() {
        h.push_str(
            "<h2 id=\"checks\">Sanity checks and faithfulness</h2>\n<p>Per image and method in \
             <code>sanity.parquet</code>, <code>faithfulness.parquet</code> and \
             <code>faithfulness_curves.parquet</code>; lines are means over images, bands their 95% \
             bootstrap intervals.</p>\n",
        );
        for file in checks {
            let f = escape(file);
            let _ = writeln!(h, "<figure><img src=\"plots/{f}\" alt=\"{f}\"></figure>");
        }
    }
    let _ = write!(
        h,
        "<h2 id=\"summary\">Summary table</h2>\n<p>One row per {}method × attack × ε × metric \
         (<code>summary.parquet</code>).</p>\n{}",
        if plots.several() { "model × " } else { "" },
        summary_table(summary)
    );
    if let Some(run) = run {
        // The list of studied images (one entry per image: source and hash) stays in run.json
        // and samples.parquet; on the page it would be most of the text for a large study.
        let mut run = run.clone();
        if let Some(images) = run.get_mut("images").and_then(|i| i.as_object_mut()) {
            if images.remove("list").is_some() {
                images.insert("list".into(), "(each image's source and hash: see run.json)".into());
            }
        }
        let text = serde_json::to_string_pretty(&run).unwrap_or_default();
        let _ = write!(h, "<h2 id=\"settings\">Settings (run.json)</h2>\n<pre>{}</pre>\n", escape(&text));
    }
    let _ = write!(h, "<script>\n{SCRIPT}</script>\n</body>\n</html>\n");
    h
}

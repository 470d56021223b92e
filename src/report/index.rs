//! `index.html`: one self-contained page per study, and the function that (re)writes every
//! derived output of a study from its sample table.
//!
//! The page holds the run's settings (from `run.json`, when there is one), the summary table
//! (mean, 95% bootstrap interval, median, n, nulls, label-kept rate per method × attack ×
//! target method × ε × metric) and every plot (mean against ε, and the per-image box plots), linked by relative paths (`plots/<metric>.png`),
//! so the folder can be moved, zipped or served as it is. No script, no external stylesheet.
//!
//! [`write_derived`] is shared by `fragility run` (after the rows are computed) and
//! `fragility report DIR` (from `samples.parquet` alone): summary, plots and page always come
//! from the same code, so a regenerated report equals the original.

use super::{plot_metric, summarize, write_summary, SampleTable, SummaryRow};
use crate::atomic;
use crate::error::Result;
use std::fmt::Write as _;
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

/// Writes `summary.parquet`, `plots/<column>.png` and `index.html` into `out` from `table`;
/// `run` is the content of `run.json` if known (its settings go into the page). Returns the
/// summary and the files written.
pub fn write_derived(
    out: &Path,
    table: &SampleTable,
    run: Option<&serde_json::Value>,
) -> Result<(Vec<SummaryRow>, Vec<PathBuf>)> {
    let summary = summarize(table);
    let mut files = vec![out.join("summary.parquet")];
    write_summary(&files[0], &summary)?;
    let mut plots = Vec::new();
    for (column, direction) in plotted_columns(table) {
        let p = out.join("plots").join(format!("{column}.png"));
        plot_metric(&p, &summary, &column, direction)?;
        files.push(p);
        // The per-image spread, where there is any label-kept value to show.
        let j = table.metric_columns.iter().position(|c| *c == column);
        let any = table
            .rows
            .iter()
            .any(|r| r.label_kept && j.and_then(|j| r.metrics[j]).is_some_and(f64::is_finite));
        if any {
            let d = out.join("plots").join(format!("{column}_distribution.png"));
            super::distribution::plot_distribution(&d, table, &column, direction)?;
            files.push(d);
        }
        plots.push((column, any));
    }
    let page = out.join("index.html");
    let html = index_html(out, table, &summary, &plots, run);
    atomic::write_bytes(&page, html.as_bytes())?;
    files.push(page);
    Ok((summary, files))
}

/// `fragility report DIR`: reads `DIR/samples.parquet` (and `DIR/run.json` if present) and
/// rewrites the derived outputs with [`write_derived`].
pub fn regenerate(dir: &Path) -> Result<(Vec<SummaryRow>, Vec<PathBuf>)> {
    let samples = dir.join("samples.parquet");
    if !samples.is_file() {
        return Err(crate::error::Error::data(
            dir,
            "no samples.parquet here: give the output folder of a finished run",
        ));
    }
    // Not while a run or a merge writes into the folder.
    let _lock = crate::lock::OutLock::acquire(dir)?;
    let table = super::read_samples(&samples)?;
    let run_json = dir.join("run.json");
    let run = if run_json.is_file() {
        let bytes = crate::data::read_capped(&run_json, 256 << 20)?;
        Some(
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|e| crate::error::Error::data(&run_json, format!("not JSON: {e}")))?,
        )
    } else {
        None
    };
    write_derived(dir, &table, run.as_ref())
}

fn opt(v: Option<f64>) -> String {
    super::summary::show(v)
}

/// The page's HTML.
pub fn index_html(
    out: &Path,
    table: &SampleTable,
    summary: &[SummaryRow],
    plots: &[(String, bool)],
    run: Option<&serde_json::Value>,
) -> String {
    let title = out.file_name().map_or("study".into(), |n| n.to_string_lossy().into_owned());
    let mut images: Vec<u32> = table.rows.iter().map(|r| r.image_id).collect();
    images.sort_unstable();
    images.dedup();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>fragility: {}</title>\n\
         <style>\nbody {{ font-family: sans-serif; margin: 2em; color: #222; }}\n\
         table {{ border-collapse: collapse; font-size: 13px; }}\n\
         th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}\n\
         th {{ background: #eee; }} td.t {{ text-align: left; }}\n\
         img {{ max-width: 100%; border: 1px solid #ddd; }}\npre {{ background: #f6f6f6; padding: 1em; }}\n</style>\n\
         </head>\n<body>\n<h1>fragility: {}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let _ = writeln!(
        h,
        "<p>{} rows of <code>samples.parquet</code>: {} images, seed {}. Statistics over the rows \
         whose attack kept the label; the interval is a 95% percentile bootstrap of the mean \
         ({} resamples).</p>",
        table.rows.len(),
        images.len(),
        table.seed,
        super::summary::BOOTSTRAP_RESAMPLES
    );
    h.push_str("<h2 id=\"plots\">Plots</h2>\n");
    for (p, spread) in plots {
        let p = escape(p);
        let _ = writeln!(h, "<h3>{p}</h3>\n<p><img src=\"plots/{p}.png\" alt=\"{p} against epsilon\"></p>");
        if *spread {
            let _ = writeln!(
                h,
                "<p><img src=\"plots/{p}_distribution.png\" alt=\"{p} per image, box plots\"></p>"
            );
        }
    }
    h.push_str(
        "<h2 id=\"summary\">Summary</h2>\n<table>\n<tr><th>method</th><th>attack</th><th>target method</th>\
        <th>ε</th><th>metric</th><th>n</th><th>nulls</th><th>mean</th><th>95% CI</th><th>median</th>\
        <th>std</th><th>label kept</th></tr>\n",
    );
    for r in summary {
        let ci = match (r.ci_low, r.ci_high) {
            (Some(l), Some(hi)) => format!("[{}, {}]", opt(Some(l)), opt(Some(hi))),
            _ => "–".into(),
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"t\">{}</td><td class=\"t\">{}</td><td class=\"t\">{}</td><td>{}</td>\
             <td class=\"t\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}%</td></tr>",
            escape(&r.method),
            escape(&r.attack),
            escape(r.target_method.as_deref().unwrap_or("–")),
            r.epsilon,
            escape(&r.metric),
            r.n,
            r.nulls,
            opt(r.mean),
            ci,
            opt(r.median),
            opt(r.std),
            100.0 * r.label_kept_rate
        );
    }
    h.push_str("</table>\n");
    if let Some(run) = run {
        let text = serde_json::to_string_pretty(run).unwrap_or_default();
        let _ = write!(h, "<h2 id=\"settings\">Settings (run.json)</h2>\n<pre>{}</pre>\n", escape(&text));
    }
    h.push_str("</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_the_five_characters() {
        assert_eq!(escape(r#"<a href="x">&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn page_links_every_plot_relatively_and_lists_every_summary_row() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("study<1>");
        let table = crate::report::table::tests::example_table();
        let run = serde_json::json!({ "settings": { "seed": 42, "note": "<b>" } });
        let (summary, files) = write_derived(&out, &table, Some(&run)).unwrap();
        let html = std::fs::read_to_string(out.join("index.html")).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
        assert!(html.contains("<title>fragility: study&lt;1&gt;</title>"), "title not escaped");
        for column in ["spearman", "center_shift_px"] {
            assert!(html.contains(&format!("<img src=\"plots/{column}.png\"")), "{column}");
            assert!(out.join("plots").join(format!("{column}.png")).exists());
        }
        assert_eq!(html.matches("<tr><td").count(), summary.len());
        assert!(html.contains("&lt;b&gt;") && !html.contains("<b>"), "settings not escaped");
        assert!(!html.contains("src=\"/") && !html.contains("http"), "only relative links");
        // summary, 2 metric plots, 2 distribution plots, page.
        assert_eq!(files.len(), 1 + 2 + 2 + 1);
        assert!(html.contains("<img src=\"plots/spearman_distribution.png\""));
    }
}

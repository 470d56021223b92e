//! Distribution plots: how a metric's per-image values spread, per method, attack and ε.
//!
//! The mean-vs-ε charts ([`super::plot`]) hide how the images differ: a mean Spearman of 0.5
//! can be every map moving halfway or half the maps moving entirely. [`plot_distribution`]
//! draws, from the sample rows, one panel per attack (and target method) with a box per method
//! at each ε: the box spans the first to the third quartile, the line inside is the median,
//! the whiskers reach the most extreme values within 1.5 interquartile ranges of the box
//! (Tukey), and the values beyond are drawn as dots. Only label-kept rows with a value enter,
//! as in the summary. Quartiles interpolate linearly between order statistics (type 7, the
//! default of NumPy and R). The legend, colours, axis labels and the SVG beside the PNG follow
//! [`super::plot`]'s rules.

use super::labels::describe;
use super::plot::{
    axis_scale, canvas, colour, direction_text, distinct, ensure_font, frame, grid, padded_range,
    render_twice, tick_label, write_rendered, y_label, DrawError, Mark, Rendered, MAX_LINES, X_LABEL,
};
use super::png::Rendering;
use super::table::SampleTable;
use crate::error::{Error, Result};
use crate::metric::Direction;
use plotters::backend::RGBPixel;
use plotters::coord::Shift;
use plotters::prelude::{
    BitMapBackend, ChartBuilder, Circle, Color, DrawingArea, DrawingBackend, IntoDrawingArea, PathElement,
    RGBColor, Rectangle, SVGBackend,
};
use std::path::Path;

/// Quantile `q` of sorted values (linear interpolation between order statistics).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let h = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// A Tukey box: quartiles, whisker ends and the outliers.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxStats {
    /// First quartile.
    pub q1: f64,
    /// Median.
    pub median: f64,
    /// Third quartile.
    pub q3: f64,
    /// Smallest value ≥ q1 − 1.5·IQR.
    pub low: f64,
    /// Largest value ≤ q3 + 1.5·IQR.
    pub high: f64,
    /// Values beyond the whiskers.
    pub outliers: Vec<f64>,
}

/// The box of `values` (non-finite values ignored); `None` without a finite value.
pub fn box_stats(values: &[f64]) -> Option<BoxStats> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let (q1, median, q3) = (quantile(&v, 0.25)?, quantile(&v, 0.5)?, quantile(&v, 0.75)?);
    let (lo_fence, hi_fence) = (q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1));
    let inside: Vec<f64> = v.iter().copied().filter(|x| (lo_fence..=hi_fence).contains(x)).collect();
    let low = inside.first().copied().unwrap_or(q1);
    let high = inside.last().copied().unwrap_or(q3);
    let outliers = v.iter().copied().filter(|x| !(lo_fence..=hi_fence).contains(x)).collect();
    Some(BoxStats { q1, median, q3, low, high, outliers })
}

type Groups = Vec<(String, Vec<(String, Vec<(f64, Vec<f64>)>)>)>;

/// Values of `metric` per panel (attack label) → method → ε, in order of first appearance.
fn groups(table: &SampleTable, column: usize) -> Groups {
    let mut out: Groups = Vec::new();
    for r in table.rows.iter().filter(|r| r.label_kept) {
        let Some(v) = r.metrics.get(column).copied().flatten().filter(|v| v.is_finite()) else { continue };
        let label = super::summary::attack_label(&r.attack, r.target_method.as_deref());
        let p = match out.iter().position(|(l, _)| *l == label) {
            Some(p) => p,
            None => {
                out.push((label, Vec::new()));
                out.len() - 1
            }
        };
        let methods = &mut out[p].1;
        let m = match methods.iter().position(|(n, _)| *n == r.method) {
            Some(m) => m,
            None => {
                methods.push((r.method.clone(), Vec::new()));
                methods.len() - 1
            }
        };
        let eps = &mut methods[m].1;
        match eps.iter_mut().find(|(e, _)| *e == r.epsilon) {
            Some((_, vals)) => vals.push(v),
            None => eps.push((r.epsilon, vec![v])),
        }
    }
    out
}

/// The same values with panels and boxes swapped: panel = method, box = attack.
fn transpose(groups: &Groups) -> Groups {
    let mut out: Groups = Vec::new();
    for (attack, methods) in groups {
        for (method, eps) in methods {
            let p = match out.iter().position(|(m, _)| m == method) {
                Some(p) => p,
                None => {
                    out.push((method.clone(), Vec::new()));
                    out.len() - 1
                }
            };
            out[p].1.push((attack.clone(), eps.clone()));
        }
    }
    out
}

/// `groups` as panels: one per attack with a box per method, or, with more than
/// [`MAX_LINES`] methods (a dozen boxes per ε are unreadable), small multiples: one panel per
/// method with a box per attack. Returns the panels and whether they are per method.
fn panels(groups: Groups) -> (Groups, bool) {
    let mut methods: Vec<&str> = Vec::new();
    for (_, ms) in &groups {
        for (m, _) in ms {
            if !methods.contains(&m.as_str()) {
                methods.push(m);
            }
        }
    }
    if methods.len() > MAX_LINES {
        (transpose(&groups), true)
    } else {
        (groups, false)
    }
}

/// Draws the box plots of `groups` (see [`panels`]; `per_method`: panels are methods and
/// boxes attacks, each box in its method's colour, the attacks told apart by shade).
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    groups: &Groups,
    per_method: bool,
    study_methods: &[&str],
    metric: &str,
    direction: Direction,
) -> std::result::Result<(), DrawError>
where
    DB::ErrorType: 'static,
{
    let mut methods: Vec<&str> = Vec::new();
    let mut epsilons: Vec<f64> = Vec::new();
    for (_, ms) in groups {
        for (m, es) in ms {
            if !methods.contains(&m.as_str()) {
                methods.push(m);
            }
            for (e, _) in es {
                if !epsilons.contains(e) {
                    epsilons.push(*e);
                }
            }
        }
    }
    epsilons.sort_by(f64::total_cmp);
    // The study's order gives each method its colour, the same in every figure.
    let method_colour = |m: &str| colour(study_methods.iter().position(|s| *s == m).unwrap_or(0));
    let all = groups
        .iter()
        .flat_map(|(_, ms)| ms.iter().flat_map(|(_, es)| es.iter().flat_map(|(_, v)| v.iter().copied())));
    let y_range = padded_range(all);
    let scale = axis_scale(&y_range);
    let factor = 10f64.powi(scale);
    let y_span = y_range.end - y_range.start;
    let title = format!(
        "{} per image ({}): box = quartiles, line = median",
        describe(metric).name,
        direction_text(direction)
    );
    // Per-method panels: attack k of n in the method's colour at opacity `shade(k)`, and in
    // the legend as a grey of the same depth.
    let n = methods.len().max(2) as f64;
    let shade = |k: usize| 0.12 + 0.7 * k as f64 / (n - 1.0);
    let entries: Vec<(String, RGBColor, Mark)> = methods
        .iter()
        .enumerate()
        .map(|(k, m)| {
            let c = if per_method {
                // The legend draws its boxes at 35% opacity: a grey that shows the shade's depth.
                let g = (255.0 - (255.0 * shade(k) / 0.35).min(255.0)) as u8;
                RGBColor(g, g, g)
            } else {
                method_colour(m)
            };
            (m.to_string(), c, Mark::Box)
        })
        .collect();
    let heading = if per_method { "attack, left to right (panel = method)" } else { "method" };
    let panels = frame(root, &title, heading, &entries)?;
    let (grid_rows, grid_cols) = grid(groups.len());
    let slot = 0.8 / methods.len().max(1) as f64; // width of one method's box slot, in ε slots
    let y_desc = y_label(metric, scale);
    for (panel, (label, ms)) in panels.split_evenly((grid_rows, grid_cols)).iter().zip(groups) {
        let mut chart = ChartBuilder::on(panel)
            .caption(label.as_str(), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(52)
            .y_label_area_size(72)
            .build_cartesian_2d(-0.5..epsilons.len() as f64 - 0.5, y_range.clone())?;
        let eps_label = |x: &f64| {
            let i = x.round();
            match epsilons.get(i as usize) {
                Some(e) if (x - i).abs() < 1e-9 && i >= 0.0 => format!("{e}"),
                _ => String::new(),
            }
        };
        chart
            .configure_mesh()
            .max_light_lines(0)
            .x_desc(X_LABEL)
            .y_desc(y_desc.as_str())
            .x_labels(epsilons.len().max(2) * 2 + 1)
            .x_label_formatter(&eps_label)
            .y_label_formatter(&|y| tick_label(*y / factor, y_span / factor))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .disable_x_mesh()
            .draw()?;
        for (mi, method) in methods.iter().enumerate() {
            let (colour, fill) =
                if per_method { (method_colour(label), shade(mi)) } else { (method_colour(method), 0.3) };
            let style = colour.stroke_width(2);
            let Some((_, es)) = ms.iter().find(|(m, _)| m == method) else { continue };
            for (e, vals) in es {
                let Some(b) = box_stats(vals) else { continue };
                let ei = epsilons.iter().position(|x| x == e).unwrap_or(0) as f64;
                let x = ei - 0.4 + slot * (mi as f64 + 0.5);
                let (l, r) = (x - 0.35 * slot, x + 0.35 * slot);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(l, b.q1), (r, b.q3)],
                    colour.mix(fill).filled(),
                )))?;
                chart.draw_series(std::iter::once(Rectangle::new([(l, b.q1), (r, b.q3)], style)))?;
                chart.draw_series([
                    PathElement::new(vec![(l, b.median), (r, b.median)], colour.stroke_width(3)),
                    PathElement::new(vec![(x, b.q3), (x, b.high)], style),
                    PathElement::new(vec![(x, b.q1), (x, b.low)], style),
                    PathElement::new(vec![(x - 0.2 * slot, b.high), (x + 0.2 * slot, b.high)], style),
                    PathElement::new(vec![(x - 0.2 * slot, b.low), (x + 0.2 * slot, b.low)], style),
                ])?;
                chart.draw_series(b.outliers.iter().map(|&o| Circle::new((x, o), 2, colour.filled())))?;
            }
        }
    }
    root.present()?;
    Ok(())
}

/// Renders the distribution chart of metric column `metric` of `table`, as pixels and SVG.
pub(crate) fn render_distribution_both(
    table: &SampleTable,
    metric: &str,
    direction: Direction,
) -> std::result::Result<Rendered, String> {
    ensure_font()?;
    let column = table
        .metric_columns
        .iter()
        .position(|c| c == metric)
        .ok_or(format!("no metric column {metric:?}"))?;
    let groups = groups(table, column);
    if groups.is_empty() {
        return Err(format!("no label-kept value of {metric:?}"));
    }
    let (groups, per_method) = panels(groups);
    let study_methods = distinct(&table.rows, |r| r.method.as_str());
    render_twice!(canvas(groups.len()), |root| draw(
        &root,
        &groups,
        per_method,
        &study_methods,
        metric,
        direction
    ))
}

/// Renders the distribution chart of metric column `metric` of `table`.
#[cfg(test)]
pub(crate) fn render_distribution(
    table: &SampleTable,
    metric: &str,
    direction: Direction,
) -> std::result::Result<Rendering, String> {
    render_distribution_both(table, metric, direction).map(|r| r.png)
}

/// Draws the per-image distribution of `metric` (box plots per method, at each ε, one panel
/// per attack) from the sample rows and writes it to `path` as PNG and beside it as SVG,
/// atomically.
pub fn plot_distribution(path: &Path, table: &SampleTable, metric: &str, direction: Direction) -> Result<()> {
    let image = render_distribution_both(table, metric, direction)
        .map_err(|message| Error::Plot { path: path.to_path_buf(), message })?;
    write_rendered(path, &image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_interpolate_linearly() {
        // Sorted 1..=5: positions q·4 → q1 at 1 (value 2), median at 2 (3), q3 at 3 (4).
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(
            (quantile(&v, 0.25), quantile(&v, 0.5), quantile(&v, 0.75)),
            (Some(2.0), Some(3.0), Some(4.0))
        );
        // 1..=4: median at position 1.5 → 2.5; q1 at 0.75 → 1.75.
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.5));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.25), Some(1.75));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn tukey_whiskers_stop_at_the_fences_and_the_rest_are_outliers() {
        // 1..=8 and 100: q1 = 3, q3 = 7 (positions 2 and 6), IQR 4, fences −3 and 13:
        // whiskers 1 and 8, 100 is an outlier.
        let mut v: Vec<f64> = (1..=8).map(f64::from).collect();
        v.push(100.0);
        let b = box_stats(&v).unwrap();
        assert_eq!((b.q1, b.median, b.q3, b.low, b.high), (3.0, 5.0, 7.0, 1.0, 8.0));
        assert_eq!(b.outliers, vec![100.0]);
        assert_eq!(box_stats(&[f64::NAN]), None);
    }

    #[test]
    fn distribution_chart_draws_each_method_and_skips_lost_labels() {
        let table = crate::report::table::tests::example_table();
        // example_table: spearman has one label-kept value (0.9, random_sign); a lost-label
        // row and nulls are left out.
        let img = render_distribution(&table, "spearman", Direction::HigherIsMoreSimilar).unwrap();
        // One panel and the legend column.
        assert_eq!(img.width, super::super::plot::PANEL_WIDTH + super::super::plot::LEGEND_WIDTH);
        let c = super::super::plot::COLOURS[0];
        let n = img.rgb.chunks(3).filter(|p| p[0] == c.0 && p[1] == c.1 && p[2] == c.2).count();
        assert!(n > 20, "{n} pixels of the method's colour");
        assert!(render_distribution(&table, "nope", Direction::HigherIsMoreSimilar).is_err());
    }

    #[test]
    fn many_methods_become_one_panel_per_method() {
        // 7 methods × 2 attacks: 7 panels (one per method) of 2 boxes; 6 methods stay 2 panels.
        let make = |methods: usize| -> Groups {
            ["random_sign", "top_k → gradient"]
                .iter()
                .map(|a| {
                    let ms = (0..methods).map(|m| (format!("m{m}"), vec![(0.1, vec![0.5, 0.6])])).collect();
                    (a.to_string(), ms)
                })
                .collect()
        };
        let (p, per_method) = panels(make(7));
        assert!(per_method);
        assert_eq!(p.len(), 7);
        assert_eq!(p[3].0, "m3");
        assert_eq!(
            p[3].1.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(),
            ["random_sign", "top_k → gradient"]
        );
        let (p, per_method) = panels(make(6));
        assert!(!per_method);
        assert_eq!(p.len(), 2);
    }
}

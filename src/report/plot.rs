//! Metric-vs-ε charts: one figure per metric, drawn from the summary rows, as PNG and SVG.
//!
//! The paper's main figures show, for each attack, how a similarity metric between the
//! original and the perturbed saliency map falls as the L∞ budget grows, one curve per
//! attribution method. [`plot_metric`] draws exactly that: one panel per attack (panel title =
//! attack), x = ε on the [0, 1] pixel scale, y = the metric's mean over label-kept images, one
//! coloured line with point markers per method over a translucent band of the same colour (the
//! 95% bootstrap confidence interval of the mean). All panels share the y range so that attacks
//! can be compared at a glance. A group whose mean is undefined leaves a gap in its line.
//!
//! Legibility rules, because these figures go into papers:
//! - The legend sits in its own column right of the panels, once per figure, never on data.
//! - A method has one colour in every figure of a study: colours follow the methods' order of
//!   first appearance in the whole summary (not in one metric's rows), from [`COLOURS`], a
//!   colour-blind-safe palette (Okabe–Ito, then Paul Tol's muted scheme).
//! - With more than [`MAX_LINES`] methods one panel of a dozen lines is unreadable: the figure
//!   becomes small multiples, one panel per method (in its colour), one line per attack told
//!   apart by its marker (random baselines dashed).
//! - Axis labels are words with units ([`super::labels`]); ticks of tiny or huge values (the
//!   normalised MSE is ~10⁻⁶) are scaled by a power of ten named on the axis.
//! - A `<measure>_after` column (an attack's own objective) gets a dashed line per method at
//!   the mean of its `_before` column: the measure's value on the clean map.
//!
//! Text: plotters' `ab_glyph` backend has no built-in font and silently draws no text when the
//! family is unknown. The DejaVu Sans font embedded by the `dejavu` crate is registered as
//! `sans-serif` once per process before any drawing; the tests check that text is drawn.
//!
//! Output: the PNG is rendered into an in-memory RGB buffer and encoded by the `png` module, the
//! SVG into a string; both go through the atomic temp-file-and-rename of every output.

use super::labels::describe;
use crate::atomic;
use crate::error::{Error, Result};
use crate::metric::Direction;
use crate::report::png::{encode_png, Rendering};
use crate::report::summary::SummaryRow;
use plotters::backend::RGBPixel;
use plotters::coord::Shift;
use plotters::prelude::{
    BitMapBackend, ChartBuilder, Circle, Color, Cross, DashedLineSeries, DrawingArea, DrawingBackend,
    EmptyElement, FontStyle, IntoDrawingArea, LineSeries, PathElement, Polygon, RGBColor, Rectangle,
    SVGBackend, ShapeStyle, Text, TriangleMarker, BLACK, WHITE,
};
use plotters::style::IntoFont;
use std::path::Path;
use std::sync::OnceLock;

/// Most panels in one row of a chart; more panels wrap to further rows.
pub(crate) const MAX_COLUMNS: usize = 4;
/// Most methods drawn as lines in one panel; more make small multiples (a panel per method).
pub(crate) const MAX_LINES: usize = 6;
/// Width of one panel, in pixels.
pub(crate) const PANEL_WIDTH: u32 = 480;
/// Height of one row of panels, in pixels.
pub(crate) const PANEL_HEIGHT: u32 = 400;
/// Width of the legend column right of the panels, in pixels.
pub(crate) const LEGEND_WIDTH: u32 = 300;
/// Height of the title band, in pixels.
pub(crate) const TITLE_HEIGHT: u32 = 50;
/// Font size of the chart title, in pixels.
pub(crate) const TITLE_SIZE: u32 = 26;
/// Label of the x axis.
pub(crate) const X_LABEL: &str = "ε, L∞ budget (pixel scale 0–1)";

/// Line colours, one per method in the study's order: Okabe and Ito's colour-blind-safe
/// palette (without its yellow, which does not read on white), then Paul Tol's muted scheme.
pub(crate) const COLOURS: [RGBColor; 15] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(230, 159, 0),   // orange
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(0, 0, 0),       // black
    RGBColor(51, 34, 136),   // indigo
    RGBColor(136, 204, 238), // cyan
    RGBColor(68, 170, 153),  // teal
    RGBColor(17, 119, 51),   // green
    RGBColor(153, 153, 51),  // olive
    RGBColor(221, 204, 119), // sand
    RGBColor(204, 102, 119), // rose
    RGBColor(136, 34, 85),   // wine
];

/// The colour of the `index`-th method of a study.
pub(crate) fn colour(index: usize) -> RGBColor {
    COLOURS[index % COLOURS.len()]
}

/// The error of a failed drawing step, whatever its backend type.
pub(crate) type DrawError = Box<dyn std::error::Error + Send + Sync>;

/// Registers DejaVu Sans as the `sans-serif` family, once per process.
///
/// Without it every text of every chart is silently missing (see the module docs).
pub(crate) fn ensure_font() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let fonts = [
                (FontStyle::Normal, "regular", dejavu::sans::regular()),
                (FontStyle::Bold, "bold", dejavu::sans::bold()),
            ];
            for (style, name, bytes) in fonts {
                plotters::style::register_font("sans-serif", style, bytes)
                    .map_err(|_| format!("the embedded DejaVu Sans font ({name}) could not be parsed"))?;
            }
            Ok(())
        })
        .clone()
}

/// The chart title's note on how to read the metric.
pub(crate) fn direction_text(direction: Direction) -> &'static str {
    match direction {
        Direction::HigherIsMoreSimilar => "higher = more similar",
        Direction::LowerIsMoreSimilar => "lower = more similar",
    }
}

/// The distinct values of `key` over `rows`, in order of first appearance.
pub(crate) fn distinct<'a, T: 'a>(
    rows: impl IntoIterator<Item = &'a T>,
    key: impl Fn(&'a T) -> &'a str,
) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for row in rows {
        let k = key(row);
        if !seen.contains(&k) {
            seen.push(k);
        }
    }
    seen
}

/// An axis range covering `values` with a margin; a single value gets a window around it, no
/// value the unit interval (plotters needs a non-empty range).
pub(crate) fn padded_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.0..1.0;
    }
    let span = hi - lo;
    let pad = if span > 0.0 { 0.06 * span } else { (0.1 * lo.abs()).max(1e-12).max(lo.abs() * 1e-3) };
    (lo - pad)..(hi + pad)
}

/// Formats a tick value with enough decimals for an axis spanning `span`, without trailing
/// zeros (ε values like 8/255 would otherwise print as 0.03137254901960784).
pub(crate) fn tick_label(value: f64, span: f64) -> String {
    let decimals = if span > 0.0 { (2.0 - span.log10().floor()).clamp(0.0, 8.0) as usize } else { 3 };
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { &text };
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// The power of ten an axis over `range` is shown in: values whose largest magnitude is below
/// 10⁻² or from 10⁵ are divided by it (so that ticks stay short), others are shown as they are.
pub(crate) fn axis_scale(range: &std::ops::Range<f64>) -> i32 {
    let top = range.start.abs().max(range.end.abs());
    if top > 0.0 && !(1e-2..1e5).contains(&top) {
        top.log10().floor() as i32
    } else {
        0
    }
}

/// The y-axis label: the column in words, with the power of ten when the axis is scaled.
pub(crate) fn y_label(column: &str, scale: i32) -> String {
    scaled_label(&describe(column).axis(), scale)
}

/// An axis label `axis` with the power of ten when the axis is scaled.
fn scaled_label(axis: &str, scale: i32) -> String {
    if scale == 0 {
        axis.to_string()
    } else {
        format!("{axis}, ×10^{scale}")
    }
}

/// The words of a mean-vs-ε chart: its title, its y axis, and the legend's heading (lines are
/// the rows' `method`: attribution methods, or the models of a comparison chart).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChartWords {
    /// The title, e.g. `Spearman rank correlation (higher = more similar)`.
    pub(crate) title: String,
    /// The y axis in words with its unit (the power of ten is added where the axis is scaled).
    pub(crate) axis: String,
    /// What a line is: `method`, or `model`.
    pub(crate) lines: &'static str,
    /// The x axis in words ([`X_LABEL`] for charts against ε).
    pub(crate) x_axis: &'static str,
}

impl ChartWords {
    /// The words of the chart of metric column `metric`, one line per method.
    pub(crate) fn of_metric(metric: &str, direction: Direction) -> ChartWords {
        let d = describe(metric);
        ChartWords {
            title: format!("{} ({})", d.name, direction_text(direction)),
            axis: d.axis(),
            lines: "method",
            x_axis: X_LABEL,
        }
    }
}

/// Splits `points` (sorted by x) into runs of defined means, so that a missing mean leaves a
/// gap instead of a line bridging it.
fn segments(points: &[(f64, Option<f64>)]) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for &(x, y) in points {
        match y.filter(|y| y.is_finite()) {
            Some(y) => {
                if let Some(run) = out.last_mut() {
                    run.push((x, y));
                }
            }
            None => out.push(Vec::new()),
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Width and height in pixels of a chart of `panels` panels laid out by [`grid`], with the
/// legend column.
pub(crate) fn canvas(panels: usize) -> (u32, u32) {
    let (rows, cols) = grid(panels);
    (PANEL_WIDTH * cols as u32 + LEGEND_WIDTH, TITLE_HEIGHT + PANEL_HEIGHT * rows as u32)
}

/// Rows and columns of the panel grid: at most [`MAX_COLUMNS`] panels side by side.
pub(crate) fn grid(panels: usize) -> (usize, usize) {
    let cols = panels.clamp(1, MAX_COLUMNS);
    (panels.div_ceil(cols).max(1), cols)
}

/// How a legend entry (and its series) is drawn.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mark {
    /// A line with marker shape `marker` (see [`draw_markers`]), dashed or solid.
    Line { marker: usize, dashed: bool },
    /// A filled box (box plots).
    Box,
}

/// Splits `root` into the title band, the panel area and the legend column; draws the title
/// and the legend (`entries`: label, colour, mark, under `heading`). Returns the panel area.
pub(crate) fn frame<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    heading: &str,
    entries: &[(String, RGBColor, Mark)],
) -> std::result::Result<DrawingArea<DB, Shift>, DrawError>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (width, _) = root.dim_in_pixel();
    let (top, body) = root.split_vertically(TITLE_HEIGHT);
    top.draw(&Text::new(title.to_string(), (16, 12), ("sans-serif", TITLE_SIZE).into_font().color(&BLACK)))?;
    let (panels, legend) = body.split_horizontally(width.saturating_sub(LEGEND_WIDTH));
    legend.draw(&Text::new(
        heading.to_string(),
        (10, 30),
        ("sans-serif", 16, FontStyle::Bold).into_font(),
    ))?;
    for (i, (label, c, mark)) in entries.iter().enumerate() {
        let y = 62 + 24 * i as i32;
        match *mark {
            Mark::Line { marker, dashed } => {
                let style = c.stroke_width(2);
                if dashed {
                    legend.draw(&PathElement::new(vec![(10, y), (18, y)], style))?;
                    legend.draw(&PathElement::new(vec![(24, y), (32, y)], style))?;
                    legend.draw(&PathElement::new(vec![(38, y), (46, y)], style))?;
                } else {
                    legend.draw(&PathElement::new(vec![(10, y), (46, y)], style))?;
                }
                draw_marker(&legend, marker, (28, y), *c)?;
            }
            Mark::Box => legend.draw(&Rectangle::new([(12, y - 7), (44, y + 7)], c.mix(0.35).filled()))?,
        }
        let text = if label.chars().count() > 30 {
            format!("{}…", label.chars().take(29).collect::<String>())
        } else {
            label.clone()
        };
        legend.draw(&Text::new(text, (54, y - 8), ("sans-serif", 15).into_font()))?;
    }
    Ok(panels)
}

/// The marker shape that draws nothing (a legend entry of a plain line).
pub(crate) const NO_MARKER: usize = usize::MAX;

/// Draws marker `shape` (0 circle, 1 triangle, 2 square, 3 cross, 4 ring; [`NO_MARKER`]
/// none) at pixel `at`.
fn draw_marker<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    shape: usize,
    at: (i32, i32),
    c: RGBColor,
) -> std::result::Result<(), DrawError>
where
    DB::ErrorType: 'static,
{
    let (x, y) = at;
    if shape == NO_MARKER {
        return Ok(());
    }
    match shape % 5 {
        0 => area.draw(&Circle::new(at, 4, c.filled()))?,
        1 => area.draw(&TriangleMarker::new(at, 6, c.filled()))?,
        2 => area.draw(&Rectangle::new([(x - 4, y - 4), (x + 4, y + 4)], c.filled()))?,
        3 => area.draw(&Cross::new(at, 5, c.stroke_width(2)))?,
        _ => area.draw(&Circle::new(at, 5, c.stroke_width(2)))?,
    }
    Ok(())
}

/// One drawn curve: its points, band, colour and marks.
struct Curve {
    points: Vec<(f64, Option<f64>)>,
    band: Vec<(f64, Option<(f64, f64)>)>,
    colour: RGBColor,
    marker: usize,
    dashed: bool,
}

/// The curve of `rows` (one method under one attack), sorted by ε.
fn curve(rows: &[&SummaryRow], colour: RGBColor, marker: usize, dashed: bool) -> Curve {
    let mut points: Vec<(f64, Option<f64>)> = rows.iter().map(|r| (r.epsilon, r.mean)).collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut band: Vec<(f64, Option<(f64, f64)>)> = rows
        .iter()
        .map(|r| (r.epsilon, r.ci_low.zip(r.ci_high).filter(|(l, h)| l.is_finite() && h.is_finite())))
        .collect();
    band.sort_by(|a, b| a.0.total_cmp(&b.0));
    Curve { points, band, colour, marker, dashed }
}

/// Draws one panel: its curves, and a dashed reference line per `(value, colour)`.
#[allow(clippy::too_many_arguments)]
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    caption_colour: RGBColor,
    (x_range, y_range): (&std::ops::Range<f64>, &std::ops::Range<f64>),
    (x_desc, y_desc): (&str, &str),
    scale: i32,
    curves: &[Curve],
    references: &[(f64, RGBColor)],
) -> std::result::Result<(), DrawError>
where
    DB::ErrorType: 'static,
{
    let (x_span, y_span) = (x_range.end - x_range.start, y_range.end - y_range.start);
    let factor = 10f64.powi(scale);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20).into_font().color(&caption_colour))
        .margin(12)
        .x_label_area_size(52)
        .y_label_area_size(72)
        .build_cartesian_2d(x_range.clone(), y_range.clone())?;
    chart
        .configure_mesh()
        .max_light_lines(0)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(6)
        .y_labels(7)
        .x_label_formatter(&|x| tick_label(*x, x_span))
        .y_label_formatter(&|y| tick_label(*y / factor, y_span / factor))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    for &(value, c) in references {
        chart.draw_series(DashedLineSeries::new(
            vec![(x_range.start, value), (x_range.end, value)],
            8,
            6,
            c.mix(0.8).stroke_width(2),
        ))?;
    }
    for c in curves {
        for part in c.band.split(|(_, ci)| ci.is_none()).filter(|p| !p.is_empty()) {
            let upper = part.iter().filter_map(|&(x, ci)| ci.map(|v| (x, v.1)));
            let lower = part.iter().rev().filter_map(|&(x, ci)| ci.map(|v| (x, v.0)));
            let outline: Vec<(f64, f64)> = upper.chain(lower).collect();
            chart.draw_series(std::iter::once(Polygon::new(outline, c.colour.mix(0.18).filled())))?;
        }
    }
    for c in curves {
        let line: ShapeStyle = c.colour.stroke_width(2);
        for run in segments(&c.points) {
            if c.dashed {
                chart.draw_series(DashedLineSeries::new(run.iter().copied(), 10, 6, line))?;
            } else {
                chart.draw_series(LineSeries::new(run.iter().copied(), line))?;
            }
            let (fill, ring) = (c.colour.filled(), c.colour.stroke_width(2));
            match c.marker % 5 {
                0 => drop(chart.draw_series(run.iter().map(|&p| Circle::new(p, 4, fill)))?),
                1 => drop(chart.draw_series(run.iter().map(|&p| TriangleMarker::new(p, 6, fill)))?),
                2 => drop(chart.draw_series(
                    run.iter().map(|&p| EmptyElement::at(p) + Rectangle::new([(-4, -4), (4, 4)], fill)),
                )?),
                3 => drop(chart.draw_series(run.iter().map(|&p| Cross::new(p, 5, ring)))?),
                _ => drop(chart.draw_series(run.iter().map(|&p| Circle::new(p, 5, ring)))?),
            }
        }
    }
    Ok(())
}

/// The mean of the `_before` column of `metric` over `rows` (its clean value), if `metric`
/// is an `_after` column.
fn clean_value(all: &[SummaryRow], metric: &str, keep: impl Fn(&SummaryRow) -> bool) -> Option<f64> {
    let before = format!("{}_before", metric.strip_suffix("_after")?);
    let values: Vec<f64> =
        all.iter().filter(|r| r.metric == before && keep(r)).filter_map(|r| r.mean).collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Draws the chart of `metric` on `root`; `all` is the whole summary (for the method colours
/// and the clean reference values), `rows` the rows of `metric`.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    all: &[SummaryRow],
    rows: &[&SummaryRow],
    metric: &str,
    words: &ChartWords,
) -> std::result::Result<(), DrawError>
where
    DB::ErrorType: 'static,
{
    let study_methods = distinct(all, |r| r.method.as_str());
    let method_colour = |m: &str| colour(study_methods.iter().position(|s| *s == m).unwrap_or(0));
    let methods = distinct(rows.iter().copied(), |r| r.method.as_str());
    let attacks: Vec<String> = rows.iter().fold(Vec::new(), |mut v, r| {
        if !v.contains(&r.attack_label()) {
            v.push(r.attack_label());
        }
        v
    });
    let x_range = padded_range(rows.iter().map(|r| r.epsilon));
    let refs_all: Vec<f64> =
        methods.iter().filter_map(|m| clean_value(all, metric, |r| r.method == *m)).collect();
    let y_range = padded_range(
        rows.iter().flat_map(|r| [r.mean, r.ci_low, r.ci_high]).flatten().chain(refs_all.iter().copied()),
    );
    let scale = axis_scale(&y_range);
    let y_desc = scaled_label(&words.axis, scale);
    let small_multiples = methods.len() > MAX_LINES;
    let mut entries: Vec<(String, RGBColor, Mark)> = if small_multiples {
        attacks
            .iter()
            .enumerate()
            .map(|(k, a)| {
                let dashed = !a.contains('→');
                (a.clone(), RGBColor(60, 60, 60), Mark::Line { marker: k, dashed })
            })
            .collect()
    } else {
        methods
            .iter()
            .map(|m| (m.to_string(), method_colour(m), Mark::Line { marker: 0, dashed: false }))
            .collect()
    };
    if !refs_all.is_empty() {
        entries.push((
            "clean value".into(),
            RGBColor(60, 60, 60),
            Mark::Line { marker: NO_MARKER, dashed: true },
        ));
    }
    let heading =
        if small_multiples { format!("attack (panel = {})", words.lines) } else { words.lines.into() };
    let panels_area = frame(root, &words.title, &heading, &entries)?;
    let count = if small_multiples { methods.len() } else { attacks.len() };
    let (grid_rows, grid_cols) = grid(count);
    let areas = panels_area.split_evenly((grid_rows, grid_cols));
    for (k, area) in areas.iter().take(count).enumerate() {
        let (caption, caption_colour, curves, refs) = if small_multiples {
            let m = methods[k];
            let c = method_colour(m);
            let curves: Vec<Curve> = attacks
                .iter()
                .enumerate()
                .map(|(a, label)| {
                    let sel: Vec<&SummaryRow> = rows
                        .iter()
                        .copied()
                        .filter(|r| r.method == m && r.attack_label() == *label)
                        .collect();
                    curve(&sel, c, a, !label.contains('→'))
                })
                .collect();
            let refs: Vec<(f64, RGBColor)> =
                clean_value(all, metric, |r| r.method == m).map(|v| (v, c)).into_iter().collect();
            (m.to_string(), c, curves, refs)
        } else {
            let label = &attacks[k];
            let curves: Vec<Curve> = methods
                .iter()
                .map(|m| {
                    let sel: Vec<&SummaryRow> = rows
                        .iter()
                        .copied()
                        .filter(|r| r.method == *m && r.attack_label() == *label)
                        .collect();
                    curve(&sel, method_colour(m), 0, false)
                })
                .collect();
            let refs: Vec<(f64, RGBColor)> = methods
                .iter()
                .filter_map(|m| {
                    clean_value(all, metric, |r| r.method == *m && r.attack_label() == *label)
                        .map(|v| (v, method_colour(m)))
                })
                .collect();
            (label.clone(), BLACK, curves, refs)
        };
        let desc = (words.x_axis, y_desc.as_str());
        draw_panel(area, &caption, caption_colour, (&x_range, &y_range), desc, scale, &curves, &refs)?;
    }
    root.present()?;
    Ok(())
}

/// A chart rendered both ways.
pub(crate) struct Rendered {
    /// The PNG's pixels.
    pub(crate) png: Rendering,
    /// The SVG document.
    pub(crate) svg: String,
}

/// Renders a chart of `size` pixels twice, with `draw` on a bitmap and on an SVG backend.
macro_rules! render_twice {
    ($size:expr, |$root:ident| $body:expr) => {{
        let (width, height) = $size;
        let mut rgb = vec![0u8; 3 * width as usize * height as usize];
        {
            let backend = BitMapBackend::<RGBPixel>::with_buffer_and_format(&mut rgb, (width, height))
                .map_err(|e| e.to_string())?;
            let $root = backend.into_drawing_area();
            $body.map_err(|e| e.to_string())?;
        }
        let mut svg = String::new();
        {
            let $root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
            $body.map_err(|e| e.to_string())?;
        }
        Ok(Rendered { png: Rendering { width, height, rgb }, svg })
    }};
}
pub(crate) use render_twice;

/// Renders the chart of `metric` from the summary rows.
///
/// Fails (with the reason) when no row is about `metric` or plotters reports an error.
pub(crate) fn render_both(
    rows: &[SummaryRow],
    metric: &str,
    direction: Direction,
) -> std::result::Result<Rendered, String> {
    render_worded(rows, metric, &ChartWords::of_metric(metric, direction))
}

/// Renders the chart of `metric` from the summary rows with `words` for its title, y axis
/// and legend (see [`render_both`]).
pub(crate) fn render_worded(
    rows: &[SummaryRow],
    metric: &str,
    words: &ChartWords,
) -> std::result::Result<Rendered, String> {
    ensure_font()?;
    let mine: Vec<&SummaryRow> = rows.iter().filter(|r| r.metric == metric).collect();
    if mine.is_empty() {
        return Err(format!("no summary rows for metric {metric:?}"));
    }
    let methods = distinct(mine.iter().copied(), |r| r.method.as_str()).len();
    let attacks = mine.iter().fold(Vec::new(), |mut v: Vec<String>, r| {
        if !v.contains(&r.attack_label()) {
            v.push(r.attack_label());
        }
        v
    });
    let panels = if methods > MAX_LINES { methods } else { attacks.len() };
    render_twice!(canvas(panels), |root| draw(&root, rows, &mine, metric, words))
}

/// The bitmap of the chart of `metric` (see [`render_both`]).
#[cfg(test)]
pub(crate) fn render(
    rows: &[SummaryRow],
    metric: &str,
    direction: Direction,
) -> std::result::Result<Rendering, String> {
    render_both(rows, metric, direction).map(|r| r.png)
}

/// Writes a rendered chart to `path` (PNG) and beside it with the extension `svg`, atomically.
pub(crate) fn write_rendered(path: &Path, image: &Rendered) -> Result<()> {
    atomic::write_with(path, |w| encode_png(w, &image.png).map_err(|e| Error::io(path, e)))?;
    atomic::write_bytes(&path.with_extension("svg"), image.svg.as_bytes())
}

/// Draws the mean of `metric` against ε, one panel per attack and one line per method (or
/// one panel per method when there are many), and writes it to `path` as PNG and beside it as
/// SVG (`path` with the extension `svg`), atomically.
///
/// `rows` may hold every metric's summary; only those of `metric` are drawn (the others give
/// the method colours and the clean reference values). Fails with [`Error::Plot`] when no row
/// is about `metric` or drawing fails, and with [`Error::Io`] when a file cannot be written.
pub fn plot_metric(path: &Path, rows: &[SummaryRow], metric: &str, direction: Direction) -> Result<()> {
    let image = render_both(rows, metric, direction)
        .map_err(|message| Error::Plot { path: path.to_path_buf(), message })?;
    write_rendered(path, &image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read;

    fn summary(method: &str, attack: &str, epsilon: f64, mean: Option<f64>) -> SummaryRow {
        SummaryRow {
            model: String::new(),
            method: method.into(),
            attack: attack.into(),
            target_method: None,
            epsilon,
            metric: "spearman".into(),
            n: 10,
            nulls: 0,
            mean,
            std: Some(0.1),
            median: mean,
            ci_low: mean.map(|m| m - 0.05),
            ci_high: mean.map(|m| m + 0.05),
            label_kept_rate: 1.0,
        }
    }

    /// Two attacks × two methods × three budgets, with one undefined mean.
    fn example_rows() -> Vec<SummaryRow> {
        let mut rows = Vec::new();
        for attack in ["random_sign", "top_k"] {
            for (k, eps) in [0.0, 4.0 / 255.0, 8.0 / 255.0].into_iter().enumerate() {
                rows.push(summary("gradient", attack, eps, Some(1.0 - 0.3 * k as f64)));
                let mean = (attack != "top_k" || k != 1).then_some(0.9 - 0.2 * k as f64);
                rows.push(summary("integrated_gradients", attack, eps, mean));
            }
        }
        let mut other = summary("gradient", "top_k", 0.01, Some(5.0));
        other.metric = "center_shift_px".into();
        rows.push(other);
        rows
    }

    /// Decodes a PNG written by [`encode_png`]: checks the signature and every chunk's CRC,
    /// reads IHDR, inflates IDAT and strips the per-row filter bytes (all 0).
    fn decode_png(bytes: &[u8]) -> Rendering {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let (mut at, mut width, mut height, mut idat) = (8, 0, 0, Vec::new());
        let mut kinds = Vec::new();
        while at < bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let kind: [u8; 4] = bytes[at + 4..at + 8].try_into().unwrap();
            let data = &bytes[at + 8..at + 8 + len];
            let stored = u32::from_be_bytes(bytes[at + 8 + len..at + 12 + len].try_into().unwrap());
            let mut crc = flate2::Crc::new();
            crc.update(&kind);
            crc.update(data);
            assert_eq!(crc.sum(), stored, "CRC of {:?}", String::from_utf8_lossy(&kind));
            match &kind {
                b"IHDR" => {
                    width = u32::from_be_bytes(data[0..4].try_into().unwrap());
                    height = u32::from_be_bytes(data[4..8].try_into().unwrap());
                    assert_eq!(&data[8..], &[8, 2, 0, 0, 0]);
                }
                b"IDAT" => idat.extend_from_slice(data),
                _ => {}
            }
            kinds.push(kind);
            at += 12 + len;
        }
        assert_eq!(kinds.first(), Some(b"IHDR"));
        assert_eq!(kinds.last(), Some(b"IEND"));
        let mut raw = Vec::new();
        ZlibDecoder::new(&idat[..]).read_to_end(&mut raw).unwrap();
        let stride = 1 + 3 * width as usize;
        assert_eq!(raw.len(), stride * height as usize);
        let mut rgb = Vec::new();
        for row in raw.chunks_exact(stride) {
            assert_eq!(row[0], 0, "filter type");
            rgb.extend_from_slice(&row[1..]);
        }
        Rendering { width, height, rgb }
    }

    /// Number of pixels in rows `ys` whose colour is within `tol` of `colour` on every channel.
    fn count_pixels(img: &Rendering, ys: std::ops::Range<u32>, colour: [u8; 3], tol: u8) -> usize {
        let w = img.width as usize;
        ys.flat_map(|y| (0..w).map(move |x| 3 * (y as usize * w + x)))
            .filter(|&i| (0..3).all(|c| img.rgb[i + c].abs_diff(colour[c]) <= tol))
            .count()
    }

    #[test]
    fn plot_writes_a_png_that_decodes_to_the_rendering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plots").join("spearman.png");
        let rows = example_rows();
        plot_metric(&path, &rows, "spearman", Direction::HigherIsMoreSimilar).unwrap();
        let decoded = decode_png(&std::fs::read(&path).unwrap());
        // Two attacks: two panels and the legend column, one row.
        assert_eq!(
            (decoded.width, decoded.height),
            (2 * PANEL_WIDTH + LEGEND_WIDTH, TITLE_HEIGHT + PANEL_HEIGHT)
        );
        let svg = std::fs::read_to_string(path.with_extension("svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("Spearman rank correlation"), "{}", &svg[..200]);
        let rendered = render(&rows, "spearman", Direction::HigherIsMoreSimilar).unwrap();
        assert_eq!(decoded, rendered);
    }

    #[test]
    fn plot_title_area_holds_text() {
        // Regression guard: with no font registered, plotters' ab_glyph backend draws no text
        // at all and the title band stays white.
        let img = render(&example_rows(), "spearman", Direction::HigherIsMoreSimilar).unwrap();
        let dark = count_pixels(&img, 0..40, [0, 0, 0], 80);
        assert!(dark > 150, "only {dark} dark pixels in the title band");
    }

    #[test]
    fn plot_draws_every_method_in_its_colour() {
        let img = render(&example_rows(), "spearman", Direction::HigherIsMoreSimilar).unwrap();
        let body = 40..img.height;
        for colour in &COLOURS[..2] {
            let n = count_pixels(&img, body.clone(), [colour.0, colour.1, colour.2], 10);
            assert!(n > 200, "{n} pixels of {colour:?}");
        }
        // Only two methods: the third colour must not appear.
        let third = COLOURS[2];
        assert_eq!(count_pixels(&img, body, [third.0, third.1, third.2], 10), 0);
    }

    #[test]
    fn plot_draws_the_confidence_band_in_a_light_tint() {
        // The band is the method's colour at 18% over white: 255 − 0.18·(255 − c) per channel.
        let tint = |c: RGBColor| {
            let f = |v: u8| (255.0 - 0.18 * (255.0 - f64::from(v))).round() as u8;
            [f(c.0), f(c.1), f(c.2)]
        };
        let img = render(&example_rows(), "spearman", Direction::HigherIsMoreSimilar).unwrap();
        let n = count_pixels(&img, 40..img.height, tint(COLOURS[0]), 3);
        assert!(n > 500, "{n} band pixels");
        // Without intervals there is no band.
        let rows: Vec<SummaryRow> =
            example_rows().into_iter().map(|r| SummaryRow { ci_low: None, ci_high: None, ..r }).collect();
        let img = render(&rows, "spearman", Direction::HigherIsMoreSimilar).unwrap();
        assert!(count_pixels(&img, 40..img.height, tint(COLOURS[0]), 3) < 50);
    }

    #[test]
    fn plot_width_grows_with_the_number_of_attacks() {
        let mut rows = example_rows();
        for attack in ["center", "targeted"] {
            rows.push(summary("gradient", attack, 0.01, Some(0.5)));
        }
        let img = render(&rows, "spearman", Direction::LowerIsMoreSimilar).unwrap();
        assert_eq!(img.width, 4 * PANEL_WIDTH + LEGEND_WIDTH);
        assert_eq!(img.rgb.len(), 3 * (img.width * img.height) as usize);
    }

    #[test]
    fn plot_with_a_single_point_or_only_undefined_means_still_draws() {
        let single = [summary("gradient", "top_k", 0.0, Some(0.5))];
        assert!(render(&single, "spearman", Direction::HigherIsMoreSimilar).is_ok());
        let undefined = [summary("gradient", "top_k", 0.01, None)];
        let img = render(&undefined, "spearman", Direction::HigherIsMoreSimilar).unwrap();
        assert!(count_pixels(&img, 0..40, [0, 0, 0], 80) > 150);
    }

    #[test]
    fn plot_of_unknown_metric_fails_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.png");
        let err = plot_metric(&path, &example_rows(), "missing", Direction::HigherIsMoreSimilar).unwrap_err();
        assert!(matches!(err, Error::Plot { .. }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn failed_plot_write_leaves_no_file() {
        // The target is an existing folder: the rename fails after the PNG bytes were written.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spearman.png");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), b"x").unwrap();
        assert!(plot_metric(&path, &example_rows(), "spearman", Direction::HigherIsMoreSimilar).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(8.0 / 255.0, 0.04), "0.0314");
        assert_eq!(tick_label(0.5, 1.0), "0.5");
        assert_eq!(tick_label(12.0, 20.0), "12");
        assert_eq!(tick_label(-0.0001, 1.0), "0");
    }

    #[test]
    fn undefined_means_split_a_line() {
        let points = [(0.0, Some(1.0)), (0.1, None), (0.2, Some(0.5)), (0.3, Some(0.4))];
        assert_eq!(segments(&points), vec![vec![(0.0, 1.0)], vec![(0.2, 0.5), (0.3, 0.4)]]);
    }

    #[test]
    fn tiny_values_are_shown_in_a_power_of_ten_named_on_the_axis() {
        assert_eq!(axis_scale(&(1.2e-6..2.4e-6)), -6);
        assert_eq!(axis_scale(&(0.0..1.0)), 0);
        assert_eq!(axis_scale(&(0.0..250_000.0)), 5);
        assert_eq!(y_label("mse_normalized", -6), "MSE of normalised maps, ×10^-6");
        assert_eq!(y_label("center_shift_px", 0), "center-of-mass shift (px)");
        // The ticks of such an axis read as short numbers once divided.
        assert_eq!(tick_label(1.5e-6 / 1e-6, 1.2e-6 / 1e-6), "1.5");
    }

    #[test]
    fn many_methods_become_small_multiples_with_one_panel_each() {
        let rows: Vec<SummaryRow> = (0..7)
            .flat_map(|m| {
                [0.01, 0.1].map(|e| summary(&format!("method{m}"), "top_k", e, Some(0.5 + 0.01 * m as f64)))
            })
            .collect();
        let img = render(&rows, "spearman", Direction::HigherIsMoreSimilar).unwrap();
        // 7 panels: 4 + 3 in two rows.
        assert_eq!(
            (img.width, img.height),
            (4 * PANEL_WIDTH + LEGEND_WIDTH, TITLE_HEIGHT + 2 * PANEL_HEIGHT)
        );
        // Each panel is in its method's colour: the seventh colour (black) is the 7th method's.
        let c = COLOURS[5];
        assert!(count_pixels(&img, 40..img.height, [c.0, c.1, c.2], 10) > 100);
    }

    #[test]
    fn a_method_keeps_its_colour_in_a_metric_where_another_is_missing() {
        // `center_shift_px` has only integrated_gradients, the study's second method.
        let rows = example_rows();
        let mut only = summary("integrated_gradients", "top_k", 0.01, Some(5.0));
        only.metric = "center_shift_px".into();
        let rows: Vec<SummaryRow> =
            rows.into_iter().filter(|r| r.metric != "center_shift_px").chain([only]).collect();
        let img = render(&rows, "center_shift_px", Direction::LowerIsMoreSimilar).unwrap();
        let (first, second) = (COLOURS[0], COLOURS[1]);
        assert!(count_pixels(&img, 40..img.height, [second.0, second.1, second.2], 10) > 30);
        assert_eq!(count_pixels(&img, 40..img.height, [first.0, first.1, first.2], 10), 0);
    }

    #[test]
    fn an_after_measure_gets_its_clean_value_as_a_reference() {
        let mut rows = Vec::new();
        for (metric, mean) in [("topk_mass_before", 0.43), ("topk_mass_after", 0.3)] {
            for e in [0.01, 0.1] {
                rows.push(SummaryRow {
                    metric: metric.into(),
                    ..summary("gradient", "top_k", e, Some(mean))
                });
            }
        }
        assert_eq!(clean_value(&rows, "topk_mass_after", |_| true), Some(0.43));
        assert_eq!(clean_value(&rows, "spearman", |_| true), None);
        let r = render_both(&rows, "topk_mass_after", Direction::HigherIsMoreSimilar).unwrap();
        assert!(r.svg.contains("clean value"));
        // The y axis reaches the clean value although no interval is near it (means 0.3 ± 0.05).
        assert!(r.svg.lines().any(|l| l.trim() == "0.4"), "no tick at 0.4");
    }
}

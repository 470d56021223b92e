//! Metric-vs-ε charts: one PNG per metric, drawn from the summary rows.
//!
//! The paper's main figures show, for each attack, how a similarity metric between the
//! original and the perturbed saliency map falls as the L∞ budget grows, one curve per
//! attribution method. [`plot_metric`] draws exactly that: one panel per attack (side by
//! side, panel title = attack), x = ε on the [0, 1] pixel scale (the budgets present in the
//! summary), y = the metric's mean over label-kept images in the metric's own units (the
//! column name carries them, e.g. `center_shift_px`), one coloured line with point markers per
//! method over a translucent band of the same colour (the 95% bootstrap confidence interval of
//! the mean) and a legend naming the methods. The chart title names the metric and its direction
//! ("higher = more similar"), because for some metrics (rank correlation) a falling curve means
//! fragile maps and for others (centre shift) a rising one does. All panels share the y range so
//! that attacks can be compared at a glance. A group whose mean is undefined (no label-kept
//! image had a value) leaves a gap in its line rather than a made-up point.
//!
//! Text: plotters' `ab_glyph` backend has no built-in font and silently draws no text when the
//! family is unknown, which yields charts without title, ticks or legend. The DejaVu Sans font
//! embedded by the `dejavu` crate is therefore registered as `sans-serif` once per process
//! before any drawing, and the tests check that the title area holds dark pixels.
//!
//! Output: the chart is rendered into an in-memory RGB buffer and encoded by the `png` module:
//! plotters' own encoder only writes to a path, which would bypass the atomic
//! temp-file-and-rename that every output goes through.

use crate::atomic;
use crate::error::{Error, Result};
use crate::metric::Direction;
use crate::report::png::{encode_png, Rendering};
use crate::report::summary::SummaryRow;
use plotters::backend::RGBPixel;
use plotters::prelude::{
    BitMapBackend, ChartBuilder, Circle, Color, FontStyle, IntoDrawingArea, LineSeries, PathElement, Polygon,
    RGBColor, SeriesLabelPosition, BLACK, WHITE,
};
use std::path::Path;
use std::sync::OnceLock;

/// Most panels in one row of a chart; more attacks wrap to further rows.
pub(crate) const MAX_COLUMNS: usize = 4;

/// Width of one attack's panel, in pixels.
pub(crate) const PANEL_WIDTH: u32 = 600;
/// The narrowest chart, in pixels (a single panel is drawn this wide).
pub(crate) const MIN_WIDTH: u32 = 1200;
/// Chart height, in pixels: the title band plus one row of panels.
pub(crate) const HEIGHT: u32 = 500;
/// Font size of the chart title, in pixels.
pub(crate) const TITLE_SIZE: u32 = 28;
/// Label of the x axis.
pub(crate) const X_LABEL: &str = "epsilon (L∞, pixel scale [0,1])";

/// Line colours, one per method in order of first appearance: Tableau 10, then the darker
/// half of Tableau 20's light tones, so that up to 16 methods get distinct colours that all
/// read on white (plotters' `Palette99` has yellow third). More methods repeat the cycle.
pub(crate) const COLOURS: [RGBColor; 16] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(120, 160, 210),
    RGBColor(230, 160, 90),
    RGBColor(110, 200, 100),
    RGBColor(240, 120, 120),
    RGBColor(175, 150, 210),
];

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
fn distinct<'a>(rows: &[&'a SummaryRow], key: impl Fn(&'a SummaryRow) -> &'a str) -> Vec<&'a str> {
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
    let pad = if span > 0.0 { 0.06 * span } else { (0.1 * lo.abs()).max(1e-3_f64) };
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

/// The panels' titles (one per attack and target method), in order of first appearance.
fn panel_labels(rows: &[&SummaryRow]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in rows {
        let l = r.attack_label();
        if !out.contains(&l) {
            out.push(l);
        }
    }
    out
}

/// Width and height in pixels of a chart of `panels` panels laid out by [`grid`].
pub(crate) fn canvas(panels: usize) -> (u32, u32) {
    let (rows, cols) = grid(panels);
    ((PANEL_WIDTH * cols as u32).max(MIN_WIDTH), HEIGHT * rows as u32)
}

/// Rows and columns of the panel grid: at most [`MAX_COLUMNS`] panels side by side.
pub(crate) fn grid(panels: usize) -> (usize, usize) {
    let cols = panels.clamp(1, MAX_COLUMNS);
    (panels.div_ceil(cols).max(1), cols)
}

/// Draws the chart of `metric` into `rgb` (a `width × height` RGB buffer).
fn draw(
    rgb: &mut [u8],
    (width, height): (u32, u32),
    rows: &[&SummaryRow],
    metric: &str,
    direction: Direction,
) -> std::result::Result<(), DrawError> {
    let attacks = panel_labels(rows);
    let methods = distinct(rows, |r| r.method.as_str());
    let x_range = padded_range(rows.iter().map(|r| r.epsilon));
    let y_range = padded_range(rows.iter().flat_map(|r| [r.mean, r.ci_low, r.ci_high]).flatten());
    let (x_span, y_span) = (x_range.end - x_range.start, y_range.end - y_range.start);
    // Curves of a higher-is-similar metric fall from the upper left, those of a lower-is-similar
    // metric rise to the upper right: put the legend in the corner they leave free.
    let legend_corner = match direction {
        Direction::HigherIsMoreSimilar => SeriesLabelPosition::UpperRight,
        Direction::LowerIsMoreSimilar => SeriesLabelPosition::LowerRight,
    };

    let backend = BitMapBackend::<RGBPixel>::with_buffer_and_format(rgb, (width, height))?;
    let root = backend.into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!("{metric} ({})", direction_text(direction));
    let body = root.titled(&title, ("sans-serif", TITLE_SIZE))?;
    let (grid_rows, grid_cols) = grid(attacks.len());
    for (panel, attack) in body.split_evenly((grid_rows, grid_cols)).iter().zip(&attacks) {
        let mut chart = ChartBuilder::on(panel)
            .caption(attack.as_str(), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range.clone(), y_range.clone())?;
        chart
            .configure_mesh()
            .x_desc(X_LABEL)
            .y_desc(metric)
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&|x| tick_label(*x, x_span))
            .y_label_formatter(&|y| tick_label(*y, y_span))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;
        for (m, method) in methods.iter().enumerate() {
            let colour = COLOURS[m % COLOURS.len()];
            let line = colour.stroke_width(2);
            // An empty series carries the legend entry, so that every panel names every method
            // even where one has no defined mean.
            chart
                .draw_series(LineSeries::new(std::iter::empty::<(f64, f64)>(), line))?
                .label(*method)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], line));
            let mut points: Vec<(f64, Option<f64>)> = rows
                .iter()
                .filter(|r| r.attack_label() == *attack && r.method == *method)
                .map(|r| (r.epsilon, r.mean))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            // The 95% bootstrap interval as a translucent band under the line.
            let mut band: Vec<(f64, Option<(f64, f64)>)> = rows
                .iter()
                .filter(|r| r.attack_label() == *attack && r.method == *method)
                .map(|r| (r.epsilon, r.ci_low.zip(r.ci_high).filter(|(l, h)| l.is_finite() && h.is_finite())))
                .collect();
            band.sort_by(|a, b| a.0.total_cmp(&b.0));
            for part in band.split(|(_, ci)| ci.is_none()).filter(|p| !p.is_empty()) {
                let upper = part.iter().filter_map(|&(x, ci)| ci.map(|c| (x, c.1)));
                let lower = part.iter().rev().filter_map(|&(x, ci)| ci.map(|c| (x, c.0)));
                let outline: Vec<(f64, f64)> = upper.chain(lower).collect();
                chart.draw_series(std::iter::once(Polygon::new(outline, colour.mix(0.18).filled())))?;
            }
            for run in segments(&points) {
                chart.draw_series(LineSeries::new(run.iter().copied(), line))?;
                chart.draw_series(run.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
            }
        }
        chart
            .configure_series_labels()
            .position(legend_corner.clone())
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Renders the chart of `metric` from the summary rows into an RGB buffer.
///
/// Fails (with the reason) when no row is about `metric` or plotters reports an error.
pub(crate) fn render(
    rows: &[SummaryRow],
    metric: &str,
    direction: Direction,
) -> std::result::Result<Rendering, String> {
    ensure_font()?;
    let rows: Vec<&SummaryRow> = rows.iter().filter(|r| r.metric == metric).collect();
    if rows.is_empty() {
        return Err(format!("no summary rows for metric {metric:?}"));
    }
    let (width, height) = canvas(panel_labels(&rows).len());
    let mut rgb = vec![0u8; 3 * width as usize * height as usize];
    draw(&mut rgb, (width, height), &rows, metric, direction).map_err(|e| e.to_string())?;
    Ok(Rendering { width, height, rgb })
}

/// Draws the mean of `metric` against ε, one panel per attack and one line per method, and
/// writes it to `path` as PNG, atomically.
///
/// `rows` may hold every metric's summary; only those of `metric` are drawn. `direction`
/// goes into the title. Fails with [`Error::Plot`] when no row is about `metric` or drawing
/// fails, and with [`Error::Io`] when the file cannot be written.
pub fn plot_metric(path: &Path, rows: &[SummaryRow], metric: &str, direction: Direction) -> Result<()> {
    let image = render(rows, metric, direction)
        .map_err(|message| Error::Plot { path: path.to_path_buf(), message })?;
    atomic::write_with(path, |w| encode_png(w, &image).map_err(|e| Error::io(path, e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read;

    fn summary(method: &str, attack: &str, epsilon: f64, mean: Option<f64>) -> SummaryRow {
        SummaryRow {
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
        // Two attacks: two 600-px panels, which is the 1200-px minimum width.
        assert_eq!((decoded.width, decoded.height), (1200, HEIGHT));
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
        assert_eq!(img.width, 4 * PANEL_WIDTH);
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
}

//! Heat-map grids: the first images of a set with one method's maps overlaid, as one PNG.
//!
//! Each panel is the grey image scaled up, with the saliency map (|attribution| summed over
//! channels, normalised per image to its maximum) blended on top in a black–red–yellow–white
//! colour map; a colour bar on the right reads from 0 to the image's maximum. Drawn with
//! plotters into memory (DejaVu font, see [`super::plot`]) and encoded by the `png` module, so the
//! file is written atomically.

use super::plot::ensure_font;
use super::png::{encode_png, Rendering};
use crate::atomic;
use crate::error::{Error, Result};
use plotters::backend::RGBPixel;
use plotters::prelude::*;
use std::path::Path;

/// Scale factor from image pixels to drawn pixels.
const ZOOM: u32 = 4;
/// Gap between panels, and outer margin, in drawn pixels.
const GAP: u32 = 16;
/// Height of the title band.
const TITLE: u32 = 44;
/// Height of the label band under the panels.
const LABEL: u32 = 28;
/// Width reserved for the colour bar and its labels.
const BAR: u32 = 110;

/// One panel: an image [C·H·W] in [0,1] (grey, or RGB shown in colour), its saliency map
/// [H·W] (non-negative) and a label.
pub struct Panel<'a> {
    /// Pixels in [0,1], channel planes in order (C·H·W); 3 channels are drawn as RGB, any
    /// other count as the grey first channel.
    pub image: &'a [f32],
    /// Saliency, row-major, non-negative.
    pub map: &'a [f32],
    /// Text under the panel.
    pub label: String,
}

/// The heat colour of t ∈ [0,1]: black → red → yellow → white.
fn heat(t: f32) -> [f32; 3] {
    let t = t.clamp(0.0, 1.0);
    [(3.0 * t).min(1.0), (3.0 * t - 1.0).clamp(0.0, 1.0), (3.0 * t - 2.0).clamp(0.0, 1.0)]
}

/// Renders the grid (`h`×`w` images) into an RGB buffer: one row of panels.
pub(crate) fn render(
    title: &str,
    panels: &[Panel],
    h: usize,
    w: usize,
) -> std::result::Result<Rendering, String> {
    render_rows(title, std::slice::from_ref(&panels), (h, w), ZOOM)
}

/// Renders rows of panels (`h`×`w` images drawn `zoom` times larger) into an RGB buffer, the
/// colour bar beside the first row.
fn render_rows(
    title: &str,
    rows: &[&[Panel]],
    (h, w): (usize, usize),
    zoom: u32,
) -> std::result::Result<Rendering, String> {
    ensure_font()?;
    let n = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1) as u32;
    let (pw, ph) = (w as u32 * zoom, h as u32 * zoom);
    let row_height = ph + LABEL + GAP;
    let width = GAP + n * (pw + GAP) + BAR;
    let height = TITLE + rows.len().max(1) as u32 * row_height;
    let mut rgb = vec![255u8; (3 * width * height) as usize];
    {
        let root = BitMapBackend::<RGBPixel>::with_buffer_and_format(&mut rgb, (width, height))
            .map_err(|e| e.to_string())?
            .into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let title_style = TextStyle::from(("sans-serif", 24).into_font()).color(&BLACK);
        root.draw_text(title, &title_style, (GAP as i32, 10)).map_err(|e| e.to_string())?;
        let label_style = TextStyle::from(("sans-serif", 13).into_font()).color(&BLACK);
        for (r, panels) in rows.iter().enumerate() {
            let y0 = TITLE + r as u32 * row_height;
            for (k, p) in panels.iter().enumerate() {
                let x0 = GAP + k as u32 * (pw + GAP);
                draw_panel(&root, p, (x0, y0), (h, w), zoom)?;
                root.draw_text(&p.label, &label_style, (x0 as i32, (y0 + ph + 6) as i32))
                    .map_err(|e| e.to_string())?;
            }
        }
        // Colour bar: 0 at the bottom, the image's maximum at the top.
        let bx = (GAP + n * (pw + GAP)) as i32;
        for y in 0..ph {
            let c = heat(1.0 - y as f32 / (ph - 1).max(1) as f32);
            let col = RGBColor((255.0 * c[0]) as u8, (255.0 * c[1]) as u8, (255.0 * c[2]) as u8);
            root.draw(&Rectangle::new(
                [(bx, (TITLE + y) as i32), (bx + 18, (TITLE + y + 1) as i32)],
                col.filled(),
            ))
            .map_err(|e| e.to_string())?;
        }
        root.draw_text("max", &label_style, (bx + 24, TITLE as i32)).map_err(|e| e.to_string())?;
        root.draw_text("0", &label_style, (bx + 24, (TITLE + ph - 14) as i32)).map_err(|e| e.to_string())?;
        root.draw_text("(per image)", &label_style, (bx - 4, (TITLE + ph + 6) as i32))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(Rendering { width, height, rgb })
}

/// Draws one panel's image with its map blended on top, its top-left corner at `at`.
fn draw_panel<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    p: &Panel,
    (x0, y0): (u32, u32),
    (h, w): (usize, usize),
    zoom: u32,
) -> std::result::Result<(), String> {
    let (pw, ph) = (w as u32 * zoom, h as u32 * zoom);
    let max = p.map.iter().fold(0f32, |a, &b| a.max(b));
    let rgb = p.image.len() == 3 * h * w;
    for y in 0..ph {
        for x in 0..pw {
            let i = (y / zoom) as usize * w + (x / zoom) as usize;
            let g = |ch: usize| p.image[if rgb { ch * h * w + i } else { i }].clamp(0.0, 1.0);
            let s = if max > 0.0 { p.map[i] / max } else { 0.0 };
            let c = heat(s);
            let a = 0.8 * s;
            let px = |ch: usize| (255.0 * ((1.0 - a) * g(ch) * 0.8 + a * c[ch])) as u8;
            root.draw_pixel(((x0 + x) as i32, (y0 + y) as i32), &RGBColor(px(0), px(1), px(2)))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Writes rows of panels to `path` as PNG, atomically: each panel `h`×`w`, drawn at about
/// 112 pixels a side (Fashion-MNIST ×4, 224-pixel images ×1).
pub fn write_heatmap_rows(path: &Path, title: &str, rows: &[&[Panel]], h: usize, w: usize) -> Result<()> {
    let zoom = (112 / h.max(w).max(1)).max(1) as u32;
    let image = render_rows(title, rows, (h, w), zoom)
        .map_err(|message| Error::Plot { path: path.to_path_buf(), message })?;
    atomic::write_with(path, |out| encode_png(out, &image).map_err(|e| Error::io(path, e)))
}

/// Writes the grid of `panels` to `path` as PNG, atomically.
pub fn write_heatmap_grid(path: &Path, title: &str, panels: &[Panel], h: usize, w: usize) -> Result<()> {
    let image =
        render(title, panels, h, w).map_err(|message| Error::Plot { path: path.to_path_buf(), message })?;
    atomic::write_with(path, |out| encode_png(out, &image).map_err(|e| Error::io(path, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_has_title_text_and_heat_colours() {
        let image = vec![0.5f32; 16];
        let mut map = vec![0f32; 16];
        map[5] = 1.0;
        let panels = [Panel { image: &image, map: &map, label: "#0 pred 3".into() }];
        let r = render("gradient", &panels, 4, 4).unwrap();
        let px = |x: u32, y: u32| {
            let i = (3 * (y * r.width + x)) as usize;
            [r.rgb[i], r.rgb[i + 1], r.rgb[i + 2]]
        };
        // Title text: dark pixels in the title band (a missing font would leave it white).
        let dark = (0..TITLE)
            .flat_map(|y| (0..r.width).map(move |x| (x, y)))
            .filter(|&(x, y)| px(x, y)[0] < 80)
            .count();
        assert!(dark > 30, "{dark}");
        // Pixel (1,1) of the image is the map's maximum: drawn hot (red and green high, i.e.
        // towards white/yellow); pixel (0,0) has no saliency: plain grey 0.5·0.8.
        let hot = px(GAP + ZOOM + 1, TITLE + ZOOM + 1);
        assert!(hot[0] > 200 && hot[1] > 150, "{hot:?}");
        let grey = px(GAP + 1, TITLE + 1);
        assert_eq!(grey, [102, 102, 102]);
    }

    #[test]
    fn rgb_images_are_drawn_in_colour() {
        // A 2×2 image: pure red planes (R = 1, G = B = 0), no saliency: drawn as 0.8·red.
        let mut image = vec![0f32; 12];
        image[..4].fill(1.0);
        let map = vec![0f32; 4];
        let panels = [Panel { image: &image, map: &map, label: "rgb".into() }];
        let r = render("rgb", &panels, 2, 2).unwrap();
        let i = (3 * ((TITLE + 1) * r.width + GAP + 1)) as usize;
        assert_eq!([r.rgb[i], r.rgb[i + 1], r.rgb[i + 2]], [204, 0, 0]);
    }
}

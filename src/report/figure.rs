//! The paper's figure 1 for one image and one attack: per method, the original image, its
//! saliency map, the perturbed image and its saliency map, side by side.
//!
//! Ghorbani et al.'s figure 1 is what convinces a reader that a fragile map is a problem: the
//! two images look the same, the class and its confidence barely move, and the maps differ.
//! So every row shows exactly that, large enough to see (each image is scaled by a whole
//! factor to about [`TARGET`] pixels, nearest neighbour, so pixels stay sharp), with the class
//! name and confidence before and after under the pairs and the image's own scores for the
//! method (top-k intersection and Spearman correlation of the two maps) under the perturbed
//! pair. Maps are drawn alone (not over the image), black → red → yellow → white, each scaled
//! to its own maximum, as in the paper.
//!
//! Pixels are written straight into the RGB buffer; plotters draws only the text (DejaVu Sans,
//! see [`super::plot`]); the PNG is written atomically by the `png` module.

use super::plot::ensure_font;
use super::png::{encode_png, Rendering};
use crate::atomic;
use crate::error::{Error, Result};
use plotters::backend::RGBPixel;
use plotters::prelude::{BitMapBackend, IntoDrawingArea, IntoFont, TextStyle, BLACK};
use plotters::style::RGBColor;
use std::path::Path;

/// The drawn size of an image, in pixels, that the whole-number zoom aims at.
pub const TARGET: usize = 168;
/// Outer margin and gap between the two images of a pair.
const GAP: usize = 12;
/// Extra gap between the clean and the perturbed pair.
const PAIR_GAP: usize = 36;
/// Width of the method-name column.
const NAME: usize = 190;
/// Height of the title band (two lines) and of the column headers.
const HEADER: usize = 84;
/// Height of the text band under each row (two lines).
const TEXT: usize = 46;

/// One method's row.
pub struct FigureRow<'a> {
    /// The method's name.
    pub method: String,
    /// Its map of the original image, [H·W], non-negative.
    pub clean_map: &'a [f32],
    /// Its map of the perturbed image, [H·W], non-negative.
    pub perturbed_map: &'a [f32],
    /// Text under the perturbed pair: the image's scores for this method.
    pub scores: String,
}

/// One figure: an image, its perturbed copy and every method's maps.
pub struct Figure<'a> {
    /// First title line (image, attack, ε).
    pub title: String,
    /// The original image [C·H·W] in [0, 1] (3 channels in colour, otherwise grey).
    pub image: &'a [f32],
    /// The perturbed image, same layout.
    pub perturbed: &'a [f32],
    /// Image height and width.
    pub size: (usize, usize),
    /// Under the original pair: the class and confidence before.
    pub before: String,
    /// Under the perturbed pair: the class and confidence after.
    pub after: String,
    /// The methods' rows.
    pub rows: Vec<FigureRow<'a>>,
}

/// The heat colour of t ∈ [0,1]: black → red → yellow → white.
fn heat(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0);
    let c = [(3.0 * t).min(1.0), (3.0 * t - 1.0).clamp(0.0, 1.0), (3.0 * t - 2.0).clamp(0.0, 1.0)];
    c.map(|v| (255.0 * v).round() as u8)
}

/// Whole-number zoom that brings the larger side of an `h`×`w` image near [`TARGET`].
pub fn zoom(h: usize, w: usize) -> usize {
    (TARGET / h.max(w).max(1)).max(1)
}

/// The drawn figure's width and height.
fn canvas(fig: &Figure) -> (usize, usize) {
    let z = zoom(fig.size.0, fig.size.1);
    let (pw, ph) = (fig.size.1 * z, fig.size.0 * z);
    (NAME + 4 * pw + 3 * GAP + PAIR_GAP + GAP, HEADER + fig.rows.len() * (ph + TEXT + GAP) + GAP)
}

/// Copies `pixels` (RGB per image pixel) zoomed into `rgb` (a `width`-wide buffer) at (x0, y0).
fn blit(
    rgb: &mut [u8],
    width: usize,
    (x0, y0): (usize, usize),
    (h, w, z): (usize, usize, usize),
    pixel: impl Fn(usize) -> [u8; 3],
) {
    for y in 0..h * z {
        for x in 0..w * z {
            let c = pixel((y / z) * w + x / z);
            let at = 3 * ((y0 + y) * width + x0 + x);
            rgb[at..at + 3].copy_from_slice(&c);
        }
    }
}

/// The colour of pixel `i` of an image [C·H·W] of `hw` pixels per channel.
fn image_pixel(image: &[f32], hw: usize, i: usize) -> [u8; 3] {
    let v = |c: usize| (255.0 * image.get(c * hw + i).copied().unwrap_or(0.0).clamp(0.0, 1.0)).round() as u8;
    if image.len() == 3 * hw {
        [v(0), v(1), v(2)]
    } else {
        [v(0); 3]
    }
}

/// Renders the figure into an RGB buffer.
pub(crate) fn render(fig: &Figure) -> std::result::Result<Rendering, String> {
    ensure_font()?;
    let (h, w) = fig.size;
    let z = zoom(h, w);
    let (pw, ph) = (w * z, h * z);
    let (width, height) = canvas(fig);
    let mut rgb = vec![255u8; 3 * width * height];
    let columns = [NAME, NAME + pw + GAP, NAME + 2 * (pw + GAP) + PAIR_GAP, NAME + 3 * (pw + GAP) + PAIR_GAP];
    for (k, row) in fig.rows.iter().enumerate() {
        let y0 = HEADER + k * (ph + TEXT + GAP);
        let hw = h * w;
        fn map_colour(map: &[f32]) -> impl Fn(usize) -> [u8; 3] + '_ {
            let max = map.iter().fold(0f32, |a, &b| a.max(b));
            move |i: usize| heat(if max > 0.0 { map.get(i).copied().unwrap_or(0.0) / max } else { 0.0 })
        }
        blit(&mut rgb, width, (columns[0], y0), (h, w, z), |i| image_pixel(fig.image, hw, i));
        blit(&mut rgb, width, (columns[1], y0), (h, w, z), map_colour(row.clean_map));
        blit(&mut rgb, width, (columns[2], y0), (h, w, z), |i| image_pixel(fig.perturbed, hw, i));
        blit(&mut rgb, width, (columns[3], y0), (h, w, z), map_colour(row.perturbed_map));
    }
    {
        let root = BitMapBackend::<RGBPixel>::with_buffer_and_format(&mut rgb, (width as u32, height as u32))
            .map_err(|e| e.to_string())?
            .into_drawing_area();
        let font = |size: u32| TextStyle::from(("sans-serif", size).into_font()).color(&BLACK);
        let grey_colour = RGBColor(70, 70, 70);
        let grey = TextStyle::from(("sans-serif", 15).into_font()).color(&grey_colour);
        let text = |s: &str, style: &TextStyle, (x, y): (usize, usize)| {
            root.draw_text(s, style, (x as i32, y as i32)).map_err(|e| e.to_string())
        };
        text(&fig.title, &font(22), (GAP, 8))?;
        let heads = ["original", "its map", "perturbed", "its map"];
        for (x, head) in columns.iter().zip(heads) {
            text(head, &font(16), (*x, HEADER - 24))?;
        }
        for (k, row) in fig.rows.iter().enumerate() {
            let y0 = HEADER + k * (ph + TEXT + GAP);
            text(
                &row.method,
                &TextStyle::from(("sans-serif", 17).into_font()).color(&BLACK),
                (GAP, y0 + ph / 2 - 9),
            )?;
            text(&fig.before, &grey, (columns[0], y0 + ph + 4))?;
            text(&fig.after, &grey, (columns[2], y0 + ph + 4))?;
            text(&row.scores, &font(15), (columns[2], y0 + ph + 24))?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(Rendering { width: width as u32, height: height as u32, rgb })
}

/// Writes the figure to `path` as PNG, atomically.
pub fn write_figure(path: &Path, fig: &Figure) -> Result<()> {
    let image = render(fig).map_err(|message| Error::Plot { path: path.to_path_buf(), message })?;
    atomic::write_with(path, |out| encode_png(out, &image).map_err(|e| Error::io(path, e)))
}

/// The file name of the figure of image `image_id` under the attack labelled `attack_label`
/// (`top_k → gradient` gives `top_k-gradient_image3.png`): ASCII letters, digits and `_` kept,
/// anything else a `-`.
pub fn example_file(attack_label: &str, image_id: usize) -> String {
    let safe: String =
        attack_label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    format!("{}_image{image_id}.png", safe.replace("---", "-"))
}

/// "Ankle boot (class 9), 98.1%": a class by its name when known, and a probability.
pub fn class_text(class: i64, names: Option<&[String]>, probability: f64) -> String {
    let name = usize::try_from(class).ok().and_then(|c| names.and_then(|n| n.get(c)));
    match name {
        Some(n) => format!("{n} (class {class}), {:.1}%", 100.0 * probability),
        None => format!("class {class}, {:.1}%", 100.0 * probability),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure<'a>(image: &'a [f32], map: &'a [f32], rows: usize) -> Figure<'a> {
        Figure {
            title: "image 0, top_k → gradient, ε = 0.1".into(),
            image,
            perturbed: image,
            size: (28, 28),
            before: "before: Ankle boot (class 9), 98.0%".into(),
            after: "after: Ankle boot (class 9), 91.0%".into(),
            rows: (0..rows)
                .map(|k| FigureRow {
                    method: format!("method {k}"),
                    clean_map: map,
                    perturbed_map: map,
                    scores: "top-100 ∩ 0.450, Spearman 0.520".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_28_pixel_image_is_drawn_six_times_larger_and_each_method_adds_a_row() {
        assert_eq!(zoom(28, 28), 6);
        assert_eq!(zoom(224, 224), 1);
        assert_eq!(zoom(64, 32), 2);
        let image = vec![0.5f32; 28 * 28];
        let map: Vec<f32> = (0..28 * 28).map(|i| i as f32).collect();
        let one = render(&figure(&image, &map, 1)).unwrap();
        let two = render(&figure(&image, &map, 2)).unwrap();
        assert_eq!(one.width as usize, NAME + 4 * 168 + 3 * GAP + PAIR_GAP + GAP);
        assert_eq!(two.height - one.height, (168 + TEXT + GAP) as u32);
        // The map's brightest pixel (the last, bottom right) is white, the first black; the
        // grey image is 128.
        let px = |x: usize, y: usize| {
            let at = 3 * (y * one.width as usize + x);
            [one.rgb[at], one.rgb[at + 1], one.rgb[at + 2]]
        };
        let map_x = NAME + 168 + GAP;
        assert_eq!(px(map_x + 167, HEADER + 167), [255, 255, 255]);
        assert_eq!(px(map_x, HEADER), [0, 0, 0]);
        assert_eq!(px(NAME + 10, HEADER + 10), [128, 128, 128]);
        // Text is drawn: dark pixels in the title band.
        let dark = (0..40)
            .flat_map(|y| (0..one.width as usize).map(move |x| (x, y)))
            .filter(|&(x, y)| px(x, y)[0] < 100)
            .count();
        assert!(dark > 100, "{dark} dark pixels in the title");
    }

    #[test]
    fn file_names_are_plain_ascii() {
        assert_eq!(example_file("top_k → gradient", 3), "top_k-gradient_image3.png");
        assert_eq!(example_file("random_sign", 0), "random_sign_image0.png");
    }

    #[test]
    fn classes_are_named_when_names_are_known() {
        let names: Vec<String> = ["T-shirt/top", "Trouser"].map(String::from).to_vec();
        assert_eq!(class_text(1, Some(&names), 0.9812), "Trouser (class 1), 98.1%");
        assert_eq!(class_text(5, Some(&names), 0.5), "class 5, 50.0%");
        assert_eq!(class_text(1, None, 0.5), "class 1, 50.0%");
    }
}

//! Resampling and center-cropping of image planes: antialiased bilinear, as PyTorch and PIL.
//!
//! What: one plane (`h × w` f32 values, row-major) becomes `out_h × out_w` values
//! ([`resample`]); [`shorter_side_size`] and [`center_crop_origin`] give the output size of
//! torchvision's `Resize(int)` and the window of its `CenterCrop(int)`, and [`crop`] cuts it.
//! A set of images (`N×C×H×W`) is processed plane by plane, so the same code serves idx, npy and
//! folders of PNG/JPEG files, for any number of channels.
//!
//! Why our own resampler: models are trained on images resized by torchvision, and saliency
//! maps are sensitive to the exact pixels, so the resize must give the same numbers as
//! `torch.nn.functional.interpolate(x, size, mode="bilinear", antialias=True,
//! align_corners=False)` on float tensors, which is also PIL's `Image.resize(size,
//! Image.BILINEAR)` on float ("F") images. It must run on f32 planes (idx and npy images are
//! not 8-bit images) and for any channel count, which the `image` crate's `resize` does not do.
//!
//! # The formula (separable: rows first, then columns, as PIL)
//!
//! Along one axis of `input` pixels resampled to `output`, with `scale = input / output`:
//!
//! - the triangle filter `tri(t) = max(0, 1 − |t|)` is stretched by `fs = max(1, scale)`: when
//!   downsampling, each output pixel averages over `scale` input pixels on either side
//!   (antialiasing); when upsampling (`scale < 1`), `fs = 1` and this is ordinary bilinear
//!   interpolation;
//! - output pixel `o` is centred at `c = (o + 0.5) · scale` in input coordinates, where input
//!   pixel `i` covers `[i, i + 1)` and so has its centre at `i + 0.5` (half-pixel centres, i.e.
//!   `align_corners=False`; the sample position in pixel-index units is `c − 0.5`);
//! - its value is `Σ_i wᵢ · xᵢ / Σ_i wᵢ` with `wᵢ = tri((i + 0.5 − c) / fs)`, over the input
//!   pixels `i` inside the image (support `fs` on either side of `c`). Dividing by the sum
//!   renormalises the weights near the borders, which, for upsampling, equals clamping the
//!   sample position to the first and last pixel centres (what plain bilinear does).
//!
//! Weights and sums are computed in f64 and each pass is stored as f32, as PIL does for "F"
//! images; results agree with Pillow 13 to within f32 rounding (see the tests). The `image`
//! crate's `FilterType::Triangle` uses the same formula: in `imageops::sample` (0.24.9) it
//! sets `sratio = max(1, ratio)`, `src_support = support · sratio` and weighs pixel `i` by
//! `triangle((i − (c − 0.5)) / sratio)`, normalised; we still use our own so that f32 data of
//! any channel count can be resized.
//!
//! Torchvision on PIL images resizes 8-bit images and rounds after each pass; our f32 path
//! (decode, divide by 255, resize) matches torchvision on tensors (`ToTensor()` first,
//! `antialias=True`) and differs from the PIL path by at most about one grey level.

/// The size `(h, w)` that torchvision's `Resize(shorter)` gives an `h × w` image: the shorter
/// side becomes `shorter` and the longer one `int(shorter · long / short)` (truncated, as
/// Python's `int`), keeping the aspect ratio. `None` if a side is 0 or the product overflows.
pub(crate) fn shorter_side_size(h: usize, w: usize, shorter: usize) -> Option<(usize, usize)> {
    if h == 0 || w == 0 || shorter == 0 {
        return None;
    }
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    // torchvision computes `int(size * long / short)` with a float division; the integer
    // floor division is the same number for every size that fits in memory.
    let new_long = shorter.checked_mul(long)? / short;
    Some(if w <= h { (new_long, shorter) } else { (shorter, new_long) })
}

/// The top-left corner `(top, left)` of torchvision's `CenterCrop(size)` window in an `h × w`
/// image: `top = round((h − size) / 2)` with Python's `round` (half to even), likewise `left`.
/// `None` if `size` is larger than either side (torchvision would pad; we refuse).
pub(crate) fn center_crop_origin(h: usize, w: usize, size: usize) -> Option<(usize, usize)> {
    if size > h || size > w {
        return None;
    }
    // (h − size)/2 is a whole number or a half; half to even rounds 0.5 → 0, 1.5 → 2, 2.5 → 2.
    let half_to_even = |d: usize| ((d as f64) / 2.0).round_ties_even() as usize;
    Some((half_to_even(h - size), half_to_even(w - size)))
}

/// The `ch × cw` window at `(top, left)` of an `h × w` plane, row-major. The window must lie
/// inside the plane (callers get it from [`center_crop_origin`]); rows that do not are cut short.
pub(crate) fn crop(src: &[f32], w: usize, top: usize, left: usize, ch: usize, cw: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(ch * cw);
    for row in src.chunks_exact(w.max(1)).skip(top).take(ch) {
        out.extend(row.iter().skip(left).take(cw));
    }
    out
}

/// Resamples one `h × w` plane (row-major) to `out_h × out_w` with the antialiased bilinear
/// filter described in the module docs. An axis whose size does not change is copied as is.
/// Empty sizes give an empty plane.
pub(crate) fn resample(src: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 || src.len() != h * w {
        return Vec::new();
    }
    // Rows first (PIL's order): h × w -> h × out_w.
    let wide = if out_w == w {
        src.to_vec()
    } else {
        let taps = Taps::new(w, out_w);
        let mut out = Vec::with_capacity(h * out_w);
        for row in src.chunks_exact(w) {
            out.extend((0..out_w).map(|o| taps.apply(o, |i| row[i])));
        }
        out
    };
    if out_h == h {
        return wide;
    }
    // Then columns: h × out_w -> out_h × out_w.
    let taps = Taps::new(h, out_h);
    let mut out = Vec::with_capacity(out_h * out_w);
    for o in 0..out_h {
        out.extend((0..out_w).map(|x| taps.apply(o, |i| wide[i * out_w + x])));
    }
    out
}

/// The filter taps of one axis: for each output pixel, the first input pixel and the
/// normalised weights of the input pixels from there on.
struct Taps {
    /// First input pixel of output pixel `o`.
    start: Vec<usize>,
    /// Weights of output pixel `o`: `weights[o * stride ..][.. len[o]]`.
    weights: Vec<f64>,
    /// Number of weights of output pixel `o`.
    len: Vec<usize>,
    /// Room reserved per output pixel in `weights`.
    stride: usize,
}

impl Taps {
    /// The taps from `input` pixels to `output` pixels (both at least 1).
    fn new(input: usize, output: usize) -> Taps {
        let scale = input as f64 / output as f64;
        let fs = scale.max(1.0);
        // The triangle's support is 1 pixel on either side, stretched by fs.
        let support = fs;
        let stride = 2 * support.ceil() as usize + 2;
        let mut taps = Taps {
            start: Vec::with_capacity(output),
            weights: vec![0.0; output * stride],
            len: Vec::with_capacity(output),
            stride,
        };
        for o in 0..output {
            let c = (o as f64 + 0.5) * scale;
            // PIL's window: pixels whose centre lies within the support (+0.5 rounds to the
            // pixel containing the end point); clamped to the image.
            let first = ((c - support + 0.5).floor().max(0.0) as usize).min(input - 1);
            let end = ((c + support + 0.5).floor() as usize).min(input).max(first + 1);
            let ws = &mut taps.weights[o * stride..o * stride + (end - first).min(stride)];
            for (k, wt) in ws.iter_mut().enumerate() {
                let t = ((first + k) as f64 + 0.5 - c) / fs;
                *wt = (1.0 - t.abs()).max(0.0);
            }
            let sum: f64 = ws.iter().sum();
            // The pixel containing c is at most 0.5 from it, so sum > 0; guard anyway.
            if sum > 0.0 {
                ws.iter_mut().for_each(|wt| *wt /= sum);
            }
            taps.start.push(first);
            taps.len.push(ws.len());
        }
        taps
    }

    /// Output pixel `o` from the input pixels given by `at(i)`.
    fn apply(&self, o: usize, at: impl Fn(usize) -> f32) -> f32 {
        let ws = &self.weights[o * self.stride..o * self.stride + self.len[o]];
        let first = self.start[o];
        ws.iter().enumerate().map(|(k, &wt)| wt * f64::from(at(first + k))).sum::<f64>() as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol, "at {i}: got {g}, want {w}\n{got:?}\n{want:?}");
        }
    }

    #[test]
    fn one_d_three_to_two() {
        // scale 1.5, filter stretched to fs = 1.5. Output 0: c = 0.75; pixel centres 0.5, 1.5,
        // 2.5 are at t = 0.25/1.5, 0.75/1.5, 1.75/1.5 -> weights 5/6, 1/2, 0 -> 5/8, 3/8.
        // Output 1 is the mirror image: 3/8, 5/8 on pixels 1, 2.
        // [0, 8, 16] -> [(0·5 + 8·3)/8, (8·3 + 16·5)/8] = [3, 13].
        close(&resample(&[0.0, 8.0, 16.0], 1, 3, 1, 2), &[3.0, 13.0], 1e-6);
    }

    #[test]
    fn row_four_to_three() {
        // scale 4/3 = fs. Output 0: c = 2/3; pixel 0 at t = (1/6)/(4/3) = 1/8 -> 7/8, pixel 1
        // at t = 5/8 -> 3/8, pixel 2 at 11/8 -> 0; normalised 7/10, 3/10.
        // Output 1: c = 2; pixels 1 and 2 at t = 3/8 -> 5/8 each -> 1/2, 1/2 (0 and 3 at 9/8).
        // [0, 10, 20, 30] -> [3, 15, 27] (Pillow gives the same).
        close(&resample(&[0.0, 10.0, 20.0, 30.0], 1, 4, 1, 3), &[3.0, 15.0, 27.0], 1e-5);
    }

    #[test]
    fn two_by_two_upsampled_to_four_by_four_is_plain_bilinear() {
        // scale 0.5, fs = 1. Along an axis, outputs 0..4 sit at c − 0.5 = −0.25, 0.25, 0.75,
        // 1.25 in pixel units: [a, b] -> [a, ¾a + ¼b, ¼a + ¾b, b] (positions outside [0, 1]
        // see only the nearest pixel: clamping). This is the well-known output of
        // F.interpolate([[1, 2], [3, 4]], scale_factor=2, mode="bilinear").
        let got = resample(&[1.0, 2.0, 3.0, 4.0], 2, 2, 4, 4);
        #[rustfmt::skip]
        let want = [
            1.0, 1.25, 1.75, 2.0,
            1.5, 1.75, 2.25, 2.5,
            2.5, 2.75, 3.25, 3.5,
            3.0, 3.25, 3.75, 4.0,
        ];
        close(&got, &want, 1e-6);
    }

    #[test]
    fn four_by_four_to_two_by_two_averages_with_triangle_weights() {
        // scale 2 = fs. Output 0: c = 1; pixel centres 0.5, 1.5, 2.5, 3.5 at t = 0.25, 0.25,
        // 0.75, 1.25 -> weights 3/4, 3/4, 1/4, 0 -> [3, 3, 1, 0]/7; output 1: [0, 1, 3, 3]/7.
        // Not a plain 2×2 block mean: the antialiasing triangle reaches one pixel further.
        // x[r][c] = 7c + 28r is separable: rows give [(0·3 + 7·3 + 14)/7, (7 + 14·3 + 21·3)/7]
        // = [5, 16], columns add 28·[5/7, 16/7] = [20, 64].
        let src: Vec<f32> = (0..16).map(|i| (7 * (i % 4) + 28 * (i / 4)) as f32).collect();
        close(&resample(&src, 4, 4, 2, 2), &[25.0, 36.0, 69.0, 80.0], 1e-5);
    }

    #[test]
    fn equal_sizes_are_the_identity() {
        let src: Vec<f32> = (0..12).map(|i| (i * 37 % 11) as f32 / 10.0).collect();
        assert_eq!(resample(&src, 3, 4, 3, 4), src);
    }

    #[test]
    fn constant_images_stay_constant() {
        // Normalised weights sum to 1, for every size change (up, down, odd ratios).
        let src = vec![0.37f32; 7 * 5];
        for (oh, ow) in [(3, 2), (11, 13), (7, 1), (1, 9), (5, 7)] {
            let out = resample(&src, 7, 5, oh, ow);
            close(&out, &vec![0.37; oh * ow], 1e-6);
        }
    }

    #[test]
    #[allow(clippy::excessive_precision)] // the digits NumPy printed, kept for comparison
    fn matches_pillow_bilinear_on_float_images() {
        // Reference values from Pillow 13.0:
        // Image.fromarray(b.astype(np.float32), mode="F").resize((W, H), Image.BILINEAR),
        // with b[r][c] = ((7r + c)·37 mod 101) / 100 (5×7), down to 3×4 and 2×3, and a 3×2
        // image up to 5×7. Pillow's float path uses the formula of the module docs.
        let b: Vec<f32> = (0..35).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
        #[rustfmt::skip]
        let down_3x4 = [
            0.41748300, 0.50599998, 0.37302858, 0.52530611,
            0.43068784, 0.56293333, 0.47164443, 0.62783068,
            0.43625849, 0.62371427, 0.46188572, 0.48224491,
        ];
        close(&resample(&b, 5, 7, 3, 4), &down_3x4, 2e-7);
        let down_2x3 = [0.49363637, 0.44585562, 0.53155845, 0.46623376, 0.53534758, 0.52383119];
        close(&resample(&b, 5, 7, 2, 3), &down_2x3, 2e-7);
        let c = [0.1f32, 0.9, 0.5, 0.2, 1.0, 0.0];
        #[rustfmt::skip]
        let up_5x7 = [
            0.1, 0.1, 0.27142856, 0.5, 0.72857141, 0.9, 0.9,
            0.26, 0.26, 0.33714285, 0.44, 0.54285711, 0.62, 0.62,
            0.5, 0.5, 0.43571427, 0.35, 0.26428571, 0.2, 0.2,
            0.8, 0.8, 0.64571428, 0.44, 0.23428571, 0.08, 0.08,
            1.0, 1.0, 0.78571427, 0.5, 0.21428572, 0.0, 0.0,
        ];
        close(&resample(&c, 3, 2, 5, 7), &up_5x7, 2e-7);
    }

    #[test]
    fn degenerate_sizes_give_an_empty_plane() {
        assert!(resample(&[1.0], 1, 1, 0, 3).is_empty());
        assert!(resample(&[], 0, 0, 2, 2).is_empty());
        // A buffer that does not match h × w is not read out of bounds.
        assert!(resample(&[1.0, 2.0], 2, 2, 4, 4).is_empty());
    }

    #[test]
    fn shorter_side_rounding_follows_torchvision() {
        // ImageNet: 500×375 (h×w) -> Resize(256): w is shorter; h = int(256·500/375) = 341.
        assert_eq!(shorter_side_size(500, 375, 256), Some((341, 256)));
        assert_eq!(shorter_side_size(375, 500, 256), Some((256, 341)));
        // 333/250 · 224 = 298.37 -> 298 (truncated, not rounded).
        assert_eq!(shorter_side_size(250, 333, 224), Some((224, 298)));
        assert_eq!(shorter_side_size(28, 28, 64), Some((64, 64)));
        assert_eq!(shorter_side_size(0, 28, 64), None);
        assert_eq!(shorter_side_size(3, usize::MAX, 2), None);
    }

    #[test]
    fn center_crop_rounds_half_to_even_like_python() {
        // (h − size)/2: 1.5 -> 2 and 0.5 -> 0 (Python's round), 1.0 -> 1.
        assert_eq!(center_crop_origin(5, 4, 2), Some((2, 1)));
        assert_eq!(center_crop_origin(3, 4, 2), Some((0, 1)));
        assert_eq!(center_crop_origin(256, 341, 224), Some((16, 58)));
        assert_eq!(center_crop_origin(4, 4, 4), Some((0, 0)));
        assert_eq!(center_crop_origin(4, 3, 4), None);
        // Crop the 2×2 window at (2, 1) of a 5×4 plane numbered 0..20.
        let plane: Vec<f32> = (0..20).map(|i| i as f32).collect();
        assert_eq!(crop(&plane, 4, 2, 1, 2, 2), vec![9.0, 10.0, 13.0, 14.0]);
    }
}

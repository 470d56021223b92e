//! The machinery LIME and KernelSHAP share: interpretable features, coalition sampling,
//! model evaluation of the perturbed images, and a weighted ridge regression in closed form.
//!
//! Features are superpixels, per image from [`image_features`]: by default
//! ([`Segmentation::Grid`]) a square grid of `cell` × `cell` pixels (the last row and column of
//! cells may be smaller), the same for every image; with [`Segmentation::Slic`] the SLIC
//! superpixels of the image itself ([`slic`](mod@super::slic), on the channel mean), so the
//! number of features F varies from image to image. A coalition z ∈ {0,1}^F keeps the pixels of
//! the features that are on and sets the others to `baseline`. The regression fits
//! y ≈ β₀ + z·β with sample weights π and ridge penalty λ‖β‖² (the intercept is not
//! penalised), solving the normal equations in f64. The map paints each pixel with its
//! feature's coefficient, in every channel: [B,C,H,W]. Images are processed one at a time (the
//! N perturbed copies of one image go through chunked forward passes); each image's draws come
//! from a stream keyed by the seed and its pixels, so maps do not depend on batching.

use super::slic::{slic, DEFAULT_ITERATIONS};
use crate::error::{Error, Result};
use crate::model::{logits_in_passes, Classifier};
use crate::seed;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// How LIME and KernelSHAP cut an image into interpretable features (config key `segments`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segmentation {
    /// Square cells of `cell` × `cell` pixels, the same for every image.
    #[default]
    Grid,
    /// SLIC superpixels of each image (`n_segments`, `compactness`; see [`slic`](mod@super::slic)).
    Slic,
}

/// Default `n_segments` of [`Segmentation::Slic`]: 50 gives S = √(784/50) ≈ 4 on 28×28
/// images, about the 49 features of the default 4-pixel grid, so the two segmentations compare
/// at equal feature counts.
pub const DEFAULT_N_SEGMENTS: usize = 50;
/// Default `compactness` of [`Segmentation::Slic`]: 3, so an intensity step of 0.3 weighs one
/// grid interval (see [`slic`](mod@super::slic) for the convention): segments follow garment
/// edges but not faint texture. It is the SLIC paper's m = 30 on a 0–100 lightness scale
/// (inside its range 1–40) and scikit-image's 0.3 on a full-range [0,1] image. Measured on the
/// first 200 shipped Fashion-MNIST test images with 50 segments, over m ∈ {0.03, 0.1, 0.3, 1,
/// 3, 10, 30}: m = 3 put the most strong edges (4-neighbours differing by > 0.25) on segment
/// boundaries (69%, against 65% at m = 1, 49% at m = 10 and 22% for the 4-pixel grid), left
/// the least intensity spread within segments (sd 0.097), kept 47 of the 49 grid segments
/// (42.5 at m = 1, where more orphans merge) and changed less under ±0.03 noise than m ≤ 1.
pub const DEFAULT_COMPACTNESS: f64 = 3.0;

/// The feature settings of a surrogate method: `cell` is used by [`Segmentation::Grid`] only,
/// `n_segments` and `compactness` by [`Segmentation::Slic`] only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureSpec {
    /// Which segmentation.
    pub segments: Segmentation,
    /// Grid cell side in pixels; `None`: [`auto_cell`] of the image size.
    pub cell: Option<usize>,
    /// Approximate number of SLIC superpixels.
    pub n_segments: usize,
    /// SLIC compactness m.
    pub compactness: f64,
}

impl FeatureSpec {
    /// Refuses settings the segmentation cannot use (`method` names the method in the message).
    pub fn check(&self, method: &str) -> Result<()> {
        // The grid's `cell` is checked with the config (and 0 is read as 1).
        let ok = match self.segments {
            Segmentation::Grid => true,
            Segmentation::Slic => {
                self.n_segments >= 1 && self.compactness.is_finite() && self.compactness > 0.0
            }
        };
        if ok {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "method `{method}`: segments = \"slic\" needs `n_segments` ≥ 1 and a finite `compactness` > 0 \
             (got n_segments = {}, compactness = {})",
            self.n_segments, self.compactness
        )))
    }

    /// What the features are, for the method's metadata.
    pub fn describe(&self) -> &'static str {
        match self.segments {
            Segmentation::Grid => "square grid",
            Segmentation::Slic => "SLIC superpixels of each image",
        }
    }
}

/// The feature of every pixel (row-major) of one image and the number of features F: the one
/// entry point LIME and KernelSHAP use. `pixels` is the image [C,H,W] flattened; SLIC segments
/// its channel mean.
pub fn image_features(
    spec: &FeatureSpec,
    pixels: &[f32],
    c: usize,
    h: usize,
    w: usize,
) -> (Vec<usize>, usize) {
    match spec.segments {
        Segmentation::Grid => grid_features(h, w, spec.cell.unwrap_or_else(|| auto_cell(h, w))),
        Segmentation::Slic => {
            let hw = h * w;
            let grey: Vec<f32> = if c == 1 {
                pixels[..hw].to_vec()
            } else {
                (0..hw).map(|p| (0..c).map(|k| pixels[k * hw + p]).sum::<f32>() / c as f32).collect()
            };
            let ids = slic(&grey, h, w, spec.n_segments, spec.compactness, DEFAULT_ITERATIONS);
            let nf = ids.iter().max().map_or(0, |&m| m + 1);
            (ids, nf)
        }
    }
}

/// The grid feature of every pixel (row-major) and the number of features.
/// The default grid cell for an h×w image: about 7 cells along the shorter side, at least 4
/// pixels (4 at 28×28, the 49 features LIME and KernelSHAP were tuned with; 9 at 64×64, 32 at
/// 224×224), so that the number of features, and with it the samples a good fit needs, does not
/// grow with the image.
pub fn auto_cell(h: usize, w: usize) -> usize {
    ((h.min(w) as f64 / 7.0).round() as usize).max(4)
}

pub fn grid_features(h: usize, w: usize, cell: usize) -> (Vec<usize>, usize) {
    let cell = cell.max(1);
    let (gh, gw) = (h.div_ceil(cell), w.div_ceil(cell));
    let ids = (0..h * w).map(|p| (p / w / cell) * gw + (p % w) / cell).collect();
    (ids, gh * gw)
}

/// The target logit of `image` [1,C,H,W] under each coalition (rows of `z`, F entries each).
pub fn coalition_values(
    model: &dyn Classifier,
    image: &Tensor,
    target: u32,
    features: &[usize],
    z: &[Vec<f32>],
    baseline: f32,
) -> Result<Vec<f64>> {
    let (_, c, h, w) = image.dims4()?;
    let n = z.len();
    let mut keep = vec![0f32; n * h * w];
    for (s, zs) in z.iter().enumerate() {
        for (p, &f) in features.iter().enumerate() {
            keep[s * h * w + p] = zs[f];
        }
    }
    let keep = Tensor::from_vec(keep, (n, 1, h, w), image.device())?.to_dtype(image.dtype())?;
    let fill = keep.affine(-(baseline as f64), baseline as f64)?; // baseline where off
    let perturbed = image.broadcast_mul(&keep)?.add(&fill.broadcast_as((n, c, h, w))?)?;
    let logits = logits_in_passes(model, &perturbed)?;
    let col = logits.narrow(1, target as usize, 1)?.to_dtype(DType::F64)?;
    Ok(col.flatten_all()?.to_vec1::<f64>()?)
}

/// Weighted ridge regression y ≈ β₀ + z·β: returns β (F values). `lambda` penalises β only.
pub fn weighted_ridge(z: &[Vec<f32>], y: &[f64], weights: &[f64], lambda: f64) -> Result<Vec<f64>> {
    let f = z.first().map_or(0, Vec::len);
    let d = f + 1; // column 0 is the intercept
    let mut a = vec![0f64; d * d];
    let mut rhs = vec![0f64; d];
    let mut row = vec![0f64; d];
    for ((zs, &ys), &ws) in z.iter().zip(y).zip(weights) {
        row[0] = 1.0;
        for (k, &v) in zs.iter().enumerate() {
            row[k + 1] = v as f64;
        }
        for i in 0..d {
            rhs[i] += ws * row[i] * ys;
            for j in 0..d {
                a[i * d + j] += ws * row[i] * row[j];
            }
        }
    }
    for i in 1..d {
        a[i * d + i] += lambda;
    }
    let beta = solve(&mut a, &mut rhs, d)
        .ok_or_else(|| Error::Invalid("surrogate regression is singular (too few samples?)".into()))?;
    Ok(beta[1..].to_vec())
}

/// Solves A·x = b (A d×d, row-major) by Gaussian elimination with partial pivoting.
fn solve(a: &mut [f64], b: &mut [f64], d: usize) -> Option<Vec<f64>> {
    for col in 0..d {
        let pivot = (col..d).max_by(|&i, &j| a[i * d + col].abs().total_cmp(&a[j * d + col].abs()))?;
        if a[pivot * d + col].abs() < 1e-12 {
            return None;
        }
        if pivot != col {
            for k in 0..d {
                a.swap(col * d + k, pivot * d + k);
            }
            b.swap(col, pivot);
        }
        for i in col + 1..d {
            let factor = a[i * d + col] / a[col * d + col];
            if factor != 0.0 {
                for k in col..d {
                    a[i * d + k] -= factor * a[col * d + k];
                }
                b[i] -= factor * b[col];
            }
        }
    }
    let mut x = vec![0f64; d];
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|k| a[i * d + k] * x[k]).sum();
        x[i] = (b[i] - s) / a[i * d + i];
    }
    Some(x)
}

/// Runs a surrogate explainer over a batch: `fit(image [1,C,H,W], target, features, F, rng)`
/// returns one coefficient per feature of that image ([`image_features`] under `spec`); the
/// result paints them onto the pixels, [B,C,H,W].
pub fn explain_batch<F>(
    x: &Tensor,
    targets: &[u32],
    seed_value: u64,
    spec: &FeatureSpec,
    mut fit: F,
) -> Result<Tensor>
where
    F: FnMut(&Tensor, u32, &[usize], usize, &mut rand_chacha::ChaCha8Rng) -> Result<Vec<f64>>,
{
    let (b, c, h, w) = x.dims4()?;
    let mut out = vec![0f32; b * h * w];
    for i in 0..b {
        let image = x.narrow(0, i, 1)?;
        let pixels = image.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let (features, nf) = image_features(spec, &pixels, c, h, w);
        let mut rng = seed::rng(seed::mix(seed_value, seed::hash_f32s(&pixels)));
        let coef = fit(&image, targets[i], &features, nf, &mut rng)?;
        for (p, &f) in features.iter().enumerate() {
            out[i * h * w + p] = coef[f] as f32;
        }
    }
    let map = Tensor::from_vec(out, (b, 1, h, w), x.device())?.to_dtype(x.dtype())?;
    Ok(map.broadcast_as((b, c, h, w))?.contiguous()?)
}

/// Test fixtures shared by the LIME and KernelSHAP unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use crate::error::Result;
    use crate::model::{Activation, Backprop, Backward, Classifier};
    use candle_core::{Device, Tensor};

    /// A linear two-class model on 1×H×W images: logit 0 is the sum of the pixels in the left
    /// half (columns < W/2), logit 1 the sum of those in the right half.
    pub struct HalfSums {
        w: Tensor, // [2, H·W]
        shape: (usize, usize),
    }

    impl HalfSums {
        pub fn new(h: usize, w: usize) -> Self {
            let mask: Vec<f32> =
                (0..2 * h * w).map(|i| f32::from(((i % (h * w)) % w < w / 2) == (i < h * w))).collect();
            HalfSums { w: Tensor::from_vec(mask, (2, h * w), &Device::Cpu).unwrap(), shape: (h, w) }
        }
    }

    impl Classifier for HalfSums {
        fn name(&self) -> &str {
            "half_sums"
        }
        fn input_shape(&self) -> (usize, usize, usize) {
            (1, self.shape.0, self.shape.1)
        }
        fn num_classes(&self) -> usize {
            2
        }
        fn device(&self) -> &Device {
            self.w.device()
        }
        fn logits(&self, x: &Tensor, _act: Activation) -> Result<Tensor> {
            let b = x.dim(0)?;
            Ok(x.reshape((b, self.shape.0 * self.shape.1))?.matmul(&self.w.t()?)?)
        }
        fn backward(&self, x: &Tensor, pass: &Backward) -> Result<Backprop> {
            // No nonlinearity: every rule's backward pass is seed · W.
            let g = pass.seed.matmul(&self.w)?.reshape(x.shape())?;
            Ok(Backprop { logits: self.logits(x, pass.act)?, grad: g, layer: None })
        }
    }

    /// An 8×16 image, bright and lightly textured on the left half (0.70–0.78), dark on the
    /// right (0.10–0.16): a step of at least 0.54 between the halves, which SLIC with the
    /// default compactness follows (no segment crosses it).
    pub fn two_tone() -> Vec<f32> {
        (0..128)
            .map(|p| {
                let (y, x) = (p / 16, p % 16);
                if x < 8 {
                    0.70 + 0.02 * ((y + x) % 5) as f32
                } else {
                    0.10 + 0.02 * ((3 * y + x) % 4) as f32
                }
            })
            .collect()
    }

    /// Checks a surrogate map [1,1,8,16] of [`two_tone`] explained for class `target` of
    /// [`HalfSums`]: every pixel of the other half is 0, and every pixel of the target's half
    /// carries the sum of its segment's pixels (`labels`), the exact coefficient of the
    /// additive game v(S) = Σ_{f∈S} Σ_{p∈f} x_p (baseline 0).
    pub fn assert_half_sums(map: &[f32], labels: &[usize], target: usize) {
        let img = two_tone();
        let segment_sum = |l: usize| (0..128).filter(|&q| labels[q] == l).map(|q| img[q]).sum::<f32>();
        for p in 0..128 {
            let mine = (p % 16 < 8) == (target == 0);
            let want = if mine { segment_sum(labels[p]) } else { 0.0 };
            assert!((map[p] - want).abs() < 1e-4, "pixel {p}: {} vs {want}", map[p]);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_cell_keeps_about_49_features() {
        assert_eq!(auto_cell(28, 28), 4);
        assert_eq!(auto_cell(64, 64), 9);
        assert_eq!(auto_cell(224, 224), 32);
        assert_eq!(auto_cell(10, 300), 4);
        for side in [28usize, 64, 224] {
            let (_, f) = grid_features(side, side, auto_cell(side, side));
            assert!((49..=64).contains(&f), "{side}: {f} features");
        }
    }

    use super::*;

    #[test]
    fn image_features_grid_is_the_grid_and_slic_segments_the_channel_mean() {
        let spec =
            FeatureSpec { segments: Segmentation::Grid, cell: Some(3), n_segments: 2, compactness: 1.0 };
        let pixels = vec![0.5f32; 3 * 4 * 6];
        assert_eq!(image_features(&spec, &pixels, 3, 4, 6), grid_features(4, 6, 3));
        // Three channels whose mean is 0 on the left half and 1 on the right of an 8×16 image
        // (channel 0 alone would be 1 on columns 0–3 and 0 elsewhere, a different picture): the
        // features are the SLIC segments of the mean, i.e. the two halves (see slic's tests).
        let (h, w) = (8, 16);
        let mean: Vec<f32> = (0..h * w).map(|p| if p % w < 8 { 0.0 } else { 1.0 }).collect();
        let ch0: Vec<f32> = (0..h * w).map(|p| if p % w < 4 { 1.0 } else { mean[p] }).collect();
        let ch1: Vec<f32> = (0..h * w).map(|p| 3.0 * mean[p] - ch0[p] - mean[p]).collect();
        let pixels: Vec<f32> = [ch0, ch1, mean.clone()].concat();
        let spec = FeatureSpec { segments: Segmentation::Slic, ..spec };
        let (ids, nf) = image_features(&spec, &pixels, 3, h, w);
        assert_eq!(nf, 2);
        assert_eq!(ids, (0..h * w).map(|p| usize::from(p % w >= 8)).collect::<Vec<_>>());
    }

    #[test]
    fn slic_settings_are_checked() {
        let ok = FeatureSpec { segments: Segmentation::Slic, cell: None, n_segments: 1, compactness: 0.5 };
        assert!(ok.check("lime").is_ok());
        for bad in [
            FeatureSpec { n_segments: 0, ..ok },
            FeatureSpec { compactness: 0.0, ..ok },
            FeatureSpec { compactness: f64::NAN, ..ok },
        ] {
            let err = bad.check("lime").unwrap_err().to_string();
            assert!(err.contains("lime") && err.contains("n_segments"), "{err}");
        }
        // The grid ignores the SLIC settings.
        assert!(FeatureSpec { segments: Segmentation::Grid, n_segments: 0, ..ok }.check("lime").is_ok());
    }

    #[test]
    fn grid_features_cover_the_image_row_major() {
        let (ids, n) = grid_features(4, 6, 3);
        assert_eq!(n, 2 * 2);
        assert_eq!(&ids[..6], &[0, 0, 0, 1, 1, 1]);
        assert_eq!(&ids[18..], &[2, 2, 2, 3, 3, 3]);
    }

    #[test]
    fn ridge_recovers_an_exact_linear_function() {
        // y = 2 + 3·z₁ − z₂ on all four coalitions, no penalty: β = (3, −1).
        let z = vec![vec![0., 0.], vec![1., 0.], vec![0., 1.], vec![1., 1.]];
        let y = [2.0, 5.0, 1.0, 4.0];
        let beta = weighted_ridge(&z, &y, &[1.0; 4], 0.0).unwrap();
        assert!((beta[0] - 3.0).abs() < 1e-12 && (beta[1] + 1.0).abs() < 1e-12);
        // λ = 1: normal equations [[4,2,2],[2,3,1],[2,1,3]]·(β₀,β₁,β₂) = (12, 9, 5). The first
        // gives β₀ = 3 − β₁/2 − β₂/2; substituted, the others give 2β₁ = 3 and 2β₂ = −1.
        let shrunk = weighted_ridge(&z, &y, &[1.0; 4], 1.0).unwrap();
        assert!((shrunk[0] - 1.5).abs() < 1e-12 && (shrunk[1] + 0.5).abs() < 1e-12);
    }
}

//! The machinery LIME and KernelSHAP share: interpretable features, coalition sampling,
//! model evaluation of the perturbed images, and a weighted ridge regression in closed form.
//!
//! Features are superpixels on a square grid of `cell` × `cell` pixels (the last row and
//! column of cells may be smaller). A coalition z ∈ {0,1}^F keeps the pixels of the features
//! that are on and sets the others to `baseline`. The regression fits
//! y ≈ β₀ + z·β with sample weights π and ridge penalty λ‖β‖² (the intercept is not
//! penalised), solving the normal equations in f64. The map paints each pixel with its
//! feature's coefficient, in every channel: [B,C,H,W]. Images are processed one at a time (the
//! N perturbed copies of one image go through chunked forward passes); each image's draws come
//! from a stream keyed by the seed and its pixels, so maps do not depend on batching.

use crate::error::{Error, Result};
use crate::model::{logits_in_passes, Classifier};
use crate::seed;
use candle_core::{DType, Tensor};

/// The grid feature of every pixel (row-major) and the number of features.
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

/// Runs a surrogate explainer over a batch: `fit(image [1,C,H,W], target, rng)` returns one
/// coefficient per feature; the result paints them onto the pixels, [B,C,H,W].
pub fn explain_batch<F>(
    x: &Tensor,
    targets: &[u32],
    seed_value: u64,
    cell: usize,
    mut fit: F,
) -> Result<Tensor>
where
    F: FnMut(&Tensor, u32, &[usize], usize, &mut rand_chacha::ChaCha8Rng) -> Result<Vec<f64>>,
{
    let (b, c, h, w) = x.dims4()?;
    let (features, nf) = grid_features(h, w, cell);
    let mut out = vec![0f32; b * h * w];
    for i in 0..b {
        let image = x.narrow(0, i, 1)?;
        let pixels = image.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let mut rng = seed::rng(seed::mix(seed_value, seed::hash_f32s(&pixels)));
        let coef = fit(&image, targets[i], &features, nf, &mut rng)?;
        for (p, &f) in features.iter().enumerate() {
            out[i * h * w + p] = coef[f] as f32;
        }
    }
    let map = Tensor::from_vec(out, (b, 1, h, w), x.device())?.to_dtype(x.dtype())?;
    Ok(map.broadcast_as((b, c, h, w))?.contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;

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

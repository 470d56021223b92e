//! EigenCAM (Muhammad and Yeasin, IJCNN 2020): a layer's activations projected onto their
//! first principal component, no gradient and no class.
//!
//! Per image, the activations A [K,h,w] as X [h·w, K] (one row per position), centred per
//! channel (the mean over positions subtracted); v₁ = X's first right singular vector; the map
//! X·v₁ [h,w], rectified and upsampled bilinearly to the input (align_corners = false) as
//! Grad-CAM's, [B,1,H,W]. As pytorch-grad-cam 1.5.7's `EigenCAM` (`get_2d_projection`), with
//! one difference: a singular vector's sign is arbitrary (numpy returns whatever LAPACK gives,
//! so pytorch-grad-cam's EigenCAM may come out as the rectified negative of the projection);
//! here it is fixed as Seg-Eigen-CAM fixes it (Chung and Ying 2025, Eq. 13, pytorch-grad-cam's
//! `get_2d_projection_with_sign_correction`): the projection is negated when |min| > |max|.
//!
//! v₁ by power iteration in f64 on the smaller Gram matrix (XXᵀ [h·w, h·w] or XᵀX [K,K]; with
//! XXᵀ, X·v₁ = σ₁u₁), from its largest-diagonal column, until the unit vector moves less than
//! 1e-12 (at most 10,000 steps; a map whose top two components tie to that precision has no
//! unique answer anyway). The pass to the layer, rectification and upsampling are
//! [`super::forward_cam`]'s.

use super::forward_cam::{LayerImage, LayerMap};
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// EigenCAM on a layer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EigenCam {
    /// The layer (see [`Classifier::layers`]); empty: the model's default layer.
    pub layer: String,
}

/// The map X·v₁ [n] of a row-major X [n, k] (centred by the caller), sign-fixed.
fn principal_projection(x: &[f64], n: usize, k: usize) -> Vec<f64> {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let row = |i: usize| &x[i * k..][..k];
    // The smaller Gram matrix, m × m.
    let by_rows = n <= k;
    let m = if by_rows { n } else { k };
    let mut gram = vec![0f64; m * m];
    for i in 0..m {
        for j in 0..=i {
            let v =
                if by_rows { dot(row(i), row(j)) } else { (0..n).map(|r| x[r * k + i] * x[r * k + j]).sum() };
            gram[i * m + j] = v;
            gram[j * m + i] = v;
        }
    }
    let top = top_eigenvector(&gram, m);
    let mut proj: Vec<f64> = if by_rows {
        // X·v₁ = σ₁u₁ with σ₁² the Rayleigh quotient of u₁.
        let gu: Vec<f64> = (0..m).map(|i| dot(&gram[i * m..][..m], &top)).collect();
        let sigma = dot(&top, &gu).max(0.0).sqrt();
        top.iter().map(|u| u * sigma).collect()
    } else {
        (0..n).map(|r| dot(row(r), &top)).collect()
    };
    let (lo, hi) = proj.iter().fold((0f64, 0f64), |(l, h), &v| (l.min(v), h.max(v)));
    if lo.abs() > hi.abs() {
        proj.iter_mut().for_each(|v| *v = -*v);
    }
    proj
}

/// The unit eigenvector of the largest eigenvalue of a symmetric positive semi-definite
/// `g` [m, m] (zeros for a zero matrix), by power iteration.
fn top_eigenvector(g: &[f64], m: usize) -> Vec<f64> {
    let start = (0..m).max_by(|&a, &b| g[a * m + a].total_cmp(&g[b * m + b])).unwrap_or(0);
    let mut v: Vec<f64> = g[start * m..][..m].to_vec();
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    let n0 = norm(&v);
    if m == 0 || n0 == 0.0 {
        return vec![0.0; m];
    }
    v.iter_mut().for_each(|a| *a /= n0);
    for _ in 0..10_000 {
        let mut w: Vec<f64> =
            (0..m).map(|i| g[i * m..][..m].iter().zip(&v).map(|(p, q)| p * q).sum()).collect();
        let nw = norm(&w);
        if nw == 0.0 {
            break;
        }
        w.iter_mut().for_each(|a| *a /= nw);
        let moved = w.iter().zip(&v).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
        v = w;
        if moved < 1e-12 {
            break;
        }
    }
    v
}

impl LayerMap for EigenCam {
    fn name(&self) -> &'static str {
        "eigen_cam"
    }

    fn layer(&self) -> &str {
        &self.layer
    }

    fn map(&self, img: &LayerImage) -> Result<Vec<f32>> {
        let (k, h, w) = img.khw;
        // X [h·w, K], NaN as 0 (as pytorch-grad-cam), each channel centred.
        let mut xm = vec![0f64; h * w * k];
        let clean = |v: f32| if v.is_nan() { 0.0 } else { f64::from(v) };
        for (c, col) in img.a.chunks_exact(h * w).enumerate() {
            let mean = col.iter().map(|&v| clean(v)).sum::<f64>() / (h * w) as f64;
            for (p, &v) in col.iter().enumerate() {
                xm[p * k + c] = clean(v) - mean;
            }
        }
        Ok(principal_projection(&xm, h * w, k).iter().map(|&v| v as f32).collect())
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "layer": self.layer, "sign": "Seg-Eigen-CAM: negated when |min| > |max|" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// X = σ₁u₁v₁ᵀ + σ₂u₂v₂ᵀ with orthonormal u's and v's: the projection is σ₁u₁ (sign fixed
    /// so that the larger magnitude is positive), from either Gram matrix.
    #[test]
    fn projection_is_the_first_component_from_either_side() {
        let s = 0.5f64.sqrt();
        let (u1, u2) = ([s, s, 0.0], [s, -s, 0.0]);
        let (v1, v2) = ([0.6, 0.8], [0.8, -0.6]);
        let mut x = vec![0f64; 6];
        for i in 0..3 {
            for j in 0..2 {
                x[i * 2 + j] = 3.0 * u1[i] * v1[j] + 1.0 * u2[i] * v2[j];
            }
        }
        // n = 3 > k = 2: XᵀX. Its transpose, n = 2 ≤ k = 3: XXᵀ (then the projection is σ₁v₁).
        let p = principal_projection(&x, 3, 2);
        let want = [3.0 * s, 3.0 * s, 0.0];
        assert!(p.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9), "{p:?}");
        let xt: Vec<f64> = (0..6).map(|i| x[(i % 3) * 2 + i / 3]).collect();
        let p = principal_projection(&xt, 2, 3);
        assert!(p.iter().zip([1.8, 2.4]).all(|(a, b)| (a - b).abs() < 1e-9), "{p:?}");
        // The sign: −X gives the same map.
        let neg: Vec<f64> = x.iter().map(|v| -v).collect();
        assert_eq!(principal_projection(&neg, 3, 2).len(), 3);
        let p = principal_projection(&neg, 3, 2);
        assert!(p.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9), "{p:?}");
        assert_eq!(principal_projection(&[0.0; 6], 3, 2), vec![0.0; 3]);
    }
}

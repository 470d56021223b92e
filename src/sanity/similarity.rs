//! The four similarities of Adebayo et al.'s sanity checks, as their code computes them.
//!
//! Adebayo, Gilmer, Muelly, Goodfellow, Hardt and Kim ("Sanity checks for saliency maps",
//! NeurIPS 2018) compare the map of the trained model with the map of a randomised model by four
//! similarities. Their code (github.com/adebayoj/sanity_checks_saliency, notebook
//! `inceptionv3_cascading_randomization.ipynb`; scikit-image 0.15, PAIR's `saliency` 0.0.4)
//! computes them from each method's raw attribution of shape (H, W, C); here that is a signed row
//! of `C·H·W` values, channel-major (`[c][y][x]`, as [`crate::attribution::attribution_rows`]
//! gives it). Everything is computed in f64 (their `normalize_image` casts to float32).
//!
//! - **`spearman`**: Spearman's rank correlation (average ranks for ties, as scipy's
//!   `spearmanr`) of the two *diverging* maps, PAIR's `VisualizeImageDiverging`: `s = Σ_c a`,
//!   `span = |P99(s)|` (numpy's linear-interpolation percentile over the H·W pixels), then
//!   `clip((s + span) / (2·span), −1, 1)`. The clip makes ties: every pixel above `span` (about
//!   1% of them) becomes 1 and every pixel below `−3·span` becomes −1, and ties change a
//!   rank correlation, so the clip is kept. (Only the upper end of the affine map is clipped to
//!   its range: that is PAIR's code as it is.)
//! - **`spearman_abs`**: the same on the *grayscale* maps, PAIR's `VisualizeImageGrayscale`:
//!   `g = Σ_c |a|`, `clip((g − min g) / (P99(g) − min g), 0, 1)`, which ties the top 1%.
//! - **`ssim`**: scikit-image's `structural_similarity(gaussian_weights=True, multichannel=True)`
//!   as Adebayo call it, of the maps scaled jointly over all channels to \[0, 1\]
//!   (`normalize_image`: `(a − min a) / (max a − min a)`), per channel then averaged: see
//!   [`super::ssim`]. Their scikit-image took the dynamic range of a float32 image to be 2.
//! - **`hog_pearson`**: Pearson's correlation of scikit-image's HOG feature vectors
//!   ([`super::hog`]) of the same \[0, 1\]-scaled maps (channels as colour channels: the channel
//!   with the strongest gradient per pixel). Adebayo's notebook ranks them (Spearman of the
//!   HOGs) where the paper says Pearson; this follows the paper and the name. Their
//!   16×16-pixel cells need 48 pixels a side; smaller maps get the cell halved until three
//!   whole cells fit (8 for Fashion-MNIST's 28×28), see [`super::hog::hog_cell`].
//!
//! Quantus 0.6.0 differs: its model-parameter randomisation takes `|a|` normalised by its
//! maximum and ranks all `C·H·W` values (no channel sum, no clip); its random-logit test calls
//! `structural_similarity` on flattened maps with the data range of the pair and a 7×7 uniform
//! window. Those are not the published sanity checks, so they are not reproduced here.
//!
//! Every score is in \[−1, 1\], higher is more similar, 1 for identical maps. `None` where the
//! reference yields NaN or raises: rows that are not `C·H·W` long, non-finite values, a
//! normalisation that divides by zero (a constant map; a diverging map whose 99th percentile is
//! 0; a grayscale map whose 99th percentile is its minimum), maps too small for the window
//! (SSIM: 11×11) or the HOG grid (6 pixels a side), or a constant HOG vector.

use super::{hog, ssim};
use crate::error::{Error, Result};
use crate::metric::{pearson_f64, spearman_f64};
use std::str::FromStr;

/// The similarities' names, in [`Similarity::ALL`] order.
pub const SIMILARITY_NAMES: [&str; 4] = ["spearman", "spearman_abs", "ssim", "hog_pearson"];

/// The percentile PAIR's visualisations clip at.
const CLIP_PERCENTILE: f64 = 99.0;

/// One of Adebayo et al.'s similarities between two signed attribution rows (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Similarity {
    /// Spearman's rank correlation of the diverging (signed) maps.
    Spearman,
    /// Spearman's rank correlation of the grayscale (absolute) maps.
    SpearmanAbs,
    /// scikit-image's SSIM of the \[0, 1\]-scaled maps.
    Ssim,
    /// Pearson's correlation of the HOG features of the \[0, 1\]-scaled maps.
    HogPearson,
}

impl Similarity {
    /// All four, in [`SIMILARITY_NAMES`] order.
    pub const ALL: [Similarity; 4] = [Self::Spearman, Self::SpearmanAbs, Self::Ssim, Self::HogPearson];

    /// The name in configs and tables.
    pub fn name(&self) -> &'static str {
        SIMILARITY_NAMES[*self as usize]
    }

    /// The similarity called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The score's range; all four are correlations or SSIM, higher is more similar.
    pub fn range(&self) -> (f64, f64) {
        (-1.0, 1.0)
    }

    /// The similarity of the signed rows `a` and `b`, each `c·h·w` values channel-major; `None`
    /// where undefined (module docs).
    pub fn score(&self, a: &[f32], b: &[f32], c: usize, h: usize, w: usize) -> Option<f64> {
        let len = c.checked_mul(h)?.checked_mul(w)?;
        if len == 0 || a.len() != len || b.len() != len || !a.iter().chain(b).all(|x| x.is_finite()) {
            return None;
        }
        match self {
            Self::Spearman => spearman_f64(&diverging(a, c, h * w)?, &diverging(b, c, h * w)?),
            Self::SpearmanAbs => spearman_f64(&grayscale(a, c, h * w)?, &grayscale(b, c, h * w)?),
            Self::Ssim => ssim::ssim(&unit_range(a)?, &unit_range(b)?, c, h, w),
            Self::HogPearson => {
                let cell = hog::hog_cell(h, w)?;
                let feature = |m: &[f32]| hog::hog(&unit_range(m)?, c, h, w, cell);
                pearson_f64(&feature(a)?, &feature(b)?)
            }
        }
    }
}

impl FromStr for Similarity {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Self::from_name(name).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown similarity `{name}`; expected one of {}",
                SIMILARITY_NAMES.join(", ")
            ))
        })
    }
}

/// PAIR's `VisualizeImageDiverging` of the `c` channels of `hw` pixels in `row`: the signed
/// channel sum `s`, `span = |P99(s)|`, `clip((s + span) / (2·span), −1, 1)`. `None` if the span
/// is 0 (the reference divides 0 by 0).
pub fn diverging(row: &[f32], c: usize, hw: usize) -> Option<Vec<f64>> {
    let s = channel_sum(row, c, hw, f64::from);
    let span = percentile(&s, CLIP_PERCENTILE)?.abs();
    clipped(&s, -span, span, -1.0)
}

/// PAIR's `VisualizeImageGrayscale`: the channel sum of absolute values `g`,
/// `clip((g − min g) / (P99(g) − min g), 0, 1)`. `None` if `P99(g) = min g`.
pub fn grayscale(row: &[f32], c: usize, hw: usize) -> Option<Vec<f64>> {
    let g = channel_sum(row, c, hw, |x| f64::from(x).abs());
    let lo = g.iter().copied().reduce(f64::min)?;
    clipped(&g, lo, percentile(&g, CLIP_PERCENTILE)?, 0.0)
}

/// Adebayo's `normalize_image`: `(x − min) / (max − min)` over the whole row, in f64. `None`
/// for a constant or empty row.
pub fn unit_range(row: &[f32]) -> Option<Vec<f64>> {
    let lo = f64::from(row.iter().copied().reduce(f32::min)?);
    let hi = f64::from(row.iter().copied().reduce(f32::max)?);
    (hi > lo).then(|| row.iter().map(|&x| (f64::from(x) - lo) / (hi - lo)).collect())
}

/// `clip((x − vmin) / (vmax − vmin), floor, 1)` of every value; `None` if `vmax = vmin`.
fn clipped(v: &[f64], vmin: f64, vmax: f64, floor: f64) -> Option<Vec<f64>> {
    (vmax > vmin).then(|| v.iter().map(|&x| ((x - vmin) / (vmax - vmin)).clamp(floor, 1.0)).collect())
}

/// Per pixel, the sum over the `c` channels of `f(value)`, channels added in order (numpy's
/// `np.sum(axis=2)` of an (H, W, C) array).
fn channel_sum(row: &[f32], c: usize, hw: usize, f: impl Fn(f32) -> f64) -> Vec<f64> {
    (0..hw).map(|p| (0..c).fold(0.0, |acc, k| acc + f(row[k * hw + p]))).collect()
}

/// numpy's `np.percentile(v, q)` with its default linear interpolation, to the last bit: the
/// virtual index `(n − 1)·q/100` between order statistics `lo` and `hi` with fraction `t`,
/// `lo + (hi − lo)·t` for `t < 0.5` and `hi − (hi − lo)·(1 − t)` otherwise. `None` if empty.
pub fn percentile(v: &[f64], q: f64) -> Option<f64> {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    let last = sorted.len().checked_sub(1)?;
    let index = last as f64 * (q / 100.0);
    let below = (index.floor() as usize).min(last);
    let t = index - below as f64;
    let (lo, hi) = (sorted[below], sorted[(below + 1).min(last)]);
    let diff = hi - lo;
    Some(if t >= 0.5 { hi - diff * (1.0 - t) } else { lo + diff * t })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn random_row(seed: u64, n: usize) -> Vec<f32> {
        let mut rng = crate::seed::rng(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for (s, name) in Similarity::ALL.iter().zip(SIMILARITY_NAMES) {
            assert_eq!(s.name(), name);
            assert_eq!(Similarity::from_name(name), Some(*s));
            assert_eq!(name.parse::<Similarity>().unwrap(), *s);
        }
        assert_eq!(Similarity::from_name("pearson"), None);
        let err = "hog".parse::<Similarity>().unwrap_err().to_string();
        assert!(err.contains("hog_pearson"), "{err}");
    }

    #[test]
    fn identical_maps_score_one() {
        for (c, h, w) in [(1, 28, 28), (3, 20, 24)] {
            let a = random_row(1, c * h * w);
            for s in Similarity::ALL {
                let v = s.score(&a, &a, c, h, w).expect("defined");
                assert!((v - 1.0).abs() < 1e-12, "{}: {v}", s.name());
            }
        }
    }

    #[test]
    fn a_sign_flip_reverses_spearman_and_leaves_spearman_abs_at_one() {
        // Flipping the sign reverses the order of the signed sums, but PAIR's clip is not
        // symmetric (the top 1% of each map tie at 1, the bottom only below −3·span): a ramp
        // whose top 8 are equal keeps its order under the clip, its negation ties its own top 8
        // (the ramp's bottom), so the correlation is near −1, not exactly −1. The absolute maps
        // are the same map.
        let n = 28 * 28;
        let a: Vec<f32> = (0..n).map(|i| (i.min(n - 8) as f32) - 300.0).collect();
        let flipped: Vec<f32> = a.iter().map(|x| -x).collect();
        let s = Similarity::Spearman.score(&a, &flipped, 1, 28, 28).expect("defined");
        assert!(s < -0.99, "{s}");
        assert_eq!(Similarity::SpearmanAbs.score(&a, &flipped, 1, 28, 28), Some(1.0));
    }

    #[test]
    fn undefined_inputs_are_none() {
        let a = random_row(2, 3 * 16 * 16);
        let constant = vec![0.25f32; 3 * 16 * 16];
        let mut nan = a.clone();
        nan[7] = f32::NAN;
        for s in Similarity::ALL {
            assert_eq!(s.score(&a, &constant, 3, 16, 16), None, "{}", s.name());
            assert_eq!(s.score(&constant, &a, 3, 16, 16), None, "{}", s.name());
            assert_eq!(s.score(&a, &nan, 3, 16, 16), None, "{}", s.name());
            assert_eq!(s.score(&a, &a, 3, 16, 15), None, "{}", s.name());
        }
        // Too small for SSIM's 11×11 window and HOG's three cells, fine for the rank measures.
        let small = random_row(3, 10 * 5);
        assert_eq!(Similarity::Ssim.score(&small, &small, 1, 10, 5), None);
        assert_eq!(Similarity::HogPearson.score(&small, &small, 1, 10, 5), None);
        assert!(Similarity::Spearman.score(&small, &small, 1, 10, 5).is_some());
    }

    #[test]
    fn percentile_interpolates_as_numpy() {
        // n = 5: index 4·0.99 = 3.96 between 3 and 4 (t ≥ 0.5): 4 − (4 − 3)·0.04 = 3.96.
        let v = [4.0, 0.0, 3.0, 1.0, 2.0];
        assert!((percentile(&v, 99.0).unwrap() - 3.96).abs() < 1e-15);
        // index 4·0.1 = 0.4 (t < 0.5): 0 + 1·0.4.
        assert!((percentile(&v, 10.0).unwrap() - 0.4).abs() < 1e-15);
        assert_eq!(percentile(&v, 100.0), Some(4.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_clip_ties_the_top_percent() {
        // 200 distinct values 1..=200: P99 at index 199·0.99 = 197.01, so the values above
        // 198.01 (199 and 200) clip to 1 and tie; 198 stays just below.
        let row: Vec<f32> = (1..=200).map(|i| i as f32).collect();
        let g = grayscale(&row, 1, 200).unwrap();
        assert_eq!(g.iter().filter(|&&x| x == 1.0).count(), 2);
        assert!(g[197] < 1.0 && g[0] == 0.0);
        let d = diverging(&row, 1, 200).unwrap();
        assert_eq!(d.iter().filter(|&&x| x == 1.0).count(), 2);
    }
}

//! Similarity of two saliency maps of the same image: how far did the map move?
//!
//! Ghorbani, Abid and Zou ("Interpretation of neural networks is fragile", AAAI 2019) measure
//! the damage an attack does to an explanation with three numbers ([`default_metrics`]):
//!
//! | metric | column | meaning | range | more similar |
//! |---|---|---|---|---|
//! | [`Spearman`] | `spearman` | rank correlation of all pixels' saliency | \[-1, 1\] | higher |
//! | [`TopKIntersection`] | `top{k}_intersection` | share of the k most salient pixels that stay among the k most salient | \[0, 1\] | higher |
//! | [`CenterShift`] | `center_shift_px` | distance between the maps' centres of mass, in pixels | \[0, ∞) | lower |
//!
//! [`all_metrics`] adds the similarity measures used elsewhere in the saliency literature, so
//! that conclusions do not hang on one choice of measure:
//!
//! | metric | column | meaning | range | more similar |
//! |---|---|---|---|---|
//! | [`KendallTauB`] | `kendall` | τ-b: concordant minus discordant pixel pairs, ties handled | \[-1, 1\] | higher |
//! | [`Pearson`] | `pearson` | linear correlation of the pixel values | \[-1, 1\] | higher |
//! | [`Cosine`] | `cosine` | cosine of the angle between the maps as vectors; \[0, 1\] if non-negative | \[-1, 1\] | higher |
//! | [`Ssim`] | `ssim` | mean SSIM, 11×11 Gaussian window, σ = 1.5, maps scaled to \[0, 1\] | \[-1, 1\] | higher |
//! | [`MseNormalized`] | `mse_normalized` | mean squared error of the maps scaled to sum 1 | \[0, ∞) | lower |
//!
//! Shapes: both maps are row-major slices of `h * w` non-negative f32, one value per pixel,
//! already reduced over channels (|attribution| summed, as in the paper). A score is `None`
//! where the metric is undefined (a constant map has no ranking, an all-zero map no centre,
//! non-finite values, mismatched lengths); reports count those instead of averaging NaN.
//!
//! Each metric is a pure function over slices ([`spearman`], [`top_k_intersection`],
//! [`center_shift`], [`kendall_tau_b`], [`pearson`], [`cosine`], [`ssim`], [`mse_normalized`]),
//! tested against values derived by hand, plus a unit struct implementing [`Metric`] that carries
//! its metadata (name, column, direction, range) as data, so that reports and plots need no
//! special cases (Quantus' idea).

mod center;
mod cosine;
mod kendall;
mod mse;
mod pearson;
mod rank;
mod ssim;
mod topk;

pub use center::{center_of_mass, center_shift, CenterShift};
pub use cosine::{cosine, Cosine};
pub use kendall::{kendall_tau_b, KendallTauB};
pub use mse::{mse_normalized, MseNormalized};
pub use pearson::{pearson, pearson_f64, Pearson};
pub use rank::{average_ranks, spearman, Spearman};
pub use ssim::{ssim, ssim_map, Ssim};
pub use topk::{auto_k, top_k_indices, top_k_intersection, TopKIntersection};

/// Which way a metric says "the maps are alike".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Direction {
    /// 1 (or the top of the range) means identical maps: the correlations, cosine, SSIM,
    /// top-k intersection.
    HigherIsMoreSimilar,
    /// 0 means identical maps: center shift, normalised MSE.
    LowerIsMoreSimilar,
}

/// A similarity score between two saliency maps of one image, with its metadata.
pub trait Metric: Send + Sync {
    /// Short identifier: "spearman", "top_k_intersection", "center_shift".
    fn name(&self) -> &'static str;
    /// Column name in output tables, with units or settings: "spearman",
    /// "top100_intersection", "center_shift_px".
    fn column(&self) -> String;
    /// Whether higher or lower scores mean more similar maps.
    fn direction(&self) -> Direction;
    /// The smallest and largest possible score (the upper bound may be `f64::INFINITY`).
    fn range(&self) -> (f64, f64);
    /// Scores maps `a` and `b`, each `h * w` values in row-major order; `None` where the
    /// metric is undefined for these maps (see each metric) or a length is not `h * w`.
    fn score(&self, a: &[f32], b: &[f32], h: usize, w: usize) -> Option<f64>;
}

/// The paper's three metrics: Spearman, top-`k` intersection, center shift, in that order.
pub fn default_metrics(k: usize) -> Vec<Box<dyn Metric>> {
    vec![Box::new(Spearman), Box::new(TopKIntersection { k }), Box::new(CenterShift)]
}

/// Every metric, in this order: Spearman, Kendall τ-b, Pearson, cosine, SSIM, one top-k
/// intersection per distinct `k` in `ks` (in the given order), center shift, normalised MSE.
pub fn all_metrics(ks: &[usize]) -> Vec<Box<dyn Metric>> {
    let mut out: Vec<Box<dyn Metric>> =
        vec![Box::new(Spearman), Box::new(KendallTauB), Box::new(Pearson), Box::new(Cosine), Box::new(Ssim)];
    out.extend(TopKIntersection::for_ks(ks).into_iter().map(|m| Box::new(m) as Box<dyn Metric>));
    out.push(Box::new(CenterShift));
    out.push(Box::new(MseNormalized));
    out
}

/// The range of the metric that writes the output column `column` (`"spearman"`,
/// `"top100_intersection"`, `"center_shift_px"`, ...), from the metrics' own metadata; `None`
/// for a column no metric writes (attack measures, robustness estimates).
pub fn range_of_column(column: &str) -> Option<(f64, f64)> {
    let k: Option<usize> =
        column.strip_prefix("top").and_then(|s| s.strip_suffix("_intersection")).and_then(|k| k.parse().ok());
    let ks: Vec<usize> = k.into_iter().collect();
    all_metrics(&ks).iter().find(|m| m.column() == column).map(|m| m.range())
}

/// True when both maps hold exactly `h * w` values (shared by the `score` implementations).
fn fits(a: &[f32], b: &[f32], h: usize, w: usize) -> bool {
    h.checked_mul(w).is_some_and(|len| a.len() == len && b.len() == len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_metrics_carry_their_metadata() {
        let m = default_metrics(100);
        let names: Vec<_> = m.iter().map(|m| m.name()).collect();
        assert_eq!(names, ["spearman", "top_k_intersection", "center_shift"]);
        let cols: Vec<_> = m.iter().map(|m| m.column()).collect();
        assert_eq!(cols, ["spearman", "top100_intersection", "center_shift_px"]);
        assert_eq!(m[0].direction(), Direction::HigherIsMoreSimilar);
        assert_eq!(m[1].direction(), Direction::HigherIsMoreSimilar);
        assert_eq!(m[2].direction(), Direction::LowerIsMoreSimilar);
        assert_eq!(m[0].range(), (-1.0, 1.0));
        assert_eq!(m[1].range(), (0.0, 1.0));
        assert_eq!(m[2].range(), (0.0, f64::INFINITY));
    }

    #[test]
    fn identical_maps_score_at_the_similar_end() {
        // A 2×3 map compared with itself: Spearman 1, intersection 1, shift 0.
        let a = [0.1, 0.5, 0.2, 0.9, 0.0, 0.3];
        let want = [1.0, 1.0, 0.0];
        for (m, w) in default_metrics(2).iter().zip(want) {
            assert_eq!(m.score(&a, &a, 2, 3), Some(w), "{}", m.name());
        }
    }

    #[test]
    fn wrong_lengths_give_none_for_every_metric() {
        let a = [1.0, 2.0, 3.0, 4.0];
        for m in default_metrics(2) {
            assert_eq!(m.score(&a, &a, 2, 3), None, "{}", m.name());
            assert_eq!(m.score(&a, &a[..3], 2, 2), None, "{}", m.name());
        }
    }

    #[test]
    fn all_metrics_order_names_and_metadata() {
        let m = all_metrics(&[10, 100]);
        let cols: Vec<_> = m.iter().map(|m| m.column()).collect();
        assert_eq!(
            cols,
            [
                "spearman",
                "kendall",
                "pearson",
                "cosine",
                "ssim",
                "top10_intersection",
                "top100_intersection",
                "center_shift_px",
                "mse_normalized"
            ]
        );
        let names: Vec<_> = m.iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                "spearman",
                "kendall_tau_b",
                "pearson",
                "cosine",
                "ssim",
                "top_k_intersection",
                "top_k_intersection",
                "center_shift",
                "mse"
            ]
        );
        let lower: Vec<_> =
            m.iter().filter(|m| m.direction() == Direction::LowerIsMoreSimilar).map(|m| m.name()).collect();
        assert_eq!(lower, ["center_shift", "mse"]);
        for m in &m[..5] {
            assert_eq!(m.range(), (-1.0, 1.0), "{}", m.name());
        }
        assert_eq!(m[8].range(), (0.0, f64::INFINITY));
        // No k: the two ends only.
        assert_eq!(all_metrics(&[]).len(), 7);
    }

    #[test]
    fn all_metrics_score_identical_maps_at_the_similar_end() {
        // A 2×3 map compared with itself: 1 for every "higher" metric, 0 for the "lower" ones.
        let a = [0.1, 0.5, 0.2, 0.9, 0.0, 0.3];
        for m in all_metrics(&[2, 6]) {
            let want = match m.direction() {
                Direction::HigherIsMoreSimilar => 1.0,
                Direction::LowerIsMoreSimilar => 0.0,
            };
            assert_eq!(m.score(&a, &a, 2, 3), Some(want), "{}", m.column());
        }
    }

    #[test]
    fn all_metrics_are_symmetric_and_in_range_on_random_maps() {
        use rand::Rng;
        let mut rng = crate::seed::rng(3);
        for _ in 0..10 {
            let mut draw = || (0..784).map(|_| rng.random_range(0.0f32..1.0)).collect::<Vec<_>>();
            let (a, b) = (draw(), draw());
            for m in all_metrics(&[10, 100]) {
                let s = m.score(&a, &b, 28, 28).expect("defined on random maps");
                assert_eq!(Some(s), m.score(&b, &a, 28, 28), "{} not symmetric", m.column());
                let (lo, hi) = m.range();
                assert!(lo <= s && s <= hi, "{}: {s} outside [{lo}, {hi}]", m.column());
            }
        }
    }

    #[test]
    fn all_metrics_give_none_not_nan_for_undefined_maps() {
        let v = [0.1, 0.5, 0.2, 0.9];
        for m in all_metrics(&[2]) {
            assert_eq!(m.score(&v, &v, 2, 3), None, "{}", m.column());
            assert_eq!(m.score(&v, &v[..3], 2, 2), None, "{}", m.column());
            assert_eq!(m.score(&[0.1, f32::NAN, 0.2, 0.9], &v, 2, 2), None, "{}", m.column());
        }
        // An all-zero map: constant for the correlations and SSIM, no mass for the others.
        // Only the top-k intersection is defined (its tie rule picks the first pixels).
        let undefined: Vec<_> = all_metrics(&[2])
            .iter()
            .filter(|m| m.score(&[0.0; 4], &v, 2, 2).is_none())
            .map(|m| m.column())
            .collect();
        assert_eq!(
            undefined,
            ["spearman", "kendall", "pearson", "cosine", "ssim", "center_shift_px", "mse_normalized"]
        );
    }

    #[test]
    fn a_column_names_its_metric_range() {
        assert_eq!(range_of_column("spearman"), Some((-1.0, 1.0)));
        assert_eq!(range_of_column("top7_intersection"), Some((0.0, 1.0)));
        assert_eq!(range_of_column("mse_normalized"), Some((0.0, f64::INFINITY)));
        assert_eq!(range_of_column("center_shift_px"), Some((0.0, f64::INFINITY)));
        assert_eq!(range_of_column("top_mass_after"), None);
        assert_eq!(range_of_column("topx_intersection"), None);
    }

    #[test]
    fn direction_serializes_as_its_name() {
        let s = serde_json::to_string(&Direction::LowerIsMoreSimilar).unwrap();
        assert_eq!(s, "\"LowerIsMoreSimilar\"");
    }
}

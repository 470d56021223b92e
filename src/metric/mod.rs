//! Similarity of two saliency maps of the same image: how far did the map move?
//!
//! Ghorbani, Abid and Zou ("Interpretation of neural networks is fragile", AAAI 2019) measure
//! the damage an attack does to an explanation with three numbers, and so do we:
//!
//! | metric | column | meaning | range | more similar |
//! |---|---|---|---|---|
//! | [`Spearman`] | `spearman` | rank correlation of all pixels' saliency | \[-1, 1\] | higher |
//! | [`TopKIntersection`] | `top{k}_intersection` | share of the k most salient pixels that stay among the k most salient | \[0, 1\] | higher |
//! | [`CenterShift`] | `center_shift_px` | distance between the maps' centres of mass, in pixels | \[0, ∞) | lower |
//!
//! Shapes: both maps are row-major slices of `h * w` non-negative f32, one value per pixel,
//! already reduced over channels (|attribution| summed, as in the paper). A score is `None`
//! where the metric is undefined (a constant map has no ranking, an all-zero map no centre,
//! non-finite values, mismatched lengths); reports count those instead of averaging NaN.
//!
//! Each metric is a pure function over slices ([`spearman`], [`top_k_intersection`],
//! [`center_shift`]), tested against values derived by hand, plus a unit struct implementing
//! [`Metric`] that carries its metadata (name, column, direction, range) as data, so that
//! reports and plots need no special cases (Quantus' idea).

mod center;
mod rank;
mod topk;

pub use center::{center_of_mass, center_shift, CenterShift};
pub use rank::{average_ranks, spearman, Spearman};
pub use topk::{top_k_indices, top_k_intersection, TopKIntersection};

/// Which way a metric says "the maps are alike".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Direction {
    /// 1 (or the top of the range) means identical maps: Spearman, top-k intersection.
    HigherIsMoreSimilar,
    /// 0 means identical maps: center shift.
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
    fn direction_serializes_as_its_name() {
        let s = serde_json::to_string(&Direction::LowerIsMoreSimilar).unwrap();
        assert_eq!(s, "\"LowerIsMoreSimilar\"");
    }
}

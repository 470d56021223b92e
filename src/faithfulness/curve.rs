//! What a measure returns per image, and the one area rule all four use.
//!
//! The area is the composite trapezoidal rule at unit spacing, Σ v − v₀/2 − vₙ₋₁/2: numpy's
//! `trapz(v, dx=1)` (Quantus' `calculate_auc`, pixel flipping and region perturbation), and
//! divided by n − 1 RISE's `auc` (deletion and insertion, an area over \[0,1\]).

/// One image's curve under one measure.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Curve {
    /// The share of the image's pixels perturbed at each point, in \[0,1\].
    pub fractions: Vec<f64>,
    /// The measure's value at each point (a probability, or a drop in probability).
    pub values: Vec<f64>,
    /// The measure's scalar: the area under `values` as its reference defines it.
    pub score: f64,
    /// Whether the class is still the model's arg-max (first maximum of the logits) on the
    /// perturbed image of each point: ROAD's accuracy, recorded by every measure.
    pub top1: Vec<bool>,
}

/// Σ v − v₀/2 − vₙ₋₁/2, the trapezoid area of `values` at unit spacing (0 for fewer than two
/// values, as numpy's `trapz`).
pub fn trapezoid(values: &[f64]) -> f64 {
    match values {
        [] | [_] => 0.0,
        [first, .., last] => values.iter().sum::<f64>() - first / 2.0 - last / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trapezoid_matches_hand_computed_areas() {
        // (1+2)/2 + (2+4)/2 = 4.5 = 7 − 1/2 − 4/2.
        assert_eq!(trapezoid(&[1.0, 2.0, 4.0]), 4.5);
        assert_eq!(trapezoid(&[3.0, 3.0]), 3.0);
        assert_eq!(trapezoid(&[5.0]), 0.0);
        assert_eq!(trapezoid(&[]), 0.0);
    }
}

//! Integrated gradients (Sundararajan, Taly and Yan, ICML 2017).
//!
//! IG(x) = (x − x₀) ⊙ ∫₀¹ ∇ logit_t(x₀ + α(x − x₀)) dα, with the integral replaced by a
//! quadrature rule Σᵢ wᵢ ∇ logit_t(x₀ + αᵢ(x − x₀)) whose weights sum to one. Completeness:
//! Σ IG(x) ≈ logit_t(x) − logit_t(x₀). Baseline x₀ = 0 (a black image); t is the class chosen
//! at x, not along the path. Shapes: x [B,C,H,W] → [B,C,H,W]; the B·steps interpolated images
//! are evaluated in chunks of [`super::MAX_ROWS_PER_PASS`] rows.
//!
//! Differences from Captum 0.9: Captum's `riemann_trapezoid` weights sum to (n−1)/n (49/50 at
//! 50 steps); ours sum to one, so completeness holds for the trapezoid rule too. Ghorbani et
//! al.'s reference code uses 100 right-Riemann steps (`quadrature = "right_riemann"`).

use super::{target_gradient, target_hessian_vector, Attribution};
use crate::error::Result;
use crate::model::{Activation, Classifier};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// The quadrature rule for the path integral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Quadrature {
    /// Gauss–Legendre nodes and weights on [0,1]: exact for polynomials of degree 2n−1.
    #[default]
    GaussLegendre,
    /// Trapezoid rule on n equally spaced points including both ends; weights sum to one.
    Trapezoid,
    /// Left Riemann sum: αᵢ = i/n, i = 0..n−1.
    LeftRiemann,
    /// Right Riemann sum: αᵢ = i/n, i = 1..n.
    RightRiemann,
}

/// Nodes αᵢ ∈ [0,1] and weights wᵢ (summing to one) of an `n`-point rule.
pub fn quadrature(rule: Quadrature, n: usize) -> (Vec<f64>, Vec<f64>) {
    let n = n.max(1);
    match rule {
        Quadrature::GaussLegendre => gauss_legendre(n),
        Quadrature::Trapezoid if n == 1 => (vec![0.5], vec![1.0]),
        Quadrature::Trapezoid => {
            let h = 1.0 / (n - 1) as f64;
            let nodes = (0..n).map(|i| i as f64 * h).collect();
            let weights = (0..n).map(|i| if i == 0 || i == n - 1 { h / 2.0 } else { h }).collect();
            (nodes, weights)
        }
        Quadrature::LeftRiemann => ((0..n).map(|i| i as f64 / n as f64).collect(), vec![1.0 / n as f64; n]),
        Quadrature::RightRiemann => ((1..=n).map(|i| i as f64 / n as f64).collect(), vec![1.0 / n as f64; n]),
    }
}

/// Gauss–Legendre rule on [0,1]: roots of Pₙ by Newton's method from Chebyshev guesses, then
/// mapped from [−1,1] (weights halved).
fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = Vec::with_capacity(n);
    let mut weights = Vec::with_capacity(n);
    for i in 0..n {
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            // Three-term recurrence for Pₙ(x) and its derivative.
            let (mut p0, mut p1) = (1.0, x);
            for k in 2..=n {
                let pk = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = pk;
            }
            let pn = if n == 1 { x } else { p1 };
            let pn1 = if n == 1 { 1.0 } else { p0 };
            dp = n as f64 * (x * pn - pn1) / (x * x - 1.0);
            let dx = pn / dp;
            x -= dx;
            if dx.abs() < 1e-15 {
                break;
            }
        }
        let w = 2.0 / ((1.0 - x * x) * dp * dp);
        nodes.push((x + 1.0) / 2.0);
        weights.push(w / 2.0);
    }
    // Ascending nodes, so results do not depend on the root-finding order.
    let mut pairs: Vec<(f64, f64)> = nodes.into_iter().zip(weights).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    pairs.into_iter().unzip()
}

/// How steered attacks differentiate the integrated-gradients map: through a Gauss–Legendre
/// stand-in of this many path points, or through the map itself (`"full"` in a config).
///
/// The attack's derivative of IG is a Hessian–vector product at every path point, so with the
/// measured map's 50–100 points one steered step costs 50–100 gradient steps. Measured
/// (reports/bench/README.md, 2026-12-07): on the shipped CNN and on squeezenet1_1 at 224,
/// steering by 2–16 Gauss–Legendre points reaches the same top-k intersection as steering by
/// the full path within noise (0.215 with 8 points against 0.213 with the full 100-point
/// right-Riemann path on squeezenet1_1), at 2.2–3.3× the gradient-steered attack's time
/// instead of 17–19×. The measured maps are never changed by this setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteerSteps {
    /// A stand-in with this many Gauss–Legendre points (≥ 1), where the map has more.
    Points(usize),
    /// The measured map itself.
    Full,
}

/// The default stand-in's path points (see [`SteerSteps`]).
pub const DEFAULT_STEER_STEPS: usize = 8;

impl Default for SteerSteps {
    fn default() -> Self {
        Self::Points(DEFAULT_STEER_STEPS)
    }
}

impl Serialize for SteerSteps {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::Points(k) => s.serialize_u64(*k as u64),
            Self::Full => s.serialize_str("full"),
        }
    }
}

impl<'de> Deserialize<'de> for SteerSteps {
    /// A number of path points (≥ 1) or `"full"`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SteerSteps;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`steer_steps` as a number of path points (at least 1) or \"full\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<SteerSteps, E> {
                match usize::try_from(v) {
                    Ok(k) if k >= 1 => Ok(SteerSteps::Points(k)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<SteerSteps, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<SteerSteps, E> {
                match v {
                    "full" => Ok(SteerSteps::Full),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Integrated gradients with a zero baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegratedGradients {
    /// Number of quadrature nodes along the path.
    pub steps: usize,
    /// The quadrature rule.
    pub quadrature: Quadrature,
    /// What steered attacks steer by and rank their iterates with: a Gauss–Legendre stand-in
    /// of this many points where the map has more (a steered step then costs that many path
    /// points instead of `steps`), or the map itself. Not a setting of the measured map, so not
    /// in [`Attribution::params`]: a steered attack records its stand-in.
    pub steer_steps: SteerSteps,
}

impl Default for IntegratedGradients {
    fn default() -> Self {
        Self { steps: 50, quadrature: Quadrature::GaussLegendre, steer_steps: SteerSteps::default() }
    }
}

impl Attribution for IntegratedGradients {
    fn name(&self) -> &'static str {
        "integrated_gradients"
    }

    fn differentiable(&self) -> bool {
        true
    }

    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor> {
        let (alphas, weights) = quadrature(self.quadrature, self.steps);
        let b = x.dim(0)?;
        let dims = x.dims().to_vec();
        // All B·S path points at once, node-major: row s·B + i is αₛ·xᵢ (zero baseline).
        let dev = x.device();
        // Nodes and weights in f64, then the input's dtype (an f64 model keeps full precision).
        let alpha = Tensor::from_vec(alphas.clone(), (alphas.len(), 1, 1, 1, 1), dev)?.to_dtype(x.dtype())?;
        let path = alpha.broadcast_mul(&x.unsqueeze(0)?)?;
        let s = alphas.len();
        let flat = path.reshape((s * b, dims[1], dims[2], dims[3]))?;
        let reps: Vec<u32> = (0..s).flat_map(|_| targets.iter().copied()).collect();
        let grads = target_gradient(model, &flat, &reps, act)?.reshape((s, b, dims[1], dims[2], dims[3]))?;
        let w = Tensor::from_vec(weights.clone(), (s, 1, 1, 1, 1), dev)?.to_dtype(x.dtype())?;
        let avg = grads.broadcast_mul(&w)?.sum(0)?;
        Ok(avg.mul(x)?)
    }

    fn passes_per_image(&self) -> usize {
        self.steps.max(1)
    }

    fn steering(&self) -> Option<std::sync::Arc<dyn Attribution>> {
        let k = match self.steer_steps {
            SteerSteps::Points(k) if k >= 1 && k < self.steps => k,
            _ => return None,
        };
        let stand_in =
            Self { steps: k, quadrature: Quadrature::GaussLegendre, steer_steps: SteerSteps::Full };
        Some(std::sync::Arc::new(stand_in))
    }

    fn has_map_vjp(&self) -> bool {
        true
    }

    /// IG(x) = x ⊙ Σₛ wₛ g(αₛx), so ∇ₓ⟨IG(x), v⟩ = v ⊙ Σₛ wₛ g(αₛx) + Σₛ wₛ αₛ H(αₛx)·(x ⊙ v).
    /// The map first (v depends on it), then the S Hessian–vector passes.
    fn map_then_vjp(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        _anchor: &Tensor,
        targets: &[u32],
        act: Activation,
        loss_grad: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let v = loss_grad(&self.attribute(model, x, targets, act)?)?;
        let (alphas, weights) = quadrature(self.quadrature, self.steps);
        let (b, s, dev) = (x.dim(0)?, alphas.len(), x.device());
        let dims = x.dims().to_vec();
        let column = |v: Vec<f64>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (s, 1, 1, 1, 1), dev)?.to_dtype(x.dtype())?)
        };
        // Node-major path points, as in `attribute`, each with the vector x ⊙ v.
        let path = column(alphas.clone())?.broadcast_mul(&x.unsqueeze(0)?)?;
        let flat = |t: Tensor| t.reshape((s * b, dims[1], dims[2], dims[3]));
        let u = x.mul(&v)?.unsqueeze(0)?.broadcast_as(path.shape())?.contiguous()?;
        let reps: Vec<u32> = (0..s).flat_map(|_| targets.iter().copied()).collect();
        let (g, hv) = target_hessian_vector(model, &flat(path)?, &reps, &flat(u)?, act)?;
        let per_node = |t: Tensor| t.reshape((s, b, dims[1], dims[2], dims[3]));
        let wa: Vec<f64> = alphas.iter().zip(&weights).map(|(a, w)| a * w).collect();
        let avg = per_node(g)?.broadcast_mul(&column(weights)?)?.sum(0)?;
        let curv = per_node(hv)?.broadcast_mul(&column(wa)?)?.sum(0)?;
        Ok(v.mul(&avg)?.add(&curv)?)
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "steps": self.steps, "quadrature": self.quadrature, "baseline": "zero" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_integrates_low_degree_polynomials() {
        // ∫₀¹ 3α² dα = 1 and ∫₀¹ 1 dα = 1.
        for rule in [
            Quadrature::GaussLegendre,
            Quadrature::Trapezoid,
            Quadrature::LeftRiemann,
            Quadrature::RightRiemann,
        ] {
            let (a, w) = quadrature(rule, 50);
            assert_eq!(a.len(), 50);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{rule:?}");
            let int: f64 = a.iter().zip(&w).map(|(a, w)| w * 3.0 * a * a).sum();
            // Riemann sums err by O(1/n): |1/(2n)·3| ≈ 0.03 at n = 50.
            assert!((int - 1.0).abs() < 0.031, "{rule:?} {int}");
        }
    }

    #[test]
    fn gauss_legendre_matches_known_nodes_and_is_exact_to_degree_2n_minus_1() {
        // 2-point rule on [−1,1]: ±1/√3, weights 1 → on [0,1]: (1 ∓ 1/√3)/2, weights 1/2.
        let (a, w) = quadrature(Quadrature::GaussLegendre, 2);
        let r = 1.0 / 3f64.sqrt();
        assert!((a[0] - (1.0 - r) / 2.0).abs() < 1e-14 && (a[1] - (1.0 + r) / 2.0).abs() < 1e-14);
        assert!((w[0] - 0.5).abs() < 1e-14 && (w[1] - 0.5).abs() < 1e-14);
        // 5 points integrate α⁹ exactly: ∫₀¹ α⁹ = 1/10.
        let (a, w) = quadrature(Quadrature::GaussLegendre, 5);
        let int: f64 = a.iter().zip(&w).map(|(a, w)| w * a.powi(9)).sum();
        assert!((int - 0.1).abs() < 1e-14);
        // 50 points: nodes strictly inside (0,1), ascending.
        let (a, _) = quadrature(Quadrature::GaussLegendre, 50);
        assert!(a.windows(2).all(|p| p[0] < p[1]) && a[0] > 0.0 && a[49] < 1.0);
    }

    #[test]
    fn the_steering_stand_in_has_steer_steps_gauss_legendre_points() {
        let ig = IntegratedGradients {
            steps: 100,
            quadrature: Quadrature::RightRiemann,
            steer_steps: SteerSteps::Points(4),
        };
        let s = ig.steering().expect("a stand-in");
        assert_eq!(s.passes_per_image(), 4);
        assert_eq!(s.params()["quadrature"], "gauss_legendre");
        assert!(s.steering().is_none());
        // Not a setting of the measured map.
        assert!(ig.params().get("steer_steps").is_none());
        // "full", or not fewer points than the map: the map itself.
        let full = IntegratedGradients { steer_steps: SteerSteps::Full, ..ig };
        assert!(full.steering().is_none());
        assert!(IntegratedGradients { steps: 8, ..IntegratedGradients::default() }.steering().is_none());
    }

    /// The measured default (see [`SteerSteps`]): 8 Gauss–Legendre points for the 50-point map.
    #[test]
    fn the_default_steers_by_eight_gauss_legendre_points() {
        assert_eq!(DEFAULT_STEER_STEPS, 8);
        let s = IntegratedGradients::default().steering().expect("a stand-in by default");
        assert_eq!(s.passes_per_image(), 8);
        assert_eq!(s.params()["quadrature"], "gauss_legendre");
    }

    #[test]
    fn steer_steps_read_a_number_or_full() {
        #[derive(Deserialize)]
        struct T {
            s: SteerSteps,
        }
        let read = |v: &str| toml::from_str::<T>(&format!("s = {v}")).map(|t| t.s);
        assert_eq!(read("4").unwrap(), SteerSteps::Points(4));
        assert_eq!(read("\"full\"").unwrap(), SteerSteps::Full);
        for bad in ["0", "-3", "\"all\"", "2.5"] {
            let e = read(bad).unwrap_err().to_string();
            assert!(
                e.contains("`steer_steps` as a number of path points (at least 1) or \"full\""),
                "{bad}: {e}"
            );
        }
        assert_eq!(serde_json::json!(SteerSteps::Points(8)), serde_json::json!(8));
        assert_eq!(serde_json::json!(SteerSteps::Full), serde_json::json!("full"));
    }

    #[test]
    fn trapezoid_and_riemann_nodes() {
        let (a, w) = quadrature(Quadrature::Trapezoid, 3);
        assert_eq!(a, vec![0.0, 0.5, 1.0]);
        assert_eq!(w, vec![0.25, 0.5, 0.25]);
        assert_eq!(quadrature(Quadrature::LeftRiemann, 4).0, vec![0.0, 0.25, 0.5, 0.75]);
        assert_eq!(quadrature(Quadrature::RightRiemann, 4).0, vec![0.25, 0.5, 0.75, 1.0]);
    }
}

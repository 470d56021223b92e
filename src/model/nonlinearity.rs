//! The math of a nonlinearity node: its value, derivatives and backward rules.
//!
//! A node's [`Nonlinearity`] (ReLU, ReLU6, leaky ReLU) is evaluated under the pass's
//! [`Activation`]: the real piecewise-linear function, or its softplus(β) surrogate (Ghorbani
//! et al. 2019 differentiate through the surrogate; Dombrowski et al. 2019 anneal β). Writing
//! sp(z) = softplus_β(z) and σ(z) = sigmoid(βz) = sp′(z):
//!
//! | kind | real φ(z) | surrogate φ(z) | surrogate φ′(z) |
//! |---|---|---|---|
//! | ReLU | max(z, 0) | sp(z) | σ(z) |
//! | ReLU6 | min(max(z, 0), 6) | sp(z) − sp(z − 6) | σ(z) − σ(z − 6) |
//! | leaky ReLU(α) | max(z, αz) | αz + (1 − α)·sp(z) | α + (1 − α)·σ(z) |
//!
//! and φ″ = β·σ(1 − σ) per softplus term (0 for the real functions, almost everywhere).
//!
//! A backward [`Rule`] says what the backward pass does at the node, given the upstream
//! gradient g (with respect to φ(z)): ρ(g, z) with respect to z. The second-order adjoint
//! ([`super::sweep`]) needs its partial derivatives ∂ρ/∂g and ∂ρ/∂z:
//!
//! | rule | ρ(g, z) | ∂ρ/∂g | ∂ρ/∂z |
//! |---|---|---|---|
//! | gradient | g·φ′(z) | φ′(z) | g·φ″(z) |
//! | guided backprop | relu(g)·φ′(z) | [g > 0]·φ′(z) | relu(g)·φ″(z) |
//! | deconvnet | relu(g) | [g > 0] | 0 |
//! | rescale (DeepLIFT) | g·m(z) | m(z) | g·m′(z) |
//!
//! with DeepLIFT's multiplier m(z) = (φ(z) − φ(z₀)) / (z − z₀) against the baseline's
//! pre-activation z₀, and m′(z) = (φ′(z) − m(z)) / (z − z₀); where |z − z₀| ≤ 1e-6 they fall
//! back to their limits φ′(z) and φ″(z)/2. ReLU6's guided and rescale rules are thus defined
//! on its own derivative (zero above 6), not on ReLU's.

pub use super::graph::Nonlinearity;
use candle_core::Tensor;

/// |z − z₀| at or below which DeepLIFT's multiplier falls back to the derivative.
pub const RESCALE_EPS: f32 = 1e-6;

/// Whether a pass runs the real nonlinearities or their softplus(β) surrogates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// The exact model: every nonlinearity as the network defines it (ReLU, ReLU6, leaky ReLU
    /// with their kinks), as predictions and maps are computed. (Named `Relu` before: the name
    /// said one function where it meant "no surrogate".)
    Exact,
    /// The smooth surrogate: every nonlinearity built from softplus_β(z) = ln(1 + e^{βz})/β.
    Softplus {
        /// Sharpness: larger β is closer to the real function.
        beta: f64,
    },
}

impl Activation {
    /// softplus(β) (or ReLU for the real model) of `z`, on a tensor. Stable form:
    /// relu(z) + ln(1 + exp(−β|z|))/β.
    pub fn apply(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        match *self {
            Activation::Exact => z.relu(),
            Activation::Softplus { beta } => {
                let tail = z.abs()?.affine(-beta, 0.0)?.exp()?.affine(1.0, 1.0)?.log()?;
                z.relu()? + tail.affine(1.0 / beta, 0.0)?
            }
        }
    }

    /// The derivative of [`Activation::apply`]: step(z > 0), or sigmoid(βz) = (1 + tanh(βz/2))/2.
    pub fn derivative(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        match *self {
            Activation::Exact => z.gt(0.0)?.to_dtype(z.dtype()),
            Activation::Softplus { beta } => z.affine(beta / 2.0, 0.0)?.tanh()?.affine(0.5, 0.5),
        }
    }

    /// [`Activation::apply`] on one value.
    pub fn apply_scalar(&self, z: f32) -> f32 {
        self.apply_and_derivative(z).0
    }

    /// [`Activation::apply`] and [`Activation::derivative`] on one value, from one
    /// e = exp(−β|z|): relu(z) + ln(1 + e)/β, and 1/(1 + e) for z ≥ 0, e/(1 + e) below.
    pub fn apply_and_derivative(&self, z: f32) -> (f32, f32) {
        match *self {
            Activation::Exact => (z.max(0.0), f32::from(u8::from(z > 0.0))),
            Activation::Softplus { beta } => {
                let beta = beta as f32;
                let e = (-beta * z.abs()).exp();
                let s = if z >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
                (z.max(0.0) + e.ln_1p() / beta, s)
            }
        }
    }

    /// [`Activation::derivative`] on one value.
    pub fn derivative_scalar(&self, z: f32) -> f32 {
        self.apply_and_derivative(z).1
    }

    /// The second derivative from the first, s = act′(z): 0 for ReLU, β·s·(1 − s) for softplus.
    pub fn second_derivative_from_first(&self, s: f32) -> f32 {
        match *self {
            Activation::Exact => 0.0,
            Activation::Softplus { beta } => beta as f32 * s * (1.0 - s),
        }
    }
}

/// What the backward pass does at every nonlinearity (max-pooling, convolutions and linear
/// layers are unchanged by every rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rule {
    /// The true derivative: the gradient.
    #[default]
    Gradient,
    /// Guided backpropagation (Springenberg et al. 2015): relu(g)·φ′(z).
    Guided,
    /// Zeiler and Fergus's deconvnet: relu(g).
    Deconvnet,
    /// DeepLIFT's rescale rule (Shrikumar et al. 2017) against a baseline pass.
    Rescale,
}

/// φ(z), φ′(z) and φ″(z) of `kind` under `act` on one value.
pub fn eval(kind: Nonlinearity, act: Activation, z: f32) -> (f32, f32, f32) {
    let base = |z: f32| {
        let (v, d) = act.apply_and_derivative(z);
        (v, d, act.second_derivative_from_first(d))
    };
    match (kind, act) {
        (Nonlinearity::Relu, _) => base(z),
        (Nonlinearity::Relu6, Activation::Exact) => {
            (z.clamp(0.0, 6.0), f32::from(u8::from(z > 0.0 && z < 6.0)), 0.0)
        }
        (Nonlinearity::Relu6, _) => {
            let ((v1, d1, s1), (v2, d2, s2)) = (base(z), base(z - 6.0));
            (v1 - v2, d1 - d2, s1 - s2)
        }
        (Nonlinearity::LeakyRelu(a), Activation::Exact) => {
            if z > 0.0 {
                (z, 1.0, 0.0)
            } else {
                (a * z, a, 0.0)
            }
        }
        (Nonlinearity::LeakyRelu(a), _) => {
            let (v, d, s) = base(z);
            (a * z + (1.0 - a) * v, a + (1.0 - a) * d, (1.0 - a) * s)
        }
    }
}

/// DeepLIFT's multiplier m(z) and its derivative m′(z) against z₀ (see the module docs).
/// Computed in f64: m′ = (φ′ − m)/(z − z₀) cancels to a difference of nearly equal terms
/// when z is near z₀, which float32 would leave with a relative error of order one.
fn rescale(kind: Nonlinearity, act: Activation, z: f32, z0: f32) -> (f32, f32) {
    let dz = f64::from(z) - f64::from(z0);
    if dz.abs() <= f64::from(RESCALE_EPS) {
        let (_, d, s) = eval(kind, act, z);
        return (d, s / 2.0);
    }
    let (v, d) = eval64(kind, act, f64::from(z));
    let m = (v - eval64(kind, act, f64::from(z0)).0) / dz;
    (m as f32, ((d - m) / dz) as f32)
}

/// The real ReLU's rescale multiplier (φ(z) − φ(z0)) / (z − z0) in f64, or φ′(z) where
/// z ≈ z0: [`rescale`]'s first part for the real ReLU, written out for the kernels' sweep
/// (the same bits, tested).
#[inline(always)]
pub(crate) fn relu_rescale(z: f32, z0: f32) -> f32 {
    let dz = f64::from(z) - f64::from(z0);
    if dz.abs() <= f64::from(RESCALE_EPS) {
        return if z > 0.0 { 1.0 } else { 0.0 };
    }
    ((f64::from(z).max(0.0) - f64::from(z0).max(0.0)) / dz) as f32
}

/// φ(z) and φ′(z) in f64.
fn eval64(kind: Nonlinearity, act: Activation, z: f64) -> (f64, f64) {
    let base = |z: f64| match act {
        Activation::Exact => (z.max(0.0), if z > 0.0 { 1.0 } else { 0.0 }),
        Activation::Softplus { beta } => {
            let e = (-beta * z.abs()).exp();
            let s = if z >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
            (z.max(0.0) + e.ln_1p() / beta, s)
        }
    };
    match (kind, act) {
        (Nonlinearity::Relu, _) => base(z),
        (Nonlinearity::Relu6, Activation::Exact) => {
            (z.clamp(0.0, 6.0), if z > 0.0 && z < 6.0 { 1.0 } else { 0.0 })
        }
        (Nonlinearity::Relu6, _) => {
            let ((v1, d1), (v2, d2)) = (base(z), base(z - 6.0));
            (v1 - v2, d1 - d2)
        }
        (Nonlinearity::LeakyRelu(a), Activation::Exact) => {
            let a = f64::from(a);
            if z > 0.0 {
                (z, 1.0)
            } else {
                (a * z, a)
            }
        }
        (Nonlinearity::LeakyRelu(a), _) => {
            let a = f64::from(a);
            let (v, d) = base(z);
            (a * z + (1.0 - a) * v, a + (1.0 - a) * d)
        }
    }
}

/// ρ(g, z): the gradient with respect to z under `rule`, from the upstream gradient `g`,
/// φ′(z) = `d` (precomputed by the forward pass) and, for the rescale rule, z₀.
pub fn backward(kind: Nonlinearity, act: Activation, rule: Rule, z: f32, d: f32, z0: f32, g: f32) -> f32 {
    match rule {
        Rule::Gradient => g * d,
        Rule::Guided => g.max(0.0) * d,
        Rule::Deconvnet => g.max(0.0),
        Rule::Rescale => g * rescale(kind, act, z, z0).0,
    }
}

/// (∂ρ/∂g·λ, ∂ρ/∂z·λ): the adjoint of [`backward`] for a cotangent λ of its result.
#[allow(clippy::too_many_arguments)]
pub fn adjoint(
    kind: Nonlinearity,
    act: Activation,
    rule: Rule,
    z: f32,
    d: f32,
    z0: f32,
    g: f32,
    lam: f32,
) -> (f32, f32) {
    let second = || eval(kind, act, z).2;
    match rule {
        Rule::Gradient => (d * lam, g * second() * lam),
        Rule::Guided => {
            let up = g > 0.0;
            (if up { d * lam } else { 0.0 }, if up { g * second() * lam } else { 0.0 })
        }
        Rule::Deconvnet => (if g > 0.0 { lam } else { 0.0 }, 0.0),
        Rule::Rescale => {
            let (m, dm) = rescale(kind, act, z, z0);
            (m * lam, g * dm * lam)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relu_rescale_sweep_is_the_scalar_rule() {
        // Far apart, across the kink, within and just outside RESCALE_EPS, equal, signed zeros.
        let zs = [-2.0f32, -1e-7, -0.0, 0.0, 3e-7, 1e-6, 2.5e-6, 0.75, 4.0];
        for &z in &zs {
            for &z0 in &zs {
                let want = rescale(Nonlinearity::Relu, Activation::Exact, z, z0).0;
                assert_eq!(relu_rescale(z, z0).to_bits(), want.to_bits(), "z={z} z0={z0}");
            }
        }
    }

    const KINDS: [Nonlinearity; 3] = [Nonlinearity::Relu, Nonlinearity::Relu6, Nonlinearity::LeakyRelu(0.1)];

    #[test]
    fn surrogate_derivatives_match_differences_and_approach_the_real_function() {
        let act = Activation::Softplus { beta: 3.0 };
        for kind in KINDS {
            for z in [-2.0f32, -0.3, 0.0, 0.4, 5.7, 6.2, 9.0] {
                let (_, d, s) = eval(kind, act, z);
                let h = 1e-2f32;
                let f = |z: f32| f64::from(eval(kind, act, z).0);
                let fd = (f(z + h) - f(z - h)) / (2.0 * f64::from(h));
                assert!((f64::from(d) - fd).abs() < 1e-3, "{kind:?} φ′({z}): {d} vs {fd}");
                let fd2 = (f64::from(eval(kind, act, z + h).1) - f64::from(eval(kind, act, z - h).1)) / 0.02;
                assert!((f64::from(s) - fd2).abs() < 1e-2, "{kind:?} φ″({z}): {s} vs {fd2}");
            }
            // Large β: the surrogate is within ln 2/β of the real function.
            let sharp = Activation::Softplus { beta: 1000.0 };
            for z in [-3.0f32, 0.5, 3.0, 7.0] {
                let (real, soft) = (eval(kind, Activation::Exact, z).0, eval(kind, sharp, z).0);
                assert!((real - soft).abs() < 2e-3, "{kind:?} {z}: {real} vs {soft}");
            }
        }
        // ReLU6 is flat above 6 and below 0: real derivative 0 there, 1 between.
        assert_eq!(eval(Nonlinearity::Relu6, Activation::Exact, 7.0), (6.0, 0.0, 0.0));
        assert_eq!(eval(Nonlinearity::Relu6, Activation::Exact, 3.0), (3.0, 1.0, 0.0));
        assert_eq!(eval(Nonlinearity::LeakyRelu(0.1), Activation::Exact, -2.0), (-0.2, 0.1, 0.0));
    }

    #[test]
    fn rules_by_hand() {
        let relu = Activation::Exact;
        let k = Nonlinearity::Relu;
        // z = 2 (open), z = −1 (closed); upstream g = −3 and 4.
        assert_eq!(backward(k, relu, Rule::Gradient, 2.0, 1.0, 0.0, -3.0), -3.0);
        assert_eq!(backward(k, relu, Rule::Guided, 2.0, 1.0, 0.0, -3.0), 0.0);
        assert_eq!(backward(k, relu, Rule::Guided, 2.0, 1.0, 0.0, 4.0), 4.0);
        assert_eq!(backward(k, relu, Rule::Guided, -1.0, 0.0, 0.0, 4.0), 0.0);
        assert_eq!(backward(k, relu, Rule::Deconvnet, -1.0, 0.0, 0.0, 4.0), 4.0);
        // Rescale from z₀ = −1 to z = 3: m = (3 − 0)/(3 + 1) = 0.75.
        assert_eq!(backward(k, relu, Rule::Rescale, 3.0, 1.0, -1.0, 4.0), 3.0);
        // ReLU6 from z₀ = 0 to z = 8: m = 6/8.
        assert_eq!(backward(Nonlinearity::Relu6, relu, Rule::Rescale, 8.0, 0.0, 0.0, 1.0), 0.75);
    }

    #[test]
    fn adjoints_are_the_partial_derivatives_of_the_rules() {
        // ∂ρ/∂z by central differences of ρ in z (d recomputed at each z), ∂ρ/∂g likewise.
        let act = Activation::Softplus { beta: 2.0 };
        for kind in KINDS {
            for rule in [Rule::Gradient, Rule::Guided, Rule::Deconvnet, Rule::Rescale] {
                for (z, z0, g) in [(0.7f32, -0.4f32, 1.3f32), (-0.2, 0.5, -0.8), (6.5, 1.0, 0.9)] {
                    let rho =
                        |z: f32, g: f32| f64::from(backward(kind, act, rule, z, eval(kind, act, z).1, z0, g));
                    let h = 1e-2;
                    let dz = (rho(z + h, g) - rho(z - h, g)) / 0.02;
                    let dg = (rho(z, g + h) - rho(z, g - h)) / 0.02;
                    let (ag, az) = adjoint(kind, act, rule, z, eval(kind, act, z).1, z0, g, 1.0);
                    assert!((f64::from(ag) - dg).abs() < 2e-3, "{kind:?} {rule:?} ∂g at {z}: {ag} vs {dg}");
                    assert!((f64::from(az) - dz).abs() < 5e-3, "{kind:?} {rule:?} ∂z at {z}: {az} vs {dz}");
                }
            }
        }
    }
}

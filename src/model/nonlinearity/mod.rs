//! The math of a nonlinearity node: its value, derivatives and backward rules, each function
//! defined once.
//!
//! Each [`Nonlinearity`] lives in its own file as one [`Function`]: φ, φ′ and φ″ generic over
//! the float type ([`Real`]: the same code runs in f32 and f64), its tensor form on candle
//! tensors, and whether it has kinks. A node is evaluated under the pass's [`Activation`]: the
//! exact function, or, for a function with kinks (ReLU, ReLU6, leaky ReLU, HardSigmoid,
//! HardSwish), its softplus(β) surrogate (Ghorbani et al. 2019 differentiate through the
//! surrogate; Dombrowski et al. 2019 anneal β). Smooth functions (Sigmoid, Tanh, SiLU, GELU)
//! have no surrogate: they run exactly under every activation, with their exact φ″, so
//! second-order attacks on them are exact. Writing sp(z) = softplus_β(z) and
//! σ(z) = sigmoid(βz) = sp′(z):
//!
//! | kind | real φ(z) | surrogate φ(z) |
//! |---|---|---|
//! | ReLU | max(z, 0) | sp(z) |
//! | ReLU6 | min(max(z, 0), 6) | sp(z) − sp(z − 6) |
//! | leaky ReLU(α) | max(z, αz) | αz + (1 − α)·sp(z) |
//! | HardSigmoid(a, b) | clamp(az + b, 0, 1) | a·(sp(z − z₀) − sp(z − z₁)), z₀ = −b/a, z₁ = (1 − b)/a |
//! | HardSwish | z·hardsigmoid(z) (a = 1/6, b = 1/2) | z·(surrogate hardsigmoid)(z) |
//! | Sigmoid, Tanh, SiLU, GELU, GELU (tanh) | the function | the same |
//!
//! and φ″ = β·σ(1 − σ) per softplus term (0 for the real piecewise-linear functions, almost
//! everywhere; HardSwish's real φ″ is 1/3 between its kinks). β is a sharpness in the units of
//! z for every function (HardSigmoid's kinks are softened over the same width as ReLU6's).
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
//!
//! **Guided backprop and deconvnet at a function other than ReLU.** Both rules are written
//! here for every nonlinearity: guided backprop keeps the function's own derivative and
//! zeroes negative upstream gradients (relu(g)·φ′(z)); deconvnet ignores the function and
//! passes relu(g). At ReLU they are Springenberg et al.'s and Zeiler and Fergus's rules. At a
//! sigmoid, tanh, SiLU or GELU they are a generalisation of ours: Captum's `GuidedBackprop`
//! and `Deconvolution` override only `nn.ReLU` modules and let every other activation
//! backpropagate its plain gradient, so on a network with SiLU or GELU (and no ReLU) Captum's
//! guided backprop equals its gradient. Ours instead applies the same relu(g) gating at every
//! nonlinearity, which is what the rule means when the activation is read as "the
//! nonlinearity of this layer"; on ReLU networks the two agree.
//!
//! Adding a function: one file with a [`Function`] impl (and its ONNX op, an `ONNX` table),
//! one variant of [`Nonlinearity`], one line in [`dispatch!`] and one in [`ONNX`]; the rules,
//! the executors, the second-order passes and the import take it from there.

mod gelu;
mod gelu_tanh;
mod hard_sigmoid;
mod hard_swish;
mod leaky_relu;
mod relu;
mod relu6;
mod sigmoid;
mod silu;
mod tanh;

use super::mapping::{OnnxNode, Step};
use candle_core::{DType, Tensor};

/// Reads a nonlinearity (and its parameters) from an ONNX node.
pub(crate) type Parse = fn(&dyn OnnxNode) -> Step<Nonlinearity>;

/// Every function file's ONNX ops, one line per file. SiLU has no ONNX op: the import fuses
/// x·Sigmoid(x) into it; GELU's tanh form is `Gelu` with `approximate = "tanh"`.
const ONNX: [&[(&str, Parse)]; 8] = [
    relu::ONNX,
    relu6::ONNX,
    leaky_relu::ONNX,
    sigmoid::ONNX,
    tanh::ONNX,
    gelu::ONNX,
    hard_sigmoid::ONNX,
    hard_swish::ONNX,
];

/// How to read the nonlinearity an ONNX op type is, if it is one.
pub(crate) fn onnx(op: &str) -> Option<Parse> {
    super::mapping::find(&ONNX, op)
}

/// The ONNX op types that are nonlinearities.
pub(crate) fn onnx_ops() -> impl Iterator<Item = &'static str> {
    super::mapping::names(&ONNX)
}

/// |z − z₀| at or below which DeepLIFT's multiplier falls back to the derivative.
pub const RESCALE_EPS: f32 = 1e-6;

/// A nonlinearity (its math is in the file of the same name; see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Nonlinearity {
    /// max(z, 0).
    Relu,
    /// min(max(z, 0), 6) (MobileNet).
    Relu6,
    /// z for z ≥ 0, αz below.
    LeakyRelu(f32),
    /// 1 / (1 + e^{−z}).
    Sigmoid,
    /// tanh(z).
    Tanh,
    /// SiLU (swish): z·sigmoid(z) (EfficientNet, RegNetY).
    Silu,
    /// GELU, the exact form z·Φ(z) = z·(1 + erf(z/√2))/2 (ConvNeXt).
    Gelu,
    /// GELU's tanh approximation z·(1 + tanh(√(2/π)·(z + 0.044715·z³)))/2.
    GeluTanh,
    /// clamp(alpha·z + beta, 0, 1); PyTorch's `Hardsigmoid` is alpha = 1/6, beta = 1/2 (ONNX's
    /// default is alpha = 0.2). alpha > 0.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// z·clamp(z/6 + 1/2, 0, 1) (MobileNetV3).
    HardSwish,
}

/// Runs `$body` with `$f` bound to the [`Function`] of `$kind`: the registry, one line each.
macro_rules! dispatch {
    ($kind:expr, $f:ident => $body:expr) => {
        match $kind {
            Nonlinearity::Relu => {
                let $f = relu::Relu;
                $body
            }
            Nonlinearity::Relu6 => {
                let $f = relu6::Relu6;
                $body
            }
            Nonlinearity::LeakyRelu(alpha) => {
                let $f = leaky_relu::LeakyRelu(alpha);
                $body
            }
            Nonlinearity::Sigmoid => {
                let $f = sigmoid::Sigmoid;
                $body
            }
            Nonlinearity::Tanh => {
                let $f = tanh::Tanh;
                $body
            }
            Nonlinearity::Silu => {
                let $f = silu::Silu;
                $body
            }
            Nonlinearity::Gelu => {
                let $f = gelu::Gelu;
                $body
            }
            Nonlinearity::GeluTanh => {
                let $f = gelu_tanh::GeluTanh;
                $body
            }
            Nonlinearity::HardSigmoid { alpha, beta } => {
                let $f = hard_sigmoid::HardSigmoid { alpha, beta };
                $body
            }
            Nonlinearity::HardSwish => {
                let $f = hard_swish::HardSwish;
                $body
            }
        }
    };
}

impl Nonlinearity {
    /// A short name (the graph's op kind).
    pub fn name(&self) -> &'static str {
        dispatch!(*self, f => f.name())
    }

    /// Whether the function has kinks, so that the softplus(β) surrogate replaces it.
    pub fn kinked(&self) -> bool {
        dispatch!(*self, f => f.kinked())
    }

    /// Whether φ never decreases: a max-pool over φ(z) then picks the window maximum of z,
    /// which lets the passes pool before activating (not so for SiLU, GELU, HardSwish).
    pub fn monotone(&self) -> bool {
        dispatch!(*self, f => f.monotone())
    }

    /// Whether φ″ is zero almost everywhere under `act`: the real piecewise-linear functions,
    /// whose second-order terms the passes skip.
    pub fn flat_second(&self, act: Activation) -> bool {
        matches!(act, Activation::Exact) && dispatch!(*self, f => f.piecewise_linear())
    }

    /// The parameters that must be finite (and the name of each), for graph validation;
    /// `Err` names one that is out of its range.
    pub(crate) fn check(&self) -> std::result::Result<(), (&'static str, f32)> {
        match *self {
            Nonlinearity::LeakyRelu(alpha) if !alpha.is_finite() => Err(("alpha", alpha)),
            Nonlinearity::HardSigmoid { alpha, .. } if !(alpha.is_finite() && alpha > 0.0) => {
                Err(("alpha", alpha))
            }
            Nonlinearity::HardSigmoid { beta, .. } if !beta.is_finite() => Err(("beta", beta)),
            _ => Ok(()),
        }
    }
}

/// The float types a [`Function`] is evaluated in (f32 for the passes, f64 for DeepLIFT's
/// multiplier and the tests).
pub trait Real: num_traits::Float {
    /// The value `x` in this type (rounded to nearest).
    fn of(x: f64) -> Self;
    /// The error function.
    fn erf(self) -> Self;
}

impl Real for f32 {
    fn of(x: f64) -> f32 {
        x as f32
    }
    fn erf(self) -> f32 {
        libm::erff(self)
    }
}

impl Real for f64 {
    fn of(x: f64) -> f64 {
        x
    }
    fn erf(self) -> f64 {
        libm::erf(self)
    }
}

/// φ, φ′, φ″ as tensors (φ″ only when asked for).
pub(crate) type Tensors = (Tensor, Tensor, Option<Tensor>);

/// One nonlinearity, defined once: its file's whole content.
pub(crate) trait Function {
    /// A short name (the graph's op kind).
    fn name(&self) -> &'static str;
    /// Whether the function has kinks (then [`Function::surrogate`] replaces it under
    /// softplus(β)).
    fn kinked(&self) -> bool;
    /// Whether φ′ is piecewise constant (φ″ = 0 almost everywhere).
    fn piecewise_linear(&self) -> bool {
        false
    }
    /// Whether φ never decreases.
    fn monotone(&self) -> bool {
        true
    }
    /// φ(z), φ′(z), φ″(z) of the function itself (φ″ zero at a kink).
    fn exact<F: Real>(&self, z: F) -> (F, F, F);
    /// φ, φ′, φ″ of the softplus(β) surrogate (smooth functions: themselves).
    fn surrogate<F: Real>(&self, z: F, _beta: F) -> (F, F, F) {
        self.exact(z)
    }
    /// [`Function::exact`] on a tensor (φ″ when `second`).
    fn exact_tensor(&self, z: &Tensor, second: bool) -> candle_core::Result<Tensors>;
    /// [`Function::surrogate`] on a tensor (smooth functions: themselves).
    fn surrogate_tensor(&self, z: &Tensor, _beta: f64, second: bool) -> candle_core::Result<Tensors> {
        self.exact_tensor(z, second)
    }
}

/// softplus_β(z), sigmoid(βz) and β·σ(1 − σ) from one e = exp(−β|z|): relu(z) + ln(1 + e)/β,
/// and 1/(1 + e) for z ≥ 0, e/(1 + e) below (stable at any z).
pub(crate) fn softplus<F: Real>(z: F, beta: F) -> (F, F, F) {
    let (zero, one) = (F::zero(), F::one());
    let e = (-beta * z.abs()).exp();
    let s = if z >= zero { one / (one + e) } else { e / (one + e) };
    (z.max(zero) + e.ln_1p() / beta, s, beta * s * (one - s))
}

/// [`softplus`] on a tensor: relu(z) + ln(1 + exp(−β|z|))/β, its derivative
/// (1 + tanh(βz/2))/2 and (when `second`) β·σ(1 − σ).
pub(crate) fn softplus_tensor(z: &Tensor, beta: f64, second: bool) -> candle_core::Result<Tensors> {
    let tail = z.abs()?.affine(-beta, 0.0)?.exp()?.affine(1.0, 1.0)?.log()?;
    let v = (z.relu()? + tail.affine(1.0 / beta, 0.0)?)?;
    let d = z.affine(beta / 2.0, 0.0)?.tanh()?.affine(0.5, 0.5)?;
    let s = if second { Some(d.mul(&d.affine(-1.0, 1.0)?)?.affine(beta, 0.0)?) } else { None };
    Ok((v, d, s))
}

/// z·f(z) from f's (value, derivative, second derivative) by the product rule:
/// (z·f, f + z·f′, 2f′ + z·f″) (SiLU from sigmoid, HardSwish from HardSigmoid).
pub(crate) fn times_z<F: Real>(z: F, (v, d, s): (F, F, F)) -> (F, F, F) {
    (z * v, v + z * d, d + d + z * s)
}

/// [`times_z`] on tensors.
pub(crate) fn times_z_tensor(z: &Tensor, (v, d, s): Tensors) -> candle_core::Result<Tensors> {
    let s = match s {
        Some(s) => Some(d.affine(2.0, 0.0)?.add(&z.mul(&s)?)?),
        None => None,
    };
    Ok((z.mul(&v)?, v.add(&z.mul(&d)?)?, s))
}

/// Zeros like `z` when `second` (φ″ of a piecewise-linear function).
pub(crate) fn zeros_if(z: &Tensor, second: bool) -> candle_core::Result<Option<Tensor>> {
    second.then(|| z.zeros_like()).transpose()
}

/// Whether a pass runs the real nonlinearities or their softplus(β) surrogates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// The exact model: every nonlinearity as the network defines it (ReLU, ReLU6, leaky ReLU
    /// with their kinks), as predictions and maps are computed. (Named `Relu` before: the name
    /// said one function where it meant "no surrogate".)
    Exact,
    /// The smooth surrogate: every nonlinearity with kinks built from
    /// softplus_β(z) = ln(1 + e^{βz})/β; smooth ones (sigmoid, tanh, SiLU, GELU) unchanged.
    Softplus {
        /// Sharpness: larger β is closer to the real function.
        beta: f64,
    },
    /// The exact function in the forward pass, and in the backward pass its softplus(β)
    /// surrogate's derivatives in place of its own (for ReLU: φ′(z) = sigmoid(βz)): zennit's
    /// `BetaSmooth` (its `ReLUBetaSmooth` hook). Smooth functions unchanged. The values, and
    /// so the prediction, are the real network's.
    SmoothDerivative {
        /// Sharpness of the surrogate whose derivative is taken.
        beta: f64,
    },
}

impl Activation {
    /// softplus(β) (or ReLU for the real model) of `z`, on a tensor. Stable form:
    /// relu(z) + ln(1 + exp(−β|z|))/β.
    pub fn apply(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        Ok(eval_tensor(Nonlinearity::Relu, *self, z, false)?.0)
    }

    /// The derivative of [`Activation::apply`]: step(z > 0), or sigmoid(βz) = (1 + tanh(βz/2))/2.
    pub fn derivative(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        Ok(eval_tensor(Nonlinearity::Relu, *self, z, false)?.1)
    }

    /// [`Activation::apply`] on one value.
    pub fn apply_scalar(&self, z: f32) -> f32 {
        self.apply_and_derivative(z).0
    }

    /// [`Activation::apply`] and [`Activation::derivative`] on one value.
    pub fn apply_and_derivative(&self, z: f32) -> (f32, f32) {
        let (v, d, _) = eval(Nonlinearity::Relu, *self, z);
        (v, d)
    }

    /// [`Activation::derivative`] on one value.
    pub fn derivative_scalar(&self, z: f32) -> f32 {
        self.apply_and_derivative(z).1
    }

    /// The second derivative from the first, s = act′(z): 0 for ReLU, β·s·(1 − s) for softplus.
    pub fn second_derivative_from_first(&self, s: f32) -> f32 {
        match *self {
            Activation::Exact => 0.0,
            Activation::Softplus { beta } | Activation::SmoothDerivative { beta } => {
                beta as f32 * s * (1.0 - s)
            }
        }
    }
}

/// What the backward pass does at every nonlinearity (max-pooling, convolutions and linear
/// layers are unchanged by every rule but LRP's, whose composite sets their rules).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Rule {
    /// The true derivative: the gradient.
    #[default]
    Gradient,
    /// Guided backpropagation (Springenberg et al. 2015): relu(g)·φ′(z) (at a function other
    /// than ReLU, see the module docs).
    Guided,
    /// Zeiler and Fergus's deconvnet: relu(g).
    Deconvnet,
    /// DeepLIFT's rescale rule (Shrikumar et al. 2017) against a baseline pass.
    Rescale,
    /// Layer-wise relevance propagation under a composite ([`crate::model::lrp`]): relevance
    /// passes every nonlinearity unchanged (zennit's `Pass`); the layers get the composite's
    /// rules, and the pass is seeded with the target logits.
    Lrp(crate::model::lrp::Composite),
}

impl Rule {
    /// Whether the pass is LRP.
    pub fn is_lrp(&self) -> bool {
        matches!(self, Rule::Lrp(_))
    }
}

/// φ(z), φ′(z) and φ″(z) of `kind` under `act`, in any float type. Always inlined: with
/// `kind` a constant the dispatch folds away, and a kernel's loop over it vectorises.
#[inline(always)]
pub fn eval_at<F: Real>(kind: Nonlinearity, act: Activation, z: F) -> (F, F, F) {
    match act {
        Activation::Exact => dispatch!(kind, f => f.exact(z)),
        Activation::Softplus { beta } => dispatch!(kind, f => {
            if f.kinked() { f.surrogate(z, F::of(beta)) } else { f.exact(z) }
        }),
        Activation::SmoothDerivative { beta } => dispatch!(kind, f => {
            if f.kinked() {
                let (v, (_, d, s)) = (f.exact(z).0, f.surrogate(z, F::of(beta)));
                (v, d, s)
            } else {
                f.exact(z)
            }
        }),
    }
}

/// φ(z), φ′(z) and φ″(z) of `kind` under `act` on one value.
pub fn eval(kind: Nonlinearity, act: Activation, z: f32) -> (f32, f32, f32) {
    eval_at(kind, act, z)
}

/// φ(z), φ′(z) and φ″(z) of `kind` under `act` as tensors (φ″ only when `second`).
pub(crate) fn eval_tensor(
    kind: Nonlinearity,
    act: Activation,
    z: &Tensor,
    second: bool,
) -> candle_core::Result<Tensors> {
    match act {
        Activation::Exact => dispatch!(kind, f => f.exact_tensor(z, second)),
        Activation::Softplus { beta } => dispatch!(kind, f => {
            if f.kinked() { f.surrogate_tensor(z, beta, second) } else { f.exact_tensor(z, second) }
        }),
        Activation::SmoothDerivative { beta } => dispatch!(kind, f => {
            if f.kinked() {
                let (v, (_, d, s)) = (f.exact_tensor(z, false)?.0, f.surrogate_tensor(z, beta, second)?);
                Ok((v, d, s))
            } else {
                f.exact_tensor(z, second)
            }
        }),
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
    let (v, d, _) = eval_at(kind, act, f64::from(z));
    let m = (v - eval_at(kind, act, f64::from(z0)).0) / dz;
    (m as f32, ((d - m) / dz) as f32)
}

/// [`rescale`] on tensors: m and (with `second`) m′, computed in f64 and returned in `z`'s
/// dtype.
pub(crate) fn rescale_tensor(
    kind: Nonlinearity,
    act: Activation,
    z: &Tensor,
    z0: &Tensor,
    second: bool,
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    let dtype = z.dtype();
    let (z, z0) = (&z.to_dtype(DType::F64)?, &z0.to_dtype(DType::F64)?);
    let (v, d, s) = eval_tensor(kind, act, z, second)?;
    let (v0, _, _) = eval_tensor(kind, act, z0, false)?;
    let dz = z.sub(z0)?;
    let far = dz.abs()?.gt(f64::from(RESCALE_EPS))?;
    let safe = far.where_cond(&dz, &dz.ones_like()?)?;
    let m = far.where_cond(&v.sub(&v0)?.div(&safe)?, &d)?;
    let dm = match s {
        Some(s) => Some(far.where_cond(&d.sub(&m)?.div(&safe)?, &s.affine(0.5, 0.0)?)?.to_dtype(dtype)?),
        None => None,
    };
    Ok((m.to_dtype(dtype)?, dm))
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

/// ρ(g, z): the gradient with respect to z under `rule`, from the upstream gradient `g`,
/// φ′(z) = `d` (precomputed by the forward pass) and, for the rescale rule, z₀.
pub fn backward(kind: Nonlinearity, act: Activation, rule: Rule, z: f32, d: f32, z0: f32, g: f32) -> f32 {
    match rule {
        Rule::Gradient => g * d,
        Rule::Guided => g.max(0.0) * d,
        Rule::Deconvnet => g.max(0.0),
        Rule::Rescale => g * rescale(kind, act, z, z0).0,
        Rule::Lrp(_) => g,
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
        Rule::Lrp(_) => (lam, 0.0),
    }
}

#[cfg(test)]
pub(crate) mod tests;

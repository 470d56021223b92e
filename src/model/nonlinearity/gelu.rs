//! GELU, exact form z·Φ(z) with Φ the standard normal CDF, (1 + erf(z/√2))/2 (Hendrycks and
//! Gimpel 2016): ConvNeXt's activation, PyTorch's `nn.GELU()` and ONNX's `Gelu`. Smooth, not
//! monotone. φ′ = Φ + z·p, φ″ = p·(2 − z²), p(z) = e^{−z²/2}/√(2π) the normal density.

use super::{Function, Real, Tensors};
use super::{Nonlinearity, Parse};
use crate::model::mapping::{OnnxNode, Step};
use candle_core::Tensor;

/// The ONNX op this function (and its tanh approximation, [`super::gelu_tanh`]) is: `Gelu`
/// from opset 20; before, PyTorch writes the formulas out, and the import fuses them into
/// this node first.
pub(super) const ONNX: &[(&str, Parse)] = &[("Gelu", onnx)];

/// `approximate` = `none` (the exact form) or `tanh`.
fn onnx(n: &dyn OnnxNode) -> Step<Nonlinearity> {
    match n.string("approximate", "none").as_str() {
        "none" => Ok(Nonlinearity::Gelu),
        "tanh" => Ok(Nonlinearity::GeluTanh),
        other => Err(format!("approximate = `{other}`: `none` and `tanh` are supported")),
    }
}
use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// z·Φ(z).
pub(crate) struct Gelu;

impl Function for Gelu {
    fn name(&self) -> &'static str {
        "gelu"
    }
    fn kinked(&self) -> bool {
        false
    }
    fn monotone(&self) -> bool {
        false
    }
    fn exact<F: Real>(&self, z: F) -> (F, F, F) {
        let (half, two) = (F::of(0.5), F::of(2.0));
        let cdf = half * (F::one() + (z * F::of(FRAC_1_SQRT_2)).erf());
        let p = (-half * z * z).exp() * F::of(1.0 / (2.0 * PI).sqrt());
        (z * cdf, cdf + z * p, p * (two - z * z))
    }
    fn exact_tensor(&self, z: &Tensor, second: bool) -> candle_core::Result<Tensors> {
        let cdf = z.affine(FRAC_1_SQRT_2, 0.0)?.erf()?.affine(0.5, 0.5)?;
        let z2 = z.sqr()?;
        let p = z2.affine(-0.5, 0.0)?.exp()?.affine(1.0 / (2.0 * PI).sqrt(), 0.0)?;
        let dd = if second { Some(p.mul(&z2.affine(-1.0, 2.0)?)?) } else { None };
        Ok((z.mul(&cdf)?, cdf.add(&z.mul(&p)?)?, dd))
    }
}

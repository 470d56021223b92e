//! ReLU6, min(max(z, 0), 6) (MobileNet; Sandler et al. 2018); surrogate sp(z) − sp(z − 6).

use super::{softplus, softplus_tensor, zeros_if, Function, Real, Tensors};
use super::{Nonlinearity, Parse};
use crate::model::mapping::{OnnxNode, Step};
use candle_core::Tensor;

/// The ONNX op this function (and ReLU) is written as.
pub(super) const ONNX: &[(&str, Parse)] = &[("Clip", clip)];

/// Clip(0, 6) is ReLU6 and Clip(0, ∞) ReLU; the bounds are attributes before opset 11 and
/// optional constant inputs since.
fn clip(n: &dyn OnnxNode) -> Step<Nonlinearity> {
    let bound = |i: usize, name: &str, default: f32| -> Step<f32> {
        if let Some(c) = n.const_in(i)? {
            return c.f32s().first().copied().ok_or(format!("empty `{name}` input"));
        }
        Ok(n.float(name, default))
    };
    let (lo, hi) = (bound(1, "min", f32::NEG_INFINITY)?, bound(2, "max", f32::INFINITY)?);
    match (lo, hi) {
        (0.0, 6.0) => Ok(Nonlinearity::Relu6),
        (0.0, h) if h >= f32::MAX => Ok(Nonlinearity::Relu),
        _ => Err(format!("Clip({lo}, {hi}): only Clip(0, 6) (ReLU6) and Clip(0, ∞) (ReLU) are supported")),
    }
}

/// min(max(z, 0), 6).
pub(crate) struct Relu6;

impl Function for Relu6 {
    fn name(&self) -> &'static str {
        "relu6"
    }
    fn kinked(&self) -> bool {
        true
    }
    fn piecewise_linear(&self) -> bool {
        true
    }
    fn exact<F: Real>(&self, z: F) -> (F, F, F) {
        let six = F::of(6.0);
        let inside = if z > F::zero() && z < six { F::one() } else { F::zero() };
        (z.clamp(F::zero(), six), inside, F::zero())
    }
    fn surrogate<F: Real>(&self, z: F, beta: F) -> (F, F, F) {
        let ((v1, d1, s1), (v2, d2, s2)) = (softplus(z, beta), softplus(z - F::of(6.0), beta));
        (v1 - v2, d1 - d2, s1 - s2)
    }
    fn exact_tensor(&self, z: &Tensor, second: bool) -> candle_core::Result<Tensors> {
        let d = z.gt(0.0)?.mul(&z.lt(6.0)?)?.to_dtype(z.dtype())?;
        Ok((z.clamp(0.0, 6.0)?, d, zeros_if(z, second)?))
    }
    fn surrogate_tensor(&self, z: &Tensor, beta: f64, second: bool) -> candle_core::Result<Tensors> {
        let (v1, d1, s1) = softplus_tensor(z, beta, second)?;
        let (v2, d2, s2) = softplus_tensor(&z.affine(1.0, -6.0)?, beta, second)?;
        let s = match (s1, s2) {
            (Some(a), Some(b)) => Some(a.sub(&b)?),
            _ => None,
        };
        Ok((v1.sub(&v2)?, d1.sub(&d2)?, s))
    }
}

//! HardSigmoid, clamp(a·z + b, 0, 1): PyTorch's `nn.Hardsigmoid` (a = 1/6, b = 1/2;
//! MobileNetV3's squeeze-and-excitation gate) and ONNX's `HardSigmoid` (default a = 0.2,
//! b = 0.5). Kinks at z₀ = −b/a and z₁ = (1 − b)/a, so under softplus(β) it is
//! a·(sp(z − z₀) − sp(z − z₁)): ReLU6's surrogate scaled, with β a sharpness in z as for
//! every function.

use super::{softplus, softplus_tensor, zeros_if, Function, Real, Tensors};
use super::{Nonlinearity, Parse};
use crate::model::mapping::{OnnxNode, Step};
use candle_core::Tensor;

/// The ONNX op this function is.
pub(super) const ONNX: &[(&str, Parse)] = &[("HardSigmoid", onnx)];

/// HardSigmoid(alpha, beta) (ONNX's defaults 0.2 and 0.5), for a finite alpha > 0.
fn onnx(n: &dyn OnnxNode) -> Step<Nonlinearity> {
    let (alpha, beta) = (n.float("alpha", 0.2), n.float("beta", 0.5));
    if !(alpha > 0.0 && alpha.is_finite() && beta.is_finite()) {
        return Err(format!("alpha = {alpha}, beta = {beta}: a finite alpha > 0 is supported"));
    }
    Ok(Nonlinearity::HardSigmoid { alpha, beta })
}

/// clamp(alpha·z + beta, 0, 1), alpha > 0.
pub(crate) struct HardSigmoid {
    /// Slope a.
    pub alpha: f32,
    /// Offset b.
    pub beta: f32,
}

impl HardSigmoid {
    /// PyTorch's `nn.Hardsigmoid`: clamp(z/6 + 1/2, 0, 1).
    pub(crate) const TORCH: HardSigmoid = HardSigmoid { alpha: 1.0 / 6.0, beta: 0.5 };

    /// The kinks (z₀, z₁), where a·z + b is 0 and 1.
    fn kinks(&self) -> (f64, f64) {
        let (a, b) = (f64::from(self.alpha), f64::from(self.beta));
        (-b / a, (1.0 - b) / a)
    }
}

impl Function for HardSigmoid {
    fn name(&self) -> &'static str {
        "hard_sigmoid"
    }
    fn kinked(&self) -> bool {
        true
    }
    fn piecewise_linear(&self) -> bool {
        true
    }
    fn exact<F: Real>(&self, z: F) -> (F, F, F) {
        let (a, zero, one) = (F::of(f64::from(self.alpha)), F::zero(), F::one());
        let u = a * z + F::of(f64::from(self.beta));
        let d = if u > zero && u < one { a } else { zero };
        (u.clamp(zero, one), d, zero)
    }
    fn surrogate<F: Real>(&self, z: F, beta: F) -> (F, F, F) {
        let (a, (z0, z1)) = (F::of(f64::from(self.alpha)), self.kinks());
        let ((v0, d0, s0), (v1, d1, s1)) = (softplus(z - F::of(z0), beta), softplus(z - F::of(z1), beta));
        (a * (v0 - v1), a * (d0 - d1), a * (s0 - s1))
    }
    fn exact_tensor(&self, z: &Tensor, second: bool) -> candle_core::Result<Tensors> {
        let a = f64::from(self.alpha);
        let u = z.affine(a, f64::from(self.beta))?;
        let d = u.gt(0.0)?.mul(&u.lt(1.0)?)?.to_dtype(z.dtype())?.affine(a, 0.0)?;
        Ok((u.clamp(0.0, 1.0)?, d, zeros_if(z, second)?))
    }
    fn surrogate_tensor(&self, z: &Tensor, beta: f64, second: bool) -> candle_core::Result<Tensors> {
        let (a, (z0, z1)) = (f64::from(self.alpha), self.kinks());
        let (v0, d0, s0) = softplus_tensor(&z.affine(1.0, -z0)?, beta, second)?;
        let (v1, d1, s1) = softplus_tensor(&z.affine(1.0, -z1)?, beta, second)?;
        let s = match (s0, s1) {
            (Some(p), Some(q)) => Some(p.sub(&q)?.affine(a, 0.0)?),
            _ => None,
        };
        Ok((v0.sub(&v1)?.affine(a, 0.0)?, d0.sub(&d1)?.affine(a, 0.0)?, s))
    }
}

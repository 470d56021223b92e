//! ReLU6, min(max(z, 0), 6) (MobileNet; Sandler et al. 2018); surrogate sp(z) − sp(z − 6).

use super::{softplus, softplus_tensor, zeros_if, Function, Real, Tensors};
use candle_core::Tensor;

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

//! Leaky ReLU, max(z, αz) (Maas et al. 2013); surrogate αz + (1 − α)·sp(z).

use super::{softplus, softplus_tensor, zeros_if, Function, Real, Tensors};
use super::{Nonlinearity, Parse};
use candle_core::Tensor;

/// The ONNX op this function is (α from its attribute, default 0.01).
pub(super) const ONNX: &[(&str, Parse)] =
    &[("LeakyRelu", |n| Ok(Nonlinearity::LeakyRelu(n.float("alpha", 0.01))))];

/// z for z > 0, αz below (α the field).
pub(crate) struct LeakyRelu(pub f32);

impl Function for LeakyRelu {
    fn name(&self) -> &'static str {
        "leaky_relu"
    }
    fn kinked(&self) -> bool {
        true
    }
    fn piecewise_linear(&self) -> bool {
        true
    }
    fn monotone(&self) -> bool {
        self.0 >= 0.0
    }
    fn exact<F: Real>(&self, z: F) -> (F, F, F) {
        let a = F::of(f64::from(self.0));
        if z > F::zero() {
            (z, F::one(), F::zero())
        } else {
            (a * z, a, F::zero())
        }
    }
    fn surrogate<F: Real>(&self, z: F, beta: F) -> (F, F, F) {
        let (a, one) = (F::of(f64::from(self.0)), F::one());
        let (v, d, s) = softplus(z, beta);
        (a * z + (one - a) * v, a + (one - a) * d, (one - a) * s)
    }
    fn exact_tensor(&self, z: &Tensor, second: bool) -> candle_core::Result<Tensors> {
        let a = f64::from(self.0);
        let d = z.gt(0.0)?.to_dtype(z.dtype())?.affine(1.0 - a, a)?;
        Ok((z.mul(&d)?, d, zeros_if(z, second)?))
    }
    fn surrogate_tensor(&self, z: &Tensor, beta: f64, second: bool) -> candle_core::Result<Tensors> {
        let a = f64::from(self.0);
        let (v, d, s) = softplus_tensor(z, beta, second)?;
        let s = s.map(|s| s.affine(1.0 - a, 0.0)).transpose()?;
        Ok((z.affine(a, 0.0)?.add(&v.affine(1.0 - a, 0.0)?)?, d.affine(1.0 - a, a)?, s))
    }
}

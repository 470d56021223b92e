//! ReLU, max(z, 0) (Nair and Hinton 2010); its surrogate is softplus_β itself.
//!
//! The CPU kernels run the common cases (exact, softplus) as tuned sweeps
//! (`kernels::act`), tested against this definition.

use super::{softplus, softplus_tensor, zeros_if, Function, Real, Tensors};
use super::{Nonlinearity, Parse};
use candle_core::Tensor;

/// The ONNX op this function is.
pub(super) const ONNX: &[(&str, Parse)] = &[("Relu", |_| Ok(Nonlinearity::Relu))];

/// max(z, 0).
pub(crate) struct Relu;

impl Function for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }
    fn kinked(&self) -> bool {
        true
    }
    fn piecewise_linear(&self) -> bool {
        true
    }
    fn exact<F: Real>(&self, z: F) -> (F, F, F) {
        let step = if z > F::zero() { F::one() } else { F::zero() };
        (z.max(F::zero()), step, F::zero())
    }
    fn surrogate<F: Real>(&self, z: F, beta: F) -> (F, F, F) {
        softplus(z, beta)
    }
    fn exact_tensor(&self, z: &Tensor, second: bool) -> candle_core::Result<Tensors> {
        Ok((z.relu()?, z.gt(0.0)?.to_dtype(z.dtype())?, zeros_if(z, second)?))
    }
    fn surrogate_tensor(&self, z: &Tensor, beta: f64, second: bool) -> candle_core::Result<Tensors> {
        softplus_tensor(z, beta, second)
    }
}

//! The hyperbolic tangent. Smooth: no surrogate. φ′ = 1 − t², φ″ = −2t·φ′ (t = tanh z).

use super::{Function, Real, Tensors};
use super::{Nonlinearity, Parse};
use candle_core::Tensor;

/// The ONNX op this function is.
pub(super) const ONNX: &[(&str, Parse)] = &[("Tanh", |_| Ok(Nonlinearity::Tanh))];

/// tanh(z).
pub(crate) struct Tanh;

impl Function for Tanh {
    fn name(&self) -> &'static str {
        "tanh"
    }
    fn kinked(&self) -> bool {
        false
    }
    fn exact<F: Real>(&self, z: F) -> (F, F, F) {
        let t = z.tanh();
        let d = F::one() - t * t;
        (t, d, -(t + t) * d)
    }
    fn exact_tensor(&self, z: &Tensor, second: bool) -> candle_core::Result<Tensors> {
        let t = z.tanh()?;
        let d = t.sqr()?.affine(-1.0, 1.0)?;
        let dd = if second { Some(t.affine(-2.0, 0.0)?.mul(&d)?) } else { None };
        Ok((t, d, dd))
    }
}

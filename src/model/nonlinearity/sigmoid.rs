//! The logistic sigmoid 1/(1 + e^{−z}) (squeeze-and-excitation gates; SiLU's factor).
//! Smooth: no surrogate. φ′ = σ(1 − σ), φ″ = φ′·(1 − 2σ).

use super::{Function, Real, Tensors};
use super::{Nonlinearity, Parse};
use candle_core::Tensor;

/// The ONNX op this function is (a Sigmoid multiplied by its own input is fused into SiLU
/// before the import maps it).
pub(super) const ONNX: &[(&str, Parse)] = &[("Sigmoid", |_| Ok(Nonlinearity::Sigmoid))];

/// 1/(1 + e^{−z}).
pub(crate) struct Sigmoid;

impl Function for Sigmoid {
    fn name(&self) -> &'static str {
        "sigmoid"
    }
    fn kinked(&self) -> bool {
        false
    }
    fn exact<F: Real>(&self, z: F) -> (F, F, F) {
        let one = F::one();
        // exp of −|z| only: no overflow at either end.
        let e = (-z.abs()).exp();
        let s = if z >= F::zero() { one / (one + e) } else { e / (one + e) };
        let d = s * (one - s);
        (s, d, d * (one - s - s))
    }
    fn exact_tensor(&self, z: &Tensor, second: bool) -> candle_core::Result<Tensors> {
        // σ(z) = (1 + tanh(z/2))/2, stable at any z.
        let s = z.affine(0.5, 0.0)?.tanh()?.affine(0.5, 0.5)?;
        let d = s.mul(&s.affine(-1.0, 1.0)?)?;
        let dd = if second { Some(d.mul(&s.affine(-2.0, 1.0)?)?) } else { None };
        Ok((s, d, dd))
    }
}

//! GELU's tanh approximation z·(1 + tanh u)/2, u = √(2/π)·(z + 0.044715·z³) (Hendrycks and
//! Gimpel 2016; PyTorch's `nn.GELU(approximate="tanh")`, ONNX `Gelu` with
//! `approximate="tanh"`). Smooth, not monotone. With t = tanh u, u′ = √(2/π)·(1 + 3·0.044715·z²)
//! and u″ = 6·√(2/π)·0.044715·z: φ′ = (1 + t)/2 + z·(1 − t²)·u′/2 and
//! φ″ = (1 − t²)·(u′ + z·(u″ − 2t·u′²)/2).

use super::{Function, Real, Tensors};
use candle_core::Tensor;
use std::f64::consts::{FRAC_2_SQRT_PI, SQRT_2};

/// The cubic term's coefficient.
const K: f64 = 0.044715;
/// √(2/π).
const C: f64 = FRAC_2_SQRT_PI / SQRT_2;

/// z·(1 + tanh(√(2/π)·(z + 0.044715·z³)))/2.
pub(crate) struct GeluTanh;

impl Function for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu_tanh"
    }
    fn kinked(&self) -> bool {
        false
    }
    fn monotone(&self) -> bool {
        false
    }
    fn exact<F: Real>(&self, z: F) -> (F, F, F) {
        let (half, one, c, k) = (F::of(0.5), F::one(), F::of(C), F::of(K));
        let z2 = z * z;
        let t = (c * (z + k * z2 * z)).tanh();
        let (du, ddu) = (c * (one + F::of(3.0) * k * z2), F::of(6.0) * c * k * z);
        let sech2 = one - t * t;
        let v = half * z * (one + t);
        let d = half * (one + t) + half * z * sech2 * du;
        (v, d, sech2 * (du + half * z * (ddu - (t + t) * du * du)))
    }
    fn exact_tensor(&self, z: &Tensor, second: bool) -> candle_core::Result<Tensors> {
        let z2 = z.sqr()?;
        let t = z2.affine(K, 1.0)?.mul(z)?.affine(C, 0.0)?.tanh()?;
        let du = z2.affine(3.0 * C * K, C)?;
        let sech2 = t.sqr()?.affine(-1.0, 1.0)?;
        let half_up = t.affine(0.5, 0.5)?;
        let v = z.mul(&half_up)?;
        let d = half_up.add(&z.mul(&sech2)?.mul(&du)?.affine(0.5, 0.0)?)?;
        let dd = if second {
            let ddu = z.affine(6.0 * C * K, 0.0)?;
            let inner = ddu.sub(&t.mul(&du.sqr()?)?.affine(2.0, 0.0)?)?;
            Some(sech2.mul(&du.add(&z.mul(&inner)?.affine(0.5, 0.0)?)?)?)
        } else {
            None
        };
        Ok((v, d, dd))
    }
}

//! The elementwise arithmetic of the LRP rules, defined once per value ([`Pointwise::eval`],
//! which the CPU executor sweeps) with its tensor form ([`Pointwise::tensor`], the candle
//! path's, differentiable by autograd; tested equal).

use super::rule::Mask;
use crate::error::Result;
use candle_core::Tensor;

/// One elementwise operation of two same-shaped buffers a, b (b unread by the unary ones).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Pointwise {
    /// max(a, 0).
    Pos,
    /// min(a, 0).
    Neg,
    /// a·b.
    Mul,
    /// a + c·b.
    AddScaled(f32),
    /// a / stab(b): stab(b) = b + ε·(sign b + [b = 0]), zennit's stabiliser.
    Quotient(f32),
    /// a where b passes the mask, else 0.
    Gate(Mask),
}

/// zennit's stabiliser z + ε·(sign z + [z = 0]): away from zero by ε, with zero's sign +.
#[inline(always)]
pub(crate) fn stabilize(z: f32, eps: f32) -> f32 {
    if z >= 0.0 {
        z + eps
    } else {
        z - eps
    }
}

impl Pointwise {
    /// Whether b is read.
    #[cfg(test)]
    pub fn binary(self) -> bool {
        !matches!(self, Pointwise::Pos | Pointwise::Neg)
    }

    /// The operation on one pair of values.
    #[inline(always)]
    pub fn eval(self, a: f32, b: f32) -> f32 {
        match self {
            Pointwise::Pos => a.max(0.0),
            Pointwise::Neg => a.min(0.0),
            Pointwise::Mul => a * b,
            Pointwise::AddScaled(c) => a + c * b,
            Pointwise::Quotient(eps) => a / stabilize(b, eps),
            Pointwise::Gate(Mask::Positive) => {
                if b > 0.0 {
                    a
                } else {
                    0.0
                }
            }
            Pointwise::Gate(Mask::Negative) => {
                if b < 0.0 {
                    a
                } else {
                    0.0
                }
            }
            Pointwise::Gate(Mask::NonNegative) => {
                if b >= 0.0 {
                    a
                } else {
                    0.0
                }
            }
        }
    }

    /// The operation on tensors (b required when [`Pointwise::binary`]).
    pub fn tensor(self, a: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let b =
            || b.ok_or_else(|| crate::Error::Invalid("internal: a binary LRP operation without b".into()));
        let dt = a.dtype();
        Ok(match self {
            Pointwise::Pos => a.relu()?,
            Pointwise::Neg => a.sub(&a.relu()?)?,
            Pointwise::Mul => a.mul(b()?)?,
            Pointwise::AddScaled(c) => a.add(&b()?.affine(f64::from(c), 0.0)?)?,
            Pointwise::Quotient(eps) => {
                let b = b()?;
                // sign b + [b = 0] = 2·[b ≥ 0] − 1, a constant in b (the stabiliser's slope is 1).
                let sign = b.ge(0.0)?.to_dtype(dt)?.affine(2.0, -1.0)?;
                a.div(&b.add(&sign.affine(f64::from(eps), 0.0)?)?)?
            }
            Pointwise::Gate(mask) => {
                let b = b()?;
                let keep = match mask {
                    Mask::Positive => b.gt(0.0)?,
                    Mask::Negative => b.lt(0.0)?,
                    Mask::NonNegative => b.ge(0.0)?,
                };
                a.mul(&keep.to_dtype(dt)?)?
            }
        })
    }

    /// The operation on plain slices (the CPU executor's).
    pub fn slices(self, a: &[f32], b: Option<&[f32]>) -> Vec<f32> {
        match b {
            Some(b) => a.iter().zip(b).map(|(&a, &b)| self.eval(a, b)).collect(),
            None => a.iter().map(|&a| self.eval(a, 0.0)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_tensor_forms_equal_the_scalar_definitions() {
        let a: Vec<f32> = vec![-2.0, -0.5, 0.0, 0.0, 1e-7, 0.3, 4.0, -1e-7];
        let b: Vec<f32> = vec![0.5, -3.0, 0.0, -0.0, 2.0, -1e-8, 0.0, 7.0];
        let (ta, tb) = (
            Tensor::new(a.as_slice(), &Device::Cpu).unwrap(),
            Tensor::new(b.as_slice(), &Device::Cpu).unwrap(),
        );
        for op in [
            Pointwise::Pos,
            Pointwise::Neg,
            Pointwise::Mul,
            Pointwise::AddScaled(-1.5),
            Pointwise::Quotient(1e-6),
            Pointwise::Quotient(0.25),
            Pointwise::Gate(Mask::Positive),
            Pointwise::Gate(Mask::Negative),
            Pointwise::Gate(Mask::NonNegative),
        ] {
            let want = op.slices(&a, op.binary().then_some(b.as_slice()));
            let got = op.tensor(&ta, Some(&tb)).unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got, want, "{op:?}");
        }
        // The stabiliser: zero goes to +ε, and −0 too (sign + [z = 0] is 1 at both).
        assert_eq!(stabilize(0.0, 0.5), 0.5);
        assert_eq!(stabilize(-0.0, 0.5), 0.5);
        assert_eq!(stabilize(-1.0, 0.5), -1.5);
    }
}

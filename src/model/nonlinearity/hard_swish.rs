//! HardSwish, z·clamp(z/6 + 1/2, 0, 1) (Howard et al. 2019, MobileNetV3; PyTorch's
//! `nn.Hardswish`, ONNX's `HardSwish`): z times PyTorch's [`super::hard_sigmoid`] by the
//! product rule, under softplus(β) z times that function's surrogate. Kinks at ±3 and not
//! monotone; its real φ″ is 1/3 between the kinks, so even the exact model has second-order
//! terms.

use super::hard_sigmoid::HardSigmoid;
use super::{times_z, times_z_tensor, Function, Real, Tensors};
use super::{Nonlinearity, Parse};
use candle_core::Tensor;

/// The ONNX op this function is.
pub(super) const ONNX: &[(&str, Parse)] = &[("HardSwish", |_| Ok(Nonlinearity::HardSwish))];

/// z·hardsigmoid(z).
pub(crate) struct HardSwish;

impl Function for HardSwish {
    fn name(&self) -> &'static str {
        "hard_swish"
    }
    fn kinked(&self) -> bool {
        true
    }
    fn monotone(&self) -> bool {
        false
    }
    fn exact<F: Real>(&self, z: F) -> (F, F, F) {
        times_z(z, HardSigmoid::TORCH.exact(z))
    }
    fn surrogate<F: Real>(&self, z: F, beta: F) -> (F, F, F) {
        times_z(z, HardSigmoid::TORCH.surrogate(z, beta))
    }
    fn exact_tensor(&self, z: &Tensor, second: bool) -> candle_core::Result<Tensors> {
        times_z_tensor(z, HardSigmoid::TORCH.exact_tensor(z, second)?)
    }
    fn surrogate_tensor(&self, z: &Tensor, beta: f64, second: bool) -> candle_core::Result<Tensors> {
        times_z_tensor(z, HardSigmoid::TORCH.surrogate_tensor(z, beta, second)?)
    }
}

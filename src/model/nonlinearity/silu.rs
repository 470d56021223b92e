//! SiLU (swish), z·sigmoid(z) (Elfwing et al. 2018; Ramachandran et al. 2017): EfficientNet's
//! and RegNetY's activation. Smooth, not monotone (minimum −0.278 at z ≈ −1.278). Written as
//! z times [`super::sigmoid`] by the product rule.

use super::sigmoid::Sigmoid;
use super::{times_z, times_z_tensor, Function, Real, Tensors};
use candle_core::Tensor;

/// z·sigmoid(z).
pub(crate) struct Silu;

impl Function for Silu {
    fn name(&self) -> &'static str {
        "silu"
    }
    fn kinked(&self) -> bool {
        false
    }
    fn monotone(&self) -> bool {
        false
    }
    fn exact<F: Real>(&self, z: F) -> (F, F, F) {
        times_z(z, Sigmoid.exact(z))
    }
    fn exact_tensor(&self, z: &Tensor, second: bool) -> candle_core::Result<Tensors> {
        times_z_tensor(z, Sigmoid.exact_tensor(z, second)?)
    }
}

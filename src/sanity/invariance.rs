//! Input invariance (Kindermans et al., "The (un)reliability of saliency methods", 2017).
//!
//! Two models that compute the same function up to a constant shift of the input, f₂(x + m) =
//! f₁(x), should get the same explanation of corresponding inputs: a method whose map changes
//! reacts to the shift, not to the model. Kindermans et al. compensate the shift in the first
//! layer's bias (b₂ = b₁ − W·m); here the compensation is an affine node x ↦ x − m in front
//! of the model (before its own input normalisation), which is the same function without the
//! bias trick's border error under zero padding (their construction is exact only where the
//! padding would be filled with the shifted value) and works whether or not the first layer
//! has a bias. The gradient is then the same map (the node's derivative is the identity);
//! gradient × input and integrated gradients or DeepLIFT from a zero baseline are not, as
//! they report. Shapes: x [B,C,H,W]; the signed attributions compared as rows [B][C·H·W].
//!
//! The signed attributions, not |attribution| summed over channels: Kindermans et al.'s
//! criterion is that the explanation itself is unchanged, and equal signed attributions imply
//! equal saliency maps but not the converse (a sign flip in one channel, or mass moved between
//! channels, would pass a saliency compare). The tolerance keeps its meaning: the relative L1
//! distance of the signed rows is at least that of the saliency maps, and for an invariant
//! method both are float rounding.

use crate::attribution::Attribution;
use crate::error::Result;
use crate::model::{Classifier, Network};
use candle_core::Tensor;

/// The name of the compensating node.
pub const SHIFT_NODE: &str = "input_shift";

/// A method passes when its map of the shifted input on the shifted model differs from its
/// map of the original by at most this fraction of the original's L1 norm (float rounding of
/// x + m − m leaves about 1e-7 of it).
pub const TOLERANCE: f64 = 1e-3;

/// The model f₂ with f₂(x + m) = f₁(x) for the constant shift `m` (every channel).
pub fn shifted_model(net: &Network, m: f32) -> Result<Network> {
    let c = net.input_shape().0;
    let graph = net.graph().with_input_node(SHIFT_NODE, vec![1.0; c], vec![-m; c])?;
    let (_, h, w) = net.input_shape();
    Network::new(net.name(), graph, (h, w), net.default_layer(), net.device())
}

/// Per image, ‖a₂ − a₁‖₁ / ‖a₁‖₁ between `method`'s signed attribution of `x + m` on the
/// shifted model and of `x` on `net`, for the classes `targets` (0 where both maps are zero).
pub fn input_invariance(
    net: &Network,
    method: &dyn Attribution,
    x: &Tensor,
    targets: &[u32],
    m: f32,
) -> Result<Vec<f64>> {
    let shifted = shifted_model(net, m)?;
    let before = super::saliency_maps(method, net, x, targets)?;
    let after = super::saliency_maps(method, &shifted, &x.affine(1.0, f64::from(m))?, targets)?;
    Ok(before
        .iter()
        .zip(&after)
        .map(|(a, b)| {
            let norm: f64 = a.iter().map(|&v| f64::from(v).abs()).sum();
            let diff: f64 = a.iter().zip(b).map(|(&u, &v)| (f64::from(u) - f64::from(v)).abs()).sum();
            if norm > 0.0 {
                diff / norm
            } else {
                diff
            }
        })
        .collect())
}

//! Layer-wise relevance propagation (Bach et al., PLoS ONE 2015; Montavon et al., "Layer-wise
//! relevance propagation: an overview", 2019), with the rules and composites of zennit 0.5.1
//! (Anders et al. 2021), on every graph the harness loads.
//!
//! What: relevance R starts at the logits as e_t ⊙ logits (the target's logit, so that Σ R
//! over the input equals it where every rule conserves) and flows down the graph: at each
//! convolution and dense layer by the composite's rule ([`rule`]: ε, z⁺, α-β, γ, z^B,
//! flat), at residual sums and average pooling by `Norm` (each summand's share in proportion to
//! its contribution, zennit's treatment of torchvision's `out += identity` once its ResNet
//! canonizer has made the sum a module; here every residual sum gets it, ResNet, MobileNet's
//! inverted residual and the newer families alike), through every nonlinearity, batch norm,
//! affine map and layer norm unchanged (`Pass`), and through max-pooling, flattening, channel
//! selections and concatenation as their gradient (which conserves). Batch norms are already
//! folded into the convolutions they follow, as zennit's canonizer does. A product x ⊙ gate
//! (squeeze-and-excitation) passes all relevance to x and none to the gate ("signal takes
//! all", Arras et al. 2017; zennit has no rule for it).
//!
//! Why here: Captum's LRP passes relevance through the residual `+` like a gradient, which
//! neither conserves nor matches zennit (Captum issues #143, #546, #1035).
//!
//! Attacks: [`pass::adjoint`] differentiates the map (Dombrowski et al. 2019 attack LRP maps):
//! under the softplus surrogate the forward values are smooth, the rules' masks and clamps
//! piecewise constant. A limit of the surrogate: with ReLU the relevance reaching a layer's
//! output is proportional to relu(z), so ε's and Norm's R / stab(z) is bounded; with
//! softplus(z), nonzero at z = 0, it has a pole (of height 1/ε) where z crosses zero. The
//! surrogate map is then ill-conditioned near those points (float32 and float64 differ by
//! percents in the largest values there); z⁺, α-β and γ denominators of non-negative inputs
//! never cross zero. (A remedy to measure: rescale the relevance passing each surrogate ReLU by
//! z·φ′(z)/φ(z), which is 1 for the exact ReLU and cancels the pole.)
//!
//! Shapes: x [B,C,H,W] → relevance [B,C,H,W] (at the image, after the input normalisation,
//! which passes it unchanged).

mod composite;
pub(crate) mod pass;
mod plan;
mod pointwise;
mod rule;

pub use composite::{Composite, CompositeKind, FirstLayer, COMPOSITES};
pub(crate) use plan::{Modified, Plan, Step};
pub(crate) use pointwise::Pointwise;

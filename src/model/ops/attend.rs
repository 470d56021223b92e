//! Attention's weighted sum: each query token's output is the average of the value tokens
//! under its attention probabilities, per head (Vaswani et al. 2017, "Attention is all you
//! need", eq. 1; PyTorch's `nn.MultiheadAttention` after its softmax, before `out_proj`).
//!
//! Shapes: inputs a = Map(heads·T, T, 1), the probabilities as [`super::Scores`] lays them
//! out (channel h·T + j = head h and key j, row i = query), and v = Map(D, T, 1), the value
//! tokens; output Map(D, T, 1) with, for dh = D/heads,
//!
//!   out[h·dh + d, i] = Σ_j a[h·T + j, i] · v[h·dh + d, j]
//!
//! which per head is the matrix product v·a of the head's [dh, T] values and [T, T]
//! probabilities. The heads' outputs sit side by side in the channels, as PyTorch
//! concatenates them before `out_proj`.
//!
//! A product of two activations, so not linear in its inputs: its forward pass keeps them
//! ([`Layer::nonlinear`]) and the tangent, vector–Jacobian product and second-order terms
//! are those of a bilinear map ([`super::bilinear`]): with G the output's gradient per head
//! [dh, T], ∂a = vᵀ·G and ∂v = G·aᵀ.
//!
//! Backward rules: every rule (gradient, guided backprop, deconvnet, DeepLIFT's rescale)
//! passes the op by its plain gradient, as Captum's hooks modify only elementwise
//! nonlinearities. LRP: the gradient ([`super::Relevance::Gradient`]), as plain LRP has no
//! rule for attention (Chefer et al. 2021, "Transformer interpretability beyond attention
//! visualization"). Occlusion: each output token mixes every value token, so the op starts
//! the head (recomputed whole).

use super::bilinear::{Bilinear, Factor};
use super::scores::token_map;
use super::Layer;
use crate::model::shape::Shape;

/// v·a per head (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attend {
    /// Heads; they split the D features of v into equal parts.
    pub heads: usize,
}

impl Attend {
    /// The product: out = v · a per head, X = v (input 1), Y = a (input 0).
    fn bilinear(&self) -> Bilinear {
        Bilinear {
            heads: self.heads,
            scale: 1.0,
            x: Factor { input: 1, t: false },
            y: Factor { input: 0, t: false },
        }
    }
}

impl Layer for Attend {
    fn kind(&self) -> &'static str {
        "attend"
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        let [a, v] = ins else {
            return Err(format!("takes 2 inputs (probabilities, values), got {}", ins.len()));
        };
        let (_, t) = token_map(*v, self.heads)?;
        if *a != Shape::Map(self.heads * t, t, 1) {
            return Err(format!(
                "probabilities {a} for {} heads of {t} tokens (expected {}×{t}×1)",
                self.heads,
                self.heads * t
            ));
        }
        Ok(*v)
    }

    super::bilinear::bilinear_passes!();
}

/// Self-attention on the 8-channel 9×9 test map's 81 tokens: q, k, v as 1×1 convolutions,
/// scores of `heads` heads (scale 1/√(8/heads)), softmax over each head's keys, the weighted
/// sum.
#[cfg(test)]
fn self_attention(
    b: &mut crate::model::graph::GraphBuilder,
    x: crate::model::graph::NodeId,
    r: &mut super::cases::Rng,
    heads: usize,
) -> crate::model::graph::NodeId {
    use super::cases::conv;
    use super::{Op, Scores, Softmax, Tokens};
    let t = b.push("tokens", Op::Tokens(Tokens), &[x]);
    let q = b.push("q", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[t]);
    let k = b.push("k", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[t]);
    let v = b.push("v", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[t]);
    let scale = 1.0 / ((8 / heads) as f64).sqrt();
    let s = b.push("scores", Op::Scores(Scores { heads, scale }), &[q, k]);
    let p = b.push("softmax", Op::Softmax(Softmax { groups: heads }), &[s]);
    b.push("t", Op::Attend(Attend { heads }), &[p, v])
}

/// One head, then two.
#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::Case;
    vec![
        Case::new("self-attention (1 head)", |b, x, r| self_attention(b, x, r, 1)),
        Case::new("self-attention (2 heads)", |b, x, r| self_attention(b, x, r, 2)),
    ]
}

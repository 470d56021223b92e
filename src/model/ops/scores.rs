//! Attention scores: the scaled dot products of every query token with every key token, per
//! head (Vaswani et al. 2017, "Attention is all you need", eq. 1; Dosovitskiy et al. 2021,
//! "An image is worth 16x16 words", the ViT encoder; PyTorch's `nn.MultiheadAttention`
//! before its softmax).
//!
//! Shapes: inputs q and k, both token maps Map(D, T, 1) ([`crate::model::shape::Shape`]);
//! output Map(heads·T, T, 1) with, for dh = D/heads,
//!
//!   out[h·T + j, i] = scale · Σ_{d<dh} q[h·dh + d, i] · k[h·dh + d, j]
//!
//! (channel = head h and key j, row = query i), so that a softmax over each head's T
//! consecutive channels ([`super::Softmax`] with `groups = heads`) normalises over the keys.
//! Per head this is the matrix scale·kᵀ·q of the head's [dh, T] matrices.
//!
//! A product of two activations, so not linear in its inputs: its forward pass keeps them
//! ([`Layer::nonlinear`]) and the tangent, vector–Jacobian product and second-order terms
//! are those of a bilinear map ([`super::bilinear`]): with G the output's gradient per head
//! [T_keys, T_queries], ∂q = scale·k·G and ∂k = scale·q·Gᵀ.
//!
//! Backward rules: every rule (gradient, guided backprop, deconvnet, DeepLIFT's rescale)
//! passes the op by its plain gradient, as Captum's hooks modify only elementwise
//! nonlinearities. LRP: the gradient ([`super::Relevance::Gradient`]): plain LRP has no rule
//! for the attention products (Chefer et al. 2021, "Transformer interpretability beyond
//! attention visualization"). Occlusion: every query reads every key, so the op starts the
//! head (recomputed whole).

use super::bilinear::{Bilinear, Factor};
use super::Layer;
use crate::model::shape::Shape;

/// scale · qᵀk per head, laid out as Map(heads·T, T, 1) (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// Heads; they split the D features into equal parts.
    pub heads: usize,
    /// The factor of every dot product (1/√(D/heads) in a transformer).
    pub scale: f64,
}

impl Scores {
    /// The product: out = scale · op(k)ᵀ · q per head, X = k (input 1, transposed), Y = q.
    fn bilinear(&self) -> Bilinear {
        Bilinear {
            heads: self.heads,
            scale: self.scale,
            x: Factor { input: 1, t: true },
            y: Factor { input: 0, t: false },
        }
    }
}

/// Checks that `x` is a token map whose D features split into `heads`: (D, T).
pub(super) fn token_map(x: Shape, heads: usize) -> std::result::Result<(usize, usize), String> {
    let (d, t, w) = x.map()?;
    if w != 1 {
        return Err(format!("needs a token map D×T×1, got {x}"));
    }
    if heads == 0 || d % heads != 0 {
        return Err(format!("{d} features do not split into {heads} heads"));
    }
    Ok((d, t))
}

impl Layer for Scores {
    fn kind(&self) -> &'static str {
        "attention_scores"
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        let [q, k] = ins else { return Err(format!("takes 2 inputs (queries, keys), got {}", ins.len())) };
        if q != k {
            return Err(format!("queries {q} and keys {k} differ"));
        }
        if !self.scale.is_finite() {
            return Err(format!("scale {} (must be finite)", self.scale));
        }
        let (_, t) = token_map(*q, self.heads)?;
        let c = self.heads.checked_mul(t).ok_or("its output's size overflows")?;
        Ok(Shape::Map(c, t, 1))
    }

    super::bilinear::bilinear_passes!();
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::{conv, Case};
    use super::{Op, Tokens};
    vec![Case::new("attention scores (2 heads)", |b, x, r| {
        let t = b.push("tokens", Op::Tokens(Tokens), &[x]);
        let q = b.push("q", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[t]);
        let k = b.push("k", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[t]);
        b.push("t", Op::Scores(Scores { heads: 2, scale: 0.5 }), &[q, k])
    })]
}

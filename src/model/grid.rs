//! A token layer seen as its patch grid: what a layer method (Grad-CAM and its family) reads
//! of a vision transformer's layer.
//!
//! What: a token map Map(D, T, 1) (see [`super::shape::Shape`]) whose tokens are a gh×gw
//! grid of patches, possibly after k = 1 class token (T = k + gh·gw), is shown to layer
//! methods as the feature map [B, D, gh, gw] of its patch tokens, the class token dropped;
//! the grid is that of the graph's [`super::ops::Tokens`] node (its input's H × W). Values
//! given back at the view (an attack's adjoint vectors) return to the tokens with zeros at
//! the class token.
//!
//! Why: pytorch-grad-cam's documented use for vision transformers takes the last block's
//! `ln_1` with a `reshape_transform` that does exactly this
//! (`tensor[:, 1:, :].reshape(B, gh, gw, D)`, channels first), so that a CAM is a map over
//! the patches, upsampled to the image like a convolutional network's.
//!
//! Attention maps (the outputs of [`Op::Scores`] and [`Op::Softmax`], Map(heads·T, T, 1):
//! channel = head and key, row = query) are not token maps: they keep their shape, so that
//! attention methods (rollout, Chefer et al.) read every query's row, the class token's too.

use super::graph::{Graph, NodeId, Op, Shape};
use crate::error::Result;
use candle_core::Tensor;

/// How a stop node's token map maps to its patch grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grid {
    /// Leading tokens that are not patches (the class token).
    skip: usize,
    /// Grid rows.
    gh: usize,
    /// Grid columns.
    gw: usize,
}

impl Grid {
    /// The grid of node `stop` of `graph` (node shapes `shapes`), None when it is not a token
    /// map of the graph's patch grid (a feature map, a flat vector, a graph without tokens).
    pub fn of(graph: &Graph, shapes: &[Shape], stop: NodeId) -> Option<Self> {
        let Shape::Map(_, t, 1) = shapes[stop] else { return None };
        if matches!(graph.nodes()[stop].op, Op::Scores(_) | Op::Softmax(_)) {
            return None;
        }
        let tokens = graph.nodes().iter().position(|n| matches!(n.op, Op::Tokens(_)))?;
        if stop <= tokens {
            return None;
        }
        let Shape::Map(_, gh, gw) = shapes[*graph.nodes()[tokens].inputs.first()?] else { return None };
        let skip = t.checked_sub(gh * gw).filter(|&k| k <= 1)?;
        (gw > 1).then_some(Self { skip, gh, gw })
    }

    /// Tokens [B, D, T, 1] → patches [B, D, gh, gw].
    pub fn view(&self, t: &Tensor) -> Result<Tensor> {
        let (b, d, _, _) = t.dims4()?;
        Ok(t.narrow(2, self.skip, self.gh * self.gw)?.contiguous()?.reshape((b, d, self.gh, self.gw))?)
    }

    /// Patches [B, D, gh, gw] → tokens [B, D, T, 1], zeros at the skipped tokens.
    pub fn unview(&self, p: &Tensor) -> Result<Tensor> {
        let (b, d, _, _) = p.dims4()?;
        let p = p.reshape((b, d, self.gh * self.gw, 1))?;
        if self.skip == 0 {
            return Ok(p);
        }
        let zeros = Tensor::zeros((b, d, self.skip, 1), p.dtype(), p.device())?;
        Ok(Tensor::cat(&[&zeros, &p], 2)?)
    }
}

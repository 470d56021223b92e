//! What the attention-based maps of vision transformers share: attention rollout
//! ([`super::AttentionRollout`]) and Chefer et al.'s rule ([`super::Chefer`]).
//!
//! What: for each attention layer l (every `Softmax` node of the model's graph, in forward
//! order, with its heads), the attention probabilities A_l and the gradient ∇A_l of each
//! image's target logit, both [B, heads, T, T] (query × key; the graph's layout Map(heads·T,
//! T, 1), channel = head and key, row = query, transposed), are combined by the method's
//! [`AttentionRule`] into a relevance matrix R [B, T, T]. The map is the class token's row of
//! R over the patch tokens, R[0, 1:], on the gh × gw patch grid (row-major, as `Tokens` orders
//! the patches), upsampled bilinearly to the input with align_corners = false (Grad-CAM's
//! upsampling), [B,1,H,W].
//!
//! How: one backward pass stopped at each layer's softmax (the model's own pass, on the CPU
//! kernels or on the candle path) gives A_l as the stop's values and ∇A_l as its gradient:
//! L passes for L layers (rollout reads only the values, but the stopped pass is the one way
//! a [`Classifier`] shows an inner layer). The combination is candle tensor ops on these
//! small matrices ([`AttentionRule::relevance`]), so that
//! * the map is a differentiable function of x wherever the passes are (x in an autograd
//!   graph on the candle path), and
//! * its vector–Jacobian product is exact through the model's explicit adjoint, as Grad-CAM's
//!   is: autograd through the combination alone (A_l and ∇A_l as leaves) gives Ā_l =
//!   ∂⟨M, v⟩/∂A_l and Ḡ_l = ∂⟨M, v⟩/∂∇A_l, and the second-order adjoint of each layer's
//!   stopped pass ([`Classifier::backward_adjoint`]) carries (Ḡ_l, Ā_l) to the input; the
//!   product is the sum over layers. Cost: L stopped passes for the map, L adjoint passes
//!   more for its product (about 2L Grad-CAM passes on a ViT of L blocks).

use super::gradcam::upsample_tensor;
use crate::error::{Error, Result};
use crate::model::graph::{Op, Shape};
use crate::model::{one_hot, Activation, Backward, Classifier};
use candle_core::{Tensor, Var};

/// The [`super::Attribution`] methods every [`AttentionRule`] shares (inside its `impl
/// Attribution`): differentiable, reads derivatives when its rule reads gradients, the map
/// through [`attention_map`] and its VJP through [`attention_map_then_vjp`]; each method keeps
/// its own `name`, `params` and `check`.
macro_rules! attention_passes {
    () => {
        fn differentiable(&self) -> bool {
            true
        }

        fn reads_derivatives(&self) -> bool {
            super::attention::AttentionRule::reads_gradients(self)
        }

        fn attribute(
            &self,
            model: &dyn crate::model::Classifier,
            x: &candle_core::Tensor,
            targets: &[u32],
            act: crate::model::Activation,
        ) -> crate::error::Result<candle_core::Tensor> {
            super::in_passes(model, x, targets, |xs, ts| {
                super::attention::attention_map(self, model, xs, ts, act)
            })
        }

        fn has_map_vjp(&self) -> bool {
            true
        }

        fn map_then_vjp(
            &self,
            model: &dyn crate::model::Classifier,
            x: &candle_core::Tensor,
            _anchor: &candle_core::Tensor,
            targets: &[u32],
            act: crate::model::Activation,
            loss_grad: &mut dyn FnMut(&candle_core::Tensor) -> crate::error::Result<candle_core::Tensor>,
        ) -> crate::error::Result<candle_core::Tensor> {
            super::attention::attention_map_then_vjp(self, model, x, targets, act, loss_grad)
        }
    };
}
pub(super) use attention_passes;

/// How a method combines the layers' attention into the relevance matrix.
pub(super) trait AttentionRule {
    /// The method's name, for errors.
    fn method(&self) -> &'static str;
    /// Whether the relevance reads the gradients ∇A_l (so that the passes must keep them
    /// differentiable and the adjoint must carry them).
    fn reads_gradients(&self) -> bool;
    /// R [B,T,T] from each layer's probabilities `a` and gradients `g` (forward order, each
    /// [B,heads,T,T], query × key), as differentiable tensor ops.
    fn relevance(&self, a: &[Tensor], g: &[Tensor]) -> Result<Tensor>;
}

/// The attention layers of a model and the patch grid of its tokens.
pub(super) struct AttentionLayers {
    /// The softmax nodes' names, in forward order.
    names: Vec<String>,
    /// Each layer's heads.
    heads: Vec<usize>,
    /// The patch grid (rows, columns); the class token precedes the patches.
    grid: (usize, usize),
}

impl AttentionLayers {
    /// The layers of `model` for images of `hw`, or an error naming the model and `method`
    /// where the model has no attention, no patch grid or no class token.
    pub fn of(method: &str, model: &dyn Classifier, hw: (usize, usize)) -> Result<Self> {
        let refuse = |why: &str| {
            Error::Invalid(format!(
                "{method}: model `{}` {why}; {method} reads a vision transformer's attention \
                 probabilities (a model with `Softmax` attention nodes, a patch grid and a class token)",
                model.name()
            ))
        };
        let graph = model.network().ok_or_else(|| refuse("has no layer graph"))?.graph();
        let (names, heads): (Vec<String>, Vec<usize>) = graph
            .nodes()
            .iter()
            .filter_map(|n| match &n.op {
                Op::Softmax(s) => Some((n.name.clone(), s.groups)),
                _ => None,
            })
            .unzip();
        let first = graph.find(names.first().ok_or_else(|| refuse("has no attention (no `Softmax` op)"))?);
        let shapes = graph.shapes(hw)?;
        let tokens = graph.nodes().iter().find(|n| matches!(n.op, Op::Tokens(_)));
        let Some(&Shape::Map(_, gh, gw)) = tokens.and_then(|n| n.inputs.first()).map(|&i| &shapes[i]) else {
            return Err(refuse("has no patch tokens"));
        };
        match first.map(|i| shapes[i]) {
            Some(Shape::Map(_, t, 1)) if t == gh * gw + 1 => Ok(Self { names, heads, grid: (gh, gw) }),
            _ => Err(refuse(&format!("has no class token before its {gh}×{gw} patches"))),
        }
    }

    /// Each layer's probabilities and gradients as the stopped passes give them
    /// ([B, heads·T, T, 1]), for the targets' one-hot rows `seed`.
    fn passes(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        seed: &Tensor,
        act: Activation,
    ) -> Result<Vec<(Tensor, Tensor)>> {
        self.names
            .iter()
            .map(|name| {
                let bp =
                    model.backward(x, &Backward { layer: Some(name), ..Backward::gradient(seed, act) })?;
                let a = bp.layer.ok_or_else(|| Error::Invalid(format!("layer `{name}`: no activations")))?;
                Ok((a, bp.grad))
            })
            .collect()
    }

    /// The map [B,1,hh,ww] of `rule` from the passes' `a` and `g` (each [B, heads·T, T, 1]).
    fn map(
        &self,
        rule: &dyn AttentionRule,
        a: &[Tensor],
        g: &[Tensor],
        (hh, ww): (usize, usize),
    ) -> Result<Tensor> {
        let query_key = |t: &Tensor, heads: usize| -> Result<Tensor> {
            let (b, c, t_len, _) = t.dims4()?;
            // [B, heads·T, T, 1] with (head, key) channels and query rows → [B, heads, query, key].
            Ok(t.reshape((b, heads, c / heads, t_len))?.transpose(2, 3)?.contiguous()?)
        };
        let a: Vec<Tensor> =
            a.iter().zip(&self.heads).map(|(t, &h)| query_key(t, h)).collect::<Result<_>>()?;
        let g: Vec<Tensor> =
            g.iter().zip(&self.heads).map(|(t, &h)| query_key(t, h)).collect::<Result<_>>()?;
        let r = rule.relevance(&a, &g)?;
        let (b, _, t) = r.dims3()?;
        let (gh, gw) = self.grid;
        let row = r.narrow(1, 0, 1)?.narrow(2, t - gh * gw, gh * gw)?.reshape((b, gh, gw))?;
        upsample_tensor(&row, hh, ww)
    }
}

/// The map [B,1,H,W] of `rule` on `model` at images `x` [B,C,H,W] for `targets`.
pub(super) fn attention_map(
    rule: &dyn AttentionRule,
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    act: Activation,
) -> Result<Tensor> {
    let (_, _, hh, ww) = x.dims4()?;
    let layers = AttentionLayers::of(rule.method(), model, (hh, ww))?;
    let seed = one_hot(targets, model.num_classes(), model.device())?.to_dtype(x.dtype())?;
    let (a, g): (Vec<_>, Vec<_>) = layers.passes(model, x, &seed, act)?.into_iter().unzip();
    layers.map(rule, &a, &g, (hh, ww))
}

/// The map M [B,1,H,W], then v = `loss_grad(M)`, then ∇ₓ⟨M(x), v⟩ with v held fixed: autograd
/// through the combination gives each layer's (Ā_l, Ḡ_l), and the model's adjoint of the pass
/// stopped at layer l carries them to x (see the module docs).
pub(super) fn attention_map_then_vjp(
    rule: &dyn AttentionRule,
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    act: Activation,
    loss_grad: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (_, _, hh, ww) = x.dims4()?;
    let x = x.detach();
    let layers = AttentionLayers::of(rule.method(), model, (hh, ww))?;
    let seed = one_hot(targets, model.num_classes(), model.device())?.to_dtype(x.dtype())?;
    let mut vars = Vec::with_capacity(layers.names.len());
    for (a, g) in layers.passes(model, &x, &seed, act)? {
        vars.push((Var::from_tensor(&a.detach())?, Var::from_tensor(&g.detach())?));
    }
    let a: Vec<Tensor> = vars.iter().map(|(a, _)| a.as_tensor().clone()).collect();
    let g: Vec<Tensor> = vars.iter().map(|(_, g)| g.as_tensor().clone()).collect();
    let m = layers.map(rule, &a, &g, (hh, ww))?;
    let v = loss_grad(&m.detach())?;
    let grads = m.mul(&v.detach())?.sum_all()?.backward()?;
    // No entry: the map does not read that leaf (rollout and the gradients), a zero adjoint.
    let bar = |t: &Var| -> Result<Tensor> {
        Ok(grads.get(t.as_tensor()).map(|g| g.detach()).map_or_else(|| t.as_tensor().zeros_like(), Ok)?)
    };
    let mut xbar = x.zeros_like()?;
    for (name, (av, gv)) in layers.names.iter().zip(&vars) {
        let (abar, gbar) = (bar(av)?, bar(gv)?);
        let pass = Backward { layer: Some(name), ..Backward::gradient(&seed, act) };
        let (_, part) = model.backward_adjoint(&x, &pass, &mut |_| Ok((gbar.clone(), Some(abar.clone()))))?;
        xbar = xbar.add(&part)?;
    }
    Ok(xbar)
}

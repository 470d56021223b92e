//! Softmax over each of `groups` consecutive equal groups of channels, at each position:
//! attention's normalisation over the keys of each head (Vaswani et al. 2017, eq. 1;
//! PyTorch's `softmax(dim=-1)` inside `nn.MultiheadAttention`), with [`super::Scores`]'
//! layout (channel h·T + j = head h, key j), where `groups` = heads.
//!
//! Shapes: Map(C, H, W) → Map(C, H, W), C a multiple of `groups`; within group g, at each
//! position, y = softmax(x) = exp(x − max x) / Σ exp(x − max x) over the group's C/groups
//! channels (the maximum subtracted for stability; it cancels).
//!
//! Not linear, so its forward pass keeps x ([`Layer::nonlinear`]) and recomputes y. Its
//! Jacobian J = diag(y) − y·yᵀ is symmetric, so one projection P(v) = y ⊙ (v − ⟨y, v⟩) (sums
//! over the group) is both the tangent J·v and the vector–Jacobian product Jᵀg.
//!
//! Second order (the attacks' adjoint, see [`super::Layer::tensor_second`]): with g the
//! output's gradient held fixed and λ the input's tangent,
//!
//!   f(x) = ⟨Jᵀg, λ⟩ = ⟨y, g ⊙ λ⟩ − ⟨y, g⟩·⟨y, λ⟩,
//!   ∂f/∂y = w = g ⊙ λ − ⟨y, g⟩·λ − ⟨y, λ⟩·g,
//!   ∇ₓf = Jᵀw = P(w) = y ⊙ (w − ⟨y, w⟩).
//!
//! It is smooth, so the attacks' second order is exact here; the layer test table checks it
//! against finite differences.
//!
//! Backward rules: every rule (gradient, guided backprop, deconvnet, DeepLIFT's rescale)
//! passes it by its plain gradient: Captum's hooks modify only elementwise nonlinearities,
//! and a softmax is not one. LRP: the gradient ([`super::Relevance::Gradient`]; plain LRP has
//! no rule for it, Chefer et al. 2021). Occlusion: in attention it normalises over all keys,
//! which are all tokens, so it starts the head (recomputed whole).
//!
//! Layout on the CPU: a block [C, n, H·W] holds group g as C/groups channel rows of n·H·W
//! positions; every sum runs row by row (it vectorises).

use super::{CpuCx, CpuKept, Layer, TensorCx, TensorKept};
use crate::error::Result;
use crate::model::kernels::Buf;
use crate::model::shape::Shape;
use candle_core::Tensor;
use std::sync::Arc;

/// Softmax over each of `groups` equal groups of consecutive channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Softmax {
    /// Groups (attention heads).
    pub groups: usize,
}

/// y of one tensor batch [B, C, H, W] viewed as [B, groups, C/groups, H, W].
struct TensorGroups {
    y: Tensor,
    dims: Vec<usize>,
}

impl TensorGroups {
    fn new(groups: usize, x: &Tensor) -> Result<Self> {
        let (b, c, h, w) = x.dims4()?;
        let xg = x.reshape((b, groups, c / groups, h, w))?;
        // The maximum is a constant shift (it cancels): no gradient through it.
        let e = xg.broadcast_sub(&xg.max_keepdim(2)?.detach())?.exp()?;
        let y = e.broadcast_div(&e.sum_keepdim(2)?)?;
        Ok(Self { y, dims: vec![b, c, h, w] })
    }

    /// `v` viewed in groups.
    fn group(&self, v: &Tensor) -> Result<Tensor> {
        Ok(v.reshape(self.y.dims())?)
    }

    /// ⟨y, v⟩ over each group, v in groups.
    fn dot(&self, v: &Tensor) -> Result<Tensor> {
        Ok((&self.y * v)?.sum_keepdim(2)?)
    }

    /// P(v) = y ⊙ (v − ⟨y, v⟩), v in groups, in groups.
    fn project(&self, v: &Tensor) -> Result<Tensor> {
        Ok((&self.y * v.broadcast_sub(&self.dot(v)?)?)?)
    }

    /// A grouped tensor back in the node's shape.
    fn ungroup(&self, v: Tensor) -> Result<Tensor> {
        Ok(v.reshape(self.dims.as_slice())?)
    }
}

/// y of one CPU block: `groups` groups of `per` channel rows of `p` positions.
struct CpuGroups {
    y: Vec<f32>,
    groups: usize,
    per: usize,
    p: usize,
}

impl CpuGroups {
    fn new(cx: &CpuCx, groups: usize, x: &[f32]) -> Result<Self> {
        let (c, h, w) = cx.out_map()?;
        let (per, p) = (c / groups, cx.n * h * w);
        let mut y = x.to_vec();
        for block in y.chunks_exact_mut(per * p) {
            let mut max = block[..p].to_vec();
            for row in block.chunks_exact(p).skip(1) {
                max.iter_mut().zip(row).for_each(|(m, &v)| *m = m.max(v));
            }
            let mut sum = vec![0.0f32; p];
            for row in block.chunks_exact_mut(p) {
                for ((v, &m), s) in row.iter_mut().zip(&max).zip(&mut sum) {
                    *v = (*v - m).exp();
                    *s += *v;
                }
            }
            for row in block.chunks_exact_mut(p) {
                row.iter_mut().zip(&sum).for_each(|(v, &s)| *v /= s);
            }
        }
        Ok(Self { y, groups, per, p })
    }

    /// ⟨y, v⟩ over each group: [groups, p].
    fn dot(&self, v: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0f32; self.groups * self.p];
        for (g, acc) in out.chunks_exact_mut(self.p).enumerate() {
            let at = g * self.per * self.p;
            let rows = self.y[at..][..self.per * self.p].chunks_exact(self.p);
            for (yr, vr) in rows.zip(v[at..][..self.per * self.p].chunks_exact(self.p)) {
                acc.iter_mut().zip(yr.iter().zip(vr)).for_each(|(a, (&y, &v))| *a += y * v);
            }
        }
        out
    }

    /// P(v) = y ⊙ (v − ⟨y, v⟩).
    fn project(&self, v: &[f32]) -> Vec<f32> {
        let dot = self.dot(v);
        let mut out = vec![0.0f32; v.len()];
        for (i, ((o, &y), &v)) in out.iter_mut().zip(&self.y).zip(v).enumerate() {
            let (row, pos) = (i / self.p, i % self.p);
            *o = y * (v - dot[row / self.per * self.p + pos]);
        }
        out
    }

    /// w = g ⊙ λ − ⟨y, g⟩·λ − ⟨y, λ⟩·g (the module docs' second-order term before P).
    fn second_w(&self, g: &[f32], lam: &[f32]) -> Vec<f32> {
        let (yg, yl) = (self.dot(g), self.dot(lam));
        (0..g.len())
            .map(|i| {
                let at = i / (self.per * self.p) * self.p + i % self.p;
                g[i] * lam[i] - yg[at] * lam[i] - yl[at] * g[i]
            })
            .collect()
    }
}

impl Softmax {
    /// The kept input x.
    fn kept_input<B>(err: impl Fn(&str) -> crate::error::Error, kept: &[B]) -> Result<&B> {
        kept.first().ok_or_else(|| err("internal: a softmax without its kept input"))
    }
}

impl Layer for Softmax {
    fn kind(&self) -> &'static str {
        "softmax"
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        let [x] = ins else { return Err(format!("takes 1 input, got {}", ins.len())) };
        let (c, _, _) = x.map()?;
        if self.groups == 0 || c % self.groups != 0 {
            return Err(format!("{c} channels do not split into {} groups", self.groups));
        }
        Ok(*x)
    }

    fn nonlinear(&self) -> bool {
        true
    }

    fn tensor_forward(
        &self,
        _cx: &mut TensorCx,
        ins: &[&Tensor],
        _rank: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let st = TensorGroups::new(self.groups, ins[0])?;
        Ok((st.ungroup(st.y.clone())?, None))
    }

    fn tensor_tangent(&self, cx: &mut TensorCx, ins: &[&Tensor], kept: &TensorKept) -> Result<Tensor> {
        let st = TensorGroups::new(self.groups, Self::kept_input(|m| cx.error(m), kept.inputs)?)?;
        st.ungroup(st.project(&st.group(ins[0])?)?)
    }

    fn tensor_vjp(&self, cx: &mut TensorCx, g: &Tensor, kept: &TensorKept) -> Result<Vec<Tensor>> {
        let st = TensorGroups::new(self.groups, Self::kept_input(|m| cx.error(m), kept.inputs)?)?;
        Ok(vec![st.ungroup(st.project(&st.group(g)?)?)?])
    }

    fn tensor_second(
        &self,
        cx: &mut TensorCx,
        g: &Tensor,
        lam: &[&Tensor],
        kept: &TensorKept,
    ) -> Result<Vec<Option<Tensor>>> {
        let st = TensorGroups::new(self.groups, Self::kept_input(|m| cx.error(m), kept.inputs)?)?;
        let (g, lam) = (st.group(g)?, st.group(lam[0])?);
        let w = (((&g * &lam)? - lam.broadcast_mul(&st.dot(&g)?)?)? - g.broadcast_mul(&st.dot(&lam)?)?)?;
        Ok(vec![Some(st.ungroup(st.project(&w)?)?)])
    }

    fn cpu_forward(
        &self,
        cx: &mut CpuCx,
        ins: &[&Buf],
        _rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        Ok((Arc::new(CpuGroups::new(cx, self.groups, ins[0])?.y), None))
    }

    fn cpu_tangent(&self, cx: &mut CpuCx, ins: &[&Buf], kept: &CpuKept) -> Result<Buf> {
        let st = CpuGroups::new(cx, self.groups, Self::kept_input(|m| cx.error(m), kept.inputs)?)?;
        Ok(Arc::new(st.project(ins[0])))
    }

    fn cpu_vjp(&self, cx: &mut CpuCx, g: &Buf, kept: &CpuKept) -> Result<Vec<Buf>> {
        let st = CpuGroups::new(cx, self.groups, Self::kept_input(|m| cx.error(m), kept.inputs)?)?;
        Ok(vec![Arc::new(st.project(g))])
    }

    fn cpu_second(&self, cx: &mut CpuCx, g: &Buf, lam: &[&Buf], kept: &CpuKept) -> Result<Vec<Option<Buf>>> {
        let st = CpuGroups::new(cx, self.groups, Self::kept_input(|m| cx.error(m), kept.inputs)?)?;
        Ok(vec![Some(Arc::new(st.project(&st.second_w(g, lam[0]))))])
    }
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::{conv, Case};
    use super::Op;
    vec![
        Case::new("softmax over 2 groups of channels", |b, x, r| {
            let pre = b.push("pre", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[x]);
            b.push("t", Op::Softmax(Softmax { groups: 2 }), &[pre])
        }),
        Case::new("softmax over all channels", |b, x, r| {
            let pre = b.push("pre", conv(r, 8, 8, [3, 3], 1, [1; 4], 1, 1), &[x]);
            b.push("t", Op::Softmax(Softmax { groups: 1 }), &[pre])
        }),
    ]
}

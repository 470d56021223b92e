//! Layer normalisation over channels: at every position of a map [B,C,H,W] (or of a flat
//! vector [B,F], one position of F "channels"), y = γ ⊙ x̂ + β with x̂ = (x − μ)·s, μ the
//! mean over the C channels, s = 1/√(σ² + ε) and σ² the biased variance (PyTorch's
//! `nn.LayerNorm` over the last axis of channels-last data, ConvNeXt's LayerNorm2d, ONNX
//! `LayerNormalization` with axis −1 after a Transpose to channels-last).
//!
//! Not linear in its input, so its forward pass keeps the input ([`Layer::nonlinear`]) and
//! recomputes x̂ and s from it. With P(v) = v − mean(v) − x̂·mean(x̂ ⊙ v) (per position, over
//! channels) the Jacobian is J = s·P, symmetric:
//! * tangent: γ ⊙ s·P(t); vector–Jacobian product: s·P(γ ⊙ g);
//! * second order (for the attacks' adjoint), the gradient of ⟨s·P(u), λ⟩ with u = γ ⊙ g
//!   held fixed: −(s²/C)(a − b·c)·x̂ − s²·c·P(u) − (s²/C)·b·P(λ), with a = ⟨u, λ − mean λ⟩,
//!   b = ⟨u, x̂⟩ and c = ⟨x̂, λ⟩/C (sums over channels), from ∇s = −s²x̂/C, ∇⟨u, x̂⟩ = s·P(u)
//!   and ∇⟨x̂, λ⟩ = s·P(λ). It is smooth (ε > 0), so the attacks' second order is exact here.
//!
//! Backward rules: every rule passes the normalisation by its plain gradient at the input, as
//! Captum's DeepLift and guided backprop hooks (which modify only the nonlinearities) and
//! zennit's rules for layers without a rule do. Occlusion: each position is normalised on
//! its own, so a changed rectangle stays as it is.
//!
//! Layout on the CPU: channel c of position p of a map block [C, n, H·W] is at c·n·H·W + p; of
//! a flat block [n, F] at p·F + c.

use super::{CpuCx, CpuKept, Layer, Rect, TensorCx, TensorKept};
use super::{Import, Mapping, Op};
use crate::error::Result;
use crate::model::kernels::Buf;
use crate::model::mapping::{view, Step};
use crate::model::shape::Shape;
use candle_core::Tensor;
use std::sync::Arc;

/// γ ⊙ (x − μ)/√(σ² + ε) + β over the channels at each position.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    /// γ [C].
    pub weight: Vec<f32>,
    /// β [C].
    pub bias: Vec<f32>,
    /// ε, added to the variance.
    pub eps: f32,
}

/// x̂ and s on the tensor path.
struct TensorStats {
    xh: Tensor,
    s: Tensor,
}

impl LayerNorm {
    /// γ (or β) shaped to broadcast over a batch like `x`.
    fn tensor_param(&self, v: &[f32], x: &Tensor) -> Result<Tensor> {
        let c = v.len();
        let shape: Vec<usize> = if x.rank() == 4 { vec![1, c, 1, 1] } else { vec![1, c] };
        Ok(Tensor::from_slice(v, c, x.device())?.to_dtype(x.dtype())?.reshape(shape)?)
    }

    fn tensor_stats(&self, x: &Tensor) -> Result<TensorStats> {
        let d = x.broadcast_sub(&x.mean_keepdim(1)?)?;
        let var = d.sqr()?.mean_keepdim(1)?;
        let s = (var + f64::from(self.eps))?.sqrt()?.recip()?;
        Ok(TensorStats { xh: d.broadcast_mul(&s)?, s })
    }

    /// P(v) = v − mean(v) − x̂·mean(x̂ ⊙ v).
    fn tensor_project(st: &TensorStats, v: &Tensor) -> Result<Tensor> {
        let centred = v.broadcast_sub(&v.mean_keepdim(1)?)?;
        Ok((centred - st.xh.broadcast_mul(&(&st.xh * v)?.mean_keepdim(1)?)?)?)
    }

    /// The output γ ⊙ x̂ + β of the values `x` laid out as `grid`.
    fn normalise(&self, grid: Grid, x: &[f32]) -> Vec<f32> {
        let mut st = CpuStats::new(grid, x, self.eps);
        if let Some(rows) = grid.rows_mut(&mut st.xh) {
            // In place, channel row by channel row (it vectorises): the same operations.
            for ((row, &w), &b) in rows.zip(&self.weight).zip(&self.bias) {
                row.iter_mut().for_each(|v| *v = *v * w + b);
            }
            return st.xh;
        }
        grid.map(|ch, _, i| st.xh[i] * self.weight[ch] + self.bias[ch])
    }

    /// The kept input x.
    fn kept_input<B>(err: impl Fn(&str) -> crate::error::Error, kept: &[B]) -> Result<&B> {
        kept.first().ok_or_else(|| err("internal: a layer norm without its kept input"))
    }
}

/// The CPU layout of one block: `pos` positions of `c` channels, value (ch, p) at
/// ch·`cs` + p·`ps`.
#[derive(Clone, Copy)]
struct Grid {
    c: usize,
    pos: usize,
    cs: usize,
    ps: usize,
}

impl Grid {
    fn of(cx: &CpuCx) -> Self {
        match cx.out {
            Shape::Map(c, h, w) => Grid { c, pos: cx.n * h * w, cs: cx.n * h * w, ps: 1 },
            Shape::Flat(f) => Grid { c: f, pos: cx.n, cs: 1, ps: f },
        }
    }

    /// Whether the block is a map block: each channel's positions one contiguous row.
    fn has_rows(&self) -> bool {
        self.ps == 1 && self.cs == self.pos && self.pos > 0
    }

    /// The channel rows of a map block, None for a flat block.
    fn rows<'a>(&self, v: &'a [f32]) -> Option<std::slice::ChunksExact<'a, f32>> {
        self.has_rows().then(|| v[..self.c * self.pos].chunks_exact(self.pos))
    }

    /// [`Grid::rows`], mutable.
    fn rows_mut<'a>(&self, v: &'a mut [f32]) -> Option<std::slice::ChunksExactMut<'a, f32>> {
        self.has_rows().then(|| v[..self.c * self.pos].chunks_exact_mut(self.pos))
    }

    /// Per position p, Σ over channels of f(p, value index).
    fn sums(&self, f: impl Fn(usize, usize) -> f32) -> Vec<f32> {
        let mut acc = vec![0.0f32; self.pos];
        for ch in 0..self.c {
            for (p, a) in acc.iter_mut().enumerate() {
                *a += f(p, ch * self.cs + p * self.ps);
            }
        }
        acc
    }

    /// A block of f(channel, position, value index).
    fn map(&self, f: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
        let mut out = vec![0.0f32; self.c * self.pos];
        for ch in 0..self.c {
            for p in 0..self.pos {
                let i = ch * self.cs + p * self.ps;
                out[i] = f(ch, p, i);
            }
        }
        out
    }
}

/// x̂ and s of one block (or of one rectangle's positions).
struct CpuStats {
    grid: Grid,
    xh: Vec<f32>,
    s: Vec<f32>,
}

impl CpuStats {
    fn new(grid: Grid, x: &[f32], eps: f32) -> Self {
        if let Some(stats) = Self::of_rows(grid, x, eps) {
            return stats;
        }
        let inv = 1.0 / grid.c as f32;
        let mu: Vec<f32> = grid.sums(|_, i| x[i]).iter().map(|v| v * inv).collect();
        let var = grid.sums(|p, i| (x[i] - mu[p]) * (x[i] - mu[p]));
        let s: Vec<f32> = var.iter().map(|v| 1.0 / (v * inv + eps).sqrt()).collect();
        let xh = grid.map(|_, p, i| (x[i] - mu[p]) * s[p]);
        Self { grid, xh, s }
    }

    /// [`CpuStats::new`] of a map block, channel row by channel row so that the loops
    /// vectorise: the same sums in the same order (channels in order at each position), so the
    /// same bits. None for a flat block.
    fn of_rows(grid: Grid, x: &[f32], eps: f32) -> Option<Self> {
        let rows = grid.rows(x)?;
        let inv = 1.0 / grid.c as f32;
        let mut mu = vec![0.0f32; grid.pos];
        for row in rows.clone() {
            mu.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
        }
        mu.iter_mut().for_each(|m| *m *= inv);
        let mut var = vec![0.0f32; grid.pos];
        for row in rows.clone() {
            var.iter_mut().zip(row).zip(&mu).for_each(|((a, &v), &m)| *a += (v - m) * (v - m));
        }
        let s: Vec<f32> = var.iter().map(|v| 1.0 / (v * inv + eps).sqrt()).collect();
        let mut xh = vec![0.0f32; grid.c * grid.pos];
        for (out, row) in xh.chunks_exact_mut(grid.pos).zip(rows) {
            for (((o, &v), &m), &sp) in out.iter_mut().zip(row).zip(&mu).zip(&s) {
                *o = (v - m) * sp;
            }
        }
        Some(Self { grid, xh, s })
    }

    /// P(v) = v − mean(v) − x̂·mean(x̂ ⊙ v).
    fn project(&self, v: &[f32]) -> Vec<f32> {
        let inv = 1.0 / self.grid.c as f32;
        let mean = self.grid.sums(|_, i| v[i]);
        let dot = self.grid.sums(|_, i| self.xh[i] * v[i]);
        self.grid.map(|_, p, i| v[i] - mean[p] * inv - self.xh[i] * dot[p] * inv)
    }
}

impl Layer for LayerNorm {
    fn kind(&self) -> &'static str {
        "layer_norm"
    }

    fn relevance(&self) -> super::Relevance {
        super::Relevance::Pass
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        if !self.eps.is_finite() || self.eps <= 0.0 {
            return Err(format!("ε = {} (must be positive and finite)", self.eps));
        }
        super::per_channel_shape(ins, ("weights", self.weight.len()), ("biases", self.bias.len()))
    }

    fn values(&self) -> Vec<(&'static str, &[f32])> {
        vec![("weight", &self.weight), ("bias", &self.bias)]
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
        let x = ins[0];
        let st = self.tensor_stats(x)?;
        let y = st.xh.broadcast_mul(&self.tensor_param(&self.weight, x)?)?;
        Ok((y.broadcast_add(&self.tensor_param(&self.bias, x)?)?, None))
    }

    fn tensor_tangent(&self, cx: &mut TensorCx, ins: &[&Tensor], kept: &TensorKept) -> Result<Tensor> {
        let x = Self::kept_input(|m| cx.error(m), kept.inputs)?;
        let st = self.tensor_stats(x)?;
        let p = Self::tensor_project(&st, ins[0])?.broadcast_mul(&st.s)?;
        Ok(p.broadcast_mul(&self.tensor_param(&self.weight, x)?)?)
    }

    fn tensor_vjp(&self, cx: &mut TensorCx, g: &Tensor, kept: &TensorKept) -> Result<Vec<Tensor>> {
        let x = Self::kept_input(|m| cx.error(m), kept.inputs)?;
        let st = self.tensor_stats(x)?;
        let u = g.broadcast_mul(&self.tensor_param(&self.weight, x)?)?;
        Ok(vec![Self::tensor_project(&st, &u)?.broadcast_mul(&st.s)?])
    }

    fn tensor_second(
        &self,
        cx: &mut TensorCx,
        g: &Tensor,
        lam: &[&Tensor],
        kept: &TensorKept,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = Self::kept_input(|m| cx.error(m), kept.inputs)?;
        let st = self.tensor_stats(x)?;
        let lam = lam[0];
        let u = g.broadcast_mul(&self.tensor_param(&self.weight, x)?)?;
        let inv = 1.0 / self.weight.len() as f64;
        let sum = |t: &Tensor| t.sum_keepdim(1);
        // a = ⟨u, λ⟩ − mean(λ)·Σu, b = ⟨u, x̂⟩, c = ⟨x̂, λ⟩/C.
        let a = (sum(&(&u * lam)?)? - (lam.mean_keepdim(1)? * sum(&u)?)?)?;
        let b = sum(&(&u * &st.xh)?)?;
        let c = (sum(&(&st.xh * lam)?)? * inv)?;
        let s2 = st.s.sqr()?;
        let t1 = st.xh.broadcast_mul(&((a - (&b * &c)?)? * inv)?)?;
        let t2 = Self::tensor_project(&st, &u)?.broadcast_mul(&c)?;
        let t3 = Self::tensor_project(&st, lam)?.broadcast_mul(&(b * inv)?)?;
        Ok(vec![Some(((t1 + t2)? + t3)?.broadcast_mul(&s2)?.neg()?)])
    }

    fn cpu_forward(
        &self,
        cx: &mut CpuCx,
        ins: &[&Buf],
        _rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        Ok((Arc::new(self.normalise(Grid::of(cx), ins[0])), None))
    }

    fn cpu_tangent(&self, cx: &mut CpuCx, ins: &[&Buf], kept: &CpuKept) -> Result<Buf> {
        let x = Self::kept_input(|m| cx.error(m), kept.inputs)?;
        let st = CpuStats::new(Grid::of(cx), x, self.eps);
        let p = st.project(ins[0]);
        Ok(Arc::new(st.grid.map(|ch, q, i| self.weight[ch] * st.s[q] * p[i])))
    }

    fn cpu_vjp(&self, cx: &mut CpuCx, g: &Buf, kept: &CpuKept) -> Result<Vec<Buf>> {
        let x = Self::kept_input(|m| cx.error(m), kept.inputs)?;
        let st = CpuStats::new(Grid::of(cx), x, self.eps);
        let u = st.grid.map(|ch, _, i| self.weight[ch] * g[i]);
        let p = st.project(&u);
        Ok(vec![Arc::new(st.grid.map(|_, q, i| st.s[q] * p[i]))])
    }

    fn cpu_second(&self, cx: &mut CpuCx, g: &Buf, lam: &[&Buf], kept: &CpuKept) -> Result<Vec<Option<Buf>>> {
        let x = Self::kept_input(|m| cx.error(m), kept.inputs)?;
        let st = CpuStats::new(Grid::of(cx), x, self.eps);
        let (grid, lam) = (st.grid, lam[0]);
        let inv = 1.0 / grid.c as f32;
        let u = grid.map(|ch, _, i| self.weight[ch] * g[i]);
        let (ul, su, sl) =
            (grid.sums(|_, i| u[i] * lam[i]), grid.sums(|_, i| u[i]), grid.sums(|_, i| lam[i]));
        let b = grid.sums(|_, i| u[i] * st.xh[i]);
        let c: Vec<f32> = grid.sums(|_, i| st.xh[i] * lam[i]).iter().map(|v| v * inv).collect();
        let (pu, pl) = (st.project(&u), st.project(lam));
        Ok(vec![Some(Arc::new(grid.map(|_, p, i| {
            let a = ul[p] - sl[p] * inv * su[p];
            let s2 = st.s[p] * st.s[p];
            -s2 * ((a - b[p] * c[p]) * inv * st.xh[i] + c[p] * pu[i] + b[p] * inv * pl[i])
        })))])
    }

    fn reach(&self, changed: &[&Rect], _out: (usize, usize)) -> Option<Rect> {
        changed.first().map(|r| (*r).clone())
    }

    fn region(&self, cx: &mut CpuCx, ins: &[&[f32]], r: &Rect, out: &mut [f32]) -> Result<()> {
        // The rectangle's positions gathered into one [C, positions] block, normalised as a
        // block is, and scattered back.
        let (c, h, w) = cx.out_map()?;
        let block: Vec<f32> = r.spans(c, (h, w)).flat_map(|span| ins[0][span].iter().copied()).collect();
        let pos = block.len() / c.max(1);
        let y = self.normalise(Grid { c, pos, cs: pos, ps: 1 }, &block);
        let mut rows = y.chunks_exact(r.cols.len().max(1));
        for span in r.spans(c, (h, w)) {
            if let Some(row) = rows.next() {
                out[span].copy_from_slice(row);
            }
        }
        Ok(())
    }
}

/// The ONNX op this file maps (torch's decomposed form below opset 17 is fused into it
/// first; a per-channel affine after it folds into γ and β, see [`super::affine`]).
pub(super) const ONNX: &[(&str, Mapping)] = &[("LayerNormalization", onnx)];

/// LayerNormalization over the last axis: of a channels-last view (the channels at each
/// position, ConvNeXt's LayerNorm) or of a flat vector; scale and bias optional.
fn onnx(im: &mut dyn Import) -> Step<()> {
    let (x, last) = im.view_in(0)?;
    let rank = match im.shape(x) {
        Shape::Map(..) if last => 4,
        Shape::Flat(_) => 2,
        s => {
            return Err(format!(
                "LayerNormalization of a {s} map in channels-first order: only over channels-last \
                 data's last axis or a flat vector"
            ))
        }
    };
    let axis = im.int("axis", -1);
    if !(axis == -1 || axis == rank - 1) {
        return Err(format!("axis {axis}: only normalisation over the last axis is supported"));
    }
    let c = im.shape(x).channels();
    // No scale: γ = 1 (the fused form of older opsets, whose Mul γ and Add β fold in after).
    let weight = match im.const_in(1)? {
        Some(w) => w.f32s(),
        None => vec![1.0; c],
    };
    let bias = match im.const_in(2)? {
        Some(b) => b.f32s(),
        None => vec![0.0; c],
    };
    // Lengths and ε are checked by the op's shape inference in `push`, finiteness with every
    // parameter when the graph is finished.
    let eps = im.float("epsilon", 1e-5);
    let id = im.push(Op::LayerNorm(LayerNorm { weight, bias, eps }), &[x], "")?;
    im.set(view(id, last))
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::{conv, Case, Rng};
    use super::Op;
    use crate::model::graph::{GraphBuilder, NodeId};
    use crate::model::nonlinearity::Nonlinearity;
    fn norm(r: &mut Rng, c: usize) -> LayerNorm {
        LayerNorm {
            weight: r.uniform(c, 0.5).iter().map(|v| 1.0 + *v as f32).collect(),
            bias: r.uniform(c, 0.2).iter().map(|v| *v as f32).collect(),
            eps: 1e-6,
        }
    }
    /// ConvNeXt's block: depthwise 7×7 (here 3×3) → LayerNorm → 1×1 ×4 → GELU → 1×1 back.
    fn block(b: &mut GraphBuilder, x: NodeId, r: &mut Rng) -> NodeId {
        let dw = b.push("dw", conv(r, 8, 8, [3, 3], 1, [1; 4], 1, 8), &[x]);
        let ln = b.push("ln", Op::LayerNorm(norm(r, 8)), &[dw]);
        let up = b.push("up", conv(r, 16, 8, [1, 1], 1, [0; 4], 1, 1), &[ln]);
        let a = b.act("gelu", Nonlinearity::Gelu, up);
        let down = b.push("down", conv(r, 8, 16, [1, 1], 1, [0; 4], 1, 1), &[a]);
        b.push("t", Op::Add(super::Add), &[x, down])
    }
    vec![
        Case::new("layer norm over channels", |b, x, r| {
            let pre = b.push("pre", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[x]);
            b.push("t", Op::LayerNorm(norm(r, 8)), &[pre])
        }),
        Case::new("ConvNeXt block", block),
        Case::new("layer norm on a flat vector", |b, x, r| {
            let f = b.push("flat", Op::Flatten(super::Flatten), &[x]);
            b.push("t", Op::LayerNorm(norm(r, 8 * 9 * 9)), &[f])
        }),
    ]
}

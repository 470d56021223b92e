//! A fixed selection of channels, y[:, j] = x[:, index[j]]: ShuffleNet's channel shuffle (the
//! permutation that `view(N, g, C/g, H, W) → transpose(1, 2) → view(N, C, H, W)` makes) and its
//! split of the channels into halves (`chunk`, exported as `Slice`s). Linear: its tangent is
//! itself, its vector–Jacobian product adds each output channel's gradient back onto the
//! channel it came from. On the CPU's channel-major blocks each output channel is one copied
//! plane. Occlusion: channel-wise, so a changed rectangle stays as it is.

use super::{CpuCx, CpuKept, Layer, Rect, TensorCx, TensorKept};
use crate::error::Result;
use crate::model::kernels::Buf;
use crate::model::shape::Shape;
use candle_core::Tensor;
use std::sync::Arc;

/// The channels `index` of a feature map, in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// For each output channel, the input channel it copies.
    pub index: Vec<usize>,
}

impl Channels {
    /// The channel shuffle of `c` channels in `groups` groups: output channel o reads input
    /// channel (o mod g)·(c/g) + ⌊o/g⌋.
    pub fn shuffle(c: usize, groups: usize) -> Self {
        let per = c / groups.max(1);
        Self { index: (0..c).map(|o| (o % groups) * per + o / groups).collect() }
    }

    fn tensor_index(&self, cx: &TensorCx) -> Result<Tensor> {
        let idx: Vec<u32> = self.index.iter().map(|&i| i as u32).collect();
        Ok(Tensor::from_vec(idx, self.index.len(), cx.device)?)
    }
}

impl Layer for Channels {
    fn kind(&self) -> &'static str {
        "channels"
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        let [x] = ins else { return Err(format!("takes 1 input, got {}", ins.len())) };
        let (c, h, w) = x.map()?;
        if self.index.is_empty() {
            return Err("selects no channel".into());
        }
        if let Some(&i) = self.index.iter().find(|&&i| i >= c) {
            return Err(format!("selects channel {i} of a {c}-channel input"));
        }
        Ok(Shape::Map(self.index.len(), h, w))
    }

    fn tensor_forward(
        &self,
        cx: &mut TensorCx,
        ins: &[&Tensor],
        _rank: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok((ins[0].index_select(&self.tensor_index(cx)?, 1)?, None))
    }

    fn tensor_vjp(&self, cx: &mut TensorCx, g: &Tensor, _kept: &TensorKept) -> Result<Vec<Tensor>> {
        let dims = cx.ins[0].dims(g.dim(0)?);
        let zeros = Tensor::zeros(dims, g.dtype(), g.device())?;
        Ok(vec![zeros.index_add(&self.tensor_index(cx)?, &g.contiguous()?, 1)?])
    }

    fn cpu_forward(
        &self,
        cx: &mut CpuCx,
        ins: &[&Buf],
        _rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        let plane = cx.n * cx.out_map().map(|(_, h, w)| h * w)?;
        let mut y = Vec::with_capacity(self.index.len() * plane);
        for &i in &self.index {
            y.extend_from_slice(&ins[0][i * plane..][..plane]);
        }
        Ok((Arc::new(y), None))
    }

    fn cpu_vjp(&self, cx: &mut CpuCx, g: &Buf, _kept: &CpuKept) -> Result<Vec<Buf>> {
        let (c, h, w) = cx.in_map(0)?;
        let plane = cx.n * h * w;
        let mut gx = vec![0.0f32; c * plane];
        for (j, &i) in self.index.iter().enumerate() {
            for (d, &v) in gx[i * plane..][..plane].iter_mut().zip(&g[j * plane..][..plane]) {
                *d += v;
            }
        }
        Ok(vec![Arc::new(gx)])
    }

    fn reach(&self, changed: &[&Rect], _out: (usize, usize)) -> Option<Rect> {
        changed.first().map(|r| (*r).clone())
    }

    fn region(&self, cx: &mut CpuCx, ins: &[&[f32]], r: &Rect, out: &mut [f32]) -> Result<()> {
        let (_, h, w) = cx.out_map()?;
        for (j, &i) in self.index.iter().enumerate() {
            for span in r.spans(1, (h, w)) {
                let (src, dst) = (i * h * w, j * h * w);
                out[dst + span.start..dst + span.end]
                    .copy_from_slice(&ins[0][src + span.start..src + span.end]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::{conv, Case};
    use super::{Concat, Op};
    vec![
        Case::new("channel shuffle of two groups", |b, x, _| {
            b.push("t", Op::Channels(Channels::shuffle(8, 2)), &[x])
        }),
        Case::new("halves, a branch, concat and shuffle (a ShuffleNet unit)", |b, x, r| {
            let lo = b.push("lo", Op::Channels(Channels { index: (0..4).collect() }), &[x]);
            let hi = b.push("hi", Op::Channels(Channels { index: (4..8).collect() }), &[x]);
            let br = b.push("branch", conv(r, 4, 4, [3, 3], 1, [1; 4], 1, 4), &[hi]);
            let cat = b.push("cat", Op::Concat(Concat), &[lo, br]);
            b.push("t", Op::Channels(Channels::shuffle(8, 2)), &[cat])
        }),
        Case::new("channels repeated and dropped", |b, x, _| {
            b.push("t", Op::Channels(Channels { index: vec![0, 0, 5, 3, 5] }), &[x])
        }),
    ]
}

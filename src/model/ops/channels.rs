//! A fixed selection of channels, y[:, j] = x[:, index[j]]: ShuffleNet's channel shuffle (the
//! permutation that `view(N, g, C/g, H, W) → transpose(1, 2) → view(N, C, H, W)` makes) and its
//! split of the channels into halves (`chunk`, exported as `Slice`s). Linear: its tangent is
//! itself, its vector–Jacobian product adds each output channel's gradient back onto the
//! channel it came from. On the CPU's channel-major blocks each output channel is one copied
//! plane. Occlusion: channel-wise, so a changed rectangle stays as it is.

use super::{CpuCx, CpuKept, Layer, Rect, TensorCx, TensorKept};
use super::{Import, Mapping, Op};
use crate::error::Result;
use crate::model::kernels::Buf;
use crate::model::mapping::{Step, Val, BATCH};
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

/// The ONNX ops this file maps: Slice and Split of channels (the channel shuffle's last
/// Reshape comes here through [`unshuffle`]).
pub(super) const ONNX: &[(&str, Mapping)] = &[("Slice", onnx_slice), ("Split", onnx_split)];

/// A channel shuffle's last step: the [N, C/g, g, H, W] view of `x` back to [N, C, H, W],
/// which permutes x's channels.
pub(crate) fn unshuffle(im: &mut dyn Import, x: usize, g: usize) -> Step<()> {
    let (c, h, w) = im.map_hw(x)?;
    let target = im.const_in(1)?.ok_or("has no constant target shape")?.i64s().ok_or("non-integer shape")?;
    let fits = |i: usize, want: usize| target.get(i).is_some_and(|&d| d == want as i64 || d == -1 || d == 0);
    let batch =
        target.first().is_some_and(|&d| d == 0 || d == -1 || d == BATCH || Some(d) == im.fixed_batch());
    if !(target.len() == 4 && batch && fits(1, c) && fits(2, h) && fits(3, w)) {
        return Err(format!(
            "Reshape of a channel shuffle's view to {target:?}: only back to [N, {c}, {h}, {w}]"
        ));
    }
    let id = im.push(Op::Channels(Channels::shuffle(c, g)), &[x], "")?;
    im.set(Val::Node(id))
}

/// Slice of a feature map's channels (ShuffleNet's split into halves) with constant bounds,
/// step 1.
fn onnx_slice(im: &mut dyn Import) -> Step<()> {
    let x = match im.val(0)? {
        Some(Val::Const(_)) => return Err("Slice of a constant is not supported".into()),
        _ => im.node_in(0)?,
    };
    let (c, _, _) = im.map_hw(x)?;
    let list = |i: usize, attr_name: &str| -> Step<Option<Vec<i64>>> {
        Ok(match im.const_in(i)? {
            Some(v) => Some(v.i64s().ok_or("non-integer Slice bounds")?),
            None => im.ints_attr(attr_name),
        })
    };
    let starts = list(1, "starts")?.ok_or("has no starts")?;
    let ends = list(2, "ends")?.ok_or("has no ends")?;
    let axes = list(3, "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = list(4, "steps")?.unwrap_or_else(|| vec![1; starts.len()]);
    let &[start] = starts.as_slice() else {
        return Err("only a Slice along one axis is supported".into());
    };
    let (&[end], &[axis], &[step]) = (ends.as_slice(), axes.as_slice(), steps.as_slice()) else {
        return Err("only a Slice along one axis is supported".into());
    };
    if !(axis == 1 || axis == -3) || step != 1 {
        return Err(format!("Slice along axis {axis} with step {step}: only channels (axis 1), step 1"));
    }
    let clamp = |v: i64| (if v < 0 { v.saturating_add(c as i64) } else { v }).clamp(0, c as i64) as usize;
    let (a, b) = (clamp(start), clamp(end));
    if a >= b {
        return Err(format!("Slice of channels {start}..{end} of {c} is empty"));
    }
    let id = im.push(Op::Channels(Channels { index: (a..b).collect() }), &[x], "")?;
    im.set(Val::Node(id))
}

/// Split of a feature map's channels (torch.chunk as the dynamo exporter writes it): each
/// output a channel selection. Sizes from the `split` input (opset 13) or attribute, else
/// equal parts for the outputs (`num_outputs` from opset 18: parts of ⌈C/k⌉, the last
/// smaller).
fn onnx_split(im: &mut dyn Import) -> Step<()> {
    let x = im.node_in(0)?;
    let (c, _, _) = im.map_hw(x)?;
    let axis = im.int("axis", 0);
    if !(axis == 1 || axis == -3) {
        return Err(format!("Split along axis {axis}: only channels (axis 1)"));
    }
    let k = im.outputs().len();
    let sizes: Vec<i64> = match im.const_in(1)? {
        Some(v) => v.i64s().ok_or("non-integer split sizes")?,
        None => match im.ints_attr("split") {
            Some(s) => s,
            None => {
                let part = c.div_ceil(k.max(1)) as i64;
                (0..k as i64).map(|i| part.min(c as i64 - i * part).max(0)).collect()
            }
        },
    };
    if sizes.len() != k || sizes.iter().any(|&v| v <= 0) || sizes.iter().sum::<i64>() != c as i64 {
        return Err(format!("Split of {c} channels into sizes {sizes:?} for {k} outputs"));
    }
    im.check_outputs()?;
    let mut start = 0usize;
    for (i, &size) in sizes.iter().enumerate() {
        let range = start..start + size as usize;
        start = range.end;
        if im.outputs()[i].is_empty() {
            continue;
        }
        let op = Op::Channels(Channels { index: range.collect() });
        let id = im.push(op, &[x], &format!("/{i}"))?;
        im.bind(i, Val::Node(id));
    }
    Ok(())
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

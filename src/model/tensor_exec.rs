//! The graph's ops as candle tensor ops: the device-generic executor (CUDA runs here) and
//! the path autograd sees (training, and the reference the CPU kernels are tested against).
//!
//! Layout: feature maps [B,C,H,W], flat vectors [B,F]. Convolutions use candle's `conv2d`
//! (groups as candle splits them) after explicit zero padding, so asymmetric padding works;
//! their vector–Jacobian product is `conv_transpose2d` per group, cropped back to the input.
//! A 3×3, stride-1, padding-1, ungrouped convolution uses [`super::conv::Conv3x3`] instead,
//! whose own autograd backward is made of matmuls (fast training). Pooling gathers each
//! window's values with one `index_select` over the flattened plane (a sentinel element past
//! the end stands for padding: −∞ for max, 0 for averages) and reduces the window axis; the
//! max's arg-max is kept for routing, so the gradient goes whole to the first maximum (candle's
//! own `max_pool2d` backward divides it by the window size; see ../shared/DESIGN.md).
//! Every op here is differentiable by candle's autograd.

use super::conv::Conv3x3;
use super::graph::{Conv, Graph, NodeId, Nonlinearity, Op, Shape};
use super::nonlinearity::{eval_tensor, rescale_tensor, Activation, Rule};
use super::sweep::Exec;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, D};
use std::collections::HashMap;

/// A pool's gather table: for each output position, `k` source indices into the flattened
/// input plane (`len` = the sentinel past its end) and their weights (averages).
struct Table {
    index: Tensor,
    weights: Option<Tensor>,
    k: usize,
    len: usize,
}

/// The candle executor for one graph at one input size.
pub(crate) struct TensorExec<'a> {
    graph: &'a Graph,
    shapes: &'a [Shape],
    batch: usize,
    dtype: DType,
    device: Device,
    tables: HashMap<NodeId, Table>,
}

impl<'a> TensorExec<'a> {
    /// An executor for `batch` images of `dtype` on `device`, with the graph's `shapes` at
    /// their input size.
    pub fn new(graph: &'a Graph, shapes: &'a [Shape], batch: usize, dtype: DType, device: &Device) -> Self {
        Self { graph, shapes, batch, dtype, device: device.clone(), tables: HashMap::new() }
    }

    fn dims(&self, id: NodeId) -> Vec<usize> {
        match self.shapes[id] {
            Shape::Map(c, h, w) => vec![self.batch, c, h, w],
            Shape::Flat(f) => vec![self.batch, f],
        }
    }

    fn map_dims(&self, id: NodeId) -> Result<(usize, usize, usize)> {
        match self.shapes[id] {
            Shape::Map(c, h, w) => Ok((c, h, w)),
            Shape::Flat(_) => {
                Err(Error::Invalid(format!("node `{}` is not a feature map", self.graph.nodes()[id].name)))
            }
        }
    }

    /// The gather table of pooling node `id` (built once).
    fn table(&mut self, id: NodeId, op: &Op) -> Result<&Table> {
        if !self.tables.contains_key(&id) {
            let input = self.graph.nodes()[id].inputs[0];
            let (_, h, w) = self.map_dims(input)?;
            let (_, oh, ow) = self.map_dims(id)?;
            let (idx, wts, k) = pool_table(op, (h, w), (oh, ow));
            let index = Tensor::from_vec(idx, oh * ow * k, &self.device)?;
            let weights = match wts {
                Some(v) => Some(Tensor::from_vec(v, (oh * ow, k), &self.device)?.to_dtype(self.dtype)?),
                None => None,
            };
            self.tables.insert(id, Table { index, weights, k, len: h * w });
        }
        self.tables.get(&id).ok_or_else(|| Error::Invalid("pool table".into()))
    }

    /// Windows [B,C,OH·OW,k] of `x` [B,C,H,W], padding filled with `pad`.
    fn windows(&mut self, id: NodeId, op: &Op, x: &Tensor, pad: f64) -> Result<Tensor> {
        let (b, c, _, _) = x.dims4()?;
        let dtype = self.dtype;
        let t = self.table(id, op)?;
        let flat = x.reshape((b, c, t.len))?;
        let sentinel = Tensor::full(pad, (b, c, 1), x.device())?.to_dtype(dtype)?;
        let flat = Tensor::cat(&[&flat, &sentinel], 2)?;
        let k = t.k;
        let gathered = flat.index_select(&t.index, 2)?;
        Ok(gathered.reshape((b, c, gathered.dim(2)? / k, k))?)
    }

    /// The adjoint of [`TensorExec::windows`]: windows [B,C,OH·OW,k] summed back onto
    /// [B,C,H,W] of node `id`'s input.
    fn unwindow(&mut self, id: NodeId, op: &Op, g: &Tensor) -> Result<Tensor> {
        let input = self.graph.nodes()[id].inputs[0];
        let (c, h, w) = self.map_dims(input)?;
        let b = g.dim(0)?;
        let t = self.table(id, op)?;
        let flat = g.reshape((b, c, g.dim(2)? * t.k))?;
        let zeros = Tensor::zeros((b, c, t.len + 1), flat.dtype(), flat.device())?;
        let back = zeros.index_add(&t.index, &flat, 2)?;
        Ok(back.narrow(2, 0, h * w)?.reshape((b, c, h, w))?)
    }

    fn conv(&self, conv: &Conv, x: &Tensor, bias: bool) -> Result<Tensor> {
        let w = conv.weight.to_dtype(self.dtype)?;
        let [pt, pl, pb, pr] = conv.padding;
        let plain3 = w.dims()[2..] == [3, 3] && conv.padding == [1; 4] && conv.stride == [1; 2];
        let out = if plain3 && conv.dilation == [1; 2] && conv.groups == 1 {
            Conv3x3::new(&w)?.forward(x)?
        } else {
            let (s, d) = square(conv)?;
            let xp = x.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
            xp.conv2d(&w, 0, s, d, conv.groups)?
        };
        match (&conv.bias, bias) {
            (Some(b), true) => {
                let o = b.dim(0)?;
                Ok(out.broadcast_add(&b.to_dtype(self.dtype)?.reshape((1, o, 1, 1))?)?)
            }
            _ => Ok(out),
        }
    }

    fn conv_vjp(&self, id: NodeId, conv: &Conv, g: &Tensor) -> Result<Tensor> {
        let input = self.graph.nodes()[id].inputs[0];
        let (c, h, w) = self.map_dims(input)?;
        let weight = conv.weight.to_dtype(self.dtype)?;
        let (o, _, kh, kw) = weight.dims4()?;
        let [pt, pl, pb, pr] = conv.padding;
        if weight.dims()[2..] == [3, 3]
            && conv.padding == [1; 4]
            && conv.stride == [1; 2]
            && conv.dilation == [1; 2]
            && conv.groups == 1
        {
            // The input-gradient of a padding-1 3×3 conv: a padding-1 conv of g with the
            // kernel's channels swapped and its taps flipped.
            let back = weight.transpose(0, 1)?.contiguous()?.flip(&[2, 3])?;
            return Ok(Conv3x3::new(&back)?.forward(g)?);
        }
        let (s, d) = square(conv)?;
        let (hp, wp) = (h + pt + pb, w + pl + pr);
        let (oh, ow) = (g.dim(2)?, g.dim(3)?);
        let out_pad_h = hp - ((oh - 1) * s + d * (kh - 1) + 1);
        let out_pad_w = wp - ((ow - 1) * s + d * (kw - 1) + 1);
        if out_pad_h != out_pad_w {
            return Err(Error::Invalid(format!(
                "node `{}`: the tensor path needs equal leftover rows and columns",
                self.graph.nodes()[id].name
            )));
        }
        let groups = conv.groups;
        let (og, cg) = (o / groups, c / groups);
        let mut parts = Vec::with_capacity(groups);
        for gi in 0..groups {
            let gg = if groups == 1 { g.clone() } else { g.narrow(1, gi * og, og)?.contiguous()? };
            let wg =
                if groups == 1 { weight.clone() } else { weight.narrow(0, gi * og, og)?.contiguous()? };
            parts.push(gg.conv_transpose2d(&wg, 0, out_pad_h, s, d)?);
        }
        let full = if parts.len() == 1 { parts.remove(0) } else { Tensor::cat(&parts, 1)? };
        debug_assert_eq!(full.dim(1).ok(), Some(cg * groups));
        Ok(full.narrow(2, pt, h)?.narrow(3, pl, w)?)
    }

    fn affine(&self, scale: &[f32], shift: Option<&[f32]>, x: &Tensor) -> Result<Tensor> {
        let c = scale.len();
        let shape: Vec<usize> = if x.rank() == 4 { vec![1, c, 1, 1] } else { vec![1, c] };
        let s = Tensor::from_slice(scale, c, x.device())?.to_dtype(x.dtype())?.reshape(shape.clone())?;
        let y = x.broadcast_mul(&s)?;
        Ok(match shift {
            Some(t) => {
                y.broadcast_add(&Tensor::from_slice(t, c, x.device())?.to_dtype(x.dtype())?.reshape(shape)?)?
            }
            None => y,
        })
    }

    /// The ops that are linear in their inputs (plus a bias): their forward pass with
    /// `bias`, their tangent without. Pools go through [`TensorExec::windows`] instead.
    fn linear(&self, id: NodeId, op: &Op, ins: &[&Tensor], bias: bool) -> Result<Tensor> {
        match op {
            Op::Conv(conv) => self.conv(conv, ins[0], bias),
            Op::Linear(l) => {
                let y = ins[0].matmul(&l.weight.to_dtype(self.dtype)?.t()?)?;
                match (&l.bias, bias) {
                    (Some(b), true) => Ok(y.broadcast_add(&b.to_dtype(self.dtype)?)?),
                    _ => Ok(y),
                }
            }
            Op::Flatten => Ok(ins[0].flatten_from(1)?),
            Op::Add => Ok(ins[0].add(ins[1])?),
            Op::Concat => Ok(Tensor::cat(ins, 1)?),
            Op::Affine { scale, shift } => self.affine(scale, bias.then_some(shift.as_slice()), ins[0]),
            Op::Input | Op::Act(_) | Op::MaxPool(_) | Op::AvgPool { .. } | Op::AdaptiveAvgPool(_) => Err(
                Error::Invalid(format!("internal: op {} of node {id} has no linear form here", op.kind())),
            ),
        }
    }

    fn average(&mut self, id: NodeId, op: &Op, x: &Tensor) -> Result<Tensor> {
        let win = self.windows(id, op, x, 0.0)?;
        let t = self.table(id, op)?;
        let w = t.weights.clone().ok_or_else(|| Error::Invalid("average without weights".into()))?;
        let out = win.broadcast_mul(&w.unsqueeze(0)?.unsqueeze(0)?)?.sum(D::Minus1)?;
        let (c, oh, ow) = self.map_dims(id)?;
        Ok(out.reshape((x.dim(0)?, c, oh, ow))?)
    }

    fn max_gather(&mut self, id: NodeId, op: &Op, x: &Tensor, route: &Tensor) -> Result<Tensor> {
        let win = self.windows(id, op, x, f64::NEG_INFINITY)?;
        let (c, oh, ow) = self.map_dims(id)?;
        // Padding positions never win, so a tangent's sentinel value (−∞) is never picked.
        Ok(win.gather(route, D::Minus1)?.reshape((x.dim(0)?, c, oh, ow))?)
    }
}

/// A convolution's stride and dilation as candle takes them (equal on both axes).
fn square(conv: &Conv) -> Result<(usize, usize)> {
    if conv.stride[0] != conv.stride[1] || conv.dilation[0] != conv.dilation[1] {
        return Err(Error::Invalid(format!(
            "the tensor path needs equal row and column strides and dilations, got {:?} and {:?}",
            conv.stride, conv.dilation
        )));
    }
    Ok((conv.stride[0], conv.dilation[0]))
}

/// Source indices (k per output position, row-major; `h·w` = padding) and, for averages,
/// weights of a pooling op from an input `h×w` to an output `oh×ow`.
pub(crate) fn pool_table(
    op: &Op,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> (Vec<u32>, Option<Vec<f32>>, usize) {
    let pad = (h * w) as u32;
    match op {
        Op::MaxPool(win) | Op::AvgPool { window: win, .. } => {
            let k = win.kernel[0] * win.kernel[1];
            let mut idx = Vec::with_capacity(oh * ow * k);
            let mut wts = Vec::with_capacity(oh * ow * k);
            let include = matches!(op, Op::AvgPool { count_include_pad: true, .. });
            for (oy, ox) in (0..oh).flat_map(|y| (0..ow).map(move |x| (y, x))) {
                let mut count = 0usize;
                let start = idx.len();
                for ky in 0..win.kernel[0] {
                    for kx in 0..win.kernel[1] {
                        let y = (oy * win.stride[0] + ky) as isize - win.padding[0] as isize;
                        let x = (ox * win.stride[1] + kx) as isize - win.padding[1] as isize;
                        let inside = y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w;
                        // count_include_pad counts the declared padding, not positions a
                        // ceil-mode window hangs past it (PyTorch).
                        let in_padded =
                            y < (h + win.padding[2]) as isize && x < (w + win.padding[3]) as isize;
                        if inside {
                            idx.push((y as usize * w + x as usize) as u32);
                            count += 1;
                        } else {
                            idx.push(pad);
                            if include && in_padded {
                                count += 1;
                            }
                        }
                    }
                }
                let norm = 1.0 / count.max(1) as f32;
                wts.extend(idx[start..].iter().map(|&i| if i == pad { 0.0 } else { norm }));
            }
            let weights = matches!(op, Op::AvgPool { .. }).then_some(wts);
            (idx, weights, k)
        }
        Op::AdaptiveAvgPool(_) => {
            let bins = |o: usize, out: usize, len: usize| (o * len / out, ((o + 1) * len).div_ceil(out));
            let ky = (0..oh).map(|o| bins(o, oh, h)).map(|(a, b)| b - a).max().unwrap_or(1);
            let kx = (0..ow).map(|o| bins(o, ow, w)).map(|(a, b)| b - a).max().unwrap_or(1);
            let k = ky * kx;
            let mut idx = Vec::with_capacity(oh * ow * k);
            let mut wts = Vec::with_capacity(oh * ow * k);
            for oy in 0..oh {
                let (y0, y1) = bins(oy, oh, h);
                for ox in 0..ow {
                    let (x0, x1) = bins(ox, ow, w);
                    let norm = 1.0 / ((y1 - y0) * (x1 - x0)) as f32;
                    for dy in 0..ky {
                        for dx in 0..kx {
                            let (y, x) = (y0 + dy, x0 + dx);
                            if y < y1 && x < x1 {
                                idx.push((y * w + x) as u32);
                                wts.push(norm);
                            } else {
                                idx.push(pad);
                                wts.push(0.0);
                            }
                        }
                    }
                }
            }
            (idx, Some(wts), k)
        }
        _ => (Vec::new(), None, 1),
    }
}

impl Exec for TensorExec<'_> {
    type Buf = Tensor;
    type Route = Tensor;

    fn forward(
        &mut self,
        id: NodeId,
        op: &Op,
        ins: &[&Tensor],
        rank: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        match op {
            Op::MaxPool(_) => {
                let ranked = self.windows(id, op, rank.unwrap_or(ins[0]), f64::NEG_INFINITY)?;
                let route = ranked.detach().argmax_keepdim(D::Minus1)?.contiguous()?;
                let out = self.max_gather(id, op, ins[0], &route)?;
                Ok((out, Some(route)))
            }
            Op::AvgPool { .. } | Op::AdaptiveAvgPool(_) => Ok((self.average(id, op, ins[0])?, None)),
            _ => Ok((self.linear(id, op, ins, true)?, None)),
        }
    }

    fn tangent(&mut self, id: NodeId, op: &Op, ins: &[&Tensor], route: Option<&Tensor>) -> Result<Tensor> {
        match op {
            Op::MaxPool(_) => {
                let route = route.ok_or_else(|| Error::Invalid("max-pool without routes".into()))?;
                self.max_gather(id, op, ins[0], route)
            }
            Op::AvgPool { .. } | Op::AdaptiveAvgPool(_) => self.average(id, op, ins[0]),
            _ => self.linear(id, op, ins, false),
        }
    }

    fn vjp(&mut self, id: NodeId, op: &Op, g: &Tensor, route: Option<&Tensor>) -> Result<Vec<Tensor>> {
        let node = &self.graph.nodes()[id];
        Ok(match op {
            Op::Conv(conv) => vec![self.conv_vjp(id, conv, g)?],
            Op::Linear(l) => vec![g.matmul(&l.weight.to_dtype(self.dtype)?)?],
            Op::Flatten => vec![g.reshape(self.dims(node.inputs[0]))?],
            Op::Add => vec![g.clone(), g.clone()],
            Op::Concat => {
                let mut at = 0;
                let mut parts = Vec::with_capacity(node.inputs.len());
                for &i in &node.inputs {
                    let (c, _, _) = self.map_dims(i)?;
                    parts.push(g.narrow(1, at, c)?);
                    at += c;
                }
                parts
            }
            Op::Affine { scale, .. } => vec![self.affine(scale, None, g)?],
            Op::MaxPool(_) => {
                let route = route.ok_or_else(|| Error::Invalid("max-pool without routes".into()))?;
                let (b, c, oh, ow) = g.dims4()?;
                let k = self.table(id, op)?.k;
                // One-hot slots of the routes times g: a product, which autograd follows
                // (candle 0.11's backward of scatter_add fails on these shapes).
                let slot = Tensor::arange(0u32, k as u32, g.device())?.reshape((1, 1, 1, k))?;
                let hot = route.broadcast_eq(&slot)?.to_dtype(g.dtype())?;
                let spread = hot.broadcast_mul(&g.reshape((b, c, oh * ow, 1))?)?;
                vec![self.unwindow(id, op, &spread)?]
            }
            Op::AvgPool { .. } | Op::AdaptiveAvgPool(_) => {
                let (b, c, oh, ow) = g.dims4()?;
                let w = self
                    .table(id, op)?
                    .weights
                    .clone()
                    .ok_or_else(|| Error::Invalid("average without weights".into()))?;
                let spread = g.reshape((b, c, oh * ow, 1))?.broadcast_mul(&w.unsqueeze(0)?.unsqueeze(0)?)?;
                vec![self.unwindow(id, op, &spread)?]
            }
            Op::Input | Op::Act(_) => return Err(Error::Invalid(format!("internal: vjp of {}", op.kind()))),
        })
    }

    fn activate(&mut self, kind: Nonlinearity, act: Activation, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let (v, d, _) = eval_tensor(kind, act, z, false)?;
        Ok((v, d))
    }

    fn rule_backward(
        &mut self,
        kind: Nonlinearity,
        act: Activation,
        rule: Rule,
        z: &Tensor,
        d: &Tensor,
        z0: Option<&Tensor>,
        g: &Tensor,
    ) -> Result<Tensor> {
        Ok(match rule {
            Rule::Gradient => g.mul(d)?,
            Rule::Guided => g.relu()?.mul(d)?,
            Rule::Deconvnet => g.relu()?,
            Rule::Rescale => {
                let z0 = z0.ok_or_else(|| Error::Invalid("the rescale rule needs a baseline".into()))?;
                g.mul(&rescale_tensor(kind, act, z, z0, false)?.0)?
            }
        })
    }

    fn rule_adjoint(
        &mut self,
        kind: Nonlinearity,
        act: Activation,
        rule: Rule,
        z: &Tensor,
        d: &Tensor,
        z0: Option<&Tensor>,
        g: &Tensor,
        lam: &Tensor,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let smooth = !kind.flat_second(act);
        let second = |s: &Tensor, gg: &Tensor| -> Result<Option<Tensor>> { Ok(Some(gg.mul(s)?.mul(lam)?)) };
        Ok(match rule {
            Rule::Gradient => {
                let zbar = if smooth {
                    second(&eval_tensor(kind, act, z, true)?.2.ok_or_else(no_second)?, g)?
                } else {
                    None
                };
                (d.mul(lam)?, zbar)
            }
            Rule::Guided => {
                let up = g.gt(0.0)?.to_dtype(g.dtype())?;
                let zbar = if smooth {
                    second(&eval_tensor(kind, act, z, true)?.2.ok_or_else(no_second)?, &g.relu()?)?
                } else {
                    None
                };
                (d.mul(&up)?.mul(lam)?, zbar)
            }
            Rule::Deconvnet => (g.gt(0.0)?.to_dtype(g.dtype())?.mul(lam)?, None),
            Rule::Rescale => {
                let z0 = z0.ok_or_else(|| Error::Invalid("the rescale rule needs a baseline".into()))?;
                let (m, dm) = rescale_tensor(kind, act, z, z0, true)?;
                (m.mul(lam)?, second(&dm.ok_or_else(no_second)?, g)?)
            }
        })
    }

    fn add(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(a.add(b)?)
    }

    fn zeros(&mut self, id: NodeId) -> Result<Tensor> {
        Ok(Tensor::zeros(self.dims(id), self.dtype, &self.device)?)
    }
}

fn no_second() -> Error {
    Error::Invalid("internal: second derivative not computed".into())
}

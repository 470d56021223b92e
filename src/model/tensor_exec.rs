//! The candle executor: the device-generic one (CUDA runs here) and the path autograd sees
//! (training, and the reference the CPU kernels are tested against).
//!
//! Layout: feature maps [B,C,H,W], flat vectors [B,F]. Each layer op's arithmetic is its own
//! file's ([`super::ops`]); this executor gives it a [`TensorCx`] (shapes, dtype, device and a
//! cache slot per node for data such as gather tables) and runs the nonlinearities and their
//! rules from their one definition ([`super::nonlinearity`]). Every op here is
//! differentiable by candle's autograd.

use super::graph::{Graph, NodeId, Nonlinearity, Op, Shape};
use super::lrp::{Modified, Pointwise};
use super::nonlinearity::{eval_tensor, rescale_tensor, Activation, Rule};
use super::ops::{Layer, Prepared, TensorCx, TensorKept};
use super::sweep::Exec;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// The candle executor for one graph at one input size.
pub(crate) struct TensorExec<'a> {
    graph: &'a Graph,
    shapes: &'a [Shape],
    batch: usize,
    dtype: DType,
    device: Device,
    /// Each node's cached data (gather tables), built on first use.
    cache: Vec<Option<Prepared>>,
}

impl<'a> TensorExec<'a> {
    /// An executor for `batch` images of `dtype` on `device`, with the graph's `shapes` at
    /// their input size.
    pub fn new(graph: &'a Graph, shapes: &'a [Shape], batch: usize, dtype: DType, device: &Device) -> Self {
        let cache = (0..shapes.len()).map(|_| None).collect();
        Self { graph, shapes, batch, dtype, device: device.clone(), cache }
    }

    /// Runs `f` on node `id`'s layer op with its context.
    fn with_layer<T>(
        &mut self,
        id: NodeId,
        op: &Op,
        f: impl FnOnce(&dyn Layer, &mut TensorCx) -> Result<T>,
    ) -> Result<T> {
        let node = &self.graph.nodes()[id];
        let layer =
            op.layer().ok_or_else(|| Error::Invalid(format!("internal: {} is not a layer op", op.kind())))?;
        let ins: Vec<Shape> = node.inputs.iter().map(|&i| self.shapes[i]).collect();
        let mut cx = TensorCx::new(
            &node.name,
            &ins,
            self.shapes[id],
            (self.batch, self.dtype, &self.device),
            &mut self.cache[id],
        );
        f(layer, &mut cx)
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
        self.with_layer(id, op, |l, cx| l.tensor_forward(cx, ins, rank))
    }

    fn tangent(&mut self, id: NodeId, op: &Op, ins: &[&Tensor], kept: &TensorKept) -> Result<Tensor> {
        self.with_layer(id, op, |l, cx| l.tensor_tangent(cx, ins, kept))
    }

    fn vjp(&mut self, id: NodeId, op: &Op, g: &Tensor, kept: &TensorKept) -> Result<Vec<Tensor>> {
        self.with_layer(id, op, |l, cx| l.tensor_vjp(cx, g, kept))
    }

    fn second(
        &mut self,
        id: NodeId,
        op: &Op,
        g: &Tensor,
        lam: &[&Tensor],
        kept: &TensorKept,
    ) -> Result<Vec<Option<Tensor>>> {
        self.with_layer(id, op, |l, cx| l.tensor_second(cx, g, lam, kept))
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
            Rule::Lrp(_) => g.clone(),
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
            Rule::Lrp(_) => (lam.clone(), None),
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
        Ok(Tensor::zeros(self.shapes[id].dims(self.batch), self.dtype, &self.device)?)
    }

    fn pointwise(&mut self, op: Pointwise, a: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        op.tensor(a, b)
    }

    /// [B,C,…]: value k on channel k (dimension 1).
    fn fill_like(&mut self, like: &Tensor, values: &[f32]) -> Result<Tensor> {
        let mut dims = vec![1usize; like.rank()];
        if values.len() > 1 {
            dims[1] = values.len();
        }
        let v = Tensor::from_slice(values, dims, like.device())?.to_dtype(like.dtype())?;
        Ok(v.broadcast_as(like.shape())?.contiguous()?)
    }

    fn forward_modified(&mut self, id: NodeId, m: &Modified, ins: &[&Tensor], bias: bool) -> Result<Tensor> {
        let none = TensorKept { route: None, inputs: &[] };
        if bias {
            Ok(self.forward(id, &m.op, ins, None)?.0)
        } else {
            self.tangent(id, &m.op, ins, &none)
        }
    }

    fn vjp_modified(&mut self, id: NodeId, m: &Modified, g: &Tensor) -> Result<Vec<Tensor>> {
        self.vjp(id, &m.op, g, &TensorKept { route: None, inputs: &[] })
    }
}

fn no_second() -> Error {
    Error::Invalid("internal: second derivative not computed".into())
}

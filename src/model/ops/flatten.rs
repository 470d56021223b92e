//! Flatten: a feature map [B,C,H,W] → [B,C·H·W] in NCHW order (a flat input passes as is).
//! On the CPU the block layout changes from channel-major [C, n, H·W] to rows [n, C·H·W], so
//! flattening is a transpose there (its VJP the inverse one). Occlusion: it mixes all
//! positions, so it starts the head.

use super::{CpuCx, CpuKept, Layer, TensorCx, TensorKept};
use super::{Import, Mapping, Op};
use crate::error::Result;
use crate::model::kernels::{transpose, Buf};
use crate::model::mapping::{Step, Val};
use crate::model::shape::Shape;
use candle_core::Tensor;
use std::sync::Arc;

/// Flatten to [B, F].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flatten;

impl Layer for Flatten {
    fn kind(&self) -> &'static str {
        "flatten"
    }

    fn infer(&self, ins: &[Shape]) -> std::result::Result<Shape, String> {
        let [x] = ins else { return Err(format!("takes 1 input, got {}", ins.len())) };
        Ok(Shape::Flat(x.checked_len().ok_or("its input's size overflows")?))
    }

    fn tensor_forward(
        &self,
        _cx: &mut TensorCx,
        ins: &[&Tensor],
        _rank: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok((ins[0].flatten_from(1)?, None))
    }

    fn tensor_vjp(&self, cx: &mut TensorCx, g: &Tensor, _kept: &TensorKept) -> Result<Vec<Tensor>> {
        Ok(vec![g.reshape(cx.ins[0].dims(cx.batch))?])
    }

    fn cpu_forward(
        &self,
        cx: &mut CpuCx,
        ins: &[&Buf],
        _rank: Option<&Buf>,
    ) -> Result<(Buf, Option<Vec<u32>>)> {
        Ok((
            match cx.ins[0] {
                Shape::Map(c, h, w) => Arc::new(transpose(ins[0], c, cx.n, h * w)),
                Shape::Flat(_) => ins[0].clone(),
            },
            None,
        ))
    }

    fn cpu_vjp(&self, cx: &mut CpuCx, g: &Buf, _kept: &CpuKept) -> Result<Vec<Buf>> {
        Ok(vec![match cx.ins[0] {
            Shape::Map(c, h, w) => Arc::new(transpose(g, cx.n, c, h * w)),
            Shape::Flat(_) => g.clone(),
        }])
    }
}

/// Every case's network flattens before its head (layer_tests.rs); this one flattens a
/// flat vector (a no-op) and stops a pass at the flattened node.
/// The ONNX op this file maps (Reshape and Squeeze to [N, F] also come here, through
/// [`flat`]).
pub(super) const ONNX: &[(&str, Mapping)] = &[("Flatten", onnx)];

fn onnx(im: &mut dyn Import) -> Step<()> {
    let x = im.node_in(0)?;
    let axis = im.int("axis", 1);
    if !(axis == 1 || (axis == -3 && matches!(im.shape(x), Shape::Map(..)))) {
        return Err(format!("axis {axis}: only flattening after the batch axis (axis = 1) is supported"));
    }
    flat(im, x)
}

/// Binds the node's output to graph node `x` as [N, F]: a Flatten node for a map, `x` itself
/// when already flat.
pub(crate) fn flat(im: &mut dyn Import, x: usize) -> Step<()> {
    let id = match im.shape(x) {
        Shape::Map(..) => im.push(Op::Flatten(Flatten), &[x], "")?,
        Shape::Flat(_) => x,
    };
    im.set(Val::Node(id))
}

#[cfg(test)]
pub(super) fn cases() -> Vec<super::cases::Case> {
    use super::cases::Case;
    use super::Op;
    vec![Case::new("flatten (then flatten again)", |b, x, _| {
        let f = b.push("flat", Op::Flatten(Flatten), &[x]);
        b.push("t", Op::Flatten(Flatten), &[f])
    })]
}

//! A nonlinearity node ([`Op::Act`]) as the ONNX import builds it. The function's math, rules
//! and ONNX op names are in [`crate::model::nonlinearity`] (one file per function); the passes
//! apply it themselves, so it has no [`super::Layer`].

use super::{Import, Op};
use crate::model::mapping::{view, Step};
use crate::model::nonlinearity::Nonlinearity;

/// An elementwise `kind` of the node's input: a map, a flat vector or a channels-last view
/// (which the output keeps).
pub(crate) fn map(im: &mut dyn Import, kind: Nonlinearity) -> Step<()> {
    let (x, last) = im.view_in(0)?;
    let id = im.push(Op::Act(kind), &[x], "")?;
    im.set(view(id, last))
}

//! The layer test table's vocabulary: a [`Case`] builds the layer under test on top of a
//! convolution's output (8 channels, 9×9, after a ReLU) in a small graph that
//! src/model/layer_tests.rs checks three ways. Each op file lists its cases in `cases()`.

use super::{Conv, Op, Window};
use crate::model::graph::{GraphBuilder, NodeId};
use crate::model::nonlinearity::Nonlinearity;
use candle_core::{Device, Tensor};

/// How the layer under test is built on node `x` (8 channels, 9×9); returns its node, which
/// must be named `t`.
pub(crate) type Build = std::rc::Rc<dyn Fn(&mut GraphBuilder, NodeId, &mut Rng) -> NodeId>;

/// One case of the layer test table.
#[derive(Clone)]
pub(crate) struct Case {
    /// What it tests.
    pub name: &'static str,
    /// How it is built.
    pub build: Build,
}

impl Case {
    /// A case.
    pub fn new(
        name: &'static str,
        build: impl Fn(&mut GraphBuilder, NodeId, &mut Rng) -> NodeId + 'static,
    ) -> Self {
        Self { name, build: std::rc::Rc::new(build) }
    }
}

/// A small deterministic generator for the cases' weights and inputs.
pub(crate) struct Rng(pub u64);

impl Rng {
    /// `n` values uniform in (−scale, scale).
    pub fn uniform(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    /// A tensor of `dims` uniform in (−scale, scale) (f64).
    pub fn tensor(&mut self, dims: &[usize], scale: f64) -> Tensor {
        let n = dims.iter().product();
        Tensor::from_vec(self.uniform(n, scale), dims, &Device::Cpu).unwrap()
    }
}

/// A convolution with random weights and bias.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    rng: &mut Rng,
    o: usize,
    c: usize,
    k: [usize; 2],
    stride: usize,
    pad: [usize; 4],
    dil: usize,
    groups: usize,
) -> Op {
    let scale = 1.5 / ((c / groups * k[0] * k[1]) as f64).sqrt();
    Op::Conv(Conv {
        weight: rng.tensor(&[o, c / groups, k[0], k[1]], scale),
        bias: Some(rng.tensor(&[o], 0.1)),
        stride: [stride; 2],
        padding: pad,
        dilation: [dil; 2],
        groups,
    })
}

/// A square window.
pub(crate) fn window(k: usize, s: usize, p: usize, ceil: bool) -> Window {
    Window { kernel: [k; 2], stride: [s; 2], padding: [p; 4], ceil_mode: ceil }
}

/// `kind` after a 1×1 convolution, so that it sees inputs of both signs (a case's layer reads
/// a ReLU's output).
pub(crate) fn signed_act(b: &mut GraphBuilder, x: NodeId, r: &mut Rng, kind: Nonlinearity) -> NodeId {
    let c = b.push("pre", conv(r, 8, 8, [1, 1], 1, [0; 4], 1, 1), &[x]);
    b.act("t", kind, c)
}

//! A composite applied to one graph: each node's step of the relevance pass, and the modified
//! parameter copies its rule runs, made once per model and composite.

use super::composite::{Composite, CompositeKind, FirstLayer};
use super::rule::{Group, LrpRule};
use crate::error::{Error, Result};
use crate::model::graph::{Graph, NodeId, Op, Shape};
use crate::model::ops::{Prepared, Relevance};

/// A layer op with modified parameters, with its CPU kernels' data when the model has them.
pub(crate) struct Modified {
    /// The op with the modified weight and bias.
    pub op: Op,
    /// Its [`crate::model::ops::Layer::cpu_weights`].
    pub cpu: Option<Prepared>,
}

impl std::fmt::Debug for Modified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Modified").field("op", &self.op.kind()).finish()
    }
}

/// A node with a rule: its groups of terms, the parameter copies they run, and (z^B) the
/// box of its input per channel.
#[derive(Debug)]
pub(crate) struct Ruled {
    pub groups: Vec<Group>,
    pub modified: Vec<Modified>,
    /// (lowest, highest) input value per channel (z^B only).
    pub bounds: Option<(Vec<f32>, Vec<f32>)>,
}

/// What the relevance pass does at one node.
#[derive(Debug)]
pub(crate) enum Step {
    /// The vector–Jacobian product (also the input node and every nonlinearity's `Pass`, which
    /// the pass handles itself).
    Gradient,
    /// Relevance to input k whole, none to the others.
    Pass(usize),
    /// A rule.
    Rule(Box<Ruled>),
}

/// A composite on a graph.
#[derive(Debug)]
pub(crate) struct Plan {
    pub composite: Composite,
    pub steps: Vec<Step>,
}

impl Plan {
    /// Assigns `composite`'s rules to `graph`'s nodes, with the CPU kernels' data for the
    /// modified copies when `cpu`. A product's `Pass` input (the signal, not the gate) is the
    /// one of the output's shape at input size `hw` and, where the graph takes it, at four
    /// times that size (a late stage's map may be 1×1 like its gate at `hw`).
    pub fn new(graph: &Graph, composite: Composite, hw: (usize, usize), cpu: bool) -> Result<Self> {
        composite.validate().map_err(|e| Error::Invalid(format!("{}: {e}", composite.kind.name())))?;
        let shapes = graph.shapes(hw)?;
        let large = graph.shapes((hw.0 * 4, hw.1 * 4)).unwrap_or_else(|_| shapes.clone());
        let nodes = graph.nodes();
        let first = first_layer(graph, composite);
        let mut steps = Vec::with_capacity(nodes.len());
        for (id, node) in nodes.iter().enumerate() {
            let Some(layer) = node.op.layer() else {
                steps.push(Step::Gradient);
                continue;
            };
            let rule = match layer.relevance() {
                Relevance::Gradient => None,
                Relevance::Pass => {
                    let keeps = |&i: &NodeId| shapes[i] == shapes[id] && large[i] == large[id];
                    let k = node.inputs.iter().position(keeps).unwrap_or(0);
                    steps.push(Step::Pass(k));
                    continue;
                }
                Relevance::Norm => Some(LrpRule::Norm(composite.stabilizer)),
                Relevance::Dense | Relevance::Convolution if Some(id) == first => Some(first_rule(composite)),
                Relevance::Dense => Some(LrpRule::Epsilon(composite.epsilon)),
                Relevance::Convolution => Some(conv_rule(composite)),
            };
            let Some(rule) = rule else {
                steps.push(Step::Gradient);
                continue;
            };
            let bounds = match rule {
                LrpRule::ZBox(_) => Some(box_bounds(graph, &shapes, node.inputs[0], composite)?),
                _ => None,
            };
            let modified = rule
                .params()
                .into_iter()
                .map(|m| modify(&node.op, m, cpu))
                .collect::<Result<Vec<_>>>()
                .map_err(|e| Error::Invalid(format!("LRP at node `{}`: {e}", node.name)))?;
            steps.push(Step::Rule(Box::new(Ruled { groups: rule.groups(), modified, bounds })));
        }
        Ok(Self { composite, steps })
    }

    /// Whether node `id` is a nonlinear op (a product of activations, a softmax, a layer
    /// norm) that passes relevance as its gradient: that gradient depends on the op's
    /// inputs, so its forward pass keeps them and the adjoint adds its second-order terms.
    pub fn gradient_of_nonlinear(&self, graph: &Graph, id: NodeId) -> bool {
        matches!(self.steps[id], Step::Gradient)
            && graph.nodes()[id].op.layer().is_some_and(|l| l.nonlinear())
    }

    /// The nodes whose outputs the relevance pass reads (the inputs of every rule).
    pub fn reads(&self, graph: &Graph) -> Vec<NodeId> {
        let mut read = vec![false; self.steps.len()];
        for (step, node) in self.steps.iter().zip(graph.nodes()) {
            if let Step::Rule(_) = step {
                node.inputs.iter().for_each(|&i| read[i] = true);
            }
        }
        (0..read.len()).filter(|&i| read[i]).collect()
    }
}

/// The rule of a convolution other than the first layer.
fn conv_rule(c: Composite) -> LrpRule {
    let s = c.stabilizer;
    match c.kind {
        CompositeKind::EpsilonPlus | CompositeKind::EpsilonPlusFlat => LrpRule::ZPlus(s),
        CompositeKind::EpsilonGammaBox => LrpRule::Gamma { gamma: c.gamma, stabilizer: s },
        CompositeKind::EpsilonAlpha2Beta1 | CompositeKind::EpsilonAlpha2Beta1Flat => {
            LrpRule::AlphaBeta { alpha: 2.0, beta: 1.0, stabilizer: s }
        }
    }
}

/// The rule of the first layer: the `first_layer` setting's, else the composite's (flat, z^B,
/// or, where the composite has none, its convolution rule).
fn first_rule(c: Composite) -> LrpRule {
    let s = c.stabilizer;
    match (c.first_layer, c.kind) {
        (Some(FirstLayer::WSquare), _) => LrpRule::WSquare(s),
        (Some(FirstLayer::Flat), _) => LrpRule::Flat(s),
        (None, CompositeKind::EpsilonPlusFlat | CompositeKind::EpsilonAlpha2Beta1Flat) => LrpRule::Flat(s),
        (None, CompositeKind::EpsilonGammaBox) => LrpRule::ZBox(s),
        (None, _) => conv_rule(c),
    }
}

/// The node that gets the composite's first-layer rule: the first convolution or dense layer
/// in graph order (the first convolution where the composite's own first rule is z^B or none:
/// a dense layer keeps ε there).
fn first_layer(graph: &Graph, c: Composite) -> Option<NodeId> {
    let dense_too = c.kind.flat_first() || c.first_layer.is_some();
    graph.nodes().iter().position(|n| match n.op.layer().map(|l| l.relevance()) {
        Some(Relevance::Convolution) => true,
        Some(Relevance::Dense) => dense_too,
        _ => false,
    })
}

/// The box of node `input`'s values per channel: the composite's pixel range [low, high]
/// through the affine nodes (input normalisation) between the image and `input`; as given
/// when anything else stands between them.
fn box_bounds(graph: &Graph, shapes: &[Shape], input: NodeId, c: Composite) -> Result<(Vec<f32>, Vec<f32>)> {
    let channels = match shapes[input] {
        Shape::Map(ch, ..) => ch,
        Shape::Flat(f) => f,
    };
    let mut chain = Vec::new();
    let mut at = input;
    while at != 0 {
        let node = &graph.nodes()[at];
        match &node.op {
            Op::Affine(a) if node.inputs.len() == 1 => chain.push(a),
            _ => return Ok((vec![c.low; channels], vec![c.high; channels])),
        }
        at = node.inputs[0];
    }
    let (mut low, mut high) = (vec![c.low; graph.channels()], vec![c.high; graph.channels()]);
    for a in chain.into_iter().rev() {
        if a.scale.len() != low.len() {
            return Ok((vec![c.low; channels], vec![c.high; channels]));
        }
        for k in 0..low.len() {
            let (p, q) = (low[k] * a.scale[k] + a.shift[k], high[k] * a.scale[k] + a.shift[k]);
            (low[k], high[k]) = (p.min(q), p.max(q));
        }
    }
    Ok((low, high))
}

/// A copy of `op` with its weight and bias modified by `m`.
fn modify(op: &Op, m: super::rule::ParamMod, cpu: bool) -> Result<Modified> {
    let layer = op.layer().ok_or_else(|| Error::Invalid("not a layer op".into()))?;
    let names: Vec<&str> = layer.tensors().into_iter().map(|(n, _)| n).collect();
    let mut copy = op.clone();
    let target = copy.layer_mut().ok_or_else(|| Error::Invalid("not a layer op".into()))?;
    for (name, t) in names.into_iter().zip(target.tensors_mut()) {
        *t = m.apply(t, name == "bias")?;
    }
    let cpu = if cpu { copy.layer().and_then(|l| l.cpu_weights().transpose()).transpose()? } else { None };
    Ok(Modified { op: copy, cpu })
}

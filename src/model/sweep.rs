//! The passes over a [`Graph`], written once for every executor.
//!
//! * [`forward`]: every node in topological order, keeping what the backward pass needs:
//!   each nonlinearity's input z and derivative φ′(z), each max-pool's routes, and the values
//!   the caller asks for (a Grad-CAM layer, the logits).
//! * [`backward`]: from gradients seeded at some nodes (the logits' upstream gradient) down
//!   to a stop node (the input, or a layer), each op's vector–Jacobian product and at each
//!   nonlinearity the pass's [`Rule`] (gradient, guided, deconvnet, DeepLIFT rescale against
//!   a baseline's forward pass). Max-pools route to the arg-max of the real input, whatever
//!   the rule.
//! * [`adjoint`]: the gradient ∇ₓ(⟨M(x), v⟩ + ⟨A(x), a⟩) of a map M = the backward pass's
//!   result at the stop node, with A the stop node's activation (Grad-CAM weights both).
//!   M depends on x through the pre-activations z of the nonlinearities above the stop node,
//!   so its adjoint is a forward (tangent) sweep of v from the stop node up, multiplying by
//!   ∂ρ/∂g at each nonlinearity and dropping z̄ = ∂ρ/∂z·λ there, then one ordinary gradient
//!   pass of all the z̄ (and a) down to the input. For the gradient rule at the input this is
//!   Pearlmutter's Hessian–vector product (R-operator); for the other rules the map's
//!   Jacobian is not symmetric and this reverse form is the one that is right. Only
//!   nonlinearities add second-order terms; every other op reuses its linear part.
//!
//! An executor ([`Exec`]) supplies the per-op arithmetic on its own buffers: candle tensors
//! [B,…] ([`super::tensor_exec`]) or one block of images in plain f32 slices
//! ([`super::cpu_exec`]).

use super::graph::{Graph, NodeId, Nonlinearity, Op};
use super::lrp::{self, Modified, Plan, Pointwise};
use super::nonlinearity::{Activation, Rule};
use super::ops::Kept;
use super::Backprop;
use crate::error::{Error, Result};

/// The per-op arithmetic of one executor. Buffers hold one node's values for the batch (or
/// block) in the executor's layout.
pub(crate) trait Exec {
    /// One node's values.
    type Buf: Clone;
    /// What a max-pool's forward pass keeps for routing (its arg-maxes).
    type Route;

    /// The output of `op` (not an input, not a nonlinearity) at node `id` from its inputs;
    /// a max-pool ranks windows by `rank` when given (same layout as its input) and returns
    /// its routes.
    fn forward(
        &mut self,
        id: NodeId,
        op: &Op,
        ins: &[&Self::Buf],
        rank: Option<&Self::Buf>,
    ) -> Result<(Self::Buf, Option<Self::Route>)>;

    /// The linear part of `op` applied to tangents `ins` (no bias; max-pools follow their
    /// routes, nonlinear ops are linearised at their kept inputs).
    fn tangent(
        &mut self,
        id: NodeId,
        op: &Op,
        ins: &[&Self::Buf],
        kept: &Kept<Self::Buf, Self::Route>,
    ) -> Result<Self::Buf>;

    /// The vector–Jacobian product of `op` at node `id`: one gradient per input.
    fn vjp(
        &mut self,
        id: NodeId,
        op: &Op,
        g: &Self::Buf,
        kept: &Kept<Self::Buf, Self::Route>,
    ) -> Result<Vec<Self::Buf>>;

    /// A nonlinear op's second-order terms (see [`super::ops::Layer::tensor_second`]).
    fn second(
        &mut self,
        id: NodeId,
        op: &Op,
        g: &Self::Buf,
        lam: &[&Self::Buf],
        kept: &Kept<Self::Buf, Self::Route>,
    ) -> Result<Vec<Option<Self::Buf>>>;

    /// φ(z) alone (a pass that no backward pass follows), taking z: an executor may reuse
    /// its buffer when no one else holds it.
    fn apply(&mut self, kind: Nonlinearity, act: Activation, z: Self::Buf) -> Result<Self::Buf> {
        Ok(self.activate(kind, act, &z)?.0)
    }

    /// φ(z) and φ′(z) of a nonlinearity.
    fn activate(
        &mut self,
        kind: Nonlinearity,
        act: Activation,
        z: &Self::Buf,
    ) -> Result<(Self::Buf, Self::Buf)>;

    /// The rule's gradient with respect to z (see [`super::nonlinearity::backward`]).
    #[allow(clippy::too_many_arguments)]
    fn rule_backward(
        &mut self,
        kind: Nonlinearity,
        act: Activation,
        rule: Rule,
        z: &Self::Buf,
        d: &Self::Buf,
        z0: Option<&Self::Buf>,
        g: &Self::Buf,
    ) -> Result<Self::Buf>;

    /// The rule's adjoint (see [`super::nonlinearity::adjoint`]): (λ for g, z̄), z̄ `None`
    /// where it is zero (ReLU, deconvnet).
    #[allow(clippy::too_many_arguments)]
    fn rule_adjoint(
        &mut self,
        kind: Nonlinearity,
        act: Activation,
        rule: Rule,
        z: &Self::Buf,
        d: &Self::Buf,
        z0: Option<&Self::Buf>,
        g: &Self::Buf,
        lam: &Self::Buf,
    ) -> Result<(Self::Buf, Option<Self::Buf>)>;

    /// Whether [`Exec::activate_pooled`] is implemented: a softplus nonlinearity read only
    /// by a max-pool then runs on the pooled maxima alone.
    fn pools_before_activating(&self) -> bool {
        false
    }

    /// φ of the pooled pre-activations `pooled` (the window maxima of z at max-pool node
    /// `pool`, whose routes `route` are) and φ′ at z's routed positions, zero elsewhere:
    /// (pooled φ, full-size φ′).
    fn activate_pooled(
        &mut self,
        _pool: NodeId,
        _kind: Nonlinearity,
        _act: Activation,
        _pooled: &Self::Buf,
        _route: &Self::Route,
    ) -> Result<(Self::Buf, Self::Buf)> {
        Err(Error::Invalid("internal: this executor does not pool before activating".into()))
    }

    /// a + b.
    fn add(&mut self, a: &Self::Buf, b: &Self::Buf) -> Result<Self::Buf>;

    /// LRP's elementwise arithmetic ([`Pointwise`]) of a and b (same shapes).
    fn pointwise(&mut self, op: Pointwise, a: &Self::Buf, b: Option<&Self::Buf>) -> Result<Self::Buf>;

    /// A buffer shaped like `like` holding `values` per channel (one value: everywhere).
    fn fill_like(&mut self, like: &Self::Buf, values: &[f32]) -> Result<Self::Buf>;

    /// Node `id`'s op with LRP's modified parameters `m` on `ins`, with its bias or (without)
    /// its linear part.
    fn forward_modified(
        &mut self,
        id: NodeId,
        m: &Modified,
        ins: &[&Self::Buf],
        bias: bool,
    ) -> Result<Self::Buf>;

    /// The vector–Jacobian product of node `id`'s op with LRP's modified parameters `m`.
    fn vjp_modified(&mut self, id: NodeId, m: &Modified, g: &Self::Buf) -> Result<Vec<Self::Buf>>;

    /// Zeros shaped like node `id`'s output.
    fn zeros(&mut self, id: NodeId) -> Result<Self::Buf>;
}

/// What a forward pass keeps.
pub(crate) struct Forward<E: Exec> {
    /// Kept node outputs (the logits, and the nodes the caller asked for).
    pub values: Vec<Option<E::Buf>>,
    /// Each nonlinearity's input z.
    pub pre: Vec<Option<E::Buf>>,
    /// Each nonlinearity's derivative φ′(z).
    pub deriv: Vec<Option<E::Buf>>,
    /// Each max-pool's routes.
    pub routes: Vec<Option<E::Route>>,
    /// Each nonlinear op's inputs (where a backward pass goes through it).
    pub inputs: Vec<Option<Vec<E::Buf>>>,
}

impl<E: Exec> Forward<E> {
    /// An empty pass over `n` nodes.
    pub fn empty(n: usize) -> Self {
        let mut routes = Vec::new();
        routes.resize_with(n, || None);
        Self {
            values: vec![None; n],
            pre: vec![None; n],
            deriv: vec![None; n],
            routes,
            inputs: vec![None; n],
        }
    }

    /// What node `id`'s forward pass kept.
    pub fn kept(&self, id: NodeId) -> Kept<'_, E::Buf, E::Route> {
        Kept { route: self.routes[id].as_ref(), inputs: self.inputs[id].as_deref().unwrap_or(&[]) }
    }

    /// The kept output of node `id`.
    pub fn value(&self, id: NodeId) -> Result<&E::Buf> {
        self.values[id].as_ref().ok_or_else(|| Error::Invalid(format!("node {id}'s output was not kept")))
    }
}

/// What a forward pass is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Values only: on the real model (ReLU) no nonlinearity's z or φ′ is kept, and a
    /// nonlinearity may overwrite its input in place when nothing else reads it
    /// (predictions, perturbation methods).
    Values,
    /// A backward or adjoint pass to this node follows: keep z, φ′ and the routes of the
    /// nonlinearities above it (those below it are as for [`Purpose::Values`]).
    Backward(NodeId),
}

impl Purpose {
    /// The forward pass a backward pass to `stop` needs; an `adjoint` ([`adjoint`]) ends
    /// with a gradient pass down to the input, so it needs every nonlinearity's derivative.
    pub fn backward_to(stop: NodeId, adjoint: bool) -> Self {
        Purpose::Backward(if adjoint { 0 } else { stop })
    }
}

/// Runs `graph` on input `x` with every nonlinearity under `act`. Node outputs are dropped
/// after their last reader unless `keep` lists them (the output node is always kept).
pub(crate) fn forward<E: Exec>(
    graph: &Graph,
    exec: &mut E,
    x: E::Buf,
    act: Activation,
    keep: &[NodeId],
    purpose: Purpose,
) -> Result<Forward<E>> {
    let nodes = graph.nodes();
    let n = nodes.len();
    let mut readers = vec![0usize; n];
    for node in nodes {
        for &i in &node.inputs {
            readers[i] += 1;
        }
    }
    let mut kept = vec![false; n];
    kept[graph.output()] = true;
    for &k in keep {
        kept[k] = true;
    }
    // The nonlinearities a backward pass will go through.
    let differentiated = match purpose {
        Purpose::Values => vec![false; n],
        Purpose::Backward(stop) => downstream(graph, stop),
    };
    let mut live: Vec<Option<E::Buf>> = vec![None; n];
    let mut fwd = Forward::empty(n);
    live[0] = Some(x);
    // Under the surrogate a max-pool ranks its windows by the pre-activation, so a monotone
    // nonlinearity read only by a max-pool (and not kept) need only be evaluated at the
    // window maxima: the pool runs on z first (where the executor supports it). A function
    // that is not monotone (SiLU, GELU, HardSwish) is evaluated everywhere and pooled after.
    let pools_first = matches!(act, Activation::Softplus { .. }) && exec.pools_before_activating();
    let deferred: Vec<bool> = (0..n)
        .map(|id| {
            pools_first
                && matches!(nodes[id].op, Op::Act(kind) if kind.monotone())
                && !kept[id]
                && readers[id] == 1
                && nodes.iter().skip(id + 1).any(|m| routes(&m.op) && m.inputs == [id])
        })
        .collect();
    for (id, node) in nodes.iter().enumerate().skip(1) {
        if deferred[id] {
            let z = node.inputs[0];
            fwd.pre[id] = Some(live[z].clone().ok_or_else(|| gone(graph, z))?);
            readers[z] -= 1;
            if readers[z] == 0 && !kept[z] {
                live[z] = None;
            }
            continue;
        }
        if let (true, Some(&a)) = (routes(&node.op), node.inputs.first()) {
            if deferred[a] {
                let (Op::Act(kind), Some(z)) = (&nodes[a].op, fwd.pre[a].as_ref()) else {
                    return Err(gone(graph, a));
                };
                let (pooled, route) = exec.forward(id, &node.op, &[z], Some(z))?;
                let route = route.ok_or_else(|| gone(graph, id))?;
                let (out, d) = exec.activate_pooled(id, *kind, act, &pooled, &route)?;
                fwd.deriv[a] = Some(d);
                fwd.routes[id] = Some(route);
                live[id] = Some(out);
                continue;
            }
        }
        // (Under the surrogate a max-pool reads z to rank its windows, so z is kept there.)
        if let (Op::Act(kind), Activation::Exact, false) = (&node.op, act, differentiated[id]) {
            let z = node.inputs[0];
            readers[z] -= 1;
            let zv = if readers[z] == 0 && !kept[z] { live[z].take() } else { live[z].clone() };
            live[id] = Some(exec.apply(*kind, act, zv.ok_or_else(|| gone(graph, z))?)?);
            continue;
        }
        let ins = inputs_of(graph, id, &live)?;
        let out = match &node.op {
            Op::Act(kind) => {
                let (a, d) = exec.activate(*kind, act, ins[0])?;
                fwd.pre[id] = Some(ins[0].clone());
                fwd.deriv[id] = Some(d);
                a
            }
            op => {
                // Under the surrogate a max-pool over a nonlinearity ranks its windows by the
                // pre-activation: the same order in exact arithmetic, without float32's
                // collapse of far-negative softplus outputs to one tied zero.
                let rank = match act {
                    Activation::Softplus { .. } if routes(op) => {
                        graph.act_input(node.inputs[0]).and(fwd.pre[node.inputs[0]].as_ref())
                    }
                    _ => None,
                };
                let (out, route) = exec.forward(id, op, &ins, rank)?;
                fwd.routes[id] = route;
                if differentiated[id] && nonlinear(op) {
                    fwd.inputs[id] = Some(ins.iter().map(|&b| b.clone()).collect());
                }
                out
            }
        };
        for &i in &node.inputs {
            readers[i] -= 1;
            if readers[i] == 0 && !kept[i] {
                live[i] = None;
            }
        }
        live[id] = Some(out);
    }
    for (id, k) in kept.iter().enumerate() {
        if *k {
            fwd.values[id] = live[id].take();
        }
    }
    Ok(fwd)
}

/// The output node's value from `values` (some nodes' values given) computing only the nodes
/// marked in `compute` (the rest must be given where they are read). For a graph's head run
/// from captured inputs (occlusion).
pub(crate) fn forward_masked<E: Exec>(
    graph: &Graph,
    exec: &mut E,
    mut values: Vec<Option<E::Buf>>,
    compute: &[bool],
    act: Activation,
) -> Result<E::Buf> {
    for (id, node) in graph.nodes().iter().enumerate().skip(1) {
        if !compute[id] {
            continue;
        }
        let ins = inputs_of(graph, id, &values)?;
        let out = match &node.op {
            Op::Act(kind) => exec.apply(*kind, act, ins[0].clone())?,
            op => exec.forward(id, op, &ins, None)?.0,
        };
        values[id] = Some(out);
    }
    values[graph.output()].take().ok_or_else(|| gone(graph, graph.output()))
}

/// Whether `op` routes by a rank (a max-pool; see [`super::ops::Layer::routes`]).
fn routes(op: &Op) -> bool {
    op.layer().is_some_and(|l| l.routes())
}

/// Whether `op` is not linear in its inputs (see [`super::ops::Layer::nonlinear`]).
fn nonlinear(op: &Op) -> bool {
    op.layer().is_some_and(|l| l.nonlinear())
}

/// The values node `id` reads, from `values` (indexed by node).
pub(crate) fn inputs_of<'v, B>(graph: &Graph, id: NodeId, values: &'v [Option<B>]) -> Result<Vec<&'v B>> {
    graph.nodes()[id].inputs.iter().map(|&i| values[i].as_ref().ok_or_else(|| gone(graph, i))).collect()
}

fn gone(graph: &Graph, id: NodeId) -> Error {
    Error::Invalid(format!("node `{}` was read after it was dropped", graph.nodes()[id].name))
}

/// The nodes that depend on `stop` (itself included).
pub(crate) fn downstream(graph: &Graph, stop: NodeId) -> Vec<bool> {
    let mut reach = vec![false; graph.nodes().len()];
    reach[stop] = true;
    for (id, node) in graph.nodes().iter().enumerate().skip(stop + 1) {
        reach[id] = node.inputs.iter().any(|&i| reach[i]);
    }
    reach
}

/// The backward pass under `rule` from the gradients `seeds` (indexed by node, with respect
/// to each node's output) down to node `stop`: the gradient there. With `keep_upstream`, also
/// each nonlinearity's upstream gradient g (with respect to its output), which
/// [`adjoint`] needs. `base` is the baseline's forward pass for the rescale rule, `plan` the
/// composite of [`Rule::Lrp`] on this graph (each rule's input relevance kept as upstream).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<E: Exec>(
    graph: &Graph,
    exec: &mut E,
    fwd: &Forward<E>,
    base: Option<&Forward<E>>,
    plan: Option<&Plan>,
    mut grads: Vec<Option<E::Buf>>,
    act: Activation,
    rule: Rule,
    stop: NodeId,
    keep_upstream: bool,
) -> Result<Backwarded<E::Buf>> {
    let nodes = graph.nodes();
    let reach = downstream(graph, stop);
    let mut upstream: Vec<Option<E::Buf>> = vec![None; nodes.len()];
    for id in (stop + 1..nodes.len()).rev() {
        if !reach[id] {
            continue;
        }
        let Some(g) = grads[id].take() else { continue };
        let node = &nodes[id];
        let lrp_plan = plan.filter(|_| rule.is_lrp());
        let parts = match (&node.op, lrp_plan) {
            // LRP's `Pass`.
            (Op::Act(_), Some(_)) => vec![g],
            (_, Some(plan)) => {
                let parts = lrp::pass::backward_node(graph, exec, plan, fwd, id, &g)?;
                if keep_upstream
                    && (matches!(plan.steps[id], lrp::Step::Rule(_)) || plan.gradient_of_nonlinear(graph, id))
                {
                    upstream[id] = Some(g);
                }
                parts
            }
            (&Op::Act(kind), None) => {
                let (z, d) = (cached(&fwd.pre, id)?, cached(&fwd.deriv, id)?);
                let z0 = reference(rule, base, id)?;
                let gz = exec.rule_backward(kind, act, rule, z, d, z0, &g)?;
                if keep_upstream {
                    upstream[id] = Some(g);
                }
                vec![gz]
            }
            (op, None) => {
                let parts = exec.vjp(id, op, &g, &fwd.kept(id))?;
                if keep_upstream && nonlinear(op) {
                    upstream[id] = Some(g);
                }
                parts
            }
        };
        for (&i, gi) in node.inputs.iter().zip(parts) {
            if reach[i] {
                accumulate(exec, &mut grads[i], gi)?;
            }
        }
    }
    let grad = match grads[stop].take() {
        Some(g) => g,
        None => exec.zeros(stop)?,
    };
    Ok(Backwarded { grad, upstream })
}

/// What [`backward`] returns.
pub(crate) struct Backwarded<B> {
    /// The gradient at the stop node.
    pub grad: B,
    /// Each nonlinearity's upstream gradient (when kept).
    pub upstream: Vec<Option<B>>,
}

/// The baseline's pre-activation at nonlinearity `id` for the rescale rule (None for the
/// other rules).
fn reference<E: Exec>(rule: Rule, base: Option<&Forward<E>>, id: NodeId) -> Result<Option<&E::Buf>> {
    match (rule, base) {
        (Rule::Rescale, Some(b)) => Ok(Some(cached(&b.pre, id)?)),
        (Rule::Rescale, None) => Err(Error::Invalid("the rescale rule needs a baseline pass".into())),
        _ => Ok(None),
    }
}

fn cached<B>(v: &[Option<B>], id: NodeId) -> Result<&B> {
    v[id].as_ref().ok_or_else(|| Error::Invalid(format!("node {id}: forward state missing")))
}

/// Adds `g` into `slot` (or puts it there when empty).
pub(crate) fn accumulate<E: Exec>(exec: &mut E, slot: &mut Option<E::Buf>, g: E::Buf) -> Result<()> {
    *slot = Some(match slot.take() {
        Some(old) => exec.add(&old, &g)?,
        None => g,
    });
    Ok(())
}

/// The tangents of node `id`'s inputs in an adjoint's upward sweep (`lam`, indexed by node;
/// zeros where none reached an input).
pub(crate) fn tangents_of<E: Exec>(
    graph: &Graph,
    exec: &mut E,
    id: NodeId,
    lam: &[Option<E::Buf>],
) -> Result<Vec<E::Buf>> {
    graph.nodes()[id]
        .inputs
        .iter()
        .map(|&i| match &lam[i] {
            Some(t) => Ok(t.clone()),
            None => exec.zeros(i),
        })
        .collect()
}

/// ∇ₓ(⟨M, `v`⟩ + ⟨A, `a`⟩) for the map M that [`backward`] computed at `stop` under `rule`
/// (with the nonlinearities' upstream gradients `upstream` it kept) and A = the stop node's
/// output (see the module docs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn adjoint<E: Exec>(
    graph: &Graph,
    exec: &mut E,
    fwd: &Forward<E>,
    base: Option<&Forward<E>>,
    upstream: &[Option<E::Buf>],
    act: Activation,
    rule: Rule,
    stop: NodeId,
    v: E::Buf,
    a: Option<E::Buf>,
) -> Result<E::Buf> {
    let nodes = graph.nodes();
    let reach = downstream(graph, stop);
    let mut sources: Vec<Option<E::Buf>> = vec![None; nodes.len()];
    let mut lam: Vec<Option<E::Buf>> = vec![None; nodes.len()];
    lam[stop] = Some(v);
    // The last nonlinearity or nonlinear op that depends on the stop node: nothing above it
    // adds a term.
    let top = (stop + 1..nodes.len())
        .rev()
        .find(|&i| reach[i] && (matches!(nodes[i].op, Op::Act(_)) || nonlinear(&nodes[i].op)));
    if let Some(top) = top {
        for id in stop + 1..=top {
            if !reach[id] {
                continue;
            }
            let node = &nodes[id];
            let ins = tangents_of(graph, exec, id, &lam)?;
            let refs: Vec<&E::Buf> = ins.iter().collect();
            lam[id] = Some(match node.op {
                Op::Act(kind) => {
                    let (z, d) = (cached(&fwd.pre, id)?, cached(&fwd.deriv, id)?);
                    let z0 = reference(rule, base, id)?;
                    let g = cached(upstream, id)?;
                    let (up, zbar) = exec.rule_adjoint(kind, act, rule, z, d, z0, g, refs[0])?;
                    if let Some(zbar) = zbar {
                        accumulate(exec, &mut sources[node.inputs[0]], zbar)?;
                    }
                    up
                }
                ref op => {
                    let kept = fwd.kept(id);
                    if nonlinear(op) {
                        // ⟨vjp(g), λ⟩ depends on the kept inputs too: its gradient with
                        // respect to each is a source of the final gradient pass.
                        let g = cached(upstream, id)?;
                        for (&i, s) in node.inputs.iter().zip(exec.second(id, op, g, &refs, &kept)?) {
                            if let Some(s) = s {
                                accumulate(exec, &mut sources[i], s)?;
                            }
                        }
                    }
                    exec.tangent(id, op, &refs, &kept)?
                }
            });
        }
    }
    if let Some(a) = a {
        accumulate(exec, &mut sources[stop], a)?;
    }
    Ok(backward(graph, exec, fwd, None, None, sources, act, Rule::Gradient, 0, false)?.grad)
}

/// The rescale rule's reference: images to run forward, or their forward pass already run
/// (one baseline shared by every row, computed once).
pub(crate) enum Reference<E: Exec> {
    /// Reference images, in the executor's layout.
    Images(E::Buf),
    /// Their forward pass.
    Pass(Forward<E>),
}

/// Stage one of every backward pass, on any executor: what [`stage`] keeps.
pub(crate) struct Stage<E: Exec> {
    /// The forward pass of the images.
    pub fwd: Forward<E>,
    /// The reference's forward pass (rescale rule).
    pub base: Option<Forward<E>>,
    /// Each nonlinearity's upstream gradient (kept for [`adjoint`]; LRP: each rule's
    /// relevance at its output).
    pub upstream: Vec<Option<E::Buf>>,
    /// LRP: the seed before it was multiplied by the logits (the adjoint's last term).
    pub seed: Option<E::Buf>,
    /// The logits, the map at the stop node and (layer stops) the stop node's output.
    pub out: Backprop<E::Buf>,
}

/// The one pass driver: the forward pass of `x` under `act` (keeping what a backward pass to
/// `stop` needs, and with `keep` what [`adjoint`] needs too), the reference's forward pass
/// for the rescale rule, and the backward pass under `rule` from `seed` (the logits' upstream
/// gradient) down to `stop`. Under [`Rule::Lrp`] (with its `plan`) the seed is multiplied by
/// the logits first, so that the relevance starts as the target logit.
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage<E: Exec>(
    graph: &Graph,
    exec: &mut E,
    x: E::Buf,
    seed: E::Buf,
    reference: Option<Reference<E>>,
    (act, rule, plan): (Activation, Rule, Option<&Plan>),
    stop: NodeId,
    keep: bool,
) -> Result<Stage<E>> {
    let mut kept: Vec<NodeId> = if stop > 0 { vec![stop] } else { Vec::new() };
    let plan = match (rule, plan) {
        (Rule::Lrp(_), Some(p)) if stop == 0 => {
            kept.extend(p.reads(graph));
            Some(p)
        }
        (Rule::Lrp(_), Some(_)) => {
            return Err(Error::Invalid("LRP relevance is computed at the input, not at a layer".into()))
        }
        (Rule::Lrp(c), None) => {
            return Err(Error::Invalid(format!("internal: {} without its plan", c.kind.name())))
        }
        _ => None,
    };
    // The relevance pass reads no nonlinearity's z or φ′ (it passes them unchanged), only the
    // rules' inputs in `kept`; its adjoint ends with a gradient pass, which does.
    let purpose = match plan {
        // (Unless a nonlinear op passes relevance as its gradient: it needs its inputs.)
        Some(p) if !keep && !(0..graph.nodes().len()).any(|id| p.gradient_of_nonlinear(graph, id)) => {
            Purpose::Values
        }
        _ => Purpose::backward_to(stop, keep),
    };
    let fwd = forward(graph, exec, x, act, &kept, purpose)?;
    let base = match (rule, reference) {
        (Rule::Rescale, Some(Reference::Images(b))) => Some(forward(graph, exec, b, act, &[], purpose)?),
        (Rule::Rescale, Some(Reference::Pass(f))) => Some(f),
        (Rule::Rescale, None) => {
            return Err(Error::Invalid("DeepLIFT's rescale rule needs a baseline".into()))
        }
        _ => None,
    };
    let out = graph.output();
    let (seed, onehot) = match plan {
        Some(_) => (exec.pointwise(Pointwise::Mul, &seed, Some(fwd.value(out)?))?, Some(seed)),
        None => (seed, None),
    };
    let mut seeds: Vec<Option<E::Buf>> = vec![None; graph.nodes().len()];
    seeds[out] = Some(seed);
    let g = backward(graph, exec, &fwd, base.as_ref(), plan, seeds, act, rule, stop, keep)?;
    let out = Backprop {
        logits: fwd.value(out)?.clone(),
        grad: g.grad,
        layer: if stop > 0 { Some(fwd.value(stop)?.clone()) } else { None },
    };
    Ok(Stage { fwd, base, upstream: g.upstream, seed: onehot, out })
}

impl<E: Exec> Stage<E> {
    /// Stage two: ∇ₓ(⟨M, `v`⟩ + ⟨A, `a`⟩) for the map M this stage computed (see [`adjoint`];
    /// LRP: [`lrp::pass::adjoint`]).
    pub fn adjoint(
        &self,
        graph: &Graph,
        exec: &mut E,
        (act, rule, plan): (Activation, Rule, Option<&Plan>),
        stop: NodeId,
        v: E::Buf,
        a: Option<E::Buf>,
    ) -> Result<E::Buf> {
        if let (Rule::Lrp(_), Some(plan), Some(seed)) = (rule, plan, self.seed.as_ref()) {
            return lrp::pass::adjoint(graph, exec, plan, &self.fwd, &self.upstream, seed, act, v);
        }
        adjoint(graph, exec, &self.fwd, self.base.as_ref(), &self.upstream, act, rule, stop, v, a)
    }
}

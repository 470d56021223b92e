//! The relevance pass and its adjoint, written once for every executor ([`Exec`]).
//!
//! Backward: at each node with a rule, R_in from R (see [`super::rule`]); elsewhere the
//! gradient, or `Pass`. Adjoint, for attacks: the map M(x) = R_input is a composition of the
//! rules' linear maps Bₗ(xₗ) (linear in R, depending on the layer's input xₗ), seeded with
//! R_L = e_t ⊙ logits. So ∇ₓ⟨M, v⟩ is a forward sweep of λ = v up the graph (λ ↦ Bₗᵀλ at
//! each rule, the tangent at gradient ops, unchanged at `Pass`), dropping at each rule (and at
//! each nonlinear op passed as its gradient: attention's products and softmax) the gradient
//! of ⟨Bₗ(xₗ)R, λ⟩ with respect to xₗ (R held), and at the logits e_t ⊙ λ; then one
//! ordinary gradient pass of all of them down to the input. For one group of a rule, with
//! s = mask ⊙ R / stab(z), t = Σₖ σₖ Vₖ(mₖ(x) ⊙ λ) and u = s ⊙ t / stab(z):
//!
//!   Bᵀλ = coef · mask ⊙ t / stab(z),   x̄ = coef · Σₖ σₖ mₖ′(x) ⊙ (λ ⊙ Vₖᵀs − Vₖᵀu)
//!
//! (the stabiliser's slope is 1; masks and the clamps' kinks are piecewise constant).
//! Under the softplus surrogate the forward values, and so the map, are smooth in x.

use super::plan::{Modified, Plan, Ruled, Step};
use super::pointwise::Pointwise;
use super::rule::{Group, InputMod, Mask, Term, Weights};
use crate::error::{Error, Result};
use crate::model::graph::{Graph, NodeId, Op};
use crate::model::nonlinearity::{Activation, Rule};
use crate::model::sweep::{self, Exec, Forward};

/// The relevance at node `id`'s inputs from `r` at its output (LRP's backward step).
pub(crate) fn backward_node<E: Exec>(
    graph: &Graph,
    exec: &mut E,
    plan: &Plan,
    fwd: &Forward<E>,
    id: NodeId,
    r: &E::Buf,
) -> Result<Vec<E::Buf>> {
    let node = &graph.nodes()[id];
    match &plan.steps[id] {
        Step::Gradient => exec.vjp(id, &node.op, r, &fwd.kept(id)),
        Step::Pass(k) => node
            .inputs
            .iter()
            .enumerate()
            .map(|(i, &input)| if i == *k { Ok(r.clone()) } else { exec.zeros(input) })
            .collect(),
        Step::Rule(ruled) => {
            let ins = sweep::inputs_of(graph, id, &fwd.values)?; // kept: Plan::reads
            relevance(exec, ruled, id, &node.op, r, &ins, fwd)
        }
    }
}

/// One rule's R_in = Σ_groups coef · Σₖ σₖ mₖ(x) ⊙ Vₖᵀ s.
fn relevance<E: Exec>(
    exec: &mut E,
    ruled: &Ruled,
    id: NodeId,
    op: &Op,
    r: &E::Buf,
    ins: &[&E::Buf],
    fwd: &Forward<E>,
) -> Result<Vec<E::Buf>> {
    let own = own_output(exec, ruled, id, op, ins)?;
    let mut out: Vec<Option<E::Buf>> = vec![None; ins.len()];
    for group in &ruled.groups {
        let modded = modified_inputs(exec, ruled, group, ins)?;
        let s = scaled(exec, ruled, group, r, &modded, own.as_ref(), id, op, fwd)?.0;
        for (term, m) in group.terms.iter().zip(&modded) {
            let c = term_vjp(exec, ruled, term, id, op, &s, fwd)?;
            for (i, (ci, mi)) in c.iter().zip(m).enumerate() {
                let part = match term.input {
                    InputMod::Ones => ci.clone(),
                    _ => exec.pointwise(Pointwise::Mul, mi, Some(ci))?,
                };
                add_scaled(exec, &mut out[i], part, group.coef * term.sign)?;
            }
        }
    }
    out.into_iter().zip(ins).map(|(o, x)| o.map_or_else(|| zeros_like(exec, x), Ok)).collect()
}

/// The layer's own output y = Wx + b, where a group is masked by its sign (γ).
fn own_output<E: Exec>(
    exec: &mut E,
    ruled: &Ruled,
    id: NodeId,
    op: &Op,
    ins: &[&E::Buf],
) -> Result<Option<E::Buf>> {
    if ruled.groups.iter().all(|g| g.mask.is_none()) {
        return Ok(None);
    }
    Ok(Some(exec.forward(id, op, ins, None)?.0))
}

/// Each term's inputs mₖ(x) (one per op input).
fn modified_inputs<E: Exec>(
    exec: &mut E,
    ruled: &Ruled,
    group: &Group,
    ins: &[&E::Buf],
) -> Result<Vec<Vec<E::Buf>>> {
    group
        .terms
        .iter()
        .map(|t| {
            ins.iter()
                .map(|&x| match t.input {
                    InputMod::Same => Ok(x.clone()),
                    InputMod::Pos => exec.pointwise(Pointwise::Pos, x, None),
                    InputMod::Neg => exec.pointwise(Pointwise::Neg, x, None),
                    InputMod::Ones => exec.fill_like(x, &[1.0]),
                    InputMod::Low | InputMod::High => {
                        let (low, high) = ruled
                            .bounds
                            .as_ref()
                            .ok_or_else(|| Error::Invalid("internal: a box rule without bounds".into()))?;
                        exec.fill_like(x, if t.input == InputMod::Low { low } else { high })
                    }
                })
                .collect()
        })
        .collect()
}

/// (s, z) of a group: z = Σₖ σₖ outₖ, s = mask ⊙ R / stab(z).
#[allow(clippy::too_many_arguments)]
fn scaled<E: Exec>(
    exec: &mut E,
    ruled: &Ruled,
    group: &Group,
    r: &E::Buf,
    modded: &[Vec<E::Buf>],
    own: Option<&E::Buf>,
    id: NodeId,
    op: &Op,
    fwd: &Forward<E>,
) -> Result<(E::Buf, E::Buf)> {
    let mut z: Option<E::Buf> = None;
    for (term, m) in group.terms.iter().zip(modded) {
        let refs: Vec<&E::Buf> = m.iter().collect();
        let out = term_out(exec, ruled, term, id, op, &refs, fwd)?;
        add_scaled(exec, &mut z, out, term.sign)?;
    }
    let z = z.ok_or_else(|| Error::Invalid("internal: a rule group without terms".into()))?;
    let mut s = exec.pointwise(Pointwise::Quotient(group.stabilizer), r, Some(&z))?;
    if let (Some(mask), Some(y)) = (group.mask, own) {
        s = exec.pointwise(Pointwise::Gate(mask), &s, Some(y))?;
    }
    Ok((s, z))
}

/// outₖ: the term's layer on its inputs, with or without its bias.
#[allow(clippy::too_many_arguments)]
fn term_out<E: Exec>(
    exec: &mut E,
    ruled: &Ruled,
    term: &Term,
    id: NodeId,
    op: &Op,
    ins: &[&E::Buf],
    fwd: &Forward<E>,
) -> Result<E::Buf> {
    match (term.weights, term.bias) {
        (Weights::Own, true) => Ok(exec.forward(id, op, ins, None)?.0),
        (Weights::Own, false) => exec.tangent(id, op, ins, &fwd.kept(id)),
        (Weights::Modified(k), bias) => exec.forward_modified(id, modified(ruled, k)?, ins, bias),
    }
}

/// The rule's modified copy k.
fn modified(ruled: &Ruled, k: usize) -> Result<&Modified> {
    ruled.modified.get(k).ok_or_else(|| Error::Invalid(format!("internal: no modified copy {k}")))
}

/// Vₖᵀg, one per input.
fn term_vjp<E: Exec>(
    exec: &mut E,
    ruled: &Ruled,
    term: &Term,
    id: NodeId,
    op: &Op,
    g: &E::Buf,
    fwd: &Forward<E>,
) -> Result<Vec<E::Buf>> {
    match term.weights {
        Weights::Own => exec.vjp(id, op, g, &fwd.kept(id)),
        Weights::Modified(k) => exec.vjp_modified(id, modified(ruled, k)?, g),
    }
}

/// slot += c·v (slot = c·v when empty).
fn add_scaled<E: Exec>(exec: &mut E, slot: &mut Option<E::Buf>, v: E::Buf, c: f32) -> Result<()> {
    *slot = Some(match slot.take() {
        Some(old) => exec.pointwise(Pointwise::AddScaled(c), &old, Some(&v))?,
        None if c == 1.0 => v,
        None => {
            let zero = zeros_like(exec, &v)?;
            exec.pointwise(Pointwise::AddScaled(c), &zero, Some(&v))?
        }
    });
    Ok(())
}

fn zeros_like<E: Exec>(exec: &mut E, v: &E::Buf) -> Result<E::Buf> {
    exec.fill_like(v, &[0.0])
}

/// What a rule's adjoint gives: λ at the node's output and x̄ per input (None where zero).
type Adjointed<B> = (B, Vec<Option<B>>);

/// A rule's adjoint at node `id`: (Bᵀλ at its output, x̄ per input) for the relevance `r`
/// at its output and the inputs' tangents `lam` (see the module docs).
#[allow(clippy::too_many_arguments)]
fn adjoint_node<E: Exec>(
    exec: &mut E,
    ruled: &Ruled,
    id: NodeId,
    op: &Op,
    r: &E::Buf,
    ins: &[&E::Buf],
    lam: &[&E::Buf],
    fwd: &Forward<E>,
) -> Result<Adjointed<E::Buf>> {
    let own = own_output(exec, ruled, id, op, ins)?;
    let mut up: Option<E::Buf> = None;
    let mut xbar: Vec<Option<E::Buf>> = vec![None; ins.len()];
    for group in &ruled.groups {
        let modded = modified_inputs(exec, ruled, group, ins)?;
        let (s, z) = scaled(exec, ruled, group, r, &modded, own.as_ref(), id, op, fwd)?;
        // t = Σₖ σₖ Vₖ(mₖ(x) ⊙ λ).
        let mut t: Option<E::Buf> = None;
        for (term, m) in group.terms.iter().zip(&modded) {
            let prods = m
                .iter()
                .zip(lam)
                .map(|(mi, &li)| match term.input {
                    InputMod::Ones => Ok(li.clone()),
                    _ => exec.pointwise(Pointwise::Mul, mi, Some(li)),
                })
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&E::Buf> = prods.iter().collect();
            // Vₖ on tangents: the term's layer without its bias.
            let tk = term_out(exec, ruled, &Term { bias: false, ..*term }, id, op, &refs, fwd)?;
            add_scaled(exec, &mut t, tk, term.sign)?;
        }
        let t = t.ok_or_else(|| Error::Invalid("internal: a rule group without terms".into()))?;
        let mut tz = exec.pointwise(Pointwise::Quotient(group.stabilizer), &t, Some(&z))?;
        if let (Some(mask), Some(y)) = (group.mask, own.as_ref()) {
            tz = exec.pointwise(Pointwise::Gate(mask), &tz, Some(y))?;
        }
        // u = s ⊙ t / stab(z) (the mask is in s).
        let u = {
            let st = exec.pointwise(Pointwise::Mul, &s, Some(&t))?;
            exec.pointwise(Pointwise::Quotient(group.stabilizer), &st, Some(&z))?
        };
        add_scaled(exec, &mut up, tz, group.coef)?;
        for term in group.terms.iter().filter(|t| t.input.reads_x()) {
            let vs = term_vjp(exec, ruled, term, id, op, &s, fwd)?;
            let vu = term_vjp(exec, ruled, term, id, op, &u, fwd)?;
            for (i, (vs, vu)) in vs.iter().zip(&vu).enumerate() {
                let ls = exec.pointwise(Pointwise::Mul, lam[i], Some(vs))?;
                let d = exec.pointwise(Pointwise::AddScaled(-1.0), &ls, Some(vu))?;
                let d = match term.input {
                    InputMod::Pos => exec.pointwise(Pointwise::Gate(Mask::NonNegative), &d, Some(ins[i]))?,
                    InputMod::Neg => exec.pointwise(Pointwise::Gate(Mask::Negative), &d, Some(ins[i]))?,
                    _ => d,
                };
                add_scaled(exec, &mut xbar[i], d, group.coef * term.sign)?;
            }
        }
    }
    let up = up.ok_or_else(|| Error::Invalid("internal: a rule without groups".into()))?;
    Ok((up, xbar))
}

/// ∇ₓ⟨M, `v`⟩ for the relevance map M at the input that [`crate::model::sweep::backward`]
/// computed under `plan` (with the relevance at each rule's output kept in `upstream`),
/// seeded with `seed` ⊙ logits (see the module docs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn adjoint<E: Exec>(
    graph: &Graph,
    exec: &mut E,
    plan: &Plan,
    fwd: &Forward<E>,
    upstream: &[Option<E::Buf>],
    seed: &E::Buf,
    act: Activation,
    v: E::Buf,
) -> Result<E::Buf> {
    let nodes = graph.nodes();
    let mut sources: Vec<Option<E::Buf>> = vec![None; nodes.len()];
    let mut lam: Vec<Option<E::Buf>> = vec![None; nodes.len()];
    lam[0] = Some(v);
    for (id, node) in nodes.iter().enumerate().skip(1) {
        let tangents = sweep::tangents_of(graph, exec, id, &lam)?;
        let refs: Vec<&E::Buf> = tangents.iter().collect();
        lam[id] = Some(match (&node.op, &plan.steps[id]) {
            (Op::Act(_), _) => tangents[0].clone(),
            (_, Step::Pass(k)) => tangents[*k].clone(),
            (op, Step::Gradient) => {
                if plan.gradient_of_nonlinear(graph, id) {
                    // ⟨Jᵀ(x)R, λ⟩ depends on the op's inputs x too (R held), as in
                    // sweep::adjoint.
                    let r = upstream[id]
                        .as_ref()
                        .ok_or_else(|| Error::Invalid(format!("node {id}: relevance not kept")))?;
                    for (&i, s) in node.inputs.iter().zip(exec.second(id, op, r, &refs, &fwd.kept(id))?) {
                        if let Some(s) = s {
                            sweep::accumulate(exec, &mut sources[i], s)?;
                        }
                    }
                }
                exec.tangent(id, op, &refs, &fwd.kept(id))?
            }
            (op, Step::Rule(ruled)) => {
                let r = upstream[id]
                    .as_ref()
                    .ok_or_else(|| Error::Invalid(format!("node {id}: relevance not kept")))?;
                let ins = sweep::inputs_of(graph, id, &fwd.values)?; // kept: Plan::reads
                let (up, xbar) = adjoint_node(exec, ruled, id, op, r, &ins, &refs, fwd)?;
                for (&i, xb) in node.inputs.iter().zip(xbar) {
                    if let Some(xb) = xb {
                        sweep::accumulate(exec, &mut sources[i], xb)?;
                    }
                }
                up
            }
        });
    }
    // R_L = seed ⊙ logits: ⟨R_L, λ_L⟩ has the gradient seed ⊙ λ_L at the logits.
    let out = graph.output();
    let top = lam[out].take().ok_or_else(|| Error::Invalid("internal: no tangent at the logits".into()))?;
    let at_logits = exec.pointwise(Pointwise::Mul, seed, Some(&top))?;
    sweep::accumulate(exec, &mut sources[out], at_logits)?;
    Ok(sweep::backward(graph, exec, fwd, None, None, sources, act, Rule::Gradient, 0, false)?.grad)
}

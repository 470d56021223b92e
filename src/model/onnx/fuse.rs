//! Activations that exporters spell as several ONNX nodes, fused into one node before import.
//!
//! `torch.onnx.export` writes SiLU (`nn.SiLU`, EfficientNet) as `Sigmoid` then
//! `Mul(x, sigmoid(x))`, HardSwish below opset 14 as `HardSigmoid(α = 1/6, β = 1/2)` then
//! `Mul(x, ·)`, and GELU below opset 20 (where ONNX has no `Gelu`): exact as
//! `Div(x, √2) → Erf → Add 1 → Mul x → Mul 0.5`, the tanh approximation as
//! `x·x·x·0.044715 + x → ·√(2/π) → Tanh → Add 1 → Mul x → Mul 0.5`. Each pattern becomes one node (`Silu`,
//! `HardSwish`, `Gelu`) at the place of the pattern's last node, named after it, when every
//! intermediate value is read only inside the pattern: one nonlinearity, whose backward rules
//! (guided backprop, DeepLIFT) apply to the function as a whole, where a product of x and
//! σ(x) would give the rule to σ alone (the graph has no erf at all). Operands of Add and
//! Mul may come in either order, x/√2 may be x·(1/√2), and the 0.5 may scale x before the
//! product instead of after. Layer normalisation below opset 17 (where ONNX has no
//! `LayerNormalization`) is written as `ReduceMean(x) → Sub → Pow 2 → ReduceMean → Add ε →
//! Sqrt → Div` over the last axis, followed by `Mul γ` and `Add β`: the first seven nodes become
//! one `LayerNormalization` without scale (the importer folds the Mul and Add that follow into
//! it). Anything else is left as it is: a squeeze-and-excitation `Mul`
//! of two different values imports as a product ([`crate::model::ops::Mul`]), and the
//! importer's errors name a node it cannot map (a lone `Erf`).

use super::proto::{Attribute, GraphProto, NodeProto};
use super::tensor::decode;
use std::collections::HashMap;

/// The op name of a fused SiLU node (not an ONNX op; only this pass writes it).
pub(super) const SILU: &str = "Silu";

/// The file's nodes with the patterns above fused.
pub(super) fn fuse(g: &GraphProto) -> Vec<NodeProto> {
    let mut f = Fuser::new(g);
    let mut i = 0;
    while i < f.nodes.len() {
        f.gate(i);
        f.gelu(i);
        f.gelu_tanh(i);
        f.layer_norm(i);
        i += 1;
    }
    f.nodes.into_iter().flatten().collect()
}

/// The node list (fused-away nodes become `None`) and what is known of its values.
struct Fuser {
    nodes: Vec<Option<NodeProto>>,
    /// The value of every one-element float constant (initializer or Constant node).
    scalars: HashMap<String, f32>,
    /// How often each value is read (by nodes or as a graph output).
    uses: HashMap<String, usize>,
    /// The node writing each value.
    producer: HashMap<String, usize>,
}

impl Fuser {
    fn new(g: &GraphProto) -> Self {
        let mut scalars = HashMap::new();
        for t in &g.initializers {
            if let Ok(c) = decode(t) {
                if let [v] = c.f32s()[..] {
                    scalars.insert(t.name.clone(), v);
                }
            }
        }
        let (mut uses, mut producer) = (HashMap::new(), HashMap::new());
        for (i, n) in g.nodes.iter().enumerate() {
            for input in n.inputs.iter().filter(|s| !s.is_empty()) {
                *uses.entry(input.clone()).or_insert(0) += 1;
            }
            for o in &n.outputs {
                producer.insert(o.clone(), i);
            }
            if let (Some(v), Some(o)) = (constant_scalar(n), n.outputs.first()) {
                scalars.insert(o.clone(), v);
            }
        }
        for o in &g.outputs {
            *uses.entry(o.name.clone()).or_insert(0) += 1;
        }
        Fuser { nodes: g.nodes.iter().cloned().map(Some).collect(), scalars, uses, producer }
    }

    fn node(&self, i: usize) -> Option<&NodeProto> {
        self.nodes.get(i).and_then(|n| n.as_ref())
    }

    /// The one node reading value `v` (and its index), when exactly one node reads it.
    fn sole_reader(&self, v: &str) -> Option<(usize, &NodeProto)> {
        if self.uses.get(v) != Some(&1) {
            return None;
        }
        self.readers(v).next()
    }

    /// Every node reading value `v`, with its index.
    fn readers<'a, 'v>(&'a self, v: &'v str) -> impl Iterator<Item = (usize, &'a NodeProto)> + use<'a, 'v> {
        let reads = move |n: &&NodeProto| n.inputs.iter().any(|s| s == v);
        self.nodes.iter().enumerate().filter_map(move |(i, n)| n.as_ref().filter(reads).map(|n| (i, n)))
    }

    /// Whether value `v` is a scalar constant within a relative 1e-4 of `want`.
    fn is(&self, v: &str, want: f32) -> bool {
        self.scalars.get(v).is_some_and(|&c| (c - want).abs() <= 1e-4 * want.abs())
    }

    /// The operand of binary node `n` other than the scalar `want` (either order).
    fn other_than(&self, n: &NodeProto, want: f32) -> Option<String> {
        match &n.inputs[..] {
            [a, b] if self.is(b, want) => Some(a.clone()),
            [a, b] if self.is(a, want) => Some(b.clone()),
            _ => None,
        }
    }

    /// Replaces nodes `gone` by one `op` node reading `x` at the place of `last`, with
    /// `last`'s name and output.
    fn replace(&mut self, gone: &[usize], last: usize, op: &str, x: String, attributes: Vec<Attribute>) {
        let Some(end) = self.node(last).cloned() else { return };
        for &i in gone {
            self.nodes[i] = None;
        }
        let fused = NodeProto { inputs: vec![x], op_type: op.to_string(), attributes, ..end };
        self.nodes[last] = Some(fused);
    }

    /// `Sigmoid(x)` or PyTorch's `HardSigmoid(x)` read only by `Mul(x, ·)`: SiLU or HardSwish.
    fn gate(&mut self, i: usize) {
        let Some(n) = self.node(i) else { return };
        let op = match n.op_type.as_str() {
            "Sigmoid" => SILU,
            "HardSigmoid" if torch_hardsigmoid(n) => "HardSwish",
            _ => return,
        };
        let (Some(x), Some(s)) = (n.inputs.first().cloned(), n.outputs.first().cloned()) else { return };
        let Some((m, mul)) = self.sole_reader(&s) else { return };
        let pair = (mul.inputs.first(), mul.inputs.get(1));
        let times_x = pair == (Some(&x), Some(&s)) || pair == (Some(&s), Some(&x));
        if mul.op_type == "Mul" && mul.inputs.len() == 2 && times_x {
            self.replace(&[i], m, op, x, Vec::new());
        }
    }

    /// `Erf(x/√2)` inside x·(1 + erf(x/√2))·0.5 (either order): exact GELU.
    fn gelu(&mut self, e: usize) {
        let Some(erf) = self.node(e).filter(|n| n.op_type == "Erf") else { return };
        let (Some(inner), Some(ev)) = (erf.inputs.first().cloned(), erf.outputs.first().cloned()) else {
            return;
        };
        // x/√2 or x·(1/√2), read only by the Erf.
        let Some(&d) = self.producer.get(&inner) else { return };
        let Some(div) = self.node(d) else { return };
        let x = match div.op_type.as_str() {
            "Div" if div.inputs.len() == 2 && self.is(&div.inputs[1], std::f32::consts::SQRT_2) => {
                div.inputs[0].clone()
            }
            "Mul" => match self.other_than(div, std::f32::consts::FRAC_1_SQRT_2) {
                Some(x) => x,
                None => return,
            },
            _ => return,
        };
        if self.uses.get(&inner) != Some(&1) {
            return;
        }
        if let Some((mut gone, last)) = self.gelu_tail(&ev, &x) {
            gone.extend([d, e]);
            self.replace(&gone, last, "Gelu", x, Vec::new());
        }
    }

    /// `Tanh(√(2/π)·(x + 0.044715·x³))` inside x·(1 + tanh(·))·0.5 (either order, x³ as
    /// x·(x·x) or Pow(x, 3)): GELU's tanh approximation, as torch writes it before opset 20.
    fn gelu_tanh(&mut self, t: usize) {
        let Some(tanh) = self.node(t).filter(|n| n.op_type == "Tanh") else { return };
        let (Some(u), Some(tv)) = (tanh.inputs.first().cloned(), tanh.outputs.first().cloned()) else {
            return;
        };
        // √(2/π)·(x + k·x³), each value read once inside the pattern.
        let Some(&s) = self.producer.get(&u) else { return };
        let Some(scale) = self.node(s).filter(|n| n.op_type == "Mul") else { return };
        let Some(inner) = self.other_than(scale, (2.0 / std::f32::consts::PI).sqrt()) else { return };
        let Some(&a) = self.producer.get(&inner) else { return };
        let Some(add) = self.node(a).filter(|n| n.op_type == "Add" && n.inputs.len() == 2) else { return };
        if self.uses.get(&u) != Some(&1) || self.uses.get(&inner) != Some(&1) {
            return;
        }
        let (l, r) = (add.inputs[0].clone(), add.inputs[1].clone());
        for (x, kc) in [(l.clone(), r.clone()), (r, l)] {
            let Some(cubic) = self.cubic(&kc, &x) else { continue };
            if let Some((mut gone, last)) = self.gelu_tail(&tv, &x) {
                gone.extend(cubic);
                gone.extend([a, s, t]);
                let approximate = Attribute {
                    name: "approximate".into(),
                    s: Some(b"tanh".to_vec()),
                    ..Attribute::default()
                };
                self.replace(&gone, last, "Gelu", x, vec![approximate]);
            }
            return;
        }
    }

    /// The nodes computing value `kc` = 0.044715·x³ (x·(x·x), (x·x)·x or Pow(x, 3)), each
    /// read once.
    fn cubic(&self, kc: &str, x: &str) -> Option<Vec<usize>> {
        let &k = self.producer.get(kc)?;
        let scaled = self.node(k).filter(|n| n.op_type == "Mul")?;
        let cube = self.other_than(scaled, 0.044715)?;
        let &c = self.producer.get(&cube)?;
        let node = self.node(c)?;
        let once = |v: &str| self.uses.get(v) == Some(&1);
        if !(once(kc) && once(&cube)) {
            return None;
        }
        match (node.op_type.as_str(), &node.inputs[..]) {
            ("Pow", [b, e]) if b == x && self.is(e, 3.0) => Some(vec![k, c]),
            ("Mul", [p, q]) => {
                let sq = if p == x {
                    q
                } else if q == x {
                    p
                } else {
                    return None;
                };
                let &m = self.producer.get(sq)?;
                let square = self.node(m).filter(|n| n.op_type == "Mul" && n.inputs == [x, x])?;
                (once(sq) && square.outputs.first().map(String::as_str) == Some(sq.as_str()))
                    .then(|| vec![k, c, m])
            }
            _ => None,
        }
    }

    /// GELU's common tail from f (the erf or tanh term, value `fv`): (1 + f) read once by a Mul
    /// with x whose product is read once by a Mul 0.5, or (x·0.5)·(1 + f). The nodes it spans
    /// but the last, and the last.
    fn gelu_tail(&self, fv: &str, x: &str) -> Option<(Vec<usize>, usize)> {
        let (p, add) = self.sole_reader(fv)?;
        if add.op_type != "Add" || self.other_than(add, 1.0).as_deref() != Some(fv) {
            return None;
        }
        let pv = add.outputs.first()?;
        let (m, mul) = self.sole_reader(pv)?;
        if mul.op_type != "Mul" || mul.inputs.len() != 2 {
            return None;
        }
        let other = if &mul.inputs[0] == pv { &mul.inputs[1] } else { &mul.inputs[0] };
        if other == x {
            // x·(1 + f) then ·0.5.
            let mv = mul.outputs.first()?;
            let (h, half) = self.sole_reader(mv)?;
            let halves = half.op_type == "Mul" && self.other_than(half, 0.5).as_deref() == Some(mv.as_str());
            return halves.then(|| (vec![p, m], h));
        }
        // (x·0.5)·(1 + f).
        let &h = self.producer.get(other)?;
        let half = self.node(h).filter(|n| n.op_type == "Mul")?;
        let scales_x = self.other_than(half, 0.5).as_deref() == Some(x);
        (scales_x && self.uses.get(other) == Some(&1)).then(|| (vec![h, p], m))
    }

    /// Whether node `n` is a ReduceMean over the last axis only (axes as an attribute before
    /// opset 18, as a constant input since), keeping dimensions.
    fn mean_over_last(&self, n: &NodeProto) -> bool {
        let keep = n.attributes.iter().find(|a| a.name == "keepdims").and_then(|a| a.i).unwrap_or(1) == 1;
        let axes = match n.inputs.get(1) {
            // A one-element constant (the scalars hold integer constants as floats too).
            Some(v) => self.scalars.get(v).map(|&a| vec![a as i64]),
            None => n.attributes.iter().find(|a| a.name == "axes").map(|a| a.ints.clone()),
        };
        n.op_type == "ReduceMean" && keep && axes.as_deref() == Some(&[-1])
    }

    /// `ReduceMean(x) → Sub(x, ·) → Pow 2 → ReduceMean → Add ε → Sqrt → Div(x − mean, ·)`, at
    /// its first node `r`: a LayerNormalization without scale.
    fn layer_norm(&mut self, r: usize) {
        let Some(first) = self.node(r).filter(|n| self.mean_over_last(n)) else { return };
        let (Some(x), Some(m)) = (first.inputs.first().cloned(), first.outputs.first().cloned()) else {
            return;
        };
        let Some((s, sub)) = self.sole_reader(&m) else { return };
        if !(sub.op_type == "Sub" && sub.inputs == [x.clone(), m]) {
            return;
        }
        let Some(d) = sub.outputs.first().cloned() else { return };
        // x − mean is read twice: squared, and divided by the deviation.
        let readers: Vec<_> = self.readers(&d).collect();
        let (Some(&(p, pow)), Some(&(q, div))) = (
            readers.iter().find(|(_, n)| n.op_type == "Pow"),
            readers.iter().find(|(_, n)| n.op_type == "Div"),
        ) else {
            return;
        };
        if readers.len() != 2 || self.uses.get(&d) != Some(&2) || pow.inputs.len() != 2 || pow.inputs[0] != d
        {
            return;
        }
        if !self.is(&pow.inputs[1], 2.0) || div.inputs.first() != Some(&d) {
            return;
        }
        let Some(chain) = self.variance_chain(pow, div) else { return };
        let eps = Attribute { name: "epsilon".into(), f: Some(chain.1), ..Attribute::default() };
        let axis = Attribute { name: "axis".into(), i: Some(-1), ..Attribute::default() };
        let mut gone = vec![r, s, p];
        gone.extend(chain.0);
        self.replace(&gone, q, "LayerNormalization", x, vec![axis, eps]);
    }

    /// From `pow` (x − mean)² to the `div`'s divisor: ReduceMean → Add ε → Sqrt, each read only
    /// by the next. The three nodes and ε.
    fn variance_chain(&self, pow: &NodeProto, div: &NodeProto) -> Option<([usize; 3], f32)> {
        let (v, mean) = self.sole_reader(pow.outputs.first()?)?;
        if !self.mean_over_last(mean) {
            return None;
        }
        let (a, add) = self.sole_reader(mean.outputs.first()?)?;
        let mv = mean.outputs.first()?;
        let eps_name = match &add.inputs[..] {
            [l, e] if l == mv => e,
            [e, l] if l == mv => e,
            _ => return None,
        };
        let eps = *self.scalars.get(eps_name)?;
        let (q, sqrt) = self.sole_reader(add.outputs.first()?)?;
        let ok = add.op_type == "Add"
            && sqrt.op_type == "Sqrt"
            && eps > 0.0
            && div.inputs.get(1) == sqrt.outputs.first();
        ok.then_some(([v, a, q], eps))
    }
}

/// Whether a HardSigmoid node is PyTorch's (α = 1/6, β = 1/2).
fn torch_hardsigmoid(n: &NodeProto) -> bool {
    let get = |name: &str, default: f32| {
        n.attributes.iter().find(|a| a.name == name).and_then(|a| a.f).unwrap_or(default)
    };
    (get("alpha", 0.2) - 1.0 / 6.0).abs() < 1e-6 && (get("beta", 0.5) - 0.5).abs() < 1e-6
}

/// The value of a Constant node holding one float.
fn constant_scalar(n: &NodeProto) -> Option<f32> {
    if n.op_type != "Constant" {
        return None;
    }
    let a = n.attributes.first()?;
    match a.name.as_str() {
        "value" => match decode(a.t.as_ref()?).ok()?.f32s()[..] {
            [v] => Some(v),
            _ => None,
        },
        "value_float" => a.f,
        _ => None,
    }
}

//! The one iterative loop every steered attack (top_k, mass_center, targeted, manipulate) runs.
//!
//! Each iteration takes the exact gradient of the objective's loss (see [`super::objective`])
//! with respect to the image, through the attacked method's map computed on the softplus(β)
//! surrogate: the map is the model's explicit backward pass, a differentiable candle graph of
//! x′, so one autograd `backward()` gives the second derivative. Then it steps
//! * `sign` (Ghorbani et al.): x ← Π(x − α·sign(∇L)), or
//! * `adam` (Dombrowski et al.): x ← Π(x − α·m̂/(√v̂ + 10⁻⁸)), with β₁ = 0.9, β₂ = 0.999,
//!
//! with Π the projection onto the ε-ball and [0,1] ([`super::project`]) and α = `step`·ε (or an
//! absolute step). β of the surrogate goes geometrically from `beta` to `beta_end`.
//!
//! Every iterate is judged on the real (ReLU) model: one whose predicted class differs from
//! the target is never kept (the walk continues); among the others the best by the
//! objective's rank is the result, the clean image (iteration 0) being the fallback, so every
//! row keeps its label. `restarts` repeats the walk from uniform random points of the ball
//! (seeded per row). With `patience` > 0 a row stops once its best has not improved for that
//! many iterations, and only the rows still moving are computed. A row's result depends on its
//! own seed and data only, never on the other rows of the batch. Shapes: rows [R,C,H,W];
//! maps [R,H·W].

use super::objective::{normalized, Goal, Objective, PrepareContext};
use super::{linf_per_row, merge_rows, project, row_column, Attack, AttackInput, Outcome};
use crate::attribution::{normalized_saliency, Attribution};
use crate::error::Result;
use crate::model::{logits_in_passes, predict, Activation, Classifier, Rule};
use crate::seed;
use candle_core::{DType, Tensor, Var};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How an iteration moves the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// Signed gradient step (Ghorbani et al.).
    Sign,
    /// Adam (Dombrowski et al.).
    Adam,
}

/// The step size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// α = this × ε of the row.
    FractionOfEps(f64),
    /// α in pixel units ([0,1] scale), whatever ε.
    Absolute(f64),
}

/// Settings of the iterative loop, shared by every steered attack (and by `random_walk`'s
/// budget).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IterSettings {
    /// Iterations per start.
    pub iterations: u32,
    /// Step size α.
    pub step: Step,
    /// Softplus β of the surrogate at the first iteration.
    pub beta: f64,
    /// β at the last iteration (geometric growth; = `beta` for a constant β).
    pub beta_end: f64,
    /// Extra starts from random points of the ε-ball (0: only from the clean image).
    pub restarts: u32,
    /// Stop a row after this many iterations without improvement (0: never).
    pub patience: u32,
    /// Update rule.
    pub optimizer: Optimizer,
    /// Weight γ of ‖softmax(x′) − softmax(x)‖² added to the loss (keeps the output).
    pub gamma: f64,
}

impl IterSettings {
    /// Ghorbani et al.'s loop: 100 signed steps of 0.1·ε, β = 10.
    pub fn ghorbani() -> Self {
        Self {
            iterations: 100,
            step: Step::FractionOfEps(0.1),
            beta: 10.0,
            beta_end: 10.0,
            restarts: 0,
            patience: 0,
            optimizer: Optimizer::Sign,
            gamma: 0.0,
        }
    }

    /// Dombrowski et al.'s loop: Adam, β from 10 to 100, γ = 25 (see [`super::manipulate`]);
    /// 200 iterations of step 0.05·ε.
    pub fn dombrowski() -> Self {
        Self {
            iterations: 200,
            step: Step::FractionOfEps(0.05),
            beta: 10.0,
            beta_end: 100.0,
            optimizer: Optimizer::Adam,
            gamma: 25.0,
            ..Self::ghorbani()
        }
    }

    /// β at iteration `it` (1-based).
    pub fn beta_at(&self, it: u32) -> f64 {
        if self.iterations <= 1 || self.beta_end == self.beta {
            return self.beta;
        }
        let t = f64::from(it.saturating_sub(1)) / f64::from(self.iterations - 1);
        self.beta * (self.beta_end / self.beta).powf(t)
    }

    /// α of a row with budget `eps`.
    pub fn alpha(&self, eps: f32) -> f32 {
        match self.step {
            Step::FractionOfEps(f) => eps * f as f32,
            Step::Absolute(a) => a as f32,
        }
    }
}

/// A steered attack: an objective, the method whose map it steers, and the loop's settings.
pub struct Steered {
    /// What is optimised.
    pub objective: Arc<dyn Objective>,
    /// The attacked method.
    pub method: Arc<dyn Attribution>,
    /// The loop's settings.
    pub settings: IterSettings,
}

/// The loss of `goal` for rows `rows` (u32 indices into the goal's batch) at images `x`,
/// through `method`'s map computed with activation `act` (noise anchored at `anchor`), plus
/// γ‖softmax(x) − `p0`‖² when `gamma` > 0 (`p0`: clean probabilities of the whole batch,
/// [R,K]). A scalar, differentiable in `x` when `act` is the softplus surrogate.
#[allow(clippy::too_many_arguments)]
pub fn objective_loss(
    goal: &dyn Goal,
    method: &dyn Attribution,
    model: &dyn Classifier,
    x: &Tensor,
    anchor: &Tensor,
    targets: &[u32],
    rows: &Tensor,
    act: Activation,
    gamma: f64,
    p0: Option<&Tensor>,
) -> Result<Tensor> {
    let attr = method.attribute_anchored(model, x, anchor, targets, act)?;
    let logits = match (p0, gamma > 0.0) {
        (Some(_), true) => Some(model.logits(x, act)?),
        _ => None,
    };
    loss_of(goal, &attr, logits.as_ref(), rows, gamma, p0)
}

/// The loss of `goal` on the map `attr` [R,C,H,W], plus γ‖softmax(`logits`) − `p0`‖² when
/// the logits [R,K] are given: [`objective_loss`] from its two inputs.
fn loss_of(
    goal: &dyn Goal,
    attr: &Tensor,
    logits: Option<&Tensor>,
    rows: &Tensor,
    gamma: f64,
    p0: Option<&Tensor>,
) -> Result<Tensor> {
    let s = normalized_saliency(attr)?.flatten_from(1)?;
    let mut loss = goal.loss(&s, rows)?;
    if let (Some(p0), Some(logits)) = (p0, logits) {
        let p = candle_nn::ops::softmax(logits, 1)?;
        let d = p.sub(&p0.index_select(rows, 0)?.to_dtype(p.dtype())?)?.sqr()?.sum_all()?;
        loss = loss.add(&d.affine(gamma, 0.0)?)?;
    }
    Ok(loss)
}

/// ∇ₓ of [`objective_loss`] (same arguments), detached. For methods with a vector–Jacobian
/// product no autograd graph goes through the map: the loss is differentiated with respect
/// to the map (and the logits) as leaves, and the chain rule goes on through
/// [`Attribution::map_then_vjp`] (and an input gradient), which the CPU kernels compute directly.
/// Other methods: autograd through the map's graph. Both give the same value to rounding.
#[allow(clippy::too_many_arguments)]
pub fn objective_gradient(
    goal: &dyn Goal,
    method: &dyn Attribution,
    model: &dyn Classifier,
    x: &Tensor,
    anchor: &Tensor,
    targets: &[u32],
    rows: &Tensor,
    act: Activation,
    gamma: f64,
    p0: Option<&Tensor>,
) -> Result<Tensor> {
    let x = x.detach();
    if method.has_map_vjp() {
        return direction_by_vjp(goal, method, model, &x, anchor, targets, rows, act, gamma, p0);
    }
    let xv = Var::from_tensor(&x)?;
    let loss = objective_loss(goal, method, model, xv.as_tensor(), anchor, targets, rows, act, gamma, p0)?;
    // No gradient: the loss does not depend on x here (e.g. a constant model).
    Ok(match loss.backward()?.get(xv.as_tensor()) {
        Some(g) => g.detach(),
        None => x.zeros_like()?,
    })
}

/// [`objective_gradient`] through [`Attribution::map_then_vjp`].
#[allow(clippy::too_many_arguments)]
fn direction_by_vjp(
    goal: &dyn Goal,
    method: &dyn Attribution,
    model: &dyn Classifier,
    x: &Tensor,
    anchor: &Tensor,
    targets: &[u32],
    rows: &Tensor,
    act: Activation,
    gamma: f64,
    p0: Option<&Tensor>,
) -> Result<Tensor> {
    let logits = match (p0, gamma > 0.0) {
        (Some(_), true) => Some(Var::from_tensor(&model.logits(x, act)?)?),
        _ => None,
    };
    let mut logit_grad = None;
    let mut dir = method.map_then_vjp(model, x, anchor, targets, act, &mut |map| {
        let attr = Var::from_tensor(map)?;
        let loss = loss_of(goal, attr.as_tensor(), logits.as_ref().map(|l| l.as_tensor()), rows, gamma, p0)?;
        let grads = loss.backward()?;
        logit_grad = logits.as_ref().and_then(|l| grads.get(l.as_tensor())).map(|g| g.detach());
        // Detached: candle's gradients still carry their graph, which would send the
        // products that follow down the autograd path instead of the CPU kernels.
        Ok(match grads.get(attr.as_tensor()) {
            Some(v) => v.detach(),
            None => map.zeros_like()?,
        })
    })?;
    if let Some(dl) = logit_grad {
        dir = dir.add(&model.input_gradient(x, &dl, act, Rule::Gradient)?.1)?;
    }
    Ok(dir)
}

/// Normalised maps [n][H·W], their height and width, and predicted classes.
type RealMaps = (Vec<Vec<f32>>, usize, usize, Vec<u32>);

/// Normalised real-model maps [n][H·W] of `x` (noise anchored at `anchor`), (H, W), and the
/// real model's predicted classes at `x` (from the map's own forward pass where it has one).
pub(crate) fn real_maps(
    method: &dyn Attribution,
    model: &dyn Classifier,
    x: &Tensor,
    anchor: &Tensor,
    targets: &[u32],
) -> Result<RealMaps> {
    let (attr, logits) = method.attribute_with_logits(model, x, anchor, targets, Activation::Exact)?;
    let s = normalized_saliency(&attr)?;
    let (_, h, w) = s.dims3()?;
    let preds = match logits {
        Some(l) => l.argmax(1)?.to_vec1::<u32>()?,
        None => predict(model, x)?,
    };
    Ok((s.flatten_from(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?, h, w, preds))
}

fn better(a: (f64, f64), b: (f64, f64)) -> bool {
    a.0 < b.0 || (a.0 == b.0 && a.1 < b.1)
}

fn index_tensor(rows: &[usize], device: &candle_core::Device) -> Result<Tensor> {
    let v: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    Ok(Tensor::from_vec(v, rows.len(), device)?)
}

impl Steered {
    /// ∇ₓ of the loss for the batch rows `active` at images `xa` (their rows), chunk by chunk:
    /// rows are independent, so each chunk's loss has the same gradient as the whole sum, and
    /// the chunks bound the memory of the second-order graph.
    #[allow(clippy::too_many_arguments)]
    fn direction(
        &self,
        input: &AttackInput,
        steer: &dyn Attribution,
        goal: &dyn Goal,
        active: &[usize],
        xa: &Tensor,
        x0a: &Tensor,
        act: Activation,
        p0: Option<&Tensor>,
    ) -> Result<Tensor> {
        let n = active.len();
        // The graph of a chunk holds every backward pass of its maps: keep it at about
        // the model's rows per pass in image-passes, whatever the method.
        let (_, _, h, w) = xa.dims4()?;
        let rows = (input.model.rows_per_pass(h, w) / steer.passes_per_image()).max(1);
        let mut parts = Vec::with_capacity(n.div_ceil(rows));
        for start in (0..n).step_by(rows) {
            let len = rows.min(n - start);
            let ids = &active[start..start + len];
            let targets: Vec<u32> = ids.iter().map(|&r| input.targets[r]).collect();
            parts.push(objective_gradient(
                goal,
                steer,
                input.model,
                &xa.narrow(0, start, len)?,
                &x0a.narrow(0, start, len)?,
                &targets,
                &index_tensor(ids, xa.device())?,
                act,
                self.settings.gamma,
                p0,
            )?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Tensor::cat(&parts, 0)? })
    }

    /// The start of restart `restart`: the clean image, or a uniform point of the ball.
    fn start(&self, input: &AttackInput, restart: u32) -> Result<Tensor> {
        let x0 = input.x;
        if restart == 0 {
            return Ok(x0.clone());
        }
        let rows = x0.dim(0)?;
        let per = x0.elem_count() / rows.max(1);
        let mut u = vec![0f32; rows * per];
        for r in 0..rows {
            let mut rng = seed::rng(seed::mix(input.seeds[r], u64::from(restart)));
            for v in &mut u[r * per..(r + 1) * per] {
                *v = rng.random_range(-1.0f32..=1.0) * input.eps[r];
            }
        }
        let u = Tensor::from_vec(u, x0.shape(), x0.device())?.to_dtype(x0.dtype())?;
        project(&x0.add(&u)?, x0, input.eps)
    }
}

impl Attack for Steered {
    fn name(&self) -> &'static str {
        self.objective.name()
    }

    fn objective(&self) -> Option<&dyn Objective> {
        Some(self.objective.as_ref())
    }

    fn target_method(&self) -> Option<&dyn Attribution> {
        Some(self.method.as_ref())
    }

    fn perturb(&self, input: &AttackInput) -> Result<Outcome> {
        let x0 = input.x;
        let dev = x0.device();
        let rows = x0.dim(0)?;
        let method = self.method.as_ref();
        let (_, _, h, w) = x0.dims4()?;
        // The method's clean maps: the caller's, or computed here (for a costly method the
        // larger part of a short attack).
        let computed;
        let clean: &[Vec<f32>] = match input.clean {
            Some(given) if given.len() == rows => given,
            Some(given) => {
                return Err(crate::error::Error::Invalid(format!(
                    "{} clean maps given for {rows} rows",
                    given.len()
                )))
            }
            None => {
                computed = real_maps(method, input.model, x0, x0, input.targets)?.0;
                &computed
            }
        };
        // The map steered by and ranked with: the method's stand-in where it has one (the goal
        // is still set on the method's own clean map).
        let stand_in = self.method.steering();
        let steer = stand_in.as_deref().unwrap_or(method);
        let stand_in_clean = match stand_in {
            Some(_) => Some(real_maps(steer, input.model, x0, x0, input.targets)?.0),
            None => None,
        };
        let ranked: &[Vec<f32>] = stand_in_clean.as_deref().unwrap_or(clean);
        let goal = self.objective.prepare(&PrepareContext {
            model: input.model,
            method,
            clean,
            h,
            w,
            device: dev,
        })?;
        let p0 = if self.settings.gamma > 0.0 {
            Some(candle_nn::ops::softmax(&logits_in_passes(input.model, x0)?, 1)?)
        } else {
            None
        };
        let mut best = x0.clone();
        let mut best_rank: Vec<(f64, f64)> = (0..rows).map(|r| goal.rank(r, &ranked[r])).collect();
        let mut used = vec![0u32; rows];
        for restart in 0..=self.settings.restarts {
            let mut x = self.start(input, restart)?;
            let (mut m, mut v) = (x0.zeros_like()?, x0.zeros_like()?);
            let mut active: Vec<usize> = (0..rows).collect();
            let mut stall = vec![0u32; rows];
            for it in 1..=self.settings.iterations {
                if active.is_empty() {
                    break;
                }
                let act = Activation::Softplus { beta: self.settings.beta_at(it) };
                let idx = index_tensor(&active, dev)?;
                let xa = x.index_select(&idx, 0)?;
                let x0a = x0.index_select(&idx, 0)?;
                let eps_a: Vec<f32> = active.iter().map(|&r| input.eps[r]).collect();
                let alpha: Vec<f32> = eps_a.iter().map(|&e| self.settings.alpha(e)).collect();
                let alpha = row_column(&alpha, &xa)?.to_dtype(xa.dtype())?;
                let g = self.direction(input, steer, goal.as_ref(), &active, &xa, &x0a, act, p0.as_ref())?;
                let moved = match self.settings.optimizer {
                    Optimizer::Sign => xa.sub(&g.sign()?.broadcast_mul(&alpha)?)?,
                    Optimizer::Adam => {
                        let (b1, b2) = (0.9f64, 0.999f64);
                        let ma = m.index_select(&idx, 0)?.affine(b1, 0.0)?.add(&g.affine(1.0 - b1, 0.0)?)?;
                        let va = v
                            .index_select(&idx, 0)?
                            .affine(b2, 0.0)?
                            .add(&g.sqr()?.affine(1.0 - b2, 0.0)?)?;
                        let t = f64::from(it);
                        let mhat = ma.affine(1.0 / (1.0 - b1.powf(t)), 0.0)?;
                        let vhat = va.affine(1.0 / (1.0 - b2.powf(t)), 0.0)?;
                        let upd = mhat.div(&vhat.sqrt()?.affine(1.0, 1e-8)?)?;
                        m = merge_rows(&m, &active, &ma)?;
                        v = merge_rows(&v, &active, &va)?;
                        xa.sub(&upd.broadcast_mul(&alpha)?)?
                    }
                };
                let moved = project(&moved, &x0a, &eps_a)?;
                x = merge_rows(&x, &active, &moved)?;

                let targets: Vec<u32> = active.iter().map(|&r| input.targets[r]).collect();
                let (maps, _, _, preds) = real_maps(steer, input.model, &moved, &x0a, &targets)?;
                let mut improved = Vec::new();
                let mut took = Vec::new();
                for (j, &r) in active.iter().enumerate() {
                    used[r] += 1;
                    stall[r] += 1;
                    if preds[j] != input.targets[r] {
                        continue;
                    }
                    let rank = goal.rank(r, &maps[j]);
                    if better(rank, best_rank[r]) {
                        best_rank[r] = rank;
                        stall[r] = 0;
                        improved.push(r);
                        took.push(j);
                    }
                }
                if !improved.is_empty() {
                    let picked = moved.index_select(&index_tensor(&took, dev)?, 0)?;
                    best = merge_rows(&best, &improved, &picked)?;
                }
                if self.settings.patience > 0 {
                    active.retain(|&r| stall[r] < self.settings.patience);
                }
                let per = self.settings.iterations as usize;
                input.step(restart as usize * per + it as usize, (self.settings.restarts as usize + 1) * per);
            }
        }
        let preds = predict(input.model, &best)?;
        let label_kept = preds.iter().zip(input.targets).map(|(p, t)| p == t).collect();
        let linf = linf_per_row(&best, x0)?;
        Ok(Outcome { x_adv: best, label_kept, iterations: used, linf })
    }

    fn params(&self) -> serde_json::Value {
        let mut p = serde_json::json!({
            "target_method": self.method.name(),
            "settings": self.settings,
        });
        if let (Some(map), serde_json::Value::Object(o)) = (p.as_object_mut(), self.objective.params()) {
            map.extend(o);
        }
        // What the attack steers by where it is not the map itself (only then: a run recorded
        // before stand-ins existed stays the same study).
        if let Some(stand_in) = self.method.steering() {
            p["steering"] = stand_in.params();
        }
        p
    }

    fn check(&self, model: &dyn Classifier, (h, w): (usize, usize)) -> Result<()> {
        self.method.check(model)?;
        // Prepare on a blank map of the model's size: catches a region or target map that
        // does not fit before anything is computed.
        let blank = vec![normalized(&vec![1.0; h * w])];
        self.objective
            .prepare(&PrepareContext {
                model,
                method: self.method.as_ref(),
                clean: &blank,
                h,
                w,
                device: model.device(),
            })
            .map(|_| ())
    }
}

//! Classifiers: the models whose attributions we measure.
//!
//! A [`Classifier`] maps images [B,C,H,W] (pixels in [0,1]) to logits [B,K]. Besides the
//! forward pass it exposes an *explicit* input-gradient: the backward pass written layer by
//! layer as ordinary tensor ops (see ../shared/DESIGN.md). That buys three things:
//!
//! 1. speed — no weight gradients and no transposed convolutions for frozen weights;
//! 2. one mechanism for modified back-propagation rules (guided backprop, DeepLIFT, ...);
//! 3. exact second-order attack directions — the map is itself a differentiable graph of the
//!    input, so one ordinary `backward()` of an attack objective differentiates through it.
//!
//! Every nonlinearity can run as ReLU (the real model) or as softplus(β) (the smooth surrogate
//! Ghorbani et al. 2019 use for second derivatives), selected per call by [`Activation`].

pub mod conv;
pub mod graph;
mod fmnist_cnn;
mod kernels;
pub mod pool;
pub mod weights;
pub mod zoo;

pub use fmnist_cnn::{FmnistCnn, PARAM_SHAPES};

use crate::error::Result;
use candle_core::{Device, Tensor};

/// Whether a hand-written CPU pass may read `t` as plain memory: f32, on the CPU, and not
/// part of an autograd graph (autograd would not see such a pass).
pub fn plain_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && !t.track_op()
}

/// `t`'s f32 elements, row-major, as one vector.
pub fn flat_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// The nonlinearity used in place of every ReLU for one pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// The real model: max(z, 0); derivative = step(z > 0).
    Relu,
    /// The smooth surrogate softplus_β(z) = log(1 + exp(βz)) / β; derivative = sigmoid(βz).
    Softplus {
        /// Sharpness: larger β is closer to ReLU.
        beta: f64,
    },
}

impl Activation {
    /// Applies the nonlinearity.
    pub fn apply(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        match *self {
            Activation::Relu => z.relu(),
            // Stable form: relu(z) + log(1 + exp(-β|z|)) / β (no overflow for large |βz|).
            Activation::Softplus { beta } => {
                let tail = z.abs()?.affine(-beta, 0.0)?.exp()?.affine(1.0, 1.0)?.log()?;
                z.relu()? + tail.affine(1.0 / beta, 0.0)?
            }
        }
    }

    /// Whether 2×2 max-pooling after this nonlinearity ranks a window by its outputs act(z)
    /// (ReLU: a window of negatives ties at zero and goes to its first position, as in
    /// PyTorch) or by its inputs z (softplus: the same order in exact arithmetic, without
    /// float32's collapse of far-negative outputs to exactly zero).
    pub fn pool_ranks_outputs(&self) -> bool {
        matches!(self, Activation::Relu)
    }

    /// [`Activation::apply`] on one value (the CPU kernels' form).
    pub fn apply_scalar(&self, z: f32) -> f32 {
        match *self {
            Activation::Relu => z.max(0.0),
            Activation::Softplus { beta } => {
                let beta = beta as f32;
                z.max(0.0) + (-beta * z.abs()).exp().ln_1p() / beta
            }
        }
    }

    /// act(z) and act′(z) together; for softplus from one exponential e = exp(−β|z|):
    /// relu(z) + ln(1 + e)/β, and sigmoid(βz) = 1/(1 + e) for z ≥ 0, e/(1 + e) below.
    pub fn apply_and_derivative(&self, z: f32) -> (f32, f32) {
        match *self {
            Activation::Relu => (z.max(0.0), f32::from(u8::from(z > 0.0))),
            Activation::Softplus { beta } => {
                let beta = beta as f32;
                let e = (-beta * z.abs()).exp();
                let s = if z >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
                (z.max(0.0) + e.ln_1p() / beta, s)
            }
        }
    }

    /// [`Activation::derivative`] on one value.
    pub fn derivative_scalar(&self, z: f32) -> f32 {
        match *self {
            Activation::Relu => f32::from(u8::from(z > 0.0)),
            Activation::Softplus { beta } => (beta as f32 / 2.0 * z).tanh() * 0.5 + 0.5,
        }
    }

    /// The second derivative at z from the first, s = act′(z): 0 for ReLU (almost
    /// everywhere); β·s·(1 − s) for softplus, whose derivative is s = sigmoid(βz).
    pub fn second_derivative_from_first(&self, s: f32) -> f32 {
        match *self {
            Activation::Relu => 0.0,
            Activation::Softplus { beta } => beta as f32 * s * (1.0 - s),
        }
    }

    /// Its derivative at `z`, as a tensor of the same shape. For softplus this is
    /// sigmoid(βz) = (1 + tanh(βz/2)) / 2, differentiable in `z` (second-order attacks need it).
    pub fn derivative(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        match *self {
            Activation::Relu => z.gt(0.0)?.to_dtype(z.dtype()),
            Activation::Softplus { beta } => z.affine(beta / 2.0, 0.0)?.tanh()?.affine(0.5, 0.5),
        }
    }
}

/// How the backward pass treats each ReLU (max-pool and linear layers are unchanged).
///
/// With upstream gradient g at a nonlinearity whose pre-activation is z:
/// * `Gradient`: g ⊙ act'(z) — the true gradient;
/// * `Guided` (guided backprop, Springenberg et al. 2015): relu(g) ⊙ act'(z) — only positive
///   gradients pass, and only where the forward input was positive;
/// * `Deconvnet` (Zeiler and Fergus 2014): relu(g) — the forward input is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReluRule {
    /// The true derivative.
    #[default]
    Gradient,
    /// Guided backpropagation.
    Guided,
    /// Zeiler and Fergus's deconvnet.
    Deconvnet,
}

impl ReluRule {
    /// The gradient with respect to the pre-activation `z`, given the upstream gradient `g`
    /// with respect to `act(z)`.
    pub fn backward(&self, act: Activation, z: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            ReluRule::Gradient => g.mul(&act.derivative(z)?),
            ReluRule::Guided => g.relu()?.mul(&act.derivative(z)?),
            ReluRule::Deconvnet => g.relu(),
        }
    }
}

/// An image classifier with an explicit, differentiable input-gradient.
pub trait Classifier: Send + Sync {
    /// The model's name as used in configs (`fmnist_cnn`).
    fn name(&self) -> &str;
    /// The input shape (C, H, W) it expects.
    fn input_shape(&self) -> (usize, usize, usize);
    /// The number of classes K.
    fn num_classes(&self) -> usize;
    /// The device its weights live on.
    fn device(&self) -> &Device;
    /// Logits [B,K] for images `x` [B,C,H,W].
    fn logits(&self, x: &Tensor, act: Activation) -> Result<Tensor>;
    /// The logits [B,K] and the gradient [B,C,H,W] of Σ_b ⟨grad_logits[b], logits(x)[b]⟩ with
    /// respect to `x`, computed by the explicit backward pass. With a softplus activation the
    /// result is a differentiable function of `x` (autograd can go through it). `rule` selects
    /// a modified backward pass through the ReLUs ([`ReluRule`]); `ReluRule::Gradient` is the
    /// true gradient.
    fn input_gradient(
        &self,
        x: &Tensor,
        grad_logits: &Tensor,
        act: Activation,
        rule: ReluRule,
    ) -> Result<(Tensor, Tensor)>;

    /// The gradient g = ∇ₓ Σ_b ⟨grad_logits[b], logits(x)[b]⟩ (true gradient rule), then
    /// v = `then(g)` (shaped like `x`), then the Hessian–vector product ∇ₓ Σ ⟨g, v⟩ with v
    /// held fixed: the vector–Jacobian product of a gradient map, which steered attacks
    /// need (with the softplus surrogate), where v is the loss's gradient at the map. One
    /// forward and backward pass serves both. Returns (g, Hv), [B,C,H,W], without autograd
    /// graphs. The default differentiates the explicit backward pass with autograd; models
    /// may compute it directly.
    fn gradient_then_hessian_vector(
        &self,
        x: &Tensor,
        grad_logits: &Tensor,
        act: Activation,
        then: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        autograd_gradient_then_hessian_vector(self, x, grad_logits, act, then)
    }

    /// [`Classifier::gradient_then_hessian_vector`] for a known `v`: (g, Hv).
    fn hessian_vector(
        &self,
        x: &Tensor,
        grad_logits: &Tensor,
        v: &Tensor,
        act: Activation,
    ) -> Result<(Tensor, Tensor)> {
        self.gradient_then_hessian_vector(x, grad_logits, act, &mut |_| Ok(v.clone()))
    }

    /// DeepLIFT's rescale rule (Shrikumar et al. 2017): the backward pass of
    /// Σ_b ⟨grad_logits[b], logits⟩ where each nonlinearity's derivative is replaced by the
    /// multiplier (act(z) − act(z₀)) / (z − z₀), z₀ its pre-activation on `baseline` (the plain
    /// derivative where |z − z₀| is tiny), and max-pooling routes to the arg-max of the real
    /// input. Multiply by (x − baseline) for the attribution. [B,C,H,W].
    fn rescale_gradient(
        &self,
        _x: &Tensor,
        _baseline: &Tensor,
        _grad_logits: &Tensor,
        _act: Activation,
    ) -> Result<Tensor> {
        Err(crate::Error::Invalid(format!("model `{}` has no DeepLIFT rule", self.name())))
    }

    /// Names of the internal layers [`Classifier::layer_gradient`] accepts (none by default).
    fn layers(&self) -> &[&'static str] {
        &[]
    }

    /// The activations [B,C',h,w] of internal layer `layer` and the gradient of
    /// Σ_b ⟨grad_logits[b], logits(x)[b]⟩ with respect to them (for Grad-CAM).
    fn layer_gradient(
        &self,
        _x: &Tensor,
        _grad_logits: &Tensor,
        _act: Activation,
        layer: &str,
    ) -> Result<(Tensor, Tensor)> {
        Err(crate::Error::Invalid(format!("model `{}` exposes no layer `{layer}`", self.name())))
    }

    /// Logits [P·B,K] of `x` [B,C,H,W] with each window (top, left) of `size` [h,w] (all
    /// channels) in turn set to `fill`; row k·B + i is image i under window k. For occlusion,
    /// where most of each pass equals the clean image's: a model may compute only what a
    /// window changes. `None` (the default) leaves the caller to run the occluded copies.
    fn occluded_logits(
        &self,
        _x: &Tensor,
        _windows: &[(usize, usize)],
        _size: [usize; 2],
        _fill: f32,
        _act: Activation,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// [`Classifier::gradient_then_hessian_vector`] by autograd through the model's explicit
/// backward pass.
pub fn autograd_gradient_then_hessian_vector<M: Classifier + ?Sized>(
    model: &M,
    x: &Tensor,
    grad_logits: &Tensor,
    act: Activation,
    then: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    let xv = candle_core::Var::from_tensor(&x.detach())?;
    let (_, g) = model.input_gradient(xv.as_tensor(), grad_logits, act, ReluRule::Gradient)?;
    let v = then(&g.detach())?;
    let grads = g.mul(&v.detach())?.sum_all()?.backward()?;
    // No entry: ⟨g, v⟩ does not depend on x (a linear model), so Hv = 0.
    let hv = match grads.get(xv.as_tensor()) {
        Some(h) => h.detach(),
        None => x.zeros_like()?,
    };
    Ok((g.detach(), hv))
}

/// One-hot rows [B,K] (float32) of the `targets`, the upstream gradient that selects each
/// image's target logit.
pub fn one_hot(targets: &[u32], k: usize, device: &Device) -> Result<Tensor> {
    let mut v = vec![0f32; targets.len() * k];
    for (row, &t) in targets.iter().enumerate() {
        if (t as usize) < k {
            v[row * k + t as usize] = 1.0;
        }
    }
    Ok(Tensor::from_vec(v, (targets.len(), k), device)?)
}

/// Rows per model call: bounds memory when a batch is large or a method expands it (IG
/// steps, noise samples). 64 was the fastest of 64/128/512 for IG-50 on 2 cores: smaller
/// intermediates stay in cache and in the allocator's free lists.
pub const MAX_ROWS_PER_PASS: usize = 64;

/// The real model's logits [B,K] for `x` [B,C,H,W], computed [`MAX_ROWS_PER_PASS`] rows at a
/// time (rows are independent, so the result is the same as one call).
pub fn logits_in_passes(model: &dyn Classifier, x: &Tensor) -> Result<Tensor> {
    let n = x.dim(0)?;
    let mut parts = Vec::with_capacity(n.div_ceil(MAX_ROWS_PER_PASS));
    for start in (0..n).step_by(MAX_ROWS_PER_PASS) {
        let len = MAX_ROWS_PER_PASS.min(n - start);
        parts.push(model.logits(&x.narrow(0, start, len)?, Activation::Relu)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Predicted classes (arg-max of the real model's logits) for `x` [B,C,H,W].
pub fn predict(model: &dyn Classifier, x: &Tensor) -> Result<Vec<u32>> {
    Ok(logits_in_passes(model, x)?.argmax(1)?.to_vec1::<u32>()?)
}

/// Model names this build can load.
pub const MODEL_NAMES: [&str; 1] = ["fmnist_cnn"];

/// Loads the model `name` with safetensors `weights` onto `device`.
pub fn load(
    name: &str,
    weights: &std::path::Path,
    device: &Device,
) -> Result<std::sync::Arc<dyn Classifier>> {
    match name {
        "fmnist_cnn" => Ok(std::sync::Arc::new(FmnistCnn::load(weights, device)?)),
        other => {
            Err(crate::Error::Invalid(format!("unknown model `{other}` (known: {})", MODEL_NAMES.join(", "))))
        }
    }
}

/// Softmax probabilities [B] of each row's `targets` class, from logits [B,K] (f64 math).
pub fn target_probability(logits: &Tensor, targets: &[u32]) -> Result<Vec<f64>> {
    let rows = logits.to_vec2::<f32>()?;
    Ok(rows
        .iter()
        .zip(targets)
        .map(|(l, &t)| {
            let m = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let z: f64 = l.iter().map(|&v| (v as f64 - m).exp()).sum();
            (l[t as usize] as f64 - m).exp() / z
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_forms_match_the_tensor_forms_and_differences() {
        let dev = Device::Cpu;
        let zs = [-100f32, -3.0, -0.5, -0.01, 0.0, 0.01, 0.5, 3.0, 100.0];
        let z = Tensor::new(&zs, &dev).unwrap();
        for act in [Activation::Relu, Activation::Softplus { beta: 10.0 }, Activation::Softplus { beta: 1.0 }]
        {
            let a = act.apply(&z).unwrap().to_vec1::<f32>().unwrap();
            let d = act.derivative(&z).unwrap().to_vec1::<f32>().unwrap();
            for (i, &zi) in zs.iter().enumerate() {
                let (ap, dp) = act.apply_and_derivative(zi);
                assert!((act.apply_scalar(zi) - a[i]).abs() <= 1e-6 * a[i].abs().max(1.0), "{act:?} {zi}");
                assert!(
                    (ap - a[i]).abs() <= 1e-6 * a[i].abs().max(1.0) && (dp - d[i]).abs() <= 1e-6,
                    "{act:?} {zi}"
                );
                assert!((act.derivative_scalar(zi) - d[i]).abs() <= 1e-6, "{act:?} {zi}");
            }
        }
        // σ'' from σ' against a central difference of σ' (f64 math on the f32 forms, h = 1e-3).
        let act = Activation::Softplus { beta: 2.0 };
        for z in [-1.5f32, -0.2, 0.0, 0.7] {
            let h = 1e-3f32;
            let fd = (act.derivative_scalar(z + h) - act.derivative_scalar(z - h)) / (2.0 * h);
            let s = act.derivative_scalar(z);
            assert!((act.second_derivative_from_first(s) - fd).abs() < 1e-3, "{z}");
        }
        assert_eq!(Activation::Relu.second_derivative_from_first(1.0), 0.0);
    }

    #[test]
    fn softplus_is_stable_and_close_to_relu_for_large_beta() {
        let dev = Device::Cpu;
        let z = Tensor::new(&[-100f32, -1.0, 0.0, 1.0, 100.0], &dev).unwrap();
        let sp = Activation::Softplus { beta: 1.0 }.apply(&z).unwrap().to_vec1::<f32>().unwrap();
        // softplus(0) = ln 2; softplus(±100) = 100 / ~0 with no overflow.
        assert!((sp[2] - std::f32::consts::LN_2).abs() < 1e-6);
        assert!((sp[4] - 100.0).abs() < 1e-4 && sp[0] >= 0.0 && sp[0] < 1e-30);
        let sharp = Activation::Softplus { beta: 1000.0 }.apply(&z).unwrap().to_vec1::<f32>().unwrap();
        let relu = z.relu().unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in sharp.iter().zip(relu.iter()) {
            assert!((a - b).abs() < 1e-3);
        }
        // d/dz softplus_β = sigmoid(βz): sigmoid(0) = 1/2, sigmoid(2) = 0.880797.
        let d = Activation::Softplus { beta: 2.0 }.derivative(&z).unwrap().to_vec1::<f32>().unwrap();
        assert!((d[2] - 0.5).abs() < 1e-6 && (d[3] - 0.880_797).abs() < 1e-5);
    }
}

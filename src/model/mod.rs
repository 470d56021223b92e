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
//! Every nonlinearity with kinks (ReLU, ReLU6, leaky ReLU, HardSigmoid, HardSwish) can run as
//! itself (the exact model) or through softplus(β) (the smooth surrogate Ghorbani et al. 2019
//! use for second derivatives), selected per call by [`Activation`]; smooth ones (sigmoid,
//! tanh, SiLU, GELU) always run exactly. Each function is defined once, in
//! [`nonlinearity`].

pub mod conv;
mod cpu_exec;
pub mod fmnist_cnn;
pub mod graph;
mod grid;
mod kernels;
#[cfg(test)]
mod layer_tests;
pub mod lrp;
pub(crate) mod mapping;
mod network;
pub mod nonlinearity;
pub mod onnx;
pub mod ops;
pub mod safetensors;
pub mod shape;
pub(crate) mod sweep;
pub(crate) mod tensor_exec;
pub mod weights;
pub mod zoo;

pub use fmnist_cnn::PARAM_SHAPES;
pub use graph::{Graph, GraphBuilder, Nonlinearity, Op, Shape};
pub use network::{Network, PASS_BYTES};
pub use nonlinearity::{Activation, Rule};

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

/// One backward pass: Σ_b ⟨seed[b], logits(x)[b]⟩ differentiated down to the input (or to
/// a layer's output) with `rule` at every nonlinearity. The one pass-settings type: on
/// tensors for callers, on flat f32 rows ([B, …] as `[f32]`) inside the CPU executor.
#[derive(Debug)]
pub struct Backward<'a, T: ?Sized = Tensor> {
    /// The logits' upstream gradient [B,K] (one-hot rows select each image's target).
    pub seed: &'a T,
    /// The real nonlinearities or their softplus(β) surrogates.
    pub act: Activation,
    /// What the backward pass does at each nonlinearity.
    pub rule: Rule,
    /// The reference images of [`Rule::Rescale`], [1,C,H,W] or [B,C,H,W].
    pub baseline: Option<&'a T>,
    /// Stop at this layer's output instead of the input (Grad-CAM).
    pub layer: Option<&'a str>,
}

impl<T: ?Sized> Clone for Backward<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: ?Sized> Copy for Backward<'_, T> {}

impl<'a> Backward<'a> {
    /// The gradient rule to the input.
    pub fn gradient(seed: &'a Tensor, act: Activation) -> Self {
        Self { seed, act, rule: Rule::Gradient, baseline: None, layer: None }
    }
}

/// What a backward pass returns: the one result type, as tensors for callers, as flat f32
/// rows inside the CPU executor and as an executor's own buffers inside the passes.
#[derive(Debug, Clone, Default)]
pub struct Backprop<T = Tensor> {
    /// The logits [B,K] of the forward pass.
    pub logits: T,
    /// The backward pass's result at the stop: [B,C,H,W] at the input, the layer's shape at a
    /// layer.
    pub grad: T,
    /// The layer's output (layer stops only).
    pub layer: Option<T>,
}

/// What [`Classifier::backward_adjoint`] asks of its caller: from the backward pass's
/// result, the vectors (v, a) to take the adjoint of (v shaped like its `grad`, a like its
/// `layer`).
pub type AdjointFn<'a> = dyn FnMut(&Backprop) -> Result<(Tensor, Option<Tensor>)> + 'a;

/// An image classifier with explicit, differentiable backward passes.
///
/// [`Network`] implements it once for any layer graph; tests implement it for hand-made
/// models.
pub trait Classifier: Send + Sync {
    /// The model's name as used in configs (`fmnist_cnn`, `resnet18`).
    fn name(&self) -> &str;
    /// The nominal input shape (C, H, W).
    fn input_shape(&self) -> (usize, usize, usize);
    /// The number of classes K.
    fn num_classes(&self) -> usize;
    /// The device its weights live on.
    fn device(&self) -> &Device;
    /// Logits [B,K] for images `x` [B,C,H,W].
    fn logits(&self, x: &Tensor, act: Activation) -> Result<Tensor>;
    /// The backward pass `pass` at images `x` [B,C,H,W]. With the softplus surrogate and
    /// `x` in an autograd graph the result is differentiable in `x`.
    fn backward(&self, x: &Tensor, pass: &Backward) -> Result<Backprop>;

    /// The backward pass, then (v, a) = `then(result)` (v shaped like its `grad`, a like its
    /// `layer`), then ∇ₓ(⟨grad(x), v⟩ + ⟨layer(x), a⟩) with v and a held fixed: the
    /// vector–Jacobian product of a map, which steered attacks need. Returns the pass and that
    /// gradient [B,C,H,W], without autograd graphs. The default differentiates
    /// [`Classifier::backward`] with autograd.
    fn backward_adjoint(
        &self,
        x: &Tensor,
        pass: &Backward,
        then: &mut AdjointFn,
    ) -> Result<(Backprop, Tensor)> {
        autograd_backward_adjoint(self, x, pass, then)
    }

    /// Checks that images of `c` channels and `h`×`w` pixels fit the model (by default: the
    /// nominal shape exactly).
    fn accepts(&self, c: usize, h: usize, w: usize) -> Result<()> {
        let want = self.input_shape();
        if (c, h, w) != want {
            return Err(crate::Error::Invalid(format!(
                "model `{}` expects {}×{}×{} images, got {c}×{h}×{w}",
                self.name(),
                want.0,
                want.1,
                want.2
            )));
        }
        Ok(())
    }

    /// Images per model call for `h`×`w` images: callers cut larger batches (and IG's path
    /// points, SmoothGrad's samples) into passes of this many rows, which bounds memory. By
    /// default [`MAX_ROWS_PER_PASS`]; a [`Network`] sizes it from its activations' bytes.
    fn rows_per_pass(&self, _h: usize, _w: usize) -> usize {
        MAX_ROWS_PER_PASS
    }

    /// Names of the internal layers a backward pass can stop at (none by default).
    fn layers(&self) -> Vec<String> {
        Vec::new()
    }

    /// The layer graph behind the model, where it is a [`Network`] (every model fragility
    /// loads; hand-made test models are not): what checks that rebuild the model with an
    /// extra node read (input invariance).
    fn network(&self) -> Option<&Network> {
        None
    }

    /// The layer Grad-CAM uses when none is configured.
    fn default_layer(&self) -> Option<String> {
        None
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

    /// Logits [n,K] of one image `x` [1,C,H,W] with, in row j, channel `channels[j]` of
    /// `layer`'s output set to zero and everything else as computed (Ablation-CAM): only the
    /// part of the network after the layer runs again, in batches the model chooses. `None`
    /// (the default, for models
    /// without a layer graph) where the model cannot.
    fn ablated_logits(
        &self,
        _x: &Tensor,
        _layer: &str,
        _channels: &[usize],
        _act: Activation,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// The logits [B,K] and the backward pass of Σ_b ⟨grad_logits[b], logits(x)[b]⟩ to the
    /// input [B,C,H,W] under `rule`.
    fn input_gradient(
        &self,
        x: &Tensor,
        grad_logits: &Tensor,
        act: Activation,
        rule: Rule,
    ) -> Result<(Tensor, Tensor)> {
        let bp = self.backward(x, &Backward { rule, ..Backward::gradient(grad_logits, act) })?;
        Ok((bp.logits, bp.grad))
    }

    /// DeepLIFT's rescale rule against `baseline` ([1,C,H,W] or [B,C,H,W]): the multipliers
    /// [B,C,H,W]; multiply by (x − baseline) for the attribution.
    fn rescale_gradient(
        &self,
        x: &Tensor,
        baseline: &Tensor,
        grad_logits: &Tensor,
        act: Activation,
    ) -> Result<Tensor> {
        let pass = Backward {
            rule: Rule::Rescale,
            baseline: Some(baseline),
            ..Backward::gradient(grad_logits, act)
        };
        Ok(self.backward(x, &pass)?.grad)
    }

    /// The activations [B,C′,h,w] of `layer` and the gradient of Σ_b ⟨grad_logits[b],
    /// logits(x)[b]⟩ with respect to them (Grad-CAM).
    fn layer_gradient(
        &self,
        x: &Tensor,
        grad_logits: &Tensor,
        act: Activation,
        layer: &str,
    ) -> Result<(Tensor, Tensor)> {
        let bp =
            self.backward(x, &Backward { layer: Some(layer), ..Backward::gradient(grad_logits, act) })?;
        let a = bp.layer.ok_or_else(|| crate::Error::Invalid(format!("layer `{layer}`: no activations")))?;
        Ok((a, bp.grad))
    }

    /// The gradient g = ∇ₓ Σ_b ⟨grad_logits[b], logits(x)[b]⟩, then v = `then(g)`, then the
    /// Hessian–vector product H·v: (g, Hv) [B,C,H,W], one forward and backward pass for both.
    fn gradient_then_hessian_vector(
        &self,
        x: &Tensor,
        grad_logits: &Tensor,
        act: Activation,
        then: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (bp, hv) = self.backward_adjoint(x, &Backward::gradient(grad_logits, act), &mut |bp| {
            Ok((then(&bp.grad)?, None))
        })?;
        Ok((bp.grad, hv))
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
}

/// [`Classifier::backward_adjoint`] by autograd through [`Classifier::backward`] (the
/// trait's default; the reference the explicit adjoints are tested against).
pub fn autograd_backward_adjoint<M: Classifier + ?Sized>(
    model: &M,
    x: &Tensor,
    pass: &Backward,
    then: &mut AdjointFn,
) -> Result<(Backprop, Tensor)> {
    let xv = candle_core::Var::from_tensor(&x.detach())?;
    let bp = model.backward(xv.as_tensor(), pass)?;
    let detached = Backprop {
        logits: bp.logits.detach(),
        grad: bp.grad.detach(),
        layer: bp.layer.as_ref().map(|l| l.detach()),
    };
    let (v, a) = then(&detached)?;
    let mut loss = bp.grad.mul(&v.detach())?.sum_all()?;
    if let (Some(l), Some(a)) = (&bp.layer, a) {
        loss = loss.add(&l.mul(&a.detach())?.sum_all()?)?;
    }
    // No entry: the loss does not depend on x (a linear model), so the product is 0.
    let xbar = match loss.backward()?.get(xv.as_tensor()) {
        Some(h) => h.detach(),
        None => x.zeros_like()?,
    };
    Ok((detached, xbar))
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

/// The real model's logits [B,K] for `x` [B,C,H,W], computed [`Classifier::rows_per_pass`] rows at a
/// time (rows are independent, so the result is the same as one call).
pub fn logits_in_passes(model: &dyn Classifier, x: &Tensor) -> Result<Tensor> {
    let (n, _, h, w) = x.dims4()?;
    let rows = model.rows_per_pass(h, w).max(1);
    let mut parts = Vec::with_capacity(n.div_ceil(rows));
    for start in (0..n).step_by(rows) {
        let len = rows.min(n - start);
        parts.push(model.logits(&x.narrow(0, start, len)?, Activation::Exact)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Predicted classes (arg-max of the real model's logits) for `x` [B,C,H,W].
pub fn predict(model: &dyn Classifier, x: &Tensor) -> Result<Vec<u32>> {
    Ok(logits_in_passes(model, x)?.argmax(1)?.to_vec1::<u32>()?)
}

/// Per-channel input normalisation (x − mean)/std, applied inside the model as its first
/// node, so that images, attacks, ε and projections stay in [0,1] pixel space.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Normalize {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Standard deviation per channel (each > 0).
    pub std: Vec<f32>,
}

impl Normalize {
    /// torchvision's ImageNet statistics.
    pub fn imagenet() -> Self {
        Self { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] }
    }

    /// `imagenet`, or `M1,M2,…/S1,S2,…` (means, a slash, standard deviations).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        if text == "imagenet" {
            return Ok(Self::imagenet());
        }
        let (m, s) = text.split_once('/').ok_or_else(|| {
            format!("`{text}`: expected `imagenet` or `MEANS/STDS` (e.g. 0.5,0.5,0.5/0.25,0.25,0.25)")
        })?;
        let list = |t: &str| -> std::result::Result<Vec<f32>, String> {
            t.split(',')
                .map(|v| v.trim().parse::<f32>().map_err(|_| format!("`{v}` is not a number")))
                .collect()
        };
        Self::new(list(m)?, list(s)?)
    }

    /// Checks the lists: equal lengths, finite means, positive finite deviations.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> std::result::Result<Self, String> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(format!("{} means and {} standard deviations", mean.len(), std.len()));
        }
        if mean.iter().any(|m| !m.is_finite()) || std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err("means must be finite and standard deviations finite and > 0".into());
        }
        // The model computes x·(1/std) − mean/std: a subnormal std (1e-45) is > 0 but its
        // reciprocal is infinite.
        if let Some((m, s)) =
            mean.iter().zip(&std).find(|(m, s)| !((1.0 / *s).is_finite() && (*m / *s).is_finite()))
        {
            return Err(format!(
                "standard deviation {s:e} (mean {m}) is too small: 1/std is not a finite f32"
            ));
        }
        Ok(Self { mean, std })
    }

    /// (scale, shift) with (x − mean)/std = x·scale + shift.
    pub fn scale_shift(&self) -> (Vec<f32>, Vec<f32>) {
        let scale: Vec<f32> = self.std.iter().map(|s| 1.0 / s).collect();
        let shift = self.mean.iter().zip(&self.std).map(|(m, s)| -m / s).collect();
        (scale, shift)
    }
}

/// Model names this build can load: `fmnist_cnn` and torchvision's architectures.
pub fn model_names() -> Vec<&'static str> {
    std::iter::once("fmnist_cnn").chain(zoo::ARCHITECTURES.iter().map(|a| a.name)).collect()
}

/// The Grad-CAM default layer of model `name`.
pub fn default_layer(name: &str) -> Option<&'static str> {
    match name {
        "fmnist_cnn" => Some(fmnist_cnn::DEFAULT_LAYER),
        other => zoo::architecture(other).map(|a| a.default_layer),
    }
}

/// Whether a model name is an ONNX file (it ends in `.onnx`).
pub fn is_onnx(name: &str) -> bool {
    std::path::Path::new(name).extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Loads the model `name` with safetensors `weights` (a PyTorch `state_dict`) onto `device`,
/// with `normalize` as its first node when given. A `name` ending in `.onnx` is an ONNX file
/// holding its own weights (`weights` is not read); its notices go to stderr.
pub fn load(
    name: &str,
    weights: &std::path::Path,
    normalize: Option<&Normalize>,
    device: &Device,
) -> Result<std::sync::Arc<dyn Classifier>> {
    load_sized(name, weights, normalize, device, None)
}

/// [`load`] for images of `hw` (rows, columns): the size an ONNX file with a symbolic input
/// size is imported at (its `auto_pad` and flattening depend on it).
pub fn load_sized(
    name: &str,
    weights: &std::path::Path,
    normalize: Option<&Normalize>,
    device: &Device,
    hw: Option<(usize, usize)>,
) -> Result<std::sync::Arc<dyn Classifier>> {
    let layer_owned;
    let (graph, hw, layer) = if is_onnx(name) {
        let path = std::path::Path::new(name);
        let imported = onnx::load(path, hw)?;
        for n in &imported.notices {
            eprintln!("{}: {n}", path.display());
        }
        // No default layer: the input stands in (a Network reports it as none).
        layer_owned = imported.default_layer.unwrap_or_else(|| "input".into());
        let graph = imported.graph.map_tensors(&|t| t.to_device(device))?;
        (graph, imported.hw, layer_owned.as_str())
    } else {
        // The name first: an unknown model is named before its file is looked for.
        if name != "fmnist_cnn" && zoo::architecture(name).is_none() {
            return Err(unknown_model(name));
        }
        return from_state_dict(
            name,
            weights::read_safetensors(weights, device)?,
            weights,
            normalize,
            device,
        );
    };
    finish_network(name, graph, (hw, layer), weights, normalize, device)
}

fn unknown_model(name: &str) -> crate::Error {
    crate::Error::Invalid(format!("unknown model `{name}` (known: {})", model_names().join(", ")))
}

/// Builds the model `name` (`fmnist_cnn` or a torchvision architecture, not ONNX) from a
/// `state_dict` already in memory (`source` names it in errors: the file it came from), with
/// `normalize` as its first node when given: [`load`] after reading the file, and the way a
/// modified `state_dict` (a sanity check's randomised layers) becomes a model.
pub fn from_state_dict(
    name: &str,
    tensors: std::collections::HashMap<String, Tensor>,
    source: &std::path::Path,
    normalize: Option<&Normalize>,
    device: &Device,
) -> Result<std::sync::Arc<dyn Classifier>> {
    let (hw, graph, layer) = if name == "fmnist_cnn" {
        let net = fmnist_cnn::from_tensors(tensors, device, source)?;
        if normalize.is_none() {
            return Ok(std::sync::Arc::new(net));
        }
        ((28, 28), net.graph().clone(), fmnist_cnn::DEFAULT_LAYER)
    } else {
        let arch = zoo::architecture(name).ok_or_else(|| unknown_model(name))?;
        let graph = arch.load(weights::Weights::from_tensors(tensors, source))?;
        (graph.fixed_input().unwrap_or(arch.input), graph, arch.default_layer)
    };
    finish_network(name, graph, (hw, layer), source, normalize, device)
}

/// The network of `graph` with its input normalisation in front.
fn finish_network(
    name: &str,
    graph: Graph,
    (hw, layer): ((usize, usize), &str),
    source: &std::path::Path,
    normalize: Option<&Normalize>,
    device: &Device,
) -> Result<std::sync::Arc<dyn Classifier>> {
    let graph = match normalize {
        Some(n) => {
            let (scale, shift) = n.scale_shift();
            graph.with_input_affine(scale, shift).map_err(|e| crate::Error::data(source, e.to_string()))?
        }
        None => graph,
    };
    Ok(std::sync::Arc::new(Network::new(name, graph, hw, layer, device)?))
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
        for act in
            [Activation::Exact, Activation::Softplus { beta: 10.0 }, Activation::Softplus { beta: 1.0 }]
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
        assert_eq!(Activation::Exact.second_derivative_from_first(1.0), 0.0);
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

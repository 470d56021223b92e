//! Grad-CAM (Selvaraju et al., ICCV 2017), the gradient-weighted CAM family built the same
//! way (Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM: [`super::cam`]), and guided Grad-CAM.
//!
//! For a layer with activations A [B,K,h,w] and gradients G = ∂ logit_t / ∂A: Grad-CAM's
//! weights αₖ = spatial mean of Gₖ, map = relu(Σₖ αₖ Aₖ) [B,h,w] (the other members combine A
//! and G their own way, [`CamWeighting`]), upsampled bilinearly to the input size with
//! align_corners = false (PyTorch's `F.interpolate(..., mode="bilinear")`), [B,1,H,W].
//! Default layer: the model's ([`Classifier::default_layer`]): the last convolutional
//! block's output before global pooling (`conv2_relu` in `fmnist_cnn`, `layer4` in a ResNet);
//! any node or container name of the model's graph can be given instead.
//! Guided Grad-CAM = guided backprop ⊙ the upsampled Grad-CAM map, [B,C,H,W].
//!
//! The upsampling is a fixed linear map per axis (U_H [H,h], U_W [W,w]; map ↦ U_H·map·U_Wᵀ), so
//! the whole map stays a differentiable function of the input through the surrogate.
//!
//! Where autograd does not track the layer (every map outside an attack's graph) and it is
//! f32 on the CPU, the weighting, rectification and upsampling run as one loop per image on
//! plain slices ([`cam_on_slices`]) instead of six tensor ops over the batch: the same
//! arithmetic, tested equal to the tensor ops, at a fraction of their cost (they took most of
//! Grad-CAM's time after the model's own pass became fast).

use super::cam::CamWeighting;
use super::{target_backward, Attribution};
use crate::error::{Error, Result};
use crate::model::{flat_f32, one_hot, plain_cpu_f32, Activation, Backward, Classifier, Rule};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The bilinear interpolation matrix [out,inp] with align_corners = false: output index o
/// samples source coordinate (o + ½)·inp/out − ½, clamped at 0, between its two neighbours.
pub fn bilinear_matrix(out: usize, inp: usize, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(bilinear_weights(out, inp, false), (out, inp), device)?)
}

/// [`bilinear_matrix`] as a row-major vector; with `align_corners` the corners' pixel centres
/// meet instead (output index o samples o·(inp − 1)/(out − 1), PyTorch's
/// `UpsamplingBilinear2d`, which Score-CAM's masks use).
pub(super) fn bilinear_weights(out: usize, inp: usize, align_corners: bool) -> Vec<f32> {
    let mut m = vec![0f32; out * inp];
    let scale = match (align_corners, out) {
        (true, 1) => 0.0,
        (true, _) => (inp - 1) as f64 / (out - 1) as f64,
        (false, _) => inp as f64 / out as f64,
    };
    for o in 0..out {
        let src = if align_corners { o as f64 * scale } else { ((o as f64 + 0.5) * scale - 0.5).max(0.0) };
        let i0 = (src.floor() as usize).min(inp - 1);
        let i1 = (i0 + 1).min(inp - 1);
        let frac = (src - i0 as f64) as f32;
        m[o * inp + i0] += 1.0 - frac;
        m[o * inp + i1] += frac;
    }
    m
}

/// Grad-CAM from a layer's activations `a` and gradients `grad` (both [B,K,h,w], row-major)
/// on plain slices: per image αₖ = mean of gradₖ, cam = relu(Σₖ αₖ aₖ) [h,w], then
/// U_H·cam·U_Wᵀ [hh,ww]. Images run in parallel; each is computed alone, so the result does
/// not depend on the number of threads. Returns [B·hh·ww].
pub fn cam_on_slices(a: &[f32], grad: &[f32], dims: [usize; 4], hh: usize, ww: usize) -> Vec<f32> {
    let [_, k, h, w] = dims;
    let (uh, uw) = (bilinear_weights(hh, h, false), bilinear_weights(ww, w, false));
    let per = k * h * w;
    let mut out = vec![0f32; dims[0] * hh * ww];
    out.par_chunks_mut(hh * ww).enumerate().for_each(|(i, up)| {
        let (a, grad) = (&a[i * per..][..per], &grad[i * per..][..per]);
        let mut cam = vec![0f32; h * w];
        for (ak, gk) in a.chunks_exact(h * w).zip(grad.chunks_exact(h * w)) {
            let alpha = gk.iter().sum::<f32>() / (h * w) as f32;
            for (c, &v) in cam.iter_mut().zip(ak) {
                *c += alpha * v;
            }
        }
        cam.iter_mut().for_each(|c| *c = c.max(0.0));
        upsample(&cam, w, &uh, &uw, up);
    });
    out
}

/// U_H·cam·U_Wᵀ into `up` [hh,ww], for a map `cam` [h,w] of row length `w` and interpolation
/// matrices U_H [hh,h], U_W [ww,w] (row-major, [`bilinear_weights`]): rows first ([hh,w]),
/// then columns.
pub(super) fn upsample(cam: &[f32], w: usize, uh: &[f32], uw: &[f32], up: &mut [f32]) {
    let h = cam.len() / w;
    let (hh, ww) = (uh.len() / h, uw.len() / w);
    let mut rows = vec![0f32; hh * w];
    for (o, row) in rows.chunks_exact_mut(w).enumerate() {
        for (src, &u) in cam.chunks_exact(w).zip(&uh[o * h..][..h]) {
            if u != 0.0 {
                row.iter_mut().zip(src).for_each(|(r, &c)| *r += u * c);
            }
        }
    }
    for (row, up_row) in rows.chunks_exact(w).zip(up.chunks_exact_mut(ww)) {
        for (u, uw_row) in up_row.iter_mut().zip(uw.chunks_exact(w)) {
            *u = row.iter().zip(uw_row).map(|(r, m)| r * m).sum();
        }
    }
}

/// The layer a CAM method `method` configured with `layer` uses on `model`: that one, or the
/// model's default.
pub(super) fn cam_layer(method: &str, layer: &str, model: &dyn Classifier) -> Result<String> {
    if !layer.is_empty() {
        return Ok(layer.to_string());
    }
    model.default_layer().ok_or_else(|| {
        let layers = model.layers();
        Error::Invalid(format!(
            "{method}: model `{}` has no default layer (no feature map larger than 1×1 lies on every path \
             to the logits); set `layer` to one of its feature maps ({})",
            model.name(),
            if layers.is_empty() { "it has none".into() } else { layers.join(", ") }
        ))
    })
}

/// Refuses a configured CAM layer that `model` does not have, naming the ones it has.
pub(super) fn check_cam_layer(method: &str, layer: &str, model: &dyn Classifier) -> Result<()> {
    let layer = cam_layer(method, layer, model)?;
    if model.layers().contains(&layer) {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{method} layer `{layer}`: model `{}` has no such layer (known: {})",
        model.name(),
        model.layers().join(", ")
    )))
}

/// Grad-CAM, or another member of the gradient-weighted CAM family (`kind`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GradCam {
    /// The layer whose activations are weighted (see [`Classifier::layers`]); empty: the
    /// model's default layer.
    pub layer: String,
    /// How activations and gradients combine (the method's name, not a setting).
    #[serde(skip)]
    pub kind: CamWeighting,
}

impl GradCam {
    /// The member `kind` of the family on the default layer.
    pub fn of(kind: CamWeighting) -> Self {
        GradCam { layer: String::new(), kind }
    }
}

impl GradCam {
    /// The layer used on `model`: the configured one, or the model's default.
    pub fn layer_of(&self, model: &dyn Classifier) -> Result<String> {
        cam_layer(self.kind.name(), &self.layer, model)
    }

    /// The map [B,1,H,W] (before any multiplication with guided backprop).
    pub fn cam(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor> {
        let (b, _, hh, ww) = x.dims4()?;
        let g = one_hot(targets, model.num_classes(), model.device())?.to_dtype(x.dtype())?;
        let layer = self.layer_of(model)?;
        let (a, grad) = model.layer_gradient(x, &g, act, &layer)?;
        if grad.dims() != a.dims() {
            return Err(Error::Invalid(format!("layer `{layer}`: gradient and activation shapes differ")));
        }
        if self.kind == CamWeighting::GradCam && plain_cpu_f32(&a) && plain_cpu_f32(&grad) {
            let up = cam_on_slices(&flat_f32(&a)?, &flat_f32(&grad)?, a.dims4()?.into(), hh, ww);
            return Ok(Tensor::from_vec(up, (b, 1, hh, ww), x.device())?);
        }
        cam_on_tensors(self.kind, &a, &grad, hh, ww)
    }
}

impl GradCam {
    /// The map M [B,1,H,W], then v = `loss_grad(M)`, then ∇ₓ⟨M(x), v⟩ with v held fixed.
    /// M is a function of the layer's activations A and their gradient G: autograd on
    /// [`cam_on_tensors`] (A and G as leaves) gives Ā = ∂⟨M, v⟩/∂A and Ḡ = ∂⟨M, v⟩/∂G, and the
    /// model's explicit adjoint of the pass stopped at the layer carries both to the input.
    pub fn cam_then_vjp(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        act: Activation,
        loss_grad: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (_, _, hh, ww) = x.dims4()?;
        let layer = self.layer_of(model)?;
        let seed = one_hot(targets, model.num_classes(), model.device())?.to_dtype(x.dtype())?;
        let pass = Backward { layer: Some(&layer), ..Backward::gradient(&seed, act) };
        let (_, xbar) = model.backward_adjoint(x, &pass, &mut |bp| {
            let a = bp
                .layer
                .as_ref()
                .ok_or_else(|| Error::Invalid(format!("layer `{layer}`: no activations")))?;
            let (av, gv) = (candle_core::Var::from_tensor(a)?, candle_core::Var::from_tensor(&bp.grad)?);
            let cam = cam_on_tensors(self.kind, av.as_tensor(), gv.as_tensor(), hh, ww)?;
            let v = loss_grad(&cam.detach())?;
            let grads = cam.mul(&v.detach())?.sum_all()?.backward()?;
            let get = |t: &candle_core::Var| -> Result<Tensor> {
                Ok(match grads.get(t.as_tensor()) {
                    Some(g) => g.detach(),
                    None => t.as_tensor().zeros_like()?,
                })
            };
            Ok((get(&gv)?, Some(get(&av)?)))
        })?;
        Ok(xbar)
    }
}

/// The `kind` map as tensor ops, [B,1,hh,ww] ([`cam_on_slices`] for Grad-CAM): the path
/// autograd can differentiate.
pub fn cam_on_tensors(kind: CamWeighting, a: &Tensor, grad: &Tensor, hh: usize, ww: usize) -> Result<Tensor> {
    upsample_tensor(&kind.combine(a, grad)?.relu()?, hh, ww)
}

/// Maps `cam` [B,h,w] upsampled to [B,1,hh,ww] as tensor ops (U_H·cam·U_Wᵀ, bilinear with
/// align_corners = false, [`bilinear_matrix`]): the differentiable form of [`upsample`].
pub(super) fn upsample_tensor(cam: &Tensor, hh: usize, ww: usize) -> Result<Tensor> {
    let (b, h, w) = cam.dims3()?;
    let dev = cam.device();
    let uh = bilinear_matrix(hh, h, dev)?.to_dtype(cam.dtype())?.broadcast_left(b)?;
    let uw = bilinear_matrix(ww, w, dev)?.to_dtype(cam.dtype())?.t()?.broadcast_left(b)?;
    let up = uh.matmul(&cam.contiguous()?)?.matmul(&uw.contiguous()?)?;
    Ok(up.reshape((b, 1, hh, ww))?)
}

impl Attribution for GradCam {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn differentiable(&self) -> bool {
        true
    }

    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor> {
        super::in_passes(model, x, targets, |xs, ts| self.cam(model, xs, ts, act))
    }

    fn has_map_vjp(&self) -> bool {
        true
    }

    fn map_then_vjp(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        _anchor: &Tensor,
        targets: &[u32],
        act: Activation,
        loss_grad: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        self.cam_then_vjp(model, x, targets, act, loss_grad)
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "layer": self.layer, "upsampling": "bilinear, align_corners = false" })
    }

    fn check(&self, model: &dyn Classifier) -> Result<()> {
        check_cam_layer(self.kind.name(), &self.layer, model)
    }
}

/// Guided Grad-CAM: guided backprop ⊙ upsampled Grad-CAM.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuidedGradCam {
    /// The Grad-CAM part's settings.
    #[serde(flatten)]
    pub cam: GradCam,
}

impl Attribution for GuidedGradCam {
    fn name(&self) -> &'static str {
        "guided_grad_cam"
    }

    fn differentiable(&self) -> bool {
        true
    }

    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor> {
        let guided = target_backward(model, x, targets, act, Rule::Guided)?;
        let cam = super::in_passes(model, x, targets, |xs, ts| self.cam.cam(model, xs, ts, act))?;
        Ok(guided.broadcast_mul(&cam)?)
    }

    fn has_map_vjp(&self) -> bool {
        true
    }

    /// M = P ⊙ C (guided backprop P [B,C,H,W], Grad-CAM C [B,1,H,W]):
    /// ∇ₓ⟨M, v⟩ = ∇ₓ⟨P, v ⊙ C⟩ + ∇ₓ⟨C, Σ_c P ⊙ v⟩, each through its own adjoint.
    fn map_then_vjp(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        _anchor: &Tensor,
        targets: &[u32],
        act: Activation,
        loss_grad: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let guided = target_backward(model, x, targets, act, Rule::Guided)?;
        let cam = self.cam.cam(model, x, targets, act)?;
        let v = loss_grad(&guided.broadcast_mul(&cam)?)?;
        let through_guided =
            super::backward_map_then_vjp(model, x, targets, act, Rule::Guided, None, false, &mut |_| {
                Ok(v.broadcast_mul(&cam)?)
            })?;
        let to_cam = guided.mul(&v)?.sum_keepdim(1)?;
        let through_cam = self.cam.cam_then_vjp(model, x, targets, act, &mut |_| Ok(to_cam.clone()))?;
        Ok(through_guided.add(&through_cam)?)
    }

    fn params(&self) -> serde_json::Value {
        self.cam.params()
    }

    fn check(&self, model: &dyn Classifier) -> Result<()> {
        self.cam.check(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn corner_aligned_weights_hit_both_ends() {
        // 2 → 5 with align_corners: sources 0, 0.25, 0.5, 0.75, 1.
        let m = bilinear_weights(5, 2, true);
        let want = [1.0, 0.0, 0.75, 0.25, 0.5, 0.5, 0.25, 0.75, 0.0, 1.0];
        assert!(m.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-7), "{m:?}");
        assert_eq!(bilinear_weights(3, 1, true), vec![1.0; 3]);
    }

    /// The slice path computes what the tensor ops compute (f32 rounding apart), on seeded
    /// activations and gradients of both signs, so that the rectification and every
    /// upsampling weight matter; and on a second shape whose sides do not divide evenly.
    #[test]
    fn slices_equal_tensor_ops() {
        for (dims, hh, ww) in [([5usize, 64, 14, 14], 28, 28), ([3, 4, 5, 7], 12, 9)] {
            let mut rng = crate::seed::rng(7);
            let n: usize = dims.iter().product();
            let a: Vec<f32> = (0..n).map(|_| rng.random_range(0.0f32..2.0)).collect();
            let g: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let t = |v: &Vec<f32>| Tensor::from_vec(v.clone(), dims.to_vec(), &Device::Cpu).unwrap();
            let want = cam_on_tensors(CamWeighting::GradCam, &t(&a), &t(&g), hh, ww).unwrap();
            let want = want.flatten_all().unwrap();
            let want = want.to_vec1::<f32>().unwrap();
            let got = cam_on_slices(&a, &g, dims, hh, ww);
            assert_eq!(got.len(), want.len());
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.0 && want.contains(&0.0), "some maps rectified, some not");
            for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                assert!((x - y).abs() <= 1e-5 * scale, "{dims:?} at {i}: {x} vs {y}");
            }
        }
    }
}

//! What the CAMs without a gradient share (Score-CAM, EigenCAM, Ablation-CAM): the pass
//! stopped at the layer for its activations A [K,h,w], then per image a map [h,w] from A (each
//! member's own [`LayerMap`]), rectified and upsampled bilinearly to the input (align_corners =
//! false) as Grad-CAM's, [B,1,H,W]. Not differentiable: under attacks they are measured by
//! transfer.

use super::gradcam::{bilinear_weights, cam_layer, check_cam_layer, upsample};
use super::Attribution;
use crate::error::{Error, Result};
use crate::model::{flat_f32, one_hot, Activation, Backward, Classifier};
use candle_core::{DType, Tensor};

/// One image as a forward-only CAM sees it, after the pass to the layer.
pub(super) struct LayerImage<'a> {
    pub model: &'a dyn Classifier,
    /// The image [1,C,H,W].
    pub x: Tensor,
    pub target: u32,
    /// The target's logit at `x` (from the same pass).
    pub logit: f32,
    /// The layer's name in the model.
    pub layer: &'a str,
    /// Its activations [K·h·w].
    pub a: &'a [f32],
    /// (K, h, w).
    pub khw: (usize, usize, usize),
    pub act: Activation,
}

/// One image's map from the layer's activations, before rectification.
pub(super) trait LayerMap: Send + Sync {
    /// The method's name.
    fn name(&self) -> &'static str;

    /// The configured layer (empty: the model's default).
    fn layer(&self) -> &str;

    /// The map [h·w] of one image.
    fn map(&self, img: &LayerImage) -> Result<Vec<f32>>;

    /// The settings a run records.
    fn params(&self) -> serde_json::Value;
}

/// Σ_k w_k·A_k [h·w] of activations `a` [K·h·w].
pub(super) fn weighted_sum(a: &[f32], weights: impl IntoIterator<Item = f32>, hw: usize) -> Vec<f32> {
    let mut cam = vec![0f32; hw];
    for (ak, wk) in a.chunks_exact(hw).zip(weights) {
        cam.iter_mut().zip(ak).for_each(|(m, &v)| *m += wk * v);
    }
    cam
}

/// Column `target` of `logits` [n,K], as f32.
pub(super) fn target_logits(logits: &Tensor, target: u32) -> Result<Vec<f32>> {
    flat_f32(&logits.narrow(1, target as usize, 1)?.to_dtype(DType::F32)?)
}

/// The maps [B,1,H,W] of one pass's images.
fn maps(
    m: &dyn LayerMap,
    model: &dyn Classifier,
    x: &Tensor,
    targets: &[u32],
    act: Activation,
) -> Result<Tensor> {
    let (b, _, hh, ww) = x.dims4()?;
    let layer = cam_layer(m.name(), m.layer(), model)?;
    // The pass stopped at the layer gives its activations and the logits (its gradient is not
    // used).
    let seed = one_hot(targets, model.num_classes(), model.device())?.to_dtype(x.dtype())?;
    let bp = model.backward(x, &Backward { layer: Some(&layer), ..Backward::gradient(&seed, act) })?;
    let a = bp.layer.ok_or_else(|| Error::Invalid(format!("layer `{layer}`: no activations")))?;
    let (_, k, h, w) = a.dims4()?;
    let a = flat_f32(&a.to_dtype(DType::F32)?)?;
    let logits = flat_f32(&bp.logits.to_dtype(DType::F32)?)?;
    let classes = model.num_classes();
    let (uh, uw) = (bilinear_weights(hh, h, false), bilinear_weights(ww, w, false));
    let mut out = vec![0f32; b * hh * ww];
    for (i, (img, up)) in a.chunks_exact(k * h * w).zip(out.chunks_exact_mut(hh * ww)).enumerate() {
        let target = targets[i];
        let image = LayerImage {
            model,
            x: x.narrow(0, i, 1)?,
            target,
            logit: logits[i * classes + target as usize],
            layer: &layer,
            a: img,
            khw: (k, h, w),
            act,
        };
        let mut cam = m.map(&image)?;
        cam.iter_mut().for_each(|v| *v = v.max(0.0));
        upsample(&cam, w, &uh, &uw, up);
    }
    Ok(Tensor::from_vec(out, (b, 1, hh, ww), x.device())?.to_dtype(x.dtype())?)
}

impl<T: LayerMap> Attribution for T {
    fn name(&self) -> &'static str {
        LayerMap::name(self)
    }

    fn differentiable(&self) -> bool {
        false
    }

    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        act: Activation,
    ) -> Result<Tensor> {
        super::in_passes(model, x, targets, |xs, ts| maps(self, model, xs, ts, act))
    }

    fn params(&self) -> serde_json::Value {
        LayerMap::params(self)
    }

    fn check(&self, model: &dyn Classifier) -> Result<()> {
        check_cam_layer(LayerMap::name(self), self.layer(), model)
    }
}

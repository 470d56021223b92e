//! Occlusion (Zeiler and Fergus, ECCV 2014).
//!
//! A window of `window` = [h, w] pixels (all channels) slides over the image with `stride`;
//! for each position the window is replaced by `baseline` and the drop of the target logit,
//! f(x)ₜ − f(x with the window occluded)ₜ, is recorded. A pixel's value is the mean of the drops
//! of the windows that cover it (0 if none does). Positions: 0, s, 2s, … while the window fits;
//! with the defaults (4×4, stride 2) on 28×28 every pixel is covered. Shapes: x [B,C,H,W] →
//! [B,C,H,W] (the same value in every channel). The logits of the B·P occluded copies (P
//! positions) come from the model's [`Classifier::occluded_logits`] where it has that shortcut
//! (`fmnist_cnn` on the CPU recomputes only the part of each pass a window changes, the
//! "reuse the unchanged part" of the speed issue); otherwise the copies are built and run as
//! one stream of forward passes in chunks. No gradient is needed, and the map is not
//! differentiable (attacks can only transfer to it).

use super::Attribution;
use crate::error::{Error, Result};
use crate::model::{logits_in_passes, Activation, Classifier};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// Occlusion settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Occlusion {
    /// Window height and width in pixels; unset: a sixteenth of each side, at least 4 pixels
    /// (4×4 at 28×28 and 64×64, 14×14 at 224×224).
    pub window: Option<[usize; 2]>,
    /// Step between window positions, in pixels (both axes); unset: half the window's shorter
    /// side, at least 1.
    pub stride: Option<usize>,
    /// The value occluded pixels take.
    pub baseline: f32,
}

impl Default for Occlusion {
    fn default() -> Self {
        Self { window: None, stride: None, baseline: 0.0 }
    }
}

impl Occlusion {
    /// The window and stride used on an h×w image: the configured ones, or the defaults that
    /// scale with the image (the same number of windows per side at any size).
    pub fn resolved(&self, h: usize, w: usize) -> ([usize; 2], usize) {
        let side = |len: usize| ((len as f64 / 16.0).round() as usize).max(4).min(len.max(1));
        let window = self.window.unwrap_or([side(h), side(w)]);
        (window, self.stride.unwrap_or((window[0].min(window[1]) / 2).max(1)))
    }

    /// Window positions (top, left) for an h×w image.
    fn positions(&self, h: usize, w: usize) -> Vec<(usize, usize)> {
        let ([wh, ww], s) = self.resolved(h, w);
        let s = s.max(1);
        let rows = (0..).map(|i| i * s).take_while(|&r| r + wh <= h);
        rows.flat_map(|r| (0..).map(move |j| j * s).take_while(move |&c| c + ww <= w).map(move |c| (r, c)))
            .collect()
    }
}

impl Attribution for Occlusion {
    fn name(&self) -> &'static str {
        "occlusion"
    }

    fn attribute(
        &self,
        model: &dyn Classifier,
        x: &Tensor,
        targets: &[u32],
        _act: Activation,
    ) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let ([wh, ww], _) = self.resolved(h, w);
        if wh == 0 || ww == 0 || wh > h || ww > w {
            return Err(Error::Invalid(format!("occlusion window {wh}×{ww} does not fit a {h}×{w} image")));
        }
        let pos = self.positions(h, w);
        let p = pos.len();
        // Window masks M [P, H·W] (1 inside the window) and per-pixel coverage counts.
        let mut m = vec![0f32; p * h * w];
        let mut count = vec![0f32; h * w];
        for (k, &(r0, c0)) in pos.iter().enumerate() {
            for r in r0..r0 + wh {
                for cc in c0..c0 + ww {
                    m[k * h * w + r * w + cc] = 1.0;
                    count[r * w + cc] += 1.0;
                }
            }
        }
        let dev = x.device();
        let masks = Tensor::from_vec(m, (p, h * w), dev)?.to_dtype(x.dtype())?;
        let base = logits_in_passes(model, x)?;
        // Logits of the occluded copies, position-major: row k·B + i is image i with window k
        // replaced; from the model's own shortcut where it has one.
        let occ = match model.occluded_logits(x, &pos, [wh, ww], self.baseline, Activation::Exact)? {
            Some(occ) => occ,
            None => {
                let keep = masks.affine(-1.0, 1.0)?.reshape((p, 1, 1, h, w))?;
                let fill = masks.affine(self.baseline as f64, 0.0)?.reshape((p, 1, 1, h, w))?;
                let occluded =
                    x.unsqueeze(0)?.broadcast_mul(&keep)?.broadcast_add(&fill)?.reshape((p * b, c, h, w))?;
                logits_in_passes(model, &occluded)?
            }
        };
        let t = Tensor::from_vec(targets.to_vec(), (b, 1), dev)?;
        let base_t = base.gather(&t, 1)?.reshape((1, b))?; // [1,B]
        let tp = Tensor::from_vec(
            (0..p).flat_map(|_| targets.iter().copied()).collect::<Vec<u32>>(),
            (p * b, 1),
            dev,
        )?;
        let occ_t = occ.gather(&tp, 1)?.reshape((p, b))?; // [P,B]
        let drop = base_t.broadcast_sub(&occ_t)?; // [P,B]
        let inv = Tensor::from_vec(
            count.iter().map(|&n| if n > 0.0 { 1.0 / n } else { 0.0 }).collect::<Vec<f32>>(),
            (1, h * w),
            dev,
        )?
        .to_dtype(x.dtype())?;
        let map = drop.t()?.matmul(&masks)?.broadcast_mul(&inv)?; // [B, H·W]
        Ok(map.reshape((b, 1, h, w))?.broadcast_as((b, c, h, w))?.contiguous()?)
    }

    fn params(&self) -> serde_json::Value {
        let auto = |v: serde_json::Value, unset: bool| if unset { serde_json::json!("auto") } else { v };
        serde_json::json!({
            "window": auto(serde_json::json!(self.window), self.window.is_none()),
            "stride": auto(serde_json::json!(self.stride), self.stride.is_none()),
            "baseline": self.baseline,
        })
    }
}

#[cfg(test)]
mod default_tests {
    use super::*;

    #[test]
    fn the_default_window_scales_with_the_image() {
        let d = Occlusion::default();
        // 28×28 keeps the tuned 4×4 window with stride 2 (13 positions a side); 224×224
        // gets 14×14 with stride 7 (31 a side), not 111 a side.
        assert_eq!(d.resolved(28, 28), ([4, 4], 2));
        assert_eq!(d.resolved(64, 64), ([4, 4], 2));
        assert_eq!(d.resolved(224, 224), ([14, 14], 7));
        assert_eq!(d.resolved(224, 160), ([14, 10], 5));
        assert_eq!(d.positions(224, 224).len(), 31 * 31);
        // Never larger than a tiny image; a given window keeps its own default stride.
        assert_eq!(d.resolved(3, 3), ([3, 3], 1));
        let w = Occlusion { window: Some([8, 8]), ..d };
        assert_eq!(w.resolved(28, 28), ([8, 8], 4));
        let s = Occlusion { stride: Some(3), ..d };
        assert_eq!(s.resolved(224, 224), ([14, 14], 3));
        assert_eq!(d.params()["window"], "auto");
        assert_eq!(w.params()["window"], serde_json::json!([8, 8]));
    }
}

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
    /// Window height and width in pixels.
    pub window: [usize; 2],
    /// Step between window positions, in pixels (both axes).
    pub stride: usize,
    /// The value occluded pixels take.
    pub baseline: f32,
}

impl Default for Occlusion {
    fn default() -> Self {
        Self { window: [4, 4], stride: 2, baseline: 0.0 }
    }
}

impl Occlusion {
    /// Window positions (top, left) for an h×w image.
    fn positions(&self, h: usize, w: usize) -> Vec<(usize, usize)> {
        let [wh, ww] = self.window;
        let s = self.stride.max(1);
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
        let [wh, ww] = self.window;
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
        let occ = match model.occluded_logits(x, &pos, self.window, self.baseline, Activation::Relu)? {
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
        serde_json::json!({ "window": self.window, "stride": self.stride, "baseline": self.baseline })
    }
}

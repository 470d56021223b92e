//! The gradient-weighted CAM family: how each member combines a layer's activations A and the
//! target logit's gradient G = ∂y_t/∂A (both [B,K,h,w]) into one map [B,h,w] before the
//! rectification and upsampling that every member shares ([`super::gradcam`]).
//!
//! As pytorch-grad-cam 1.5.7 defines them (its `get_cam_weights` / `get_cam_image`), with
//! Σ_hw a sum over the map's positions:
//!
//! | name | map before ReLU | paper |
//! |---|---|---|
//! | `grad_cam` | Σ_k α_k A_k, α_k = mean_hw G_k | Selvaraju et al., ICCV 2017 |
//! | `grad_cam_plus_plus` | Σ_k α_k A_k, α_k = Σ_hw relu(G_k)·G_k² / (2G_k² + (Σ_hw A_k)·G_k³ + 10⁻⁶) | Chattopadhay et al., WACV 2018 (eq. 19) |
//! | `xgrad_cam` | Σ_k α_k A_k, α_k = Σ_hw G_k·A_k / (Σ_hw A_k + 10⁻⁷) | Fu et al., BMVC 2020 |
//! | `hires_cam` | Σ_k G_k ⊙ A_k | Draelos and Carin 2020 |
//! | `layer_cam` | Σ_k relu(G_k) ⊙ A_k | Jiang et al., IEEE TIP 2021 |
//!
//! Each is a differentiable function of A and G, so each is attackable the way Grad-CAM is:
//! autograd through these tensor ops gives ∂⟨map, v⟩/∂A and ∂/∂G, and the model's adjoint of
//! the pass stopped at the layer carries both to the input. (Grad-CAM++'s `where(G ≠ 0)` is
//! implicit: at G = 0 its fraction is 0/10⁻⁶.)
//!
//! pytorch-grad-cam then rectifies, resizes to the input (bilinear, half-pixel centres, as
//! here) and scales each map to [0, 1] by its minimum and maximum; these maps are not scaled
//! (the fragility metrics are rank-based or scale-free), so they equal pytorch-grad-cam's after
//! the same min–max scaling.

use crate::error::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// Which member of the CAM family weights the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CamWeighting {
    /// Grad-CAM: channel weights = spatial mean of the gradient.
    #[default]
    GradCam,
    /// Grad-CAM++: channel weights from the gradient's second and third powers.
    GradCamPlusPlus,
    /// XGrad-CAM: channel weights = activation-normalised Σ G·A.
    XGradCam,
    /// HiResCAM: the elementwise product G ⊙ A summed over channels.
    HiResCam,
    /// LayerCAM: relu(G) ⊙ A summed over channels.
    LayerCam,
}

impl CamWeighting {
    /// Every member, in the order the method list gives them.
    pub const ALL: [CamWeighting; 5] = [
        CamWeighting::GradCam,
        CamWeighting::GradCamPlusPlus,
        CamWeighting::XGradCam,
        CamWeighting::HiResCam,
        CamWeighting::LayerCam,
    ];

    /// The method's name.
    pub fn name(self) -> &'static str {
        match self {
            CamWeighting::GradCam => "grad_cam",
            CamWeighting::GradCamPlusPlus => "grad_cam_plus_plus",
            CamWeighting::XGradCam => "xgrad_cam",
            CamWeighting::HiResCam => "hires_cam",
            CamWeighting::LayerCam => "layer_cam",
        }
    }

    /// The member named `name`.
    pub fn by_name(name: &str) -> Option<CamWeighting> {
        CamWeighting::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The map before rectification, [B,h,w], from activations `a` and gradients `g`
    /// ([B,K,h,w]), as differentiable tensor ops.
    pub fn combine(self, a: &Tensor, g: &Tensor) -> Result<Tensor> {
        let spatial_sum = |t: &Tensor| -> Result<Tensor> { Ok(t.sum_keepdim(3)?.sum_keepdim(2)?) };
        let weighted = |alpha: &Tensor| -> Result<Tensor> { Ok(a.broadcast_mul(alpha)?.sum(1)?) };
        match self {
            CamWeighting::GradCam => weighted(&g.mean_keepdim(3)?.mean_keepdim(2)?),
            CamWeighting::GradCamPlusPlus => {
                let g2 = g.sqr()?;
                let g3 = g2.mul(g)?;
                let denom = g2.affine(2.0, 1e-6)?.add(&g3.broadcast_mul(&spatial_sum(a)?)?)?;
                weighted(&spatial_sum(&g.relu()?.mul(&g2.div(&denom)?)?)?)
            }
            CamWeighting::XGradCam => {
                let norm = spatial_sum(a)?.affine(1.0, 1e-7)?;
                weighted(&spatial_sum(&g.mul(a)?.broadcast_div(&norm)?)?)
            }
            CamWeighting::HiResCam => Ok(g.mul(a)?.sum(1)?),
            CamWeighting::LayerCam => Ok(g.relu()?.mul(a)?.sum(1)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// One channel of 2 positions, written out by hand.
    #[test]
    fn each_weighting_matches_its_formula_by_hand() {
        let dev = Device::Cpu;
        // A = [1, 3], G = [2, −1]: Σ A = 4.
        let a = Tensor::new(&[1f64, 3.0], &dev).unwrap().reshape((1, 1, 1, 2)).unwrap();
        let g = Tensor::new(&[2f64, -1.0], &dev).unwrap().reshape((1, 1, 1, 2)).unwrap();
        let map =
            |k: CamWeighting| k.combine(&a, &g).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        // Grad-CAM: α = 0.5 → [0.5, 1.5].
        assert_eq!(map(CamWeighting::GradCam), [0.5, 1.5]);
        // Grad-CAM++: at G = 2, 4 / (8 + 4·8 + 1e-6) · 2; at G = −1 relu kills it.
        let alpha = 2.0 * 4.0 / (8.0 + 32.0 + 1e-6);
        let got = map(CamWeighting::GradCamPlusPlus);
        assert!((got[0] - alpha).abs() < 1e-15 && (got[1] - 3.0 * alpha).abs() < 1e-15, "{got:?}");
        // XGrad-CAM: α = (2·1 − 1·3) / (4 + 1e-7).
        let alpha = -1.0 / (4.0 + 1e-7);
        let got = map(CamWeighting::XGradCam);
        assert!((got[0] - alpha).abs() < 1e-15 && (got[1] - 3.0 * alpha).abs() < 1e-15, "{got:?}");
        assert_eq!(map(CamWeighting::HiResCam), [2.0, -3.0]);
        assert_eq!(map(CamWeighting::LayerCam), [2.0, 0.0]);
    }

    #[test]
    fn names_round_trip() {
        for k in CamWeighting::ALL {
            assert_eq!(CamWeighting::by_name(k.name()), Some(k));
        }
    }
}

//! The one projection every attack uses: onto the L∞ ball of radius ε around the clean image,
//! then onto the valid pixel range [0,1]. Both sets are boxes, so clamping coordinate-wise in
//! that order lands in their intersection (which contains x₀, so it is never empty).

use super::row_column;
use crate::error::Result;
use candle_core::Tensor;

/// Projects `x` [R,C,H,W] onto {x′ : ‖x′ − x₀‖∞ ≤ εᵣ, 0 ≤ x′ ≤ 1} row by row.
pub fn project(x: &Tensor, x0: &Tensor, eps: &[f32]) -> Result<Tensor> {
    let e = row_column(eps, x0)?;
    let lo = x0.broadcast_sub(&e)?;
    let hi = x0.broadcast_add(&e)?;
    Ok(x.maximum(&lo)?.minimum(&hi)?.clamp(0f32, 1f32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn projection_respects_ball_and_range() {
        let dev = Device::Cpu;
        // Row 0 (ε = 0.1): 0.5 → 0.9 is pulled to 0.6; 0.05 → −0.2 is pulled to −0.05, then 0.
        // Row 1 (ε = 0.5): 0.9 → 1.3 is within the ball (1.4) but clipped to 1.
        let x0 = Tensor::new(&[[[[0.5f32, 0.05]]], [[[0.9, 0.2]]]], &dev).unwrap();
        let x = Tensor::new(&[[[[0.9f32, -0.2]]], [[[1.3, 0.2]]]], &dev).unwrap();
        let p = project(&x, &x0, &[0.1, 0.5]).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = [0.6f32, 0.0, 1.0, 0.2];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{p:?}");
        }
    }
}

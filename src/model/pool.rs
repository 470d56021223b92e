//! 2×2 max-pooling with an explicit routing mask.
//!
//! candle 0.11's `max_pool2d` backward scales the gradient by 1/(k·k) instead of routing it to
//! the arg-max (measured, see ../shared/DESIGN.md), and its `max` backward sends the gradient to
//! *every* tied element. Ties are common here: on a blank background every pixel of a window
//! has the same pre-activation (the conv bias). We therefore pool with a one-hot mask of the
//! *first* arg-max of each window (row-major, as PyTorch does), computed without gradient:
//!
//! * forward: `p = window_sum(a ⊙ mask)` — equals the window max, and its autograd backward
//!   routes the upstream gradient whole to the one arg-max;
//! * explicit backward: `g_a = upsample(g_p) ⊙ mask`.
//!
//! Shapes: `a` is [B,C,H,W] with even H and W; `p` and `g_p` are [B,C,H/2,W/2].

use candle_core::{Result, Tensor, D};

/// The one-hot mask [B,C,H,W] of the first arg-max of each 2×2 window of `a` (no gradient).
pub fn argmax_mask(a: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = a.dims4()?;
    let (h2, w2) = (h / 2, w / 2);
    // Gather each window's four values on the last axis, in row-major window order.
    let windows = a
        .detach()
        .reshape((b, c, h2, 2, w2, 2))?
        .permute((0, 1, 2, 4, 3, 5))?
        .contiguous()?
        .reshape((b, c, h2, w2, 4))?;
    let idx = windows.argmax_keepdim(D::Minus1)?; // u32, first maximum on ties
    let positions = Tensor::arange(0u32, 4, a.device())?.reshape((1, 1, 1, 1, 4))?;
    let one_hot = idx.broadcast_eq(&positions)?.to_dtype(a.dtype())?;
    one_hot.reshape((b, c, h2, w2, 2, 2))?.permute((0, 1, 2, 4, 3, 5))?.contiguous()?.reshape((b, c, h, w))
}

/// Sums each 2×2 window: [B,C,H,W] → [B,C,H/2,W/2].
pub fn window_sum(a: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = a.dims4()?;
    a.reshape((b, c, h / 2, 2, w / 2, 2))?.sum(5)?.sum(3)
}

/// Nearest-neighbour 2× upsampling [B,C,h,w] → [B,C,2h,2w] by broadcasting (its autograd
/// backward is the window sum, which is what the second-order attacks need).
pub fn upsample2(g: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = g.dims4()?;
    g.reshape((b, c, h, 1, w, 1))?.broadcast_as((b, c, h, 2, w, 2))?.reshape((b, c, 2 * h, 2 * w))
}

/// Pools `a` at the first arg-max of each window of `rank` (same shape; a monotone
/// function of `a`, e.g. its pre-activation), and returns the pooled tensor and the mask.
pub fn max_pool2_ranked(a: &Tensor, rank: &Tensor) -> Result<(Tensor, Tensor)> {
    let mask = argmax_mask(rank)?;
    let pooled = window_sum(&a.mul(&mask)?)?;
    Ok((pooled, mask))
}

/// Routes a pooled-layer gradient back to the arg-max positions.
pub fn unpool2(g: &Tensor, mask: &Tensor) -> Result<Tensor> {
    upsample2(g)?.mul(mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn max_pool_routes_gradient_whole_to_first_argmax() {
        let dev = Device::Cpu;
        // One 2×2 window [[1,2],[3,4]]: max 4 at (1,1); a second window all ties [[5,5],[5,5]]:
        // the gradient must go to (0,0) alone, whole (1.0), not 1/4 and not to all four.
        let x = Var::from_vec(vec![1f32, 2., 5., 5., 3., 4., 5., 5.], (1, 1, 2, 4), &dev).unwrap();
        let (p, _) = max_pool2_ranked(x.as_tensor(), x.as_tensor()).unwrap();
        assert_eq!(p.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![4., 5.]);
        let grads = p.sum_all().unwrap().backward().unwrap();
        let g = grads.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(g, vec![0., 0., 1., 0., 0., 1., 0., 0.]);
    }

    #[test]
    fn unpool_is_the_adjoint_of_pooling() {
        let dev = Device::Cpu;
        let a = Tensor::new(&[[[[0.3f32, 0.9, 0.1, 0.2], [0.5, 0.4, 0.8, 0.7]]]], &dev).unwrap();
        let (_, mask) = max_pool2_ranked(&a, &a).unwrap();
        let g = Tensor::new(&[[[[10f32, 20.]]]], &dev).unwrap();
        let back = unpool2(&g, &mask).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(back, vec![0., 10., 0., 0., 0., 0., 20., 0.]);
    }
}

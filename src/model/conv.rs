//! 3×3, stride-1, padding-1 convolution as batched matrix products of candle ops.
//!
//! candle 0.11's CPU `conv2d` builds its patches in scalar loops and multiplies them one image
//! tile at a time, and autograd through it calls the slower `conv_transpose2d`; for convs that
//! end in few channels (conv1's input-gradient, 32 → 1) it reaches about 1 GFLOP/s
//! (../shared/DESIGN.md). Here each conv is one batched GEMM plus copies, and its autograd
//! backward is made of the same kinds of ops (narrow, pad, matmul), which second-order attacks
//! need. Two equivalent forms, chosen by which has the smaller intermediate:
//!
//! * patches (im2col), when C_in ≤ C_out: cols [B, 9·C_in, H·W], then W [C_out, 9·C_in] · cols;
//! * shift-after-product, when C_out < C_in: y = W' [9·C_out, C_in] · x [B, C_in, H·W], then
//!   out = Σ over the 9 taps of y's tap slice shifted by the tap offset (zero padded).
//!
//! Both compute out[b,o,h,w] = Σ_{c,i,j} w[o,c,i,j] · x[b,c,h+i−1,w+j−1] (cross-correlation,
//! PyTorch's convention). Shapes: x [B,C_in,H,W], w [C_out,C_in,3,3] → [B,C_out,H,W].

use candle_core::{Result, Tensor};

/// A 3×3 padding-1 convolution kernel prepared for [`conv3x3`].
#[derive(Debug, Clone)]
pub struct Conv3x3 {
    c_in: usize,
    c_out: usize,
    /// The kernel [C_out, C_in, 3, 3], rearranged on every call (cheap) so that a trained
    /// variable's in-place updates are always seen.
    w: Tensor,
    shift_form: bool,
}

impl Conv3x3 {
    /// Prepares the kernel `w` [C_out, C_in, 3, 3] (PyTorch layout).
    pub fn new(w: &Tensor) -> Result<Self> {
        let (c_out, c_in, kh, kw) = w.dims4()?;
        if (kh, kw) != (3, 3) {
            candle_core::bail!("Conv3x3 needs a 3×3 kernel, got {kh}×{kw}");
        }
        Ok(Self { c_in, c_out, w: w.clone(), shift_form: c_out < c_in })
    }

    /// Applies the convolution to `x` [B,C_in,H,W].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        if c != self.c_in {
            candle_core::bail!("Conv3x3: input has {c} channels, kernel expects {}", self.c_in);
        }
        if self.shift_form {
            // [C_out, C_in, 3, 3] → [3, 3, C_out, C_in] → [9·C_out, C_in]: row tap·C_out + o.
            let wk = self.w.permute((2, 3, 0, 1))?.contiguous()?.reshape((9 * self.c_out, c))?;
            let y = wk
                .broadcast_left(b)?
                .matmul(&x.reshape((b, c, h * w))?)?
                .reshape((b, 9, self.c_out, h, w))?;
            let y = y.pad_with_zeros(3, 1, 1)?.pad_with_zeros(4, 1, 1)?;
            let mut out: Option<Tensor> = None;
            for tap in 0..9 {
                // out[h,w] += y_tap[h + i − 1, w + j − 1] = padded y_tap[h + i, w + j].
                let (i, j) = (tap / 3, tap % 3);
                let part = y.narrow(1, tap, 1)?.squeeze(1)?.narrow(2, i, h)?.narrow(3, j, w)?;
                out = Some(match out {
                    None => part.contiguous()?,
                    Some(o) => (o + part)?,
                });
            }
            out.ok_or_else(|| candle_core::Error::Msg("no taps".into()))
        } else {
            let xp = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
            let mut taps = Vec::with_capacity(9);
            for i in 0..3 {
                for j in 0..3 {
                    taps.push(xp.narrow(2, i, h)?.narrow(3, j, w)?);
                }
            }
            // [B, C, 9, H, W] → [B, C·9, H·W]: row c·9 + tap, matching w's [C_out, C_in·9].
            let cols = Tensor::stack(&taps, 2)?.reshape((b, c * 9, h * w))?;
            let wk = self.w.contiguous()?.reshape((self.c_out, c * 9))?;
            wk.broadcast_left(b)?.matmul(&cols)?.reshape((b, self.c_out, h, w))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn check(c_in: usize, c_out: usize) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 1f64, (3, c_in, 6, 5), &dev).unwrap();
        let w = Tensor::randn(0f64, 1f64, (c_out, c_in, 3, 3), &dev).unwrap();
        let want = x.conv2d(&w, 1, 1, 1, 1).unwrap();
        let got = Conv3x3::new(&w).unwrap().forward(&x).unwrap();
        let d = (want - &got).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(d < 1e-12, "{c_in}→{c_out}: {d}");
        // Autograd through it equals the adjoint: ⟨conv(x), g⟩ has gradient conv_transpose(g).
        let xv = Var::from_tensor(&x).unwrap();
        let g = Tensor::randn(0f64, 1f64, got.shape(), &dev).unwrap();
        let conv = Conv3x3::new(&w).unwrap();
        let s = conv.forward(xv.as_tensor()).unwrap().mul(&g).unwrap().sum_all().unwrap();
        let grad = s.backward().unwrap().get(xv.as_tensor()).unwrap().clone();
        let want = g.conv_transpose2d(&w, 1, 0, 1, 1).unwrap();
        let d = (want - grad).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(d < 1e-12, "backward {c_in}→{c_out}: {d}");
    }

    #[test]
    fn patch_form_equals_candle_conv2d() {
        check(1, 4);
        check(3, 5);
    }

    #[test]
    fn shift_form_equals_candle_conv2d() {
        check(4, 1);
        check(6, 2);
    }
}

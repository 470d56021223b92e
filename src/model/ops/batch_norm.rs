//! An eval-mode batch norm, y = (x − mean)·γ/√(var + ε) + β per channel: never a node of its
//! own. The state_dict builders and the ONNX import fold it into the convolution before it
//! ([`fold_batch_norm`], as zennit's canonizer merges it); anywhere else it becomes an
//! [`Affine`] node with the same scale and shift.

use super::{Affine, Import, Mapping, Op};
use crate::error::{Error, Result};
use crate::model::mapping::{tensor, Step, Val};
use candle_core::{DType, Tensor};

/// A convolution's weight and bias with an eval-mode batch norm folded in:
/// w′ = w·γ/√(var + eps) per output channel, b′ = (b − mean)·γ/√(var + eps) + β.
/// All tensors are read as f32 on the weight's device.
pub fn fold_batch_norm(
    weight: &Tensor,
    bias: Option<&Tensor>,
    bn: &BatchNorm,
) -> Result<(Tensor, Option<Tensor>)> {
    let o = weight.dim(0)?;
    let (scale, shift) = bn.scale_shift()?;
    if scale.len() != o {
        return Err(Error::Invalid(format!("batch norm of {} channels after a conv of {o}", scale.len())));
    }
    let dev = weight.device();
    let s = Tensor::from_vec(scale.clone(), o, dev)?;
    let shape: Vec<usize> = std::iter::once(o).chain(std::iter::repeat_n(1, weight.rank() - 1)).collect();
    let w = weight.to_dtype(DType::F32)?.broadcast_mul(&s.reshape(shape)?)?;
    let b0 = match bias {
        Some(b) => b.to_dtype(DType::F32)?.to_vec1::<f32>()?,
        None => vec![0.0; o],
    };
    let b: Vec<f32> = (0..o).map(|c| b0[c] * scale[c] + shift[c]).collect();
    Ok((w, Some(Tensor::from_vec(b, o, dev)?)))
}

/// An eval-mode batch norm's parameters.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    /// γ [C].
    pub weight: Tensor,
    /// β [C].
    pub bias: Tensor,
    /// Running mean [C].
    pub mean: Tensor,
    /// Running variance [C].
    pub var: Tensor,
    /// ε added to the variance.
    pub eps: f64,
}

impl BatchNorm {
    /// Per-channel (scale, shift) with y = x·scale + shift: scale = γ/√(var + eps),
    /// shift = β − mean·scale (f64 math, rounded to f32).
    pub fn scale_shift(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let v =
            |t: &Tensor| -> Result<Vec<f64>> { Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?) };
        let (g, b, m, var) = (v(&self.weight)?, v(&self.bias)?, v(&self.mean)?, v(&self.var)?);
        let c = g.len();
        if [b.len(), m.len(), var.len()] != [c; 3] {
            return Err(Error::Invalid("batch norm tensors of different lengths".into()));
        }
        // var + ε must be a positive number: a negative variance (or a NaN ε) folds into NaN.
        if let Some(i) = (0..c).find(|&i| !(var[i] + self.eps > 0.0 && (var[i] + self.eps).is_finite())) {
            return Err(Error::Invalid(format!(
                "batch norm channel {i}: running variance {} + ε {} is not a positive number",
                var[i], self.eps
            )));
        }
        let scale: Vec<f64> = (0..c).map(|i| g[i] / (var[i] + self.eps).sqrt()).collect();
        let shift: Vec<f32> = (0..c).map(|i| (b[i] - m[i] * scale[i]) as f32).collect();
        Ok((scale.into_iter().map(|s| s as f32).collect(), shift))
    }
}

/// The ONNX ops this file maps.
pub(super) const ONNX: &[(&str, Mapping)] = &[("BatchNormalization", onnx)];

/// BatchNormalization (eval mode): folded into the Conv it reads when nothing else reads that
/// Conv, an [`Affine`] node otherwise.
fn onnx(im: &mut dyn Import) -> Step<()> {
    if im.int("training_mode", 0) != 0 {
        return Err("training_mode = 1: export the model in eval mode".into());
    }
    let x = im.node_in(0)?;
    let mut p = Vec::new();
    for (i, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "var")] {
        let v = im.const_in(i)?.ok_or(format!("has no constant {what}"))?.f32s();
        let len = v.len();
        p.push(tensor(v, &[len])?);
    }
    let [weight, bias, mean, var] = <[Tensor; 4]>::try_from(p).map_err(|_| "four tensors expected")?;
    // The same eval-mode batch norm, scale/shift and fold as the state_dict builders'.
    let bn = BatchNorm { weight, bias, mean, var, eps: f64::from(im.float("epsilon", 1e-5)) };
    if im.sole_reader_of(0, x) {
        if let Some(Op::Conv(conv)) = im.op_mut(x) {
            let (w, b) = fold_batch_norm(&conv.weight, conv.bias.as_ref(), &bn).map_err(|e| e.to_string())?;
            (conv.weight, conv.bias) = (w, b);
            return im.set(Val::Node(x));
        }
    }
    let (scale, shift) = bn.scale_shift().map_err(|e| e.to_string())?;
    let id = im.push(Op::Affine(Affine { scale, shift }), &[x], "")?;
    im.set(Val::Node(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn batch_norm_folds_into_the_conv() {
        // One channel: γ = 2, β = 1, mean = 3, var = 4 − eps → scale 1, shift 1 − 3 = −2.
        let dev = Device::Cpu;
        let t = |v: f32| Tensor::new(&[v], &dev).unwrap();
        let bn = BatchNorm { weight: t(2.0), bias: t(1.0), mean: t(3.0), var: t(4.0 - 1e-5), eps: 1e-5 };
        let (s, b) = bn.scale_shift().unwrap();
        assert!((s[0] - 1.0).abs() < 1e-6 && (b[0] + 2.0).abs() < 1e-6);
        let w = Tensor::new(&[[[[0.5f32]]]], &dev).unwrap();
        let (w2, b2) = fold_batch_norm(&w, Some(&t(10.0)), &bn).unwrap();
        // conv(x) = 0.5x + 10 → bn: (0.5x + 10 − 3)·1 + 1 = 0.5x + 8.
        assert!((w2.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] - 0.5).abs() < 1e-6);
        assert!((b2.unwrap().to_vec1::<f32>().unwrap()[0] - 8.0).abs() < 1e-5);
    }
}

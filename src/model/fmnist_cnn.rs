//! `fmnist_cnn`: the default Fashion-MNIST classifier.
//!
//! conv1 Conv2d(1→32, 3×3, padding 1) → act → MaxPool 2×2 → conv2 Conv2d(32→64, 3×3, padding 1)
//! → act → MaxPool 2×2 → flatten in NCHW order (index = c·49 + h·7 + w) → fc1 Linear(3136→128)
//! → act → fc2 Linear(128→10) → logits. Input [B,1,28,28], pixels = byte/255.
//!
//! Weights are safetensors with PyTorch's `state_dict` names and layouts ([`PARAM_SHAPES`]), so
//! the same file loads in PyTorch and a model trained in PyTorch loads here.

use super::conv::Conv3x3;
use super::kernels::{Kernels, Rule, Stop};
use super::pool::{max_pool2_ranked, unpool2};
use super::{flat_f32, plain_cpu_f32, Activation, Classifier, ReluRule};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Parameter names and shapes, exactly as in the PyTorch `state_dict`.
pub const PARAM_SHAPES: [(&str, &[usize]); 8] = [
    ("conv1.weight", &[32, 1, 3, 3]),
    ("conv1.bias", &[32]),
    ("conv2.weight", &[64, 32, 3, 3]),
    ("conv2.bias", &[64]),
    ("fc1.weight", &[128, 3136]),
    ("fc1.bias", &[128]),
    ("fc2.weight", &[10, 128]),
    ("fc2.bias", &[10]),
];

/// The model: its weights plus the two transposed, flipped kernels the explicit backward uses
/// (precomputed once, since the weights are frozen).
#[derive(Debug, Clone)]
pub struct FmnistCnn {
    conv1_w: Tensor,
    conv1_b: Tensor,
    conv2_w: Tensor,
    conv2_b: Tensor,
    fc1_w: Tensor,
    fc1_b: Tensor,
    fc2_w: Tensor,
    fc2_b: Tensor,
    /// conv1 and conv2 as batched GEMMs.
    conv1: Conv3x3,
    conv2: Conv3x3,
    /// conv1's input-gradient: a conv with kernel [1,32,3,3] (transposed, spatially flipped).
    conv1_back: Conv3x3,
    /// conv2's input-gradient: a conv with kernel [32,64,3,3] (transposed, spatially flipped).
    conv2_back: Conv3x3,
    /// The hand-written CPU passes ([`super::kernels`]) for calls autograd need not see;
    /// `None` off the CPU and when the weights are trainable variables.
    kernels: Option<Arc<Kernels>>,
}

/// Forward activations kept for the explicit backward pass.
struct Cache {
    z1: Tensor,
    mask1: Tensor,
    z2: Tensor,
    mask2: Tensor,
    z3: Tensor,
}

impl FmnistCnn {
    /// Builds the model from named tensors (PyTorch names, [`PARAM_SHAPES`]); `source` names the
    /// file in errors. Tensors are converted to f32 on `device`.
    pub fn from_tensors(
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
        source: &Path,
    ) -> Result<Self> {
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = tensors.remove(name).ok_or_else(|| {
                Error::data(source, format!("missing tensor `{name}` (expected shape {shape:?})"))
            })?;
            if t.dims() != shape {
                return Err(Error::data(
                    source,
                    format!("tensor `{name}` has shape {:?}, expected {shape:?}", t.dims()),
                ));
            }
            Ok(t.to_dtype(DType::F32)?.to_device(device)?)
        };
        let [c1w, c1b, c2w, c2b, f1w, f1b, f2w, f2b] = PARAM_SHAPES;
        let conv1_w = take(c1w.0, c1w.1)?;
        let conv1_b = take(c1b.0, c1b.1)?;
        let conv2_w = take(c2w.0, c2w.1)?;
        let conv2_b = take(c2b.0, c2b.1)?;
        let fc1_w = take(f1w.0, f1w.1)?;
        let fc1_b = take(f1b.0, f1b.1)?;
        let fc2_w = take(f2w.0, f2w.1)?;
        let fc2_b = take(f2b.0, f2b.1)?;
        if let Some(extra) = tensors.keys().min() {
            return Err(Error::data(source, format!("unexpected tensor `{extra}` for fmnist_cnn")));
        }
        Self::new(conv1_w, conv1_b, conv2_w, conv2_b, fc1_w, fc1_b, fc2_w, fc2_b)
    }

    /// Builds the model from its eight parameter tensors (shapes as in [`PARAM_SHAPES`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        conv1_w: Tensor,
        conv1_b: Tensor,
        conv2_w: Tensor,
        conv2_b: Tensor,
        fc1_w: Tensor,
        fc1_b: Tensor,
        fc2_w: Tensor,
        fc2_b: Tensor,
    ) -> Result<Self> {
        // The input-gradient of a padding-1 3×3 conv is a padding-1 conv of the upstream
        // gradient with the kernel's in/out channels swapped and its taps flipped.
        let back = |w: &Tensor| Conv3x3::new(&w.detach().transpose(0, 1)?.contiguous()?.flip(&[2, 3])?);
        let conv1_back = back(&conv1_w)?;
        let conv2_back = back(&conv2_w)?;
        let conv1 = Conv3x3::new(&conv1_w)?;
        let conv2 = Conv3x3::new(&conv2_w)?;
        let params = [&conv1_w, &conv1_b, &conv2_w, &conv2_b, &fc1_w, &fc1_b, &fc2_w, &fc2_b];
        let kernels = if conv1_w.device().is_cpu() && params.iter().all(|t| !t.track_op()) {
            let flat = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
            let [a, b, c, d, e, f, g, h] = params.map(flat);
            Kernels::new(a?, b?, c?, d?, e?, f?, g?, h?).map(Arc::new)
        } else {
            None
        };
        Ok(Self {
            conv1_w,
            conv1_b,
            conv2_w,
            conv2_b,
            fc1_w,
            fc1_b,
            fc2_w,
            fc2_b,
            conv1,
            conv2,
            conv1_back,
            conv2_back,
            kernels,
        })
    }

    /// The same model with every pass on candle ops (the path autograd sees), for checking
    /// and benchmarking the CPU kernels against it.
    pub fn without_kernels(mut self) -> Self {
        self.kernels = None;
        self
    }

    /// The CPU kernels, when they can serve a call on `x` [B,1,28,28] with these other
    /// tensors: all f32 on the CPU, none part of an autograd graph.
    fn kernels_for(&self, x: &Tensor, others: &[&Tensor]) -> Option<(&Kernels, usize)> {
        let k = self.kernels.as_deref()?;
        let (b, c, h, w) = x.dims4().ok()?;
        let all_plain = plain_cpu_f32(x) && others.iter().all(|t| plain_cpu_f32(t));
        ((c, h, w) == (1, 28, 28) && all_plain).then_some((k, b))
    }

    /// Loads safetensors weights from `path` onto `device`, checking every name and shape.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        if !path.exists() {
            return Err(Error::io(path, std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
        let tensors = candle_core::safetensors::load(path, device)
            .map_err(|e| Error::data(path, format!("not a readable safetensors file: {e}")))?;
        Self::from_tensors(tensors, device, path)
    }

    /// The parameters by PyTorch name, for saving.
    pub fn named_tensors(&self) -> Vec<(&'static str, Tensor)> {
        let t = [
            &self.conv1_w,
            &self.conv1_b,
            &self.conv2_w,
            &self.conv2_b,
            &self.fc1_w,
            &self.fc1_b,
            &self.fc2_w,
            &self.fc2_b,
        ];
        PARAM_SHAPES.iter().zip(t).map(|((n, _), t)| (*n, t.detach())).collect()
    }

    /// Saves the weights as safetensors, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let map: HashMap<String, Tensor> =
            self.named_tensors().into_iter().map(|(n, t)| (n.to_string(), t)).collect();
        let tmp = path.with_extension("safetensors.tmp");
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        candle_core::safetensors::save(&map, &tmp)?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    fn forward_cached(&self, x: &Tensor, act: Activation) -> Result<(Tensor, Cache)> {
        let b = x.dim(0)?;
        let z1 = self.conv1.forward(x)?.broadcast_add(&self.conv1_b.reshape((1, 32, 1, 1))?)?;
        let pool = |z: &Tensor| -> candle_core::Result<(Tensor, Tensor)> {
            let a = act.apply(z)?;
            max_pool2_ranked(&a, if act.pool_ranks_outputs() { &a } else { z })
        };
        let (p1, mask1) = pool(&z1)?;
        let z2 = self.conv2.forward(&p1)?.broadcast_add(&self.conv2_b.reshape((1, 64, 1, 1))?)?;
        let (p2, mask2) = pool(&z2)?;
        let z3 = p2.reshape((b, 3136))?.matmul(&self.fc1_w.t()?)?.broadcast_add(&self.fc1_b)?;
        let logits = act.apply(&z3)?.matmul(&self.fc2_w.t()?)?.broadcast_add(&self.fc2_b)?;
        Ok((logits, Cache { z1, mask1, z2, mask2, z3 }))
    }

    /// The explicit backward pass from the logits down to conv2's post-activation output
    /// (before pooling): [B,64,14,14]. `back(layer, z, g)` is the backward rule of the
    /// nonlinearity `layer` (0 = after conv1, 1 = after conv2, 2 = after fc1).
    fn backward_to_conv2(&self, c: &Cache, grad_logits: &Tensor, back: &ReluBack) -> Result<Tensor> {
        let b = grad_logits.dim(0)?;
        // fc2, fc1: upstream @ W; nonlinearity: the rule; pool: route to the arg-max.
        let g3 = back(2, &c.z3, &grad_logits.matmul(&self.fc2_w)?)?;
        let gp2 = g3.matmul(&self.fc1_w)?.reshape((b, 64, 7, 7))?;
        Ok(unpool2(&gp2, &c.mask2)?)
    }

    /// The rest of the backward pass, from conv2's post-activation gradient to the input:
    /// the rule at each nonlinearity, arg-max routing at the pool, and each conv's
    /// input-gradient as a padding-1 conv with the flipped, transposed kernel.
    fn backward_from_conv2(&self, c: &Cache, ga2: &Tensor, back: &ReluBack) -> Result<Tensor> {
        let gz2 = back(1, &c.z2, ga2)?;
        let gp1 = self.conv2_back.forward(&gz2)?;
        let gz1 = back(0, &c.z1, &unpool2(&gp1, &c.mask1)?)?;
        Ok(self.conv1_back.forward(&gz1)?)
    }
}

/// A tensor's values, row-major, for the CPU kernels.
/// A backward rule at a nonlinearity: (layer index, pre-activation z, upstream gradient) →
/// gradient with respect to z.
type ReluBack<'a> = dyn Fn(usize, &Tensor, &Tensor) -> candle_core::Result<Tensor> + 'a;

/// |z − z₀| below which DeepLIFT's rescale multiplier falls back to the plain derivative.
const RESCALE_EPS: f64 = 1e-6;

/// Layers whose activations [`Classifier::layer_gradient`] exposes: conv2's pre-activation
/// (`conv2`) and its output after the nonlinearity, before pooling (`conv2_relu`).
const LAYERS: [&str; 2] = ["conv2", "conv2_relu"];

impl Classifier for FmnistCnn {
    fn name(&self) -> &str {
        "fmnist_cnn"
    }

    fn input_shape(&self) -> (usize, usize, usize) {
        (1, 28, 28)
    }

    fn num_classes(&self) -> usize {
        10
    }

    fn device(&self) -> &Device {
        self.conv1_w.device()
    }

    fn logits(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        if let Some((k, n)) = self.kernels_for(x, &[]) {
            let out = k.pass(&flat_f32(x)?, n, act, None, None);
            return Ok(Tensor::from_vec(out.logits, (n, 10), x.device())?);
        }
        Ok(self.forward_cached(x, act)?.0)
    }

    fn input_gradient(
        &self,
        x: &Tensor,
        grad_logits: &Tensor,
        act: Activation,
        rule: ReluRule,
    ) -> Result<(Tensor, Tensor)> {
        if let Some((k, n)) =
            self.kernels_for(x, &[grad_logits]).filter(|_| grad_logits.dims() == [x.dim(0).unwrap_or(0), 10])
        {
            let out = k.pass(
                &flat_f32(x)?,
                n,
                act,
                Some((&flat_f32(grad_logits)?, Rule::Relu(rule), Stop::Input)),
                None,
            );
            let logits = Tensor::from_vec(out.logits, (n, 10), x.device())?;
            return Ok((logits, Tensor::from_vec(out.grad, (n, 1, 28, 28), x.device())?));
        }
        let (logits, c) = self.forward_cached(x, act)?;
        let back = |_: usize, z: &Tensor, g: &Tensor| rule.backward(act, z, g);
        let ga2 = self.backward_to_conv2(&c, grad_logits, &back)?;
        Ok((logits, self.backward_from_conv2(&c, &ga2, &back)?))
    }

    fn gradient_then_hessian_vector(
        &self,
        x: &Tensor,
        grad_logits: &Tensor,
        act: Activation,
        then: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let fast = self.kernels_for(x, &[grad_logits]).filter(|&(_, n)| grad_logits.dims() == [n, 10]);
        let Some((k, n)) = fast else {
            return super::autograd_gradient_then_hessian_vector(self, x, grad_logits, act, then);
        };
        let (dev, shape) = (x.device(), (n, 1, 28, 28));
        let (g, hv) =
            k.gradient_then_hessian_vector(&flat_f32(x)?, &flat_f32(grad_logits)?, n, act, |g| {
                let v = then(&Tensor::from_vec(g.to_vec(), shape, dev)?)?;
                if v.dims() != x.dims() {
                    return Err(Error::Invalid(format!(
                        "H·v: vector of shape {:?} for input {:?}",
                        v.dims(),
                        x.dims()
                    )));
                }
                flat_f32(&v.detach().to_dtype(DType::F32)?)
            })?;
        Ok((Tensor::from_vec(g, shape, dev)?, Tensor::from_vec(hv, shape, dev)?))
    }

    fn rescale_gradient(
        &self,
        x: &Tensor,
        baseline: &Tensor,
        grad_logits: &Tensor,
        act: Activation,
    ) -> Result<Tensor> {
        let fits =
            |n: usize| grad_logits.dims() == [n, 10] && [784, n * 784].contains(&baseline.elem_count());
        if let Some((k, n)) = self.kernels_for(x, &[grad_logits, baseline]).filter(|&(_, n)| fits(n)) {
            let back = Some((&flat_f32(grad_logits)?[..], Rule::Rescale, Stop::Input));
            let out = k.pass(&flat_f32(x)?, n, act, back, Some(&flat_f32(baseline)?));
            return Ok(Tensor::from_vec(out.grad, (n, 1, 28, 28), x.device())?);
        }
        let (_, c) = self.forward_cached(x, act)?;
        // The reference network's pre-activations (with its own pooling), one per layer.
        let (_, c0) = self.forward_cached(&baseline.broadcast_as(x.shape())?.contiguous()?, act)?;
        let refs = [&c0.z1, &c0.z2, &c0.z3];
        let back = |layer: usize, z: &Tensor, g: &Tensor| -> candle_core::Result<Tensor> {
            let z0 = refs[layer];
            let dz = (z - z0)?;
            let far = dz.abs()?.gt(RESCALE_EPS)?;
            // Rescale multiplier where z moved from its reference, the derivative elsewhere.
            let safe = far.where_cond(&dz, &dz.ones_like()?)?;
            let rescale = ((act.apply(z)? - act.apply(z0)?)? / safe)?;
            g.mul(&far.where_cond(&rescale, &act.derivative(z)?)?)
        };
        let ga2 = self.backward_to_conv2(&c, grad_logits, &back)?;
        self.backward_from_conv2(&c, &ga2, &back)
    }

    fn layers(&self) -> &[&'static str] {
        &LAYERS
    }

    fn occluded_logits(
        &self,
        x: &Tensor,
        windows: &[(usize, usize)],
        size: [usize; 2],
        fill: f32,
        act: Activation,
    ) -> Result<Option<Tensor>> {
        let fits = windows
            .iter()
            .all(|&(r, c)| size[0] > 0 && size[1] > 0 && r + size[0] <= 28 && c + size[1] <= 28);
        let Some((k, n)) = self.kernels_for(x, &[]).filter(|_| fits) else {
            return Ok(None);
        };
        let out = k.occluded_logits(&flat_f32(x)?, n, windows, size, fill, act);
        Ok(Some(Tensor::from_vec(out, (windows.len() * n, 10), x.device())?))
    }

    fn layer_gradient(
        &self,
        x: &Tensor,
        grad_logits: &Tensor,
        act: Activation,
        layer: &str,
    ) -> Result<(Tensor, Tensor)> {
        let stop = match layer {
            "conv2_relu" => Some(Stop::Conv2Relu),
            "conv2" => Some(Stop::Conv2),
            _ => None,
        };
        let fast = self.kernels_for(x, &[grad_logits]).filter(|&(_, n)| grad_logits.dims() == [n, 10]);
        if let (Some((k, n)), Some(stop)) = (fast, stop) {
            let back = Some((&flat_f32(grad_logits)?[..], Rule::Relu(ReluRule::Gradient), stop));
            let out = k.pass(&flat_f32(x)?, n, act, back, None);
            let shape = (n, 64, 14, 14);
            return Ok((
                Tensor::from_vec(out.layer, shape, x.device())?,
                Tensor::from_vec(out.grad, shape, x.device())?,
            ));
        }
        let (_, c) = self.forward_cached(x, act)?;
        let back = |_: usize, z: &Tensor, g: &Tensor| ReluRule::Gradient.backward(act, z, g);
        let ga2 = self.backward_to_conv2(&c, grad_logits, &back)?;
        match layer {
            "conv2_relu" => Ok((act.apply(&c.z2)?, ga2)),
            "conv2" => {
                let gz2 = ReluRule::Gradient.backward(act, &c.z2, &ga2)?;
                Ok((c.z2, gz2))
            }
            other => Err(Error::Invalid(format!(
                "model fmnist_cnn has no layer `{other}` (known: {})",
                LAYERS.join(", ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;

    pub fn shipped() -> FmnistCnn {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/fmnist_cnn.safetensors");
        FmnistCnn::load(&path, &Device::Cpu).unwrap()
    }

    /// 11 images (one full block of 8 and a partial one): uniform noise with about half the
    /// pixels zeroed, so that many pooling windows tie exactly as on real backgrounds.
    pub fn images(n: usize, seed: u64) -> Tensor {
        use rand::Rng;
        let mut rng = crate::seed::rng(seed);
        let v: Vec<f32> = (0..n * 784)
            .map(|_| if rng.random_bool(0.5) { rng.random_range(0.0f32..1.0) } else { 0.0 })
            .collect();
        Tensor::from_vec(v, (n, 1, 28, 28), &Device::Cpu).unwrap()
    }

    pub fn grad_logits(n: usize, seed: u64) -> Tensor {
        use rand::Rng;
        let mut rng = crate::seed::rng(seed);
        let v: Vec<f32> = (0..n * 10).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Tensor::from_vec(v, (n, 10), &Device::Cpu).unwrap()
    }

    /// max |a − b| / max |b|: float32 rounding of sums of a few thousand terms stays far
    /// below 1e-4 of the scale; a wrong index, rule or tap is of order 1.
    pub fn rel(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let s = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(s > 0.0, "reference is all zero");
        d / s
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;
    use crate::model::Classifier;

    const ACTS: [Activation; 2] = [Activation::Relu, Activation::Softplus { beta: 10.0 }];

    /// The occlusion shortcut (only what a window changes is recomputed) gives the logits of
    /// full passes over the occluded copies: windows of several shapes at the corners, on the
    /// borders (where the conv padding and the clamped regions meet) and inside, at odd and
    /// even offsets (pool windows half inside), a whole-image window, fill 0 (which ties with
    /// the zero background) and 0.5, both activations. A wrong region bound or a missed
    /// restore changes a logit by order 1.
    #[test]
    fn occluded_logits_equal_full_passes_of_the_occluded_copies() {
        let model = shipped();
        let n = 3;
        let x = images(n, 5);
        let pixels = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // (window size, window positions)
        type Case = ([usize; 2], &'static [(usize, usize)]);
        let cases: [Case; 4] = [
            ([4, 4], &[(0, 0), (2, 2), (24, 24), (0, 24), (13, 7), (11, 11)]),
            ([1, 1], &[(0, 0), (27, 27), (14, 3), (5, 26)]),
            ([3, 5], &[(25, 23), (1, 0), (9, 16)]),
            ([28, 28], &[(0, 0)]),
        ];
        for (size, windows) in cases {
            for fill in [0.0f32, 0.5] {
                for act in ACTS {
                    let got = model.occluded_logits(&x, windows, size, fill, act).unwrap().unwrap();
                    let mut copies = Vec::new();
                    for &(r, c) in windows {
                        for i in 0..n {
                            let mut img = pixels[i * 784..][..784].to_vec();
                            for y in r..r + size[0] {
                                img[y * 28 + c..][..size[1]].fill(fill);
                            }
                            copies.extend(img);
                        }
                    }
                    let copies =
                        Tensor::from_vec(copies, (windows.len() * n, 1, 28, 28), &Device::Cpu).unwrap();
                    let want = model.logits(&copies, act).unwrap();
                    let err = rel(&got, &want);
                    assert!(err < 1e-5, "{size:?} fill {fill} {act:?}: {err}");
                }
            }
        }
        // Windows that do not fit, and the candle path, leave the caller to run the copies.
        assert!(model.occluded_logits(&x, &[(26, 0)], [4, 4], 0.0, Activation::Relu).unwrap().is_none());
        let slow = shipped().without_kernels();
        assert!(slow.occluded_logits(&x, &[(0, 0)], [4, 4], 0.0, Activation::Relu).unwrap().is_none());
    }

    #[test]
    fn kernels_equal_the_candle_passes() {
        let fast = shipped();
        assert!(fast.kernels.is_some(), "shipped CPU model must use the kernels");
        let slow = shipped().without_kernels();
        let (x, g) = (images(11, 1), grad_logits(11, 2));
        for act in ACTS {
            assert!(rel(&fast.logits(&x, act).unwrap(), &slow.logits(&x, act).unwrap()) < 1e-5);
            for rule in [ReluRule::Gradient, ReluRule::Guided, ReluRule::Deconvnet] {
                let (lf, gf) = fast.input_gradient(&x, &g, act, rule).unwrap();
                let (ls, gs) = slow.input_gradient(&x, &g, act, rule).unwrap();
                assert!(rel(&lf, &ls) < 1e-5, "{act:?} {rule:?} logits");
                assert!(rel(&gf, &gs) < 1e-4, "{act:?} {rule:?}: {}", rel(&gf, &gs));
            }
            // DeepLIFT against one broadcast baseline and against one baseline per row.
            for baseline in [Tensor::full(0.1f32, (1, 1, 28, 28), &Device::Cpu).unwrap(), images(11, 3)] {
                let f = fast.rescale_gradient(&x, &baseline, &g, act).unwrap();
                let s = slow.rescale_gradient(&x, &baseline, &g, act).unwrap();
                assert!(rel(&f, &s) < 1e-4, "{act:?} rescale: {}", rel(&f, &s));
            }
            for layer in LAYERS {
                let (af, gf) = fast.layer_gradient(&x, &g, act, layer).unwrap();
                let (as_, gs) = slow.layer_gradient(&x, &g, act, layer).unwrap();
                assert!(rel(&af, &as_) < 1e-5 && rel(&gf, &gs) < 1e-4, "{act:?} {layer}");
            }
        }
    }

    #[test]
    fn kernels_step_aside_for_autograd() {
        // An input in an autograd graph must take the candle path, whose result autograd
        // can differentiate: the gradient of Σ logits[target] must arrive at x.
        let m = shipped();
        let xv = candle_core::Var::from_tensor(&images(2, 4)).unwrap();
        let (_, map) =
            m.input_gradient(xv.as_tensor(), &grad_logits(2, 5), ACTS[1], ReluRule::Gradient).unwrap();
        let grads = map.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(xv.as_tensor()).is_some());
    }

    #[test]
    fn kernels_do_not_depend_on_threads_or_batch() {
        let m = shipped();
        let (x, g) = (images(19, 6), grad_logits(19, 7));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                m.input_gradient(&x, &g, ACTS[0], ReluRule::Gradient)
                    .unwrap()
                    .1
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
        };
        assert_eq!(run(1), run(2), "1 and 2 threads must give identical bits");
        // Row 13 alone (first in its block) against row 13 in the batch of 19 (sixth of its block).
        let alone = m
            .input_gradient(
                &x.narrow(0, 13, 1).unwrap(),
                &g.narrow(0, 13, 1).unwrap(),
                ACTS[0],
                ReluRule::Gradient,
            )
            .unwrap()
            .1;
        let within =
            m.input_gradient(&x, &g, ACTS[0], ReluRule::Gradient).unwrap().1.narrow(0, 13, 1).unwrap();
        assert!(rel(&alone, &within) < 1e-6, "{}", rel(&alone, &within));
    }
}

#[cfg(test)]
mod hessian_tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn kernel_hessian_vector_equals_autograd() {
        let (fast, slow) = (shipped(), shipped().without_kernels());
        let (x, g) = (images(11, 8), grad_logits(11, 9));
        let v = Tensor::randn(0f32, 1f32, (11, 1, 28, 28), &Device::Cpu).unwrap();
        for act in [Activation::Softplus { beta: 10.0 }, Activation::Softplus { beta: 2.0 }] {
            let (gf, hf) = fast.hessian_vector(&x, &g, &v, act).unwrap();
            let (gs, hs) = slow.hessian_vector(&x, &g, &v, act).unwrap();
            assert!(rel(&gf, &gs) < 1e-4, "{act:?} gradient");
            assert!(rel(&hf, &hs) < 1e-4, "{act:?} Hv: {}", rel(&hf, &hs));
        }
        // ReLU networks are piecewise linear: the Hessian is zero wherever it exists.
        let (_, h) = fast.hessian_vector(&x, &g, &v, Activation::Relu).unwrap();
        assert_eq!(h.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }
}

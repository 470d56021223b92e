//! `fmnist_cnn`: the default Fashion-MNIST classifier, as a layer graph.
//!
//! conv1 Conv2d(1→32, 3×3, padding 1) → act → MaxPool 2×2 → conv2 Conv2d(32→64, 3×3, padding 1)
//! → act → MaxPool 2×2 → flatten in NCHW order (index = c·49 + h·7 + w) → fc1 Linear(3136→128)
//! → act → fc2 Linear(128→10) → logits. Input [B,1,28,28], pixels = byte/255. Nodes:
//! `conv1`, `conv1_relu`, `pool1`, `conv2`, `conv2_relu` (the Grad-CAM default: conv2's output
//! after its nonlinearity, before pooling), `pool2`, `flatten`, `fc1`, `fc1_relu`, `fc2`.
//!
//! Weights are safetensors with PyTorch's `state_dict` names and layouts ([`PARAM_SHAPES`]), so
//! the same file loads in PyTorch and a model trained in PyTorch loads here.

use super::graph::{Flatten, GraphBuilder, Nonlinearity, Op};
use super::Network;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

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

/// The Grad-CAM default layer.
pub const DEFAULT_LAYER: &str = "conv2_relu";

/// Builds the model from named tensors (PyTorch names, [`PARAM_SHAPES`]); `source` names the
/// file in errors. Tensors are converted to f32 on `device`.
pub fn from_tensors(mut tensors: HashMap<String, Tensor>, device: &Device, source: &Path) -> Result<Network> {
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
    let p: Vec<Tensor> = PARAM_SHAPES.iter().map(|(n, s)| take(n, s)).collect::<Result<_>>()?;
    if let Some(extra) = tensors.keys().min() {
        return Err(Error::data(source, format!("unexpected tensor `{extra}` for fmnist_cnn")));
    }
    let [c1w, c1b, c2w, c2b, f1w, f1b, f2w, f2b]: [Tensor; 8] =
        p.try_into().map_err(|_| Error::Invalid("fmnist_cnn: eight tensors".into()))?;
    new(c1w, c1b, c2w, c2b, f1w, f1b, f2w, f2b)
}

/// Builds the model from its eight parameter tensors (shapes as in [`PARAM_SHAPES`]), on
/// their device. Trainable variables are kept as they are, so autograd reaches them.
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
) -> Result<Network> {
    let device = conv1_w.device().clone();
    let mut b = GraphBuilder::new(1);
    let c1 = b.conv("conv1", b.input(), (conv1_w, Some(conv1_b)), 1, 1, 1);
    let a1 = b.act("conv1_relu", Nonlinearity::Relu, c1);
    let p1 = b.max_pool("pool1", a1, 2, 2, 0, false);
    let c2 = b.conv("conv2", p1, (conv2_w, Some(conv2_b)), 1, 1, 1);
    let a2 = b.act("conv2_relu", Nonlinearity::Relu, c2);
    let p2 = b.max_pool("pool2", a2, 2, 2, 0, false);
    let flat = b.push("flatten", Op::Flatten(Flatten), &[p2]);
    let f1 = b.linear("fc1", flat, (fc1_w, Some(fc1_b)));
    let a3 = b.act("fc1_relu", Nonlinearity::Relu, f1);
    let f2 = b.linear("fc2", a3, (fc2_w, Some(fc2_b)));
    Network::new("fmnist_cnn", b.finish(f2)?, (28, 28), DEFAULT_LAYER, &device)
}

/// Loads safetensors weights from `path` onto `device`, checking every name and shape.
pub fn load(path: &Path, device: &Device) -> Result<Network> {
    from_tensors(super::weights::read_safetensors(path, device)?, device, path)
}

/// The parameters by PyTorch name, for saving.
pub fn named_tensors(net: &Network) -> Result<Vec<(&'static str, Tensor)>> {
    let g = net.graph();
    let mut out = Vec::with_capacity(8);
    for (name, _) in PARAM_SHAPES {
        let (node, field) = name.split_once('.').unwrap_or((name, ""));
        let id = g.find(node).ok_or_else(|| Error::Invalid(format!("fmnist_cnn: no node `{node}`")))?;
        let (w, bias) = match &g.nodes()[id].op {
            Op::Conv(c) => (&c.weight, &c.bias),
            Op::Linear(l) => (&l.weight, &l.bias),
            _ => return Err(Error::Invalid(format!("fmnist_cnn: `{node}` has no parameters"))),
        };
        let t = if field == "weight" { Some(w) } else { bias.as_ref() };
        let t = t.ok_or_else(|| Error::Invalid(format!("fmnist_cnn: `{name}` missing")))?;
        out.push((name, t.detach()));
    }
    Ok(out)
}

/// Saves the weights as safetensors, atomically.
pub fn save(net: &Network, path: &Path) -> Result<()> {
    let map: HashMap<String, Tensor> =
        named_tensors(net)?.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
    let tmp = path.with_extension("safetensors.tmp");
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    candle_core::safetensors::save(&map, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn shipped() -> Network {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/fmnist_cnn.safetensors");
        load(&path, &Device::Cpu).unwrap()
    }

    /// Uniform noise with about half the pixels zeroed, so that many pooling windows tie
    /// exactly as on real backgrounds.
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
    use crate::model::{Activation, Classifier, Rule};

    const ACTS: [Activation; 2] = [Activation::Exact, Activation::Softplus { beta: 10.0 }];

    #[test]
    fn kernels_equal_the_candle_passes() {
        let fast = shipped();
        assert!(fast.has_kernels(), "shipped CPU model must use the kernels");
        let slow = shipped().without_kernels();
        let (x, g) = (images(11, 1), grad_logits(11, 2));
        for act in ACTS {
            assert!(rel(&fast.logits(&x, act).unwrap(), &slow.logits(&x, act).unwrap()) < 1e-5);
            for rule in [Rule::Gradient, Rule::Guided, Rule::Deconvnet] {
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
            for layer in ["conv2", "conv2_relu"] {
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
        let (_, map) = m.input_gradient(xv.as_tensor(), &grad_logits(2, 5), ACTS[1], Rule::Gradient).unwrap();
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
                m.input_gradient(&x, &g, ACTS[0], Rule::Gradient)
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
                Rule::Gradient,
            )
            .unwrap()
            .1;
        let within = m.input_gradient(&x, &g, ACTS[0], Rule::Gradient).unwrap().1.narrow(0, 13, 1).unwrap();
        assert!(rel(&alone, &within) < 1e-6, "{}", rel(&alone, &within));
    }

    #[test]
    fn kernel_hessian_vector_equals_the_candle_path_and_autograd() {
        let (fast, slow) = (shipped(), shipped().without_kernels());
        let (x, g) = (images(11, 8), grad_logits(11, 9));
        let v = Tensor::randn(0f32, 1f32, (11, 1, 28, 28), &Device::Cpu).unwrap();
        for act in [Activation::Softplus { beta: 10.0 }, Activation::Softplus { beta: 2.0 }] {
            let (gf, hf) = fast.hessian_vector(&x, &g, &v, act).unwrap();
            let (gs, hs) = slow.hessian_vector(&x, &g, &v, act).unwrap();
            assert!(rel(&gf, &gs) < 1e-4, "{act:?} gradient");
            assert!(rel(&hf, &hs) < 1e-4, "{act:?} Hv: {}", rel(&hf, &hs));
            // Autograd through the candle path's explicit backward pass (the trait's default).
            let pass = crate::model::Backward::gradient(&g, act);
            let (_, ha) =
                crate::model::autograd_backward_adjoint(&slow, &x, &pass, &mut |_| Ok((v.clone(), None)))
                    .unwrap();
            assert!(rel(&hf, &ha) < 1e-4, "{act:?} Hv vs autograd: {}", rel(&hf, &ha));
        }
        // ReLU networks are piecewise linear: the Hessian is zero wherever it exists.
        let (_, h) = fast.hessian_vector(&x, &g, &v, Activation::Exact).unwrap();
        assert_eq!(h.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }

    /// The occlusion shortcut (only what a window changes is recomputed) gives the logits of
    /// full passes over the occluded copies: windows of several shapes at the corners, on the
    /// borders (where the conv padding and the clamped regions meet) and inside, at odd and
    /// even offsets (pool windows half inside), a whole-image window, fill 0 (which ties with
    /// the zero background) and 0.5. A wrong region bound or a missed restore changes a logit
    /// by order 1.
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
                for act in [Activation::Exact] {
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
        // Windows that do not fit, the surrogate (occlusion explains the real model) and the
        // candle path leave the caller to run the copies.
        assert!(model.occluded_logits(&x, &[(0, 0)], [4, 4], 0.0, ACTS[1]).unwrap().is_none());
        assert!(model.occluded_logits(&x, &[(26, 0)], [4, 4], 0.0, Activation::Exact).unwrap().is_none());
        let slow = shipped().without_kernels();
        assert!(slow.occluded_logits(&x, &[(0, 0)], [4, 4], 0.0, Activation::Exact).unwrap().is_none());
    }
}

//! Parameter layers of a `state_dict` and their re-initialisation (Adebayo et al. 2018).
//!
//! A *parameter layer* is one PyTorch module with parameters: a convolution, a linear layer or
//! a batch norm, named by its `state_dict` prefix (`layer1.0.conv1`), listed in the order the
//! model's builder reads them, which is forward order. Re-initialisation follows PyTorch's
//! `reset_parameters` for each type:
//! * `Conv2d` and `Linear`: weight by `kaiming_uniform_(a=√5)`, i.e. U(−1/√fan_in, 1/√fan_in),
//!   and bias by U(−1/√fan_in, 1/√fan_in), fan_in = in-channels/groups × kernel area (the
//!   weight's `size(1)` × its receptive field) or in-features;
//!   a transformer's fused q/k/v projection (`nn.MultiheadAttention`'s `in_proj_weight` and
//!   `in_proj_bias`, the layer `….in_proj` here) is drawn as a linear layer too (PyTorch
//!   itself initialises it by Xavier's rule with a zero bias: the same kind of draw, another
//!   scale);
//! * `BatchNorm2d`: γ = 1, β = 0; the running mean and variance are kept (PyTorch would reset
//!   them too; Adebayo et al.'s randomisation keeps the trained statistics), so the layer
//!   becomes the trained normalisation without its learned affine.
//!
//! Each layer's values are drawn from a stream keyed by the seed and the layer's name, so a
//! layer gets the same random weights under cascading and independent randomisation and in
//! every run with that seed. Shapes as PyTorch stores them: conv [C_out, C_in/groups, kh, kw],
//! linear [out, in], batch norm [C].

use crate::error::{Error, Result};
use crate::seed;
use candle_core::Tensor;
use rand::Rng;
use serde::Serialize;
use std::collections::HashMap;

/// What kind of module a parameter layer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// A convolution (4-D weight).
    Conv,
    /// A fully connected layer (2-D weight).
    Linear,
    /// A batch norm (weight, bias, running statistics).
    BatchNorm,
}

/// One module with parameters, by its `state_dict` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamLayer {
    /// The `state_dict` prefix (`layer1.0.conv1`).
    pub name: String,
    /// What it is.
    pub kind: ParamKind,
    /// Its keys, in the builder's order (`….weight`, `….bias`, …).
    pub keys: Vec<String>,
}

/// The key suffixes of a module's tensors.
const SUFFIXES: [&str; 4] = ["weight", "bias", "running_mean", "running_var"];

/// The module a `state_dict` key belongs to and the key's role in it (one of [`SUFFIXES`]), or
/// None for keys of no parameter layer. `nn.MultiheadAttention` stores its fused q/k/v
/// projection as `….in_proj_weight` and `….in_proj_bias`: the linear layer `….in_proj` here
/// (its `out_proj` is an ordinary `nn.Linear`).
fn module_of(key: &str) -> Option<(String, &'static str)> {
    for (suffix, role) in [("in_proj_weight", "weight"), ("in_proj_bias", "bias")] {
        if let Some(prefix) = key.strip_suffix(suffix).and_then(|p| p.strip_suffix('.')) {
            return Some((format!("{prefix}.in_proj"), role));
        }
    }
    let (prefix, suffix) = key.rsplit_once('.')?;
    SUFFIXES.iter().find(|&&s| s == suffix).map(|&role| (prefix.to_string(), role))
}

/// `layer`'s key in `role` (`weight`, `bias`), if it has one.
fn key_in_role<'l>(layer: &'l ParamLayer, role: &str) -> Option<&'l String> {
    layer.keys.iter().find(|k| module_of(k).is_some_and(|(_, r)| r == role))
}

/// The parameter layers of a `state_dict` whose keys and shapes come in forward order
/// (`order`: the builder's reads, see [`key_order`]). Keys with other suffixes (a layer scale,
/// a class token) and modules that are none of the three kinds are left out: they are not
/// layers Adebayo et al. randomise.
pub fn param_layers(order: &[(String, Vec<usize>)]) -> Vec<ParamLayer> {
    // Per module prefix, in first-read order: its keys and its weight's rank.
    let mut modules: Vec<(String, Vec<String>, usize)> = Vec::new();
    for (key, dims) in order {
        let Some((prefix, suffix)) = module_of(key) else { continue };
        let i = match modules.iter().position(|(name, ..)| *name == prefix) {
            Some(i) => i,
            None => {
                modules.push((prefix, Vec::new(), 0));
                modules.len() - 1
            }
        };
        modules[i].1.push(key.clone());
        if suffix == "weight" {
            modules[i].2 = dims.len();
        }
    }
    modules
        .into_iter()
        .filter_map(|(name, keys, rank)| {
            let kind = match rank {
                _ if keys.iter().any(|k| k.ends_with(".running_mean")) => ParamKind::BatchNorm,
                4 => ParamKind::Conv,
                2 => ParamKind::Linear,
                _ => return None,
            };
            Some(ParamLayer { name, kind, keys })
        })
        .collect()
}

/// The keys and shapes of model `name`'s `state_dict` in the order its builder reads them
/// (forward order): `fmnist_cnn`'s fixed list, or a torchvision architecture's builder run on
/// `tensors` when given (a ViT's depth is the weights', not its name's) or else on a made-up
/// `state_dict` (nothing is allocated). ONNX files have no `state_dict`.
pub fn key_order(name: &str, tensors: Option<&HashMap<String, Tensor>>) -> Result<Vec<(String, Vec<usize>)>> {
    if name == "fmnist_cnn" {
        return Ok(crate::model::fmnist_cnn::PARAM_SHAPES
            .iter()
            .map(|(k, s)| (k.to_string(), s.to_vec()))
            .collect());
    }
    let arch = crate::model::zoo::architecture(name).ok_or_else(|| {
        Error::Invalid(format!("model `{name}`: parameter randomisation needs a state_dict architecture"))
    })?;
    let mut w = match tensors {
        Some(t) => crate::model::weights::Weights::from_tensors(t.clone(), "<trained state_dict>"),
        None => crate::model::weights::Weights::synthesize(1000, 3, &candle_core::Device::Cpu),
    };
    (arch.build)(&mut w)?;
    Ok(w.recorded())
}

/// Re-initialises `layer`'s tensors in `tensors` by PyTorch's default initialiser for its
/// kind (see the module docs), drawn from `seed` and the layer's name; the tensors keep their
/// dtype and device. A missing key is an error naming it.
pub fn reinitialize(tensors: &mut HashMap<String, Tensor>, layer: &ParamLayer, seed: u64) -> Result<()> {
    let mut rng = seed::rng(seed::derive(seed, &[seed::hash_str(&layer.name)]));
    let get = |tensors: &HashMap<String, Tensor>, key: &str| {
        tensors.get(key).cloned().ok_or_else(|| Error::Invalid(format!("no tensor `{key}` to randomise")))
    };
    match layer.kind {
        ParamKind::BatchNorm => {
            for (role, value) in [("weight", 1.0), ("bias", 0.0)] {
                if let Some(key) = key_in_role(layer, role) {
                    let t = get(tensors, key)?;
                    tensors.insert(key.clone(), t.ones_like()?.affine(value, 0.0)?);
                }
            }
        }
        ParamKind::Conv | ParamKind::Linear => {
            let weight_key = key_in_role(layer, "weight").cloned().ok_or_else(|| {
                Error::Invalid(format!("layer `{}` has no weight to randomise", layer.name))
            })?;
            let weight = get(tensors, &weight_key)?;
            let dims = weight.dims();
            let fan_in: usize = dims.iter().skip(1).product();
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            // Weight first, then bias, from one stream (as PyTorch draws them in that order).
            for key in std::iter::once(&weight_key).chain(key_in_role(layer, "bias")) {
                let t = get(tensors, key)?;
                let v: Vec<f32> =
                    (0..t.elem_count()).map(|_| rng.random_range(-bound..bound) as f32).collect();
                let new = Tensor::from_vec(v, t.shape(), t.device())?.to_dtype(t.dtype())?;
                tensors.insert(key.clone(), new);
            }
        }
    }
    Ok(())
}

/// Adebayo et al.'s two model-parameter randomisation schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Randomization {
    /// From the logits down, one more layer (or block, [`super::Granularity`]) at a time.
    Cascading,
    /// One layer (or block) at a time, the others trained, from the logits down.
    Independent,
}

impl Randomization {
    /// The layers (indices into a forward-ordered list of `n`) randomised at each step, from
    /// the logits down: cascading step k randomises the last k + 1 layers, independent step k
    /// only the (k + 1)-th from the end.
    pub fn steps(self, n: usize) -> Vec<Vec<usize>> {
        (0..n)
            .map(|k| match self {
                Self::Cascading => (n - 1 - k..n).rev().collect(),
                Self::Independent => vec![n - 1 - k],
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn shipped() -> HashMap<String, Tensor> {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/fmnist_cnn.safetensors");
        crate::model::weights::read_safetensors(&path, &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn a_vits_attention_projections_are_parameter_layers_and_get_randomised() {
        let layers = param_layers(&key_order("vit_b_16", None).unwrap());
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        let block = "encoder.layers.encoder_layer_0";
        let at = names.iter().position(|&n| n == format!("{block}.self_attention.in_proj")).unwrap();
        assert_eq!(names[at + 1], format!("{block}.self_attention.out_proj"), "{names:?}");
        let in_proj = &layers[at];
        assert_eq!(in_proj.kind, ParamKind::Linear);
        let keys = [
            format!("{block}.self_attention.in_proj_weight"),
            format!("{block}.self_attention.in_proj_bias"),
        ];
        assert_eq!(in_proj.keys, keys);
        let mut tensors: HashMap<String, Tensor> = keys
            .iter()
            .zip([(2304, 768), (2304, 1)])
            .map(|(k, (r, c))| {
                (k.clone(), Tensor::zeros((r, c), candle_core::DType::F32, &Device::Cpu).unwrap())
            })
            .collect();
        tensors.insert(keys[1].clone(), Tensor::zeros(2304, candle_core::DType::F32, &Device::Cpu).unwrap());
        reinitialize(&mut tensors, in_proj, 7).unwrap();
        let bound = 1.0 / 768f32.sqrt();
        for k in &keys {
            let v = values(&tensors[k]);
            assert!(v.iter().all(|x| x.abs() <= bound) && v.iter().any(|&x| x != 0.0), "{k}");
        }
    }

    #[test]
    fn resnet18_has_its_41_parameter_layers_in_forward_order() {
        let layers = param_layers(&key_order("resnet18", None).unwrap());
        let count = |k: ParamKind| layers.iter().filter(|l| l.kind == k).count();
        assert_eq!(
            (count(ParamKind::Conv), count(ParamKind::BatchNorm), count(ParamKind::Linear)),
            (20, 20, 1)
        );
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(&names[..4], ["conv1", "bn1", "layer1.0.conv1", "layer1.0.bn1"]);
        assert_eq!(names.last(), Some(&"fc"));
        let bn = &layers[1];
        assert_eq!(bn.keys, ["bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"]);
        let cnn: Vec<String> =
            param_layers(&key_order("fmnist_cnn", None).unwrap()).into_iter().map(|l| l.name).collect();
        assert_eq!(cnn, ["conv1", "conv2", "fc1", "fc2"]);
        assert!(key_order("model.onnx", None).is_err());
    }

    #[test]
    fn convolutions_and_linear_layers_are_redrawn_uniformly_within_one_over_root_fan_in() {
        let original = shipped();
        let layers = param_layers(&key_order("fmnist_cnn", None).unwrap());
        for layer in &layers {
            let mut t = original.clone();
            reinitialize(&mut t, layer, 7).unwrap();
            let w = &t[&format!("{}.weight", layer.name)];
            let fan_in: usize = w.dims().iter().skip(1).product();
            let bound = 1.0 / (fan_in as f64).sqrt();
            let all: Vec<f32> =
                values(w).into_iter().chain(values(&t[&format!("{}.bias", layer.name)])).collect();
            assert!(all.iter().all(|&v| (v as f64).abs() <= bound), "{}", layer.name);
            // Uniform on (−b, b): mean 0, variance b²/3 (large layers only: a tight check).
            let n = all.len() as f64;
            if n > 10_000.0 {
                let mean = all.iter().map(|&v| v as f64).sum::<f64>() / n;
                let var = all.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
                assert!(mean.abs() < 0.02 * bound, "{}: mean {mean}", layer.name);
                assert!((var / (bound * bound / 3.0) - 1.0).abs() < 0.02, "{}: var {var}", layer.name);
            }
            // Only this layer moved.
            for (key, before) in &original {
                let moved = values(before) != values(&t[key]);
                assert_eq!(moved, layer.keys.contains(key), "{}: {key}", layer.name);
            }
            // Seeded: the same draw again, another with another seed.
            let mut again = original.clone();
            reinitialize(&mut again, layer, 7).unwrap();
            assert_eq!(values(&again[&layer.keys[0]]), values(w));
            reinitialize(&mut again, layer, 8).unwrap();
            assert_ne!(values(&again[&layer.keys[0]]), values(w));
        }
    }

    #[test]
    fn batch_norms_lose_their_affine_and_keep_their_statistics() {
        let mut w = crate::model::weights::Weights::synthesize(10, 3, &Device::Cpu);
        (crate::model::zoo::architecture("resnet18").unwrap().build)(&mut w).unwrap();
        let mut dict: HashMap<String, Tensor> = w.into_state_dict();
        let stats = |d: &HashMap<String, Tensor>, k: &str| d[k].affine(1.0, 0.5).unwrap();
        // Trained-looking values first, so the reset is visible.
        for k in ["bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"] {
            let v = stats(&dict, k);
            dict.insert(k.into(), v);
        }
        let layer = param_layers(&key_order("resnet18", None).unwrap()).remove(1);
        assert_eq!(layer.kind, ParamKind::BatchNorm);
        reinitialize(&mut dict, &layer, 3).unwrap();
        assert!(values(&dict["bn1.weight"]).iter().all(|&v| v == 1.0));
        assert!(values(&dict["bn1.bias"]).iter().all(|&v| v == 0.0));
        assert!(values(&dict["bn1.running_mean"]).iter().all(|&v| v == 0.5));
        assert!(values(&dict["bn1.running_var"]).iter().all(|&v| v == 1.5));
    }

    #[test]
    fn cascading_adds_layers_from_the_logits_down_and_independent_takes_one_at_a_time() {
        assert_eq!(Randomization::Cascading.steps(3), vec![vec![2], vec![2, 1], vec![2, 1, 0]]);
        assert_eq!(Randomization::Independent.steps(3), vec![vec![2], vec![1], vec![0]]);
        assert!(Randomization::Cascading.steps(0).is_empty());
    }
}

#[cfg(test)]
mod rebuild_tests {
    use super::*;
    use crate::model::{from_state_dict, load, Activation};
    use candle_core::Device;

    /// The randomised `state_dict` becomes a model through the ordinary builder: unchanged
    /// tensors give the shipped model's logits exactly; a randomised last layer changes them.
    #[test]
    fn a_state_dict_in_memory_builds_the_same_model_and_randomising_the_logits_layer_changes_it() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/fmnist_cnn.safetensors");
        let dev = Device::Cpu;
        let shipped = load("fmnist_cnn", &path, None, &dev).unwrap();
        let mut dict = crate::model::weights::read_safetensors(&path, &dev).unwrap();
        let x = Tensor::rand(0f32, 1f32, (3, 1, 28, 28), &dev).unwrap();
        let logits = |m: &dyn crate::model::Classifier| {
            m.logits(&x, Activation::Exact).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let same = from_state_dict("fmnist_cnn", dict.clone(), &path, None, &dev).unwrap();
        assert_eq!(logits(same.as_ref()), logits(shipped.as_ref()));
        let last = param_layers(&key_order("fmnist_cnn", None).unwrap()).pop().unwrap();
        reinitialize(&mut dict, &last, 0).unwrap();
        let random = from_state_dict("fmnist_cnn", dict, &path, None, &dev).unwrap();
        assert_ne!(logits(random.as_ref()), logits(shipped.as_ref()));
        assert!(from_state_dict("nonet", HashMap::new(), &path, None, &dev).is_err());
    }
}

//! Deterministic pseudo-random weights from a formula: the Rust twin of
//! scripts/synthetic_weights.py (the formula is written out there and in
//! tests/fixtures/torchvision/README.md). The torchvision fixtures were made with these weights,
//! so a Rust implementation of those architectures can be loaded with exactly the same
//! parameters from the `.keys.json` files alone, and compared with PyTorch's outputs.
//!
//! Everything is computed in f64 and cast to f32 once, as the Python side does, so the two
//! agree bit for bit.

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

fn fnv1a64(key: &str) -> u64 {
    key.bytes().fold(FNV_OFFSET, |h, b| (h ^ b as u64).wrapping_mul(FNV_PRIME))
}

/// The formula's u in [0, 1), element `i` of the stream of key hash `h`.
fn uniform_at(h: u64, i: u64) -> f64 {
    let x = h.wrapping_add(i.wrapping_mul(GOLDEN));
    let mut z = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 40) as f64 / (1u64 << 24) as f64
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The formula's values for a state_dict key of `shape`, row-major, with the key-dependent
/// scaling (running_var, running_mean, bias, BN weight, conv/linear weight, ConvNeXt's
/// layer_scale, the ViT's class_token and pos_embedding).
///
/// Panics on `num_batches_tracked` (not part of the formula) and on keys no rule covers.
pub fn synthetic_tensor(key: &str, shape: &[usize]) -> Vec<f32> {
    let n = numel(shape);
    let h = fnv1a64(key);
    let scale: Box<dyn Fn(f64) -> f64> = if key.ends_with("running_var") {
        Box::new(|u| 0.5 + u)
    } else if key.ends_with("running_mean") {
        Box::new(|u| 0.1 * (2.0 * u - 1.0))
    } else if key.ends_with("num_batches_tracked") {
        panic!("{key}: num_batches_tracked is not part of the formula")
    } else if key.ends_with("bias") {
        Box::new(|u| 0.05 * (2.0 * u - 1.0))
    } else if key.ends_with("weight") && shape.len() == 1 {
        Box::new(|u| 1.0 + 0.1 * (2.0 * u - 1.0))
    } else if key.ends_with("weight") && shape.len() >= 2 {
        let fan_in = numel(&shape[1..]) as f64;
        let a = (3.0 / fan_in).sqrt();
        Box::new(move |u| (2.0 * u - 1.0) * a)
    } else if key.ends_with("layer_scale") {
        // ConvNeXt's per-channel residual scale [C,1,1] (torchvision's 1e-6 would make every
        // block almost the identity).
        Box::new(|u| 1.0 + 0.1 * (2.0 * u - 1.0))
    } else if key.ends_with("class_token") || key.ends_with("pos_embedding") {
        // The Vision Transformer's class token [1,1,D] and position embedding [1,T,D]
        // (torchvision's 0 and N(0, 0.02²) would leave the class token input-free and the
        // positions almost invisible next to the patch embeddings).
        Box::new(|u| 0.5 * (2.0 * u - 1.0))
    } else {
        panic!("{key} {shape:?}: no rule in the formula")
    };
    (0..n as u64).map(|i| scale(uniform_at(h, i)) as f32).collect()
}

/// The formula's unscaled u in [0, 1) for `key` (the fixtures' input images use key "input").
pub fn synthetic_uniform(key: &str, shape: &[usize]) -> Vec<f32> {
    let h = fnv1a64(key);
    (0..numel(shape) as u64).map(|i| uniform_at(h, i) as f32).collect()
}

/// Order-sensitive, bit-exact checksum of f32 values, as scripts/synthetic_weights.py's
/// `checksum`: sum_i (bits_i + 1) * (2i + 1) mod 2^64, bits_i the IEEE-754 pattern of value i.
pub fn checksum(values: &[f32]) -> u64 {
    values
        .iter()
        .enumerate()
        .fold(0u64, |acc, (i, v)| acc.wrapping_add((v.to_bits() as u64 + 1).wrapping_mul(2 * i as u64 + 1)))
}

/// One entry of a `.keys.json` file. `checksum` (hex, of the Python side's values) is absent for
/// `num_batches_tracked`.
#[derive(Debug, serde::Deserialize)]
pub struct KeyEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub checksum: Option<String>,
}

/// A `<arch>.keys.json` file: the state_dict keys in PyTorch's order.
#[derive(Debug, serde::Deserialize)]
pub struct KeysFile {
    pub arch: String,
    pub num_classes: usize,
    pub keys: Vec<KeyEntry>,
}

pub fn read_keys(keys_json: &Path) -> KeysFile {
    let text = std::fs::read_to_string(keys_json).unwrap_or_else(|e| panic!("{keys_json:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{keys_json:?}: {e}"))
}

/// The whole synthetic state_dict of a `.keys.json` file, as F32 tensors on `device`.
/// `num_batches_tracked` entries (I64 counters, not used at inference) are skipped.
pub fn synthetic_state_dict(keys_json: &Path, device: &Device) -> HashMap<String, Tensor> {
    read_keys(keys_json)
        .keys
        .iter()
        .filter(|k| !k.name.ends_with("num_batches_tracked"))
        .map(|k| {
            assert_eq!(k.dtype, "float32", "{}", k.name);
            let t =
                Tensor::from_vec(synthetic_tensor(&k.name, &k.shape), k.shape.as_slice(), device).unwrap();
            (k.name.clone(), t)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::{flat, root};

    fn assert_close(got: &[f32], want: &[f64]) {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() < 1e-7, "value {i}: {g} vs {w}");
        }
    }

    /// The numbers `python3 scripts/synthetic_weights.py` prints.
    #[test]
    fn synthetic_first_values_equal_the_python_formula() {
        assert_eq!(fnv1a64(""), FNV_OFFSET);
        assert_eq!(fnv1a64("a"), 0xaf63_dc4c_8601_ec8c); // the published FNV-1a 64 test vector
        let w = synthetic_tensor("layer1.0.conv1.weight", &[64, 64, 3, 3]);
        assert_eq!(w.len(), 64 * 64 * 9);
        assert_close(&w[..5], &[0.0006196533213, 0.0492830798, 0.01056705695, 0.05060167983, 0.008198796771]);
        let v = synthetic_tensor("bn1.running_var", &[64]);
        assert_close(&v[..5], &[1.06532836, 1.14230752, 1.286753416, 1.470778823, 0.9438512325]);
    }

    #[test]
    fn synthetic_scaling_rules_stay_in_their_ranges() {
        let within = |key: &str, shape: &[usize], lo: f32, hi: f32| {
            let v = synthetic_tensor(key, shape);
            assert!(v.iter().all(|&x| (lo..=hi).contains(&x)), "{key}");
        };
        within("bn1.running_var", &[64], 0.5, 1.5);
        within("bn1.running_mean", &[64], -0.1, 0.1);
        within("bn1.weight", &[64], 0.9, 1.1);
        within("fc.bias", &[10], -0.05, 0.05);
        let a = (3.0f32 / 512.0).sqrt();
        within("fc.weight", &[10, 512], -a, a);
        within("class_token", &[1, 1, 48], -0.5, 0.5);
        within("encoder.pos_embedding", &[1, 5, 48], -0.5, 0.5);
        let x = synthetic_uniform("input", &[2, 3, 64, 64]);
        assert!(x.iter().all(|&u| (0.0..1.0).contains(&u)));
    }

    /// Every fixture's keys file loads, and its `x` is the formula's "input" stream.
    #[test]
    fn synthetic_state_dicts_match_the_torchvision_fixtures() {
        let dir = root().join("tests/fixtures/torchvision");
        let archs = [
            "resnet18",
            "resnet34",
            "resnet50",
            "resnet101",
            "squeezenet1_0",
            "squeezenet1_1",
            "mobilenet_v2",
            "vgg11",
            "vgg16",
            "vgg11_bn",
            "vgg16_bn",
            "alexnet",
        ];
        let want_x = synthetic_uniform("input", &[2, 3, 64, 64]);
        for arch in archs {
            let keys = read_keys(&dir.join(format!("{arch}.keys.json")));
            assert_eq!(keys.arch, arch);
            assert_eq!(keys.num_classes, 10);
            let floats = keys.keys.iter().filter(|k| !k.name.ends_with("num_batches_tracked")).count();
            let fixtures =
                candle_core::safetensors::load(dir.join(format!("{arch}.safetensors")), &Device::Cpu)
                    .unwrap();
            assert_eq!(flat(&fixtures["x"]), want_x, "{arch}: x");
            assert_eq!(fixtures["logits"].dims(), &[2, 10]);
            assert_eq!(fixtures["targets"].dtype(), candle_core::DType::I64);
            if arch == "resnet18" || arch == "squeezenet1_1" || arch == "mobilenet_v2" {
                let sd = synthetic_state_dict(&dir.join(format!("{arch}.keys.json")), &Device::Cpu);
                assert_eq!(sd.len(), floats, "{arch}");
                let fc = keys.keys.iter().rev().find(|k| k.name.ends_with("weight")).unwrap();
                assert_eq!(sd[&fc.name].dims()[0], 10, "{arch}: {}", fc.name);
            }
        }
        // The small Vision Transformer (a 32×32 input: the first 6144 values of the same stream).
        let keys = read_keys(&dir.join("vit_b_16.keys.json"));
        assert_eq!((keys.arch.as_str(), keys.num_classes), ("vit_b_16", 10));
        let fixtures =
            candle_core::safetensors::load(dir.join("vit_b_16.safetensors"), &Device::Cpu).unwrap();
        assert_eq!(flat(&fixtures["x"]), synthetic_uniform("input", &[2, 3, 32, 32]), "vit_b_16: x");
        assert_eq!(fixtures["logits"].dims(), &[2, 10]);
        let sd = synthetic_state_dict(&dir.join("vit_b_16.keys.json"), &Device::Cpu);
        assert_eq!(sd.len(), keys.keys.len());
        assert_eq!(sd["encoder.pos_embedding"].dims(), &[1, 5, 48]);
        assert_eq!(sd["heads.head.weight"].dims(), &[10, 48]);
    }

    /// Every tensor of every fixture's state_dict, bit for bit as Python made it (by checksum).
    #[test]
    fn synthetic_tensors_equal_python_bit_for_bit() {
        assert_eq!(
            checksum(&synthetic_tensor("layer1.0.conv1.weight", &[64, 64, 3, 3])),
            0x2774_3322_d1b2_3e80
        );
        let dir = root().join("tests/fixtures/torchvision");
        let mut seen = std::collections::HashSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if !path.to_string_lossy().ends_with(".keys.json") {
                continue;
            }
            for k in read_keys(&path).keys {
                if k.name.ends_with("num_batches_tracked") {
                    assert!(k.checksum.is_none() && k.dtype == "int64" && k.shape.is_empty(), "{}", k.name);
                    continue;
                }
                // Keys and shapes shared by several architectures (e.g. conv1.weight) once only.
                if !seen.insert((k.name.clone(), k.shape.clone())) {
                    continue;
                }
                let want =
                    k.checksum.as_deref().unwrap_or_else(|| panic!("{path:?}: {} has no checksum", k.name));
                let want = u64::from_str_radix(want.trim_start_matches("0x"), 16).unwrap();
                assert_eq!(
                    checksum(&synthetic_tensor(&k.name, &k.shape)),
                    want,
                    "{path:?}: {} {:?}",
                    k.name,
                    k.shape
                );
            }
        }
        assert!(seen.len() > 500, "only {} distinct tensors checked", seen.len());
    }
}

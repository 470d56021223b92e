//! Named weight tensors from a PyTorch `state_dict`, taken one by one by a model builder.
//!
//! A builder ([`super::zoo`]) asks for every tensor it needs by its PyTorch key
//! (`layer1.0.conv1.weight`) and expected shape; [`Weights::take`] removes it, checks the shape
//! and converts it to f32, and [`Weights::finish`] complains about whatever is left over. So a
//! checkpoint that does not fit the architecture fails at load time with the key and both
//! shapes, not later with a broadcasting error deep inside a forward pass.
//!
//! Shapes are written as PyTorch stores them: conv kernels [C_out, C_in/groups, kh, kw],
//! linear weights [out, in], biases and batch-norm vectors [C]. A `None` in an expected shape
//! is a free dimension that the file decides: the input channels (a first convolution's C_in)
//! or the number of classes (a last layer's out-features).
//!
//! The same builder code also runs in reverse: [`Weights::synthesize`] makes up a tensor of
//! the expected shape for every key it is asked for and records it, so tests and tools get a
//! complete, correctly shaped `state_dict` of any architecture without a download.

use super::graph::BatchNorm;
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The ε `BatchNorm2d` adds to the variance by default (torchvision's MobileNetV3 uses 1e-3).
pub const BATCH_NORM_EPS: f64 = 1e-5;

/// The suffix of the batch counter PyTorch stores with every batch norm (unused in eval mode).
const BATCH_COUNTER: &str = "num_batches_tracked";

/// Named tensors of one `state_dict`, read from a file or made up (see the module docs).
#[derive(Debug)]
pub struct Weights {
    /// Where the tensors come from, for error messages.
    source: PathBuf,
    /// The tensors not yet taken (load mode).
    tensors: HashMap<String, Tensor>,
    /// Present in synthesize mode.
    synth: Option<Synth>,
    /// Load mode: the keys and shapes taken so far, in order.
    taken: Vec<(String, Vec<usize>)>,
}

/// Synthesize mode: how free dimensions are filled and what has been made up so far.
#[derive(Debug)]
struct Synth {
    classes: usize,
    channels: usize,
    device: Device,
    /// Every tensor made up, in the order it was asked for.
    taken: Vec<(String, Tensor)>,
}

/// `[64, ?, 7, 7]`: an expected shape with free dimensions as `?`.
fn expected_str(expected: &[Option<usize>]) -> String {
    let dims: Vec<String> = expected.iter().map(|d| d.map_or("?".into(), |n| n.to_string())).collect();
    format!("[{}]", dims.join(", "))
}

/// `[64, 3, 7, 7]`.
fn shape_str(dims: &[usize]) -> String {
    let dims: Vec<String> = dims.iter().map(|n| n.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

/// The tensors of a safetensors file on `device`, every float value checked to be finite:
/// the one reader of model weights.
pub(crate) fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let tensors = super::safetensors::read(path, device)?;
    check_finite(&tensors, path)?;
    Ok(tensors)
}

/// Refuses a checkpoint with a NaN or infinite float value: every map and metric computed
/// from it would be undefined (the key is named, in sorted order for a stable message).
fn check_finite(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let mut keys: Vec<&String> = tensors.keys().collect();
    keys.sort();
    for key in keys {
        let t = &tensors[key];
        if !t.dtype().is_float() {
            continue;
        }
        let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::data(
                path,
                format!("tensor `{key}` holds a non-finite value ({} at flat index {i})", values[i]),
            ));
        }
    }
    Ok(())
}

impl Weights {
    /// The tensors of a safetensors file (a PyTorch `state_dict` saved with
    /// `safetensors.torch.save_file`), on `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        Ok(Self::from_tensors(read_safetensors(path, device)?, path))
    }

    /// Tensors already in memory; `source` names them in error messages.
    pub fn from_tensors(tensors: HashMap<String, Tensor>, source: impl Into<PathBuf>) -> Self {
        Self { source: source.into(), tensors, synth: None, taken: Vec::new() }
    }

    /// Synthesize mode: [`Weights::take`] makes up every tensor it is asked for (zeros,
    /// except batch-norm γ and variance, which are ones) on `device` and records it. A free
    /// dimension at position 0 (a last layer's out-features) becomes `classes`; one elsewhere
    /// (a first convolution's in-channels) becomes `channels`.
    pub fn synthesize(classes: usize, channels: usize, device: &Device) -> Self {
        let synth = Synth { classes, channels, device: device.clone(), taken: Vec::new() };
        Self {
            source: PathBuf::from("<synthesized>"),
            tensors: HashMap::new(),
            synth: Some(synth),
            taken: Vec::new(),
        }
    }

    /// Where the tensors come from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Removes the tensor `key` and returns it as f32, checking its shape against `expected`
    /// (`None` entries match any length). Errors name the key and the expected shape, and
    /// the shape found if there is one.
    pub fn take(&mut self, key: &str, expected: &[Option<usize>]) -> Result<Tensor> {
        self.take_filled(key, expected, 0.0)
    }

    /// [`Weights::take`], with `fill` as the value of a synthesized tensor.
    fn take_filled(&mut self, key: &str, expected: &[Option<usize>], fill: f64) -> Result<Tensor> {
        if let Some(synth) = &mut self.synth {
            if synth.taken.iter().any(|(k, _)| k == key) {
                return Err(Error::Invalid(format!("tensor `{key}` is asked for twice")));
            }
            let dims: Vec<usize> = expected
                .iter()
                .enumerate()
                .map(|(i, d)| d.unwrap_or(if i == 0 { synth.classes } else { synth.channels }))
                .collect();
            // Zeros are allocated lazily: a synthesized VGG costs no memory until read.
            let t = if fill == 0.0 {
                Tensor::zeros(dims, DType::F32, &synth.device)?
            } else {
                Tensor::full(fill as f32, dims, &synth.device)?
            };
            synth.taken.push((key.to_string(), t.clone()));
            return Ok(t);
        }
        let Some(t) = self.tensors.remove(key) else {
            return Err(Error::data(
                &self.source,
                format!("missing tensor `{key}` (expected shape {})", expected_str(expected)),
            ));
        };
        let dims = t.dims();
        let fits =
            dims.len() == expected.len() && dims.iter().zip(expected).all(|(&d, e)| e.is_none_or(|e| e == d));
        if !fits {
            return Err(Error::data(
                &self.source,
                format!("tensor `{key}` has shape {}, expected {}", shape_str(dims), expected_str(expected)),
            ));
        }
        self.taken.push((key.to_string(), dims.to_vec()));
        Ok(t.to_dtype(DType::F32)?)
    }

    /// The length of dimension `dim` of the tensor `key` when it is there to be taken, else
    /// `nominal` (always in synthesize mode): how a builder reads a size that the weights
    /// decide (a transformer's width), with the architecture's own as the default. A missing
    /// key then fails at [`Weights::take`], which names it.
    pub fn size_or(&self, key: &str, dim: usize, nominal: usize) -> usize {
        match &self.synth {
            Some(_) => nominal,
            None => self.tensors.get(key).and_then(|t| t.dims().get(dim).copied()).unwrap_or(nominal),
        }
    }

    /// How many consecutive i from 0 have a tensor whose key starts with `prefix(i)` (a
    /// sequence of blocks), or `nominal` in synthesize mode.
    pub fn count_or(&self, prefix: impl Fn(usize) -> String, nominal: usize) -> usize {
        if self.synth.is_some() {
            return nominal;
        }
        (0..).take_while(|&i| self.tensors.keys().any(|k| k.starts_with(&prefix(i)))).count()
    }

    /// Renames the tensor `from` to `to` if there is one (an older checkpoint's key that
    /// PyTorch's loading hook renames the same way).
    pub fn rename(&mut self, from: &str, to: &str) {
        if let Some(t) = self.tensors.remove(from) {
            self.tensors.insert(to.to_string(), t);
        }
    }

    /// The eval-mode batch norm stored under `prefix` (`prefix.weight`, `.bias`,
    /// `.running_mean`, `.running_var`, each [channels]), with the module's ε (not stored in
    /// a `state_dict`: the architecture declares it, [`BATCH_NORM_EPS`] unless it says
    /// otherwise). `prefix.num_batches_tracked` is dropped whether present or not (in
    /// synthesize mode it is recorded, as PyTorch saves it: an i64 scalar).
    pub fn batch_norm(&mut self, prefix: &str, channels: usize, eps: f64) -> Result<BatchNorm> {
        let c = [Some(channels)];
        let bn = BatchNorm {
            weight: self.take_filled(&format!("{prefix}.weight"), &c, 1.0)?,
            bias: self.take_filled(&format!("{prefix}.bias"), &c, 0.0)?,
            mean: self.take_filled(&format!("{prefix}.running_mean"), &c, 0.0)?,
            var: self.take_filled(&format!("{prefix}.running_var"), &c, 1.0)?,
            eps,
        };
        let counter = format!("{prefix}.{BATCH_COUNTER}");
        match &mut self.synth {
            Some(synth) => {
                let t = Tensor::new(0i64, &synth.device)?;
                synth.taken.push((counter, t));
            }
            None => {
                self.tensors.remove(&counter);
            }
        }
        Ok(bn)
    }

    /// A layer norm's γ and β stored under `prefix` (`prefix.weight`, `prefix.bias`, each
    /// [channels]; synthesized γ = 1, β = 0).
    pub fn layer_norm(&mut self, prefix: &str, channels: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let c = [Some(channels)];
        let weight = self.take_filled(&format!("{prefix}.weight"), &c, 1.0)?.to_vec1::<f32>()?;
        let bias = self.take_filled(&format!("{prefix}.bias"), &c, 0.0)?.to_vec1::<f32>()?;
        Ok((weight, bias))
    }

    /// Checks that every tensor has been taken (batch counters aside); otherwise an error
    /// naming `arch`, the first unexpected key in sorted order, its shape, and how many more
    /// there are. Always succeeds in synthesize mode.
    pub fn finish(self, arch: &str) -> Result<()> {
        let mut left: Vec<(&String, &Tensor)> =
            self.tensors.iter().filter(|(k, _)| !k.ends_with(BATCH_COUNTER)).collect();
        left.sort_by(|a, b| a.0.cmp(b.0));
        let Some((key, t)) = left.first() else { return Ok(()) };
        let more = match left.len() - 1 {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        Err(Error::data(
            &self.source,
            format!("unexpected tensor `{key}` (shape {}){more}: not part of a {arch}", shape_str(t.dims())),
        ))
    }

    /// Every tensor's key and shape in the order the builder asked for them: the
    /// synthesized ones, or in load mode those taken (a model whose depth the weights decide,
    /// a ViT's, has its own list).
    pub fn recorded(&self) -> Vec<(String, Vec<usize>)> {
        match &self.synth {
            Some(s) => s.taken.iter().map(|(k, t)| (k.clone(), t.dims().to_vec())).collect(),
            None => self.taken.clone(),
        }
    }

    /// The synthesized `state_dict` (in load mode: the tensors not taken yet).
    pub fn into_state_dict(self) -> HashMap<String, Tensor> {
        match self.synth {
            Some(s) => s.taken.into_iter().collect(),
            None => self.tensors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeros(dims: &[usize]) -> Tensor {
        Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap()
    }

    fn weights(entries: &[(&str, &[usize])]) -> Weights {
        let map = entries.iter().map(|(k, d)| (k.to_string(), zeros(d))).collect();
        Weights::from_tensors(map, "model.safetensors")
    }

    #[test]
    fn take_checks_shapes_and_frees_unknown_dims() {
        let mut w = weights(&[("conv1.weight", &[64, 1, 7, 7]), ("fc.weight", &[10, 512])]);
        let t = w.take("conv1.weight", &[Some(64), None, Some(7), Some(7)]).unwrap();
        assert_eq!(t.dims(), &[64, 1, 7, 7]);
        let err = w.take("fc.weight", &[None, Some(2048)]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(msg.contains("model.safetensors") && msg.contains("`fc.weight`"), "{msg}");
        assert!(msg.contains("[10, 512]") && msg.contains("[?, 2048]"), "{msg}");
    }

    #[test]
    fn a_missing_tensor_names_its_key_and_shape() {
        let mut w = weights(&[]);
        let err = w.take("layer1.0.conv1.weight", &[Some(64), Some(64), Some(3), Some(3)]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(
            msg.contains("missing tensor `layer1.0.conv1.weight` (expected shape [64, 64, 3, 3])"),
            "{msg}"
        );
    }

    #[test]
    fn finish_names_the_first_leftover_and_ignores_batch_counters() {
        let mut w = weights(&[("b.weight", &[3]), ("a.bias", &[2]), ("c.num_batches_tracked", &[])]);
        w.take("b.weight", &[Some(3)]).unwrap();
        w.take("a.bias", &[Some(2)]).unwrap();
        w.finish("resnet18").unwrap();

        let w = weights(&[("z.weight", &[3]), ("y.bias", &[2, 4]), ("x.num_batches_tracked", &[])]);
        let msg = w.finish("resnet18").unwrap_err().to_string();
        assert!(msg.contains("unexpected tensor `y.bias` (shape [2, 4]) and 1 more"), "{msg}");
        assert!(msg.contains("resnet18"), "{msg}");
    }

    #[test]
    fn batch_norm_takes_four_vectors_with_or_without_a_counter() {
        let dev = Device::Cpu;
        let mut w = Weights::synthesize(10, 3, &dev);
        w.batch_norm("bn1", 4, BATCH_NORM_EPS).unwrap();
        let keys: Vec<String> = w.recorded().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"]
        );
        let with = w.into_state_dict();
        assert_eq!(with["bn1.num_batches_tracked"].dtype(), DType::I64);
        let mut without = with.clone();
        without.remove("bn1.num_batches_tracked");
        for dict in [with, without] {
            let mut w = Weights::from_tensors(dict, "bn.safetensors");
            let bn = w.batch_norm("bn1", 4, BATCH_NORM_EPS).unwrap();
            // Synthesized: γ = 1, β = 0, mean 0, var 1 → scale 1/√(1 + ε), shift 0.
            let (scale, shift) = bn.scale_shift().unwrap();
            assert!((scale[0] - 1.0).abs() < 1e-5 && shift[0] == 0.0);
            w.finish("bn").unwrap();
        }
    }

    #[test]
    fn synthesize_fills_free_dims_with_classes_first_and_channels_elsewhere() {
        let mut w = Weights::synthesize(10, 1, &Device::Cpu);
        assert_eq!(
            w.take("conv1.weight", &[Some(64), None, Some(7), Some(7)]).unwrap().dims(),
            &[64, 1, 7, 7]
        );
        assert_eq!(w.take("fc.weight", &[None, Some(512)]).unwrap().dims(), &[10, 512]);
        assert!(w.take("fc.weight", &[None, Some(512)]).is_err());
        let dict = w.into_state_dict();
        assert_eq!(dict.len(), 2);
        assert_eq!(dict["fc.weight"].dims(), &[10, 512]);
    }

    #[test]
    fn load_reads_a_safetensors_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let tensors: HashMap<String, Tensor> = [
            ("fc.weight".to_string(), Tensor::new(&[[1.0f64, 2.0]], &Device::Cpu).unwrap()),
            ("bn.num_batches_tracked".to_string(), Tensor::new(7i64, &Device::Cpu).unwrap()),
        ]
        .into_iter()
        .collect();
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let mut w = Weights::load(&path, &Device::Cpu).unwrap();
        let t = w.take("fc.weight", &[Some(1), Some(2)]).unwrap();
        assert_eq!(t.dtype(), DType::F32);
        assert_eq!(t.to_vec2::<f32>().unwrap(), [[1.0, 2.0]]);
        w.finish("tiny").unwrap();

        let err = Weights::load(dir.path().join("absent.safetensors"), &Device::Cpu).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        std::fs::write(&path, b"not a safetensors file").unwrap();
        let msg = Weights::load(&path, &Device::Cpu).unwrap_err().to_string();
        assert!(msg.contains("w.safetensors") && msg.contains("safetensors"), "{msg}");
    }
}

//! The CNN families beyond the first twelve, from ONNX: small random-weight instances of
//! torchvision's own classes (tests/fixtures/onnx/families, made by
//! scripts/onnx_family_fixtures.py) import, and equal onnxruntime's logits and PyTorch's
//! float64 input gradient, on both executors, ConvNeXt also as the opset-13 and dynamo
//! exporters write it.

use crate::cli::npy_f32;
use crate::torchvision::rel;
use candle_core::{DType, Device, Tensor};
use fragility::model::onnx;
use fragility::model::{one_hot, Activation, Backward, Classifier, Network};
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/families")
}

/// An int64 .npy's values.
fn npy_i64(p: &Path) -> Vec<i64> {
    let bytes = std::fs::read(p).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header_len..].chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

/// The families that import, each with the op that makes it new: squeeze-and-excitation (a
/// broadcast product of two activations) with the smooth activations in MobileNetV3
/// (HardSwish, HardSigmoid gates), EfficientNet (SiLU, sigmoid gates, V2's Fused-MBConv) and
/// RegNetY (ReLU, sigmoid gates); ShuffleNetV2's channel split (Slice) and shuffle
/// (Reshape → Transpose → Reshape); ConvNeXt's LayerNorm over the channels of channels-last
/// views, its Linear layers on them (1×1 convolutions), exact GELU and layer scale.
const FAMILIES: [(&str, &str); 7] = [
    ("mobilenet_v3_small", "mul"),
    ("mobilenet_v3_large", "mul"),
    ("efficientnet_b0", "mul"),
    ("efficientnet_v2_s", "mul"),
    ("regnet_y_400mf", "mul"),
    ("shufflenet_v2_x0_5", "channels"),
    ("convnext_tiny", "layer_norm"),
];

/// The other exporters' forms of ConvNeXt (same model and weights as convnext_tiny.onnx):
/// opset 13, where LayerNorm is ReduceMean → Sub → Pow → ReduceMean → Add → Sqrt → Div then
/// Mul γ and Add β (fused at import), and torch's default dynamo exporter at opset 20
/// (LayerNormalization with stash_type, a Gelu op, ReduceMean pooling, Reshape flatten).
const CONVNEXT_FORMS: [&str; 2] = ["convnext_tiny_opset13", "convnext_tiny_dynamo"];

#[test]
fn new_families_equal_onnxruntime_and_pytorch_on_both_executors() {
    let dev = Device::Cpu;
    let x = Tensor::from_vec(npy_f32(&dir().join("input.npy")), (3, 3, 32, 32), &dev).unwrap();
    // ShuffleNet's dynamo export: chunk as one two-output Split, constant Reshape shapes.
    let forms = FAMILIES
        .iter()
        .copied()
        .chain(CONVNEXT_FORMS.map(|f| (f, "layer_norm")))
        .chain([("shufflenet_v2_x0_5_dynamo", "channels")]);
    for (file, new_op) in forms {
        // The variants' references are the opset-17 file's.
        let family = FAMILIES.iter().map(|f| f.0).find(|f| file.starts_with(f)).unwrap();
        let m = onnx::load(&dir().join(format!("{file}.onnx")), None).unwrap();
        let kinds: Vec<&str> = m.graph.nodes().iter().map(|n| n.op.kind()).collect();
        assert!(kinds.contains(&new_op), "{file}: no `{new_op}` node in {kinds:?}");
        if family == "convnext_tiny" {
            // One graph for the three forms: 10 layer norms with γ and β folded in, the
            // Linear layers as 1×1 convolutions (9 real ones + 10), 5 GELUs, 5 layer scales.
            let count = |k: &str| kinds.iter().filter(|&&x| x == k).count();
            let counts = [count("layer_norm"), count("conv"), count("gelu"), count("affine"), count("add")];
            assert_eq!(counts, [10, 19, 5, 5, 5], "{file}: {kinds:?}");
        }
        let layer = m.default_layer.clone().unwrap();
        let net = Network::new(family, m.graph.clone(), m.hw, &layer, &dev).unwrap();
        assert!(net.has_kernels());
        let want =
            Tensor::from_vec(npy_f32(&dir().join(format!("{family}_logits.npy"))), (3, 10), &dev).unwrap();
        for (path, model) in [("kernels", net.clone()), ("tensor path", net.clone().without_kernels())] {
            let err = rel(&model.logits(&x, Activation::Exact).unwrap(), &want);
            assert!(err < 2e-5, "{file} ({path}): logits differ from onnxruntime by {err}");
        }

        // The gradient of the target logits against PyTorch's float64 autograd: in f64 on
        // the tensor path (to the fixture's float32 rounding) and in f32 on the kernels.
        let targets: Vec<u32> =
            npy_i64(&dir().join(format!("{family}_targets.npy"))).iter().map(|&t| t as u32).collect();
        let seed = one_hot(&targets, 10, &dev).unwrap();
        let torch =
            Tensor::from_vec(npy_f32(&dir().join(format!("{family}_gradient.npy"))), (3, 3, 32, 32), &dev)
                .unwrap();
        let g64 = m.graph.map_tensors(&|t| t.to_dtype(DType::F64)).unwrap();
        let net64 = Network::new(family, g64, m.hw, &layer, &dev).unwrap();
        let seed64 = seed.to_dtype(DType::F64).unwrap();
        let x64 = x.to_dtype(DType::F64).unwrap();
        let exact = net64.backward(&x64, &Backward::gradient(&seed64, Activation::Exact)).unwrap().grad;
        let err = rel(&exact, &torch);
        assert!(err < 1e-5, "{file}: f64 gradient differs from PyTorch's by {err}");
        let fast = net.backward(&x, &Backward::gradient(&seed, Activation::Exact)).unwrap().grad;
        let err = rel(&fast, &torch);
        assert!(err < 1e-3, "{file}: the kernels' gradient differs from PyTorch's by {err}");

        // The second-order adjoint through the gates: the kernels (f32) against the tensor
        // path (f64) under the surrogate, along the gradient itself.
        let act = Activation::Softplus { beta: 10.0 };
        let pass64 = Backward::gradient(&seed64, act);
        let v64 = exact.sin().unwrap();
        let (_, want) = net64.backward_adjoint(&x64, &pass64, &mut |_| Ok((v64.clone(), None))).unwrap();
        let v = v64.to_dtype(DType::F32).unwrap();
        let (_, got) = net
            .backward_adjoint(&x, &Backward::gradient(&seed, act), &mut |_| Ok((v.clone(), None)))
            .unwrap();
        let err = rel(&got, &want);
        assert!(err < 1e-3, "{file}: the kernels' adjoint differs from the f64 tensor path's by {err}");
    }
}

/// Every kind of method and every steered attack runs on the new families: one study of all
/// seven models side by side (their [[model]] tables), the attacks steered through a gradient
/// map, a modified-backprop map and Grad-CAM, so second-order steps go through the gates'
/// products, the smooth activations and the channel shuffle (`fragility explain` with all 14
/// methods runs on them too; the study keeps to one method of each kind for time).
#[test]
fn a_study_of_the_new_families_runs_every_method_and_attack() {
    let tmp = tempfile::tempdir().unwrap();
    let models: String = FAMILIES
        .iter()
        .map(|(family, _)| {
            format!(
                "[[model]]\nlabel = \"{family}\"\nonnx = \"{}\"\n\n",
                dir().join(format!("{family}.onnx")).display()
            )
        })
        .collect();
    let config = format!(
        r#"seed = 5
out = "out"
batch_size = 8

{models}[data]
images = "{images}"
correct_only = false

[methods]
names = ["gradient", "guided_backprop", "deeplift", "grad_cam", "occlusion"]

[attacks]
names = ["random_sign", "top_k", "mass_center", "targeted", "manipulate"]
epsilons = [0.05]
target_method = ["gradient", "deeplift", "grad_cam"]
random_sign = {{ tries = 2 }}
top_k = {{ k = 20, iterations = 2, step = 0.25, beta = 10.0 }}
mass_center = {{ iterations = 2, step = 0.25 }}
targeted = {{ iterations = 2, step = 0.25, region = [0, 0, 8, 8] }}
manipulate = {{ iterations = 2, step = 0.1, beta = 10.0, beta_end = 20.0, gamma = 25.0, target_image = 1 }}

[metrics]
top_k = 20
"#,
        images = dir().join("input.npy").display()
    );
    std::fs::write(tmp.path().join("exp.toml"), config).unwrap();
    let o = crate::cli::fragility(&["run", "exp.toml", "--quiet"], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = std::fs::read_to_string(tmp.path().join("out/run.json")).unwrap();
    for (family, _) in FAMILIES {
        assert!(run.contains(&format!("{family}.onnx")), "run.json names {family}");
    }
    assert!(tmp.path().join("out/samples.parquet").exists());
}

//! ONNX import: torchvision exports, an op-coverage network at four opsets, the shipped
//! CIFAR-style ResNet, and the files the importer must refuse.
//!
//! The torchvision exports (tests/fixtures/onnx/*.skeleton.onnx, scripts/onnx_fixtures.py) are
//! `torch.onnx.export` files with their Conv/Gemm weights stripped; each test fills them, layer
//! by layer in node order, with the weights of the same architecture built from the synthetic
//! state_dict of tests/fixtures/torchvision, so the import must compute what that build
//! computes — and what PyTorch computes, through the torchvision fixtures. Every structural
//! choice (padding, stride, groups, ceil mode, pooling, Clip as ReLU6, Concat, Gemm's layout,
//! the flatten) comes from the ONNX file.

use crate::cli::{fragility, npy_f32};
use crate::torchvision::{check, network, rel};
use candle_core::{DType, Device, Tensor};
use fragility::attribution::{Attribution, GradCam, GuidedBackprop};
use fragility::model::onnx::{self, proto};
use fragility::model::{Activation, Classifier, Network, Op};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx")
}

fn bytes_of(t: &Tensor) -> Vec<u8> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The skeleton `file` filled with the conv and linear weights of `zoo` (in node order).
fn filled(file: &str, zoo: &Network) -> proto::Model {
    let bytes = std::fs::read(dir().join(file)).unwrap();
    let mut m = proto::decode_model(&bytes).unwrap();
    let params: Vec<(Tensor, Option<Tensor>)> = zoo
        .graph()
        .nodes()
        .iter()
        .filter_map(|n| match &n.op {
            Op::Conv(c) => Some((c.weight.clone(), c.bias.clone())),
            Op::Linear(l) => Some((l.weight.clone(), l.bias.clone())),
            _ => None,
        })
        .collect();
    let layers: Vec<(String, Option<String>)> = m
        .graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op_type.as_str(), "Conv" | "Gemm"))
        .map(|n| (n.inputs[1].clone(), n.inputs.get(2).cloned()))
        .collect();
    assert_eq!(layers.len(), params.len(), "{file}: layers in the export and the build");
    for ((w_name, b_name), (w, b)) in layers.iter().zip(&params) {
        let init =
            |m: &proto::Model, name: &str| m.graph.initializers.iter().position(|t| t.name == name).unwrap();
        let wi = init(&m, w_name);
        let dims: Vec<usize> = m.graph.initializers[wi].dims.iter().map(|&d| d as usize).collect();
        assert_eq!(dims, w.dims(), "{file}: `{w_name}` against the build's layer");
        m.graph.initializers[wi].raw = bytes_of(w);
        if let Some(b_name) = b_name {
            let bi = init(&m, b_name);
            // torch folds a batch norm into a bias-free conv: the build's folded bias.
            let bias = b
                .clone()
                .unwrap_or_else(|| Tensor::zeros(w.dim(0).unwrap(), DType::F32, &Device::Cpu).unwrap());
            m.graph.initializers[bi].raw = bytes_of(&bias);
        }
    }
    m
}

/// The import of `file` filled from `arch`'s build, with `layer` (a module path) as its
/// Grad-CAM default: the last ONNX node inside that module (TorchScript names nodes by module
/// path: `/layer4/layer4.1/relu_1/Relu`).
fn imported(arch: &str, file: &str, layer: Option<&str>) -> (Network, Network) {
    let zoo = network(arch);
    let m = onnx::import(&filled(file, &zoo), None).unwrap();
    let default = match layer {
        Some(module) => {
            let mut prefix = String::from("/");
            let parts: Vec<&str> = module.split('.').collect();
            for i in 0..parts.len() {
                prefix += &parts[..=i].join(".");
                prefix += "/";
            }
            let node = m.graph.nodes().iter().rev().find(|n| n.name.starts_with(&prefix));
            node.unwrap_or_else(|| panic!("{file}: no node under {prefix}")).name.clone()
        }
        None => m.default_layer.clone().unwrap(),
    };
    // Node for node the same layers as the build (so the same kernels and speed), but for
    // VGG's and AlexNet's adaptive pools, which the exporter writes as plain average pools.
    let kinds = |n: &Network| -> Vec<&'static str> {
        n.graph()
            .nodes()
            .iter()
            .map(|n| n.op.kind())
            .map(|k| if k == "avg_pool" { "adaptive_avg_pool" } else { k })
            .collect()
    };
    let net = Network::new(file, m.graph, m.hw, &default, &Device::Cpu).unwrap();
    assert_eq!(kinds(&net), kinds(&zoo), "{file}: layers");
    (net, zoo)
}

/// Every torchvision export at 64×64 equals PyTorch (the torchvision fixtures: logits,
/// gradient, integrated gradients, Grad-CAM at the same layer, guided backprop) on the CPU
/// kernels, to the tolerances the state_dict builds meet.
#[test]
fn torchvision_exports_equal_pytorch() {
    let layers = [
        ("resnet18", "layer4"),
        ("resnet34", "layer4"),
        ("resnet50", "layer4"),
        ("resnet101", "layer4"),
        ("squeezenet1_0", "features.12"),
        ("squeezenet1_1", "features.12"),
        ("mobilenet_v2", "features.18"),
    ];
    for (arch, layer) in layers {
        let (net, _) = imported(arch, &format!("{arch}.skeleton.onnx"), Some(layer));
        assert!(net.has_kernels());
        check(arch, &net, 2e-4, DType::F32);
    }
}

/// The logits and maps of `a` and `b` on `x`.
fn same_maps(what: &str, a: &Network, b: &Network, x: &Tensor, tol: f64) {
    let act = Activation::Exact;
    let la = a.logits(x, act).unwrap();
    let err = rel(&la, &b.logits(x, act).unwrap());
    assert!(err < tol, "{what} logits: {err}");
    let targets: Vec<u32> = la.argmax(1).unwrap().to_vec1::<u32>().unwrap();
    let methods: [(&str, Box<dyn Attribution>); 3] = [
        ("gradient", Box::new(fragility::attribution::Gradient)),
        ("grad_cam", Box::new(GradCam::default())),
        ("guided_backprop", Box::new(GuidedBackprop)),
    ];
    for (name, m) in methods {
        let (ma, mb) = (m.attribute(a, x, &targets, act).unwrap(), m.attribute(b, x, &targets, act).unwrap());
        let err = rel(&ma, &mb);
        assert!(err < tol, "{what} {name}: {err}");
    }
}

/// VGG and AlexNet export at 224×224 (their adaptive pools export only there): the import
/// equals the state_dict build there, Grad-CAM at the build's default layer included.
#[test]
fn vgg_and_alexnet_exports_equal_their_builds() {
    let x = crate::common::seeded_uniform(&[1, 3, 224, 224], 0.0, 1.0, 5).to_dtype(DType::F32).unwrap();
    for (arch, layer) in [
        ("vgg11", "features.19"),
        ("vgg16", "features.29"),
        ("vgg11_bn", "features.27"),
        ("vgg16_bn", "features.42"),
        ("alexnet", "features.11"),
    ] {
        let (net, zoo) = imported(arch, &format!("{arch}.skeleton.onnx"), Some(layer));
        same_maps(arch, &net, &zoo, &x, 1e-4);
    }
}

/// The newer exporter (dynamo, opset 18: ReduceMean with axes as an input, Reshape to a fixed
/// batch of 2) imports to the same network; a batch of 3 runs too (the batch is dynamic here).
#[test]
fn dynamo_exports_equal_their_builds() {
    let x = crate::common::seeded_uniform(&[3, 3, 64, 64], 0.0, 1.0, 9).to_dtype(DType::F32).unwrap();
    for (arch, layer) in [("resnet18", "layer4"), ("mobilenet_v2", "features.18")] {
        let (net, zoo) = imported(arch, &format!("{arch}.dynamo.skeleton.onnx"), None);
        // Grad-CAM at the build's default: compare the default the import chose with it.
        let zoo_layer = zoo.graph().find(layer).unwrap();
        let shapes = zoo.graph().shapes((64, 64)).unwrap();
        let ours = net.graph().find(net.default_layer()).unwrap();
        assert_eq!(net.graph().shapes((64, 64)).unwrap()[ours], shapes[zoo_layer], "{arch} default layer");
        same_maps(arch, &net, &zoo, &x, 1e-4);
    }
}

/// The op-coverage network at opsets 9, 13, 18 and 21 against onnxruntime's logits (before
/// the softmax, which the import drops with a notice); its gradient on the kernels equals the
/// candle path's (autograd-able, the CUDA path) in float64.
#[test]
fn every_op_matches_onnxruntime_at_every_opset() {
    let x = Tensor::from_vec(npy_f32(&dir().join("ops_input.npy")), (4, 3, 16, 16), &Device::Cpu).unwrap();
    for opset in [9, 13, 18, 21] {
        let m = onnx::load(&dir().join(format!("ops_opset{opset}.onnx")), None).unwrap();
        assert_eq!(m.opset, opset);
        assert!(m.notices.iter().any(|n| n.contains("Softmax")), "{:?}", m.notices);
        // Two batch norms fold into their convs; the one after an Add, the normalisation and
        // the scaling stay affine nodes; the MatMul's Add is its linear layer's bias.
        let kinds: Vec<&str> = m.graph.nodes().iter().map(|n| n.op.kind()).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "conv").count(), 4, "{kinds:?}");
        assert_eq!(kinds.iter().filter(|k| **k == "affine").count(), 4, "opset {opset}: {kinds:?}");
        assert_eq!(kinds.iter().filter(|k| **k == "linear").count(), 2);
        let net =
            Network::new("ops", m.graph.clone(), m.hw, m.default_layer.as_deref().unwrap(), &Device::Cpu)
                .unwrap();
        let logits = net.logits(&x, Activation::Exact).unwrap();
        let want = Tensor::from_vec(
            npy_f32(&dir().join(format!("ops_opset{opset}_logits.npy"))),
            (4, 5),
            &Device::Cpu,
        )
        .unwrap();
        let err = rel(&logits, &want);
        assert!(err < 1e-5, "opset {opset}: logits differ from onnxruntime by {err}");
        let seed = fragility::model::one_hot(&[0, 1, 2, 3], 5, &Device::Cpu).unwrap();
        let g =
            net.backward(&x, &fragility::model::Backward::gradient(&seed, Activation::Exact)).unwrap().grad;
        let net64 = Network::new(
            "ops",
            m.graph.map_tensors(&|t| t.to_dtype(DType::F64)).unwrap(),
            m.hw,
            m.default_layer.as_deref().unwrap(),
            &Device::Cpu,
        )
        .unwrap();
        let x64 = x.to_dtype(DType::F64).unwrap();
        let g64 = net64
            .backward(
                &x64,
                &fragility::model::Backward::gradient(&seed.to_dtype(DType::F64).unwrap(), Activation::Exact),
            )
            .unwrap()
            .grad;
        assert!(rel(&g, &g64) < 1e-4, "opset {opset}: gradient kernels vs candle f64: {}", rel(&g, &g64));
    }
}

/// The shipped CIFAR-style ResNet-20 (assets/models/cifar_resnet20_fmnist.onnx): onnxruntime's
/// logits of the first 16 shipped images and its predictions for all 1,000.
#[test]
fn the_shipped_cifar_resnet_matches_onnxruntime() {
    let root = crate::common::root();
    let m = onnx::load(&root.join("assets/models/cifar_resnet20_fmnist.onnx"), None).unwrap();
    assert_eq!(m.hw, (28, 28));
    let net =
        Network::new("cifar_resnet20", m.graph, m.hw, m.default_layer.as_deref().unwrap(), &Device::Cpu)
            .unwrap();
    let set = crate::common::shipped_images();
    let all: Vec<usize> = (0..set.n).collect();
    let x = crate::common::images(&set, &all);
    let logits = net.logits(&x, Activation::Exact).unwrap();
    let want =
        Tensor::from_vec(npy_f32(&dir().join("cifar_resnet20_fmnist_logits16.npy")), (16, 10), &Device::Cpu)
            .unwrap();
    let err = rel(&logits.narrow(0, 0, 16).unwrap(), &want);
    assert!(err < 1e-5, "logits differ from onnxruntime by {err}");
    let preds = fragility::data::load_labels(&dir().join("cifar_resnet20_fmnist_preds.npy")).unwrap();
    let ours: Vec<i64> =
        logits.argmax(1).unwrap().to_vec1::<u32>().unwrap().iter().map(|&p| p as i64).collect();
    assert_eq!(ours, preds);
    // Grad-CAM's default: the last residual block's output, 64×7×7.
    assert_eq!(
        net.graph().shapes((28, 28)).unwrap()[net.graph().find(net.default_layer()).unwrap()].to_string(),
        "64×7×7"
    );
    // Grad-CAM's layer takes the node's name or its output's.
    let by_output = net.graph().find("/layer3/layer3.2/relu_1/Relu_output_0");
    assert_eq!(by_output, net.graph().find(net.default_layer()));
    let cam = |layer: &str| {
        let g = GradCam { layer: layer.into(), ..GradCam::default() };
        g.attribute(&net, &x.narrow(0, 0, 2).unwrap(), &[0, 1], Activation::Exact).unwrap()
    };
    assert_eq!(
        crate::common::flat(&cam("/layer3/layer3.2/relu_1/Relu_output_0")),
        crate::common::flat(&cam(""))
    );
}

/// Truncated and corrupted files are errors, never panics: every cut of a real file, and
/// thousands of random byte flips.
#[test]
fn corrupt_files_are_errors_not_panics() {
    let good = std::fs::read(dir().join("ops_opset13.onnx")).unwrap();
    for cut in (0..good.len()).step_by(7) {
        let _ = proto::decode_model(&good[..cut]).map(|m| onnx::import(&m, None));
    }
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut refused = 0;
    for _ in 0..3000 {
        let mut b = good.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % b.len() as u64) as usize;
            b[i] = next() as u8;
        }
        match proto::decode_model(&b) {
            Err(_) => refused += 1,
            Ok(m) => {
                if onnx::import(&m, None).is_err() {
                    refused += 1
                }
            }
        }
    }
    assert!(refused > 300, "{refused} of 3000 corrupted files refused");
}

/// The command line: `models FILE.onnx` lists the graph, `explain --model FILE.onnx` needs no
/// weights, and refused files, ops and images are exit 2 with the node or the size named.
#[test]
fn cli_lists_explains_and_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let ops = dir().join("ops_opset13.onnx");
    let o = fragility(&["models", ops.to_str().unwrap()], tmp.path());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("opset 13, input 3×16×16, 5 classes"), "{out}");
    assert!(out.contains("grad_cam default layer: scaled"), "{out}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("dropped the final Softmax"));

    let images = dir().join("ops_input.npy");
    let o = fragility(
        &[
            "explain",
            "--model",
            ops.to_str().unwrap(),
            "--images",
            images.to_str().unwrap(),
            "--methods",
            "gradient,grad_cam",
            "--out",
            "maps",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(tmp.path().join("maps/gradient.npy").exists() && tmp.path().join("maps/grad_cam.npy").exists());

    let refused = |args: &[&str], needle: &str| {
        let o = fragility(args, tmp.path());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    let unsupported = dir().join("unsupported_op.onnx");
    refused(&["models", unsupported.to_str().unwrap()], "node `gate` (Sin): unsupported op (supported: Add,");
    refused(&["models", dir().join("two_outputs.onnx").to_str().unwrap()], "2 outputs (y, z)");
    let cut = tmp.path().join("cut.onnx");
    let bytes = std::fs::read(&ops).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    refused(&["models", cut.to_str().unwrap()], "not a readable ONNX model");
    // Fashion-MNIST images (1×28×28) into a 3-channel model.
    let fmnist = crate::common::root().join("assets/fashion-mnist/t10k-images-1000-idx3-ubyte.gz");
    refused(
        &["explain", "--model", ops.to_str().unwrap(), "--images", fmnist.to_str().unwrap(), "--out", "x"],
        "3 input channels",
    );
    refused(
        &[
            "explain",
            "--model",
            ops.to_str().unwrap(),
            "--weights",
            "w.safetensors",
            "--images",
            "i",
            "--out",
            "x",
        ],
        "--weights",
    );
}

/// A study config with `[model] onnx = ...` runs end to end (Grad-CAM at the import's default
/// layer, an attack, the tables), and `[model]` mixing `onnx` with `name`/`weights` is exit 2
/// naming the field and line.
#[test]
fn a_study_runs_on_an_onnx_model() {
    let tmp = tempfile::tempdir().unwrap();
    let config = |model: &str| {
        format!(
            r#"seed = 3
out = "out"
batch_size = 4

[model]
{model}

[data]
images = "{images}"
correct_only = false

[methods]
names = ["gradient", "grad_cam"]

[attacks]
names = ["random_sign", "top_k"]
epsilons = [0.05]
random_sign = {{ tries = 2 }}
top_k = {{ k = 20, iterations = 3, step = 0.25, beta = 10.0 }}

[metrics]
top_k = 20
"#,
            images = dir().join("ops_input.npy").display()
        )
    };
    let onnx_line = format!("onnx = \"{}\"", dir().join("ops_opset13.onnx").display());
    std::fs::write(tmp.path().join("exp.toml"), config(&onnx_line)).unwrap();
    let o = fragility(&["run", "exp.toml", "--quiet"], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("out/run.json")).unwrap()).unwrap();
    assert!(run.to_string().contains("ops_opset13.onnx"), "run.json names the model file");
    assert!(tmp.path().join("out/samples.parquet").exists());

    std::fs::write(tmp.path().join("bad.toml"), config(&format!("name = \"resnet18\"\n{onnx_line}")))
        .unwrap();
    let o = fragility(&["run", "bad.toml"], tmp.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("line 7") && err.contains("model.onnx"), "{err}");
}

/// A file whose input size is symbolic imports at the size it is given (the images' size in
/// `run` and `explain`), and says so when none is given.
#[test]
fn a_symbolic_input_size_takes_the_images_size() {
    let bytes = std::fs::read(dir().join("ops_opset13.onnx")).unwrap();
    let mut m = proto::decode_model(&bytes).unwrap();
    m.graph.inputs[0].dims = vec![None, Some(3), None, None];
    let err = onnx::import(&m, None).unwrap_err();
    assert!(err.contains("symbolic size"), "{err}");
    let sized = onnx::import(&m, Some((16, 16))).unwrap();
    assert_eq!(sized.hw, (16, 16));
    let fixed = onnx::import(&proto::decode_model(&bytes).unwrap(), None).unwrap();
    assert_eq!(sized.graph.nodes().len(), fixed.graph.nodes().len());
}

/// `x.view(x.size(0), -1)` under a dynamic batch: the TorchScript exporter writes Shape,
/// Gather, Unsqueeze and Concat into a Reshape, which imports as a flatten (onnxruntime's
/// logits on a batch of 3).
#[test]
fn shape_arithmetic_flattens() {
    let m = onnx::load(&dir().join("view_flatten.onnx"), None).unwrap();
    let kinds: Vec<&str> = m.graph.nodes().iter().map(|n| n.op.kind()).collect();
    assert_eq!(kinds, ["input", "conv", "relu", "flatten", "linear"]);
    let net = Network::new("view", m.graph, m.hw, m.default_layer.as_deref().unwrap(), &Device::Cpu).unwrap();
    let x =
        Tensor::from_vec(npy_f32(&dir().join("view_flatten_input.npy")), (3, 1, 8, 8), &Device::Cpu).unwrap();
    let want =
        Tensor::from_vec(npy_f32(&dir().join("view_flatten_logits.npy")), (3, 10), &Device::Cpu).unwrap();
    let err = rel(&net.logits(&x, Activation::Exact).unwrap(), &want);
    assert!(err < 1e-5, "{err}");
}

/// `normalize` puts (x − mean)/std in front of an ONNX model too: the model with it on x
/// equals the model without it on the normalised x.
#[test]
fn normalize_goes_in_front_of_an_onnx_model() {
    let path = dir().join("ops_opset13.onnx");
    let name = path.to_str().unwrap();
    let norm = fragility::model::Normalize::new(vec![0.5, 0.4, 0.3], vec![0.2, 0.25, 0.5]).unwrap();
    let with = fragility::model::load(name, &path, Some(&norm), &Device::Cpu).unwrap();
    let without = fragility::model::load(name, &path, None, &Device::Cpu).unwrap();
    let x = Tensor::from_vec(npy_f32(&dir().join("ops_input.npy")), (4, 3, 16, 16), &Device::Cpu).unwrap();
    let mean = Tensor::new(&[0.5f32, 0.4, 0.3], &Device::Cpu).unwrap().reshape((1, 3, 1, 1)).unwrap();
    let std = Tensor::new(&[0.2f32, 0.25, 0.5], &Device::Cpu).unwrap().reshape((1, 3, 1, 1)).unwrap();
    let xn = x.broadcast_sub(&mean).unwrap().broadcast_div(&std).unwrap();
    let err =
        rel(&with.logits(&x, Activation::Exact).unwrap(), &without.logits(&xn, Activation::Exact).unwrap());
    assert!(err < 1e-5, "{err}");
}

/// A channels-last graph (Keras through tf2onnx: [N, H, W, C] input, Transpose to
/// channels-first) takes the harness's channels-first images: onnxruntime's logits for the same
/// images channels-last.
#[test]
fn a_channels_last_graph_takes_channels_first_images() {
    let m = onnx::load(&dir().join("nhwc.onnx"), None).unwrap();
    assert_eq!((m.graph.channels(), m.hw), (2, (8, 8)));
    let net = Network::new("nhwc", m.graph, m.hw, m.default_layer.as_deref().unwrap(), &Device::Cpu).unwrap();
    let x = Tensor::from_vec(npy_f32(&dir().join("nhwc_input.npy")), (3, 2, 8, 8), &Device::Cpu).unwrap();
    let want = Tensor::from_vec(npy_f32(&dir().join("nhwc_logits.npy")), (3, 3), &Device::Cpu).unwrap();
    let err = rel(&net.logits(&x, Activation::Exact).unwrap(), &want);
    assert!(err < 1e-5, "{err}");
}

/// Weights in an external data file (torch's newer exporter writes `model.onnx.data`): read
/// from the model's folder; a truncated data file or a location outside the folder is refused.
#[test]
fn external_weights_are_read_and_checked() {
    let x = Tensor::from_vec(npy_f32(&dir().join("ops_input.npy")), (4, 3, 16, 16), &Device::Cpu).unwrap();
    let m = onnx::load(&dir().join("ops_external.onnx"), None).unwrap();
    let net = Network::new("ops", m.graph, m.hw, m.default_layer.as_deref().unwrap(), &Device::Cpu).unwrap();
    let want =
        Tensor::from_vec(npy_f32(&dir().join("ops_opset13_logits.npy")), (4, 5), &Device::Cpu).unwrap();
    assert!(rel(&net.logits(&x, Activation::Exact).unwrap(), &want) < 1e-5);

    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(dir().join("ops_external.onnx"), tmp.path().join("ops_external.onnx")).unwrap();
    let data = std::fs::read(dir().join("ops_external.onnx.data")).unwrap();
    std::fs::write(tmp.path().join("ops_external.onnx.data"), &data[..data.len() - 8]).unwrap();
    let err = onnx::load(&tmp.path().join("ops_external.onnx"), None).unwrap_err().to_string();
    assert!(err.contains("lie beyond"), "{err}");
    assert_eq!(onnx::load(&tmp.path().join("ops_external.onnx"), None).unwrap_err().exit_code(), 2);

    let bytes = std::fs::read(dir().join("ops_external.onnx")).unwrap();
    // The location, byte for byte, replaced by a path of the same length out of the folder (the
    // protobuf's lengths stay valid).
    let (from, to) = (b"ops_external.onnx.data", b"../s_external.onnx.dat");
    let mut escaped = bytes.clone();
    let mut hits = 0;
    for i in 0..bytes.len() - from.len() {
        if &bytes[i..i + from.len()] == from {
            escaped[i..i + from.len()].copy_from_slice(to);
            hits += 1;
        }
    }
    assert!(hits > 0);
    std::fs::write(tmp.path().join("escape.onnx"), &escaped).unwrap();
    let err = onnx::load(&tmp.path().join("escape.onnx"), None).unwrap_err().to_string();
    assert!(err.contains("leaves the model's folder"), "{err}");
}

/// A zero Pad before a Conv (TensorFlow's ZeroPadding2D) becomes the convolution's own
/// padding (onnxruntime's logits); before a max-pool it is refused, naming the node.
#[test]
fn a_zero_pad_folds_into_the_next_conv() {
    let m = onnx::load(&dir().join("pad_conv.onnx"), None).unwrap();
    let conv = m.graph.nodes().iter().find_map(|n| match &n.op {
        Op::Conv(c) => Some(c.padding),
        _ => None,
    });
    assert_eq!(conv, Some([1, 2, 2, 1]));
    let net = Network::new("pad", m.graph, m.hw, m.default_layer.as_deref().unwrap(), &Device::Cpu).unwrap();
    let x = Tensor::from_vec(npy_f32(&dir().join("pad_conv_input.npy")), (2, 1, 8, 8), &Device::Cpu).unwrap();
    let want = Tensor::from_vec(npy_f32(&dir().join("pad_conv_logits.npy")), (2, 2), &Device::Cpu).unwrap();
    let err = rel(&net.logits(&x, Activation::Exact).unwrap(), &want);
    assert!(err < 1e-5, "{err}");
    let e = onnx::load(&dir().join("pad_pool.onnx"), None).unwrap_err().to_string();
    assert!(e.contains("(MaxPool)") && e.contains("only right before a Conv"), "{e}");
}

/// Sizes a hostile file can declare (an empty kernel, a matrix with no rows) are errors,
/// never a panic or a division by zero.
#[test]
fn hostile_sizes_are_errors() {
    let bytes = std::fs::read(dir().join("ops_opset13.onnx")).unwrap();
    let model = || proto::decode_model(&bytes).unwrap();
    let mut m = model();
    let w = m.graph.initializers.iter_mut().find(|t| t.name == "c1.w").unwrap();
    w.dims = vec![8, 3, 0, 3];
    w.raw.clear();
    let e = onnx::import(&m, None).unwrap_err();
    assert!(e.contains("`c1`") && e.contains("empty dimension"), "{e}");
    let mut m = model();
    let g = m.graph.initializers.iter_mut().find(|t| t.name == "g.w").unwrap();
    g.dims = vec![0, 6];
    g.raw.clear();
    let e = onnx::import(&m, None).unwrap_err();
    assert!(e.contains("`gemm`") && e.contains("empty"), "{e}");
}

/// Every activation (scripts/onnx_activation_fixtures.py), as one ONNX op or in the multi-node
/// form `torch.onnx.export` writes (SiLU, HardSwish below opset 14, GELU below opset 20),
/// imports as one nonlinearity node and computes onnxruntime's logits; its gradient equals
/// central differences in f64; under softplus(β) a smooth function is unchanged and a kinked
/// one is smoothed.
#[test]
fn every_activation_matches_onnxruntime_and_finite_differences() {
    let x = Tensor::from_vec(npy_f32(&dir().join("act_input.npy")), (3, 2, 6, 6), &Device::Cpu).unwrap();
    let forms = [
        ("sigmoid", "sigmoid", 9),
        ("tanh", "tanh", 21),
        ("hardsigmoid_onnx", "hard_sigmoid", 9),
        ("hardsigmoid_torch", "hard_sigmoid", 21),
        ("hardswish", "hard_swish", 14),
        ("gelu", "gelu", 20),
        ("gelu_tanh", "gelu_tanh", 21),
        ("silu_torch", "silu", 13),
        ("silu_swapped", "silu", 18),
        ("hardswish_torch", "hard_swish", 13),
        ("gelu_torch", "gelu", 17),
        ("gelu_half_first", "gelu", 11),
        ("gelu_tanh_torch", "gelu_tanh", 17),
    ];
    let seed = fragility::model::one_hot(&[0, 1, 2], 3, &Device::Cpu).unwrap();
    for (file, kind, opset) in forms {
        let m = onnx::load(&dir().join(format!("act_{file}.onnx")), None).unwrap();
        assert_eq!(m.opset, opset);
        let kinds: Vec<&str> = m.graph.nodes().iter().map(|n| n.op.kind()).collect();
        assert_eq!(
            kinds,
            ["input", "conv", kind, "conv", "adaptive_avg_pool", "flatten", "linear"],
            "{file}"
        );
        let layer = m.default_layer.clone().unwrap();
        let net = Network::new("act", m.graph.clone(), m.hw, &layer, &Device::Cpu).unwrap();
        let want =
            Tensor::from_vec(npy_f32(&dir().join(format!("act_{file}_logits.npy"))), (3, 3), &Device::Cpu)
                .unwrap();
        let exact = net.logits(&x, Activation::Exact).unwrap();
        let err = rel(&exact, &want);
        assert!(err < 1e-5, "{file}: logits differ from onnxruntime by {err}");
        let smoothed = net.logits(&x, Activation::Softplus { beta: 2.0 }).unwrap();
        let moved = rel(&smoothed, &exact);
        let smooth = ["sigmoid", "tanh", "gelu", "gelu_tanh", "silu"].contains(&kind);
        assert!(
            if smooth { moved == 0.0 } else { moved > 1e-4 },
            "{file}: softplus moved the logits by {moved}"
        );

        let g64 = m.graph.map_tensors(&|t| t.to_dtype(DType::F64)).unwrap();
        let net64 = Network::new("act", g64, m.hw, &layer, &Device::Cpu).unwrap();
        let (x64, seed64) = (x.to_dtype(DType::F64).unwrap(), seed.to_dtype(DType::F64).unwrap());
        let pass = fragility::model::Backward::gradient(&seed64, Activation::Exact);
        let g = net64.backward(&x64, &pass).unwrap().grad;
        let u = x64.sin().unwrap();
        let f = |t: f64| -> f64 {
            let xt = (&x64 + u.affine(t, 0.0).unwrap()).unwrap();
            net64
                .logits(&xt, Activation::Exact)
                .unwrap()
                .mul(&seed64)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let h = 1e-6;
        let fd = (f(h) - f(-h)) / (2.0 * h);
        let analytic: f64 = g.mul(&u).unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!((fd - analytic).abs() <= 1e-6 * fd.abs().max(1.0), "{file}: gradient {analytic} vs {fd}");
    }
    // The CLI lists an imported SiLU network; an Erf outside GELU's pattern is refused by name.
    let tmp = tempfile::tempdir().unwrap();
    let o = fragility(&["models", dir().join("act_silu_torch.onnx").to_str().unwrap()], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("silu"), "{}", String::from_utf8_lossy(&o.stdout));
    let err = onnx::load(&dir().join("act_erf_alone.onnx"), None).err().unwrap().to_string();
    assert!(err.contains("node `act/Erf` (Erf): Erf is supported only inside exact GELU"), "{err}");
}

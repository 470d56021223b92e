//! Studies on torchvision architectures, end to end through the command line.

use crate::cli::fragility;
use crate::synthetic::synthetic_state_dict;
use candle_core::Device;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// squeezenet1_1 with the fixtures' synthetic weights (10 classes), saved as a state_dict.
fn squeezenet_weights(dir: &Path) -> PathBuf {
    let keys = root().join("tests/fixtures/torchvision/squeezenet1_1.keys.json");
    let dict = synthetic_state_dict(&keys, &Device::Cpu);
    let path = dir.join("squeezenet1_1.safetensors");
    candle_core::safetensors::save(&dict, &path).unwrap();
    path
}

/// An ImageNet-style folder: two class sub-folders of two RGB PNGs, 48×40 (resized and
/// cropped by the config).
fn image_folder(dir: &Path) -> PathBuf {
    let val = dir.join("val");
    for (c, class) in ["n01440764", "n01443537"].iter().enumerate() {
        std::fs::create_dir_all(val.join(class)).unwrap();
        for i in 0..2u32 {
            let img = image::RgbImage::from_fn(48, 40, |x, y| {
                let v = |k: u32| ((x * (3 + k) + y * (5 + i) + 40 * c as u32 + 17 * k) % 256) as u8;
                image::Rgb([v(0), v(1), v(2)])
            });
            img.save(val.join(class).join(format!("img{i}.png"))).unwrap();
        }
    }
    val
}

/// experiments/ghorbani2019_imagenet.toml itself, with its paths pointed at a generated
/// folder and random weights and its sizes cut down (40 → 32 pixels, 2 images, 2
/// iterations), runs to the end: the config keeps parsing, the folder reader, resize, crop,
/// normalisation and every attack on SqueezeNet keep working.
#[test]
fn the_imagenet_protocol_config_runs_on_a_generated_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("experiments/ghorbani2019_imagenet.toml")).unwrap();
    let mut cfg: toml::Table = text.parse().unwrap();
    let set = |cfg: &mut toml::Table, path: &[&str], value: toml::Value| {
        let mut t = cfg;
        for k in &path[..path.len() - 1] {
            t = t.get_mut(*k).and_then(|v| v.as_table_mut()).unwrap_or_else(|| panic!("no table {k}"));
        }
        assert!(t.contains_key(path[path.len() - 1]), "the config has no {path:?}");
        t.insert(path[path.len() - 1].to_string(), value);
    };
    let s = |p: &Path| toml::Value::String(p.display().to_string());
    set(&mut cfg, &["model", "weights"], s(&squeezenet_weights(tmp.path())));
    set(&mut cfg, &["data", "images"], s(&image_folder(tmp.path())));
    set(&mut cfg, &["out"], s(&tmp.path().join("out")));
    set(&mut cfg, &["device"], "cpu".into());
    set(&mut cfg, &["data", "resize"], 40.into());
    set(&mut cfg, &["data", "crop"], 32.into());
    set(&mut cfg, &["data", "count"], 2.into());
    set(&mut cfg, &["data", "correct_only"], false.into());
    set(&mut cfg, &["metrics", "top_k"], 50.into());
    set(&mut cfg, &["methods", "integrated_gradients", "steps"], 4.into());
    for attack in ["top_k", "mass_center", "targeted"] {
        set(&mut cfg, &["attacks", attack, "iterations"], 2.into());
    }
    set(&mut cfg, &["attacks", "top_k", "k"], 50.into());
    let region = toml::Value::Array(vec![0.into(), 0.into(), 8.into(), 8.into()]);
    set(&mut cfg, &["attacks", "targeted", "region"], region);
    let config = tmp.path().join("imagenet.toml");
    std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();
    let o = fragility(&["run", config.to_str().unwrap(), "--quiet"], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = tmp.path().join("out");
    assert!(out.join("summary.parquet").is_file() && out.join("samples.parquet").is_file());
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let settings = &run["settings"];
    assert_eq!(settings["model"]["name"], "squeezenet1_1", "{run}");
    assert_eq!(settings["model"]["normalize"]["mean"][0].as_f64().map(|m| (m * 1000.0).round()), Some(485.0));
    assert_eq!(settings["data"]["crop"], 32);
}

/// `fragility models` lists every architecture with its Grad-CAM default and input size.
#[test]
fn models_lists_every_architecture() {
    let o = fragility(&["models"], &root());
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for a in fragility::model::zoo::ARCHITECTURES {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(a.name))
            .unwrap_or_else(|| panic!("{}", a.name));
        assert!(line.contains(a.default_layer) && line.contains("224×224"), "{line}");
    }
    assert!(text.lines().any(|l| l.starts_with("fmnist_cnn") && l.contains("conv2_relu")));
    // The columns line up under the header (a ViT's Grad-CAM layer is the longest name).
    let column = |l: &str| {
        l.find("input").or_else(|| l.find("C×")).or_else(|| l.find("1×28")).map(|b| l[..b].chars().count())
    };
    let header = column(text.lines().next().unwrap());
    for line in text.lines().take(1 + 1 + fragility::model::zoo::ARCHITECTURES.len()) {
        assert_eq!(column(line), header, "{line}");
    }
}

/// A state_dict with a wrongly shaped tensor: exit 2, the key and both shapes named, and
/// nothing written.
#[test]
fn a_wrong_weight_shape_is_named_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = root().join("tests/fixtures/torchvision/squeezenet1_1.keys.json");
    let mut dict = synthetic_state_dict(&keys, &Device::Cpu);
    dict.insert(
        "classifier.1.weight".into(),
        candle_core::Tensor::zeros((10, 256, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let w = tmp.path().join("bad.safetensors");
    candle_core::safetensors::save(&dict, &w).unwrap();
    let out = tmp.path().join("maps");
    let images = root().join("assets/fashion-mnist/t10k-images-1000-idx3-ubyte.gz");
    let args = [
        "explain",
        "--model",
        "squeezenet1_1",
        "--weights",
        w.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--resize",
        "32",
        "--channels",
        "3",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = fragility(&args, tmp.path());
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("classifier.1.weight") && err.contains("256") && err.contains("512"), "{err}");
    assert!(!out.exists());
}

/// The shipped MobileNetV2 and EfficientNet-B0 (float16 state_dicts, one input channel,
/// trained at 64×64 by scripts/train_fmnist_mobilenet.py) on the 1,000 shipped test images
/// resized 28 → 64 by our own resampler: the predictions PyTorch computed from the same weights
/// and its `interpolate(antialias=True)`, all of them.
#[test]
fn shipped_torchvision_models_predict_what_pytorch_predicts() {
    let dev = Device::Cpu;
    let opts = fragility::data::ImageOptions { resize: Some(64), ..Default::default() };
    let images = root().join("assets/fashion-mnist/t10k-images-1000-idx3-ubyte.gz");
    let set = fragility::data::load_images_with(&images, &opts, None, None).unwrap();
    assert_eq!((set.n, set.c, set.h, set.w), (1000, 1, 64, 64));
    let x = candle_core::Tensor::from_vec(set.data.clone(), (set.n, 1, 64, 64), &dev).unwrap();
    for arch in ["mobilenet_v2", "efficientnet_b0"] {
        let weights = root().join(format!("assets/models/{arch}_fmnist.safetensors"));
        let model = fragility::model::load(arch, &weights, None, &dev).unwrap();
        let preds = fragility::model::predict(model.as_ref(), &x).unwrap();
        let want =
            fragility::data::load_labels(&root().join(format!("tests/fixtures/{arch}_fmnist_preds.npy")))
                .unwrap();
        let same = preds.iter().zip(&want).filter(|(p, w)| **p as i64 == **w).count();
        assert_eq!(same, 1000, "{arch}: {same} of 1000 predictions agree with PyTorch");
    }
}

/// `explain` on a torchvision architecture, the way the README shows it: a SqueezeNet
/// state_dict, ImageNet normalisation, grey Fashion-MNIST images turned RGB and resized; every
/// map has the images' shape and the predictions match the model's own.
#[test]
fn explain_runs_on_a_torchvision_state_dict() {
    let tmp = tempfile::tempdir().unwrap();
    let w = squeezenet_weights(tmp.path());
    // The first 4 shipped images as uint8 npy.
    let set = crate::common::shipped_images();
    let bytes: Vec<u8> = set.data[..4 * 784].iter().map(|v| (v * 255.0).round() as u8).collect();
    let npy = tmp.path().join("four.npy");
    let mut header = "{'descr': '|u1', 'fortran_order': False, 'shape': (4, 28, 28), }".to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut file = b"\x93NUMPY\x01\x00".to_vec();
    file.extend((header.len() as u16).to_le_bytes());
    file.extend(header.as_bytes());
    file.extend(bytes);
    std::fs::write(&npy, file).unwrap();
    let out = tmp.path().join("maps");
    let args = [
        "explain",
        "--model",
        "squeezenet1_1",
        "--weights",
        w.to_str().unwrap(),
        "--normalize",
        "imagenet",
        "--images",
        npy.to_str().unwrap(),
        "--channels",
        "3",
        "--resize",
        "40",
        "--crop",
        "32",
        "--methods",
        "gradient,grad_cam,deeplift",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = fragility(&args, tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Grad-CAM is a layer method: one channel whatever the input's.
    for (m, c) in [("gradient", 3), ("grad_cam", 1), ("deeplift", 3)] {
        let bytes = std::fs::read(out.join(format!("{m}.npy"))).unwrap();
        let text = String::from_utf8_lossy(&bytes[..128]);
        assert!(text.contains(&format!("(4, {c}, 32, 32)")), "{m}: {text}");
        assert!(out.join(format!("{m}.png")).is_file());
    }
}

/// A vision transformer (the vit_b_16 fixture's small configuration: 32×32 input, patch 16,
/// 2 layers, 12 heads, width 48, synthetic weights) through a whole study: a method of every
/// family (gradient-based, path, noise, guided, DeepLIFT, the CAM family on the patch grid,
/// LRP, perturbation), every attack steered through the gradient map, the sanity checks
/// (cascading randomisation of its 2-layer state_dict, not vit_b_16's nominal 12) and a
/// faithfulness measure: every row is there and finite.
#[test]
fn a_vision_transformer_runs_every_method_attack_and_check() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = root().join("tests/fixtures/torchvision/vit_b_16.keys.json");
    let weights = tmp.path().join("vit.safetensors");
    candle_core::safetensors::save(&synthetic_state_dict(&keys, &Device::Cpu), &weights).unwrap();
    let methods = [
        "gradient",
        "integrated_gradients",
        "smoothgrad",
        "guided_backprop",
        "deeplift",
        "grad_cam",
        "eigen_cam",
        "lrp_epsilon_plus_flat",
        "occlusion",
        "lime",
    ];
    let attacks = ["random_sign", "top_k", "mass_center", "targeted", "manipulate"];
    let quoted = |v: &[&str]| v.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", ");
    let config = format!(
        r#"
seed = 1
device = "cpu"
out = "out"
[model]
name = "vit_b_16"
weights = "{weights}"
[data]
images = "{images}"
resize = 32
crop = 32
count = 2
correct_only = false
[methods]
names = [{methods}]
integrated_gradients = {{ steps = 4 }}
smoothgrad = {{ samples = 3 }}
[attacks]
names = [{attacks}]
epsilons = [0.05]
target_method = "gradient"
top_k = {{ k = 50, iterations = 2 }}
mass_center = {{ iterations = 2 }}
targeted = {{ iterations = 2, region = [0, 0, 8, 8] }}
manipulate = {{ iterations = 2, target_image = 1 }}
[metrics]
top_k = 50
[sanity]
tests = ["cascading", "random_logit", "input_invariance"]
[faithfulness]
measures = ["deletion"]
"#,
        weights = weights.display(),
        images = image_folder(tmp.path()).display(),
        methods = quoted(&methods),
        attacks = quoted(&attacks),
    );
    let path = tmp.path().join("vit.toml");
    std::fs::write(&path, config).unwrap();
    let o = fragility(&["run", path.to_str().unwrap(), "--quiet"], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = tmp.path().join("out");
    let table = fragility::report::read_samples(&out.join("samples.parquet")).unwrap();
    for m in methods {
        for a in attacks {
            let rows: Vec<_> = table.rows.iter().filter(|r| r.method == m && r.attack == a).collect();
            assert_eq!(rows.len(), 2, "{m} under {a}");
            for r in rows {
                assert!(r.metrics.iter().flatten().any(|v| v.is_finite()), "{m} under {a}: {:?}", r.metrics);
            }
        }
    }
    assert!(out.join("summary.parquet").is_file());
    // Every check has a value for every method: the CAM family's one-channel maps of the
    // colour images included (their similarities and faithfulness once read as 3-channel
    // rows and came out empty or refused).
    let tables = fragility::report::checks::read_checks(&out, None).unwrap();
    let [sanity, faithfulness, _curves] =
        <[fragility::report::checks::CheckTable; 3]>::try_from(tables).unwrap();
    for (name, t) in [("sanity", &sanity), ("faithfulness", &faithfulness)] {
        let (method, value) = (t.text("method").unwrap(), t.numbers("value").unwrap());
        for m in methods {
            let defined =
                (0..t.len()).filter(|&i| method[i] == m && value[i].is_some_and(f64::is_finite)).count();
            assert!(defined > 0, "{name}: no value for {m}");
        }
    }
    // Cascading randomisation walks the weights' 2 layers, not vit_b_16's nominal 12.
    let layers = sanity.distinct("layer");
    assert!(layers.iter().any(|l| l.contains("encoder_layer_1")), "{layers:?}");
    assert!(!layers.iter().any(|l| l.contains("encoder_layer_2")), "{layers:?}");
}

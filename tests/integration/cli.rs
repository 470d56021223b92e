//! The real program in fresh temporary folders: config errors, `explain`, `run`.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fragility(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fragility")).args(args).current_dir(cwd).output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small but complete experiment config using the shipped data, written into `dir`.
pub fn small_config(dir: &Path, weights: &Path) -> PathBuf {
    let assets = root().join("assets/fashion-mnist");
    let text = format!(
        r#"seed = 7
out = "out"
batch_size = 4

[model]
name = "fmnist_cnn"
weights = "{weights}"

[data]
images = "{images}"
labels = "{labels}"
count = 6

[methods]
names = ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad"]
integrated_gradients = {{ steps = 8 }}
smoothgrad = {{ samples = 4, sigma = 0.15 }}

[attacks]
names = ["random_sign", "top_k"]
epsilons = [0.02, 0.1]
top_k = {{ k = 50, iterations = 4, step = 0.25, beta = 10.0 }}
"#,
        weights = weights.display(),
        images = assets.join("t10k-images-1000-idx3-ubyte.gz").display(),
        labels = assets.join("t10k-labels-1000-idx1-ubyte.gz").display(),
    );
    let p = dir.join("exp.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// A study names its files relative to its config; run from the config's folder and from the
/// folder above (`sub/exp.toml`), it is the same study: the second run finds the first's
/// finished results instead of calling them another study's, and the record spells every
/// input as the config wrote it.
#[test]
fn a_study_is_the_same_from_any_working_folder() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir_all(sub.join("data")).unwrap();
    let assets = root().join("assets/fashion-mnist");
    for f in ["t10k-images-1000-idx3-ubyte.gz", "t10k-labels-1000-idx1-ubyte.gz"] {
        std::fs::copy(assets.join(f), sub.join("data").join(f)).unwrap();
    }
    std::fs::copy(shipped_weights(), sub.join("data/weights.safetensors")).unwrap();
    let p = small_config(&sub, Path::new("data/weights.safetensors"));
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace(&assets.display().to_string(), "data")
        .replace("count = 6", "count = 2")
        .replace(r#"names = ["random_sign", "top_k"]"#, r#"names = ["random_sign"]"#);
    std::fs::write(&p, text).unwrap();
    let o = fragility(&["exp.toml"], &sub);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fragility(&["sub/exp.toml"], dir.path());
    assert!(o.status.success() && stderr(&o).contains("already holds this finished run"), "{}", stderr(&o));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sub.join("out/run.json")).unwrap()).unwrap();
    assert_eq!(record["settings"]["data"]["images"], "data/t10k-images-1000-idx3-ubyte.gz");
    assert_eq!(record["settings"]["model"]["weights"], "data/weights.safetensors");
}

/// Replaces `from` by `to` in the config and expects a clean failure: exit code 2, a message
/// naming the file, the line and `needle`, and no output folder.
pub fn expect_config_error(from: &str, to: &str, line: usize, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = small_config(dir.path(), &shipped_weights());
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "fixture lacks {from:?}");
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("exp.toml"), "no file name in: {err}");
    assert!(err.contains(&format!("line {line}")), "no line {line} in: {err}");
    assert!(err.contains(needle), "no {needle:?} in: {err}");
    assert!(!dir.path().join("out").exists(), "output written despite the error");
}

#[test]
fn unknown_key_is_named_with_its_line() {
    expect_config_error("batch_size = 4", "batch_size = 4\nbatchsize = 3", 4, "batchsize");
}

#[test]
fn wrong_type_is_named_with_its_line() {
    expect_config_error("count = 6", "count = \"six\"", 12, "count");
}

#[test]
fn unknown_method_is_named_with_its_line() {
    expect_config_error("\"smoothgrad\"]", "\"smoothgard\"]", 15, "smoothgard");
}

#[test]
fn negative_epsilon_is_refused_with_its_line() {
    expect_config_error("epsilons = [0.02, 0.1]", "epsilons = [0.02, -0.1]", 21, "attacks.epsilons[1]");
}

#[test]
fn zero_steer_steps_are_refused_with_their_line() {
    expect_config_error(
        "{ steps = 8 }",
        "{ steps = 8, steer_steps = 0 }",
        16,
        "expected `steer_steps` as a number of path points (at least 1) or \"full\"",
    );
}

#[test]
fn missing_weights_file_is_named() {
    expect_config_error("fmnist_cnn.safetensors", "nothing.safetensors", 7, "model.weights");
}

#[test]
fn malformed_weights_file_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"this is not safetensors").unwrap();
    small_config(dir.path(), &bad);
    let o = fragility(&["run", "exp.toml"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("bad.safetensors"), "{}", stderr(&o));
    assert!(!dir.path().join("out").exists());
}

#[test]
fn missing_config_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = fragility(&["nope.toml"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope.toml"), "{}", stderr(&o));
}

#[test]
fn run_writes_tables_plots_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    small_config(dir.path(), &shipped_weights());
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("out");
    let table = fragility::report::read_samples(&out.join("samples.parquet")).unwrap();
    // 6 images × 4 methods × 2 attacks × 2 ε.
    assert_eq!(table.rows.len(), 6 * 4 * 2 * 2);
    // The metrics, then top_k's own measure before and after, for every row.
    let columns = [
        "spearman",
        "kendall",
        "pearson",
        "cosine",
        "ssim",
        "top100_intersection",
        "center_shift_px",
        "mse_normalized",
        "topk_mass_before",
        "topk_mass_after",
    ];
    assert_eq!(table.metric_columns, columns);
    for r in &table.rows {
        assert!(r.linf <= r.epsilon + 1e-6);
        assert_eq!(r.predicted, r.label, "only correctly classified images are studied");
        if r.attack == "top_k" {
            assert!(r.label_kept);
            assert_eq!(r.target_method.as_deref(), Some("gradient"));
        } else {
            assert_eq!(r.target_method, None);
        }
    }
    let summary = fragility::report::read_summary(&out.join("summary.parquet")).unwrap();
    assert_eq!(summary.len(), 4 * 2 * 2 * columns.len());
    for m in ["spearman", "top100_intersection", "center_shift_px", "topk_mass_after"] {
        let png = std::fs::read(out.join("plots").join(format!("{m}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(meta["seed"], 7);
    assert_eq!(meta["images"]["studied"], 6);
    assert_eq!(meta["settings"]["methods"]["integrated_gradients"]["steps"], 8);
    // Example panels (default: the first 3 studied images), one per attack, at the largest ε.
    let ids = meta["images"]["ids"].as_array().unwrap();
    let mut examples: Vec<String> = std::fs::read_dir(out.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    examples.sort();
    let mut want: Vec<String> = ids[..3]
        .iter()
        .flat_map(|id| [format!("random_sign_image{id}.png"), format!("top_k-gradient_image{id}.png")])
        .collect();
    want.sort();
    assert_eq!(examples, want);

    // The same config again leaves the finished run as it is.
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success());
    assert!(stderr(&o).contains("already holds this finished run"), "{}", stderr(&o));
    // --force recomputes it: identical rows (one seed fixes everything).
    let o = fragility(&["exp.toml", "--force"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let again = fragility::report::read_samples(&out.join("samples.parquet")).unwrap();
    assert_eq!(again.rows, table.rows);
    assert!(!out.join(".partial").exists(), "chunk files are removed once the run is finished");
    // Other settings into the same folder: refused, nothing overwritten.
    let text = std::fs::read_to_string(dir.path().join("exp.toml")).unwrap().replace("seed = 7", "seed = 8");
    std::fs::write(dir.path().join("exp.toml"), text).unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(fragility::report::read_samples(&out.join("samples.parquet")).unwrap().rows, table.rows);
}

#[test]
fn results_do_not_depend_on_batch_size_or_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let p = small_config(dir.path(), &shipped_weights());
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let first = fragility::report::read_samples(&dir.path().join("out/samples.parquet")).unwrap();
    let text = std::fs::read_to_string(&p).unwrap().replace("batch_size = 4", "batch_size = 5");
    std::fs::write(&p, text).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_fragility"))
        .args(["exp.toml", "--force"])
        .env("RAYON_NUM_THREADS", "1")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let second = fragility::report::read_samples(&dir.path().join("out/samples.parquet")).unwrap();
    assert_eq!(first.rows.len(), second.rows.len());
    for (a, b) in first.rows.iter().zip(&second.rows) {
        assert_eq!(
            (a.image_id, &a.method, &a.attack, a.epsilon),
            (b.image_id, &b.method, &b.attack, b.epsilon)
        );
        assert_eq!(a.label_kept, b.label_kept);
        for (x, y) in a.metrics.iter().zip(&b.metrics) {
            match (x, y) {
                (Some(x), Some(y)) => assert!((x - y).abs() < 1e-4, "{a:?} vs {b:?}"),
                _ => assert_eq!(x, y),
            }
        }
    }
}

#[test]
fn results_are_identical_for_one_and_two_threads() {
    // The same study (the default study's methods plus every other family: modified
    // backprop, DeepLIFT, Grad-CAM, occlusion, LIME) with 1 and 2 rayon threads must give
    // the same bits: the CPU kernels split work into fixed blocks, never by thread count.
    let dir = tempfile::tempdir().unwrap();
    let p = small_config(dir.path(), &shipped_weights());
    let text = std::fs::read_to_string(&p).unwrap().replace(
        r#"names = ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad"]"#,
        r#"names = ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "guided_backprop", "deeplift", "grad_cam", "occlusion", "lime"]
lime = { samples = 200 }"#,
    );
    std::fs::write(&p, text).unwrap();
    let run = |threads: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_fragility"))
            .args(["exp.toml", "--force", "--quiet"])
            .env("RAYON_NUM_THREADS", threads)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        fragility::report::read_samples(&dir.path().join("out/samples.parquet")).unwrap()
    };
    let (one, two) = (run("1"), run("2"));
    assert_eq!(one.rows.len(), 6 * 9 * 2 * 2);
    for (a, b) in one.rows.iter().zip(&two.rows) {
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "1 thread vs 2 threads");
    }
}

/// The first `n` shipped images as a float32 .npy file in `dir`.
pub fn images_npy(dir: &Path, n: usize) -> PathBuf {
    let set = shipped_images();
    let p = dir.join("images.npy");
    fragility::data::write_npy_f32(&p, &set.data[..n * 784], &[n, 1, 28, 28]).unwrap();
    p
}

/// Runs `explain` with the shipped weights on `images`, writing to `dir/out`.
pub fn explain_shipped(dir: &Path, images: &Path, methods: &str, out: &str, extra: &[&str]) -> Output {
    let w = shipped_weights();
    let mut args = vec![
        "explain",
        "--weights",
        w.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--methods",
        methods,
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    fragility(&args, dir)
}

/// The shape recorded in an .npy header.
fn npy_shape(p: &Path) -> String {
    let bytes = std::fs::read(p).unwrap();
    let header = String::from_utf8_lossy(&bytes[..128]).into_owned();
    let start = header.find("'shape': (").unwrap() + 10;
    header[start..start + header[start..].find(')').unwrap()].to_string()
}

#[test]
fn explain_writes_maps_predictions_and_logits() {
    let dir = tempfile::tempdir().unwrap();
    let images = images_npy(dir.path(), 12);
    let o = explain_shipped(
        dir.path(),
        &images,
        "gradient,gradient_x_input,integrated_gradients,smoothgrad",
        "maps",
        &["--batch-size", "5"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("maps");
    for m in ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad"] {
        assert_eq!(npy_shape(&out.join(format!("{m}.npy"))), "12, 1, 28, 28", "{m}");
    }
    assert_eq!(npy_shape(&out.join("logits.npy")), "12, 10");
    // One heat-map grid per method: 8 panels of 112 px with 16 px gaps, plus the colour bar.
    for m in ["gradient", "integrated_gradients"] {
        let png = std::fs::read(out.join(format!("{m}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let width = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
        assert_eq!(width, 16 + 8 * (112 + 16) + 110, "{m}");
    }
    let preds = fragility::data::load_labels(&out.join("preds.npy")).unwrap();
    let model = shipped_model();
    let x = images_tensor(12);
    let want = fragility::model::predict(&model, &x).unwrap();
    assert_eq!(preds, want.iter().map(|&p| p as i64).collect::<Vec<_>>());
}

fn images_tensor(n: usize) -> candle_core::Tensor {
    images(&shipped_images(), &(0..n).collect::<Vec<_>>())
}

#[test]
fn shipped_model_reaches_its_recorded_accuracy_on_the_shipped_images() {
    // The shipped weights were trained by `fragility train configs/train_fmnist.toml` to ≥ 89%
    // on the 10,000 test images; the first 1,000 of them are shipped.
    let set = shipped_images();
    let (preds, _) = fragility::run::predict_all(&shipped_model(), &set, &candle_core::Device::Cpu).unwrap();
    let labels = set.labels.as_ref().unwrap();
    let acc = preds.iter().zip(labels).filter(|(p, l)| **p as i64 == **l).count() as f64 / set.n as f64;
    assert!(acc > 0.87, "accuracy on the shipped 1,000 images: {acc}");
}

#[test]
fn explain_rejects_unknown_method_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let images = root().join("assets/fashion-mnist/t10k-images-1000-idx3-ubyte.gz");
    let w = shipped_weights();
    let o = fragility(
        &[
            "explain",
            "--weights",
            w.to_str().unwrap(),
            "--images",
            images.to_str().unwrap(),
            "--methods",
            "gradient,lrp",
            "--out",
            "maps",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("lrp"), "{}", stderr(&o));
    assert!(!dir.path().join("maps").exists());
}

#[test]
fn grad_cam_layer_is_configurable_and_an_unknown_layer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = small_config(dir.path(), &shipped_weights());
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "names = [\"gradient\", \"gradient_x_input\", \"integrated_gradients\", \"smoothgrad\"]",
        "names = [\"grad_cam\", \"guided_grad_cam\"]\ngrad_cam = { layer = \"conv2\" }",
    );
    assert!(text.contains("conv2"));
    std::fs::write(&p, &text).unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/run.json")).unwrap()).unwrap();
    assert_eq!(meta["settings"]["methods"]["grad_cam"]["layer"], "conv2");
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(&p, text.replace("layer = \"conv2\"", "layer = \"fc9\"")).unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("fc9") && stderr(&o).contains("exp.toml"), "{}", stderr(&o));
    assert!(!dir.path().join("out").exists());
}

#[test]
fn noise_tunnel_wraps_the_configured_method() {
    // `methods.smoothgrad.wrap` applies to smoothgrad, smoothgrad_sq and vargrad; a noise method
    // cannot wrap another one.
    let dir = tempfile::tempdir().unwrap();
    let p = small_config(dir.path(), &shipped_weights());
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "smoothgrad = { samples = 4, sigma = 0.15 }",
        "smoothgrad = { samples = 3, sigma = 0.1, wrap = \"integrated_gradients\" }",
    );
    let text = text.replace("\"smoothgrad\"]", "\"smoothgrad\", \"vargrad\"]");
    std::fs::write(&p, &text).unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/run.json")).unwrap()).unwrap();
    let vg = &meta["settings"]["methods"]["vargrad"];
    assert_eq!(vg["wrap"], "integrated_gradients");
    assert_eq!(vg["wrapped_params"]["steps"], 8);
    assert_eq!(vg["samples"], 3);
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(&p, text.replace("wrap = \"integrated_gradients\"", "wrap = \"vargrad\"")).unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("methods.smoothgrad.wrap"), "{}", stderr(&o));
}

#[test]
fn every_attack_runs_from_a_config_against_two_target_methods() {
    // All six attacks; the four steered ones against gradient and DeepLIFT; the region given
    // as a mask file, the manipulation target as another image of the data file.
    let dir = tempfile::tempdir().unwrap();
    let p = small_config(dir.path(), &shipped_weights());
    let mut mask = vec![0f32; 784];
    for r in 0..10 {
        for c in 18..28 {
            mask[r * 28 + c] = 1.0;
        }
    }
    fragility::data::write_npy_f32(&dir.path().join("corner.npy"), &mask, &[28, 28]).unwrap();
    let text = std::fs::read_to_string(&p).unwrap().replace(
        r#"names = ["random_sign", "top_k"]"#,
        r#"names = ["random_sign", "random_walk", "top_k", "mass_center", "targeted", "manipulate"]
target_method = ["gradient", "deeplift"]
mass_center = { iterations = 3, step_absolute = 0.01, restarts = 1 }
targeted = { iterations = 3, mask = "corner.npy", patience = 2 }
manipulate = { iterations = 3, target_image = 5 }"#,
    );
    std::fs::write(&p, text).unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("out");
    let table = fragility::report::read_samples(&out.join("samples.parquet")).unwrap();
    // 6 images × 4 methods × (2 random + 4 steered × 2 targets) × 2 ε.
    assert_eq!(table.rows.len(), 6 * 4 * 10 * 2);
    for m in ["topk_mass", "center_distance_px", "region_mass", "target_mse"] {
        for when in ["before", "after"] {
            let c = format!("{m}_{when}");
            assert!(table.metric_columns.contains(&c), "no column {c}: {:?}", table.metric_columns);
        }
    }
    let region = table.metric_columns.iter().position(|c| c == "region_mass_after").unwrap();
    for r in &table.rows {
        assert!(r.linf <= r.epsilon + 1e-6);
        if r.attack != "random_sign" {
            assert!(r.label_kept, "{} kept no label", r.attack);
        }
        let v = r.metrics[region].unwrap();
        assert!((0.0..=1.0 + 1e-9).contains(&v), "region mass {v}");
    }
    let targets: std::collections::BTreeSet<_> =
        table.rows.iter().filter_map(|r| r.target_method.clone()).collect();
    assert_eq!(targets.into_iter().collect::<Vec<_>>(), ["deeplift", "gradient"]);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(meta["settings"]["attacks"].as_array().unwrap().len(), 10);
    assert!(out.join("plots/region_mass_after.png").exists());
}

/// The attacks section of the small config replaced by `attacks`, expecting a config error
/// that mentions `needle`.
fn expect_attack_error(attacks: &str, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = small_config(dir.path(), &shipped_weights());
    let text = std::fs::read_to_string(&p).unwrap();
    let head = &text[..text.find("[attacks]").unwrap()];
    std::fs::write(&p, format!("{head}[attacks]\nepsilons = [0.1]\n{attacks}\n")).unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("exp.toml"), "no file name in: {err}");
    assert!(err.contains(needle), "no {needle:?} in: {err}");
    assert!(!dir.path().join("out").exists(), "output written despite the error");
}

#[test]
fn attack_settings_errors_name_the_field() {
    expect_attack_error(r#"names = ["targeted"]"#, "region = [x0, y0, x1, y1]");
    expect_attack_error("names = [\"targeted\"]\ntargeted = { region = [5, 5, 5, 9] }", "is empty");
    expect_attack_error("names = [\"targeted\"]\ntargeted = { region = [0, 0, 40, 9] }", "does not fit");
    expect_attack_error(r#"names = ["manipulate"]"#, "target_image = N");
    expect_attack_error("names = [\"manipulate\"]\nmanipulate = { target_image = 5000 }", "out of range");
    expect_attack_error("names = [\"top_k\"]\ntop_k = { region = [0, 0, 2, 2] }", "attacks.top_k.region");
    expect_attack_error("names = [\"top_k\"]\ntop_k = { step = 0.1, step_absolute = 0.01 }", "not both");
    expect_attack_error("names = [\"top_k\"]\ntarget_method = \"occlusion\"", "not differentiable");
    expect_attack_error(
        "names = [\"random_walk\"]\nrandom_walk = { beta = 3.0 }",
        "attacks.random_walk.beta",
    );
    expect_attack_error(r#"names = ["top_k", "top_k"]"#, "listed twice");
    expect_attack_error(r#"names = ["mass_centre"]"#, "unknown attack");
}

#[test]
fn a_list_of_k_gives_one_intersection_column_each() {
    let dir = tempfile::tempdir().unwrap();
    let p = small_config(dir.path(), &shipped_weights());
    let text = std::fs::read_to_string(&p).unwrap().replace("count = 6", "count = 2")
        + "\n[metrics]\ntop_k = [10, 50]\n";
    std::fs::write(&p, text).unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let table = fragility::report::read_samples(&dir.path().join("out/samples.parquet")).unwrap();
    let tops: Vec<&String> = table.metric_columns.iter().filter(|c| c.ends_with("_intersection")).collect();
    assert_eq!(tops, ["top10_intersection", "top50_intersection"]);
    // k = 0 and repeated k are refused.
    for bad in ["[10, 10]", "[0]", "[]"] {
        let t = std::fs::read_to_string(&p).unwrap().replace("top_k = [10, 50]", &format!("top_k = {bad}"));
        std::fs::write(&p, t).unwrap();
        let o = fragility(&["exp.toml"], dir.path());
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert!(stderr(&o).contains("metrics.top_k"), "{}", stderr(&o));
    }
}

#[test]
fn report_regenerates_summary_plots_and_page_from_the_samples_alone() {
    let dir = tempfile::tempdir().unwrap();
    let p = small_config(dir.path(), &shipped_weights());
    let text = std::fs::read_to_string(&p).unwrap().replace("count = 6", "count = 3");
    std::fs::write(&p, text).unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("out");
    let summary = std::fs::read(out.join("summary.parquet")).unwrap();
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(page.contains("<img src=\"plots/spearman.png\""));
    // Everything derived goes; the samples (and run.json) stay.
    std::fs::remove_file(out.join("summary.parquet")).unwrap();
    std::fs::remove_file(out.join("index.html")).unwrap();
    std::fs::remove_dir_all(out.join("plots")).unwrap();
    let o = fragility(&["report", "out"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join("summary.parquet")).unwrap(), summary, "the summary is not the same");
    assert_eq!(std::fs::read_to_string(out.join("index.html")).unwrap(), page);
    assert!(out.join("plots/ssim.png").exists());
    // A folder without samples is refused.
    let o = fragility(&["report", "."], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("samples.parquet"), "{}", stderr(&o));
}

#[test]
fn compare_flags_regressions_and_refuses_different_settings() {
    let dir = tempfile::tempdir().unwrap();
    let p = small_config(dir.path(), &shipped_weights());
    let text = std::fs::read_to_string(&p).unwrap().replace("count = 6", "count = 3");
    std::fs::write(&p, text.replace("out = \"out\"", "out = \"base\"")).unwrap();
    assert!(fragility(&["exp.toml"], dir.path()).status.success());
    std::fs::write(&p, text.replace("out = \"out\"", "out = \"cur\"")).unwrap();
    assert!(fragility(&["exp.toml"], dir.path()).status.success());

    // The same study twice: no regression, exit 0, both files written.
    let o = fragility(&["compare", "base", "cur"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let md = std::fs::read_to_string(dir.path().join("cur/compare.md")).unwrap();
    assert!(md.contains("**0 regressions**"), "{md}");
    assert!(dir.path().join("cur/compare.parquet").exists());

    // Make the current gradient/top_k Spearman at ε 0.02 clearly worse: every image's value
    // 0.5 below the baseline's mean (a zero-width interval below the baseline's, whose lower
    // end is its smallest of 3 values): exit 1. compare recomputes the statistics from the
    // samples, so the change is made there.
    let path = dir.path().join("cur/samples.parquet");
    let base_summary = fragility::report::read_summary(&dir.path().join("base/summary.parquet")).unwrap();
    let mean_of = |metric: &str| {
        base_summary
            .iter()
            .find(|r| {
                r.method == "gradient" && r.attack == "top_k" && r.epsilon == 0.02 && r.metric == metric
            })
            .and_then(|r| r.mean)
            .unwrap()
    };
    let set = |metric: &str, value: Option<f64>| {
        let mut table = fragility::report::read_samples(&path).unwrap();
        let j = table.metric_columns.iter().position(|c| c == metric).unwrap();
        for r in table
            .rows
            .iter_mut()
            .filter(|r| r.method == "gradient" && r.attack == "top_k" && r.epsilon == 0.02)
        {
            r.metrics[j] = value;
        }
        fragility::report::write_samples(&path, &table).unwrap();
    };
    set("spearman", Some(mean_of("spearman") - 0.5));
    let o = fragility(&["compare", "base", "cur", "--out", "."], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let md = std::fs::read_to_string(dir.path().join("compare.md")).unwrap();
    assert!(
        md.contains("**1 regressions**") && md.contains("| regression | gradient | top_k → gradient |"),
        "{md}"
    );
    // The same images on both sides: no note, the output opens with the table's header line.
    assert!(md.starts_with("# fragility compare"), "{md}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("status  method  attack  ε  metric  baseline (95% CI)"), "{out}");
    // Restricted to another metric, the same pair passes.
    let o = fragility(&["compare", "base", "cur", "--metric", "kendall", "--out", "."], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A larger tolerance than the change also passes.
    let o = fragility(&["compare", "base", "cur", "--tolerance", "0.6", "--out", "."], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Plant a 5× normalised MSE (a ~1e-6 scale, so an absolute tolerance misses it): flagged
    // against the baseline's own mean. (The baseline's interval ends below 3× its mean: the
    // largest of 3 non-negative values.)
    let m = mean_of("mse_normalized");
    assert!(m > 0.0 && m < 1e-3, "mse_normalized mean {m}");
    set("mse_normalized", Some(5.0 * m));
    // And a Kendall mean that became undefined (no value on any image).
    set("kendall", None);
    let o = fragility(&["compare", "base", "cur", "--metric", "mse_normalized", "--out", "."], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let md = std::fs::read_to_string(dir.path().join("compare.md")).unwrap();
    assert!(md.contains("**1 regressions**") && md.contains("| mse_normalized |"), "{md}");
    // The NaN mean: reported but not failing when not watched (here only Pearson is) ...
    let o = fragility(
        &["compare", "base", "cur", "--metric", "pearson", "--metric", "kendall", "--out", "."],
        dir.path(),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("became undefined  gradient  top_k → gradient"), "{out}");
    assert_eq!(o.status.code(), Some(1), "a watched metric became undefined: {out}");
    let md = std::fs::read_to_string(dir.path().join("compare.md")).unwrap();
    assert!(md.contains("**0 regressions**") && md.contains("1 became undefined"), "{md}");
    let o = fragility(&["compare", "base", "cur", "--metric", "pearson", "--out", "."], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // ... and listed among the changes of a full comparison.
    let o = fragility(&["compare", "base", "cur", "--out", "."], dir.path());
    assert!(String::from_utf8_lossy(&o.stdout).contains("became undefined"));

    // An infinite mean (values whose sum overflows) is a change, never "unchanged".
    let mut table = fragility::report::read_samples(&path).unwrap();
    let j = table.metric_columns.iter().position(|c| c == "pearson").unwrap();
    for r in
        table.rows.iter_mut().filter(|r| r.method == "gradient" && r.attack == "top_k" && r.epsilon == 0.02)
    {
        (r.metrics[j], r.label_kept) = (Some(1e308), true);
    }
    fragility::report::write_samples(&path, &table).unwrap();
    let o = fragility(&["compare", "base", "cur", "--metric", "pearson", "--out", "."], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("became undefined  gradient  top_k → gradient  0.02  pearson"), "{out}");

    // A duplicated summary row no longer matters (the statistics come from the samples): no
    // "18446744073709551615 rows have no baseline match".
    let summary = dir.path().join("cur/summary.parquet");
    let mut rows = fragility::report::read_summary(&summary).unwrap();
    rows.push(rows[0].clone());
    let study = fragility::report::table::read_study(&summary).unwrap();
    fragility::report::write_summary(&summary, &rows, study.as_deref()).unwrap();
    let o = fragility(&["compare", "base", "cur", "--metric", "kendall", "--out", "."], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    // A baseline table of an older version, without image hashes: paired by id, and said so
    // first.
    let old = dir.path().join("base/samples.parquet");
    let mut table = fragility::report::read_samples(&old).unwrap();
    table.images.clear();
    fragility::report::write_samples(&old, &table).unwrap();
    let o = fragility(&["compare", "base", "cur", "--out", "."], dir.path());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with(
            "Images paired by id only (the baseline recorded no image hashes (an older version))"
        ),
        "{out}"
    );
    assert!(out.lines().next().unwrap().contains("baseline 3 images, current 3, common 3"), "{out}");

    // Different budgets: exit 2, naming the setting.
    let run_json = dir.path().join("cur/run.json");
    let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&run_json).unwrap()).unwrap();
    meta["settings"]["epsilons"] = serde_json::json!([0.02, 0.2]);
    std::fs::write(&run_json, serde_json::to_vec(&meta).unwrap()).unwrap();
    let o = fragility(&["compare", "base", "cur", "--out", "."], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("`epsilons`"), "{}", stderr(&o));
    // A folder that is not a run: exit 2.
    let o = fragility(&["compare", "base", "nowhere"], dir.path());
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn our_numbers_match_the_committed_baseline() {
    // The project's own regression tracking: experiments/regression.toml again, compared with
    // the results committed in reports/regression-baseline/ (see that config's header).
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("experiments/regression.toml")).unwrap();
    let text =
        text.replace("\"../reports/regression-baseline\"", &format!("{:?}", dir.path().join("current")));
    let text = text.replace("\"../", &format!("\"{}/", root().display()));
    std::fs::write(dir.path().join("regression.toml"), text).unwrap();
    let o = fragility(&["run", "--quiet", "regression.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let baseline = root().join("reports/regression-baseline");
    let o = fragility(&["compare", baseline.to_str().unwrap(), "current", "--out", "."], dir.path());
    let md = std::fs::read_to_string(dir.path().join("compare.md")).unwrap_or_default();
    assert_eq!(o.status.code(), Some(0), "{}\n{}\n{md}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(md.contains("**0 regressions**, 0 improvements"), "{md}");
    // Both runs recorded image hashes, and they agree: the same 24 images, no note first.
    assert!(md.starts_with("# fragility compare"), "{md}");
}

/// The small config with 12 images in chunks of 2 (6 chunks), written into `dir`.
pub fn chunked_config(dir: &Path) -> PathBuf {
    let p = small_config(dir, &shipped_weights());
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("count = 6", "count = 12")
        .replace("batch_size = 4", "batch_size = 2");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_killed_run_continues_where_it_stopped_and_ends_with_the_same_tables() {
    let dir = tempfile::tempdir().unwrap();
    chunked_config(dir.path());
    // The uninterrupted run, for reference.
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("out");
    let whole = fragility::report::read_samples(&out.join("samples.parquet")).unwrap();
    let summary = std::fs::read(out.join("summary.parquet")).unwrap();
    std::fs::remove_dir_all(&out).unwrap();

    // Start it again and kill -9 it as soon as its first chunk is on disk.
    killed_once_written(&["exp.toml"], dir.path(), &out.join(".partial/chunk-000000.parquet"));
    assert!(!out.join("run.json").exists(), "the run finished before it could be killed");
    assert!(!out.join("samples.parquet").exists());

    // The same command continues: it reuses the chunks on disk.
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert!(meta["resumed_chunks"].as_u64().unwrap() >= 1, "{}", meta["resumed_chunks"]);
    let resumed = fragility::report::read_samples(&out.join("samples.parquet")).unwrap();
    assert_eq!(resumed, whole);
    assert_eq!(std::fs::read(out.join("summary.parquet")).unwrap(), summary);
}

#[test]
fn three_shards_in_three_processes_merge_into_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    chunked_config(dir.path());
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let single = fragility::report::read_samples(&dir.path().join("out/samples.parquet")).unwrap();
    let single_summary = std::fs::read(dir.path().join("out/summary.parquet")).unwrap();

    // The same study as 3 shards into another folder, 3 processes at once (two by flag, one
    // the way a Slurm array task finds its part).
    let text = std::fs::read_to_string(dir.path().join("exp.toml"))
        .unwrap()
        .replace("out = \"out\"", "out = \"sharded\"");
    std::fs::write(dir.path().join("exp.toml"), text).unwrap();
    let spawn = |args: &[&str], env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_fragility"))
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .output()
    };
    let (a, b, c) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn(&["exp.toml", "--shard", "0/3"], &[]));
        let b = s.spawn(|| spawn(&["exp.toml", "--shard", "1/3"], &[]));
        let c = s
            .spawn(|| spawn(&["exp.toml"], &[("SLURM_ARRAY_TASK_ID", "2"), ("SLURM_ARRAY_TASK_COUNT", "3")]));
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap(), c.join().unwrap().unwrap())
    });
    for o in [&a, &b, &c] {
        assert!(o.status.success(), "{}", stderr(o));
    }
    let sharded = dir.path().join("sharded");
    assert!(sharded.join("shards/2-of-3/samples.parquet").exists());
    // Merging before every shard is there fails; with all three it gives the single run.
    let o = fragility(&["merge", "sharded"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let merged = fragility::report::read_samples(&sharded.join("samples.parquet")).unwrap();
    assert_eq!(merged, single);
    assert_eq!(std::fs::read(sharded.join("summary.parquet")).unwrap(), single_summary);
    // The merged page is what `report` regenerates from the merged files.
    let page = std::fs::read_to_string(sharded.join("index.html")).unwrap();
    let o = fragility(&["report", "sharded"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(sharded.join("index.html")).unwrap(), page);
    std::fs::remove_dir_all(sharded.join("shards/1-of-3")).unwrap();
    let o = fragility(&["merge", "sharded"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("[1]"), "{}", stderr(&o));
}

#[test]
fn sampling_robustness_rows_join_the_tables_and_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let p = small_config(dir.path(), &shipped_weights());
    let text = std::fs::read_to_string(&p).unwrap().replace("count = 6", "count = 3")
        + "\n[robustness]\nradius = 0.02\nsamples = 4\n";
    std::fs::write(&p, text).unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("out");
    let table = fragility::report::read_samples(&out.join("samples.parquet")).unwrap();
    let cols = &table.metric_columns;
    let robust: Vec<usize> = fragility::robustness::ROBUSTNESS_COLUMNS
        .iter()
        .map(|c| cols.iter().position(|x| x == c).unwrap())
        .collect();
    let sampling: Vec<_> = table.rows.iter().filter(|r| r.attack == "sampling").collect();
    assert_eq!(sampling.len(), 3 * 4, "one row per image and method");
    for r in &table.rows {
        for (j, v) in r.metrics.iter().enumerate() {
            if r.attack == "sampling" && !robust.contains(&j) || r.attack != "sampling" && robust.contains(&j)
            {
                assert_eq!(*v, None, "{} {}", r.attack, cols[j]);
            }
        }
        if r.attack == "sampling" && r.method == "gradient" {
            assert!(r.iterations <= 4, "kept samples");
            let lip = r.metrics[robust[2]].unwrap();
            assert!(lip.is_finite() && lip > 0.0, "{lip}");
        }
    }
    let summary = fragility::report::read_summary(&out.join("summary.parquet")).unwrap();
    assert!(summary.iter().any(|s| s.attack == "sampling" && s.metric == "max_sensitivity" && s.n == 3));
    assert!(!summary.iter().any(|s| s.attack == "sampling" && s.metric == "spearman"));
    assert!(!summary.iter().any(|s| s.attack == "top_k" && s.metric == "local_lipschitz"));
    assert!(out.join("plots/local_lipschitz_distribution.png").exists());
}

/// The float32 values of an .npy file (little-endian, C order), whatever its shape.
pub(crate) fn npy_f32(p: &Path) -> Vec<f32> {
    let bytes = std::fs::read(p).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", p.display());
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header_len..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[test]
fn explain_target_explains_a_chosen_class() {
    let dir = tempfile::tempdir().unwrap();
    let images = images_npy(dir.path(), 4);
    let o =
        explain_shipped(dir.path(), &images, "gradient", "maps", &["--target", "3", "--grid-images", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = npy_f32(&dir.path().join("maps/gradient.npy"));
    let model = shipped_model();
    let want = fragility::attribution::target_gradient(
        &model,
        &images_tensor(4),
        &[3; 4],
        fragility::model::Activation::Exact,
    )
    .unwrap();
    assert!(max_abs_diff(&got, &flat(&want)) < 1e-6);
    // Without --target the maps are for the predicted classes, which are not all 3 here.
    let o = explain_shipped(dir.path(), &images, "gradient", "pred", &["--grid-images", "0"]);
    assert!(o.status.success());
    assert!(max_abs_diff(&npy_f32(&dir.path().join("pred/gradient.npy")), &got) > 1e-3);
    // A class the model does not have: exit 2, nothing written.
    let o = explain_shipped(dir.path(), &images, "gradient", "bad", &["--target", "10"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--target 10"), "{}", stderr(&o));
    assert!(!dir.path().join("bad").exists());
}

#[test]
fn explain_classes_name_the_grid_labels_and_must_name_every_class() {
    let dir = tempfile::tempdir().unwrap();
    let images = images_npy(dir.path(), 3);
    let names = "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot";
    let o = explain_shipped(dir.path(), &images, "gradient", "named", &["--classes", names]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.path().join("named/gradient.png").is_file());
    // The same names from a file, one per line.
    let file = dir.path().join("classes.txt");
    std::fs::write(&file, names.replace(',', "\n")).unwrap();
    let o = explain_shipped(dir.path(), &images, "gradient", "file", &["--classes", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Nine names for ten classes: exit 2, nothing written.
    let o = explain_shipped(dir.path(), &images, "gradient", "short", &["--classes", "a,b,c,d,e,f,g,h,i"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--classes: 9 names given, but the model has 10 classes"), "{}", stderr(&o));
    assert!(!dir.path().join("short").exists());
}

#[test]
fn explain_count_and_ids_pick_images_and_refuse_ids_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let images = images_npy(dir.path(), 12);
    let o = explain_shipped(dir.path(), &images, "gradient", "all", &["--grid-images", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let all = npy_f32(&dir.path().join("all/gradient.npy"));
    let rows_of =
        |ids: &[usize]| ids.iter().flat_map(|&i| all[i * 784..(i + 1) * 784].to_vec()).collect::<Vec<_>>();

    // Ids and a range, in the order given: the same maps as those rows of the whole file.
    let o = explain_shipped(
        dir.path(),
        &images,
        "gradient",
        "picked",
        &["--ids", "7,3,10-11", "--grid-images", "2"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("picked");
    assert_eq!(npy_shape(&out.join("gradient.npy")), "4, 1, 28, 28");
    assert_eq!(npy_f32(&out.join("gradient.npy")), rows_of(&[7, 3, 10, 11]));
    assert_eq!(fragility::data::load_labels(&out.join("ids.npy")).unwrap(), [7, 3, 10, 11]);
    // Each row traces to its file: one line per row, in the rows' order.
    let sources = std::fs::read_to_string(out.join("sources.txt")).unwrap();
    assert_eq!(sources, "images.npy[7]\nimages.npy[3]\nimages.npy[10]\nimages.npy[11]\n");
    let all_preds = fragility::data::load_labels(&dir.path().join("all/preds.npy")).unwrap();
    let preds = fragility::data::load_labels(&out.join("preds.npy")).unwrap();
    assert_eq!(preds, [all_preds[7], all_preds[3], all_preds[10], all_preds[11]]);
    assert!(out.join("gradient.png").exists());

    // The first N.
    let o =
        explain_shipped(dir.path(), &images, "gradient", "first", &["--count", "5", "--grid-images", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(npy_f32(&dir.path().join("first/gradient.npy")), rows_of(&[0, 1, 2, 3, 4]));
    assert_eq!(fragility::data::load_labels(&dir.path().join("first/ids.npy")).unwrap(), [0, 1, 2, 3, 4]);

    // Out of range, malformed or conflicting: exit 2, the reason named, nothing written.
    for (extra, needle) in [
        (&["--ids", "3,12"][..], "image 12 does not exist (the images hold 12: ids 0 to 11)"),
        (&["--count", "13"][..], "--count 13: the images hold only 12"),
        (&["--ids", "9-3"][..], "the range 9-3 runs backwards"),
        (&["--ids", "2,x"][..], "`x` is not an image id"),
        (&["--count", "2", "--ids", "1"][..], "cannot be used with"),
    ] {
        let o = explain_shipped(dir.path(), &images, "gradient", "bad", extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{extra:?}: {}", stderr(&o));
        assert!(!dir.path().join("bad").exists(), "{extra:?}");
    }
}

/// `[data] classes` as a list: its length must match the model's outputs (exit 2 naming the
/// field and its line, nothing written); blank or repeated names are refused when the config
/// is read.
#[test]
fn class_names_must_fit_the_model() {
    let ten = r#"classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]"#;
    expect_config_error("count = 6", "count = 6\nclasses = [\"a\", \"b\", \"c\"]", 13, "data.classes");
    expect_config_error(
        "count = 6",
        "count = 6\nclasses = [\"a\", \"b\", \"c\"]",
        13,
        "3 class names, but the model `fmnist_cnn` has 10",
    );
    expect_config_error("count = 6", "count = 6\nclasses = [\"a\", \"a\"]", 13, "`a` is listed twice");
    expect_config_error("count = 6", "count = 6\nclasses = []", 13, "names no class");
    // The right list runs, and shows up in the settings.
    let dir = tempfile::tempdir().unwrap();
    let p = small_config(dir.path(), &shipped_weights());
    let text = std::fs::read_to_string(&p).unwrap().replace("count = 6", &format!("count = 2\n{ten}"));
    std::fs::write(&p, text).unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/run.json")).unwrap()).unwrap();
    assert_eq!(run["settings"]["data"]["classes"][9], "Ankle boot");
    assert!(dir.path().join("out/examples/top_k-gradient_image0.png").is_file());
}

/// A run ends with the headline (not the 100-row summary) and the page's path without `..`;
/// `--verbose` adds the summary.
#[test]
fn a_run_prints_the_headline_and_a_tidy_page_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = small_config(dir.path(), &shipped_weights());
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("count = 6", "count = 2")
        .replace("out = \"out\"", "out = \"../reports/x\"");
    std::fs::create_dir(dir.path().join("experiments")).unwrap();
    std::fs::write(dir.path().join("experiments/exp.toml"), text).unwrap();
    let o = fragility(&["experiments/exp.toml"], dir.path());
    let (out, err) = (String::from_utf8_lossy(&o.stdout).into_owned(), stderr(&o));
    assert!(o.status.success(), "{err}");
    // The caveats first: n, and with n = 2 that the intervals mean little.
    assert!(out.starts_with("n = 2 images: the first 2 of the "), "{out}");
    assert!(out.contains("the bootstrap intervals are not reliable"), "{out}");
    assert!(out.contains("\nHeadline"), "{out}");
    assert!(out.contains("top-100 intersection (fraction) (higher = more similar)"), "{out}");
    assert!(out.contains("top_k → gradient ★"), "{out}");
    assert!(out.contains("top_k → gradient (transfer)"), "{out}");
    // Only gradient is attacked directly: the others are named as transfer, not ranked.
    assert!(out.contains("measured only by transfer"), "{out}");
    assert!(!out.contains("The most fragile method is"), "{out}");
    assert!(!out.contains("mse_normalized"), "the full summary is printed: {out}");
    assert!(err.lines().any(|l| l == "page: reports/x/index.html"), "{err}");
    // `report --verbose` prints the summary too: one line per summary row.
    let o = fragility(&["report", "reports/x", "--verbose"], dir.path());
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.lines().filter(|l| l.contains("mse_normalized")).count() >= 16, "{out}");
    assert!(out.contains("Headline"));
}

/// The README's quick start as shipped (an ONNX model and a folder of PNG images in class
/// sub-folders), into a temporary folder; and the same without its classes file, whose
/// headline must name the likely cause of the lost images (sorted folder names are not the
/// model's label order).
#[test]
fn the_quick_start_runs_and_a_missing_class_order_is_diagnosed() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("experiments/your_model.toml")).unwrap();
    let assets = root().join("assets");
    let text = text
        .replace("\"../assets/", &format!("\"{}/", assets.display()))
        .replace("\"../reports/your-model\"", "\"out\"");
    std::fs::write(dir.path().join("exp.toml"), &text).unwrap();
    let o = fragility(&["exp.toml", "--quiet"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.starts_with("n = 20 images: the first 20 of the 28 correctly classified among all 30 images."),
        "{out}"
    );
    let page = std::fs::read_to_string(dir.path().join("out/index.html")).unwrap();
    assert!(page.contains("<title>Your model: ResNet-20 (ONNX) on a folder of PNG images</title>"));

    let cut: String = text
        .lines()
        .filter(|l| !l.starts_with("classes = "))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(r#"names = ["gradient", "integrated_gradients", "smoothgrad"]"#, r#"names = ["gradient"]"#)
        .replace("iterations = 20", "iterations = 2")
        .replace("\"out\"", "\"unordered\"");
    std::fs::write(dir.path().join("exp.toml"), cut).unwrap();
    let o = fragility(&["exp.toml", "--quiet"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.starts_with("Only 11 of the 20 requested images were studied"), "{out}");
    assert!(out.contains("another class order (93% against 37%)"), "{out}");
    assert!(out.contains("`data.classes`"), "{out}");
}

#[test]
fn explain_without_weights_says_where_the_shipped_ones_are() {
    let dir = tempfile::tempdir().unwrap();
    let images = images_npy(dir.path(), 2);
    let o = fragility(&["explain", "--images", images.to_str().unwrap(), "--out", "maps"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("--weights is required") && err.contains("assets/models/fmnist_cnn.safetensors"),
        "{err}"
    );
    assert!(!dir.path().join("maps").exists(), "nothing written");
}

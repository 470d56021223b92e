//! `compare` pairs images (issue 24): runs that studied different images are compared on the
//! images they have in common, say so in their first line, and are refused when too few are
//! common. The runs are tiny studies on the shipped Fashion-MNIST images: one method, one
//! attack, a file of the first 20 images, and models that keep different images under
//! `correct_only` (the issue's 20 images against 2: here 19, the trained model missing one,
//! against 2).

use crate::cli::{fragility, small_config, stderr};
use crate::common::*;
use std::path::{Path, PathBuf};

/// The first 20 shipped images and their labels as npy files in `dir` (labels 9 2 1 1 6 1 4
/// 6 5 7 4 5 7 3 4 1 2 4 8 0).
fn twenty_images(dir: &Path) -> (PathBuf, PathBuf) {
    let set = shipped_images();
    let (images, labels) = (dir.join("images.npy"), dir.join("labels.npy"));
    fragility::data::write_npy_f32(&images, &set.data[..20 * 784], &[20, 1, 28, 28]).unwrap();
    fragility::data::write_npy_i64(&labels, &set.labels.as_ref().unwrap()[..20], &[20]).unwrap();
    (images, labels)
}

/// The shipped weights with class `class`'s output bias raised by 1000: a model that predicts
/// `class` for every image, so `correct_only` keeps only the images of that class.
fn one_class_weights(dir: &Path, class: usize) -> PathBuf {
    let mut dict = candle_core::safetensors::load(shipped_weights(), &candle_core::Device::Cpu).unwrap();
    let mut bias = dict["fc2.bias"].to_vec1::<f32>().unwrap();
    bias[class] += 1000.0;
    dict.insert("fc2.bias".into(), candle_core::Tensor::new(bias, &candle_core::Device::Cpu).unwrap());
    let p = dir.join(format!("class{class}.safetensors"));
    candle_core::safetensors::save(&dict, &p).unwrap();
    p
}

/// Runs the tiny study on the 20 images with `weights` into `dir/out`.
fn run_on_twenty(dir: &Path, weights: &Path, out: &str) {
    let (images, labels) = twenty_images(dir);
    let p = small_config(dir, weights);
    let assets = root().join("assets/fashion-mnist");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("out = \"out\"", &format!("out = \"{out}\""))
        .replace("count = 6", "count = 20")
        .replace(
            &assets.join("t10k-images-1000-idx3-ubyte.gz").display().to_string(),
            &images.display().to_string(),
        )
        .replace(
            &assets.join("t10k-labels-1000-idx1-ubyte.gz").display().to_string(),
            &labels.display().to_string(),
        )
        .replace(
            r#"names = ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad"]"#,
            r#"names = ["gradient"]"#,
        )
        .replace(r#"names = ["random_sign", "top_k"]"#, r#"names = ["random_sign"]"#);
    std::fs::write(&p, text).unwrap();
    let o = fragility(&["exp.toml"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The image ids a run studied (its run.json).
fn studied(dir: &Path) -> Vec<u64> {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap();
    meta["images"]["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
}

#[test]
fn twenty_images_against_two_are_compared_on_the_common_two_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    run_on_twenty(dir.path(), &shipped_weights(), "base");
    // Predicting class 2 for everything: images 1 and 16 (the 2s) are correct.
    run_on_twenty(dir.path(), &one_class_weights(dir.path(), 2), "cur");
    let (base, cur) = (studied(&dir.path().join("base")), studied(&dir.path().join("cur")));
    assert_eq!(cur, [1, 16]);
    // The trained model misses image 12 (a 7).
    assert_eq!(base, (0..20).filter(|&i| i != 12).collect::<Vec<u64>>());
    // Each run traces its images to their file and records them in run.json.
    let table = fragility::report::read_samples(&dir.path().join("cur/samples.parquet")).unwrap();
    assert_eq!(table.images[&1].source, "images.npy[1]");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cur/run.json")).unwrap()).unwrap();
    assert_eq!(meta["images"]["list"][1]["source"], "images.npy[16]");
    assert_eq!(meta["images"]["list"][1]["hash"].as_str(), Some(table.images[&16].hash.as_str()));

    let o = fragility(&["compare", "base", "cur", "--out", "."], dir.path());
    assert_ne!(o.status.code(), Some(2), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let want = "Compared on the 2 images the two runs have in common, not on all (baseline 19 images, current 2, common 2)";
    assert!(out.lines().next().unwrap().starts_with(want), "{out}");
    let md = std::fs::read_to_string(dir.path().join("compare.md")).unwrap();
    assert!(md.lines().next().unwrap().contains(want), "{md}");
    // The means are over the two common images: every compared row has n = 2 at most.
    let rows = fragility::report::compare::compare(
        &dir.path().join("base"),
        &dir.path().join("cur"),
        Default::default(),
        &[],
    )
    .unwrap();
    assert!(rows.rows.iter().all(|c| c.baseline.n <= 2 && c.current.n <= 2));

    // Predicting class 8: only image 18, too few in common: refused with the counts.
    run_on_twenty(dir.path(), &one_class_weights(dir.path(), 8), "eights");
    let o = fragility(&["compare", "base", "eights", "--out", "."], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("baseline 19 images, current 1, common 1"), "{err}");
    assert!(err.contains("at least 2 are needed"), "{err}");
}

//! Studies of several models (`[[model]]` tables): one table, the same images for every model,
//! each model's rows what a study of that model alone computes.

use crate::cli::{fragility, stderr};
use crate::common::*;
use fragility::report::{read_samples, SampleTable};
use std::path::Path;

/// The `[[model]]` tables of the shipped Fashion-MNIST CNN (label `cnn`, 28×28) and the
/// shipped CIFAR-style ResNet-20 from ONNX (label `resnet20`, the images resized to 32×32, so
/// its automatic top-k is 131 where the CNN's is 100).
fn two_models() -> String {
    let models = root().join("assets/models");
    format!(
        r#"[[model]]
label = "cnn"
name = "fmnist_cnn"
weights = "{cnn}"

[[model]]
label = "resnet20"
onnx = "{onnx}"
resize = 32
"#,
        cnn = models.join("fmnist_cnn.safetensors").display(),
        onnx = models.join("cifar_resnet20_fmnist.onnx").display(),
    )
}

/// The CNN alone, as a single `[model]` table.
fn cnn_alone() -> String {
    let weights = root().join("assets/models/fmnist_cnn.safetensors");
    format!("[model]\nname = \"fmnist_cnn\"\nweights = \"{}\"\n", weights.display())
}

/// A small study of the shipped images with `models` (TOML tables), written as
/// `dir/<name>.toml` with its output in `dir/<name>`; `data` adds lines to `[data]`.
fn study(dir: &Path, name: &str, models: &str, data: &str) -> String {
    let assets = root().join("assets/fashion-mnist");
    let text = format!(
        r#"seed = 5
out = "{name}"
batch_size = 3

{models}
[data]
images = "{images}"
labels = "{labels}"
count = 4
{data}

[methods]
names = ["gradient", "smoothgrad"]
smoothgrad = {{ samples = 3, sigma = 0.1 }}

[attacks]
names = ["random_sign", "top_k"]
epsilons = [0.02, 0.1]
random_sign = {{ tries = 2 }}
top_k = {{ iterations = 2, step = 0.25 }}

[report]
examples = 1
"#,
        images = assets.join("t10k-images-1000-idx3-ubyte.gz").display(),
        labels = assets.join("t10k-labels-1000-idx1-ubyte.gz").display(),
    );
    let file = format!("{name}.toml");
    std::fs::write(dir.join(&file), text).unwrap();
    file
}

fn run_json(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap()
}

fn run_ok(dir: &Path, config: &str) {
    let o = fragility(&["run", "--quiet", config], dir);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The rows of `table` without their model label, for comparing with a one-model study.
fn unlabelled(table: SampleTable) -> SampleTable {
    SampleTable { study: None, images: Default::default(), ..table }
}

#[test]
fn each_models_rows_are_what_a_study_of_that_model_alone_computes() {
    let dir = tempfile::tempdir().unwrap();
    // All images (no `correct_only`), so that both studies study the first four.
    let both = study(dir.path(), "both", &two_models(), "correct_only = false");
    let alone = study(dir.path(), "alone", &cnn_alone(), "correct_only = false");
    run_ok(dir.path(), &both);
    run_ok(dir.path(), &alone);
    let table = read_samples(&dir.path().join("both/samples.parquet")).unwrap();
    assert_eq!(table.models(), ["cnn", "resnet20"]);
    let cnn_cols = &table.model_metrics[0].1;
    let res_cols = &table.model_metrics[1].1;
    assert!(
        cnn_cols.contains(&"top100_intersection".to_string())
            && !cnn_cols.contains(&"top131_intersection".to_string())
    );
    assert!(
        res_cols.contains(&"top131_intersection".to_string())
            && !res_cols.contains(&"top100_intersection".to_string())
    );
    // 4 images × 2 methods × 2 attacks × 2 ε per model, models in config order.
    assert_eq!(table.rows.len(), 2 * 32);
    assert!(table.rows[..32].iter().all(|r| r.model == "cnn"));
    assert!(table.rows[32..].iter().all(|r| r.model == "resnet20"));
    for m in ["cnn", "resnet20"] {
        let ids: std::collections::BTreeSet<u32> =
            table.rows.iter().filter(|r| r.model == m).map(|r| r.image_id).collect();
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), [0, 1, 2, 3], "model {m}");
    }
    // The CNN's rows equal those of the CNN studied alone: the same machinery, the same seeds.
    let one = read_samples(&dir.path().join("alone/samples.parquet")).unwrap();
    assert_eq!(unlabelled(table.of_model("cnn")), unlabelled(one));

    let meta = run_json(&dir.path().join("both"));
    let labels: Vec<&str> =
        meta["settings"]["models"].as_array().unwrap().iter().map(|m| m["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["cnn", "resnet20"]);
    assert_eq!(meta["settings"]["models"][1]["resize"], 32);
    assert!(meta["settings"].get("model").is_none());
    let models = meta["images"]["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[1]["label"], "resnet20");
    assert_eq!(models[1]["predictions"]["predicted"], 1000);
    assert_eq!(meta["automatic"]["models"][1]["metrics.top_k"], serde_json::json!([131]));
    assert_eq!(meta["automatic"]["models"][1]["image_size"], serde_json::json!([32, 32]));
    // An example panel per model and attack for the first image.
    for m in ["cnn", "resnet20"] {
        assert!(dir.path().join(format!("both/examples/{m}.top_k-gradient_image0.png")).is_file(), "{m}");
    }
    // A second run of the same study finds it finished.
    let o = fragility(&["run", both.as_str()], dir.path());
    assert!(o.status.success() && stderr(&o).contains("already holds this finished run"), "{}", stderr(&o));

    // compare: a study of several models against itself is compared model by model and
    // unchanged; against a study of one model it is refused, naming both tables.
    let o = fragility(&["compare", "--all", "both", "both"], dir.path());
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{text}{}", stderr(&o));
    assert!(
        text.contains("unchanged  resnet20  gradient  top_k → gradient  0.1  top131_intersection"),
        "{text}"
    );
    assert!(text.contains("unchanged  cnn  gradient  top_k → gradient  0.1  top100_intersection"), "{text}");
    assert!(!text.contains("regression  "), "{text}");
    let o = fragility(&["compare", "alone", "both"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("alone") && stderr(&o).contains("both"), "{}", stderr(&o));
}

#[test]
fn with_correct_only_every_model_studies_the_images_all_of_them_classify_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let both = study(dir.path(), "both", &two_models(), "");
    run_ok(dir.path(), &both);
    let table = read_samples(&dir.path().join("both/samples.parquet")).unwrap();
    let meta = run_json(&dir.path().join("both"));
    let ids: Vec<u64> =
        meta["images"]["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 4);
    for id in &ids {
        for m in ["cnn", "resnet20"] {
            let r = table.rows.iter().find(|r| r.model == m && u64::from(r.image_id) == *id).unwrap();
            assert_eq!(r.predicted, r.label, "model {m} misclassifies image {id}");
        }
    }
    // Eligible: images both classify correctly, no more than either alone.
    let eligible = meta["images"]["eligible"].as_u64().unwrap();
    for m in meta["images"]["models"].as_array().unwrap() {
        let alone = m["eligible"].as_u64().unwrap();
        assert!(eligible <= alone && alone == m["predictions"]["correct"].as_u64().unwrap());
    }
    // The ids are the first eligible images: the CNN alone skips images the ResNet misses.
    assert!(eligible < 1000);
}

/// A config with `models` instead of the two models, expected to fail with exit 2 naming the
/// config, `line` and `needle`, and to write nothing.
fn expect_error(models: &str, line: usize, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = study(dir.path(), "bad", models, "");
    let o = fragility(&["run", file.as_str()], dir.path());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.toml") && err.contains(&format!("line {line}")), "{err}");
    assert!(err.contains(needle), "no {needle:?} in: {err}");
    assert!(!dir.path().join("bad").exists());
}

#[test]
fn model_tables_are_checked_with_their_lines() {
    let two = two_models();
    // Two models under one label.
    expect_error(&two.replace("label = \"resnet20\"", "label = \"cnn\""), 11, "`cnn` names two models");
    // A label that cannot name a file.
    expect_error(&two.replace("label = \"cnn\"", "label = \"a/b\""), 6, "field `model[0].label`");
    // A typo in the second table names that table's field and line.
    expect_error(&two.replace("resize = 32", "resise = 32"), 13, "resise");
    // A table without its model.
    let weights = root().join("assets/models/fmnist_cnn.safetensors").display().to_string();
    expect_error(
        &format!("{two}\n[[model]]\nweights = \"{weights}\"\n"),
        16,
        "field `model[2].name` is missing",
    );
    // A model's own resize that makes no sense.
    expect_error(&two.replace("resize = 32", "resize = 0"), 13, "table `model[1]`");
}

#[test]
fn a_class_list_that_does_not_fit_the_models_names_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let file = study(dir.path(), "bad", &two_models(), "classes = [\"a\", \"b\", \"c\"]");
    let o = fragility(&["run", file.as_str()], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("3 class names, but the model `cnn` has 10"), "{}", stderr(&o));
}

#[test]
fn a_study_of_several_models_resumes_and_merges_its_shards_into_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    // batch_size 3, count 4: two chunks per model.
    let file = study(dir.path(), "one", &two_models(), "correct_only = false");
    run_ok(dir.path(), &file);
    let single = read_samples(&dir.path().join("one/samples.parquet")).unwrap();
    let summary = std::fs::read(dir.path().join("one/summary.parquet")).unwrap();

    // Two shards, each running both models on its chunk, merged.
    let text = std::fs::read_to_string(dir.path().join(&file)).unwrap();
    std::fs::write(dir.path().join("sharded.toml"), text.replace("out = \"one\"", "out = \"sharded\""))
        .unwrap();
    for shard in ["0/2", "1/2"] {
        let o = fragility(&["run", "--quiet", "sharded.toml", "--shard", shard], dir.path());
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = fragility(&["merge", "sharded"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_samples(&dir.path().join("sharded/samples.parquet")).unwrap(), single);
    assert_eq!(std::fs::read(dir.path().join("sharded/summary.parquet")).unwrap(), summary);

    // Killed once the second model's first chunk is on disk, then continued.
    let out = dir.path().join("one");
    std::fs::remove_dir_all(&out).unwrap();
    let first = out.join(".partial/chunk-000000.resnet20.parquet");
    killed_once_written(&["run", "--quiet", file.as_str()], dir.path(), &first);
    if !out.join("run.json").exists() {
        run_ok(dir.path(), &file);
        let meta = run_json(&out);
        assert!(meta["resumed_chunks"].as_u64().unwrap() >= 3, "{}", meta["resumed_chunks"]);
    }
    assert_eq!(read_samples(&out.join("samples.parquet")).unwrap(), single);
}

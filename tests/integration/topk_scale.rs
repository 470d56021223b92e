//! The top-k of the attack and of the metric scale with the image when the config gives none:
//! round(100·H·W/784), the default study's 100 of 784 pixels at any size.

use crate::cli::{fragility, stderr};
use crate::common::*;
use std::path::Path;

/// A study of the first two shipped images, one ε, the gradient attacked by `top_k` for two
/// iterations: on fmnist_cnn at 28×28, or (`at_64`) on the shipped MobileNetV2 with the images
/// resized to 64×64. `k` is the attack's `k = …` field and `metrics` the `[metrics]` table,
/// both empty to leave the k automatic. Written as `dir/name.toml`, output in `dir/name`.
fn study(dir: &Path, name: &str, at_64: bool, k: &str, metrics: &str) -> String {
    let assets = root().join("assets");
    let (model, resize) = if at_64 { ("mobilenet_v2", "resize = 64") } else { ("fmnist_cnn", "") };
    let weights = assets.join(if at_64 {
        "models/mobilenet_v2_fmnist.safetensors"
    } else {
        "models/fmnist_cnn.safetensors"
    });
    let text = format!(
        r#"seed = 3
out = "{name}"
batch_size = 2

[model]
name = "{model}"
weights = "{weights}"

[data]
images = "{images}"
labels = "{labels}"
{resize}
count = 2
correct_only = false

[methods]
names = ["gradient"]

[attacks]
names = ["top_k"]
epsilons = [0.05]
top_k = {{ iterations = 2, step = 0.25 {k} }}

[report]
examples = 0

{metrics}
"#,
        weights = weights.display(),
        images = assets.join("fashion-mnist/t10k-images-1000-idx3-ubyte.gz").display(),
        labels = assets.join("fashion-mnist/t10k-labels-1000-idx1-ubyte.gz").display(),
    );
    let file = format!("{name}.toml");
    std::fs::write(dir.join(&file), text).unwrap();
    file
}

fn run_json(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap()
}

/// Runs the automatic and the given-k study of one size, checks their columns and run.json,
/// that both computed the same numbers and that `compare` takes them as the same settings.
fn automatic_equals_given(at_64: bool, k: usize) {
    let dir = tempfile::tempdir().unwrap();
    let size = if at_64 { 64 } else { 28 };
    let auto = study(dir.path(), "auto", at_64, "", "");
    let given = study(dir.path(), "given", at_64, &format!(", k = {k}"), &format!("[metrics]\ntop_k = {k}"));
    for config in [&auto, &given] {
        let o = fragility(&["run", "--quiet", config], dir.path());
        assert!(o.status.success(), "{config}: {}", stderr(&o));
    }
    let column = format!("top{k}_intersection");
    let a = fragility::report::read_samples(&dir.path().join("auto/samples.parquet")).unwrap();
    let g = fragility::report::read_samples(&dir.path().join("given/samples.parquet")).unwrap();
    assert!(a.metric_columns.contains(&column), "{:?}", a.metric_columns);
    assert_eq!(a.metric_columns.iter().filter(|c| c.ends_with("_intersection")).count(), 1);
    assert_eq!(a.metric_columns, g.metric_columns);
    assert_eq!(a.rows.len(), 2);
    // The attack used the same k: the same perturbations, hence the same numbers (its measure
    // `topk_mass_before` is the clean map's mass on its own top k).
    for (ra, rg) in a.rows.iter().zip(&g.rows) {
        assert_eq!((ra.image_id, ra.linf, &ra.metrics), (rg.image_id, rg.linf, &rg.metrics));
    }

    // run.json: the settings say "auto", `automatic` says what it became at this size.
    let meta = run_json(&dir.path().join("auto"));
    let settings = &meta["settings"];
    assert_eq!(settings["metrics"]["top_k"], "auto", "{settings}");
    assert_eq!(settings["attacks"][0]["params"]["k"], "auto", "{settings}");
    assert_eq!(
        meta["automatic"],
        serde_json::json!({ "image_size": [size, size], "metrics.top_k": [k], "attacks.top_k.k": k })
    );
    let meta = run_json(&dir.path().join("given"));
    assert_eq!(meta["settings"]["metrics"]["top_k"], serde_json::json!([k]));
    assert_eq!(meta["settings"]["attacks"][0]["params"]["k"], k);
    assert_eq!(meta["automatic"], serde_json::json!({ "image_size": [size, size] }));

    // Given and automatic k of the same value are the same settings to `compare`.
    let o = fragility(&["compare", "given", "auto", "--out", "."], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The fingerprint holds "auto", so running the study again finds it finished.
    let o = fragility(&["run", &auto], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("already holds this finished run"), "{}", stderr(&o));
}

/// 64×64 with neither k given: k = round(100·4096/784) = 522 for the metric and the attack.
#[test]
fn an_unset_k_is_522_at_64_by_64() {
    automatic_equals_given(true, 522);
}

/// 28×28 with neither k given: the default study's 100, as before.
#[test]
fn an_unset_k_is_still_100_at_28_by_28() {
    automatic_equals_given(false, 100);
}

/// A k given for the wrong size is kept, and refused if larger than the image; the automatic
/// one never is.
#[test]
fn a_given_k_is_kept_and_checked_against_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let config = study(dir.path(), "big", false, ", k = 785", "");
    let o = fragility(&["run", "--quiet", &config], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("`attacks.top_k.k`: 785 is more than the 784 pixels"), "{}", stderr(&o));
    let config = study(dir.path(), "big", false, "", "[metrics]\ntop_k = [10, 785]");
    let o = fragility(&["run", "--quiet", &config], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("`metrics.top_k`: 785 is more than the 784 pixels"), "{}", stderr(&o));
}

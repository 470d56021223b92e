//! `[sanity]` and `[faithfulness]` from a config, as a user runs them: beside the attacks on
//! the same clean maps, alone, chunked, sharded and resumed, with their tables, figures and
//! scorecard; and their config errors.

use crate::cli::{expect_config_error, fragility, small_config, stderr};
use crate::common::*;
use fragility::report::checks::{CheckKind, CheckTable};
use std::path::Path;
use std::process::Command;

/// The sections every test here adds to `small_config` (2 chunks of 4 and 2 images).
const CHECKS: &str = r#"
[sanity]
tests = ["cascading", "random_logit", "input_invariance"]
similarities = ["spearman_abs", "ssim"]

[faithfulness]
measures = ["deletion", "pixel_flipping"]
[faithfulness.deletion]
step = 56
"#;

/// `small_config` with two methods (one that fails Adebayo's test) and the checks.
fn config(dir: &Path) -> std::path::PathBuf {
    let p = small_config(dir, &shipped_weights());
    let text = std::fs::read_to_string(&p).unwrap().replace(
        r#"names = ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad"]"#,
        r#"names = ["gradient", "guided_backprop"]"#,
    );
    std::fs::write(&p, format!("{text}{CHECKS}")).unwrap();
    p
}

fn tables(out: &Path) -> Vec<CheckTable> {
    [CheckKind::Sanity, CheckKind::Faithfulness, CheckKind::Curves]
        .into_iter()
        .map(|k| CheckTable::read(&out.join(k.file()), k).unwrap().0)
        .collect()
}

/// Each `value`/`score` of `a` within `tol` of `b`'s, every other column equal.
fn assert_close(a: &[CheckTable], b: &[CheckTable], tol: f64) {
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len(), "{:?}", x.kind);
        for column in ["image_id", "step"] {
            assert_eq!(x.counts(column), y.counts(column));
        }
        for column in ["method", "test", "measure", "layer", "similarity"] {
            assert_eq!(x.text(column), y.text(column));
        }
        for column in ["value", "score", "fraction"] {
            let (Some(u), Some(v)) = (x.numbers(column), y.numbers(column)) else { continue };
            for (p, q) in u.iter().zip(v) {
                match (p, q) {
                    (Some(p), Some(q)) => assert!((p - q).abs() <= tol, "{column}: {p} vs {q}"),
                    _ => assert_eq!(p, q),
                }
            }
        }
    }
}

#[test]
fn sanity_and_faithfulness_run_beside_the_attacks_with_tables_figures_and_a_scorecard() {
    let dir = tempfile::tempdir().unwrap();
    config(dir.path());
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("out");
    let [sanity, faith, curves] = <[CheckTable; 3]>::try_from(tables(&out)).unwrap();
    // 6 images × 2 methods × (4 cascading steps × 2 similarities + 2 random-logit rows + 1
    // invariance row).
    assert_eq!(sanity.len(), 6 * 2 * (4 * 2 + 2 + 1));
    assert_eq!(faith.len(), 6 * 2 * 2);
    // Deletion: 784 / 56 = 14 steps and the clean image; pixel flipping: Quantus' default of
    // one pixel per step, 784 points.
    assert_eq!(curves.len(), 6 * 2 * (15 + 784));
    let layers: Vec<&str> = sanity.text("layer").unwrap()[..8].iter().map(String::as_str).collect();
    assert_eq!(layers, ["fc2", "fc2", "fc1", "fc1", "conv2", "conv2", "conv1", "conv1"]);
    let values = sanity.numbers("value").unwrap();
    assert!(values.iter().flatten().all(|v| v.is_finite() && *v <= 1.0 + 1e-9));
    // Gradient passes input invariance (Kindermans et al.), exactly up to float rounding.
    let tests = sanity.text("test").unwrap();
    let methods = sanity.text("method").unwrap();
    for i in 0..sanity.len() {
        if tests[i] == "input_invariance" && methods[i] == "gradient" {
            assert!(values[i].unwrap() < fragility::sanity::TOLERANCE, "{:?}", values[i]);
        }
    }
    // The scorecard stands beside the ranking, in the terminal and on the page.
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("Scorecard"), "{text}");
    assert!(text.contains("cascading randomisation (ssim)"), "{text}");
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(page.contains("Scorecard") && page.contains("plots/sanity_cascading.png"), "no card or figure");
    // The example panels of progressive randomisation: one per example image (3 by default).
    let panels = std::fs::read_dir(out.join("examples"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("sanity_cascading_image"))
        .count();
    assert_eq!(panels, 3);
    // Captioned as what they show, not as an attack's before-and-after panel.
    let caption = "Image 0, cascading model-parameter randomisation (Adebayo et al. 2018)";
    assert!(page.contains(caption), "no cascading caption");
    assert!(
        !page.contains("attack <code>sanity_cascading</code>"),
        "a cascading panel captioned as an attack"
    );
    for f in ["sanity_cascading", "faithfulness_curves"] {
        assert!(out.join(format!("plots/{f}.png")).is_file() && out.join(format!("plots/{f}.svg")).is_file());
    }
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["settings"]["faithfulness"]["deletion"]["step"], 56);
    assert_eq!(run["settings"]["sanity"]["similarities"][1], "ssim");
    assert_eq!(run["settings"]["sanity"]["granularity"], "block");
    // Each test's and measure's seconds, and the clean maps', in run.json's timings.
    let timings = &run["timings_s"];
    let timed = [("sanity", "cascading"), ("sanity", "random_logit"), ("sanity", "input_invariance")]
        .into_iter()
        .chain([("faithfulness", "deletion"), ("faithfulness", "pixel_flipping")])
        .map(|(stage, key)| &timings[stage][key]);
    for s in timed.chain([&timings["maps"]]) {
        assert!(s.as_f64().is_some_and(|s| s > 0.0), "{timings}");
    }
    // `report` draws the same page again from the tables.
    let o = fragility(&["report", "out"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(out.join("index.html")).unwrap(), page);
}

#[test]
fn check_tables_do_not_depend_on_batch_size_threads_or_shards() {
    let dir = tempfile::tempdir().unwrap();
    let p = config(dir.path());
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let single = tables(&dir.path().join("out"));

    // Two shards (one chunk each) merged: the same chunks, the same tables exactly.
    for shard in ["0/2", "1/2"] {
        let o = fragility(&["run", "--quiet", "exp.toml", "--shard", shard, "--force"], dir.path());
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = fragility(&["merge", "out", "--force"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(tables(&dir.path().join("out")), single);

    // Another batch size on one thread: the same values up to float rounding.
    let text = std::fs::read_to_string(&p).unwrap().replace("batch_size = 4", "batch_size = 5");
    std::fs::write(&p, text).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_fragility"))
        .args(["exp.toml", "--force"])
        .env("RAYON_NUM_THREADS", "1")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_close(&tables(&dir.path().join("out")), &single, 1e-4);
}

#[test]
fn an_interrupted_study_resumes_its_check_tables_from_its_chunks() {
    let dir = tempfile::tempdir().unwrap();
    config(dir.path());
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("out");
    let single = tables(&out);
    // Killed once the first chunk is on disk (its check tables first, its samples last),
    // then continued: the chunk is read back, not recomputed.
    std::fs::remove_dir_all(&out).unwrap();
    killed_once_written(
        &["run", "--quiet", "exp.toml"],
        dir.path(),
        &out.join(".partial/chunk-000000.parquet"),
    );
    if !out.join("run.json").exists() {
        let o = fragility(&["run", "--quiet", "exp.toml"], dir.path());
        assert!(o.status.success(), "{}", stderr(&o));
        let run: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
        assert!(run["resumed_chunks"].as_u64().unwrap() >= 1, "{}", run["resumed_chunks"]);
    }
    assert_eq!(tables(&out), single);
}

#[test]
fn sanity_and_faithfulness_run_alone_without_attacks() {
    let dir = tempfile::tempdir().unwrap();
    let p = config(dir.path());
    let text = std::fs::read_to_string(&p).unwrap();
    let start = text.find("[attacks]").unwrap();
    let end = text.find("[sanity]").unwrap();
    std::fs::write(&p, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("out");
    assert_eq!(fragility::report::read_samples(&out.join("samples.parquet")).unwrap().rows.len(), 0);
    assert_eq!(tables(&out)[0].len(), 6 * 2 * (4 * 2 + 2 + 1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("Scorecard") && !text.contains("top-100 intersection ("), "{text}");
    assert!(!out.join("plots/spearman.png").exists(), "a fragility chart without attacks");

    // Neither attacks nor checks: nothing to do, said plainly.
    let bare = std::fs::read_to_string(&p).unwrap();
    let bare = &bare[..bare.find("[sanity]").unwrap()];
    std::fs::write(&p, bare).unwrap();
    let o = fragility(&["exp.toml", "--force"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing section `attacks`"), "{}", stderr(&o));
}

#[test]
fn a_study_that_drops_its_checks_leaves_no_stale_check_table() {
    let dir = tempfile::tempdir().unwrap();
    let p = config(dir.path());
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, &text[..text.find("[sanity]").unwrap()]).unwrap();
    let o = fragility(&["exp.toml", "--force"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("out");
    for kind in [CheckKind::Sanity, CheckKind::Faithfulness, CheckKind::Curves] {
        assert!(!out.join(kind.file()).exists(), "{} left behind", kind.file());
    }
    assert!(!out.join("plots/sanity_cascading.png").exists());
    assert!(!String::from_utf8_lossy(&o.stdout).contains("Scorecard"));
}

#[test]
fn a_file_we_did_not_write_is_never_overwritten_by_a_check_table() {
    let dir = tempfile::tempdir().unwrap();
    config(dir.path());
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/sanity.parquet"), b"mine").unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(std::fs::read(dir.path().join("out/sanity.parquet")).unwrap(), b"mine");
}

#[test]
fn randomisation_of_an_onnx_model_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let p = config(dir.path());
    let onnx = root().join("assets/models/cifar_resnet20_fmnist.onnx");
    let text = std::fs::read_to_string(&p).unwrap();
    let model_start = text.find("[model]").unwrap();
    let model_end = text.find("[data]").unwrap();
    let text = format!(
        "{}[model]\nonnx = {:?}\n\n{}",
        &text[..model_start],
        onnx.display().to_string(),
        &text[model_end..]
    );
    std::fs::write(&p, text.replace("names = [\"gradient\", \"guided_backprop\"]", "names = [\"gradient\"]"))
        .unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("state_dict"), "{}", stderr(&o));
    assert!(!dir.path().join("out").exists());
}

#[test]
fn check_settings_errors_name_the_field_and_line() {
    // `small_config`'s last line (22) is its `top_k` table; the checks follow it, `[sanity]`
    // on line 23.
    let last = "top_k = { k = 50, iterations = 4, step = 0.25, beta = 10.0 }";
    let with = |from: &str, to: &str| format!("{last}{}", CHECKS.replacen(from, to, 1));
    let cases = [
        ("\"random_logit\"", "\"shuffle\"", 24, "field `sanity.tests`: unknown `shuffle`"),
        ("[\"spearman_abs\", \"ssim\"]", "[\"ssim\", \"ssim\"]", 25, "`ssim` is listed twice"),
        ("[\"spearman_abs\", \"ssim\"]", "[]", 25, "field `sanity.similarities` is empty"),
        ("tests = [", "input_shift = 0.0\ntests = [", 24, "field `sanity.input_shift`"),
        (
            "tests = [",
            "granularity = \"blocks\"\ntests = [",
            24,
            "field `sanity.granularity`: unknown `blocks` (known: `block`, `layer`)",
        ),
        ("\"pixel_flipping\"", "\"aopc\"", 28, "field `faithfulness.measures`: unknown `aopc`"),
        ("step = 56", "stride = 56", 27, "section `faithfulness.deletion`: unknown field `stride`"),
        (
            "\"deletion\", \"pixel_flipping\"",
            "\"pixel_flipping\"",
            27,
            "`deletion` is not in `faithfulness.measures`",
        ),
    ];
    for (from, to, line, needle) in cases {
        expect_config_error(last, &with(from, to), line, needle);
    }
}

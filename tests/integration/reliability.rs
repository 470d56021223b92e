//! Nothing lost, nothing mixed: the program against a hostile user (issue 14). Concurrent runs
//! (the folder lock), changed inputs (the study fingerprint), nonsense settings (one
//! validation pass before the first write), exit codes, leftovers and `merge`'s overwrite rule.

use crate::cli::{chunked_config, fragility, small_config, stderr};
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The small config cut down to one method, one attack and 4 images in chunks of 2: a run
/// of a second or two.
fn tiny_config(dir: &Path, weights: &Path) -> PathBuf {
    let p = small_config(dir, weights);
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("count = 6", "count = 4")
        .replace("batch_size = 4", "batch_size = 2")
        .replace(
            r#"names = ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad"]"#,
            r#"names = ["gradient"]"#,
        )
        .replace(r#"names = ["random_sign", "top_k"]"#, r#"names = ["random_sign"]"#);
    std::fs::write(&p, text).unwrap();
    p
}

/// Applies `edits` (each a first-occurrence replacement) to the config at `p`.
fn edit(p: &Path, edits: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(p).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "config lacks {from:?}");
        text = text.replacen(from, to, 1);
    }
    std::fs::write(p, text).unwrap();
}

/// A copy of the shipped weights in `dir`, to be changed in place.
fn own_weights(dir: &Path) -> PathBuf {
    let w = dir.join("w.safetensors");
    std::fs::copy(shipped_weights(), &w).unwrap();
    w
}

/// Flips the lowest mantissa bit of the file's last f32 (a model that differs in one weight,
/// as a retrained one saved under the same name would).
fn flip_last_weight(w: &Path) {
    let mut bytes = std::fs::read(w).unwrap();
    let at = bytes.len() - 4;
    bytes[at] ^= 1;
    std::fs::write(w, bytes).unwrap();
}

/// Runs `config` in `dir` and kills it (SIGKILL) once its first chunk is on disk.
fn interrupted_run(dir: &Path) -> PathBuf {
    let out = dir.join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fragility"))
        .arg("exp.toml")
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first = out.join(".partial/chunk-000000.parquet");
    let t = Instant::now();
    while !first.exists() {
        assert!(t.elapsed().as_secs() < 120, "no chunk written");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("run.json").exists(), "the run finished before it could be killed");
    out
}

/// Expects exit code 2 with every needle in the message, and no output folder.
fn expect_refused(dir: &Path, args: &[&str], needles: &[&str]) -> String {
    let o = fragility(args, dir);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "no {n:?} in: {err}");
    }
    err
}

// ---- one lock per output folder ----

#[test]
fn a_run_merge_or_report_into_a_folder_another_process_holds_is_refused_naming_its_pid() {
    let dir = tempfile::tempdir().unwrap();
    tiny_config(dir.path(), &shipped_weights());
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("shards")).unwrap();
    let lock = fragility::lock::OutLock::acquire(&out).unwrap();
    let pid = format!("pid {}", std::process::id());
    std::fs::write(out.join("samples.parquet"), b"").unwrap();
    // (a study of ours, as its manifest says, so that report gets as far as the lock)
    let manifest =
        r#"{"written_by": "fragility", "kind": "study", "folders": [], "files": ["samples.parquet"]}"#;
    std::fs::write(out.join(".fragility-manifest.json"), manifest).unwrap();
    for args in [&["exp.toml"][..], &["exp.toml", "--force"], &["merge", "out"], &["report", "out"]] {
        expect_refused(dir.path(), args, &[&pid, "in use"]);
    }
    assert!(!out.join(".partial").exists() && !out.join("summary.parquet").exists());
    std::fs::remove_file(out.join("samples.parquet")).unwrap();
    drop(lock);
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_killed_run_leaves_no_stale_lock() {
    let dir = tempfile::tempdir().unwrap();
    chunked_config(dir.path());
    let out = dir.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fragility"))
        .arg("exp.toml")
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let want = child.id().to_string();
    let t = Instant::now();
    while std::fs::read_to_string(out.join(".lock")).unwrap_or_default() != want {
        assert!(t.elapsed().as_secs() < 120, "the run never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    // While it runs, this process cannot take the folder; once it is killed, it can.
    assert!(matches!(fragility::lock::OutLock::acquire(&out), Err(fragility::Error::Locked { .. })));
    child.kill().unwrap();
    child.wait().unwrap();
    fragility::lock::OutLock::acquire(&out).unwrap();
}

// ---- one study fingerprint ----

#[test]
fn changed_weights_after_a_finished_run_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let w = own_weights(dir.path());
    tiny_config(dir.path(), &w);
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let samples = dir.path().join("out/samples.parquet");
    let before = std::fs::read(&samples).unwrap();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/run.json")).unwrap()).unwrap();
    let fields: Vec<&str> =
        meta["inputs"].as_array().unwrap().iter().map(|i| i["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["model.weights", "data.images", "data.labels"]);

    flip_last_weight(&w);
    expect_refused(dir.path(), &["exp.toml"], &["model.weights", "w.safetensors", "changed", "--force"]);
    assert_eq!(std::fs::read(&samples).unwrap(), before, "the finished study was touched");
    let o = fragility(&["exp.toml", "--force"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fragility(&["exp.toml"], dir.path());
    assert!(stderr(&o).contains("already holds this finished run"), "{}", stderr(&o));
}

#[test]
fn after_a_kill_changed_weights_a_foreign_chunk_and_a_truncated_chunk_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let w = own_weights(dir.path());
    chunked_config(dir.path());
    edit(&dir.path().join("exp.toml"), &[(&shipped_weights().display().to_string(), "w.safetensors")]);
    let out = interrupted_run(dir.path());

    flip_last_weight(&w);
    expect_refused(dir.path(), &["exp.toml"], &["interrupted", "model.weights", "--force"]);
    flip_last_weight(&w);

    // A chunk that claims to be chunk 0 but holds other images.
    let chunk = out.join(".partial/chunk-000000.parquet");
    let original = std::fs::read(&chunk).unwrap();
    let mut table = fragility::report::read_samples(&chunk).unwrap();
    for r in &mut table.rows {
        r.image_id += 500;
    }
    table.images = std::mem::take(&mut table.images).into_iter().map(|(id, t)| (id + 500, t)).collect();
    fragility::report::write_samples(&chunk, &table).unwrap();
    expect_refused(dir.path(), &["exp.toml"], &["chunk-000000.parquet", "not one of the chunk's images"]);

    // A truncated chunk is bad input too (exit 2), named.
    std::fs::write(&chunk, &original[..original.len() / 2]).unwrap();
    expect_refused(dir.path(), &["exp.toml"], &["chunk-000000.parquet"]);

    std::fs::write(&chunk, &original).unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn masks_and_target_maps_are_inputs_of_the_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let p = small_config(dir.path(), &shipped_weights());
    for f in ["mask.npy", "target.npy"] {
        fragility::data::write_npy_f32(&dir.path().join(f), &[0.5; 784], &[28, 28]).unwrap();
    }
    edit(
        &p,
        &[
            (r#"names = ["random_sign", "top_k"]"#, r#"names = ["targeted", "manipulate"]"#),
            (
                "top_k = {",
                "targeted = { mask = \"mask.npy\" }\nmanipulate = { target_map = \"target.npy\" }\n#",
            ),
        ],
    );
    let plan = fragility::config::Plan::load(&p).unwrap();
    let fields: Vec<&str> = plan.inputs.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "model.weights",
            "data.images",
            "data.labels",
            "attacks.targeted.mask",
            "attacks.manipulate.target_map"
        ]
    );
    let before = fragility::run::fingerprint(&plan).unwrap();
    fragility::data::write_npy_f32(&dir.path().join("mask.npy"), &[0.25; 784], &[28, 28]).unwrap();
    let after = fragility::run::fingerprint(&plan).unwrap();
    assert_eq!(
        after.difference(Some(&before)).unwrap(),
        format!(
            "`attacks.targeted.mask` ({}) has changed since that run",
            dir.path().join("mask.npy").display()
        )
    );
}

// ---- one validation pass before the first write ----

/// Replacements of a config's text.
type Edits<'a> = Vec<(&'a str, &'a str)>;

/// Edits the small config and expects exit 2 naming the config, `line` and `needle`, with
/// nothing written.
fn expect_invalid(dir: &Path, edits: &[(&str, &str)], line: usize, needle: &str) {
    let p = small_config(dir, &shipped_weights());
    edit(&p, edits);
    expect_refused(dir, &["exp.toml"], &["exp.toml", &format!("line {line}"), needle]);
    assert!(!dir.join("out").exists(), "output written despite the error");
}

#[test]
fn nonsense_settings_are_refused_with_file_field_and_line_before_anything_is_written() {
    let top_k = "top_k = { k = 50, iterations = 4, step = 0.25, beta = 10.0 }";
    let cases: Vec<(Edits, usize, &str)> = vec![
        (vec![("epsilons = [0.02, 0.1]", "epsilons = [0.02, 0.1, 0.02]")], 21, "listed twice"),
        (vec![(top_k, "top_k = { k = 5000 }")], 22, "attacks.top_k.k"),
        (vec![(top_k, "random_sign = { tries = 0 }\ntop_k = { k = 50 }")], 22, "attacks.random_sign.tries"),
        (vec![(top_k, "top_k = { k = 50 }\n\n[metrics]\ntop_k = [10, 1000]")], 25, "metrics.top_k"),
        (vec![("count = 6", "count = 5000")], 12, "data.count"),
        (
            vec![
                ("\"smoothgrad\"]", "\"smoothgrad\", \"occlusion\"]"),
                ("smoothgrad = {", "occlusion = { window = [40, 40] }\nsmoothgrad = {"),
            ],
            17,
            "methods.occlusion.window",
        ),
        (vec![("out = \"out\"", "out = \"\"")], 2, "field `out`"),
        (vec![("out = \"out\"", "out = \"/\"")], 2, "root"),
    ];
    for (edits, line, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        expect_invalid(dir.path(), &edits, line, needle);
    }
    // A folder where a file belongs.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("wdir")).unwrap();
    let w = shipped_weights().display().to_string();
    expect_invalid(dir.path(), &[(w.as_str(), "wdir")], 7, "is a folder");
    // `out` a file, or a folder that holds other things.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("afile"), b"x").unwrap();
    expect_invalid(dir.path(), &[("out = \"out\"", "out = \"afile\"")], 2, "is a file");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("papers")).unwrap();
    std::fs::write(dir.path().join("papers/draft.tex"), b"x").unwrap();
    expect_invalid(dir.path(), &[("out = \"out\"", "out = \"papers\"")], 2, "draft.tex");
    assert!(dir.path().join("papers/draft.tex").exists());
}

#[cfg(unix)]
#[test]
fn a_device_as_images_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = small_config(dir.path(), &shipped_weights());
    let text = std::fs::read_to_string(&p).unwrap();
    let images = text.lines().find(|l| l.starts_with("images = ")).unwrap().to_string();
    edit(&p, &[(&images, "images = \"/dev/zero\"")]);
    expect_refused(dir.path(), &["exp.toml"], &["line 10", "data.images", "not a regular file"]);
}

#[test]
fn labels_outside_the_model_classes_are_refused_naming_the_file() {
    for bad in [-1i64, 10] {
        let dir = tempfile::tempdir().unwrap();
        let p = small_config(dir.path(), &shipped_weights());
        let mut labels = shipped_images().labels.unwrap();
        labels[3] = bad;
        fragility::data::write_npy_i64(&dir.path().join("labels.npy"), &labels, &[labels.len()]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let line = text.lines().find(|l| l.starts_with("labels = ")).unwrap().to_string();
        edit(&p, &[(&line, "labels = \"labels.npy\"")]);
        expect_refused(
            dir.path(),
            &["exp.toml"],
            &["labels.npy", &format!("label {bad} of image 3"), "10 classes"],
        );
        assert!(!dir.path().join("out").exists());
    }
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = candle_core::safetensors::load(shipped_weights(), &candle_core::Device::Cpu).unwrap();
    let key = tensors.keys().min().unwrap().clone();
    let t = &tensors[&key];
    let nan = candle_core::Tensor::full(f32::NAN, t.shape(), &candle_core::Device::Cpu).unwrap();
    tensors.insert(key.clone(), nan);
    let w = dir.path().join("nan.safetensors");
    candle_core::safetensors::save(&tensors, &w).unwrap();
    tiny_config(dir.path(), &w);
    expect_refused(dir.path(), &["exp.toml"], &["nan.safetensors", &format!("`{key}`"), "non-finite"]);
    assert!(!dir.path().join("out").exists());
}

#[test]
fn fewer_qualifying_images_than_asked_for_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny_config(dir.path(), &shipped_weights());
    let images = crate::cli::images_npy(dir.path(), 6);
    let text = std::fs::read_to_string(&p).unwrap();
    let lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("images = ") || l.starts_with("labels = "))
        .map(String::from)
        .collect();
    edit(
        &p,
        &[
            (&lines[0], &format!("images = \"{}\"", images.display())),
            (&lines[1], "labels = \"labels.npy\""),
            ("count = 4", "count = 6"),
        ],
    );
    let preds = fragility::run::predict_all(
        &shipped_model(),
        &fragility::data::load_images(&images).unwrap(),
        &candle_core::Device::Cpu,
    )
    .unwrap()
    .0;
    // Every label the first image's class: only the images predicted as that class qualify.
    fragility::data::write_npy_i64(&dir.path().join("labels.npy"), &[preds[0] as i64; 6], &[6]).unwrap();
    let zeros = preds.iter().filter(|&&p| p == preds[0]).count();
    assert!(zeros < 6, "the fixture needs some images of another class: {preds:?}");
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    // The headline's first line says so, with n, and that the intervals cannot be trusted.
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.starts_with(&format!("Only {zeros} of the 6 requested images were studied")), "{out}");
    assert!(out.contains(&format!("rests on n = {zeros}")), "{out}");
    assert!(out.contains("the bootstrap intervals are not reliable"), "{out}");
    // run.json records what the predictions over the file say.
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/run.json")).unwrap()).unwrap();
    assert_eq!(meta["images"]["predictions"]["correct"], zeros);
    assert_eq!(meta["images"]["predictions"]["predicted"], 6);
}

#[test]
fn a_rerun_with_another_setting_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny_config(dir.path(), &shipped_weights());
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    edit(&p, &[("epsilons = [0.02, 0.1]", "epsilons = [0.05]")]);
    expect_refused(dir.path(), &["exp.toml"], &["the settings differ: `epsilons`", "→ [0.05]", "--force"]);
    // A title is not a setting of the computation: the finished study stays finished.
    edit(&p, &[("epsilons = [0.05]", "epsilons = [0.02, 0.1]")]);
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, format!("title = \"Fashion-MNIST, one method\"\n{text}")).unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert!(stderr(&o).contains("already holds this finished run"), "{}", stderr(&o));
    let o = fragility(&["exp.toml", "--force"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let page = std::fs::read_to_string(dir.path().join("out/index.html")).unwrap();
    assert!(page.contains("<title>Fashion-MNIST, one method</title>"), "the title is not on the page");
}

// ---- exit codes and bounded reads ----

#[test]
fn unreadable_configs_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("latin1.toml"), b"seed = 1\nout = \"r\xe9sultats\"\n").unwrap();
    expect_refused(dir.path(), &["latin1.toml"], &["latin1.toml", "line 2", "UTF-8"]);
    expect_refused(dir.path(), &["train", "latin1.toml"], &["latin1.toml", "line 2", "UTF-8"]);
    std::fs::create_dir(dir.path().join("folder.toml")).unwrap();
    expect_refused(dir.path(), &["run", "folder.toml"], &["folder.toml", "folder"]);
    std::fs::write(dir.path().join("huge.toml"), vec![b'#'; 2 << 20]).unwrap();
    expect_refused(dir.path(), &["huge.toml"], &["huge.toml", "too large"]);
}

#[test]
fn a_truncated_table_exits_2_in_report() {
    let dir = tempfile::tempdir().unwrap();
    tiny_config(dir.path(), &shipped_weights());
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let samples = dir.path().join("out/samples.parquet");
    let bytes = std::fs::read(&samples).unwrap();
    std::fs::write(&samples, &bytes[..bytes.len() / 2]).unwrap();
    expect_refused(dir.path(), &["report", "out"], &["samples.parquet"]);
}

// ---- leftovers ----

#[test]
fn a_resumed_run_removes_temporary_files_and_a_finished_one_its_stale_partial() {
    let dir = tempfile::tempdir().unwrap();
    chunked_config(dir.path());
    let out = interrupted_run(dir.path());
    // What a kill during atomic writes leaves behind.
    std::fs::create_dir_all(out.join("examples")).unwrap();
    let temps = [
        out.join(".samples.parquet.tmp4242"),
        out.join("examples/.top_k_image0.png.tmp4242"),
        out.join(".partial/.chunk-000005.parquet.tmp4242"),
    ];
    for t in &temps {
        std::fs::write(t, b"half").unwrap();
    }
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    for t in &temps {
        assert!(!t.exists(), "{} stayed", t.display());
    }
    // Killed after run.json but before .partial/ was removed (so the manifest still lists
    // it): the next run tidies up.
    std::fs::create_dir_all(out.join(".partial")).unwrap();
    std::fs::write(out.join(".partial/chunk-000000.parquet"), b"stale").unwrap();
    let manifest = out.join(".fragility-manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["folders"].as_array_mut().unwrap().push(".partial".into());
    std::fs::write(&manifest, m.to_string()).unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert!(stderr(&o).contains("already holds this finished run"), "{}", stderr(&o));
    assert!(!out.join(".partial").exists());
}

#[test]
fn an_interrupted_run_without_chunks_does_not_block_a_corrected_config() {
    // What a run of other settings that failed before its first chunk leaves behind.
    let dir = tempfile::tempdir().unwrap();
    tiny_config(dir.path(), &shipped_weights());
    let partial = dir.path().join("out/.partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("study.json"), br#"{"fingerprint": "0123456789abcdef"}"#).unwrap();
    // (and the stamp earlier versions wrote there, which blocked the corrected config)
    std::fs::write(partial.join("fingerprint"), b"0123456789abcdef").unwrap();
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!partial.exists());
}

#[test]
fn compare_accepts_other_weights_but_refuses_other_data() {
    let dir = tempfile::tempdir().unwrap();
    let w = own_weights(dir.path());
    let p = tiny_config(dir.path(), &w);
    let mut labels = shipped_images().labels.unwrap();
    fragility::data::write_npy_i64(&dir.path().join("labels.npy"), &labels, &[labels.len()]).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    let line = text.lines().find(|l| l.starts_with("labels = ")).unwrap().to_string();
    edit(&p, &[(&line, "labels = \"labels.npy\""), ("out = \"out\"", "out = \"base\"")]);
    let run = |from: &str, to: &str| {
        edit(&p, &[(from, to)]);
        let o = fragility(&["exp.toml"], dir.path());
        assert!(o.status.success(), "{}", stderr(&o));
    };
    run("out = \"base\"", "out = \"base\"");
    // A new model version: comparable (exit 0 or 1, not 2).
    flip_last_weight(&w);
    run("out = \"base\"", "out = \"new_model\"");
    let o = fragility(&["compare", "base", "new_model"], dir.path());
    assert_ne!(o.status.code(), Some(2), "{}", stderr(&o));
    // The same model on labels changed in place (an image the run does not even study): not.
    labels[999] = (labels[999] + 1) % 10;
    fragility::data::write_npy_i64(&dir.path().join("labels.npy"), &labels, &[labels.len()]).unwrap();
    run("out = \"new_model\"", "out = \"new_labels\"");
    expect_refused(dir.path(), &["compare", "new_model", "new_labels"], &["different data", "`data.labels`"]);
}

// ---- fault injection ----

#[test]
fn killed_at_random_points_a_run_still_ends_with_the_uninterrupted_tables() {
    use rand::Rng;
    let dir = tempfile::tempdir().unwrap();
    chunked_config(dir.path());
    let out = dir.path().join("out");
    let t = Instant::now();
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let whole_ms = t.elapsed().as_millis() as u64;
    let reference = dir.path().join("reference");
    std::fs::rename(&out, &reference).unwrap();

    // Rounds (default 1; `FRAGILITY_FAULT_ROUNDS` for a campaign) of: start, kill -9 after a
    // seeded random time within half a whole run, start again... until a start finishes (at
    // most 10 kills, then one last start runs to the end); then the tables must equal the
    // uninterrupted run's.
    let rounds: u64 = std::env::var("FRAGILITY_FAULT_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let whole = fragility::report::read_samples(&reference.join("samples.parquet")).unwrap();
    let summary = |d: &Path| std::fs::read(d.join("summary.parquet")).unwrap();
    let mut total = 0;
    for round in 0..rounds {
        let mut rng = fragility::seed::rng(14 + round);
        let mut kills = 0;
        loop {
            let mut child = Command::new(env!("CARGO_BIN_EXE_fragility"))
                .arg("exp.toml")
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_millis(rng.random_range(0..whole_ms / 2));
            let finished = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "round {round}: a resumed run failed after {kills} kills");
                    break true;
                }
                if kills < 10 && Instant::now() >= deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            if finished {
                break;
            }
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
        }
        assert!(kills >= 2, "round {round}: only {kills} kills, the run was not interrupted");
        let resumed = fragility::report::read_samples(&out.join("samples.parquet")).unwrap();
        assert_eq!(resumed, whole, "round {round}, after {kills} kills");
        assert_eq!(summary(&out), summary(&reference), "round {round}");
        assert!(!out.join(".partial").exists());
        std::fs::remove_dir_all(&out).unwrap();
        total += kills;
    }
    eprintln!("fault injection: {rounds} rounds, {total} kills, tables identical");
}

// ---- merge follows run's rule ----

#[test]
fn merge_refuses_to_overwrite_another_finished_study_and_reads_shards_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny_config(dir.path(), &shipped_weights());
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("out");
    assert!(out.join("examples").read_dir().unwrap().next().is_some(), "the fixture needs panels");
    let before = std::fs::read(out.join("samples.parquet")).unwrap();

    // Another study (other ε, no panels) as two shards into the same folder.
    edit(
        &p,
        &[
            ("epsilons = [0.02, 0.1]", "epsilons = [0.05]"),
            ("[attacks]", "[report]\nexamples = 0\n\n[attacks]"),
        ],
    );
    for s in ["0/2", "1/2"] {
        let o = fragility(&["exp.toml", "--shard", s], dir.path());
        assert!(o.status.success(), "{}", stderr(&o));
    }
    expect_refused(
        dir.path(),
        &["merge", "out"],
        &["finished run of another study", "the settings differ: `epsilons` [0.02,0.1] → [0.05]", "--force"],
    );
    assert_eq!(std::fs::read(out.join("samples.parquet")).unwrap(), before);
    let o = fragility(&["merge", "out", "--force"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.join("examples").exists(), "the old study's panels stayed");
    let merged = fragility::report::read_samples(&out.join("samples.parquet")).unwrap();
    assert!(merged.rows.iter().all(|r| r.epsilon == 0.05));
    // Merging the same shards again is the same study: no --force needed.
    let o = fragility(&["merge", "out"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));

    // A truncated shard table is bad input.
    let shard = out.join("shards/1-of-2/samples.parquet");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    expect_refused(dir.path(), &["merge", "out"], &["1-of-2", "samples.parquet"]);
    // A shard table copied from another study (the first run's): refused, naming it and the
    // shard's run.json.
    std::fs::write(&shard, &before).unwrap();
    expect_refused(
        dir.path(),
        &["merge", "out"],
        &["1-of-2/samples.parquet", "1-of-2/run.json", "different studies"],
    );
}

#[test]
fn compare_never_overwrites_a_compare_md_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    tiny_config(dir.path(), &shipped_weights());
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let notes = dir.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("compare.md"), "my own notes").unwrap();
    let err = expect_refused(
        dir.path(),
        &["compare", "out", "out", "--out", "notes"],
        &["compare.md", "not written by fragility"],
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(std::fs::read_to_string(notes.join("compare.md")).unwrap(), "my own notes");
    assert!(!notes.join("compare.parquet").exists());
    // Into the study's own folder (the default) it writes, and again over its own files.
    for _ in 0..2 {
        let o = fragility(&["compare", "out", "out"], dir.path());
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    assert!(dir.path().join("out/compare.md").is_file());
}

#[test]
fn report_and_compare_refuse_a_run_json_or_samples_of_another_study() {
    // Two studies that differ in one weight (two versions of a model), comparable with each
    // other.
    let dir = tempfile::tempdir().unwrap();
    let w = own_weights(dir.path());
    let p = tiny_config(dir.path(), &w);
    for out in ["a", "b"] {
        edit(&p, &[("out = ", &format!("out = \"{out}\"\n#"))]);
        let o = fragility(&["exp.toml"], dir.path());
        assert!(o.status.success(), "{}", stderr(&o));
        flip_last_weight(&w);
    }
    assert_eq!(fragility(&["compare", "a", "b"], dir.path()).status.code(), Some(0));
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (run_json, samples) =
        (std::fs::read(b.join("run.json")).unwrap(), std::fs::read(b.join("samples.parquet")).unwrap());
    let expect_refused = |args: &[&str]| {
        let o = fragility(args, dir.path());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("b/samples.parquet") && err.contains("b/run.json"), "{err}");
        assert!(err.contains("different studies"), "{err}");
    };
    // b's run.json swapped for a's: report and compare refuse, naming both files.
    std::fs::copy(a.join("run.json"), b.join("run.json")).unwrap();
    expect_refused(&["report", "b"]);
    expect_refused(&["compare", "a", "b"]);
    // b's samples.parquet replaced by a's: the same.
    std::fs::write(b.join("run.json"), &run_json).unwrap();
    std::fs::copy(a.join("samples.parquet"), b.join("samples.parquet")).unwrap();
    expect_refused(&["report", "b"]);
    expect_refused(&["compare", "a", "b"]);
    // Restored, both work again.
    std::fs::write(b.join("samples.parquet"), &samples).unwrap();
    assert!(fragility(&["report", "b"], dir.path()).status.success());
    assert_eq!(fragility(&["compare", "a", "b"], dir.path()).status.code(), Some(0));
}

// ---- output folders: only what the tool wrote (issue 24) ----

/// Every file under `dir` (relative path → bytes; folders as empty entries with a `/`).
#[derive(PartialEq)]
struct Snapshot(std::collections::BTreeMap<String, Vec<u8>>);

/// Only the names: the bytes of a whole folder make unreadable failure messages.
impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

fn snapshot(dir: &Path) -> Snapshot {
    let mut all = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if e.path().is_dir() {
                all.insert(format!("{rel}/"), Vec::new());
                stack.push(e.path());
            } else {
                let bytes = std::fs::read(e.path()).unwrap();
                // A lock file of ours holds whichever process took it last.
                let pid = rel.ends_with(".lock") && bytes.iter().all(u8::is_ascii_digit);
                all.insert(rel, if pid { b"pid".to_vec() } else { bytes });
            }
        }
    }
    Snapshot(all)
}

/// Writes a user's files into `out`: beside the study's files and inside its folders.
fn user_files(out: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let files = [
        ("notes.txt", "my notes"),
        ("data/keep.bin", "my data"),
        ("plots/README.md", "what the plots mean"),
        ("examples/notes.txt", "which panels to use"),
    ];
    files
        .iter()
        .map(|(rel, text)| {
            let p = out.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            (p, text.as_bytes().to_vec())
        })
        .collect()
}

fn assert_kept(files: &[(PathBuf, Vec<u8>)], after: &str) {
    for (p, bytes) in files {
        assert_eq!(std::fs::read(p).ok().as_ref(), Some(bytes), "{} after {after}", p.display());
    }
}

#[test]
fn files_fragility_did_not_write_survive_run_force_report_and_merge_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny_config(dir.path(), &shipped_weights());
    let out = dir.path().join("out");
    let ok = |args: &[&str]| {
        let o = fragility(args, dir.path());
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    };
    ok(&["exp.toml"]);
    assert!(out.join(".fragility-manifest.json").is_file() && out.join("index.html").is_file());
    assert!(out.join("examples").read_dir().unwrap().count() > 1, "the fixture needs panels");
    // The user keeps notes and data in the study's folder.
    let mine = user_files(&out);
    ok(&["exp.toml"]);
    assert_kept(&mine, "a finished run");
    ok(&["exp.toml", "--force"]);
    assert_kept(&mine, "--force");
    ok(&["report", "out"]);
    assert_kept(&mine, "report");
    ok(&["exp.toml", "--shard", "0/2"]);
    ok(&["exp.toml", "--shard", "1/2"]);
    ok(&["merge", "out"]);
    assert_kept(&mine, "merge");
    // Another study (no panels) with --force: our panels go, file by file, the user's stay.
    edit(
        &p,
        &[
            ("epsilons = [0.02, 0.1]", "epsilons = [0.05]"),
            ("[attacks]", "[report]\nexamples = 0\n\n[attacks]"),
        ],
    );
    ok(&["exp.toml", "--force"]);
    assert_kept(&mine, "--force of another study");
    let panels: Vec<_> = out.join("examples").read_dir().unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(panels, ["notes.txt"]);
    ok(&["merge", "out", "--force"]);
    assert_kept(&mine, "merge --force");
}

#[test]
fn a_file_a_run_would_write_but_fragility_did_not_is_refused_before_loading_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let w = own_weights(dir.path());
    tiny_config(dir.path(), &w);
    let out = dir.path().join("out");
    // A bare lock and shards/ beside a user's table, page or run.json do not make a study.
    let cases: [(&str, &[u8]); 4] = [
        ("index.html", b"<p>my page</p>"),
        ("summary.parquet", b"mine"),
        ("samples.parquet", b"mine"),
        ("run.json", b"{\"mine\": true}"),
    ];
    for (rel, bytes) in cases {
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(out.join("shards")).unwrap();
        std::fs::write(out.join(".lock"), b"12345").unwrap();
        std::fs::write(out.join(rel), bytes).unwrap();
        let before = snapshot(&out);
        for args in [&["exp.toml"][..], &["exp.toml", "--force"]] {
            expect_refused(dir.path(), args, &[rel, "no study"]);
            assert_eq!(snapshot(&out), before, "{rel}: {args:?} wrote into the folder");
        }
    }
    // In a study's own folder: a plot or panel someone else put there, or a lock file that is
    // not ours, is refused before loading (weights that cannot load would be named otherwise).
    let _ = std::fs::remove_dir_all(&out);
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(&w, b"not safetensors").unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        ("plots/mine.png", b"my plot", "not written by fragility"),
        ("examples/mine.png", b"my panel", "not written by fragility"),
        (".lock", b"my lock notes", "not a lock file fragility wrote"),
    ];
    for (rel, bytes, needle) in cases {
        let old = std::fs::read(out.join(rel)).ok();
        std::fs::write(out.join(rel), bytes).unwrap();
        let before = snapshot(&out);
        for args in [&["exp.toml"][..], &["exp.toml", "--force"]] {
            let err = expect_refused(dir.path(), args, &[rel, needle]);
            assert!(!err.contains("w.safetensors"), "{err}");
            assert_eq!(snapshot(&out), before, "{rel}: {args:?} wrote into the folder");
        }
        match old {
            Some(b) => std::fs::write(out.join(rel), b).unwrap(),
            None => std::fs::remove_file(out.join(rel)).unwrap(),
        }
    }
}

#[test]
fn a_study_folder_made_before_manifests_is_adopted_by_its_run_json_record_only() {
    let dir = tempfile::tempdir().unwrap();
    tiny_config(dir.path(), &shipped_weights());
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("out");
    let manifest = out.join(".fragility-manifest.json");
    // As the committed studies under reports/ are: no manifest, a run.json record.
    std::fs::remove_file(&manifest).unwrap();
    std::fs::write(out.join("plots/notes.md"), b"mine").unwrap();
    let o = fragility(&["report", "out"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = std::fs::read_to_string(&manifest).unwrap();
    assert!(
        listed.contains("\"run.json\"")
            && listed.contains("plots/spearman.png")
            && !listed.contains("notes.md")
    );
    std::fs::remove_file(&manifest).unwrap();
    let o = fragility(&["exp.toml", "--force"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join("plots/notes.md")).unwrap(), b"mine");
    // A run.json that is not a fragility record makes nothing of the folder ours.
    std::fs::remove_file(&manifest).unwrap();
    std::fs::write(out.join("run.json"), b"{\"written_by\": \"me\"}").unwrap();
    let before = snapshot(&out);
    expect_refused(dir.path(), &["exp.toml", "--force"], &["no study"]);
    expect_refused(dir.path(), &["report", "out"], &["not written by fragility"]);
    assert_eq!(snapshot(&out), before);
}

#[test]
fn merge_and_report_read_shard_folders_strictly_and_refuse_files_they_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    tiny_config(dir.path(), &shipped_weights());
    for s in ["0/2", "1/2"] {
        let o = fragility(&["exp.toml", "--shard", s], dir.path());
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let out = dir.path().join("out");
    // Shard 0 copied under another spelling of its index is not counted twice: refused.
    let copy = out.join("shards/00-of-2");
    std::fs::create_dir_all(&copy).unwrap();
    for e in std::fs::read_dir(out.join("shards/0-of-2")).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
    }
    let before = snapshot(&out);
    expect_refused(dir.path(), &["merge", "out"], &["00-of-2", "not a shard folder"]);
    assert_eq!(snapshot(&out), before);
    std::fs::remove_dir_all(&copy).unwrap();
    // A page someone else wrote is neither overwritten by merge nor by report.
    std::fs::write(out.join("index.html"), b"<p>mine</p>").unwrap();
    let before = snapshot(&out);
    expect_refused(dir.path(), &["merge", "out"], &["index.html", "not written by fragility"]);
    assert_eq!(snapshot(&out), before);
    std::fs::copy(out.join("shards/0-of-2/samples.parquet"), out.join("samples.parquet")).unwrap();
    let before = snapshot(&out);
    expect_refused(dir.path(), &["report", "out"], &["index.html", "not written by fragility"]);
    assert_eq!(snapshot(&out), before);
    // Without it, report writes the page next to a samples.parquet it did not write.
    std::fs::remove_file(out.join("index.html")).unwrap();
    let o = fragility(&["report", "out"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(out.join("samples.parquet")).unwrap(),
        std::fs::read(out.join("shards/0-of-2/samples.parquet")).unwrap()
    );
}

#[test]
fn an_out_that_is_a_file_or_a_dangling_link_is_refused_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let w = own_weights(dir.path());
    std::fs::write(&w, b"not safetensors").unwrap();
    let p = tiny_config(dir.path(), &w);
    std::fs::write(dir.path().join("afile"), b"mine").unwrap();
    std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("dangling")).unwrap();
    let images = crate::cli::images_npy(dir.path(), 2);
    for (out, needle) in
        [("afile", "it is a file"), ("afile/sub", "afile is a file"), ("dangling", "which does not exist")]
    {
        edit(&p, &[("out = \"out\"", &format!("out = \"{out}\""))]);
        let err = expect_refused(dir.path(), &["exp.toml"], &["`out` must be a folder", needle]);
        assert!(!err.contains("w.safetensors"), "{err}");
        let o = crate::cli::explain_shipped(dir.path(), &images, "gradient", out, &[]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("--out must be a folder") && stderr(&o).contains(needle),
            "{}",
            stderr(&o)
        );
        for cmd in ["merge", "report"] {
            expect_refused(dir.path(), &[cmd, out], &["DIR must be a folder", needle]);
        }
        edit(&p, &[(&format!("out = \"{out}\""), "out = \"out\"")]);
    }
    assert_eq!(std::fs::read(dir.path().join("afile")).unwrap(), b"mine");
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn explain_writes_its_own_folder_and_a_rerun_replaces_exactly_the_last_runs_files() {
    let dir = tempfile::tempdir().unwrap();
    let images = crate::cli::images_npy(dir.path(), 6);
    let maps = dir.path().join("maps");
    let o = crate::cli::explain_shipped(
        dir.path(),
        &images,
        "gradient,smoothgrad",
        "maps",
        &["--grid-images", "2"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(maps.join("smoothgrad.npy").is_file() && maps.join("smoothgrad.png").is_file());
    // Fewer methods and images: no map of the first run stays beside the second run's ids.
    let o = crate::cli::explain_shipped(
        dir.path(),
        &images,
        "gradient",
        "maps",
        &["--count", "2", "--grid-images", "0"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<String> = snapshot(&maps).0.into_keys().collect();
    assert_eq!(
        names,
        [
            ".fragility-manifest.json",
            ".lock",
            "gradient.npy",
            "ids.npy",
            "logits.npy",
            "preds.npy",
            "sources.txt"
        ]
    );
    // A failing run leaves the last one as it was.
    let before = snapshot(&maps);
    let o = crate::cli::explain_shipped(dir.path(), &images, "gradient", "maps", &["--ids", "0,99"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(snapshot(&maps), before);
    // A file explain did not write makes the folder someone else's: refused, kept.
    std::fs::write(maps.join("notes.txt"), b"mine").unwrap();
    let before = snapshot(&maps);
    let o = crate::cli::explain_shipped(dir.path(), &images, "gradient", "maps", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("notes.txt was not written by fragility"), "{}", stderr(&o));
    assert_eq!(snapshot(&maps), before);
    // So is a study's folder, and an explain folder is not a study's.
    tiny_config(dir.path(), &shipped_weights());
    let o = fragility(&["exp.toml"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = crate::cli::explain_shipped(dir.path(), &images, "gradient", "out", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    std::fs::remove_file(maps.join("notes.txt")).unwrap();
    edit(&dir.path().join("exp.toml"), &[("out = \"out\"", "out = \"maps\"")]);
    expect_refused(dir.path(), &["exp.toml"], &["output of `fragility explain`"]);
}

// ---- loading: hostile models (issue 24) ----

/// Hand-built ONNX graphs: an image input `x` [1, C, H, W] (opset 17), the given nodes and
/// float initializers, and the output `y`.
mod onnx_graph {
    use fragility::model::onnx::proto::{Attribute, GraphProto, Model, NodeProto, TensorProto, ValueInfo};

    pub fn node(op: &str, inputs: &[&str], output: &str, attributes: Vec<Attribute>) -> NodeProto {
        NodeProto {
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![output.to_string()],
            name: format!("{output}_node"),
            op_type: op.into(),
            domain: String::new(),
            attributes,
        }
    }

    pub fn ints(name: &str, v: &[i64]) -> Attribute {
        Attribute { name: name.into(), ints: v.to_vec(), ..Default::default() }
    }

    pub fn float(name: &str, f: f32) -> Attribute {
        Attribute { name: name.into(), f: Some(f), ..Default::default() }
    }

    pub fn int(name: &str, i: i64) -> Attribute {
        Attribute { name: name.into(), i: Some(i), ..Default::default() }
    }

    pub fn init(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: 1,
            raw: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    pub fn model(chw: [i64; 3], nodes: Vec<NodeProto>, initializers: Vec<TensorProto>) -> Model {
        let input = ValueInfo {
            name: "x".into(),
            elem_type: 1,
            dims: vec![Some(1), Some(chw[0]), Some(chw[1]), Some(chw[2])],
        };
        let output = ValueInfo { name: "y".into(), elem_type: 1, dims: vec![] };
        Model {
            opsets: vec![(String::new(), 17)],
            producer: "test".into(),
            graph: GraphProto {
                nodes,
                initializers,
                inputs: vec![input],
                outputs: vec![output],
                sparse: false,
            },
        }
    }

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn int_field(out: &mut Vec<u8>, field: u64, v: i64) {
        varint(out, field << 3);
        varint(out, v as u64);
    }

    fn bytes_field(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        varint(out, (field << 3) | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    fn tensor_bytes(t: &TensorProto) -> Vec<u8> {
        let mut out = Vec::new();
        for &d in &t.dims {
            int_field(&mut out, 1, d);
        }
        int_field(&mut out, 2, i64::from(t.data_type));
        bytes_field(&mut out, 8, t.name.as_bytes());
        bytes_field(&mut out, 9, &t.raw);
        out
    }

    fn value_info_bytes(v: &ValueInfo) -> Vec<u8> {
        let mut shape = Vec::new();
        for d in &v.dims {
            let mut dim = Vec::new();
            match d {
                Some(n) => int_field(&mut dim, 1, *n),
                None => bytes_field(&mut dim, 2, b"N"),
            }
            bytes_field(&mut shape, 1, &dim);
        }
        let mut tensor_type = Vec::new();
        int_field(&mut tensor_type, 1, i64::from(v.elem_type));
        bytes_field(&mut tensor_type, 2, &shape);
        let mut ty = Vec::new();
        bytes_field(&mut ty, 1, &tensor_type);
        let mut out = Vec::new();
        bytes_field(&mut out, 1, v.name.as_bytes());
        bytes_field(&mut out, 2, &ty);
        out
    }

    /// The protobuf bytes of `m` (the fields the importer reads), for tests through the CLI.
    pub fn encode(m: &Model) -> Vec<u8> {
        let mut graph = Vec::new();
        for n in &m.graph.nodes {
            let mut node = Vec::new();
            for i in &n.inputs {
                bytes_field(&mut node, 1, i.as_bytes());
            }
            for o in &n.outputs {
                bytes_field(&mut node, 2, o.as_bytes());
            }
            bytes_field(&mut node, 3, n.name.as_bytes());
            bytes_field(&mut node, 4, n.op_type.as_bytes());
            for a in &n.attributes {
                let mut attr = Vec::new();
                bytes_field(&mut attr, 1, a.name.as_bytes());
                if let Some(f) = a.f {
                    varint(&mut attr, (2 << 3) | 5);
                    attr.extend_from_slice(&f.to_le_bytes());
                }
                if let Some(i) = a.i {
                    int_field(&mut attr, 3, i);
                }
                for &i in &a.ints {
                    int_field(&mut attr, 8, i);
                }
                bytes_field(&mut node, 5, &attr);
            }
            bytes_field(&mut graph, 1, &node);
        }
        for t in &m.graph.initializers {
            bytes_field(&mut graph, 5, &tensor_bytes(t));
        }
        for v in &m.graph.inputs {
            bytes_field(&mut graph, 11, &value_info_bytes(v));
        }
        for v in &m.graph.outputs {
            bytes_field(&mut graph, 12, &value_info_bytes(v));
        }
        let mut out = Vec::new();
        int_field(&mut out, 1, 8);
        bytes_field(&mut out, 7, &graph);
        for (domain, version) in &m.opsets {
            let mut opset = Vec::new();
            bytes_field(&mut opset, 1, domain.as_bytes());
            int_field(&mut opset, 2, *version);
            bytes_field(&mut out, 8, &opset);
        }
        out
    }

    /// x [1,2,4,4] → `middle` (reading `c`, the 1×1 conv's output, and writing `m`) → global
    /// average pool → flatten → y: three logits.
    pub fn around(middle: Vec<NodeProto>, mut extra: Vec<TensorProto>) -> Model {
        let mut nodes = vec![node("Conv", &["x", "w"], "c", vec![])];
        nodes.extend(middle);
        nodes.push(node("GlobalAveragePool", &["m"], "g", vec![]));
        nodes.push(node("Flatten", &["g"], "y", vec![]));
        extra.push(init("w", &[3, 2, 1, 1], &[0.5, -0.25, 1.0, 0.75, -1.0, 0.125]));
        model([2, 4, 4], nodes, extra)
    }
}

/// `import` refuses `m` with every needle in its message (it must not panic).
fn import_refused(m: &fragility::model::onnx::proto::Model, needles: &[&str]) -> String {
    let e = fragility::model::onnx::import(m, None).expect_err("imported");
    for n in needles {
        assert!(e.contains(n), "no {n:?} in: {e}");
    }
    e
}

#[test]
fn onnx_constants_that_fold_into_nan_or_infinity_are_refused_naming_the_node() {
    use onnx_graph::*;
    // Sanity: the unmutated graph imports.
    let ok = around(vec![node("Relu", &["c"], "m", vec![])], vec![]);
    fragility::model::onnx::import(&ok, None).unwrap();
    // A batch norm with a negative variance, folded into the conv.
    let bn = |var: f32, eps: f32| {
        around(
            vec![node("BatchNormalization", &["c", "s", "b", "mu", "v"], "m", vec![float("epsilon", eps)])],
            vec![
                init("s", &[3], &[1.0; 3]),
                init("b", &[3], &[0.0; 3]),
                init("mu", &[3], &[0.0; 3]),
                init("v", &[3], &[1.0, var, 1.0]),
            ],
        )
    };
    import_refused(&bn(-0.5, 1e-5), &["`m_node`", "channel 1", "variance", "not a positive number"]);
    import_refused(&bn(1.0, f32::NAN), &["`m_node`", "NaN", "not a positive number"]);
    // The same batch norm after a ReLU (no conv to fold into: an affine node).
    let mut standalone = bn(-0.5, 1e-5);
    standalone.graph.nodes.insert(1, node("Relu", &["c"], "r", vec![]));
    standalone.graph.nodes[2].inputs[0] = "r".into();
    import_refused(&standalone, &["`m_node`", "variance"]);
    // LeakyRelu with a NaN or infinite alpha.
    for alpha in [f32::NAN, f32::INFINITY] {
        let m = around(vec![node("LeakyRelu", &["c"], "m", vec![float("alpha", alpha)])], vec![]);
        import_refused(&m, &["`m_node`", "alpha", &alpha.to_string()]);
    }
    // Mul by NaN, Div by a subnormal (1/1e-45 = ∞), and a constant Div by zero folded into a Mul.
    let m = around(vec![node("Mul", &["c", "k"], "m", vec![])], vec![init("k", &[], &[f32::NAN])]);
    import_refused(&m, &["`m_node`", "scale holds NaN"]);
    let m = around(vec![node("Div", &["c", "k"], "m", vec![])], vec![init("k", &[], &[1e-45])]);
    import_refused(&m, &["`m_node`", "scale holds inf"]);
    let m = around(
        vec![node("Div", &["one", "zero"], "k", vec![]), node("Mul", &["c", "k"], "m", vec![])],
        vec![init("one", &[], &[1.0]), init("zero", &[], &[0.0])],
    );
    import_refused(&m, &["`m_node`", "scale holds inf"]);
}

/// Channels-last views (ConvNeXt's Transpose [0, 2, 3, 1]) import where they are
/// LayerNorm / MatMul / elementwise work and the Transpose back; anything else reading one, a
/// Transpose of another permutation and a LayerNormalization over a channels-first map's axis
/// 1 (which would mix positions) are refused naming the node; so are a Split of rows and one
/// whose sizes do not add up to the channels.
#[test]
fn channels_last_views_import_only_where_they_are_supported() {
    use onnx_graph::*;
    let ln = |x: &str, out: &str, axis: i64| {
        node(
            "LayerNormalization",
            &[x, "gamma", "beta"],
            out,
            vec![int("axis", axis), float("epsilon", 1e-6)],
        )
    };
    let params = || vec![init("gamma", &[3], &[1.0, 0.5, 2.0]), init("beta", &[3], &[0.0, 0.1, -0.1])];
    let to_last = |x: &str, out: &str| node("Transpose", &[x], out, vec![ints("perm", &[0, 2, 3, 1])]);
    let back = |x: &str, out: &str| node("Transpose", &[x], out, vec![ints("perm", &[0, 3, 1, 2])]);
    // Transpose → LayerNorm → MatMul → Add (bias) → Relu → Transpose back: one layer norm and a
    // 1×1 convolution with that bias.
    let mut extra = params();
    extra.push(init("k", &[3, 3], &[1.0, 0.0, 0.5, 0.0, 1.0, 0.0, -0.5, 0.0, 1.0]));
    extra.push(init("kb", &[3], &[0.1, 0.2, 0.3]));
    let ok = around(
        vec![
            to_last("c", "t"),
            ln("t", "l", -1),
            node("MatMul", &["l", "k"], "p", vec![]),
            node("Add", &["kb", "p"], "q", vec![]),
            node("Relu", &["q"], "r", vec![]),
            back("r", "m"),
        ],
        extra,
    );
    let g = fragility::model::onnx::import(&ok, None).unwrap().graph;
    let kinds: Vec<&str> = g.nodes().iter().map(|n| n.op.kind()).collect();
    assert_eq!(kinds, ["input", "conv", "layer_norm", "conv", "relu", "adaptive_avg_pool", "flatten"]);
    // Pooling a channels-last view, other permutations, and a norm over axis 1 of a map.
    let pooled = around(vec![to_last("c", "t"), node("GlobalAveragePool", &["t"], "m", vec![])], vec![]);
    import_refused(&pooled, &["`m_node`", "channels-last view"]);
    let other = around(vec![node("Transpose", &["c"], "m", vec![ints("perm", &[0, 1, 3, 2])])], vec![]);
    import_refused(&other, &["`m_node`", "perm [0, 1, 3, 2]"]);
    let first = around(vec![ln("c", "m", 1)], params());
    import_refused(&first, &["`m_node`", "LayerNormalization", "channels-first"]);
    let wrong_axis = around(vec![to_last("c", "t"), ln("t", "l", 1), back("l", "m")], params());
    import_refused(&wrong_axis, &["`l_node`", "axis 1", "last axis"]);
    // Split: of channels only, sizes that add up.
    let rows = around(vec![node("Split", &["c"], "m", vec![int("axis", 2)])], vec![]);
    import_refused(&rows, &["`m_node`", "Split along axis 2"]);
    let sizes =
        around(vec![node("Split", &["c"], "m", vec![int("axis", 1), ints("split", &[2, 2])])], vec![]);
    import_refused(&sizes, &["`m_node`", "Split of 3 channels into sizes [2, 2]"]);
    let whole = around(vec![node("Split", &["c"], "m", vec![int("axis", 1)])], vec![]);
    fragility::model::onnx::import(&whole, None).unwrap();
    // A channels-last view left unreturned as the output.
    let mut open = around(vec![to_last("c", "m")], vec![]);
    open.graph.nodes.truncate(2);
    open.graph.outputs[0].name = "m".into();
    import_refused(&open, &["channels-last view"]);
}

#[test]
fn a_negative_batch_norm_variance_in_a_state_dict_is_refused_naming_the_key() {
    use fragility::model::weights::Weights;
    let dev = candle_core::Device::Cpu;
    let arch = fragility::model::zoo::architecture("mobilenet_v2").unwrap();
    let mut synth = Weights::synthesize(10, 3, &dev);
    (arch.build)(&mut synth).unwrap();
    let mut dict = synth.into_state_dict();
    let var = candle_core::Tensor::from_vec(
        (0..32).map(|i| if i == 5 { -1.0f32 } else { 1.0 }).collect::<Vec<_>>(),
        32,
        &dev,
    )
    .unwrap();
    dict.insert("features.0.1.running_var".into(), var);
    let e = arch.load(Weights::from_tensors(dict, "w.safetensors")).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(
        msg.contains("w.safetensors") && msg.contains("`features.0.1`") && msg.contains("channel 5"),
        "{msg}"
    );
}

#[test]
fn a_normalize_std_whose_reciprocal_is_not_finite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("x.npy");
    fragility::data::write_npy_f32(&images, &[0.5; 28 * 28], &[1, 1, 28, 28]).unwrap();
    let w = shipped_weights();
    for std in ["1e-45", "0", "-1", "NaN"] {
        let args = [
            "explain",
            "--model",
            "fmnist_cnn",
            "--weights",
            w.to_str().unwrap(),
            "--images",
            "x.npy",
            "--normalize",
            &format!("0.5/{std}"),
            "--out",
            "maps",
        ];
        expect_refused(dir.path(), &args, &["--normalize"]);
        assert!(!dir.path().join("maps").exists());
    }
    let e = fragility::model::Normalize::parse("0.5/1e-45").unwrap_err();
    assert!(e.contains("too small"), "{e}");
}

#[test]
fn onnx_folding_an_empty_constant_with_a_scalar_is_an_error_not_a_panic() {
    use onnx_graph::*;
    for op in ["Add", "Sub", "Mul", "Div"] {
        let m = around(
            vec![node(op, &["e", "k"], "z", vec![]), node("Mul", &["c", "z"], "m", vec![])],
            vec![init("e", &[0], &[]), init("k", &[], &[2.0])],
        );
        import_refused(&m, &["`m_node`"]);
    }
}

#[test]
fn onnx_pads_and_dilations_too_large_are_refused_not_allocated_or_wrapped() {
    use onnx_graph::*;
    let conv = |attrs: Vec<fragility::model::onnx::proto::Attribute>| {
        let mut m = around(vec![node("Relu", &["c"], "m", vec![])], vec![]);
        m.graph.nodes[0].attributes = attrs;
        m
    };
    // 2·10⁵ pads: a 2×400004×400004 padded input, 1.2 TB in f32 (it was allocated).
    import_refused(&conv(vec![ints("pads", &[200_000; 4])]), &["`c_node`", "exceed the limit"]);
    // Pads and dilations whose sums wrap around a usize.
    import_refused(&conv(vec![ints("pads", &[i64::MAX, 0, i64::MAX, 0])]), &["`c_node`"]);
    let mut dilated = conv(vec![ints("dilations", &[i64::MAX, 1])]);
    dilated.graph.initializers[0] = init("w", &[3, 2, 4, 1], &[0.5; 24]);
    import_refused(&dilated, &["`c_node`", "overflow"]);
    // `models` says so on the command line, exit 2 (it printed the absurd shape).
    let dir = tempfile::tempdir().unwrap();
    let m = conv(vec![ints("pads", &[200_000; 4])]);
    std::fs::write(dir.path().join("pads.onnx"), onnx_graph::encode(&m)).unwrap();
    expect_refused(dir.path(), &["models", "pads.onnx"], &["pads.onnx", "`c_node`", "exceed the limit"]);
}

#[test]
fn onnx_pool_pads_not_smaller_than_the_kernel_are_refused() {
    use onnx_graph::*;
    for (pad, ok) in [(1, true), (2, false), (3, false)] {
        let pool = node("MaxPool", &["c"], "m", vec![ints("kernel_shape", &[2, 2]), ints("pads", &[pad; 4])]);
        let m = around(vec![pool], vec![]);
        match fragility::model::onnx::import(&m, None) {
            Ok(_) => assert!(ok, "pads {pad} accepted"),
            Err(e) => assert!(!ok && e.contains("`m_node`") && e.contains("not smaller than"), "{e}"),
        }
    }
}

#[test]
fn onnx_value_names_are_defined_once() {
    use onnx_graph::*;
    // A node that redefines the image input, one that redefines an earlier value, and a
    // second node writing the graph output.
    let m = around(vec![node("Relu", &["c"], "x", vec![]), node("Relu", &["x"], "m", vec![])], vec![]);
    import_refused(&m, &["`x_node`", "redefines the value `x`"]);
    let m = around(vec![node("Relu", &["c"], "c", vec![]), node("Relu", &["c"], "m", vec![])], vec![]);
    import_refused(&m, &["redefines the value `c`"]);
    let mut m = around(vec![node("Relu", &["c"], "m", vec![])], vec![]);
    m.graph.nodes.push(node("Relu", &["g"], "y", vec![]));
    import_refused(&m, &["redefines the value `y`"]);
    let mut twice = around(vec![node("Relu", &["c"], "m", vec![])], vec![]);
    twice.graph.nodes[1].outputs.push("m".into());
    import_refused(&twice, &["redefines the value `m`"]);
}

#[test]
fn only_a_softmax_over_the_classes_is_dropped() {
    use onnx_graph::*;
    let with_softmax = |attrs: Vec<fragility::model::onnx::proto::Attribute>| {
        let mut m = around(vec![node("Relu", &["c"], "m", vec![])], vec![]);
        m.graph.nodes.last_mut().unwrap().outputs = vec!["f".into()];
        m.graph.nodes.push(node("Softmax", &["f"], "y", attrs));
        m
    };
    for axis in [None, Some(1), Some(-1)] {
        let m = with_softmax(axis.map(|a| vec![int("axis", a)]).unwrap_or_default());
        let imported = fragility::model::onnx::import(&m, None).unwrap();
        assert_eq!(imported.notices.len(), 1, "{axis:?}");
    }
    import_refused(&with_softmax(vec![int("axis", 0)]), &["`y_node`", "axis 0", "not over the classes"]);
    import_refused(&with_softmax(vec![int("axis", -2)]), &["axis -2"]);
}

#[test]
fn a_graph_without_a_feature_map_has_no_grad_cam_default_layer() {
    use onnx_graph::*;
    // A 1×1 input: no feature map larger than 1×1 (it named `input`, which explain refused).
    let mut m = around(vec![node("Relu", &["c"], "m", vec![])], vec![]);
    m.graph.inputs[0].dims = vec![Some(1), Some(2), Some(1), Some(1)];
    let imported = fragility::model::onnx::import(&m, None).unwrap();
    assert_eq!(imported.default_layer, None);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tiny.onnx"), onnx_graph::encode(&m)).unwrap();
    let o = fragility(&["models", "tiny.onnx"], dir.path());
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.contains("grad_cam default layer: none") && !out.contains("← grad_cam default"), "{out}");
    fragility::data::write_npy_f32(&dir.path().join("x.npy"), &[0.5; 2], &[1, 2, 1, 1]).unwrap();
    let args =
        ["explain", "--model", "tiny.onnx", "--images", "x.npy", "--methods", "grad_cam", "--out", "maps"];
    expect_refused(dir.path(), &args, &["no default layer", "set `layer`"]);
}

#[test]
fn a_long_onnx_chain_imports_in_linear_time() {
    use onnx_graph::*;
    // 200k ReLUs: the name lookups were a scan of every node so far, about 4·10¹⁰ string
    // comparisons here (many minutes); with a lookup table the import takes a second or so.
    let n = 200_000;
    let mut nodes = vec![node("Conv", &["x", "w"], "v0", vec![])];
    for i in 0..n {
        nodes.push(node("Relu", &[&format!("v{i}")], &format!("v{}", i + 1), vec![]));
    }
    nodes.push(node("GlobalAveragePool", &[&format!("v{n}")], "g", vec![]));
    nodes.push(node("Flatten", &["g"], "y", vec![]));
    let m = model([1, 2, 2], nodes, vec![init("w", &[2, 1, 1, 1], &[1.0, -1.0])]);
    let imported = fragility::model::onnx::import(&m, None).unwrap();
    assert_eq!(imported.graph.nodes().len(), n + 4);
}

#[cfg(unix)]
#[test]
fn onnx_external_data_must_be_a_regular_file_inside_the_model_folder() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
    let dir = tempfile::tempdir().unwrap();
    let (model_dir, outside) = (dir.path().join("model"), dir.path().join("outside"));
    std::fs::create_dir(&model_dir).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let model = model_dir.join("ops_external.onnx");
    std::fs::copy(fixtures.join("ops_external.onnx"), &model).unwrap();
    let data = model_dir.join("ops_external.onnx.data");
    std::fs::copy(fixtures.join("ops_external.onnx.data"), outside.join("w.data")).unwrap();
    // A symbolic link out of the folder (it was followed and read).
    std::os::unix::fs::symlink(outside.join("w.data"), &data).unwrap();
    let e = fragility::model::onnx::load(&model, None).unwrap_err();
    assert!(e.to_string().contains("leaves the model's folder"), "{e}");
    assert_eq!(e.exit_code(), 2);
    // A link that stays inside is fine.
    std::fs::remove_file(&data).unwrap();
    std::fs::copy(outside.join("w.data"), model_dir.join("real.data")).unwrap();
    std::os::unix::fs::symlink("real.data", &data).unwrap();
    fragility::model::onnx::load(&model, None).unwrap();
    // A FIFO (opening it for reading blocked forever).
    std::fs::remove_file(&data).unwrap();
    assert!(Command::new("mkfifo").arg(&data).status().unwrap().success());
    let e = fragility::model::onnx::load(&model, None).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn explain_refuses_repeated_methods_and_id_ranges_beyond_the_images_at_once() {
    let dir = tempfile::tempdir().unwrap();
    fragility::data::write_npy_f32(&dir.path().join("x.npy"), &[0.5; 2 * 28 * 28], &[2, 1, 28, 28]).unwrap();
    let w = shipped_weights();
    let base = ["explain", "--model", "fmnist_cnn", "--weights", w.to_str().unwrap(), "--images", "x.npy"];
    let with =
        |extra: &[&'static str]| -> Vec<&str> { base.iter().copied().chain(extra.iter().copied()).collect() };
    expect_refused(
        dir.path(),
        &with(&["--methods", "gradient,gradient", "--out", "m"]),
        &["`gradient` is given twice"],
    );
    // Ranges were expanded before being checked: a capacity overflow, or 800 GB.
    for ids in ["0-18446744073709551615", "0-99999999999"] {
        expect_refused(
            dir.path(),
            &with(&["--ids", ids, "--out", "m"]),
            &["--ids", "image 2 does not exist"],
        );
    }
    assert!(!dir.path().join("m").exists());
}

#[test]
fn explain_on_a_folder_decodes_only_the_selected_images() {
    // A folder is listed first and only the selected files are decoded: a corrupt file after
    // the selected one does not stop `--count 1`, but does stop a run over every image.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("imgs");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(root().join("assets/fashion-mnist/folder/Bag/test0018.png"), folder.join("a.png")).unwrap();
    std::fs::write(folder.join("b.png"), b"not a png at all").unwrap();
    let o = crate::cli::explain_shipped(
        dir.path(),
        &folder,
        "gradient",
        "one",
        &["--count", "1", "--grid-images", "0"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(dir.path().join("one/sources.txt")).unwrap(), "a.png\n");
    let o = crate::cli::explain_shipped(dir.path(), &folder, "gradient", "all", &["--grid-images", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("b.png"), "{}", stderr(&o));
}

#[test]
fn explain_selects_images_before_resizing_them() {
    // 400 images; `--count 1 --resize 1500` resized all 400 to 1500×1500 first (3.6 GB and
    // minutes); now one image is resized (9 MB), then cropped back to the model's 28×28.
    let dir = tempfile::tempdir().unwrap();
    let pixels: Vec<f32> = (0..400 * 28 * 28).map(|i| (i % 251) as f32 / 250.0).collect();
    fragility::data::write_npy_f32(&dir.path().join("x.npy"), &pixels, &[400, 1, 28, 28]).unwrap();
    let w = shipped_weights();
    let args = [
        "explain",
        "--model",
        "fmnist_cnn",
        "--weights",
        w.to_str().unwrap(),
        "--images",
        "x.npy",
        "--count",
        "1",
        "--resize",
        "1500",
        "--crop",
        "28",
        "--methods",
        "gradient",
        "--out",
        "m",
        "--grid-images",
        "0",
    ];
    let o = fragility(&args, dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let ids = std::fs::read(dir.path().join("m/ids.npy")).unwrap();
    assert!(ids.ends_with(&0i64.to_le_bytes()) && ids.len() < 200, "one id");
}

// ---- image files: read bounded, their declared size checked before decoding ----

/// A PNG whose IHDR declares `w × h` RGB pixels, with a body of a few bytes: a header bomb.
pub fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    b.extend(w.to_be_bytes());
    b.extend(h.to_be_bytes());
    b.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]);
    b.extend(b"\0\0\0\x04IDAT\x78\x9c\x03\x00\0\0\0\0");
    b
}

/// A JPEG whose frame header declares `w × h` with 3 components, then a scan header and the
/// end: no data at all.
pub fn jpeg_bomb(w: u16, h: u16) -> Vec<u8> {
    let mut b = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 17, 8];
    b.extend(h.to_be_bytes());
    b.extend(w.to_be_bytes());
    b.extend([3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0]);
    b.extend([0xFF, 0xDA, 0, 12, 3, 1, 0, 2, 0, 3, 0, 0, 63, 0, 0xFF, 0xD9]);
    b
}

#[test]
fn header_bombs_as_mask_or_target_map_are_refused_naming_the_file_and_size() {
    for (attack, field, file) in
        [("targeted", "mask", "mask.png"), ("manipulate", "target_map", "target.png")]
    {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(file), png_bomb(200_000, 200_000)).unwrap();
        let p = small_config(dir.path(), &shipped_weights());
        let names = format!(r#"names = ["{attack}"]"#);
        let section = format!("{attack} = {{ {field} = \"{file}\" }}\n#");
        edit(&p, &[(r#"names = ["random_sign", "top_k"]"#, &names), ("top_k = {", &section)]);
        expect_refused(dir.path(), &["exp.toml"], &[file, "200000×200000 pixels × 3 channels"]);
        assert!(!dir.path().join("out").exists(), "output written despite the error");
    }
}

#[test]
fn header_bombs_in_an_image_folder_are_refused_naming_the_file_and_size() {
    for (file, bytes, size) in [
        ("a.png", png_bomb(200_000, 200_000), "200000×200000"),
        ("b.jpg", jpeg_bomb(60_000, 50_000), "60000×50000"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir(&images).unwrap();
        std::fs::write(images.join(file), bytes).unwrap();
        let o = crate::cli::explain_shipped(dir.path(), &images, "gradient", "x", &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(file) && err.contains(&format!("{size} pixels × 3 channels")), "{err}");
        assert!(!dir.path().join("x").exists(), "output written despite the error");
    }
}

#[test]
fn images_of_the_wrong_channel_count_get_the_setting_that_converts_them() {
    // Six RGB PNGs in two class folders, for the 1-channel Fashion-MNIST model.
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    for (i, class) in ["a", "a", "a", "b", "b", "b"].iter().enumerate() {
        std::fs::create_dir_all(images.join(class)).unwrap();
        let img =
            image::RgbImage::from_fn(28, 28, |x, y| image::Rgb([(x * 9) as u8, (y * 9) as u8, i as u8]));
        img.save(images.join(class).join(format!("{i}.png"))).unwrap();
    }
    let p = small_config(dir.path(), &shipped_weights());
    let text = std::fs::read_to_string(&p).unwrap();
    let lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("images = ") || l.starts_with("labels = "))
        .map(String::from)
        .collect();
    edit(&p, &[(&lines[0], "images = \"images\""), (&lines[1], "")]);
    expect_refused(
        dir.path(),
        &["exp.toml"],
        &["takes 1 input channels, got images with 3", "set `channels = 1` in the config's [data] table"],
    );
    let o = crate::cli::explain_shipped(dir.path(), &images, "gradient", "x", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("add `--channels 1` to convert them"), "{}", stderr(&o));
    let o = crate::cli::explain_shipped(dir.path(), &images, "gradient", "x", &["--channels", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn other_image_formats_in_a_folder_are_skipped_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    image::GrayImage::from_pixel(28, 28, image::Luma([90])).save(images.join("a.png")).unwrap();
    for f in ["b.webp", "c.webp", "d.gif"] {
        std::fs::write(images.join(f), b"RIFF....WEBP").unwrap();
    }
    let o = crate::cli::explain_shipped(dir.path(), &images, "gradient", "x", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("skipped 3 image files that are not PNG or JPEG (1 .gif, 2 .webp)"),
        "{}",
        stderr(&o)
    );
}

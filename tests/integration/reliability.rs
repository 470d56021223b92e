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
    assert!(stderr(&o).contains(&format!("asks for 6 images, but only {zeros} qualified")), "{}", stderr(&o));
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
    // Killed after run.json but before .partial/ was removed: the next run tidies up.
    std::fs::create_dir_all(out.join(".partial")).unwrap();
    std::fs::write(out.join(".partial/chunk-000000.parquet"), b"stale").unwrap();
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
    expect_refused(dir.path(), &["merge", "out"], &["finished run of another study", "settings", "--force"]);
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

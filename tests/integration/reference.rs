//! `explain` against an independent implementation of the same definitions
//! (tests/reference/reference_maps.py: numpy, float64, hand-written backward pass).
//!
//! Needs python3 with numpy. The build script (build.rs) looks for it: without it the test is
//! compiled as ignored, with its reason, so `cargo test`'s summary says "1 ignored" rather than
//! counting a check that did not run as passed. With FRAGILITY_REQUIRE_REFERENCE set (CI sets it
//! and installs numpy) it is never ignored. If numpy is missing when the test does run, it fails.

use crate::cli::{explain_shipped, images_npy};
use crate::common::*;
use std::process::Command;

fn numpy_available() -> bool {
    Command::new("python3").args(["-c", "import numpy"]).output().map(|o| o.status.success()).unwrap_or(false)
}

fn read_npy_f32(p: &std::path::Path) -> Vec<f32> {
    // Our own writer and numpy's both use a 64-byte-aligned v1 header for these shapes.
    let bytes = std::fs::read(p).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..10 + header_len]);
    assert!(header.contains("'<f4'"), "{p:?}: {header}");
    bytes[10 + header_len..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[test]
#[cfg_attr(
    fragility_no_numpy,
    ignore = "needs python3 with numpy, not found when the tests were built (pip install numpy, then FRAGILITY_REQUIRE_REFERENCE=1 cargo test)"
)]
fn explain_maps_equal_an_independent_numpy_implementation() {
    assert!(
        numpy_available(),
        "python3 with numpy is not available (pip install numpy); it was when the tests were built, or FRAGILITY_REQUIRE_REFERENCE is set"
    );
    let n = 16;
    let dir = tempfile::tempdir().unwrap();
    let images = images_npy(dir.path(), n);
    let o = explain_shipped(
        dir.path(),
        &images,
        "gradient,gradient_x_input,integrated_gradients,guided_backprop,deconvnet,deeplift,grad_cam,guided_grad_cam,occlusion",
        "ours",
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let script = root().join("tests/reference/reference_maps.py");
    let o = Command::new("python3")
        .arg(&script)
        .args([
            "--weights",
            shipped_weights().to_str().unwrap(),
            "--images",
            images.to_str().unwrap(),
            "--out",
            "theirs",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours = |f: &str| read_npy_f32(&dir.path().join("ours").join(f));
    let theirs = |f: &str| read_npy_f32(&dir.path().join("theirs").join(f));

    let (lo, lt) = (ours("logits.npy"), theirs("logits.npy"));
    assert!(max_abs_diff(&lo, &lt) < 1e-3 * max_abs(&lt), "logits differ");
    let po = fragility::data::load_labels(&dir.path().join("ours/preds.npy")).unwrap();
    let pt = fragility::data::load_labels(&dir.path().join("theirs/preds.npy")).unwrap();
    for method in [
        "gradient",
        "gradient_x_input",
        "integrated_gradients",
        "guided_backprop",
        "deconvnet",
        "deeplift",
        "grad_cam",
        "guided_grad_cam",
        "occlusion",
    ] {
        let (a, b) = (ours(&format!("{method}.npy")), theirs(&format!("{method}.npy")));
        for i in 0..n {
            if po[i] != pt[i] {
                // Two logits within float32 rounding of each other: different targets.
                eprintln!("image {i}: predictions differ ({} vs {}), skipped", po[i], pt[i]);
                continue;
            }
            let (ra, rb) = (&a[i * 784..(i + 1) * 784], &b[i * 784..(i + 1) * 784]);
            let r = pearson(ra, rb);
            assert!(r >= 0.999, "{method}, image {i}: Pearson {r}");
            // Plain gradients agree to float32 rounding (~5e-7 of the map's maximum, measured).
            // IG sums 50 gradients along a path; where a path point sits within float32
            // rounding of a ReLU kink, the two implementations may take different sides there
            // (measured up to 1.4e-3 of the maximum, still Pearson > 0.99999).
            let tol = if method == "integrated_gradients" { 1e-2 } else { 1e-5 };
            let rel = max_abs_diff(ra, rb) / max_abs(rb).max(f32::MIN_POSITIVE);
            assert!(rel <= tol, "{method}, image {i}: max |Δ| / max = {rel:.2e} > {tol:.0e}");
        }
    }
}

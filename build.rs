//! Build script: tells the tests whether python3 with numpy is installed, so that `cargo test`
//! reports the independent reference check (tests/integration/reference.rs) as *ignored, with
//! its reason* in its own summary when it cannot run, instead of a pass that checked nothing.
//! With FRAGILITY_REQUIRE_REFERENCE set (CI, `.ci/run`) the check is never ignored: it runs,
//! and fails if numpy is missing.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(fragility_no_numpy)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=FRAGILITY_REQUIRE_REFERENCE");
    let required = std::env::var_os("FRAGILITY_REQUIRE_REFERENCE").is_some();
    let numpy = Command::new("python3")
        .args(["-c", "import numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !numpy && !required {
        println!("cargo::rustc-cfg=fragility_no_numpy");
    }
}

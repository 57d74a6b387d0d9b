//! Compiles the built-in static pause program (`pause/pause.c`) so the runtime
//! can embed it with `include_bytes!` and never pull a pause image.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=pause/pause.c");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let bin = out.join("pause");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&cc)
        .args(["-static", "-Os", "-Wall", "-Werror", "-s", "-o"])
        .arg(&bin)
        .arg("pause/pause.c")
        .status()
        .unwrap_or_else(|e| {
            panic!("running `{cc}` to build the pause program: {e} (install build-essential)")
        });
    assert!(
        status.success(),
        "`{cc} -static -Os pause/pause.c` failed: {status}"
    );
}

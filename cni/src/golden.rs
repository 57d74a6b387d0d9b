//! Golden files for generated text (`cni/testdata/`): a reviewer sees exactly what changed.
//! `UPDATE_GOLDEN=1 cargo test -p kubenode-cni` rewrites them.

use std::path::PathBuf;

/// Asserts that `actual` equals `cni/testdata/<name>` (or rewrites it under `UPDATE_GOLDEN=1`).
pub fn assert_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading golden file {}: {e} (UPDATE_GOLDEN=1 creates it)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "generated text differs from {}",
        path.display()
    );
}

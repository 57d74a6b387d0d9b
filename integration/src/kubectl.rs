//! The real `kubectl` (1.32 on this image) as the cluster tests' client: whether it is there,
//! the arguments every call carries, and a bounded run.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The kubectl binary, from `PATH`.
pub const KUBECTL: &str = "kubectl";

/// How long one kubectl may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a working kubectl is installed (tests that need it are skipped otherwise).
pub fn present() -> bool {
    Command::new(KUBECTL)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The arguments of every call: the test's kubeconfig, a discovery cache below `home` (each
/// test its own), and a 10 s request timeout.
pub fn common_args(kubeconfig: &Path, home: &Path) -> Vec<OsString> {
    vec![
        "--kubeconfig".into(),
        kubeconfig.into(),
        "--cache-dir".into(),
        home.join("cache").into(),
        "--request-timeout=10s".into(),
    ]
}

/// Runs `cmd` (a kubectl, possibly behind `nsenter`) with `HOME` = `home` and no `KUBECONFIG`
/// from the environment, bounded in time: its stdout when it succeeded, else its stderr.
pub fn outcome(cmd: &mut Command, home: &Path) -> anyhow::Result<Result<String, String>> {
    cmd.env_remove("KUBECONFIG").env("HOME", home);
    let out = crate::run(cmd, TIMEOUT)?;
    Ok(if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    })
}

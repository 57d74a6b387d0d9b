//! What the OCI runtime can do for pods with their own user namespace (`hostUsers: false`):
//! the runtime's name and version (`<runtime> --version`) and whether it makes idmapped
//! mounts (`<runtime> features`: `linux.mountExtensions.idmap.enabled`, printed by runc from
//! 1.2 and crun from 1.12; crun makes them from 1.9). Upstream's requirements: runc >= 1.2 or
//! crun >= 1.9, and Linux >= 6.3 (idmapped tmpfs, which emptyDir `Memory` and the
//! kubelet's files use).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::command::run_with_timeout;

/// The lowest crun that makes idmapped mounts (upstream's documented requirement).
pub const CRUN_IDMAP_VERSION: (u32, u32, u32) = (1, 9, 0);
/// The lowest kernel with idmapped tmpfs mounts.
pub const IDMAP_TMPFS_KERNEL: (u32, u32) = (6, 3);
/// Time limit of each probe command.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the runtime said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeFeatures {
    /// The runtime binary.
    pub path: PathBuf,
    /// Its name from `--version` (`runc`, `crun`, `youki`), or the file name.
    pub name: String,
    /// Its version as printed (`1.1.5+ds1`), if `--version` answered.
    pub version: Option<String>,
    /// `linux.mountExtensions.idmap.enabled` of `features`; `None` when the runtime has no
    /// `features` command or its answer lacks the key.
    pub idmap: Option<bool>,
}

/// Parses the first line of `<runtime> --version` (`runc version 1.1.5+ds1`,
/// `crun version 1.8.1`, `youki version 0.3.3`) into the name and the version.
pub fn parse_version(stdout: &str) -> Option<(String, String)> {
    let first = stdout.lines().find(|l| !l.trim().is_empty())?;
    let mut words = first.split_whitespace();
    let name = words.next()?;
    if words.next()? != "version" {
        return None;
    }
    Some((name.to_string(), words.next()?.to_string()))
}

/// `1.1.5+ds1` → `(1, 1, 5)`; `1.9` → `(1, 9, 0)`; the numeric prefix of each part.
pub fn numeric_version(v: &str) -> Option<(u32, u32, u32)> {
    let v = v.trim_start_matches('v');
    let mut parts = v.split(['.', '+', '-', '~']).map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// `linux.mountExtensions.idmap.enabled` of a `features` answer (runtime-spec
/// `features.json`); `None` when the text is not JSON or the key is absent (runc 1.1).
pub fn parse_features_idmap(json: &str) -> Option<bool> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.pointer("/linux/mountExtensions/idmap/enabled")?.as_bool()
}

impl RuntimeFeatures {
    /// Asks the runtime at `path` (`--version`, then `features`), each bounded in time; a
    /// command that fails leaves its part unknown.
    pub fn probe(path: &Path) -> RuntimeFeatures {
        let run = |arg: &str| {
            let mut cmd = Command::new(path);
            cmd.arg(arg);
            run_with_timeout(&mut cmd, PROBE_TIMEOUT)
                .ok()
                .filter(|f| f.status.success())
                .map(|f| String::from_utf8_lossy(&f.stdout).into_owned())
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (name, version) = match run("--version").as_deref().and_then(parse_version) {
            Some((n, v)) => (n, Some(v)),
            None => (file_name, None),
        };
        let idmap = run("features").as_deref().and_then(parse_features_idmap);
        RuntimeFeatures {
            path: path.to_path_buf(),
            name,
            version,
            idmap,
        }
    }

    /// `/usr/bin/runc is runc 1.1.5+ds1`, for messages.
    pub fn describe(&self) -> String {
        match &self.version {
            Some(v) => format!("{} is {} {v}", self.path.display(), self.name),
            None => format!(
                "{} is {} of unknown version (`--version` did not answer)",
                self.path.display(),
                self.name
            ),
        }
    }

    /// Whether the runtime makes idmapped mounts: what its `features` says, else crun by
    /// version (crun before 1.12 has no `features`). runc says it from 1.2 on, so a runc
    /// without the key is older; an unknown runtime without the key is taken as lacking them.
    pub fn idmap_mounts(&self) -> bool {
        if let Some(enabled) = self.idmap {
            return enabled;
        }
        self.name == "crun"
            && self
                .version
                .as_deref()
                .and_then(numeric_version)
                .is_some_and(|v| v >= CRUN_IDMAP_VERSION)
    }

    /// Why this runtime cannot run a pod with `hostUsers: false`, or `None` when it can.
    pub fn userns_missing(&self) -> Option<String> {
        if self.idmap_mounts() {
            return None;
        }
        let said = match self.idmap {
            Some(false) => "; its `features` says idmap mounts are disabled",
            _ => "",
        };
        Some(format!(
            "{}{said}; user namespaces need an OCI runtime with idmapped mounts (runc >= 1.2 or crun >= 1.9)",
            self.describe()
        ))
    }
}

/// Why this kernel cannot run pods with `hostUsers: false` (no idmapped tmpfs before 6.3),
/// or `None`.
pub fn kernel_userns_missing(kernel: Option<(u32, u32)>) -> Option<String> {
    let (major, minor) = IDMAP_TMPFS_KERNEL;
    match kernel {
        Some(k) if k >= IDMAP_TMPFS_KERNEL => None,
        Some((a, b)) => Some(format!(
            "the kernel is {a}.{b}; idmapped tmpfs mounts need Linux >= {major}.{minor}"
        )),
        None => Some(format!(
            "the kernel version is unknown; idmapped tmpfs mounts need Linux >= {major}.{minor}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `runc --version` of Debian 12's runc, verbatim.
    const RUNC_115_VERSION: &str = "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\nlibseccomp: 2.5.4\n";
    /// `crun --version` of Debian 12's crun, verbatim.
    const CRUN_181_VERSION: &str = "crun version 1.8.1\ncommit: f8a096be060b22ccd3d5f3ebe44108517fbf6c30\nrundir: /run/crun\nspec: 1.0.0\n+SYSTEMD +SELINUX +APPARMOR +CAP +SECCOMP +EBPF +YAJL\n";
    /// `runc features` of runc 1.1.5 (trimmed lists): no `mountExtensions`.
    const RUNC_115_FEATURES: &str = r#"{
    "ociVersionMin": "1.0.0",
    "ociVersionMax": "1.0.2-dev",
    "hooks": ["prestart", "createRuntime"],
    "mountOptions": ["acl", "bind"],
    "linux": {
        "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
        "capabilities": ["CAP_CHOWN"],
        "cgroup": {"v1": true, "v2": true, "systemd": true, "systemdUser": true},
        "seccomp": {"enabled": true, "actions": ["SCMP_ACT_ALLOW"]},
        "apparmor": {"enabled": true},
        "selinux": {"enabled": true}
    },
    "annotations": {"org.opencontainers.runc.version": "1.1.5+ds1"}
}"#;
    /// `runc features` of runc 1.2 (trimmed lists): idmap mounts enabled.
    const RUNC_12_FEATURES: &str = r#"{
    "ociVersionMin": "1.0.0",
    "ociVersionMax": "1.2.0",
    "hooks": ["prestart"],
    "mountOptions": ["bind", "idmap", "ridmap"],
    "linux": {
        "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
        "cgroup": {"v1": true, "v2": true, "systemd": true, "systemdUser": true, "rdma": true},
        "intelRdt": {"enabled": true},
        "mountExtensions": {"idmap": {"enabled": true}}
    },
    "annotations": {"org.opencontainers.runc.version": "1.2.0"}
}"#;

    fn features(name: &str, version: &str, idmap: Option<bool>) -> RuntimeFeatures {
        RuntimeFeatures {
            path: PathBuf::from(format!("/usr/bin/{name}")),
            name: name.into(),
            version: Some(version.into()),
            idmap,
        }
    }

    #[test]
    fn version_lines_parse() {
        assert_eq!(
            parse_version(RUNC_115_VERSION),
            Some(("runc".into(), "1.1.5+ds1".into()))
        );
        assert_eq!(
            parse_version(CRUN_181_VERSION),
            Some(("crun".into(), "1.8.1".into()))
        );
        assert_eq!(
            parse_version("youki version 0.3.3\ncommit: 0.3.3-0-abc\n"),
            Some(("youki".into(), "0.3.3".into()))
        );
        assert_eq!(parse_version("unknown command features"), None);
        assert_eq!(parse_version(""), None);
        assert_eq!(numeric_version("1.1.5+ds1"), Some((1, 1, 5)));
        assert_eq!(numeric_version("1.9"), Some((1, 9, 0)));
        assert_eq!(numeric_version("1.2.0-rc.1"), Some((1, 2, 0)));
        assert_eq!(numeric_version("v1.13"), Some((1, 13, 0)));
        assert_eq!(numeric_version("x"), None);
    }

    #[test]
    fn features_json_says_whether_idmap_mounts_work() {
        assert_eq!(parse_features_idmap(RUNC_115_FEATURES), None);
        assert_eq!(parse_features_idmap(RUNC_12_FEATURES), Some(true));
        assert_eq!(
            parse_features_idmap(
                r#"{"linux": {"mountExtensions": {"idmap": {"enabled": false}}}}"#
            ),
            Some(false)
        );
        // crun 1.8 has no `features` command: its stderr is not JSON.
        assert_eq!(parse_features_idmap("unknown command features"), None);
    }

    #[test]
    fn userns_support_by_runtime() {
        let runc11 = features("runc", "1.1.5+ds1", None);
        assert_eq!(
            runc11.userns_missing().as_deref(),
            Some("/usr/bin/runc is runc 1.1.5+ds1; user namespaces need an OCI runtime with idmapped mounts (runc >= 1.2 or crun >= 1.9)")
        );
        assert_eq!(features("runc", "1.2.0", Some(true)).userns_missing(), None);
        let disabled = features("runc", "1.2.0", Some(false));
        assert!(disabled.userns_missing().unwrap().starts_with(
            "/usr/bin/runc is runc 1.2.0; its `features` says idmap mounts are disabled;"
        ));
        // crun: by version until its `features` says it.
        assert!(features("crun", "1.8.1", None).userns_missing().is_some());
        assert_eq!(features("crun", "1.9", None).userns_missing(), None);
        assert_eq!(
            features("crun", "1.14.4", Some(true)).userns_missing(),
            None
        );
        assert!(features("youki", "0.3.3", None).userns_missing().is_some());
        let unknown = RuntimeFeatures {
            version: None,
            ..features("runc", "", None)
        };
        assert_eq!(
            unknown.describe(),
            "/usr/bin/runc is runc of unknown version (`--version` did not answer)"
        );
    }

    #[test]
    fn kernel_needs_idmapped_tmpfs() {
        assert_eq!(kernel_userns_missing(Some((6, 3))), None);
        assert_eq!(kernel_userns_missing(Some((6, 18))), None);
        assert_eq!(
            kernel_userns_missing(Some((6, 1))).as_deref(),
            Some("the kernel is 6.1; idmapped tmpfs mounts need Linux >= 6.3")
        );
        assert!(kernel_userns_missing(None).is_some());
    }

    /// The runtime on this machine answers, and what it says parses.
    #[test]
    fn probe_the_installed_runc() {
        let Some(path) = super::super::resolve_runtime(Path::new("runc")) else {
            eprintln!("no runc in PATH: probe not checked");
            return;
        };
        let f = RuntimeFeatures::probe(&path);
        assert_eq!(f.name, "runc");
        let v = f.version.as_deref().expect("runc --version answers");
        let n = numeric_version(v).expect("a numeric version");
        // runc prints `mountExtensions` exactly from 1.2 on.
        assert_eq!(f.idmap.is_some(), n >= (1, 2, 0), "{f:?}");
    }
}

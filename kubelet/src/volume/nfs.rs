//! The `nfs` volume plugin (upstream `pkg/volume/nfs`).
//!
//! A pod's `nfs: {server, path, readOnly}` volume is mounted at
//! `<root>/pods/<uid>/volumes/kubernetes.io~nfs/<name>` (a 0750 directory) with
//! `mount -t nfs [-o ro] SERVER:PATH DIR` through the [`Mounter`]: by default the system's
//! `mount` program, or the program named by the configuration key `mounterPath` /
//! the flag `--experimental-mounter-path` (see [`super::SystemMounter`]). An IPv6 server is
//! bracketed (`[fd00::1]:/export`). Inline pod volumes have no mount options beyond `ro`.
//!
//! Set-up is idempotent: a directory that `/proc/self/mountinfo` lists as a mount point is
//! reused, never mounted again (this is what makes an agent restart in the middle safe). A
//! failed mount unmounts a half-made mount, removes the mount point and returns the mount
//! program's output (the server's error). Teardown is the manager's generic unmount (lazy
//! after a timeout on a hung server, with a warning).

use std::net::Ipv6Addr;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use k8s_openapi::api::core::v1::NFSVolumeSource;

use super::mounter::Mounter;
use super::mountinfo::{self, MountPoint};
use super::SetUpError;
use kubenode_fsutil::IoError;

/// The plugin's directory name under `volumes/`.
pub const PLUGIN_DIR: &str = "kubernetes.io~nfs";

/// `server:path`, with an IPv6 server in brackets.
pub fn source(nfs: &NFSVolumeSource) -> String {
    if nfs.server.parse::<Ipv6Addr>().is_ok() {
        format!("[{}]:{}", nfs.server, nfs.path)
    } else {
        format!("{}:{}", nfs.server, nfs.path)
    }
}

/// Mounts the volume at `dir` unless something already is mounted there.
pub(super) fn set_up(
    mounter: &dyn Mounter,
    dir: &Path,
    nfs: &NFSVolumeSource,
    mounts: &[MountPoint],
) -> Result<(), SetUpError> {
    if let Some(m) = mountinfo::at(mounts, dir) {
        tracing::debug!(dir = %dir.display(), source = %m.source, "nfs volume already mounted; reusing it");
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(IoError::with("creating the mount point", dir))?;
    let options: Vec<String> = if nfs.read_only == Some(true) {
        vec!["ro".into()]
    } else {
        Vec::new()
    };
    let src = source(nfs);
    match mounter.mount(&src, dir, "nfs", &options) {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), source = %src, "mounted nfs volume");
            Ok(())
        }
        Err(e) => {
            // Leave nothing behind: unmount a half-made mount, then remove the mount point.
            let mounted = mounter
                .mount_points()
                .map(|m| mountinfo::at(&m, dir).is_some())
                .unwrap_or(true);
            if mounted {
                if let Err(u) = mounter.unmount(dir) {
                    tracing::warn!(dir = %dir.display(), error = %u, "unmounting a failed nfs mount");
                    return Err(e.into());
                }
            }
            if let Err(r) = std::fs::remove_dir(dir) {
                tracing::warn!(dir = %dir.display(), error = %r, "removing the mount point of a failed nfs mount");
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::testing::{Call, RecordingMounter};
    use std::os::unix::fs::PermissionsExt;

    fn vol(server: &str, read_only: Option<bool>) -> NFSVolumeSource {
        NFSVolumeSource {
            server: server.into(),
            path: "/exports/data".into(),
            read_only,
        }
    }

    #[test]
    fn mounts_server_path_with_ro_and_a_0750_mount_point() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp
            .path()
            .join("pods/u/volumes")
            .join(PLUGIN_DIR)
            .join("data");
        let m = RecordingMounter::new();
        set_up(&m, &dir, &vol("10.0.0.5", Some(true)), &[]).unwrap();
        assert_eq!(
            m.calls(),
            vec![Call::Mount {
                source: "10.0.0.5:/exports/data".into(),
                target: dir.clone(),
                fstype: "nfs".into(),
                options: vec!["ro".into()],
            }]
        );
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode & !0o022, 0o750 & !0o022);
        assert!(mode & 0o007 == 0, "mount point open to others: {mode:o}");
    }

    #[test]
    fn read_write_has_no_options_and_ipv6_is_bracketed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("v");
        let m = RecordingMounter::new();
        set_up(&m, &dir, &vol("fd00::5", None), &[]).unwrap();
        match &m.calls()[0] {
            Call::Mount {
                source, options, ..
            } => {
                assert_eq!(source, "[fd00::5]:/exports/data");
                assert!(options.is_empty());
            }
            other => panic!("unexpected call {other:?}"),
        }
    }

    #[test]
    fn an_existing_mount_is_reused_not_mounted_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("v");
        let m = RecordingMounter::new();
        m.add_mount("10.0.0.5:/exports/data", &dir, "nfs4");
        let table = m.mount_points().unwrap();
        set_up(&m, &dir, &vol("10.0.0.5", None), &table).unwrap();
        assert!(m.calls().is_empty());
    }

    #[test]
    fn a_failed_mount_leaves_no_mount_point_and_reports_the_server() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("v");
        let m = RecordingMounter::new();
        m.fail_mounts(
            Some("mount.nfs: access denied by server while mounting 10.0.0.5:/exports/data"),
            true,
        );
        let e = set_up(&m, &dir, &vol("10.0.0.5", None), &[]).unwrap_err();
        assert!(e.to_string().contains("access denied by server"), "{e}");
        assert!(!dir.exists(), "the mount point was left behind");
        assert_eq!(m.calls().last(), Some(&Call::Unmount(dir.clone())));
        assert!(m.mount_points().unwrap().is_empty());
    }
}

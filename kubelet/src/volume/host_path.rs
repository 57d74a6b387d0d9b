//! The `hostPath` volume plugin (upstream `pkg/volume/hostpath`): no mount of its own, the host
//! path itself is the bind source; set-up is the `type` check (and creation for the
//! `...OrCreate` types), with upstream's texts:
//!
//! | type | check |
//! |---|---|
//! | `""` (unset) | none |
//! | `DirectoryOrCreate` | missing: `mkdir -p` with mode 0755; then must be a directory |
//! | `Directory` | must be a directory |
//! | `FileOrCreate` | missing: created empty with mode 0644 (the parent must exist); else `File` |
//! | `File` | must exist and not be a directory |
//! | `Socket`, `CharDevice`, `BlockDevice` | must be one |
//!
//! A path with a `..` element is refused here as well as in validation.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use k8s_openapi::api::core::v1::HostPathVolumeSource;

use super::SetUpError;
use kubenode_fsutil::IoError;

/// The eight `type` values (the empty string is "no check").
pub const TYPES: [&str; 8] = [
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];

fn fail(path: &str, problem: &'static str) -> SetUpError {
    SetUpError::HostPathType {
        path: path.into(),
        problem,
    }
}

/// Checks (and for the `...OrCreate` types creates) the host path.
pub(super) fn set_up(source: &HostPathVolumeSource) -> Result<(), SetUpError> {
    let path = source.path.as_str();
    if crate::validation::has_backsteps(path) {
        return Err(fail(path, "must not contain '..'"));
    }
    let kind = source.type_.as_deref().unwrap_or("");
    let meta = std::fs::metadata(path).ok();
    let ft = meta.as_ref().map(|m| m.file_type());
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" | "Directory" => {
            if kind == "DirectoryOrCreate" && ft.is_none() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(path)
                    .map_err(IoError::with("creating the hostPath directory", path))?;
                tracing::info!(path, "created hostPath directory");
                return Ok(());
            }
            if ft.is_some_and(|t| t.is_dir()) {
                Ok(())
            } else {
                Err(fail(path, "is not a directory"))
            }
        }
        "FileOrCreate" | "File" => {
            if kind == "FileOrCreate" && ft.is_none() {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(Path::new(path))
                    .map_err(IoError::with("creating the hostPath file", path))?;
                tracing::info!(path, "created hostPath file");
                return Ok(());
            }
            if ft.is_some_and(|t| !t.is_dir()) {
                Ok(())
            } else {
                Err(fail(path, "is not a file"))
            }
        }
        "Socket" if ft.is_some_and(|t| t.is_socket()) => Ok(()),
        "Socket" => Err(fail(path, "is not a socket file")),
        "CharDevice" if ft.is_some_and(|t| t.is_char_device()) => Ok(()),
        "CharDevice" => Err(fail(path, "is not a character device")),
        "BlockDevice" if ft.is_some_and(|t| t.is_block_device()) => Ok(()),
        "BlockDevice" => Err(fail(path, "is not a block device")),
        other => Err(SetUpError::InvalidHostPathType(other.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn check(path: &Path, kind: &str) -> Result<(), String> {
        set_up(&HostPathVolumeSource {
            path: path.display().to_string(),
            type_: Some(kind.into()),
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn every_type_accepts_its_kind_and_names_the_path_otherwise() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let sock = tmp.path().join("s");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let missing = tmp.path().join("missing");
        let null = Path::new("/dev/null");

        assert_eq!(check(&missing, ""), Ok(()));
        assert_eq!(check(&dir, "Directory"), Ok(()));
        assert_eq!(
            check(&file, "Directory"),
            Err(format!(
                "hostPath type check failed: {} is not a directory",
                file.display()
            ))
        );
        assert_eq!(check(&file, "File"), Ok(()));
        assert_eq!(
            check(&sock, "File"),
            Ok(()),
            "upstream's File accepts non-directories"
        );
        assert_eq!(
            check(&dir, "File"),
            Err(format!(
                "hostPath type check failed: {} is not a file",
                dir.display()
            ))
        );
        assert_eq!(
            check(&missing, "File"),
            Err(format!(
                "hostPath type check failed: {} is not a file",
                missing.display()
            ))
        );
        assert_eq!(check(&sock, "Socket"), Ok(()));
        assert_eq!(
            check(&file, "Socket"),
            Err(format!(
                "hostPath type check failed: {} is not a socket file",
                file.display()
            ))
        );
        assert_eq!(check(null, "CharDevice"), Ok(()));
        assert_eq!(
            check(&file, "CharDevice"),
            Err(format!(
                "hostPath type check failed: {} is not a character device",
                file.display()
            ))
        );
        assert_eq!(
            check(null, "BlockDevice"),
            Err("hostPath type check failed: /dev/null is not a block device".into())
        );
        assert_eq!(
            check(&dir, "Fifo"),
            Err("Fifo is an invalid volume type".into())
        );
        assert!(!missing.exists(), "a check created something");
    }

    #[test]
    fn or_create_types_create_with_upstream_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/c");
        assert_eq!(check(&dir, "DirectoryOrCreate"), Ok(()));
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755 & !current_umask());
        assert_eq!(check(&dir, "DirectoryOrCreate"), Ok(()));

        let file = tmp.path().join("a/new-file");
        assert_eq!(check(&file, "FileOrCreate"), Ok(()));
        let meta = std::fs::metadata(&file).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o644 & !current_umask());
        // The parent must exist for FileOrCreate.
        let orphan = tmp.path().join("no/such/parent/f");
        let e = check(&orphan, "FileOrCreate").unwrap_err();
        assert!(e.starts_with("creating the hostPath file"), "{e}");
        // An existing directory is not a file.
        assert!(check(&dir, "FileOrCreate")
            .unwrap_err()
            .contains("is not a file"));
        // An existing file is not a directory.
        assert!(check(&file, "DirectoryOrCreate")
            .unwrap_err()
            .contains("is not a directory"));
    }

    #[test]
    fn backsteps_are_refused() {
        let e = check(Path::new("/tmp/../etc"), "").unwrap_err();
        assert!(e.contains("must not contain '..'"), "{e}");
    }

    fn current_umask() -> u32 {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("probe");
        std::fs::DirBuilder::new().mode(0o777).create(&p).unwrap();
        0o777 & !(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777)
    }
}

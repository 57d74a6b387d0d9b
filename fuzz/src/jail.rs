//! A private root for the tar target, so that "nothing is created outside the directory
//! unpacked into" can be checked over everything an unpack could reach.
//!
//! As root (where the target runs in CI), [`Jail::enter`] moves the fuzzing process into a
//! mount namespace of its own, mounts a tmpfs over `/mnt` (in that namespace only: the host's
//! `/mnt` is untouched and nothing is left behind), binds `/dev`, `/proc` and this crate's
//! directory (where libFuzzer writes its corpus and artifacts) into it, and `chroot`s there.
//! Every path an unpack can name, `../..` climbs and absolute symlink targets included, then
//! lands inside the tmpfs, and [`Jail::check_confined`] walks all of it. Without root it falls
//! back to a temporary directory and checks that directory only (a `..` escape is still seen,
//! an absolute one is not), and says so once.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where the unpacks happen, inside the root.
const WORK: &str = "kn-unpack";
/// Scratch files (the archive to extract), inside the root.
const SCRATCH: &str = "kn-scratch";

/// The private root and what in it is not the unpacks' own.
#[derive(Debug)]
pub struct Jail {
    /// The root to walk: `/` once chrooted, else the temporary directory.
    root: PathBuf,
    /// Mount points bound in from the host: neither walked nor judged (their ancestors are
    /// expected directories).
    mounts: Vec<PathBuf>,
    /// The temporary directory of the fallback (removed on drop).
    _tmp: Option<tempfile::TempDir>,
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("a path without NUL")
}

fn check(rc: libc::c_int, what: &str) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let e = std::io::Error::last_os_error();
        Err(std::io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

fn bind(source: &Path, target: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(target)?;
    // SAFETY: both strings are NUL-terminated and live across the call; the other arguments
    // may be null for a bind mount.
    let rc = unsafe {
        libc::mount(
            cstr(source).as_ptr(),
            cstr(target).as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    check(rc, &format!("binding {}", source.display()))
}

impl Jail {
    /// Enters the private root (as root), or makes the fallback directory.
    pub fn enter() -> Jail {
        match Self::chroot() {
            Ok(jail) => jail,
            Err(e) => {
                eprintln!(
                    "kubenode-fuzz: no private root ({e}); checking escapes within a temporary \
                     directory only (run as root for the whole check)"
                );
                let tmp = tempfile::tempdir().expect("a temporary directory");
                Jail {
                    root: tmp.path().to_path_buf(),
                    mounts: Vec::new(),
                    _tmp: Some(tmp),
                }
            }
        }
    }

    fn chroot() -> std::io::Result<Jail> {
        // SAFETY: plain system calls on this process; the fuzz target runs one thread.
        unsafe {
            if libc::geteuid() != 0 {
                return Err(std::io::Error::other("not root"));
            }
            check(libc::unshare(libc::CLONE_NEWNS), "unshare(CLONE_NEWNS)")?;
            check(
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ),
                "making mounts private",
            )?;
            check(
                libc::mount(
                    c"kn-fuzz".as_ptr(),
                    c"/mnt".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    c"mode=0755".as_ptr().cast(),
                ),
                "mounting a tmpfs on /mnt",
            )?;
        }
        let new_root = Path::new("/mnt");
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut mounts = Vec::new();
        for host in [Path::new("/dev"), Path::new("/proc"), crate_dir] {
            bind(host, &new_root.join(host.strip_prefix("/").unwrap_or(host)))?;
            mounts.push(host.to_path_buf());
        }
        let cwd = std::env::current_dir()?;
        // SAFETY: a NUL-terminated path living across the call.
        check(unsafe { libc::chroot(c"/mnt".as_ptr()) }, "chroot")?;
        if std::env::set_current_dir(&cwd).is_err() {
            std::env::set_current_dir("/")?;
        }
        Ok(Jail {
            root: PathBuf::from("/"),
            mounts,
            _tmp: None,
        })
    }

    /// A new, empty directory to unpack into.
    pub fn fresh_dir(&self, name: &str) -> PathBuf {
        let dir = self.root.join(WORK).join(name);
        std::fs::create_dir_all(&dir).expect("creating the unpack directory");
        dir
    }

    /// Writes `data` to a scratch file and returns its path.
    pub fn scratch_file(&self, name: &str, data: &[u8]) -> PathBuf {
        let dir = self.root.join(SCRATCH);
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        let file = dir.join(name);
        std::fs::write(&file, data).expect("writing the scratch file");
        file
    }

    /// Removes what the unpacks made.
    pub fn clear(&self) {
        for d in [WORK, SCRATCH] {
            let path = self.root.join(d);
            if let Err(e) = std::fs::remove_dir_all(&path) {
                assert!(
                    e.kind() == std::io::ErrorKind::NotFound,
                    "removing {}: {e}",
                    path.display()
                );
            }
        }
    }

    /// Panics when anything exists in the root outside `dest` (the directory unpacked into, and
    /// its parent), the scratch files and the bound mounts: something an unpack escaped to.
    pub fn check_confined(&self, dest: &Path, what: &str) {
        let mut escaped = Vec::new();
        self.walk(&self.root, dest, &mut escaped);
        assert!(
            escaped.is_empty(),
            "{what} created {escaped:?} outside {}",
            dest.display()
        );
    }

    fn walk(&self, dir: &Path, dest: &Path, escaped: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.starts_with(dest)
                || self.mounts.iter().any(|m| m == &path)
                || path.starts_with(self.root.join(SCRATCH))
            {
                continue;
            }
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            // The unpack directory's ancestors and the mounts' ancestors are expected: walk
            // them; anything else is an escape.
            let ancestor = is_dir
                && (dest.starts_with(&path) || self.mounts.iter().any(|m| m.starts_with(&path)));
            if ancestor {
                self.walk(&path, dest, escaped);
            } else {
                escaped.push(path);
            }
        }
    }
}

//! Reading files that someone else controls: a path inside a container's rootfs or a volume,
//! or a host file a container can write into (its termination log, its container log).
//!
//! One rule for every such read:
//! - a path inside a root resolves *inside* that root: `openat2(RESOLVE_IN_ROOT |
//!   RESOLVE_NO_MAGICLINKS)`, so an absolute symlink or `..` stays in the root as it would for
//!   the container itself (`/etc/passwd -> ../../etc/shadow` reads the image's own file, never
//!   the host's); on a kernel without `openat2` (ENOSYS) the same resolution is done one
//!   component at a time with `O_PATH | O_NOFOLLOW`;
//! - the file is opened `O_PATH` first and checked with `fstat`: only a regular file is ever
//!   opened for reading (a FIFO would block, a device such as `/dev/zero` never ends, and
//!   opening some devices has side effects), then it is reopened for reading through
//!   `/proc/self/fd`, `O_NONBLOCK`, so the object read is the object checked;
//! - every read is size-capped by the caller: a whole file refuses to be larger than the cap,
//!   a tail read takes at most the cap from the end.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use kubenode_fsutil::IoError;
use nix::errno::Errno;
use nix::fcntl::{open, openat, openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};

/// Linux's limit on symlinks followed in one lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Why a guarded read was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SafeReadError {
    /// The file does not exist (inside its root).
    #[error("{path}: no such file")]
    NotFound {
        /// The file, as the caller named it.
        path: PathBuf,
    },
    /// The path names something other than a regular file.
    #[error("{path} is a {kind}, not a regular file: refused")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is (`FIFO`, `character device`, ...).
        kind: &'static str,
    },
    /// The file is larger than the caller's cap.
    #[error("{path} is {size} bytes, more than the {max}-byte limit: refused")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (or the cap + 1 when it grew while being read).
        size: u64,
        /// The cap.
        max: u64,
    },
    /// Any other failure.
    #[error(transparent)]
    Io(#[from] IoError),
}

impl SafeReadError {
    /// The file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, SafeReadError::NotFound { .. })
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> SafeReadError + 'a {
    move |e| match e {
        Errno::ENOENT => SafeReadError::NotFound { path: path.into() },
        e => IoError::new(what, path, e.into()).into(),
    }
}

fn kind_of(mode: u32) -> Option<&'static str> {
    match SFlag::from_bits_truncate(mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => None,
        SFlag::S_IFDIR => Some("directory"),
        SFlag::S_IFIFO => Some("FIFO"),
        SFlag::S_IFCHR => Some("character device"),
        SFlag::S_IFBLK => Some("block device"),
        SFlag::S_IFSOCK => Some("socket"),
        SFlag::S_IFLNK => Some("symlink"),
        _ => Some("special file"),
    }
}

/// Turns a checked `O_PATH` descriptor into a readable file: `fstat` says regular file, then
/// the same inode is reopened `O_RDONLY | O_NONBLOCK` through its `/proc/self/fd` link.
fn reopen_regular(fd: OwnedFd, path: &Path) -> Result<File, SafeReadError> {
    let st = fstat(fd.as_fd()).map_err(io_err("inspecting", path))?;
    if let Some(kind) = kind_of(st.st_mode) {
        return Err(SafeReadError::NotRegular {
            path: path.into(),
            kind,
        });
    }
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let file = open(
        link.as_str(),
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err("reopening", path))?;
    Ok(File::from(file))
}

/// Opens `path` (absolute or relative, as the container sees it) inside `root` for reading,
/// resolving every symlink and `..` inside `root`; only a regular file is opened.
pub fn open_in_root(root: &Path, path: &Path) -> Result<File, SafeReadError> {
    let shown = root.join(path.strip_prefix("/").unwrap_or(path));
    let root_fd = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err("opening the root", root))?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let rel = relative(path);
    let fd = match openat2(root_fd.as_fd(), rel.as_os_str(), how) {
        Err(Errno::ENOSYS) => walk_in_root(&root_fd, &rel).map_err(io_err("opening", &shown))?,
        other => other.map_err(io_err("opening", &shown))?,
    };
    reopen_regular(fd, &shown)
}

fn relative(path: &Path) -> PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel.to_path_buf()
    }
}

fn parts(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(p) => Some(p.to_owned()),
        Component::ParentDir => Some(OsString::from("..")),
        _ => None,
    })
}

/// The fallback of [`open_in_root`] for kernels without `openat2`: the path is walked one
/// component at a time from `root` with `O_PATH | O_NOFOLLOW`; a symlink's target is spliced
/// into the remaining components (absolute targets restart at `root`), `..` never climbs above
/// `root`, at most [`MAX_SYMLINKS`] links are followed. Answers an `O_PATH` descriptor.
pub(crate) fn walk_in_root(root: &OwnedFd, rel: &Path) -> Result<OwnedFd, Errno> {
    let mut pending: VecDeque<OsString> = parts(rel).collect();
    // The directories from the root down to the current one; empty means "at the root".
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    while let Some(part) = pending.pop_front() {
        if part.as_bytes() == b".." {
            stack.pop();
            continue;
        }
        let next = {
            let cur = stack.last().unwrap_or(root);
            openat(cur.as_fd(), part.as_os_str(), flags, Mode::empty())?
        };
        let st = fstat(next.as_fd())?;
        let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if fmt == SFlag::S_IFLNK {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Errno::ELOOP);
            }
            let target = readlinkat(next.as_fd(), OsStr::new(""))?;
            let target = Path::new(&target);
            if target.is_absolute() {
                stack.clear();
            }
            for p in parts(target).collect::<Vec<_>>().into_iter().rev() {
                pending.push_front(p);
            }
            continue;
        }
        if !pending.is_empty() && fmt != SFlag::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        stack.push(next);
    }
    match stack.pop() {
        Some(fd) => Ok(fd),
        None => openat(root.as_fd(), ".", flags, Mode::empty()),
    }
}

/// Opens a host file that a container may write into (its termination log, its log file):
/// the last component is not followed if it is a symlink, and only a regular file is opened.
pub fn open_regular(path: &Path) -> Result<File, SafeReadError> {
    let fd = open(
        path,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err("opening", path))?;
    reopen_regular(fd, path)
}

/// Reads all of `file`, refusing it when it is (or grows while being read) larger than `max`.
pub fn read_capped(file: &mut File, path: &Path, max: u64) -> Result<Vec<u8>, SafeReadError> {
    let size = file
        .metadata()
        .map_err(IoError::with("inspecting", path))?
        .len();
    if size > max {
        return Err(SafeReadError::TooLarge {
            path: path.into(),
            size,
            max,
        });
    }
    let mut data = Vec::with_capacity(size as usize);
    file.take(max + 1)
        .read_to_end(&mut data)
        .map_err(IoError::with("reading", path))?;
    if data.len() as u64 > max {
        return Err(SafeReadError::TooLarge {
            path: path.into(),
            size: max + 1,
            max,
        });
    }
    Ok(data)
}

/// Reads at most the last `max` bytes of `file` (upstream kubelet's `tail.ReadAtMost`), and
/// whether bytes before them were left out.
pub fn read_tail(file: &mut File, path: &Path, max: u64) -> Result<(Vec<u8>, bool), SafeReadError> {
    let io = |what| IoError::with(what, path);
    let size = file.metadata().map_err(io("inspecting"))?.len();
    let start = size.saturating_sub(max);
    file.seek(SeekFrom::Start(start))
        .map_err(io("seeking in"))?;
    let mut data = Vec::with_capacity(size.min(max) as usize);
    file.take(max)
        .read_to_end(&mut data)
        .map_err(io("reading"))?;
    Ok((data, start > 0))
}

/// [`open_in_root`] then [`read_capped`].
pub fn read_in_root(root: &Path, path: &Path, max: u64) -> Result<Vec<u8>, SafeReadError> {
    let mut f = open_in_root(root, path)?;
    read_capped(&mut f, &root.join(relative(path)), max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root_with_host() -> (tempfile::TempDir, PathBuf) {
        // <tmp>/secret is "the host", <tmp>/root/a/b is the container's root.
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("secret"), "host secret\n").unwrap();
        let root = tmp.path().join("root/a/b");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("secret"), "image's own\n").unwrap();
        (tmp, root)
    }

    fn both(root: &Path, path: &str) -> Vec<Result<Vec<u8>, String>> {
        let via_openat2 = read_in_root(root, Path::new(path), 1 << 20).map_err(|e| e.to_string());
        let root_fd = open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let via_walk = walk_in_root(&root_fd, &relative(Path::new(path)))
            .map_err(io_err("walking", Path::new(path)))
            .and_then(|fd| reopen_regular(fd, Path::new(path)))
            .and_then(|mut f| read_capped(&mut f, Path::new(path), 1 << 20))
            .map_err(|e| e.to_string());
        vec![via_openat2, via_walk]
    }

    #[test]
    fn symlinks_and_dotdot_stay_inside_the_root() {
        let (tmp, root) = root_with_host();
        symlink("../../../secret", root.join("etc/rel")).unwrap();
        symlink("/secret", root.join("etc/abs")).unwrap();
        symlink(tmp.path().join("secret"), root.join("etc/hostabs")).unwrap();
        symlink("loop2", root.join("etc/loop1")).unwrap();
        symlink("loop1", root.join("etc/loop2")).unwrap();
        for path in [
            "/etc/rel",
            "etc/abs",
            "/etc/hostabs/../../secret",
            "/../../../secret",
            "/etc/../../secret",
        ] {
            let got = both(&root, path);
            for r in &got {
                if path == "/etc/hostabs/../../secret" {
                    // the link's target does not exist inside the root
                    assert!(
                        r.as_ref().unwrap_err().contains("no such file"),
                        "{path}: {r:?}"
                    );
                } else {
                    assert_eq!(r.as_deref().unwrap(), b"image's own\n", "{path}");
                }
            }
        }
        for r in both(&root, "/etc/loop1") {
            assert!(r.unwrap_err().contains("symbolic links"), "loop");
        }
        for r in both(&root, "/etc/hostabs") {
            assert!(r.unwrap_err().contains("no such file"));
        }
    }

    #[test]
    fn only_regular_files_are_read() {
        let (_tmp, root) = root_with_host();
        nix::unistd::mkfifo(&root.join("etc/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        symlink("/dev/zero", root.join("etc/zero")).unwrap();
        // A FIFO returns at once with a clear refusal (no open for reading ever happens).
        for r in both(&root, "/etc/fifo") {
            assert!(r.unwrap_err().contains("is a FIFO"));
        }
        for r in both(&root, "/etc") {
            assert!(r.unwrap_err().contains("is a directory"));
        }
        // `/dev/zero` resolves inside the root, where there is none.
        for r in both(&root, "/etc/zero") {
            assert!(r.unwrap_err().contains("no such file"));
        }
        // The host's /dev/zero itself, as a host file: refused.
        let err = open_regular(Path::new("/dev/zero")).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        // open_regular does not follow a final symlink.
        let err = open_regular(&root.join("etc/zero")).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
    }

    #[test]
    fn reads_are_capped() {
        let (_tmp, root) = root_with_host();
        std::fs::write(root.join("etc/big"), vec![b'x'; 5000]).unwrap();
        let err = read_in_root(&root, Path::new("/etc/big"), 4096).unwrap_err();
        assert!(
            matches!(
                err,
                SafeReadError::TooLarge {
                    size: 5000,
                    max: 4096,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            read_in_root(&root, Path::new("/etc/big"), 5000)
                .unwrap()
                .len(),
            5000
        );
        let mut content = vec![b'a'; 1000];
        content.extend(vec![b'b'; 4096]);
        std::fs::write(root.join("etc/log"), &content).unwrap();
        let mut f = open_regular(&root.join("etc/log")).unwrap();
        let (tail, cut) = read_tail(&mut f, Path::new("log"), 4096).unwrap();
        assert_eq!(tail, vec![b'b'; 4096]);
        assert!(cut);
        let mut f = open_regular(&root.join("secret")).unwrap();
        let (tail, cut) = read_tail(&mut f, Path::new("secret"), 4096).unwrap();
        assert_eq!((tail.as_slice(), cut), (&b"image's own\n"[..], false));
    }
}

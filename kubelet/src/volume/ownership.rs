//! `fsGroup` volume ownership: upstream's `SetVolumeOwnership` (`pkg/volume/volume_linux.go`).
//!
//! Every file, directory and symlink of the volume gets the group `fsGroup` (the owner is
//! kept); a directory gets the setgid bit, so what is created in it later inherits the group,
//! and group and owner search permission; a file or directory gets group and owner read and
//! write (`rwMask` 0660), or read only on a read-only volume (`roMask` 0440). Bits are only
//! added, never removed. A symlink's own group is changed (upstream's `Lchown`), its mode is
//! left alone: chmod would follow it to the target. The root directory is changed last, as
//! upstream's `walkDeep` does, so a walk that stops half way is not taken for a finished one.
//!
//! `fsGroupChangePolicy: OnRootMismatch` skips the walk when the root already has the group,
//! the setgid bit and the permissions above (upstream's `skipPermissionChange`); `Always` (the
//! default) walks. Upstream's plugins that manage ownership without honouring the policy
//! (emptyDir, configMap, secret, downwardAPI, projected) pass no policy: always walk.
//!
//! The walk holds a descriptor per directory level and works on names relative to it, never
//! on paths: a container that swaps a directory for a symlink during the walk cannot redirect
//! it outside the volume (a tree deeper than the agent's descriptor limit fails the walk with
//! EMFILE rather than being half done). Upstream's behaviour on failures is kept: a directory that cannot be
//! read or an entry that cannot be inspected fails the walk; a failed chown or chmod is logged
//! and the walk goes on. An entry that vanished during the walk is skipped.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, fchownat, Gid};

use kubenode_fsutil::IoError;

/// Group and owner read and write (upstream `rwMask`).
pub const RW_MASK: u32 = 0o660;
/// Group and owner read (upstream `roMask`), for a read-only volume.
pub const RO_MASK: u32 = 0o440;
/// Group and owner search, added to directories (upstream `execMask`).
pub const EXEC_MASK: u32 = 0o110;
/// The setgid bit, added to directories.
const SETGID: u32 = 0o2000;
/// After this long a walk logs upstream's warning that it is slow (once).
const SLOW_WALK: Duration = Duration::from_secs(30);

/// `fsGroupChangePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChangePolicy {
    /// Walk the whole volume on every set-up (the default).
    #[default]
    Always,
    /// Walk only when the root does not have the group, setgid and permissions yet.
    OnRootMismatch,
}

/// The pod's `fsGroup` with its change policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsGroup {
    /// The group.
    pub gid: u32,
    /// `fsGroupChangePolicy`.
    pub policy: ChangePolicy,
}

impl FsGroup {
    /// The pod's `securityContext.fsGroup` and `fsGroupChangePolicy`; `None` without an
    /// `fsGroup` or with one that is not a group id (validation refuses those).
    pub fn of(pod: &Pod) -> Option<FsGroup> {
        let sc = pod.spec.as_ref()?.security_context.as_ref()?;
        let gid = u32::try_from(sc.fs_group?).ok()?;
        let policy = match sc.fs_group_change_policy.as_deref() {
            Some("OnRootMismatch") => ChangePolicy::OnRootMismatch,
            _ => ChangePolicy::Always,
        };
        Some(FsGroup { gid, policy })
    }
}

/// What a call of [`set_volume_ownership`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changed {
    /// The walk was skipped (`OnRootMismatch` and the root already matched).
    pub skipped: bool,
    /// Entries visited (the root included).
    pub visited: u64,
    /// Entries whose group or mode was changed.
    pub changed: u64,
    /// chown or chmod calls that failed (logged).
    pub failed: u64,
}

/// The mode bits an entry must have: `rwMask` (`roMask` when read-only), plus search and
/// setgid for a directory.
fn required_bits(dir: bool, read_only: bool) -> u32 {
    let base = if read_only { RO_MASK } else { RW_MASK };
    if dir {
        base | EXEC_MASK | SETGID
    } else {
        base
    }
}

/// Whether the volume at `root` needs the walk (upstream `requiresPermissionChange`): its
/// group is not `gid`, it is not a directory, it lacks a required permission bit or setgid,
/// or it cannot be inspected.
pub fn requires_change(root: &Path, gid: u32, read_only: bool) -> bool {
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(path = %root.display(), error = %e, "performing the recursive ownership change because reading the permissions of the volume root failed");
            return true;
        }
    };
    if meta.gid() != gid || !meta.is_dir() {
        return true;
    }
    let need = required_bits(true, read_only);
    meta.permissions().mode() & need != need
}

/// Gives the volume at `root` to `fs_group` (see the module docs). `read_only` selects
/// `roMask`.
pub fn set_volume_ownership(
    root: &Path,
    fs_group: FsGroup,
    read_only: bool,
) -> Result<Changed, IoError> {
    if fs_group.policy == ChangePolicy::OnRootMismatch
        && !requires_change(root, fs_group.gid, read_only)
    {
        tracing::debug!(path = %root.display(), "skipping the permission and ownership change of the volume (OnRootMismatch)");
        return Ok(Changed {
            skipped: true,
            ..Changed::default()
        });
    }
    let mut walk = Walk {
        gid: Gid::from_raw(fs_group.gid),
        read_only,
        root,
        started: Instant::now(),
        warned: false,
        done: Changed::default(),
    };
    walk.run()?;
    tracing::debug!(path = %root.display(), gid = fs_group.gid, visited = walk.done.visited, changed = walk.done.changed, "set the volume's ownership");
    Ok(walk.done)
}

/// One directory being walked: its open descriptor, its stat and the names not visited yet.
struct Frame {
    dir: Dir,
    path: PathBuf,
    stat: FileStat,
    names: Vec<OsString>,
}

struct Walk<'a> {
    gid: Gid,
    read_only: bool,
    root: &'a Path,
    started: Instant,
    warned: bool,
    done: Changed,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> IoError + 'a {
    move |e| IoError::new(what, path, std::io::Error::from(e))
}

fn is(stat: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == kind
}

/// Opens `name` below `parent` as a directory, without following a symlink, and reads its
/// entry names.
fn open_dir(parent: BorrowedFd<'_>, name: &OsString, path: &Path) -> Result<Frame, Errno> {
    let fd = openat(
        parent,
        name.as_os_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let stat = fstat(&fd)?;
    let mut dir = Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsString::from(std::ffi::OsStr::from_bytes(n)));
        }
    }
    Ok(Frame {
        dir,
        path: path.into(),
        stat,
        names,
    })
}

impl Walk<'_> {
    fn run(&mut self) -> Result<(), IoError> {
        let parent = self.root.parent().unwrap_or(Path::new("/"));
        let parent_fd = nix::fcntl::open(
            parent,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io("opening the parent of the volume", parent))?;
        let name: OsString = self
            .root
            .file_name()
            .map(Into::into)
            .unwrap_or_else(|| ".".into());
        let st = fstatat(&parent_fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(io("inspecting the volume", self.root))?;
        if !is(&st, SFlag::S_IFDIR) {
            return self.entry(parent_fd.as_fd(), &name, self.root);
        }
        let root = open_dir(parent_fd.as_fd(), &name, self.root)
            .map_err(io("reading the volume directory", self.root))?;
        let mut stack = vec![root];
        while let Some(top) = stack.last_mut() {
            let Some(name) = top.names.pop() else {
                let frame = stack.pop().expect("a frame");
                self.change_dir(&frame);
                continue;
            };
            let path = top.path.join(&name);
            let st = match fstatat(&top.dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(io("inspecting", &path)(e)),
            };
            if is(&st, SFlag::S_IFDIR) {
                match open_dir(top.dir.as_fd(), &name, &path) {
                    Ok(frame) => stack.push(frame),
                    Err(Errno::ENOENT) => {}
                    // Swapped for something else since the fstatat: change that.
                    Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
                        self.entry(top.dir.as_fd(), &name, &path)?
                    }
                    Err(e) => return Err(io("reading the directory", &path)(e)),
                }
            } else {
                self.entry(top.dir.as_fd(), &name, &path)?;
            }
        }
        Ok(())
    }

    /// Counts the visit and logs upstream's warning once when the walk has been slow.
    fn visit(&mut self) {
        self.done.visited += 1;
        if !self.warned
            && self.done.visited.is_multiple_of(1024)
            && self.started.elapsed() > SLOW_WALK
        {
            self.warned = true;
            tracing::warn!(path = %self.root.display(), "Setting volume ownership for {} and fsGroup set. If the volume has a lot of files then setting volume ownership could be slow, see https://github.com/kubernetes/kubernetes/issues/69699", self.root.display());
        }
    }

    /// Changes a directory through its open descriptor, after its entries.
    fn change_dir(&mut self, frame: &Frame) {
        self.visit();
        let fd = frame.dir.as_fd();
        let mut changed = false;
        if frame.stat.st_gid != self.gid.as_raw() {
            changed = true;
            if let Err(e) = fchown(fd, None, Some(self.gid)) {
                self.failed("chown", &frame.path, e);
            }
        }
        let old = frame.stat.st_mode & 0o7777;
        let new = old | required_bits(true, self.read_only);
        if changed || new != old {
            changed = true;
            if let Err(e) = fchmod(fd, Mode::from_bits_truncate(new)) {
                self.failed("chmod", &frame.path, e);
            }
        }
        if changed {
            self.done.changed += 1;
        }
    }

    /// Changes a non-directory `name` below `dirfd`: its group (a symlink's own), and its mode
    /// unless it is a symlink. Works on an `O_PATH` descriptor of the entry itself, so a
    /// swap for a symlink after the open changes nothing outside.
    fn entry(
        &mut self,
        dirfd: BorrowedFd<'_>,
        name: &OsString,
        path: &Path,
    ) -> Result<(), IoError> {
        let fd = match openat(
            dirfd,
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(io("opening", path)(e)),
        };
        let st = fstat(&fd).map_err(io("inspecting", path))?;
        self.visit();
        let mut changed = false;
        if st.st_gid != self.gid.as_raw() {
            changed = true;
            if let Err(e) = fchownat(&fd, "", None, Some(self.gid), AtFlags::AT_EMPTY_PATH) {
                self.failed("chown", path, e);
            }
        }
        if !is(&st, SFlag::S_IFLNK) {
            // chown cleared set-user-ID (and set-group-ID): the old mode restores them, as
            // upstream's chmod with the mode read before its chown does.
            let old = st.st_mode & 0o7777;
            let new = old | required_bits(is(&st, SFlag::S_IFDIR), self.read_only);
            if changed || new != old {
                changed = true;
                // fchmod does not take an O_PATH descriptor; its /proc link reaches the
                // same inode without resolving the name again.
                let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
                if let Err(e) =
                    std::fs::set_permissions(&link, std::fs::Permissions::from_mode(new))
                {
                    self.failed("chmod", path, e);
                }
            }
        }
        if changed {
            self.done.changed += 1;
        }
        Ok(())
    }

    fn failed(&mut self, op: &str, path: &Path, e: impl std::fmt::Display) {
        self.done.failed += 1;
        tracing::error!(path = %path.display(), error = %e, "{op} failed while setting the volume's ownership");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A group the test may give files to: any as root, else its own.
    fn gid() -> u32 {
        if nix::unistd::Uid::effective().is_root() {
            2000
        } else {
            nix::unistd::Gid::effective().as_raw()
        }
    }

    fn group(policy: ChangePolicy) -> FsGroup {
        FsGroup { gid: gid(), policy }
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn file(path: &Path, mode: u32) {
        std::fs::write(path, "x").unwrap();
        chmod(path, mode);
    }

    fn dir(path: &Path, mode: u32) {
        std::fs::create_dir(path).unwrap();
        chmod(path, mode);
    }

    /// Mode bits and group, not following a symlink.
    fn stat(path: &Path) -> (u32, u32) {
        let m = std::fs::symlink_metadata(path).unwrap();
        (m.mode() & 0o7777, m.gid())
    }

    /// root 0755 { a 0644, x 0700, sub 0700 { b 0600 }, link -> ../outside (0600),
    /// inner -> a }, and `outside` next to root.
    fn tree(tmp: &Path) -> PathBuf {
        let root = tmp.join("vol");
        dir(&root, 0o755);
        file(&root.join("a"), 0o644);
        file(&root.join("x"), 0o700);
        dir(&root.join("sub"), 0o700);
        file(&root.join("sub/b"), 0o600);
        file(&tmp.join("outside"), 0o600);
        symlink("../outside", root.join("link")).unwrap();
        symlink("a", root.join("inner")).unwrap();
        root
    }

    #[test]
    fn the_walk_adds_group_bits_and_setgid_and_leaves_symlink_targets_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tree(tmp.path());
        let outside_before = stat(&tmp.path().join("outside"));
        let g = gid();
        let done = set_volume_ownership(&root, group(ChangePolicy::Always), false).unwrap();
        assert_eq!(stat(&root), (0o2775, g));
        assert_eq!(stat(&root.join("a")), (0o664, g));
        assert_eq!(stat(&root.join("x")), (0o760, g), "no group x on a file");
        assert_eq!(stat(&root.join("sub")), (0o2770, g));
        assert_eq!(stat(&root.join("sub/b")), (0o660, g));
        // A symlink's own group changes (upstream's Lchown), its target is not touched.
        assert_eq!(stat(&root.join("link")).1, g);
        assert_eq!(stat(&tmp.path().join("outside")), outside_before);
        assert_eq!(stat(&root.join("inner")).1, g);
        assert!(!done.skipped);
        assert_eq!(done.visited, 7);
        assert_eq!(done.failed, 0);
        // A second walk finds nothing left to change.
        let again = set_volume_ownership(&root, group(ChangePolicy::Always), false).unwrap();
        assert_eq!((again.visited, again.changed), (7, 0));
    }

    #[test]
    fn a_read_only_volume_gets_ro_mask() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("vol");
        dir(&root, 0o700);
        file(&root.join("f"), 0o600);
        set_volume_ownership(&root, group(ChangePolicy::Always), true).unwrap();
        assert_eq!(stat(&root).0, 0o2750);
        assert_eq!(stat(&root.join("f")).0, 0o640);
    }

    #[test]
    fn set_user_id_survives_the_chown() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("vol");
        dir(&root, 0o755);
        file(&root.join("suid"), 0o4755);
        set_volume_ownership(&root, group(ChangePolicy::Always), false).unwrap();
        assert_eq!(stat(&root.join("suid")), (0o4775, gid()));
    }

    #[test]
    fn on_root_mismatch_skips_a_matching_root_and_walks_otherwise() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("vol");
        dir(&root, 0o755);
        file(&root.join("f"), 0o600);
        let on_mismatch = group(ChangePolicy::OnRootMismatch);
        // The root lacks setgid and group write: walked.
        assert!(requires_change(&root, gid(), false));
        let done = set_volume_ownership(&root, on_mismatch, false).unwrap();
        assert!(!done.skipped);
        assert_eq!(stat(&root.join("f")).0, 0o660);

        // Now the root matches: a file changed since is left as it is.
        chmod(&root.join("f"), 0o600);
        assert!(!requires_change(&root, gid(), false));
        let done = set_volume_ownership(&root, on_mismatch, false).unwrap();
        assert!(done.skipped);
        assert_eq!(done.visited, 0);
        assert_eq!(stat(&root.join("f")).0, 0o600);

        // `Always` walks the same volume.
        set_volume_ownership(&root, group(ChangePolicy::Always), false).unwrap();
        assert_eq!(stat(&root.join("f")).0, 0o660);

        // Each missing bit is a mismatch: setgid, group write, group search.
        for mode in [0o775, 0o2755, 0o2760] {
            chmod(&root, mode);
            assert!(requires_change(&root, gid(), false), "{mode:o}");
        }
        // A superset matches; read-only needs less.
        chmod(&root, 0o2777);
        assert!(!requires_change(&root, gid(), false));
        chmod(&root, 0o2550);
        assert!(!requires_change(&root, gid(), true));
        assert!(requires_change(&root, gid(), false));
        // Another group, a file root or a missing root is a mismatch.
        assert!(requires_change(&root, gid() + 1, false));
        assert!(requires_change(&root.join("f"), gid(), false));
        assert!(requires_change(&tmp.path().join("missing"), gid(), false));
    }

    #[test]
    fn a_root_that_cannot_be_read_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let e = set_volume_ownership(
            &tmp.path().join("missing"),
            group(ChangePolicy::Always),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("inspecting the volume "), "{e}");
    }

    #[test]
    fn fs_group_and_policy_from_the_pod() {
        let pod = |fs_group: Option<i64>, policy: Option<&str>| {
            crate::testing::pod()
                .with_spec(|s| {
                    s.security_context = Some(k8s_openapi::api::core::v1::PodSecurityContext {
                        fs_group,
                        fs_group_change_policy: policy.map(Into::into),
                        ..Default::default()
                    })
                })
                .build()
        };
        assert_eq!(FsGroup::of(&crate::testing::pod().build()), None);
        assert_eq!(FsGroup::of(&pod(None, Some("OnRootMismatch"))), None);
        assert_eq!(FsGroup::of(&pod(Some(-1), None)), None);
        assert_eq!(
            FsGroup::of(&pod(Some(2000), None)),
            Some(FsGroup {
                gid: 2000,
                policy: ChangePolicy::Always
            })
        );
        assert_eq!(
            FsGroup::of(&pod(Some(2000), Some("OnRootMismatch"))).map(|g| g.policy),
            Some(ChangePolicy::OnRootMismatch)
        );
        assert_eq!(
            FsGroup::of(&pod(Some(2000), Some("Always"))).map(|g| g.policy),
            Some(ChangePolicy::Always)
        );
    }
}

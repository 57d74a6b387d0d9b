//! The user and groups a container runs as: `securityContext` first, else the
//! image's `User` (`user`, `uid`, `user:group`, `uid:gid`, ...), names resolved
//! in the container rootfs's `/etc/passwd` and `/etc/group` (containerd's
//! `WithUser`/`WithUserID`/`WithAdditionalGIDs`). The files are read with `host::saferead`:
//! inside the rootfs, regular files only, size-capped; an unreadable one is an error naming it.

use std::path::Path;

use super::SpecError;
use crate::host::saferead::read_in_root;

/// The largest `/etc/passwd` or `/etc/group` read from an image: 1 MiB. runc and containerd
/// set no limit; ours keeps an image from making the agent read without end (a real
/// database of thousands of users is a few hundred KiB).
const MAX_DB_SIZE: u64 = 1 << 20;

/// The resolved identity of a container process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups, the primary one first.
    pub additional_gids: Vec<u32>,
}

/// What the pod and container security contexts say about the user.
#[derive(Debug, Clone, Default)]
pub struct UserRequest<'a> {
    /// `runAsUser` (container wins over pod).
    pub run_as_user: Option<i64>,
    /// `runAsGroup` (container wins over pod).
    pub run_as_group: Option<i64>,
    /// `runAsNonRoot` (container wins over pod).
    pub run_as_non_root: bool,
    /// Pod `supplementalGroups` plus `fsGroup`.
    pub supplemental_groups: Vec<i64>,
    /// `supplementalGroupsPolicy: Strict`: the groups the image's `/etc/group` lists the user
    /// in are not added (upstream's default, `Merge`, adds them).
    pub strict_groups: bool,
    /// The image config's `User`, if any.
    pub image_user: Option<&'a str>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

/// Reads `/etc/<file>` of the image: resolved inside the rootfs, a regular file of at most
/// [`MAX_DB_SIZE`] (see `host::saferead`); a missing file is an empty database.
fn read_db(rootfs: &Path, file: &str) -> Result<Vec<Vec<String>>, SpecError> {
    let path = Path::new("/etc").join(file);
    let data = match read_in_root(rootfs, &path, MAX_DB_SIZE) {
        Ok(data) => data,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => {
            return Err(SpecError::InvalidUser(format!(
                "reading the image's {}: {e}",
                path.display()
            )))
        }
    };
    Ok(String::from_utf8_lossy(&data)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect())
}

fn passwd(rootfs: &Path) -> Result<Vec<PasswdEntry>, SpecError> {
    Ok(read_db(rootfs, "passwd")?
        .into_iter()
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f.first()?.clone(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect())
}

fn to_id(value: i64, what: &'static str) -> Result<u32, SpecError> {
    u32::try_from(value)
        .map_err(|_| SpecError::InvalidUser(format!("{what} {value} is out of range")))
}

/// Resolves the identity against the rootfs at `rootfs`.
pub fn resolve(rootfs: &Path, req: &UserRequest<'_>) -> Result<Identity, SpecError> {
    let users = passwd(rootfs)?;
    let (uid, mut gid, name) = if let Some(uid) = req.run_as_user {
        let uid = to_id(uid, "runAsUser")?;
        let entry = users.iter().find(|u| u.uid == uid);
        (
            uid,
            entry.map_or(0, |e| e.gid),
            entry.map(|e| e.name.clone()),
        )
    } else if let Some(spec) = req.image_user.filter(|s| !s.is_empty()) {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        if req.run_as_non_root && user.parse::<u32>().is_err() {
            return Err(SpecError::InvalidUser(format!(
                "image has non-numeric user ({user}), cannot verify user is non-root"
            )));
        }
        let (uid, gid, name) = match user.parse::<u32>() {
            Ok(uid) => {
                let entry = users.iter().find(|u| u.uid == uid);
                (
                    uid,
                    entry.map_or(0, |e| e.gid),
                    entry.map(|e| e.name.clone()),
                )
            }
            Err(_) => {
                let entry = users.iter().find(|u| u.name == user).ok_or_else(|| {
                    SpecError::InvalidUser(format!(
                        "unable to find user {user}: no matching entries in passwd file"
                    ))
                })?;
                (entry.uid, entry.gid, Some(entry.name.clone()))
            }
        };
        let gid = match group {
            None => gid,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => read_db(rootfs, "group")?
                    .iter()
                    .find(|f| f.first().map(String::as_str) == Some(g))
                    .and_then(|f| f.get(2)?.parse().ok())
                    .ok_or_else(|| {
                        SpecError::InvalidUser(format!(
                            "unable to find group {g}: no matching entries in group file"
                        ))
                    })?,
            },
        };
        (uid, gid, name)
    } else {
        let entry = users.iter().find(|u| u.uid == 0);
        (0, entry.map_or(0, |e| e.gid), entry.map(|e| e.name.clone()))
    };
    if let Some(g) = req.run_as_group {
        gid = to_id(g, "runAsGroup")?;
    }
    if req.run_as_non_root && uid == 0 {
        return Err(SpecError::InvalidUser(
            "container has runAsNonRoot and image will run as root".into(),
        ));
    }
    let mut additional_gids = vec![gid];
    if let Some(name) = name.filter(|_| !req.strict_groups) {
        for f in read_db(rootfs, "group")? {
            let members = f.get(3).map(String::as_str).unwrap_or("");
            if members.split(',').any(|m| m == name) {
                if let Some(g) = f.get(2).and_then(|g| g.parse::<u32>().ok()) {
                    additional_gids.push(g);
                }
            }
        }
    }
    for g in &req.supplemental_groups {
        additional_gids.push(to_id(*g, "supplementalGroups")?);
    }
    let mut seen = std::collections::HashSet::new();
    additional_gids.retain(|g| seen.insert(*g));
    Ok(Identity {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34::/var/www:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nwww:x:34:\nweb:x:50:www,other\n# c\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn image_user_forms() {
        let dir = rootfs();
        let r = |u: &str| {
            resolve(
                dir.path(),
                &UserRequest {
                    image_user: Some(u),
                    ..Default::default()
                },
            )
        };
        assert_eq!(
            r("www").unwrap(),
            Identity {
                uid: 33,
                gid: 34,
                additional_gids: vec![34, 50]
            }
        );
        assert_eq!(r("33").unwrap().gid, 34);
        assert_eq!(
            r("1000").unwrap(),
            Identity {
                uid: 1000,
                gid: 0,
                additional_gids: vec![0]
            }
        );
        assert_eq!(r("www:web").unwrap().gid, 50);
        assert_eq!(r("1000:7").unwrap().gid, 7);
        assert!(r("nobody")
            .unwrap_err()
            .to_string()
            .contains("unable to find user nobody"));
        assert!(r("www:nogroup").is_err());
    }

    /// `supplementalGroupsPolicy: Strict` leaves out the image's `/etc/group` memberships
    /// and keeps the primary group and the pod's own groups, as upstream's runtimes do.
    #[test]
    fn strict_groups_leave_out_the_images_group_file() {
        let dir = rootfs();
        let req = |strict_groups| UserRequest {
            image_user: Some("www"),
            supplemental_groups: vec![2000],
            strict_groups,
            ..Default::default()
        };
        assert_eq!(
            resolve(dir.path(), &req(false)).unwrap().additional_gids,
            [34, 50, 2000]
        );
        assert_eq!(
            resolve(dir.path(), &req(true)).unwrap().additional_gids,
            [34, 2000]
        );
    }

    #[test]
    fn security_context_wins_and_non_root_is_checked() {
        let dir = rootfs();
        let req = UserRequest {
            run_as_user: Some(33),
            run_as_group: Some(99),
            supplemental_groups: vec![5, 99],
            image_user: Some("root"),
            ..Default::default()
        };
        assert_eq!(
            resolve(dir.path(), &req).unwrap(),
            Identity {
                uid: 33,
                gid: 99,
                additional_gids: vec![99, 50, 5]
            }
        );
        let root = UserRequest {
            run_as_non_root: true,
            ..Default::default()
        };
        assert!(resolve(dir.path(), &root).is_err());
        let named = UserRequest {
            run_as_non_root: true,
            image_user: Some("www"),
            ..Default::default()
        };
        assert!(resolve(dir.path(), &named)
            .unwrap_err()
            .to_string()
            .contains("non-numeric"));
        assert!(resolve(
            dir.path(),
            &UserRequest {
                run_as_user: Some(-1),
                ..Default::default()
            }
        )
        .is_err());
    }

    /// The image's `/etc/passwd` resolves inside the rootfs: a symlink climbing out with `..`
    /// (or an absolute one) never reads the host's file.
    #[test]
    fn passwd_symlink_does_not_read_the_host() {
        let tmp = tempfile::tempdir().unwrap();
        // <tmp>/host/passwd plays the host's file; the rootfs is <tmp>/r/f.
        std::fs::create_dir_all(tmp.path().join("host")).unwrap();
        std::fs::write(
            tmp.path().join("host/passwd"),
            "root:x:0:0::/:/bin/sh\nhostonly:x:4242:4242::/:/bin/sh\n",
        )
        .unwrap();
        let root = tmp.path().join("r/f");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("../../../host/passwd", root.join("etc/passwd")).unwrap();
        let req = UserRequest {
            image_user: Some("hostonly"),
            ..Default::default()
        };
        let err = resolve(&root, &req).unwrap_err().to_string();
        assert!(err.contains("unable to find user hostonly"), "{err}");
        // `../../etc/passwd` from /etc is /etc/passwd itself inside the root: a loop, refused.
        fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", root.join("etc/passwd")).unwrap();
        let err = resolve(&root, &req).unwrap_err().to_string();
        assert!(err.contains("symbolic links"), "{err}");
    }

    /// A FIFO or a device as `/etc/passwd` is refused at once with a clear error, without
    /// blocking and without reading it.
    #[test]
    fn passwd_fifo_or_device_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let root = dir.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(resolve(&root, &UserRequest::default()).map_err(|e| e.to_string()));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("resolving the user blocked on a FIFO /etc/passwd");
        let err = got.unwrap_err();
        assert!(err.contains("/etc/passwd is a FIFO"), "{err}");
    }

    /// A passwd file larger than the cap is refused (not read whole).
    #[test]
    fn oversized_passwd_is_refused() {
        let dir = rootfs();
        let mut big = b"root:x:0:0::/:/bin/sh\n".to_vec();
        big.resize(MAX_DB_SIZE as usize + 1, b'#');
        fs::write(dir.path().join("etc/passwd"), big).unwrap();
        let err = resolve(dir.path(), &UserRequest::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than the 1048576-byte limit"), "{err}");
    }
}

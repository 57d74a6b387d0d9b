//! Reading `/proc/self/mountinfo`: the kernel's word on what is mounted where. The volume
//! manager trusts it over its own memory, so that an agent restarted in the middle of a setup
//! or a teardown finds the mounts it made and reuses (or removes) them instead of mounting
//! twice.

use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    /// Where it is mounted (octal escapes decoded).
    pub target: PathBuf,
    /// The filesystem type (`tmpfs`, `nfs`, `nfs4`, `ext4`, ...).
    pub fstype: String,
    /// The mount source (`server:/export`, `tmpfs`, a device).
    pub source: String,
    /// Per-mount options (`rw,nosuid,...`).
    pub options: String,
    /// The optional fields: propagation (`shared:1`, `master:2`, `unbindable`), space-separated.
    pub propagation: String,
}

impl MountPoint {
    /// A shared mount (`shared:N`).
    pub fn is_shared(&self) -> bool {
        self.propagation
            .split(' ')
            .any(|f| f.starts_with("shared:"))
    }

    /// A slave mount (`master:N`).
    pub fn is_slave(&self) -> bool {
        self.propagation
            .split(' ')
            .any(|f| f.starts_with("master:"))
    }
}

/// Decodes the `\040`-style octal escapes the kernel writes for space, tab, newline and `\`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of a mountinfo file; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountPoint> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            Some(MountPoint {
                target: PathBuf::from(unescape(left.get(4)?)),
                options: left.get(5)?.to_string(),
                fstype: right.first()?.to_string(),
                source: unescape(right.get(1)?),
                propagation: left.get(6..).map(|f| f.join(" ")).unwrap_or_default(),
            })
        })
        .collect()
}

/// Reads and parses `/proc/self/mountinfo`.
pub fn read() -> std::io::Result<Vec<MountPoint>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// The mounts at or below `dir`, deepest first (the order to unmount them in).
pub fn under<'a>(mounts: &'a [MountPoint], dir: &Path) -> Vec<&'a MountPoint> {
    let mut found: Vec<&MountPoint> = mounts
        .iter()
        .filter(|m| m.target.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.target.components().count()));
    found.dedup_by(|a, b| a.target == b.target);
    found
}

/// The mount `path` lives on: the one with the longest mount point that is a prefix of it
/// (the latest such line when several are stacked).
pub fn containing<'a>(mounts: &'a [MountPoint], path: &Path) -> Option<&'a MountPoint> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| path.starts_with(&m.target))
        .max_by_key(|(i, m)| (m.target.components().count(), *i))
        .map(|(_, m)| m)
}

/// The topmost mount exactly at `dir`, if any (the last line wins: it is the latest mount).
pub fn at<'a>(mounts: &'a [MountPoint], dir: &Path) -> Option<&'a MountPoint> {
    mounts.iter().rev().find(|m| m.target == dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
98 22 0:50 / /var/lib/kubenode/pods/u1/volumes/kubernetes.io~empty-dir/cache rw,relatime - tmpfs tmpfs rw,size=65536k
99 22 0:51 / /var/lib/kubenode/pods/u1/volumes/kubernetes.io~nfs/my\\040data rw,relatime - nfs4 10.0.0.5:/exports/a rw,vers=4.2
100 22 8:1 /srv/x /var/lib/kubenode/pods/u1/volume-subpaths/cache/app/0 rw,relatime - ext4 /dev/sda1 rw
";

    #[test]
    fn parses_targets_types_and_sources() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].fstype, "tmpfs");
        assert_eq!(m[1].options, "rw,relatime");
        assert_eq!(
            m[2].target,
            Path::new("/var/lib/kubenode/pods/u1/volumes/kubernetes.io~nfs/my data")
        );
        assert_eq!(m[2].source, "10.0.0.5:/exports/a");
        assert_eq!(m[2].fstype, "nfs4");
        assert!(m[0].is_shared() && !m[0].is_slave());
        assert!(!m[1].is_shared() && m[1].propagation.is_empty());
        let path = Path::new("/var/lib/kubenode/pods/u1/volumes/kubernetes.io~empty-dir/cache/f");
        assert_eq!(
            containing(&m, path).map(|m| m.fstype.as_str()),
            Some("tmpfs")
        );
        assert_eq!(
            containing(&m, Path::new("/srv")).map(|m| m.target.as_path()),
            Some(Path::new("/"))
        );
    }

    #[test]
    fn under_lists_deepest_first_and_at_finds_exact() {
        let m = parse(SAMPLE);
        let u = under(&m, Path::new("/var/lib/kubenode/pods/u1"));
        assert_eq!(u.len(), 3);
        assert!(u[0].target.ends_with("volume-subpaths/cache/app/0"));
        assert!(under(&m, Path::new("/var/lib/kubenode/pods/u2")).is_empty());
        assert!(at(&m, Path::new("/var/lib/kubenode/pods/u1/volumes")).is_none());
        assert_eq!(
            at(&m, Path::new("/")).map(|m| m.fstype.as_str()),
            Some("ext4")
        );
    }

    #[test]
    fn unescape_keeps_plain_backslashes() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("a\\b"), "a\\b");
        assert_eq!(unescape("end\\"), "end\\");
    }
}

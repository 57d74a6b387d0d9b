//! Default mounts, masked/read-only paths and capabilities of a container
//! (containerd `populateDefaultUnixSpec` + the kubelet's masked/readonly lists).

use oci_spec::runtime::{Capability, Mount, MountBuilder};

use super::{BindMount, Propagation, SpecError};

/// containerd's (Docker's) 14 default capabilities.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The kubelet's default masked paths (`ConvertToRuntimeMaskedPaths`, Kubernetes 1.32's
/// `pkg/securitycontext/util.go`: the same set as containerd's default spec). A container
/// with `procMount: Unmasked` gets none of them, nor the read-only ones.
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The kubelet's default read-only paths (`ConvertToRuntimeReadonlyPaths`).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Every capability runc 1.1 knows (for `privileged` and `add: [ALL]`).
pub const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(SpecError::Oci)
}

/// The default mounts: proc, dev, pts, shm, mqueue, sysfs and cgroup.
/// `sys_rw` (privileged) leaves sysfs and cgroup writable.
pub fn default_mounts(sys_rw: bool) -> Result<Vec<Mount>, SpecError> {
    let ro = if sys_rw { "rw" } else { "ro" };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", ro])?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", ro],
        )?,
    ])
}

/// A bind mount of a host path into the container.
pub fn bind(
    dest: &str,
    source: &std::path::Path,
    readonly: bool,
    propagation: Propagation,
) -> Result<Mount, SpecError> {
    let mut options = vec!["rbind", propagation.option()];
    options.push(if readonly { "ro" } else { "rw" });
    MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(options.into_iter().map(String::from).collect::<Vec<_>>())
        .build()
        .map_err(SpecError::Oci)
}

/// `linux.rootfsPropagation` for these mounts (containerd's CRI): `rshared` when one is
/// Bidirectional, `rslave` when one is HostToContainer, else unset (runc's default).
pub fn rootfs_propagation(mounts: &[BindMount]) -> Option<&'static str> {
    if mounts
        .iter()
        .any(|m| m.propagation == Propagation::Bidirectional)
    {
        Some("rshared")
    } else if mounts
        .iter()
        .any(|m| m.propagation == Propagation::HostToContainer)
    {
        Some("rslave")
    } else {
        None
    }
}

fn normalize(cap: &str) -> String {
    let upper = cap.to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// Every capability whose bit is set in `allowed` (the agent's own set).
fn all_allowed(allowed: u64) -> Vec<String> {
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| allowed & (1u64 << bit) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// The capability set: the defaults (or, when privileged, every capability
/// the agent itself has: `allowed`, one bit per capability number) plus
/// `add`, minus `drop`; `ALL` works in both lists like in containerd.
pub fn capabilities(
    allowed: u64,
    privileged: bool,
    add: &[String],
    drop: &[String],
) -> Result<Vec<Capability>, SpecError> {
    let mut caps: Vec<String> = if privileged {
        all_allowed(allowed)
    } else {
        DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect()
    };
    if !privileged {
        if add.iter().any(|c| c.eq_ignore_ascii_case("ALL")) {
            caps = all_allowed(allowed);
        } else {
            for c in add.iter().map(|c| normalize(c)) {
                if !caps.contains(&c) {
                    caps.push(c);
                }
            }
        }
        if drop.iter().any(|c| c.eq_ignore_ascii_case("ALL")) {
            caps.clear();
            // Explicitly added capabilities survive `drop: [ALL]`.
            for c in add
                .iter()
                .filter(|c| !c.eq_ignore_ascii_case("ALL"))
                .map(|c| normalize(c))
            {
                caps.push(c);
            }
        } else {
            let drop: Vec<String> = drop.iter().map(|c| normalize(c)).collect();
            caps.retain(|c| !drop.contains(c));
        }
    }
    caps.iter()
        .map(|c| {
            serde_json::from_value::<Capability>(serde_json::Value::String(c.clone()))
                .map_err(|_| SpecError::Capability(c.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_add_drop() {
        assert_eq!(capabilities(u64::MAX, false, &[], &[]).unwrap().len(), 14);
        let c = capabilities(
            u64::MAX,
            false,
            &["NET_ADMIN".into()],
            &["net_raw".into(), "CAP_KILL".into()],
        )
        .unwrap();
        assert_eq!(c.len(), 13);
        assert!(c.contains(&Capability::NetAdmin) && !c.contains(&Capability::NetRaw));
        let c = capabilities(u64::MAX, false, &["CHOWN".into()], &["ALL".into()]).unwrap();
        assert_eq!(c, vec![Capability::Chown]);
        assert_eq!(
            capabilities(u64::MAX, true, &[], &["ALL".into()])
                .unwrap()
                .len(),
            41
        );
        assert!(capabilities(u64::MAX, false, &["BOGUS".into()], &[]).is_err());
        // Privileged gets only what the agent has (here: no CAP_SYS_RESOURCE, bit 24).
        let without = capabilities(!(1u64 << 24), true, &[], &[]).unwrap();
        assert_eq!(without.len(), 40);
        assert!(!without.contains(&Capability::SysResource));
    }
}

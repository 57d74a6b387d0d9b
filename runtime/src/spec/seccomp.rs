//! The seccomp filter of a pod container (`linux.seccomp`), as containerd's CRI plugin sets it:
//! none for `Unconfined` and for privileged containers, containerd's default profile for
//! `RuntimeDefault`, and a profile file in the OCI format for `Localhost`.
//!
//! The default profile is containerd's `DefaultProfile` (`contrib/seccomp/seccomp_default.go`),
//! kept here as data: an allow list with `SCMP_ACT_ERRNO` as the default action and no
//! `defaultErrnoRet` (runc returns EPERM for it), the architectures of the machine (`x86_64`
//! also filters the i386 and x32 ABIs, `aarch64` also arm), argument rules (`personality` only
//! with the values glibc uses, `socket` for every address family but `AF_ALG` and `AF_VSOCK`,
//! `clone` only without namespace flags unless `CAP_SYS_ADMIN`, and `clone3` answering ENOSYS
//! so libc falls back to `clone`), and syscall groups allowed only when the container's
//! bounding set holds the capability that guards them, in the bounding set's order. Names the
//! host's libseccomp does not know are skipped by runc.
//!
//! The table matches containerd's main branch as of May 2026: the kernel v6.13 / libseccomp
//! v2.6.0 syscalls (containerd PR #11839, in 2.2) and the three `socket` rules that refuse
//! `AF_ALG` as well as `AF_VSOCK` (PR #13327, merged 2026-04-30, CVE-2026-31431), checked name
//! by name against the file just before that PR plus the PR's diff. Older releases, which many
//! nodes run, differ: containerd 2.0 and 2.1 lack the v6.8–v6.13 names (`listmount`,
//! `statmount`, `lsm_*`, `mseal`, `uretprobe`, `riscv_hwprobe`, `*xattrat`), which they refuse
//! with EPERM; 1.7 also still allows `io_uring_*` (removed in 2.0, containerd PR #9320) and
//! refuses only `AF_VSOCK` sockets.
//!
//! Cost: runc 1.1 compiles the profile with libseccomp at every `runc create`, one libseccomp
//! rule per name however the names are grouped. `runtime-bench --seccomp` measured it at about
//! +20 ms per create with runc 1.1.5 and libseccomp 2.5.4 (debug build, loaded 2-core
//! machine), nearly all of it for the i386 and x32 ABIs: the same profile for the native ABI
//! alone costs under 5 ms. Dropping those ABIs is not an option: libseccomp would then kill a
//! 32-bit process instead of filtering it, unlike containerd.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use super::{oci, SpecError};

/// The seccomp profile the kubelet resolved for a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SeccompProfile {
    /// No filter.
    #[default]
    Unconfined,
    /// The runtime's default profile.
    RuntimeDefault,
    /// A profile file on the node (absolute path), in the OCI `linux.seccomp` format.
    Localhost(PathBuf),
}

/// What the kernel and machine a filter is built for offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeccompHost {
    /// The kernel filters syscalls (`Seccomp:` in `/proc/self/status`).
    pub supported: bool,
    /// The kernel's `(major, minor)` version.
    pub kernel: (u32, u32),
    /// The machine (`std::env::consts::ARCH`: `x86_64`, `aarch64`, ...; see [`machine`]).
    pub arch: &'static str,
}

impl SeccompHost {
    /// This machine, read once.
    pub fn current() -> SeccompHost {
        static HOST: std::sync::OnceLock<SeccompHost> = std::sync::OnceLock::new();
        *HOST.get_or_init(|| {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            SeccompHost {
                supported: status.lines().any(|l| l.starts_with("Seccomp:")),
                kernel: kernel_version(&release),
                arch: machine(std::env::consts::ARCH, cfg!(target_endian = "little")),
            }
        })
    }
}

/// The machine's name for [`architectures`] and [`arch_syscalls`]: Rust's `ARCH`, with the
/// little-endian variants containerd tells apart by `GOARCH` (`mipsel64` filters the mipsel
/// ABIs, only `ppc64le` gets the powerpc additions) named `mips64el` and `powerpc64le`.
pub fn machine(arch: &'static str, little_endian: bool) -> &'static str {
    match (arch, little_endian) {
        ("mips64", true) => "mips64el",
        ("powerpc64", true) => "powerpc64le",
        _ => arch,
    }
}

/// `(major, minor)` of a kernel release such as `6.1.0-18-amd64`; `(0, 0)` when unreadable.
pub fn kernel_version(release: &str) -> (u32, u32) {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// `linux.seccomp` for a container: `None` for `Unconfined` and privileged containers (as
/// containerd, whatever the profile); the default profile for `bounding`; or the `Localhost`
/// file, read now. On a kernel without seccomp any profile but `Unconfined` is an error.
pub fn linux_seccomp(
    profile: &SeccompProfile,
    privileged: bool,
    bounding: &[Capability],
    host: &SeccompHost,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if privileged || *profile == SeccompProfile::Unconfined {
        return Ok(None);
    }
    if !host.supported {
        return Err(SpecError::Seccomp("seccomp is not supported".into()));
    }
    match profile {
        SeccompProfile::Unconfined => Ok(None),
        SeccompProfile::RuntimeDefault => default_profile(bounding, host).map(Some),
        SeccompProfile::Localhost(path) => load_profile(path).map(Some),
    }
}

/// Reads a `Localhost` profile: the OCI `linux.seccomp` object, as containerd's `WithProfile`
/// reads it (same messages). Unknown keys are ignored, as Go's decoder does; a rule without
/// `names` or an unknown action is an error rather than a rule silently dropped.
pub fn load_profile(path: &Path) -> Result<LinuxSeccomp, SpecError> {
    let text = std::fs::read(path).map_err(|e| {
        SpecError::Seccomp(format!(
            "cannot load seccomp profile {:?}: {e}",
            path.display().to_string()
        ))
    })?;
    serde_json::from_slice(&text).map_err(|e| {
        SpecError::Seccomp(format!(
            "decoding seccomp profile failed {:?}: {e}",
            path.display().to_string()
        ))
    })
}

/// The syscalls every container may make (containerd's first rule).
// Kept as a dense table to compare with upstream's list.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget",
    "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
    "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat",
    "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
    "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
    "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
    "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2",
    "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr",
    "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex", "futex_requeue", "futex_time64",
    "futex_wait", "futex_waitv", "futex_wake", "futimesat", "getcpu", "getcwd", "getdents",
    "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32",
    "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid",
    "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid",
    "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname",
    "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32", "getxattr",
    "getxattrat", "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
    "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64",
    "ioprio_get", "ioprio_set", "io_setup", "io_submit", "ipc", "kill", "landlock_add_rule",
    "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32", "lgetxattr",
    "link", "linkat", "listen", "listmount", "listxattr", "listxattrat", "llistxattr", "_llseek",
    "lremovexattr", "lseek", "lsetxattr", "lsm_get_self_attr", "lsm_list_modules",
    "lsm_set_self_attr", "lstat", "lstat64", "madvise", "membarrier", "memfd_create",
    "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2",
    "mlockall", "map_shadow_stack", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify",
    "mq_open", "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend",
    "mq_timedsend_time64", "mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv",
    "msgsnd", "msync", "munlock", "munlockall", "munmap", "name_to_handle_at", "nanosleep",
    "newfstatat", "_newselect", "open", "openat", "openat2", "pause", "pidfd_open",
    "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll",
    "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64",
    "process_mrelease", "pselect6", "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read",
    "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom", "recvmmsg",
    "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "removexattrat", "rename",
    "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select",
    "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile",
    "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid",
    "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid",
    "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
    "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr",
    "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd",
    "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat",
    "stat64", "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "truncate64",
    "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",
];

/// `personality(2)` values allowed: `PER_LINUX`, `PER_LINUX32`, `UNAME26`, `PER_LINUX32 |
/// UNAME26`, and the query `0xffffffff`.
const PERSONALITIES: &[u64] = &[0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// `AF_ALG` and `AF_VSOCK`: the two address families `socket(2)` may not create.
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
/// | CLONE_NEWNET`: without `CAP_SYS_ADMIN`, `clone` is allowed only with none of them.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7e02_0000;

/// ENOSYS of this architecture (containerd's `unix.ENOSYS`: 38 on most, 89 on mips).
const ENOSYS: u32 = libc::ENOSYS as u32;

/// The syscalls a capability in the bounding set allows (containerd's `switch` over the
/// bounding set); `None` for the others.
#[rustfmt::skip]
fn capability_syscalls(cap: &Capability) -> Option<&'static [&'static str]> {
    Some(match cap {
        Capability::DacReadSearch => &["open_by_handle_at"],
        Capability::SysAdmin => &[
            "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
            "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree",
            "perf_event_open", "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns",
            "syslog", "umount", "umount2", "unshare",
        ],
        Capability::SysBoot => &["reboot"],
        Capability::SysChroot => &["chroot"],
        Capability::SysModule => &["delete_module", "init_module", "finit_module"],
        Capability::SysPacct => &["acct"],
        Capability::SysPtrace => &[
            "kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev",
            "ptrace",
        ],
        Capability::SysRawio => &["iopl", "ioperm"],
        Capability::SysTime => &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        Capability::SysTtyConfig => &["vhangup"],
        Capability::SysNice => &[
            "get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node",
        ],
        Capability::Syslog => &["syslog"],
        Capability::Bpf => &["bpf"],
        Capability::Perfmon => &["perf_event_open"],
        _ => return None,
    })
}

/// The seccomp architectures of a machine (containerd's `arches()`): the native one and the
/// other ABIs its kernel runs.
pub fn architectures(arch: &str) -> Vec<Arch> {
    match arch {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "aarch64" => vec![Arch::ScmpArchArm, Arch::ScmpArchAarch64],
        "mips64" => vec![
            Arch::ScmpArchMips,
            Arch::ScmpArchMips64,
            Arch::ScmpArchMips64n32,
        ],
        "mips64el" => vec![
            Arch::ScmpArchMipsel,
            Arch::ScmpArchMipsel64,
            Arch::ScmpArchMipsel64n32,
        ],
        "s390x" => vec![Arch::ScmpArchS390, Arch::ScmpArchS390x],
        "riscv64" => vec![Arch::ScmpArchRiscv64],
        "loongarch64" => vec![Arch::ScmpArchLoongarch64],
        _ => Vec::new(),
    }
}

/// Syscalls only one architecture has (containerd's "include by arch").
fn arch_syscalls(arch: &str) -> &'static [&'static str] {
    match arch {
        "x86_64" => &["arch_prctl", "modify_ldt"],
        "x86" => &["modify_ldt"],
        "aarch64" | "arm" => &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
        "powerpc64le" => &["sync_file_range2", "swapcontext"],
        "s390x" => &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
        "riscv64" => &["riscv_flush_icache", "riscv_hwprobe"],
        _ => &[],
    }
}

fn rule(
    names: &[&str],
    args: &[(usize, u64, u64, LinuxSeccompOperator)],
) -> Result<LinuxSyscall, SpecError> {
    let mut b = LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActAllow);
    if !args.is_empty() {
        let args = args
            .iter()
            .map(|&(index, value, value_two, op)| {
                let a = LinuxSeccompArgBuilder::default()
                    .index(index)
                    .value(value)
                    .op(op);
                oci(if op == LinuxSeccompOperator::ScmpCmpMaskedEq {
                    a.value_two(value_two).build()
                } else {
                    a.build()
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        b = b.args(args);
    }
    oci(b.build())
}

/// containerd's default profile for a container whose bounding set is `bounding`.
pub fn default_profile(
    bounding: &[Capability],
    host: &SeccompHost,
) -> Result<LinuxSeccomp, SpecError> {
    use LinuxSeccompOperator::*;
    let mut syscalls = vec![rule(ALLOWED, &[])?];
    // socket(2) for every family below AF_ALG, between it and AF_VSOCK, and above: one
    // condition per rule, since runc turns two conditions on one argument into an OR.
    syscalls.push(rule(&["socket"], &[(0, AF_ALG, 0, ScmpCmpLt)])?);
    syscalls.push(rule(&["socket"], &[(0, AF_ALG + 1, 0, ScmpCmpEq)])?);
    syscalls.push(rule(&["socket"], &[(0, AF_VSOCK, 0, ScmpCmpGt)])?);
    for &p in PERSONALITIES {
        syscalls.push(rule(&["personality"], &[(0, p, 0, ScmpCmpEq)])?);
    }
    // ptrace could bypass seccomp before kernel 4.8.
    if host.kernel >= (4, 8) {
        syscalls.push(rule(
            &["process_vm_readv", "process_vm_writev", "ptrace"],
            &[],
        )?);
    }
    let by_arch = arch_syscalls(host.arch);
    if !by_arch.is_empty() {
        syscalls.push(rule(by_arch, &[])?);
    }
    for names in bounding.iter().filter_map(capability_syscalls) {
        syscalls.push(rule(names, &[])?);
    }
    if !bounding.contains(&Capability::SysAdmin) {
        // s390 passes clone's flags second.
        let index = if host.arch == "s390x" { 1 } else { 0 };
        syscalls.push(rule(
            &["clone"],
            &[(index, CLONE_NAMESPACE_FLAGS, 0, ScmpCmpMaskedEq)],
        )?);
        syscalls.push(oci(LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(ENOSYS)
            .build())?);
    }
    oci(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .architectures(architectures(host.arch))
        .syscalls(syscalls)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: SeccompHost = SeccompHost {
        supported: true,
        kernel: (6, 1),
        arch: "x86_64",
    };

    /// The action a profile gives syscall `name` with no argument rule, or the rules that
    /// mention it.
    fn rules_for<'a>(p: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names().iter().any(|n| n == name))
            .collect()
    }

    fn allowed_unconditionally(p: &LinuxSeccomp, name: &str) -> bool {
        rules_for(p, name).iter().any(|r| {
            r.action() == LinuxSeccompAction::ScmpActAllow
                && r.args().as_ref().is_none_or(Vec::is_empty)
        })
    }

    #[test]
    fn default_profile_denies_by_default_on_every_x86_abi() {
        let p = default_profile(&[], &HOST).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        // runc's errno for SCMP_ACT_ERRNO without errnoRet is EPERM, as containerd relies on.
        assert_eq!(p.default_errno_ret(), None);
        assert_eq!(
            p.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        let arm = SeccompHost {
            arch: "aarch64",
            ..HOST
        };
        let p = default_profile(&[], &arm).unwrap();
        assert_eq!(
            p.architectures().as_deref(),
            Some(&[Arch::ScmpArchArm, Arch::ScmpArchAarch64][..])
        );
        assert!(allowed_unconditionally(&p, "set_tls"));
        assert!(!allowed_unconditionally(&p, "arch_prctl"));
    }

    #[test]
    fn capability_groups_only_with_their_capability() {
        let none = default_profile(&[], &HOST).unwrap();
        for name in [
            "mount",
            "unshare",
            "setns",
            "reboot",
            "init_module",
            "acct",
            "iopl",
        ] {
            assert!(!allowed_unconditionally(&none, name), "{name} without caps");
        }
        assert!(!allowed_unconditionally(&none, "kcmp"));
        assert!(!allowed_unconditionally(&none, "settimeofday"));
        assert!(!allowed_unconditionally(&none, "mbind"));
        assert!(!allowed_unconditionally(&none, "syslog"));
        assert!(!allowed_unconditionally(&none, "bpf"));
        let cases = [
            (Capability::SysAdmin, "unshare"),
            (Capability::SysAdmin, "mount"),
            (Capability::SysBoot, "reboot"),
            (Capability::SysModule, "finit_module"),
            (Capability::SysPtrace, "kcmp"),
            (Capability::SysRawio, "ioperm"),
            (Capability::SysTime, "clock_settime"),
            (Capability::SysNice, "set_mempolicy"),
            (Capability::SysPacct, "acct"),
            (Capability::SysTtyConfig, "vhangup"),
            (Capability::Syslog, "syslog"),
            (Capability::Bpf, "bpf"),
            (Capability::Perfmon, "perf_event_open"),
            (Capability::DacReadSearch, "open_by_handle_at"),
            (Capability::SysChroot, "chroot"),
        ];
        for (cap, name) in cases {
            let p = default_profile(&[cap], &HOST).unwrap();
            assert!(allowed_unconditionally(&p, name), "{name} with {cap:?}");
        }
        // The default set of a container (containerd's) has CAP_SYS_CHROOT: chroot is allowed.
        let defaults = crate::spec::mounts::capabilities(0, false, &[], &[]).unwrap();
        let p = default_profile(&defaults, &HOST).unwrap();
        assert!(allowed_unconditionally(&p, "chroot"));
        assert!(!allowed_unconditionally(&p, "unshare"));
    }

    #[test]
    fn clone_loses_namespace_flags_without_sys_admin() {
        let p = default_profile(&[], &HOST).unwrap();
        let clone = rules_for(&p, "clone");
        assert_eq!(clone.len(), 1);
        let arg = clone[0].args().as_ref().unwrap()[0];
        assert_eq!(arg.index(), 0);
        assert_eq!(arg.value(), 0x7e02_0000);
        assert_eq!(arg.value_two(), Some(0));
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        let clone3 = rules_for(&p, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(38));
        // s390x passes the flags second.
        let s390 = SeccompHost {
            arch: "s390x",
            ..HOST
        };
        let p = default_profile(&[], &s390).unwrap();
        assert_eq!(
            rules_for(&p, "clone")[0].args().as_ref().unwrap()[0].index(),
            1
        );
        // With CAP_SYS_ADMIN: clone and clone3 without conditions, no ENOSYS rule.
        let p = default_profile(&[Capability::SysAdmin], &HOST).unwrap();
        assert!(allowed_unconditionally(&p, "clone"));
        assert!(rules_for(&p, "clone3")
            .iter()
            .all(|r| r.action() == LinuxSeccompAction::ScmpActAllow));
    }

    #[test]
    fn socket_refuses_af_alg_and_af_vsock_and_personality_is_limited() {
        let p = default_profile(&[], &HOST).unwrap();
        assert!(!allowed_unconditionally(&p, "socket"));
        let allows = |family: u64| {
            rules_for(&p, "socket").iter().any(|r| {
                let a = r.args().as_ref().unwrap()[0];
                match a.op() {
                    LinuxSeccompOperator::ScmpCmpLt => family < a.value(),
                    LinuxSeccompOperator::ScmpCmpEq => family == a.value(),
                    LinuxSeccompOperator::ScmpCmpGt => family > a.value(),
                    op => panic!("unexpected {op:?}"),
                }
            })
        };
        for ok in [1, 2, 10, 16, 17, 37, 39, 41, 44] {
            assert!(allows(ok), "family {ok}");
        }
        assert!(!allows(38), "AF_ALG");
        assert!(!allows(40), "AF_VSOCK");
        let values: Vec<u64> = rules_for(&p, "personality")
            .iter()
            .map(|r| r.args().as_ref().unwrap()[0].value())
            .collect();
        assert_eq!(values, [0, 8, 0x20000, 0x20008, 0xffff_ffff]);
        // ptrace only from kernel 4.8 on.
        assert!(allowed_unconditionally(&p, "ptrace"));
        let old = SeccompHost {
            kernel: (4, 4),
            ..HOST
        };
        let p = default_profile(&[], &old).unwrap();
        assert!(!allowed_unconditionally(&p, "ptrace"));
    }

    #[test]
    fn privileged_and_unconfined_get_no_filter_and_no_seccomp_refuses_the_others() {
        let rd = SeccompProfile::RuntimeDefault;
        assert_eq!(linux_seccomp(&rd, true, &[], &HOST).unwrap(), None);
        let missing = SeccompProfile::Localhost("/nonexistent/profile.json".into());
        assert_eq!(
            linux_seccomp(&missing, true, &[], &HOST).unwrap(),
            None,
            "privileged: the file is not even read"
        );
        assert_eq!(
            linux_seccomp(&SeccompProfile::Unconfined, false, &[], &HOST).unwrap(),
            None
        );
        assert!(linux_seccomp(&rd, false, &[], &HOST).unwrap().is_some());
        let off = SeccompHost {
            supported: false,
            ..HOST
        };
        let err = linux_seccomp(&rd, false, &[], &off).unwrap_err();
        assert_eq!(err.to_string(), "seccomp is not supported");
        assert_eq!(
            linux_seccomp(&SeccompProfile::Unconfined, false, &[], &off).unwrap(),
            None
        );
    }

    #[test]
    fn localhost_profiles_load_or_fail_with_containerds_messages() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let err = load_profile(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "cannot load seccomp profile \"{}\": ",
                missing.display()
            )),
            "{err}"
        );
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{not json").unwrap();
        let err = load_profile(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "decoding seccomp profile failed \"{}\": ",
                bad.display()
            )),
            "{err}"
        );
        let unknown_action = dir.path().join("action.json");
        std::fs::write(&unknown_action, r#"{"defaultAction": "SCMP_ACT_NOPE"}"#).unwrap();
        assert!(load_profile(&unknown_action).is_err());
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "comment": "ignored",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
        )
        .unwrap();
        let p = load_profile(&good).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(rules_for(&p, "mkdir")[0].errno_ret(), Some(1));
        let got = linux_seccomp(&SeccompProfile::Localhost(good), false, &[], &HOST).unwrap();
        assert_eq!(got, Some(p));
    }

    /// Pins what the comparison with containerd's file fixed or confirmed.
    #[test]
    fn table_matches_containerd_main() {
        // containerd's allow list: 363 names, `socket` only through its argument rules,
        // io_uring gone since 2.0, the v6.13 names in.
        assert_eq!(ALLOWED.len(), 363);
        for name in ["socket", "io_uring_setup", "io_uring_enter", "query_module"] {
            assert!(!ALLOWED.contains(&name), "{name}");
        }
        for name in [
            "listmount",
            "statmount",
            "mseal",
            "uretprobe",
            "getxattrat",
            "cachestat",
        ] {
            assert!(ALLOWED.contains(&name), "{name}");
        }
        // The capability groups follow the bounding set's order, as containerd's loop over it.
        let names = |bounding: &[Capability]| -> Vec<String> {
            let p = default_profile(bounding, &HOST).unwrap();
            p.syscalls()
                .iter()
                .flatten()
                .flat_map(|r| r.names().iter().cloned())
                .filter(|n| n == "reboot" || n == "settimeofday")
                .collect()
        };
        assert_eq!(
            names(&[Capability::SysTime, Capability::SysBoot]),
            ["settimeofday", "reboot"]
        );
        assert_eq!(
            names(&[Capability::SysBoot, Capability::SysTime]),
            ["reboot", "settimeofday"]
        );
        // containerd tells the little-endian machines apart by GOARCH: mipsel64 filters the
        // mipsel ABIs, and only ppc64le gets the powerpc additions.
        assert_eq!(machine("mips64", true), "mips64el");
        assert_eq!(machine("x86_64", true), "x86_64");
        assert_eq!(
            architectures(machine("mips64", true)),
            [
                Arch::ScmpArchMipsel,
                Arch::ScmpArchMipsel64,
                Arch::ScmpArchMipsel64n32
            ]
        );
        assert_eq!(architectures("mips64")[0], Arch::ScmpArchMips);
        assert_eq!(
            arch_syscalls(machine("powerpc64", true)),
            ["sync_file_range2", "swapcontext"]
        );
        assert!(arch_syscalls(machine("powerpc64", false)).is_empty());
        // clone3's errno is this architecture's ENOSYS (89 on mips).
        assert_eq!(ENOSYS, libc::ENOSYS as u32);
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_version("6.1.0-18-amd64\n"), (6, 1));
        assert_eq!(kernel_version("4.19.0"), (4, 19));
        assert_eq!(kernel_version(""), (0, 0));
    }
}

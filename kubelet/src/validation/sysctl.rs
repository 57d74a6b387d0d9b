//! Pod sysctls at admission, as the kubelet's sysctl admit handler
//! (pkg/kubelet/sysctl: `allowlist.go`, `safe_sysctls.go`, and the namespace table of
//! component-helpers/node/util/sysctl): a pod may set only the safe sysctls and those the
//! node's `allowedUnsafeSysctls` names (exactly, or by a `prefix*` pattern), and never a
//! network sysctl with `hostNetwork` nor an IPC one with `hostIPC`. Otherwise the pod is
//! rejected with reason `SysctlForbidden`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;

/// The rejection reason (upstream `ForbiddenReason`).
pub const SYSCTL_FORBIDDEN: &str = "SysctlForbidden";

/// Sysctls safe on every kernel: namespaced, and without effect on other pods (Kubernetes
/// 1.32's `safeSysctls` entries without a kernel version).
const SAFE: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
];

/// Sysctls safe from the kernel version in which they became per network namespace
/// (Kubernetes 1.32's entries with a kernel, `pkg/util/kernel/constants.go`); on a kernel
/// whose version is unknown they are not safe, as upstream's 1.32 drops them then.
const SAFE_FROM_KERNEL: &[(&str, (u32, u32))] = &[
    ("net.ipv4.ip_local_reserved_ports", (3, 16)),
    ("net.ipv4.tcp_keepalive_time", (4, 5)),
    ("net.ipv4.tcp_fin_timeout", (4, 6)),
    ("net.ipv4.tcp_keepalive_intvl", (4, 5)),
    ("net.ipv4.tcp_keepalive_probes", (4, 5)),
    ("net.ipv4.tcp_rmem", (4, 15)),
    ("net.ipv4.tcp_wmem", (4, 15)),
];

/// The kernel namespace a sysctl belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlNamespace {
    /// IPC namespace (`kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`).
    Ipc,
    /// Network namespace (`net.*`).
    Net,
}

impl SysctlNamespace {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ipc => "ipc",
            Self::Net => "net",
        }
    }
}

/// `net/ipv4/ip_forward` → `net.ipv4.ip_forward` (upstream `NormalizeName`: when the first
/// separator is `/`, slashes and dots swap).
pub fn normalize(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// The namespace of a (normalized) sysctl name or prefix; `None` when it is not namespaced.
pub fn namespace_of(name: &str) -> Option<SysctlNamespace> {
    if name == "kernel.sem" {
        return Some(SysctlNamespace::Ipc);
    }
    for (prefix, ns) in [
        ("kernel.shm", SysctlNamespace::Ipc),
        ("kernel.msg", SysctlNamespace::Ipc),
        ("fs.mqueue.", SysctlNamespace::Ipc),
        ("net.", SysctlNamespace::Net),
    ] {
        if name.starts_with(prefix) {
            return Some(ns);
        }
    }
    None
}

/// Upstream `IsValidSysctlPattern`: dot- or slash-separated segments of lower-case letters,
/// digits, `_` and `-` (starting and ending with a letter or digit), at most 253
/// characters, optionally ending in `*`.
fn valid_pattern(p: &str) -> bool {
    let body = p.strip_suffix('*').unwrap_or(p);
    if p.len() > 253 || body.is_empty() && p.is_empty() {
        return false;
    }
    if body.is_empty() {
        return true;
    }
    let segments: Vec<&str> = body.split(['.', '/']).collect();
    let last = segments.len() - 1;
    segments.iter().enumerate().all(|(i, s)| {
        // A pattern like `net.*` ends its body with a separator.
        if s.is_empty() {
            return i == last && p.ends_with('*') && i > 0;
        }
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let b = s.as_bytes();
        alnum(b[0])
            && alnum(b[b.len() - 1])
            && b.iter().all(|&c| alnum(c) || c == b'_' || c == b'-')
    })
}

/// The sysctls a pod may set on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysctlAllowlist {
    exact: BTreeMap<String, SysctlNamespace>,
    prefixes: BTreeMap<String, SysctlNamespace>,
}

impl SysctlAllowlist {
    /// The safe sysctls for `kernel` (`major.minor` of the running kernel; `None` keeps only
    /// those safe on every kernel) plus the `allowedUnsafeSysctls` patterns, each of which
    /// must name namespaced sysctls (`Err` says which one does not, for the configuration
    /// error).
    pub fn new(allowed_unsafe: &[String], kernel: Option<(u32, u32)>) -> Result<Self, String> {
        let mut list = SysctlAllowlist::default();
        let safe = SAFE.iter().copied().chain(
            SAFE_FROM_KERNEL
                .iter()
                .filter(|(_, from)| kernel.is_some_and(|k| k >= *from))
                .map(|(n, _)| *n),
        );
        for name in safe {
            let ns = namespace_of(name).expect("every safe sysctl is namespaced");
            list.exact.insert(name.to_string(), ns);
        }
        for pattern in allowed_unsafe {
            if !valid_pattern(pattern) {
                return Err(format!(
                    "sysctl {pattern:?} must have at most 253 characters and be dot- or \
                     slash-separated segments of [-_a-z0-9] (starting and ending with a letter \
                     or digit), optionally ending in '*'"
                ));
            }
            let normalized = normalize(pattern);
            let (name, prefixed) = match normalized.find('*') {
                Some(i) => (normalized[..i].to_string(), true),
                None => (normalized, false),
            };
            let Some(ns) = namespace_of(&name) else {
                return Err(format!(
                    "the sysctls {name:?} are not known to be namespaced"
                ));
            };
            if prefixed {
                list.prefixes.insert(name, ns);
            } else {
                list.exact.insert(name, ns);
            }
        }
        Ok(list)
    }

    /// The running kernel's `major.minor` (`/proc/sys/kernel/osrelease`, as `uname -r`).
    pub fn kernel_version() -> Option<(u32, u32)> {
        parse_kernel_version(&std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?)
    }

    fn check(&self, name: &str, host_net: bool, host_ipc: bool) -> Result<(), String> {
        let name = normalize(name);
        let ns = self.exact.get(&name).copied().or_else(|| {
            self.prefixes
                .iter()
                .find(|(p, _)| name.starts_with(p.as_str()))
                .map(|(_, ns)| *ns)
        });
        match ns {
            None => Err(format!("{name:?} not allowlisted")),
            Some(ns)
                if (ns == SysctlNamespace::Net && host_net)
                    || (ns == SysctlNamespace::Ipc && host_ipc) =>
            {
                Err(format!(
                    "{name:?} not allowed with host {} enabled",
                    ns.as_str()
                ))
            }
            Some(_) => Ok(()),
        }
    }

    /// Admits the pod or returns the rejection message (`forbidden sysctl: ...`, upstream's
    /// text) for its first forbidden sysctl.
    pub fn admit(&self, spec: &PodSpec) -> Result<(), String> {
        let sysctls = spec
            .security_context
            .as_ref()
            .and_then(|s| s.sysctls.as_deref())
            .unwrap_or_default();
        let host_net = spec.host_network.unwrap_or(false);
        let host_ipc = spec.host_ipc.unwrap_or(false);
        for s in sysctls {
            self.check(&s.name, host_net, host_ipc)
                .map_err(|e| format!("forbidden sysctl: {e}"))?;
        }
        Ok(())
    }
}

fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSecurityContext, Sysctl};

    fn spec(names: &[&str], host_net: bool, host_ipc: bool) -> PodSpec {
        PodSpec {
            host_network: Some(host_net),
            host_ipc: Some(host_ipc),
            security_context: Some(PodSecurityContext {
                sysctls: Some(
                    names
                        .iter()
                        .map(|n| Sysctl {
                            name: n.to_string(),
                            value: "1".into(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_safe_sysctls_by_default() {
        let l = SysctlAllowlist::new(&[], Some((6, 1))).unwrap();
        for name in SAFE
            .iter()
            .chain(["net.ipv4.tcp_rmem", "net/ipv4/tcp_wmem"].iter())
        {
            assert_eq!(l.admit(&spec(&[name], false, false)), Ok(()), "{name}");
        }
        assert_eq!(
            l.admit(&spec(
                &["net.ipv4.ip_unprivileged_port_start", "kernel.msgmax"],
                false,
                false
            )),
            Err("forbidden sysctl: \"kernel.msgmax\" not allowlisted".into())
        );
        assert_eq!(
            l.admit(&spec(&["net.core.somaxconn"], false, false)),
            Err("forbidden sysctl: \"net.core.somaxconn\" not allowlisted".into())
        );
        // A host-network pod may not set network sysctls, even safe ones.
        assert_eq!(
            l.admit(&spec(&["net.ipv4.tcp_syncookies"], true, false)),
            Err(
                "forbidden sysctl: \"net.ipv4.tcp_syncookies\" not allowed with host net enabled"
                    .into()
            )
        );
        assert_eq!(
            l.admit(&spec(&["kernel.shm_rmid_forced"], false, true)),
            Err(
                "forbidden sysctl: \"kernel.shm_rmid_forced\" not allowed with host ipc enabled"
                    .into()
            )
        );
        assert_eq!(l.admit(&PodSpec::default()), Ok(()));
    }

    #[test]
    fn kernel_gated_sysctls() {
        let old = SysctlAllowlist::new(&[], Some((4, 14))).unwrap();
        assert!(old
            .admit(&spec(&["net.ipv4.tcp_rmem"], false, false))
            .is_err());
        assert_eq!(
            old.admit(&spec(&["net.ipv4.ip_local_reserved_ports"], false, false)),
            Ok(())
        );
        // 4.5 has the keepalive sysctls per network namespace, tcp_fin_timeout from 4.6.
        let k45 = SysctlAllowlist::new(&[], Some((4, 5))).unwrap();
        for name in [
            "net.ipv4.tcp_keepalive_time",
            "net.ipv4.tcp_keepalive_intvl",
            "net.ipv4.tcp_keepalive_probes",
        ] {
            assert_eq!(k45.admit(&spec(&[name], false, false)), Ok(()), "{name}");
            assert!(SysctlAllowlist::new(&[], Some((4, 4)))
                .unwrap()
                .admit(&spec(&[name], false, false))
                .is_err());
        }
        assert!(k45
            .admit(&spec(&["net.ipv4.tcp_fin_timeout"], false, false))
            .is_err());
        assert_eq!(
            old.admit(&spec(&["net.ipv4.tcp_fin_timeout"], false, false)),
            Ok(())
        );
        let unknown = SysctlAllowlist::new(&[], None).unwrap();
        for name in [
            "net.ipv4.ip_local_reserved_ports",
            "net.ipv4.tcp_keepalive_time",
            "net.ipv4.tcp_rmem",
        ] {
            assert!(
                unknown.admit(&spec(&[name], false, false)).is_err(),
                "{name}"
            );
        }
        assert_eq!(
            unknown.admit(&spec(&["net.ipv4.tcp_syncookies"], false, false)),
            Ok(())
        );
        assert_eq!(parse_kernel_version("6.1.0-28-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_version("4.15"), Some((4, 15)));
        assert_eq!(parse_kernel_version("x"), None);
    }

    #[test]
    fn allowed_unsafe_sysctls_exact_and_by_prefix() {
        let l = SysctlAllowlist::new(
            &[
                "kernel.msg*".into(),
                "net.core.somaxconn".into(),
                "kernel.sem".into(),
            ],
            Some((6, 1)),
        )
        .unwrap();
        for ok in [
            "kernel.msgmax",
            "kernel.msgmnb",
            "net.core.somaxconn",
            "kernel.sem",
        ] {
            assert_eq!(l.admit(&spec(&[ok], false, false)), Ok(()), "{ok}");
        }
        assert!(l
            .admit(&spec(&["net.core.rmem_max"], false, false))
            .is_err());
        assert!(l.admit(&spec(&["kernel.msgmax"], false, true)).is_err());
        let net = SysctlAllowlist::new(&["net.*".into()], Some((6, 1))).unwrap();
        assert_eq!(
            net.admit(&spec(&["net.core.rmem_max"], false, false)),
            Ok(())
        );
        assert!(net
            .admit(&spec(&["net.core.rmem_max"], true, false))
            .is_err());
    }

    #[test]
    fn allowed_unsafe_sysctls_must_be_namespaced_and_well_formed() {
        assert_eq!(
            SysctlAllowlist::new(&["kernel.pid_max".into()], None).unwrap_err(),
            "the sysctls \"kernel.pid_max\" are not known to be namespaced"
        );
        assert_eq!(
            SysctlAllowlist::new(&["vm.*".into()], None).unwrap_err(),
            "the sysctls \"vm.\" are not known to be namespaced"
        );
        for bad in ["Net.core", "net..core", "net.*.x", "", "*"] {
            let e = SysctlAllowlist::new(&[bad.to_string()], None);
            assert!(e.is_err(), "{bad:?} accepted");
        }
        assert!(SysctlAllowlist::new(&["net/ipv4/*".into()], None).is_ok());
    }
}

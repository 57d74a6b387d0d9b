//! OCI runtime specs (`config.json`) for pod containers and the pause
//! container, built like containerd's CRI plugin does from the Kubernetes
//! container, the pod-level bits and the image config.

mod mounts;
mod namespaces;
mod pause;
mod process;
mod resources;
mod seccomp;
mod user;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, PodSecurityContext};
use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

pub use mounts::{ALL_CAPABILITIES, DEFAULT_CAPABILITIES, MASKED_PATHS, READONLY_PATHS};
pub use namespaces::{NamespaceMode, NamespacePaths, PidNamespace, PodNamespaces};
pub use pause::{pause_spec, PauseSpecInput};
pub use process::{container_env, expand, merge_env};
pub use resources::{
    milli_cpu_to_quota, milli_cpu_to_shares, parse_quantity, MIN_SHARES, QUOTA_PERIOD_US,
};
pub use seccomp::{default_profile, linux_seccomp, load_profile, SeccompHost, SeccompProfile};
pub use user::{Identity, UserRequest};

/// The default `PATH` of a container whose image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The RLIMIT_NOFILE a container gets, before clamping to the agent's hard limit.
pub const DEFAULT_NOFILE: u64 = 1_048_576;
/// cpu shares of the pause container (`DefaultSandboxCPUshares`).
pub const SANDBOX_CPU_SHARES: u64 = 2;
/// OOM score adjustment of the pause container (`defaultSandboxOOMAdj`).
pub const SANDBOX_OOM_SCORE_ADJ: i32 = -998;

/// Why a spec could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither the container nor the image name a command.
    #[error("no command specified")]
    NoCommand,
    /// The user or group cannot be resolved or is not allowed.
    #[error("invalid user: {0}")]
    InvalidUser(String),
    /// A resource quantity does not parse.
    #[error("invalid quantity {0:?}")]
    Quantity(String),
    /// An unknown capability name.
    #[error("unknown capability {0}")]
    Capability(String),
    /// oci-spec refused a value.
    #[error("building the OCI spec: {0}")]
    Oci(#[source] oci_spec::OciSpecError),
    /// The seccomp profile cannot be used (containerd's messages: a `Localhost` file that
    /// cannot be read or decoded, or a kernel without seccomp).
    #[error("{0}")]
    Seccomp(String),
}

/// The pod a container belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Hostname of the pod (its UTS namespace).
    pub hostname: String,
}

impl PodInfo {
    /// `namespace/name`, for messages.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A host file or directory bind-mounted into the container
/// (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`, `/dev/termination-log`, volumes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindMount {
    /// Path inside the container.
    pub container_path: String,
    /// Path on the host.
    pub host_path: PathBuf,
    /// Mounted read-only.
    pub readonly: bool,
    /// Mount propagation (a volumeMount's `mountPropagation`).
    #[serde(default)]
    pub propagation: Propagation,
}

/// Mount propagation of a bind mount, as a volumeMount's `mountPropagation` names it:
/// `None` = `rprivate`, `HostToContainer` = `rslave`, `Bidirectional` = `rshared`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Propagation {
    /// `None`: nothing propagates (`rprivate`).
    #[default]
    Private,
    /// `HostToContainer`: host mounts below the source appear in the container (`rslave`).
    HostToContainer,
    /// `Bidirectional`: mounts propagate both ways (`rshared`; privileged containers only).
    Bidirectional,
}

impl Propagation {
    /// The OCI mount option.
    pub fn option(self) -> &'static str {
        match self {
            Propagation::Private => "rprivate",
            Propagation::HostToContainer => "rslave",
            Propagation::Bidirectional => "rshared",
        }
    }
}

/// Limits of the agent's own process that container settings must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// The agent's hard RLIMIT_NOFILE.
    pub nofile_hard: u64,
    /// The lowest `oom_score_adj` the agent may set (its own, without CAP_SYS_RESOURCE).
    pub min_oom_score_adj: i32,
    /// The host uses the cgroup v2 unified hierarchy only.
    pub cgroup_v2: bool,
    /// The agent's effective capabilities (bit = capability number): what a
    /// privileged container can get at most (containerd `WithAllCurrentCapabilities`).
    pub capabilities: u64,
    /// The memory controller accounts swap (v1 `memory.memsw.limit_in_bytes`, v2
    /// `memory.swap.max`): only then is a swap limit put into a spec, as containerd does.
    pub swap_controller: bool,
}

/// Whether an oom_score_adj clamp was logged already (it is logged once per process).
static OOM_CLAMP_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the memory controller under `root` (normally `/sys/fs/cgroup`) can limit swap,
/// per containerd's `SwapControllerAvailable`: on cgroup v1 the memsw files exist (the kernel
/// was booted with swap accounting); on v2 `memory.swap.max` exists in the agent's own cgroup
/// (the root cgroup has none, so then in a child of it).
pub fn swap_controller_available(root: &Path, cgroup_v2: bool, self_cgroup: &str) -> bool {
    if !cgroup_v2 {
        return root.join("memory/memory.memsw.limit_in_bytes").exists();
    }
    let own = self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().trim_start_matches('/'))
        .unwrap_or_default();
    if !own.is_empty() {
        return root.join(own).join("memory.swap.max").exists();
    }
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .any(|e| e.path().join("memory.swap.max").exists())
}

impl HostLimits {
    /// Reads the limits of the current process.
    pub fn probe() -> HostLimits {
        let nofile_hard =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(_, hard)| hard)
                .unwrap_or(DEFAULT_NOFILE);
        let own_adj = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .unwrap_or(0);
        let capabilities = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("CapEff:"))?.to_string();
                u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
            })
            .unwrap_or(0);
        let has_sys_resource = capabilities & (1 << 24) != 0;
        let cgroup_v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        HostLimits {
            nofile_hard,
            min_oom_score_adj: if has_sys_resource { -1000 } else { own_adj },
            cgroup_v2,
            capabilities,
            swap_controller: swap_controller_available(
                Path::new("/sys/fs/cgroup"),
                cgroup_v2,
                &self_cgroup,
            ),
        }
    }

    /// Says at start, once, when this host refuses the lowest `oom_score_adj` the kubelet gives
    /// (pause's -998, Guaranteed -997): without CAP_SYS_RESOURCE nothing may go below the
    /// agent's own value. Later clamps are then not logged again.
    pub fn warn_oom_floor(&self) {
        if self.min_oom_score_adj > SANDBOX_OOM_SCORE_ADJ
            && !OOM_CLAMP_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                floor = self.min_oom_score_adj,
                "this host refuses an oom_score_adj below the agent's own (no CAP_SYS_RESOURCE): \
                 pause containers (-998), Guaranteed and node-critical containers (-997) and any \
                 other container asking for less than the floor get the floor instead"
            );
        }
    }

    /// Clamps an OOM score adjustment into what this host accepts. Without
    /// CAP_SYS_RESOURCE the kernel refuses a value below the agent's own, so such a value
    /// becomes the agent's own (containerd does the same in a restricted environment);
    /// the first clamp is logged, once per process.
    pub fn clamp_oom_score_adj(&self, wanted: i32) -> i32 {
        let clamped = wanted.clamp(self.min_oom_score_adj.clamp(-1000, 1000), 1000);
        if clamped != wanted && !OOM_CLAMP_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                wanted,
                clamped,
                "this host refuses an oom_score_adj below the agent's own (no CAP_SYS_RESOURCE): \
                 containers and pause containers asking for less get the agent's own value \
                 (logged once)"
            );
        }
        clamped
    }
}

/// Everything a pod container's spec is made from.
#[derive(Debug, Clone)]
pub struct ContainerSpecInput<'a> {
    /// The pod.
    pub pod: &'a PodInfo,
    /// Sandbox id (annotations).
    pub sandbox_id: &'a str,
    /// The Kubernetes container.
    pub container: &'a Container,
    /// The pod's security context.
    pub pod_security: Option<&'a PodSecurityContext>,
    /// The image's config section.
    pub image: Option<&'a oci_spec::image::Config>,
    /// Image name (annotation).
    pub image_name: &'a str,
    /// The container's root filesystem (for `/etc/passwd` and `root.path`).
    pub rootfs: &'a Path,
    /// The sandbox's namespaces.
    pub namespaces: &'a NamespacePaths,
    /// `linux.cgroupsPath`.
    pub cgroups_path: &'a str,
    /// Caller-supplied bind mounts.
    pub mounts: &'a [BindMount],
    /// Service environment variables, placed before the container's own.
    pub service_env: &'a [(String, String)],
    /// Values of `valueFrom` environment variables, by name.
    pub resolved_env: &'a HashMap<String, String>,
    /// `process.oomScoreAdj` (clamped to `limits`).
    pub oom_score_adj: Option<i32>,
    /// The agent's limits.
    pub limits: &'a HostLimits,
    /// The host's device nodes, given to privileged containers.
    pub host_devices: &'a [oci_spec::runtime::LinuxDevice],
    /// The seccomp profile the kubelet resolved (privileged containers get none).
    pub seccomp: &'a SeccompProfile,
    /// `process.apparmorProfile`: the AppArmor profile the kubelet resolved, if any.
    pub apparmor: Option<&'a str>,
}

fn oci<T>(r: Result<T, oci_spec::OciSpecError>) -> Result<T, SpecError> {
    r.map_err(SpecError::Oci)
}

fn ns(
    typ: LinuxNamespaceType,
    path: Option<&Path>,
) -> Result<oci_spec::runtime::LinuxNamespace, SpecError> {
    let b = LinuxNamespaceBuilder::default().typ(typ);
    oci(match path {
        Some(p) => b.path(p).build(),
        None => b.build(),
    })
}

fn nofile(limits: &HostLimits) -> Result<oci_spec::runtime::PosixRlimit, SpecError> {
    let n = DEFAULT_NOFILE.min(limits.nofile_hard);
    if n < DEFAULT_NOFILE {
        tracing::debug!(n, "RLIMIT_NOFILE clamped to the agent's hard limit");
    }
    oci(PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .hard(n)
        .soft(n)
        .build())
}

/// Builds the OCI spec of a pod container.
pub fn container_spec(input: &ContainerSpecInput<'_>) -> Result<Spec, SpecError> {
    let c = input.container;
    let sc = c.security_context.as_ref();
    let psc = input.pod_security;
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);

    let env_pairs = container_env(c, input.service_env, input.resolved_env);
    let image_env = input
        .image
        .and_then(|i| i.env().clone())
        .unwrap_or_else(|| vec![DEFAULT_PATH.to_string()]);
    let tty = c.tty == Some(true);
    let env = merge_env(&[
        vec![format!("HOSTNAME={}", input.pod.hostname)],
        // containerd's `WithTTY`: a terminal's type, unless the image or the container says
        tty.then(|| "TERM=xterm".to_string()).into_iter().collect(),
        image_env,
        env_pairs.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    ]);
    let args = process::argv(c, input.image, &env_pairs)?;
    let cwd = c
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| {
            input
                .image
                .and_then(|i| i.working_dir().clone())
                .filter(|d| !d.is_empty())
        })
        .unwrap_or_else(|| "/".to_string());

    let identity = user::resolve(
        input.rootfs,
        &UserRequest {
            run_as_user: sc
                .and_then(|s| s.run_as_user)
                .or(psc.and_then(|s| s.run_as_user)),
            run_as_group: sc
                .and_then(|s| s.run_as_group)
                .or(psc.and_then(|s| s.run_as_group)),
            run_as_non_root: sc
                .and_then(|s| s.run_as_non_root)
                .or(psc.and_then(|s| s.run_as_non_root))
                .unwrap_or(false),
            supplemental_groups: psc
                .map(|p| {
                    p.supplemental_groups
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .chain(p.fs_group)
                        .collect()
                })
                .unwrap_or_default(),
            strict_groups: psc
                .and_then(|p| p.supplemental_groups_policy.as_deref())
                .is_some_and(|p| p == "Strict"),
            image_user: input.image.and_then(|i| i.user().as_deref()),
        },
    )?;

    let caps_req = sc.and_then(|s| s.capabilities.as_ref());
    let caps = mounts::capabilities(
        input.limits.capabilities,
        privileged,
        caps_req.and_then(|c| c.add.as_deref()).unwrap_or(&[]),
        caps_req.and_then(|c| c.drop.as_deref()).unwrap_or(&[]),
    )?;
    let capset: oci_spec::runtime::Capabilities = caps.into_iter().collect();
    let bounding: Vec<_> = capset.iter().copied().collect();
    let mut process = ProcessBuilder::default()
        .terminal(tty)
        .user(oci(UserBuilder::default()
            .uid(identity.uid)
            .gid(identity.gid)
            .additional_gids(identity.additional_gids.clone())
            .build())?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(oci(LinuxCapabilitiesBuilder::default()
            .bounding(capset.clone())
            .effective(capset.clone())
            .permitted(capset)
            .inheritable(oci_spec::runtime::Capabilities::new())
            .ambient(oci_spec::runtime::Capabilities::new())
            .build())?)
        .rlimits(vec![nofile(input.limits)?])
        // kubelet sets no_new_privs only for allowPrivilegeEscalation: false.
        .no_new_privileges(
            sc.and_then(|s| s.allow_privilege_escalation) == Some(false) && !privileged,
        );
    if let Some(adj) = input.oom_score_adj {
        process = process.oom_score_adj(input.limits.clamp_oom_score_adj(adj));
    }
    if let Some(profile) = input.apparmor {
        process = process.apparmor_profile(profile);
    }

    let mut mount_list = mounts::default_mounts(privileged)?;
    let readonly_root = sc
        .and_then(|s| s.read_only_root_filesystem)
        .unwrap_or(false);
    for m in input.mounts {
        mount_list.retain(|d| d.destination() != Path::new(&m.container_path));
        mount_list.push(mounts::bind(
            &m.container_path,
            &m.host_path,
            m.readonly,
            m.propagation,
        )?);
    }
    // containerd: a shared mount needs a shared rootfs, a slave one at least a slave rootfs.
    let rootfs_propagation = mounts::rootfs_propagation(input.mounts);

    let mut namespaces = namespaces::container_namespaces(input.namespaces)?;
    if input.limits.cgroup_v2 && !privileged {
        namespaces.push(ns(LinuxNamespaceType::Cgroup, None)?);
    }
    // The kubelet's `ConvertToRuntimeMaskedPaths`/`ReadonlyPaths`: `procMount: Unmasked`
    // gives none (validation allows it only with `hostUsers: false`); containerd puts none
    // into a privileged container's spec.
    let unmasked = sc.and_then(|s| s.proc_mount.as_deref()) == Some("Unmasked");
    let (masked, readonly): (Vec<String>, Vec<String>) = if privileged || unmasked {
        (Vec::new(), Vec::new())
    } else {
        (
            MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
            READONLY_PATHS.iter().map(|s| s.to_string()).collect(),
        )
    };
    let mut linux = oci(LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(input.cgroups_path)
        .resources(resources::linux_resources(
            c.resources.as_ref(),
            privileged,
            input.limits,
        )?)
        .masked_paths(masked)
        .readonly_paths(readonly)
        .build())?;

    if privileged && !input.host_devices.is_empty() {
        linux.set_devices(Some(input.host_devices.to_vec()));
    }
    // After the capabilities: the default profile allows what the bounding set allows.
    linux.set_seccomp(seccomp::linux_seccomp(
        input.seccomp,
        privileged,
        &bounding,
        &SeccompHost::current(),
    )?);
    if let Some(p) = rootfs_propagation {
        linux.set_rootfs_propagation(Some(p.into()));
    }
    let annotations = HashMap::from([
        (
            "io.kubernetes.cri.container-type".to_string(),
            "container".to_string(),
        ),
        (
            "io.kubernetes.cri.container-name".to_string(),
            c.name.clone(),
        ),
        (
            "io.kubernetes.cri.sandbox-id".to_string(),
            input.sandbox_id.to_string(),
        ),
        (
            "io.kubernetes.cri.sandbox-name".to_string(),
            input.pod.name.clone(),
        ),
        (
            "io.kubernetes.cri.sandbox-namespace".to_string(),
            input.pod.namespace.clone(),
        ),
        (
            "io.kubernetes.cri.sandbox-uid".to_string(),
            input.pod.uid.clone(),
        ),
        (
            "io.kubernetes.cri.image-name".to_string(),
            input.image_name.to_string(),
        ),
    ]);
    let mut spec = oci(SpecBuilder::default()
        .version("1.0.2-dev")
        .root(oci(RootBuilder::default()
            .path(input.rootfs)
            .readonly(readonly_root)
            .build())?)
        .process(oci(process.build())?)
        .mounts(mount_list)
        .annotations(annotations)
        .linux(linux)
        .build())?;
    // The container joins the sandbox's UTS namespace: the hostname is pause's.
    spec.set_hostname(None);
    Ok(spec)
}

/// The `config.json` text of a spec, canonical: object keys sorted and
/// capability sets in a fixed order, so equal specs give equal bytes.
pub fn to_config_json(spec: &Spec) -> Vec<u8> {
    let mut value = serde_json::to_value(spec).unwrap_or_default();
    if let Some(caps) = value
        .pointer_mut("/process/capabilities")
        .and_then(|v| v.as_object_mut())
    {
        for set in caps.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    let mut out = serde_json::to_vec_pretty(&value).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod golden;

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(min_oom_score_adj: i32) -> HostLimits {
        HostLimits {
            nofile_hard: 1024,
            min_oom_score_adj,
            cgroup_v2: false,
            capabilities: 0,
            swap_controller: false,
        }
    }

    #[test]
    fn oom_score_adj_below_the_agents_own_is_clamped_up_to_it() {
        // An agent at 0 without CAP_SYS_RESOURCE (this CI machine).
        let l = limits(0);
        assert_eq!(l.clamp_oom_score_adj(-997), 0, "Guaranteed");
        assert_eq!(l.clamp_oom_score_adj(-998), 0, "pause");
        assert_eq!(l.clamp_oom_score_adj(1000), 1000, "BestEffort");
        assert_eq!(l.clamp_oom_score_adj(996), 996, "Burstable");
        // An agent at 500: everything below 500 becomes 500.
        assert_eq!(limits(500).clamp_oom_score_adj(3), 500);
        assert_eq!(limits(500).clamp_oom_score_adj(999), 999);
        // With CAP_SYS_RESOURCE (systemd's OOMScoreAdjust=-999 on a VM) nothing changes.
        let l = limits(-1000);
        assert_eq!(l.clamp_oom_score_adj(-997), -997);
        assert_eq!(l.clamp_oom_score_adj(-998), -998);
        // Out-of-range values never reach the kernel.
        assert_eq!(l.clamp_oom_score_adj(-5000), -1000);
        assert_eq!(l.clamp_oom_score_adj(5000), 1000);
    }
}

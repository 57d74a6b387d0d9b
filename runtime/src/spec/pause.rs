//! The OCI spec of a pod's pause container (containerd's
//! `sandbox_run_linux.go`): the built-in pause program on a shared read-only
//! rootfs, holding the pod's namespaces.
//!
//! Its seccomp filter is the sandbox's profile from the CRI config: the kubelet always asks for
//! `RuntimeDefault` (upstream's `generatePodSandboxLinuxConfig`, whatever the pod's
//! `seccompProfile` or `seccompDefault`, so that a pod may name a narrower profile than pause
//! needs), and a pod with a privileged container gets a pause without a filter, as
//! containerd's `sandboxContainerSpecOpts`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

use super::seccomp::{linux_seccomp, SeccompHost, SeccompProfile};
use super::{
    mounts, nofile, ns, oci, HostLimits, PodInfo, PodNamespaces, SpecError, DEFAULT_PATH,
    MASKED_PATHS, READONLY_PATHS, SANDBOX_CPU_SHARES, SANDBOX_OOM_SCORE_ADJ,
};

/// Everything the pause container's spec is made from.
#[derive(Debug, Clone)]
pub struct PauseSpecInput<'a> {
    /// The pod.
    pub pod: &'a PodInfo,
    /// The shared pause rootfs.
    pub rootfs: &'a Path,
    /// The pod's netns; `None` for a host-network pod.
    pub netns: Option<&'a Path>,
    /// The pod's pinned IPC namespace; `None` makes a new one.
    pub ipc: Option<&'a Path>,
    /// The pod's pinned UTS namespace; `None` makes a new one (unless host network).
    pub uts: Option<&'a Path>,
    /// The pod's `/dev/shm` tmpfs (the host's `/dev/shm` with `hostIPC`), bound read-only.
    pub shm: Option<&'a Path>,
    /// The pod's PID and IPC namespace modes.
    pub namespaces: PodNamespaces,
    /// The sandbox's seccomp profile.
    pub seccomp: &'a SeccompProfile,
    /// A container of the pod is privileged: no filter.
    pub privileged: bool,
    /// `linux.cgroupsPath`.
    pub cgroups_path: &'a str,
    /// Namespaced sysctls of the pod (`securityContext.sysctls`).
    pub sysctls: &'a BTreeMap<String, String>,
    /// The agent's limits.
    pub limits: &'a HostLimits,
}

/// Builds the OCI spec of a pod's pause container: read-only rootfs holding
/// only the pause binary, the pod's net, ipc and uts namespaces by path (the
/// host's network and UTS for a host-network pod, the host's IPC with `hostIPC`), new
/// pid (none with `hostPID`) and mount namespaces, the pod's shm and sysctls, cpu shares 2,
/// OOM adjustment -998 (clamped) and the sandbox's seccomp profile.
pub fn pause_spec(input: &PauseSpecInput<'_>) -> Result<Spec, SpecError> {
    let limits = input.limits;
    let pod = input.pod;
    let bounding = mounts::capabilities(u64::MAX, false, &[], &[])?;
    let caps: oci_spec::runtime::Capabilities = bounding.iter().copied().collect();
    let process = oci(ProcessBuilder::default()
        .terminal(false)
        .user(oci(UserBuilder::default().uid(0u32).gid(0u32).build())?)
        .args(vec!["/pause".to_string()])
        .env(vec![DEFAULT_PATH.to_string()])
        .cwd("/")
        .capabilities(oci(LinuxCapabilitiesBuilder::default()
            .bounding(caps.clone())
            .effective(caps.clone())
            .permitted(caps)
            .inheritable(oci_spec::runtime::Capabilities::new())
            .ambient(oci_spec::runtime::Capabilities::new())
            .build())?)
        .rlimits(vec![nofile(limits)?])
        .no_new_privileges(true)
        .oom_score_adj(limits.clamp_oom_score_adj(SANDBOX_OOM_SCORE_ADJ))
        .build())?;
    let resources = oci(oci_spec::runtime::LinuxResourcesBuilder::default()
        .devices(vec![oci(
            oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build(),
        )?])
        .cpu(oci(oci_spec::runtime::LinuxCpuBuilder::default()
            .shares(SANDBOX_CPU_SHARES)
            .build())?)
        .build())?;
    // A host-network pod keeps the host's network and UTS namespaces (and hostname).
    let mut namespaces =
        super::namespaces::pause_namespaces(input.netns, input.ipc, input.uts, input.namespaces)?;
    if limits.cgroup_v2 {
        namespaces.push(ns(LinuxNamespaceType::Cgroup, None)?);
    }
    let mut linux = oci(LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(input.cgroups_path)
        .resources(resources)
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .build())?;
    linux.set_seccomp(linux_seccomp(
        input.seccomp,
        input.privileged,
        &bounding,
        &SeccompHost::current(),
    )?);
    if !input.sysctls.is_empty() {
        linux.set_sysctl(Some(
            input
                .sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
    }
    let mut mount_list = mounts::default_mounts(false)?;
    if let Some(shm) = input.shm {
        mount_list.retain(|m| m.destination() != Path::new("/dev/shm"));
        mount_list.push(oci(oci_spec::runtime::MountBuilder::default()
            .destination("/dev/shm")
            .typ("bind")
            .source(shm)
            .options(
                ["rbind", "ro", "nosuid", "nodev", "noexec"]
                    .map(String::from)
                    .to_vec(),
            )
            .build())?);
    }
    let annotations = HashMap::from([
        (
            "io.kubernetes.cri.container-type".to_string(),
            "sandbox".to_string(),
        ),
        (
            "io.kubernetes.cri.sandbox-name".to_string(),
            pod.name.clone(),
        ),
        (
            "io.kubernetes.cri.sandbox-namespace".to_string(),
            pod.namespace.clone(),
        ),
        ("io.kubernetes.cri.sandbox-uid".to_string(), pod.uid.clone()),
    ]);
    let mut spec = oci(SpecBuilder::default()
        .version("1.0.2-dev")
        .root(oci(RootBuilder::default()
            .path(input.rootfs)
            .readonly(true)
            .build())?)
        .process(process)
        .hostname(pod.hostname.clone())
        .mounts(mount_list)
        .annotations(annotations)
        .linux(linux)
        .build())?;
    if input.netns.is_none() {
        spec.set_hostname(None);
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seccomp: &SeccompProfile, privileged: bool) -> Spec {
        let limits = HostLimits {
            nofile_hard: 20000,
            min_oom_score_adj: 0,
            cgroup_v2: false,
            capabilities: u64::MAX,
            swap_controller: true,
        };
        pause_spec(&PauseSpecInput {
            pod: &PodInfo::default(),
            rootfs: Path::new("/run/kubenode/pause/rootfs"),
            netns: None,
            ipc: None,
            uts: None,
            shm: None,
            namespaces: PodNamespaces::default(),
            seccomp,
            privileged,
            cgroups_path: "/kubepods/pod1/sandbox0",
            sysctls: &BTreeMap::new(),
            limits: &limits,
        })
        .unwrap()
    }

    #[test]
    fn pause_gets_the_sandbox_profile_unless_a_container_is_privileged() {
        let rd = SeccompProfile::RuntimeDefault;
        let got = spec(&rd, false);
        let filter = got.linux().as_ref().unwrap().seccomp().as_ref().cloned();
        // The default profile for pause's capabilities (containerd's defaults).
        let bounding = mounts::capabilities(u64::MAX, false, &[], &[]).unwrap();
        let want = linux_seccomp(&rd, false, &bounding, &SeccompHost::current()).unwrap();
        assert!(want.is_some());
        assert_eq!(filter, want);
        // A privileged container in the pod: no filter.
        let got = spec(&rd, true);
        assert_eq!(got.linux().as_ref().unwrap().seccomp(), &None);
        // A sandbox recorded without a profile: none either.
        let got = spec(&SeccompProfile::Unconfined, false);
        assert_eq!(got.linux().as_ref().unwrap().seccomp(), &None);
    }
}

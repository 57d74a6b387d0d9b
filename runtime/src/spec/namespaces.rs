//! A pod's PID and IPC namespace choices (CRI's `NamespaceMode`) and the namespaces a pod
//! container's spec lists from them.
//!
//! As upstream: the kubelet picks a mode per namespace from the pod (`namespacesForPod` in
//! kuberuntime); containerd's CRI plugin then leaves a `NODE` namespace out of the pause spec,
//! and a container joins the pause container's PID namespace only when the mode is not
//! `CONTAINER` (`WithPodNamespaces`). containerd has a `NODE` container join pause's
//! namespaces by `/proc/<pause>/ns/*`, which are the host's; kubenode leaves them out, the
//! same namespaces without a dependency on pause's pid.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::PodSpec;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use super::{ns, SpecError};

/// How a namespace is shared, as CRI's `NamespaceMode` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceMode {
    /// One namespace for the whole pod, held by the pause container (`POD`).
    Pod,
    /// Each container a namespace of its own (`CONTAINER`).
    Container,
    /// The host's namespace (`NODE`).
    Node,
}

/// A pod's PID and IPC namespace modes (its network's is `SandboxOptions::host_network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodNamespaces {
    /// `Container` (the default: each container is PID 1 of its own), `Pod`
    /// (`shareProcessNamespace`: pause is PID 1 of the one namespace) or `Node` (`hostPID`).
    pub pid: NamespaceMode,
    /// `Pod` (the default: the pod's pinned IPC namespace and `/dev/shm`) or `Node`
    /// (`hostIPC`: the host's, and the host's `/dev/shm`). Kubernetes has no way to ask for
    /// `Container`; it is taken as `Pod`, as containerd takes it.
    pub ipc: NamespaceMode,
}

impl Default for PodNamespaces {
    fn default() -> PodNamespaces {
        PodNamespaces {
            pid: NamespaceMode::Container,
            ipc: NamespaceMode::Pod,
        }
    }
}

impl PodNamespaces {
    /// The modes the kubelet asks for, as upstream's `pidNamespaceForPod` and
    /// `ipcNamespaceForPod`: `hostPID` before `shareProcessNamespace` (validation refuses the
    /// two together), `hostIPC`.
    pub fn of(spec: &PodSpec) -> PodNamespaces {
        let pid = if spec.host_pid == Some(true) {
            NamespaceMode::Node
        } else if spec.share_process_namespace == Some(true) {
            NamespaceMode::Pod
        } else {
            NamespaceMode::Container
        };
        let ipc = if spec.host_ipc == Some(true) {
            NamespaceMode::Node
        } else {
            NamespaceMode::Pod
        };
        PodNamespaces { pid, ipc }
    }
}

/// Where a container's PID namespace comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidNamespace {
    /// A new one of its own, where its init is PID 1.
    Own,
    /// The pause container's (`/proc/<pause>/ns/pid`).
    Join(PathBuf),
    /// The host's.
    Host,
}

/// Where a pod container's namespaces are, joined by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePaths {
    /// Network namespace (the bind-mounted netns); `None` shares the host's.
    pub net: Option<PathBuf>,
    /// IPC namespace (the pinned one, or `/proc/<pause>/ns/ipc`); `None` shares the host's
    /// (`hostIPC`).
    pub ipc: Option<PathBuf>,
    /// UTS namespace (the pinned one, or `/proc/<pause>/ns/uts`); `None` shares the host's.
    pub uts: Option<PathBuf>,
    /// PID namespace.
    pub pid: PidNamespace,
}

/// The namespaces of a pod container's spec, in containerd's order: network, IPC, UTS, PID,
/// mount (a new one). A host namespace is left out.
pub(super) fn container_namespaces(
    paths: &NamespacePaths,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let mut out = Vec::new();
    let joined = [
        (LinuxNamespaceType::Network, &paths.net),
        (LinuxNamespaceType::Ipc, &paths.ipc),
        (LinuxNamespaceType::Uts, &paths.uts),
    ];
    for (typ, path) in joined {
        if let Some(p) = path {
            out.push(ns(typ, Some(p))?);
        }
    }
    match &paths.pid {
        PidNamespace::Own => out.push(ns(LinuxNamespaceType::Pid, None)?),
        PidNamespace::Join(p) => out.push(ns(LinuxNamespaceType::Pid, Some(p))?),
        PidNamespace::Host => {}
    }
    out.push(ns(LinuxNamespaceType::Mount, None)?);
    Ok(out)
}

/// The namespaces of the pause spec: the pod's network, IPC and UTS by path (a `None` path
/// makes a new one), new PID and mount namespaces; host-network pods keep the host's network
/// and UTS, `hostIPC` the host's IPC, `hostPID` the host's PID namespace.
pub(super) fn pause_namespaces(
    netns: Option<&Path>,
    ipc: Option<&Path>,
    uts: Option<&Path>,
    modes: PodNamespaces,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let mut out = Vec::new();
    if let Some(netns) = netns {
        out.push(ns(LinuxNamespaceType::Network, Some(netns))?);
    }
    if modes.ipc != NamespaceMode::Node {
        out.push(ns(LinuxNamespaceType::Ipc, ipc)?);
    }
    if netns.is_some() {
        out.push(ns(LinuxNamespaceType::Uts, uts)?);
    }
    if modes.pid != NamespaceMode::Node {
        out.push(ns(LinuxNamespaceType::Pid, None)?);
    }
    out.push(ns(LinuxNamespaceType::Mount, None)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(type, path)` of each namespace, `-` for no path.
    fn listed(list: &[LinuxNamespace]) -> Vec<(String, String)> {
        list.iter()
            .map(|n| {
                let typ = serde_json::to_value(n.typ()).unwrap();
                let path = n
                    .path()
                    .as_ref()
                    .map_or("-".to_string(), |p| p.display().to_string());
                (typ.as_str().unwrap().to_string(), path)
            })
            .collect()
    }

    fn pairs(want: &[(&str, &str)]) -> Vec<(String, String)> {
        want.iter()
            .map(|(t, p)| (t.to_string(), p.to_string()))
            .collect()
    }

    fn spec(host_pid: bool, host_ipc: bool, share: bool) -> PodSpec {
        PodSpec {
            host_pid: Some(host_pid),
            host_ipc: Some(host_ipc),
            share_process_namespace: Some(share),
            ..Default::default()
        }
    }

    #[test]
    fn modes_as_the_kubelet_picks_them() {
        use NamespaceMode::*;
        let of = |p, i, s| {
            let m = PodNamespaces::of(&spec(p, i, s));
            (m.pid, m.ipc)
        };
        assert_eq!(of(false, false, false), (Container, Pod));
        assert_eq!(of(false, false, true), (Pod, Pod));
        assert_eq!(of(true, false, false), (Node, Pod));
        assert_eq!(of(false, true, false), (Container, Node));
        // Refused by validation; if it got here hostPID would win, as upstream's order.
        assert_eq!(of(true, false, true), (Node, Pod));
        assert_eq!(
            PodNamespaces::of(&PodSpec::default()),
            PodNamespaces::default()
        );
        // Recorded in meta.json by name.
        let json = serde_json::to_string(&PodNamespaces {
            pid: Pod,
            ipc: Node,
        })
        .unwrap();
        assert_eq!(json, r#"{"pid":"pod","ipc":"node"}"#);
    }

    #[test]
    fn container_namespaces_per_mode() {
        let paths = |ipc: Option<&str>, pid| NamespacePaths {
            net: Some("/run/netns/n".into()),
            ipc: ipc.map(PathBuf::from),
            uts: Some("/run/utsns/u".into()),
            pid,
        };
        // Default: the pod's net/ipc/uts, a PID namespace of its own.
        let got = container_namespaces(&paths(Some("/run/ipcns/i"), PidNamespace::Own)).unwrap();
        assert_eq!(
            listed(&got),
            pairs(&[
                ("network", "/run/netns/n"),
                ("ipc", "/run/ipcns/i"),
                ("uts", "/run/utsns/u"),
                ("pid", "-"),
                ("mount", "-"),
            ])
        );
        // shareProcessNamespace: pause's PID namespace by path.
        let got = container_namespaces(&paths(
            Some("/run/ipcns/i"),
            PidNamespace::Join("/proc/42/ns/pid".into()),
        ))
        .unwrap();
        assert_eq!(listed(&got)[3], ("pid".into(), "/proc/42/ns/pid".into()));
        // hostPID and hostIPC: no PID and no IPC namespace at all.
        let got = container_namespaces(&paths(None, PidNamespace::Host)).unwrap();
        assert_eq!(
            listed(&got),
            pairs(&[
                ("network", "/run/netns/n"),
                ("uts", "/run/utsns/u"),
                ("mount", "-"),
            ])
        );
    }

    #[test]
    fn pause_namespaces_per_mode() {
        let net = Some(Path::new("/run/netns/n"));
        let ipc = Some(Path::new("/run/ipcns/i"));
        let uts = Some(Path::new("/run/utsns/u"));
        let got = pause_namespaces(net, ipc, uts, PodNamespaces::default()).unwrap();
        assert_eq!(
            listed(&got),
            pairs(&[
                ("network", "/run/netns/n"),
                ("ipc", "/run/ipcns/i"),
                ("uts", "/run/utsns/u"),
                ("pid", "-"),
                ("mount", "-"),
            ])
        );
        // shareProcessNamespace: pause makes the PID namespace the containers join.
        let shared = PodNamespaces {
            pid: NamespaceMode::Pod,
            ipc: NamespaceMode::Pod,
        };
        assert_eq!(pause_namespaces(net, ipc, uts, shared).unwrap(), got);
        // hostPID + hostIPC + hostNetwork: only a mount namespace is left.
        let host = PodNamespaces {
            pid: NamespaceMode::Node,
            ipc: NamespaceMode::Node,
        };
        let got = pause_namespaces(None, None, None, host).unwrap();
        assert_eq!(listed(&got), pairs(&[("mount", "-")]));
    }
}

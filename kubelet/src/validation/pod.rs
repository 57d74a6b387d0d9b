//! Pod-level checks: metadata, spec enums, volumes, and the walk over the
//! containers.

use super::common::{has_backsteps, quantity};
use super::names::*;
use super::{container, Errors, FieldError, ValidationErrors, Value};
use k8s_openapi::api::core::v1::{Pod, PodSpec, Volume};
use std::collections::HashSet;

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
/// Sorted, as upstream lists a `sets.Set` in the error.
const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];

/// The volume types kubenode mounts; every other `Volume` field is refused by name.
const IMPLEMENTED_VOLUMES: &[&str] = &[
    "emptyDir",
    "hostPath",
    "nfs",
    "configMap",
    "secret",
    "downwardAPI",
    "projected",
];

/// Validates a pod from the API server: as [`validate_pod`], except that its ephemeral
/// containers are not refused. The API server adds them to a running pod (`kubectl debug`),
/// only through the `ephemeralcontainers` subresource and after validating them; refusing them
/// here would fail a running pod at the agent's next start. kubenode does not run them yet:
/// each one's status says so (`status::EPHEMERAL_NOT_RUN`).
pub fn validate_api_pod(pod: &Pod) -> Result<(), ValidationErrors> {
    if pod.spec.as_ref().is_some_and(|s| {
        s.ephemeral_containers
            .as_ref()
            .is_some_and(|e| !e.is_empty())
    }) {
        let mut pod = pod.clone();
        if let Some(spec) = pod.spec.as_mut() {
            spec.ephemeral_containers = None;
        }
        return validate_pod(&pod);
    }
    validate_pod(pod)
}

/// Validates a (defaulted) pod; all problems are reported together.
pub fn validate_pod(pod: &Pod) -> Result<(), ValidationErrors> {
    let mut errs = Errors::default();
    let meta = &pod.metadata;
    match meta.name.as_deref() {
        None | Some("") => errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )),
        Some(n) => errs.name("metadata.name", n, dns1123_subdomain_errors(n)),
    }
    if let Some(ns) = meta.namespace.as_deref() {
        errs.name("metadata.namespace", ns, dns1123_label_errors(ns));
    }
    super::meta::labels_and_annotations(meta, &mut errs);
    super::security::pod(pod, &mut errs);
    match &pod.spec {
        None => errs.push(FieldError::required("spec", "")),
        Some(spec) => validate_spec(spec, &mut errs),
    }
    if errs.0.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errs.0))
    }
}

fn validate_spec(spec: &PodSpec, errs: &mut Errors) {
    let volumes = validate_volumes(spec.volumes.as_deref().unwrap_or_default(), errs);

    if spec.containers.is_empty() {
        errs.push(FieldError::required("spec.containers", ""));
    }
    let mut names = HashSet::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        container::validate(
            c,
            &format!("spec.initContainers[{i}]"),
            true,
            spec,
            &volumes,
            &mut names,
            errs,
        );
    }
    for (i, c) in spec.containers.iter().enumerate() {
        container::validate(
            c,
            &format!("spec.containers[{i}]"),
            false,
            spec,
            &volumes,
            &mut names,
            errs,
        );
    }
    super::refused::pod(spec, errs);
    super::affinity::pod(spec, errs);
    // Options kubenode does not implement: refused, never silently ignored.
    // Pod-level `resources` would size the pod cgroup for all containers together; kubenode
    // sizes only each container's. (`hostUsers: false` is valid: admission rejects it with
    // what this node lacks, see `security::userns`.)
    let unimplemented = [("spec.resources", spec.resources.is_some())];
    for (field, set) in unimplemented {
        if set {
            errs.push(FieldError::forbidden(field, "not supported by kubenode"));
        }
    }

    // Upstream checks these two in the pod's security context, where its internal type keeps
    // them: hence the path.
    if spec.host_pid == Some(true) && spec.share_process_namespace == Some(true) {
        errs.push(FieldError::invalid(
            "spec.securityContext.shareProcessNamespace",
            Value::Json("true".into()),
            "ShareProcessNamespace and HostPID cannot both be enabled",
        ));
    }

    if let Some(p) = spec.restart_policy.as_deref() {
        if !RESTART_POLICIES.contains(&p) {
            errs.push(FieldError::not_supported(
                "spec.restartPolicy",
                p,
                RESTART_POLICIES,
            ));
        }
    }
    if let Some(p) = spec.dns_policy.as_deref() {
        if !DNS_POLICIES.contains(&p) {
            errs.push(FieldError::not_supported("spec.dnsPolicy", p, DNS_POLICIES));
        } else if p == "None"
            && spec
                .dns_config
                .as_ref()
                .is_none_or(|c| c.nameservers.as_ref().is_none_or(Vec::is_empty))
        {
            errs.push(FieldError::required(
                "spec.dnsConfig.nameservers",
                "must provide at least one DNS nameserver when DNS policy is None",
            ));
        }
    }
    if let Some(g) = spec.termination_grace_period_seconds {
        if g < 0 {
            errs.push(FieldError::invalid(
                "spec.terminationGracePeriodSeconds",
                g,
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(d) = spec.active_deadline_seconds {
        if d <= 0 {
            errs.push(FieldError::invalid(
                "spec.activeDeadlineSeconds",
                d,
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    if let Some(h) = spec.hostname.as_deref() {
        errs.name("spec.hostname", h, dns1123_label_errors(h));
    }
    if let Some(s) = spec.subdomain.as_deref() {
        errs.name("spec.subdomain", s, dns1123_label_errors(s));
    }
    for (i, a) in spec.host_aliases.iter().flatten().enumerate() {
        let f = format!("spec.hostAliases[{i}]");
        if a.ip.parse::<std::net::IpAddr>().is_err() {
            errs.push(FieldError::invalid(
                format!("{f}.ip"),
                &a.ip,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
        for (j, h) in a.hostnames.iter().flatten().enumerate() {
            errs.name(
                &format!("{f}.hostnames[{j}]"),
                h,
                dns1123_subdomain_errors(h),
            );
        }
    }
    if spec.host_network == Some(true) {
        for (ci, c) in spec.containers.iter().enumerate() {
            for (pi, p) in c.ports.iter().flatten().enumerate() {
                if let Some(hp) = p.host_port {
                    if hp != p.container_port {
                        errs.push(FieldError::invalid(
                            format!("spec.containers[{ci}].ports[{pi}].hostPort"),
                            hp,
                            "must match `containerPort` when `hostNetwork` is true",
                        ));
                    }
                }
            }
        }
    }
}

/// Checks the volumes and returns their names.
fn validate_volumes(volumes: &[Volume], errs: &mut Errors) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let f = format!("spec.volumes[{i}]");
        if v.name.is_empty() {
            errs.push(FieldError::required(format!("{f}.name"), ""));
        } else {
            errs.name(&format!("{f}.name"), &v.name, dns1123_label_errors(&v.name));
            if !names.insert(v.name.clone()) {
                errs.push(FieldError::duplicate(format!("{f}.name"), &v.name));
            }
        }
        // The volume types set, read off the serialized volume (every key but `name`), so a
        // type a newer API adds is refused by its name too rather than passed over.
        let kinds: Vec<String> = match serde_json::to_value(v) {
            Ok(serde_json::Value::Object(m)) => m
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| k != "name")
                .collect(),
            _ => Vec::new(),
        };
        // Upstream's count check: none is `Required`, several are `Forbidden`.
        if kinds.is_empty() {
            errs.push(FieldError::required(&f, "must specify a volume type"));
        } else if kinds.len() > 1 {
            errs.push(FieldError::forbidden(
                &f,
                "may not specify more than 1 volume type",
            ));
        }
        for kind in kinds
            .iter()
            .filter(|k| !IMPLEMENTED_VOLUMES.contains(&k.as_str()))
        {
            errs.push(FieldError::forbidden(
                format!("{f}.{kind}"),
                format!("kubenode does not implement {kind} volumes (it mounts emptyDir, hostPath, nfs, configMap, secret, downwardAPI and projected)"),
            ));
        }
        super::volumes::validate(v, &f, errs);
        if let Some(e) = &v.empty_dir {
            if let Some(m) = e.medium.as_deref() {
                if !["", "Memory"].contains(&m) {
                    errs.push(FieldError::not_supported(
                        format!("{f}.emptyDir.medium"),
                        m,
                        &["", "Memory"],
                    ));
                }
            }
            if let Some(q) = &e.size_limit {
                quantity(&format!("{f}.emptyDir.sizeLimit"), &q.0, errs);
            }
        }
        if let Some(h) = &v.host_path {
            let pf = format!("{f}.hostPath.path");
            if h.path.is_empty() {
                errs.push(FieldError::required(pf, ""));
            } else if has_backsteps(&h.path) {
                errs.push(FieldError::invalid(pf, &h.path, "must not contain '..'"));
            }
            if let Some(t) = h.type_.as_deref() {
                if !HOST_PATH_TYPES.contains(&t) {
                    errs.push(FieldError::not_supported(
                        format!("{f}.hostPath.type"),
                        t,
                        HOST_PATH_TYPES,
                    ));
                }
            }
        }
        if let Some(n) = &v.nfs {
            if n.server.is_empty() {
                errs.push(FieldError::required(format!("{f}.nfs.server"), ""));
            }
            if n.path.is_empty() {
                errs.push(FieldError::required(format!("{f}.nfs.path"), ""));
            } else if !n.path.starts_with('/') {
                errs.push(FieldError::invalid(
                    format!("{f}.nfs.path"),
                    &n.path,
                    "must be an absolute path",
                ));
            }
        }
    }
    names
}

//! Fields kubenode does not apply, refused with an error naming the field rather than
//! dropped without a word. Each is a row of `fields.rs`, whose test sets it on a valid pod
//! and expects the refusal here.

use super::{Errors, FieldError};
use k8s_openapi::api::core::v1::{Container, PodSpec};

const NO_DRA: &str = "not supported by kubenode: it does not implement dynamic resource allocation";
const LINUX_ONLY: &str = "not supported by kubenode: it runs Linux containers only";

fn forbid(errs: &mut Errors, field: impl Into<String>, why: &str) {
    errs.push(FieldError::forbidden(field, why));
}

/// The pod-level fields.
pub(super) fn pod(spec: &PodSpec, errs: &mut Errors) {
    if spec.hostname_override.is_some() {
        forbid(errs, "spec.hostnameOverride", "not supported by kubenode");
    }
    if let Some(os) = &spec.os {
        if os.name != "linux" {
            errs.push(FieldError::not_supported(
                "spec.os.name",
                &os.name,
                &["linux"],
            ));
        }
    }
    if spec.resource_claims.as_ref().is_some_and(|c| !c.is_empty()) {
        forbid(errs, "spec.resourceClaims", NO_DRA);
    }
    if spec
        .runtime_class_name
        .as_ref()
        .is_some_and(|r| !r.is_empty())
    {
        forbid(
            errs,
            "spec.runtimeClassName",
            "not supported by kubenode: every pod runs with the node's one OCI runtime",
        );
    }
    if spec
        .scheduling_gates
        .as_ref()
        .is_some_and(|g| !g.is_empty())
    {
        forbid(
            errs,
            "spec.schedulingGates",
            "a static pod is bound to its node, and a bound pod may not have scheduling gates",
        );
    }
    if spec.set_hostname_as_fqdn == Some(true) {
        forbid(
            errs,
            "spec.setHostnameAsFQDN",
            "not supported by kubenode: the pod's hostname is its short name",
        );
    }
    if let Some(sc) = &spec.security_context {
        if sc.windows_options.is_some() {
            forbid(errs, "spec.securityContext.windowsOptions", LINUX_ONLY);
        }
        if sc.se_linux_change_policy.is_some() {
            forbid(
                errs,
                "spec.securityContext.seLinuxChangePolicy",
                &super::security::se_linux_refusal(super::security::se_linux_enabled()),
            );
        }
        // Both policies are implemented (`runtime/src/spec/user.rs`); only the value is checked.
        match sc.supplemental_groups_policy.as_deref() {
            None | Some("Merge" | "Strict") => {}
            Some(p) => errs.push(FieldError::not_supported(
                "spec.securityContext.supplementalGroupsPolicy",
                p,
                &["Merge", "Strict"],
            )),
        }
    }
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        forbid(
            errs,
            "spec.ephemeralContainers",
            "static pods may not have ephemeral containers",
        );
    }
}

/// The fields of one container at `f` (`spec.containers[0]`).
pub(super) fn container(c: &Container, f: &str, errs: &mut Errors) {
    for (i, e) in c.env.iter().flatten().enumerate() {
        if e.value_from
            .as_ref()
            .is_some_and(|v| v.file_key_ref.is_some())
        {
            forbid(
                errs,
                format!("{f}.env[{i}].valueFrom.fileKeyRef"),
                "not supported by kubenode",
            );
        }
    }
    if c.resources
        .as_ref()
        .and_then(|r| r.claims.as_ref())
        .is_some_and(|c| !c.is_empty())
    {
        forbid(errs, format!("{f}.resources.claims"), NO_DRA);
    }
    if c.restart_policy_rules
        .as_ref()
        .is_some_and(|r| !r.is_empty())
    {
        forbid(
            errs,
            format!("{f}.restartPolicyRules"),
            "not supported by kubenode",
        );
    }
    if c.volume_devices.as_ref().is_some_and(|d| !d.is_empty()) {
        forbid(
            errs,
            format!("{f}.volumeDevices"),
            "not supported by kubenode: raw block devices need persistentVolumeClaim volumes",
        );
    }
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let mf = format!("{f}.volumeMounts[{i}]");
        if m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty()) {
            forbid(
                errs,
                format!("{mf}.subPathExpr"),
                "not supported by kubenode",
            );
        }
        match m.recursive_read_only.as_deref() {
            None | Some("Disabled") => {}
            Some("Enabled" | "IfPossible") => forbid(
                errs,
                format!("{mf}.recursiveReadOnly"),
                "not supported by kubenode: it does not make mounts recursively read-only",
            ),
            Some(v) => errs.push(FieldError::not_supported(
                format!("{mf}.recursiveReadOnly"),
                v,
                &["Disabled", "Enabled", "IfPossible"],
            )),
        }
    }
    if let Some(sc) = &c.security_context {
        if sc.windows_options.is_some() {
            forbid(
                errs,
                format!("{f}.securityContext.windowsOptions"),
                LINUX_ONLY,
            );
        }
    }
    let Some(l) = &c.lifecycle else { return };
    let handlers = [("postStart", &l.post_start), ("preStop", &l.pre_stop)];
    for (name, h) in handlers {
        if h.as_ref().is_some_and(|h| h.tcp_socket.is_some()) {
            forbid(
                errs,
                format!("{f}.lifecycle.{name}.tcpSocket"),
                "not supported as a lifecycle handler (upstream's kubelet fails such a hook)",
            );
        }
    }
    if l.stop_signal.is_some() {
        forbid(
            errs,
            format!("{f}.lifecycle.stopSignal"),
            "not supported by kubenode: the image's STOPSIGNAL (or SIGTERM) stops the container",
        );
    }
}

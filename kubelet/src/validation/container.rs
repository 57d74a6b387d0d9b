//! Per-container checks: name, image, ports, env, resources, mounts,
//! probes and lifecycle hooks.

use super::common::{has_backsteps, quantity};
use super::names::*;
use super::probe;
use super::{Errors, FieldError, Value};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use std::collections::HashSet;

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];
/// Downward API fields allowed in `env[].valueFrom.fieldRef.fieldPath`.
const FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
const RESOURCE_FIELDS: &[&str] = &[
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
];

pub(super) fn validate(
    c: &Container,
    f: &str,
    is_init: bool,
    spec: &PodSpec,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    errs: &mut Errors,
) {
    // Whether the pod shares the node's user namespace (upstream's default).
    let host_users = spec.host_users.unwrap_or(true);
    // The grace period a `sleep` hook must fit in (upstream validates the defaulted pod).
    let grace = spec.termination_grace_period_seconds.unwrap_or(30);
    if c.name.is_empty() {
        errs.push(FieldError::required(format!("{f}.name"), ""));
    } else {
        errs.name(&format!("{f}.name"), &c.name, dns1123_label_errors(&c.name));
        if !names.insert(c.name.clone()) {
            errs.push(FieldError::duplicate(format!("{f}.name"), &c.name));
        }
    }
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        errs.push(FieldError::required(format!("{f}.image"), ""));
    } else if let Some(i) = c.image.as_deref() {
        if i.trim() != i {
            errs.push(FieldError::invalid(
                format!("{f}.image"),
                i,
                "must not have leading or trailing whitespace",
            ));
        }
    }
    if let Some(p) = c.image_pull_policy.as_deref() {
        if !PULL_POLICIES.contains(&p) {
            errs.push(FieldError::not_supported(
                format!("{f}.imagePullPolicy"),
                p,
                PULL_POLICIES,
            ));
        }
    }
    if let Some(p) = c.termination_message_policy.as_deref() {
        if !MESSAGE_POLICIES.contains(&p) {
            errs.push(FieldError::invalid(
                format!("{f}.terminationMessagePolicy"),
                p,
                "must be 'File' or 'FallbackToLogsOnError'",
            ));
        }
    }
    let restartable = match c.restart_policy.as_deref() {
        None => false,
        Some("Always") if is_init => true,
        Some(p) if is_init => {
            errs.push(FieldError::not_supported(
                format!("{f}.restartPolicy"),
                p,
                &["Always"],
            ));
            false
        }
        Some(_) => {
            errs.push(FieldError::forbidden(
                format!("{f}.restartPolicy"),
                "may not be set for non-init containers",
            ));
            false
        }
    };
    ports(c, f, errs);
    proc_mount(c, f, host_users, errs);
    security_context(c, f, errs);
    super::security::container(c.security_context.as_ref(), f, errs);
    env(c, f, errs);
    resources(c, f, errs);
    mounts(c, f, volumes, errs);
    super::refused::container(c, f, errs);

    let probes = [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ];
    for (name, p) in probes {
        let Some(p) = p else { continue };
        let pf = format!("{f}.{name}");
        if is_init && !restartable {
            errs.push(FieldError::forbidden(
                pf,
                "may not be set for init containers without restartPolicy=Always",
            ));
            continue;
        }
        probe::validate_probe(p, &pf, name, c, errs);
    }
    if let Some(l) = &c.lifecycle {
        if is_init && !restartable {
            errs.push(FieldError::forbidden(
                format!("{f}.lifecycle"),
                "may not be set for init containers without restartPolicy=Always",
            ));
        } else {
            if let Some(h) = &l.post_start {
                probe::validate_handler(h, &format!("{f}.lifecycle.postStart"), grace, errs);
            }
            if let Some(h) = &l.pre_stop {
                probe::validate_handler(h, &format!("{f}.lifecycle.preStop"), grace, errs);
            }
        }
    }
}

fn ports(c: &Container, f: &str, errs: &mut Errors) {
    let mut seen = HashSet::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let pf = format!("{f}.ports[{i}]");
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = port_name_errors(n);
            if !msgs.is_empty() {
                errs.name(&format!("{pf}.name"), n, msgs);
            } else if !seen.insert(n.to_owned()) {
                errs.push(FieldError::duplicate(format!("{pf}.name"), n));
            }
        }
        if p.container_port == 0 {
            errs.push(FieldError::required(format!("{pf}.containerPort"), ""));
        } else if !(1..=65535).contains(&p.container_port) {
            errs.push(FieldError::invalid(
                format!("{pf}.containerPort"),
                p.container_port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(hp) = p.host_port.filter(|hp| *hp != 0) {
            if !(1..=65535).contains(&hp) {
                errs.push(FieldError::invalid(
                    format!("{pf}.hostPort"),
                    hp,
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
        if let Some(proto) = p.protocol.as_deref() {
            if !PROTOCOLS.contains(&proto) {
                errs.push(FieldError::not_supported(
                    format!("{pf}.protocol"),
                    proto,
                    PROTOCOLS,
                ));
            }
        }
        if let Some(ip) = p.host_ip.as_deref() {
            if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
                errs.push(FieldError::invalid(
                    format!("{pf}.hostIP"),
                    ip,
                    "must be a valid IP address",
                ));
            }
        }
    }
}

/// The `procMount` values (upstream `ValidateProcMountType`, in its order).
const PROC_MOUNT_TYPES: &[&str] = &["Default", "Unmasked"];

/// Upstream `ValidateSecurityContext`'s `procMount` checks: a known type, and `Unmasked` (no
/// masked or read-only paths in `/proc`) only in a pod with its own user namespace.
fn proc_mount(c: &Container, f: &str, host_users: bool, errs: &mut Errors) {
    let Some(pm) = c
        .security_context
        .as_ref()
        .and_then(|s| s.proc_mount.as_deref())
    else {
        return;
    };
    let field = format!("{f}.securityContext.procMount");
    if !PROC_MOUNT_TYPES.contains(&pm) {
        errs.push(FieldError::not_supported(&field, pm, PROC_MOUNT_TYPES));
    }
    if host_users && pm == "Unmasked" {
        errs.push(FieldError::invalid(
            &field,
            pm,
            "`hostUsers` must be false to use `Unmasked`",
        ));
    }
}

/// Upstream `ValidateSecurityContext`'s contradictions: no privilege escalation together with
/// `privileged` (a privileged container has every capability) or with an added
/// `CAP_SYS_ADMIN` (upstream compares that exact spelling).
fn security_context(c: &Container, f: &str, errs: &mut Errors) {
    let Some(sc) = &c.security_context else {
        return;
    };
    if sc.allow_privilege_escalation != Some(false) {
        return;
    }
    let value = || Value::Json(serde_json::to_string(sc).unwrap_or_default());
    let field = format!("{f}.securityContext");
    if sc.privileged == Some(true) {
        errs.push(FieldError::invalid(
            &field,
            value(),
            "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
        ));
    }
    let added = sc.capabilities.as_ref().and_then(|c| c.add.as_deref());
    for cap in added.unwrap_or_default() {
        if cap == "CAP_SYS_ADMIN" {
            errs.push(FieldError::invalid(
                &field,
                value(),
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            ));
        }
    }
}

fn field_path_ok(path: &str) -> bool {
    if FIELD_PATHS.contains(&path) {
        return true;
    }
    ["metadata.labels['", "metadata.annotations['"]
        .iter()
        .any(|pre| {
            path.strip_prefix(pre)
                .and_then(|r| r.strip_suffix("']"))
                .is_some_and(|k| qualified_name_errors(k).is_empty())
        })
}

fn env(c: &Container, f: &str, errs: &mut Errors) {
    for (i, e) in c.env.iter().flatten().enumerate() {
        let ef = format!("{f}.env[{i}]");
        if e.name.is_empty() {
            errs.push(FieldError::required(format!("{ef}.name"), ""));
        } else {
            errs.name(&format!("{ef}.name"), &e.name, env_var_name_errors(&e.name));
        }
        let Some(vf) = &e.value_from else { continue };
        let vff = format!("{ef}.valueFrom");
        if e.value.as_deref().is_some_and(|v| !v.is_empty()) {
            errs.push(FieldError::invalid(
                &vff,
                "",
                "may not be specified when `value` is not empty",
            ));
        }
        let n = [
            vf.field_ref.is_some(),
            vf.resource_field_ref.is_some(),
            vf.config_map_key_ref.is_some(),
            vf.secret_key_ref.is_some(),
            vf.file_key_ref.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n == 0 {
            errs.push(FieldError::invalid(&vff, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"));
        } else if n > 1 {
            errs.push(FieldError::invalid(
                &vff,
                "",
                "may not have more than one field specified at a time",
            ));
        }
        if let Some(fr) = &vf.field_ref {
            if let Some(v) = fr.api_version.as_deref() {
                if v != "v1" {
                    errs.push(FieldError::not_supported(
                        format!("{vff}.fieldRef.apiVersion"),
                        v,
                        &["v1"],
                    ));
                }
            }
            if fr.field_path.is_empty() {
                errs.push(FieldError::required(
                    format!("{vff}.fieldRef.fieldPath"),
                    "",
                ));
            } else if !field_path_ok(&fr.field_path) {
                let mut supported: Vec<&str> = FIELD_PATHS.to_vec();
                supported.extend(["metadata.annotations", "metadata.labels"]);
                supported.sort_unstable();
                errs.push(FieldError::not_supported(
                    format!("{vff}.fieldRef.fieldPath"),
                    &fr.field_path,
                    &supported,
                ));
            }
        }
        if let Some(rf) = &vf.resource_field_ref {
            if !RESOURCE_FIELDS.contains(&rf.resource.as_str()) {
                errs.push(FieldError::not_supported(
                    format!("{vff}.resourceFieldRef.resource"),
                    &rf.resource,
                    RESOURCE_FIELDS,
                ));
            }
            if let Some(cn) = rf.container_name.as_deref() {
                if !cn.is_empty() && cn != c.name {
                    errs.push(FieldError::invalid(
                        format!("{vff}.resourceFieldRef.containerName"),
                        cn,
                        "must be the name of this container",
                    ));
                }
            }
        }
        if let Some(r) = &vf.config_map_key_ref {
            key_selector(&r.name, &r.key, &format!("{vff}.configMapKeyRef"), errs);
        }
        if let Some(r) = &vf.secret_key_ref {
            key_selector(&r.name, &r.key, &format!("{vff}.secretKeyRef"), errs);
        }
    }
    for (i, ef) in c.env_from.iter().flatten().enumerate() {
        let idx = format!("{f}.envFrom[{i}]");
        if let Some(p) = ef.prefix.as_deref().filter(|p| !p.is_empty()) {
            errs.name(&format!("{idx}.prefix"), p, env_var_name_errors(p));
        }
        let refs = [
            ef.config_map_ref
                .as_ref()
                .map(|r| (r.name.as_str(), "configMapRef")),
            ef.secret_ref
                .as_ref()
                .map(|r| (r.name.as_str(), "secretRef")),
        ];
        for (name, field) in refs.iter().flatten() {
            let nf = format!("{idx}.{field}.name");
            if name.is_empty() {
                errs.push(FieldError::required(nf, ""));
            } else {
                errs.name(&nf, name, dns1123_subdomain_errors(name));
            }
        }
        match refs.iter().flatten().count() {
            0 => errs.push(FieldError::invalid(
                format!("{f}.envFrom"),
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            )),
            1 => {}
            _ => errs.push(FieldError::forbidden(
                idx,
                "may not have more than one field specified at a time",
            )),
        }
    }
}

/// Upstream `validateConfigMapKeySelector`/`validateSecretKeySelector`: the object's name (a
/// DNS-1123 subdomain) and the key (`IsConfigMapKey`).
fn key_selector(name: &str, key: &str, f: &str, errs: &mut Errors) {
    errs.name(&format!("{f}.name"), name, dns1123_subdomain_errors(name));
    if key.is_empty() {
        errs.push(FieldError::required(format!("{f}.key"), ""));
    } else {
        errs.name(&format!("{f}.key"), key, config_map_key_errors(key));
    }
}

fn resources(c: &Container, f: &str, errs: &mut Errors) {
    let Some(r) = &c.resources else { return };
    let rf = format!("{f}.resources");
    for (kind, map) in [("limits", &r.limits), ("requests", &r.requests)] {
        for (name, q) in map.iter().flatten() {
            let qf = format!("{rf}.{kind}[{name}]");
            if !is_standard_resource(name) {
                errs.push(FieldError::invalid(
                    &qf,
                    name,
                    "must be a standard resource type or fully qualified",
                ));
            }
            quantity(&qf, &q.0, errs);
        }
    }
    let (Some(req), Some(lim)) = (&r.requests, &r.limits) else {
        return;
    };
    for (name, rq) in req {
        let Some(lq) = lim.get(name) else { continue };
        let (Ok(a), Ok(b)) = (
            super::quantity::Quantity::parse(&rq.0),
            super::quantity::Quantity::parse(&lq.0),
        ) else {
            continue;
        };
        if a > b {
            errs.push(FieldError::invalid(
                format!("{rf}.requests"),
                rq.0.as_str(),
                format!("must be less than or equal to {name} limit of {}", lq.0),
            ));
        }
    }
}

fn is_standard_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage")
        || name.starts_with("hugepages-")
        || (name.contains('/') && qualified_name_errors(name).is_empty())
}

fn mounts(c: &Container, f: &str, volumes: &HashSet<String>, errs: &mut Errors) {
    let mut paths = HashSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let mf = format!("{f}.volumeMounts[{i}]");
        if m.name.is_empty() {
            errs.push(FieldError::required(format!("{mf}.name"), ""));
        } else if !volumes.contains(&m.name) {
            errs.push(FieldError::not_found(format!("{mf}.name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(format!("{mf}.mountPath"), ""));
        } else if !paths.insert(m.mount_path.clone()) {
            errs.push(FieldError::invalid(
                format!("{mf}.mountPath"),
                &m.mount_path,
                "must be unique",
            ));
        }
        for (key, sp) in [("subPath", &m.sub_path), ("subPathExpr", &m.sub_path_expr)] {
            let Some(sp) = sp.as_deref() else { continue };
            if sp.starts_with('/') {
                errs.push(FieldError::invalid(
                    format!("{mf}.{key}"),
                    sp,
                    "must be a relative path",
                ));
            }
            if has_backsteps(sp) {
                errs.push(FieldError::invalid(
                    format!("{mf}.{key}"),
                    sp,
                    "must not contain '..'",
                ));
            }
        }
        if m.sub_path.as_deref().is_some_and(|s| !s.is_empty())
            && m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty())
        {
            errs.push(FieldError::invalid(
                format!("{mf}.subPathExpr"),
                m.sub_path_expr.as_deref().unwrap_or(""),
                "subPathExpr and subPath are mutually exclusive",
            ));
        }
        if let Some(p) = m.mount_propagation.as_deref() {
            const MODES: &[&str] = &["Bidirectional", "HostToContainer", "None"];
            if !MODES.contains(&p) {
                errs.push(FieldError::not_supported(
                    format!("{mf}.mountPropagation"),
                    p,
                    MODES,
                ));
            } else if p == "Bidirectional"
                && !c
                    .security_context
                    .as_ref()
                    .and_then(|s| s.privileged)
                    .unwrap_or(false)
            {
                errs.push(FieldError::forbidden(
                    format!("{mf}.mountPropagation"),
                    "Bidirectional mount propagation is available only to privileged containers",
                ));
            }
        }
    }
}

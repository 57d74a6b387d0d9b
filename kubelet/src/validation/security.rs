//! seccomp and AppArmor profiles in a pod, as upstream's `validateSeccompProfileField`,
//! `ValidateAppArmorProfileField`, `ValidateSeccompPodAnnotations`,
//! `ValidateAppArmorPodAnnotations` and, on create, `validateSeccompAnnotationsAndFields` and
//! `validateAppArmorAnnotationsAndFieldsMatchOnCreate` check them (`pkg/apis/core/validation`).

use super::common::has_backsteps;
use super::{Errors, FieldError, Value};
use k8s_openapi::api::core::v1::{
    AppArmorProfile, Pod, PodSecurityContext, SELinuxOptions, SeccompProfile, SecurityContext,
};

const TYPES: &[&str] = &["Localhost", "RuntimeDefault", "Unconfined"];
const SECCOMP_POD: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER: &str = "container.seccomp.security.alpha.kubernetes.io/";
const APPARMOR_CONTAINER: &str = "container.apparmor.security.beta.kubernetes.io/";

fn json<T: serde::Serialize>(v: &T) -> Value {
    Value::Json(serde_json::to_string(v).unwrap_or_default())
}

/// A `localhostProfile`: relative, without `..` (upstream `validateLocalDescendingPath`).
fn descending_path(field: &str, path: &str, errs: &mut Errors) {
    if path.starts_with('/') {
        errs.push(FieldError::invalid(field, path, "must be a relative path"));
    }
    if has_backsteps(path) {
        errs.push(FieldError::invalid(field, path, "must not contain '..'"));
    }
}

/// `<f>.seccompProfile` of a pod or container security context.
fn seccomp_field(sp: Option<&SeccompProfile>, f: &str, errs: &mut Errors) {
    let Some(sp) = sp else { return };
    let f = format!("{f}.seccompProfile");
    match sp.type_.as_str() {
        "" => errs.push(FieldError::required(
            format!("{f}.type"),
            "type is required when seccompProfile is set",
        )),
        t if !TYPES.contains(&t) => {
            errs.push(FieldError::not_supported(format!("{f}.type"), t, TYPES))
        }
        _ => {}
    }
    let lf = format!("{f}.localhostProfile");
    match (sp.type_.as_str(), sp.localhost_profile.as_deref()) {
        ("Localhost", None) => errs.push(FieldError::required(
            lf,
            "must be set when seccomp type is Localhost",
        )),
        ("Localhost", Some(p)) => descending_path(&lf, p, errs),
        (_, Some(_)) => errs.push(FieldError::invalid(
            lf,
            json(sp),
            "can only be set when seccomp type is Localhost",
        )),
        (_, None) => {}
    }
}

/// `<f>.appArmorProfile` of a pod or container security context.
fn apparmor_field(p: Option<&AppArmorProfile>, f: &str, errs: &mut Errors) {
    let Some(p) = p else { return };
    let f = format!("{f}.appArmorProfile");
    let lf = format!("{f}.localhostProfile");
    match p.type_.as_str() {
        "Localhost" => match p.localhost_profile.as_deref() {
            None => errs.push(FieldError::required(
                lf,
                "must be set when AppArmor type is Localhost",
            )),
            Some(name) => {
                if name.trim() != name {
                    errs.push(FieldError::invalid(
                        &lf,
                        name,
                        "must not be padded with whitespace",
                    ));
                } else if name.is_empty() {
                    errs.push(FieldError::required(
                        &lf,
                        "must be set when AppArmor type is Localhost",
                    ));
                }
                // PATH_MAX - 1 (upstream's `Too long` error).
                if name.len() > 4095 {
                    errs.push(FieldError::invalid(
                        &lf,
                        name,
                        "may not be more than 4095 bytes",
                    ));
                }
            }
        },
        "RuntimeDefault" | "Unconfined" => {
            if let Some(name) = p.localhost_profile.as_deref() {
                errs.push(FieldError::invalid(
                    lf,
                    name,
                    "can only be set when AppArmor type is Localhost",
                ));
            }
        }
        "" => errs.push(FieldError::required(
            format!("{f}.type"),
            "type is required when appArmorProfile is set",
        )),
        t => errs.push(FieldError::not_supported(format!("{f}.type"), t, TYPES)),
    }
}

/// The file the kernel shows when SELinux is enabled (libselinux's `is_selinux_enabled`
/// looks for the selinuxfs mount; this is its `enforce` entry).
const SELINUX_ENFORCE: &str = "/sys/fs/selinux/enforce";

/// Whether SELinux is enabled on this host (checked once).
pub(super) fn se_linux_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::path::Path::new(SELINUX_ENFORCE).exists())
}

/// Why `seLinuxOptions` are refused here. Upstream's kubelet hands them to the runtime,
/// which applies them where SELinux is on and drops them where it is off; kubenode applies
/// no SELinux labels at all, so it refuses them rather than drop them without a word.
pub(super) fn se_linux_refusal(enabled: bool) -> String {
    if enabled {
        "not supported by kubenode: it does not pass SELinux labels to the runtime".into()
    } else {
        format!("SELinux is not enabled on this node (no {SELINUX_ENFORCE}), so kubenode cannot apply SELinux labels")
    }
}

/// `<f>.seLinuxOptions` of a pod or container security context: refused when set.
fn se_linux_field(o: Option<&SELinuxOptions>, f: &str, errs: &mut Errors) {
    if o.is_some() {
        errs.push(FieldError::forbidden(
            format!("{f}.seLinuxOptions"),
            se_linux_refusal(se_linux_enabled()),
        ));
    }
}

/// A user or group id (upstream `IsValidUserID`/`IsValidGroupID`: the same range, the same
/// words).
fn id_field(field: &str, id: Option<i64>, errs: &mut Errors) {
    if let Some(id) = id.filter(|id| !(0..=i64::from(i32::MAX)).contains(id)) {
        errs.push(FieldError::invalid(
            field,
            Value::Json(id.to_string()),
            "must be between 0 and 2147483647, inclusive",
        ));
    }
}

/// The ids and the ownership policy of a pod's security context, as upstream's
/// `ValidatePodSecurityContext`.
fn pod_ids(psc: &PodSecurityContext, errs: &mut Errors) {
    let f = "spec.securityContext";
    id_field(&format!("{f}.runAsUser"), psc.run_as_user, errs);
    id_field(&format!("{f}.runAsGroup"), psc.run_as_group, errs);
    id_field(&format!("{f}.fsGroup"), psc.fs_group, errs);
    for (i, g) in psc.supplemental_groups.iter().flatten().enumerate() {
        id_field(&format!("{f}.supplementalGroups[{i}]"), Some(*g), errs);
    }
    if let Some(p) = psc.fs_group_change_policy.as_deref() {
        const POLICIES: &[&str] = &["OnRootMismatch", "Always"];
        if !POLICIES.contains(&p) {
            errs.push(FieldError::not_supported(
                format!("{f}.fsGroupChangePolicy"),
                p,
                POLICIES,
            ));
        }
    }
}

/// A container's security context: its ids, seccomp, AppArmor and SELinux fields.
pub(super) fn container(sc: Option<&SecurityContext>, f: &str, errs: &mut Errors) {
    let Some(sc) = sc else { return };
    let f = format!("{f}.securityContext");
    id_field(&format!("{f}.runAsUser"), sc.run_as_user, errs);
    id_field(&format!("{f}.runAsGroup"), sc.run_as_group, errs);
    seccomp_field(sc.seccomp_profile.as_ref(), &f, errs);
    apparmor_field(sc.app_armor_profile.as_ref(), &f, errs);
    se_linux_field(sc.se_linux_options.as_ref(), &f, errs);
}

/// A seccomp annotation's value (upstream `ValidateSeccompProfile`).
fn seccomp_annotation(field: &str, v: &str, errs: &mut Errors) {
    if ["runtime/default", "docker/default", "unconfined"].contains(&v) {
        return;
    }
    match v.strip_prefix("localhost/") {
        Some(path) => descending_path(field, path, errs),
        None => errs.push(FieldError::invalid(
            field,
            v,
            "must be a valid seccomp profile",
        )),
    }
}

/// Whether a deprecated annotation agrees with a profile field of `kind` (`seccomp`,
/// `apparmor`); `default` are the annotation values meaning `RuntimeDefault`.
fn matches(
    f: &str,
    kind: &str,
    annotation: &str,
    (type_, localhost): (&str, Option<&str>),
    default: &[&str],
    errs: &mut Errors,
) {
    let field = if kind == "seccomp" {
        "seccompProfile"
    } else {
        "appArmorProfile"
    };
    let type_matches = match type_ {
        "Unconfined" => annotation == "unconfined",
        "RuntimeDefault" => default.contains(&annotation),
        "Localhost" => annotation.starts_with("localhost/"),
        _ => true,
    };
    if !type_matches {
        errs.push(FieldError::forbidden(
            format!("{f}.{field}.type"),
            format!("{kind} type in annotation and field must match"),
        ));
    } else if type_ == "Localhost" && annotation.strip_prefix("localhost/") != localhost {
        errs.push(FieldError::forbidden(
            format!("{f}.{field}.localhostProfile"),
            format!("{kind} profile in annotation and field must match"),
        ));
    }
}

/// The pod's own profile fields and the deprecated annotations: their values, and their
/// agreement with the fields.
pub(super) fn pod(pod: &Pod, errs: &mut Errors) {
    let spec = pod.spec.clone().unwrap_or_default();
    let psc = spec.security_context.as_ref();
    if let Some(psc) = psc {
        pod_ids(psc, errs);
    }
    let pod_seccomp = psc.and_then(|s| s.seccomp_profile.as_ref());
    let pod_apparmor = psc.and_then(|s| s.app_armor_profile.as_ref());
    seccomp_field(pod_seccomp, "spec.securityContext", errs);
    apparmor_field(pod_apparmor, "spec.securityContext", errs);
    se_linux_field(
        psc.and_then(|s| s.se_linux_options.as_ref()),
        "spec.securityContext",
        errs,
    );
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let names: Vec<&str> = crate::pod_containers(&spec)
        .map(|c| c.name.as_str())
        .collect();
    for (k, v) in &annotations {
        if k == SECCOMP_POD || k.starts_with(SECCOMP_CONTAINER) {
            // Upstream names these with `Child`, not `Key`.
            seccomp_annotation(&format!("metadata.annotations.{k}"), v, errs);
        }
        if let Some(name) = k.strip_prefix(APPARMOR_CONTAINER) {
            let field = format!("metadata.annotations[{k}]");
            if !names.contains(&name) {
                errs.push(FieldError::invalid(&field, name, "container not found"));
            }
            let known = v.is_empty() || v == "runtime/default" || v == "unconfined";
            if !known && !v.starts_with("localhost/") {
                errs.push(FieldError::invalid(
                    &field,
                    v,
                    format!("invalid AppArmor profile name: {v:?}"),
                ));
            }
        }
    }
    let seccomp_defaults = ["runtime/default", "docker/default"];
    if let (Some(field), Some(a)) = (pod_seccomp, annotations.get(SECCOMP_POD)) {
        let f = (field.type_.as_str(), field.localhost_profile.as_deref());
        matches(
            "spec.securityContext",
            "seccomp",
            a,
            f,
            &seccomp_defaults,
            errs,
        );
    }
    let paths = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("spec.initContainers[{i}]"), c))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("spec.containers[{i}]"), c)),
        );
    for (path, c) in paths {
        let sc = c.security_context.as_ref();
        let f = format!("{path}.securityContext");
        if let (Some(field), Some(a)) = (
            sc.and_then(|s| s.seccomp_profile.as_ref()),
            annotations.get(&format!("{SECCOMP_CONTAINER}{}", c.name)),
        ) {
            let fv = (field.type_.as_str(), field.localhost_profile.as_deref());
            matches(&f, "seccomp", a, fv, &seccomp_defaults, errs);
        }
        let effective = sc
            .and_then(|s| s.app_armor_profile.as_ref())
            .or(pod_apparmor);
        if let (Some(field), Some(a)) = (
            effective,
            annotations.get(&format!("{APPARMOR_CONTAINER}{}", c.name)),
        ) {
            let fv = (field.type_.as_str(), field.localhost_profile.as_deref());
            matches(&f, "apparmor", a, fv, &["runtime/default"], errs);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validation::validate_pod;
    use k8s_openapi::api::core::v1::Pod;

    /// The error strings of a pod whose spec is `spec` and annotations `annotations`.
    fn errors(annotations: &str, spec: &str) -> Vec<String> {
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: default\n  annotations: {{{annotations}}}\nspec:\n{spec}"
        );
        let pod: Pod = serde_yaml_ng::from_str(&yaml).unwrap();
        match validate_pod(&pod) {
            Ok(()) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn container(sc: &str) -> String {
        format!("  containers:\n  - name: c\n    image: busybox\n    securityContext: {sc}\n")
    }

    #[test]
    fn seccomp_fields_as_upstream() {
        assert!(errors("", &container("{seccompProfile: {type: RuntimeDefault}}")).is_empty());
        assert!(errors(
            "",
            &container("{seccompProfile: {type: Localhost, localhostProfile: a/b.json}}")
        )
        .is_empty());
        let f = "spec.containers[0].securityContext.seccompProfile";
        assert_eq!(
            errors("", &container("{seccompProfile: {type: Localhost}}")),
            [format!(
                "{f}.localhostProfile: Required value: must be set when seccomp type is Localhost"
            )]
        );
        assert_eq!(
            errors("", &container("{seccompProfile: {type: Default}}")),
            [format!("{f}.type: Unsupported value: \"Default\": supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\"")]
        );
        assert_eq!(
            errors("", &container("{seccompProfile: {type: \"\"}}")),
            [format!(
                "{f}.type: Required value: type is required when seccompProfile is set"
            )]
        );
        assert_eq!(
            errors("", &container("{seccompProfile: {type: RuntimeDefault, localhostProfile: x}}")),
            [format!("{f}.localhostProfile: Invalid value: {{\"localhostProfile\":\"x\",\"type\":\"RuntimeDefault\"}}: can only be set when seccomp type is Localhost")]
        );
        assert_eq!(
            errors(
                "",
                &container("{seccompProfile: {type: Localhost, localhostProfile: /etc/x.json}}")
            ),
            [format!(
                "{f}.localhostProfile: Invalid value: \"/etc/x.json\": must be a relative path"
            )]
        );
        assert_eq!(
            errors(
                "",
                &container("{seccompProfile: {type: Localhost, localhostProfile: ../x.json}}")
            ),
            [format!(
                "{f}.localhostProfile: Invalid value: \"../x.json\": must not contain '..'"
            )]
        );
        let pod_level = "  securityContext:\n    seccompProfile: {type: Localhost}\n  containers:\n  - {name: c, image: busybox}\n";
        assert_eq!(
            errors("", pod_level),
            ["spec.securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost"]
        );
    }

    #[test]
    fn apparmor_fields_as_upstream() {
        assert!(errors("", &container("{appArmorProfile: {type: RuntimeDefault}}")).is_empty());
        let f = "spec.containers[0].securityContext.appArmorProfile";
        assert_eq!(
            errors("", &container("{appArmorProfile: {type: Localhost}}")),
            [format!(
                "{f}.localhostProfile: Required value: must be set when AppArmor type is Localhost"
            )]
        );
        assert_eq!(
            errors(
                "",
                &container("{appArmorProfile: {type: Localhost, localhostProfile: \" x\"}}")
            ),
            [format!(
                "{f}.localhostProfile: Invalid value: \" x\": must not be padded with whitespace"
            )]
        );
        assert_eq!(
            errors("", &container("{appArmorProfile: {type: Unconfined, localhostProfile: x}}")),
            [format!("{f}.localhostProfile: Invalid value: \"x\": can only be set when AppArmor type is Localhost")]
        );
        assert_eq!(
            errors("", &container("{appArmorProfile: {type: Other}}")),
            [format!("{f}.type: Unsupported value: \"Other\": supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\"")]
        );
    }

    #[test]
    fn deprecated_annotations_are_checked_and_must_agree_with_fields() {
        let plain = "  containers:\n  - {name: c, image: busybox}\n";
        assert!(errors(
            "seccomp.security.alpha.kubernetes.io/pod: runtime/default",
            plain
        )
        .is_empty());
        assert_eq!(
            errors("seccomp.security.alpha.kubernetes.io/pod: default", plain),
            ["metadata.annotations.seccomp.security.alpha.kubernetes.io/pod: Invalid value: \"default\": must be a valid seccomp profile"]
        );
        assert_eq!(
            errors("container.seccomp.security.alpha.kubernetes.io/c: localhost/../x", plain),
            ["metadata.annotations.container.seccomp.security.alpha.kubernetes.io/c: Invalid value: \"../x\": must not contain '..'"]
        );
        assert_eq!(
            errors(
                "container.seccomp.security.alpha.kubernetes.io/c: unconfined",
                &container("{seccompProfile: {type: RuntimeDefault}}")
            ),
            ["spec.containers[0].securityContext.seccompProfile.type: Forbidden: seccomp type in annotation and field must match"]
        );
        assert_eq!(
            errors(
                "container.seccomp.security.alpha.kubernetes.io/c: localhost/a.json",
                &container("{seccompProfile: {type: Localhost, localhostProfile: b.json}}")
            ),
            ["spec.containers[0].securityContext.seccompProfile.localhostProfile: Forbidden: seccomp profile in annotation and field must match"]
        );
        assert!(errors(
            "container.seccomp.security.alpha.kubernetes.io/c: docker/default",
            &container("{seccompProfile: {type: RuntimeDefault}}")
        )
        .is_empty());
        assert_eq!(
            errors("container.apparmor.security.beta.kubernetes.io/d: runtime/default", plain),
            ["metadata.annotations[container.apparmor.security.beta.kubernetes.io/d]: Invalid value: \"d\": container not found"]
        );
        assert_eq!(
            errors("container.apparmor.security.beta.kubernetes.io/c: enforce", plain),
            ["metadata.annotations[container.apparmor.security.beta.kubernetes.io/c]: Invalid value: \"enforce\": invalid AppArmor profile name: \"enforce\""]
        );
        // The pod's field is the container's effective one.
        let pod_level = "  securityContext:\n    appArmorProfile: {type: RuntimeDefault}\n  containers:\n  - {name: c, image: busybox}\n";
        assert_eq!(
            errors("container.apparmor.security.beta.kubernetes.io/c: unconfined", pod_level),
            ["spec.containers[0].securityContext.appArmorProfile.type: Forbidden: apparmor type in annotation and field must match"]
        );
    }

    /// User and group ids out of range and an unknown `fsGroupChangePolicy`, with upstream's
    /// words; the bounds themselves pass.
    #[test]
    fn ids_and_fs_group_change_policy_as_upstream() {
        let range = "must be between 0 and 2147483647, inclusive";
        let pod = "  securityContext: {runAsUser: -1, runAsGroup: 2147483648, fsGroup: -5, supplementalGroups: [1, -2], fsGroupChangePolicy: Sometimes}\n";
        assert_eq!(
            errors(
                "",
                &format!("{pod}{}", container("{runAsUser: 4294967295, runAsGroup: -1}"))
            ),
            [
                format!("spec.securityContext.runAsUser: Invalid value: -1: {range}"),
                format!("spec.securityContext.runAsGroup: Invalid value: 2147483648: {range}"),
                format!("spec.securityContext.fsGroup: Invalid value: -5: {range}"),
                format!("spec.securityContext.supplementalGroups[1]: Invalid value: -2: {range}"),
                "spec.securityContext.fsGroupChangePolicy: Unsupported value: \"Sometimes\": supported values: \"OnRootMismatch\", \"Always\"".to_string(),
                format!("spec.containers[0].securityContext.runAsUser: Invalid value: 4294967295: {range}"),
                format!("spec.containers[0].securityContext.runAsGroup: Invalid value: -1: {range}"),
            ]
        );
        let pod = "  securityContext: {runAsUser: 0, fsGroup: 2147483647, fsGroupChangePolicy: OnRootMismatch}\n";
        assert_eq!(
            errors("", &format!("{pod}{}", container("{runAsUser: 1000}"))),
            Vec::<String>::new()
        );
    }

    /// `seLinuxOptions`, pod and container level, are refused by field path with the reason
    /// for this host; an empty `{}` is refused too (it still asks for labels).
    #[test]
    fn se_linux_options_refused() {
        let why = super::se_linux_refusal(super::se_linux_enabled());
        let spec = "  securityContext: {seLinuxOptions: {level: \"s0:c1,c2\"}}\n  initContainers:\n  - {name: i, image: busybox, securityContext: {seLinuxOptions: {}}}\n";
        assert_eq!(
            errors(
                "",
                &format!("{spec}{}", container("{seLinuxOptions: {type: spc_t}}"))
            ),
            [
                format!("spec.securityContext.seLinuxOptions: Forbidden: {why}"),
                format!("spec.initContainers[0].securityContext.seLinuxOptions: Forbidden: {why}"),
                format!("spec.containers[0].securityContext.seLinuxOptions: Forbidden: {why}"),
            ]
        );
        assert_eq!(
            super::se_linux_refusal(false),
            "SELinux is not enabled on this node (no /sys/fs/selinux/enforce), so kubenode cannot apply SELinux labels"
        );
        assert_eq!(
            super::se_linux_refusal(true),
            "not supported by kubenode: it does not pass SELinux labels to the runtime"
        );
    }
}

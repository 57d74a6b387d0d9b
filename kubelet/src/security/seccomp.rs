//! The seccomp profile of a container, as the kubelet's `getSeccompProfile` resolves it: the
//! container's `securityContext.seccompProfile` wins over the pod's; with neither, the
//! runtime default when the node sets `seccompDefault: true` (`--seccomp-default`), else
//! `Unconfined`. A `Localhost` profile is a path below `<root-dir>/seccomp/`.
//!
//! The deprecated annotations (`seccomp.security.alpha.kubernetes.io/pod`,
//! `container.seccomp.security.alpha.kubernetes.io/<name>`) have no effect since Kubernetes
//! 1.27, here too: validation still checks their values and that they agree with the fields,
//! and a pod that sets one without the field gets the API server's warning as an event.

use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, PodSpec, SecurityContext};
use kubenode_runtime::spec::SeccompProfile;

/// The pod-level deprecated annotation.
pub const POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
/// The prefix of the container-level deprecated annotation (then the container name).
pub const CONTAINER_ANNOTATION_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";

/// The profile for `container` of a pod with security context `pod`; the error is the
/// kubelet's (`CreateContainerConfigError`).
pub fn seccomp_profile(
    pod: Option<&PodSecurityContext>,
    container: &Container,
    root_dir: &Path,
    seccomp_default: bool,
) -> Result<SeccompProfile, String> {
    let field = container
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .or_else(|| pod.and_then(|p| p.seccomp_profile.as_ref()));
    let Some(field) = field else {
        return Ok(if seccomp_default {
            SeccompProfile::RuntimeDefault
        } else {
            SeccompProfile::Unconfined
        });
    };
    match field.type_.as_str() {
        "RuntimeDefault" => Ok(SeccompProfile::RuntimeDefault),
        "Localhost" => match field.localhost_profile.as_deref() {
            Some(p) if !p.is_empty() => {
                Ok(SeccompProfile::Localhost(root_dir.join("seccomp").join(p)))
            }
            _ => Err("localhostProfile must be set if seccompProfile type is Localhost.".into()),
        },
        // Validation admits only Unconfined here.
        _ => Ok(SeccompProfile::Unconfined),
    }
}

/// Whether a container of the pod (init, regular or ephemeral) is privileged: upstream's
/// `HasPrivilegedContainer`, which makes the sandbox privileged, and its pause container run
/// without a seccomp filter.
pub fn has_privileged_container(spec: &PodSpec) -> bool {
    let privileged = |sc: Option<&SecurityContext>| sc.and_then(|s| s.privileged) == Some(true);
    crate::pod_containers(spec).any(|c| privileged(c.security_context.as_ref()))
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| privileged(c.security_context.as_ref()))
}

/// The API server's warnings for deprecated seccomp annotations set without the field they
/// stand for: `metadata.annotations[KEY]: non-functional in v1.27+; use the "seccompProfile"
/// field instead`.
pub fn deprecated_annotation_warnings(pod: &Pod) -> Vec<String> {
    let Some(annotations) = pod.metadata.annotations.as_ref() else {
        return Vec::new();
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let warn = |key: &str| {
        format!(
            "metadata.annotations[{key}]: non-functional in v1.27+; use the \"seccompProfile\" field instead"
        )
    };
    let mut out = Vec::new();
    let pod_field = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref());
    if pod_field.is_none() && annotations.contains_key(POD_ANNOTATION) {
        out.push(warn(POD_ANNOTATION));
    }
    for c in crate::pod_containers(&spec) {
        let key = format!("{CONTAINER_ANNOTATION_PREFIX}{}", c.name);
        let field = c
            .security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref());
        if field.is_none() && annotations.contains_key(&key) {
            out.push(warn(&key));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EphemeralContainer, SeccompProfile as Field};
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn field(type_: &str, localhost: Option<&str>) -> Field {
        Field {
            type_: type_.into(),
            localhost_profile: localhost.map(Into::into),
        }
    }

    fn container(profile: Option<Field>) -> Container {
        Container {
            name: "c".into(),
            security_context: profile.map(|p| SecurityContext {
                seccomp_profile: Some(p),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod_sc(profile: Field) -> PodSecurityContext {
        PodSecurityContext {
            seccomp_profile: Some(profile),
            ..Default::default()
        }
    }

    const ROOT: &str = "/var/lib/kubenode";

    #[test]
    fn container_wins_over_pod_and_seccomp_default_fills_the_gap() {
        let root = Path::new(ROOT);
        let rd = pod_sc(field("RuntimeDefault", None));
        let unc = container(Some(field("Unconfined", None)));
        assert_eq!(
            seccomp_profile(Some(&rd), &unc, root, false),
            Ok(SeccompProfile::Unconfined)
        );
        let plain = container(None);
        assert_eq!(
            seccomp_profile(Some(&rd), &plain, root, false),
            Ok(SeccompProfile::RuntimeDefault)
        );
        let unc_pod = pod_sc(field("Unconfined", None));
        let rd_c = container(Some(field("RuntimeDefault", None)));
        assert_eq!(
            seccomp_profile(Some(&unc_pod), &rd_c, root, false),
            Ok(SeccompProfile::RuntimeDefault)
        );
        // Neither level: Unconfined, or the runtime default with seccompDefault.
        assert_eq!(
            seccomp_profile(None, &plain, root, false),
            Ok(SeccompProfile::Unconfined)
        );
        assert_eq!(
            seccomp_profile(None, &plain, root, true),
            Ok(SeccompProfile::RuntimeDefault)
        );
        // seccompDefault does not override an explicit Unconfined.
        assert_eq!(
            seccomp_profile(None, &unc, root, true),
            Ok(SeccompProfile::Unconfined)
        );
        assert_eq!(
            seccomp_profile(Some(&unc_pod), &plain, root, true),
            Ok(SeccompProfile::Unconfined)
        );
    }

    #[test]
    fn localhost_is_below_the_root_dirs_seccomp_directory() {
        let c = container(Some(field("Localhost", Some("profiles/audit.json"))));
        assert_eq!(
            seccomp_profile(None, &c, Path::new(ROOT), false),
            Ok(SeccompProfile::Localhost(PathBuf::from(
                "/var/lib/kubenode/seccomp/profiles/audit.json"
            )))
        );
        for empty in [None, Some("")] {
            let c = container(Some(field("Localhost", empty)));
            assert_eq!(
                seccomp_profile(None, &c, Path::new(ROOT), false),
                Err("localhostProfile must be set if seccompProfile type is Localhost.".into())
            );
        }
    }

    #[test]
    fn any_privileged_container_makes_the_sandbox_privileged() {
        let privileged = || {
            Some(SecurityContext {
                privileged: Some(true),
                ..Default::default()
            })
        };
        let plain = PodSpec {
            containers: vec![container(Some(field("Unconfined", None)))],
            ..Default::default()
        };
        assert!(!has_privileged_container(&plain));
        let not = PodSpec {
            containers: vec![Container {
                security_context: Some(SecurityContext {
                    privileged: Some(false),
                    ..Default::default()
                }),
                ..container(None)
            }],
            ..Default::default()
        };
        assert!(!has_privileged_container(&not));
        let init = PodSpec {
            init_containers: Some(vec![Container {
                security_context: privileged(),
                ..container(None)
            }]),
            ..plain.clone()
        };
        assert!(has_privileged_container(&init));
        let ephemeral = PodSpec {
            ephemeral_containers: Some(vec![EphemeralContainer {
                name: "debug".into(),
                security_context: privileged(),
                ..Default::default()
            }]),
            ..plain
        };
        assert!(has_privileged_container(&ephemeral));
    }

    #[test]
    fn deprecated_annotations_without_fields_are_warned_about() {
        let mut pod = Pod::default();
        pod.metadata.annotations = Some(BTreeMap::from([
            (POD_ANNOTATION.to_string(), "runtime/default".to_string()),
            (
                format!("{CONTAINER_ANNOTATION_PREFIX}c"),
                "unconfined".to_string(),
            ),
            (
                format!("{CONTAINER_ANNOTATION_PREFIX}d"),
                "runtime/default".to_string(),
            ),
        ]));
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            containers: vec![
                container(None),
                Container {
                    name: "d".into(),
                    ..container(Some(field("RuntimeDefault", None)))
                },
            ],
            ..Default::default()
        });
        assert_eq!(
            deprecated_annotation_warnings(&pod),
            [
                "metadata.annotations[seccomp.security.alpha.kubernetes.io/pod]: non-functional in v1.27+; use the \"seccompProfile\" field instead",
                "metadata.annotations[container.seccomp.security.alpha.kubernetes.io/c]: non-functional in v1.27+; use the \"seccompProfile\" field instead",
            ]
        );
    }
}

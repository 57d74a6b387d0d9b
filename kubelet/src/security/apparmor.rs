//! AppArmor, as the kubelet admits pods and containerd's CRI plugin confines containers.
//!
//! Admission (the kubelet's AppArmor admit handler, after sysctls and the pod count): a pod
//! that asks for any profile but `Unconfined`, by field or by the deprecated annotation
//! `container.apparmor.security.beta.kubernetes.io/<name>`, is rejected with reason `AppArmor`
//! and `Cannot enforce AppArmor: AppArmor is not enabled on the host` where the kernel has no
//! AppArmor (`/sys/module/apparmor/parameters/enabled` is not `Y`), and with `Cannot enforce
//! AppArmor: invalid empty AppArmor profile name: ...` for a `Localhost` profile without a
//! name.
//!
//! The profile of a container (upstream's `GetProfile`): the container's field, else the
//! annotation (static pods are never converted to fields by an API server), else the pod's
//! field. On a host with AppArmor it becomes `process.apparmorProfile` as containerd sets it:
//! `Localhost` names a profile that must be loaded (`/sys/kernel/security/apparmor/profiles`),
//! else the container fails to be created with containerd's `apparmor profile not found
//! NAME`. `RuntimeDefault`, and no profile at all (containerd confines every container by
//! default), is containerd's default profile `cri-containerd.apparmor.d`; kubenode does not
//! write or load it (containerd generates it with `apparmor_parser`): where it is not loaded,
//! an explicit `RuntimeDefault` fails to be created with a message that says so, and a
//! container that asked for nothing runs without a profile (logged once). Privileged
//! containers get no default profile, as containerd.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::{AppArmorProfile, Container, Pod};

/// The admission rejection reason.
pub const REASON: &str = "AppArmor";
/// The prefix of the deprecated per-container annotation.
pub const ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";
/// The name of containerd's default profile, used for `RuntimeDefault`.
pub const DEFAULT_PROFILE: &str = "cri-containerd.apparmor.d";

/// The host's AppArmor, behind a seam for tests.
pub trait AppArmorHost: Send + Sync + std::fmt::Debug {
    /// The kernel enforces AppArmor.
    fn enabled(&self) -> bool;
    /// The text of the loaded-profiles list (`NAME (MODE)` per line).
    fn loaded_profiles(&self) -> io::Result<String>;
}

/// This machine: `/sys/module/apparmor/parameters/enabled` and securityfs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemAppArmor;

impl AppArmorHost for SystemAppArmor {
    fn enabled(&self) -> bool {
        std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.starts_with('Y'))
    }
    fn loaded_profiles(&self) -> io::Result<String> {
        std::fs::read_to_string("/sys/kernel/security/apparmor/profiles")
    }
}

/// The profile of `container` (container field, annotation, pod field).
pub fn container_profile(pod: &Pod, container: &Container) -> Option<AppArmorProfile> {
    if let Some(p) = container
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.clone())
    {
        return Some(p);
    }
    let annotation = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&format!("{ANNOTATION_PREFIX}{}", container.name)));
    if let Some(value) = annotation {
        let profile = |t: &str, name: Option<&str>| AppArmorProfile {
            type_: t.into(),
            localhost_profile: name.map(Into::into),
        };
        match value.as_str() {
            "runtime/default" => return Some(profile("RuntimeDefault", None)),
            "unconfined" => return Some(profile("Unconfined", None)),
            v => {
                if let Some(name) = v.strip_prefix("localhost/") {
                    return Some(profile("Localhost", Some(name)));
                }
                // Anything else fails validation.
            }
        }
    }
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.app_armor_profile.clone())
}

/// Whether the pod asks for any AppArmor profile but `Unconfined` (upstream's `isRequired`).
fn required(pod: &Pod) -> bool {
    let spec = pod.spec.clone().unwrap_or_default();
    let confining = |p: Option<&AppArmorProfile>| p.is_some_and(|p| p.type_ != "Unconfined");
    if confining(
        spec.security_context
            .as_ref()
            .and_then(|s| s.app_armor_profile.as_ref()),
    ) {
        return true;
    }
    if crate::pod_containers(&spec).any(|c| {
        confining(
            c.security_context
                .as_ref()
                .and_then(|s| s.app_armor_profile.as_ref()),
        )
    }) {
        return true;
    }
    pod.metadata
        .annotations
        .iter()
        .flatten()
        .any(|(k, v)| k.starts_with(ANNOTATION_PREFIX) && v != "unconfined")
}

/// The admission decision; the error is the rejection message.
pub fn admit(pod: &Pod, host: &dyn AppArmorHost) -> Result<(), String> {
    if !required(pod) {
        return Ok(());
    }
    if !host.enabled() {
        return Err("Cannot enforce AppArmor: AppArmor is not enabled on the host".into());
    }
    let spec = pod.spec.clone().unwrap_or_default();
    for c in crate::pod_containers(&spec) {
        if let Some(p) = container_profile(pod, c) {
            if p.type_ == "Localhost"
                && p.localhost_profile
                    .as_deref()
                    .is_none_or(|n| n.trim().is_empty())
            {
                return Err(format!(
                    "Cannot enforce AppArmor: invalid empty AppArmor profile name: {:?}",
                    serde_json::to_string(&p).unwrap_or_default()
                ));
            }
        }
    }
    Ok(())
}

static UNLOADED_DEFAULT_LOGGED: AtomicBool = AtomicBool::new(false);

fn loaded(host: &dyn AppArmorHost, name: &str) -> Result<bool, String> {
    let list = host
        .loaded_profiles()
        .map_err(|e| format!("failed to generate apparmor spec opts: {e}"))?;
    Ok(list.lines().any(|l| l.starts_with(&format!("{name} ("))))
}

/// `process.apparmorProfile` for a container (`None`: no profile); the error is the create
/// error (`CreateContainerError`).
pub fn profile_name(
    profile: Option<&AppArmorProfile>,
    privileged: bool,
    host: &dyn AppArmorHost,
) -> Result<Option<String>, String> {
    if !host.enabled() {
        // Admission refused every other profile already.
        return match profile {
            Some(p) if p.type_ != "Unconfined" => Err("apparmor is not supported".into()),
            _ => Ok(None),
        };
    }
    match profile.map(|p| (p.type_.as_str(), p.localhost_profile.as_deref())) {
        Some(("Unconfined", _)) => Ok(None),
        Some(("Localhost", name)) => {
            let name = name.unwrap_or_default();
            if loaded(host, name)? {
                Ok(Some(name.to_string()))
            } else {
                Err(format!(
                    "failed to generate apparmor spec opts: apparmor profile not found {name}"
                ))
            }
        }
        _ if privileged => Ok(None),
        explicit => {
            // A container that asked for nothing never fails here: a list that cannot be read
            // (securityfs not mounted) counts as the default profile not being loaded.
            let default_loaded = match loaded(host, DEFAULT_PROFILE) {
                Ok(yes) => yes,
                Err(e) if explicit.is_some() => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "AppArmor profiles not readable");
                    false
                }
            };
            if default_loaded {
                Ok(Some(DEFAULT_PROFILE.to_string()))
            } else if explicit.is_some() {
                Err(format!(
                    "failed to generate apparmor spec opts: apparmor profile not found {DEFAULT_PROFILE} \
                     (RuntimeDefault is containerd's profile of that name, which kubenode does not \
                     load: load it with apparmor_parser)"
                ))
            } else {
                if !UNLOADED_DEFAULT_LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        profile = DEFAULT_PROFILE,
                        "AppArmor is enabled but the runtime's default profile is not loaded: \
                         containers that name no AppArmor profile run without one (logged once)"
                    );
                }
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, SecurityContext};
    use std::collections::BTreeMap;

    /// AppArmor enabled, its profile list missing.
    #[derive(Debug)]
    struct Unreadable;

    impl AppArmorHost for Unreadable {
        fn enabled(&self) -> bool {
            true
        }
        fn loaded_profiles(&self) -> io::Result<String> {
            Err(io::Error::from(io::ErrorKind::NotFound))
        }
    }

    #[derive(Debug)]
    struct Host {
        enabled: bool,
        profiles: &'static str,
    }
    impl AppArmorHost for Host {
        fn enabled(&self) -> bool {
            self.enabled
        }
        fn loaded_profiles(&self) -> io::Result<String> {
            Ok(self.profiles.into())
        }
    }
    const OFF: Host = Host {
        enabled: false,
        profiles: "",
    };
    const ON: Host = Host {
        enabled: true,
        profiles: "cri-containerd.apparmor.d (enforce)\nk8s-deny-write (enforce)\n",
    };
    const ON_BARE: Host = Host {
        enabled: true,
        profiles: "k8s-deny-write (complain)\n",
    };

    fn aa(t: &str, name: Option<&str>) -> AppArmorProfile {
        AppArmorProfile {
            type_: t.into(),
            localhost_profile: name.map(Into::into),
        }
    }

    fn pod(pod_level: Option<AppArmorProfile>, c: Option<AppArmorProfile>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                security_context: pod_level.map(|p| PodSecurityContext {
                    app_armor_profile: Some(p),
                    ..Default::default()
                }),
                containers: vec![Container {
                    name: "c".into(),
                    security_context: c.map(|p| SecurityContext {
                        app_armor_profile: Some(p),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_real_host_is_read_from_sysfs() {
        // This CI host has no AppArmor; a host with it reads "Y".
        let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.starts_with('Y'));
        assert_eq!(SystemAppArmor.enabled(), enabled);
    }

    #[test]
    fn admission_without_apparmor_refuses_all_but_unconfined() {
        let msg = "Cannot enforce AppArmor: AppArmor is not enabled on the host";
        assert_eq!(
            admit(&pod(Some(aa("RuntimeDefault", None)), None), &OFF),
            Err(msg.into())
        );
        assert_eq!(
            admit(
                &pod(None, Some(aa("Localhost", Some("k8s-deny-write")))),
                &OFF
            ),
            Err(msg.into())
        );
        assert_eq!(
            admit(&pod(Some(aa("Unconfined", None)), None), &OFF),
            Ok(())
        );
        assert_eq!(admit(&pod(None, None), &OFF), Ok(()));
        let mut p = pod(None, None);
        p.metadata.annotations = Some(BTreeMap::from([(
            format!("{ANNOTATION_PREFIX}c"),
            "runtime/default".to_string(),
        )]));
        assert_eq!(admit(&p, &OFF), Err(msg.into()));
        p.metadata.annotations = Some(BTreeMap::from([(
            format!("{ANNOTATION_PREFIX}c"),
            "unconfined".to_string(),
        )]));
        assert_eq!(admit(&p, &OFF), Ok(()));
        // With AppArmor: admitted, but not a Localhost profile without a name.
        assert_eq!(
            admit(&pod(Some(aa("RuntimeDefault", None)), None), &ON),
            Ok(())
        );
        let err = admit(&pod(None, Some(aa("Localhost", Some(" ")))), &ON).unwrap_err();
        assert!(
            err.starts_with("Cannot enforce AppArmor: invalid empty AppArmor profile name"),
            "{err}"
        );
    }

    #[test]
    fn container_field_then_annotation_then_pod_field() {
        let mut p = pod(
            Some(aa("RuntimeDefault", None)),
            Some(aa("Localhost", Some("x"))),
        );
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        assert_eq!(container_profile(&p, &c), Some(aa("Localhost", Some("x"))));
        p.metadata.annotations = Some(BTreeMap::from([(
            format!("{ANNOTATION_PREFIX}c"),
            "localhost/from-annotation".to_string(),
        )]));
        let bare = Container {
            name: "c".into(),
            ..Default::default()
        };
        assert_eq!(
            container_profile(&p, &bare),
            Some(aa("Localhost", Some("from-annotation")))
        );
        p.metadata.annotations = None;
        assert_eq!(
            container_profile(&p, &bare),
            Some(aa("RuntimeDefault", None))
        );
    }

    #[test]
    fn profile_names_on_a_host_with_apparmor() {
        let rd = aa("RuntimeDefault", None);
        assert_eq!(
            profile_name(Some(&rd), false, &ON),
            Ok(Some(DEFAULT_PROFILE.into()))
        );
        assert_eq!(
            profile_name(None, false, &ON),
            Ok(Some(DEFAULT_PROFILE.into()))
        );
        assert_eq!(profile_name(Some(&rd), true, &ON), Ok(None), "privileged");
        assert_eq!(
            profile_name(Some(&aa("Unconfined", None)), false, &ON),
            Ok(None)
        );
        let lh = aa("Localhost", Some("k8s-deny-write"));
        assert_eq!(
            profile_name(Some(&lh), true, &ON),
            Ok(Some("k8s-deny-write".into())),
            "Localhost applies to privileged containers too"
        );
        assert_eq!(
            profile_name(Some(&aa("Localhost", Some("nope"))), false, &ON),
            Err("failed to generate apparmor spec opts: apparmor profile not found nope".into())
        );
        // The default profile not loaded: an explicit RuntimeDefault fails, nothing asked runs
        // without a profile.
        let err = profile_name(Some(&rd), false, &ON_BARE).unwrap_err();
        assert!(
            err.contains("apparmor profile not found cri-containerd.apparmor.d"),
            "{err}"
        );
        assert_eq!(profile_name(None, false, &ON_BARE), Ok(None));
        // AppArmor on but its profile list unreadable (securityfs not mounted, as in a minimal
        // VM): a container that asked for nothing runs without a profile; RuntimeDefault fails.
        assert_eq!(profile_name(None, false, &Unreadable), Ok(None));
        assert!(profile_name(Some(&rd), false, &Unreadable).is_err());
        // Without AppArmor: nothing is set.
        assert_eq!(profile_name(None, false, &OFF), Ok(None));
        assert_eq!(
            profile_name(Some(&aa("Unconfined", None)), false, &OFF),
            Ok(None)
        );
    }
}

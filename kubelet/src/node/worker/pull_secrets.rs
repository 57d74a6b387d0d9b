//! `imagePullSecrets`: the pod's pull secrets read at pull time from the pod's own source
//! ([`crate::objects::Objects::secret`]) into a keyring tried before the node's credentials,
//! as upstream's kubelet (`getPullSecretsForPod`, `MakeDockerKeyring`).
//!
//! A secret that cannot be read is left out with a warning event
//! (`FailedToRetrieveImagePullSecret`) and the pull goes on with what remains; secrets of
//! other types than `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`) and
//! `kubernetes.io/dockercfg` (`.dockercfg`) are ignored, as upstream. A secret whose document
//! does not parse fails the pull, its message naming the secret, never its content.

use k8s_openapi::api::core::v1::{Pod, Secret};
use kubenode_runtime::image::Keyring;

use crate::events::ObjectRef;
use crate::objects::Objects;

/// Upstream's event reason for pull secrets that could not be read.
pub(crate) const FAILED_TO_RETRIEVE_IMAGE_PULL_SECRET: &str = "FailedToRetrieveImagePullSecret";

/// The secret type and key of a `config.json` document.
const DOCKER_CONFIG_JSON: (&str, &str) = ("kubernetes.io/dockerconfigjson", ".dockerconfigjson");
/// The secret type and key of a legacy `.dockercfg` document.
const DOCKERCFG: (&str, &str) = ("kubernetes.io/dockercfg", ".dockercfg");

/// The non-empty bytes of `key` in `secret`.
fn value<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    crate::objects::secret_bytes(secret, key).filter(|b| !b.is_empty())
}

/// Adds `secret`'s credentials to `keyring` (`MakeDockerKeyring` for one secret).
pub(crate) fn add_secret(keyring: &mut Keyring, name: &str, secret: &Secret) -> Result<(), String> {
    let ty = secret.type_.as_deref().unwrap_or("Opaque");
    let bad = |e: String| format!("image pull secret {name:?}: {e}");
    if ty == DOCKER_CONFIG_JSON.0 {
        if let Some(doc) = value(secret, DOCKER_CONFIG_JSON.1) {
            return keyring.add_config_json(doc).map_err(bad);
        }
    } else if ty == DOCKERCFG.0 {
        if let Some(doc) = value(secret, DOCKERCFG.1) {
            return keyring.add_dockercfg(doc).map_err(bad);
        }
    }
    Ok(())
}

/// The keyring of `pod`'s pull secrets; the names that could not be read are reported in one
/// `FailedToRetrieveImagePullSecret` warning on the pod.
pub(crate) async fn keyring(
    objects: &Objects,
    events: &crate::events::Recorder,
    pod: &Pod,
) -> Result<Keyring, String> {
    let mut keyring = Keyring::new();
    let mut failed = Vec::new();
    let refs = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_deref())
        .unwrap_or_default();
    for r in refs {
        // API validation let entries without a name through; upstream skips them silently
        if r.name.is_empty() {
            continue;
        }
        match objects.secret(pod, &r.name).await {
            Ok(secret) => add_secret(&mut keyring, &r.name, &secret)?,
            Err(e) => {
                tracing::info!(
                    pod = %format!(
                        "{}/{}",
                        pod.metadata.namespace.as_deref().unwrap_or_default(),
                        pod.metadata.name.as_deref().unwrap_or_default()
                    ),
                    secret = %r.name,
                    error = %e,
                    "Unable to retrieve pull secret, the image pull may not succeed."
                );
                failed.push(r.name.clone());
            }
        }
    }
    if !failed.is_empty() {
        events.warning(
            &ObjectRef::pod(pod),
            FAILED_TO_RETRIEVE_IMAGE_PULL_SECRET,
            format!(
                "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                failed.join(", ")
            ),
        );
    }
    Ok(keyring)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(ty: &str, key: &str, doc: &str) -> Secret {
        Secret {
            type_: Some(ty.into()),
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(doc.as_bytes().to_vec()),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn both_docker_secret_types_and_nothing_else() {
        let mut k = Keyring::new();
        let json = r#"{"auths": {"reg:5000": {"username": "a", "password": "pw"}}}"#;
        let cfg = r#"{"other:1": {"username": "b", "password": "pw"}}"#;
        add_secret(
            &mut k,
            "j",
            &secret(DOCKER_CONFIG_JSON.0, DOCKER_CONFIG_JSON.1, json),
        )
        .unwrap();
        add_secret(&mut k, "c", &secret(DOCKERCFG.0, DOCKERCFG.1, cfg)).unwrap();
        // an Opaque secret with the right key, or the wrong key for the type: ignored
        add_secret(
            &mut k,
            "o",
            &secret(
                "Opaque",
                DOCKER_CONFIG_JSON.1,
                json.replace("reg", "opq").as_str(),
            ),
        )
        .unwrap();
        add_secret(
            &mut k,
            "w",
            &secret(
                DOCKERCFG.0,
                DOCKER_CONFIG_JSON.1,
                cfg.replace("other", "wrong").as_str(),
            ),
        )
        .unwrap();
        assert_eq!(k.lookup("reg:5000/app").len(), 1);
        assert_eq!(k.lookup("other:1/app").len(), 1);
        assert!(k.lookup("opq:5000/app").is_empty());
        assert!(k.lookup("wrong:1/app").is_empty());
        let err = add_secret(
            &mut k,
            "bad",
            &secret(DOCKER_CONFIG_JSON.0, DOCKER_CONFIG_JSON.1, "{hunter2"),
        )
        .unwrap_err();
        assert!(err.starts_with("image pull secret \"bad\": "), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn a_static_pods_secrets_come_from_the_files_and_missing_ones_warn_once() {
        use k8s_openapi::api::core::v1::{LocalObjectReference, PodSpec};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        let objects = Objects::new();
        let mut regcred = secret(
            DOCKER_CONFIG_JSON.0,
            DOCKER_CONFIG_JSON.1,
            r#"{"auths": {"reg:5000": {"username": "a", "password": "pw"}}}"#,
        );
        regcred.metadata = ObjectMeta {
            namespace: Some("default".into()),
            name: Some("regcred".into()),
            ..Default::default()
        };
        objects.set_files(vec![], vec![regcred]);
        let pod = Pod {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some("p".into()),
                uid: Some("u".into()),
                annotations: Some(BTreeMap::from([(
                    crate::source::CONFIG_SOURCE_ANNOTATION.to_string(),
                    crate::source::FILE_SOURCE.to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                image_pull_secrets: Some(
                    ["gone", "", "regcred", "other"]
                        .iter()
                        .map(|n| LocalObjectReference {
                            name: n.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let events = crate::events::Recorder::new(
            "node",
            std::sync::Arc::new(crate::backoff::TestClock::at_secs(1_800_000_000)),
        );
        let k = keyring(&objects, &events, &pod).await.unwrap();
        assert_eq!(k.lookup("reg:5000/app").len(), 1);
        let list = events.list();
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(
            list[0].reason.as_deref(),
            Some(FAILED_TO_RETRIEVE_IMAGE_PULL_SECRET)
        );
        assert_eq!(list[0].type_.as_deref(), Some("Warning"));
        assert_eq!(
            list[0].message.as_deref(),
            Some("Unable to retrieve some image pull secrets (gone, other); attempting to pull the image may not succeed.")
        );
    }
}

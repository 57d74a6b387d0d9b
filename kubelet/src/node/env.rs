//! A container's environment from ConfigMaps and Secrets (upstream `makeEnvironmentVariables`):
//! `envFrom` (every key of the object, `prefix`ed) first, then `env` entries with
//! `valueFrom.configMapKeyRef`/`secretKeyRef`; the rest of `env` (values, `$(VAR)` expansion,
//! field and resource references, service variables) is put together by the runtime's
//! `container_env` with what this resolves.
//!
//! As upstream: each object is read once per container; a missing object or key fails the
//! container's creation (`CreateContainerConfigError`) unless the reference is `optional`, in
//! which case the variable is simply not set; every key of an `envFrom` object becomes a variable
//! (upstream 1.34 no longer skips keys that are not C identifiers: with relaxed variable names,
//! every ConfigMap key is a valid name). Values are never logged; errors name objects and keys
//! only.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};

use crate::objects::{ObjectError, Objects};

/// What the ConfigMaps and Secrets give one container.
#[derive(Default, PartialEq, Eq)]
pub struct ObjectEnv {
    /// The `envFrom` variables, in the order they are set (a later source replaces an earlier
    /// name): they come before `env`.
    pub env_from: Vec<(String, String)>,
    /// The values of `env` entries that reference a ConfigMap or Secret key, by name (an
    /// optional reference to a missing object or key is absent).
    pub values: HashMap<String, String>,
}

impl std::fmt::Debug for ObjectEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values may be Secret bytes.
        let from: Vec<&str> = self.env_from.iter().map(|(k, _)| k.as_str()).collect();
        let mut values: Vec<&str> = self.values.keys().map(String::as_str).collect();
        values.sort_unstable();
        f.debug_struct("ObjectEnv")
            .field("env_from", &from)
            .field("values", &values)
            .finish()
    }
}

/// Where a container's objects come from: [`Objects`] in the agent, a map in tests.
pub trait ObjectReader: Send + Sync {
    /// The ConfigMap `name` of the pod's namespace.
    fn config_map<'a>(
        &'a self,
        pod: &'a Pod,
        name: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Arc<ConfigMap>, ObjectError>>;
    /// The Secret `name` of the pod's namespace.
    fn secret<'a>(
        &'a self,
        pod: &'a Pod,
        name: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Arc<Secret>, ObjectError>>;
}

impl ObjectReader for Objects {
    fn config_map<'a>(
        &'a self,
        pod: &'a Pod,
        name: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Arc<ConfigMap>, ObjectError>> {
        Box::pin(Objects::config_map(self, pod, name))
    }

    fn secret<'a>(
        &'a self,
        pod: &'a Pod,
        name: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Arc<Secret>, ObjectError>> {
        Box::pin(Objects::secret(self, pod, name))
    }
}

/// The objects read for one container, each once (as upstream's per-call maps).
struct Cache<'a> {
    reader: &'a dyn ObjectReader,
    pod: &'a Pod,
    config_maps: HashMap<String, Arc<ConfigMap>>,
    secrets: HashMap<String, Arc<Secret>>,
}

impl Cache<'_> {
    /// The ConfigMap, `None` when it does not exist and the reference is optional.
    async fn config_map(
        &mut self,
        name: &str,
        optional: bool,
    ) -> Result<Option<Arc<ConfigMap>>, String> {
        if let Some(cm) = self.config_maps.get(name) {
            return Ok(Some(cm.clone()));
        }
        match self.reader.config_map(self.pod, name).await {
            Ok(cm) => {
                self.config_maps.insert(name.to_string(), cm.clone());
                Ok(Some(cm))
            }
            Err(e) if e.is_not_found() && optional => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn secret(&mut self, name: &str, optional: bool) -> Result<Option<Arc<Secret>>, String> {
        if let Some(s) = self.secrets.get(name) {
            return Ok(Some(s.clone()));
        }
        match self.reader.secret(self.pod, name).await {
            Ok(s) => {
                self.secrets.insert(name.to_string(), s.clone());
                Ok(Some(s))
            }
            Err(e) if e.is_not_found() && optional => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Resolves `container`'s ConfigMap and Secret references, or the message of the
/// `CreateContainerConfigError` that keeps it from being created (upstream's:
/// `configmap "x" not found`, `couldn't find key k in ConfigMap ns/x`).
pub async fn resolve(
    reader: &dyn ObjectReader,
    pod: &Pod,
    container: &Container,
) -> Result<ObjectEnv, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut cache = Cache {
        reader,
        pod,
        config_maps: HashMap::new(),
        secrets: HashMap::new(),
    };
    let mut out = ObjectEnv::default();
    let mut from: Vec<(String, String)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    let mut set = |k: String, v: String| match at.get(&k) {
        Some(&i) => from[i].1 = v,
        None => {
            at.insert(k.clone(), from.len());
            from.push((k, v));
        }
    };
    for ef in container.env_from.iter().flatten() {
        let prefix = ef.prefix.as_deref().unwrap_or_default();
        if let Some(r) = &ef.config_map_ref {
            let Some(cm) = cache.config_map(&r.name, r.optional == Some(true)).await? else {
                continue;
            };
            for (k, v) in cm.data.iter().flatten() {
                set(format!("{prefix}{k}"), v.clone());
            }
        } else if let Some(r) = &ef.secret_ref {
            let Some(s) = cache.secret(&r.name, r.optional == Some(true)).await? else {
                continue;
            };
            for (k, v) in s.data.iter().flatten() {
                set(
                    format!("{prefix}{k}"),
                    String::from_utf8_lossy(&v.0).into_owned(),
                );
            }
        }
    }
    out.env_from = from;
    for e in container.env.iter().flatten() {
        // A non-empty value wins over a source (validation refuses both anyway).
        if e.value.as_deref().is_some_and(|v| !v.is_empty()) {
            continue;
        }
        let Some(vf) = &e.value_from else { continue };
        if let Some(r) = &vf.config_map_key_ref {
            let optional = r.optional == Some(true);
            let Some(cm) = cache.config_map(&r.name, optional).await? else {
                continue;
            };
            match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                Some(v) => {
                    out.values.insert(e.name.clone(), v.clone());
                }
                None if optional => {}
                None => {
                    return Err(format!(
                        "couldn't find key {} in ConfigMap {ns}/{}",
                        r.key, r.name
                    ))
                }
            }
        } else if let Some(r) = &vf.secret_key_ref {
            let optional = r.optional == Some(true);
            let Some(s) = cache.secret(&r.name, optional).await? else {
                continue;
            };
            match crate::objects::secret_bytes(&s, &r.key) {
                Some(v) => {
                    out.values
                        .insert(e.name.clone(), String::from_utf8_lossy(v).into_owned());
                }
                None if optional => {}
                None => {
                    return Err(format!(
                        "couldn't find key {} in Secret {ns}/{}",
                        r.key, r.name
                    ))
                }
            }
        }
    }
    Ok(out)
}

/// The variables placed before the container's `env`: the service variables, then the
/// `envFrom` ones (which replace a service variable of the same name, as upstream's
/// `tmpEnv` hides it).
pub fn before_env(
    service: Vec<(String, String)>,
    env_from: Vec<(String, String)>,
) -> Vec<(String, String)> {
    if env_from.is_empty() {
        return service;
    }
    let names: std::collections::HashSet<&str> = env_from.iter().map(|(k, _)| k.as_str()).collect();
    let mut out: Vec<(String, String)> = service
        .into_iter()
        .filter(|(k, _)| !names.contains(k.as_str()))
        .collect();
    out.extend(env_from);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        SecretEnvSource, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Store {
        config_maps: HashMap<String, Arc<ConfigMap>>,
        secrets: HashMap<String, Arc<Secret>>,
        unavailable: bool,
    }

    impl ObjectReader for Store {
        fn config_map<'a>(
            &'a self,
            _pod: &'a Pod,
            name: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Arc<ConfigMap>, ObjectError>> {
            let r = if self.unavailable {
                Err(ObjectError::Unavailable("not synced".into()))
            } else {
                self.config_maps
                    .get(name)
                    .cloned()
                    .ok_or_else(|| ObjectError::config_map_not_found(name))
            };
            Box::pin(async move { r })
        }

        fn secret<'a>(
            &'a self,
            _pod: &'a Pod,
            name: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Arc<Secret>, ObjectError>> {
            let r = self
                .secrets
                .get(name)
                .cloned()
                .ok_or_else(|| ObjectError::secret_not_found(name));
            Box::pin(async move { r })
        }
    }

    fn store() -> Store {
        let cm = |name: &str, kv: &[(&str, &str)]| {
            Arc::new(ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                data: Some(
                    kv.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            })
        };
        let secret = Arc::new(Secret {
            metadata: ObjectMeta {
                name: Some("creds".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("password".to_string(), ByteString(b"hunter2".to_vec())),
                ("user".to_string(), ByteString(b"admin".to_vec())),
            ])),
            ..Default::default()
        });
        Store {
            config_maps: HashMap::from([
                (
                    "cfg".to_string(),
                    cm("cfg", &[("mode", "fast"), ("level", "3")]),
                ),
                (
                    "more".to_string(),
                    cm("more", &[("mode", "slow"), ("app.name", "web")]),
                ),
            ]),
            secrets: HashMap::from([("creds".to_string(), secret)]),
            unavailable: false,
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("team".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn cm_key(name: &str, cm: &str, key: &str, optional: Option<bool>) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: cm.into(),
                    key: key.into(),
                    optional,
                }),
                ..Default::default()
            }),
        }
    }

    fn secret_key(name: &str, s: &str, key: &str, optional: Option<bool>) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: s.into(),
                    key: key.into(),
                    optional,
                }),
                ..Default::default()
            }),
        }
    }

    fn from_cm(name: &str, prefix: Option<&str>, optional: Option<bool>) -> EnvFromSource {
        EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: name.into(),
                optional,
            }),
            prefix: prefix.map(Into::into),
            secret_ref: None,
        }
    }

    fn from_secret(name: &str, prefix: Option<&str>, optional: Option<bool>) -> EnvFromSource {
        EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: name.into(),
                optional,
            }),
            prefix: prefix.map(Into::into),
            config_map_ref: None,
        }
    }

    async fn run(env: Vec<EnvVar>, env_from: Vec<EnvFromSource>) -> Result<ObjectEnv, String> {
        let c = Container {
            name: "c".into(),
            env: Some(env),
            env_from: Some(env_from),
            ..Default::default()
        };
        resolve(&store(), &pod(), &c).await
    }

    #[tokio::test]
    async fn config_map_and_secret_references() {
        // (env, want values or the CreateContainerConfigError message)
        type Case = (
            Vec<EnvVar>,
            Result<Vec<(&'static str, &'static str)>, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                vec![cm_key("MODE", "cfg", "mode", None)],
                Ok(vec![("MODE", "fast")]),
            ),
            (
                vec![secret_key("PW", "creds", "password", None)],
                Ok(vec![("PW", "hunter2")]),
            ),
            (
                vec![cm_key("X", "nope", "k", None)],
                Err("configmap \"nope\" not found"),
            ),
            (
                vec![secret_key("X", "nope", "k", None)],
                Err("secret \"nope\" not found"),
            ),
            (
                vec![cm_key("X", "cfg", "missing", None)],
                Err("couldn't find key missing in ConfigMap team/cfg"),
            ),
            (
                vec![secret_key("X", "creds", "missing", Some(false))],
                Err("couldn't find key missing in Secret team/creds"),
            ),
            // Optional: a missing object or key leaves the variable unset.
            (
                vec![
                    cm_key("A", "nope", "k", Some(true)),
                    cm_key("B", "cfg", "missing", Some(true)),
                    secret_key("C", "nope", "k", Some(true)),
                    secret_key("D", "creds", "missing", Some(true)),
                    cm_key("E", "cfg", "level", Some(true)),
                ],
                Ok(vec![("E", "3")]),
            ),
        ];
        for (env, want) in cases {
            let got = run(env.clone(), vec![]).await;
            match want {
                Ok(want) => {
                    let got = got.unwrap_or_else(|e| panic!("{env:?}: {e}"));
                    let want: HashMap<String, String> = want
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    assert_eq!(got.values, want, "{env:?}");
                }
                Err(msg) => assert_eq!(got.unwrap_err(), msg, "{env:?}"),
            }
        }
        // An object that cannot be read now fails even an optional reference (it may exist).
        let unavailable = Store {
            unavailable: true,
            ..store()
        };
        let c = Container {
            env: Some(vec![cm_key("A", "cfg", "mode", Some(true))]),
            ..Default::default()
        };
        assert_eq!(
            resolve(&unavailable, &pod(), &c).await.unwrap_err(),
            "not synced"
        );
    }

    #[tokio::test]
    async fn env_from_first_then_env() {
        let got = run(
            vec![],
            vec![
                from_cm("cfg", None, None),
                from_cm("more", Some("M_"), None),
                from_cm("more", None, None),
                from_secret("creds", Some("S_"), None),
                from_cm("nope", None, Some(true)),
                from_secret("nope", None, Some(true)),
            ],
        )
        .await
        .unwrap();
        let want: Vec<(String, String)> = [
            ("level", "3"),
            ("mode", "slow"),
            ("M_app.name", "web"),
            ("M_mode", "slow"),
            ("app.name", "web"),
            ("S_password", "hunter2"),
            ("S_user", "admin"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got.env_from, want);
        assert_eq!(
            run(vec![], vec![from_cm("nope", Some("P_"), None)])
                .await
                .unwrap_err(),
            "configmap \"nope\" not found"
        );
        // The runtime's merge: service variables, then envFrom, then env (later wins, `$(VAR)`
        // sees all of them).
        let before = before_env(
            vec![
                ("mode".into(), "service".into()),
                ("SVC".into(), "1".into()),
            ],
            got.env_from,
        );
        assert_eq!(before[0], ("SVC".to_string(), "1".to_string()));
        assert!(before.contains(&("mode".to_string(), "slow".to_string())));
        let c = Container {
            env: Some(vec![
                EnvVar {
                    name: "mode".into(),
                    value: Some("env-$(level)-$(SVC)-$$(level)-$(S_user)".into()),
                    value_from: None,
                },
                cm_key("level", "nope", "k", Some(true)),
            ]),
            ..Default::default()
        };
        let env = kubenode_runtime::spec::container_env(&c, &before, &HashMap::new());
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("mode"), Some("env-3-1-$(level)-admin"));
        // An optional reference that resolved to nothing keeps the envFrom value.
        assert_eq!(get("level"), Some("3"));
    }

    #[test]
    fn debug_shows_names_not_values() {
        let e = ObjectEnv {
            env_from: vec![("S_password".into(), "hunter2".into())],
            values: HashMap::from([("PW".to_string(), "hunter2".to_string())]),
        };
        let d = format!("{e:?}");
        assert!(d.contains("S_password") && d.contains("PW"), "{d}");
        assert!(!d.contains("hunter2"), "{d}");
    }
}

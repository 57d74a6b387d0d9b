//! The contents of the `configMap`, `secret`, `downwardAPI` and `projected` volumes: upstream's
//! `MakePayload` (configmap and secret plugins), `CollectData` (downwardapi) and the projected
//! plugin's `collectData`, from the objects of [`crate::objects::Objects`].
//!
//! A payload is computed by the (async) pod worker and written by the volume manager with the
//! [`super::atomic_writer`]. Errors carry upstream's texts (`configmap "x" not found`,
//! `configmap references non-existent config key: k`, ...) and never a value.
//!
//! Modes: an item's `mode`, else the volume's `defaultMode` (0644 when unset, as the API
//! server defaults it). A `serviceAccountToken` file is 0600 when the pod has an `fsGroup` or
//! its containers share one `runAsUser` (then the file's owner): the `fsGroup` walk makes it
//! 0640, as upstream.

use std::collections::BTreeMap;
use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};

use super::atomic_writer::{FileProjection, Payload};
pub use crate::node::downward::NodeCapacity;
use crate::objects::{ObjectError, Objects};

/// The API server's default `defaultMode` of these volumes.
pub const DEFAULT_MODE: i32 = 0o644;
/// The API server's default `expirationSeconds` of a `serviceAccountToken` projection.
pub const DEFAULT_TOKEN_EXPIRATION: i64 = 3600;
/// The shortest `expirationSeconds` the API server accepts.
pub const MIN_TOKEN_EXPIRATION: i64 = 600;
/// The mode of a token file when an `fsGroup` or a common `runAsUser` owns it.
const TOKEN_OWNED_MODE: u32 = 0o600;

/// The volume types whose contents come from objects or the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `configMap`.
    ConfigMap,
    /// `secret`.
    Secret,
    /// `downwardAPI`.
    DownwardApi,
    /// `projected`.
    Projected,
}

impl Kind {
    /// The kind of `vol`, when it is one of these.
    pub fn of(vol: &Volume) -> Option<Kind> {
        if vol.config_map.is_some() {
            Some(Kind::ConfigMap)
        } else if vol.secret.is_some() {
            Some(Kind::Secret)
        } else if vol.downward_api.is_some() {
            Some(Kind::DownwardApi)
        } else if vol.projected.is_some() {
            Some(Kind::Projected)
        } else {
            None
        }
    }

    /// The plugin's directory name under `volumes/` (upstream's escaped plugin names).
    pub fn plugin_dir(self) -> &'static str {
        match self {
            Kind::ConfigMap => "kubernetes.io~configmap",
            Kind::Secret => "kubernetes.io~secret",
            Kind::DownwardApi => "kubernetes.io~downward-api",
            Kind::Projected => "kubernetes.io~projected",
        }
    }

    /// Whether the volume is a tmpfs (upstream wraps secret and projected volumes in a
    /// `Memory` emptyDir, configMap and downwardAPI in a disk one): secret bytes never reach
    /// the disk.
    pub fn in_memory(self) -> bool {
        matches!(self, Kind::Secret | Kind::Projected)
    }
}

/// Why a volume's contents could not be made: upstream's message (several, as its aggregate
/// error prints them: `[a, b]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

impl PayloadError {
    fn aggregate(errors: Vec<String>) -> Option<PayloadError> {
        let mut unique: Vec<String> = Vec::new();
        for e in errors {
            if !unique.contains(&e) {
                unique.push(e);
            }
        }
        match unique.len() {
            0 => None,
            1 => unique.pop().map(PayloadError),
            _ => Some(PayloadError(format!("[{}]", unique.join(", ")))),
        }
    }
}

fn mode(m: Option<i32>) -> u32 {
    (m.unwrap_or(DEFAULT_MODE) as u32) & 0o777
}

/// A ConfigMap's payload (upstream `configmap.MakePayload`): every key, or the `items`; a
/// missing item key is an error unless `optional`.
pub fn config_map_payload(
    items: Option<&[KeyToPath]>,
    cm: &ConfigMap,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, PayloadError> {
    let lookup = |key: &str| -> Option<Vec<u8>> {
        cm.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|s| s.as_bytes().to_vec())
            .or_else(|| {
                cm.binary_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|b| b.0.clone())
            })
    };
    let all: Vec<&String> = cm
        .data
        .iter()
        .flat_map(|d| d.keys())
        .chain(cm.binary_data.iter().flat_map(|d| d.keys()))
        .collect();
    project(items, &all, lookup, default_mode, optional, |k| {
        format!("configmap references non-existent config key: {k}")
    })
}

/// A Secret's payload (upstream `secret.MakePayload`).
pub fn secret_payload(
    items: Option<&[KeyToPath]>,
    secret: &Secret,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, PayloadError> {
    let lookup = |key: &str| -> Option<Vec<u8>> {
        crate::objects::secret_bytes(secret, key).map(<[u8]>::to_vec)
    };
    let all: Vec<&String> = secret.data.iter().flat_map(|d| d.keys()).collect();
    project(items, &all, lookup, default_mode, optional, |k| {
        format!("secret references non-existent secret key: {k}")
    })
}

fn project(
    items: Option<&[KeyToPath]>,
    all: &[&String],
    lookup: impl Fn(&str) -> Option<Vec<u8>>,
    default_mode: Option<i32>,
    optional: bool,
    missing: impl Fn(&str) -> String,
) -> Result<Payload, PayloadError> {
    let mut payload = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for key in all {
                if let Some(data) = lookup(key) {
                    payload.insert(
                        (*key).clone(),
                        FileProjection {
                            data,
                            mode: mode(default_mode),
                            fs_user: None,
                        },
                    );
                }
            }
        }
        Some(items) => {
            for item in items {
                let Some(data) = lookup(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(PayloadError(missing(&item.key)));
                };
                payload.insert(
                    item.path.clone(),
                    FileProjection {
                        data,
                        mode: mode(item.mode.or(default_mode)),
                        fs_user: None,
                    },
                );
            }
        }
    }
    Ok(payload)
}

/// Go's `%q` of a string: double-quoted, with Go's escapes.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Upstream's `fieldpath.FormatMap`: `key="value"` lines sorted by key, the value quoted as
/// Go's `%q`, no trailing newline.
pub fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Upstream's `fieldpath.ExtractFieldPathAsString` for a pod (what a downwardAPI volume may
/// reference).
pub fn field_path_value(pod: &Pod, path: &str) -> Result<String, String> {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    if let Some((base, rest)) = path.split_once('[') {
        let key = rest
            .strip_suffix(']')
            .and_then(|k| k.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')));
        if let Some(key) = key {
            return match base {
                "metadata.annotations" => Ok(annotations.get(key).cloned().unwrap_or_default()),
                "metadata.labels" => Ok(labels.get(key).cloned().unwrap_or_default()),
                _ => Err(format!("fieldPath {path:?} does not support subscript")),
            };
        }
    }
    match path {
        "metadata.annotations" => Ok(format_map(annotations)),
        "metadata.labels" => Ok(format_map(labels)),
        "metadata.name" => Ok(pod.metadata.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(pod.metadata.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(pod.metadata.uid.clone().unwrap_or_default()),
        _ => Err(format!("unsupported fieldPath: {path}")),
    }
}

/// A downwardAPI volume's (or projection's) payload (upstream `downwardapi.CollectData`):
/// every item that could be read, and the errors of the others.
pub fn downward_api_payload(
    items: &[DownwardAPIVolumeFile],
    pod: &Pod,
    node: &NodeCapacity,
    default_mode: Option<i32>,
) -> Result<Payload, PayloadError> {
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for item in items {
        let data = if let Some(f) = &item.field_ref {
            field_path_value(pod, &f.field_path)
        } else if let Some(rf) = &item.resource_field_ref {
            let name = rf.container_name.as_deref().unwrap_or_default();
            let spec = pod.spec.as_ref();
            let container = spec
                .into_iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .find(|c| c.name == name);
            match container {
                None => Err(format!("container {name} not found")),
                Some(c) => super::super::node::downward::resource_value(rf, c, node)
                    .ok_or_else(|| format!("unsupported container resource : {}", rf.resource)),
            }
        } else {
            Ok(String::new())
        };
        let data = match data {
            Ok(d) => d.into_bytes(),
            Err(e) => {
                tracing::warn!(path = %item.path, error = %e, "extracting a downward API value");
                errors.push(e);
                Vec::new()
            }
        };
        payload.insert(
            item.path.clone(),
            FileProjection {
                data,
                mode: mode(item.mode.or(default_mode)),
                fs_user: None,
            },
        );
    }
    match PayloadError::aggregate(errors) {
        Some(e) => Err(e),
        None => Ok(payload),
    }
}

/// The common effective `runAsUser` of the pod's (init and app) containers, when they all
/// have one and it is the same (upstream `FsUserFrom`).
pub fn fs_user_of(pod: &Pod) -> Option<u32> {
    let spec = pod.spec.as_ref()?;
    let pod_user = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    let mut user = None;
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        let u = c
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .or(pod_user)?;
        match user {
            Some(prev) if prev != u => return None,
            _ => user = Some(u),
        }
    }
    user.and_then(|u| u32::try_from(u).ok())
}

fn fs_group_set(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group)
        .is_some()
}

/// What reading one object gave: the object, an empty one for an optional missing object,
/// or the error.
fn found<T: Default + Clone>(
    got: Result<std::sync::Arc<T>, ObjectError>,
    optional: bool,
) -> Result<T, String> {
    match got {
        Ok(o) => Ok((*o).clone()),
        Err(e) if e.is_not_found() && optional => Ok(T::default()),
        Err(e) => Err(e.to_string()),
    }
}

/// The payload of one volume of `pod` (`None`: not one of these volume types).
pub async fn volume_payload(
    pod: &Pod,
    vol: &Volume,
    objects: &Objects,
    node: &NodeCapacity,
) -> Option<Result<Payload, PayloadError>> {
    let kind = Kind::of(vol)?;
    Some(match kind {
        Kind::ConfigMap => {
            let s = vol.config_map.as_ref()?;
            let optional = s.optional == Some(true);
            match found(objects.config_map(pod, &s.name).await, optional) {
                Ok(cm) => config_map_payload(s.items.as_deref(), &cm, s.default_mode, optional),
                Err(e) => Err(PayloadError(e)),
            }
        }
        Kind::Secret => {
            let s = vol.secret.as_ref()?;
            let optional = s.optional == Some(true);
            let name = s.secret_name.as_deref().unwrap_or_default();
            match found(objects.secret(pod, name).await, optional) {
                Ok(secret) => secret_payload(s.items.as_deref(), &secret, s.default_mode, optional),
                Err(e) => Err(PayloadError(e)),
            }
        }
        Kind::DownwardApi => {
            let s = vol.downward_api.as_ref()?;
            downward_api_payload(
                s.items.as_deref().unwrap_or_default(),
                pod,
                node,
                s.default_mode,
            )
        }
        Kind::Projected => projected_payload(pod, vol, objects, node).await,
    })
}

/// The projected volume's payload (upstream's `collectData`): every source in order (a later
/// one's path wins), every failing source's error.
async fn projected_payload(
    pod: &Pod,
    vol: &Volume,
    objects: &Objects,
    node: &NodeCapacity,
) -> Result<Payload, PayloadError> {
    let Some(p) = vol.projected.as_ref() else {
        return Ok(Payload::new());
    };
    let default_mode = p.default_mode;
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for source in p.sources.iter().flatten() {
        let part = if let Some(s) = &source.config_map {
            let optional = s.optional == Some(true);
            match found(objects.config_map(pod, &s.name).await, optional) {
                Ok(cm) => config_map_payload(s.items.as_deref(), &cm, default_mode, optional),
                Err(e) => Err(PayloadError(e)),
            }
        } else if let Some(s) = &source.secret {
            let optional = s.optional == Some(true);
            match found(objects.secret(pod, &s.name).await, optional) {
                Ok(secret) => secret_payload(s.items.as_deref(), &secret, default_mode, optional),
                Err(e) => Err(PayloadError(e)),
            }
        } else if let Some(s) = &source.downward_api {
            downward_api_payload(
                s.items.as_deref().unwrap_or_default(),
                pod,
                node,
                default_mode,
            )
        } else if let Some(t) = &source.service_account_token {
            let fs_user = fs_user_of(pod);
            let file_mode = if fs_user.is_some() || fs_group_set(pod) {
                TOKEN_OWNED_MODE
            } else {
                mode(default_mode)
            };
            let audience = t.audience.as_deref().filter(|a| !a.is_empty());
            let expiration = t.expiration_seconds.unwrap_or(DEFAULT_TOKEN_EXPIRATION);
            match objects
                .service_account_token(pod, audience, expiration)
                .await
            {
                Ok(token) => Ok(Payload::from([(
                    t.path.clone(),
                    FileProjection {
                        data: token.token.into_bytes(),
                        mode: file_mode,
                        fs_user,
                    },
                )])),
                Err(e) => Err(PayloadError(e.to_string())),
            }
        } else if source.cluster_trust_bundle.is_some() {
            Err(PayloadError(
                "clusterTrustBundle projections are not supported by kubenode (the \
                 ClusterTrustBundleProjection feature is beta and off by default upstream)"
                    .into(),
            ))
        } else {
            Ok(Payload::new())
        };
        match part {
            Ok(part) => payload.extend(part),
            Err(e) => errors.push(e.0),
        }
    }
    match PayloadError::aggregate(errors) {
        Some(e) => Err(e),
        None => Ok(payload),
    }
}

/// The payloads of every configMap, secret, downwardAPI and projected volume of `pod`, by
/// volume name.
pub async fn pod_payloads(
    pod: &Pod,
    objects: &Objects,
    node: &NodeCapacity,
) -> HashMap<String, Result<Payload, PayloadError>> {
    let mut out = HashMap::new();
    for vol in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(p) = volume_payload(pod, vol, objects, node).await {
            out.insert(vol.name.clone(), p);
        }
    }
    out
}

/// Whether the pod has any volume whose contents [`pod_payloads`] makes.
pub fn has_projected_volumes(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| Kind::of(v).is_some())
}

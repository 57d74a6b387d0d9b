//! The configuration file as written: every key optional, camelCase. The keys kubenode acts on
//! are the fields below; upstream's other KubeletConfiguration keys are accepted and listed in
//! [`ConfigFile::unsupported`]; any other key is an error.

use super::{upstream, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The only accepted `apiVersion`.
pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
/// The only accepted `kind`.
pub const KIND: &str = "KubeletConfiguration";

/// The keys of a configuration file. Durations are Go durations (`20s`),
/// sizes are quantities (`10Mi`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(
    missing_docs,
    reason = "each field is the upstream key of the same name"
)]
pub struct ConfigFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    // upstream KubeletConfiguration keys
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_pod_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_check_frequency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_frequency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<u32>,
    #[serde(rename = "podCIDR", skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    #[serde(rename = "clusterDNS", skip_serializing_if = "Option::is_none")]
    pub cluster_dns: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthz_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthz_bind_address: Option<String>,
    pub enable_server: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_private_key_file: Option<String>,
    #[serde(rename = "serverTLSBootstrap", skip_serializing_if = "Option::is_none")]
    pub server_tls_bootstrap: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_min_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cipher_suites: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streaming_connection_idle_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<super::server::AuthenticationFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<super::server::AuthorizationFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_log_max_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_log_max_files: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_swap_on: Option<bool>,
    pub pod_pids_limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_unsafe_sysctls: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp_default: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_with_taints: Option<Vec<k8s_openapi::api::core::v1::Taint>>,
    #[serde(rename = "imageMinimumGCAge", skip_serializing_if = "Option::is_none")]
    pub image_minimum_gc_age: Option<String>,
    #[serde(
        rename = "imageGCHighThresholdPercent",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_gc_high_threshold_percent: Option<i32>,
    #[serde(
        rename = "imageGCLowThresholdPercent",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_gc_low_threshold_percent: Option<i32>,
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub kube_reserved: Option<std::collections::BTreeMap<String, String>>,
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub system_reserved: Option<std::collections::BTreeMap<String, String>>,
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub eviction_hard: Option<std::collections::BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge_default_eviction_settings: Option<bool>,
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub eviction_soft: Option<std::collections::BTreeMap<String, String>>,
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub eviction_soft_grace_period: Option<std::collections::BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_pressure_transition_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_max_pod_grace_period: Option<i32>,
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub eviction_minimum_reclaim: Option<std::collections::BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforce_node_allocatable: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotate_certificates: Option<bool>,
    // kubenode's own keys
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(rename = "nodeIP", skip_serializing_if = "Option::is_none")]
    pub node_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<String>,
    #[serde(rename = "clusterCIDR", skip_serializing_if = "Option::is_none")]
    pub cluster_cidr: Option<String>,
    #[serde(rename = "serviceCIDR", skip_serializing_if = "Option::is_none")]
    pub service_cidr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_node_port_range: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_registries: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cni_conf_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cni_bin_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mounter_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// The keys of the file that upstream's KubeletConfiguration has and kubenode does not act
    /// on, in file order: accepted, reported once at start (see
    /// [`unsupported_warning`](super::upstream::unsupported_warning)).
    #[serde(skip)]
    pub unsupported: Vec<String>,
}

/// A map of strings whose values may be written as YAML numbers (`cpu: 1`), as upstream's YAML
/// decoding turns a scalar into the string its Go field wants.
fn scalar_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::collections::BTreeMap<String, String>>, D::Error> {
    use serde::de::Error;
    let map: Option<std::collections::BTreeMap<String, serde_yaml_ng::Value>> =
        Option::deserialize(d)?;
    map.map(|m| {
        m.into_iter()
            .map(|(k, v)| match v {
                serde_yaml_ng::Value::String(s) => Ok((k, s)),
                serde_yaml_ng::Value::Number(n) => Ok((k, n.to_string())),
                serde_yaml_ng::Value::Bool(b) => Ok((k, b.to_string())),
                other => Err(D::Error::custom(format!(
                    "{k}: expected a string, not {other:?}"
                ))),
            })
            .collect()
    })
    .transpose()
}

/// The upstream KubeletConfiguration keys kubenode acts on: [`ConfigFile`]'s upstream fields.
const USED_UPSTREAM_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "staticPodPath",
    "fileCheckFrequency",
    "syncFrequency",
    "maxPods",
    "podCIDR",
    "clusterDNS",
    "clusterDomain",
    "readOnlyPort",
    "address",
    "healthzPort",
    "healthzBindAddress",
    "enableServer",
    "port",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "serverTLSBootstrap",
    "tlsMinVersion",
    "tlsCipherSuites",
    "streamingConnectionIdleTimeout",
    "authentication",
    "authorization",
    "resolvConf",
    "containerLogMaxSize",
    "containerLogMaxFiles",
    "failSwapOn",
    "podPidsLimit",
    "allowedUnsafeSysctls",
    "seccompDefault",
    "registerWithTaints",
    "imageMinimumGCAge",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "kubeReserved",
    "systemReserved",
    "evictionHard",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionPressureTransitionPeriod",
    "evictionMaxPodGracePeriod",
    "evictionMinimumReclaim",
    "mergeDefaultEvictionSettings",
    "enforceNodeAllocatable",
    "rotateCertificates",
];

/// kubenode's own keys (upstream has no key of these names): [`ConfigFile`]'s other fields.
const OWN_KEYS: &[&str] = &[
    "nodeName",
    "nodeIP",
    "rootDir",
    "runDir",
    "logDir",
    "clusterCIDR",
    "serviceCIDR",
    "serviceNodePortRange",
    "insecureRegistries",
    "cniConfDir",
    "cniBinDir",
    "runtime",
    "mounterPath",
    "kubeconfig",
];

/// Whether [`ConfigFile`] has a field for `key`.
fn is_used_key(key: &str) -> bool {
    USED_UPSTREAM_KEYS.contains(&key) || OWN_KEYS.contains(&key)
}

impl ConfigFile {
    /// Reads and parses `file`.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.into(),
            source,
        })?;
        Self::parse(&text, file)
    }

    /// Parses the text of a configuration file; `file` names it in errors.
    /// An empty file is an empty configuration.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse {
                file: file.into(),
                source,
            })?;
        let invalid = |key: &str, reason: String| ConfigError::InvalidValue {
            file: file.into(),
            key: key.into(),
            reason,
        };
        let map = match value {
            serde_yaml_ng::Value::Null => return Ok(Self::default()),
            serde_yaml_ng::Value::Mapping(m) => m,
            _ => {
                return Err(invalid(
                    "(top level)",
                    "must be a mapping of keys to values".into(),
                ))
            }
        };
        // Keys kubenode acts on stay for the typed parse; upstream's other keys are set aside
        // with their values unread; anything else is a typo.
        let mut unsupported = Vec::new();
        let mut map = map;
        for key in map.keys().cloned().collect::<Vec<_>>() {
            let name = match &key {
                serde_yaml_ng::Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            };
            if is_used_key(&name) {
                continue;
            }
            if !upstream::is_upstream_key(&name) {
                return Err(ConfigError::UnknownKey {
                    file: file.into(),
                    key: name,
                });
            }
            map.remove(&key);
            unsupported.push(name);
        }
        let mut cfg: Self =
            match serde_yaml_ng::from_value(serde_yaml_ng::Value::Mapping(map.clone())) {
                Ok(cfg) => cfg,
                Err(source) => {
                    // Name the key whose value has the wrong type.
                    for (k, v) in map {
                        let mut one = serde_yaml_ng::Mapping::new();
                        let key = k.as_str().unwrap_or_default().to_owned();
                        one.insert(k, v);
                        if let Err(e) =
                            serde_yaml_ng::from_value::<Self>(serde_yaml_ng::Value::Mapping(one))
                        {
                            return Err(invalid(&key, e.to_string()));
                        }
                    }
                    return Err(ConfigError::Parse {
                        file: file.into(),
                        source,
                    });
                }
            };
        match cfg.api_version.as_deref() {
            Some(API_VERSION) => {}
            Some(other) => {
                return Err(invalid(
                    "apiVersion",
                    format!("must be {API_VERSION:?}, not {other:?}"),
                ))
            }
            None => {
                return Err(invalid(
                    "apiVersion",
                    format!("missing; add `apiVersion: {API_VERSION}`"),
                ))
            }
        }
        match cfg.kind.as_deref() {
            Some(KIND) => {}
            Some(other) => return Err(invalid("kind", format!("must be {KIND:?}, not {other:?}"))),
            None => return Err(invalid("kind", format!("missing; add `kind: {KIND}`"))),
        }
        cfg.unsupported = unsupported;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(text, Path::new("/etc/kubenode/config.yaml"))
    }

    #[test]
    fn parses_known_keys() {
        let c = parse(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             staticPodPath: /m\nfileCheckFrequency: 5s\nmaxPods: 20\npodCIDR: 10.244.1.0/24\n\
             clusterDNS: [10.96.0.10]\nreadOnlyPort: 0\nnodeIP: 10.0.0.2\ninsecureRegistries: [127.0.0.1:5000]\n",
        )
        .unwrap();
        assert_eq!(c.static_pod_path.as_deref(), Some("/m"));
        assert_eq!(c.max_pods, Some(20));
        assert_eq!(c.pod_cidr.as_deref(), Some("10.244.1.0/24"));
        assert_eq!(c.cluster_dns, Some(vec!["10.96.0.10".to_owned()]));
        assert_eq!(c.read_only_port, Some(0));
        assert_eq!(c.node_ip.as_deref(), Some("10.0.0.2"));
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let e = parse(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPod: 3\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "configuration file /etc/kubenode/config.yaml: unknown key \"maxPod\""
        );
    }

    #[test]
    fn kind_and_version_checked() {
        let e = parse("apiVersion: v1\nkind: KubeletConfiguration\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("apiVersion: must be \"kubelet.config.k8s.io/v1beta1\""),
            "{e}"
        );
        let e = parse("apiVersion: kubelet.config.k8s.io/v1beta1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("kind: missing"), "{e}");
        let e = parse("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: many\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "configuration file /etc/kubenode/config.yaml: maxPods: invalid type: string \"many\", expected u32"
        );
        let e = parse("a: [").unwrap_err().to_string();
        assert!(
            e.starts_with("parsing configuration file /etc/kubenode/config.yaml:"),
            "{e}"
        );
        assert!(parse("- a\n").is_err());
        assert_eq!(parse("").unwrap(), ConfigFile::default());
    }
    /// `kubeadm join`'s file loads: the keys kubenode uses are read, the others listed once.
    #[test]
    fn kubeadm_file_loads_with_its_unsupported_keys() {
        let c = parse(include_str!("testdata/kubeadm-v1.32-config.yaml")).unwrap();
        assert_eq!(
            c.static_pod_path.as_deref(),
            Some("/etc/kubernetes/manifests")
        );
        assert_eq!(c.cluster_dns, Some(vec!["10.96.0.10".to_owned()]));
        assert_eq!(c.cluster_domain.as_deref(), Some("cluster.local"));
        assert_eq!(c.file_check_frequency.as_deref(), Some("0s"));
        assert_eq!(
            c.resolv_conf.as_deref(),
            Some("/run/systemd/resolve/resolv.conf")
        );
        assert_eq!(
            c.unsupported,
            [
                "cgroupDriver",
                "containerRuntimeEndpoint",
                "cpuManagerReconcilePeriod",
                "crashLoopBackOff",
                "httpCheckFrequency",
                "imageMaximumGCAge",
                "logging",
                "memorySwap",
                "nodeStatusReportFrequency",
                "nodeStatusUpdateFrequency",
                "runtimeRequestTimeout",
                "shutdownGracePeriod",
                "shutdownGracePeriodCriticalPods",
                "volumeStatsAggPeriod",
            ]
        );
    }

    #[test]
    fn typo_next_to_upstream_keys_is_still_an_error() {
        let e = parse(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             cgroupDriver: systemd\nclusterDns: [10.96.0.10]\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "configuration file /etc/kubenode/config.yaml: unknown key \"clusterDns\""
        );
    }

    /// Every upstream key is either a field of `ConfigFile` or accepted as unsupported, with any
    /// nested value; kubenode's own keys are not upstream's.
    #[test]
    fn every_upstream_key_is_accepted() {
        for key in USED_UPSTREAM_KEYS {
            assert!(upstream::is_upstream_key(key), "{key} is not upstream's");
            // No "not supported" note for a key kubenode acts on.
            assert_eq!(
                upstream::unsupported_warning(key),
                format!("not supported by kubenode: {key}")
            );
        }
        for key in OWN_KEYS {
            assert!(!upstream::is_upstream_key(key), "{key} shadows upstream's");
        }
        let unsupported: Vec<&str> = upstream::UPSTREAM_KEYS
            .iter()
            .copied()
            .filter(|k| !is_used_key(k))
            .collect();
        assert_eq!(
            unsupported.len() + USED_UPSTREAM_KEYS.len(),
            upstream::UPSTREAM_KEYS.len()
        );
        let mut text =
            String::from("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n");
        for key in &unsupported {
            text.push_str(&format!(
                "{key}: {{nested: [1, {{deeper: null}}], s: \"x\"}}\n"
            ));
        }
        let c = parse(&text).unwrap();
        assert_eq!(c.unsupported, unsupported);
        assert_eq!(
            ConfigFile {
                unsupported: Vec::new(),
                ..c
            },
            parse("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n")
                .unwrap()
        );
        // And one at a time, each with a scalar value.
        for key in &unsupported {
            let c = parse(&format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n{key}: 0\n"
            ))
            .unwrap();
            assert_eq!(c.unsupported, [*key]);
        }
    }
}

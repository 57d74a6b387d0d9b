//! The top-level keys of upstream's KubeletConfiguration (`kubelet.config.k8s.io/v1beta1`,
//! `k8s.io/kubelet/config/v1beta1/types.go`), so that a file written for the kubelet, e.g. the
//! `/var/lib/kubelet/config.yaml` that `kubeadm join` writes, loads: the keys kubenode acts on
//! are fields of [`ConfigFile`](super::ConfigFile); every other key of this list is accepted
//! (its value only has to be YAML) and reported once at start by [`unsupported_warning`]. A key
//! in neither is an error: a typo.

/// Every top-level key of upstream's KubeletConfiguration v1beta1, in the order of `types.go`
/// (the `json` tags of the struct; `apiVersion` and `kind` come from its `TypeMeta`). The list
/// is that of v1.32 plus the keys later releases added (`tlsCurvePreferences`,
/// `imagePullCredentialsVerificationPolicy`, `preloadedImagesVerificationAllowlist`,
/// `draManagerReconcilePeriod`, `mergeDefaultEvictionSettings`, `memoryReservationPolicy`), so
/// that a newer kubeadm's file loads too; upstream never removes a v1beta1 key.
pub const UPSTREAM_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "enableServer",
    "staticPodPath",
    "podLogsDir",
    "syncFrequency",
    "fileCheckFrequency",
    "httpCheckFrequency",
    "staticPodURL",
    "staticPodURLHeader",
    "address",
    "port",
    "readOnlyPort",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "tlsCipherSuites",
    "tlsCurvePreferences",
    "tlsMinVersion",
    "rotateCertificates",
    "serverTLSBootstrap",
    "authentication",
    "authorization",
    "registryPullQPS",
    "registryBurst",
    "imagePullCredentialsVerificationPolicy",
    "preloadedImagesVerificationAllowlist",
    "eventRecordQPS",
    "eventBurst",
    "enableDebuggingHandlers",
    "enableContentionProfiling",
    "healthzPort",
    "healthzBindAddress",
    "oomScoreAdj",
    "clusterDomain",
    "clusterDNS",
    "streamingConnectionIdleTimeout",
    "nodeStatusUpdateFrequency",
    "nodeStatusReportFrequency",
    "nodeLeaseDurationSeconds",
    "imageMinimumGCAge",
    "imageMaximumGCAge",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "volumeStatsAggPeriod",
    "kubeletCgroups",
    "systemCgroups",
    "cgroupRoot",
    "cgroupsPerQOS",
    "cgroupDriver",
    "cpuManagerPolicy",
    "singleProcessOOMKill",
    "cpuManagerPolicyOptions",
    "cpuManagerReconcilePeriod",
    "draManagerReconcilePeriod",
    "memoryManagerPolicy",
    "topologyManagerPolicy",
    "topologyManagerScope",
    "topologyManagerPolicyOptions",
    "qosReserved",
    "runtimeRequestTimeout",
    "hairpinMode",
    "maxPods",
    "podCIDR",
    "podPidsLimit",
    "resolvConf",
    "runOnce",
    "cpuCFSQuota",
    "cpuCFSQuotaPeriod",
    "nodeStatusMaxImages",
    "maxOpenFiles",
    "contentType",
    "kubeAPIQPS",
    "kubeAPIBurst",
    "serializeImagePulls",
    "maxParallelImagePulls",
    "evictionHard",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionPressureTransitionPeriod",
    "evictionMaxPodGracePeriod",
    "evictionMinimumReclaim",
    "mergeDefaultEvictionSettings",
    "podsPerCore",
    "enableControllerAttachDetach",
    "protectKernelDefaults",
    "makeIPTablesUtilChains",
    "iptablesMasqueradeBit",
    "iptablesDropBit",
    "featureGates",
    "failSwapOn",
    "memorySwap",
    "containerLogMaxSize",
    "containerLogMaxFiles",
    "containerLogMaxWorkers",
    "containerLogMonitorInterval",
    "configMapAndSecretChangeDetectionStrategy",
    "systemReserved",
    "kubeReserved",
    "reservedSystemCPUs",
    "showHiddenMetricsForVersion",
    "systemReservedCgroup",
    "kubeReservedCgroup",
    "enforceNodeAllocatable",
    "allowedUnsafeSysctls",
    "volumePluginDir",
    "providerID",
    "kernelMemcgNotification",
    "logging",
    "enableSystemLogHandler",
    "enableSystemLogQuery",
    "shutdownGracePeriod",
    "shutdownGracePeriodCriticalPods",
    "shutdownGracePeriodByPodPriority",
    "crashLoopBackOff",
    "reservedMemory",
    "enableProfilingHandler",
    "enableDebugFlagsHandler",
    "seccompDefault",
    "memoryThrottlingFactor",
    "memoryReservationPolicy",
    "registerWithTaints",
    "registerNode",
    "tracing",
    "localStorageCapacityIsolation",
    "containerRuntimeEndpoint",
    "imageServiceEndpoint",
    "failCgroupV1",
    "userNamespaces",
];

/// Settings of the kubelet's HTTPS API (port 10250) that kubenode's server does not offer:
/// its curves are rustls's defaults and it has no profiling or debugging handlers beyond its
/// routes (docs/architecture.md, "The kubelet's HTTPS server").
const HTTPS_API: &str =
    "kubenode's HTTPS server on port 10250 uses rustls's default curves and serves no \
     profiling or debug-flag handlers";

/// What the start-up warning adds for some keys: why ignoring the key is harmless, what to use
/// instead, or, where the value may ask for more protection than kubenode gives, that it does
/// not give it.
const NOTES: &[(&str, &str)] = &[
    ("tlsCurvePreferences", HTTPS_API),
    ("enableDebuggingHandlers", HTTPS_API),
    ("enableContentionProfiling", HTTPS_API),
    ("enableSystemLogHandler", HTTPS_API),
    ("enableSystemLogQuery", HTTPS_API),
    ("enableProfilingHandler", HTTPS_API),
    ("enableDebugFlagsHandler", HTTPS_API),
    (
        "imagePullCredentialsVerificationPolicy",
        "kubenode does not re-check pull credentials: any pod on this node may use an image \
         already pulled",
    ),
    (
        "preloadedImagesVerificationAllowlist",
        "kubenode does not re-check pull credentials: any pod on this node may use an image \
         already pulled",
    ),
    (
        "protectKernelDefaults",
        "kubenode neither changes nor checks the kernel settings it covers: \
         vm.overcommit_memory, vm.panic_on_oom, kernel.panic, kernel.panic_on_oops, kernel.keys.*",
    ),
    (
        "containerRuntimeEndpoint",
        "kubenode runs containers itself through an OCI runtime, its runtime key, not through a \
         CRI endpoint",
    ),
    (
        "imageServiceEndpoint",
        "kubenode pulls and stores images itself, not through a CRI endpoint",
    ),
    (
        "cgroupDriver",
        "kubenode places pods under /kubepods through the cgroup filesystem, as the cgroupfs \
         driver does",
    ),
    (
        "podLogsDir",
        "kubenode's key for the pod log directory is logDir",
    ),
    (
        "staticPodURL",
        "kubenode reads static pods from staticPodPath only",
    ),
    (
        "staticPodURLHeader",
        "kubenode reads static pods from staticPodPath only",
    ),
];

/// Whether `key` is a top-level key of upstream's KubeletConfiguration.
pub fn is_upstream_key(key: &str) -> bool {
    UPSTREAM_KEYS.contains(&key)
}

/// The start-up warning for an upstream key kubenode accepts without acting on it:
/// `not supported by kubenode: KEY`, and why that is harmless (or what it means) where there is
/// something to say.
pub fn unsupported_warning(key: &str) -> String {
    match NOTES.iter().find(|(k, _)| *k == key) {
        Some((_, note)) => format!("not supported by kubenode: {key} ({note})"),
        None => format!("not supported by kubenode: {key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_notes_name_upstream_keys() {
        let mut seen = std::collections::HashSet::new();
        for k in UPSTREAM_KEYS {
            assert!(seen.insert(k), "{k} listed twice");
        }
        for (k, _) in NOTES {
            assert!(
                is_upstream_key(k),
                "note for {k}, which upstream does not have"
            );
        }
    }

    #[test]
    fn warning_text() {
        assert_eq!(
            unsupported_warning("memorySwap"),
            "not supported by kubenode: memorySwap"
        );
        assert_eq!(
            unsupported_warning("tlsCurvePreferences"),
            "not supported by kubenode: tlsCurvePreferences (kubenode's HTTPS server on port \
             10250 uses rustls's default curves and serves no profiling or debug-flag handlers)"
        );
    }
}

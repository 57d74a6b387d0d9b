//! Service environment variables (k/k pkg/kubelet/envvars): for every Service a pod can see,
//! `NAME_SERVICE_HOST`, `NAME_SERVICE_PORT[_PORTNAME]` and the Docker-link style
//! `NAME_PORT`, `NAME_PORT_<port>_<PROTO>{,_PROTO,_PORT,_ADDR}`.

use k8s_openapi::api::core::v1::Service;

/// The namespace whose `kubernetes` Service every pod sees.
const MASTER_NAMESPACE: &str = "default";

fn env_name(name: &str) -> String {
    name.to_uppercase().replace('-', "_")
}

fn cluster_ip(s: &Service) -> Option<&str> {
    s.spec
        .as_ref()
        .and_then(|sp| sp.cluster_ip.as_deref())
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// The variables for one Service (empty when it has no ClusterIP, e.g. headless).
pub fn service_vars(s: &Service) -> Vec<(String, String)> {
    let Some(ip) = cluster_ip(s) else {
        return Vec::new();
    };
    let ports = s
        .spec
        .as_ref()
        .and_then(|sp| sp.ports.clone())
        .unwrap_or_default();
    let Some(first) = ports.first() else {
        return Vec::new();
    };
    let prefix = env_name(s.metadata.name.as_deref().unwrap_or_default());
    let host_port = |port: i32| {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    let mut out = vec![
        (format!("{prefix}_SERVICE_HOST"), ip.to_string()),
        (format!("{prefix}_SERVICE_PORT"), first.port.to_string()),
    ];
    for p in &ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((
                format!("{prefix}_SERVICE_PORT_{}", env_name(n)),
                p.port.to_string(),
            ));
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        let lower = proto.to_lowercase();
        if i == 0 {
            out.push((
                format!("{prefix}_PORT"),
                format!("{lower}://{}", host_port(p.port)),
            ));
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.push((pp.clone(), format!("{lower}://{}", host_port(p.port))));
        out.push((format!("{pp}_PROTO"), lower));
        out.push((format!("{pp}_PORT"), p.port.to_string()));
        out.push((format!("{pp}_ADDR"), ip.to_string()));
    }
    out
}

/// The variables a pod in `namespace` gets: every Service of its namespace when
/// `enable_service_links` (the default), and the `kubernetes` Service of the master namespace.
pub fn service_env(
    services: &[Service],
    namespace: &str,
    enable_service_links: bool,
) -> Vec<(String, String)> {
    let mut visible: Vec<&Service> = services
        .iter()
        .filter(|s| {
            let ns = s.metadata.namespace.as_deref().unwrap_or("default");
            let name = s.metadata.name.as_deref().unwrap_or_default();
            (enable_service_links && ns == namespace)
                || (ns == MASTER_NAMESPACE && name == "kubernetes")
        })
        .collect();
    visible.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    visible.dedup_by(|a, b| a.metadata.name == b.metadata.name);
    visible.into_iter().flat_map(service_vars).collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};

    use super::*;

    fn svc(ns: &str, name: &str, ip: &str, ports: &[(Option<&str>, i32, &str)]) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some(ns.into());
        s.spec = Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, proto)| ServicePort {
                        name: n.map(String::from),
                        port: *p,
                        protocol: Some(proto.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        s
    }

    #[test]
    fn matches_upstream_names_and_values() {
        let s = svc(
            "default",
            "redis-primary",
            "10.0.0.11",
            &[(None, 6379, "TCP")],
        );
        let env = service_env(&[s], "default", true);
        let want = [
            ("REDIS_PRIMARY_SERVICE_HOST", "10.0.0.11"),
            ("REDIS_PRIMARY_SERVICE_PORT", "6379"),
            ("REDIS_PRIMARY_PORT", "tcp://10.0.0.11:6379"),
            ("REDIS_PRIMARY_PORT_6379_TCP", "tcp://10.0.0.11:6379"),
            ("REDIS_PRIMARY_PORT_6379_TCP_PROTO", "tcp"),
            ("REDIS_PRIMARY_PORT_6379_TCP_PORT", "6379"),
            ("REDIS_PRIMARY_PORT_6379_TCP_ADDR", "10.0.0.11"),
        ];
        let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn named_ports_other_namespaces_headless_and_links_off() {
        let multi = svc(
            "shop",
            "web",
            "10.0.0.5",
            &[(Some("http"), 80, "TCP"), (Some("dns-udp"), 53, "UDP")],
        );
        let other = svc("other", "db", "10.0.0.6", &[(None, 5432, "TCP")]);
        let headless = svc("shop", "headless", "None", &[(None, 80, "TCP")]);
        let master = svc(
            "default",
            "kubernetes",
            "10.0.0.1",
            &[(Some("https"), 443, "TCP")],
        );
        let all = [multi, other, headless, master];
        let env = service_env(&all, "shop", true);
        let has = |k: &str, v: &str| env.iter().any(|(a, b)| a == k && b == v);
        assert!(has("WEB_SERVICE_PORT_HTTP", "80"));
        assert!(has("WEB_SERVICE_PORT_DNS_UDP", "53"));
        assert!(has("WEB_PORT_53_UDP_PROTO", "udp"));
        assert!(has("KUBERNETES_SERVICE_HOST", "10.0.0.1"));
        assert!(!env
            .iter()
            .any(|(k, _)| k.starts_with("DB_") || k.starts_with("HEADLESS_")));
        let env = service_env(&all, "shop", false);
        assert!(
            env.iter().all(|(k, _)| k.starts_with("KUBERNETES_")),
            "{env:?}"
        );
    }
}

//! `kubenode get services|endpoints` rows, as kubectl prints them (k/k
//! pkg/printers/internalversion/printers.go `printService`, `formatEndpoints`).

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::jiff::Timestamp;
use kubenode_kubelet::status::human_duration;

/// NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE [SELECTOR].
pub fn service_row(s: &Service, now: Timestamp, wide: bool) -> Vec<String> {
    let spec = s.spec.clone().unwrap_or_default();
    let type_ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    let cluster_ip = spec
        .cluster_ips
        .as_ref()
        .and_then(|ips| ips.first().cloned())
        .or(spec.cluster_ip.clone())
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| "<none>".into());
    let external = match spec.external_ips.as_ref().filter(|l| !l.is_empty()) {
        Some(ips) => ips.join(","),
        None if type_ == "LoadBalancer" => "<pending>".into(),
        None => "<none>".into(),
    };
    let ports: Vec<String> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            match p.node_port {
                Some(np) if np != 0 => format!("{}:{np}/{proto}", p.port),
                _ => format!("{}/{proto}", p.port),
            }
        })
        .collect();
    let age = s.metadata.creation_timestamp.as_ref().map_or_else(
        || "<unknown>".into(),
        |t| human_duration(now.as_second() - t.0.as_second()),
    );
    let mut row = vec![
        s.metadata.name.clone().unwrap_or_default(),
        type_,
        cluster_ip,
        external,
        if ports.is_empty() {
            "<none>".into()
        } else {
            ports.join(",")
        },
        age,
    ];
    if wide {
        let selector = spec
            .selector
            .filter(|m| !m.is_empty())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_else(|| "<none>".into());
        row.push(selector);
    }
    row
}

/// kubectl's ENDPOINTS column: up to three `ip:port`, then ` + N more...`; `<none>` when empty.
pub fn format_endpoints(e: &Endpoints) -> String {
    const MAX: usize = 3;
    let mut all = Vec::new();
    for subset in e.subsets.iter().flatten() {
        let ports: Vec<i32> = subset.ports.iter().flatten().map(|p| p.port).collect();
        for a in subset.addresses.iter().flatten() {
            if ports.is_empty() {
                all.push(a.ip.clone());
            }
            for p in &ports {
                all.push(format!("{}:{p}", a.ip));
            }
        }
    }
    match all.len() {
        0 => "<none>".into(),
        n if n > MAX => format!("{} + {} more...", all[..MAX].join(","), n - MAX),
        _ => all.join(","),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        EndpointAddress, EndpointPort, EndpointSubset, ServicePort, ServiceSpec,
    };

    use super::*;

    #[test]
    fn node_port_service_row() {
        let mut s = Service::default();
        s.metadata.name = Some("web".into());
        s.spec = Some(ServiceSpec {
            type_: Some("NodePort".into()),
            cluster_ip: Some("10.96.0.1".into()),
            selector: Some([("app".to_string(), "web".to_string())].into()),
            ports: Some(vec![ServicePort {
                port: 80,
                node_port: Some(30080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let now: Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        assert_eq!(
            service_row(&s, now, true),
            [
                "web",
                "NodePort",
                "10.96.0.1",
                "<none>",
                "80:30080/TCP",
                "<unknown>",
                "app=web"
            ]
        );
    }

    #[test]
    fn endpoints_column() {
        let addr = |ip: &str| EndpointAddress {
            ip: ip.into(),
            ..Default::default()
        };
        let mut e = Endpoints::default();
        assert_eq!(format_endpoints(&e), "<none>");
        e.subsets = Some(vec![EndpointSubset {
            addresses: Some(vec![
                addr("10.0.0.1"),
                addr("10.0.0.2"),
                addr("10.0.0.3"),
                addr("10.0.0.4"),
            ]),
            ports: Some(vec![EndpointPort {
                port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }]);
        assert_eq!(
            format_endpoints(&e),
            "10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080 + 1 more..."
        );
    }
}

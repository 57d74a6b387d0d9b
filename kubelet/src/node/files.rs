//! The files the kubelet manages for every pod: `/etc/hosts`, `/etc/resolv.conf` and
//! `/etc/hostname` (k/k pkg/kubelet/kubelet_pods.go `managedHostsFileContent`,
//! pkg/kubelet/network/dns).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, PodSpec};

/// The pod's hostname: `spec.hostname` or the pod name (truncated to 63 characters).
pub fn hostname(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    let name = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

/// The pod's spec (empty when it has none) and namespace (`default` when unset).
fn spec_and_namespace(pod: &Pod) -> (PodSpec, String) {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    (spec, ns)
}

/// The managed `/etc/hosts`: localhost lines, the pod's IPs with its hostname (and FQDN with a
/// subdomain), then `hostAliases`.
pub fn hosts_file(pod: &Pod, pod_ips: &[IpAddr], cluster_domain: &str) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let host = hostname(pod);
    let (spec, ns) = spec_and_namespace(pod);
    for ip in pod_ips {
        match spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => out.push_str(&format!(
                "{ip}\t{host}.{sub}.{ns}.svc.{cluster_domain}\t{host}\n"
            )),
            None => out.push_str(&format!("{ip}\t{host}\n")),
        }
    }
    let aliases = spec.host_aliases.unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            let names = a.hostnames.unwrap_or_default().join("\t");
            out.push_str(&format!("{}\t{names}\n", a.ip));
        }
    }
    out
}

/// The pod's `/etc/resolv.conf` per `dnsPolicy` (`ClusterFirst` default; `Default` copies the
/// host's; `None` uses only `dnsConfig`), with `dnsConfig` merged in. `host` is the node's
/// resolv.conf text.
pub fn resolv_conf(pod: &Pod, cluster_dns: &[String], cluster_domain: &str, host: &str) -> String {
    let (spec, ns) = spec_and_namespace(pod);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let host_network = spec.host_network.unwrap_or(false);
    let (host_ns, host_search, host_opts) = parse_resolv(host);
    let (mut servers, mut search, mut options): (Vec<String>, Vec<String>, Vec<String>) =
        match policy {
            "None" => (vec![], vec![], vec![]),
            "ClusterFirst" | "ClusterFirstWithHostNet"
                if !cluster_dns.is_empty()
                    && (!host_network || policy == "ClusterFirstWithHostNet") =>
            {
                let mut search = vec![
                    format!("{ns}.svc.{cluster_domain}"),
                    format!("svc.{cluster_domain}"),
                    cluster_domain.to_string(),
                ];
                search.extend(host_search);
                (cluster_dns.to_vec(), search, vec!["ndots:5".into()])
            }
            _ => (host_ns, host_search, host_opts),
        };
    if let Some(cfg) = spec.dns_config {
        servers.extend(cfg.nameservers.unwrap_or_default());
        search.extend(cfg.searches.unwrap_or_default());
        for o in cfg.options.unwrap_or_default() {
            let name = o.name.unwrap_or_default();
            options.retain(|x| x.split(':').next() != Some(name.as_str()));
            options.push(match o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    dedup(&mut search);
    search.truncate(32);
    let mut out = String::new();
    for s in servers.iter().take(3) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

fn parse_resolv(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut ns, mut search, mut opts) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => ns.extend(f.next().map(String::from)),
            Some("search") | Some("domain") => search = f.map(String::from).collect(),
            Some("options") => opts.extend(f.map(String::from)),
            _ => {}
        }
    }
    (ns, search, opts)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{HostAlias, PodSpec};

    use super::*;
    use crate::testing::{self, PodBuilder};

    fn shop_pod() -> PodBuilder {
        testing::pod()
            .name("web-node1")
            .namespace("shop")
            .spec(PodSpec::default())
    }

    fn pod() -> Pod {
        shop_pod().build()
    }

    #[test]
    fn hosts_with_ip_subdomain_and_aliases() {
        let p = shop_pod()
            .with_spec(|spec| {
                spec.hostname = Some("web".into());
                spec.subdomain = Some("front".into());
                spec.host_aliases = Some(vec![HostAlias {
                    ip: "10.1.2.3".into(),
                    hostnames: Some(vec!["foo.local".into(), "bar".into()]),
                }]);
            })
            .build();
        let text = hosts_file(&p, &["10.244.1.5".parse().unwrap()], "cluster.local");
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(
            text.contains("10.244.1.5\tweb.front.shop.svc.cluster.local\tweb\n"),
            "{text}"
        );
        assert!(
            text.ends_with("# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar\n"),
            "{text}"
        );
        assert_eq!(hostname(&pod()), "web-node1");
    }

    #[test]
    fn cluster_first_resolv_conf() {
        let host = "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";
        let text = resolv_conf(&pod(), &["10.96.0.10".into()], "cluster.local", host);
        assert_eq!(
            text,
            "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n"
        );
    }

    #[test]
    fn dns_config_extends_the_policy_and_none_uses_only_it() {
        use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption};
        let option = |name: &str, value: Option<&str>| PodDNSConfigOption {
            name: Some(name.into()),
            value: value.map(Into::into),
        };
        let cfg = PodDNSConfig {
            nameservers: Some(vec!["192.0.2.1".into()]),
            searches: Some(vec!["corp.example".into()]),
            options: Some(vec![option("ndots", Some("2")), option("edns0", None)]),
        };
        let with = |policy: &str| {
            shop_pod()
                .with_spec(|s| {
                    s.dns_policy = Some(policy.into());
                    s.dns_config = Some(cfg.clone());
                })
                .build()
        };
        let host = "nameserver 192.0.2.53\nsearch host.example\n";
        let dns = ["10.96.0.10".to_owned()];
        assert_eq!(
            resolv_conf(&with("None"), &dns, "cluster.local", host),
            "nameserver 192.0.2.1\nsearch corp.example\noptions ndots:2 edns0\n"
        );
        assert_eq!(
            resolv_conf(&with("ClusterFirst"), &dns, "cluster.local", host),
            "nameserver 10.96.0.10\nnameserver 192.0.2.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local host.example corp.example\noptions ndots:2 edns0\n"
        );
        assert_eq!(
            resolv_conf(&with("Default"), &dns, "cluster.local", host),
            "nameserver 192.0.2.53\nnameserver 192.0.2.1\nsearch host.example corp.example\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn without_cluster_dns_falls_back_to_the_host() {
        let host = "nameserver 192.0.2.53\nsearch corp.example\n";
        let text = resolv_conf(&pod(), &[], "cluster.local", host);
        assert_eq!(text, "nameserver 192.0.2.53\nsearch corp.example\n");
    }
}

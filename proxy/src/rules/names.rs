//! Chain and `recent`-list names: kube-proxy's hashes (§1.2 of the reference) and the names of
//! kubenode's bucket chains.

use crate::model::{masked_net, Endpoint, Ipv4Net, Protocol, ServicePortName};
use sha2::{Digest, Sha256};
use std::net::Ipv4Addr;

/// Prefix of the per-address-range service chains (`KUBE-SVCS-172.30.5.0`).
pub const SVC_BUCKET_PREFIX: &str = "KUBE-SVCS-";
/// Prefix of the chains grouping 16 service buckets when there are many (`KUBE-SVCR-172.30.0.0`).
pub const SVC_RANGE_PREFIX: &str = "KUBE-SVCR-";
/// Prefix of the per-NodePort-range chains (`KUBE-NP-TCP-30016`).
pub const NODEPORT_BUCKET_PREFIX: &str = "KUBE-NP-";
/// Prefix of the per-/24 hairpin chains (`KUBE-HP-10.244.0.0`).
pub const HAIRPIN_BUCKET_PREFIX: &str = "KUBE-HP-";
/// Every prefix of a chain kubenode creates per bucket.
pub const BUCKET_PREFIXES: [&str; 4] = [
    SVC_BUCKET_PREFIX,
    SVC_RANGE_PREFIX,
    NODEPORT_BUCKET_PREFIX,
    HAIRPIN_BUCKET_PREFIX,
];

/// First 16 characters of base32(sha256(`input`)), kube-proxy's chain-name hash.
pub fn hash16(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let mut s = base32::encode(base32::Alphabet::Rfc4648 { padding: true }, &digest);
    s.truncate(16);
    s
}

/// kube-proxy's `KUBE-SVC-…` name of a Service port (`portProtoHash`).
pub fn svc_chain(name: &ServicePortName, proto: Protocol) -> String {
    format!("KUBE-SVC-{}", hash16(&format!("{name}{}", proto.lower())))
}

/// kube-proxy's `KUBE-SEP-…` name of an endpoint of a Service port. kubenode writes no such
/// chain but uses the name for the endpoint's `-m recent` affinity list, as kube-proxy does.
pub fn sep_name(name: &ServicePortName, proto: Protocol, ep: &Endpoint) -> String {
    format!(
        "KUBE-SEP-{}",
        hash16(&format!("{name}{}{}", proto.lower(), ep.addr()))
    )
}

/// The bucket chain holding the rules of every frontend address inside `ip`'s `/prefix` network.
pub fn svc_bucket(ip: Ipv4Addr, prefix: u8) -> (String, Ipv4Net) {
    let net = masked_net(ip, prefix);
    (format!("{SVC_BUCKET_PREFIX}{}", net.addr()), net)
}

/// The bucket chain holding NodePort `port`: ranges of `width` ports, named by their first port.
/// Returns the chain and the range.
pub fn nodeport_bucket(proto: Protocol, port: u16, width: u16) -> (String, u16, u16) {
    let width = width.max(1);
    let start = port - port % width;
    let end = start.saturating_add(width - 1);
    let p = proto.lower().to_ascii_uppercase();
    (format!("{NODEPORT_BUCKET_PREFIX}{p}-{start}"), start, end)
}

/// The hairpin chain of endpoint `ip` (one per /24).
pub fn hairpin_bucket(ip: Ipv4Addr) -> (String, Ipv4Net) {
    let net = masked_net(ip, 24);
    (format!("{HAIRPIN_BUCKET_PREFIX}{}", net.addr()), net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spn(ns: &str, n: &str, p: &str) -> ServicePortName {
        ServicePortName {
            namespace: ns.into(),
            name: n.into(),
            port: p.into(),
        }
    }

    #[test]
    fn matches_kube_proxy_fixtures() {
        assert_eq!(
            svc_chain(&spn("default", "kubernetes", "https"), Protocol::Tcp),
            "KUBE-SVC-NPX46M4PTMTKRN6Y"
        );
        assert_eq!(
            svc_chain(&spn("ns1", "svc1", "p80"), Protocol::Tcp),
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
        let ep = |ip: &str| Endpoint {
            ip: ip.parse().unwrap(),
            port: 80,
            ready: true,
            local: false,
            local_fallback: false,
        };
        assert_eq!(
            sep_name(&spn("ns1", "svc1", "p80"), Protocol::Tcp, &ep("10.180.0.1")),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
        assert_eq!(
            sep_name(&spn("ns5", "svc5", "p80"), Protocol::Tcp, &ep("10.180.0.3")),
            "KUBE-SEP-I77PXRDZVX7PMWMN"
        );
    }

    #[test]
    fn bucket_names_fit_iptables() {
        let (c, net) = svc_bucket("172.30.255.7".parse().unwrap(), 24);
        assert_eq!(
            (c.as_str(), net.to_string().as_str()),
            ("KUBE-SVCS-172.30.255.0", "172.30.255.0/24")
        );
        assert_eq!(
            nodeport_bucket(Protocol::Sctp, 32767, 64),
            ("KUBE-NP-SCTP-32704".into(), 32704, 32767)
        );
        let (h, _) = hairpin_bucket("255.255.255.255".parse().unwrap());
        for name in [c, h] {
            assert!(name.len() <= 28, "{name}");
        }
    }
}

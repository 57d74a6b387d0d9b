//! IPv4 CIDR blocks as [`Ipv4Net`]: the proxy's parsing (a bare address is a /32, host bits
//! are masked off), the masked network of an address, and the counting `ipnet` lacks.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

/// A string that is not an IPv4 CIDR.
#[derive(Debug, thiserror::Error)]
#[error("parsing `{0}` as an IPv4 CIDR (like 10.96.0.0/12)")]
pub struct CidrParseError(pub String);

/// The network of `addr` with `prefix` leading bits (0..=32; larger values are clamped), its
/// host bits masked off.
pub fn masked_net(addr: Ipv4Addr, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(addr, prefix.min(32)).trunc()
}

/// Parses `10.96.0.0/12` (host bits are masked off) or a bare address (a /32).
pub fn parse_ipv4_cidr(s: &str) -> Result<Ipv4Net, CidrParseError> {
    let err = || CidrParseError(s.to_string());
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, p.parse::<u8>().map_err(|_| err())?),
        None => (s, 32),
    };
    if p > 32 {
        return Err(err());
    }
    Ok(masked_net(a.parse().map_err(|_| err())?, p))
}

/// The IPv4 block of `net` with its host bits masked off, as [`parse_ipv4_cidr`] reads the
/// text of `net`; an IPv6 block is refused.
pub fn ipv4_cidr(net: IpNet) -> Result<Ipv4Net, CidrParseError> {
    match net {
        IpNet::V4(v4) => Ok(v4.trunc()),
        IpNet::V6(_) => Err(CidrParseError(net.to_string())),
    }
}

/// Counting inside a block, which `ipnet` does not offer.
pub trait Ipv4NetExt {
    /// Number of addresses in the block.
    fn size(&self) -> u64;
    /// The `n`th address of the block (`n` < [`size`](Self::size)).
    fn nth(&self, n: u64) -> Ipv4Addr;
}

impl Ipv4NetExt for Ipv4Net {
    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len()))
    }

    fn nth(&self, n: u64) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()).wrapping_add(n as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let c = parse_ipv4_cidr("10.96.3.4/12").unwrap();
        assert_eq!(c.to_string(), "10.96.0.0/12");
        assert!(c.contains(&"10.111.255.255".parse::<Ipv4Addr>().unwrap()));
        assert!(!c.contains(&"10.112.0.0".parse::<Ipv4Addr>().unwrap()));
        assert_eq!(c.size(), 1 << 20);
        assert_eq!(parse_ipv4_cidr("1.2.3.4").unwrap().prefix_len(), 32);
        assert!(parse_ipv4_cidr("1.2.3.4/33").is_err());
        assert!(parse_ipv4_cidr("nope").is_err());
        assert_eq!(masked_net("0.0.0.0".parse().unwrap(), 0).size(), 1 << 32);
    }
    #[test]
    fn ipv4_cidr_masks_and_refuses_ipv6() {
        let net: IpNet = "10.96.3.4/12".parse().unwrap();
        assert_eq!(ipv4_cidr(net).unwrap().to_string(), "10.96.0.0/12");
        let v6: IpNet = "fd00::/64".parse().unwrap();
        assert_eq!(
            ipv4_cidr(v6).unwrap_err().to_string(),
            "parsing `fd00::/64` as an IPv4 CIDR (like 10.96.0.0/12)"
        );
    }
}

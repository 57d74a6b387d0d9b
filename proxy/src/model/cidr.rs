//! IPv4 CIDR blocks: parsing, membership and the bucket a service address falls into.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network such as `10.96.0.0/12` (the address is kept masked).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

/// A string that is not an IPv4 CIDR.
#[derive(Debug, thiserror::Error)]
#[error("parsing `{0}` as an IPv4 CIDR (like 10.96.0.0/12)")]
pub struct CidrParseError(pub String);

impl Ipv4Cidr {
    /// The network of `addr` with `prefix` leading bits (0..=32; larger values are clamped).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Ipv4Cidr {
        let prefix = prefix.min(32);
        Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        }
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    /// Number of addresses in the block.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `n`th address of the block (`n` < [`size`](Self::size)).
    pub fn nth(&self, n: u64) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(n as u32))
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrParseError(s.to_string());
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().map_err(|_| err())?),
            None => (s, 32),
        };
        if p > 32 {
            return Err(err());
        }
        Ok(Ipv4Cidr::new(a.parse().map_err(|_| err())?, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let c: Ipv4Cidr = "10.96.3.4/12".parse().unwrap();
        assert_eq!(c.to_string(), "10.96.0.0/12");
        assert!(c.contains("10.111.255.255".parse().unwrap()));
        assert!(!c.contains("10.112.0.0".parse().unwrap()));
        assert_eq!(c.size(), 1 << 20);
        assert_eq!("1.2.3.4".parse::<Ipv4Cidr>().unwrap().prefix(), 32);
        assert!("1.2.3.4/33".parse::<Ipv4Cidr>().is_err());
        assert!("nope".parse::<Ipv4Cidr>().is_err());
        assert_eq!(Ipv4Cidr::new("0.0.0.0".parse().unwrap(), 0).size(), 1 << 32);
    }
}

//! Small value types of the configuration: CIDR blocks and port ranges.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Why a CIDR or port range was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a valid {what}")]
pub struct CidrError {
    /// The text.
    pub input: String,
    /// `CIDR` or `port range`.
    pub what: &'static str,
}

/// An IP block such as `10.244.0.0/16` or `fd00::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address as written.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// True when `ip` is inside this block (same family, same prefix bits).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError {
            input: s.to_owned(),
            what: "CIDR",
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(err)?;
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(err());
        }
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An inclusive port range such as `30000-32767` (also `30000+2767`, as
/// upstream's `ParsePortRange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

impl PortRange {
    /// True when `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError {
            input: s.to_owned(),
            what: "port range",
        };
        let num = |t: &str| -> Result<u32, CidrError> {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            t.parse::<u32>().map_err(|_| err())
        };
        let (first, last) = if let Some((a, b)) = s.split_once('-') {
            (num(a)?, num(b)?)
        } else if let Some((a, n)) = s.split_once('+') {
            let a = num(a)?;
            (a, a + num(n)?)
        } else {
            let a = num(s)?;
            (a, a)
        };
        if first == 0 || first > last || last > 65535 {
            return Err(err());
        }
        Ok(Self {
            first: first as u16,
            last: last as u16,
        })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c: Cidr = "10.244.0.0/16".parse().unwrap();
        assert!(c.contains("10.244.3.4".parse().unwrap()));
        assert!(!c.contains("10.245.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let v6: Cidr = "fd00:1::/64".parse().unwrap();
        assert!(v6.contains("fd00:1::5".parse().unwrap()));
        assert_eq!(v6.to_string(), "fd00:1::/64");
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "x/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "::/129",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn port_ranges() {
        let r: PortRange = "30000-32767".parse().unwrap();
        assert_eq!((r.first, r.last), (30000, 32767));
        assert!(r.contains(30000) && r.contains(32767) && !r.contains(32768));
        assert_eq!("30000+2767".parse::<PortRange>().unwrap(), r);
        assert_eq!("80".parse::<PortRange>().unwrap().to_string(), "80-80");
        for bad in ["", "0-10", "10-5", "1-70000", "a-b", "-5", "5-"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }
}

//! Small value types of the configuration: CIDR blocks and port ranges.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// Why a CIDR or port range was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a valid {what}")]
pub struct CidrError {
    /// The text.
    pub input: String,
    /// `CIDR` or `port range`.
    pub what: &'static str,
}

/// Parses an IP block such as `10.244.0.0/16` or `fd00::/64` the way the configuration
/// accepts it: the prefix is required and written in decimal digits only, the address is
/// kept as written (not masked).
pub fn parse_cidr(s: &str) -> Result<IpNet, CidrError> {
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
    // `IpNet::new` refuses a prefix longer than the address family's.
    IpNet::new(addr, prefix).map_err(|_| err())
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
        let c = parse_cidr("10.244.0.0/16").unwrap();
        assert!(c.contains(&"10.244.3.4".parse::<IpAddr>().unwrap()));
        assert!(!c.contains(&"10.245.0.1".parse::<IpAddr>().unwrap()));
        assert!(!c.contains(&"::1".parse::<IpAddr>().unwrap()));
        let all = parse_cidr("0.0.0.0/0").unwrap();
        assert!(all.contains(&"1.2.3.4".parse::<IpAddr>().unwrap()));
        let v6 = parse_cidr("fd00:1::/64").unwrap();
        assert!(v6.contains(&"fd00:1::5".parse::<IpAddr>().unwrap()));
        assert_eq!(v6.to_string(), "fd00:1::/64");
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "x/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "::/129",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
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

//! The host facts configuration depends on (hostname, interfaces, default
//! route), behind a trait so that resolution is testable.

use std::io;
use std::net::IpAddr;

/// One network interface and its addresses, in the order the kernel lists
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Interface name (`eth0`).
    pub name: String,
    /// `IFF_UP` is set.
    pub up: bool,
    /// `IFF_LOOPBACK` is set.
    pub loopback: bool,
    /// Its IPv4 and IPv6 addresses.
    pub addrs: Vec<IpAddr>,
}

/// What the configuration reads from the host it runs on.
pub trait Host: std::fmt::Debug {
    /// The host name (`gethostname`).
    fn hostname(&self) -> io::Result<String>;
    /// All interfaces with their addresses (`getifaddrs`).
    fn interfaces(&self) -> io::Result<Vec<InterfaceInfo>>;
    /// The interface holding the IPv4 default route, if any.
    fn default_route_interface(&self) -> io::Result<Option<String>>;
}

/// The real host, read in the agent's current network namespace.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemHost;

impl Host for SystemHost {
    fn hostname(&self) -> io::Result<String> {
        let name = nix::unistd::gethostname().map_err(io::Error::from)?;
        Ok(name.to_string_lossy().into_owned())
    }

    fn interfaces(&self) -> io::Result<Vec<InterfaceInfo>> {
        use nix::net::if_::InterfaceFlags;
        let mut out: Vec<InterfaceInfo> = Vec::new();
        for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
            let idx = match out.iter().position(|i| i.name == ifa.interface_name) {
                Some(i) => i,
                None => {
                    out.push(InterfaceInfo {
                        name: ifa.interface_name.clone(),
                        up: ifa.flags.contains(InterfaceFlags::IFF_UP),
                        loopback: ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK),
                        addrs: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            let Some(addr) = ifa.address else { continue };
            if let Some(v4) = addr.as_sockaddr_in() {
                out[idx].addrs.push(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                out[idx].addrs.push(IpAddr::V6(v6.ip()));
            }
        }
        Ok(out)
    }

    fn default_route_interface(&self) -> io::Result<Option<String>> {
        match std::fs::read_to_string("/proc/net/route") {
            Ok(table) => Ok(super::parse_default_route_interface(&table)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

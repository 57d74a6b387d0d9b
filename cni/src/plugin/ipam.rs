//! Address allocation from the node's pod CIDR, on disk in host-local's layout so that both can
//! read it: `<dataDir>/<network>/<ip>` holds `<containerID>\r\n<ifname>`, `last_reserved_ip.0`
//! the round-robin cursor, and `lock` is flock'd around every change, so concurrent plugin
//! processes never hand out one address twice.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use kubenode_fsutil::IoError;
use nix::fcntl::{Flock, FlockArg};

/// An allocation store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Every address of the range is taken.
    #[error("no free address left in {range} (network {network})")]
    Exhausted {
        /// The range.
        range: IpNet,
        /// The network.
        network: String,
    },
    /// The range is too small to allocate from.
    #[error("pod CIDR {0} is too small to allocate from (needs /30 or larger, /126 for IPv6)")]
    TooSmall(IpNet),
    /// Reading or writing the store failed.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// The addresses a network hands out: a subnet minus its network address, its last address
/// (IPv4 broadcast) and the gateway, as host-local does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The subnet (the node's pod CIDR of one family).
    pub subnet: IpNet,
    /// The gateway (on the bridge): the first address unless configured.
    pub gateway: IpAddr,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_u128(n: u128, like: IpNet) -> IpAddr {
    match like {
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

impl Range {
    /// The range of `subnet` with `gateway` (default: the first address).
    pub fn new(subnet: IpNet, gateway: Option<IpAddr>) -> Result<Self, IpamError> {
        let subnet = subnet.trunc();
        if subnet.max_prefix_len() - subnet.prefix_len() < 2 {
            return Err(IpamError::TooSmall(subnet));
        }
        let first = from_u128(to_u128(subnet.network()) + 1, subnet);
        Ok(Range {
            subnet,
            gateway: gateway.unwrap_or(first),
        })
    }

    fn usable(&self) -> (u128, u128) {
        (
            to_u128(self.subnet.network()) + 1,
            to_u128(self.subnet.broadcast()) - 1,
        )
    }
}

/// One network's allocation directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    network: String,
}

/// The store's lock; every change happens while one is held.
#[derive(Debug)]
pub struct Locked<'a> {
    store: &'a Store,
    _lock: Flock<std::fs::File>,
}

/// One allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The address.
    pub ip: IpAddr,
    /// The owner's container id.
    pub container_id: String,
    /// The owner's interface.
    pub ifname: String,
}

impl Store {
    /// The store of `network` under `data_dir` (`/var/lib/cni/networks` by default).
    pub fn new(data_dir: &Path, network: &str) -> Self {
        Store {
            dir: data_dir.join(network),
            network: network.to_string(),
        }
    }

    /// Takes the store's flock (blocking until other processes release it).
    pub fn lock(&self) -> Result<Locked<'_>, IpamError> {
        std::fs::create_dir_all(&self.dir).map_err(IoError::with("creating", &self.dir))?;
        let path = self.dir.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(IoError::with("opening", &path))?;
        let lock = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| IoError::new("locking", &path, e.into()))?;
        Ok(Locked {
            store: self,
            _lock: lock,
        })
    }
}

impl Locked<'_> {
    /// Every allocation in the store.
    pub fn list(&self) -> Result<Vec<Allocation>, IpamError> {
        let dir = &self.store.dir;
        let rd = std::fs::read_dir(dir).map_err(IoError::with("listing", dir))?;
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let Ok(ip) = entry.file_name().to_string_lossy().parse::<IpAddr>() else {
                continue;
            };
            let Ok(content) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let mut lines = content.split("\r\n").map(str::trim);
            let container_id = lines.next().unwrap_or_default().to_string();
            let ifname = lines.next().unwrap_or_default().to_string();
            out.push(Allocation {
                ip,
                container_id,
                ifname,
            });
        }
        out.sort_by_key(|a| a.ip);
        Ok(out)
    }

    /// The addresses held by `container_id`/`ifname`.
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|a| owns(a, container_id, ifname))
            .map(|a| a.ip)
            .collect())
    }

    /// Allocates an address of `range` (the `index`th range of the network) for
    /// `container_id`/`ifname` (the one it already holds there, if any), round-robin after the
    /// last one handed out, as host-local does.
    pub fn allocate(
        &self,
        range: &Range,
        index: usize,
        container_id: &str,
        ifname: &str,
    ) -> Result<IpAddr, IpamError> {
        if let Some(ip) = self
            .find(container_id, ifname)?
            .into_iter()
            .find(|ip| range.subnet.contains(ip))
        {
            return Ok(ip);
        }
        let (lo, hi) = range.usable();
        let cursor_path = self.store.dir.join(format!("last_reserved_ip.{index}"));
        let last = std::fs::read_to_string(&cursor_path)
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .map(to_u128)
            .filter(|c| (lo..=hi).contains(c));
        let start = last.map_or(lo, |c| if c >= hi { lo } else { c + 1 });
        let mut n = start;
        loop {
            let ip = from_u128(n, range.subnet);
            if ip != range.gateway {
                let path = self.store.dir.join(ip.to_string());
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                {
                    Ok(mut f) => {
                        f.write_all(format!("{container_id}\r\n{ifname}").as_bytes())
                            .map_err(IoError::with("writing", &path))?;
                        std::fs::write(&cursor_path, ip.to_string())
                            .map_err(IoError::with("writing", &cursor_path))?;
                        return Ok(ip);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(source) => return Err(IoError::new("creating", path, source).into()),
                }
            }
            n = if n >= hi { lo } else { n + 1 };
            if n == start {
                return Err(IpamError::Exhausted {
                    range: range.subnet,
                    network: self.store.network.clone(),
                });
            }
        }
    }

    /// Releases whatever `container_id`/`ifname` holds; returns the addresses freed.
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        let mut freed = Vec::new();
        for a in self
            .list()?
            .into_iter()
            .filter(|a| owns(a, container_id, ifname))
        {
            let path = self.store.dir.join(a.ip.to_string());
            match std::fs::remove_file(&path) {
                Ok(()) => freed.push(a.ip),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(IoError::new("removing", path, source).into()),
            }
        }
        Ok(freed)
    }
}

/// host-local's ownership test: id and ifname, or the id alone for files written before ifnames
/// were recorded.
fn owns(a: &Allocation, container_id: &str, ifname: &str) -> bool {
    a.container_id == container_id && (a.ifname == ifname || a.ifname.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(cidr: &str) -> Range {
        Range::new(cidr.parse().unwrap(), None).unwrap()
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn allocates_round_robin_skipping_gateway_and_edges() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "kn");
        let l = store.lock().unwrap();
        let r = range("10.244.1.0/29");
        assert_eq!(r.gateway, v4(10, 244, 1, 1));
        let ips: Vec<_> = (0..5)
            .map(|i| l.allocate(&r, 0, &format!("c{i}"), "eth0").unwrap())
            .collect();
        assert_eq!(ips, [2, 3, 4, 5, 6].map(|d| v4(10, 244, 1, d)));
        let e = l.allocate(&r, 0, "c9", "eth0").unwrap_err();
        assert!(matches!(e, IpamError::Exhausted { .. }), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("kn/10.244.1.3")).unwrap(),
            "c1\r\neth0"
        );
        assert_eq!(l.release("c1", "eth0").unwrap(), [v4(10, 244, 1, 3)]);
        assert!(l.release("c1", "eth0").unwrap().is_empty());
        // The cursor is at .6, so the next one wraps to the freed .3.
        assert_eq!(l.allocate(&r, 0, "c10", "eth0").unwrap(), v4(10, 244, 1, 3));
    }

    #[test]
    fn same_owner_keeps_its_address_and_ifnames_are_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "kn");
        let l = store.lock().unwrap();
        let r = range("10.0.0.0/24");
        let a = l.allocate(&r, 0, "c1", "eth0").unwrap();
        assert_eq!(l.allocate(&r, 0, "c1", "eth0").unwrap(), a);
        let b = l.allocate(&r, 0, "c1", "net1").unwrap();
        assert_ne!(a, b);
        assert_eq!(l.find("c1", "net1").unwrap(), [b]);
        assert_eq!(l.list().unwrap().len(), 2);
    }

    #[test]
    fn dual_stack_owner_gets_one_address_per_family() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "kn");
        let l = store.lock().unwrap();
        let (r4, r6) = (range("10.0.0.0/24"), range("fd00:10::/64"));
        assert_eq!(r6.gateway, "fd00:10::1".parse::<IpAddr>().unwrap());
        let a = l.allocate(&r4, 0, "c1", "eth0").unwrap();
        let b = l.allocate(&r6, 1, "c1", "eth0").unwrap();
        assert_eq!(b, "fd00:10::2".parse::<IpAddr>().unwrap());
        assert_eq!(l.allocate(&r6, 1, "c1", "eth0").unwrap(), b);
        assert_eq!(l.find("c1", "eth0").unwrap(), [a, b]);
        assert!(dir.path().join("kn/last_reserved_ip.1").exists());
        assert_eq!(l.release("c1", "eth0").unwrap().len(), 2);
        assert!(matches!(
            Range::new("fd00::/127".parse().unwrap(), None),
            Err(IpamError::TooSmall(_))
        ));
    }

    #[test]
    fn reads_host_local_files_and_rejects_tiny_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "kn");
        let l = store.lock().unwrap();
        std::fs::write(dir.path().join("kn/10.0.0.9"), "old-id").unwrap();
        std::fs::write(dir.path().join("kn/last_reserved_ip.0"), "10.0.0.9").unwrap();
        assert_eq!(l.find("old-id", "eth0").unwrap(), [v4(10, 0, 0, 9)]);
        assert_eq!(
            l.allocate(&range("10.0.0.0/24"), 0, "new", "eth0").unwrap(),
            v4(10, 0, 0, 10)
        );
        assert!(matches!(
            Range::new("10.0.0.0/31".parse().unwrap(), None),
            Err(IpamError::TooSmall(_))
        ));
    }

    #[test]
    fn concurrent_allocations_in_threads_are_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let r = range("10.1.0.0/24");
        let ips: Vec<IpAddr> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..40)
                .map(|i| {
                    let d = dir.path().to_path_buf();
                    s.spawn(move || {
                        Store::new(&d, "kn")
                            .lock()
                            .unwrap()
                            .allocate(&r, 0, &format!("c{i}"), "eth0")
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut uniq = ips.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 40);
    }
}

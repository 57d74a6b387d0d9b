//! [`NetOps`] over rtnetlink. Node-side requests use a socket opened in the plugin's own
//! namespace; pod-side requests use a socket opened on a dedicated thread that `setns`es into the
//! pod's namespace (a netlink socket stays bound to the namespace it was created in), so no thread
//! that runs anything else ever changes namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags};
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};
use tokio::sync::Mutex;

use super::netlink::{LinkState, NetError, NetOps, PodIface, VethRequest};

/// rtnetlink-backed [`NetOps`]. Create inside a tokio runtime.
#[derive(Debug)]
pub struct Rtnl {
    node: Handle,
    pods: Mutex<Vec<(PathBuf, Handle)>>,
    proc_sys: PathBuf,
}

impl Rtnl {
    /// Opens a netlink socket in the current namespace.
    pub fn new() -> Result<Self, NetError> {
        let (conn, node, _) = rtnetlink::new_connection().map_err(|e| NetError::Other {
            op: "opening a netlink socket".into(),
            msg: e.to_string(),
        })?;
        tokio::spawn(conn);
        Ok(Rtnl {
            node,
            pods: Mutex::default(),
            proc_sys: "/proc/sys".into(),
        })
    }

    async fn pod(&self, netns: &Path) -> Result<Handle, NetError> {
        let mut pods = self.pods.lock().await;
        if let Some((_, h)) = pods.iter().find(|(p, _)| p == netns) {
            return Ok(h.clone());
        }
        let handle = connect_in(netns)?;
        pods.push((netns.to_path_buf(), handle.clone()));
        Ok(handle)
    }
}

/// Opens a netlink socket inside `netns` on a short-lived dedicated thread.
fn connect_in(netns: &Path) -> Result<Handle, NetError> {
    let ns_err = |source| NetError::Netns {
        path: netns.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(netns).map_err(ns_err)?;
    let rt = tokio::runtime::Handle::current();
    let joined = std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        let _enter = rt.enter();
        rtnetlink::new_connection()
    })
    .join()
    .map_err(|_| ns_err(std::io::Error::other("netns thread panicked")))?;
    let (conn, handle, _) = joined.map_err(ns_err)?;
    tokio::spawn(conn);
    Ok(handle)
}

fn kernel(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let op = op.into();
    move |e| match &e {
        rtnetlink::Error::NetlinkError(m) if m.code.is_some() => NetError::Kernel {
            op,
            errno: -m.code.map(|c| c.get()).unwrap_or_default(),
        },
        _ => NetError::Other {
            op,
            msg: e.to_string(),
        },
    }
}

fn state(msg: &LinkMessage) -> LinkState {
    let mut s = LinkState {
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        ..Default::default()
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::Address(mac) => {
                s.mac = mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            }
            LinkAttribute::Controller(m) => s.master = Some(*m),
            LinkAttribute::Mtu(m) => s.mtu = *m,
            _ => {}
        }
    }
    s
}

async fn get_link(h: &Handle, name: &str) -> Result<Option<LinkState>, NetError> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(Some(msg)) => Ok(Some(state(&msg))),
        Ok(None) => Ok(None),
        Err(e) => match kernel(format!("looking up link {name}"))(e) {
            NetError::Kernel { errno, .. } if errno == libc::ENODEV || errno == libc::ENOENT => {
                Ok(None)
            }
            other => Err(other),
        },
    }
}

async fn set_up(h: &Handle, index: u32, what: &str) -> Result<(), NetError> {
    h.link()
        .change(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(kernel(format!("bringing {what} up")))
}

/// Sets a bridge's MAC address to the one it has. A bridge whose address was never set takes
/// the lowest address of its ports and changes it when that port goes (a pod deleted): the
/// pods' cached gateway entry then points nowhere and their replies are lost until ARP times
/// out, seconds later. An address set explicitly, even to the same value, stays put (the
/// kernel marks it `NET_ADDR_SET`), as Docker does for its bridge.
async fn pin_mac(h: &Handle, link: &LinkState, what: &str) -> Result<(), NetError> {
    let mac: Vec<u8> = link
        .mac
        .split(':')
        .filter_map(|b| u8::from_str_radix(b, 16).ok())
        .collect();
    if mac.len() != 6 {
        return Err(NetError::Other {
            op: format!("pinning the MAC address of {what}"),
            msg: format!("unexpected address {:?}", link.mac),
        });
    }
    h.link()
        .change(LinkUnspec::new_with_index(link.index).address(mac).build())
        .execute()
        .await
        .map_err(kernel(format!("pinning the MAC address of {what}")))
}

async fn add_addr(h: &Handle, index: u32, addr: IpNet, what: &str) -> Result<(), NetError> {
    let mut req = h.address().add(index, addr.addr(), addr.prefix_len());
    if addr.addr().is_ipv6() {
        // Usable at once: no tentative period (the allocation store already guarantees uniqueness).
        req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
    }
    match req
        .execute()
        .await
        .map_err(kernel(format!("adding {addr} to {what}")))
    {
        Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

async fn delete(h: &Handle, name: &str) -> Result<bool, NetError> {
    let Some(link) = get_link(h, name).await? else {
        return Ok(false);
    };
    match h
        .link()
        .del(link.index)
        .execute()
        .await
        .map_err(kernel(format!("deleting link {name}")))
    {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.errno(), Some(libc::ENODEV | libc::ENOENT)) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn read_pod(h: &Handle, ifname: &str) -> Result<Option<PodIface>, NetError> {
    let Some(link) = get_link(h, ifname).await? else {
        return Ok(None);
    };
    let mut addrs = Vec::new();
    let mut stream = h
        .address()
        .get()
        .set_link_index_filter(link.index)
        .execute();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(kernel(format!("listing addresses of {ifname}")))?
    {
        if msg.header.index != link.index {
            continue;
        }
        for a in &msg.attributes {
            if let AddressAttribute::Address(ip) = a {
                if let Ok(net) = IpNet::new(*ip, msg.header.prefix_len) {
                    addrs.push(net);
                }
            }
        }
    }
    let mut default_gws = Vec::new();
    let queries = [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ];
    for query in queries {
        let mut routes = h.route().get(query).execute();
        while let Some(r) = routes.try_next().await.map_err(kernel("listing routes"))? {
            let oif = r
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == link.index));
            if r.header.destination_prefix_length != 0 || r.header.table != 254 || !oif {
                continue;
            }
            default_gws.extend(r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(gw)) => Some(IpAddr::V4(*gw)),
                RouteAttribute::Gateway(RouteAddress::Inet6(gw)) => Some(IpAddr::V6(*gw)),
                _ => None,
            }));
        }
    }
    Ok(Some(PodIface {
        link,
        addrs,
        default_gws,
    }))
}

impl NetOps for Rtnl {
    async fn set_sysctl(&self, key: &str, value: &str) -> Result<bool, NetError> {
        let path = self.proc_sys.join(key.replace('.', "/"));
        match std::fs::read_to_string(&path) {
            Ok(cur) if cur.trim() == value => Ok(true),
            Ok(_) => std::fs::write(&path, value)
                .map(|_| true)
                .map_err(|e| NetError::Other {
                    op: format!("setting sysctl {key}={value}"),
                    msg: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(NetError::Other {
                op: format!("reading sysctl {key}"),
                msg: e.to_string(),
            }),
        }
    }

    async fn ensure_bridge(
        &self,
        name: &str,
        mtu: u32,
        gateways: &[IpNet],
    ) -> Result<LinkState, NetError> {
        let h = &self.node;
        let link = match get_link(h, name).await? {
            Some(l) => l,
            None => {
                let created = h
                    .link()
                    .add(LinkBridge::new(name).mtu(mtu).up().build())
                    .execute()
                    .await;
                match created.map_err(kernel(format!("creating bridge {name}"))) {
                    Err(e) if e.errno() != Some(libc::EEXIST) => return Err(e),
                    _ => {}
                }
                get_link(h, name).await?.ok_or_else(|| NetError::Other {
                    op: format!("creating bridge {name}"),
                    msg: "it vanished right after creation".into(),
                })?
            }
        };
        pin_mac(h, &link, &format!("bridge {name}")).await?;
        if !link.up {
            set_up(h, link.index, &format!("bridge {name}")).await?;
        }
        for gw in gateways {
            add_addr(h, link.index, *gw, &format!("bridge {name}")).await?;
        }
        Ok(link)
    }

    async fn link(&self, name: &str) -> Result<Option<LinkState>, NetError> {
        get_link(&self.node, name).await
    }

    async fn create_veth(&self, req: &VethRequest) -> Result<LinkState, NetError> {
        let h = &self.node;
        let ns = std::fs::File::open(&req.netns).map_err(|source| NetError::Netns {
            path: req.netns.clone(),
            source,
        })?;
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(req.pod.clone())
            .mtu(req.mtu)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(&req.host, &req.pod)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .mtu(req.mtu)
            .controller(req.bridge)
            .up()
            .build();
        let op = format!(
            "creating veth {} (peer {} in {})",
            req.host,
            req.pod,
            req.netns.display()
        );
        h.link().add(msg).execute().await.map_err(kernel(op))?;
        drop(ns);
        let link = get_link(h, &req.host)
            .await?
            .ok_or_else(|| NetError::Other {
                op: format!("creating veth {}", req.host),
                msg: "it vanished right after creation".into(),
            })?;
        if req.hairpin {
            let port = LinkBridgePort::new(link.index).hairpin(true).build();
            h.link()
                .change(port)
                .execute()
                .await
                .map_err(kernel(format!("setting hairpin mode on {}", req.host)))?;
        }
        Ok(link)
    }

    async fn delete_link(&self, name: &str) -> Result<bool, NetError> {
        delete(&self.node, name).await
    }

    async fn pod_iface(&self, netns: &Path, ifname: &str) -> Result<Option<PodIface>, NetError> {
        read_pod(&self.pod(netns).await?, ifname).await
    }

    async fn configure_pod(
        &self,
        netns: &Path,
        ifname: &str,
        addrs: &[IpNet],
        gateways: &[IpAddr],
    ) -> Result<PodIface, NetError> {
        let h = self.pod(netns).await?;
        if let Some(lo) = get_link(&h, "lo").await? {
            if !lo.up {
                set_up(&h, lo.index, "lo in the pod").await?;
            }
        }
        let link = get_link(&h, ifname)
            .await?
            .ok_or_else(|| NetError::Kernel {
                op: format!("configuring {ifname} in {}", netns.display()),
                errno: libc::ENODEV,
            })?;
        for addr in addrs {
            add_addr(&h, link.index, *addr, &format!("{ifname} in the pod")).await?;
        }
        set_up(&h, link.index, &format!("{ifname} in the pod")).await?;
        for gw in gateways {
            let route = match gw {
                IpAddr::V4(g) => RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(*g)
                    .output_interface(link.index)
                    .build(),
                IpAddr::V6(g) => RouteMessageBuilder::<Ipv6Addr>::new()
                    .gateway(*g)
                    .output_interface(link.index)
                    .build(),
            };
            match h
                .route()
                .add(route)
                .execute()
                .await
                .map_err(kernel(format!("adding default route via {gw} in the pod")))
            {
                Err(e) if e.errno() != Some(libc::EEXIST) => return Err(e),
                _ => {}
            }
        }
        Ok(PodIface {
            addrs: addrs.to_vec(),
            default_gws: gateways.to_vec(),
            link: LinkState { up: true, ..link },
        })
    }

    async fn delete_pod_iface(&self, netns: &Path, ifname: &str) -> Result<bool, NetError> {
        delete(&self.pod(netns).await?, ifname).await
    }
}

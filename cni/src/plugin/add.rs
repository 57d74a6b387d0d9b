//! ADD: allocate an address per pod CIDR, make sure the bridge and sysctls are in place, create
//! the veth pair and configure the pod's end. Everything done is undone if a later step fails.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use tracing::warn;

use super::conf::{BridgeConf, Env};
use super::ipam::{Range, Store};
use super::{host_veth_name, Firewall, NetOps, Plugin, PluginError, VethRequest};
use crate::spec::{codes, CniResult, Interface, IpConfig, Route};

impl<N: NetOps, F: Firewall> Plugin<N, F> {
    /// ADD: attaches the pod; fails if `CNI_IFNAME` already exists in the pod.
    pub async fn add(&self, env: &Env, conf: &BridgeConf) -> Result<CniResult, PluginError> {
        env.require(true)?;
        let netns = Path::new(&env.netns);
        if self.net.pod_iface(netns, &env.ifname).await?.is_some() {
            return Err(PluginError::msg(
                codes::INTERFACE_EXISTS,
                format!(
                    "interface {} already exists in network namespace {}",
                    env.ifname, env.netns
                ),
            ));
        }
        let ranges = conf.ranges()?;
        let store = Store::new(&conf.data_dir(), &conf.name);
        let ips = {
            let locked = store.lock()?;
            let mut ips = Vec::new();
            let mut failed = None;
            for (i, range) in ranges.iter().enumerate() {
                match locked.allocate(range, i, &env.container_id, &env.ifname) {
                    Ok(ip) => ips.push(ip),
                    Err(e) => {
                        failed = Some(PluginError::from(e));
                        break;
                    }
                }
            }
            if failed.is_none() {
                for cluster in &conf.cluster_cidrs {
                    if let Err(e) = self.fw.ensure_masquerade(*cluster).await {
                        failed = Some(e.into());
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                let _ = locked.release(&env.container_id, &env.ifname);
                return Err(e);
            }
            ips
        };
        let host = host_veth_name(&conf.name, &env.container_id, &env.ifname);
        tracing::debug!(container = %env.container_id, ?ips, host_veth = %host, "allocated; attaching");
        match self.attach(env, conf, &ranges, &ips, &host).await {
            Ok(r) => Ok(r),
            Err(e) => {
                if let Err(undo) = self.net.delete_link(&host).await {
                    warn!(error = %undo, "removing the veth of a failed ADD");
                }
                if let Err(undo) = store
                    .lock()
                    .and_then(|l| l.release(&env.container_id, &env.ifname))
                {
                    warn!(error = %undo, "releasing the address of a failed ADD");
                }
                Err(e)
            }
        }
    }

    async fn attach(
        &self,
        env: &Env,
        conf: &BridgeConf,
        ranges: &[Range],
        ips: &[IpAddr],
        host: &str,
    ) -> Result<CniResult, PluginError> {
        let net = |ip: IpAddr, range: &Range| {
            IpNet::new(ip, range.subnet.prefix_len())
                .map_err(|e| PluginError::msg(codes::INVALID_CONFIG, e.to_string()))
        };
        if ranges.iter().any(|r| r.subnet.addr().is_ipv4()) {
            self.net.set_sysctl("net.ipv4.ip_forward", "1").await?;
        }
        if ranges.iter().any(|r| r.subnet.addr().is_ipv6()) {
            self.net
                .set_sysctl("net.ipv6.conf.all.forwarding", "1")
                .await?;
        }
        if !self
            .net
            .set_sysctl("net.bridge.bridge-nf-call-iptables", "1")
            .await?
        {
            tracing::debug!("br_netfilter is not loaded; bridged traffic bypasses iptables");
        }
        if ranges.iter().any(|r| r.subnet.addr().is_ipv6()) {
            self.net
                .set_sysctl("net.bridge.bridge-nf-call-ip6tables", "1")
                .await?;
        }
        let gateways = ranges
            .iter()
            .map(|r| net(r.gateway, r))
            .collect::<Result<Vec<_>, _>>()?;
        let bridge = self
            .net
            .ensure_bridge(&conf.bridge, conf.mtu(), &gateways)
            .await?;
        let req = VethRequest {
            host: host.to_string(),
            pod: env.ifname.clone(),
            netns: env.netns.clone().into(),
            mtu: conf.mtu(),
            bridge: bridge.index,
            hairpin: conf.hairpin_mode,
        };
        let host_link = self.net.create_veth(&req).await.map_err(|e| match e.errno() {
            Some(libc::EEXIST) => PluginError::msg(
                codes::INTERFACE_EXISTS,
                format!("{e} (host end {host} of container {} is left from an earlier ADD without DEL)", env.container_id),
            ),
            _ => e.into(),
        })?;
        let addrs = ips
            .iter()
            .zip(ranges)
            .map(|(ip, r)| net(*ip, r))
            .collect::<Result<Vec<_>, _>>()?;
        let gws: Vec<IpAddr> = ranges.iter().map(|r| r.gateway).collect();
        let pod = self
            .net
            .configure_pod(Path::new(&env.netns), &env.ifname, &addrs, &gws)
            .await?;
        let mtu = Some(conf.mtu());
        let default_route = |gw: IpAddr| Route {
            dst: if gw.is_ipv4() {
                "0.0.0.0/0".parse()
            } else {
                "::/0".parse()
            }
            .unwrap_or_default(),
            gw: Some(gw),
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        };
        Ok(CniResult {
            cni_version: conf.cni_version.clone(),
            interfaces: vec![
                Interface {
                    name: conf.bridge.clone(),
                    mac: Some(bridge.mac),
                    mtu,
                    ..Default::default()
                },
                Interface {
                    name: host.to_string(),
                    mac: Some(host_link.mac),
                    mtu,
                    ..Default::default()
                },
                Interface {
                    name: env.ifname.clone(),
                    mac: Some(pod.link.mac),
                    mtu,
                    sandbox: Some(env.netns.clone()),
                    ..Default::default()
                },
            ],
            ips: addrs
                .iter()
                .zip(&gws)
                .map(|(a, gw)| IpConfig {
                    address: *a,
                    gateway: Some(*gw),
                    interface: Some(2),
                })
                .collect(),
            routes: gws.iter().map(|gw| default_route(*gw)).collect(),
            dns: Default::default(),
        })
    }
}

//! ADD: allocate an address, make sure the bridge and sysctls are in place, create the veth pair
//! and configure the pod's end. Everything done is undone if a later step fails.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnet::{IpNet, Ipv4Net};
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
        let cidr = conf.pod_cidr.unwrap_or_default();
        let range = Range::new(cidr, conf.gateway)?;
        let store = Store::new(&conf.data_dir(), &conf.name);
        let ip = {
            let locked = store.lock()?;
            let ip = locked.allocate(&range, &env.container_id, &env.ifname)?;
            if let Some(cluster) = conf.cluster_cidr {
                if let Err(e) = self.fw.ensure_masquerade(cluster).await {
                    let _ = locked.release(&env.container_id, &env.ifname);
                    return Err(e.into());
                }
            }
            ip
        };
        let host = host_veth_name(&conf.name, &env.container_id, &env.ifname);
        tracing::debug!(container = %env.container_id, %ip, host_veth = %host, "allocated; attaching");
        match self.attach(env, conf, &range, ip, &host).await {
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
        range: &Range,
        ip: Ipv4Addr,
        host: &str,
    ) -> Result<CniResult, PluginError> {
        let prefix = range.subnet.prefix_len();
        self.net.set_sysctl("net.ipv4.ip_forward", "1").await?;
        if !self
            .net
            .set_sysctl("net.bridge.bridge-nf-call-iptables", "1")
            .await?
        {
            tracing::debug!("br_netfilter is not loaded; bridged traffic bypasses iptables");
        }
        let gateway = Ipv4Net::new(range.gateway, prefix)
            .map_err(|e| PluginError::msg(codes::INVALID_CONFIG, e.to_string()))?;
        let bridge = self
            .net
            .ensure_bridge(&conf.bridge, conf.mtu(), gateway)
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
        let addr = Ipv4Net::new(ip, prefix)
            .map_err(|e| PluginError::msg(codes::INVALID_CONFIG, e.to_string()))?;
        let pod = self
            .net
            .configure_pod(Path::new(&env.netns), &env.ifname, addr, range.gateway)
            .await?;
        let mtu = Some(conf.mtu());
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
            ips: vec![IpConfig {
                address: IpNet::V4(addr),
                gateway: Some(IpAddr::V4(range.gateway)),
                interface: Some(2),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap_or_default(),
                gw: Some(IpAddr::V4(range.gateway)),
                mtu: None,
                advmss: None,
                priority: None,
                table: None,
                scope: None,
            }],
            dns: Default::default(),
        })
    }
}

//! CHECK: the pod's interface exists and is up with its address and default route, the host end
//! is on the bridge, and the address is still allocated to this container.

use std::path::Path;

use ipnet::IpNet;

use super::conf::{BridgeConf, Env};
use super::ipam::Store;
use super::{host_veth_name, Firewall, NetOps, Plugin, PluginError};
use crate::spec::{codes, CniResult};

impl<N: NetOps, F: Firewall> Plugin<N, F> {
    /// CHECK against `prevResult`.
    pub async fn check(&self, env: &Env, conf: &BridgeConf) -> Result<(), PluginError> {
        env.require(true)?;
        let prev = conf
            .prev_result
            .as_ref()
            .ok_or_else(|| PluginError::msg(codes::INVALID_CONFIG, "CHECK needs prevResult"))?;
        let prev = CniResult::from_json(prev)
            .map_err(|e| PluginError::new(codes::DECODE_FAILURE, "reading prevResult", e))?;
        let fail = |msg: String| PluginError::msg(codes::NETLINK, msg);
        let want: Vec<IpNet> = prev.ips.iter().map(|i| i.address).collect();
        let allocated = Store::new(&conf.data_dir(), &conf.name)
            .lock()?
            .find(&env.container_id, &env.ifname)?;
        if allocated.is_empty() || !want.iter().all(|w| allocated.contains(&w.addr())) {
            return Err(fail(format!(
                "container {} holds {allocated:?} in the store, prevResult says {want:?}",
                env.container_id
            )));
        }
        let pod = self
            .net
            .pod_iface(Path::new(&env.netns), &env.ifname)
            .await?
            .ok_or_else(|| {
                fail(format!(
                    "interface {} not found in {}",
                    env.ifname, env.netns
                ))
            })?;
        if !pod.link.up {
            return Err(fail(format!(
                "interface {} in {} is down",
                env.ifname, env.netns
            )));
        }
        for w in &want {
            if !pod.addrs.contains(w) {
                return Err(fail(format!(
                    "interface {} lacks address {w} (has {:?})",
                    env.ifname, pod.addrs
                )));
            }
        }
        for gw in prev.ips.iter().filter_map(|i| i.gateway) {
            if !pod.default_gws.contains(&gw) {
                return Err(fail(format!(
                    "default route via {gw} missing in {} (found {:?})",
                    env.netns, pod.default_gws
                )));
            }
        }
        let host = host_veth_name(&conf.name, &env.container_id, &env.ifname);
        let bridge = self
            .net
            .link(&conf.bridge)
            .await?
            .ok_or_else(|| fail(format!("bridge {} is missing", conf.bridge)))?;
        let link = self
            .net
            .link(&host)
            .await?
            .ok_or_else(|| fail(format!("host veth {host} is missing")))?;
        if link.master != Some(bridge.index) {
            return Err(fail(format!(
                "host veth {host} is not attached to bridge {}",
                conf.bridge
            )));
        }
        Ok(())
    }
}

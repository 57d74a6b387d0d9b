//! DEL (idempotent: works with the namespace, the interface or the allocation already gone), GC
//! and STATUS.

use std::path::Path;

use serde_json::Value;

use super::conf::{BridgeConf, Env};
use super::ipam::Store;
use super::{host_veth_name, Firewall, NetError, NetOps, Plugin, PluginError};
use crate::spec::codes;

impl<N: NetOps, F: Firewall> Plugin<N, F> {
    /// DEL: removes the veth pair, frees the address and, with the last pod gone, the masquerade
    /// rule. Every step runs; failures are reported together.
    pub async fn del(&self, env: &Env, conf: &BridgeConf) -> Result<(), PluginError> {
        env.require(false)?;
        let mut errors: Vec<PluginError> = Vec::new();
        let host = host_veth_name(&conf.name, &env.container_id, &env.ifname);
        match self.net.delete_link(&host).await {
            Ok(true) => {}
            Ok(false) if !env.netns.is_empty() && Path::new(&env.netns).exists() => {
                match self
                    .net
                    .delete_pod_iface(Path::new(&env.netns), &env.ifname)
                    .await
                {
                    Ok(_) | Err(NetError::Netns { .. }) => {}
                    Err(e) => errors.push(e.into()),
                }
            }
            Ok(false) => {}
            Err(e) => errors.push(e.into()),
        }
        if let Err(e) = self
            .release(conf, &[(env.container_id.clone(), env.ifname.clone())])
            .await
        {
            errors.push(e);
        }
        join(errors)
    }

    /// Frees the addresses of `owners` and removes the masquerade rule when none is left.
    async fn release(
        &self,
        conf: &BridgeConf,
        owners: &[(String, String)],
    ) -> Result<(), PluginError> {
        let store = Store::new(&conf.data_dir(), &conf.name);
        let locked = store.lock()?;
        for (id, ifname) in owners {
            let freed = locked.release(id, ifname)?;
            tracing::debug!(container = %id, ?freed, "released");
        }
        if !conf.cluster_cidrs.is_empty() && locked.list()?.is_empty() {
            for cluster in &conf.cluster_cidrs {
                self.fw.remove_masquerade(*cluster).await?;
            }
        }
        Ok(())
    }

    /// GC: drops the veths and addresses of every attachment not in `cni.dev/valid-attachments`.
    pub async fn gc(&self, conf: &BridgeConf, stdin: &[u8]) -> Result<(), PluginError> {
        let doc: Value = serde_json::from_slice(stdin)
            .map_err(|e| PluginError::new(codes::DECODE_FAILURE, "decoding GC input", e))?;
        let valid: Vec<(String, String)> = doc
            .get("cni.dev/valid-attachments")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|a| {
                let s = |k| {
                    a.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                (s("containerID"), s("ifname"))
            })
            .collect();
        let store = Store::new(&conf.data_dir(), &conf.name);
        let stale: Vec<(String, String)> = store
            .lock()?
            .list()?
            .into_iter()
            .map(|a| (a.container_id, a.ifname))
            .filter(|owner| !valid.contains(owner))
            .collect();
        let mut errors = Vec::new();
        for (id, ifname) in &stale {
            if let Err(e) = self
                .net
                .delete_link(&host_veth_name(&conf.name, id, ifname))
                .await
            {
                errors.push(e.into());
            }
        }
        if let Err(e) = self.release(conf, &stale).await {
            errors.push(e);
        }
        join(errors)
    }

    /// STATUS: ready when the allocation store can be locked.
    pub fn status(&self, conf: &BridgeConf) -> Result<(), PluginError> {
        Store::new(&conf.data_dir(), &conf.name)
            .lock()
            .map(|_| ())
            .map_err(|e| PluginError::msg(codes::NOT_AVAILABLE, e.to_string()))
    }
}

fn join(mut errors: Vec<PluginError>) -> Result<(), PluginError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(PluginError {
            code: errors[0].code,
            msg: errors
                .iter()
                .map(|e| e.msg.clone())
                .collect::<Vec<_>>()
                .join("; "),
            details: String::new(),
        }),
    }
}

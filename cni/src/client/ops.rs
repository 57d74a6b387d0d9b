//! The operations of [`CniClient`]: ADD, CHECK, DEL, VERSION, STATUS and GC over a plugin chain.

use serde_json::{json, Map, Value};
use tracing::{debug, warn};

use super::cache::{base64, CacheEntry};
use super::{netns_str, validate, Attachment, ClientError, CniClient, PluginRequest, VersionInfo};
use crate::spec::{
    format_cni_args, parse_cni_args, version_at_least, CniResult, NetworkConfigList, PodArgs,
};

/// What an ADD, CHECK or DEL holds while it runs.
struct OpGuard<'a> {
    container: super::lock::ContainerGuard,
    _gc: tokio::sync::RwLockReadGuard<'a, ()>,
}

impl CniClient {
    fn request(&self, command: &str, att: &Attachment, stdin: Vec<u8>) -> PluginRequest {
        let pod = PodArgs {
            namespace: att.pod_namespace.clone(),
            name: att.pod_name.clone(),
            infra_container_id: att.container_id.clone(),
            uid: att.pod_uid.clone(),
        };
        PluginRequest {
            command: command.into(),
            container_id: att.container_id.clone(),
            netns: netns_str(&att.netns_path),
            ifname: att.ifname.clone(),
            args: format_cni_args(&pod),
            path: self.cni_path(),
            stdin,
        }
    }

    async fn run_plugin(
        &self,
        net: &NetworkConfigList,
        index: usize,
        op: &str,
        req: &PluginRequest,
    ) -> Result<Vec<u8>, ClientError> {
        let plugin = self.plugin_path(net, index)?;
        debug!(plugin = %plugin.display(), op, container = %req.container_id, "running CNI plugin");
        self.exec
            .exec(&plugin, req)
            .await
            .map_err(|source| ClientError::Plugin {
                op: op.into(),
                container_id: req.container_id.clone(),
                network: net.name.clone(),
                source: Box::new(source),
            })
    }

    /// Attaches the container: ADD through the chain, in order, each plugin getting the previous
    /// one's result as `prevResult`; the final result is cached and returned. If a plugin fails,
    /// the chain is torn down again (DEL, best effort) and the plugin's error returned.
    ///
    /// A capability argument that no plugin of the chain declares is an error
    /// ([`ClientError::CapabilityNotSupported`]) before any plugin runs: libcni would drop it
    /// and attach the container without it. Before the first plugin runs, the attachment is
    /// cached with an empty (`null`) result, so that a DEL after a crash in the middle of the
    /// chain still gets the capability arguments (e.g. for `portmap` to remove its rules).
    pub async fn add(&self, att: &Attachment) -> Result<CniResult, ClientError> {
        validate(att)?;
        let mut guard = self.lock(&att.container_id).await?;
        let net = self.network()?;
        if let Some((cap, _)) = att
            .capability_args
            .iter()
            .find(|(cap, v)| !is_empty_arg(v) && !net.has_capability(cap))
        {
            return Err(ClientError::CapabilityNotSupported {
                capability: cap.clone(),
                network: net.name.clone(),
                config: net.source.clone(),
            });
        }
        self.cache
            .put(&self.cache_entry(&net, att, Value::Null))
            .map_err(|source| ClientError::Io {
                what: format!("caching the ADD of container {}", att.container_id),
                source,
            })?;
        let mut prev: Option<Value> = None;
        if let Err(e) = self.add_chain(&net, att, &mut prev).await {
            // The spec wants every ADD followed by a DEL, also a failed one: tear down now, with
            // whatever result the chain had built, and report the ADD's error. The entry stays
            // for a later DEL when this one fails.
            match self.del_chain(&net, att, prev.as_ref()).await {
                Ok(()) => {
                    if let Err(rm) = self.cache.remove(&net.name, &att.container_id, &att.ifname) {
                        warn!(container = %att.container_id, error = %rm, "removing the cached ADD after a failed ADD");
                    }
                    guard.container.remove_on_release()
                }
                Err(del) => {
                    warn!(container = %att.container_id, error = %del, "cleaning up after a failed ADD")
                }
            }
            return Err(e);
        }
        let result = prev.unwrap_or_else(|| json!({"cniVersion": net.cni_version}));
        let entry = self.cache_entry(&net, att, result.clone());
        self.cache.put(&entry).map_err(|source| ClientError::Io {
            what: format!("caching the ADD result of container {}", att.container_id),
            source,
        })?;
        Ok(CniResult::from_json(&result)?)
    }

    /// The cache entry of `att` on `net` with `result` (`null` while ADD runs).
    fn cache_entry(&self, net: &NetworkConfigList, att: &Attachment, result: Value) -> CacheEntry {
        CacheEntry {
            kind: "cniCacheV1".into(),
            container_id: att.container_id.clone(),
            config: base64(&std::fs::read(&net.source).unwrap_or_default()),
            if_name: att.ifname.clone(),
            network_name: net.name.clone(),
            netns: netns_str(&att.netns_path),
            cni_args: parse_cni_args(&self.request("ADD", att, Vec::new()).args)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| [k, v])
                .collect(),
            capability_args: att.capability_args.clone(),
            result,
        }
    }

    async fn add_chain(
        &self,
        net: &NetworkConfigList,
        att: &Attachment,
        prev: &mut Option<Value>,
    ) -> Result<(), ClientError> {
        for i in 0..net.plugins.len() {
            let stdin = net.plugin_stdin(i, prev.as_ref(), &att.capability_args);
            let out = self
                .run_plugin(net, i, "ADD", &self.request("ADD", att, stdin))
                .await?;
            let value: Value =
                serde_json::from_slice(&out).map_err(|e| ClientError::BadResult {
                    plugin: net.plugin_type(i).into(),
                    container_id: att.container_id.clone(),
                    reason: format!("{e}: {:?}", String::from_utf8_lossy(&out)),
                })?;
            *prev = Some(value);
        }
        Ok(())
    }

    /// Verifies the attachment: CHECK through the chain with the cached ADD result. A no-op when
    /// the network sets `disableCheck` or is older than 0.4.0.
    pub async fn check(&self, att: &Attachment) -> Result<(), ClientError> {
        validate(att)?;
        let _guard = self.lock(&att.container_id).await?;
        let net = self.network()?;
        if net.disable_check || !version_at_least(&net.cni_version, "0.4.0") {
            return Ok(());
        }
        let cached = self
            .cached(&net, att)?
            .filter(|c| !c.result.is_null())
            .ok_or_else(|| ClientError::NotAttached {
                container_id: att.container_id.clone(),
                ifname: att.ifname.clone(),
                network: net.name.clone(),
            })?;
        for i in 0..net.plugins.len() {
            let stdin = net.plugin_stdin(i, Some(&cached.result), &cached.capability_args);
            self.run_plugin(&net, i, "CHECK", &self.request("CHECK", att, stdin))
                .await?;
        }
        Ok(())
    }

    /// Detaches the container: DEL through the chain in reverse, with the cached ADD result as
    /// `prevResult`. Idempotent; every plugin runs even if one fails, and all failures are
    /// reported together. The cache entry is removed once every plugin succeeded.
    pub async fn del(&self, att: &Attachment) -> Result<(), ClientError> {
        validate(att)?;
        let mut guard = self.lock(&att.container_id).await?;
        self.del_locked(att).await?;
        guard.container.remove_on_release();
        Ok(())
    }

    /// DEL with the container's lock (and the GC lock) already held.
    async fn del_locked(&self, att: &Attachment) -> Result<(), ClientError> {
        let net = self.network()?;
        let cached = self.cached(&net, att)?;
        let mut att = att.clone();
        if let Some(c) = &cached {
            if att.capability_args.is_empty() {
                att.capability_args = c.capability_args.clone();
            }
        }
        let prev = cached.as_ref().map(|c| &c.result).filter(|r| !r.is_null());
        self.del_chain(&net, &att, prev).await?;
        self.cache
            .remove(&net.name, &att.container_id, &att.ifname)
            .map_err(cache_error("removing", &att))
    }

    async fn del_chain(
        &self,
        net: &NetworkConfigList,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> Result<(), ClientError> {
        let mut att = att.clone();
        if !att.netns_path.as_os_str().is_empty() && !att.netns_path.exists() {
            att.netns_path = Default::default();
        }
        let mut errors = Vec::new();
        for i in (0..net.plugins.len()).rev() {
            let stdin = net.plugin_stdin(i, prev, &att.capability_args);
            if let Err(e) = self
                .run_plugin(net, i, "DEL", &self.request("DEL", &att, stdin))
                .await
            {
                errors.push(e);
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ClientError::Multiple(errors)),
        }
    }

    /// Asks each plugin of the network which spec versions it supports (VERSION).
    pub async fn versions(&self) -> Result<Vec<(String, VersionInfo)>, ClientError> {
        let net = self.network()?;
        let mut out = Vec::new();
        for i in 0..net.plugins.len() {
            let req = PluginRequest {
                command: "VERSION".into(),
                path: self.cni_path(),
                stdin: serde_json::to_vec(&json!({"cniVersion": net.cni_version}))
                    .unwrap_or_default(),
                ..Default::default()
            };
            let raw = self.run_plugin(&net, i, "VERSION", &req).await?;
            let info: VersionInfo =
                serde_json::from_slice(&raw).map_err(|e| ClientError::BadResult {
                    plugin: net.plugin_type(i).into(),
                    container_id: String::new(),
                    reason: e.to_string(),
                })?;
            out.push((net.plugin_type(i).to_string(), info));
        }
        Ok(out)
    }

    /// Indexes of plugins that speak spec 1.1.0 (and so STATUS and GC), when the network does.
    async fn v11_plugins(&self, net: &NetworkConfigList) -> Result<Vec<usize>, ClientError> {
        if !version_at_least(&net.cni_version, "1.1.0") {
            return Ok(Vec::new());
        }
        let versions = self.versions().await?;
        Ok((0..net.plugins.len())
            .filter(|&i| {
                versions.get(i).is_some_and(|(_, v)| {
                    v.supported_versions
                        .iter()
                        .any(|s| version_at_least(s, "1.1.0"))
                })
            })
            .collect())
    }

    /// STATUS: whether the network is ready for ADDs (each 1.1.0 plugin is asked; others are
    /// assumed ready).
    pub async fn status(&self) -> Result<(), ClientError> {
        let net = self.network()?;
        for i in self.v11_plugins(&net).await? {
            let req = PluginRequest {
                command: "STATUS".into(),
                path: self.cni_path(),
                stdin: net.plugin_stdin(i, None, &Map::new()),
                ..Default::default()
            };
            self.run_plugin(&net, i, "STATUS", &req).await?;
        }
        Ok(())
    }

    /// GC: DELs every cached attachment of the network not in `valid`, then asks each 1.1.0
    /// plugin to drop resources of attachments not in `valid`. Keeps going through errors.
    pub async fn gc(&self, valid: &[Attachment]) -> Result<(), ClientError> {
        // GC is exclusive with ADD, CHECK and DEL (spec): wait for running ones, hold off new ones.
        let _exclusive = self.gc_lock.write().await;
        let net = self.network()?;
        if net.disable_gc {
            return Ok(());
        }
        let is_valid = |id: &str, ifname: &str| {
            valid
                .iter()
                .any(|a| a.container_id == id && a.ifname == ifname)
        };
        let mut errors = Vec::new();
        for entry in self.cache.list(&net.name) {
            if is_valid(&entry.container_id, &entry.if_name) {
                continue;
            }
            let att = Attachment {
                container_id: entry.container_id.clone(),
                netns_path: entry.netns.clone().into(),
                ifname: entry.if_name.clone(),
                capability_args: entry.capability_args.clone(),
                ..Default::default()
            };
            let deleted = match self.container_lock(&att.container_id).await {
                Ok(mut guard) => {
                    let r = self.del_locked(&att).await;
                    if r.is_ok() {
                        guard.remove_on_release();
                    }
                    r
                }
                Err(e) => Err(e),
            };
            if let Err(e) = deleted {
                errors.push(e);
            }
        }
        let list: Vec<Value> = valid
            .iter()
            .map(|a| json!({"containerID": a.container_id, "ifname": a.ifname}))
            .collect();
        for i in self.v11_plugins(&net).await? {
            let mut conf: Value =
                serde_json::from_slice(&net.plugin_stdin(i, None, &Map::new())).unwrap_or_default();
            conf["cni.dev/valid-attachments"] = Value::Array(list.clone());
            let req = PluginRequest {
                command: "GC".into(),
                path: self.cni_path(),
                stdin: serde_json::to_vec(&conf).unwrap_or_default(),
                ..Default::default()
            };
            if let Err(e) = self.run_plugin(&net, i, "GC", &req).await {
                errors.push(e);
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ClientError::Multiple(errors)),
        }
    }

    fn cached(
        &self,
        net: &NetworkConfigList,
        att: &Attachment,
    ) -> Result<Option<CacheEntry>, ClientError> {
        self.cache
            .get(&net.name, &att.container_id, &att.ifname)
            .map_err(cache_error("reading", att))
    }

    /// Held by ADD, CHECK and DEL: the GC lock (shared) and the container's lock.
    async fn lock(&self, container_id: &str) -> Result<OpGuard<'_>, ClientError> {
        let gc = self.gc_lock.read().await;
        let container = self.container_lock(container_id).await?;
        Ok(OpGuard { container, _gc: gc })
    }

    async fn container_lock(
        &self,
        container_id: &str,
    ) -> Result<super::lock::ContainerGuard, ClientError> {
        self.locks
            .lock(container_id)
            .await
            .map_err(|source| ClientError::Io {
                what: format!("locking container {container_id}"),
                source,
            })
    }
}

/// A capability argument that asks for nothing (`null`, `[]`, `{}`), which no plugin needs.
fn is_empty_arg(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// The error of `action` ("reading", "removing") on the cached result of `att`'s container.
fn cache_error(action: &str, att: &Attachment) -> impl FnOnce(std::io::Error) -> ClientError {
    let what = format!(
        "{action} the cached result of container {}",
        att.container_id
    );
    move |source| ClientError::Io { what, source }
}

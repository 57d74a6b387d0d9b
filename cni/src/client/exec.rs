//! Running one plugin: the `PluginExec` boundary, and the real implementation that spawns the
//! executable with the CNI environment, feeds stdin, reads stdout and kills it on timeout.

use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::spec::PluginErrorReply;

/// One plugin invocation: the CNI environment and stdin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginRequest {
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID` (empty for VERSION, STATUS and GC).
    pub container_id: String,
    /// `CNI_NETNS` (empty when unknown).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: String,
    /// `CNI_PATH`.
    pub path: String,
    /// The config on stdin.
    pub stdin: Vec<u8>,
}

/// A plugin run failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The executable could not be started.
    #[error("starting CNI plugin {plugin}: {source}")]
    Spawn {
        /// The executable.
        plugin: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Talking to the process failed.
    #[error("running CNI plugin {plugin}: {source}")]
    Io {
        /// The executable.
        plugin: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It did not finish in time and was killed.
    #[error("CNI plugin {plugin} {command} did not finish within {timeout:?}; killed")]
    Timeout {
        /// The executable.
        plugin: PathBuf,
        /// `CNI_COMMAND`.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// It failed with a spec error reply, kept verbatim.
    #[error("CNI plugin {plugin} {command} failed: {reply}")]
    Plugin {
        /// The executable.
        plugin: PathBuf,
        /// `CNI_COMMAND`.
        command: String,
        /// The reply as printed.
        reply: PluginErrorReply,
    },
    /// It failed without a readable error reply.
    #[error("CNI plugin {plugin} {command} failed ({status}): {output}")]
    Failed {
        /// The executable.
        plugin: PathBuf,
        /// `CNI_COMMAND`.
        command: String,
        /// The exit status.
        status: std::process::ExitStatus,
        /// stdout and stderr, trimmed.
        output: String,
    },
}

/// Future returned by [`PluginExec::exec`].
pub type ExecFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, ExecError>> + Send + 'a>>;

/// The OS boundary of the client: run `plugin` with `req`, return its stdout on success.
pub trait PluginExec: Send + Sync + std::fmt::Debug {
    /// Runs the plugin executable.
    fn exec<'a>(&'a self, plugin: &'a Path, req: &'a PluginRequest) -> ExecFuture<'a>;
}

/// Spawns plugins as processes (tokio), optionally inside a network namespace, with a timeout.
#[derive(Debug, Clone)]
pub struct ProcessExec {
    timeout: Duration,
    netns: Option<Arc<OwnedFd>>,
}

impl ProcessExec {
    /// Runs plugins in this process's network namespace, or in `netns` (a path such as
    /// `/run/netns/node1`; the child `setns`es into it before exec) when given.
    pub fn new(timeout: Duration, netns: Option<&Path>) -> std::io::Result<Self> {
        let netns = match netns {
            Some(p) => Some(Arc::new(OwnedFd::from(std::fs::File::open(p)?))),
            None => None,
        };
        Ok(ProcessExec { timeout, netns })
    }
}

impl PluginExec for ProcessExec {
    fn exec<'a>(&'a self, plugin: &'a Path, req: &'a PluginRequest) -> ExecFuture<'a> {
        Box::pin(async move {
            let mut cmd = tokio::process::Command::new(plugin);
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("CNI_") {
                    cmd.env_remove(&k);
                }
            }
            cmd.env("CNI_COMMAND", &req.command)
                .env("CNI_CONTAINERID", &req.container_id)
                .env("CNI_NETNS", &req.netns)
                .env("CNI_IFNAME", &req.ifname)
                .env("CNI_ARGS", &req.args)
                .env("CNI_PATH", &req.path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            if let Some(fd) = &self.netns {
                let raw = fd.as_raw_fd();
                // SAFETY: the closure runs in the forked child before exec and only calls setns(2),
                // which is async-signal-safe; `raw` stays open because `self` outlives the spawn.
                unsafe {
                    cmd.pre_exec(move || {
                        if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
                plugin: plugin.to_path_buf(),
                source,
            })?;
            let io = |source| ExecError::Io {
                plugin: plugin.to_path_buf(),
                source,
            };
            let mut stdin = child.stdin.take();
            let run = async {
                if let Some(s) = stdin.as_mut() {
                    // A plugin may exit without reading stdin (VERSION): a broken pipe is fine.
                    let _ = s.write_all(&req.stdin).await;
                }
                drop(stdin);
                child.wait_with_output().await
            };
            let out = match tokio::time::timeout(self.timeout, run).await {
                Ok(r) => r.map_err(io)?,
                Err(_) => {
                    return Err(ExecError::Timeout {
                        plugin: plugin.to_path_buf(),
                        command: req.command.clone(),
                        timeout: self.timeout,
                    })
                }
            };
            if !out.stderr.is_empty() {
                tracing::debug!(plugin = %plugin.display(), stderr = %String::from_utf8_lossy(&out.stderr).trim(), "CNI plugin stderr");
            }
            if out.status.success() {
                return Ok(out.stdout);
            }
            if let Ok(reply) = serde_json::from_slice::<PluginErrorReply>(&out.stdout) {
                return Err(ExecError::Plugin {
                    plugin: plugin.to_path_buf(),
                    command: req.command.clone(),
                    reply,
                });
            }
            let mut output = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !stderr.trim().is_empty() {
                output = format!("{output} {}", stderr.trim()).trim().to_string();
            }
            Err(ExecError::Failed {
                plugin: plugin.to_path_buf(),
                command: req.command.clone(),
                status: out.status,
                output,
            })
        })
    }
}

/// Finds plugin `ty` in the first of `dirs` that has an executable of that name.
pub fn find_plugin(ty: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if ty.is_empty() || ty.contains('/') {
        return None;
    }
    dirs.iter().map(|d| d.join(ty)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

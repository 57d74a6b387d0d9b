//! A container's status from its exit record, its metadata and the OCI
//! runtime's state, which is all on disk, so it survives agent restarts.

use crate::error::RuntimeError;
use crate::oci::OciStatus;
use crate::shim::ExitRecord;
use crate::store::{ContainerMeta, EXIT};
use crate::Runtime;

use super::{process_alive, ContainerState, ContainerStatus};

/// `StartError` exit code (the kubelet's convention).
const START_ERROR_EXIT: i32 = 128;

impl Runtime {
    pub(crate) fn container_meta(&self, id: &str) -> Result<ContainerMeta, RuntimeError> {
        self.state()
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound {
                kind: "container",
                id: id.to_string(),
            })
    }

    /// The status of a container.
    pub fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let meta = self.container_meta(id)?;
        Ok(self.status_of(&meta))
    }

    /// The attach socket of a container whose shim serves one (a container with `stdin` or
    /// `tty`, while it runs): see [`crate::shim::attach`].
    pub fn attach_socket(&self, id: &str) -> Option<std::path::PathBuf> {
        let socket = self.container_dir(id).join(crate::shim::attach::SOCKET);
        socket.exists().then_some(socket)
    }

    /// The status of every container, optionally of one sandbox.
    pub fn list_containers(&self, sandbox_id: Option<&str>) -> Vec<ContainerStatus> {
        let metas: Vec<ContainerMeta> = self
            .state()
            .containers
            .values()
            .filter(|c| sandbox_id.is_none_or(|s| c.sandbox_id == s))
            .cloned()
            .collect();
        metas.iter().map(|m| self.status_of(m)).collect()
    }

    pub(crate) fn status_of(&self, meta: &ContainerMeta) -> ContainerStatus {
        let mut st = ContainerStatus {
            id: meta.id.clone(),
            sandbox_id: meta.sandbox_id.clone(),
            name: meta.name.clone(),
            restart_count: meta.restart_count,
            image: meta.image.clone(),
            state: ContainerState::Unknown,
            pid: None,
            exit_code: None,
            reason: None,
            message: None,
            created_at: meta.created_at,
            started_at: meta.started_at,
            finished_at: None,
            log_path: meta.log_path.clone(),
        };
        if let Some(err) = &meta.start_error {
            st.state = ContainerState::Exited;
            st.exit_code = Some(START_ERROR_EXIT);
            st.reason = Some("StartError".into());
            st.message = Some(err.clone());
            st.finished_at =
                ExitRecord::read(&self.container_dir(&meta.id).join(EXIT)).map(|r| r.finished_at);
            return st;
        }
        let exit_path = self.container_dir(&meta.id).join(EXIT);
        let read_exit = || ExitRecord::read(&exit_path);
        if let Some(rec) = read_exit() {
            fill_exit(&mut st, rec);
            return st;
        }
        // Fast path, no OCI runtime call: a started container whose process and shim both live
        // is running (the shim writes the exit record before it goes). Status is polled every
        // second for every container, and `runc state` costs a process and ~10 ms each.
        if meta.started_at.is_some()
            && meta.pid > 0
            && super::process_alive(meta.pid)
            && super::process_alive(meta.shim_pid)
        {
            st.state = ContainerState::Running;
            st.pid = Some(meta.pid);
            return st;
        }
        match self.oci.state(&meta.id) {
            Ok(Some(s)) => match s.status {
                OciStatus::Creating | OciStatus::Created => st.state = ContainerState::Created,
                OciStatus::Running | OciStatus::Paused => {
                    st.state = ContainerState::Running;
                    st.pid = Some(s.pid);
                }
                OciStatus::Stopped => {
                    // Look at the shim first: if it is gone, the record it left is final.
                    let shim_alive = process_alive(meta.shim_pid);
                    if let Some(rec) = read_exit() {
                        fill_exit(&mut st, rec);
                    } else if shim_alive {
                        // The shim is still draining output; the record follows.
                        st.state = ContainerState::Running;
                    } else {
                        st.state = ContainerState::Exited;
                        st.exit_code = Some(255);
                        st.reason = Some("Error".into());
                        st.message = Some("exit status lost: the container's shim is gone".into());
                    }
                }
            },
            Ok(None) if read_exit().is_some() => {
                if let Some(rec) = read_exit() {
                    fill_exit(&mut st, rec);
                }
            }
            Ok(None) => {
                st.state = ContainerState::Exited;
                st.exit_code = Some(255);
                st.reason = Some("Error".into());
                st.message = Some(format!(
                    "the OCI runtime no longer knows container {}",
                    meta.id
                ));
            }
            Err(e) => st.message = Some(e.to_string()),
        }
        st
    }
}

fn fill_exit(st: &mut ContainerStatus, rec: ExitRecord) {
    st.state = ContainerState::Exited;
    st.exit_code = Some(rec.exit_code);
    let reason = if rec.oom_killed {
        "OOMKilled"
    } else if rec.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    st.reason = Some(reason.into());
    st.finished_at = Some(rec.finished_at);
}

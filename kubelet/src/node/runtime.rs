//! The kubelet's async face on the container runtime: every [`Runtime`] method blocks (it runs
//! runc and waits for shims), so each call here moves to tokio's blocking pool and is awaited,
//! leaving the async worker threads free for the other pods' workers, the prober and the API.

use std::sync::Arc;
use std::time::Duration;

use kubenode_runtime::{
    ContainerConfig, ContainerStatus, ExecResult, Runtime, RuntimeError, Sandbox, SandboxConfig,
    SandboxOptions, Signal,
};
use tokio::task::{JoinError, JoinHandle};

/// The shared [`Runtime`], called from async code. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AsyncRuntime(Arc<Runtime>);

impl AsyncRuntime {
    pub(crate) fn new(runtime: Arc<Runtime>) -> AsyncRuntime {
        AsyncRuntime(runtime)
    }

    /// The runtime itself, for the calls that do not block (paths) and for code that already
    /// runs on the blocking pool.
    pub(crate) fn inner(&self) -> &Runtime {
        &self.0
    }

    /// Runs `call` on the blocking pool. The handle reports a panic of the call as an error.
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Runtime) -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let runtime = self.0.clone();
        tokio::task::spawn_blocking(move || call(&runtime))
    }

    /// Runs `call` on the blocking pool and waits for it; a panic in the call is an error.
    pub(crate) async fn try_run<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Runtime) -> T + Send + 'static,
    ) -> Result<T, JoinError> {
        self.spawn(call).await
    }

    /// Runs `call` on the blocking pool and waits for it; a panic in the call goes on in the
    /// caller (a runtime bug must not pass as a result).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Runtime) -> T + Send + 'static,
    ) -> T {
        self.spawn(call).await.expect("blocking task panicked")
    }

    /// [`Runtime::list_containers`].
    pub(crate) async fn list_containers(&self, sandbox_id: Option<&str>) -> Vec<ContainerStatus> {
        let sandbox_id = sandbox_id.map(str::to_owned);
        self.run(move |rt| rt.list_containers(sandbox_id.as_deref()))
            .await
    }

    /// [`Runtime::list_sandboxes`].
    pub(crate) async fn list_sandboxes(&self) -> Vec<Sandbox> {
        self.run(|rt| rt.list_sandboxes()).await
    }

    /// [`Runtime::create_sandbox_with`].
    pub(crate) async fn create_sandbox(
        &self,
        config: SandboxConfig,
        options: SandboxOptions,
    ) -> Result<Sandbox, RuntimeError> {
        timed(
            "run_podsandbox",
            self.run(move |rt| rt.create_sandbox_with(&config, &options)),
        )
        .await
    }

    /// [`Runtime::set_cgroup_resources`].
    pub(crate) async fn set_cgroup_resources(
        &self,
        cgroups_path: &'static str,
        resources: kubenode_runtime::host::PodCgroupResources,
    ) -> Result<(), kubenode_runtime::host::HostError> {
        self.run(move |rt| rt.set_cgroup_resources(cgroups_path, &resources))
            .await
    }

    /// [`Runtime::sandbox`].
    pub(crate) async fn sandbox(&self, id: &str) -> Result<Sandbox, RuntimeError> {
        let id = id.to_owned();
        self.run(move |rt| rt.sandbox(&id)).await
    }

    /// [`Runtime::stop_and_remove_sandbox`].
    pub(crate) async fn stop_and_remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let id = id.to_owned();
        timed(
            "remove_podsandbox",
            self.run(move |rt| rt.stop_and_remove_sandbox(&id)),
        )
        .await
    }

    /// [`Runtime::create_container`].
    pub(crate) async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
    ) -> Result<String, RuntimeError> {
        let sandbox_id = sandbox_id.to_owned();
        timed(
            "create_container",
            self.run(move |rt| rt.create_container(&sandbox_id, &config)),
        )
        .await
    }

    /// [`Runtime::start_container`].
    pub(crate) async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let id = id.to_owned();
        timed(
            "start_container",
            self.run(move |rt| rt.start_container(&id)),
        )
        .await
    }

    /// [`Runtime::stop_container`].
    pub(crate) async fn stop_container(
        &self,
        id: &str,
        grace: Duration,
        signal: Option<Signal>,
    ) -> Result<(), RuntimeError> {
        let id = id.to_owned();
        timed(
            "stop_container",
            self.run(move |rt| rt.stop_container(&id, grace, signal)),
        )
        .await
    }

    /// [`Runtime::remove_container`].
    pub(crate) async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let id = id.to_owned();
        timed(
            "remove_container",
            self.run(move |rt| rt.remove_container(&id)),
        )
        .await
    }

    /// [`Runtime::exec_capped`].
    pub(crate) async fn exec_capped(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
        max_output: usize,
    ) -> Result<ExecResult, RuntimeError> {
        let id = id.to_owned();
        timed(
            "exec_sync",
            self.run(move |rt| rt.exec_capped(&id, &cmd, timeout, max_output)),
        )
        .await
    }
}

/// Awaits one runtime operation and counts it in upstream's `kubelet_runtime_operations_*`
/// metrics under its CRI name.
async fn timed<T, E>(
    operation: &'static str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let began = std::time::Instant::now();
    let result = call.await;
    crate::metrics::metrics().runtime_operation(operation, began.elapsed(), result.is_err());
    result
}

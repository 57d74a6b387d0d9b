//! exec probes: the command runs in the container through the runtime, killed at the timeout;
//! exit 0 is success, the output (capped) is the event's detail.

use std::time::Duration;

use super::{Outcome, Shared};

/// Output kept from an exec probe or an exec hook, per stream, read while the command runs
/// (upstream's prober `maxReadLength`, 10 KiB).
pub const MAX_EXEC_OUTPUT: usize = 10 * 1024;

pub(super) async fn probe(
    shared: &Shared,
    container_id: &str,
    cmd: Vec<String>,
    timeout: Duration,
) -> Outcome {
    let Ok(_slot) = shared.exec_slots.acquire().await else {
        return Outcome::Error("the prober is shutting down".into());
    };
    let host = shared.host.clone();
    let id = container_id.to_string();
    let argv = cmd.clone();
    let ran = tokio::task::spawn_blocking(move || host.exec(&id, &argv, timeout)).await;
    let out = match ran {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Outcome::Error(e.to_string()),
        Err(e) => return Outcome::Error(format!("exec task failed: {e}")),
    };
    if out.timed_out {
        return Outcome::Failure(format!("command {:?} timed out", cmd.join(" ")));
    }
    let data = &out.output[..out.output.len().min(MAX_EXEC_OUTPUT)];
    let text = String::from_utf8_lossy(data).into_owned();
    if out.exit_code == 0 {
        Outcome::Success(text)
    } else {
        Outcome::Failure(text)
    }
}

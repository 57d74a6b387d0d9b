//! One probe of one container instance: a timer, the gating (initial delay, startup), the
//! threshold accounting and the effects (events, kill), as upstream's `worker.doProbe`.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;
use tokio::time::{Instant, MissedTickBehavior};

use super::metrics::Mechanism;
use super::{Outcome, ProbeKind, ProbeResult, Shared, Target};

/// A probe's timing and thresholds with upstream's defaults and minimums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Settings {
    pub fn of(p: &Probe) -> Settings {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(v.unwrap_or(default).max(min) as u64)
        };
        Settings {
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// Consecutive-result accounting: the state changes only after `failureThreshold` failures
/// or `successThreshold` successes in a row.
#[derive(Debug, Clone)]
pub(crate) struct Accounting {
    last: ProbeResult,
    run: u32,
    success_threshold: u32,
    failure_threshold: u32,
}

impl Accounting {
    pub fn new(s: &Settings) -> Accounting {
        Accounting {
            last: ProbeResult::Unknown,
            run: 0,
            success_threshold: s.success_threshold,
            failure_threshold: s.failure_threshold,
        }
    }

    /// Counts one attempt's result; returns the result to record once past its threshold.
    pub fn observe(&mut self, result: ProbeResult) -> Option<ProbeResult> {
        if self.last == result {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = result;
            self.run = 1;
        }
        let threshold = match result {
            ProbeResult::Failure => self.failure_threshold,
            ProbeResult::Success => self.success_threshold,
            ProbeResult::Unknown => 1,
        };
        (self.run >= threshold).then_some(result)
    }
}

/// Whether a probe of `kind` runs now: startup gates the other kinds (and idles once
/// started), and nothing runs within the initial delay.
pub(crate) fn should_probe(
    kind: ProbeKind,
    has_startup_probe: bool,
    started: bool,
    in_initial_delay: bool,
) -> bool {
    let gated = match kind {
        ProbeKind::Startup => started,
        _ => has_startup_probe && !started,
    };
    !gated && !in_initial_delay
}

/// A random duration in `[0, period)`.
pub(crate) fn jitter(period: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    let fraction = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    period.mul_f64(fraction)
}

/// The worker task: probes until the instance is killed or the task is aborted.
pub(super) async fn run(shared: Arc<Shared>, target: Target, kind: ProbeKind) {
    let Some(probe) = kind.of(&target.container).cloned() else {
        return;
    };
    let settings = Settings::of(&probe);
    // The initial delay counts from the instance's start (wall clock), mapped onto the timer.
    let since_start = target
        .started_at
        .map(|t| {
            let d = shared.clock.now().duration_since(t);
            Duration::try_from(d).unwrap_or_default()
        })
        .unwrap_or_default();
    let probe_from = Instant::now() + settings.initial_delay.saturating_sub(since_start);
    // After a kubelet restart, spread the first probes of already running containers.
    if shared.start.elapsed() < settings.period {
        tokio::time::sleep(jitter(settings.period)).await;
    }
    let mut ticker = tokio::time::interval(settings.period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut accounting = Accounting::new(&settings);
    let span = tracing::debug_span!("probe", container = %target.object, kind = kind.label());
    loop {
        ticker.tick().await;
        let started =
            shared.result(&target.container_id, ProbeKind::Startup) == ProbeResult::Success;
        let has_startup = target.container.startup_probe.is_some();
        if !should_probe(kind, has_startup, started, Instant::now() < probe_from) {
            if kind == ProbeKind::Startup && started {
                return; // started: the startup probe is done for this instance
            }
            continue;
        }
        let began = Instant::now();
        let outcome = attempt(&shared, &target, &probe, settings.timeout).await;
        count(&target, kind, &outcome, began.elapsed());
        let _g = span.enter();
        tracing::debug!(?outcome, "probed");
        drop(_g);
        if !effects(&shared, &target, kind, &probe, &mut accounting, outcome).await {
            return;
        }
    }
}

/// Upstream's `prober_probe_total` and `prober_probe_duration_seconds` of one attempt. An
/// attempt that could not run is not counted: upstream's worker throws a prober error away
/// before its metrics (`if err != nil { return true }`), as the result.
fn count(target: &Target, kind: ProbeKind, outcome: &Outcome, took: Duration) {
    let result = match outcome {
        Outcome::Success(_) | Outcome::Warning(_) => "successful",
        Outcome::Failure(_) => "failed",
        Outcome::Error(_) => return,
    };
    let labels = crate::metrics::ProbeLabels {
        probe_type: kind.label(),
        container: &target.container.name,
        pod: &target.object.name,
        namespace: &target.object.namespace,
        pod_uid: &target.uid,
    };
    crate::metrics::metrics().probed(&labels, result, took);
}

/// Runs one attempt with the probe's mechanism, counting its duration.
async fn attempt(shared: &Shared, target: &Target, probe: &Probe, timeout: Duration) -> Outcome {
    let began = Instant::now();
    let (mechanism, outcome) = if let Some(e) = &probe.exec {
        let cmd = e.command.clone().unwrap_or_default();
        let out = super::exec::probe(shared, &target.container_id, cmd, timeout).await;
        (Mechanism::Exec, out)
    } else if let Some(h) = &probe.http_get {
        let out = super::http::probe(h, &target.container, &target.pod_ip, timeout).await;
        (Mechanism::Http, out)
    } else if let Some(t) = &probe.tcp_socket {
        let out = super::tcp::probe(t, &target.container, &target.pod_ip, timeout).await;
        (Mechanism::Tcp, out)
    } else if let Some(g) = &probe.grpc {
        let out = super::grpc::probe(g, &target.pod_ip, timeout).await;
        (Mechanism::Grpc, out)
    } else {
        return Outcome::Error("missing probe handler".into());
    };
    shared.durations.of(mechanism).record(began.elapsed());
    outcome
}

/// Events, accounting and the kill for one outcome. Returns whether to keep probing.
async fn effects(
    shared: &Shared,
    target: &Target,
    kind: ProbeKind,
    probe: &Probe,
    accounting: &mut Accounting,
    outcome: Outcome,
) -> bool {
    let label = kind.label();
    let (result, detail) = match outcome {
        Outcome::Success(out) => (ProbeResult::Success, out),
        Outcome::Warning(w) => {
            shared.events.warning(
                &target.object,
                "ProbeWarning",
                format!("{label} probe warning: {w}"),
            );
            (ProbeResult::Success, w)
        }
        Outcome::Failure(why) => {
            shared.events.warning(
                &target.object,
                "Unhealthy",
                format!("{label} probe failed: {why}"),
            );
            (ProbeResult::Failure, why)
        }
        Outcome::Error(why) => {
            shared.events.warning(
                &target.object,
                "Unhealthy",
                format!("{label} probe errored: {why}"),
            );
            shared.record(target, kind, None, why);
            return true;
        }
    };
    let settled = accounting.observe(result);
    if shared.record(target, kind, settled, detail) {
        (shared.wake)(&target.uid);
    }
    if settled != Some(ProbeResult::Failure) || kind == ProbeKind::Readiness {
        return true;
    }
    // Liveness or startup failed past the threshold: kill this instance; the pod worker
    // restarts it per restartPolicy. The worker stops (a new instance gets a new one).
    let name = &target.container.name;
    let mut message = format!("Container {name} failed {} probe", label.to_lowercase());
    if !target.restart_never {
        message.push_str(", will be restarted");
    }
    shared.events.normal(&target.object, "Killing", message);
    let grace = Duration::from_secs(
        probe
            .termination_grace_period_seconds
            .unwrap_or(target.pod_grace)
            .max(0) as u64,
    );
    let request = super::Kill {
        pod_uid: target.uid.clone(),
        container: name.clone(),
        container_id: target.container_id.clone(),
        grace,
    };
    let killed = shared.host.kill(request).await;
    (shared.wake)(&target.uid);
    match killed {
        Ok(()) => false,
        Err(e) => {
            // As upstream retries the kill on every sync: keep probing, the next failure
            // kills again.
            tracing::warn!(container = %target.object, error = %e, "killing the container after a failed {} probe", label.to_lowercase());
            true
        }
    }
}

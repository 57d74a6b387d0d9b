//! The proxy on a thread of its own: [`ProxyHandle`] sends inputs; the loop coalesces them (at
//! most one sync per `min_sync_period`), checks the canary chains every `sync_period`, and runs a
//! full sync at least every `full_sync_period` and after any failure. After each sync it hands
//! its [`ProxyStatus`] to whoever asked with [`ProxyHandle::on_status`].

use super::{Changes, Proxy};
use crate::rules::CANARY_CHAIN;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kubenode_fsutil::lock;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::ProxyStatus;

/// Starts `proxy` on a new thread.
pub(super) fn spawn(proxy: Proxy) -> ProxyHandle {
    let (tx, rx) = mpsc::channel();
    let status = proxy.status.clone();
    let listeners = Arc::new(StatusListeners::default());
    let published = listeners.clone();
    let thread = std::thread::Builder::new()
        .name("kubenode-proxy".into())
        .spawn(move || run_loop(proxy, rx, &published))
        .expect("spawning the proxy thread");
    ProxyHandle {
        tx,
        status,
        listeners,
        thread: Some(thread),
    }
}

/// A function given every new [`ProxyStatus`], on the proxy thread.
type StatusListener = Box<dyn Fn(&ProxyStatus) + Send>;

/// The functions registered with [`ProxyHandle::on_status`]. Lock order: these, then the status.
#[derive(Default)]
struct StatusListeners(Mutex<Vec<StatusListener>>);

impl StatusListeners {
    /// Hands the current status to every listener (after a sync, on the proxy thread).
    fn publish(&self, status: &Mutex<ProxyStatus>) {
        let listeners = lock(&self.0, "status listeners");
        if listeners.is_empty() {
            return;
        }
        let snapshot = lock(status, "proxy status").clone();
        for listener in listeners.iter() {
            listener(&snapshot);
        }
    }
}

impl std::fmt::Debug for StatusListeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.0.lock().map_or(0, |l| l.len());
        f.debug_struct("StatusListeners")
            .field("count", &count)
            .finish()
    }
}

enum Msg {
    Services(Vec<Service>),
    Endpoints(Vec<Endpoints>),
    Slices(Vec<EndpointSlice>),
    Pods(Vec<Arc<Pod>>),
    Changes(Changes),
    SyncNow,
    Shutdown,
}

/// A running proxy: send it inputs, read its status.
#[derive(Debug)]
pub struct ProxyHandle {
    tx: mpsc::Sender<Msg>,
    status: Arc<Mutex<ProxyStatus>>,
    listeners: Arc<StatusListeners>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl ProxyHandle {
    /// Replaces the Services.
    pub fn update_services(&self, services: Vec<Service>) {
        let _ = self.tx.send(Msg::Services(services));
    }

    /// Replaces the manual Endpoints objects.
    pub fn update_endpoints(&self, endpoints: Vec<Endpoints>) {
        let _ = self.tx.send(Msg::Endpoints(endpoints));
    }

    /// Replaces the EndpointSlices (see [`Proxy::update_endpoint_slices`]).
    pub fn update_endpoint_slices(&self, slices: Vec<EndpointSlice>) {
        let _ = self.tx.send(Msg::Slices(slices));
    }

    /// Applies added, changed and removed Services and Endpoints (see
    /// [`Proxy::apply_changes`]).
    pub fn apply_changes(&self, changes: Changes) {
        let _ = self.tx.send(Msg::Changes(changes));
    }

    /// Replaces the node's pods.
    pub fn update_pods<P: Into<Arc<Pod>>>(&self, pods: impl IntoIterator<Item = P>) {
        let _ = self
            .tx
            .send(Msg::Pods(pods.into_iter().map(Into::into).collect()));
    }

    /// Asks for a sync as soon as `min_sync_period` allows.
    pub fn sync_now(&self) {
        let _ = self.tx.send(Msg::SyncNow);
    }

    /// What the proxy serves and how its syncs went.
    pub fn status(&self) -> ProxyStatus {
        lock(&self.status, "proxy status").clone()
    }

    /// Calls `listener` with the status after every sync (successful or not), on the proxy
    /// thread, so it must be quick (send it on a channel); at once too when a sync has already
    /// run, so that a late listener does not wait for the next one. The listener lives as long
    /// as the proxy thread.
    pub fn on_status(&self, listener: impl Fn(&ProxyStatus) + Send + 'static) {
        let mut listeners = lock(&self.listeners.0, "status listeners");
        let status = lock(&self.status, "proxy status").clone();
        if status.syncs + status.failures > 0 {
            listener(&status);
        }
        listeners.push(Box::new(listener));
    }

    /// A cheap view of the proxy's health, for a health server on another thread.
    pub fn health(&self) -> ProxyHealth {
        ProxyHealth(self.status.clone())
    }

    /// Stops the proxy thread (rules stay in place; see [`crate::sync::cleanup`]).
    pub fn shutdown(mut self) {
        let _ = self.tx.send(Msg::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The timestamps kube-proxy's health server judges by, read from a running proxy.
#[derive(Clone, Debug)]
pub struct ProxyHealth(Arc<Mutex<ProxyStatus>>);

impl ProxyHealth {
    /// `(last_updated, pending_since)`, see [`ProxyStatus`].
    pub fn times(&self) -> (Option<SystemTime>, Option<SystemTime>) {
        let st = lock(&self.0, "proxy status");
        (st.last_updated, st.pending_since)
    }
}

fn run_loop(mut proxy: Proxy, rx: mpsc::Receiver<Msg>, listeners: &StatusListeners) {
    // As kube-proxy's sync loop: up to date at start.
    lock(&proxy.status, "proxy status").last_updated = Some(SystemTime::now());
    let min = proxy.cfg.min_sync_period;
    let period = proxy.cfg.sync_period.max(Duration::from_millis(10));
    let mut dirty = true;
    let mut last_sync: Option<Instant> = None;
    let mut last_full = Instant::now();
    let mut next_periodic = Instant::now() + period;
    loop {
        let now = Instant::now();
        let due = if dirty && proxy.initialized() {
            last_sync.map_or(now, |t| t + min).min(next_periodic)
        } else {
            next_periodic
        };
        let msg = rx.recv_timeout(due.saturating_duration_since(now));
        if matches!(msg, Ok(ref m) if !matches!(m, Msg::Shutdown)) && proxy.initialized() {
            let mut st = lock(&proxy.status, "proxy status");
            st.pending_since.get_or_insert_with(SystemTime::now);
        }
        match msg {
            Ok(Msg::Services(s)) => {
                proxy.update_services(s);
                dirty = true;
            }
            Ok(Msg::Endpoints(e)) => {
                proxy.update_endpoints(e);
                dirty = true;
            }
            Ok(Msg::Slices(s)) => {
                proxy.update_endpoint_slices(s);
                dirty = true;
            }
            Ok(Msg::Pods(p)) => {
                proxy.update_pods(p);
                dirty = true;
            }
            Ok(Msg::Changes(c)) => {
                proxy.apply_changes(c);
                dirty = true;
            }
            Ok(Msg::SyncNow) => dirty = true,
            Ok(Msg::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if !proxy.initialized() {
                    // Nothing to write before the first whole set (see `Proxy::initialized`).
                    next_periodic = now + period;
                    continue;
                }
                if now >= next_periodic {
                    next_periodic = now + period;
                    dirty = true;
                    match proxy.canary_present() {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!("canary chain {CANARY_CHAIN} is gone: tables were flushed, running a full sync");
                            proxy.force_full_sync();
                        }
                        Err(e) => tracing::warn!(error = %e, "checking the canary chains"),
                    }
                    if now.duration_since(last_full) >= proxy.cfg.full_sync_period {
                        proxy.force_full_sync();
                    }
                }
                if dirty && last_sync.is_none_or(|t| now >= t + min) {
                    let full = proxy.syncer.needs_full();
                    dirty = false;
                    last_sync = Some(now);
                    let result = proxy.sync();
                    if result.is_ok() {
                        let mut st = lock(&proxy.status, "proxy status");
                        st.last_updated = Some(SystemTime::now());
                        st.pending_since = None;
                    }
                    match result {
                        Ok(_) if full => last_full = now,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(error = %error_chain(&e), "proxy sync failed; retrying with a full sync")
                        }
                    }
                    listeners.publish(&proxy.status);
                }
            }
        }
    }
}

/// `error: cause: cause` on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

//! kube-proxy's job in iptables mode: Services (ClusterIP, NodePort, externalIPs) reach their
//! endpoints through iptables NAT, with kube-proxy's top-level chains (`KUBE-SERVICES`,
//! `KUBE-NODEPORTS`, `KUBE-MARK-MASQ`, `KUBE-POSTROUTING`), semantics and rule comments, but a
//! layout with few chains so that syncs stay fast on iptables-nft (see [`rules`]).
//!
//! Pipeline: k8s objects → [`model`] (Service ports, endpoints) → [`rules::generate`] (pure) →
//! [`sync::Syncer`] (one `iptables-restore --noflush` per sync, partial when possible) through the
//! [`iptables::Firewall`] trait; [`conntrack`] clears stale UDP flows; [`Proxy`] ties it together
//! with allocation, coalescing and periodic re-sync.

pub mod alloc;
pub mod conntrack;
pub mod iptables;
pub mod model;
mod proxy;
pub mod rules;
pub mod sync;

pub use proxy::{observe_syncs, SyncObserver};
pub use proxy::{Changes, Proxy, ProxyConfig, ProxyError, ProxyHandle, ProxyHealth, ProxyStatus};

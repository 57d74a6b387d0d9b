//! Signal observations from the Summary (upstream `makeSignalObservations`), and quantities
//! printed as upstream's `resource.Quantity` prints them in its messages.

use std::collections::BTreeMap;

use super::thresholds::Signal;
use crate::stats::types::{FsStats, Summary};

/// What one signal measured: the amount available and the capacity it is a part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Available now.
    pub available: i64,
    /// The capacity (`available + used` for memory).
    pub capacity: i64,
}

/// The observations of one synchronize, by signal.
pub type Observations = BTreeMap<Signal, Observation>;

fn fs_observations(out: &mut Observations, fs: Option<&FsStats>, bytes: Signal, inodes: Signal) {
    let Some(fs) = fs else { return };
    if let (Some(a), Some(c)) = (fs.available_bytes, fs.capacity_bytes) {
        out.insert(
            bytes,
            Observation {
                available: a as i64,
                capacity: c as i64,
            },
        );
    }
    if let (Some(a), Some(c)) = (fs.inodes_free, fs.inodes) {
        out.insert(
            inodes,
            Observation {
                available: a as i64,
                capacity: c as i64,
            },
        );
    }
}

/// The observations of `summary`: `memory.available` from the node's memory (available =
/// capacity less the working set, usage less inactive file pages; capacity = available +
/// working set), `nodefs.*` from the root directory's file system, `imagefs.*` from the image
/// store's, `pid.available` as `pid_max` less the processes running. A signal whose numbers
/// the summary lacks is left out (its thresholds are then not met, as upstream).
pub fn observe(summary: &Summary) -> Observations {
    let mut out = Observations::new();
    let node = &summary.node;
    if let Some(m) = &node.memory {
        if let (Some(a), Some(ws)) = (m.available_bytes, m.working_set_bytes) {
            out.insert(
                Signal::MemoryAvailable,
                Observation {
                    available: a as i64,
                    capacity: (a + ws) as i64,
                },
            );
        }
    }
    fs_observations(
        &mut out,
        node.fs.as_ref(),
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
    );
    if let Some(rt) = &node.runtime {
        fs_observations(
            &mut out,
            rt.image_fs.as_ref(),
            Signal::ImageFsAvailable,
            Signal::ImageFsInodesFree,
        );
    }
    if let Some(r) = &node.rlimit {
        if let (Some(max), Some(cur)) = (r.maxpid, r.curproc) {
            out.insert(
                Signal::PidAvailable,
                Observation {
                    available: max - cur,
                    capacity: max,
                },
            );
        }
    }
    out
}

/// `n` as upstream prints a BinarySI quantity: a power-of-1024 suffix when exact (`100Mi`,
/// `1Ki`), plain digits otherwise and below 1024 (`1000`, `5000000074`).
pub fn binary_si(n: i64) -> String {
    crate::cluster::node::binary_quantity(n).0
}

/// `n` as upstream prints a DecimalSI quantity: a power-of-1000 suffix when exact (`5k`,
/// `2M`), plain digits otherwise.
pub fn decimal_si(n: i64) -> String {
    if n == 0 {
        return "0".into();
    }
    let mut v = n;
    let mut suffix = "";
    for s in ["k", "M", "G", "T", "P", "E"] {
        if v % 1000 != 0 {
            break;
        }
        v /= 1000;
        suffix = s;
    }
    format!("{v}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::types::{MemoryStats, NodeStats, RlimitStats, RuntimeStats};
    use jiff::Timestamp;

    fn fs(avail: u64, cap: u64, ifree: u64, inodes: u64) -> FsStats {
        FsStats {
            time: Timestamp::UNIX_EPOCH,
            available_bytes: Some(avail),
            capacity_bytes: Some(cap),
            used_bytes: Some(cap - avail),
            inodes_free: Some(ifree),
            inodes: Some(inodes),
            inodes_used: Some(inodes - ifree),
        }
    }

    #[test]
    fn signals_from_the_summary() {
        let summary = Summary {
            node: NodeStats {
                memory: Some(MemoryStats {
                    time: Timestamp::UNIX_EPOCH,
                    available_bytes: Some(3 << 30),
                    usage_bytes: Some(2 << 30),
                    working_set_bytes: Some(1 << 30),
                    rss_bytes: None,
                    page_faults: None,
                    major_page_faults: None,
                }),
                fs: Some(fs(10, 100, 5, 50)),
                runtime: Some(RuntimeStats {
                    image_fs: Some(fs(20, 200, 7, 70)),
                    container_fs: Some(fs(20, 200, 7, 70)),
                }),
                rlimit: Some(RlimitStats {
                    time: Timestamp::UNIX_EPOCH,
                    maxpid: Some(4_194_304),
                    curproc: Some(304),
                }),
                ..NodeStats::default()
            },
            pods: Vec::new(),
        };
        let o = observe(&summary);
        let obs = |a, c| Observation {
            available: a,
            capacity: c,
        };
        assert_eq!(o[&Signal::MemoryAvailable], obs(3 << 30, 4 << 30));
        assert_eq!(o[&Signal::NodeFsAvailable], obs(10, 100));
        assert_eq!(o[&Signal::NodeFsInodesFree], obs(5, 50));
        assert_eq!(o[&Signal::ImageFsAvailable], obs(20, 200));
        assert_eq!(o[&Signal::ImageFsInodesFree], obs(7, 70));
        assert_eq!(o[&Signal::PidAvailable], obs(4_194_000, 4_194_304));
        assert_eq!(o.len(), 6);
        // Nothing measured, nothing observed.
        assert!(observe(&Summary::default()).is_empty());
    }

    #[test]
    fn quantities_print_as_upstreams() {
        assert_eq!(binary_si(100 << 20), "100Mi");
        assert_eq!(binary_si(50 << 20), "50Mi");
        assert_eq!(binary_si(1000), "1000");
        assert_eq!(binary_si(1024), "1Ki");
        assert_eq!(binary_si(5_000_000_074), "5000000074");
        assert_eq!(binary_si(0), "0");
        assert_eq!(decimal_si(5000), "5k");
        assert_eq!(decimal_si(4_194_000), "4194k");
        assert_eq!(decimal_si(1234), "1234");
        assert_eq!(decimal_si(0), "0");
    }
}

//! The signals the runtime sends to containers, and to which of a container's processes.

use std::fmt;

/// A signal to send to a container's processes: a number from 1 to 64, as `kill(2)` and
/// `runc kill` take it. Not `nix::sys::signal::Signal`: an image's `STOPSIGNAL` may name a
/// real-time signal (`37`, as systemd images use SIGRTMIN+3), which that enum cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    /// SIGTERM, the default stop signal.
    pub const SIGTERM: Signal = Signal(15);
    /// SIGKILL, when the grace period ran out.
    pub const SIGKILL: Signal = Signal(9);

    /// The signal with number `number`, if it is one (1 to 64, the real-time ones included).
    pub fn new(number: i32) -> Option<Signal> {
        (1..=64).contains(&number).then_some(Signal(number))
    }

    /// The signal's number.
    pub fn number(self) -> i32 {
        self.0
    }
}

impl From<nix::sys::signal::Signal> for Signal {
    fn from(signal: nix::sys::signal::Signal) -> Signal {
        Signal(signal as i32)
    }
}

/// Shown as its number: what `runc kill` is given.
impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which processes of a container a signal goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillScope {
    /// The container's init process only (its PID 1), which may pass it on.
    Init,
    /// Every process in the container's cgroup (`runc kill --all`): for SIGKILL, so that no
    /// process the init left behind survives. runc finds them by the cgroup, not the PID
    /// namespace, so in a shared (`shareProcessNamespace`) or the host's (`hostPID`) PID
    /// namespace it still reaches only this container's processes (exec'd ones included).
    All,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_numbers_in_range() {
        assert_eq!(Signal::new(15), Some(Signal::SIGTERM));
        assert_eq!(Signal::new(37).map(Signal::number), Some(37));
        assert_eq!(Signal::new(0), None);
        assert_eq!(Signal::new(65), None);
        assert_eq!(
            Signal::from(nix::sys::signal::Signal::SIGKILL),
            Signal::SIGKILL
        );
        assert_eq!(Signal::SIGTERM.to_string(), "15");
    }
}

//! [`lock`]: the workspace's one policy for a poisoned mutex.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, recovering it when a thread panicked while holding it.
///
/// Every mutex of kubenode keeps plain tables (pods, back-offs, probe results, events,
/// services, rule sets) that each update leaves whole: a panic in one pod's worker or one
/// request must not take the whole agent down with it, so the data is used as it is, and the
/// recovery is logged with `what` names the lock.
pub fn lock<'a, T>(mutex: &'a Mutex<T>, what: &str) -> MutexGuard<'a, T> {
    mutex.lock().unwrap_or_else(|poisoned| {
        tracing::error!(
            lock = what,
            "a thread panicked holding the lock; using its data as left"
        );
        poisoned.into_inner()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_recovered_with_its_data() {
        let m = std::sync::Arc::new(Mutex::new(vec![1]));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let mut g = m2.lock().unwrap();
            g.push(2);
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m, "test"), [1, 2]);
    }
}

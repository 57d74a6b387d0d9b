//! Image pull back-off (upstream `EnsureImageExists` in `pkg/kubelet/images`):
//! after a failed pull, further pulls of that image for that pod wait 10 s,
//! doubling to 300 s, counted from the last failure.

use super::{Backoff, Clock};
use std::sync::Arc;
use std::time::Duration;

/// The back-off key of an image for a pod: `<podUID>_<image>`.
pub fn image_backoff_key(pod_uid: &str, image: &str) -> String {
    format!("{pod_uid}_{image}")
}

/// The waiting message while backing off: `Back-off pulling image "busybox"`.
pub fn image_pull_backoff_message(image: &str) -> String {
    format!("Back-off pulling image {image:?}")
}

/// Pull back-off per pod and image.
#[derive(Debug)]
pub struct ImageBackoff {
    table: Backoff,
}

impl ImageBackoff {
    /// A pull back-off (10 s → 300 s).
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            table: Backoff::for_images(clock),
        }
    }

    /// How long to wait before the next pull of `key` may be tried, or
    /// `None` to pull now (status `ImagePullBackOff` while waiting).
    pub fn wait(&self, key: &str) -> Option<Duration> {
        self.table.remaining_since_update(key)
    }

    /// Records a failed pull (status `ErrImagePull`).
    pub fn failed(&mut self, key: &str) {
        let now = self.table.clock().now();
        self.table.next(key, now);
    }

    /// Forgets `key` (the pull succeeded or the pod is gone).
    pub fn forget(&mut self, key: &str) {
        self.table.reset(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::TestClock;

    #[test]
    fn pull_backoff_sequence() {
        let clock = TestClock::at_secs(1_700_000_000);
        let mut b = ImageBackoff::new(Arc::new(clock.clone()));
        let k = image_backoff_key("uid1", "127.0.0.1:5000/missing:v1");
        assert_eq!(k, "uid1_127.0.0.1:5000/missing:v1");
        assert_eq!(b.wait(&k), None);
        let mut waits = vec![];
        for _ in 0..7 {
            b.failed(&k);
            let w = b.wait(&k).unwrap();
            waits.push(w.as_secs());
            clock.advance(w);
            assert_eq!(b.wait(&k), None);
        }
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300]);
        b.forget(&k);
        assert_eq!(b.wait(&k), None);
        assert_eq!(
            image_pull_backoff_message("busybox"),
            "Back-off pulling image \"busybox\""
        );
    }
}

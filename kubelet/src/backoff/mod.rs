//! Restart and image-pull back-off, as the upstream kubelet's
//! `flowcontrol.Backoff` is used by `doBackOff` and the image puller.
//!
//! One [`Backoff`] holds an entry per key (a container of a pod, or an
//! image). The first failure of a key is retried immediately; each further
//! failure doubles the delay from [`CONTAINER_BACKOFF_INITIAL`] up to
//! [`CONTAINER_BACKOFF_MAX`]; an entry not updated for
//! [`BACKOFF_RESET_AFTER`] is forgotten. Time comes from an injectable
//! [`Clock`].

mod clock;
mod container;
mod entry;
mod image;

pub use clock::{Clock, SystemClock, TestClock};
pub use container::{container_backoff_key, crash_loop_message, CrashBackoff, RestartDecision};
pub use entry::Backoff;
pub use image::{image_backoff_key, image_pull_backoff_message, ImageBackoff};

use std::time::Duration;

/// First delay after the second crash of a container (`containerBackOffPeriod`).
pub const CONTAINER_BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// Cap of the container restart delay (`MaxContainerBackOff`).
pub const CONTAINER_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// First delay of an image pull that failed (`imageBackOffPeriod`).
pub const IMAGE_BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// Cap of the image pull delay (`MaxImageBackOff`).
pub const IMAGE_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// An entry not updated for this long is reset (kubelet's `HasExpiredFunc`).
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

//! The store's file helpers are the runtime's (`crate::fsutil`): one crash-safe writer.

pub(crate) use crate::fsutil::{remove_any, sync_dir, write_atomic};

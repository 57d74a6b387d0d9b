//! The CNI protocol itself (spec 0.4.0 – 1.1.0): network configuration lists, results, error
//! replies and `CNI_ARGS`. Shared by the client and the plugin.

mod args;
mod config;
mod error;
mod result;

pub use args::{format_cni_args, parse_cni_args, PodArgs};
pub use config::{ConfigError, NetworkConfigList};
pub use error::{codes, PluginErrorReply};
pub use result::{CniResult, Dns, Interface, IpConfig, ResultError, Route};

/// The spec version this crate speaks by default.
pub const CURRENT_VERSION: &str = "1.1.0";

/// Every spec version this crate can read results of and the plugin can answer in.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Parses `"1.0.0"` into `(1, 0, 0)`; `None` when it is not a dotted triple of numbers.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let triple = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(triple)
}

/// Whether `v` is at least `min` (both dotted triples); false when either does not parse.
pub fn version_at_least(v: &str, min: &str) -> bool {
    matches!((parse_version(v), parse_version(min)), (Some(a), Some(b)) if a >= b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("1.1.0", "1.1.0"));
        assert!(version_at_least("1.10.0", "1.2.0"));
        assert!(!version_at_least("0.4.0", "1.0.0"));
        assert!(!version_at_least("x", "1.0.0"));
        assert_eq!(parse_version("1.0.0.1"), None);
    }
}

//! CNI results and error replies as the client reads a plugin's stdout: `CniResult::from_json`
//! (spec 0.3.0 to 1.1.0), its addresses and gateway, and the error reply. Invariant: no panic;
//! a result rendered in 1.1.0 (`to_json`) reads back as the same result.
#![no_main]

use kubenode_cni::{CniResult, PluginErrorReply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<PluginErrorReply>(data);
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(result) = CniResult::from_json(&value) else {
        return;
    };
    let _ = result.pod_ips();
    let _ = result.gateway();
    for version in ["0.3.1", "0.4.0", "1.0.0"] {
        let _ = CniResult::from_json(&result.to_json(version));
    }
    let again = CniResult::from_json(&result.to_json("1.1.0"))
        .unwrap_or_else(|e| panic!("a rendered result does not read back: {e}"));
    let mut want = result.clone();
    want.cni_version = "1.1.0".into();
    assert_eq!(again, want);
});

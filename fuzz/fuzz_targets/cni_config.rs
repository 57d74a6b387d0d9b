//! CNI network configuration: `.conflist` and `.conf` documents as the client loads them
//! (`NetworkConfigList::from_conflist`/`from_conf`) and the stdin each plugin of the chain
//! gets, and the `kubenode-bridge` plugin's own parse of its stdin (`BridgeConf::parse`).
//! Invariant: no panic; a loaded list's plugin stdin is a JSON object naming the network.
#![no_main]

use kubenode_cni::plugin::BridgeConf;
use kubenode_cni::spec::NetworkConfigList;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let source = Path::new("/etc/cni/net.d/10-fuzz.conflist");
    for list in [
        NetworkConfigList::from_conflist(data, source),
        NetworkConfigList::from_conf(data, source),
    ]
    .into_iter()
    .flatten()
    {
        let prev = serde_json::json!({"cniVersion": list.cni_version, "ips": []});
        for i in 0..list.plugins.len() {
            let _ = list.plugin_type(i);
            let _ = list.has_capability("portMappings");
            for p in [None, Some(&prev)] {
                let stdin = list.plugin_stdin(i, p, &serde_json::Map::new());
                let v: serde_json::Value =
                    serde_json::from_slice(&stdin).expect("plugin stdin is JSON");
                assert_eq!(v["name"].as_str(), Some(list.name.as_str()), "{v}");
            }
        }
    }
    let _ = BridgeConf::parse(data);
});

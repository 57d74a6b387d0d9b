//! Label selectors in their string form (`Selector::parse`, as `kubectl get -l` and the API's
//! `labelSelector` parameter): parse, print, parse again. Invariants: no panic; the printed
//! form parses to the same selector, and it matches the same label sets. One asymmetry is
//! upstream's own and kept: `x in (,)` parses (the set of the empty value) but prints as
//! `x in ()`, which does not parse (an empty set); such selectors skip the round trip.
#![no_main]

use kubenode_kubelet::selector::Selector;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sel) = Selector::parse(text) else {
        return;
    };
    let printed = sel.to_string();
    let empty_value_set = sel
        .requirements()
        .iter()
        .any(|r| !r.values.is_empty() && r.values.iter().all(|v| v.is_empty()));
    if empty_value_set && Selector::parse(&printed).is_err() {
        return;
    }
    let again = Selector::parse(&printed)
        .unwrap_or_else(|e| panic!("{printed:?} (printed from {text:?}) does not parse: {e}"));
    assert_eq!(sel, again, "{text:?} printed as {printed:?}");
    // Label sets made of the selector's own keys and values.
    let mut labels = BTreeMap::new();
    for r in sel.requirements() {
        let _ = sel.matches(&labels);
        for v in r.values.iter() {
            labels.insert(r.key.clone(), v.clone());
            assert_eq!(sel.matches(&labels), again.matches(&labels));
        }
    }
});

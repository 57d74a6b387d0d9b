//! Resource quantities (`Quantity::parse`: requests, limits, `sizeLimit`, eviction
//! thresholds): parse, print, parse again, and the integer views. Invariants: no panic; the
//! printed form parses to the same quantity; comparison agrees with the parsed values.
#![no_main]

use kubenode_kubelet::validation::quantity::{compare, Quantity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(q) = Quantity::parse(text) else {
        return;
    };
    let _ = (q.value(), q.milli_value(), q.is_zero(), q.is_negative());
    let printed = q.to_string();
    let again = Quantity::parse(&printed)
        .unwrap_or_else(|e| panic!("{printed:?} (printed from {text:?}) does not parse: {e}"));
    assert_eq!(q, again, "{text:?} printed as {printed:?}");
    assert_eq!(compare(text, &printed), std::cmp::Ordering::Equal);
});

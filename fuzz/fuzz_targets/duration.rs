//! Go durations (`parse_duration`: kubelet configuration, probe and grace settings) and their
//! printing (`format_duration`, Go's `Duration.String`). Invariants: no panic; a parsed
//! duration prints as text that parses back to the same duration.
#![no_main]

use kubenode_kubelet::duration::{format_duration, human_duration, parse_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(d) = parse_duration(text) else {
        return;
    };
    let printed = format_duration(d);
    let again = parse_duration(&printed)
        .unwrap_or_else(|e| panic!("{printed:?} (printed from {text:?}) does not parse: {e}"));
    assert_eq!(d, again, "{text:?} printed as {printed:?}");
    let _ = human_duration(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
});

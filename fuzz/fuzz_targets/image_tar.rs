//! Layer tars unpacked as a snapshot is made (whiteouts, opaque markers, device nodes,
//! symlinks, hardlinks) and `oci-archive` tars extracted as `kubenode image import` does
//! (`kubenode_runtime::image::untrusted`). The input is an uncompressed tar (the archive
//! extraction also takes gzip). Invariant: nothing is created outside the directory unpacked
//! into; checked after each run over the whole of a private root (see `kubenode_fuzz::jail`).
#![no_main]

use kubenode_fuzz::jail::Jail;
use kubenode_runtime::image::untrusted::{extract_archive, unpack_layer};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static JAIL: OnceLock<Jail> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let jail = JAIL.get_or_init(Jail::enter);

    let dest = jail.fresh_dir("layer");
    let _ = unpack_layer(data, &dest);
    jail.check_confined(&dest, "unpack_layer");
    jail.clear();

    let archive = jail.scratch_file("archive.tar", data);
    let dest = jail.fresh_dir("archive");
    let _ = extract_archive(&archive, &dest);
    jail.check_confined(&dest, "extract_archive");
    jail.clear();
});

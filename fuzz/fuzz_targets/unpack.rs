//! Feeds arbitrary bytes to the layer unpacker as a tar stream (and as a gzip stream).
//! Invariants: no panic, and nothing is ever written outside the layer directory.
//!
//! Run: `cargo xtask fuzz unpack` (see README, "Tests").

#![no_main]

use estiba_runtime::image::{decompress, unpack};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let outer = tempfile::tempdir().unwrap();
    let layer = outer.path().join("layer");
    std::fs::create_dir(&layer).unwrap();
    let limits = unpack::Limits { max_bytes: 1 << 20, max_entries: 2000, max_path: 4096 };
    let media = if data.first() == Some(&0x1f) { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "" };
    if let Ok(reader) = decompress(data, media) {
        let _ = unpack::unpack(reader, &layer, &limits);
    }
    let names: Vec<_> = std::fs::read_dir(outer.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["layer"], "the unpacker wrote outside the layer");
});

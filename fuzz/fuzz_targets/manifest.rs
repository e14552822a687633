//! Feeds `"<Content-Type>\n<manifest body>"` to the registry's manifest and index parser
//! (`Manifest::parse`, what a push goes through), and the first line to the digest, repository
//! name and tag checks.
//! Invariants: no panic (image sizes included); a manifest that parses parses again the same
//! from its own bytes under its own media type.

#![no_main]

use estiba_registry::manifest::Manifest;
use estiba_registry::{names, Digest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (String::from_utf8_lossy(&data[..i]), &data[i + 1..]),
        None => (Default::default(), data),
    };
    let _ = Digest::parse(&head);
    let _ = names::check_repository(&head);
    let _ = names::check_tag(&head);
    let content_type = (!head.is_empty()).then_some(&*head);
    if let Ok(m) = Manifest::parse(body, content_type) {
        std::hint::black_box((m.is_index(), m.image_size(), m.blobs().count()));
        let again = Manifest::parse(body, Some(&m.media_type)).expect("a manifest parses under its own media type");
        assert_eq!(format!("{m:?}"), format!("{again:?}"));
    }
});

//! Feeds bytes to what ECS Exec and temporary credentials read from outside: the Session
//! Manager data channel's client message decoder (`ClientMessage::decode`), the node stream's
//! frame reader (`exec::Frame::take`), ExecuteCommand's command splitter (`split_command`),
//! and the session token opener (`session::Issuer::open`).
//! Invariants: no panic; a client message that decodes encodes back to the same bytes up to
//! its declared length; frames taken (but errors) are written back as the bytes they came from; a command
//! that splits joins into one that splits the same; no token but an issued one opens.

#![no_main]

use estiba_api::session::{join_command, split_command, ClientMessage};
use estiba_auth::session::Issuer;
use estiba_core::exec::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // (A type that is not ASCII may be cut inside a character when written back.)
    if let Some(m) = ClientMessage::decode(data).ok().filter(|m| m.message_type.is_ascii()) {
        let again = ClientMessage::decode(&m.encode()).expect("an encoded message decodes");
        assert_eq!(format!("{m:?}"), format!("{again:?}"));
    }
    let mut buf = data.to_vec();
    let mut taken = Vec::new();
    let mut exact = true;
    while let Ok(Some(f)) = Frame::take(&mut buf) {
        // An error's text is read lossily: not always the same bytes.
        exact &= !matches!(f, Frame::Error(_));
        taken.extend_from_slice(&f.encode());
    }
    assert!(!exact || data.starts_with(&taken), "frames are written back as they came");
    let text = String::from_utf8_lossy(data);
    if let Some(args) = split_command(&text) {
        assert_eq!(split_command(&join_command(&args)).as_ref(), Some(&args));
    }
    assert!(Issuer::new(&[7; 32]).open(&text).is_none());
});

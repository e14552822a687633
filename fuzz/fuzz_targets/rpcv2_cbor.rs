//! Feeds `"<service> <Operation>\n<CBOR body>"` to the Smithy RPC v2 CBOR decoder
//! (`cbor::to_value` with the operation's input shape), then the typed input of the
//! operations `estiba_fuzz::decode_typed` lists.
//! Invariants: no panic; a decoded input encoded back to CBOR (`cbor::from_value`) decodes to
//! the same input.

#![no_main]

use estiba_api::protocol::cbor;
use estiba_fuzz::{decode_typed, target, Body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (model, op, body) = target(data);
    let Ok(value) = cbor::to_value(model, op.input, body) else { return };
    let written = cbor::from_value(model, op.input, &value);
    let again = cbor::to_value(model, op.input, &written)
        .unwrap_or_else(|e| panic!("the codec's own CBOR for {value} does not decode: {e}"));
    assert_eq!(value, again, "a CBOR input changed on a round trip");
    let _ = decode_typed(model, op, Body::Value(value));
});

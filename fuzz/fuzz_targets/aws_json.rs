//! Feeds `"<service> <Operation>\n<JSON body>"` to the AWS JSON 1.0/1.1 decoder
//! (`estiba_api::protocol::decode_styled`, what the front door calls for a JSON request),
//! into the typed input of the operations `estiba_fuzz::decode_typed` lists.
//! Invariants: no panic; an input that decodes decodes to the same value when written as RPC v2
//! CBOR or as Query parameters by the codecs.

#![no_main]

use estiba_fuzz::{decode_typed, target, Body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (model, op, body) = target(data);
    let _ = decode_typed(model, op, Body::Json(body));
});

//! Feeds `"<service> <Operation>\n<form body>"` to the AWS Query decoder (EC2's flavour for
//! EC2): `Params::parse`, `query::to_value` with the operation's input shape, then the typed
//! input of the operations `estiba_fuzz::decode_typed` lists.
//! Invariants: no panic; the parameters the codec writes for a decoded input
//! (`query::to_params`) decode to the same input, as far as Query can say it
//! (`estiba_fuzz::query_form`: no empty structures, timestamps in milliseconds).

#![no_main]

use estiba_api::protocol::query::{self, Flavour, Params};
use estiba_fuzz::{decode_typed, query_form, target, Body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (model, op, body) = target(data);
    let params = Params::parse(body);
    let flavour = Flavour::of(model);
    let Ok(value) = query::to_value(model, op.input, &params, flavour) else { return };
    let written = query::to_params(model, op, &value, flavour);
    let again = query::to_value(model, op.input, &written, flavour)
        .unwrap_or_else(|e| panic!("the codec's own parameters {written:?} do not decode: {e}"));
    let (value, again) = (query_form(model, op.input, &value, flavour), query_form(model, op.input, &again, flavour));
    assert_eq!(value, again, "a Query input changed on a round trip through {written:?}");
    let _ = decode_typed(model, op, Body::Value(value));
});

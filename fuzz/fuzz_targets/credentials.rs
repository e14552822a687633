//! Feeds text to the credentials-file parser (`Keyring::parse`) and to the IAM-style policy
//! parser (`Policy::parse`), and evaluates what parses.
//! Invariants: no panic; a policy's decision for an action and resource is the same when the
//! policy is parsed again from the same text.

#![no_main]

use std::path::Path;

use estiba_auth::{Keyring, Policy};
use libfuzzer_sys::fuzz_target;

const PROBES: &[(&str, &str)] = &[
    ("ecs:RunTask", "arn:aws:ecs:us-east-1:000000000000:cluster/default"),
    ("ecs:ListClusters", "*"),
    ("logs:PutLogEvents", "arn:aws:logs:us-east-1:000000000000:log-group:/ecs/web:*"),
    ("elasticloadbalancing:CreateRule", "arn:aws:elasticloadbalancing:us-east-1:000000000000:listener/app/a/1/2"),
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // `policy_file` settings are looked for in a folder that does not exist.
    if let Ok(keys) = Keyring::parse(&text, Path::new("/nonexistent/estiba-fuzz")) {
        std::hint::black_box(keys.len());
    }
    if let Ok(policy) = Policy::parse(&text) {
        let again = Policy::parse(&text).expect("the same text parses twice");
        for (action, resource) in PROBES {
            assert_eq!(policy.evaluate(action, resource), again.evaluate(action, resource));
        }
    }
});

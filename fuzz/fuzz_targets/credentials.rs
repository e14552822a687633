//! Feeds text to the credentials-file parser (`Keyring::parse`) and to the IAM-style policy
//! parser (`Policy::parse`), and evaluates what parses.
//! Invariants: no panic; a policy's decision for an action and resource is the same when the
//! policy is parsed again from the same text; a key bound to it decides as the policy does, a
//! session policy equal to it changes nothing, and a deny-all session policy allows nothing.

#![no_main]

use std::path::Path;

use estiba_auth::{Access, AssumedRole, Credential, Decision, Keyring, Policy};
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
        let key = |session: Option<Policy>| Credential {
            access_key: "ASIAFUZZ".into(),
            secret: String::new(),
            account: "000000000000".into(),
            user: "fuzz".into(),
            session_token: None,
            expires: None,
            access: Access::Policy(policy.clone()),
            role: Some(AssumedRole {
                role_arn: "arn:aws:iam::000000000000:role/fuzz".into(),
                role_name: "fuzz".into(),
                session_name: "s".into(),
                role_id: "AROAFUZZ".into(),
                session_policy: session,
            }),
        };
        let (plain, same, none) = (key(None), key(Some(again.clone())), key(Some(Policy::deny_all())));
        for (action, resource) in PROBES {
            let d = policy.evaluate(action, resource);
            assert_eq!(d, again.evaluate(action, resource));
            let (service, operation) = action.split_once(':').unwrap();
            assert_eq!(plain.decide(service, operation, resource), d);
            assert_eq!(same.decide(service, operation, resource), d);
            assert_ne!(none.decide(service, operation, resource), Decision::Allow);
        }
    }
});

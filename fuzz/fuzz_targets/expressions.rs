//! Feeds `"<kind>\n<text>\n<message>..."` to the small languages estiba parses from API
//! input: CloudWatch Logs filter patterns (`pattern`), Logs Insights queries (`insights`),
//! CloudWatch metric math (`math`), ELBv2 rule conditions as JSON (`conditions`) and health
//! check matchers (`matcher`). The remaining lines are log messages to match and run over.
//! Invariants: no panic; a message a filter pattern matches holds every substring the pattern
//! says it requires (storage blocks are skipped on that promise).

#![no_main]

use std::collections::BTreeMap;

use estiba_core::logs_insights::{InsightsEvent, Query};
use estiba_core::logs_pattern::FilterPattern;
use estiba_core::metric_math::{self, Series};
use libfuzzer_sys::fuzz_target;

const MESSAGES: &[&str] = &[
    "ERROR Exiting with ERRORCODE: -1",
    r#"{"eventType": "UpdateTrail", "latency": 120, "user": {"id": 3, "roles": ["a", "b"]}, "ok": true}"#,
    r#"127.0.0.1 - frank [10/Oct/2000:13:25:15 -0700] "GET /index.html HTTP/1.0" 404 1534"#,
    "",
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let kind = lines.next().unwrap_or("");
    let source = lines.next().unwrap_or("");
    let extra: Vec<&str> = lines.next().map(|r| r.split('\n').collect()).unwrap_or_default();
    let messages = || MESSAGES.iter().copied().chain(extra.iter().copied());
    match kind {
        "pattern" => {
            let Ok(p) = FilterPattern::parse(source) else { return };
            let required = p.required_substrings();
            for m in messages() {
                if p.matches(m) {
                    for r in &required {
                        assert!(m.contains(r.as_str()), "{source:?} matches {m:?}, which lacks {r:?}");
                    }
                }
                for selector in ["$.latency", "$.user.id", "$3", "$status_code"] {
                    std::hint::black_box(p.value_of(m, selector));
                }
            }
        }
        "insights" => {
            let Ok(q) = Query::parse(source) else { return };
            std::hint::black_box(q.required_substrings());
            let mut runner = q.runner();
            for (i, m) in messages().enumerate() {
                let t = 1_700_000_000_000 + i as i64 * 1000;
                runner.push(&InsightsEvent {
                    timestamp: t,
                    ingestion_time: t,
                    message: m,
                    log_stream: "web/app/1",
                    log_group: "/ecs/web",
                });
            }
            std::hint::black_box(runner.finish());
        }
        "math" => {
            let Ok(e) = metric_math::parse(source) else { return };
            let mut ids = Vec::new();
            metric_math::references(&e, &mut ids);
            let mut env = BTreeMap::new();
            for (n, id) in ["m1", "m2", "e1"].into_iter().enumerate() {
                let mut s = Series::new();
                for i in 0..5 {
                    s.push(60_000 * (i + n as i64), (i as f64 - 2.0) * (n as f64 + 0.5));
                }
                env.insert(id.to_owned(), s);
            }
            std::hint::black_box((metric_math::uses_metrics(&e), metric_math::evaluate(&e, &env).is_ok()));
        }
        "conditions" => {
            let Ok(conditions) = serde_json::from_str::<Vec<estiba_api::elbv2::RuleCondition>>(source) else { return };
            if let Ok(stored) = estiba_core::elbv2_rules::check_conditions(&conditions) {
                // What was stored is accepted again (a ModifyRule that changes nothing).
                estiba_core::elbv2_rules::check_conditions(&stored).expect("stored conditions check again");
            }
        }
        "matcher" => {
            let _ = estiba_core::elbv2_rules::check_matcher(source, 499);
        }
        _ => {}
    }
});

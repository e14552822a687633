//! The `awslogs` log driver's rules: its options as Docker's awslogs driver and ECS take them
//! (which keys exist, `mode` and `max-buffer-size`, the Fargate stream prefix), the stream a
//! container's output goes to (`<prefix>/<container name>/<task id>`), the stopped reason
//! ECS gives when the log group does not exist, and `awslogs-datetime-format` turned into the
//! regular expression that starts a multi-line event (Docker's strftime subset).
//!
//! Messages follow Docker's (`unknown log opt 'x' for awslogs log driver`), which is what ECS
//! reports when the container's logger cannot start, and ECS's own where it checks at
//! registration (Fargate's stream prefix).

use std::collections::BTreeMap;

use estiba_api::ecs::{ContainerDefinition, LogDriver};

use crate::{bail, Result};

pub const GROUP: &str = "awslogs-group";
pub const REGION: &str = "awslogs-region";
pub const STREAM_PREFIX: &str = "awslogs-stream-prefix";
pub const CREATE_GROUP: &str = "awslogs-create-group";
pub const DATETIME_FORMAT: &str = "awslogs-datetime-format";
pub const MULTILINE_PATTERN: &str = "awslogs-multiline-pattern";
pub const MODE: &str = "mode";
pub const MAX_BUFFER_SIZE: &str = "max-buffer-size";

/// Every option the driver takes: Docker's awslogs keys, the options of every Docker log
/// driver (`mode`, `max-buffer-size`) and ECS's `awslogs-stream-prefix`. Those estiba has no
/// use for (endpoints, credentials, flush tuning, `awslogs-format`) are accepted and ignored.
const KNOWN: &[&str] = &[
    GROUP,
    REGION,
    STREAM_PREFIX,
    CREATE_GROUP,
    DATETIME_FORMAT,
    MULTILINE_PATTERN,
    MODE,
    MAX_BUFFER_SIZE,
    "awslogs-stream",
    "awslogs-create-stream",
    "awslogs-endpoint",
    "awslogs-credentials-endpoint",
    "awslogs-force-flush-interval-seconds",
    "awslogs-max-buffered-events",
    "awslogs-format",
    "tag",
];

/// ECS's default for `max-buffer-size` in non-blocking mode.
pub const DEFAULT_MAX_BUFFER: u64 = 10 << 20;

/// How a container's output waits for the shipper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Nothing is dropped: lines wait on disk (rotation keeps what is not shipped yet).
    Blocking,
    /// At most `max-buffer-size` bytes wait; beyond, the oldest unshipped lines are dropped.
    NonBlocking,
}

/// A container's awslogs configuration, checked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsLogs {
    pub group: String,
    /// `None`: the task's region.
    pub region: Option<String>,
    pub stream_prefix: Option<String>,
    pub create_group: bool,
    pub mode: Mode,
    /// Bytes of unshipped lines a non-blocking container may have waiting.
    pub max_buffer_size: u64,
    /// The regular expression that, found in a line, starts an event: from
    /// `awslogs-multiline-pattern` as is, or `awslogs-datetime-format` anchored at the start.
    pub multiline: Option<String>,
}

/// The container's awslogs configuration, `None` when it uses another driver (or none).
pub fn of(def: &ContainerDefinition) -> std::result::Result<Option<AwsLogs>, String> {
    match &def.log_configuration {
        Some(lc) if lc.log_driver == LogDriver::Awslogs => {
            parse(lc.options.as_ref().unwrap_or(&BTreeMap::new())).map(Some)
        }
        _ => Ok(None),
    }
}

/// Parses the options, with Docker's messages for what its awslogs driver refuses. `mode`
/// defaults to non-blocking (ECS's default since June 2025).
pub fn parse(opts: &BTreeMap<String, String>) -> std::result::Result<AwsLogs, String> {
    if let Some(k) = opts.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("unknown log opt '{k}' for awslogs log driver"));
    }
    let group = opts.get(GROUP).cloned().unwrap_or_default();
    if group.is_empty() {
        return Err(format!("must specify a value for log opt '{GROUP}'"));
    }
    let create_group = match opts.get(CREATE_GROUP).map(String::as_str) {
        None | Some("") => false,
        Some(v) => parse_bool(v).ok_or_else(|| {
            format!("must specify valid value for log opt '{CREATE_GROUP}': strconv.ParseBool: parsing \"{v}\": invalid syntax")
        })?,
    };
    let mode = match opts.get(MODE).map(String::as_str) {
        None | Some("") | Some("non-blocking") => Mode::NonBlocking,
        Some("blocking") => Mode::Blocking,
        Some(m) => return Err(format!("logger: logging mode not supported: {m}")),
    };
    let max_buffer_size = match opts.get(MAX_BUFFER_SIZE) {
        None => DEFAULT_MAX_BUFFER,
        Some(s) => {
            if mode != Mode::NonBlocking || opts.get(MODE).is_none() {
                return Err("logger: max-buffer-size option is only supported with 'mode=non-blocking'".into());
            }
            ram_in_bytes(s).ok_or_else(|| format!("error parsing option max-buffer-size: invalid size: '{s}'"))?
        }
    };
    let (df, mp) = (opts.get(DATETIME_FORMAT), opts.get(MULTILINE_PATTERN));
    let multiline = match (df, mp) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "you cannot configure log opt '{DATETIME_FORMAT}' and '{MULTILINE_PATTERN}' at the same time"
            ))
        }
        (Some(f), None) if !f.is_empty() => Some(format!("^{}", datetime_pattern(f))),
        // Docker anchors a datetime format at the line's start; a pattern matches anywhere.
        (None, Some(p)) if !p.is_empty() => Some(p.clone()),
        _ => None,
    };
    Ok(AwsLogs {
        group,
        region: opts.get(REGION).filter(|r| !r.is_empty()).cloned(),
        stream_prefix: opts.get(STREAM_PREFIX).filter(|p| !p.is_empty()).cloned(),
        create_group,
        mode,
        max_buffer_size,
        multiline,
    })
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Docker's `units.RAMInBytes`: `10m`, `1MB`, `512k`, `1.5g`, `2048` (binary multiples).
pub fn ram_in_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(num_end);
    let n: f64 = num.parse().ok()?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return None,
    };
    Some((n * mult as f64) as u64)
}

/// Checks a container's awslogs options at RegisterTaskDefinition: Fargate's stream prefix
/// (ECS's message) and what the driver itself would refuse at start.
pub fn validate(def: &ContainerDefinition, fargate: bool) -> Result<()> {
    let Some(lc) = def.log_configuration.as_ref().filter(|l| l.log_driver == LogDriver::Awslogs) else {
        return Ok(());
    };
    let opts = lc.options.clone().unwrap_or_default();
    if fargate && opts.get(STREAM_PREFIX).is_none_or(|p| p.is_empty()) {
        bail!(client, "Fargate requires log configuration options to include awslogs-stream-prefix to support log driver awslogs.");
    }
    if let Err(msg) = parse(&opts) {
        bail!(
            client,
            "Log configuration options for container '{}' are not valid: {msg}",
            def.name.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// The stream a container's output goes to: `<prefix>/<container name>/<task id>`, or, with
/// no prefix (EC2 only), the container's runtime id as Docker names it.
pub fn stream_name(cfg: &AwsLogs, container: &str, task_id: &str, runtime_id: &str) -> String {
    match &cfg.stream_prefix {
        Some(p) => format!("{p}/{container}/{task_id}"),
        None => runtime_id.to_owned(),
    }
}

/// The stopped reason of a task whose container's log group does not exist (Fargate's).
pub fn missing_group_reason() -> String {
    "ResourceInitializationError: failed to validate logger args: create stream has been retried 1 times: failed to create Cloudwatch log stream: ResourceNotFoundException: The specified log group does not exist. : exit status 1".into()
}

/// The stopped reason of a task whose container's logger options are refused at start.
pub fn invalid_options_reason(msg: &str) -> String {
    format!("ResourceInitializationError: failed to validate logger args: {msg} : exit status 1")
}

/// `awslogs-datetime-format` (strftime) as a regular expression, as Docker's driver converts
/// it; anything that is not a known directive is kept as is (so it is itself a regex).
pub fn datetime_pattern(format: &str) -> String {
    let mut out = String::with_capacity(format.len() * 4);
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(&d) = chars.peek() else {
            out.push('%');
            break;
        };
        let rep = match d {
            'a' => r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)",
            'A' => r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)",
            'w' => r"[0-6]",
            'd' => r"(?:0[1-9]|[1,2][0-9]|3[0,1])",
            'e' => r"(?: [1-9]|[1,2][0-9]|3[0,1])",
            'b' => r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)",
            'B' => r"(?:January|February|March|April|May|June|July|August|September|October|November|December)",
            'm' => r"(?:0[1-9]|1[0-2])",
            'Y' => r"\d{4}",
            'y' => r"\d{2}",
            'H' => r"(?:[0,1][0-9]|2[0-3])",
            'I' => r"(?:0[0-9]|1[0-2])",
            'p' => r"[A,P]M",
            'M' => r"[0-5][0-9]",
            'S' => r"[0-5][0-9]",
            'f' => r"\d{6}",
            'z' => r"[+-]\d{4}",
            'Z' => r"[A-Z]{1,4}T",
            'j' => r"(?:0[0-9][1-9]|[1,2][0-9][0-9]|3[0-5][0-9]|36[0-6])",
            'L' => r"\.\d{3}",
            '%' => "%",
            _ => {
                out.push('%');
                continue;
            }
        };
        chars.next();
        out.push_str(rep);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use estiba_api::ecs::LogConfiguration;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn options_and_defaults() {
        let c = parse(&opts(&[(GROUP, "/ecs/web"), (STREAM_PREFIX, "ecs")])).unwrap();
        assert_eq!(c.group, "/ecs/web");
        assert_eq!((c.mode, c.max_buffer_size, c.create_group), (Mode::NonBlocking, 10 << 20, false));
        assert_eq!(c.region, None);
        let c =
            parse(&opts(&[(GROUP, "g"), (CREATE_GROUP, "true"), (MODE, "blocking"), (REGION, "eu-west-1")])).unwrap();
        assert_eq!((c.mode, c.create_group, c.region.as_deref()), (Mode::Blocking, true, Some("eu-west-1")));
        let c = parse(&opts(&[(GROUP, "g"), (MODE, "non-blocking"), (MAX_BUFFER_SIZE, "25m")])).unwrap();
        assert_eq!(c.max_buffer_size, 25 << 20);
    }

    #[test]
    fn refused_options_say_what_docker_says() {
        let e = |kv: &[(&str, &str)]| parse(&opts(kv)).unwrap_err();
        assert_eq!(
            e(&[(GROUP, "g"), ("awslogs-colour", "x")]),
            "unknown log opt 'awslogs-colour' for awslogs log driver"
        );
        assert_eq!(e(&[(STREAM_PREFIX, "p")]), "must specify a value for log opt 'awslogs-group'");
        assert_eq!(e(&[(GROUP, "g"), (MODE, "sometimes")]), "logger: logging mode not supported: sometimes");
        assert_eq!(
            e(&[(GROUP, "g"), (MODE, "blocking"), (MAX_BUFFER_SIZE, "1m")]),
            "logger: max-buffer-size option is only supported with 'mode=non-blocking'"
        );
        assert_eq!(
            e(&[(GROUP, "g"), (MODE, "non-blocking"), (MAX_BUFFER_SIZE, "lots")]),
            "error parsing option max-buffer-size: invalid size: 'lots'"
        );
        assert!(e(&[(GROUP, "g"), (CREATE_GROUP, "yes")]).starts_with("must specify valid value for log opt"));
        assert!(e(&[(GROUP, "g"), (DATETIME_FORMAT, "%Y"), (MULTILINE_PATTERN, "x")]).contains("at the same time"));
    }

    #[test]
    fn sizes() {
        assert_eq!(ram_in_bytes("10m"), Some(10 << 20));
        assert_eq!(ram_in_bytes("1MB"), Some(1 << 20));
        assert_eq!(ram_in_bytes("512KiB"), Some(512 << 10));
        assert_eq!(ram_in_bytes("2048"), Some(2048));
        assert_eq!(ram_in_bytes("1.5g"), Some(3 << 29));
        assert_eq!(ram_in_bytes("ten"), None);
        assert_eq!(ram_in_bytes("10x"), None);
    }

    #[test]
    fn fargate_needs_a_stream_prefix() {
        let def = |o: &[(&str, &str)]| ContainerDefinition {
            name: Some("web".into()),
            log_configuration: Some(LogConfiguration {
                log_driver: LogDriver::Awslogs,
                options: Some(opts(o)),
                secret_options: None,
            }),
            ..Default::default()
        };
        let e = validate(&def(&[(GROUP, "g")]), true).unwrap_err();
        assert_eq!(
            e.message,
            "Fargate requires log configuration options to include awslogs-stream-prefix to support log driver awslogs."
        );
        validate(&def(&[(GROUP, "g")]), false).unwrap();
        validate(&def(&[(GROUP, "g"), (STREAM_PREFIX, "ecs")]), true).unwrap();
        let e = validate(&def(&[(GROUP, "g"), (STREAM_PREFIX, "ecs"), (MODE, "x")]), true).unwrap_err();
        assert!(e.message.contains("logging mode not supported: x"), "{}", e.message);
    }

    #[test]
    fn stream_names() {
        let c = parse(&opts(&[(GROUP, "g"), (STREAM_PREFIX, "ecs")])).unwrap();
        assert_eq!(stream_name(&c, "web", "0123abcd", "rt"), "ecs/web/0123abcd");
        let c = parse(&opts(&[(GROUP, "g")])).unwrap();
        assert_eq!(stream_name(&c, "web", "0123abcd", "rt-id"), "rt-id");
    }

    #[test]
    fn datetime_formats_become_patterns() {
        assert_eq!(datetime_pattern("%Y-%m-%d"), r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[1,2][0-9]|3[0,1])");
        assert_eq!(datetime_pattern("[%b %d, %Y %H:%M:%S]"), "[(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (?:0[1-9]|[1,2][0-9]|3[0,1]), \\d{4} (?:[0,1][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]]");
        assert_eq!(datetime_pattern("100%% %q"), "100% %q");
        let c = parse(&opts(&[(GROUP, "g"), (DATETIME_FORMAT, "%H:%M")])).unwrap();
        assert_eq!(c.multiline.as_deref(), Some("^(?:[0,1][0-9]|2[0-3]):[0-5][0-9]"));
        let c = parse(&opts(&[(GROUP, "g"), (MULTILINE_PATTERN, "INFO|ERROR")])).unwrap();
        assert_eq!(c.multiline.as_deref(), Some("INFO|ERROR"));
    }
}

//! ISO 8601 timestamps, as Query and EC2 send and answer them (`2024-05-01T12:00:00.000Z`).
//! JSON and CBOR carry seconds since the epoch; the generated types hold those (`f64`).

use std::time::{Duration, UNIX_EPOCH};

/// The last millisecond RFC 3339 can write (`9999-12-31T23:59:59.999Z`).
const MAX_MILLIS: u64 = 253_402_300_799_999;

/// `1714564800.5` → `2024-05-01T12:00:00.500Z`. Times before 1970 are written as the epoch,
/// times after year 9999 (which RFC 3339 cannot write) as its last millisecond.
pub fn format_iso8601(secs: f64) -> String {
    let millis = if secs.is_finite() && secs > 0.0 { ((secs * 1000.0).round() as u64).min(MAX_MILLIS) } else { 0 };
    let t = UNIX_EPOCH + Duration::from_millis(millis);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses `2024-05-01T12:00:00Z`, with or without fractional seconds, with `Z` or a
/// `±HH:MM` offset; a plain number is taken as seconds since the epoch, as AWS accepts.
pub fn parse_iso8601(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<f64>() {
        return n.is_finite().then_some(n);
    }
    // humantime reads UTC only: take a numeric offset off and apply it after.
    let split = s.len().checked_sub(6).filter(|&i| s.is_char_boundary(i));
    let (base, offset) = match split.map(|i| s.split_at(i)) {
        Some((b, o)) if (o.starts_with('+') || o.starts_with('-')) && o.as_bytes()[3] == b':' && b.contains('T') => {
            let h: i64 = o[1..3].parse().ok()?;
            let m: i64 = o[4..6].parse().ok()?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            (format!("{b}Z"), sign * (h * 3600 + m * 60))
        }
        _ => (s.to_owned(), 0),
    };
    let local = humantime::parse_rfc3339_weak(&base).ok()?;
    let shift = std::time::Duration::from_secs(offset.unsigned_abs());
    let t = if offset >= 0 { local.checked_sub(shift)? } else { local.checked_add(shift)? };
    // The seconds as the decimal the text wrote, read as JSON reads a number: `as_secs_f64`
    // adds the fraction to the whole seconds in floating point, which can land one unit off
    // (`…:02.647Z` gave 2.6470000000000002 where the JSON number 2.647 is 2.647; found by the
    // aws_json fuzz target's Query round trip).
    let (d, sign) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d, 1.0),
        Err(e) => (e.duration(), -1.0),
    };
    let secs: f64 = format!("{}.{:09}", d.as_secs(), d.subsec_nanos()).parse().ok()?;
    Some(sign * secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_both_ways() {
        assert_eq!(format_iso8601(1714564800.5), "2024-05-01T12:00:00.500Z");
        // Found by the rpcv2_cbor fuzz target: a year past 9999 made humantime's Display fail,
        // and `to_string` panicked.
        assert_eq!(format_iso8601(1e12), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_iso8601(f64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_iso8601(-5.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_iso8601("2024-05-01T12:00:00.500Z"), Some(1714564800.5));
        assert_eq!(parse_iso8601("2024-05-01T12:00:00Z"), Some(1714564800.0));
        assert_eq!(parse_iso8601("2024-05-01T14:00:00+02:00"), Some(1714564800.0));
        assert_eq!(parse_iso8601("2024-05-01T11:30:00-00:30"), Some(1714564800.0));
        assert_eq!(parse_iso8601("1714564800"), Some(1714564800.0));
        // As the JSON numbers they were written from (the aws_json fuzz target's find).
        assert_eq!(parse_iso8601("1970-01-01T00:00:02.647Z"), Some(2.647));
        assert_eq!(parse_iso8601(&format_iso8601(2.647)), Some(2.647));
        assert_eq!(parse_iso8601("2024-05-01T14:00:00.123+02:00"), Some(1714564800.123));
        assert_eq!(parse_iso8601("yesterday"), None);
        // Caller input: a multi-byte character where an offset would start must not panic.
        assert_eq!(parse_iso8601("aé12345"), None);
        assert_eq!(parse_iso8601("2024-05-01T12:00:00é:00"), None);
        let now = std::time::SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        let n = (now * 1000.0).round() / 1000.0;
        assert_eq!(parse_iso8601(&format_iso8601(n)), Some(n));
    }
}

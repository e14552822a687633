//! SigV4's ISO 8601 basic timestamps (`20150830T123600Z`) to and from Unix seconds, and
//! RFC 3339 (`2026-12-02T16:00:00Z`) for credential expiry, without a date library.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

fn num(s: &str) -> Option<i64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

fn to_secs(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    let ok = (1..=12).contains(&mo) && (1..=31).contains(&d) && h < 24 && mi < 60 && s < 61;
    ok.then(|| days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s)
}

/// `YYYYMMDDTHHMMSSZ` → Unix seconds.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    if s.len() != 16 || !s.is_ascii() || &s[8..9] != "T" || &s[15..] != "Z" {
        return None;
    }
    to_secs(num(&s[0..4])?, num(&s[4..6])?, num(&s[6..8])?, num(&s[9..11])?, num(&s[11..13])?, num(&s[13..15])?)
}

/// Unix seconds → `YYYYMMDDTHHMMSSZ`.
pub fn amz_date(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86400));
    let r = t.rem_euclid(86400);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", r / 3600, r / 60 % 60, r % 60)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (optional fraction) → Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let time = time.split('.').next()?;
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    let (&[y, mo, da], &[h, mi, se]) = (&d[..], &t[..]) else { return None };
    to_secs(num(y)?, num(mo)?, num(da)?, num(h)?, num(mi)?, num(se)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1440938160));
        assert_eq!(amz_date(1440938160), "20150830T123600Z");
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(amz_date(951782400), "20000229T000000Z");
        assert_eq!(parse_rfc3339("2015-08-30T12:36:00Z"), Some(1440938160));
        assert_eq!(parse_rfc3339("2015-08-30T12:36:00.123Z"), Some(1440938160));
        for bad in ["2015083T123600Z", "20151330T123600Z", "20150830 123600Z", "20150830T123600", "2015+830T123600Z"] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
        for t in [0i64, 1, 86399, 86400, 1_700_000_000, 4_102_444_800] {
            assert_eq!(parse_amz_date(&amz_date(t)), Some(t));
        }
    }
}

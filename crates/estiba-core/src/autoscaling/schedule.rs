//! Scheduled actions' `Schedule` expressions: `at(...)`, `rate(...)` and `cron(...)`, in a
//! `Timezone`, and the next time one runs.
//!
//! Follows the Application Auto Scaling User Guide, "Scheduled scaling" and the
//! `PutScheduledAction` API reference (`at(yyyy-mm-ddThh:mm:ss)`, `rate(value unit)` with
//! minute(s) / hour(s) / day(s), `cron(fields)` with six fields, `Timezone` an IANA name, UTC
//! by default), and, for the cron fields and their wildcards (`, - * / ? L W #`), the Amazon
//! EventBridge User Guide's "Cron expressions reference". Time zones are chrono-tz's copy of
//! the IANA database.
//!
//! Local times that do not exist (a daylight-saving gap) are skipped; ambiguous ones (the hour
//! repeated when clocks go back) run once, at the earlier instant.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::Now;

/// A parsed `Schedule`.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// `at(2026-12-01T10:00:00)`: once, at this local time.
    At(NaiveDateTime),
    /// `rate(5 minutes)`: every so many seconds from the action's start.
    Rate { seconds: i64 },
    /// `cron(0 18 ? * MON-FRI *)`.
    Cron(Box<Cron>),
}

/// Why a `Schedule` or `Timezone` was refused; the message is for the ValidationException.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleError(pub String);

impl std::fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid(expr: &str, why: impl std::fmt::Display) -> ScheduleError {
    ScheduleError(format!("Schedule expression {expr} is not valid: {why}"))
}

/// A time zone: an IANA name, or UTC when none is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone(#[serde(with = "tz_name")] pub Tz);

mod tz_name {
    use super::*;
    pub fn serialize<S: serde::Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(tz.name())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
        let name = String::deserialize(d)?;
        Tz::from_str(&name).map_err(serde::de::Error::custom)
    }
}

impl Zone {
    pub const UTC: Zone = Zone(Tz::UTC);

    /// `Timezone` as PutScheduledAction takes it: an IANA name (`America/New_York`,
    /// `Etc/GMT+9`, `UTC`); `None` is UTC.
    pub fn parse(name: Option<&str>) -> Result<Zone, ScheduleError> {
        match name {
            None => Ok(Zone::UTC),
            Some(n) => Tz::from_str(n)
                .map(Zone)
                .map_err(|_| ScheduleError(format!("Time zone {n} is not a valid IANA time zone name."))),
        }
    }

    /// The instant of a local time, the earlier one if the time is repeated; `None` in a gap.
    fn instant(self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        self.0.from_local_datetime(&local).earliest().map(|t| t.with_timezone(&Utc))
    }

    fn local(self, t: DateTime<Utc>) -> NaiveDateTime {
        t.with_timezone(&self.0).naive_local()
    }
}

impl Schedule {
    /// Parses `at(...)`, `rate(...)` or `cron(...)`.
    pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
        let inner = |prefix: &str| expr.strip_prefix(prefix).and_then(|r| r.strip_suffix(')'));
        if let Some(body) = inner("at(") {
            let t = NaiveDateTime::parse_from_str(body, "%Y-%m-%dT%H:%M:%S")
                .map_err(|_| invalid(expr, "at() takes yyyy-mm-ddThh:mm:ss"))?;
            return Ok(Schedule::At(t));
        }
        if let Some(body) = inner("rate(") {
            let (value, unit) = body.split_once(' ').ok_or_else(|| invalid(expr, "rate() takes a value and a unit"))?;
            let value: i64 = value.parse().map_err(|_| invalid(expr, "the rate's value must be a positive integer"))?;
            if value < 1 {
                return Err(invalid(expr, "the rate's value must be a positive integer"));
            }
            let unit_seconds = match (unit, value == 1) {
                ("minute", true) | ("minutes", false) => 60,
                ("hour", true) | ("hours", false) => 3600,
                ("day", true) | ("days", false) => 86_400,
                _ => {
                    return Err(invalid(
                        expr,
                        "the unit must be minute, hour or day for a value of 1, and minutes, hours or days otherwise",
                    ));
                }
            };
            return Ok(Schedule::Rate { seconds: value * unit_seconds });
        }
        if let Some(body) = inner("cron(") {
            return Ok(Schedule::Cron(Box::new(Cron::parse(body).map_err(|why| invalid(expr, why))?)));
        }
        Err(invalid(expr, "it must be at(...), rate(...) or cron(...)"))
    }

    /// The first run strictly after `after`, within `[start, end]` when given. `anchor` is
    /// when a `rate` schedule counts from: the action's StartTime, else its creation time.
    /// `None` when the schedule runs no more.
    pub fn next_after(&self, zone: Zone, after: Now, start: Option<Now>, end: Option<Now>, anchor: Now) -> Option<Now> {
        let from = match start {
            // A run at exactly StartTime counts.
            Some(s) if s > after => s - 1e-3,
            _ => after,
        };
        let next = match self {
            Schedule::At(local) => {
                let t = seconds(zone.instant(*local)?);
                (t > from).then_some(t)
            }
            Schedule::Rate { seconds } => {
                let period = *seconds as f64;
                let base = start.unwrap_or(anchor);
                let k = if from < base { 0.0 } else { ((from - base) / period).floor() + 1.0 };
                Some(base + k * period)
            }
            Schedule::Cron(cron) => cron.next_after(zone, from),
        }?;
        match end {
            Some(e) if next > e => None,
            _ => Some(next),
        }
    }
}

fn seconds(t: DateTime<Utc>) -> Now {
    t.timestamp_millis() as f64 / 1000.0
}

fn utc(t: Now) -> DateTime<Utc> {
    DateTime::from_timestamp_millis((t * 1000.0).floor() as i64).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// cron

/// The six fields of a cron expression: minutes, hours, day of month, month, day of week,
/// year.
#[derive(Clone, Debug, PartialEq)]
pub struct Cron {
    minutes: BTreeSet<u32>,
    hours: BTreeSet<u32>,
    day_of_month: DayOfMonth,
    months: BTreeSet<u32>,
    day_of_week: DayOfWeek,
    years: BTreeSet<u32>,
}

#[derive(Clone, Debug, PartialEq)]
enum DayOfMonth {
    /// `?`
    Any,
    Days(BTreeSet<u32>),
    /// `L`: the month's last day.
    Last,
    /// `LW`: the month's last weekday.
    LastWeekday,
    /// `15W`: the weekday nearest the 15th, within the month.
    NearestWeekday(u32),
}

#[derive(Clone, Debug, PartialEq)]
enum DayOfWeek {
    /// `?`
    Any,
    /// Days of the week, 1 = Sunday … 7 = Saturday.
    Days(BTreeSet<u32>),
    /// `5L`: the month's last Thursday.
    Last(u32),
    /// `3#2`: the month's second Tuesday.
    Nth(u32, u32),
}

const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Cron {
    /// Parses the six fields (`0 18 ? * MON-FRI *`).
    pub fn parse(body: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = body.split_whitespace().collect();
        let [min, hour, dom, month, dow, year] = fields[..] else {
            return Err(format!("cron() takes 6 fields, got {}", fields.len()));
        };
        let minutes = set(min, 0, 59, &[], "minutes")?;
        let hours = set(hour, 0, 23, &[], "hours")?;
        let months = set(month, 1, 12, &MONTHS, "month")?;
        let years = set(year, 1970, 2199, &[], "year")?;
        let day_of_month = match dom {
            "?" => DayOfMonth::Any,
            "L" => DayOfMonth::Last,
            "LW" => DayOfMonth::LastWeekday,
            d if d.ends_with('W') => {
                let n: u32 = d[..d.len() - 1].parse().map_err(|_| format!("bad day of month {d}"))?;
                if !(1..=31).contains(&n) {
                    return Err(format!("bad day of month {d}"));
                }
                DayOfMonth::NearestWeekday(n)
            }
            d => DayOfMonth::Days(set(d, 1, 31, &[], "day of month")?),
        };
        let day_of_week = match dow {
            "?" => DayOfWeek::Any,
            "L" => DayOfWeek::Days(BTreeSet::from([7])),
            d if d.len() > 1 && d.ends_with('L') => {
                DayOfWeek::Last(value(&d[..d.len() - 1], 1, 7, &DAYS, "day of week")?)
            }
            d if d.contains('#') => {
                let (w, n) = d.split_once('#').unwrap_or_default();
                let w = value(w, 1, 7, &DAYS, "day of week")?;
                let n = value(n, 1, 5, &[], "day of week")?;
                DayOfWeek::Nth(w, n)
            }
            d => DayOfWeek::Days(set(d, 1, 7, &DAYS, "day of week")?),
        };
        // One of day-of-month and day-of-week must be `?`, not both.
        match (&day_of_month, &day_of_week) {
            (DayOfMonth::Any, DayOfWeek::Any) => return Err("day-of-month and day-of-week cannot both be ?".into()),
            (DayOfMonth::Any, _) | (_, DayOfWeek::Any) => {}
            _ => return Err("one of day-of-month and day-of-week must be ?".into()),
        }
        Ok(Cron { minutes, hours, day_of_month, months, day_of_week, years })
    }

    fn day_matches(&self, d: NaiveDate) -> bool {
        if !self.years.contains(&(d.year() as u32)) || !self.months.contains(&d.month()) {
            return false;
        }
        let last = last_day(d.year(), d.month());
        let dom = match &self.day_of_month {
            DayOfMonth::Any => true,
            DayOfMonth::Days(days) => days.contains(&d.day()),
            DayOfMonth::Last => d.day() == last,
            DayOfMonth::LastWeekday => d.day() == nearest_weekday(d.year(), d.month(), last),
            DayOfMonth::NearestWeekday(n) => *n <= last && d.day() == nearest_weekday(d.year(), d.month(), *n),
        };
        let weekday = d.weekday().num_days_from_sunday() + 1;
        let dow = match &self.day_of_week {
            DayOfWeek::Any => true,
            DayOfWeek::Days(days) => days.contains(&weekday),
            DayOfWeek::Last(w) => weekday == *w && d.day() + 7 > last,
            DayOfWeek::Nth(w, n) => weekday == *w && (d.day() - 1) / 7 + 1 == *n,
        };
        dom && dow
    }

    /// The first time after `after` that the expression names, in `zone`.
    pub fn next_after(&self, zone: Zone, after: Now) -> Option<Now> {
        let after_utc = utc(after);
        let mut day = zone.local(after_utc).date();
        let last_year = *self.years.last()? as i32;
        while day.year() <= last_year {
            if self.day_matches(day) {
                for h in &self.hours {
                    for m in &self.minutes {
                        let local = day.and_time(NaiveTime::from_hms_opt(*h, *m, 0)?);
                        if let Some(t) = zone.instant(local) {
                            if seconds(t) > after {
                                return Some(seconds(t));
                            }
                        }
                    }
                }
            }
            day = day.succ_opt()?;
            // Skip whole months and years that cannot match.
            if day.day() == 1 && !self.months.contains(&day.month()) {
                day = next_month(day);
            }
            if !self.years.contains(&(day.year() as u32)) {
                let next = self.years.range(day.year() as u32 + 1..).next()?;
                day = NaiveDate::from_ymd_opt(*next as i32, 1, 1)?;
            }
        }
        None
    }
}

fn next_month(d: NaiveDate) -> NaiveDate {
    let (y, m) = if d.month() == 12 { (d.year() + 1, 1) } else { (d.year(), d.month() + 1) };
    NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(d)
}

fn last_day(year: i32, month: u32) -> u32 {
    let first = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or_default();
    (next_month(first) - Duration::days(1)).day()
}

/// The weekday nearest day `n` of the month, without leaving the month (`W`).
fn nearest_weekday(year: i32, month: u32, n: u32) -> u32 {
    let last = last_day(year, month);
    let Some(d) = NaiveDate::from_ymd_opt(year, month, n.min(last)) else { return n };
    match d.weekday() {
        Weekday::Sat if d.day() == 1 => 3,
        Weekday::Sat => d.day() - 1,
        Weekday::Sun if d.day() == last => d.day() - 2,
        Weekday::Sun => d.day() + 1,
        _ => d.day(),
    }
}

/// One number or name of a field.
fn value(s: &str, lo: u32, hi: u32, names: &[&str], field: &str) -> Result<u32, String> {
    let upper = s.to_ascii_uppercase();
    let v = match names.iter().position(|n| *n == upper) {
        Some(i) => i as u32 + lo,
        None => s.parse::<u32>().map_err(|_| format!("bad {field} value {s}"))?,
    };
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{field} value {s} is out of range {lo}-{hi}"))
    }
}

/// A field of `*`, `a`, `a-b`, `a/n`, `a-b/n`, `*/n` and lists of them.
fn set(s: &str, lo: u32, hi: u32, names: &[&str], field: &str) -> Result<BTreeSet<u32>, String> {
    let mut out = BTreeSet::new();
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, n)) => {
                let n: u32 = n.parse().map_err(|_| format!("bad {field} increment {n}"))?;
                if n == 0 {
                    return Err(format!("bad {field} increment 0"));
                }
                (r, n)
            }
            None => (part, 1),
        };
        let (from, to) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a, lo, hi, names, field)?, value(b, lo, hi, names, field)?),
                None => {
                    let a = value(r, lo, hi, names, field)?;
                    (a, if step > 1 { hi } else { a })
                }
            },
        };
        if from > to {
            return Err(format!("bad {field} range {range}"));
        }
        out.extend((from..=to).step_by(step as usize));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Now {
        let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap();
        seconds(Utc.from_utc_datetime(&t))
    }

    fn show(t: Option<Now>) -> String {
        t.map(|t| utc(t).format("%Y-%m-%dT%H:%M:%S %a").to_string()).unwrap_or_else(|| "never".into())
    }

    fn next(expr: &str, zone: Option<&str>, after: &str) -> String {
        let s = Schedule::parse(expr).unwrap();
        show(s.next_after(Zone::parse(zone).unwrap(), at(after), None, None, at(after)))
    }

    #[test]
    fn at_runs_once() {
        assert_eq!(next("at(2026-12-24T18:00:00)", None, "2026-12-01T00:00:00"), "2026-12-24T18:00:00 Thu");
        assert_eq!(next("at(2026-12-24T18:00:00)", None, "2026-12-24T18:00:00"), "never");
        // In a time zone: 18:00 in New York is 23:00 UTC in winter.
        assert_eq!(
            next("at(2026-12-24T18:00:00)", Some("America/New_York"), "2026-12-01T00:00:00"),
            "2026-12-24T23:00:00 Thu"
        );
    }

    #[test]
    fn rate_counts_from_the_start() {
        let s = Schedule::parse("rate(5 minutes)").unwrap();
        assert_eq!(s, Schedule::Rate { seconds: 300 });
        let anchor = at("2026-12-01T10:00:00");
        let n = s.next_after(Zone::UTC, at("2026-12-01T10:07:00"), None, None, anchor);
        assert_eq!(show(n), "2026-12-01T10:10:00 Tue");
        let n = s.next_after(Zone::UTC, at("2026-12-01T10:10:00"), None, None, anchor);
        assert_eq!(show(n), "2026-12-01T10:15:00 Tue");
        // Before StartTime: the first run is StartTime.
        let n = s.next_after(Zone::UTC, at("2026-12-01T09:00:00"), Some(anchor), None, anchor);
        assert_eq!(show(n), "2026-12-01T10:00:00 Tue");
        // Past EndTime: never.
        let n = s.next_after(Zone::UTC, at("2026-12-01T10:07:00"), None, Some(at("2026-12-01T10:08:00")), anchor);
        assert_eq!(n, None);
        assert_eq!(Schedule::parse("rate(1 hour)").unwrap(), Schedule::Rate { seconds: 3600 });
        assert_eq!(Schedule::parse("rate(2 days)").unwrap(), Schedule::Rate { seconds: 172_800 });
        for bad in
            ["rate(1 minutes)", "rate(5 minute)", "rate(0 minutes)", "rate(5 seconds)", "rate(five minutes)", "rate(5)"]
        {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_examples() {
        // The user guide's and EventBridge's examples.
        assert_eq!(next("cron(15 12 * * ? *)", None, "2026-12-01T13:00:00"), "2026-12-02T12:15:00 Wed");
        assert_eq!(next("cron(0 18 ? * MON-FRI *)", None, "2026-12-04T19:00:00"), "2026-12-07T18:00:00 Mon");
        assert_eq!(next("cron(0 8 1 * ? *)", None, "2026-12-01T08:00:00"), "2027-01-01T08:00:00 Fri");
        assert_eq!(next("cron(0/10 * ? * MON-FRI *)", None, "2026-12-01T10:01:00"), "2026-12-01T10:10:00 Tue");
        assert_eq!(next("cron(0/5 8-17 ? * MON-FRI *)", None, "2026-12-01T17:56:00"), "2026-12-02T08:00:00 Wed");
        assert_eq!(next("cron(0 9 ? * 2#1 *)", None, "2026-12-01T00:00:00"), "2026-12-07T09:00:00 Mon");
        assert_eq!(next("cron(30 10 ? * 6L 2027)", None, "2026-12-01T00:00:00"), "2027-01-29T10:30:00 Fri");
        assert_eq!(next("cron(0 0 L * ? *)", None, "2027-02-01T00:00:00"), "2027-02-28T00:00:00 Sun");
        assert_eq!(next("cron(0 0 L 2 ? *)", None, "2027-03-01T00:00:00"), "2028-02-29T00:00:00 Tue");
        assert_eq!(next("cron(0 0 LW * ? *)", None, "2027-01-01T00:00:00"), "2027-01-29T00:00:00 Fri");
        // 15W: 2027-05-15 is a Saturday, so Friday the 14th.
        assert_eq!(next("cron(0 0 15W 5 ? *)", None, "2027-01-01T00:00:00"), "2027-05-14T00:00:00 Fri");
        // 1W on a Saturday stays in the month: Monday the 3rd.
        assert_eq!(next("cron(0 0 1W 5 ? *)", None, "2027-01-01T00:00:00"), "2027-05-03T00:00:00 Mon");
        assert_eq!(next("cron(0 12 ? * SUN,SAT *)", None, "2026-12-01T00:00:00"), "2026-12-05T12:00:00 Sat");
        assert_eq!(next("cron(0 12 ? JAN-MAR 1 *)", None, "2026-12-01T00:00:00"), "2027-01-03T12:00:00 Sun");
        assert_eq!(next("cron(0 0 1 1 ? 2025)", None, "2026-12-01T00:00:00"), "never");
    }

    #[test]
    fn cron_in_a_time_zone_follows_daylight_saving() {
        let ny = Some("America/New_York");
        for (expr, zone, after, want) in [
            // 09:00 in New York: 14:00 UTC in winter, 13:00 UTC after the March change.
            ("cron(0 9 * * ? *)", ny, "2027-03-12T15:00:00", "2027-03-13T14:00:00 Sat"),
            ("cron(0 9 * * ? *)", ny, "2027-03-13T15:00:00", "2027-03-14T13:00:00 Sun"),
            // 02:30 does not exist on 2027-03-14 in New York: that day is skipped.
            ("cron(30 2 * * ? *)", ny, "2027-03-13T08:00:00", "2027-03-15T06:30:00 Mon"),
            // 01:30 happens twice on 2027-11-07: it runs once, at the earlier (EDT) instant.
            ("cron(30 1 * * ? *)", ny, "2027-11-07T04:00:00", "2027-11-07T05:30:00 Sun"),
            ("cron(30 1 * * ? *)", ny, "2027-11-07T05:30:00", "2027-11-08T06:30:00 Mon"),
            ("cron(0 10 * * ? *)", Some("Asia/Kolkata"), "2026-12-01T00:00:00", "2026-12-01T04:30:00 Tue"),
            ("cron(0 10 * * ? *)", Some("Etc/GMT+5"), "2026-12-01T00:00:00", "2026-12-01T15:00:00 Tue"),
        ] {
            assert_eq!(next(expr, zone, after), want, "{expr} in {zone:?} after {after}");
        }
    }

    #[test]
    fn cron_refusals() {
        for bad in [
            "cron(0 18 * * MON-FRI *)",
            "cron(0 18 ? * ? *)",
            "cron(0 18 * * ?)",
            "cron(60 18 * * ? *)",
            "cron(0 24 * * ? *)",
            "cron(0 0 32 * ? *)",
            "cron(0 0 ? * 8 *)",
            "cron(0 0 ? * 2#6 *)",
            "cron(0 0 * 13 ? *)",
            "cron(0 0 * * ? 1969)",
            "cron(0/0 0 * * ? *)",
            "cron(5-1 0 * * ? *)",
            "every(5 minutes)",
            "at(2026-12-24 18:00:00)",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
        assert!(Zone::parse(Some("Mars/Olympus_Mons")).is_err());
        assert_eq!(Zone::parse(None).unwrap(), Zone::UTC);
        assert_eq!(serde_json::to_string(&Zone::parse(Some("Europe/Madrid")).unwrap()).unwrap(), "\"Europe/Madrid\"");
    }
}

//! Fire times: a cron pattern (parsed by `croner`) in an IANA time zone (`chrono-tz`), with a
//! defined behaviour across daylight-saving changes.
//!
//! - A local time skipped by a spring-forward change (02:30 on the night clocks go from 02:00 to
//!   03:00) fires once, at the first instant after the gap (03:00 local). Several skipped times
//!   still fire once.
//! - A local time that occurs twice in autumn fires once, at its first occurrence, when the
//!   pattern names its hours (`30 2 * * *`). A pattern whose hour field is `*` (`*/15 * * * *`,
//!   `* * * * * *`) runs on the clock as it is read, through both passes of the repeated hour,
//!   so an interval keeps its rhythm in real time.
//!
//! Everything is computed from the instant given, never from the system clock, so tests inject
//! any time they like.

use std::str::FromStr;

use chrono::{DateTime, FixedOffset, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// A parsed pattern in its time zone.
#[derive(Debug, Clone)]
pub struct CronSpec {
    cron: Cron,
    tz: Tz,
    every_hour: bool,
}

/// Why a pattern or a zone was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronSpecError {
    /// The pattern does not parse (or never fires).
    Cron(String),
    /// The zone is not an IANA name.
    TimeZone(String),
}

/// How far a search looks: a pattern that does not fire within it is taken as never firing, in
/// every zone alike (`0 12 * 2 1#5`, the fifth Monday of February, comes every 28 to 40 years:
/// refused). It bounds the search's cost too (each daylight-saving change is a step).
pub const HORIZON_YEARS: i64 = 10;

/// Most steps one search takes across daylight-saving transitions: each step passes at least
/// one, and a zone has at most a few a year; more than enough for [`HORIZON_YEARS`].
const MAX_STEPS: usize = 64;

impl CronSpec {
    /// Parses `pattern` (5 fields, 6 with seconds first, or `@hourly`-style) in `timezone`.
    pub fn parse(pattern: &str, timezone: &str) -> Result<Self, CronSpecError> {
        let tz = Tz::from_str(timezone).map_err(|_| {
            CronSpecError::TimeZone(format!(
                "`{timezone}` is not an IANA time zone name (e.g. \"UTC\", \"Europe/Berlin\")"
            ))
        })?;
        let text = pattern.trim();
        if text.is_empty() || text.len() > 200 {
            return Err(CronSpecError::Cron("must be 1-200 characters".into()));
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        const NAMES: [&str; 6] = [
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@hourly",
        ];
        if text.starts_with('@') && !NAMES.iter().any(|n| n.eq_ignore_ascii_case(text)) {
            return Err(CronSpecError::Cron(format!(
                "`{text}` is not a schedule name: use one of {} or 5 fields (minute hour day \
                 month weekday)",
                NAMES.join(", ")
            )));
        }
        if !text.starts_with('@') && fields.len() != 5 && fields.len() != 6 {
            return Err(CronSpecError::Cron(format!(
                "`{text}` has {} fields: expected 5 (minute hour day month weekday), 6 (seconds \
                 first) or a name like @hourly",
                fields.len()
            )));
        }
        // croner accepts an empty item in a list (`,5`, `1,,2`) as a field that matches nothing,
        // and its search for the next match then never ends: refuse it here.
        if let Some(f) = fields
            .iter()
            .find(|f| !text.starts_with('@') && f.split(',').any(str::is_empty))
        {
            return Err(CronSpecError::Cron(format!(
                "`{text}`: the field `{f}` has an empty item in its list"
            )));
        }
        let (weekdays, bare_l) = weekday_field(text, &fields);
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(&weekdays)
            .map_err(|e| CronSpecError::Cron(format!("`{text}`: {e}")))?;
        let hour = match fields.len() {
            5 => Some(fields[1]),
            6 => Some(fields[2]),
            _ => None,
        };
        let every_hour = match hour {
            Some(h) => covers_every_hour(h),
            None => text.eq_ignore_ascii_case("@hourly"),
        };
        let spec = Self {
            cron,
            tz,
            every_hour,
        };
        // A pattern without a year repeats forever if it fires at all (e.g. not `0 0 30 2 *`).
        let epoch = Utc.timestamp_opt(946_684_800, 0).single();
        if epoch.and_then(|e| spec.next_after(e)).is_none() {
            // (A bare `L` there matches no day; beside a day of the month it is harmless, and
            // such patterns, stored before, keep working.)
            let hint = if bare_l {
                ": `L` alone in the weekday field names no day (the last day of the month is `L` \
                 in the day field, `0 0 L * *`; the last Friday `5L` or `5#L`)"
            } else {
                ""
            };
            return Err(CronSpecError::Cron(format!(
                "`{text}` never fires (or less often than once in {HORIZON_YEARS} years){hint}"
            )));
        }
        Ok(spec)
    }

    /// The time zone.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    fn offset_at(&self, t: DateTime<Utc>) -> FixedOffset {
        self.tz.offset_from_utc_datetime(&t.naive_utc()).fix()
    }

    /// The next fire time strictly after `after`, or `None` when the pattern never fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.search(after, false)
    }

    /// The first fire time at or after `from`.
    pub fn next_from(&self, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Fire times are whole seconds: the first at or after a whole second is the first after
        // the second before it. Searched from `from` itself, a fire made up at a spring-forward
        // instant T (a time in the skipped hour fires once, at T) was missed when `from` was T:
        // T already has the new offset, whose wall clock starts after the gap.
        if from.timestamp_subsec_nanos() == 0 {
            if let Some(before) = from.checked_sub_signed(chrono::Duration::seconds(1)) {
                return self.search(before, false);
            }
        }
        self.search(from, true)
    }

    fn search(&self, from: DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
        // Search on the wall clock of one fixed offset at a time: within a stretch of constant
        // offset the wall clock is monotonic and croner finds the next match exactly.
        // Fire times are whole seconds: from a fraction, the first one after it is the first
        // one strictly after its whole second.
        let whole = from.timestamp_subsec_nanos() == 0;
        let mut x = if whole {
            from
        } else {
            Utc.timestamp_opt(from.timestamp(), 0).single()?
        };
        let mut incl = inclusive && whole;
        let limit = x + chrono::Duration::days(HORIZON_YEARS * 366);
        for _ in 0..MAX_STEPS {
            if x > limit {
                return None;
            }
            let o = self.offset_at(x);
            let c = self
                .cron
                .find_next_occurrence(&x.with_timezone(&o), incl)
                .ok()?
                .with_timezone(&Utc);
            if c > limit {
                return None;
            }
            let oc = self.offset_at(c);
            if oc == o && !self.transition_between(x, c, o) {
                if !self.every_hour {
                    if let Some(first) = self.first_pass(c, o) {
                        // A repeated local time that already fired on its first pass: so did
                        // every other time of this second pass. Resume where it ends (stepping
                        // match by match, a pattern with seconds ran out of steps inside it).
                        x = self.second_pass_end(first, c);
                        incl = true;
                        continue;
                    }
                }
                return Some(c);
            }
            // The offset changes at T in (x, c]: no match under `o` before T.
            let t = self.transition_after(x, c, o);
            let new = self.offset_at(t);
            let (before, after) = (o.local_minus_utc() as i64, new.local_minus_utc() as i64);
            if after > before {
                // Spring forward: wall times in [T+before, T+after) never happen. If the match
                // found under the old offset lies in that gap, it fires once, right after it.
                // A pattern of every hour follows the new clock instead (as cron does): its
                // times in the missing hour are not made up, the next is an hour after the last.
                let gap_end_wall = t.timestamp() + after;
                if c.timestamp() + before < gap_end_wall && !self.every_hour {
                    return Some(t);
                }
                x = t;
                incl = true;
            } else {
                // Fall back: wall times in [T+after, T+before) happen twice. A pattern with
                // fixed hours fires only on the first pass: resume where the first pass ended.
                x = if self.every_hour {
                    t
                } else {
                    t + chrono::Duration::seconds(before - after)
                };
                incl = true;
            }
        }
        None
    }

    /// When `c` (at offset `o`) is the second occurrence of a local time that happens twice: its
    /// first occurrence.
    fn first_pass(&self, c: DateTime<Utc>, o: FixedOffset) -> Option<DateTime<Utc>> {
        match self
            .tz
            .from_local_datetime(&c.with_timezone(&o).naive_local())
        {
            chrono::LocalResult::Ambiguous(first, _) => {
                Some(first.with_timezone(&Utc)).filter(|f| *f < c)
            }
            _ => None,
        }
    }

    /// The end of the second pass that `c` lies in, given `first`, the first occurrence of `c`'s
    /// local time: the change back at T (in `(first, c]`) repeats the wall times of
    /// `before - after` seconds, so the second pass ends at `T + (before - after)`, after `c`.
    fn second_pass_end(&self, first: DateTime<Utc>, c: DateTime<Utc>) -> DateTime<Utc> {
        let before = self.offset_at(first);
        let t = self.transition_after(first, c, before);
        let repeated = (before.local_minus_utc() - self.offset_at(t).local_minus_utc()) as i64;
        let end = t + chrono::Duration::seconds(repeated.max(1));
        // Never backwards (a zone whose data disagrees with the ambiguity chrono reported).
        end.max(c + chrono::Duration::seconds(1))
    }

    /// True when the offset at some instant in (a, b) differs from `o` although both ends have it
    /// (two transitions in between, e.g. a yearly pattern).
    fn transition_between(&self, a: DateTime<Utc>, b: DateTime<Utc>, o: FixedOffset) -> bool {
        // Transitions are months apart: sampling every 30 days finds any pair in between.
        let step = chrono::Duration::days(30);
        let mut t = a + step;
        while t < b {
            if self.offset_at(t) != o {
                return true;
            }
            t += step;
        }
        false
    }

    /// The first instant (whole second) in (a, b] whose offset is not `o`.
    fn transition_after(
        &self,
        a: DateTime<Utc>,
        b: DateTime<Utc>,
        o: FixedOffset,
    ) -> DateTime<Utc> {
        // Narrow to a 30-day window first (see `transition_between`), then bisect on seconds.
        let step = chrono::Duration::days(30);
        let mut lo = a;
        let mut hi = b;
        let mut t = a + step;
        while t < b {
            if self.offset_at(t) != o {
                hi = t;
                break;
            }
            lo = t;
            t += step;
        }
        let (mut lo, mut hi) = (lo.timestamp(), hi.timestamp());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let m = Utc.timestamp_opt(mid, 0).single().unwrap_or(b);
            if self.offset_at(m) == o {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Utc.timestamp_opt(hi, 0).single().unwrap_or(b)
    }

    /// Fire times in `[from, to]`, at most `max`.
    pub fn between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        max: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = self.next_from(from);
        while let Some(x) = t {
            if x > to || out.len() >= max {
                break;
            }
            out.push(x);
            t = self.next_after(x);
        }
        out
    }
}

/// `text` with its weekday field as croner reads it: Sunday's other number `7` becomes `0` in
/// the last-of-the-month forms `7L` and `7#L` (croner finds no `7L`, and the pattern was refused
/// as never firing); and whether that field holds a bare `L` (which croner reads as no day).
fn weekday_field(text: &str, fields: &[&str]) -> (String, bool) {
    let at = match fields.len() {
        5 => 4,
        6 => 5,
        _ => return (text.to_string(), false),
    };
    let mut bare_l = false;
    let items: Vec<String> = fields[at]
        .split(',')
        .map(|item| match item.to_ascii_uppercase().as_str() {
            "7L" => "0L".to_string(),
            "7#L" => "0#L".to_string(),
            u => {
                bare_l |= u == "L";
                item.to_string()
            }
        })
        .collect();
    let mut out: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    out[at] = items.join(",");
    (out.join(" "), bare_l)
}

/// Whether an hour field names all 24 hours (`*`, `?`, `*/1`, `0-23`, `0-11,12-23`, ...): such a
/// pattern follows the clock through daylight-saving changes (see [`CronSpec::next_after`]); a
/// field it cannot read counts as naming fixed hours.
fn covers_every_hour(field: &str) -> bool {
    let mut hours = [false; 24];
    for item in field.split(',') {
        // `a/n` starts at `a` and runs to the field's end.
        let (range, step, stepped) = match item.split_once('/') {
            Some((r, s)) => match s.parse::<usize>() {
                Ok(s) if s > 0 => (r, s, true),
                _ => return false,
            },
            None => (item, 1, false),
        };
        let (lo, hi) = match range {
            "*" | "?" => (0, 23),
            r => match r.split_once('-') {
                Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                    (Ok(a), Ok(b)) if a <= b && b < 24 => (a, b),
                    _ => return false,
                },
                None => match r.parse::<usize>() {
                    Ok(h) if h < 24 => (h, if stepped { 23 } else { h }),
                    _ => return false,
                },
            },
        };
        for h in (lo..=hi).step_by(step) {
            hours[h] = true;
        }
    }
    hours.iter().all(|h| *h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fires(pattern: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let c = CronSpec::parse(pattern, tz).unwrap();
        let mut t = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = c.next_after(t).unwrap();
            out.push(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        out
    }

    #[test]
    fn names_are_the_known_ones_and_an_unknown_one_is_named() {
        for name in [
            "@hourly",
            "@DAILY",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
        ] {
            assert!(CronSpec::parse(name, "UTC").is_ok(), "{name}");
        }
        for name in ["@reboot", "@fortnightly", "@"] {
            let Err(CronSpecError::Cron(e)) = CronSpec::parse(name, "UTC") else {
                panic!("{name} was taken");
            };
            assert!(
                e.contains("is not a schedule name") && e.contains("@hourly"),
                "{e}"
            );
        }
    }

    #[test]
    fn berlin_spring_forward_fires_once_right_after_the_gap() {
        // 2026-03-29: 02:00 CET -> 03:00 CEST (01:00 UTC). 02:30 does not exist.
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 3),
            vec![
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST, right after the gap
                "2026-03-30T00:30:00Z", // 02:30 CEST
            ]
        );
        // Every minute of the gap still fires once, then the clock goes on from 03:00.
        assert_eq!(
            fires("*/20 2 * * *", "Europe/Berlin", "2026-03-29T00:30:00Z", 2),
            vec!["2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"]
        );
    }

    #[test]
    fn a_fire_made_up_at_a_spring_forward_instant_is_found_from_that_instant() {
        // The fire after a gap is at the change itself (T): a backfill of exactly [T, T] (what
        // a schedule's `missed` line names) made nothing, as did any range starting at T.
        for (pattern, tz, t) in [
            ("30 2 * * *", "Europe/Paris", "2026-03-29T01:00:00Z"),
            ("30 2 * * *", "America/New_York", "2026-03-08T07:00:00Z"),
            ("0 0 * * *", "America/Havana", "2026-03-08T05:00:00Z"),
            ("0 12 * * *", "Pacific/Apia", "2011-12-30T10:00:00Z"),
        ] {
            let c = CronSpec::parse(pattern, tz).unwrap();
            let t = utc(t);
            let just_before = t - chrono::Duration::seconds(1);
            assert_eq!(
                c.next_after(just_before),
                Some(t),
                "{tz}: the fire loop's answer"
            );
            assert_eq!(c.next_from(t), Some(t), "{tz}");
            assert_eq!(c.between(t, t, 10), vec![t], "{tz}");
            let half_hour = t + chrono::Duration::minutes(30);
            assert_eq!(c.between(t, half_hour, 10), vec![t], "{tz}");
            assert!(c
                .between(just_before - chrono::Duration::seconds(1), just_before, 10)
                .is_empty());
        }
        // Across both changes, the first fire at or after any minute is the first of the day's
        // fires (walked one after another from before the day) that is not before it.
        let c = CronSpec::parse("*/20 2 * * *", "Europe/Paris").unwrap();
        for day in ["2026-03-28T23:00:00Z", "2026-10-24T23:00:00Z"] {
            let start = utc(day);
            let end = start + chrono::Duration::hours(6);
            let mut fires = vec![c.next_after(start - chrono::Duration::hours(2)).unwrap()];
            while *fires.last().unwrap() <= end {
                fires.push(c.next_after(*fires.last().unwrap()).unwrap());
            }
            let mut t = start;
            while t <= end {
                let want = fires.iter().copied().find(|f| *f >= t);
                assert_eq!(c.next_from(t), want, "{t}");
                t += chrono::Duration::seconds(60);
            }
        }
    }

    #[test]
    fn a_pattern_of_every_hour_follows_the_new_clock_at_spring_forward() {
        // 2026-03-29 in Paris: 02:30 does not exist. `30 * * * *` fires 01:30 CET, then 03:30
        // CEST, an hour later (it fired at 03:00 too, half an hour after 01:30 and before 03:30).
        for pattern in [
            "30 * * * *",
            "30 */1 * * *",
            "30 0-23 * * *",
            "30 0-11,12-23 * * *",
        ] {
            assert_eq!(
                fires(pattern, "Europe/Paris", "2026-03-29T00:00:00Z", 3),
                vec![
                    "2026-03-29T00:30:00Z", // 01:30 CET
                    "2026-03-29T01:30:00Z", // 03:30 CEST
                    "2026-03-29T02:30:00Z",
                ],
                "{pattern}"
            );
        }
        // Fixed hours keep their one fire right after the gap.
        assert_eq!(
            fires("30 1-2 * * *", "Europe/Paris", "2026-03-29T00:00:00Z", 2),
            vec!["2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z"]
        );
    }

    #[test]
    fn hour_fields_that_name_every_hour() {
        for f in ["*", "?", "*/1", "0-23", "0-23/1", "0-11,12-23", "0/1"] {
            assert!(covers_every_hour(f), "{f}");
        }
        for f in [
            "*/2", "0-22", "1-23", "2", "0-23/2", "x", "5-3", "*/0", "0-24",
        ] {
            assert!(!covers_every_hour(f), "{f}");
        }
    }

    #[test]
    fn berlin_fall_back_fires_a_repeated_time_once() {
        // 2026-10-25: 03:00 CEST -> 02:00 CET (01:00 UTC). 02:30 happens twice.
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 3),
            vec![
                "2026-10-25T00:30:00Z", // 02:30 CEST, first pass
                "2026-10-26T01:30:00Z", // 02:30 CET, the next day
                "2026-10-27T01:30:00Z",
            ]
        );
        // Starting in the second pass: the repeated time already fired.
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-10-25T01:10:00Z", 1),
            vec!["2026-10-26T01:30:00Z"]
        );
        // An interval pattern keeps its rhythm in real time through both passes.
        assert_eq!(
            fires("*/30 * * * *", "Europe/Berlin", "2026-10-25T00:15:00Z", 4),
            vec![
                "2026-10-25T00:30:00Z", // 02:30 CEST
                "2026-10-25T01:00:00Z", // 02:00 CET
                "2026-10-25T01:30:00Z", // 02:30 CET
                "2026-10-25T02:00:00Z", // 03:00 CET
            ]
        );
    }

    #[test]
    fn a_pattern_with_seconds_skips_the_whole_second_pass_from_any_instant_in_it() {
        // `* * 2 * * *`: every second of 02:xx, first pass only. Stepping match by match through
        // the second pass (3,600 of them) ran out of search steps and answered "never again":
        // the schedule stopped for good. From every second of the repeated hour (and from the
        // last second of the first pass), the next fire time is the next day's 02:00:00.
        // (pattern, zone, the first pass's last fire, the next one after it)
        let cases = [
            (
                "* * 2 * * *",
                "Europe/Berlin",
                "2026-10-25T00:59:59Z",
                "2026-10-26T01:00:00Z",
            ),
            (
                "*/10 * 1 * * *",
                "America/New_York",
                "2026-11-01T05:59:50Z",
                "2026-11-02T06:00:00Z",
            ),
        ];
        for (pattern, tz, last, next) in cases {
            let c = CronSpec::parse(pattern, tz).unwrap();
            let (last, next) = (utc(last), utc(next));
            let from = Utc
                .timestamp_opt(last.timestamp() - last.timestamp() % 60 + 59, 0)
                .unwrap();
            for s in 0..=3600 {
                let at = from + chrono::Duration::seconds(s);
                assert_eq!(c.next_after(at), Some(next), "{pattern} {tz} after {at}");
                let frac = at + chrono::Duration::milliseconds(500);
                assert_eq!(
                    c.next_after(frac),
                    Some(next),
                    "{pattern} {tz} after {frac}"
                );
            }
            // The first pass itself still fires every match.
            let before = last - chrono::Duration::seconds(1);
            assert_eq!(c.next_after(before), Some(last), "{pattern} {tz}");
            assert_eq!(c.next_after(last), Some(next), "{pattern} {tz}");
        }
    }

    #[test]
    fn new_york_both_ways() {
        // 2026-03-08: 02:00 EST -> 03:00 EDT (07:00 UTC).
        assert_eq!(
            fires("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 3),
            vec![
                "2026-03-08T07:00:00Z", // 03:00 EDT, right after the gap
                "2026-03-09T06:30:00Z", // 02:30 EDT
                "2026-03-10T06:30:00Z",
            ]
        );
        // 2026-11-01: 02:00 EDT -> 01:00 EST (06:00 UTC). 01:30 happens twice.
        assert_eq!(
            fires("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            vec!["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
        assert_eq!(
            fires("0 * * * *", "America/New_York", "2026-11-01T04:30:00Z", 4),
            vec![
                "2026-11-01T05:00:00Z", // 01:00 EDT
                "2026-11-01T06:00:00Z", // 01:00 EST
                "2026-11-01T07:00:00Z", // 02:00 EST
                "2026-11-01T08:00:00Z",
            ]
        );
    }

    #[test]
    fn month_ends_leap_day_last_and_nth_weekday() {
        assert_eq!(
            fires("0 0 31 * *", "UTC", "2026-01-31T00:00:00Z", 3),
            vec![
                "2026-03-31T00:00:00Z",
                "2026-05-31T00:00:00Z",
                "2026-07-31T00:00:00Z"
            ]
        );
        assert_eq!(
            fires("0 0 L * *", "UTC", "2026-01-31T00:00:00Z", 2),
            vec!["2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z"]
        );
        assert_eq!(
            fires("0 0 L 2 *", "UTC", "2027-03-01T00:00:00Z", 1),
            vec!["2028-02-29T00:00:00Z"]
        );
        assert_eq!(
            fires("0 12 29 2 *", "Europe/Berlin", "2026-01-01T00:00:00Z", 2),
            vec!["2028-02-29T11:00:00Z", "2032-02-29T11:00:00Z"]
        );
        // The second Monday of the month, and the last Friday.
        assert_eq!(
            fires("0 9 * * MON#2", "UTC", "2026-11-30T00:00:00Z", 2),
            vec!["2026-12-14T09:00:00Z", "2027-01-11T09:00:00Z"]
        );
        assert_eq!(
            fires("0 9 * * 5#L", "UTC", "2026-11-30T00:00:00Z", 2),
            vec!["2026-12-25T09:00:00Z", "2027-01-29T09:00:00Z"]
        );
        // The last Sunday, with Sunday as 7 as well as 0 (and beside other days).
        for last_sunday in [
            "0 9 * * 7L",
            "0 9 * * 7#L",
            "0 9 * * 0L",
            "0 9 * * 7l",
            "0 9 * * SUN#L",
        ] {
            assert_eq!(
                fires(last_sunday, "UTC", "2026-11-30T00:00:00Z", 2),
                vec!["2026-12-27T09:00:00Z", "2027-01-31T09:00:00Z"],
                "{last_sunday}"
            );
        }
        assert_eq!(
            fires("0 9 * * 1,7L", "UTC", "2026-12-20T00:00:00Z", 3),
            vec![
                "2026-12-21T09:00:00Z",
                "2026-12-27T09:00:00Z",
                "2026-12-28T09:00:00Z"
            ]
        );
        let e = CronSpec::parse("0 9 * * L", "UTC").unwrap_err();
        assert!(format!("{e:?}").contains("names no day"), "{e:?}");
        // Beside a day of the month a bare `L` matches nothing and harms nothing: such
        // patterns, accepted before, still fire (on the 1st here).
        assert_eq!(
            fires("0 0 1 * L", "UTC", "2026-11-30T00:00:00Z", 2),
            vec!["2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"]
        );
    }

    #[test]
    fn seconds_and_names() {
        assert_eq!(
            fires("*/1 * * * * *", "UTC", "2026-01-01T00:00:00Z", 2),
            vec!["2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z"]
        );
        assert_eq!(
            fires("@hourly", "Europe/Berlin", "2026-01-01T00:10:00Z", 2),
            vec!["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"]
        );
        assert_eq!(
            fires("@daily", "Europe/Berlin", "2026-01-01T00:10:00Z", 1),
            vec!["2026-01-01T23:00:00Z"]
        );
        // From a fraction of a second, fire times stay whole seconds.
        let c = CronSpec::parse("*/10 * * * * *", "UTC").unwrap();
        let t = utc("2026-01-01T00:00:10.300Z");
        assert_eq!(c.next_after(t), Some(utc("2026-01-01T00:00:20Z")));
        assert_eq!(c.next_from(t), Some(utc("2026-01-01T00:00:20Z")));
        let c = CronSpec::parse("0 * * * * *", "UTC").unwrap();
        let from = utc("2026-01-01T00:00:00Z");
        assert_eq!(c.next_from(from), Some(from));
        assert_eq!(c.between(from, utc("2026-01-01T00:03:00Z"), 10).len(), 4);
    }

    #[test]
    fn patterns_that_never_fire_or_never_end_the_search_are_refused() {
        // Found by the `cron` fuzz target: `, * * * *` parsed, then hung the next-fire search.
        for p in [
            ", * * * *",
            "1,,2 * * * *",
            "* * * * 1,",
            "0 0 30 2 *",
            "0 0 31 4 *",
        ] {
            let started = std::time::Instant::now();
            assert!(
                CronSpec::parse(p, "America/New_York").is_err(),
                "`{p}` accepted"
            );
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "`{p}` slow"
            );
        }
        assert!(CronSpec::parse("1,2 * * * *", "UTC").is_ok());
    }

    #[test]
    fn a_rare_pattern_gets_the_same_answer_in_every_zone() {
        // The fifth Monday of February (only when February 29 is a Monday: 2016, 2044, 2072):
        // refused everywhere as rarer than the horizon. The search used to stop after 16
        // daylight-saving changes, so it was refused in Berlin and New York, accepted in UTC.
        for tz in ["Europe/Berlin", "America/New_York", "UTC", "Asia/Tokyo"] {
            let e = CronSpec::parse("0 12 * 2 1#5", tz).expect_err(tz);
            assert!(format!("{e:?}").contains("10 years"), "{tz}: {e:?}");
            // Every four years: within the horizon, the same day in every zone.
            let c = CronSpec::parse("0 12 29 2 *", tz).unwrap_or_else(|e| panic!("{tz}: {e:?}"));
            let next = c
                .next_after(utc("2026-12-02T00:00:00Z"))
                .expect("a next fire");
            let local = next.with_timezone(&c.tz()).to_rfc3339();
            assert!(local.starts_with("2028-02-29T12:00:00"), "{tz}: {local}");
        }
    }

    #[test]
    fn bad_patterns_and_zones() {
        for p in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * * *",
            "nonsense",
            "@fortnightly",
        ] {
            assert!(
                matches!(CronSpec::parse(p, "UTC"), Err(CronSpecError::Cron(_))),
                "{p:?} should be refused"
            );
        }
        assert!(matches!(
            CronSpec::parse("* * * * *", "Mars/Olympus"),
            Err(CronSpecError::TimeZone(_))
        ));
    }
}

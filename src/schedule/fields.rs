//! The checks a new pattern passes on top of croner's, at `POST` and `PUT` of a schedule: forms
//! croner takes (or refuses with a message that names neither the field nor its range) that a
//! user cannot have meant.
//!
//! - A step that leaves one value (`*/90` or `*/60` in the minute field, `*/24` in the hour
//!   field, `10-20/30`, `50/20`): croner takes it and the field fires only at its first value.
//! - A step of 0 (`*/0`), a range that ends before it starts (`30-10`, `FRI-MON`), a number
//!   outside the field's range (`61`): croner refuses them; the message here names the field and
//!   its range.
//!
//! Only new writes are checked: a pattern stored before (read by [`super::CronSpec::parse`])
//! keeps working as it did.

/// One field of a pattern: its name and range.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names this field takes (`JAN`, `MON`), each with its number.
    names: &'static [(&'static str, u32)],
}

const MONTHS: &[(&str, u32)] = &[
    ("JAN", 1),
    ("FEB", 2),
    ("MAR", 3),
    ("APR", 4),
    ("MAY", 5),
    ("JUN", 6),
    ("JUL", 7),
    ("AUG", 8),
    ("SEP", 9),
    ("OCT", 10),
    ("NOV", 11),
    ("DEC", 12),
];

const DAYS: &[(&str, u32)] = &[
    ("SUN", 0),
    ("MON", 1),
    ("TUE", 2),
    ("WED", 3),
    ("THU", 4),
    ("FRI", 5),
    ("SAT", 6),
];

const fn field(name: &'static str, min: u32, max: u32) -> Field {
    Field {
        name,
        min,
        max,
        names: &[],
    }
}

const SECOND: Field = field("second", 0, 59);
const FIVE: [Field; 5] = [
    field("minute", 0, 59),
    field("hour", 0, 23),
    field("day-of-month", 1, 31),
    Field {
        names: MONTHS,
        ..field("month", 1, 12)
    },
    Field {
        names: DAYS,
        ..field("day-of-week", 0, 7)
    },
];

/// Checks each field of `pattern` (5 fields, or 6 with seconds first; a name like `@daily`, or
/// another count of fields, is left to the parser). The error names the pattern, the field, its
/// range and the item.
pub fn check(pattern: &str) -> Result<(), String> {
    let text = pattern.trim();
    let parts: Vec<&str> = text.split_whitespace().collect();
    let fields: Vec<&Field> = match parts.len() {
        5 => FIVE.iter().collect(),
        6 => std::iter::once(&SECOND).chain(FIVE.iter()).collect(),
        _ => return Ok(()),
    };
    for (part, f) in parts.iter().zip(fields) {
        for item in part.split(',') {
            check_item(item, f).map_err(|why| {
                format!(
                    "`{text}`: the {} field ({}-{}) `{item}`: {why}",
                    f.name, f.min, f.max
                )
            })?;
        }
    }
    Ok(())
}

/// A number or a name of `f`; `None` when it is neither (`L`, `5W`, `2#1`: the parser's).
fn value(s: &str, f: &Field) -> Option<u32> {
    s.parse::<u32>().ok().or_else(|| {
        f.names
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(_, v)| *v)
    })
}

/// [`value`] of a range's end: `SUN` is 7 there (the day-of-week field's other Sunday).
fn end_value(s: &str, f: &Field) -> Option<u32> {
    if f.name == "day-of-week" && s.eq_ignore_ascii_case("SUN") {
        return Some(7);
    }
    value(s, f)
}

fn check_item(item: &str, f: &Field) -> Result<(), String> {
    let (range, step) = match item.split_once('/') {
        Some((r, s)) => match s.parse::<u32>() {
            Ok(0) => return Err("a step of 0 names nothing".into()),
            Ok(s) => (r, Some(s)),
            Err(_) => return Ok(()),
        },
        None => (item, None),
    };
    let in_range = |v: u32| -> Result<u32, String> {
        if v < f.min || v > f.max {
            Err(format!("{v} is outside the field's range"))
        } else {
            Ok(v)
        }
    };
    let (lo, hi) = match range {
        "*" | "?" => (f.min, f.max),
        r => match r.split_once('-') {
            // `SAT-SUN`, `MON-SUN`: a range that ends on Sunday by name ends on its 7 (as
            // croner reads it), not on its 0.
            Some((a, b)) => match (value(a, f), end_value(b, f)) {
                (Some(a), Some(b)) => {
                    let (a, b) = (in_range(a)?, in_range(b)?);
                    if b < a {
                        return Err(format!(
                            "the range ends ({b}) before it starts ({a}); a range does not wrap \
                             around (write `{a}-{},{}-{b}` for that)",
                            f.max, f.min
                        ));
                    }
                    (a, b)
                }
                _ => return Ok(()),
            },
            None => match value(r, f) {
                // `a/n` runs from `a` to the field's end.
                Some(a) => (in_range(a)?, if step.is_some() { f.max } else { a }),
                None => return Ok(()),
            },
        },
    };
    let Some(step) = step else {
        return Ok(());
    };
    // Sunday is 0 and 7: `*/7` in the day-of-week field names Sunday alone.
    let weekday = |v: u32| if f.names == DAYS { v % 7 } else { v };
    let mut named: Vec<u32> = (lo..=hi).step_by(step as usize).map(weekday).collect();
    named.sort_unstable();
    named.dedup();
    if named.len() < 2 {
        return Err(format!(
            "a step of {step} over {lo}-{hi} names only {lo} (write `{lo}` if that is meant)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(p: &str) -> String {
        match check(p) {
            Err(e) => e,
            Ok(()) => panic!("`{p}` was taken"),
        }
    }

    #[test]
    fn a_step_that_leaves_one_value_is_refused_naming_the_field_and_its_range() {
        for (p, field) in [
            ("*/90 * * * *", "the minute field (0-59) `*/90`"),
            ("*/60 * * * *", "the minute field (0-59) `*/60`"),
            ("0 */24 * * *", "the hour field (0-23) `*/24`"),
            ("0 0 */31 * *", "the day-of-month field (1-31) `*/31`"),
            ("0 0 1 */12 *", "the month field (1-12) `*/12`"),
            ("0 0 * * */7", "the day-of-week field (0-7) `*/7`"),
            ("*/60 * * * * *", "the second field (0-59) `*/60`"),
            ("10-20/30 * * * *", "the minute field (0-59) `10-20/30`"),
            ("50/20 * * * *", "the minute field (0-59) `50/20`"),
            ("0 0 1 NOV-DEC/3 *", "the month field (1-12) `NOV-DEC/3`"),
        ] {
            let e = refused(p);
            assert!(e.contains(field) && e.contains("names only"), "{p}: {e}");
        }
    }

    #[test]
    fn zero_steps_reversed_ranges_and_numbers_out_of_range_are_named() {
        for (p, why) in [
            ("*/0 * * * *", "a step of 0"),
            ("30-10 * * * *", "ends (10) before it starts (30)"),
            ("0 0 * * FRI-MON", "ends (1) before it starts (5)"),
            ("30-10/5 * * * *", "ends (10) before it starts (30)"),
            ("61 * * * *", "61 is outside"),
            ("0 24 * * *", "24 is outside"),
            ("0 0 0 * *", "0 is outside"),
        ] {
            let e = refused(p);
            assert!(e.contains(why), "{p}: {e}");
        }
    }

    #[test]
    fn usual_patterns_pass() {
        for p in [
            "* * * * *",
            "*/15 * * * *",
            "*/59 * * * *",
            "0 */12 * * *",
            "0 0 */15 * *",
            "0 0 1 */6 *",
            "0 0 * * */2",
            "0 0 * * 0-7/6",
            "30 2 * * MON-FRI",
            "0 9 * * SAT-SUN",
            "0 9 * * mon-sun",
            "0 9 * * FRI-SUN/2",
            "0 9 * * 5#L",
            "0 9 * * 7L",
            "0 0 L * *",
            "0 0 15W * *",
            "0 0 ? * *",
            "*/1 * * * * *",
            "0-50/10 1,5,9-17 * JAN-JUN/2 *",
            "@daily",
            "nonsense",
        ] {
            assert_eq!(check(p), Ok(()), "{p}");
        }
    }
}

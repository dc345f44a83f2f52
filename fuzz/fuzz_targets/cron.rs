//! Cron schedules (`runyard::schedule::cron::CronSpec`, croner + chrono-tz): any pattern in a
//! few time zones (with DST), from any instant.
//!
//! Byte 0 picks the zone, bytes 1..9 the instant, the rest is the pattern. Never a panic; a next
//! firing is strictly after the instant (`next_after`) or at/after it (`next_from`), and the
//! firing after a firing is later still.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use runyard::schedule::cron::CronSpec;

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "Nope/Zone",
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let zone = ZONES[usize::from(data[0]) % ZONES.len()];
    let mut secs = [0u8; 8];
    secs.copy_from_slice(&data[1..9]);
    // Instants between 1970 and 2200.
    let secs = (u64::from_le_bytes(secs) % 7_258_118_400) as i64;
    let Some(from) = Utc.timestamp_opt(secs, 0).single() else {
        return;
    };
    let pattern = String::from_utf8_lossy(&data[9..]);
    let Ok(spec) = CronSpec::parse(&pattern, zone) else {
        return;
    };
    if let Some(c) = spec.next_after(from) {
        assert!(c > from, "`{pattern}` in {zone}: next_after({from}) = {c}");
        if let Some(d) = spec.next_after(c) {
            assert!(d > c, "`{pattern}` in {zone}: next_after({c}) = {d}");
        }
    }
    if let Some(c) = spec.next_from(from) {
        assert!(c >= from, "`{pattern}` in {zone}: next_from({from}) = {c}");
    }
});

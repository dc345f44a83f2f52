//! Duration and time parsing: humantime durations (config values, a submit's `timeout` text),
//! RFC 3339 times (a submit's `run_at`), and every duration key of `runyard.toml` through
//! `Config::from_toml`.
//!
//! Byte 0 picks the mode, the rest is the text:
//! - humantime: `parse_duration(s) = d` implies `parse_duration(format_duration(d)) = d`;
//! - RFC 3339: a parsed time formats and parses back to itself;
//! - config: `<section>.<key> = "<s>"` (or the raw text as a TOML value): never a panic, and a
//!   configuration that loads has durations the server can add to its clocks (`Instant`,
//!   microseconds since the epoch) without overflowing.
#![no_main]

use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use runyard::config::Config;

const KEYS: [(&str, &str); 11] = [
    ("worker", "lease_ttl"),
    ("worker", "shutdown_grace"),
    ("worker", "kill_grace"),
    ("worker", "poll_interval"),
    ("events", "progress_interval"),
    ("retention", "finished"),
    ("retention", "interval"),
    ("retention", "events"),
    ("store", "retry"),
    ("runners", "timeout"),
    ("runners", "ttl_after_finished"),
];

fn usable(name: &str, d: Duration) {
    let now = Instant::now();
    assert!(
        now.checked_add(d).is_some(),
        "`{name}` = {d:?} is accepted but overflows the clock"
    );
    assert!(
        d.as_micros() <= i64::MAX as u128 && SystemTime::now().checked_add(d).is_some(),
        "`{name}` = {d:?} is accepted but overflows a timestamp"
    );
}

fn config(key: usize, raw: bool, text: &str) {
    let (section, name) = KEYS[key % KEYS.len()];
    let value = if raw {
        text.to_string()
    } else {
        // A TOML basic string of the text.
        serde_json::to_string(text).expect("a string serialises")
    };
    let toml = if section == "runners" {
        format!("[[runners]]\nkind = \"service\"\ntypes = [\"*\"]\n{name} = {value}\n")
    } else {
        format!("[{section}]\n{name} = {value}\n")
    };
    let Ok(cfg) = Config::from_toml(&toml) else {
        return;
    };
    let w = &cfg.worker;
    for (n, d) in [
        ("worker.lease_ttl", w.lease_ttl),
        ("worker.shutdown_grace", w.shutdown_grace),
        ("worker.kill_grace", w.kill_grace),
        ("worker.poll_interval", w.poll_interval),
        ("events.progress_interval", cfg.events.progress_interval),
        ("retention.finished", cfg.retention.finished),
        ("retention.interval", cfg.retention.interval),
        ("retention.events", cfg.retention.events),
        ("store.retry", cfg.store.retry),
    ] {
        usable(n, d);
    }
    for r in &cfg.runners {
        for (n, d) in [
            ("runners.timeout", r.timeout),
            ("runners.ttl_after_finished", r.ttl_after_finished),
        ] {
            if let Some(d) = d {
                usable(n, d);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 4 {
        0 => {
            if let Ok(d) = humantime::parse_duration(&text) {
                let shown = humantime::format_duration(d).to_string();
                let back = humantime::parse_duration(&shown)
                    .unwrap_or_else(|e| panic!("{d:?} shown as `{shown}` does not parse: {e}"));
                assert_eq!(back, d, "`{text}` -> {d:?} -> `{shown}`");
            }
        }
        1 => {
            if let Ok(t) = humantime::parse_rfc3339_weak(&text) {
                let shown = humantime::format_rfc3339_nanos(t).to_string();
                let back = humantime::parse_rfc3339(&shown)
                    .unwrap_or_else(|e| panic!("`{text}` shown as `{shown}` does not parse: {e}"));
                assert_eq!(back, t, "`{text}` -> `{shown}`");
            }
        }
        m => config(usize::from(mode / 4), m == 3, &text),
    }
});

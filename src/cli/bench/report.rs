//! The human-readable report: the header and the results table.

use super::child::*;
use super::*;

pub(super) fn print_header(a: &BenchArgs, base: &str, store: &str, child: Option<&ChildServer>) {
    let who = match child {
        Some(c) => format!(
            "child server pid {} (service concurrency {}, local concurrency {}, synchronous {})",
            c.pid, a.service_concurrency, a.local_concurrency, a.synchronous
        ),
        None => "existing server".to_string(),
    };
    eprintln!("runyard bench: {base}, {store} store, {who}");
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; measure with `cargo build --release`");
    }
}

pub(super) fn fmt_lat(l: &Option<Latency>) -> [String; 4] {
    match l {
        Some(l) => [l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms].map(|v| format!("{v:.2}")),
        None => std::array::from_fn(|_| "-".to_string()),
    }
}

pub(super) fn one_line(r: &ScenarioResult) -> String {
    let s = fmt_lat(&r.submit_to_start);
    format!(
        "{} jobs, submit {:.0}/s, end-to-end {:.0} jobs/s, submit->start p50 {} p99 {} ms, not SUCCESS {}",
        r.jobs, r.submit_rate, r.e2e_rate, s[0], s[2], r.not_success
    )
}

pub(super) fn print_table(r: &BenchReport) {
    println!();
    println!(
        "{:<16} {:>6} {:>10} {:>10} | {:^37} | {:^15} | {:>7}",
        "", "", "", "", "submit -> start (ms)", "submit RTT (ms)", "not"
    );
    println!(
        "{:<16} {:>6} {:>10} {:>10} | {:>8} {:>8} {:>9} {:>9} | {:>7} {:>7} | {:>7}",
        "scenario",
        "jobs",
        "submit/s",
        "e2e jobs/s",
        "p50",
        "p90",
        "p99",
        "max",
        "p50",
        "p99",
        "SUCCESS"
    );
    println!("{}", "-".repeat(114));
    for s in &r.results {
        let l = fmt_lat(&s.submit_to_start);
        let t = fmt_lat(&s.submit_rtt);
        println!(
            "{:<16} {:>6} {:>10.0} {:>10.0} | {:>8} {:>8} {:>9} {:>9} | {:>7} {:>7} | {:>7}",
            format!("{} {}", s.runner, s.scenario),
            s.jobs,
            s.submit_rate,
            s.e2e_rate,
            l[0],
            l[1],
            l[2],
            l[3],
            t[0],
            t[2],
            s.not_success + s.submit_errors,
        );
        if !s.not_success_by_status.is_empty() {
            let mut v: Vec<_> = s.not_success_by_status.iter().collect();
            v.sort();
            println!("{:<16} not SUCCESS: {v:?}", "");
        }
    }
    println!();
    println!(
        "e2e jobs/s = jobs / (first submit -> last finished_at); submit/s = accepted jobs / submit phase."
    );
    match r.server_peak_rss_kib {
        Some(k) => println!("server peak RSS (VmHWM): {:.1} MiB", k as f64 / 1024.0),
        None => println!("server peak RSS: unknown (pass --server-pid with --server)"),
    }
    println!(
        "store: {}; build: {}",
        r.store,
        if r.release_build { "release" } else { "debug" }
    );
}

//! How long a job's error may be. A job's `errorMessage` (or a function's error) is kept in
//! several places: the job's `error`, each attempt's `runs[].error` and `runs[].reported`, the
//! events that carry the job, and the server log's `job attempt failed` and `job ended` lines.
//! Unbounded, a 900 KB message reported by three attempts was stored four times and logged
//! whole three times. An error is stored cut to [`MAX_ERROR_BYTES`] (as a log line is cut at
//! 16 KiB), and logged cut further to [`MAX_LOGGED_ERROR_BYTES`].

use runyard_hooks::error_text::capped_error;
pub use runyard_hooks::error_text::{cut_error, MAX_ERROR_BYTES, MAX_LOGGED_ERROR_BYTES};

/// Cuts every error `job` keeps to [`MAX_ERROR_BYTES`]: its `error`, and each attempt's
/// `error`, `time_limit` and reported message. Called by `transition::apply` after every
/// command, the one place every writer of an error goes through (a host failure's, a time
/// limit's, a report's, a cancel's), so that none can store one whole.
pub fn cap_job_errors(job: &mut super::Job) {
    fn cap(e: &mut String) {
        if e.len() > MAX_ERROR_BYTES {
            *e = capped_error(std::mem::take(e));
        }
    }
    job.error.iter_mut().for_each(cap);
    for r in &mut job.runs {
        r.error
            .iter_mut()
            .chain(r.time_limit.iter_mut())
            .for_each(cap);
        if let Some(super::Reported::Error { message, .. } | super::Reported::Timeout { message }) =
            &mut r.reported
        {
            cap(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_errors_are_kept_and_long_ones_cut_at_a_character_boundary() {
        assert_eq!(cut_error("boom", 16), "boom");
        let long = format!("x{}", "é".repeat(449_999));
        let cut = capped_error(long.clone());
        assert!(
            cut.len() <= MAX_ERROR_BYTES && cut.len() > MAX_ERROR_BYTES - 4,
            "{}",
            cut.len()
        );
        assert!(
            cut.ends_with("… [runyard: cut, 899999 bytes in all]"),
            "{cut:.60}"
        );
        assert!(long.starts_with(cut.trim_end_matches("… [runyard: cut, 899999 bytes in all]")));
        // Cut again: the same, or shorter with the original's length.
        assert_eq!(capped_error(cut.clone()), cut);
        let logged = cut_error(&cut, MAX_LOGGED_ERROR_BYTES);
        assert!(logged.len() <= MAX_LOGGED_ERROR_BYTES);
        assert!(
            logged.ends_with("… [runyard: cut, 899999 bytes in all]"),
            "{logged}"
        );
        assert_eq!(logged.matches("[runyard: cut").count(), 1);
        // A limit below the note's own length: the note alone.
        assert_eq!(cut_error("abcdef", 3), "… [runyard: cut, 6 bytes in all]");
    }

    /// Review of the error cap: a job could forge the note: an error over the cap that ended
    /// `… [runyard: cut, 5 bytes in all]` was stored saying it had 5 bytes. A note is trusted
    /// only in a text no longer than a stored error can be (one this cap made).
    #[test]
    fn a_note_in_a_text_over_the_cap_is_not_trusted() {
        let forged = format!("{}… [runyard: cut, 5 bytes in all]", "x".repeat(20_000));
        let cut = capped_error(forged.clone());
        let note = format!("… [runyard: cut, {} bytes in all]", forged.len());
        assert!(cut.ends_with(&note), "{}", &cut[cut.len() - 60..]);
        assert_eq!(cut.matches("[runyard: cut").count(), 1);
        // A stored (capped) one still keeps its original's length when cut for the log.
        let logged = cut_error(&cut, MAX_LOGGED_ERROR_BYTES);
        assert!(logged.ends_with(&note), "{logged}");
    }
}

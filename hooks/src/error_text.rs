//! How long a job's error may be: the server stores a job's `errorMessage` (or a function's
//! error) cut to [`MAX_ERROR_BYTES`] and logs it cut to [`MAX_LOGGED_ERROR_BYTES`]; the job
//! clients cut a longer message the same way before they send it, so that a message over the
//! hook's body limit is not refused whole (`413`) and the job's error lost with it.

use std::borrow::Cow;

/// The most bytes of a job's stored error, the note of the cut included.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;
/// The most bytes of a job's error in a server log line, the note of the cut included.
pub const MAX_LOGGED_ERROR_BYTES: usize = 1024;

const CUT_START: &str = "… [runyard: cut, ";
const CUT_END: &str = " bytes in all]";

/// `text` if it holds at most `max` bytes, else its beginning, cut at a character boundary,
/// followed by a note of how long it was: `… [runyard: cut, 899999 bytes in all]`, at most
/// `max` bytes in all. A text cut before (at most [`MAX_ERROR_BYTES`], as stored) keeps its
/// note's length, so cutting again (shorter, or the same) says how long the original was and
/// never adds a second note; a note in a longer text is not trusted (the job may have written it).
pub fn cut_error(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    // Only a text no longer than a stored error can carry a note this cap made: a longer one
    // is the job's own text, whose note may be forged.
    let made_here = text.len() <= MAX_ERROR_BYTES;
    let total = cut_length(text).filter(|_| made_here).unwrap_or(text.len());
    let note = format!("{CUT_START}{total}{CUT_END}");
    let mut end = max.saturating_sub(note.len()).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{note}", &text[..end]))
}

/// The length a cut text's note gives for its original.
fn cut_length(text: &str) -> Option<usize> {
    let body = text.strip_suffix(CUT_END)?;
    let at = body.rfind(CUT_START)?;
    body[at + CUT_START.len()..].parse().ok()
}

/// [`cut_error`] to [`MAX_ERROR_BYTES`]: an error as it is stored (and as the job clients send it).
pub fn capped_error(text: String) -> String {
    match cut_error(&text, MAX_ERROR_BYTES) {
        Cow::Borrowed(_) => text,
        Cow::Owned(cut) => cut,
    }
}

//! What the client commands read of an answer (bounded: an endless body is not read to its end)
//! and show of the URLs they were given or sent to (a password as `***`, never in full).

use bytes::{Bytes, BytesMut};

/// The most of a JSON answer the CLI reads. runyard's largest is a page of jobs: 4 MiB plus the
/// job that passes it (docs/api.md, "Pages bounded by bytes"), a job being a few request bodies
/// of `api.max_body_bytes` (1 MiB by default) each; an answer past this is not runyard's.
pub const MAX_JSON: usize = 64 << 20;
/// The most of any other answer (an error, a page that is not runyard's) read for its message.
pub const MAX_OTHER: usize = 64 << 10;

/// `r`'s body, read up to `cap` bytes; `None` when it has more (the rest is not read).
pub async fn read_capped(
    mut r: reqwest::Response,
    cap: usize,
) -> Result<Option<Bytes>, reqwest::Error> {
    if r.content_length().is_some_and(|n| n > cap as u64) {
        return Ok(None);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = r.chunk().await? {
        if body.len() + chunk.len() > cap {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// `url` as messages show it: a password in it as `***`, no trailing `/`.
pub fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string().trim_end_matches('/').to_string()
}

/// Text given as a URL (`--server`, a `Location`) as messages show it: parsed, as
/// [`shown_url`]; not a URL (a bad port, a space in the host), what stands between the scheme and
/// the last `@` is taken for `user:password` and the password shown as `***`, whatever follows.
/// So is a URL of another scheme (`bob:pw@host` parses as the scheme `bob`), and one with an `@`
/// past its host (`http://bob:p@ss/w@host`: a password with a `/` makes its end the path).
pub fn shown_text(text: &str) -> String {
    if let Ok(u) = reqwest::Url::parse(text) {
        let after_host = [Some(u.path()), u.query(), u.fragment()];
        if matches!(u.scheme(), "http" | "https")
            && !after_host.iter().flatten().any(|p| p.contains('@'))
        {
            return shown_url(&u);
        }
    }
    let start = text.find("://").map_or(0, |i| i + 3);
    let Some(at) = text[start..].rfind('@').map(|i| start + i) else {
        return text.to_string();
    };
    let userinfo = &text[start..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &text[..start],
            &userinfo[..colon],
            &text[at..]
        ),
        None => text.to_string(),
    }
}

/// At most `max` characters of `text`, with how long it was when cut (an argument echoed in a
/// message: a 64 KiB id is not printed whole), its control, invisible and bidirectional
/// characters escaped (`\u{202e}`: a bidi override shown raw reversed the rest of the message,
/// probe s54b F7).
pub fn clipped(text: &str, max: usize) -> String {
    crate::job::echoed(text, max)
}

/// The message for a redirect answer `r` (the CLI follows none: a POST sent again as a GET would
/// read where it was to write); `api_path` is the part of the URL asked after `--server`.
pub fn redirect_of(r: &reqwest::Response, api_path: &str) -> String {
    let location = location_of(r);
    redirect_message(r.status().as_u16(), r.url(), api_path, location.as_deref())
}

/// `r`'s `Location`, as text.
fn location_of(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get(reqwest::header::LOCATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// [`redirect_of`] for `bench`, which sends no credentials and refuses a `--server` with them:
/// the Location is named, and its address suggested, without its user and password (it
/// suggested `http://bob:***@...`, which bench then refused: probe s53b).
pub fn redirect_of_plain(r: &reqwest::Response, api_path: &str) -> String {
    let location = location_of(r).map(|text| match r.url().join(&text) {
        Ok(mut u) if u.has_authority() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => text,
    });
    redirect_message(r.status().as_u16(), r.url(), api_path, location.as_deref())
}

/// [`redirect_of`]'s words, from the answer's parts: `requested` is the URL asked, `api_path` its
/// part after `--server`, `location` the answer's `Location` (`None`: without one). When the
/// Location is the same path under another base (`http://` to `https://`, another host), that
/// base is the `--server` to give.
pub fn redirect_message(
    status: u16,
    requested: &reqwest::Url,
    api_path: &str,
    location: Option<&str>,
) -> String {
    let Some(location) = location else {
        return format!(
            "the server answered a redirect (HTTP {status}) with no Location: runyard's API \
             redirects nothing; is --server the address of runyard's API?"
        );
    };
    let Ok(mut target) = requested.join(location) else {
        return format!(
            "the server redirected to `{}` (HTTP {status}): the CLI follows no redirect; give \
             runyard's own address as --server",
            clipped(&shown_text(location), 300)
        );
    };
    let shown = clipped(&shown_url(&target), 300);
    let base = target
        .path()
        .strip_suffix(api_path)
        .filter(|_| !api_path.is_empty() && matches!(target.scheme(), "http" | "https"))
        .map(str::to_string);
    match base {
        Some(base) => {
            target.set_path(&base);
            target.set_query(None);
            target.set_fragment(None);
            format!(
                "the server redirected to {shown} (HTTP {status}): the CLI follows no redirect; \
                 give that address as --server: {}",
                clipped(&shown_url(&target), 300)
            )
        }
        None => format!(
            "the server redirected to {shown} (HTTP {status}): the CLI follows no redirect; give \
             runyard's own address as --server"
        ),
    }
}

/// The md5 (lowercase hex) an `ETag` gives: `"<32 hex>"`, weakened (`W/`) or suffixed (`-gzip`)
/// by a proxy that decoded the bytes.
pub fn md5_of_etag(tag: &str) -> Option<String> {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
    let (hex, rest) = inner.split_at_checked(32)?;
    (hex.bytes().all(|b| b.is_ascii_hexdigit()) && (rest.is_empty() || rest.starts_with('-')))
        .then(|| hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_text_that_is_not_a_url_is_masked() {
        for (text, shown) in [
            (
                "http://bob:hunter2secret@127.0.0.1:99999",
                "http://bob:***@127.0.0.1:99999",
            ),
            (
                "http://bob:p@ss/w#rd@[::1x]:80/",
                "http://bob:***@[::1x]:80/",
            ),
            ("http://bob:pw@bad host", "http://bob:***@bad host"),
            ("bob:pw@host", "bob:***@host"),
            ("http://bob:p@ss/w@host/", "http://bob:***@host/"),
            ("http://bob@bad host", "http://bob@bad host"),
            ("http://127.0.0.1:99999", "http://127.0.0.1:99999"),
            (
                "https://bob:pw@example.com/x",
                "https://bob:***@example.com/x",
            ),
        ] {
            assert_eq!(shown_text(text), shown, "{text}");
        }
    }

    #[test]
    fn a_redirect_names_the_base_to_give_as_server() {
        let req = reqwest::Url::parse("http://h:1/base/async/jobs?limit=5").unwrap();
        let m = redirect_message(
            301,
            &req,
            "/async/jobs",
            Some("https://u:pw@h/base/async/jobs?limit=5"),
        );
        assert!(
            m.contains("give that address as --server: https://u:***@h/base"),
            "{m}"
        );
        assert!(!m.contains("pw"), "{m}");
        let m = redirect_message(302, &req, "/async/jobs", Some("/login"));
        assert!(
            m.contains("http://h:1/login") && m.contains("own address"),
            "{m}"
        );
        let m = redirect_message(302, &req, "/async/jobs", None);
        assert!(m.contains("no Location"), "{m}");
    }

    #[test]
    fn a_long_text_is_clipped_with_its_length() {
        assert_eq!(clipped("abc", 3), "abc");
        assert_eq!(clipped("abcd", 3), "abc... (4 bytes)");
    }

    #[test]
    fn an_etag_gives_the_md5_a_proxy_may_have_weakened_or_suffixed() {
        let md5 = "5d41402abc4b2a76b9719d911017c592";
        for tag in [
            format!("\"{md5}\""),
            format!("W/\"{md5}\""),
            format!("\"{md5}-gzip\""),
            format!(" \"{}\" ", md5.to_uppercase()),
        ] {
            assert_eq!(md5_of_etag(&tag).as_deref(), Some(md5), "{tag}");
        }
        for tag in [
            md5.to_string(),
            format!("\"{}\"", &md5[..31]),
            format!("\"{md5}x\""),
            format!("\"{}g\"", &md5[..31]),
            "\"\"".into(),
            "\"é\"".into(),
            "W/".into(),
        ] {
            assert_eq!(md5_of_etag(&tag), None, "{tag}");
        }
    }
}

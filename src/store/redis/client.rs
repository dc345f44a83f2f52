//! The store's one `redis::Client`, made once at connect: every connection of the process (the
//! shared connection and its reconnects, the notice subscriber, the hand-over's, the event tail)
//! is made from it, so all of them speak TLS to a `rediss://` URL and trust the same certificate
//! authorities: the system's (rustls-native-certs: `/etc/ssl/certs`, `SSL_CERT_FILE`,
//! `SSL_CERT_DIR`), or only those of `store.redis_ca` when it is set.

use ::redis::{Client, TlsCertificates};

use super::RedisSettings;
use crate::store::{Result, StoreError};

/// The marker of a PEM certificate: a CA file without one would trust nothing, and every
/// connection would fail with a certificate error instead of this file's.
const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----";

/// The client of `s.url`, with `s.ca`'s certificates as the only trusted roots when set.
pub(super) fn client(s: &RedisSettings) -> Result<Client> {
    let Some(ca) = &s.ca else {
        return Client::open(s.url.as_str())
            .map_err(|e| StoreError::Unavailable(format!("`redis`: {e}")));
    };
    let bad = |why: String| StoreError::Unavailable(format!("`store.redis_ca`: {why}"));
    let pem = std::fs::read(ca).map_err(|e| bad(format!("cannot read {}: {e}", ca.display())))?;
    if !String::from_utf8_lossy(&pem).contains(PEM_CERT) {
        return Err(bad(format!(
            "{} holds no PEM certificate ({PEM_CERT})",
            ca.display()
        )));
    }
    let certs = TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    Client::build_with_tls(s.url.as_str(), certs).map_err(|e| {
        StoreError::Unavailable(format!(
            "`redis` with `store.redis_ca` {}: {e}",
            ca.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, ca: Option<&std::path::Path>) -> RedisSettings {
        RedisSettings {
            ca: ca.map(Into::into),
            ..RedisSettings::new(url)
        }
    }

    #[test]
    fn a_rediss_url_makes_a_tls_client() {
        let c = client(&settings("rediss://127.0.0.1:6380", None)).expect("a TLS client");
        assert!(
            matches!(
                c.get_connection_info().addr,
                ::redis::ConnectionAddr::TcpTls { .. }
            ),
            "{:?}",
            c.get_connection_info().addr
        );
    }

    #[test]
    fn a_ca_file_that_is_missing_or_holds_no_certificate_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.pem");
        let e = client(&settings("rediss://127.0.0.1:6380", Some(&missing)))
            .expect_err("no file")
            .to_string();
        assert!(
            e.contains("store.redis_ca") && e.contains("missing.pem"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = client(&settings("rediss://127.0.0.1:6380", Some(&empty)))
            .expect_err("no certificate")
            .to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}

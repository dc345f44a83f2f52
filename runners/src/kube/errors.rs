//! Kubernetes API errors in words: the error with its causes (`Connection refused`, a TLS
//! failure), and, when the API server could not be reached, its address; and the bound of one
//! API request ([`bounded`]).

use std::future::Future;
use std::time::Duration;

/// No answer from the API server within `kube.api_timeout`.
#[derive(Debug)]
pub(super) struct NoAnswer(pub Duration);

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no answer from the Kubernetes API within {} (`kube.api_timeout`)",
            humantime::format_duration(self.0)
        )
    }
}

impl std::error::Error for NoAnswer {}

/// One API request (not a watch, not a log stream) bounded by `limit`, `kube.api_timeout`: a
/// request past it fails as a transport error does (`kube::Error::Service`). kube's client
/// bounds no request by itself (its `read_timeout`, unset by default, would apply to every read
/// of a connection, the Job's watch and the pods' log streams included, which wait long by
/// design), so a half-open connection or a load balancer that drops a connection silently
/// would hang the call for good; its retries of `429`/`503`/`504` count within the bound.
pub(super) async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, ::kube::Error>>,
) -> Result<T, ::kube::Error> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r,
        Err(_) => Err(::kube::Error::Service(Box::new(NoAnswer(limit)))),
    }
}

/// `e` and each of its causes; the API server's address (`server`) for an error that is not
/// the API server's own answer.
pub(super) fn describe(e: &::kube::Error, server: Option<&str>) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let m = s.to_string();
        // A cause repeated in its wrapper's words (kube and hyper both do) is said once.
        if !last.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        last = m;
        src = s.source();
    }
    match (e, server) {
        (::kube::Error::Api(_), _) | (_, None) => out,
        (_, Some(s)) => format!("{out} (API server {s})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_api_server_is_named_with_the_cause() {
        // A port with nothing listening: bound, then dropped.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let url = format!("http://{addr}");
        let cfg = ::kube::Config::new(url.parse().unwrap());
        let client = ::kube::Client::try_from(cfg).unwrap();
        let api: ::kube::Api<k8s_openapi::api::batch::v1::Job> =
            ::kube::Api::namespaced(client, "default");
        let e = api
            .list(&Default::default())
            .await
            .expect_err("nothing listens there");
        let said = describe(&e, Some(&url));
        assert!(said.contains("Connection refused"), "{said}");
        assert!(said.ends_with(&format!("(API server {url})")), "{said}");
    }
}

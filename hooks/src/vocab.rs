//! Shared vocabulary: the words the runners, the job model and the stores all speak.
//!
//! These types live on the bottom floor (this crate) so that arrows point down only:
//! `runyard-runners` depends on them, and so do the job model and the stores of `runyard`,
//! without the model or the stores importing anything from the runners.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest log line kept whole, in bytes: the runners' line forwarders split longer lines into
/// pieces of this size, and the hook keeps at most this much of a reported line.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// A file property's name as the server takes it (and a file path's `store` segment): 1-64 ASCII
/// letters, digits, `_` or `-`. The server refuses any other (400 `bad_path`); the job clients
/// refuse them before sending, since a name such as `.` or `..` would be resolved as a path by
/// the URL and reach another route.
pub fn valid_property(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 64
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A file path's `uuid` segment as the server takes it: not empty, no `/`, `\` or `.` (so never
/// a segment the URL would resolve as a path). The server and both job clients check it.
pub fn valid_file_uuid(uuid: &str) -> bool {
    !uuid.is_empty() && !uuid.contains(['/', '\\', '.'])
}

/// The rule of [`valid_property`] and [`valid_file_uuid`] as a refusal says it (400 `bad_path`):
/// it said "plain names (letters, digits, '_', '-')", wrong for a name of 65 letters and for the
/// uuid (probe s54b F2).
pub const FILE_PATH_RULE: &str = "store and property must be 1-64 ASCII letters, digits, '_' or \
     '-', and uuid the job's id (not empty, no '/', '\\' or '.')";

/// Which output stream a log line came from. On the wire (JSON, stored rows) it is the
/// lowercase name: `stdout`, `stderr`, `job`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A line the job or the server logged through an API (hook, service context).
    Job,
}

impl LogStream {
    /// The wire name: `stdout`, `stderr` or `job` (the same as its serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Job => "job",
        }
    }

    /// The stream of a stored name; anything unknown reads as [`LogStream::Job`] (what the
    /// stores have always done with rows they did not write).
    pub fn from_stored(name: &str) -> Self {
        name.parse().unwrap_or(LogStream::Job)
    }
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`LogStream`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a log stream (stdout, stderr or job)")]
pub struct UnknownLogStream(pub String);

impl FromStr for LogStream {
    type Err = UnknownLogStream;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(LogStream::Stdout),
            "stderr" => Ok(LogStream::Stderr),
            "job" => Ok(LogStream::Job),
            other => Err(UnknownLogStream(other.to_string())),
        }
    }
}

/// What identifies a launched execution across restarts; saved on the job as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunHandle {
    /// The runner kind that made it.
    pub kind: RunKind,
    /// A human-readable id: a pid, a container id, a Kubernetes Job name.
    pub id: String,
    /// Runner-specific data needed to find the work again.
    #[serde(default)]
    pub data: Value,
}

/// The runner kind that made a [`RunHandle`]. Stored (in the job record) as its lowercase name:
/// `local`, `service`, `docker`, `kube`. A name this version does not know (written by a newer
/// one) reads as [`RunKind::Unknown`] and writes back unchanged, so a job record never fails to
/// read because of it; no runner recovers such work.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunKind {
    /// A child process.
    Local,
    /// An in-process async Rust function.
    Service,
    /// A container of the Docker Engine API.
    Docker,
    /// A Kubernetes batch/v1 Job.
    Kube,
    /// A kind this version does not know, kept as stored.
    Unknown(String),
}

impl RunKind {
    /// The stored name.
    pub fn as_str(&self) -> &str {
        match self {
            RunKind::Local => "local",
            RunKind::Service => "service",
            RunKind::Docker => "docker",
            RunKind::Kube => "kube",
            RunKind::Unknown(name) => name,
        }
    }
}

impl From<&str> for RunKind {
    fn from(name: &str) -> Self {
        match name {
            "local" => RunKind::Local,
            "service" => RunKind::Service,
            "docker" => RunKind::Docker,
            "kube" => RunKind::Kube,
            other => RunKind::Unknown(other.to_string()),
        }
    }
}

impl fmt::Display for RunKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RunKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RunKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(RunKind::from(name.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn log_streams_keep_their_wire_names() {
        for (s, name) in [
            (LogStream::Stdout, "stdout"),
            (LogStream::Stderr, "stderr"),
            (LogStream::Job, "job"),
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), json!(name));
            assert_eq!(serde_json::from_value::<LogStream>(json!(name)).unwrap(), s);
            assert_eq!(s.as_str(), name);
            assert_eq!(s.to_string(), name);
            assert_eq!(name.parse::<LogStream>().unwrap(), s);
            assert_eq!(LogStream::from_stored(name), s);
        }
        assert!("STDOUT".parse::<LogStream>().is_err());
        assert!(serde_json::from_value::<LogStream>(json!("other")).is_err());
        assert_eq!(LogStream::from_stored("other"), LogStream::Job);
    }

    #[test]
    fn run_handles_keep_their_json_form() {
        let h = RunHandle {
            kind: RunKind::Local,
            id: "42".into(),
            data: json!({"pid": 42}),
        };
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v, json!({"kind": "local", "id": "42", "data": {"pid": 42}}));
        assert_eq!(serde_json::from_value::<RunHandle>(v).unwrap(), h);
        // `data` may be absent (handles saved without it).
        let bare: RunHandle =
            serde_json::from_value(json!({"kind": "service", "id": "j"})).unwrap();
        assert_eq!(bare.data, Value::Null);
    }

    #[test]
    fn run_kinds_read_every_stored_name_and_keep_unknown_ones() {
        for (kind, name) in [
            (RunKind::Local, "local"),
            (RunKind::Service, "service"),
            (RunKind::Docker, "docker"),
            (RunKind::Kube, "kube"),
        ] {
            let stored = json!({"kind": name, "id": "x"});
            let h: RunHandle = serde_json::from_value(stored.clone()).unwrap();
            assert_eq!(h.kind, kind);
            assert_eq!(h.kind.as_str(), name);
            assert_eq!(serde_json::to_value(&h).unwrap()["kind"], json!(name));
        }
        // A kind from a newer version: read, not refused, and written back as it was.
        let stored = json!({"kind": "lambda", "id": "f", "data": {"arn": "a"}});
        let h: RunHandle = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(h.kind, RunKind::Unknown("lambda".into()));
        assert_eq!(serde_json::to_value(&h).unwrap(), stored);
        // Also from a borrowed-string reader (the stores read records from bytes).
        let h: RunHandle = serde_json::from_slice(br#"{"kind":"kube","id":"k"}"#).unwrap();
        assert_eq!(h.kind, RunKind::Kube);
        let escaped: RunHandle = serde_json::from_str(r#"{"kind":"k\u0075be","id":"k"}"#).unwrap();
        assert_eq!(escaped.kind, RunKind::Kube);
    }
}

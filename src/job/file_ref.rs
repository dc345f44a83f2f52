//! A file attached to a job, and which attempt's it is ([`FileRef::attempt`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A file attached to a job (an input before it runs, or an output it uploaded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRef {
    /// md5 of the content (the blob's key).
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
    /// MIME type.
    pub mimetype: String,
    /// Original file name.
    pub name: String,
    /// Free-form metadata given at upload.
    #[serde(default)]
    pub metadata: Value,
    /// The attempt that uploaded it through the job hook (an output); `None` for a file a client
    /// attached. A job's uploads are kept only while their attempt may still succeed: the next
    /// attempt starts without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// How many files one property of a job may hold.
pub const MAX_FILES_PER_PROPERTY: usize = 1000;

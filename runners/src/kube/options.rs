//! The kube runner's pod and lifecycle options (`[runners.kube]` in runyard.toml) and their
//! validation. Every check names the key it refuses, relative to the `kube` table.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Affinity, Toleration};
use serde::{Deserialize, Serialize};

/// Pod settings and the bounds of an attempt's life on the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeOptions {
    /// Container resource requests, e.g. `{cpu = "250m", memory = "256Mi"}` (a namespace with a
    /// ResourceQuota on compute refuses pods without them).
    pub requests: BTreeMap<String, String>,
    /// Container resource limits.
    pub limits: BTreeMap<String, String>,
    /// Names of Secrets (in the Jobs' namespace) used to pull the image.
    pub image_pull_secrets: Vec<String>,
    /// The pods' `nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// The pods' `tolerations`, as in the Kubernetes API (`key`, `operator`, `value`, `effect`,
    /// `tolerationSeconds`).
    pub tolerations: Vec<Toleration>,
    /// The pods' `affinity`, as in the Kubernetes API.
    pub affinity: Option<Affinity>,
    /// Extra annotations of the pods (e.g. `sidecar.istio.io/inject = "false"`).
    pub annotations: BTreeMap<String, String>,
    /// `runAsUser` of the pods (never 0); `runAsNonRoot` is always set.
    pub run_as_user: Option<i64>,
    /// `runAsGroup` of the pods.
    pub run_as_group: Option<i64>,
    /// The pods' `terminationGracePeriodSeconds`: how long a deleted pod has after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub termination_grace: Duration,
    /// How long a container may fail to pull its image (`ErrImagePull`, `ImagePullBackOff`) or
    /// to be created (`CreateContainerConfigError`, `CreateContainerError`) before the attempt
    /// fails with that reason.
    #[serde(with = "humantime_serde")]
    pub image_pull_timeout: Duration,
    /// How long an attempt may have no running pod (no pod created, e.g. `FailedCreate` by a
    /// quota; a pod `Unschedulable`; a pod still Pending) before it fails with the reason.
    #[serde(with = "humantime_serde")]
    pub start_timeout: Duration,
    /// `activeDeadlineSeconds` of a Job whose attempt has no `timeout` (a backstop: with a
    /// timeout the deadline is the timeout plus a margin).
    #[serde(with = "humantime_serde")]
    pub active_deadline: Duration,
    /// How long to wait for `Complete`/`Failed` after `SuccessCriteriaMet`/`FailureTarget`, or
    /// for the pod after its `job` container ended (a sidecar that never exits), before the
    /// outcome is decided from what is known and the Job is deleted.
    #[serde(with = "humantime_serde")]
    pub finish_timeout: Duration,
    /// How long, beyond the grace period, to wait for a deleted Job and its pods to be gone.
    #[serde(with = "humantime_serde")]
    pub delete_timeout: Duration,
    /// How often the attempt's pods (and, while it has none, its Job's events) are read.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long one Kubernetes API request (every one but the Job's watch and the pod log's
    /// stream, which are long by design) may go unanswered before it fails: kube's client
    /// bounds none by itself, and a half-open connection would hang it for good.
    #[serde(with = "humantime_serde")]
    pub api_timeout: Duration,
}

impl Default for KubeOptions {
    fn default() -> Self {
        Self {
            requests: BTreeMap::new(),
            limits: BTreeMap::new(),
            image_pull_secrets: Vec::new(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            annotations: BTreeMap::new(),
            run_as_user: Some(DEFAULT_UID),
            run_as_group: Some(DEFAULT_UID),
            termination_grace: Duration::from_secs(30),
            image_pull_timeout: Duration::from_secs(120),
            start_timeout: Duration::from_secs(600),
            active_deadline: Duration::from_secs(24 * 3600),
            finish_timeout: Duration::from_secs(60),
            delete_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_secs(2),
            api_timeout: Duration::from_secs(30),
        }
    }
}

/// The default `runAsUser`/`runAsGroup`: the conventional "nonroot" id, so that images whose
/// USER is root or a name (which the kubelet cannot check against `runAsNonRoot`) still start.
pub const DEFAULT_UID: i64 = 65532;

/// A refused option: the key (relative to the `kube` table) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionError {
    /// E.g. `requests.cpu`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// A problem with `key`, as a validation result.
fn bad(key: String, message: String) -> Result<(), OptionError> {
    Err(OptionError { key, message })
}

impl KubeOptions {
    /// Checks every option; the first problem names its key.
    pub fn validate(&self) -> Result<(), OptionError> {
        self.check_resources()?;
        self.check_names()?;
        self.check_tolerations()?;
        self.check_bounds()
    }

    /// `requests` and `limits`.
    fn check_resources(&self) -> Result<(), OptionError> {
        for (table, map) in [("requests", &self.requests), ("limits", &self.limits)] {
            for (k, v) in map {
                if !is_qualified_name(k) {
                    return bad(format!("{table}.{k}"), "is not a resource name".into());
                }
                if !is_quantity(v) {
                    return bad(
                        format!("{table}.{k}"),
                        format!("`{v}` is not a Kubernetes quantity (e.g. `500m`, `2Gi`)"),
                    );
                }
            }
        }
        Ok(())
    }

    /// Secret names, node selector and annotations.
    fn check_names(&self) -> Result<(), OptionError> {
        for (i, s) in self.image_pull_secrets.iter().enumerate() {
            if !is_dns_subdomain(s) {
                return bad(
                    format!("image_pull_secrets[{i}]"),
                    format!("`{s}` is not a Secret name"),
                );
            }
        }
        for (k, v) in &self.node_selector {
            if !is_qualified_name(k) {
                return bad(format!("node_selector.{k}"), "is not a label key".into());
            }
            if !is_label_value(v) {
                return bad(
                    format!("node_selector.{k}"),
                    format!("`{v}` is not a label value"),
                );
            }
        }
        for k in self.annotations.keys() {
            if !is_qualified_name(k) {
                return bad(
                    format!("annotations.{k}"),
                    "is not an annotation key".into(),
                );
            }
        }
        Ok(())
    }

    /// Toleration operators and effects.
    fn check_tolerations(&self) -> Result<(), OptionError> {
        for (i, t) in self.tolerations.iter().enumerate() {
            if let Some(op) = &t.operator {
                if op != "Exists" && op != "Equal" {
                    return bad(
                        format!("tolerations[{i}].operator"),
                        "must be `Exists` or `Equal`".into(),
                    );
                }
            }
            if let Some(e) = &t.effect {
                if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&e.as_str()) {
                    return bad(
                        format!("tolerations[{i}].effect"),
                        "must be `NoSchedule`, `PreferNoSchedule` or `NoExecute`".into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// Ids and durations within their bounds.
    fn check_bounds(&self) -> Result<(), OptionError> {
        for (key, id) in [
            ("run_as_user", self.run_as_user),
            ("run_as_group", self.run_as_group),
        ] {
            if let Some(id) = id {
                if !(1..=i64::from(i32::MAX)).contains(&id) {
                    return bad(
                        key.into(),
                        "must be between 1 and 2147483647 (pods never run as root)".into(),
                    );
                }
            }
        }
        for (key, d, min) in [
            ("termination_grace", self.termination_grace, Duration::ZERO),
            (
                "image_pull_timeout",
                self.image_pull_timeout,
                Duration::from_millis(1),
            ),
            (
                "start_timeout",
                self.start_timeout,
                Duration::from_millis(1),
            ),
            (
                "active_deadline",
                self.active_deadline,
                Duration::from_secs(1),
            ),
            (
                "finish_timeout",
                self.finish_timeout,
                Duration::from_millis(1),
            ),
            (
                "delete_timeout",
                self.delete_timeout,
                Duration::from_millis(1),
            ),
            (
                "poll_interval",
                self.poll_interval,
                Duration::from_millis(1),
            ),
            ("api_timeout", self.api_timeout, Duration::from_millis(1)),
        ] {
            if d < min || d > Duration::from_secs(365 * 24 * 3600) {
                return bad(
                    key.into(),
                    format!(
                        "must be between {} and 365 days",
                        humantime::format_duration(min)
                    ),
                );
            }
        }
        Ok(())
    }
}

/// Kubernetes' `C_IDENTIFIER` rule for env names (`[A-Za-z_][A-Za-z0-9_]*`), which
/// `validation.IsEnvVarName` applied before 1.32's relaxed names; the strict rule works everywhere.
pub fn is_env_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !p.starts_with('-')
                && !p.ends_with('-')
        })
}

/// A label value: empty, or at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// A qualified name (label and annotation keys, resource names): an optional DNS subdomain
/// prefix and `/`, then a non-empty label value.
pub fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

/// A Kubernetes quantity: a decimal number and an optional suffix (`Ki`..`Ei`, `n`, `u`, `m`,
/// `k`, `M`..`E`, or a decimal exponent `e3`).
pub fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return false;
    }
    const SUFFIXES: &[&str] = &[
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    if SUFFIXES.contains(&suffix) {
        return true;
    }
    match suffix.strip_prefix(['e', 'E']) {
        Some(exp) => {
            let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            !exp.is_empty() && exp.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_quantities() {
        for ok in ["A", "_x", "JOB_1", "a9"] {
            assert!(is_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A.B", "A B", "É"] {
            assert!(!is_env_name(bad), "{bad}");
        }
        for ok in ["1", "250m", "0.5", "2Gi", "1e3", "128974848"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "m", "1.2.3", "2GB", "1e", "abc"] {
            assert!(!is_quantity(bad), "{bad}");
        }
        assert!(is_qualified_name("nvidia.com/gpu"));
        assert!(is_qualified_name("cpu"));
        assert!(!is_qualified_name("a/b/c"));
        assert!(!is_qualified_name("/x"));
    }

    #[test]
    fn validation_names_the_key() {
        let mut o = KubeOptions::default();
        assert_eq!(o.validate(), Ok(()));
        o.limits.insert("memory".into(), "lots".into());
        assert_eq!(o.validate().unwrap_err().key, "limits.memory");
        let mut o = KubeOptions {
            run_as_user: Some(0),
            ..Default::default()
        };
        assert_eq!(o.validate().unwrap_err().key, "run_as_user");
        o.run_as_user = None;
        o.image_pull_secrets = vec!["Not_A_Name".into()];
        assert_eq!(o.validate().unwrap_err().key, "image_pull_secrets[0]");
    }
}

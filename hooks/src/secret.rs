//! The job's secret key and how the server derives it.
//!
//! Every job attempt gets its own secret, handed to the job as `JOB_SECRET_KEY`. The server never
//! stores it: it derives it again from its master key whenever it has to check a signature, so a
//! secret is `hex(HMAC-SHA256(master_key, "runyard/job-secret/v1\n" + job_id + "\n" + attempt))`.
//! A retry (a new attempt) therefore gets a new secret, and the old attempt's secret stops working
//! as soon as the server checks signatures against the current attempt.

use std::fmt;

use crate::sign::hmac_sha256;

/// Domain-separation prefix of [`derive_job_secret`]; changing it changes every secret.
const DERIVATION_PREFIX: &str = "runyard/job-secret/v1\n";

/// A job's secret key (`JOB_SECRET_KEY`).
///
/// The value is only reachable through [`Secret::expose`]: `Debug` prints `Secret(***)` and there is
/// no `Display`, so a secret cannot end up in a log line or an error message by accident.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret key read from the environment, a config file or [`derive_job_secret`].
    pub fn from_string(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for signing or for handing it to a job's environment. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Derives the secret of attempt `attempt` of job `job_id` from the server's `master_key`.
///
/// The result is the lowercase hex of
/// `HMAC-SHA256(master_key, "runyard/job-secret/v1\n" + job_id + "\n" + attempt)`, with `attempt`
/// in decimal: 64 ASCII characters. Different jobs and different attempts of one job get
/// unrelated secrets, and nothing about the master key can be learnt from them.
pub fn derive_job_secret(master_key: &[u8], job_id: &str, attempt: u32) -> Secret {
    let message = format!("{DERIVATION_PREFIX}{job_id}\n{attempt}");
    Secret(hex::encode(hmac_sha256(master_key, message.as_bytes())))
}

/// The fingerprint of a deployment (every runyard process sharing one store shares its master
/// key): the first 16 hex characters of `HMAC-SHA256(master_key, "runyard/deployment/v1")`, or
/// for an embedded store made by `runyard backup` (`copy`: the id the backup gave it) of
/// `HMAC-SHA256(master_key, "runyard/deployment/v1/copy/" + copy)`: a copy keeps its original's
/// key, not its work. Runners label the work they launch with it (`runyard.deployment`), so that
/// the sweep of work left behind never takes another deployment's work (nor an original's or a
/// copy's) on a shared engine or namespace for its own. Not a secret: nothing about the master
/// key, or any job's secret, can be learnt from it.
pub fn deployment_id(master_key: &[u8], copy: Option<u64>) -> String {
    let message = match copy {
        None => "runyard/deployment/v1".to_string(),
        Some(c) => format!("runyard/deployment/v1/copy/{c}"),
    };
    let mut h = hex::encode(hmac_sha256(master_key, message.as_bytes()));
    h.truncate(16);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &[u8] = b"runyard-test-master-key";
    const JOB: &str = "0190a5e0-7c3a-7000-8000-00000000abcd";

    #[test]
    fn a_deployment_id_is_16_hex_characters_of_its_master_key() {
        let a = deployment_id(MASTER, None);
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_eq!(a, deployment_id(MASTER, None));
        assert_ne!(a, deployment_id(b"another-master-key", None));
        // A copy of the store (`runyard backup`) is a deployment of its own, each copy another.
        let c = deployment_id(MASTER, Some(7));
        assert_eq!(c.len(), 16);
        assert_ne!(c, a);
        assert_ne!(c, deployment_id(MASTER, Some(8)));
        assert_eq!(c, deployment_id(MASTER, Some(7)));
        assert!(!derive_job_secret(MASTER, JOB, 1).expose().contains(&a));
    }

    #[test]
    fn debug_hides_the_value() {
        let secret = Secret::from_string("very-secret-value".to_owned());
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(format!("{secret:#?}"), "Secret(***)");
        // Also when nested in another Debug value.
        let nested = format!("{:?}", Some(&secret));
        assert!(!nested.contains("very-secret-value"), "{nested}");
        assert_eq!(secret.expose(), "very-secret-value");
    }

    #[test]
    fn derivation_known_answer() {
        // Computed independently with:
        // python3 -c "import hmac,hashlib;print(hmac.new(b'runyard-test-master-key',
        //   b'runyard/job-secret/v1\n0190a5e0-7c3a-7000-8000-00000000abcd\n1',hashlib.sha256).hexdigest())"
        assert_eq!(
            derive_job_secret(MASTER, JOB, 1).expose(),
            "f61b0c92cd4100fe87c7d02bb64aedf228570ebb5bafd1ff015e63e3447b1cbd"
        );
        // Same with attempt 2.
        assert_eq!(
            derive_job_secret(MASTER, JOB, 2).expose(),
            "baae045ba01ec8635ed5fb2ebdd02b76d4adfe30e4296ec2b533847d7f4bbb55"
        );
    }

    #[test]
    fn differs_per_attempt_job_and_master_key() {
        let a1 = derive_job_secret(MASTER, JOB, 1);
        let a2 = derive_job_secret(MASTER, JOB, 2);
        let other_job = derive_job_secret(MASTER, "0190a5e0-7c3a-7000-8000-00000000abce", 1);
        let other_master = derive_job_secret(b"another-master-key", JOB, 1);
        assert_ne!(a1.expose(), a2.expose());
        assert_ne!(a1.expose(), other_job.expose());
        assert_ne!(a1.expose(), other_master.expose());
        // Deterministic, lowercase hex, 64 characters.
        assert_eq!(a1.expose(), derive_job_secret(MASTER, JOB, 1).expose());
        assert_eq!(a1.expose().len(), 64);
        assert!(a1
            .expose()
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn job_id_and_attempt_cannot_be_shifted() {
        // "job1" + attempt 12 must not collide with "job11" + attempt 2 (the separator prevents it).
        assert_ne!(
            derive_job_secret(MASTER, "job1", 12).expose(),
            derive_job_secret(MASTER, "job11", 2).expose()
        );
    }
}

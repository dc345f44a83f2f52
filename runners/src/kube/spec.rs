//! What the runner asks Kubernetes for: the Job of an attempt (suspended, its pods meeting the
//! Pod Security Standards' `restricted` profile), its Secret, and the names and labels.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};

use k8s_openapi::api::batch::v1::{Job, JobSpec as K8sJobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, LocalObjectReference, PodSecurityContext,
    PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, Secret as K8sSecret,
    SecretKeySelector, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::{
    KubeRunner, ANNOTATION_JOB_TYPE, ARGS_KEY, CONTAINER, DEADLINE_MARGIN,
    DEFAULT_TTL_AFTER_FINISHED, LABEL_ATTEMPT, LABEL_DEPLOYMENT, LABEL_JOB_ID, LABEL_JOB_TYPE,
    LABEL_MANAGED_BY, MAX_NAME_LEN, RESERVED_ENV, SECRET_KEY,
};
use crate::args::EnvArgs;
use crate::JobSpec;

impl KubeRunner {
    /// The Job of one attempt, suspended; `secret_name` holds JOB_SECRET_KEY, and JOB_ARGS when
    /// `args` go in the environment.
    pub fn build_job(
        &self,
        spec: &JobSpec,
        args: &EnvArgs,
        name: &str,
        namespace: &str,
        secret_name: &str,
    ) -> Job {
        let labels = labels(spec);
        let annotations =
            BTreeMap::from([(ANNOTATION_JOB_TYPE.to_string(), spec.job_type.clone())]);
        let o = &self.config.options;
        let ttl = self
            .config
            .ttl_after_finished
            .unwrap_or(DEFAULT_TTL_AFTER_FINISHED);
        // Always a deadline: the attempt's timeout (the server stops the job first), else the
        // configured backstop, so that a Job no server watches any more ends by itself.
        let deadline = match spec.timeout {
            Some(t) => t + DEADLINE_MARGIN,
            None => o.active_deadline,
        };
        let mut pod_annotations = o.annotations.clone();
        pod_annotations.extend(annotations.clone());
        Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some(labels.clone()),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(K8sJobSpec {
                backoff_limit: Some(0),
                active_deadline_seconds: Some(
                    (deadline.as_secs() + u64::from(deadline.subsec_nanos() > 0))
                        .min(i64::MAX as u64) as i64,
                ),
                ttl_seconds_after_finished: Some(ttl.as_secs().min(i32::MAX as u64) as i32),
                suspend: Some(true),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        annotations: Some(pod_annotations),
                        ..Default::default()
                    }),
                    spec: Some(self.pod_spec(self.container(spec, args, secret_name))),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    /// The job's container: its env (the secret and the args read from the Secret, or the args'
    /// size when the job reads them from its hook), resources and the `restricted` profile's
    /// container settings.
    fn container(&self, spec: &JobSpec, args: &EnvArgs, secret_name: &str) -> Container {
        let mut env: Vec<EnvVar> = self
            .config
            .env
            .iter()
            .filter(|(k, _)| !RESERVED_ENV.contains(&k.as_str()))
            .map(|(k, v)| literal(k, v))
            .collect();
        env.push(literal("JOB_ID", &spec.id));
        env.push(literal("JOB_HOOK", &spec.hook_url));
        env.push(literal("JOB_TYPE", &spec.job_type));
        env.push(literal("JOB_ATTEMPT", &spec.attempt.to_string()));
        env.push(from_secret("JOB_SECRET_KEY", secret_name, SECRET_KEY));
        match args {
            EnvArgs::Inline(_) => env.push(from_secret("JOB_ARGS", secret_name, ARGS_KEY)),
            EnvArgs::Hook { size } => {
                // Empty, so that an image's `ENV JOB_ARGS` does not stand in for the args (the
                // Python client reads an empty value as unset).
                env.push(literal("JOB_ARGS", ""));
                env.push(literal("JOB_ARGS_SIZE", &size.to_string()));
            }
        }
        let o = &self.config.options;
        let quantities = |m: &BTreeMap<String, String>| {
            (!m.is_empty()).then(|| {
                m.iter()
                    .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        let resources =
            (!o.requests.is_empty() || !o.limits.is_empty()).then(|| ResourceRequirements {
                requests: quantities(&o.requests),
                limits: quantities(&o.limits),
                ..Default::default()
            });
        Container {
            name: CONTAINER.into(),
            image: Some(self.config.image.clone()),
            command: (!self.config.command.is_empty()).then(|| self.config.command.clone()),
            env: Some(env),
            resources,
            // The Pod Security Standards' `restricted` profile, container level.
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: None,
                }),
                run_as_non_root: Some(true),
                privileged: Some(false),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The pod of an attempt, around its one container.
    fn pod_spec(&self, container: Container) -> PodSpec {
        let o = &self.config.options;
        PodSpec {
            restart_policy: Some("Never".into()),
            service_account_name: self.config.service_account.clone(),
            // Jobs talk to runyard through the hook, not to the API server.
            automount_service_account_token: Some(false),
            termination_grace_period_seconds: Some(
                o.termination_grace.as_secs().min(i64::MAX as u64) as i64,
            ),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: o.run_as_user,
                run_as_group: o.run_as_group,
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            image_pull_secrets: (!o.image_pull_secrets.is_empty()).then(|| {
                o.image_pull_secrets
                    .iter()
                    .map(|n| LocalObjectReference { name: n.clone() })
                    .collect()
            }),
            node_selector: (!o.node_selector.is_empty()).then(|| o.node_selector.clone()),
            tolerations: (!o.tolerations.is_empty()).then(|| o.tolerations.clone()),
            affinity: o.affinity.clone(),
            containers: vec![container],
            ..Default::default()
        }
    }
}

/// The Secret of an attempt (its job secret, and its args when they go in the environment; a
/// job that reads them from its hook finds them there, and a Secret holds at most 1 MiB), owned
/// by the Job `name` / `uid`: deleting the Job garbage-collects it.
pub(super) fn build_secret(
    spec: &JobSpec,
    args: &EnvArgs,
    secret_name: &str,
    namespace: &str,
    name: &str,
    uid: &str,
) -> K8sSecret {
    K8sSecret {
        metadata: ObjectMeta {
            name: Some(secret_name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels(spec)),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: name.into(),
                uid: uid.into(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        immutable: Some(true),
        string_data: Some(
            [(SECRET_KEY, spec.secret.expose())]
                .into_iter()
                .chain(match args {
                    EnvArgs::Inline(json) => Some((ARGS_KEY, json.as_str())),
                    EnvArgs::Hook { .. } => None,
                })
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn literal(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        }),
    }
}

/// Whether `job` is the Job this launch created: it bears the attempt's labels (this
/// deployment's among them), is not being deleted, and its container reads `JOB_SECRET_KEY`
/// from `secret_name`, a name this launch drew at random. A create the API server carried out
/// but answered with an error (a `504 Timeout`, which kube's client retries into a `409
/// AlreadyExists`) leaves such a Job; a leftover of another launch never has that Secret.
pub(super) fn is_this_launchs(job: &Job, spec: &JobSpec, secret_name: &str) -> bool {
    let have = job.metadata.labels.clone().unwrap_or_default();
    job.metadata.deletion_timestamp.is_none()
        && labels(spec).iter().all(|(k, v)| have.get(k) == Some(v))
        && secret_of(job) == Some(secret_name)
}

/// Whether `job` (a Job of the job's id) is a leftover that [`super::KubeRunner::reconcile`]
/// deletes: not `keep`'s (by name), not another deployment's (labelled with another fingerprint
/// than `deployment`, when that is not empty: a copy's, say), and not of a later attempt than
/// `keep`'s.
pub(super) fn is_leftover(job: &Job, deployment: &str, keep: Option<(&str, u32)>) -> bool {
    let labels = job.metadata.labels.clone().unwrap_or_default();
    let theirs = !deployment.is_empty()
        && labels
            .get(LABEL_DEPLOYMENT)
            .is_some_and(|d| *d != label_value(deployment));
    let attempt = labels
        .get(LABEL_ATTEMPT)
        .and_then(|a| a.parse::<u32>().ok());
    let later = keep.is_some_and(|(_, k)| attempt.is_some_and(|a| a > k));
    let name = job.metadata.name.as_deref();
    name.is_some() && name != keep.map(|k| k.0) && !theirs && !later
}

/// The name of the Secret an attempt's Job reads `JOB_SECRET_KEY` from.
pub(super) fn secret_of(job: &Job) -> Option<&str> {
    job.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| c.env.as_ref())
        .and_then(|env| env.iter().find(|e| e.name == SECRET_KEY))
        .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
        .filter(|r| r.key == SECRET_KEY)
        .map(|r| r.name.as_str())
}

/// The labels of an attempt's Job, its pods and its Secret.
pub fn labels(spec: &JobSpec) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), "runyard".to_string()),
        (LABEL_JOB_ID.to_string(), label_value(&spec.id)),
        (LABEL_JOB_TYPE.to_string(), label_value(&spec.job_type)),
        (LABEL_ATTEMPT.to_string(), spec.attempt.to_string()),
    ]);
    if !spec.deployment.is_empty() {
        labels.insert(LABEL_DEPLOYMENT.to_string(), label_value(&spec.deployment));
    }
    labels
}

/// The label selector of every Job of a job.
pub fn id_selector(job_id: &str) -> String {
    format!(
        "{LABEL_MANAGED_BY}=runyard,{LABEL_JOB_ID}={}",
        label_value(job_id)
    )
}

/// The label selector of one attempt's Job and pods.
pub fn attempt_selector(job_id: &str, attempt: u32) -> String {
    format!("{},{LABEL_ATTEMPT}={attempt}", id_selector(job_id))
}

/// The Job name of an attempt: `ry-{type}-{id}-{attempt}`, a valid DNS-1123 label of at most 63
/// characters. The type is lowercased, other characters become `-`, and it is cut to fit; the id
/// part is the job id's last 12 alphanumerics (a UUID v7's random bits).
pub fn job_name(job_type: &str, job_id: &str, attempt: u32) -> String {
    let id: String = job_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let id = if id.is_empty() {
        "0".to_string()
    } else {
        id[id.len().saturating_sub(12)..].to_string()
    };
    let tail = format!("-{id}-{attempt}");
    let budget = MAX_NAME_LEN - "ry-".len() - tail.len();
    let t = dns_part(job_type, budget);
    if t.is_empty() {
        format!("ry{tail}")
    } else {
        format!("ry-{t}{tail}")
    }
}

/// Lowercase alphanumerics and single dashes, no dash at either end, at most `max` characters.
fn dns_part(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(max);
    out.trim_end_matches('-').to_string()
}

/// Whether `s` is a DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `s` as a label value: `[A-Za-z0-9._-]`, at most 63 characters, alphanumeric at both ends.
pub fn label_value(s: &str) -> String {
    let mut v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    v.truncate(63);
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Five random lowercase alphanumerics (the Secret's name suffix).
pub(super) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    let mut n = h.finish();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

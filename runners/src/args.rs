//! How a job's args reach its environment, and what a runner does with args too large for it.
//!
//! The local, docker and kube runners give a job its args as JSON in `JOB_ARGS`. Linux refuses
//! an environment string over 128 KiB (`MAX_ARG_STRLEN`, `E2BIG` at exec), so args over
//! [`MAX_ENV_ARGS`] cannot go there. A runner's [`LargeArgs`] setting (`large_args`) decides:
//! [`LargeArgs::Refuse`] (the default) refuses such a job at submit time, so that a command
//! reading `$JOB_ARGS` never starts with no args; [`LargeArgs::Hook`] leaves `JOB_ARGS` out, sets
//! `JOB_ARGS_SIZE` to their size, and the job reads them from `GET {JOB_HOOK}/job` (as the
//! Python client's `args()` does when `JOB_ARGS` is unset).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::RunnerError;

/// The largest args (as JSON, in bytes) given in `JOB_ARGS`: the kernel refuses an environment
/// string over 128 KiB (`NAME=value` and its NUL included).
pub const MAX_ENV_ARGS: usize = 120 * 1024;

/// What a runner does with args whose JSON is over [`MAX_ENV_ARGS`] (`large_args`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LargeArgs {
    /// Refused: at submit time (422), and at launch (the job ends ERROR, not retried).
    #[default]
    Refuse,
    /// `JOB_ARGS` left out, `JOB_ARGS_SIZE` set: the job reads its args from its hook.
    Hook,
}

/// How a job's args are put in its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvArgs {
    /// `JOB_ARGS` holds them (JSON).
    Inline(String),
    /// `JOB_ARGS` is left out (a `JOB_ARGS` of the runner's own `env` too, so that it cannot
    /// stand in for them); `JOB_ARGS_SIZE` holds their size in bytes.
    Hook {
        /// Their size as JSON, in bytes.
        size: usize,
    },
}

impl LargeArgs {
    /// The setting's word in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            LargeArgs::Refuse => "refuse",
            LargeArgs::Hook => "hook",
        }
    }

    /// Checks at submit time that these args fit: [`RunnerError::ArgsTooLarge`] when they do not.
    pub fn check(self, args: &Value) -> Result<(), RunnerError> {
        if self == LargeArgs::Hook {
            return Ok(());
        }
        let size = json_len(args);
        if size > MAX_ENV_ARGS {
            return Err(RunnerError::ArgsTooLarge {
                size,
                limit: MAX_ENV_ARGS,
            });
        }
        Ok(())
    }

    /// How `args` go in the environment at launch. Refused args (stored before the runner was
    /// set to refuse them, say) are [`RunnerError::LaunchFinal`]: no attempt can start them.
    pub fn env(self, args: &Value) -> Result<EnvArgs, RunnerError> {
        let json = args.to_string();
        if json.len() <= MAX_ENV_ARGS {
            return Ok(EnvArgs::Inline(json));
        }
        match self {
            LargeArgs::Hook => Ok(EnvArgs::Hook { size: json.len() }),
            LargeArgs::Refuse => Err(RunnerError::LaunchFinal(
                RunnerError::ArgsTooLarge {
                    size: json.len(),
                    limit: MAX_ENV_ARGS,
                }
                .to_string(),
            )),
        }
    }
}

/// The length of `v` as compact JSON (what `JOB_ARGS` would hold), without building the string.
pub fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a `Value` to a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args_of(len: usize) -> Value {
        // `{"x":"…"}` is 8 bytes around the string.
        json!({ "x": "A".repeat(len - 8) })
    }

    #[test]
    fn the_size_is_the_length_of_job_args() {
        for v in [
            json!(null),
            json!({"a": [1, "é\"\n"], "b": 2.5}),
            args_of(300),
        ] {
            assert_eq!(json_len(&v), v.to_string().len(), "{v}");
        }
    }

    #[test]
    fn refuse_takes_args_up_to_the_limit_and_refuses_one_byte_more() {
        assert!(LargeArgs::Refuse.check(&args_of(MAX_ENV_ARGS)).is_ok());
        let e = LargeArgs::Refuse
            .check(&args_of(MAX_ENV_ARGS + 1))
            .unwrap_err();
        assert!(
            matches!(e, RunnerError::ArgsTooLarge { size, limit } if size == MAX_ENV_ARGS + 1 && limit == MAX_ENV_ARGS),
            "{e:?}"
        );
        let m = e.to_string();
        for part in ["`args`", "122881 bytes", "122880", "large_args = \"hook\""] {
            assert!(m.contains(part), "{part}: {m}");
        }
        assert_eq!(
            LargeArgs::Refuse.env(&args_of(MAX_ENV_ARGS)).unwrap(),
            EnvArgs::Inline(args_of(MAX_ENV_ARGS).to_string())
        );
        let e = LargeArgs::Refuse.env(&args_of(200_000)).unwrap_err();
        assert!(e.is_final(), "{e:?}");
        assert!(e.to_string().contains("200000 bytes"), "{e}");
    }

    #[test]
    fn hook_takes_any_size_and_leaves_large_args_out_of_the_environment() {
        assert!(LargeArgs::Hook.check(&args_of(2_000_000)).is_ok());
        assert_eq!(
            LargeArgs::Hook.env(&args_of(200_000)).unwrap(),
            EnvArgs::Hook { size: 200_000 }
        );
        assert_eq!(
            LargeArgs::Hook.env(&json!({"x": 1})).unwrap(),
            EnvArgs::Inline("{\"x\":1}".into())
        );
    }

    #[test]
    fn the_setting_reads_refuse_or_hook_and_nothing_else() {
        let read = |s: &str| serde_json::from_value::<LargeArgs>(json!(s));
        assert_eq!(read("refuse").unwrap(), LargeArgs::Refuse);
        assert_eq!(read("hook").unwrap(), LargeArgs::Hook);
        assert!(read("env").is_err());
        assert_eq!(LargeArgs::default(), LargeArgs::Refuse);
    }
}

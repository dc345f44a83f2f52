//! The `service` runner: async Rust functions registered by name, run inside the server.
//!
//! Users embedding runyard register operations on a [`ServiceRegistry`]; a job of a type claimed by
//! a service runner calls the operation named by the runner's `operation` setting, or by the job
//! type itself. The function gets a [`ServiceContext`] (args, progress, log, cancellation). A
//! returned error or a panic makes the attempt fail with its message (retried while the job has
//! attempts left); a returned [`AbortError`] makes the job fail at once, without a retry.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    Execution, JobSpec, LogStream, Outcome, Recovered, RunHandle, RunKind, Runner, RunnerError,
    SharedReporter,
};

/// What a service operation returns: a JSON result or any error.
pub type ServiceResult = Result<Value, Box<dyn std::error::Error + Send + Sync>>;

/// Returned by a service operation (boxed, like any error) when no retry can fix the failure: the
/// job ends ERROR with its message, without using its remaining attempts (as apalis'
/// `AbortError`). `Err(AbortError::new("bad input").into())`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AbortError(Box<dyn std::error::Error + Send + Sync>);

impl AbortError {
    /// Wraps the error that ends the job.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }

    /// Whether an operation's error is an [`AbortError`].
    pub fn is_abort(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
        error.is::<AbortError>()
    }
}

/// Returned by a service operation (boxed, like any error) when the failure may pass but not
/// before `after` (a rate limit, a resource not ready yet; as apalis' `RetryAfterError`): the
/// attempt fails and, while attempts are left, the next one runs `after` from now instead of after
/// the job's backoff. `Err(RetryAfterError::new("rate limited", Duration::from_secs(30)).into())`.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct RetryAfterError {
    error: Box<dyn std::error::Error + Send + Sync>,
    after: Duration,
}

impl RetryAfterError {
    /// Wraps the error of this attempt and the time before the next one.
    pub fn new(
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
        after: Duration,
    ) -> Self {
        Self {
            error: error.into(),
            after,
        }
    }

    /// The delay an operation's error asks for, when it is a [`RetryAfterError`].
    pub fn delay_of(error: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<Duration> {
        error.downcast_ref::<RetryAfterError>().map(|e| e.after)
    }
}

/// A registered operation.
pub type ServiceFn = Arc<dyn Fn(ServiceContext) -> BoxFuture<'static, ServiceResult> + Send + Sync>;

/// Named async operations that service runners can call.
#[derive(Clone, Default)]
pub struct ServiceRegistry {
    ops: BTreeMap<String, ServiceFn>,
}

impl ServiceRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with runyard's built-in operations: `runyard.noop` (returns null),
    /// `runyard.echo` (returns its args), `runyard.sleep` (`{"ms": N}`, cancellable) and
    /// `runyard.fail` (`{"message": "...", "retry": false}`; with `retry: false` it fails with an
    /// [`AbortError`]).
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        r.register("runyard.noop", |_ctx| async { Ok(Value::Null) });
        r.register("runyard.echo", |ctx| async move { Ok(ctx.args.clone()) });
        r.register("runyard.sleep", |ctx| async move {
            let ms = ctx.args.get("ms").and_then(Value::as_u64).unwrap_or(1000);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!({"slept_ms": ms})),
                _ = ctx.cancelled() => Err("cancelled".into()),
            }
        });
        r.register("runyard.fail", |ctx| async move {
            let msg = ctx
                .args
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("failed on purpose")
                .to_string();
            if ctx.args.get("retry") == Some(&Value::Bool(false)) {
                return Err(AbortError::new(msg).into());
            }
            Err(msg.into())
        });
        r
    }

    /// Registers `f` under `name`, replacing any earlier one.
    pub fn register<F, Fut>(&mut self, name: impl Into<String>, f: F) -> &mut Self
    where
        F: Fn(ServiceContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ServiceResult> + Send + 'static,
    {
        self.ops
            .insert(name.into(), Arc::new(move |ctx| f(ctx).boxed()));
        self
    }

    /// The operation registered under `name`.
    pub fn get(&self, name: &str) -> Option<ServiceFn> {
        self.ops.get(name).cloned()
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.ops.keys().map(String::as_str)
    }
}

/// What a service operation gets: its job, a way to report, and a cancellation token.
#[derive(Clone)]
pub struct ServiceContext {
    /// The job id.
    pub job_id: String,
    /// The job type.
    pub job_type: String,
    /// The job's arguments.
    pub args: Value,
    /// The attempt number, from 1.
    pub attempt: u32,
    reporter: SharedReporter,
    cancel: CancellationToken,
}

impl ServiceContext {
    /// Builds a context (for tests of user operations).
    pub fn new(
        job_id: String,
        job_type: String,
        args: Value,
        attempt: u32,
        reporter: SharedReporter,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            job_id,
            job_type,
            args,
            attempt,
            reporter,
            cancel,
        }
    }

    /// The args deserialised into `T`.
    pub fn args_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.args)
    }

    /// Reports progress (0..=1, clamped; NaN is ignored: no number to show) with optional details.
    pub fn progress(&self, progress: f64, details: Option<Value>) {
        if progress.is_nan() {
            return;
        }
        self.reporter.progress(progress.clamp(0.0, 1.0), details);
    }

    /// Appends a line to the job's logs at once, without waiting: while the store takes lines
    /// slower than they are logged, at most 5,000 wait in the worker and past them the oldest
    /// waiting are dropped (a `[runyard] N line(s) dropped here` line marks the gap). An
    /// operation that logs in a loop should use [`Self::log_wait`].
    pub fn log(&self, line: impl Into<String>) {
        self.reporter.log(LogStream::Job, line.into());
    }

    /// Appends a line to the job's logs once there is room for it: while the store takes lines
    /// slower than they are logged this waits (backpressure, as a process waits in its write),
    /// so no line is dropped; only a store that takes none for 5 s (down, or far too slow)
    /// has the oldest waiting lines dropped, with a note, as with [`Self::log`].
    pub async fn log_wait(&self, line: impl Into<String>) {
        self.reporter.room().await;
        self.reporter.log(LogStream::Job, line.into());
    }

    /// True once the job was cancelled or timed out; long operations should check it.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the job is cancelled or timed out.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
}

/// Runs registered operations in-process.
pub struct ServiceRunner {
    registry: Arc<ServiceRegistry>,
    operation: Option<String>,
}

impl ServiceRunner {
    /// A runner calling `operation` for every job, or the operation named like the job type.
    pub fn new(
        registry: Arc<ServiceRegistry>,
        operation: Option<String>,
    ) -> Result<Self, RunnerError> {
        if let Some(op) = &operation {
            if registry.get(op).is_none() {
                return Err(RunnerError::Invalid(format!(
                    "no service operation named `{op}` is registered"
                )));
            }
        }
        Ok(Self {
            registry,
            operation,
        })
    }

    fn op_for<'a>(&'a self, job_type: &'a str) -> Result<ServiceFn, RunnerError> {
        let name = self.operation.as_deref().unwrap_or(job_type);
        self.registry.get(name).ok_or_else(|| {
            RunnerError::Invalid(format!("no service operation named `{name}` is registered"))
        })
    }
}

#[async_trait]
impl Runner for ServiceRunner {
    fn kind(&self) -> &'static str {
        "service"
    }

    fn validate(&self, job_type: &str, _args: &Value) -> Result<(), RunnerError> {
        self.op_for(job_type).map(|_| ())
    }

    async fn launch(
        &self,
        spec: JobSpec,
        reporter: SharedReporter,
    ) -> Result<Box<dyn Execution>, RunnerError> {
        let op = self.op_for(&spec.job_type)?;
        let cancel = CancellationToken::new();
        let ctx = ServiceContext::new(
            spec.id.clone(),
            spec.job_type,
            spec.args,
            spec.attempt,
            reporter,
            cancel.clone(),
        );
        let join = tokio::spawn(async move { op(ctx).await });
        Ok(Box::new(ServiceExecution {
            id: spec.id,
            join,
            cancel,
            outcome: None,
        }))
    }

    async fn recover(
        &self,
        _handle: &RunHandle,
        _spec: JobSpec,
        _reporter: SharedReporter,
    ) -> Result<Recovered, RunnerError> {
        // In-process work dies with its process.
        Ok(Recovered::Gone)
    }
}

struct ServiceExecution {
    id: String,
    join: JoinHandle<ServiceResult>,
    cancel: CancellationToken,
    outcome: Option<Outcome>,
}

#[async_trait]
impl Execution for ServiceExecution {
    fn handle(&self) -> RunHandle {
        RunHandle {
            kind: RunKind::Service,
            id: self.id.clone(),
            data: Value::Null,
        }
    }

    async fn wait(&mut self) -> Outcome {
        if let Some(o) = &self.outcome {
            return o.clone();
        }
        let o = match (&mut self.join).await {
            Ok(Ok(v)) => Outcome::Success {
                result: if v.is_null() { None } else { Some(v) },
            },
            Ok(Err(e)) if AbortError::is_abort(e.as_ref()) => Outcome::Aborted {
                message: e.to_string(),
            },
            Ok(Err(e)) => match RetryAfterError::delay_of(e.as_ref()) {
                Some(after) => Outcome::RetryAfter {
                    message: e.to_string(),
                    after,
                },
                None => Outcome::failed(e.to_string()),
            },
            Err(e) if e.is_panic() => {
                let p = e.into_panic();
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic payload".into());
                Outcome::failed(format!("panicked: {msg}"))
            }
            Err(_) => Outcome::failed("stopped"),
        };
        self.outcome = Some(o.clone());
        o
    }

    async fn stop(&mut self, grace: Duration) -> bool {
        if self.outcome.is_some() {
            return true;
        }
        self.cancel.cancel();
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            self.join.abort();
        }
        // The next `wait` reads the finished (or aborted) task; an outcome reached within the
        // grace period is kept. An aborted task runs no more.
        let _ = self.wait().await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NullReporter;

    fn spec(t: &str) -> JobSpec {
        JobSpec {
            id: "j1".into(),
            job_type: t.into(),
            args: json!({"x": 2}),
            attempt: 1,
            secret: crate::Secret::from_string("k".into()),
            hook_url: String::new(),
            timeout: None,
            deployment: String::new(),
        }
    }

    #[tokio::test]
    async fn result_error_and_panic() {
        let mut reg = ServiceRegistry::with_builtins();
        reg.register("double", |ctx| async move {
            let x = ctx.args["x"].as_i64().ok_or("x missing")?;
            Ok(json!(x * 2))
        });
        reg.register("final", |_ctx| async move {
            Err(AbortError::new("bad input").into())
        });
        reg.register("later", |_ctx| async move {
            Err(RetryAfterError::new("not yet", Duration::from_millis(1500)).into())
        });
        reg.register("boom", |_ctx| async move {
            if true {
                panic!("kaboom");
            }
            Ok(Value::Null)
        });
        let reg = Arc::new(reg);
        let r = ServiceRunner::new(reg.clone(), None).unwrap();
        let rep: SharedReporter = Arc::new(NullReporter);
        let mut e = r.launch(spec("double"), rep.clone()).await.unwrap();
        assert_eq!(
            e.wait().await,
            Outcome::Success {
                result: Some(json!(4))
            }
        );
        let mut e = r.launch(spec("boom"), rep.clone()).await.unwrap();
        assert_eq!(e.wait().await, Outcome::failed("panicked: kaboom"));
        let mut e = r.launch(spec("runyard.fail"), rep.clone()).await.unwrap();
        assert_eq!(e.wait().await, Outcome::failed("failed on purpose"));
        let mut e = r.launch(spec("later"), rep.clone()).await.unwrap();
        assert_eq!(
            e.wait().await,
            Outcome::RetryAfter {
                message: "not yet".into(),
                after: Duration::from_millis(1500)
            }
        );
        let mut e = r.launch(spec("final"), rep.clone()).await.unwrap();
        assert_eq!(
            e.wait().await,
            Outcome::Aborted {
                message: "bad input".into()
            }
        );
        assert!(r.validate("nope", &Value::Null).is_err());
        assert!(ServiceRunner::new(reg, Some("missing".into())).is_err());
    }

    #[tokio::test]
    async fn stop_cancels_then_aborts() {
        let mut reg = ServiceRegistry::new();
        reg.register("stubborn", |_ctx| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Value::Null)
        });
        let r = ServiceRunner::new(Arc::new(ServiceRegistry::with_builtins()), None).unwrap();
        let mut e = r
            .launch(spec("runyard.sleep"), Arc::new(NullReporter))
            .await
            .unwrap();
        e.stop(Duration::from_secs(5)).await;
        assert_eq!(e.wait().await, Outcome::failed("cancelled"));
        let r = ServiceRunner::new(Arc::new(reg), None).unwrap();
        let mut e = r
            .launch(spec("stubborn"), Arc::new(NullReporter))
            .await
            .unwrap();
        e.stop(Duration::from_millis(50)).await;
        assert_eq!(e.wait().await, Outcome::failed("stopped"));
    }
}

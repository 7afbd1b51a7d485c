//! The library's own tokio runtime and the panic guard around every call.
//!
//! Foreign executors (Kotlin coroutines, Swift tasks, asyncio) poll our
//! futures without a tokio context, so every async call is spawned on one
//! process-wide runtime and the foreign side awaits its join handle. A panic
//! in the task or in a synchronous call is caught here and becomes
//! [`TetherError::Internal`]; it never unwinds into foreign code.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, OnceLock};

use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

use crate::TetherError;

/// Worker threads of the library runtime: sessions are I/O bound, two keep a
/// phone responsive without competing with the app.
const WORKER_THREADS: usize = 2;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The process-wide runtime, built on first use.
pub(crate) fn runtime() -> Result<&'static Runtime, TetherError> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(WORKER_THREADS)
                .thread_name("tether-ffi")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| TetherError::Internal {
            detail: format!("cannot start the runtime: {e}"),
        })
}

/// Runs `f`, turning a panic into [`TetherError::Internal`].
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T, TetherError>) -> Result<T, TetherError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| Err(internal(panic.as_ref())))
}

/// Aborts the spawned task if the foreign caller drops (cancels) the call.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `future` on the library runtime and awaits it from any executor.
/// Cancelling the returned future aborts the task.
pub(crate) async fn run<T, E>(
    future: impl Future<Output = Result<T, E>> + Send + 'static,
) -> Result<T, TetherError>
where
    T: Send + 'static,
    E: Into<TetherError> + Send + 'static,
{
    let handle = runtime()?.spawn(future);
    let _abort = AbortOnDrop(handle.abort_handle());
    match handle.await {
        Ok(result) => result.map_err(Into::into),
        Err(e) if e.is_panic() => Err(internal(e.into_panic().as_ref())),
        Err(_) => Err(TetherError::Internal {
            detail: "the call was cancelled".into(),
        }),
    }
}

/// A task that feeds an app's listener (a subscription, a confirmation
/// watch) until it ends or is cancelled; dropping it cancels the task.
#[derive(Debug)]
pub(crate) struct Background(Mutex<Option<AbortHandle>>);

impl Background {
    pub(crate) fn new(task: AbortHandle) -> Self {
        Self(Mutex::new(Some(task)))
    }

    /// Stops the task; no callback is made afterwards. Idempotent.
    pub(crate) fn cancel(&self) {
        let task = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            task.abort();
        }
    }

    /// Whether the task still runs.
    pub(crate) fn is_active(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Describes a caught panic.
fn internal(panic: &(dyn Any + Send)) -> TetherError {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    TetherError::Internal {
        detail: format!("panic inside tether: {what}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_panic_in_a_sync_call_becomes_internal() {
        let result: Result<(), _> = guard(|| panic!("boom"));
        match result {
            Err(TetherError::Internal { detail }) => assert!(detail.contains("boom"), "{detail}"),
            other => panic!("expected Internal, got {other:?}"),
        }
    }

    #[test]
    fn a_panic_in_a_task_becomes_internal_and_the_runtime_survives() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let result = rt.block_on(run::<(), TetherError>(async { panic!("task boom") }));
        assert!(
            matches!(result, Err(TetherError::Internal { ref detail }) if detail.contains("task boom"))
        );
        let after = rt.block_on(run(async { Ok::<_, TetherError>(7) }));
        assert_eq!(after.unwrap(), 7);
    }

    #[test]
    fn dropping_a_call_aborts_its_task() {
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        let call = run(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            flag.store(true, Ordering::SeqCst);
            Ok::<_, TetherError>(())
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        // Poll once so the task is spawned, then drop the call (a cancel).
        rt.block_on(async {
            let _ = tokio::time::timeout(std::time::Duration::from_millis(20), call).await;
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        });
        assert!(!finished.load(Ordering::SeqCst), "the task ran to the end");
    }
}

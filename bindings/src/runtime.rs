//! The facade's tokio runtime. Every async export runs its work here, so
//! sync's background tasks live on threads the facade owns whatever
//! executor the app awaits from (Kotlin coroutines, Swift tasks, asyncio).

use std::future::Future;
use std::sync::OnceLock;

use crate::ScrError;

static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();

fn runtime() -> Option<&'static tokio::runtime::Runtime> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("scr-sync")
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
}

/// Runs `work` on the facade's runtime and waits for it. A panic inside
/// becomes `ScrError::Internal`, never an unwind across the FFI.
pub async fn run<T: Send + 'static>(
    work: impl Future<Output = Result<T, ScrError>> + Send + 'static,
) -> Result<T, ScrError> {
    let rt = runtime().ok_or_else(|| ScrError::internal("no async runtime"))?;
    rt.spawn(work)
        .await
        .unwrap_or_else(|_| Err(ScrError::internal("a task failed")))
}

/// Spawns a background task on the facade's runtime.
pub fn spawn(
    work: impl Future<Output = ()> + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    runtime().map(|rt| rt.spawn(work))
}

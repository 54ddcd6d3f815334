//! The process's one tokio runtime, and [`wait`]: run a future to completion with the GIL
//! released, waking every 100 ms to let Python raise KeyboardInterrupt (Ctrl-C cancels the
//! wait; the future is dropped).

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

pub fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flame-io")
            .enable_all()
            .build()
            .expect("cannot start the tokio runtime")
    })
}

/// Block on `fut` without holding the GIL.
///
/// # Errors
/// Whatever Python signal handlers raise (KeyboardInterrupt on Ctrl-C).
pub fn wait<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = runtime();
    let mut fut = std::pin::pin!(fut);
    loop {
        let step = py.detach(|| {
            rt.block_on(async { tokio::time::timeout(Duration::from_millis(100), &mut fut).await })
        });
        match step {
            Ok(v) => return Ok(v),
            Err(_) => py.check_signals()?,
        }
    }
}

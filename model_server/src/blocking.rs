//! Running short synchronous work from async code.

use std::future::Future;

use tokio::runtime::{Handle, RuntimeFlavor};

/// Short synchronous work on the request path (a read of the embedded store, a search of the
/// embedded index, the GRU kernel). On a multi-thread runtime it runs right here, after the runtime has moved
/// this worker's other tasks elsewhere (`block_in_place`): no hand-off to another thread, whose
/// wake-up would cost more than the work. On a current-thread runtime, where that is not
/// possible, it goes to the blocking pool. Long work (writes, scans) always goes to the pool.
pub async fn run_short<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        Ok(tokio::task::block_in_place(work))
    } else {
        tokio::task::spawn_blocking(work).await
    }
}

/// Several pieces of short work in a row, as one blocking section: `future` is driven to
/// completion on this thread after the runtime has moved this worker's other tasks elsewhere, and
/// the `run_short` calls inside it run in place without moving them again. Each move wakes
/// another thread, which costs about as much CPU as a store read. On a current-thread runtime it
/// is simply awaited (its `run_short` calls go to the blocking pool).
pub async fn run_short_section<F: Future>(future: F) -> F::Output {
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        let handle = Handle::current();
        tokio::task::block_in_place(move || handle.block_on(future))
    } else {
        future.await
    }
}

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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_section_runs_its_short_work_in_place_and_leaves_the_runtime_to_other_tasks() {
        let other_task_ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&other_task_ran);
        // On a spawned task, hence on the runtime's only worker thread (the test's own thread
        // only drives the test body).
        let section = tokio::spawn(run_short_section(async move {
            let section_thread = std::thread::current().id();
            tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
            // The task above runs during the sleep only if the section moved the runtime off this
            // thread.
            let work_thread = run_short(|| {
                std::thread::sleep(Duration::from_millis(300));
                std::thread::current().id()
            })
            .await
            .unwrap();
            (
                section_thread,
                work_thread,
                other_task_ran.load(Ordering::SeqCst),
            )
        }));
        let (section_thread, work_thread, ran_meanwhile) = section.await.unwrap();
        assert_eq!(section_thread, work_thread, "the short work moved threads");
        assert!(ran_meanwhile, "the section blocked the runtime");
    }
}

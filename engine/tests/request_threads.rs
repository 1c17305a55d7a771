//! The request path makes no threads: its short synchronous work (the store read, the GRU
//! kernel, the search) runs on the runtime's workers. A design that gives each request's work a
//! thread of its own (`block_in_place`, `spawn_blocking`) makes one per request in flight under a
//! burst, and a fresh server stalls while they are made and scheduled (BENCHMARKS.md, "A fresh
//! server under a burst"). Alone in its binary, so that the process's threads are this test's.

use std::sync::Arc;

use engine::retrieve::{RetrieveRequest, Source};

fn threads_of_this_process() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task lists the process's threads")
        .count()
}

#[test]
fn a_burst_of_retrieves_makes_no_threads() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let data_dir = tempfile::tempdir().unwrap();
        let (retriever, _embedder) = engine::fixtures::tiny_retriever(data_dir.path()).await;
        engine::fixtures::remember(retriever.store().as_ref(), "u1", &["i1", "i2", "i3"]).await;
        let retriever = Arc::new(retriever);
        let request = Arc::new(RetrieveRequest {
            user_id: Some("u1".into()),
            session_items: vec!["i4".into()],
            candidates: Vec::new(),
            count: 10,
        });
        // Whatever the first request starts once (timers, lazily made statics) is not the burst's.
        let first = retriever.retrieve(&request).await;
        assert_eq!(first.source, Source::Personalized);
        let before = threads_of_this_process();

        let burst: Vec<_> = (0..512)
            .map(|_| {
                let (retriever, request) = (Arc::clone(&retriever), Arc::clone(&request));
                tokio::spawn(async move { retriever.retrieve(&request).await })
            })
            .collect();
        for answer in burst {
            let outcome = answer.await.unwrap();
            assert_eq!(outcome.source, Source::Personalized);
            assert_eq!(outcome.recommendations.len(), 10);
        }

        // Fewer is fine: idle blocking-pool threads from the setup's writes may have exited.
        let after = threads_of_this_process();
        assert!(
            after <= before,
            "512 retrieves in flight made {} threads",
            after - before
        );
    });
}

//! The event archive through Kafka: the archiver group copies what the events consumer applies
//! into Parquet files, skips what it dead-letters, and a restart that reads the log again leaves
//! the archive reading the same.

use std::time::{Duration, Instant};

use archive::EventArchive;

use crate::{deploy, event, stop, traffic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_holds_every_applied_event_once_across_restarts() {
    let deployment = deploy(false).await;
    let (mut events, _) = traffic();
    deployment.produce(&events).await;
    // Refused by the events consumer, so not training data either.
    let stranger = event("s1", "i1", common::clock::now_ms());
    deployment
        .produce_raw(&[
            (Some("s1"), b"{\"user_id\": ".to_vec()),
            (Some("someone-else"), serde_json::to_vec(&stranger).unwrap()),
        ])
        .await;
    events.sort_by_key(|event| event.event_time_ms);
    let archive = EventArchive::new(deployment.config.archive_dir(), "reader");

    let group = deployment.config.consumer.group_id.clone();
    let consumer = deployment.start_consumer(&group).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let archived = archive.read(None, None).unwrap();
        if archived == events {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "archive holds {} of {} events",
            archived.len(),
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(consumer).await;

    // A new member starts rewound and archives the log again: more files, the same events.
    let files_before = count_files(&deployment.config.archive_dir());
    let consumer = deployment.start_consumer(&group).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_files(&deployment.config.archive_dir()) == files_before {
        assert!(
            Instant::now() < deadline,
            "the log was never archived again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(consumer).await;
    assert_eq!(archive.read(None, None).unwrap(), events);
    deployment.shut_down().await;
}

fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|day| std::fs::read_dir(day.unwrap().path()).unwrap().count())
        .sum()
}

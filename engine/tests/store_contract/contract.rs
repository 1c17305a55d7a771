//! The cases every `UserStore` backend must pass; `main.rs` runs each against every backend.

use super::*;

pub use super::catalogue::catalogue_upserts_replace_and_the_change_log_names_each_item_once;

pub async fn unknown_user_has_empty_state(store: &dyn UserStore) {
    let state = store.user_state("nobody").await.unwrap();
    assert!(state.recent_items.is_empty() && state.seen_items.is_empty());
    assert_eq!(state.newest_event_time_ms, None);
    assert_eq!(state.cached, None);
    store.ping().await.unwrap();
}

pub async fn sequence_is_bounded_most_recent_last_without_consecutive_repeats(
    store: &dyn UserStore,
) {
    let interactions = ["a", "b", "b", "c", "a", "d", "e", "e", "f"]
        .iter()
        .enumerate()
        .map(|(time, item)| interaction(item, time as i64 * 1000, None))
        .collect();
    let outcome = store.apply(vec![update("u1", interactions)]).await.unwrap();
    assert_eq!((outcome.applied, outcome.duplicates), (9, 0));
    let state = store.user_state("u1").await.unwrap();
    // a b c a d e f without repeats, last 5 kept.
    assert_eq!(state.recent_items, ["c", "a", "d", "e", "f"]);
    assert_eq!(sorted(state.seen_items), ["a", "b", "c", "d", "e", "f"]);
    assert_eq!(state.newest_event_time_ms, Some(8000));

    // A later batch continues the same sequence; a repeat across batches is also dropped.
    store
        .apply(vec![update(
            "u1",
            vec![interaction("f", 9000, None), interaction("g", 10_000, None)],
        )])
        .await
        .unwrap();
    let state = store.user_state("u1").await.unwrap();
    assert_eq!(state.recent_items, ["a", "d", "e", "f", "g"]);
}

pub async fn a_user_named_twice_in_one_batch_gets_both_in_order(store: &dyn UserStore) {
    let outcome = store
        .apply(vec![
            update("twice", vec![interaction("a", 1, Some((0, 1)))]),
            update("other", vec![interaction("x", 2, Some((1, 1)))]),
            update("twice", vec![interaction("b", 3, Some((0, 2)))]),
            update("empty", vec![]),
            update("twice", vec![interaction("c", 4, Some((0, 3)))]),
        ])
        .await
        .unwrap();
    assert_eq!((outcome.applied, outcome.duplicates), (4, 0));
    let state = store.user_state("twice").await.unwrap();
    assert_eq!(state.recent_items, ["a", "b", "c"]);
    assert_eq!(state.history_version, 3);
    assert_eq!(store.user_state("other").await.unwrap().recent_items, ["x"]);
}

pub async fn seen_items_forget_the_oldest_beyond_the_limit(store: &dyn UserStore) {
    let interactions = (0..12)
        .map(|n| interaction(&format!("i{n:02}"), n * 10, None))
        .collect();
    store.apply(vec![update("u2", interactions)]).await.unwrap();
    // Seeing i00 again makes it recent, so i04 goes instead of it.
    store
        .apply(vec![update(
            "u2",
            vec![interaction("i00", 500, None), interaction("i12", 510, None)],
        )])
        .await
        .unwrap();
    let state = store.user_state("u2").await.unwrap();
    assert_eq!(
        sorted(state.seen_items),
        ["i00", "i06", "i07", "i08", "i09", "i10", "i11", "i12"]
    );
}

pub async fn redelivered_events_change_nothing(store: &dyn UserStore) {
    let batch = vec![
        update(
            "u3",
            vec![
                interaction("x", 1, Some((0, 10))),
                interaction("y", 2, Some((0, 11))),
            ],
        ),
        update("u4", vec![interaction("z", 3, Some((1, 7)))]),
    ];
    let first = store.apply(batch.clone()).await.unwrap();
    assert_eq!((first.applied, first.duplicates), (3, 0));
    let before = (
        store.user_state("u3").await.unwrap(),
        store.user_state("u4").await.unwrap(),
    );

    assert_eq!(before.0.history_version, 2);
    let again = store.apply(batch.clone()).await.unwrap();
    assert_eq!((again.applied, again.duplicates), (0, 3));
    let after = (
        store.user_state("u3").await.unwrap(),
        store.user_state("u4").await.unwrap(),
    );
    assert_eq!(before, after);

    // A batch overlapping the applied range applies only what is new, per partition.
    let overlap = store
        .apply(vec![update(
            "u3",
            vec![
                interaction("y", 2, Some((0, 11))),
                interaction("w", 4, Some((0, 12))),
                interaction("v", 5, Some((2, 0))),
            ],
        )])
        .await
        .unwrap();
    assert_eq!((overlap.applied, overlap.duplicates), (2, 1));
    assert_eq!(
        store.user_state("u3").await.unwrap().recent_items,
        ["x", "y", "w", "v"]
    );
}

pub async fn repeated_event_ids_are_applied_once(store: &dyn UserStore) {
    let event = |id: &str, item: &str, position: Option<(i32, i64)>| AppliedInteraction {
        event: Some(EventDigest::of(id)),
        popularity_increment: 1.0,
        ..interaction(item, 1, position)
    };
    // Posted, then posted again by a client that timed out (no positions), once within a batch.
    let posted = update("dup1", vec![event("e1", "a", None), event("e2", "b", None)]);
    store.apply(vec![posted.clone()]).await.unwrap();
    let again = store
        .apply(vec![update(
            "dup1",
            vec![
                event("e2", "b", None),
                event("e3", "c", None),
                event("e3", "c", None),
            ],
        )])
        .await
        .unwrap();
    assert_eq!((again.applied, again.duplicates), (1, 2));
    let state = store.user_state("dup1").await.unwrap();
    assert_eq!(state.recent_items, ["a", "b", "c"]);
    assert_eq!(state.history_version, 3);

    // Produced twice: the same events at later offsets of the same partition.
    let produced = update(
        "dup2",
        vec![
            event("k1", "x", Some((0, 1))),
            event("k2", "y", Some((0, 2))),
        ],
    );
    store.apply(vec![produced]).await.unwrap();
    let reproduced = store
        .apply(vec![update(
            "dup2",
            vec![
                event("k1", "x", Some((0, 7))),
                event("k2", "y", Some((0, 8))),
                event("k3", "z", Some((0, 9))),
            ],
        )])
        .await
        .unwrap();
    assert_eq!((reproduced.applied, reproduced.duplicates), (1, 2));
    assert_eq!(
        store.user_state("dup2").await.unwrap().recent_items,
        ["x", "y", "z"]
    );
    // Repeats add no popularity: a, b, c, x, y, z once each.
    let popular = store.top_popular(10).await.unwrap();
    assert!(
        popular.iter().all(|(_, score)| *score == 1.0),
        "{popular:?}"
    );
}

pub async fn users_do_not_see_each_other(store: &dyn UserStore) {
    store
        .apply(vec![
            update("alice", vec![interaction("a1", 1, None)]),
            update("bob", vec![interaction("b1", 1, None)]),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.user_state("alice").await.unwrap().recent_items,
        ["a1"]
    );
    assert_eq!(store.user_state("bob").await.unwrap().recent_items, ["b1"]);
    // User ids with characters that matter to key syntax stay isolated too.
    store
        .apply(vec![update("{weird}:id", vec![interaction("w1", 1, None)])])
        .await
        .unwrap();
    assert_eq!(
        store.user_state("{weird}:id").await.unwrap().recent_items,
        ["w1"]
    );
    assert!(store
        .user_state("weird")
        .await
        .unwrap()
        .recent_items
        .is_empty());
}

pub async fn cached_recommendations_round_trip_next_to_the_history(store: &dyn UserStore) {
    store
        .apply(vec![update("u5", vec![interaction("a", 100, None)])])
        .await
        .unwrap();
    let cached = CachedRecommendations {
        model_version: "gru-test-1".into(),
        reflects_event_time_ms: 100,
        reflects_history_version: 1,
        computed_at_ms: 150,
        items: vec![
            CachedItem {
                item_id: "b".into(),
                score: 1.5,
            },
            CachedItem {
                item_id: "c".into(),
                score: 0.5,
            },
        ],
    };
    store
        .put_cached_recommendations(&[("u5".to_owned(), cached.clone())])
        .await
        .unwrap();
    let state = store.user_state("u5").await.unwrap();
    assert_eq!(state.cached, Some(cached.clone()));
    assert_eq!(state.recent_items, ["a"]);
    assert_eq!(state.history_version, 1);
    // Applying events keeps the cache slot; readers compare its event time with the history's.
    store
        .apply(vec![update("u5", vec![interaction("d", 200, None)])])
        .await
        .unwrap();
    let state = store.user_state("u5").await.unwrap();
    assert_eq!(state.cached.as_ref(), Some(&cached));
    assert_eq!(state.newest_event_time_ms, Some(200));
    // An event older than the newest one still moves the version on.
    store
        .apply(vec![update("u5", vec![interaction("e", 50, None)])])
        .await
        .unwrap();
    let state = store.user_state("u5").await.unwrap();
    assert_eq!(state.newest_event_time_ms, Some(200));
    assert_eq!(state.history_version, 3);

    // A list from version 3 replaces the one from 1; a late one from 2 (a member that lost the
    // user's partition finishing its push) does not replace it; another from 3 does.
    let from_version = |version: u64, item: &str| CachedRecommendations {
        reflects_history_version: version,
        items: vec![CachedItem {
            item_id: item.into(),
            score: 1.0,
        }],
        ..cached.clone()
    };
    for (version, item) in [(3, "x"), (2, "stale"), (3, "y")] {
        store
            .put_cached_recommendations(&[
                ("u5".to_owned(), from_version(version, item)),
                ("u6".to_owned(), from_version(version, item)),
            ])
            .await
            .unwrap();
    }
    for user in ["u5", "u6"] {
        let state = store.user_state(user).await.unwrap();
        assert_eq!(state.cached, Some(from_version(3, "y")), "{user}");
    }
}

pub async fn popularity_accumulates_and_ranks(store: &dyn UserStore) {
    assert!(store.top_popular(10).await.unwrap().is_empty());
    store
        .add_popularity(&[("a".into(), 1.0), ("b".into(), 2.5), ("c".into(), 0.5)])
        .await
        .unwrap();
    store
        .add_popularity(&[("a".into(), 2.0), ("d".into(), 3.0)])
        .await
        .unwrap();
    let top = store.top_popular(3).await.unwrap();
    // a and d tie at 3.0: higher item id first.
    assert_eq!(
        top,
        [
            ("d".to_owned(), 3.0),
            ("a".to_owned(), 3.0),
            ("b".to_owned(), 2.5)
        ]
    );
    assert_eq!(store.top_popular(0).await.unwrap(), []);
}

pub async fn only_applied_interactions_add_popularity(store: &dyn UserStore) {
    let weighted = |item: &str, offset: i64, weight: f64| AppliedInteraction {
        popularity_increment: weight,
        ..interaction(item, offset, Some((0, offset)))
    };
    let batch = [
        update("p1", vec![weighted("a", 1, 1.0), weighted("b", 2, 2.0)]),
        update("p2", vec![weighted("a", 3, 4.0)]),
    ];
    store.apply(batch.to_vec()).await.unwrap();
    // Redelivered (same positions): nothing more is counted.
    store.apply(batch.to_vec()).await.unwrap();
    // Partly redelivered: only the new interaction counts.
    store
        .apply(vec![update(
            "p1",
            vec![weighted("b", 2, 2.0), weighted("c", 5, 0.5)],
        )])
        .await
        .unwrap();
    assert_eq!(
        store.top_popular(10).await.unwrap(),
        [
            ("a".to_owned(), 5.0),
            ("b".to_owned(), 2.0),
            ("c".to_owned(), 0.5)
        ]
    );
}

pub async fn concurrent_writers_to_one_user_lose_nothing(store: &dyn UserStore) {
    // Eight writers (as during a rebalance, or several APIs on the in-process bus), each
    // with its own partition, all writing the same user at once, twice over.
    let writer = |partition: i32| {
        let interactions = (0..10)
            .map(|offset| {
                let mut interaction = interaction(
                    &format!("{}", partition * 100 + offset as i32),
                    offset,
                    Some((partition, offset)),
                );
                interaction.popularity_increment = 1.0;
                interaction
            })
            .collect();
        update("shared", interactions)
    };
    let batches: Vec<Vec<UserUpdate>> = (0..8).map(|partition| vec![writer(partition)]).collect();
    let first =
        futures::future::join_all(batches.iter().map(|batch| store.apply(batch.clone()))).await;
    let second =
        futures::future::join_all(batches.iter().map(|batch| store.apply(batch.clone()))).await;
    let applied: usize = first
        .iter()
        .map(|outcome| outcome.as_ref().unwrap().applied)
        .sum();
    let duplicates: usize = second
        .iter()
        .map(|outcome| outcome.as_ref().unwrap().duplicates)
        .sum();
    assert_eq!((applied, duplicates), (80, 80));
    let state = store.user_state("shared").await.unwrap();
    assert_eq!(state.history_version, 80);
    let counted: f64 = store
        .top_popular(100)
        .await
        .unwrap()
        .iter()
        .map(|(_, score)| score)
        .sum();
    assert_eq!(counted, 80.0);
}

pub async fn a_forgotten_user_keeps_nothing_and_old_events_stay_out(store: &dyn UserStore) {
    store
        .apply(vec![
            update(
                "leaver",
                vec![
                    interaction("a", 100, Some((0, 1))),
                    interaction("b", 200, Some((0, 2))),
                ],
            ),
            update("stayer", vec![interaction("a", 100, Some((1, 1)))]),
        ])
        .await
        .unwrap();
    let cached = CachedRecommendations {
        model_version: "gru-test-1".into(),
        reflects_event_time_ms: 200,
        reflects_history_version: 2,
        computed_at_ms: 250,
        items: vec![CachedItem {
            item_id: "c".into(),
            score: 1.0,
        }],
    };
    store
        .put_cached_recommendations(&[("leaver".to_owned(), cached)])
        .await
        .unwrap();

    assert!(store.forget_user("leaver").await.unwrap());
    let state = store.user_state("leaver").await.unwrap();
    assert!(
        state.recent_items.is_empty() && state.seen_items.is_empty(),
        "{state:?}"
    );
    assert_eq!((state.cached, state.newest_event_time_ms), (None, None));
    assert_eq!(
        store.user_state("stayer").await.unwrap().recent_items,
        ["a"]
    );

    // The same events read again from the log are skipped; new ones count.
    let outcome = store
        .apply(vec![update(
            "leaver",
            vec![
                interaction("a", 100, Some((0, 1))),
                interaction("b", 200, Some((0, 2))),
                interaction("z", 300, Some((0, 3))),
            ],
        )])
        .await
        .unwrap();
    assert_eq!((outcome.applied, outcome.duplicates), (1, 2));
    assert_eq!(
        store.user_state("leaver").await.unwrap().recent_items,
        ["z"]
    );
    assert!(!store.forget_user("nobody").await.unwrap());
}

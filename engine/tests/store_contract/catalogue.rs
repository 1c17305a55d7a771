//! The catalogue cases every store backend must pass, and the live view following it.

use std::sync::Arc;

use engine::catalogue::{CatalogueItem, CatalogueStore, LiveCatalogue};
use engine::store::UserStore;

fn item(item_id: &str, title: &str, available: bool) -> CatalogueItem {
    let mut attributes = serde_json::Map::new();
    attributes.insert("genres".into(), serde_json::json!(["Drama"]));
    CatalogueItem {
        item_id: item_id.to_owned(),
        title: Some(title.to_owned()),
        attributes,
        available,
        updated_at_ms: 1,
    }
}

pub async fn catalogue_upserts_replace_and_the_change_log_names_each_item_once(
    store: &dyn UserStore,
) {
    assert!(store.catalogue_changes(0, 10).await.unwrap().is_empty());
    store
        .upsert_items(&[item("a", "A", true), item("b", "B", true)])
        .await
        .unwrap();
    let first = store.catalogue_changes(0, 10).await.unwrap();
    let ids: Vec<&str> = first
        .iter()
        .map(|change| change.item.item_id.as_str())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(first[0].sequence < first[1].sequence);
    assert_eq!(first[0].item, item("a", "A", true));

    let found = store
        .catalogue_items(&["b".to_owned(), "ghost".to_owned(), "a".to_owned()])
        .await
        .unwrap();
    let ids: Vec<&str> = found.iter().map(|item| item.item_id.as_str()).collect();
    assert_eq!(ids, ["b", "a"], "request order, unknown ids left out");

    // A change to `a` moves it after `b` in the log, with its new state, and only there.
    store
        .upsert_items(&[item("a", "A, renamed", false)])
        .await
        .unwrap();
    let since_b = store
        .catalogue_changes(first[1].sequence, 10)
        .await
        .unwrap();
    assert_eq!(since_b.len(), 1);
    assert_eq!(since_b[0].item, item("a", "A, renamed", false));
    let all = store.catalogue_changes(0, 10).await.unwrap();
    let ids: Vec<&str> = all
        .iter()
        .map(|change| change.item.item_id.as_str())
        .collect();
    assert_eq!(ids, ["b", "a"]);
    assert_eq!(store.catalogue_changes(0, 1).await.unwrap().len(), 1);
}

pub async fn replicas_following_one_catalogue_see_each_change(store: Arc<dyn UserStore>) {
    let writer = LiveCatalogue::new(Arc::clone(&store) as Arc<dyn CatalogueStore>);
    let replica = LiveCatalogue::new(store.clone() as Arc<dyn CatalogueStore>);
    store
        .upsert_items(&[item("a", "A", true), item("b", "B", true)])
        .await
        .unwrap();
    assert_eq!(replica.refresh().await.unwrap(), 2);
    assert_eq!(replica.view().len(), 2);
    assert!(replica.view().is_available("a"));
    assert!(
        replica.view().is_available("never-described"),
        "items only the index knows are available"
    );
    assert_eq!(replica.refresh().await.unwrap(), 0, "nothing new");

    store.upsert_items(&[item("a", "A", false)]).await.unwrap();
    writer.refresh().await.unwrap();
    replica.refresh().await.unwrap();
    for view in [writer.view(), replica.view()] {
        assert!(!view.is_available("a"));
        assert_eq!(view.unavailable(), ["a"]);
        assert_eq!(view.item("b").unwrap().title.as_deref(), Some("B"));
    }
    // Back on sale, seen by a replica that only follows in the background.
    let follower = Arc::new(LiveCatalogue::new(store.clone() as Arc<dyn CatalogueStore>));
    let refresher = follower.spawn_refresher(std::time::Duration::from_millis(20));
    store.upsert_items(&[item("a", "A", true)]).await.unwrap();
    let mut waited = 0;
    while !follower.view().is_available("a") || follower.view().len() != 2 {
        assert!(waited < 250, "the background refresher never caught up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += 1;
    }
    refresher.abort();
    assert!(follower.view().unavailable().is_empty());
}

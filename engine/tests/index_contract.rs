//! One contract for every `VectorIndex` backend: Qdrant Edge always, and a Qdrant server: the one
//! `QDRANT_URL` names (for example `QDRANT_URL=http://localhost:6334`), or one the harness starts
//! where the machine has the binary (`scripts/setup.sh --tests`), or SKIPPED.

use std::sync::Arc;

use engine::index::{
    build_index, open_index, prune_index_versions, serve_existing_index, IndexPoint, Payload,
    VectorIndex,
};

fn point(point_id: u64, item_id: &str, vector: [f32; 3], title: &str) -> IndexPoint {
    let mut payload = Payload::new();
    payload.insert("title".into(), title.into());
    payload.insert("genres".into(), serde_json::json!(["Drama"]));
    IndexPoint {
        point_id,
        item_id: item_id.into(),
        vector: vector.to_vec(),
        payload,
    }
}

fn catalogue() -> Vec<IndexPoint> {
    vec![
        point(1, "a", [1.0, 0.0, 0.0], "Alpha"),
        point(2, "b", [0.9, 0.1, 0.0], "Beta"),
        point(3, "c", [0.5, 0.5, 0.0], "Gamma"),
        point(4, "d", [0.0, 1.0, 0.0], "Delta"),
        point(5, "e", [0.0, 0.0, 1.0], "Epsilon"),
    ]
}

async fn search_ranks_by_dot_product_and_excludes_inside_the_search(index: &dyn VectorIndex) {
    let hits = index.search(&[1.0, 0.2, 0.0], 3, &[]).await.unwrap();
    let order: Vec<&str> = hits.iter().map(|hit| hit.item_id.as_str()).collect();
    assert_eq!(order, ["a", "b", "c"]);
    assert!(
        (hits[0].score - 1.0).abs() < 1e-5,
        "dot product score, got {}",
        hits[0].score
    );
    assert_eq!(hits[0].payload["title"], "Alpha");

    // Excluding the best two still returns three items: the filter runs inside the search.
    let hits = index
        .search(&[1.0, 0.2, 0.0], 3, &["a", "b", "unknown"])
        .await
        .unwrap();
    let order: Vec<&str> = hits.iter().map(|hit| hit.item_id.as_str()).collect();
    assert_eq!(order, ["c", "d", "e"]);
}

async fn items_come_back_in_request_order_and_unknown_ids_are_left_out(index: &dyn VectorIndex) {
    let items = index
        .items(&["d".into(), "nope".into(), "a".into()])
        .await
        .unwrap();
    let ids: Vec<&str> = items.iter().map(|item| item.item_id.as_str()).collect();
    assert_eq!(ids, ["d", "a"]);
    assert_eq!(items[0].payload["title"], "Delta");
    assert_eq!(items[0].payload["genres"], serde_json::json!(["Drama"]));
    index.ping().await.unwrap();
}

async fn an_items_vector_is_the_one_indexed(index: &dyn VectorIndex) {
    assert_eq!(
        index.item_vector("c").await.unwrap(),
        Some(vec![0.5, 0.5, 0.0])
    );
    assert_eq!(index.item_vector("nope").await.unwrap(), None);
}

async fn contract(index: Arc<dyn VectorIndex>) {
    search_ranks_by_dot_product_and_excludes_inside_the_search(index.as_ref()).await;
    items_come_back_in_request_order_and_unknown_ids_are_left_out(index.as_ref()).await;
    an_items_vector_is_the_one_indexed(index.as_ref()).await;
}

/// Versions for bundles no longer kept go; the served one and those of kept bundles stay.
async fn old_versions_are_pruned(url: &str, alias: &str, data_dir: &std::path::Path) {
    for version in ["a-100-1", "b-200-2", "c-300-3", "d-400-4"] {
        build_index(url, alias, version, 3, catalogue(), data_dir)
            .await
            .unwrap();
    }
    let mut removed = prune_index_versions(url, alias, data_dir, &["b-200"])
        .await
        .unwrap();
    removed.sort();
    assert_eq!(removed, ["a-100-1", "c-300-3"]);
    let served = open_index(url, alias, data_dir).await.unwrap();
    assert_eq!(served.bundle_version(), Some("d-400"));
    drop(served);
    for (bundle, left) in [("a-100", None), ("b-200", Some("b-200-2")), ("c-300", None)] {
        let found = serve_existing_index(url, alias, data_dir, bundle)
            .await
            .unwrap();
        assert_eq!(found.as_deref(), left, "{bundle}");
    }
}

#[tokio::test]
async fn embedded_index_prunes_old_versions() {
    let data_dir = tempfile::tempdir().unwrap();
    old_versions_are_pruned("embedded", "items", data_dir.path()).await;
}

/// Qdrant Edge lets one opener at a time have a shard: the next one (here in the same process,
/// in practice `recsys consume` next to `recsys serve`) serves a private copy, which goes when it
/// is dropped.
#[tokio::test]
async fn an_embedded_index_open_elsewhere_is_served_from_a_private_copy() {
    let data_dir = tempfile::tempdir().unwrap();
    build_index("embedded", "items", "v1", 3, catalogue(), data_dir.path())
        .await
        .unwrap();
    let first = open_index("embedded", "items", data_dir.path())
        .await
        .unwrap();
    let second = open_index("embedded", "items", data_dir.path())
        .await
        .unwrap();
    assert_eq!(second.version(), "v1");
    contract(Arc::clone(&second)).await;
    contract(first).await;
    let copies = data_dir.path().join("index/items/.copies");
    assert_eq!(std::fs::read_dir(&copies).unwrap().count(), 1);
    drop(second);
    assert_eq!(std::fs::read_dir(&copies).unwrap().count(), 0);
}

#[tokio::test]
async fn embedded_index_meets_the_contract_and_rebuilds_switch_atomically() {
    let data_dir = tempfile::tempdir().unwrap();
    let missing = open_index("embedded", "items", data_dir.path())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(missing.contains("run `recsys index` first"), "{missing}");

    build_index("embedded", "items", "v1", 3, catalogue(), data_dir.path())
        .await
        .unwrap();
    let first = open_index("embedded", "items", data_dir.path())
        .await
        .unwrap();
    assert_eq!(first.version(), "v1");
    contract(Arc::clone(&first)).await;

    // A failed build (wrong dimension) leaves the served version alone.
    let mut broken = catalogue();
    broken[2].vector = vec![1.0];
    assert!(
        build_index("embedded", "items", "v2", 3, broken, data_dir.path())
            .await
            .is_err()
    );
    drop(first);
    let still_first = open_index("embedded", "items", data_dir.path())
        .await
        .unwrap();
    assert_eq!(still_first.version(), "v1");
    drop(still_first);

    // A complete rebuild moves the alias.
    let mut renamed = catalogue();
    renamed[0]
        .payload
        .insert("title".into(), "Alpha (new)".into());
    build_index("embedded", "items", "v3", 3, renamed, data_dir.path())
        .await
        .unwrap();
    let second = open_index("embedded", "items", data_dir.path())
        .await
        .unwrap();
    assert_eq!(second.version(), "v3");
    assert_eq!(
        second.items(&["a".into()]).await.unwrap()[0].payload["title"],
        "Alpha (new)"
    );
}

#[tokio::test]
async fn remote_index_meets_the_contract_on_a_qdrant_server() {
    // `QDRANT_URL` names a server of your own; otherwise the harness starts one when this
    // machine has the binary.
    let (url, _server) = match std::env::var("QDRANT_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let Some(server) =
                testkit::QdrantServer::start_or_skip("the Qdrant-server index contract")
            else {
                return;
            };
            (server.url(), Some(server))
        }
    };
    let alias = format!("recsys-test-{}", std::process::id());
    let data_dir = tempfile::tempdir().unwrap();
    build_index(&url, &alias, "v1", 3, catalogue(), data_dir.path())
        .await
        .unwrap();
    contract(open_index(&url, &alias, data_dir.path()).await.unwrap()).await;
    old_versions_are_pruned(&url, &format!("{alias}-pruned"), data_dir.path()).await;
}

//! The GRU kernel against plain libtorch on a bundle of production size: the default GRU (256
//! dims, 50 steps) trained on MovieLens-100k. Query vectors must agree within 1e-5 and retrieve the
//! same top 10 apart from near-ties.
//!
//! Training takes minutes, so the bundle is trained once and kept under
//! `$RECSYS_CACHE_DIR/fixtures/` (the test setup's tool cache), not on every run. MovieLens-100k
//! must be in `$RECSYS_DATA_DIR` (`scripts/setup.sh` puts it there).

use std::path::{Path, PathBuf};

use dataset::Dataset;
use model_server::model::EncoderKind;
use model_server::offline::train_bundle;
use model_server::train::TrainConfig;
use model_server::{Embedder, EmbedderConfig, ModelBundle};

/// Bump when the training recipe below changes, so a stale cached bundle is not reused.
const FIXTURE_NAME: &str = "gru-ml-100k-256x50-v1";
const LARGEST_QUERY_DIFFERENCE: f32 = 1e-5;
/// Two items whose scores differ by less than this may swap places between the two paths.
const NEAR_TIE: f32 = 1e-4;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn movielens_data_dir() -> PathBuf {
    std::env::var_os("RECSYS_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repository_root().join("data"))
}

fn fixture_cache_dir() -> PathBuf {
    let cache = std::env::var_os("RECSYS_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/recsys")
        });
    cache.join("fixtures")
}

/// The cached bundle, trained into the cache first if it is not there.
fn production_size_bundle() -> PathBuf {
    let cached = fixture_cache_dir().join(FIXTURE_NAME);
    if ModelBundle::load(&cached).is_ok() {
        return cached;
    }
    let data_dir = movielens_data_dir();
    assert!(
        data_dir.join("datasets/ml-100k/ml-100k.inter").exists(),
        "MovieLens-100k is not in {}: run scripts/setup.sh",
        data_dir.display()
    );
    // Trained in a scratch data dir that borrows the data set, then moved into the cache whole.
    let scratch = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(scratch.path().join("datasets")).unwrap();
    std::os::unix::fs::symlink(
        std::fs::canonicalize(data_dir.join("datasets/ml-100k")).unwrap(),
        scratch.path().join("datasets/ml-100k"),
    )
    .unwrap();
    let config = TrainConfig {
        // Enough epochs for trained (not random) weights; quality is not what is tested here.
        max_epochs: 8,
        show_progress: false,
        ..TrainConfig::for_encoder(EncoderKind::Gru)
    };
    assert_eq!((config.embedding_dim, config.max_len), (256, 50));
    let outcome = train_bundle(scratch.path(), "ml-100k", &config, false).unwrap();
    std::fs::create_dir_all(fixture_cache_dir()).unwrap();
    let _ = std::fs::remove_dir_all(&cached);
    std::fs::rename(&outcome.bundle_dir, &cached)
        .or_else(|_| copy_dir(&outcome.bundle_dir, &cached))
        .unwrap();
    cached
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

fn embedder(bundle_dir: &Path, single_sequence_kernel: bool) -> Embedder {
    Embedder::start(
        ModelBundle::load(bundle_dir).unwrap(),
        EmbedderConfig {
            single_sequence_kernel,
            ..EmbedderConfig::default()
        },
    )
}

/// Every item's score for `query`, best first.
fn ranking(embedder: &Embedder, query: &[f32]) -> Vec<(String, f32)> {
    let mut scored: Vec<(String, f32)> = embedder
        .id_map()
        .raw_ids()
        .iter()
        .map(|item| {
            let vector = embedder.item_vector(item).unwrap();
            let score = vector.iter().zip(query).map(|(a, b)| a * b).sum();
            (item.clone(), score)
        })
        .collect();
    scored.sort_by(|left, right| right.1.total_cmp(&left.1));
    scored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_equals_libtorch_on_a_trained_ml100k_bundle() {
    let bundle_dir = production_size_bundle();
    let kernel = embedder(&bundle_dir, true);
    let libtorch = embedder(&bundle_dir, false);
    assert!(kernel.embeds_on_caller(), "the GRU bundle has a kernel");
    assert!(!libtorch.embeds_on_caller(), "the switch turns it off");
    assert_eq!((kernel.dim(), kernel.max_len()), (256, 50));

    // Real histories of every length, from one item to longer than the model reads.
    let dataset = Dataset::load(&movielens_data_dir(), "ml-100k").unwrap();
    let sequences: Vec<Vec<String>> = dataset
        .user_sequences()
        .into_iter()
        .step_by(3)
        .enumerate()
        .map(|(position, user)| {
            let length = 1 + position % 70;
            let start = user.item_ids.len().saturating_sub(length);
            user.item_ids[start..].to_vec()
        })
        .collect();
    assert!(sequences.len() > 300);

    let mut largest_difference = 0.0f32;
    for sequence in &sequences {
        let fast = kernel.embed(sequence).await.unwrap().vector;
        let reference = libtorch.embed(sequence).await.unwrap().vector;
        for (fast, reference) in fast.iter().zip(&reference) {
            largest_difference = largest_difference.max((fast - reference).abs());
        }
        let fast_top: Vec<(String, f32)> = ranking(&kernel, &fast).into_iter().take(10).collect();
        let reference_ranking = ranking(&libtorch, &reference);
        let reference_score = |item: &str| {
            reference_ranking
                .iter()
                .find(|(candidate, _)| candidate == item)
                .map(|(_, score)| *score)
                .unwrap()
        };
        for (rank, ((fast_item, _), (reference_item, reference_item_score))) in
            fast_top.iter().zip(&reference_ranking).enumerate()
        {
            if fast_item != reference_item {
                let gap = (reference_score(fast_item) - reference_item_score).abs();
                assert!(
                    gap < NEAR_TIE,
                    "rank {rank} of {sequence:?}: {fast_item} vs {reference_item}, scores {gap} apart"
                );
            }
        }
    }
    assert!(
        largest_difference < LARGEST_QUERY_DIFFERENCE,
        "query vectors differ by up to {largest_difference}"
    );
}

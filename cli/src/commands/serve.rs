//! Serving commands: `serve` (the API until SIGTERM/SIGINT, then drained), `index`, and
//! `bench-prepare` (the API load benchmark's stored users and request bodies).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::load_bodies::prepare_retrieve_load;
use crate::args::ServingArgs;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    serving: ServingArgs,
    /// Overrides `api.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(Args)]
pub struct IndexArgs {
    #[command(flatten)]
    serving: ServingArgs,
    /// Do nothing when the index served under the alias was built for the current bundle (an
    /// index of another bundle is rebuilt: its vectors would not match the model's queries).
    #[arg(long)]
    if_missing: bool,
}

#[derive(Args)]
pub struct BenchPrepareArgs {
    #[command(flatten)]
    serving: ServingArgs,
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
    /// Where the bodies go, one JSON object per line (`oha -Z`).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Installed before anything slow, so a SIGTERM during start-up also ends cleanly.
    let stop_requested = common::shutdown::signal();
    let mut config = args.serving.load()?;
    if let Some(listen) = args.listen {
        config.api.listen = listen;
    }
    let _warm =
        super::keep_memory_resident_and_warm(config.lock_memory, config.memory_warm_interval_secs);
    let (retriever, _refreshers) = engine::startup::build_retriever(&config).await.context(
        "starting the serving pipeline (`recsys train` makes a bundle, `recsys index` the index)",
    )?;
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding {}", config.api.listen))?;
    let state = api::AppState::new(&config, retriever).context("connecting the event log")?;
    // Not fatal: events posted meanwhile are only held back, not refused.
    if !state.events.wait_until_ready(Duration::from_secs(10)).await {
        tracing::warn!(
            backend = state.events.backend(),
            "the event log is not ready after 10 s; starting anyway"
        );
    }
    let events = std::sync::Arc::clone(&state.events);
    // A promoted bundle (its index built, then `bundles/CURRENT` moved) is served without a
    // restart; an explicit `model.bundle` is fixed.
    if config.model.reload_interval_ms > 0 && config.model.bundle.is_none() {
        engine::serving::spawn_bundle_watcher(
            config.clone(),
            std::sync::Arc::clone(&state.retriever),
            Duration::from_millis(config.model.reload_interval_ms),
        );
    }
    let handle = api::spawn(listener, state, stop_requested)?;
    let address = handle.local_addr;
    tracing::info!(%address, "recommendation API listening");
    println!("recsys API listening on http://{address}");
    println!("demo page: http://{address}/ (search, item pages, recommendations for your clicks)");
    println!("try:");
    println!(
        "  curl -s -X POST 'http://{address}/recs/retrieve?count=5' -H 'content-type: application/json' \\\n    -d '{{\"user_ids_raw\": [\"196\"], \"item_seq_raw\": [[\"242\", \"302\", \"377\"]], \"candidate_items_raw\": []}}'"
    );
    // Ends after the signal, once every request in flight has its answer.
    handle.task.await??;
    // Events accepted before the signal are applied, and the embedded archive written.
    events.close().await;
    tracing::info!("recommendation API stopped");
    Ok(())
}

pub async fn index(args: IndexArgs) -> anyhow::Result<()> {
    let config = args.serving.load()?;
    if args.if_missing {
        let existing = engine::index::open_index(
            &config.index.url,
            &config.index.collection,
            &config.data_dir,
        )
        .await;
        if let Ok(index) = existing {
            let current_bundle = engine::startup::bundle_dir(&config)
                .ok()
                .and_then(|dir| dataset::BundleManifest::load(&dir).ok())
                .map(|bundle| bundle.config.model_version);
            if index.bundle_version() == current_bundle.as_deref() {
                println!(
                    "index '{}' already serves {}, built for the current bundle",
                    config.index.collection,
                    index.version()
                );
                return Ok(());
            }
            println!(
                "index '{}' serves {}, built for {}; rebuilding it for {}",
                config.index.collection,
                index.version(),
                index.bundle_version().unwrap_or("an unknown bundle"),
                current_bundle.as_deref().unwrap_or("the current bundle"),
            );
            // The embedded index is a directory one process may hold open at a time.
            drop(index);
        }
    }
    let outcome = engine::startup::build_index_from_bundle(&config)
        .await
        .context("building the index (is there a bundle? `recsys train` makes one)")?;
    println!(
        "index '{}' now serves {} ({} items{})",
        config.index.collection,
        outcome.version,
        outcome.items,
        if outcome.seeded_popularity > 0 {
            format!(
                "; live popularity seeded from {} training counts",
                outcome.seeded_popularity
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

pub async fn bench_prepare(args: BenchPrepareArgs) -> anyhow::Result<()> {
    let config = args.serving.load()?;
    let out = &args.out;
    let bundle = dataset::BundleManifest::load(&engine::startup::bundle_dir(&config)?)?;
    let dataset = dataset::Dataset::load(&config.data_dir, &bundle.config.dataset)?;
    let store = engine::startup::open_state_store(&config).await?;
    let load = prepare_retrieve_load(store.as_ref(), &dataset, args.requests, args.seed).await?;
    let mut text = load.bodies.join("\n");
    text.push('\n');
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "stored {} interactions of {} users of {}; {} request bodies in {}",
        load.stored_interactions,
        load.users,
        dataset.name,
        load.bodies.len(),
        out.display()
    );
    Ok(())
}

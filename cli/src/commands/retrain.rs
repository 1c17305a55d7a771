//! `recsys retrain`: the learning loop in one command. The archived events up to the holdout
//! become a data set, a challenger trains on it, the gate ranks it against the served champion on
//! the holdout (the latest events, which it never saw), and a challenger that passes is indexed
//! and promoted; running servers swap to it. With `--every` it repeats until SIGTERM, which it
//! honours between stages. A lock file keeps two retrains of one data dir from running at once.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use crate::args::ServingArgs;
use crate::commands::data::{describe_window, write_events_dataset};

#[derive(Args)]
pub struct RetrainArgs {
    #[command(flatten)]
    serving: ServingArgs,
    /// The most recent events held out for the gate (hours); the challenger trains on the rest.
    #[arg(long, default_value_t = 24.0)]
    holdout_hours: f64,
    /// Only events of the last N days train (default: the whole archive).
    #[arg(long)]
    days: Option<u32>,
    /// Titles, years and genres of items this data set describes (for example ml-100k).
    #[arg(long)]
    items_from: Option<String>,
    /// How much worse than the champion on the holdout (NDCG@10) a challenger may be.
    #[arg(long, default_value_t = 0.0028)]
    tolerance: f64,
    /// Training threads, kept below the cores so serving on the same machine keeps its share.
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// At most this many epochs (default: the model's own setting).
    #[arg(long)]
    max_epochs: Option<usize>,
    /// Repeat every so many minutes until SIGTERM (default: once).
    #[arg(long)]
    every_minutes: Option<u64>,
}

/// What one round did.
enum Outcome {
    Promoted(String),
    Refused(String),
}

pub async fn retrain(args: RetrainArgs) -> anyhow::Result<()> {
    let stop = common::shutdown::signal();
    tokio::pin!(stop);
    let config = args.serving.load()?;
    std::fs::create_dir_all(&config.data_dir)?;
    let lock_path = config.data_dir.join("retrain.lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    lock.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another retrain holds {}: one at a time per data dir",
            lock_path.display()
        )
    })?;
    loop {
        match round(&config, &args).await? {
            Outcome::Promoted(version) => println!("promoted {version}"),
            Outcome::Refused(version) => println!("kept the champion; {version} was refused"),
        }
        let Some(minutes) = args.every_minutes else {
            return Ok(());
        };
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(minutes * 60)) => {}
        }
    }
}

async fn round(config: &engine::config::Config, args: &RetrainArgs) -> anyhow::Result<Outcome> {
    const DATASET: &str = "events";
    let stage = |number: usize, name: &str| {
        println!("[{number}/4] {name}");
        Instant::now()
    };

    let started = stage(1, "archive → data set");
    let now = common::clock::now_ms();
    let holdout_from_ms = now - (args.holdout_hours * 3_600_000.0) as i64;
    let since_ms = args.days.map(|days| now - i64::from(days) * 86_400_000);
    let window = write_events_dataset(
        config,
        DATASET,
        since_ms,
        Some(holdout_from_ms),
        args.items_from.as_deref(),
    )?;
    println!(
        "      {} ({:.1} s)",
        describe_window(&window),
        started.elapsed().as_secs_f64()
    );

    let started = stage(2, "train the challenger");
    let defaults = model_server::train::TrainConfig::default();
    let train_config = model_server::train::TrainConfig {
        threads: args.threads,
        max_epochs: args.max_epochs.unwrap_or(defaults.max_epochs),
        show_progress: false,
        ..defaults
    };
    let data_dir = config.data_dir.clone();
    let trained = tokio::task::spawn_blocking(move || {
        model_server::offline::train_bundle(&data_dir, DATASET, &train_config, false)
    })
    .await??;
    let challenger = trained
        .bundle_dir
        .file_name()
        .and_then(|name| name.to_str())
        .context("bundle directory name")?
        .to_owned();
    println!(
        "      {challenger}: validation ndcg@10 {:.4} ({:.1} s)",
        trained.report.best_valid.ndcg_at_10,
        started.elapsed().as_secs_f64()
    );

    let started = stage(3, "gate against the champion on the holdout");
    if dataset::bundle::current_bundle_version(&config.data_dir)?.is_none() {
        // The first model of a deployment that served popular items so far.
        println!("      no champion yet: nothing to gate against");
    } else {
        let passed = gate(
            config,
            args,
            &trained.bundle_dir,
            since_ms,
            &window,
            started,
        )?;
        if !passed {
            return Ok(Outcome::Refused(challenger));
        }
    }

    let started = stage(4, "index and promote");
    let promotion = engine::promotion::promote(config, &challenger).await?;
    println!(
        "      index {} ({:.1} s)",
        promotion.index,
        started.elapsed().as_secs_f64()
    );
    Ok(Outcome::Promoted(challenger))
}

/// Ranks champion and challenger on the holdout and prints both; whether the challenger passed.
fn gate(
    config: &engine::config::Config,
    args: &RetrainArgs,
    challenger_dir: &std::path::Path,
    since_ms: Option<i64>,
    window: &archive::DataWindow,
    started: Instant,
) -> anyhow::Result<bool> {
    let champion_dir = dataset::bundle::current_bundle_dir(&config.data_dir)?;
    let events =
        archive::EventArchive::new(config.archive_dir(), "retrain").read(since_ms, None)?;
    let (everything, _) =
        archive::training_dataset("holdout", &events, &config.archive.train_event_types, &[]);
    let report = model_server::gate::gate(
        &champion_dir,
        challenger_dir,
        &everything.interactions,
        window.last_event_ms.div_euclid(1_000) + 1,
        args.tolerance,
    )?;
    println!(
        "      {} holdout events: champion ndcg@10 {:.4}, challenger {:.4}, popularity {:.4}, tolerance {} ({:.1} s)",
        report.cases,
        report.champion.ndcg_at_10,
        report.challenger.ndcg_at_10,
        report.popularity.ndcg_at_10,
        args.tolerance,
        started.elapsed().as_secs_f64()
    );
    Ok(report.passed)
}

//! `recsys retrain`: the learning loop in one command. The archived events up to the holdout
//! become a data set, a challenger trains on it, the gate ranks it against the served champion on
//! the holdout (the latest events, which it never saw), and a challenger that passes is indexed
//! and promoted; running servers swap to it. With `--every` it repeats until SIGTERM, which it
//! honours between stages. A lock file keeps two retrains of one data dir from running at once.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use crate::args::ServingArgs;
use crate::commands::data::{describe_window, write_dataset_of};

#[derive(Args)]
pub struct RetrainArgs {
    #[command(flatten)]
    serving: ServingArgs,
    /// The most recent events held out for the gate: those within this many hours of the newest
    /// archived event. The challenger trains on the rest.
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
    /// The training thread's nice value (0-19): serving processes on the same machine are
    /// scheduled first when the cores are busy.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    nice: i32,
    /// At most this many epochs (default: the model's own setting).
    #[arg(long)]
    max_epochs: Option<usize>,
    /// Repeat at this interval until SIGTERM, e.g. `1h`, `30m`, `1h30m` (default: once).
    #[arg(long, value_parser = parse_interval)]
    every: Option<Duration>,
}

/// `--every`: a positive duration in jiff's friendly format (`1h`, `30m`, `1h30m`) or ISO 8601.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let duration: jiff::SignedDuration = text
        .parse()
        .map_err(|error| format!("'{text}' is not a duration such as 1h or 30m: {error}"))?;
    Duration::try_from(duration)
        .ok()
        .filter(|interval| !interval.is_zero())
        .ok_or_else(|| format!("'{text}': the interval must be positive"))
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
        let Some(interval) = args.every else {
            return Ok(());
        };
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// One stage of a round: its heading now, a spinner while it runs (on a terminal), then a line
/// with what it did and how long it took.
struct Stage {
    spinner: indicatif::ProgressBar,
    started: Instant,
}

impl Stage {
    fn start(number: usize, name: &str) -> Stage {
        println!("[{number}/4] {name}");
        let spinner = indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("      {spinner} {elapsed}")
                .expect("a valid template"),
        );
        spinner.enable_steady_tick(Duration::from_millis(100));
        Stage {
            spinner,
            started: Instant::now(),
        }
    }

    /// For a stage that draws its own progress bar.
    fn start_quiet(number: usize, name: &str) -> Stage {
        println!("[{number}/4] {name}");
        Stage {
            spinner: indicatif::ProgressBar::hidden(),
            started: Instant::now(),
        }
    }

    fn done(self, what: &str) {
        self.spinner.finish_and_clear();
        println!(
            "      {what} ({:.1} s)",
            self.started.elapsed().as_secs_f64()
        );
    }
}

async fn round(config: &engine::config::Config, args: &RetrainArgs) -> anyhow::Result<Outcome> {
    const DATASET: &str = "events";

    let stage = Stage::start(1, "archive → data set");
    let since_ms = args
        .days
        .map(|days| common::clock::now_ms() - i64::from(days) * 86_400_000);
    let (window, events) = {
        let (config, items_from) = (config.clone(), args.items_from.clone());
        let holdout_ms = (args.holdout_hours * 3_600_000.0) as i64;
        tokio::task::spawn_blocking(move || {
            let events =
                archive::EventArchive::new(config.archive_dir(), "retrain").read(since_ms, None)?;
            // Back from the newest archived event, not from now: the archive is written every
            // `archive.flush_interval_ms`, and a replay may carry old times.
            let newest_ms = events.last().map_or(0, |event| event.event_time_ms);
            let trained =
                events.partition_point(|event| event.event_time_ms < newest_ms - holdout_ms);
            let window =
                write_dataset_of(&config, DATASET, &events[..trained], items_from.as_deref())?;
            anyhow::Ok((window, events))
        })
        .await??
    };
    stage.done(&describe_window(&window));

    let stage = Stage::start_quiet(2, "train the challenger");
    let defaults = model_server::train::TrainConfig::default();
    let train_config = model_server::train::TrainConfig {
        threads: args.threads,
        max_epochs: args.max_epochs.unwrap_or(defaults.max_epochs),
        ..defaults
    };
    let data_dir = config.data_dir.clone();
    let nice = args.nice;
    let trained = tokio::task::spawn_blocking(move || {
        // This thread only (Linux applies a thread's nice value to it alone); the threads torch
        // starts from it inherit it.
        if let Err(error) = rustix::process::setpriority_process(None, nice) {
            tracing::warn!(%error, nice, "training at normal priority");
        }
        model_server::offline::train_bundle(&data_dir, DATASET, &train_config, false)
    })
    .await??;
    let challenger = trained
        .bundle_dir
        .file_name()
        .and_then(|name| name.to_str())
        .context("bundle directory name")?
        .to_owned();
    stage.done(&format!(
        "{challenger}: validation ndcg@10 {:.4}",
        trained.report.best_valid.ndcg_at_10
    ));

    let stage = Stage::start(3, "gate against the champion on the holdout");
    if dataset::bundle::current_bundle_version(&config.data_dir)?.is_none() {
        // The first model of a deployment that served popular items so far.
        stage.done("no champion yet: nothing to gate against");
    } else {
        let (gate_config, challenger_dir) = (config.clone(), trained.bundle_dir.clone());
        let trained_until_ms = window.last_event_ms;
        let tolerance = args.tolerance;
        let report = tokio::task::spawn_blocking(move || {
            gate(
                &gate_config,
                &challenger_dir,
                &events,
                trained_until_ms,
                tolerance,
            )
        })
        .await??;
        stage.done(&format!(
            "{} holdout events: champion ndcg@10 {:.4}, challenger {:.4}, popularity {:.4}, tolerance {}",
            report.cases,
            report.champion.ndcg_at_10,
            report.challenger.ndcg_at_10,
            report.popularity.ndcg_at_10,
            tolerance,
        ));
        if !report.passed {
            engine::promotion::prune(config).await;
            return Ok(Outcome::Refused(challenger));
        }
    }

    let stage = Stage::start(4, "index and promote");
    let promotion = engine::promotion::promote(config, &challenger).await?;
    stage.done(&format!("index {}", promotion.index));
    Ok(Outcome::Promoted(challenger))
}

/// Ranks champion and challenger on the events after `trained_until_ms` (the holdout).
fn gate(
    config: &engine::config::Config,
    challenger_dir: &std::path::Path,
    events: &[schemas::InteractionEvent],
    trained_until_ms: i64,
    tolerance: f64,
) -> anyhow::Result<model_server::gate::GateReport> {
    let champion_dir = dataset::bundle::current_bundle_dir(&config.data_dir)?;
    let (everything, _) =
        archive::training_dataset("holdout", events, &config.archive.train_event_types, &[]);
    Ok(model_server::gate::gate(
        &champion_dir,
        challenger_dir,
        &everything.interactions,
        trained_until_ms.div_euclid(1_000) + 1,
        tolerance,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_positive_durations_in_friendly_or_iso_form() {
        assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_interval("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_interval("PT45S"), Ok(Duration::from_secs(45)));
        for refused in ["0s", "-5m", "hourly", ""] {
            assert!(parse_interval(refused).is_err(), "{refused}");
        }
    }
}

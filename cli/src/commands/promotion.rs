//! `promote` and `rollback`: which bundle the servers answer with, its index first.

use clap::Args;
use engine::promotion::Promotion;

use crate::args::ServingArgs;

#[derive(Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    serving: ServingArgs,
    /// The bundle to serve: a directory name under `<data_dir>/bundles/`.
    version: String,
}

#[derive(Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    serving: ServingArgs,
}

pub async fn promote(args: PromoteArgs) -> anyhow::Result<()> {
    let config = args.serving.load()?;
    report(&engine::promotion::promote(&config, &args.version).await?);
    Ok(())
}

pub async fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let config = args.serving.load()?;
    report(&engine::promotion::rollback(&config).await?);
    Ok(())
}

fn report(promotion: &Promotion) {
    println!(
        "serving {} (was {}), index {} ({}); running servers swap within model.reload_interval_ms",
        promotion.to,
        promotion.from.as_deref().unwrap_or("none"),
        promotion.index,
        if promotion.index_built {
            "built now"
        } else {
            "already there"
        }
    );
}

#[cfg(feature = "in-process-model")]
#[derive(Args)]
pub struct GateArgs {
    #[command(flatten)]
    serving: ServingArgs,
    /// The bundle that would replace the current one (a directory name under `bundles/`).
    #[arg(long)]
    challenger: String,
    /// How much worse (NDCG@10 on the holdout) the challenger may be: one seed's standard
    /// deviation of the default model (`MODEL.md`).
    #[arg(long, default_value_t = 0.0028)]
    tolerance: f64,
}

/// Ranks the current bundle and a challenger on the events archived after the challenger's
/// training data ended; exits non-zero when the challenger is refused.
#[cfg(feature = "in-process-model")]
pub fn gate(args: GateArgs) -> anyhow::Result<()> {
    use anyhow::Context;

    let config = args.serving.load()?;
    let bundles = dataset::bundle::bundles_dir(&config.data_dir);
    let challenger_dir = bundles.join(&args.challenger);
    let champion_dir = dataset::bundle::current_bundle_dir(&config.data_dir)?;
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(challenger_dir.join(dataset::bundle::METRICS_FILE))
            .with_context(|| format!("reading the metrics of {}", challenger_dir.display()))?,
    )?;
    let trained_until_ms = metrics["data_window"]["last_event_ms"].as_i64().context(
        "the challenger records no data window: train it on `recsys export-events` data",
    )?;
    let events = archive::EventArchive::new(config.archive_dir(), "gate").read(None, None)?;
    let (data, _) =
        archive::training_dataset("holdout", &events, &config.archive.train_event_types, &[]);
    // Whole seconds after the last trained event: nothing the challenger saw is held out.
    let holdout_from_s = trained_until_ms.div_euclid(1_000) + 1;
    let report = model_server::gate::gate(
        &champion_dir,
        &challenger_dir,
        &data.interactions,
        holdout_from_s,
        args.tolerance,
    )?;
    println!(
        "holdout: {} events after {}",
        report.cases, trained_until_ms
    );
    println!(
        "champion   {:<28} ndcg@10 {:.4} recall@10 {:.4}",
        champion_dir
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("?"),
        report.champion.ndcg_at_10,
        report.champion.recall_at_10
    );
    println!(
        "challenger {:<28} ndcg@10 {:.4} recall@10 {:.4}",
        args.challenger, report.challenger.ndcg_at_10, report.challenger.recall_at_10
    );
    println!(
        "popularity {:<28} ndcg@10 {:.4} recall@10 {:.4}",
        "(items by earlier counts)", report.popularity.ndcg_at_10, report.popularity.recall_at_10
    );
    if report.passed {
        println!(
            "passed: not worse than the champion by more than {}",
            args.tolerance
        );
        Ok(())
    } else {
        anyhow::bail!(
            "refused: the challenger is worse than the champion by more than {}",
            args.tolerance
        )
    }
}

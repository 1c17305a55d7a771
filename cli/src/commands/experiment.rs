//! `recsys experiment`: one training configuration over several seeds, reported as mean ± sample
//! standard deviation, so that configurations are compared on more than one seed's noise.
//!
//! Choices are made on the validation split. The test split is read only with `--test`, meant for
//! the one configuration already chosen on validation.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use model_server::eval::SeenItems;
use model_server::offline::{evaluate_bundle, evaluate_bundle_on_validation, train_bundle};

use super::model::TrainOptions;

#[derive(Args)]
pub struct ExperimentArgs {
    #[command(flatten)]
    options: TrainOptions,
    /// Seeds to train: `--seed` (or the encoder's default) and the ones after it.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// Also read the test split, for a configuration already chosen on validation.
    #[arg(long)]
    test: bool,
}

/// One seed's run.
struct SeedRun {
    seed: u64,
    best_epoch: usize,
    valid_ndcg_at_10: f64,
    valid_recall_at_10: f64,
    valid_masked_ndcg_at_10: f64,
    /// NDCG@10 and recall@10 on test, then NDCG@10 on test with seen items masked.
    test: Option<(f64, f64, f64)>,
    seconds: f64,
}

/// Mean and sample standard deviation (n - 1); the deviation is 0 for a single value.
pub fn mean_and_sd(values: &[f64]) -> (f64, f64) {
    let count = values.len() as f64;
    let mean = values.iter().sum::<f64>() / count.max(1.0);
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let variance = values
        .iter()
        .map(|value| (value - mean).powi(2))
        .sum::<f64>()
        / (count - 1.0);
    (mean, variance.sqrt())
}

fn summary(name: &str, values: &[f64]) -> String {
    let (mean, sd) = mean_and_sd(values);
    format!("{name} {mean:.4} ± {sd:.4}")
}

/// A data dir of its own for one seed's bundle, sharing the data sets of `data_dir`.
fn scratch_data_dir(data_dir: &Path, seed: u64) -> anyhow::Result<PathBuf> {
    let scratch = data_dir
        .join("experiments")
        .join(format!("{}-seed-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let datasets = std::fs::canonicalize(data_dir.join("datasets"))
        .with_context(|| format!("no data sets in {}", data_dir.display()))?;
    std::os::unix::fs::symlink(datasets, scratch.join("datasets"))?;
    Ok(scratch)
}

fn run_seed(options: &TrainOptions, seed: u64, read_test: bool) -> anyhow::Result<SeedRun> {
    let config = model_server::train::TrainConfig {
        seed,
        show_progress: false,
        ..options.config()
    };
    let scratch = scratch_data_dir(&options.data.data_dir, seed)?;
    let started = Instant::now();
    let outcome = train_bundle(&scratch, &options.dataset, &config, false)
        .with_context(|| format!("training seed {seed} on {}", options.dataset))?;
    let seconds = started.elapsed().as_secs_f64();
    let test = if read_test {
        let report = evaluate_bundle(&scratch, &outcome.bundle_dir)?;
        Some((
            report.model.ndcg_at_10,
            report.model.recall_at_10,
            report.model_seen_masked.ndcg_at_10,
        ))
    } else {
        None
    };
    let valid_masked =
        evaluate_bundle_on_validation(&scratch, &outcome.bundle_dir, SeenItems::Masked)?;
    std::fs::remove_dir_all(&scratch)?;
    Ok(SeedRun {
        seed,
        best_epoch: outcome.report.best_epoch,
        valid_ndcg_at_10: outcome.report.best_valid.ndcg_at_10,
        valid_recall_at_10: outcome.report.best_valid.recall_at_10,
        valid_masked_ndcg_at_10: valid_masked.ndcg_at_10,
        test,
        seconds,
    })
}

pub fn experiment(args: ExperimentArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.seeds >= 1, "--seeds must be at least 1");
    let first_seed = args.options.config().seed;
    let mut runs = Vec::new();
    for seed in first_seed..first_seed + args.seeds {
        let run = run_seed(&args.options, seed, args.test)?;
        let test = run.test.map_or(String::new(), |(ndcg, recall, masked)| {
            format!(
                ", test ndcg@10 {ndcg:.4} recall@10 {recall:.4} seen-masked ndcg@10 {masked:.4}"
            )
        });
        println!(
            "seed {}: best epoch {}, validation ndcg@10 {:.4} recall@10 {:.4} seen-masked ndcg@10 {:.4}{test} ({:.1} s)",
            run.seed,
            run.best_epoch,
            run.valid_ndcg_at_10,
            run.valid_recall_at_10,
            run.valid_masked_ndcg_at_10,
            run.seconds
        );
        runs.push(run);
    }
    let column = |pick: fn(&SeedRun) -> f64| runs.iter().map(pick).collect::<Vec<f64>>();
    let (seconds, seconds_sd) = mean_and_sd(&column(|run| run.seconds));
    println!(
        "{} seeds, mean ± sd: validation {}, {}, seen-masked {}; {seconds:.1} ± {seconds_sd:.1} s per run",
        runs.len(),
        summary("ndcg@10", &column(|run| run.valid_ndcg_at_10)),
        summary("recall@10", &column(|run| run.valid_recall_at_10)),
        summary("ndcg@10", &column(|run| run.valid_masked_ndcg_at_10)),
    );
    if args.test {
        println!(
            "test (read once, for the configuration chosen): {}, {}, seen-masked {}",
            summary(
                "ndcg@10",
                &column(|run| run.test.map_or(f64::NAN, |test| test.0))
            ),
            summary(
                "recall@10",
                &column(|run| run.test.map_or(f64::NAN, |test| test.1))
            ),
            summary(
                "ndcg@10",
                &column(|run| run.test.map_or(f64::NAN, |test| test.2))
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_standard_deviation() {
        let (mean, sd) = mean_and_sd(&[0.07, 0.08, 0.09]);
        assert!((mean - 0.08).abs() < 1e-12);
        assert!((sd - 0.01).abs() < 1e-12, "{sd}");
        assert_eq!(mean_and_sd(&[0.5]), (0.5, 0.0));
    }
}

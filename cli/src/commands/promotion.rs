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

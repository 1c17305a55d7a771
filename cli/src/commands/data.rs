//! Data commands: `schema` (a wire type's JSON Schema) and `synth` (a synthetic data set).

use clap::Args;
use dataset::data::synthetic::{generate, SyntheticConfig};
use dataset::data::{dataset_dir, write_atomic_files};

use crate::args::DataDirArg;

#[derive(Args)]
pub struct SchemaArgs {
    #[arg(value_parser = ["event"])]
    kind: String,
}

#[derive(Args)]
pub struct SynthArgs {
    #[command(flatten)]
    data: DataDirArg,
    #[arg(long)]
    name: String,
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    #[arg(long, default_value_t = 100_000)]
    items: usize,
    #[arg(long, default_value_t = 30)]
    events_per_user: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn schema(_args: SchemaArgs) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&schemas::event_json_schema())?
    );
    Ok(())
}

pub fn synth(args: SynthArgs) -> anyhow::Result<()> {
    let SynthArgs {
        data,
        name,
        users,
        items,
        events_per_user,
        seed,
    } = args;
    let config = SyntheticConfig {
        num_users: users,
        num_items: items,
        mean_events_per_user: events_per_user,
        seed,
        ..SyntheticConfig::default()
    };
    let dataset = generate(&name, &config);
    let dir = dataset_dir(&data.data_dir, &name);
    write_atomic_files(&dir, &dataset)?;
    println!(
        "wrote {} interactions of {users} users over {items} items to {}",
        dataset.interactions.len(),
        dir.display()
    );
    Ok(())
}

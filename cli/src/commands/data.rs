//! Data commands: `schema` (a wire type's JSON Schema), `synth` (a synthetic data set) and
//! `export-events` (the event archive as a data set).

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

#[derive(Args)]
pub struct ExportEventsArgs {
    #[command(flatten)]
    serving: crate::args::ServingArgs,
    /// The data set written: `<data_dir>/datasets/<name>/`, trained on with
    /// `recsys train --dataset <name>`.
    #[arg(long, default_value = "events")]
    name: String,
    /// Only the events of the last N days (default: the whole archive).
    #[arg(long)]
    days: Option<u32>,
    /// Titles, years and genres of items this data set describes (for example ml-100k).
    #[arg(long)]
    items_from: Option<String>,
}

/// The event archive as a training data set, with the span of events it holds in `window.json`.
pub fn export_events(args: ExportEventsArgs) -> anyhow::Result<()> {
    let config = args.serving.load()?;
    let since_ms = args
        .days
        .map(|days| common::clock::now_ms() - i64::from(days) * 86_400_000);
    let window = write_events_dataset(
        &config,
        &args.name,
        since_ms,
        None,
        args.items_from.as_deref(),
    )?;
    println!(
        "{}: {} (train with `recsys train --dataset {}`)",
        dataset_dir(&config.data_dir, &args.name).display(),
        describe_window(&window),
        args.name
    );
    Ok(())
}

/// Writes the archived events with `since_ms <= time < until_ms` as data set `name` (items
/// described from `items_from` where it knows them) and its `window.json`.
pub fn write_events_dataset(
    config: &engine::config::Config,
    name: &str,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    items_from: Option<&str>,
) -> anyhow::Result<archive::DataWindow> {
    let events =
        archive::EventArchive::new(config.archive_dir(), "export").read(since_ms, until_ms)?;
    write_dataset_of(config, name, &events, items_from)
}

/// Writes `events` (archived, oldest first) as data set `name` and its `window.json`.
pub fn write_dataset_of(
    config: &engine::config::Config,
    name: &str,
    events: &[schemas::InteractionEvent],
    items_from: Option<&str>,
) -> anyhow::Result<archive::DataWindow> {
    let known_items = match items_from {
        Some(name) => dataset::Dataset::load(&config.data_dir, name)?.items,
        None => Vec::new(),
    };
    let (data, window) = archive::training_dataset(
        name,
        events,
        &config.archive.train_event_types,
        &known_items,
    );
    let Some(window) = window else {
        anyhow::bail!(
            "the event archive in {} holds no events of the kinds training uses ({:?}) in that span",
            config.archive_dir().display(),
            config.archive.train_event_types
        );
    };
    let dir = dataset_dir(&config.data_dir, name);
    write_atomic_files(&dir, &data)?;
    common::fs::write_atomically(
        &dir.join(dataset::data::WINDOW_FILE),
        serde_json::to_string_pretty(&window)?.as_bytes(),
    )?;
    Ok(window)
}

pub fn describe_window(window: &archive::DataWindow) -> String {
    format!(
        "{} events of {} users on {} items, {} to {}",
        window.events,
        window.users,
        window.items,
        format_ms(window.first_event_ms),
        format_ms(window.last_event_ms),
    )
}

fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|time| time.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

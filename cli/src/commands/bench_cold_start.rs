//! `recsys bench-cold-start`: how soon, and how often, items added after training reach
//! personalized answers of a running API (the cold-start rule of `engine::retrieve::fresh`).
//!
//! It adds `--items` new items, then gives each its first interactions (`--events-per-item`
//! events of users who never ask for recommendations) one item every `--interval-ms`, while
//! probing `POST /recs/retrieve` every `--probe-ms` with a session of popular known items.
//! Printed per item: the time from its first interaction to the first personalized answer that
//! held it, and the share of answers holding it from then on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

#[derive(Args)]
pub struct BenchColdStartArgs {
    /// The API, e.g. http://127.0.0.1:8000.
    #[arg(long)]
    api: String,
    #[arg(long, default_value_t = 5)]
    items: usize,
    #[arg(long, default_value_t = 3)]
    events_per_item: usize,
    /// Between one new item's first interactions and the next's.
    #[arg(long, default_value_t = 5_000)]
    interval_ms: u64,
    #[arg(long, default_value_t = 20)]
    probe_ms: u64,
    #[arg(long, default_value_t = 10)]
    count: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: String,
) -> anyhow::Result<Value> {
    let response = client
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "POST {url}: {status} {answer}");
    Ok(answer)
}

pub async fn bench_cold_start(args: BenchColdStartArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let api = args.api.trim_end_matches('/');
    let run = common::clock::now_ms();
    let popular: Value = client
        .get(format!("{api}/recs/popular?count=100"))
        .send()
        .await?
        .json()
        .await?;
    let known: Vec<String> = popular["recommendations"]
        .as_array()
        .context("no popular items to build sessions from")?
        .iter()
        .filter_map(|item| item["item_id"].as_str().map(str::to_owned))
        .collect();
    anyhow::ensure!(known.len() >= 10, "the API knows too few popular items");

    let new_items: Vec<String> = (0..args.items).map(|k| format!("cold-{run}-{k}")).collect();
    let catalogue = new_items
        .iter()
        .map(|item_id| {
            json!({"item_id": item_id, "title": format!("New item {item_id}")}).to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    post(
        &client,
        &format!("{api}/items"),
        "application/x-ndjson",
        catalogue,
    )
    .await?;

    let started = Instant::now();
    let mut first_interaction: HashMap<String, Duration> = HashMap::new();
    let mut first_seen: HashMap<String, Duration> = HashMap::new();
    let mut answers_after: HashMap<String, (usize, usize)> = HashMap::new();
    let mut random = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut next_item = 0;
    let mut answers = 0usize;
    let mut with_fresh = 0usize;
    let end = Duration::from_millis(args.interval_ms * args.items as u64 + 3 * args.interval_ms);
    while started.elapsed() < end {
        if next_item < new_items.len()
            && started.elapsed() >= Duration::from_millis(args.interval_ms * next_item as u64)
        {
            let item_id = &new_items[next_item];
            let events = (0..args.events_per_item)
                .map(|fan| {
                    json!({
                        "event_id": format!("{item_id}-fan-{fan}"),
                        "user_id": format!("cold-fan-{run}-{fan}"),
                        "item_id": item_id,
                        "event_type": "purchase",
                        "event_time_ms": common::clock::now_ms(),
                    })
                    .to_string()
                })
                .collect::<Vec<_>>()
                .join("\n");
            post(
                &client,
                &format!("{api}/events"),
                "application/x-ndjson",
                events,
            )
            .await?;
            first_interaction.insert(item_id.clone(), started.elapsed());
            next_item += 1;
        }
        let session: Vec<&String> = (0..5)
            .map(|_| &known[random.random_range(0..known.len())])
            .collect();
        let answer = post(
            &client,
            &format!("{api}/recs/retrieve?count={}", args.count),
            "application/json",
            json!({"item_seq_raw": [session]}).to_string(),
        )
        .await?;
        if answer["metadata"]["source"] == "personalized" {
            answers += 1;
            let returned: Vec<&str> = answer["recommendations"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| item["item_id"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            with_fresh += usize::from(
                returned
                    .iter()
                    .any(|id| new_items.iter().any(|new| new == id)),
            );
            for item_id in first_interaction.keys() {
                let held = returned.contains(&item_id.as_str());
                if held {
                    first_seen
                        .entry(item_id.clone())
                        .or_insert_with(|| started.elapsed());
                }
                let tally = answers_after.entry(item_id.clone()).or_default();
                tally.0 += usize::from(held);
                tally.1 += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(args.probe_ms)).await;
    }

    println!(
        "{answers} personalized answers, {with_fresh} ({:.1} %) with a new item",
        100.0 * with_fresh as f64 / answers.max(1) as f64
    );
    for item_id in &new_items {
        let interacted = first_interaction.get(item_id);
        let seen = first_seen.get(item_id);
        let latency = match (interacted, seen) {
            (Some(interacted), Some(seen)) => {
                format!("{:.0} ms", (*seen - *interacted).as_secs_f64() * 1000.0)
            }
            _ => "never".to_owned(),
        };
        let (held, total) = answers_after.get(item_id).copied().unwrap_or_default();
        println!(
            "{item_id}: first personalized answer {latency} after its first interaction; in {held} of {total} answers since ({:.1} %)",
            100.0 * held as f64 / total.max(1) as f64
        );
    }
    Ok(())
}

//! `recsys replay`: a data set's interactions, in time order, sent as events to Kafka or to an
//! API's `POST /events`, at a fixed rate or as fast as the target takes them.

use std::time::{Duration, Instant};

use common::retry::{retry_transient, RetryPolicy, RetryStopped, Transience};
use dataset::Interaction;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use schemas::{EventType, InteractionEvent, EARLIEST_EVENT_TIME_MS};
use tokio_util::sync::CancellationToken;

use super::kafka::await_deliveries;
use super::{kafka_producer, EventProducer};

/// Which event time replayed events carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayTimestamps {
    /// The data set's own (MovieLens: 1997-1998; their popularity has long decayed).
    Original,
    /// The moment each event is sent, so the replay looks live (popularity moves).
    Now,
}

#[derive(Debug, Clone)]
pub enum ReplayTarget {
    Kafka {
        brokers: String,
        topic: String,
    },
    /// An API's base URL (`http://host:port`), with its events API key if it has one.
    Api {
        base_url: String,
        api_key: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Events per second; `None` sends as fast as the target takes them.
    pub rate: Option<f64>,
    pub timestamps: ReplayTimestamps,
    /// Events per `POST /events` request.
    pub api_batch: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("POST /events: {0}")]
    Http(String),
}

/// The data set's interactions as events, oldest first (ties keep file order, so a user's
/// sequence is the same as the one training and the tests compute). Ids are deterministic: a
/// replay of the same data sends the same event ids.
pub fn dataset_events(dataset_name: &str, interactions: &[Interaction]) -> Vec<InteractionEvent> {
    let mut order: Vec<usize> = (0..interactions.len()).collect();
    order.sort_by_key(|&index| interactions[index].timestamp);
    order
        .into_iter()
        .map(|index| {
            let interaction = &interactions[index];
            let (event_type, value) = match interaction.rating {
                Some(rating) => (EventType::Rating, Some(f64::from(rating))),
                None => (EventType::View, None),
            };
            InteractionEvent {
                event_id: format!("{dataset_name}-{index}"),
                user_id: interaction.user_id.clone(),
                item_id: interaction.item_id.clone(),
                event_type,
                value,
                // Synthetic data sets may start at 0; keep them above the validity floor.
                event_time_ms: (interaction.timestamp * 1000).max(EARLIEST_EVENT_TIME_MS),
            }
        })
        .collect()
}

/// Paces sends to `rate` events per second against a fixed schedule (no drift from sleeps).
struct Pacer {
    started: Instant,
    rate: Option<f64>,
}

impl Pacer {
    fn start(rate: Option<f64>) -> Pacer {
        Pacer {
            started: Instant::now(),
            rate,
        }
    }

    async fn wait_for(&self, sent: usize) {
        if let Some(rate) = self.rate {
            let due = self.started + Duration::from_secs_f64(sent as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// Sends every event; `progress` hears how many are done so far. Returns once all are durable.
pub async fn replay(
    mut events: Vec<InteractionEvent>,
    target: &ReplayTarget,
    options: &ReplayOptions,
    progress: impl Fn(usize),
) -> Result<usize, ReplayError> {
    match target {
        ReplayTarget::Kafka { brokers, topic } => {
            let producer = kafka_producer(brokers)?;
            if !producer.wait_until_ready(Duration::from_secs(10)).await {
                tracing::warn!("the producer has no producer id after 10 s; sending anyway");
            }
            let pacer = Pacer::start(options.rate);
            replay_to_kafka(&mut events, &producer, topic, options, &pacer, progress).await
        }
        ReplayTarget::Api { base_url, api_key } => {
            let pacer = Pacer::start(options.rate);
            replay_to_api(
                &mut events,
                base_url,
                api_key.as_deref(),
                options,
                &pacer,
                progress,
            )
            .await
        }
    }
}

fn stamp(event: &mut InteractionEvent, timestamps: ReplayTimestamps) {
    if timestamps == ReplayTimestamps::Now {
        event.event_time_ms = common::clock::now_ms();
    }
}

async fn replay_to_kafka(
    events: &mut [InteractionEvent],
    producer: &EventProducer,
    topic: &str,
    options: &ReplayOptions,
    pacer: &Pacer,
    progress: impl Fn(usize),
) -> Result<usize, ReplayError> {
    // Deliveries are awaited in windows so memory stays bounded and progress means "durable".
    const WINDOW: usize = 5_000;
    let mut deliveries = Vec::with_capacity(WINDOW);
    let mut delivered = 0;
    for (sent, event) in events.iter_mut().enumerate() {
        pacer.wait_for(sent).await;
        stamp(event, options.timestamps);
        let payload = serde_json::to_vec(&*event).expect("events serialise");
        let drained = producer
            .send_queued(&mut deliveries, || {
                FutureRecord::to(topic)
                    .key(event.user_id.as_bytes())
                    .payload(payload.as_slice())
            })
            .await?;
        if drained > 0 {
            delivered += drained;
            progress(delivered);
        }
        if deliveries.len() >= WINDOW {
            delivered += await_deliveries(&mut deliveries).await?;
            progress(delivered);
        }
    }
    delivered += await_deliveries(&mut deliveries).await?;
    progress(delivered);
    Ok(delivered)
}

async fn replay_to_api(
    events: &mut [InteractionEvent],
    base_url: &str,
    api_key: Option<&str>,
    options: &ReplayOptions,
    pacer: &Pacer,
    progress: impl Fn(usize),
) -> Result<usize, ReplayError> {
    let client = reqwest::Client::new();
    let url = format!("{}/events", base_url.trim_end_matches('/'));
    let batch_size = match options.rate {
        // At a fixed rate, small requests keep the pacing smooth.
        Some(rate) => options
            .api_batch
            .min((rate / 100.0).ceil().max(1.0) as usize),
        None => options.api_batch,
    };
    let mut sent = 0;
    for batch in events.chunks_mut(batch_size.max(1)) {
        pacer.wait_for(sent).await;
        let mut body = Vec::with_capacity(batch.len() * 160);
        for event in batch.iter_mut() {
            stamp(event, options.timestamps);
            serde_json::to_writer(&mut body, &*event).expect("events serialise");
            body.push(b'\n');
        }
        // Overload and outages are waited out; anything else is a real refusal.
        retry_transient(
            &API_RETRY,
            &CancellationToken::new(),
            || post_events(&client, &url, &body, api_key),
            |_, _| {},
        )
        .await
        .map_err(|stopped| match stopped {
            RetryStopped::Permanent(refusal) => ReplayError::Http(refusal.0),
            RetryStopped::Cancelled => ReplayError::Http("cancelled".to_owned()),
        })?;
        sent += batch.len();
        progress(sent);
    }
    Ok(sent)
}

/// Waits between attempts of a `POST /events` the API refused for overload or an outage.
const API_RETRY: RetryPolicy = RetryPolicy {
    initial: Duration::from_millis(20),
    max: Duration::from_secs(2),
};

/// Why a `POST /events` failed; only overload (429) and an outage (503) are worth retrying.
struct ApiRefusal(String, bool);

impl Transience for ApiRefusal {
    fn is_transient(&self) -> bool {
        self.1
    }
}

async fn post_events(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    api_key: Option<&str>,
) -> Result<(), ApiRefusal> {
    let mut request = client
        .post(url)
        .header("content-type", "application/x-ndjson")
        .body(body.to_vec());
    if let Some(api_key) = api_key {
        request = request.bearer_auth(api_key);
    }
    let response = request
        .send()
        .await
        .map_err(|error| ApiRefusal(error.to_string(), false))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let transient = status.as_u16() == 429 || status.as_u16() == 503;
    let text = response.text().await.unwrap_or_default();
    Err(ApiRefusal(format!("{status}: {text}"), transient))
}

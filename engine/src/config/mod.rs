//! Layered configuration: built-in defaults, then `recsys.toml`, then `RECSYS__SECTION__KEY`
//! environment variables. Unknown keys, values of the wrong type and unusable URLs are all
//! collected and reported together, so one start-up attempt shows every problem. (Unknown keys are
//! found by comparing the merged tree with the defaults, not by serde's `deny_unknown_fields`,
//! which would stop at the first one and hide the rest.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use common::retry::RetryPolicy;

use crate::events::EventWeights;
use crate::store::StoreLimits;

mod access;
mod archive;
mod load;

pub use access::{ApiKeyConfig, Scope};
pub use archive::ArchiveConfig;
pub use load::{load_config, ConfigError, DEFAULT_CONFIG_FILE};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Data sets, bundles, the embedded store and the embedded index live here.
    pub data_dir: PathBuf,
    /// `recsys serve` and `recsys consume` keep every page they touched in memory
    /// (`mlockall`), so that an idle spell on a machine that pages out idle memory does not make
    /// the next requests wait for the disk. Taken only where the process may lock without a
    /// limit (`CAP_IPC_LOCK`, or `ulimit -l unlimited`); elsewhere a warning says so.
    pub lock_memory: bool,
    /// Every this many seconds `recsys serve` and `recsys consume` read one byte of each page
    /// they hold in memory (0: never). Where idle memory is reclaimed proactively (DAMON), pages
    /// left alone for a minute turn slow to touch again even when locked, and the first request
    /// after an idle spell paid for it on every page of the index it searched
    /// (`common::memory::KeepWarm`). Keep it under the reclaim's idle threshold.
    pub memory_warm_interval_secs: u64,
    pub api: ApiConfig,
    pub state: StateConfig,
    pub index: IndexConfig,
    pub model: ModelBackendConfig,
    pub popularity: PopularityConfig,
    pub catalogue: CatalogueConfig,
    pub events: EventsConfig,
    pub consumer: ConsumerConfig,
    pub archive: ArchiveConfig,
}

impl Config {
    /// Where the event archive lives.
    pub fn archive_dir(&self) -> PathBuf {
        self.archive
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("archive"))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            lock_memory: true,
            memory_warm_interval_secs: 30,
            api: ApiConfig::default(),
            state: StateConfig::default(),
            index: IndexConfig::default(),
            model: ModelBackendConfig::default(),
            popularity: PopularityConfig::default(),
            catalogue: CatalogueConfig::default(),
            events: EventsConfig::default(),
            consumer: ConsumerConfig::default(),
            archive: ArchiveConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Most items a request's session may carry.
    pub max_session_items: usize,
    /// Time budget for the personalised path; past it the answer is popular items.
    pub request_budget_ms: u64,
    /// Origins whose pages may call this API from a browser (CORS): none by default (the demo
    /// page at `/` is same-origin), `["*"]` for any (as the tutorial's API allowed), or a list
    /// such as `["https://shop.example"]`.
    pub cors_allowed_origins: Vec<String>,
    /// The API keys. With none, every endpoint is open (development); with any, each write
    /// and admin endpoint needs a key with its scope.
    pub keys: Vec<ApiKeyConfig>,
    /// Whether reads (recommendations, items, searches) need a key with the `read` scope too.
    pub reads_need_key: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            max_body_bytes: 64 * 1024,
            max_session_items: 200,
            request_budget_ms: 250,
            cors_allowed_origins: Vec::new(),
            keys: Vec::new(),
            reads_need_key: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StateConfig {
    /// `embedded` (redb in the data dir), `redis://[[user]:password@]host:port[/db]`
    /// (`rediss://` for TLS; the password is Redis AUTH) or a Redis Cluster by its seed nodes,
    /// `redis+cluster://[[user]:password@]host:port,host:port...` (`rediss+cluster://`).
    pub url: String,
    /// Prefix of every Redis key, so deployments and test runs can share a server.
    pub key_prefix: String,
    pub max_history: usize,
    pub max_seen: usize,
    /// Recent event ids remembered per user to apply a repeated event once.
    pub max_event_ids: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        let limits = StoreLimits::default();
        StateConfig {
            url: "embedded".into(),
            key_prefix: "recsys".into(),
            max_history: limits.max_history,
            max_seen: limits.max_seen,
            max_event_ids: limits.max_event_ids,
        }
    }
}

impl StateConfig {
    pub fn limits(&self) -> StoreLimits {
        StoreLimits {
            max_history: self.max_history,
            max_seen: self.max_seen,
            max_event_ids: self.max_event_ids,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IndexConfig {
    /// `embedded` (Qdrant Edge in the data dir) or `http://host:6334` (Qdrant server, gRPC).
    pub url: String,
    /// The alias the API reads; `recsys index` builds a versioned collection and moves it.
    pub collection: String,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            url: "embedded".into(),
            collection: "items".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelBackendConfig {
    /// `embedded` (the in-process embedder) or `http://host:port` of `recsys model-server`.
    pub url: String,
    /// A bundle directory; empty means the one `<data_dir>/bundles/CURRENT` names.
    pub bundle: Option<PathBuf>,
    pub max_batch_size: usize,
    pub max_wait_micros: u64,
    pub queue_capacity: usize,
    /// Torch intra-op threads (0: one per core); see `EmbedderConfig::torch_threads`.
    pub torch_threads: usize,
    /// Single sequences through the GRU's libtorch-free kernel; `false` runs them through
    /// libtorch (see `EmbedderConfig::single_sequence_kernel`).
    pub single_sequence_kernel: bool,
    /// How often `serve` and `consume` look at `bundles/CURRENT` and swap in a promoted model
    /// with its index (0: never; the bundle is read once at start).
    pub reload_interval_ms: u64,
}

impl Default for ModelBackendConfig {
    fn default() -> Self {
        ModelBackendConfig {
            url: "embedded".into(),
            bundle: None,
            max_batch_size: 64,
            max_wait_micros: 0,
            queue_capacity: 4096,
            torch_threads: 1,
            single_sequence_kernel: true,
            reload_interval_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PopularityConfig {
    /// How often the in-memory popular list is refreshed from the store.
    pub refresh_interval_ms: u64,
    /// Half-life of live popularity counts (decayed by event time).
    pub half_life_hours: f64,
    /// What one event of each type adds to its item's popularity.
    pub weights: EventWeights,
}

impl Default for PopularityConfig {
    fn default() -> Self {
        PopularityConfig {
            refresh_interval_ms: 2_000,
            half_life_hours: 24.0,
            weights: EventWeights::default(),
        }
    }
}

/// The live catalogue (`POST /items`), kept in the state store and followed by every process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CatalogueConfig {
    /// How often a process reads the catalogue's changes: the bound on how long a change made
    /// through another replica takes to reach this one's answers (its own are at once).
    pub refresh_interval_ms: u64,
    /// Most items one `POST /items` may carry.
    pub max_items_per_request: usize,
    /// Largest item accepted, in bytes of JSON.
    pub max_item_bytes: usize,
    /// Places at the end of each personalized list for the most popular items the model does not
    /// know yet (added after training), so they are seen before a retrained model learns them.
    pub fresh_slots: usize,
    /// The items topic `recsys consume` applies to the catalogue when `events.url` is Kafka (one
    /// record per item, as a line of `POST /items`); empty: no items topic.
    pub topic: String,
    /// Where item records that cannot be applied go, with the reason.
    pub dead_letter_topic: String,
}

impl Default for CatalogueConfig {
    fn default() -> Self {
        CatalogueConfig {
            refresh_interval_ms: 500,
            max_items_per_request: 1_000,
            max_item_bytes: 16 * 1024,
            fresh_slots: 1,
            topic: "items".into(),
            dead_letter_topic: "items.dead-letters".into(),
        }
    }
}

/// The event log: where `POST /events` and `recsys replay` send events and `recsys consume` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventsConfig {
    /// `embedded` (the API applies events itself through a bounded in-process bus) or
    /// `kafka://host:port[,host:port...][?property=value&...]`, the properties librdkafka's
    /// (connection security: `security.protocol`, `sasl.*`, `ssl.*`), for every client.
    pub url: String,
    pub topic: String,
    pub dead_letter_topic: String,
    /// Largest event accepted, in bytes of JSON.
    pub max_event_bytes: usize,
    /// Most events one `POST /events` may carry.
    pub max_events_per_request: usize,
    /// The key of the time before `api.keys`: when set, it is one more key, granting every
    /// write and admin scope.
    pub api_key: Option<String>,
    /// Requests the in-process bus holds before answering 503.
    pub bus_capacity: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            url: "embedded".into(),
            topic: "interactions".into(),
            dead_letter_topic: "interactions.dead-letters".into(),
            max_event_bytes: schemas::DEFAULT_MAX_EVENT_BYTES,
            max_events_per_request: 10_000,
            api_key: None,
            bus_capacity: 256,
        }
    }
}

impl EventsConfig {
    /// The broker list of a `kafka://` URL, with the librdkafka properties after it
    /// (`event_log::client_config`).
    pub fn kafka_brokers(&self) -> Option<&str> {
        self.url.strip_prefix("kafka://")
    }
}

/// `recsys consume` (and the in-process bus worker, which shares batching and pushing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerConfig {
    pub group_id: String,
    /// The consumer's own HTTP listener: `/healthz`, `/readyz`, `/metrics`.
    pub listen: SocketAddr,
    /// A batch closes at this many events... Larger batches cost less per event, since a
    /// user's events in one batch are one record write and an item's one popularity
    /// increment. Only a backlog fills them: once the wait below has passed and the writer has
    /// taken the batch before, a batch takes what is already waiting in the client's queue and
    /// closes. Memory: a received batch holds copies of its records (about 150 bytes an event),
    /// a decoded one its events grouped by user (about 80 bytes), and up to five batches exist
    /// at once (one per pipeline stage and one waiting between stages).
    pub max_batch_events: usize,
    /// ...or this long after its first event, once the writer has taken the batch before and
    /// nothing more is waiting. At a low rate this wait is a large part of an event's time to
    /// its pushed recommendations (BENCHMARKS.md, freshness); under a backlog batches fill up to
    /// the size above whatever this is, so a short wait costs only more writes at moderate rates.
    pub max_batch_wait_ms: u64,
    /// Recompute touched users' recommendations after each batch and cache them.
    pub push_recommendations: bool,
    /// Recommendations cached per user.
    pub push_count: usize,
    /// Store retry backoff bounds.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// How long the group waits for a silent (crashed) consumer before moving its partitions.
    pub session_timeout_ms: u64,
    /// This process's static member id in the group (`group.instance.id`): a member restarted
    /// under the same id gets its partitions back at once, without waiting out the session of
    /// the one that crashed or moving every partition of the group. Unique per process; empty
    /// means the id kept in `<data_dir>/consumer-instance-id` (made on first start), so
    /// processes that share a data dir must each set one.
    pub instance_id: String,
    /// Longest time between two polls of the group before the member is taken for stuck and
    /// its partitions move: more than the longest batch takes (a batch waits for the store
    /// through an outage, so this bounds how long an outage keeps the partitions here).
    pub max_poll_interval_ms: u64,
    /// Longest a fetch waits at the broker for new records. Kafka answers as soon as a record
    /// arrives; a broker that waits the whole time (tansu) adds this to every event's latency.
    /// An idle consumer asks once per wait, so shorter waits mean more small requests.
    pub fetch_wait_max_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: "recsys-consumer".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8001)),
            max_batch_events: 200_000,
            max_batch_wait_ms: 5,
            push_recommendations: false,
            push_count: 20,
            retry_initial_ms: 50,
            retry_max_ms: 5_000,
            session_timeout_ms: 10_000,
            instance_id: String::new(),
            max_poll_interval_ms: 300_000,
            fetch_wait_max_ms: 5,
        }
    }
}

impl ConsumerConfig {
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(self.retry_initial_ms),
            max: Duration::from_millis(self.retry_max_ms),
        }
    }
}

#[cfg(test)]
mod tests;

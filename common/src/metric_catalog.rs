//! Every metric the processes export, with its kind, unit and help text, described once when the
//! recorder is installed: Prometheus shows the help with each family (`promtool check metrics`
//! wants it), and this list is where a new metric gets its meaning written down.

use metrics::Unit;

/// A metric's kind, as Prometheus renders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub struct MetricInfo {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub help: &'static str,
}

const fn metric(name: &'static str, kind: Kind, unit: Unit, help: &'static str) -> MetricInfo {
    MetricInfo {
        name,
        kind,
        unit,
        help,
    }
}

use Kind::{Counter, Gauge, Histogram};

pub const METRICS: &[MetricInfo] = &[
    metric(
        "recsys_build_info",
        Gauge,
        Unit::Count,
        "Always 1; the labels say which build runs (version).",
    ),
    metric(
        "recsys_memory_warm_pages",
        Gauge,
        Unit::Count,
        "Resident pages the last keep-warm pass read (memory_warm_interval_secs).",
    ),
    metric(
        "recsys_memory_warm_pass_seconds",
        Histogram,
        Unit::Seconds,
        "Time a keep-warm pass over the process's resident pages took.",
    ),
    metric(
        "recsys_api_ready",
        Gauge,
        Unit::Count,
        "1 when the API's dependencies are ok (what /readyz answers), 0 when not; checked at each scrape.",
    ),
    metric(
        "recsys_api_request_duration_seconds",
        Histogram,
        Unit::Seconds,
        "Time to answer an HTTP request, by route and status.",
    ),
    metric(
        "recsys_api_events_accepted_total",
        Counter,
        Unit::Count,
        "Events POST /events accepted (durable in the event log).",
    ),
    metric(
        "recsys_api_events_rejected_total",
        Counter,
        Unit::Count,
        "Events POST /events refused, by reason.",
    ),
    metric(
        "recsys_api_items_upserted_total",
        Counter,
        Unit::Count,
        "Catalogue items stored by POST /items.",
    ),
    metric(
        "recsys_api_items_removed_total",
        Counter,
        Unit::Count,
        "Catalogue items marked unavailable by DELETE /items/{id}.",
    ),
    metric(
        "recsys_api_title_searches_total",
        Counter,
        Unit::Count,
        "Title searches answered (GET /items/search, POST /items/search_by_title).",
    ),
    metric(
        "recsys_api_users_forgotten_total",
        Counter,
        Unit::Count,
        "Users erased by DELETE /users/{id}.",
    ),
    metric(
        "recsys_archive_events_total",
        Counter,
        Unit::Count,
        "Events written to the event archive.",
    ),
    metric(
        "recsys_archive_events_dropped_total",
        Counter,
        Unit::Count,
        "Events not archived because the archive writer was behind.",
    ),
    metric(
        "recsys_archive_write_failures_total",
        Counter,
        Unit::Count,
        "Archive files that could not be written (retried with the next flush).",
    ),
    metric(
        "recsys_bus_requests_refused_total",
        Counter,
        Unit::Count,
        "POST /events requests the in-process event bus refused, by reason.",
    ),
    metric(
        "recsys_catalogue_items",
        Gauge,
        Unit::Count,
        "Items in this process's view of the live catalogue.",
    ),
    metric(
        "recsys_catalogue_refresh_failures_total",
        Counter,
        Unit::Count,
        "Failed refreshes of the live catalogue from the state store.",
    ),
    metric(
        "recsys_consumer_apply_duration_seconds",
        Histogram,
        Unit::Seconds,
        "Time to apply one batch of events to the state store.",
    ),
    metric(
        "recsys_consumer_batch_size",
        Histogram,
        Unit::Count,
        "Events per applied batch.",
    ),
    metric(
        "recsys_consumer_commit_duration_seconds",
        Histogram,
        Unit::Seconds,
        "Time to commit a batch's offsets to the broker.",
    ),
    metric(
        "recsys_consumer_commit_failures_total",
        Counter,
        Unit::Count,
        "Offset commits the broker refused (the batch is applied again, idempotently).",
    ),
    metric(
        "recsys_consumer_dead_letters_total",
        Counter,
        Unit::Count,
        "Records sent to a dead-letter topic, by source topic and reason.",
    ),
    metric(
        "recsys_consumer_dead_letters_truncated_total",
        Counter,
        Unit::Count,
        "Dead letters whose key or payload was cut to fit the dead-letter topic, by source topic.",
    ),
    metric(
        "recsys_consumer_events_total",
        Counter,
        Unit::Count,
        "Events the consumer handled, by outcome (applied, duplicate, dead_letter).",
    ),
    metric(
        "recsys_consumer_freshness_seconds",
        Histogram,
        Unit::Seconds,
        "From an event's log time to its user's pushed recommendations being written.",
    ),
    metric(
        "recsys_consumer_items_total",
        Counter,
        Unit::Count,
        "Catalogue records the items consumer handled, by outcome (upserted, stale, dead_letter).",
    ),
    metric(
        "recsys_consumer_lag_messages",
        Gauge,
        Unit::Count,
        "Records behind the end of each assigned partition, by topic and partition.",
    ),
    metric(
        "recsys_consumer_pushes_total",
        Counter,
        Unit::Count,
        "Users whose pushed recommendations were recomputed, by outcome.",
    ),
    metric(
        "recsys_consumer_ready",
        Gauge,
        Unit::Count,
        "1 when every consumer of the process is consuming (what /readyz answers), 0 when not; checked at each scrape.",
    ),
    metric(
        "recsys_consumer_store_retries_total",
        Counter,
        Unit::Count,
        "State-store writes retried after a transient failure.",
    ),
    metric(
        "recsys_embedder_batch_duration_seconds",
        Histogram,
        Unit::Seconds,
        "Time of one forward pass of the embedder.",
    ),
    metric(
        "recsys_embedder_batch_size",
        Histogram,
        Unit::Count,
        "Sequences per embedder forward pass.",
    ),
    metric(
        "recsys_embedder_empty_sequences_total",
        Counter,
        Unit::Count,
        "Sequences with no item known to the model (answered with popular items).",
    ),
    metric(
        "recsys_embedder_queue_wait_seconds",
        Histogram,
        Unit::Seconds,
        "Time a sequence waited for its embedder batch.",
    ),
    metric(
        "recsys_embedder_sequences_total",
        Counter,
        Unit::Count,
        "Sequences embedded.",
    ),
    metric(
        "recsys_embedder_unknown_items_total",
        Counter,
        Unit::Count,
        "Items of embedded sequences the model does not know (left out).",
    ),
    metric(
        "recsys_index_search_duration_seconds",
        Histogram,
        Unit::Seconds,
        "Time of one vector-index search.",
    ),
    metric(
        "recsys_model_server_swaps_total",
        Counter,
        Unit::Count,
        "Promoted bundles the model server swapped in without a restart.",
    ),
    metric(
        "recsys_retrieve_fallbacks_total",
        Counter,
        Unit::Count,
        "Answers that fell back to popular items, by reason.",
    ),
    metric(
        "recsys_retrieve_fresh_items_total",
        Counter,
        Unit::Count,
        "Answers given places for items newer than the model.",
    ),
    metric(
        "recsys_serving_swaps_total",
        Counter,
        Unit::Count,
        "Model-and-index pairs swapped in after a promotion or rollback.",
    ),
    metric(
        "recsys_api_access_refused_total",
        Counter,
        Unit::Count,
        "Requests refused by the API keys, by reason (unauthorized, forbidden, rate_limited) and key name.",
    ),
    metric(
        "recsys_store_cluster_reconnects_total",
        Counter,
        Unit::Count,
        "Redis Cluster connections replaced after they stopped answering.",
    ),
];

/// Describes every metric to the installed recorder.
pub fn describe_all() {
    for info in METRICS {
        match info.kind {
            Counter => metrics::describe_counter!(info.name, info.unit, info.help),
            Gauge => metrics::describe_gauge!(info.name, info.unit, info.help),
            Histogram => metrics::describe_histogram!(info.name, info.unit, info.help),
        }
    }
}

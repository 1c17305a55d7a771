//! The embedder shared by the API and the consumer: raw item-id sequences in, query vectors out.
//!
//! libtorch runs on one dedicated thread, never on the async runtime. Callers put one job per
//! sequence on a bounded queue; the thread takes whatever is queued (up to `max_batch_size`,
//! waiting at most `max_wait` for more) and runs a single forward pass for the whole batch. Under
//! load, jobs pile up while a forward pass runs, so batches form without adding latency when idle.
//!
//! Encoders with a libtorch-free kernel for single sequences (the GRU) skip all that for `embed`:
//! the kernel (a fraction of a millisecond for 50 items) runs on the caller's thread. `embed_many` still batches;
//! `embed_each` (the consumer's pushes) runs the kernel over all its sequences on one blocking thread.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use dataset::bundle::Scoring;
use dataset::IdMap;

use crate::bundle::ModelBundle;
use crate::encoder::{SequenceEncoder, SingleSequenceEncoder};
use crate::model::left_padded_batch;

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedderConfig {
    /// Most sequences run in one forward pass.
    pub max_batch_size: usize,
    /// How long the batcher waits for more jobs once it has one; zero batches only what is
    /// already queued.
    #[serde(with = "micros")]
    pub max_wait: Duration,
    /// Jobs waiting for the batcher; senders wait (backpressure) when it is full.
    pub queue_capacity: usize,
    /// Torch intra-op threads of the process (0 keeps torch's default, one per core). One is
    /// best for serving: a forward pass of a few sequences is too small to split, and the
    /// request threads need the other cores.
    pub torch_threads: usize,
    /// Whether single sequences go through the encoder's libtorch-free kernel when it has one
    /// (the GRU). `false` runs everything through libtorch, the reference the kernel is tested
    /// against.
    pub single_sequence_kernel: bool,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        EmbedderConfig {
            max_batch_size: 64,
            max_wait: Duration::ZERO,
            queue_capacity: 4096,
            torch_threads: 1,
            single_sequence_kernel: true,
        }
    }
}

mod micros {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_micros() as u64)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let micros: u64 = serde::Deserialize::deserialize(deserializer)?;
        Ok(Duration::from_micros(micros))
    }
}

/// Torch intra-op threads of this process (what `EmbedderConfig::torch_threads` set).
pub fn torch_threads() -> i32 {
    tch::get_num_threads()
}

/// A query vector and what was dropped to compute it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryEmbedding {
    pub vector: Vec<f32>,
    /// Items of the input the model does not know, in input order, without repeats.
    pub unknown_items: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmbedError {
    /// Nothing known to the model remains; callers answer with popular items instead.
    #[error("no item of the sequence is known to the model ({} unknown)", unknown_items.len())]
    EmptySequence { unknown_items: Vec<String> },
    #[error("the embedder has stopped")]
    Stopped,
    #[error("the model failed: {0}")]
    Model(String),
}

/// Cheap to clone; every clone feeds the same batching thread, which stops when the last clone
/// is dropped.
#[derive(Clone)]
pub struct Embedder {
    shared: Arc<SharedModelInfo>,
    jobs: flume::Sender<EmbedJob>,
    /// The encoder's libtorch-free path for single sequences, if it has one: `embed` runs it on
    /// the caller's thread, skipping the queue and two thread hand-offs.
    kernel: Option<Arc<dyn SingleSequenceEncoder>>,
}

struct SharedModelInfo {
    model_name: String,
    model_version: String,
    scoring: Scoring,
    id_map: IdMap,
    /// Row-major `[num_items, dim]`; row `i` is model index `i + 1`.
    item_vectors: Vec<f32>,
    dim: usize,
    max_len: usize,
    batches_run: AtomicU64,
    sequences_embedded: AtomicU64,
}

type EmbedReply = Result<Vec<f32>, EmbedError>;

/// A job ready to send, the receiver of its answer, and the unknown items dropped from it.
type QueuedJob = (EmbedJob, oneshot::Receiver<EmbedReply>, Vec<String>);

struct EmbedJob {
    indices: Vec<i64>,
    enqueued_at: Instant,
    reply: oneshot::Sender<EmbedReply>,
}

impl Embedder {
    /// Starts the batching thread; it owns the bundle's encoder from now on.
    pub fn start(bundle: ModelBundle, config: EmbedderConfig) -> Embedder {
        let ModelBundle {
            config: bundle_config,
            id_map,
            item_vectors,
            encoder,
            ..
        } = bundle;
        let item_vectors: Vec<f32> = Vec::try_from(item_vectors.contiguous().view([-1]))
            .expect("validated float32 item embeddings");
        let shared = Arc::new(SharedModelInfo {
            model_name: bundle_config.model_name,
            model_version: bundle_config.model_version,
            scoring: bundle_config.scoring,
            id_map,
            item_vectors,
            dim: bundle_config.embedding_dim as usize,
            max_len: bundle_config.max_len as usize,
            batches_run: AtomicU64::new(0),
            sequences_embedded: AtomicU64::new(0),
        });
        if config.torch_threads > 0 {
            tch::set_num_threads(config.torch_threads as i32);
        }
        let kernel = if config.single_sequence_kernel {
            encoder.single_sequence_encoder()
        } else {
            None
        };
        let (sender, receiver) = flume::bounded(config.queue_capacity.max(1));
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("recsys-embedder".into())
            .spawn(move || run_batches(encoder, receiver, config, thread_shared))
            .expect("spawn the embedder thread");
        Embedder {
            shared,
            jobs: sender,
            kernel,
        }
    }

    /// Whether one sequence is embedded on the calling thread (the native kernel), rather than
    /// queued for the batching thread.
    pub fn embeds_on_caller(&self) -> bool {
        self.kernel.is_some()
    }

    pub fn model_name(&self) -> &str {
        &self.shared.model_name
    }

    pub fn model_version(&self) -> &str {
        &self.shared.model_version
    }

    pub fn scoring(&self) -> Scoring {
        self.shared.scoring
    }

    pub fn dim(&self) -> usize {
        self.shared.dim
    }

    pub fn max_len(&self) -> usize {
        self.shared.max_len
    }

    pub fn id_map(&self) -> &IdMap {
        &self.shared.id_map
    }

    /// The item's vector in the query space, if the model knows it.
    pub fn item_vector(&self, raw_id: &str) -> Option<&[f32]> {
        let row = self.shared.id_map.index(raw_id)? as usize - 1;
        Some(&self.shared.item_vectors[row * self.shared.dim..(row + 1) * self.shared.dim])
    }

    /// Scores each candidate against `query` with the bundle's scoring; `None` for unknown items.
    pub fn score_candidates(&self, query: &[f32], candidates: &[String]) -> Vec<Option<f32>> {
        candidates
            .iter()
            .map(|candidate| {
                let vector = self.item_vector(candidate)?;
                match self.shared.scoring {
                    Scoring::Dot => Some(vector.iter().zip(query).map(|(a, b)| a * b).sum()),
                }
            })
            .collect()
    }

    /// `(forward passes run, sequences embedded)` since start.
    pub fn batch_counts(&self) -> (u64, u64) {
        (
            self.shared.batches_run.load(Ordering::Relaxed),
            self.shared.sequences_embedded.load(Ordering::Relaxed),
        )
    }

    /// Maps raw ids to model indices, keeping the most recent `max_len` known items.
    fn resolve(&self, raw_items: &[String]) -> (Vec<i64>, Vec<String>) {
        let mut indices = Vec::with_capacity(raw_items.len());
        let mut unknown_items: Vec<String> = Vec::new();
        for raw_id in raw_items {
            match self.shared.id_map.index(raw_id) {
                Some(index) => indices.push(index as i64),
                None if !unknown_items.contains(raw_id) => unknown_items.push(raw_id.clone()),
                None => {}
            }
        }
        if !unknown_items.is_empty() {
            metrics::counter!("recsys_embedder_unknown_items_total")
                .increment(unknown_items.len() as u64);
        }
        let keep_from = indices.len().saturating_sub(self.shared.max_len);
        indices.drain(..keep_from);
        (indices, unknown_items)
    }

    /// The model indices of the known items, or the typed error when none is known.
    fn known_indices(&self, raw_items: &[String]) -> Result<(Vec<i64>, Vec<String>), EmbedError> {
        let (indices, unknown_items) = self.resolve(raw_items);
        if indices.is_empty() {
            metrics::counter!("recsys_embedder_empty_sequences_total").increment(1);
            return Err(EmbedError::EmptySequence { unknown_items });
        }
        Ok((indices, unknown_items))
    }

    /// Sequences embedded by the kernel count as one batch, run right away.
    fn record_kernel_batch(&self, started: Instant, sequences: usize) {
        metrics::histogram!("recsys_embedder_queue_wait_seconds").record(0.0);
        metrics::histogram!("recsys_embedder_batch_size").record(sequences as f64);
        metrics::histogram!("recsys_embedder_batch_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("recsys_embedder_sequences_total").increment(sequences as u64);
        self.shared.batches_run.fetch_add(1, Ordering::Relaxed);
        self.shared
            .sequences_embedded
            .fetch_add(sequences as u64, Ordering::Relaxed);
    }

    fn job_for(&self, raw_items: &[String]) -> Result<QueuedJob, EmbedError> {
        let (indices, unknown_items) = self.known_indices(raw_items)?;
        let (reply, receiver) = oneshot::channel();
        let job = EmbedJob {
            indices,
            enqueued_at: Instant::now(),
            reply,
        };
        Ok((job, receiver, unknown_items))
    }

    /// Embeds one sequence of raw item ids (oldest first).
    pub async fn embed(&self, raw_items: &[String]) -> Result<QueryEmbedding, EmbedError> {
        if let Some(kernel) = &self.kernel {
            let (indices, unknown_items) = self.known_indices(raw_items)?;
            // A fraction of a millisecond of CPU: run on the calling worker (ARCHITECTURE.md,
            // "Blocking work").
            let started = Instant::now();
            let vector = kernel.encode(&indices);
            self.record_kernel_batch(started, 1);
            return Ok(QueryEmbedding {
                vector,
                unknown_items,
            });
        }
        let (job, receiver, unknown_items) = self.job_for(raw_items)?;
        self.jobs
            .send_async(job)
            .await
            .map_err(|_| EmbedError::Stopped)?;
        let vector = receiver.await.map_err(|_| EmbedError::Stopped)??;
        Ok(QueryEmbedding {
            vector,
            unknown_items,
        })
    }

    /// Embeds many sequences the fastest way for this encoder: with the kernel one after another
    /// on a blocking thread (cheaper per sequence than a batched libtorch forward), otherwise as
    /// `embed_many`.
    pub async fn embed_each(
        &self,
        sequences: &[Vec<String>],
    ) -> Vec<Result<QueryEmbedding, EmbedError>> {
        if let Some(kernel) = &self.kernel {
            let resolved: Vec<_> = sequences
                .iter()
                .map(|sequence| self.known_indices(sequence))
                .collect();
            let kernel = Arc::clone(kernel);
            let started = Instant::now();
            let encoded = tokio::task::spawn_blocking(move || {
                resolved
                    .into_iter()
                    .map(|known| {
                        known.map(|(indices, unknown_items)| QueryEmbedding {
                            vector: kernel.encode(&indices),
                            unknown_items,
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            self.record_kernel_batch(started, sequences.len());
            return match encoded {
                Ok(encoded) => encoded,
                Err(error) => sequences
                    .iter()
                    .map(|_| Err(EmbedError::Model(error.to_string())))
                    .collect(),
            };
        }
        self.embed_many(sequences).await
    }

    /// Embeds many sequences; they are queued together, so they share forward passes.
    pub async fn embed_many(
        &self,
        sequences: &[Vec<String>],
    ) -> Vec<Result<QueryEmbedding, EmbedError>> {
        let mut pending = Vec::with_capacity(sequences.len());
        for sequence in sequences {
            match self.job_for(sequence) {
                Ok((job, receiver, unknown_items)) => {
                    let sent = self.jobs.send_async(job).await;
                    pending.push(
                        sent.map(|()| (receiver, unknown_items))
                            .map_err(|_| EmbedError::Stopped),
                    );
                }
                Err(error) => pending.push(Err(error)),
            }
        }
        let mut results = Vec::with_capacity(pending.len());
        for entry in pending {
            results.push(match entry {
                Ok((receiver, unknown_items)) => match receiver.await {
                    Ok(Ok(vector)) => Ok(QueryEmbedding {
                        vector,
                        unknown_items,
                    }),
                    Ok(Err(error)) => Err(error),
                    Err(_) => Err(EmbedError::Stopped),
                },
                Err(error) => Err(error),
            });
        }
        results
    }

    /// For threads outside any async runtime (benchmarks, blocking pools). Never call this from
    /// an async task: it blocks until the batch ran.
    pub fn embed_blocking(&self, raw_items: &[String]) -> Result<QueryEmbedding, EmbedError> {
        if let Some(kernel) = &self.kernel {
            let (indices, unknown_items) = self.known_indices(raw_items)?;
            let started = Instant::now();
            let vector = kernel.encode(&indices);
            self.record_kernel_batch(started, 1);
            return Ok(QueryEmbedding {
                vector,
                unknown_items,
            });
        }
        let (job, receiver, unknown_items) = self.job_for(raw_items)?;
        self.jobs.send(job).map_err(|_| EmbedError::Stopped)?;
        let vector = receiver
            .blocking_recv()
            .map_err(|_| EmbedError::Stopped)??;
        Ok(QueryEmbedding {
            vector,
            unknown_items,
        })
    }
}

fn run_batches(
    encoder: Box<dyn SequenceEncoder>,
    jobs: flume::Receiver<EmbedJob>,
    config: EmbedderConfig,
    shared: Arc<SharedModelInfo>,
) {
    let max_batch_size = config.max_batch_size.max(1);
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        let deadline = Instant::now() + config.max_wait;
        while batch.len() < max_batch_size {
            match jobs.try_recv() {
                Ok(job) => {
                    batch.push(job);
                    continue;
                }
                Err(flume::TryRecvError::Disconnected) => break,
                Err(flume::TryRecvError::Empty) => {}
            }
            if config.max_wait.is_zero() {
                break;
            }
            match jobs.recv_deadline(deadline) {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A caller that gave up (timeout, dropped request) no longer needs its row.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        run_one_batch(encoder.as_ref(), batch, &shared);
    }
    tracing::debug!("embedder thread stopping: every sender is gone");
}

fn run_one_batch(encoder: &dyn SequenceEncoder, batch: Vec<EmbedJob>, shared: &SharedModelInfo) {
    let started = Instant::now();
    let batch_size = batch.len();
    for job in &batch {
        metrics::histogram!("recsys_embedder_queue_wait_seconds")
            .record(started.duration_since(job.enqueued_at).as_secs_f64());
    }
    let sequences: Vec<&[i64]> = batch.iter().map(|job| job.indices.as_slice()).collect();
    // tch reports some failures by panicking; one bad batch must not take the thread down.
    let output = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let queries = encoder.encode(&left_padded_batch(&sequences, shared.max_len))?;
        Vec::<f32>::try_from(queries.contiguous().view([-1]))
    }));
    let vectors = match output {
        Ok(Ok(flat)) if flat.len() == batch.len() * shared.dim => Ok(flat),
        Ok(Ok(flat)) => Err(EmbedError::Model(format!(
            "encoder returned {} values for {} sequences of dim {}",
            flat.len(),
            batch.len(),
            shared.dim
        ))),
        Ok(Err(error)) => Err(EmbedError::Model(error.to_string())),
        Err(_) => Err(EmbedError::Model("the encoder panicked".into())),
    };
    metrics::histogram!("recsys_embedder_batch_size").record(batch_size as f64);
    metrics::histogram!("recsys_embedder_batch_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("recsys_embedder_sequences_total").increment(batch_size as u64);
    shared.batches_run.fetch_add(1, Ordering::Relaxed);
    shared
        .sequences_embedded
        .fetch_add(batch_size as u64, Ordering::Relaxed);
    match vectors {
        Ok(flat) => {
            for (job, vector) in batch.into_iter().zip(flat.chunks_exact(shared.dim)) {
                let _ = job.reply.send(Ok(vector.to_vec()));
            }
        }
        Err(error) => {
            tracing::error!(%error, batch_size, "embedding batch failed");
            for job in batch {
                let _ = job.reply.send(Err(error.clone()));
            }
        }
    }
}

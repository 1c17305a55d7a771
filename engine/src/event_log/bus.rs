//! The in-process event bus of the embedded default: `POST /events` hands its events to one
//! worker task through a bounded queue; the worker coalesces whatever requests are waiting into
//! one batch, applies it with the same [`EventApplier`] as the Kafka consumer, pushes fresh
//! recommendations when enabled, then answers each request. A full queue is refused at once
//! (429), a store outage is reported (503), and so is (500) an event of a user whose stored state
//! cannot be read: nothing is accepted without being stored.

use std::sync::Arc;

use common::clock::now_ms;
use schemas::InteractionEvent;
use tokio::sync::{mpsc, oneshot};

use tokio_util::sync::CancellationToken;

use super::archiving::ArchiveWriter;
use super::{EventSink, PublishError};
use crate::events::EventApplier;
use crate::store::UnreadableUser;

struct BusRequest {
    events: Vec<InteractionEvent>,
    /// When `POST /events` accepted them.
    logged_at_ms: i64,
    reply: oneshot::Sender<Result<(), PublishError>>,
}

/// The sending side, cheap to clone.
#[derive(Clone)]
pub struct InProcessBus {
    requests: mpsc::Sender<BusRequest>,
    closing: CancellationToken,
    worker: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl InProcessBus {
    /// Starts the worker. `capacity` bounds the requests waiting; `max_batch_events` bounds how
    /// many events one store round trip carries (a single larger request is still one batch).
    /// Applied batches go on to `archive` when given.
    pub fn start(
        applier: Arc<EventApplier>,
        capacity: usize,
        max_batch_events: usize,
        archive: Option<(ArchiveWriter, tokio::task::JoinHandle<()>)>,
    ) -> InProcessBus {
        let (requests, receiver) = mpsc::channel(capacity);
        let closing = CancellationToken::new();
        let worker = tokio::spawn(run_worker(
            applier,
            receiver,
            max_batch_events,
            closing.clone(),
            archive,
        ));
        InProcessBus {
            requests,
            closing,
            worker: Arc::new(tokio::sync::Mutex::new(Some(worker))),
        }
    }
}

#[async_trait::async_trait]
impl EventSink for InProcessBus {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    /// Applies what is queued, refuses what comes later, and waits for the archive's last
    /// write.
    async fn close(&self) {
        self.closing.cancel();
        if let Some(worker) = self.worker.lock().await.take() {
            if let Err(error) = worker.await {
                tracing::error!(%error, "the event bus worker failed");
            }
        }
    }

    async fn publish(&self, events: Vec<InteractionEvent>) -> Result<(), PublishError> {
        let (reply, answer) = oneshot::channel();
        let request = BusRequest {
            events,
            logged_at_ms: now_ms(),
            reply,
        };
        match self.requests.try_send(request) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("recsys_bus_requests_refused_total", "reason" => "full")
                    .increment(1);
                return Err(PublishError::Overloaded(
                    "the event bus is full; retry shortly".to_owned(),
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(PublishError::Unavailable(
                    "the event bus stopped".to_owned(),
                ))
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(PublishError::Unavailable(
                "the event bus stopped".to_owned(),
            ))
        })
    }
}

async fn run_worker(
    applier: Arc<EventApplier>,
    mut receiver: mpsc::Receiver<BusRequest>,
    max_batch_events: usize,
    closing: CancellationToken,
    archive: Option<(ArchiveWriter, tokio::task::JoinHandle<()>)>,
) {
    let (archive, archive_task) = archive.unzip();
    loop {
        let first = tokio::select! {
            request = receiver.recv() => request,
            // Refuse new requests; those already queued are still applied below.
            () = closing.cancelled(), if !receiver.is_closed() => {
                receiver.close();
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut requests = vec![first];
        let mut waiting_events = requests[0].events.len();
        while waiting_events < max_batch_events {
            match receiver.try_recv() {
                Ok(next) => {
                    waiting_events += next.events.len();
                    requests.push(next);
                }
                Err(_) => break,
            }
        }
        let mut batch = applier.batch(0, waiting_events);
        // Each reply with the range of `applied` holding its request's events.
        let mut replies = Vec::with_capacity(requests.len());
        let mut applied = Vec::with_capacity(waiting_events);
        for request in requests {
            for event in &request.events {
                batch.push(&event.as_ref(), None, request.logged_at_ms);
            }
            let start = applied.len();
            applied.extend(request.events);
            replies.push((request.reply, start..applied.len()));
        }
        metrics::histogram!("recsys_consumer_batch_size").record(batch.len() as f64);
        let answer = match applier.apply(&mut batch).await {
            Ok(outcome) => {
                applier.push_recommendations(&batch).await;
                Ok(outcome.unreadable)
            }
            Err(error) => {
                tracing::warn!(%error, events = batch.len(), "event batch not stored");
                Err(PublishError::Unavailable(error.to_string()))
            }
        };
        // A request with an event of a user whose state cannot be read is refused: those events
        // were not stored (the others were, and a retry of them is skipped by event id).
        let refusal = |events: &[InteractionEvent], unreadable: &[UnreadableUser]| {
            let user = unreadable
                .iter()
                .find(|user| events.iter().any(|event| event.user_id == user.user_id))?;
            Some(PublishError::Internal(user.to_string()))
        };
        for (reply, range) in replies {
            let answer = match &answer {
                Ok(unreadable) => match refusal(&applied[range], unreadable) {
                    Some(refused) => Err(refused),
                    None => Ok(()),
                },
                Err(error) => Err(error.clone()),
            };
            // A client that went away still had its events stored (or not); nothing to undo.
            let _ = reply.send(answer);
        }
        if let (Some(archive), Ok(unreadable)) = (&archive, &answer) {
            applied.retain(|event| unreadable.iter().all(|user| user.user_id != event.user_id));
            archive.offer(applied);
        }
    }
    // The writer's last write happens once every sender is gone.
    drop(archive);
    if let Some(task) = archive_task {
        if let Err(error) = task.await {
            tracing::error!(%error, "the event archive writer failed");
        }
    }
}

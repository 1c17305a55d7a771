//! A Redis Cluster connection that is replaced when it stops answering.
//!
//! redis-rs serves every call of a cluster connection through one task. When a node is killed
//! while calls are in flight, that task can stay in its topology refresh for good: every later
//! call times out, while a new connection to the same cluster answers at once
//! (`redis_cluster_loses_nothing_when_a_node_restarts_mid_run` caught it, a few runs in a hundred
//! on a loaded machine). So each call reports how it ended, and once calls have failed on the
//! network with nothing answered for [`WEDGED_AFTER`], one task connects afresh and the new
//! connection takes the old one's place. A cluster that is really down only costs a connection
//! attempt per [`WEDGED_AFTER`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, RedisResult};

/// Several response timeouts with nothing answered: long enough that a node restart the
/// connection does recover from is not cut short.
const WEDGED_AFTER: Duration = Duration::from_secs(6);
/// `get_async_connection` has no deadline of its own.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);

pub(super) struct HealingCluster {
    client: ClusterClient,
    current: RwLock<ClusterConnection>,
    last_answer: Mutex<Instant>,
    replacing: AtomicBool,
}

impl HealingCluster {
    pub(super) async fn connect(client: ClusterClient) -> RedisResult<Arc<HealingCluster>> {
        let connection = connect_within(&client).await?;
        Ok(Arc::new(HealingCluster {
            client,
            current: RwLock::new(connection),
            last_answer: Mutex::new(Instant::now()),
            replacing: AtomicBool::new(false),
        }))
    }

    /// The connection calls go to now.
    pub(super) fn connection(&self) -> ClusterConnection {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records how a call ended; starts a replacement when the connection looks wedged.
    pub(super) fn observe<T>(self: &Arc<Self>, result: &RedisResult<T>) {
        let mut last_answer = self
            .last_answer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match result {
            // A reply error (a missing script, a wrong type) is an answer too.
            Ok(_) => *last_answer = Instant::now(),
            Err(error) if !is_network_failure(error) => *last_answer = Instant::now(),
            Err(_) if last_answer.elapsed() >= WEDGED_AFTER => {
                drop(last_answer);
                self.replace();
            }
            Err(_) => {}
        }
    }

    fn replace(self: &Arc<Self>) {
        if self.replacing.swap(true, Ordering::AcqRel) {
            return;
        }
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            match connect_within(&cluster.client).await {
                Ok(connection) => {
                    *cluster
                        .current
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = connection;
                    *cluster
                        .last_answer
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
                    metrics::counter!("recsys_store_cluster_reconnects_total").increment(1);
                    tracing::warn!("a Redis Cluster connection stopped answering; replaced it");
                }
                Err(error) => {
                    tracing::warn!(%error, "a Redis Cluster connection stopped answering, and a new one failed");
                }
            }
            cluster.replacing.store(false, Ordering::Release);
        });
    }
}

async fn connect_within(client: &ClusterClient) -> RedisResult<ClusterConnection> {
    tokio::time::timeout(CONNECT_WITHIN, client.get_async_connection())
        .await
        .unwrap_or_else(|_| {
            Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to the cluster timed out",
            )))
        })
}

fn is_network_failure(error: &RedisError) -> bool {
    error.is_timeout() || error.is_io_error() || error.is_connection_dropped()
}

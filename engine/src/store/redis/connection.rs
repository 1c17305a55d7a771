//! The connections of the Redis store: to one server (a standalone Redis or a proxy), or to a
//! Redis Cluster (`redis+cluster://` / `rediss+cluster://` with the seed nodes), behind one type
//! the store's commands run on.
//!
//! A cluster refuses a call whose keys lie in different hash slots, and redis-rs sends a
//! pipeline to one slot's node. So calls that name many users (the compare-and-set of a chunk's
//! records, the reads before it, the pushed lists) are split by slot with [`Connections::groups`]
//! there; on one server they stay whole. A user's keys share a slot (`{user}`), so every
//! per-user call is unchanged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::io::tcp::TcpSettings;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use super::healing_cluster::HealingCluster;
use super::unavailable;
use crate::store::StoreError;

/// Bounded waits: a dead server must turn into an error the caller can fall back on, not a
/// request that hangs.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// One handle to run commands on: cheap to clone, multiplexed underneath.
#[derive(Clone)]
pub(super) enum Connection {
    Server(ConnectionManager),
    Cluster {
        connection: ClusterConnection,
        healing: Arc<HealingCluster>,
    },
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Server(connection) => connection.req_packed_command(cmd),
            Connection::Cluster {
                connection,
                healing,
            } => Box::pin(async move {
                let result = connection.req_packed_command(cmd).await;
                healing.observe(&result);
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Server(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster {
                connection,
                healing,
            } => Box::pin(async move {
                let result = connection
                    .req_packed_commands(pipeline, offset, count)
                    .await;
                healing.observe(&result);
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(connection) => connection.get_db(),
            Connection::Cluster { connection, .. } => connection.get_db(),
        }
    }
}

/// The store's connections: to one server, several handed out in turn; to a cluster, the one
/// multiplexed connection of the moment.
pub(super) enum Connections {
    Server {
        connections: Box<[ConnectionManager]>,
        next: AtomicUsize,
    },
    Cluster(Arc<HealingCluster>),
}

impl Connections {
    /// Connects to what `url` names: `redis://` or `rediss://` (one server, `count`
    /// connections: Redis serves one connection's commands in order, and a batch's chunks run
    /// side by side), or `redis+cluster://[user:password@]host:port,host:port...` (and
    /// `rediss+cluster://`), a cluster found from those seed nodes.
    pub(super) async fn open(url: &str, count: usize) -> Result<Connections, StoreError> {
        let invalid = |problem: String| StoreError::InvalidUrl {
            url: url.to_owned(),
            problem,
        };
        if let Some((scheme, rest)) = url
            .split_once("+cluster://")
            .filter(|(scheme, _)| ["redis", "rediss"].contains(scheme))
        {
            let (user_info, hosts) = match rest.rsplit_once('@') {
                Some((user_info, hosts)) => (format!("{user_info}@"), hosts),
                None => (String::new(), rest),
            };
            let hosts = hosts.trim_end_matches('/');
            let nodes: Vec<String> = hosts
                .split(',')
                .filter(|host| !host.is_empty())
                .map(|host| format!("{scheme}://{user_info}{host}/"))
                .collect();
            if nodes.is_empty() {
                return Err(invalid("no seed node (host:port) after the scheme".into()));
            }
            let client = ClusterClientBuilder::new(nodes)
                .connection_timeout(CONNECTION_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(2)
                .build()
                .map_err(|error| invalid(error.to_string()))?;
            let healing = HealingCluster::connect(client).await.map_err(unavailable)?;
            return Ok(Connections::Cluster(healing));
        }
        // Without TCP_NODELAY (redis-rs leaves Nagle on) the tail of a pipelined write waits for
        // the server's acknowledgement of the part before it.
        let connection_info = url
            .into_connection_info()
            .map_err(|error| invalid(error.to_string()))?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client =
            redis::Client::open(connection_info).map_err(|error| invalid(error.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2);
        let connections = futures::future::try_join_all(
            (0..count).map(|_| ConnectionManager::new_with_config(client.clone(), config.clone())),
        )
        .await
        .map_err(unavailable)?;
        Ok(Connections::Server {
            connections: connections.into(),
            next: AtomicUsize::new(0),
        })
    }

    /// The connection for the next call.
    pub(super) fn next(&self) -> Connection {
        match self {
            Connections::Server { connections, next } => {
                let turn = next.fetch_add(1, Ordering::Relaxed);
                Connection::Server(connections[turn % connections.len()].clone())
            }
            Connections::Cluster(healing) => Connection::Cluster {
                connection: healing.connection(),
                healing: Arc::clone(healing),
            },
        }
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Connections::Cluster(_))
    }

    /// Positions of `keys` grouped so that each group can go in one call: all together on one
    /// server, by hash slot on a cluster (in first-appearance order either way).
    pub(super) fn groups<'a>(
        &self,
        keys: impl ExactSizeIterator<Item = &'a str>,
    ) -> Vec<Vec<usize>> {
        if !self.is_cluster() {
            return vec![(0..keys.len()).collect()];
        }
        let mut groups: Vec<(Slot, Vec<usize>)> = Vec::new();
        let mut group_of_slot: std::collections::HashMap<Slot, usize> =
            std::collections::HashMap::new();
        for (position, key) in keys.enumerate() {
            let slot = Slot::for_key(key);
            let group = *group_of_slot.entry(slot).or_insert_with(|| {
                groups.push((slot, Vec::new()));
                groups.len() - 1
            });
            groups[group].1.push(position);
        }
        groups.into_iter().map(|(_, positions)| positions).collect()
    }
}

//! Test harness: real servers started on free ports by the tests themselves, cleaned up on drop,
//! so no test relies on a server started by hand.

mod kafka;
mod qdrant;
mod redis;
mod redis_cluster;
mod tls;

pub use kafka::{tansu_binary, KafkaBroker};
pub use qdrant::{qdrant_binary, QdrantServer};
pub use redis::{unique_prefix, RedisServer};
pub use redis_cluster::RedisCluster;
pub use tls::TestCertificates;

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("read the bound port")
        .port()
}

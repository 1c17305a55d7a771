//! Topic creation for deployments (`recsys create-topics`, the compose `init` job).

use super::client_config;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What happened to each requested topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    AlreadyExists,
}

/// Creates each topic with `partitions` partitions (replication factor `replication`); topics
/// that exist are left as they are, so this is safe to run on every deployment.
pub async fn create_topics(
    brokers: &str,
    topics: &[&str],
    partitions: i32,
    replication: i32,
) -> Result<Vec<(String, TopicOutcome)>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let requests: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|topic| NewTopic::new(topic, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let results = admin.create_topics(&requests, &AdminOptions::new()).await?;
    results
        .into_iter()
        .map(|result| match result {
            Ok(topic) => Ok((topic, TopicOutcome::Created)),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                Ok((topic, TopicOutcome::AlreadyExists))
            }
            Err((_, code)) => Err(KafkaError::AdminOp(code)),
        })
        .collect()
}

//! `recsys model-server` (or the tutorial's BentoML service) as the pipeline's model.

use std::time::Duration;

use schemas::{
    ModelMetadata, ModelServerRequest, PredictResponse, QueryEmbeddingsResponse, RetrieveContext,
};

use super::{ModelError, Query, QueryModel};

/// `recsys model-server` (or the tutorial's BentoML service) over HTTP.
pub struct HttpModel {
    client: reqwest::Client,
    base_url: String,
    /// The version every request asks for and every answer must carry (see `pinned_to`).
    model_version: Option<String>,
}

impl HttpModel {
    pub fn new(base_url: &str, timeout: Duration) -> Result<HttpModel, ModelError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|error| ModelError::Unavailable(error.to_string()))?;
        Ok(HttpModel {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            model_version: None,
        })
    }

    /// Asks for `model_version` only, the one the index was built for: a model server that
    /// swapped to a promoted bundle still answers with it (`recsys model-server` keeps the bundle
    /// it replaced), and an answer of another version (a server that ignores the field) is
    /// refused rather than searched in an index of other vectors.
    pub fn pinned_to(self, model_version: String) -> HttpModel {
        HttpModel {
            model_version: Some(model_version),
            ..self
        }
    }

    fn check_version(&self, endpoint: &str, answered: &ModelMetadata) -> Result<(), ModelError> {
        match &self.model_version {
            Some(pinned) if *pinned != answered.model_version => {
                Err(ModelError::Unavailable(format!(
                    "{endpoint}: answered by model {}, not {pinned}",
                    answered.model_version
                )))
            }
            _ => Ok(()),
        }
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        ctx: RetrieveContext,
    ) -> Result<T, ModelError> {
        let response = self
            .client
            .post(format!("{}/{endpoint}", self.base_url))
            .json(&ModelServerRequest {
                ctx,
                model_version: self.model_version.clone(),
            })
            .send()
            .await
            .map_err(|error| ModelError::Unavailable(format!("{endpoint}: {error}")))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY {
            let body: schemas::ErrorBody = response
                .json()
                .await
                .map_err(|error| ModelError::Unavailable(format!("{endpoint}: {error}")))?;
            if body.error.code == "empty_sequence" {
                return Err(ModelError::EmptySequence {
                    unknown_items: Vec::new(),
                });
            }
            return Err(ModelError::Unavailable(format!(
                "{endpoint}: {}",
                body.error.message
            )));
        }
        if !status.is_success() {
            return Err(ModelError::Unavailable(format!(
                "{endpoint}: HTTP {status}"
            )));
        }
        response
            .json()
            .await
            .map_err(|error| ModelError::Unavailable(format!("{endpoint}: {error}")))
    }
}

/// The model server says only that no item was usable: then every item of the sequence was unknown.
fn all_unknown_if_empty(items: &[String]) -> impl FnOnce(ModelError) -> ModelError + '_ {
    move |error| match error {
        ModelError::EmptySequence { .. } => ModelError::EmptySequence {
            unknown_items: items.to_vec(),
        },
        other => other,
    }
}

fn context(items: &[String], candidates: &[String]) -> RetrieveContext {
    RetrieveContext {
        user_ids_raw: Vec::new(),
        item_seq_raw: vec![items.to_vec()],
        candidate_items_raw: candidates.to_vec(),
    }
}

#[async_trait::async_trait]
impl QueryModel for HttpModel {
    fn backend(&self) -> &'static str {
        "http"
    }

    async fn metadata(&self) -> Result<ModelMetadata, ModelError> {
        let response = self
            .client
            .get(format!("{}/metadata", self.base_url))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| ModelError::Unavailable(format!("metadata: {error}")))?;
        response
            .json()
            .await
            .map_err(|error| ModelError::Unavailable(format!("metadata: {error}")))
    }

    async fn query(&self, items: &[String]) -> Result<Query, ModelError> {
        let response: QueryEmbeddingsResponse = self
            .post("get_query_embeddings", context(items, &[]))
            .await
            .map_err(all_unknown_if_empty(items))?;
        self.check_version("get_query_embeddings", &response.metadata)?;
        let vector = response.query_embedding.into_iter().next().ok_or_else(|| {
            ModelError::Unavailable("model server returned no query embedding".into())
        })?;
        Ok(Query {
            vector,
            unknown_items: response.unknown_items,
        })
    }

    async fn score_candidates(
        &self,
        items: &[String],
        candidates: &[String],
    ) -> Result<(Vec<Option<f32>>, Vec<String>), ModelError> {
        let response: PredictResponse = self
            .post("predict", context(items, candidates))
            .await
            .map_err(all_unknown_if_empty(items))?;
        self.check_version("predict", &response.metadata)?;
        Ok((response.scores, response.unknown_items))
    }
}

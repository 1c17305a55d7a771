//! The OpenAPI document (`/openapi.json`), generated from the handlers' annotations and the wire
//! types, and the page that renders it (`/docs`).

use utoipa::OpenApi;

/// The OpenAPI document, generated from the handlers' annotations and the wire types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "recsys",
        description = "Streaming session recommender: personalized top-N items from a user's \
            stored history and current session, popular items (with the reason) otherwise."
    ),
    paths(
        crate::routes::retrieve,
        crate::routes::popular,
        crate::routes::seq_retriever,
        crate::routes::user_history,
        crate::users::forget_user,
        crate::search::items_by_id,
        crate::search::items_by_ids_body,
        crate::search::search_items,
        crate::search::search_by_title,
        crate::items::upsert_items,
        crate::items::get_item,
        crate::items::remove_item,
        crate::items::similar_items,
        crate::routes::readyz,
        crate::routes::healthz,
        crate::events::post_events
    ),
    modifiers(&RefusalResponses)
)]
pub struct ApiDoc;

/// The refusals an operation can meet before its handler runs, which the handlers' annotations
/// leave out: 401, 403 and 429 from the API keys (`access`), 414 for a URI too long to read,
/// 413 for a body over the operation's limit, 415 for a body sent as another content type than
/// the operation takes, and 400 for a query string or a body that does not parse (an unknown or
/// malformed parameter, not JSON).
struct RefusalResponses;

impl utoipa::Modify for RefusalResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let refusal = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let keyed = !crate::access::is_open(path);
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                if keyed {
                    for (status, description) in [
                        (
                            "401",
                            "A key is needed here and none was sent, or the key sent is unknown",
                        ),
                        (
                            "403",
                            "The key sent does not have the scope this operation needs",
                        ),
                        (
                            "429",
                            "The key sent is over its rate limit; `retry-after` says when to retry",
                        ),
                    ] {
                        responses
                            .entry(status.to_owned())
                            .or_insert_with(|| refusal(description).into());
                    }
                }
                // hyper answers it, without a body, before any route is matched.
                responses.entry("414".to_owned()).or_insert_with(|| {
                    ResponseBuilder::new()
                        .description("The request's URI is longer than the server reads")
                        .build()
                        .into()
                });
                if operation.request_body.is_some() {
                    responses.entry("415".to_owned()).or_insert_with(|| {
                        refusal("The body is not sent as a content type this operation takes")
                            .into()
                    });
                    responses.entry("413".to_owned()).or_insert_with(|| {
                        refusal("The body is larger than this operation takes").into()
                    });
                }
                let has_query = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|parameter| parameter.parameter_in == ParameterIn::Query);
                let unparsable = match (has_query, operation.request_body.is_some()) {
                    (true, true) => {
                        "A query parameter is unknown or malformed, or the body is not JSON"
                    }
                    (true, false) => "A query parameter is unknown or malformed",
                    (false, true) => "The body is not JSON",
                    (false, false) => continue,
                };
                responses
                    .entry("400".to_owned())
                    .or_insert_with(|| refusal(unparsable).into());
            }
        }
    }
}

/// A self-contained page that renders `/openapi.json` (no CDN: it works offline and air-gapped).
pub(crate) const DOCS_PAGE: &str = include_str!("docs.html");

/// A query parameter whose schema states a rule the server checks (`schemas::openapi`). The
/// derive drops a field's description, `required` and style once `schema_with` is given, so
/// such parameters are written out with this instead.
pub(crate) fn query_parameter(
    name: &str,
    required: bool,
    description: &str,
    schema: impl Into<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>>,
) -> utoipa::openapi::path::ParameterBuilder {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::Required;
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(schema))
}

/// A count from 1 to `schemas::MAX_ITEMS_PER_REQUEST` (`count`, `limit`), optional.
pub(crate) fn count_parameter(name: &str, description: &str) -> utoipa::openapi::path::Parameter {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let count = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(schemas::MAX_ITEMS_PER_REQUEST as u32))
        .build();
    query_parameter(name, false, description, count).build()
}

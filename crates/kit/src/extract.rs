//! Extractors that validate at the edge and fail with problem documents.
//!
//! `Json<T>` and `Query<T>` parse like axum's, then run `garde` validation; every
//! failure is a [`Problem`]: `415` for a wrong content type, `400` for unparseable
//! JSON, `413` for a body over the limit, `422` listing each invalid field.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::errors::{FieldError, Problem};

/// A JSON body, parsed and validated.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

/// A query string, parsed and validated.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

/// Converts a `garde` report into a `422` problem listing each field.
pub fn report_to_problem(report: garde::Report) -> Problem {
    let errors = report
        .iter()
        .map(|(path, err)| {
            let field = path.to_string();
            let field = if field.is_empty() {
                "body".to_owned()
            } else {
                field
            };
            FieldError::new(field, err.message().to_string())
        })
        .collect();
    Problem::invalid(errors)
}

fn json_rejection(r: JsonRejection) -> Problem {
    match r {
        JsonRejection::MissingJsonContentType(_) => {
            Problem::unsupported_media_type("expected content-type: application/json")
        }
        JsonRejection::JsonSyntaxError(e) => {
            Problem::bad_request(format!("the body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => data_error(&e.body_text()),
        JsonRejection::BytesRejection(e) if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::payload_too_large("the body exceeds the size limit of this route")
        }
        other => Problem::bad_request(other.body_text()),
    }
}

/// serde's data errors read "Failed to deserialize the JSON body into the target type:
/// items[0].quantity: invalid type: …"; the part before the second colon is the field.
fn data_error(text: &str) -> Problem {
    let rest = text.split_once("type: ").map(|(_, r)| r).unwrap_or(text);
    match rest.split_once(": ") {
        Some((field, msg)) if !field.contains(' ') => Problem::invalid_field(field, msg),
        _ => Problem::invalid_field("body", rest),
    }
}

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned + garde::Validate,
    T::Context: Default,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state)
            .await
            .map_err(json_rejection)?;
        value.validate().map_err(report_to_problem)?;
        Ok(Json(value))
    }
}

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + garde::Validate,
    T::Context: Default,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|r: QueryRejection| match r {
                    QueryRejection::FailedToDeserializeQueryString(e) => {
                        let text = e.body_text();
                        let rest = text
                            .split_once("Query string: ")
                            .map(|(_, r)| r)
                            .unwrap_or(&text);
                        // serde_urlencoded errors do not name the field; list the query.
                        Problem::invalid_field("query", rest)
                    }
                    other => Problem::bad_request(other.body_text()),
                })?;
        value.validate().map_err(report_to_problem)?;
        Ok(Query(value))
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_name_the_field() {
        let p = data_error(
            "Failed to deserialize the JSON body into the target type: items[0].quantity: invalid type: string \"x\", expected u32 at line 1 column 30",
        );
        assert_eq!(p.status, 422);
        assert_eq!(p.errors[0].field, "items[0].quantity");
        assert!(p.errors[0].message.starts_with("invalid type"));
    }

    #[test]
    fn garde_reports_become_field_errors() {
        #[derive(garde::Validate)]
        struct Q {
            #[garde(range(min = 1, max = 100))]
            limit: u32,
        }
        let report = garde::Validate::validate(&Q { limit: 0 }).unwrap_err();
        let p = report_to_problem(report);
        assert_eq!(p.status, 422);
        assert_eq!(p.errors[0].field, "limit");
    }
}

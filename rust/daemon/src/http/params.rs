//! Request parameters of the JSON API, parsed so that every bad one gets a JSON error that
//! names it: axum's own extractors answer a malformed path or query string with plain text.
//!
//! Ids are parsed here, not by axum: any `u64` is a well-formed id (an unknown one, 0
//! included, is a 404 from the lookup), anything else — negative, non-numeric, past
//! `u64::MAX` — a 400 naming the parameter and the value.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use flame_core::FlameError;

use super::ApiError;

/// `Path<T>` whose rejection is a JSON 400.
pub struct ApiPath<T>(pub T);

/// `Query<T>` whose rejection is a JSON 400.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Self(v))
            .map_err(|e: PathRejection| {
                ApiError(FlameError::InvalidArgument(format!(
                    "bad path: {}",
                    e.body_text()
                )))
            })
    }
}

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|e: QueryRejection| {
                ApiError(FlameError::InvalidArgument(format!(
                    "bad query string: {}",
                    e.body_text()
                )))
            })
    }
}

/// An id from the path; `what` names it in the error ("session id", "task id", "node id").
///
/// # Errors
/// `InvalidArgument` naming `what` and the value when it is not a whole number in
/// `0..=u64::MAX`.
pub fn id(what: &str, raw: &str) -> Result<u64, FlameError> {
    raw.parse::<u64>().map_err(|_| {
        // The value is the caller's: a bounded echo is enough to recognise it.
        let shown: String = raw.chars().take(40).collect();
        let more = if shown.len() < raw.len() { "..." } else { "" };
        FlameError::InvalidArgument(format!(
            "{what} '{shown}{more}' is not an id (a whole number from 0 to {})",
            u64::MAX
        ))
    })
}

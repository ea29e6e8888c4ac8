//! Extractors whose rejections speak the API's error shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorDetail};

/// A JSON body. Malformed JSON is 400; well-formed JSON of the wrong shape (wrong types, unknown or missing
/// fields) is 422 naming the field; a body over the route's limit is 413. The content type is not insisted on,
/// so a bare `curl -d` works.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        parse_json(&read_body(req, state).await?).map(ApiJson)
    }
}

/// The whole body, up to the route's limit (413 past it): what a handler reads before it parses.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("the request body is larger than this route accepts")
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut *de);
    let value = parsed.map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field =
                    if path == "." { unknown_or_missing(&inner).unwrap_or_else(|| "body".to_owned()) } else { path };
                ApiError::invalid(field, inner.to_string())
            }
            _ => ApiError::bad_request(format!("malformed JSON: {inner}")),
        }
    })?;
    // Trailing bytes after the value are malformed JSON too.
    de.end().map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// Integers in request bodies. JSON Schema calls `60.0` an integer, so the API does too: an integral number in
/// any notation is that integer; a fraction or a value out of the field's range is an error naming the number.
pub mod whole {
    use serde::Deserialize;
    use serde::de::Error;

    fn from_number<T: TryFrom<i64>, E: Error>(number: serde_json::Number) -> Result<T, E> {
        let n = match (number.as_i64(), number.as_f64()) {
            (Some(n), _) => Some(n),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
            _ => None,
        };
        n.and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| E::custom(format!("`{number}` is not a whole number in range")))
    }

    /// For `#[serde(deserialize_with = "whole::required")]` on an integer field.
    pub fn required<'de, D: serde::Deserializer<'de>, T: TryFrom<i64>>(de: D) -> Result<T, D::Error> {
        from_number(serde_json::Number::deserialize(de)?)
    }

    /// For `#[serde(default, deserialize_with = "whole::optional")]` on an `Option` of an integer.
    pub fn optional<'de, D: serde::Deserializer<'de>, T: TryFrom<i64>>(de: D) -> Result<Option<T>, D::Error> {
        Option::<serde_json::Number>::deserialize(de)?.map(from_number).transpose()
    }
}

/// serde names unknown and missing fields only in its message: pull the name out for `details[].field`.
fn unknown_or_missing(err: &serde_json::Error) -> Option<String> {
    let text = err.to_string();
    ["unknown field `", "missing field `"]
        .iter()
        .find_map(|marker| text.split(marker).nth(1).and_then(|rest| rest.split('`').next()).map(str::to_owned))
}

/// Query parameters; an unparsable value is 422 naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded_parse(query).map(ApiQuery)
    }
}

fn serde_urlencoded_parse<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}").parse().map_err(|_| ApiError::bad_request("malformed query string"))?,
    )
    .map(|q| q.0)
    .map_err(|rejection| {
        ApiError::validation(vec![ErrorDetail { field: "query".to_owned(), message: rejection.body_text() }])
    })
}

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
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large("the request body is larger than this route accepts")
            } else {
                ApiError::bad_request(rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path::deserialize(de);
    parsed.map_err(|(path, err)| match err.classify() {
        serde_json::error::Category::Data => {
            ApiError::invalid(if path.is_empty() { "body".to_owned() } else { path }, err.to_string())
        }
        _ => ApiError::bad_request(format!("malformed JSON: {err}")),
    })
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

/// Tracks the JSON path of a deserialisation error so a 422 can name the field, without another dependency.
mod serde_path {
    use serde::de::DeserializeOwned;

    pub fn deserialize<'de, T: DeserializeOwned>(
        de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
    ) -> Result<T, (String, serde_json::Error)> {
        let result = T::deserialize(&mut *de).and_then(|v| de.end().map(|()| v));
        result.map_err(|err| (field_of(&err), err))
    }

    /// serde_json names unknown and missing fields in its message: pull the name out for `details[].field`.
    fn field_of(err: &serde_json::Error) -> String {
        let text = err.to_string();
        for marker in ["unknown field `", "missing field `"] {
            if let Some(rest) = text.split(marker).nth(1)
                && let Some(name) = rest.split('`').next()
            {
                return name.to_owned();
            }
        }
        String::new()
    }
}

//! The OpenAPI 3.1 document of the HTTP surface, served at `/v1/openapi.json`.
//! It is kept by hand next to the code; an end-to-end test checks that every
//! path and method it lists is routed and that every `$ref` resolves.

use axum::http::header;
use axum::response::IntoResponse;

const DOCUMENT: &str = include_str!("openapi.json");

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

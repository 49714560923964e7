//! The web app's files (`static_dir`, `NIMBUS_STATIC_DIR`): `GET`/`HEAD` of
//! a path no route serves is answered from the folder, and a path with no
//! file there gets the folder's `index.html` (a single-page app routes
//! itself). Paths under the API's own prefixes never fall back to the app:
//! they keep answering `404` in the error shape.

use std::path::{Path, PathBuf};

use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use super::error;

/// Prefixes that belong to the server, not to the app.
const API_PREFIXES: [&str; 6] = ["/v1/", "/fn/", "/.well-known/", "/healthz", "/readyz", "/metrics"];

/// The folder's files, with `index.html` for every other path.
#[derive(Clone)]
pub struct StaticFiles {
    serve: ServeDir<ServeFile>,
}

impl StaticFiles {
    pub fn new(dir: &Path) -> StaticFiles {
        let index: PathBuf = dir.join("index.html");
        StaticFiles { serve: ServeDir::new(dir).append_index_html_on_directories(true).fallback(ServeFile::new(index)) }
    }

    /// The answer to a request no route matched.
    pub async fn answer(self, request: Request) -> Response {
        let path = request.uri().path();
        let ours = API_PREFIXES.iter().any(|prefix| path == prefix.trim_end_matches('/') || path.starts_with(prefix));
        if ours || !matches!(*request.method(), Method::GET | Method::HEAD) {
            return error::not_found().await.into_response();
        }
        match self.serve.oneshot(request).await {
            Ok(response) => response.map(axum::body::Body::new),
            Err(never) => match never {},
        }
    }
}

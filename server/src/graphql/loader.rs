//! Nested lists without one query per parent: the `collection` field of every
//! document in a list asks this request's `PageLoader`, which gathers the
//! pages asked for in the same moment and reads them through
//! `Documents::query_many` (one statement for all that need no per-row rules
//! check). One loader per request, made for its caller and never caching, so
//! nothing read for one caller reaches another.

use std::collections::HashMap;
use std::sync::Arc;

use super::{failure, public};
use crate::auth::Caller;
use crate::documents::query::{ParsedQuery, QueryRequest};
use crate::documents::{Documents, QueryResult};
use crate::error::ErrorCode;
use crate::store::documents::{StoredDoc, PAGES_PER_STATEMENT};
use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::Error;

/// The query body of one page (`POST /v1/query`'s shape, as JSON text).
pub(super) type PageKey = String;

/// One page's documents and the cursor after them.
pub(super) type LoadedPage = Arc<(Vec<StoredDoc>, Option<String>)>;

/// Loads the pages of one request's nested lists as its caller.
pub(super) struct PageLoader {
    documents: Documents,
    caller: Caller,
}

/// A request's loader: batches what its resolvers ask for within a
/// millisecond, at most one statement's worth at a time.
pub(super) fn for_request(documents: Documents, caller: Caller) -> DataLoader<PageLoader> {
    DataLoader::new(PageLoader { documents, caller }, tokio::spawn).max_batch_size(PAGES_PER_STATEMENT)
}

impl Loader<PageKey> for PageLoader {
    type Value = Result<LoadedPage, Error>;
    type Error = Error;

    async fn load(&self, keys: &[PageKey]) -> Result<HashMap<PageKey, Self::Value>, Error> {
        let mut answers = HashMap::with_capacity(keys.len());
        let mut parsed = Vec::with_capacity(keys.len());
        let mut asked = Vec::with_capacity(keys.len());
        for key in keys {
            match parse(key) {
                Ok(query) => {
                    parsed.push(query);
                    asked.push(key.clone());
                }
                Err(e) => {
                    answers.insert(key.clone(), Err(e));
                }
            }
        }
        let results = self.documents.query_many(&self.caller, parsed).await;
        for (key, result) in asked.into_iter().zip(results) {
            let page = match result {
                Ok(QueryResult::Documents { documents, next_cursor }) => Ok(Arc::new((documents, next_cursor))),
                Ok(_) => Err(failure(ErrorCode::Internal, "a query answered something else")),
                Err(e) => Err(public(e)),
            };
            answers.insert(key, page);
        }
        Ok(answers)
    }
}

/// A page's query from its body.
fn parse(body: &str) -> Result<ParsedQuery, Error> {
    let request: QueryRequest =
        serde_json::from_str(body).map_err(|e| failure(ErrorCode::InvalidArgument, e.to_string()))?;
    super::schema::parsed(request)
}

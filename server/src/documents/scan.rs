//! Queries under the rules: rules act as filters (their list conditions are
//! pushed into the query; what cannot be pushed is checked per row while
//! pages are read until a page is full), and counts and aggregates over what
//! the caller may list.

use serde_json::Value;

use super::access::{self, Fetched};
use super::cursor;
use super::query::{self, ParsedQuery, QueryScope, Wanted};
use super::{denied, parse_data, Caller, CollectionPath, DocumentError, Documents, QueryResult};
use crate::clock::now_micros;
use crate::store::documents::{StoredDoc, PAGES_PER_STATEMENT};
use crate::store::StoreError;
use nimbus_rules_lang::ast::Method;

/// Most documents a rules-filtered query examines to fill one page.
const MAX_SCANNED_PER_QUERY: usize = 5000;
/// Most documents checked against the rules for one count or aggregate.
const MAX_COUNTED_UNDER_RULES: usize = 100_000;

/// A query with the rules' list conditions added.
struct RuledQuery {
    query: crate::store::query::Query,
    /// The added filter is the whole decision: rows read need no per-row check.
    exact: bool,
}

/// Documents a scan kept, and the cursor after the last one read when more remain.
struct Scan {
    visible: Vec<StoredDoc>,
    next: Option<crate::store::query::Cursor>,
}

/// One aggregate over the numeric values of a field (`None` = count), as SQL computes it.
fn aggregate_in_memory(aggregate: Option<&crate::store::query::Aggregate>, documents: &[Value]) -> Value {
    use crate::store::query::AggregateFn;
    let Some(aggregate) = aggregate else { return Value::from(documents.len()) };
    let numbers: Vec<f64> = documents
        .iter()
        .filter_map(|d| aggregate.field.lookup(d))
        .filter(|v| v.is_number())
        .filter_map(Value::as_f64)
        .collect();
    if numbers.is_empty() {
        return Value::Null;
    }
    let result = match aggregate.function {
        AggregateFn::Sum => numbers.iter().sum(),
        AggregateFn::Avg => numbers.iter().sum::<f64>() / numbers.len() as f64,
        AggregateFn::Min => numbers.iter().copied().fold(f64::INFINITY, f64::min),
        AggregateFn::Max => numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    };
    Value::from(result)
}

/// A query with its cursors opened and the caller's rules applied.
struct Planned {
    query: crate::store::query::Query,
    /// What cursors are sealed to (the query's collection or group).
    binding: String,
    /// The store's answer is the whole answer (the service key, or rules
    /// pushed down exactly); otherwise every row is checked.
    exact: bool,
}

impl Documents {
    pub async fn query(&self, caller: &Caller, parsed: ParsedQuery) -> Result<QueryResult, DocumentError> {
        let (planned, wanted) = self.plan(caller, parsed)?;
        self.run_planned(caller, planned, wanted).await
    }

    /// Several queries of one caller, the pages that need no per-row check
    /// read in one statement (GraphQL's nested lists). Answers in order.
    pub async fn query_many(
        &self,
        caller: &Caller,
        queries: Vec<ParsedQuery>,
    ) -> Vec<Result<QueryResult, DocumentError>> {
        /// Each query's answer, or its place among the pages read together.
        enum Slot {
            Answered(Result<QueryResult, DocumentError>),
            Together(usize),
        }
        let mut slots = Vec::with_capacity(queries.len());
        let mut together: Vec<Planned> = Vec::new();
        for parsed in queries {
            slots.push(match self.plan(caller, parsed) {
                Ok((planned, Wanted::Documents)) if planned.exact => {
                    together.push(planned);
                    Slot::Together(together.len() - 1)
                }
                Ok((planned, wanted)) => Slot::Answered(self.run_planned(caller, planned, wanted).await),
                Err(e) => Slot::Answered(Err(e)),
            });
        }
        let pages = if together.is_empty() {
            Ok(Vec::new())
        } else {
            self.read_statements.inc_by(together.len().div_ceil(PAGES_PER_STATEMENT) as u64);
            let store_queries: Vec<_> = together.iter().map(|planned| planned.query.clone()).collect();
            self.store.query_documents_many(&store_queries).await
        };
        let mut pages = pages.map(|pages| pages.into_iter().map(Some).collect::<Vec<_>>());
        slots
            .into_iter()
            .map(|slot| match (slot, &mut pages) {
                (Slot::Answered(answer), _) => answer,
                (Slot::Together(i), Ok(pages)) => match pages.get_mut(i).and_then(Option::take) {
                    Some(page) => Ok(self.direct_page(caller, &together[i], page)),
                    None => Err(StoreError::Internal("a page went unread".into()).into()),
                },
                (Slot::Together(_), Err(e)) => Err(e.clone().into()),
            })
            .collect()
    }

    /// Opens the query's cursors and adds the caller's rules.
    fn plan(&self, caller: &Caller, parsed: ParsedQuery) -> Result<(Planned, Wanted), DocumentError> {
        let ParsedQuery { scope, mut query, wanted, start_after, end_before } = parsed;
        let binding = scope.binding();
        let open = |token: Option<cursor::CursorToken>| {
            token
                .map(|t| self.cursors.open(&t, &binding, &query.order))
                .transpose()
                .map_err(DocumentError::InvalidArgument)
        };
        let (start_after, end_before) = (open(start_after)?, open(end_before)?);
        query.start_after = start_after;
        query.end_before = end_before;
        let planned = match caller {
            Caller::Service => Planned { query, binding, exact: true },
            Caller::Public | Caller::User(_) => {
                let ruled = self.with_pushed_rules(caller, &scope, query)?;
                Planned { query: ruled.query, binding, exact: ruled.exact }
            }
        };
        Ok((planned, wanted))
    }

    async fn run_planned(
        &self,
        caller: &Caller,
        planned: Planned,
        wanted: Wanted,
    ) -> Result<QueryResult, DocumentError> {
        if !planned.exact {
            return match wanted {
                Wanted::Documents => self.filtered_query(caller, &planned.binding, planned.query).await,
                _ => self.filtered_aggregate(caller, planned.query, wanted).await,
            };
        }
        let query = &planned.query;
        match wanted {
            Wanted::Count => {
                self.read_statements.inc();
                Ok(QueryResult::Count(self.store.count_documents(query).await?))
            }
            Wanted::Aggregates(list) => {
                let functions: Vec<_> = list.iter().filter_map(|(_, a)| a.clone()).collect();
                self.read_statements.inc();
                let mut values = self.store.aggregate_documents(query, &functions).await?.into_iter();
                let needs_count = list.iter().any(|(_, a)| a.is_none());
                let count = if needs_count {
                    self.read_statements.inc();
                    self.store.count_documents(query).await?
                } else {
                    0
                };
                let results = list
                    .into_iter()
                    .map(|(name, aggregate)| {
                        let value = match aggregate {
                            None => Value::from(count),
                            Some(_) => values.next().flatten().map_or(Value::Null, Value::from),
                        };
                        (name, value)
                    })
                    .collect();
                Ok(QueryResult::Aggregates(results))
            }
            Wanted::Documents => {
                self.read_statements.inc();
                let page = self.store.query_documents(query).await?;
                Ok(self.direct_page(caller, &planned, page))
            }
        }
    }

    /// The answer of an exactly planned page.
    fn direct_page(&self, caller: &Caller, planned: &Planned, page: crate::store::documents::Page) -> QueryResult {
        if *caller != Caller::Service {
            self.rows_read.inc_by(page.documents.len() as u64);
        }
        let next_cursor = page.next.map(|cursor| self.cursors.seal(&planned.binding, &planned.query.order, &cursor));
        QueryResult::Documents { documents: page.documents, next_cursor }
    }

    /// Rules act as filters: documents the caller may not `list` are left out,
    /// and further pages are read until the page is full (or the scan budget
    /// is spent), so limits and cursors stay exact.
    async fn filtered_query(
        &self,
        caller: &Caller,
        binding: &str,
        query: crate::store::query::Query,
    ) -> Result<QueryResult, DocumentError> {
        let scan = self.scan_visible(caller, query.clone(), query.limit as usize, MAX_SCANNED_PER_QUERY).await?;
        let next_cursor = scan.next.map(|cursor| self.cursors.seal(binding, &query.order, &cursor));
        Ok(QueryResult::Documents { documents: scan.visible, next_cursor })
    }

    /// Counts and aggregates over the documents the caller may `list`.
    async fn filtered_aggregate(
        &self,
        caller: &Caller,
        mut query: crate::store::query::Query,
        wanted: Wanted,
    ) -> Result<QueryResult, DocumentError> {
        query.limit = 1000;
        let scan = self.scan_visible(caller, query, usize::MAX, MAX_COUNTED_UNDER_RULES).await?;
        if scan.next.is_some() {
            return Err(DocumentError::InvalidArgument(format!(
                "more than {MAX_COUNTED_UNDER_RULES} documents to check against the rules; narrow the query"
            )));
        }
        let values: Vec<Value> = scan.visible.iter().map(parse_data).collect::<Result<_, _>>()?;
        Ok(match wanted {
            Wanted::Count => QueryResult::Count(values.len() as i64),
            Wanted::Aggregates(list) => QueryResult::Aggregates(
                list.into_iter()
                    .map(|(name, aggregate)| (name, aggregate_in_memory(aggregate.as_ref(), &values)))
                    .collect(),
            ),
            Wanted::Documents => QueryResult::Count(values.len() as i64),
        })
    }

    /// Refuses a collection no `allow list` applies to, and adds the rules'
    /// pushed-down conditions to the query.
    fn with_pushed_rules(
        &self,
        caller: &Caller,
        scope: &QueryScope,
        mut query: crate::store::query::Query,
    ) -> Result<RuledQuery, DocumentError> {
        let rules = self.rules.current();
        let auth = access::rules_auth(caller);
        let condition = match scope {
            QueryScope::Collection(collection) => {
                if !rules.covers(Method::List, collection.as_str()) {
                    return Err(denied(&format!("listing {collection}")));
                }
                rules.list_condition(collection.as_str(), auth.as_deref(), now_micros())
            }
            QueryScope::Group(id) => {
                if !rules.covers_group(Method::List, id) {
                    return Err(denied(&format!("listing the collection group {id}")));
                }
                rules.group_list_condition(id, auth.as_deref(), now_micros())
            }
        };
        let pushed = access::pushed_filter(&condition);
        if let Some(filter) = pushed.filter {
            query.filter = Some(match query.filter.take() {
                Some(own) => crate::store::query::Filter::And(vec![own, filter]),
                None => filter,
            });
        }
        Ok(RuledQuery { query, exact: pushed.exact })
    }

    /// Reads pages in query order, keeping the documents the caller may `list`,
    /// until `want` are kept or `budget` rows were read.
    async fn scan_visible(
        &self,
        caller: &Caller,
        mut query: crate::store::query::Query,
        want: usize,
        budget: usize,
    ) -> Result<Scan, DocumentError> {
        let mut visible: Vec<StoredDoc> = Vec::new();
        let mut fetched = Fetched::default();
        let mut scanned = 0;
        loop {
            self.read_statements.inc();
            let page = self.store.query_documents(&query).await?;
            self.rows_read.inc_by(page.documents.len() as u64);
            for stored in page.documents {
                scanned += 1;
                let path = format!("{}/{}", stored.collection, stored.id);
                let data = parse_data(&stored)?;
                let check = access::Check { method: Method::List, path: &path, existing: Some(&data), incoming: None };
                if self.allowed(caller, &mut fetched, &check).await? {
                    visible.push(stored);
                    if visible.len() == want {
                        let next = visible
                            .last()
                            .map(|last| crate::store::documents::cursor_after(last, &query))
                            .transpose()?;
                        return Ok(Scan { visible, next });
                    }
                }
            }
            match page.next {
                Some(cursor) if scanned < budget => query.start_after = Some(cursor),
                next => return Ok(Scan { visible, next }),
            }
        }
    }

    /// Plain listing of a collection in id order.
    pub async fn list(
        &self,
        caller: &Caller,
        collection: &CollectionPath,
        limit: Option<u32>,
        page_token: Option<&str>,
    ) -> Result<QueryResult, DocumentError> {
        let parsed = query::list_query(collection, limit, page_token).map_err(DocumentError::InvalidArgument)?;
        self.query(caller, parsed).await
    }
}

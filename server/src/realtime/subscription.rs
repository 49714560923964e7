//! One subscription: what it watches (a document or a query), what the
//! client has been shown (its view), and how each commit changes that view.
//! Every document state is checked with the subscriber's own rules and the
//! query's filter when it is delivered: a document that starts to match and
//! is readable is `added`, one that stops matching, stops being readable or
//! is deleted is `removed`, so a subscriber never receives a document it
//! could not read. Queries with a limit keep exactly their first N: a
//! document pushed past the end is removed, and when one leaves a full
//! window the server reads the next one (refill).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::feed::{Change, CommitEvent, Feed};
use super::protocol::{self, Frame, SubscriptionId};
use super::RealtimeError;
use crate::auth::Caller;
use crate::documents::path::DocPath;
use crate::documents::query::{ParsedQuery, QueryRequest, MAX_LIMIT};
use crate::documents::render::render_document;
use crate::documents::{DocumentError, Documents, QueryResult};
use crate::store::documents::StoredDoc;
use crate::store::query::{Cursor, Query};
use crate::store::Store;
use nimbus_rules_lang::ast::Method;

/// Most documents a query without a limit may show.
pub const MAX_UNLIMITED_DOCUMENTS: usize = 10_000;
/// How long a resume waits for this instance's feed to reach a position another instance gave.
const RESUME_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// What a subscription watches.
pub enum Target {
    Doc { path: DocPath, text: String },
    Query(Box<LiveQuery>),
}

/// A live query: the request as the client sent it (parsed again for each
/// read through `Documents`), and its parsed form for matching in memory.
pub struct LiveQuery {
    request: Value,
    query: Query,
    limit: Option<u32>,
}

impl Target {
    /// The target of a `subscribe` message: its `query` or its `doc`.
    pub fn parse((query, doc): (Option<Value>, Option<String>)) -> Result<Target, RealtimeError> {
        match (query, doc) {
            (Some(query), None) => Target::query(query),
            (None, Some(doc)) => Target::doc(&doc),
            _ => Err(RealtimeError::Invalid("give either `query` or `doc`".into())),
        }
    }

    pub fn doc(path: &str) -> Result<Target, RealtimeError> {
        let path = DocPath::parse(path).map_err(|e| RealtimeError::Invalid(format!("`doc`: {}", e.0)))?;
        Ok(Target::Doc { text: path.to_string(), path })
    }

    pub fn query(request: Value) -> Result<Target, RealtimeError> {
        let parsed: QueryRequest =
            serde_json::from_value(request.clone()).map_err(|e| RealtimeError::Invalid(format!("`query`: {e}")))?;
        if parsed.start_after.is_some() || parsed.end_before.is_some() || parsed.count || parsed.aggregate.is_some() {
            return Err(RealtimeError::Invalid(
                "`query`: a live query takes `where`, `orderBy` and `limit` (no cursors, counts or aggregates)".into(),
            ));
        }
        let limit = parsed.limit;
        let query = parsed.parse().map_err(|e| RealtimeError::Invalid(format!("`query`: {e}")))?.query;
        Ok(Target::Query(Box::new(LiveQuery { request, query, limit })))
    }

    /// Whether a change to a document of `collection` at `path` concerns this target.
    fn concerns(&self, change: &Change) -> bool {
        match self {
            Target::Doc { text, .. } => **text == *change.path,
            Target::Query(live) => live.query.in_scope(&change.collection),
        }
    }

    fn limit(&self) -> Option<usize> {
        match self {
            Target::Query(live) => live.limit.map(|limit| limit as usize),
            Target::Doc { .. } => None,
        }
    }
}

impl LiveQuery {
    fn parsed(&self, limit: u32, start_after: Option<String>) -> Result<ParsedQuery, RealtimeError> {
        let mut request: QueryRequest = serde_json::from_value(self.request.clone())
            .map_err(|e| RealtimeError::Invalid(format!("`query`: {e}")))?;
        request.limit = Some(limit);
        request.start_after = start_after;
        request.parse().map_err(|e| RealtimeError::Invalid(format!("`query`: {e}")))
    }
}

/// Reads and checks on behalf of one subscriber.
pub struct Reader<'a> {
    pub documents: &'a Documents,
    pub caller: &'a Caller,
    /// Equal for callers the rules cannot tell apart (see `caller_key`).
    pub caller_key: u64,
}

/// A key equal for two callers only when the rules see them alike: every
/// signed-out caller, the service key, or one access token's exact claims.
pub fn caller_key(caller: &Caller) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match caller {
        Caller::Public => 0u8.hash(&mut hasher),
        Caller::Service => 1u8.hash(&mut hasher),
        Caller::User(claims) => serde_json::to_string(claims.as_ref()).unwrap_or_default().hash(&mut hasher),
    }
    hasher.finish()
}

fn target_key(target: &Target) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match target {
        Target::Doc { text, .. } => ("doc", text).hash(&mut hasher),
        Target::Query(live) => ("query", live.request.to_string()).hash(&mut hasher),
    }
    hasher.finish()
}

impl Reader<'_> {
    /// Whether the target shows a document of `collection` at `path` holding `data` to this subscriber.
    async fn shows(&self, target: &Target, collection: &str, path: &str, data: &Value) -> bool {
        let method = match target {
            Target::Doc { text, .. } if text == path => Method::Get,
            Target::Query(live) if live.query.in_scope(collection) && live.query.matches(data) => Method::List,
            _ => return false,
        };
        match self.documents.may_read(self.caller, method, path, data).await {
            Ok(allowed) => allowed,
            Err(e) => {
                // A failing read in the rules (`get()` of another document)
                // hides this document from this subscriber only.
                tracing::warn!(path, "realtime rules check failed; the document is not delivered: {e}");
                false
            }
        }
    }

    /// What the target shows now: its documents, and (limited queries) whether more follow.
    async fn read(&self, target: &Target) -> Result<(Vec<StoredDoc>, bool), RealtimeError> {
        match target {
            Target::Doc { path, .. } => match self.documents.get(self.caller, path).await {
                Ok(document) => Ok((vec![document.stored], false)),
                Err(DocumentError::NotFound(_)) => Ok((Vec::new(), false)),
                Err(e) => Err(e.into()),
            },
            Target::Query(live) => match live.limit {
                Some(limit) => {
                    let (documents, next) = self.page(live, limit, None).await?;
                    Ok((documents, next.is_some()))
                }
                None => {
                    let mut all = Vec::new();
                    let mut after = None;
                    loop {
                        let (documents, next) = self.page(live, MAX_LIMIT, after).await?;
                        all.extend(documents);
                        if all.len() > MAX_UNLIMITED_DOCUMENTS {
                            return Err(RealtimeError::Limit(format!(
                                "a live query without a limit shows at most {MAX_UNLIMITED_DOCUMENTS} documents; add a `limit`"
                            )));
                        }
                        match next {
                            Some(cursor) => after = Some(cursor),
                            None => return Ok((all, false)),
                        }
                    }
                }
            },
        }
    }

    async fn page(
        &self,
        live: &LiveQuery,
        limit: u32,
        after: Option<String>,
    ) -> Result<(Vec<StoredDoc>, Option<String>), RealtimeError> {
        match self.documents.query(self.caller, live.parsed(limit, after)?).await? {
            QueryResult::Documents { documents, next_cursor } => Ok((documents, next_cursor)),
            QueryResult::Count(_) | QueryResult::Aggregates(_) => Ok((Vec::new(), None)),
        }
    }
}

/// A document the client has: its version and (limited queries) its place in the order.
struct Shown {
    version: i64,
    at: Option<Cursor>,
}

/// What the client has been shown.
#[derive(Default)]
struct View {
    shown: HashMap<Arc<str>, Shown>,
    /// After a resume the server does not know the whole view: a document
    /// neither shown nor known hidden was shown if its state before its first
    /// change since the resume position was visible. Complete views know.
    complete: bool,
    hidden: HashSet<Arc<str>>,
    /// Limited queries: documents exist beyond the window.
    more: bool,
}

/// One entry of a change frame.
enum Entry<'a> {
    Added(Cow<'a, str>),
    Modified(Cow<'a, str>),
    Removed { id: String, path: String },
}

pub struct Subscription {
    pub id: SubscriptionId,
    target: Target,
    /// Subscriptions with the same key and caller share their decisions on a commit.
    target_key: u64,
    /// Every commit up to here is reflected in the view; older events are skipped.
    position: i64,
    view: View,
}

/// What re-checking a subscription led to.
pub enum Refreshed {
    /// The changes that followed (none when nothing did).
    Changes(Option<Frame>),
    /// The view was not complete enough to compare: start over.
    Resync,
}

fn removed(path: &str) -> Entry<'static> {
    let id = path.rsplit('/').next().unwrap_or(path).to_owned();
    Entry::Removed { id, path: path.to_owned() }
}

fn rendered(doc: &StoredDoc) -> Cow<'static, str> {
    Cow::Owned(render_document(&doc.collection, doc))
}

impl Subscription {
    /// Subscribes with a snapshot of what the target shows now.
    pub async fn start(
        id: SubscriptionId,
        target: Target,
        reader: &Reader<'_>,
        feed: &Feed,
    ) -> Result<(Subscription, Frame), RealtimeError> {
        let position = feed.position().await?;
        let view = View { complete: true, ..View::default() };
        let mut subscription = Subscription { id, target_key: target_key(&target), target, position, view };
        let (documents, more) = reader.read(&subscription.target).await?;
        let texts: Vec<String> = documents.iter().map(|d| render_document(&d.collection, d)).collect();
        subscription.remember(&documents, more);
        let frame = protocol::snapshot(&subscription.id, texts.iter().map(String::as_str), position);
        Ok((subscription, frame))
    }

    /// Subscribes from `from`: the changes since then instead of a snapshot
    /// (`RealtimeError::Resync` when they cannot be known).
    pub async fn resume(
        id: SubscriptionId,
        target: Target,
        from: i64,
        reader: &Reader<'_>,
        feed: &Feed,
        store: &Store,
    ) -> Result<(Subscription, Vec<Frame>), RealtimeError> {
        if target.limit().is_some() {
            return Err(RealtimeError::Resync("a query with a limit starts over after a disconnect".into()));
        }
        if from < store.changes_pruned_through().await? {
            return Err(RealtimeError::Resync("the position is older than the change log keeps".into()));
        }
        let head = store.last_change_position().await?;
        if from > head {
            return Err(RealtimeError::Resync("the position is unknown to this database".into()));
        }
        // What was committed before the resume is replayed, not sent live later.
        if !feed.reaches(head, RESUME_PATIENCE).await && !feed.reaches(from, std::time::Duration::ZERO).await {
            return Err(RealtimeError::Resync("this server has not reached the position yet".into()));
        }
        let until = feed.position().await?;
        let mut subscription =
            Subscription { id, target_key: target_key(&target), target, position: from, view: View::default() };
        let mut frames = Vec::new();
        for commit in feed.commits_between(from, until).await? {
            frames.extend(subscription.apply(&commit, reader).await?);
        }
        subscription.position = until;
        if frames.last().and_then(|f| f.position) != Some(until) {
            frames.push(protocol::change(&subscription.id, &[], until));
        }
        Ok((subscription, frames))
    }

    fn remember(&mut self, documents: &[StoredDoc], more: bool) {
        let at = |doc: &StoredDoc| match &self.target {
            Target::Query(live) if live.limit.is_some() => serde_json::from_str(&doc.data)
                .ok()
                .map(|data: Value| Cursor::of(&live.query, &doc.collection, &doc.id, &data)),
            _ => None,
        };
        let shown = documents
            .iter()
            .map(|d| (Arc::from(format!("{}/{}", d.collection, d.id)), Shown { version: d.version, at: at(d) }))
            .collect();
        self.view = View { shown, complete: true, hidden: HashSet::new(), more };
    }

    /// The frame a commit leads to for this subscriber, if it changed what it sees.
    pub async fn apply(&mut self, event: &CommitEvent, reader: &Reader<'_>) -> Result<Option<Frame>, RealtimeError> {
        if event.position <= self.position {
            return Ok(None);
        }
        self.position = event.position;
        let mut entries = Vec::new();
        let mut refill = false;
        for (index, change) in event.changes.iter().enumerate() {
            if !self.target.concerns(change) {
                continue;
            }
            if self.view.shown.get(&change.path).is_some_and(|s| change.version <= s.version) {
                continue; // already shown (a snapshot or refill read it)
            }
            let was_shown = self.was_shown(event, index, reader).await;
            let now_shown = self.decide(event, index, true, reader).await;
            refill |= self.step(change, was_shown, now_shown, &mut entries);
        }
        if refill {
            let (documents, more) = reader.read(&self.target).await?;
            self.diff(documents, more, &mut entries);
        }
        Ok((!entries.is_empty()).then(|| self.frame(&entries)))
    }

    async fn was_shown(&self, event: &CommitEvent, index: usize, reader: &Reader<'_>) -> bool {
        let path = &event.changes[index].path;
        if self.view.shown.contains_key(path) {
            return true;
        }
        if self.view.complete || self.view.hidden.contains(path) {
            return false;
        }
        self.decide(event, index, false, reader).await
    }

    /// Whether the target shows the document as it is after (or before) the
    /// change, decided once per commit for every subscription alike.
    async fn decide(&self, event: &CommitEvent, index: usize, after: bool, reader: &Reader<'_>) -> bool {
        let change = &event.changes[index];
        let Some(data) = (if after { &change.after } else { &change.before }) else { return false };
        let decision = (self.target_key, reader.caller_key, index, after);
        if let Some(shown) = event.decided(&decision) {
            return shown;
        }
        let shown = reader.shows(&self.target, &change.collection, &change.path, data).await;
        event.remember(decision, shown);
        shown
    }

    /// Applies one change to the view; `true` when the window needs a refill.
    fn step<'e>(&mut self, change: &'e Change, was_shown: bool, now_shown: bool, entries: &mut Vec<Entry<'e>>) -> bool {
        let document = || Cow::Borrowed(change.rendered().unwrap_or("null"));
        let at = match (&self.target, &change.after) {
            (Target::Query(live), Some(after)) if live.limit.is_some() => {
                Some(Cursor::of(&live.query, &change.collection, &change.id, after))
            }
            _ => None,
        };
        let limit = self.target.limit();
        let full = limit.is_some_and(|limit| self.view.shown.len() >= limit);
        match (was_shown, now_shown) {
            (false, true) => {
                if full && at.as_ref().is_some_and(|at| !self.before_last(at, None)) {
                    self.view.more = true;
                    return false;
                }
                entries.push(Entry::Added(document()));
                self.view.shown.insert(change.path.clone(), Shown { version: change.version, at });
                if limit.is_some_and(|limit| self.view.shown.len() > limit) {
                    if let Some(last) = self.last() {
                        self.view.shown.remove(&*last);
                        entries.push(removed(&last));
                        self.view.more = true;
                    }
                }
                false
            }
            (true, true) => {
                entries.push(Entry::Modified(document()));
                let moved_to_end =
                    full && self.view.more && at.as_ref().is_some_and(|at| !self.before_last(at, Some(&change.path)));
                self.view.shown.insert(change.path.clone(), Shown { version: change.version, at });
                moved_to_end
            }
            (true, false) => {
                self.view.shown.remove(&change.path);
                if !self.view.complete {
                    self.view.hidden.insert(change.path.clone());
                }
                entries.push(removed(&change.path));
                full && self.view.more
            }
            (false, false) => {
                if !self.view.complete {
                    self.view.hidden.insert(change.path.clone());
                }
                false
            }
        }
    }

    /// Whether `at` sorts before the last shown document (other than `except`).
    fn before_last(&self, at: &Cursor, except: Option<&str>) -> bool {
        let Target::Query(live) = &self.target else { return true };
        self.view
            .shown
            .iter()
            .filter(|(path, _)| Some(&***path) != except)
            .filter_map(|(_, s)| s.at.as_ref())
            .any(|other| live.query.compare(at, other).is_lt())
    }

    /// The path of the last shown document in the query's order.
    fn last(&self) -> Option<Arc<str>> {
        let Target::Query(live) = &self.target else { return None };
        self.view
            .shown
            .iter()
            .filter_map(|(path, s)| s.at.as_ref().map(|at| (path, at)))
            .max_by(|a, b| live.query.compare(a.1, b.1))
            .map(|(path, _)| path.clone())
    }

    /// Replaces the view with `documents`, recording what changed.
    fn diff(&mut self, documents: Vec<StoredDoc>, more: bool, entries: &mut Vec<Entry<'_>>) {
        let fresh: HashSet<String> = documents.iter().map(|d| format!("{}/{}", d.collection, d.id)).collect();
        let mut gone: Vec<&Arc<str>> = self.view.shown.keys().filter(|p| !fresh.contains(&***p)).collect();
        gone.sort();
        entries.extend(gone.into_iter().map(|p| removed(p)));
        for doc in &documents {
            match self.view.shown.get(format!("{}/{}", doc.collection, doc.id).as_str()) {
                None => entries.push(Entry::Added(rendered(doc))),
                Some(shown) if shown.version < doc.version => entries.push(Entry::Modified(rendered(doc))),
                Some(_) => {}
            }
        }
        self.remember(&documents, more);
    }

    /// Checks the view again (the rules or the caller changed).
    pub async fn refresh(&mut self, reader: &Reader<'_>) -> Result<Refreshed, RealtimeError> {
        if !self.view.complete {
            return Ok(Refreshed::Resync);
        }
        let (documents, more) = reader.read(&self.target).await?;
        let mut entries = Vec::new();
        self.diff(documents, more, &mut entries);
        Ok(Refreshed::Changes((!entries.is_empty()).then(|| self.frame(&entries))))
    }

    /// Gives the subscription back its target, to start it over.
    pub fn into_target(self) -> (SubscriptionId, Target) {
        (self.id, self.target)
    }

    fn frame(&self, entries: &[Entry<'_>]) -> Frame {
        let wire: Vec<protocol::ChangeEntry<'_>> = entries
            .iter()
            .map(|e| match e {
                Entry::Added(doc) => protocol::ChangeEntry::Added(doc),
                Entry::Modified(doc) => protocol::ChangeEntry::Modified(doc),
                Entry::Removed { id, path } => protocol::ChangeEntry::Removed { id, path },
            })
            .collect();
        protocol::change(&self.id, &wire, self.position)
    }
}

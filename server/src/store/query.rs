//! Structured document queries, and their translation to SQL text plus
//! parameters. The SQL is written once here; the two dialects differ only in
//! how a JSON field is read (`Dialect`). Every field is compared through three
//! sort keys that both databases compute the same way — its type rank
//! (null < bool < number < timestamp < string < array < map, Firestore's type
//! order), its numeric value and its string value (a timestamp's canonical
//! text) — so filters, ordering, cursors and declared expression indexes
//! agree on SQLite and PostgreSQL.

use std::fmt::Write as _;

/// A dotted field path inside document data; segments are `[A-Za-z_][A-Za-z0-9_]*`
/// (so a path can be written into SQL text, as expression indexes require).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    pub const MAX_DEPTH: usize = 16;

    pub fn parse(text: &str) -> Option<FieldPath> {
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        let valid = |s: &String| {
            let mut chars = s.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                && s.len() <= 64
        };
        (segments.len() <= Self::MAX_DEPTH && segments.iter().all(valid)).then_some(FieldPath(segments))
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }
}

/// A value a field is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Number(f64),
    /// A timestamp, as its canonical RFC 3339 text.
    Timestamp(String),
    String(String),
}

/// Type ranks of the sort keys (`Dialect::rank` writes the same in SQL).
pub mod rank {
    pub const NULL: i64 = 0;
    pub const BOOL: i64 = 1;
    pub const NUMBER: i64 = 2;
    pub const TIMESTAMP: i64 = 3;
    pub const STRING: i64 = 4;
    pub const ARRAY: i64 = 5;
    pub const MAP: i64 = 6;
}

impl Scalar {
    /// The scalar a JSON value stands for (a timestamp in its canonical
    /// text); `None` for arrays, maps and numbers beyond a double.
    pub fn from_json(value: &serde_json::Value) -> Option<Scalar> {
        use serde_json::Value;
        match value {
            Value::Null => Some(Scalar::Null),
            Value::Bool(b) => Some(Scalar::Bool(*b)),
            Value::Number(n) => n.as_f64().map(Scalar::Number),
            Value::String(s) => Some(Scalar::String(s.clone())),
            Value::Object(_) => nimbus_rules_lang::time::from_json(value)
                .map(|micros| Scalar::Timestamp(nimbus_rules_lang::time::format(micros))),
            Value::Array(_) => None,
        }
    }

    /// The value's sort keys: (rank, numeric value, text value).
    pub(super) fn sort_keys(&self) -> (i64, f64, String) {
        match self {
            Scalar::Null => (rank::NULL, 0.0, String::new()),
            Scalar::Bool(b) => (rank::BOOL, if *b { 1.0 } else { 0.0 }, String::new()),
            Scalar::Number(n) => (rank::NUMBER, *n, String::new()),
            Scalar::Timestamp(t) => (rank::TIMESTAMP, 0.0, t.clone()),
            Scalar::String(s) => (rank::STRING, 0.0, s.clone()),
        }
    }
}

/// The rules' comparison operators are the store's: a pushed-down condition
/// becomes a filter without translation.
pub use nimbus_rules_lang::pushdown::CompareOp;

fn operator_sql(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Eq => "=",
        CompareOp::Ne => "<>",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare { field: FieldPath, op: CompareOp, value: Scalar },
    In { field: FieldPath, values: Vec<Scalar>, negated: bool },
    ArrayContains { field: FieldPath, values: Vec<Scalar> },
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderBy {
    pub field: FieldPath,
    pub direction: Direction,
}

/// The sort keys of one field of one document.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SortKey {
    pub rank: i64,
    pub num: f64,
    pub text: String,
}

impl SortKey {
    /// The sort keys of a field value, computed as the SQL of both dialects does.
    pub fn of(value: &serde_json::Value) -> SortKey {
        use serde_json::Value;
        let (rank, num, text) = match value {
            Value::Null => (rank::NULL, 0.0, String::new()),
            Value::Bool(b) => (rank::BOOL, if *b { 1.0 } else { 0.0 }, String::new()),
            Value::Number(n) => (rank::NUMBER, n.as_f64().unwrap_or(0.0), String::new()),
            Value::String(s) => (rank::STRING, 0.0, s.clone()),
            Value::Array(_) => (rank::ARRAY, 0.0, String::new()),
            Value::Object(map) => match map.get(nimbus_rules_lang::time::TIMESTAMP_KEY).and_then(Value::as_str) {
                Some(text) => (rank::TIMESTAMP, 0.0, text.to_owned()),
                None => (rank::MAP, 0.0, String::new()),
            },
        };
        SortKey { rank, num, text }
    }
}

impl FieldPath {
    /// The value at this path in `data`, if present.
    pub fn lookup<'v>(&self, data: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        self.0.iter().try_fold(data, |value, segment| value.as_object()?.get(segment))
    }
}

/// A position in a query's order: the sort keys of the order fields, the
/// collection (collection group queries only) and the id.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    pub keys: Vec<SortKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    pub id: String,
}

impl Cursor {
    /// The position of a document of `collection` holding `data` in the query's order.
    pub fn of(query: &Query, collection: &str, id: &str, data: &serde_json::Value) -> Cursor {
        let keys =
            query.order.iter().map(|o| SortKey::of(o.field.lookup(data).unwrap_or(&serde_json::Value::Null))).collect();
        Cursor { keys, collection: query.group.then(|| collection.to_owned()), id: id.to_owned() }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The collection path; for a collection group query, the collection id
    /// every matching collection ends with (`comments`).
    pub collection: String,
    /// A collection group query: every collection whose last segment is `collection`.
    pub group: bool,
    pub filter: Option<Filter>,
    pub order: Vec<OrderBy>,
    pub limit: u32,
    pub start_after: Option<Cursor>,
    pub end_before: Option<Cursor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFn {
    Sum,
    Avg,
    Min,
    Max,
}

/// One aggregate over the numeric values of a field in the filtered set.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub function: AggregateFn,
    pub field: FieldPath,
}

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Param {
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
    /// Text or SQL NULL.
    MaybeText(Option<String>),
}

impl From<&str> for Param {
    fn from(text: &str) -> Param {
        Param::Text(text.to_owned())
    }
}

impl From<&String> for Param {
    fn from(text: &String) -> Param {
        Param::Text(text.clone())
    }
}

impl From<&Option<String>> for Param {
    fn from(text: &Option<String>) -> Param {
        Param::MaybeText(text.clone())
    }
}

impl From<i64> for Param {
    fn from(n: i64) -> Param {
        Param::Int(n)
    }
}

impl From<bool> for Param {
    fn from(b: bool) -> Param {
        Param::Bool(b)
    }
}

/// How a dialect reads one JSON field; everything else is shared SQL.
pub(super) trait Dialect {
    /// Type rank (see `rank`): 0 null, 1 bool, 2 number, 3 timestamp, 4 string,
    /// 5 array, 6 map; NULL when missing.
    fn rank(&self, field: &FieldPath) -> String;
    /// Numeric value of bools (0/1) and numbers, 0 otherwise.
    fn num(&self, field: &FieldPath) -> String;
    /// String value of strings (compared bytewise), '' otherwise.
    fn text(&self, field: &FieldPath) -> String;
    /// Whether the field is an array holding a value equal to `value` (bound as `param`).
    fn array_contains(&self, field: &FieldPath, value: &Scalar, param: &str) -> String;
    /// How `value` is bound for `array_contains`.
    fn array_element_param(&self, value: &Scalar) -> Option<Param>;
    /// The select expression for the document data as JSON text.
    fn data_text(&self) -> &'static str;
    /// The last `n` characters of a text column.
    fn last_chars(&self, column: &str, n: usize) -> String;
    /// What makes a `SELECT … LIMIT n` of a claim skip rows other
    /// transactions hold, so several instances share the work.
    fn skip_locked(&self) -> &'static str;
}

/// SQL text and its parameters, built left to right.
pub(super) struct Sql {
    pub text: String,
    pub params: Vec<Param>,
}

impl Sql {
    fn new() -> Sql {
        Sql { text: String::new(), params: Vec::new() }
    }

    fn bind(&mut self, param: Param) -> String {
        self.params.push(param);
        format!("${}", self.params.len())
    }
}

/// Most parameters one multi-row statement binds. SQLite finds a parameter's
/// name by walking the list of all of them (`sqlite3_bind_parameter_name`,
/// which sqlx calls for each one it binds), so binding costs grow with the
/// square of their number: 5,000 parameters cost milliseconds, 400 nothing
/// measurable.
pub const MAX_PARAMS_PER_STATEMENT: usize = 400;

/// How many rows of `columns` parameters fit in one statement.
pub const fn rows_per_statement(columns: usize) -> usize {
    MAX_PARAMS_PER_STATEMENT / columns
}

/// `($1, $2), ($3, $4)`: the placeholders of `rows` rows, one per column,
/// each followed by its column's suffix (a cast such as `::jsonb`, or nothing).
pub(super) fn value_rows(rows: usize, suffixes: &[&str]) -> String {
    let mut text = String::new();
    for row in 0..rows {
        text.push_str(if row > 0 { ", (" } else { "(" });
        for (column, suffix) in suffixes.iter().enumerate() {
            let _ =
                write!(text, "{}${}{suffix}", if column > 0 { ", " } else { "" }, row * suffixes.len() + column + 1);
        }
        text.push(')');
    }
    text
}

/// The index key expressions for one field, in index order.
pub(super) fn index_expressions(dialect: &dyn Dialect, field: &FieldPath) -> [String; 3] {
    [dialect.rank(field), dialect.num(field), dialect.text(field)]
}

/// How a query names its collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CollectionTerm {
    /// `collection = $1`: one prepared statement serves every collection.
    Parameter,
    /// `collection = 'messages'`: the collection has indexes of its own, which
    /// the planner can use only when it sees the value (partial indexes).
    Literal,
}

/// `text` as an SQL string literal (quotes doubled; paths hold no control characters).
pub(super) fn text_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `SELECT [collection,] id, data, version, create_time, update_time FROM documents …`:
/// the collection only for a collection group (every column costs a copy per
/// row in the driver).
pub(super) fn select(dialect: &dyn Dialect, query: &Query, collection: CollectionTerm) -> Sql {
    let mut sql = Sql::new();
    let first = if query.group { "collection, " } else { "" };
    let _ = write!(sql.text, "SELECT {first}id, {}, version, create_time, update_time", dialect.data_text());
    sql.text.push_str(" FROM documents WHERE ");
    where_clause(dialect, query, collection, &mut sql);
    let _ = write!(sql.text, " ORDER BY {} LIMIT {}", order_terms(dialect, query), page_rows(query));
    sql
}

/// One more row than the page holds, to know whether a next page exists.
fn page_rows(query: &Query) -> u64 {
    u64::from(query.limit) + 1
}

/// The ORDER BY terms of a query (`expr ASC, …`).
fn order_terms(dialect: &dyn Dialect, query: &Query) -> String {
    let terms: Vec<String> = order_keys(dialect, query)
        .iter()
        .map(|(expr, dir)| format!("{expr} {}", if *dir == Direction::Asc { "ASC" } else { "DESC" }))
        .collect();
    terms.join(", ")
}

/// Several pages in one statement: each query's page (as `select` reads it,
/// with its collection) is one part of a `UNION ALL`, numbered by `part`
/// and by `place` in its own order, and the rows come back part by part.
pub(super) fn select_many(dialect: &dyn Dialect, queries: &[(&Query, CollectionTerm)]) -> Sql {
    let mut sql = Sql::new();
    for (part, (query, collection)) in queries.iter().enumerate() {
        if part > 0 {
            sql.text.push_str(" UNION ALL ");
        }
        let order = order_terms(dialect, query);
        let _ = write!(
            sql.text,
            "SELECT * FROM (SELECT CAST({part} AS BIGINT) AS part, ROW_NUMBER() OVER (ORDER BY {order}) AS place, \
             collection, id, {}, version, create_time, update_time FROM documents WHERE ",
            dialect.data_text()
        );
        where_clause(dialect, query, *collection, &mut sql);
        let _ = write!(sql.text, " ORDER BY {order} LIMIT {}) AS page{part}", page_rows(query));
    }
    sql.text.push_str(" ORDER BY part, place");
    sql
}

/// `SELECT COUNT(*) …` over the filtered set (order and cursors apply, limit does not).
pub(super) fn count(dialect: &dyn Dialect, query: &Query, collection: CollectionTerm) -> Sql {
    let mut sql = Sql::new();
    sql.text.push_str("SELECT COUNT(*) FROM documents WHERE ");
    where_clause(dialect, query, collection, &mut sql);
    sql
}

/// `SELECT <aggregate>… ` over the numeric values of each field in the filtered set.
pub(super) fn aggregate(
    dialect: &dyn Dialect,
    query: &Query,
    aggregates: &[Aggregate],
    collection: CollectionTerm,
) -> Sql {
    let mut sql = Sql::new();
    sql.text.push_str("SELECT ");
    let columns: Vec<String> = aggregates
        .iter()
        .map(|a| {
            let function = match a.function {
                AggregateFn::Sum => "SUM",
                AggregateFn::Avg => "AVG",
                AggregateFn::Min => "MIN",
                AggregateFn::Max => "MAX",
            };
            format!(
                "{function}(CASE WHEN {} = {} THEN {} END)",
                dialect.rank(&a.field),
                rank::NUMBER,
                dialect.num(&a.field)
            )
        })
        .collect();
    sql.text.push_str(&columns.join(", "));
    sql.text.push_str(" FROM documents WHERE ");
    where_clause(dialect, query, collection, &mut sql);
    sql
}

fn where_clause(dialect: &dyn Dialect, query: &Query, collection: CollectionTerm, sql: &mut Sql) {
    if query.group {
        sql.text.push_str(&group_condition(dialect, &query.collection));
    } else {
        let collection = match collection {
            CollectionTerm::Parameter => sql.bind(Param::Text(query.collection.clone())),
            CollectionTerm::Literal => text_literal(&query.collection),
        };
        let _ = write!(sql.text, "collection = {collection}");
    }
    for order in &query.order {
        let _ = write!(sql.text, " AND {} IS NOT NULL", dialect.rank(&order.field));
    }
    if let Some(filter) = &query.filter {
        sql.text.push_str(" AND ");
        filter_sql(dialect, filter, sql);
    }
    if let Some(cursor) = &query.start_after {
        sql.text.push_str(" AND ");
        cursor_sql(dialect, query, cursor, After::Yes, sql);
    }
    if let Some(cursor) = &query.end_before {
        sql.text.push_str(" AND ");
        cursor_sql(dialect, query, cursor, After::No, sql);
    }
}

/// Every collection of the group `group`: the collection itself at the top
/// level, or any collection path ending in `/group`. Written with literals,
/// the same text as a group index's predicate, so planners can use one.
pub(super) fn group_condition(dialect: &dyn Dialect, group: &str) -> String {
    let suffix = format!("/{group}");
    format!(
        "(collection = {} OR {} = {})",
        text_literal(group),
        dialect.last_chars("collection", suffix.chars().count()),
        text_literal(&suffix)
    )
}

/// The full ORDER BY key list: three keys per order field, then (for a
/// collection group) the collection, then the id.
fn order_keys(dialect: &dyn Dialect, query: &Query) -> Vec<(String, Direction)> {
    let mut keys = Vec::new();
    for order in &query.order {
        for expr in index_expressions(dialect, &order.field) {
            keys.push((expr, order.direction));
        }
    }
    let id_direction = query.order.last().map_or(Direction::Asc, |o| o.direction);
    if query.group {
        keys.push(("collection".to_owned(), id_direction));
    }
    keys.push(("id".to_owned(), id_direction));
    keys
}

#[derive(PartialEq)]
enum After {
    Yes,
    No,
}

/// Keyset condition: rows strictly after (or before) the cursor in query order.
fn cursor_sql(dialect: &dyn Dialect, query: &Query, cursor: &Cursor, after: After, sql: &mut Sql) {
    let keys = order_keys(dialect, query);
    let mut values: Vec<Param> = Vec::new();
    for key in &cursor.keys {
        values.push(Param::Int(key.rank));
        values.push(Param::Real(key.num));
        values.push(Param::Text(key.text.clone()));
    }
    if query.group {
        values.push(Param::Text(cursor.collection.clone().unwrap_or_default()));
    }
    values.push(Param::Text(cursor.id.clone()));
    let mut alternatives = Vec::new();
    for (i, (expr, direction)) in keys.iter().enumerate() {
        let mut terms = Vec::new();
        for (j, (prior, _)) in keys.iter().enumerate().take(i) {
            let p = sql.bind(values[j].clone());
            terms.push(format!("{prior} = {p}"));
        }
        let ascending_after = (*direction == Direction::Asc) == (after == After::Yes);
        let p = sql.bind(values[i].clone());
        terms.push(format!("{expr} {} {p}", if ascending_after { ">" } else { "<" }));
        alternatives.push(format!("({})", terms.join(" AND ")));
    }
    let _ = write!(sql.text, "({})", alternatives.join(" OR "));
}

fn filter_sql(dialect: &dyn Dialect, filter: &Filter, sql: &mut Sql) {
    match filter {
        Filter::Compare { field, op, value } => compare_sql(dialect, field, *op, value, sql),
        Filter::In { field, values, negated } => {
            let op = if *negated { CompareOp::Ne } else { CompareOp::Eq };
            let parts: Vec<Filter> =
                values.iter().map(|value| Filter::Compare { field: field.clone(), op, value: value.clone() }).collect();
            filter_sql(dialect, &if *negated { Filter::And(parts) } else { Filter::Or(parts) }, sql);
        }
        Filter::ArrayContains { field, values } => {
            let mut parts = Vec::new();
            for value in values {
                let param = match dialect.array_element_param(value) {
                    Some(param) => sql.bind(param),
                    None => String::new(),
                };
                parts.push(dialect.array_contains(field, value, &param));
            }
            join(parts, " OR ", sql);
        }
        Filter::And(filters) | Filter::Or(filters) => {
            let separator = if matches!(filter, Filter::And(_)) { " AND " } else { " OR " };
            if filters.is_empty() {
                sql.text.push_str(if matches!(filter, Filter::And(_)) { "1 = 1" } else { "1 = 0" });
                return;
            }
            sql.text.push('(');
            for (i, inner) in filters.iter().enumerate() {
                if i > 0 {
                    sql.text.push_str(separator);
                }
                filter_sql(dialect, inner, sql);
            }
            sql.text.push(')');
        }
    }
}

fn join(parts: Vec<String>, separator: &str, sql: &mut Sql) {
    if parts.is_empty() {
        sql.text.push_str("1 = 0");
    } else {
        let _ = write!(sql.text, "({})", parts.join(separator));
    }
}

/// `field op value`: only values of the same type rank can match; `!=` matches
/// every present value that is not equal (including other types). Equality
/// pins all three sort keys, so an index on the field can also serve an
/// order on the fields after it.
fn compare_sql(dialect: &dyn Dialect, field: &FieldPath, op: CompareOp, value: &Scalar, sql: &mut Sql) {
    let rank = dialect.rank(field);
    let (value_rank, num, text) = value.sort_keys();
    let same_type_match = match op {
        CompareOp::Eq | CompareOp::Ne => {
            let n = sql.bind(Param::Real(num));
            let t = sql.bind(Param::Text(text));
            format!("{rank} = {value_rank} AND {} = {n} AND {} = {t}", dialect.num(field), dialect.text(field))
        }
        CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge => match value {
            Scalar::Null if matches!(op, CompareOp::Le | CompareOp::Ge) => format!("{rank} = {}", rank::NULL),
            Scalar::Null => "1 = 0".to_owned(),
            Scalar::Bool(_) | Scalar::Number(_) => {
                let n = sql.bind(Param::Real(num));
                format!("{rank} = {value_rank} AND {} {} {n}", dialect.num(field), operator_sql(op))
            }
            Scalar::String(_) | Scalar::Timestamp(_) => {
                let t = sql.bind(Param::Text(text));
                format!("{rank} = {value_rank} AND {} {} {t}", dialect.text(field), operator_sql(op))
            }
        },
    };
    if op == CompareOp::Ne {
        let _ = write!(sql.text, "({rank} IS NOT NULL AND NOT ({same_type_match}))");
    } else {
        let _ = write!(sql.text, "({same_type_match})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_are_safe_to_embed() {
        assert!(FieldPath::parse("dims.w").is_some());
        assert!(FieldPath::parse("a'b").is_none());
        assert!(FieldPath::parse("a..b").is_none());
        assert!(FieldPath::parse("0a").is_none());
        assert!(FieldPath::parse("").is_none());
    }
}

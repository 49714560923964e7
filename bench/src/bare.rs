//! The baseline Nimbus is measured against: a bare axum + sqlx server over the
//! same document-store shape (one JSON text column per document, an expression
//! index on the filtered and ordered fields, the stored JSON returned without
//! parsing it), one writer connection with one row per transaction, and four
//! read connections. No auth, no rules, no change log.
//!
//! Usage: bare-baseline <sqlite file> <listen address>

use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

#[derive(Clone)]
struct Pools {
    writer: SqlitePool,
    readers: SqlitePool,
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn failure(e: sqlx::Error) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
}

async fn create(State(pools): State<Pools>, Path(collection): Path<String>, body: Bytes) -> Response {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let data = value.to_string();
    let id: String = {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        (0..20).map(|_| rng.sample(rand::distributions::Alphanumeric) as char).collect()
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    let inserted = sqlx::query(
        "INSERT INTO documents (collection, id, data, version, create_time, update_time) VALUES ($1, $2, $3, 1, $4, $4)",
    )
    .bind(&collection)
    .bind(&id)
    .bind(&data)
    .bind(now)
    .execute(&pools.writer)
    .await;
    match inserted {
        Ok(_) => json(format!(r#"{{"id":"{id}","data":{data}}}"#)),
        Err(e) => failure(e),
    }
}

/// Seeds `m0`…`m<count-1>` in 10 rooms in one transaction (benchmark set-up only).
async fn seed(State(pools): State<Pools>, Path((collection, count)): Path<(String, u32)>) -> Response {
    let result = async {
        let mut tx = pools.writer.begin().await?;
        for i in 0..count {
            let data = format!(r#"{{"room":"r{}","text":"hello {i}","createdAt":{i}}}"#, i % 10);
            sqlx::query(
                "INSERT OR REPLACE INTO documents (collection, id, data, version, create_time, update_time) \
                 VALUES ($1, $2, $3, 1, 0, 0)",
            )
            .bind(&collection)
            .bind(format!("m{i}"))
            .bind(data)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => failure(e),
    }
}

async fn get_one(State(pools): State<Pools>, Path((collection, id)): Path<(String, String)>) -> Response {
    let row: Result<Option<String>, _> =
        sqlx::query_scalar("SELECT data FROM documents WHERE collection = $1 AND id = $2")
            .bind(&collection)
            .bind(&id)
            .fetch_optional(&pools.readers)
            .await;
    match row {
        Ok(Some(data)) => json(format!(r#"{{"id":"{id}","data":{data}}}"#)),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => failure(e),
    }
}

async fn latest_in_room(State(pools): State<Pools>, Path((collection, room)): Path<(String, String)>) -> Response {
    let rows: Result<Vec<(String, String)>, _> = sqlx::query_as(
        "SELECT id, data FROM documents WHERE collection = $1 AND json_extract(data, '$.room') = $2 \
         ORDER BY json_extract(data, '$.createdAt') DESC LIMIT 20",
    )
    .bind(&collection)
    .bind(&room)
    .fetch_all(&pools.readers)
    .await;
    match rows {
        Ok(rows) => {
            let items: Vec<String> =
                rows.iter().map(|(id, data)| format!(r#"{{"id":"{id}","data":{data}}}"#)).collect();
            json(format!(r#"{{"documents":[{}]}}"#, items.join(",")))
        }
        Err(e) => failure(e),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (file, listen) = match args.as_slice() {
        [_, file, listen] => (file.clone(), listen.clone()),
        _ => return Err("usage: bare-baseline <sqlite file> <listen address>".into()),
    };
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(&file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let writer = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
    for statement in [
        "CREATE TABLE IF NOT EXISTS documents (collection TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, \
         version INTEGER NOT NULL, create_time INTEGER NOT NULL, update_time INTEGER NOT NULL, PRIMARY KEY (collection, id))",
        "CREATE INDEX IF NOT EXISTS documents_room_created ON documents \
         (collection, json_extract(data, '$.room'), json_extract(data, '$.createdAt'))",
    ] {
        sqlx::query(statement).execute(&writer).await?;
    }
    let readers = SqlitePoolOptions::new().max_connections(4).connect_with(options.read_only(true)).await?;
    let app = Router::new()
        .route("/docs/{collection}", post(create))
        .route("/docs/{collection}/{id}", get(get_one))
        .route("/rooms/{collection}/{room}", get(latest_in_room))
        .route("/seed/{collection}/{count}", post(seed))
        .route("/const", get(|| async { axum::Json(serde_json::json!({"ok": true})) }))
        .with_state(Pools { writer, readers });
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

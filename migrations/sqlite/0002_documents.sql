-- Documents: one row per document, keyed by (collection path, id). Times are
-- microseconds since the Unix epoch. `data` is compact JSON text.
CREATE TABLE documents (
    collection  TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    data        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    PRIMARY KEY (collection, id)
);

-- The change log: one row per committed document change, in commit order
-- (`seq` is the position realtime subscribers resume from; triggers are
-- enqueued from the same transaction).
CREATE TABLE changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT    NOT NULL,
    doc_id     TEXT    NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('create', 'update', 'delete')),
    version    INTEGER NOT NULL,
    before     TEXT,
    after      TEXT,
    time       INTEGER NOT NULL
);

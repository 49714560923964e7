-- Documents: one row per document, keyed by (collection path, id). Times are
-- microseconds since the Unix epoch. `data` is JSONB.
CREATE TABLE documents (
    collection  TEXT   NOT NULL COLLATE "C",
    id          TEXT   NOT NULL COLLATE "C",
    data        JSONB  NOT NULL,
    version     BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    PRIMARY KEY (collection, id)
);

-- The change log: one row per committed document change. `seq` is the
-- position realtime subscribers resume from; triggers are enqueued from the
-- same transaction.
CREATE TABLE changes (
    seq        BIGSERIAL PRIMARY KEY,
    collection TEXT   NOT NULL,
    doc_id     TEXT   NOT NULL,
    kind       TEXT   NOT NULL CHECK (kind IN ('create', 'update', 'delete')),
    version    BIGINT NOT NULL,
    before     JSONB,
    after      JSONB,
    time       BIGINT NOT NULL
);

"""Numbered schema migrations. ``PRAGMA user_version`` holds the applied number.

Migrations only ever append: a vault created by any earlier memctl opens by applying the
missing ones in order, each in its own transaction (tested from every earlier version).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memctl.errors import CorruptVault

# Trust levels: a person's own notes > imports by their jobs > what an agent wrote.
TRUST_AGENT = 1
TRUST_IMPORT = 2
TRUST_PERSON = 3
TRUST_NAMES = {"agent": TRUST_AGENT, "import": TRUST_IMPORT, "person": TRUST_PERSON}


def run_script(conn: Any, script: str) -> None:
    """Execute statements one by one inside the caller's transaction.

    (``executescript`` would COMMIT first, breaking a migration's atomicity.)
    """
    import sqlcipher3

    buf = ""
    for line in script.splitlines(keepends=True):
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("--")):
            continue
        buf += line
        if sqlcipher3.complete_statement(buf):
            conn.execute(buf)
            buf = ""
    if buf.strip():
        raise ValueError("incomplete SQL statement at end of script")


def _m1_records(conn: Any) -> None:
    run_script(
        conn,
        """
        CREATE TABLE meta(
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        CREATE TABLE records(
            rowid        INTEGER PRIMARY KEY,
            id           TEXT NOT NULL UNIQUE,          -- ULID
            namespace    TEXT NOT NULL,
            kind         TEXT NOT NULL,
            title        TEXT,
            body         TEXT NOT NULL,
            tags         TEXT NOT NULL DEFAULT '',      -- tags joined by U+001F
            context      TEXT,                          -- retrieval context from the source
            source       TEXT,                          -- URI
            locator      TEXT,                          -- position within the source
            observed_at  TEXT,                          -- ISO-8601 UTC: when it happened
            ingested_at  TEXT NOT NULL,
            updated_at   TEXT NOT NULL,
            actor        TEXT NOT NULL,                 -- cli | cron:<job> | mcp:<client>
            trust        INTEGER NOT NULL,
            plugin       TEXT,
            meta         TEXT,                          -- JSON object from the source
            content_mac  BLOB NOT NULL,                 -- keyed HMAC for dedup
            version      INTEGER NOT NULL DEFAULT 1
        );
        CREATE UNIQUE INDEX records_dedup ON records(namespace, content_mac);
        CREATE INDEX records_source ON records(source, locator);
        CREATE INDEX records_observed ON records(observed_at);
        CREATE INDEX records_ns_ingested ON records(namespace, ingested_at);

        CREATE TABLE record_tags(
            tag          TEXT NOT NULL,
            record_rowid INTEGER NOT NULL REFERENCES records(rowid) ON DELETE CASCADE,
            PRIMARY KEY(tag, record_rowid)
        ) WITHOUT ROWID;
        CREATE INDEX record_tags_rowid ON record_tags(record_rowid);

        CREATE TABLE record_versions(
            record_rowid INTEGER NOT NULL REFERENCES records(rowid) ON DELETE CASCADE,
            version      INTEGER NOT NULL,
            title        TEXT,
            body         TEXT NOT NULL,
            tags         TEXT NOT NULL,
            source       TEXT,
            locator      TEXT,
            observed_at  TEXT,
            replaced_at  TEXT NOT NULL,
            actor        TEXT NOT NULL,
            PRIMARY KEY(record_rowid, version)
        );

        CREATE TABLE record_keys(
            record_rowid INTEGER PRIMARY KEY REFERENCES records(rowid) ON DELETE CASCADE,
            wrapped      BLOB NOT NULL                  -- AES-GCM(dek-wrap key, DEK, aad=id)
        );

        CREATE VIRTUAL TABLE records_fts USING fts5(
            title, body, tags, context,
            content='records', content_rowid='rowid',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        INSERT INTO records_fts(records_fts, rank) VALUES('secure-delete', 1);

        CREATE TRIGGER records_fts_ai AFTER INSERT ON records BEGIN
            INSERT INTO records_fts(rowid, title, body, tags, context)
            VALUES (new.rowid, new.title, new.body, new.tags, new.context);
        END;
        CREATE TRIGGER records_fts_ad AFTER DELETE ON records BEGIN
            INSERT INTO records_fts(records_fts, rowid, title, body, tags, context)
            VALUES ('delete', old.rowid, old.title, old.body, old.tags, old.context);
        END;
        CREATE TRIGGER records_fts_au AFTER UPDATE OF title, body, tags, context ON records BEGIN
            INSERT INTO records_fts(records_fts, rowid, title, body, tags, context)
            VALUES ('delete', old.rowid, old.title, old.body, old.tags, old.context);
            INSERT INTO records_fts(rowid, title, body, tags, context)
            VALUES (new.rowid, new.title, new.body, new.tags, new.context);
        END;

        -- Per-source cursors for incremental ingestion (file fingerprints, message ids, times).
        CREATE TABLE cursors(
            source_key TEXT PRIMARY KEY,
            value      TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        """,
    )


def _m2_erasures(conn: Any) -> None:
    run_script(
        conn,
        """
        -- Erasure receipts: ids and times only (what a person may ask to see), never content.
        CREATE TABLE erasures(
            record_id  TEXT NOT NULL,
            erased_at  TEXT NOT NULL,
            actor      TEXT NOT NULL,
            receipt_id TEXT NOT NULL
        );
        CREATE INDEX erasures_record ON erasures(record_id);
        """,
    )


def _m3_vectors(conn: Any) -> None:
    """The packed vector store (memctl/store/vectors.py, docs/vectors.md)."""
    from memctl.store.vectors import create_tables

    create_tables(conn)


#: Table prefix of the second vector store: each record's own text (title + body) alone, next to
#: the ``vec`` store of the record with its neighbours (memctl/vault/semantic.py).
OWN_VECTORS_PREFIX = "vecown"


def _m4_own_vectors(conn: Any) -> None:
    """A second packed vector store, of records' own text (docs/quality.md, round 2).

    Created empty: an existing vault ranks on its with-context vectors alone until the next
    embedding pass (``memctl model set``, same model: only missing vectors are embedded) fills
    it.
    """
    from memctl.store.vectors import create_tables

    create_tables(conn, prefix=OWN_VECTORS_PREFIX)


MIGRATIONS: list[Callable[[Any], None]] = [
    _m1_records,
    _m2_erasures,
    _m3_vectors,
    _m4_own_vectors,
]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: Any) -> int:
    """Apply missing migrations; returns the schema version now in force."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise CorruptVault(
            f"index.db has schema version {current}, newer than this memctl understands "
            f"({SCHEMA_VERSION}); upgrade memctl"
        )
    for number in range(current + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[number - 1](conn)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return SCHEMA_VERSION

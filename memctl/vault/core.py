"""The vault: one directory, one header, one encrypted index, a journal and an inbox.

:func:`init_vault` creates one, :func:`open_vault` unlocks one and returns a :class:`Vault`,
the object every command and the MCP server work through.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memctl.crypto import aead, kdf
from memctl.crypto.keys import VaultKeys, mac, new_master_key, unwrap_dek
from memctl.errors import (
    MemctlError,
    RecordNotFound,
    UsageError,
    VaultExists,
    VaultNotFound,
)
from memctl.recall.filters import Filters
from memctl.store import db as dbmod
from memctl.store.schema import SCHEMA_VERSION, migrate
from memctl.timeutil import now_iso
from memctl.vault import header as hdr
from memctl.vault.lock import file_lock
from memctl.vault.records import (
    RECORD_COLUMNS,
    Prepared,
    prepare,
    row_to_dict,
)
from memctl.vault.unlock import Credentials, unlock_master

INDEX_NAME = "index.db"
LOCK_NAME = ".lock"
# Records per ingest transaction. The journal commit costs per commit (it rewrites the shard
# trees the batch touches), so larger batches are cheaper per record: 100k records took 38.7 s
# of CPU at 1000, 34.2 s at 5000 (docs/ingest.md). The write lock is held ~1-2 s per batch.
BATCH_SIZE = 5000
MODES = ("keyword", "vector", "hybrid")


def default_vault_path() -> Path:
    """``$MEMCTL_VAULT``, else the platform's user data dir + ``memctl/default``."""
    env = os.environ.get("MEMCTL_VAULT")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("memctl", appauthor=False)) / "default"


def resolve_path(path: str | os.PathLike[str] | None) -> Path:
    return Path(path).expanduser() if path else default_vault_path()


def _mkdir_private(path: Path) -> None:
    path.mkdir(mode=0o700, parents=False, exist_ok=True)
    os.chmod(path, 0o700)


def init_vault(
    path: str | os.PathLike[str] | None = None,
    passphrase: str | bytes | None = None,
    *,
    credentials: Credentials | None = None,
    kdf_memory_mib: int | None = None,
    kdf_iterations: int | None = None,
    model: str | None = "default",
) -> Path:
    """Create a new vault at ``path`` protected by a passphrase. Returns the vault path.

    ``model`` is the embedding model: ``"default"`` (all-MiniLM-L6-v2, shipped with memctl),
    ``"hashing-<dim>"`` (a small deterministic embedder for tests), a local model directory, or
    None for a keyword-only vault (a model can be set later with :meth:`Vault.set_model`).
    Its identity (name, dimension, weights hash) is pinned in the header.
    """
    from memctl.vault.unlock import new_passphrase

    vault = resolve_path(path)
    if (vault / hdr.HEADER_NAME).exists():
        raise VaultExists(f"a vault already exists at {vault}")
    if vault.exists() and any(vault.iterdir()):
        raise VaultExists(f"{vault} exists and is not empty; choose a new directory")
    creds = credentials or Credentials()
    if passphrase is not None:
        creds.passphrase = passphrase.encode() if isinstance(passphrase, str) else passphrase
    secret = new_passphrase(creds)
    params = kdf.new_params(memory_mib=kdf_memory_mib, iterations=kdf_iterations)
    pin = None
    if model:
        from memctl.vault.semantic import pin_for

        pin = pin_for(model)

    vault.parent.mkdir(parents=True, exist_ok=True)
    _mkdir_private(vault)
    master = new_master_key()
    header = hdr.Header(
        vault_id=os.urandom(16), created_at=now_iso(), model=pin, cipher=dbmod.new_vault_cipher()
    )
    keys = VaultKeys(master, header.vault_id)
    _new_inbox_keypair(header, keys)
    header.add_passphrase_slot(master, secret, params)
    header.seal_public(keys)
    try:
        for sub in ("journal", "inbox"):
            _mkdir_private(vault / sub)
        conn = dbmod.connect(vault / INDEX_NAME, keys.sqlcipher, cipher=header.cipher, create=True)
        try:
            migrate(conn)
            _init_meta(conn, header)
        finally:
            conn.close()
        # The header goes last: a vault without one is an unfinished init, safe to delete.
        hdr.write_header(vault, header)
    except BaseException:
        for name in (INDEX_NAME, INDEX_NAME + "-wal", INDEX_NAME + "-shm"):
            (vault / name).unlink(missing_ok=True)
        raise
    vault_obj = Vault(vault, header, keys, slot_id=header.keyslots[0].id)
    try:
        vault_obj._after_init()
    finally:
        vault_obj.close()
    return vault


def _new_inbox_keypair(header: hdr.Header, keys: VaultKeys) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    private = X25519PrivateKey.generate()
    raw_private = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    header.inbox_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    header.inbox_private_wrapped = aead.seal(
        keys.inbox_wrap, raw_private, b"memctl/v1/inbox-private|" + header.vault_id
    )


def _init_meta(conn: Any, header: hdr.Header) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
        [
            ("vault_id", header.vault_id.hex()),
            ("created_at", header.created_at),
            ("format_version", str(hdr.FORMAT_VERSION)),
        ],
    )
    conn.execute("COMMIT")


def open_vault(
    path: str | os.PathLike[str] | None = None,
    passphrase: str | bytes | None = None,
    *,
    credentials: Credentials | None = None,
    key_file: str | os.PathLike[str] | None = None,
    passphrase_file: str | os.PathLike[str] | None = None,
    actor: str = "api",
) -> Vault:
    """Unlock a vault. Use as a context manager: ``with open_vault(p, passphrase=...) as v:``."""
    vault = resolve_path(path)
    if not (vault / hdr.HEADER_NAME).exists():
        if vault.exists() and (vault / INDEX_NAME).exists():
            raise hdr.CorruptVault(f"{hdr.HEADER_NAME}: missing from the vault at {vault}")
        raise VaultNotFound(
            f"no vault at {vault}", hint="create one with `memctl init` or pass --vault PATH"
        )
    header = hdr.read_header(vault)
    creds = credentials or Credentials.from_env()
    if passphrase is not None:
        creds.passphrase = passphrase.encode() if isinstance(passphrase, str) else passphrase
    if key_file is not None:
        creds.key_file = Path(key_file)
    if passphrase_file is not None:
        creds.passphrase_file = Path(passphrase_file)
    master, slot_id = unlock_master(header, creds)
    keys = VaultKeys(master, header.vault_id)
    header.verify_public(keys)
    return Vault(vault, header, keys, slot_id=slot_id, actor=actor)


@dataclass
class IngestSummary:
    added: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def merge(self, other: IngestSummary) -> None:
        self.added += other.added
        self.updated += other.updated
        self.skipped += other.skipped
        self.failed += other.failed
        self.ids += other.ids
        self.errors += other.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "skipped": self.skipped,
            "failed": self.failed,
            "ids": self.ids,
            "errors": self.errors,
        }


class Vault:
    """An unlocked vault. Not thread-safe; one per process or per thread."""

    def __init__(
        self,
        path: Path,
        header: hdr.Header,
        keys: VaultKeys,
        *,
        slot_id: str | None = None,
        actor: str = "api",
    ) -> None:
        self.path = path
        self.header = header
        self.keys = keys
        self.slot_id = slot_id
        self.actor = actor
        self._dedup_key = keys.dedup
        from memctl.vault.history import History

        self.history = History(self)
        self._embedder: Any = None
        self._vectors: Any = None
        self._own_vectors: Any = None
        self._dek_wrap_key = keys.dek_wrap
        self.conn = dbmod.connect(path / INDEX_NAME, keys.sqlcipher, cipher=header.cipher)
        try:
            migrate(self.conn)
            self._finish_pending_erasure()
        except dbmod.db_errors() as exc:
            self.conn.close()
            raise dbmod.translate(exc) from None
        except BaseException:
            self.conn.close()
            raise
        from memctl.ingest.inbox import import_pending

        import_pending(self)  # envelopes sealed by key-less writers (docs/ingest.md); 1 listdir

    def _finish_pending_erasure(self) -> None:
        """An erase that could not become physical (a reader held the WAL) finishes now."""
        from memctl import erase as er

        if er.pending(self):
            er.finish_physical(self, wait_s=0.5)

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        conn, self.conn = getattr(self, "conn", None), None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _after_init(self) -> None:
        """A fresh vault's journal starts with an ``init`` commit."""
        self.history.create()
        self._vault_event(
            "init", {"format_version": hdr.FORMAT_VERSION, "model": self.header.model}
        )

    # -- embeddings ------------------------------------------------------------------------
    @property
    def embedder(self) -> Any:
        """The pinned embedding model, loaded on first use (seconds: torch is heavy).

        Whenever it is in use, with-context vectors an erase dropped are re-embedded first
        (docs/erasure.md; a meta lookup when there are none).
        """
        if self._embedder is None:
            from memctl.vault.semantic import check_mode, load_pinned

            check_mode(self, "vector")
            self._embedder = load_pinned(self.header.model)
        if not self.conn.in_transaction:
            from memctl import erase as er

            er.reembed_pending(self, wait_s=0.2)
        return self._embedder

    @property
    def vectors(self) -> Any:
        """The records' with-context vectors (own text + neighbours; store ``vec``)."""
        if self._vectors is None:
            from memctl.store.vectors import VectorStore

            self._vectors = VectorStore(self.conn, self._model_dim())
        return self._vectors

    @property
    def own_vectors(self) -> Any:
        """The records' own-text vectors (title + body alone; store ``vecown``, migration 4)."""
        if self._own_vectors is None:
            from memctl.store.schema import OWN_VECTORS_PREFIX
            from memctl.store.vectors import VectorStore

            self._own_vectors = VectorStore(self.conn, self._model_dim(), prefix=OWN_VECTORS_PREFIX)
        return self._own_vectors

    def _vector_stores(self) -> tuple[Any, Any]:
        return self.own_vectors, self.vectors

    def _model_dim(self) -> int:
        dim = int((self.header.model or {}).get("dim") or 0)
        if not dim:
            raise UsageError("this vault has no embedding model")
        return dim

    def warm(self) -> None:
        """Load the model and the resident vectors now (the agent calls this)."""
        if self.header.model:
            prepare = getattr(self.embedder, "prepare_queries", None)
            if prepare is not None:  # a long-lived process: worth tracing the query path
                prepare()
            for store in self._vector_stores():
                store.load()

    def set_model(self, spec: str | None, *, batch_size: int = 256, progress: Any = None) -> dict:
        """Choose the embedding model and (re-)embed every record: explicit and resumable.

        A different model first drops every vector (two models' vectors are never mixed), then
        pins the new identity in the header; records without a vector are embedded in batches,
        each its own transaction, so an interrupted run continues where it stopped. The same
        model keeps every vector and embeds only the missing ones (:meth:`embed_missing`): the
        way a vault from before the own-text store (schema 4) gets its own vectors.
        """
        from memctl.journal import Event
        from memctl.vault.semantic import pin_for

        pin = pin_for(spec) if spec else None
        old = self.header.model
        same = bool(
            old and pin and all(old.get(k) == pin.get(k) for k in ("name", "dim", "weights_sha256"))
        )
        if not same:
            with self.lock():
                with self.transaction() as conn:
                    # every vector of the old model goes (zeroed: secure_delete), with its layout
                    from memctl.store.schema import OWN_VECTORS_PREFIX
                    from memctl.store.vectors import DEFAULT_PREFIX

                    for prefix in (DEFAULT_PREFIX, OWN_VECTORS_PREFIX):
                        for table in ("slots", "pages", "meta"):
                            conn.execute(f"DELETE FROM {prefix}_{table}")
                    self.history.commit(
                        conn,
                        "model",
                        [Event("model", None, {"from": old, "to": pin})],
                        actor=self.actor,
                    )
                header = hdr.read_header(self.path)
                header.verify_public(self.keys)
                header.model = pin
                header.seal_public(self.keys)
                hdr.write_header(self.path, header)
                self.header = header
                self._embedder = None
                self._vectors = None
                self._own_vectors = None
        if not pin:
            return {"model": None, "embedded": 0}
        if not same:
            with self.transaction():
                for store in self._vector_stores():
                    store.set_model({k: pin[k] for k in ("name", "dim", "weights_sha256")})
        return {"model": pin, "embedded": self.embed_missing(batch_size, progress=progress)}

    def embed_missing(self, batch_size: int = 256, *, progress: Any = None) -> int:
        """Embed every record that lacks a vector it should have; return how many were done.

        Every record has a with-context vector. A record has an own-text vector too when its
        two texts differ (it has context); one without context has none (the with-context
        vector is its own text, :func:`semantic.embed_pairs`). Batches of ``batch_size``
        records, each its own transaction (resumable). A record that lacks its with-context
        vector gets both texts embedded in one ``encode`` call (one, if it has no context);
        one that lacks only its own-text vector gets that one alone.
        """
        from memctl.recall import fusion
        from memctl.vault.semantic import embed_pairs

        own_store, ctx_store = self._vector_stores()
        own_t, ctx_t = own_store.prefix + "_slots", ctx_store.prefix + "_slots"
        done = 0
        after = 0
        while True:
            # in rowid order, each batch after the previous one: a record is tried once a call
            rows = self.conn.execute(
                "SELECT r.rowid, r.title, r.body, r.context, "
                f"r.rowid IN (SELECT record_rowid FROM {ctx_t}) "
                "FROM records r WHERE r.rowid > ? AND ("
                f"r.rowid NOT IN (SELECT record_rowid FROM {ctx_t}) OR "
                f"(coalesce(r.context, '') != '' AND "
                f"r.rowid NOT IN (SELECT record_rowid FROM {own_t}))) "
                "ORDER BY r.rowid LIMIT ?",
                (after, batch_size),
            ).fetchall()
            if not rows:
                return done
            after = rows[-1][0]
            texts = []
            for _, title, body, context, has_ctx in rows:
                own, ctx = fusion.embedding_texts(title or "", body, [context] if context else [])
                # a record whose with-context vector is stored needs its own text alone
                texts.append((own, own) if has_ctx else (own, ctx))
            vecs = embed_pairs(self.embedder, texts)
            with self.transaction():
                put = {}
                for row, (own_vec, ctx_vec) in zip(rows, vecs, strict=True):
                    # own text alone was embedded: embed_pairs returned it as ctx_vec
                    put[row[0]] = (ctx_vec, None) if row[4] else (own_vec, ctx_vec)
                self._put_vectors(put)
            done += len(rows)
            if progress:
                progress(len(rows))

    def _put_vectors(self, put: dict[int, tuple[Any, Any]]) -> None:
        """Store ``rowid -> (own vector or None, with-context vector or None)``.

        Own None: the record's texts are equal, so it keeps no own-text vector (one left by
        an earlier version of the record is dropped). With-context None: keep the stored one.
        """
        import numpy as np

        own_store, ctx_store = self._vector_stores()
        own = {r: v[0] for r, v in put.items() if v[0] is not None}
        if own:
            own_store.put_many(list(own), np.stack(list(own.values())))
        same = [r for r, v in put.items() if v[0] is None and v[1] is not None]
        if same:
            own_store.delete(same)
        ctx = {r: v[1] for r, v in put.items() if v[1] is not None}
        if ctx:
            ctx_store.put_many(list(ctx), np.stack(list(ctx.values())))

    def _embed_batch(self, batch: list[Prepared]) -> dict[int, tuple[Any, Any]]:
        """(own, with-context) vectors for the items of ``batch`` that will be stored."""
        from memctl.vault.semantic import embed_pairs, fill_context

        texts = fill_context(self, batch)
        fresh = [
            i
            for i, p in enumerate(batch)
            if not self.conn.execute(
                "SELECT 1 FROM records WHERE namespace = ? AND content_mac = ?",
                (p.namespace, p.content_mac),
            ).fetchone()
        ]
        if not fresh:
            return {}
        return dict(zip(fresh, embed_pairs(self.embedder, [texts[i] for i in fresh]), strict=True))

    def _vault_event(self, op: str, payload: dict[str, Any]) -> None:
        """Journal a vault-level change (keys, policy, init) in its own transaction."""
        from memctl.journal import Event

        with self.transaction() as conn:
            self.history.commit(conn, op, [Event(op, None, payload)], actor=self.actor)

    @contextlib.contextmanager
    def lock(self, timeout: float = 30.0) -> Iterator[None]:
        with file_lock(self.path / LOCK_NAME, timeout=timeout):
            yield

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A write transaction (``BEGIN IMMEDIATE``), translated errors, rollback on failure."""
        errors = dbmod.db_errors()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except errors as exc:
            raise dbmod.translate(exc) from None
        self.history.begin()
        try:
            yield self.conn
            self.conn.execute("COMMIT")
            self.history.committed()
        except errors as exc:
            with contextlib.suppress(Exception):
                self.conn.execute("ROLLBACK")
            raise dbmod.translate(exc) from None
        except BaseException:
            with contextlib.suppress(Exception):
                self.conn.execute("ROLLBACK")
            raise

    # -- writing -----------------------------------------------------------------------
    def content_mac(self, namespace: str, text: str) -> bytes:
        return mac(self._dedup_key, b"memctl/v1/content", namespace.encode(), text.encode())

    def ingest(self, text: str, **fields: Any) -> str:
        """Store one memory; returns its id (the existing id if the content is already there)."""
        summary = self.ingest_many([{"text": text, **fields}], strict=True)
        return summary.ids[0]

    @dbmod.guard
    def ingest_many(
        self,
        items: Iterable[dict[str, Any] | str],
        *,
        strict: bool = False,
        batch_size: int = BATCH_SIZE,
        progress: Any = None,
        **defaults: Any,
    ) -> IngestSummary:
        """Store many memories in batches of one transaction each.

        Items are dicts with ``text`` and optional ``title``, ``tags``, ``namespace``, ``kind``,
        ``source``, ``locator``, ``observed_at``, ``context``, ``meta``. ``defaults`` apply to
        every item. With ``strict`` the first invalid item raises; otherwise it is counted as
        failed with a reason (never its text) and the rest go on.
        """
        defaults.setdefault("actor", self.actor)
        summary = IngestSummary()
        batch: list[Prepared] = []
        for index, item in enumerate(items):
            try:
                batch.append(prepare(item, defaults=defaults))
            except MemctlError as exc:
                if strict:
                    raise
                summary.failed += 1
                summary.errors.append(f"item {index}: {exc.message}")
                continue
            if len(batch) >= batch_size:
                summary.merge(self._write_batch(batch))
                if progress:
                    progress(len(batch))
                batch = []
        if batch:
            summary.merge(self._write_batch(batch))
            if progress:
                progress(len(batch))
        return summary

    def _write_batch(self, batch: list[Prepared]) -> IngestSummary:
        """One transaction: set-wise lookups and inserts (:mod:`memctl.vault.writer`), the
        vectors, then one journal commit holding the batch's events."""
        from memctl.vault.writer import BatchWriter

        summary = IngestSummary()
        content_mac = self.content_mac
        for p in batch:
            p.content_mac = content_mac(p.namespace, p.text)
        now = now_iso()
        events: list[Any] = []
        vecs = self._embed_batch(batch) if self.header.model else {}
        with self.transaction() as conn:
            writer = BatchWriter(self, conn, batch, now)
            put: dict[int, Any] = {}  # rowid -> (own, context) vectors; a later item wins
            counts = {"added": 0, "updated": 0, "skipped": 0}
            for i, p in enumerate(batch):
                outcome, rid, rowid, event = writer.write(p)
                counts[outcome] += 1
                summary.ids.append(rid)
                if event is not None:
                    events.append(event)
                    if i in vecs:
                        put[rowid] = vecs[i]
            writer.flush()
            summary.added, summary.updated, summary.skipped = (
                counts["added"],
                counts["updated"],
                counts["skipped"],
            )
            if put:
                self._put_vectors(put)
            self.history.commit(conn, "ingest", events, actor=batch[0].actor)
        return summary

    def _event_payload(self, p: Prepared, version: int) -> dict[str, Any]:
        return {
            "version": version,
            "namespace": p.namespace,
            "kind": p.kind,
            "title": p.title,
            "tags": p.tags,
            "source": p.source,
            "locator": p.locator,
            "observed_at": p.observed_at,
            "plugin": p.plugin,
            "actor": p.actor,
            "trust": p.trust,
            "chars": len(p.text),
        }

    def _new_version(self, conn: Any, rowid: int, version: int, p: Prepared, now: str) -> list[str]:
        """Keep the current version in record_versions, write the new one; return what changed."""
        old = conn.execute(
            "SELECT title, body, tags, source, locator, observed_at, kind, context FROM records "
            "WHERE rowid = ?",
            (rowid,),
        ).fetchone()
        new = (p.title, p.text, p.tags_text, p.source, p.locator, p.observed_at, p.kind, p.context)
        names = ("title", "text", "tags", "source", "locator", "observed_at", "kind", "context")
        changed = [n for n, a, b in zip(names, old, new, strict=True) if a != b]
        conn.execute(
            "INSERT INTO record_versions(record_rowid, version, title, body, tags, source, "
            "locator, observed_at, replaced_at, actor) SELECT rowid, version, title, body, "
            "tags, source, locator, observed_at, ?, ? FROM records WHERE rowid = ?",
            (now, p.actor, rowid),
        )
        conn.execute(
            "UPDATE records SET title=?, body=?, tags=?, context=?, observed_at=?, kind=?, "
            "updated_at=?, actor=?, trust=?, plugin=?, meta=?, content_mac=?, version=? "
            "WHERE rowid=?",
            (
                p.title,
                p.text,
                p.tags_text,
                p.context,
                p.observed_at,
                p.kind,
                now,
                p.actor,
                p.trust,
                p.plugin,
                p.meta_json,
                p.content_mac,
                version + 1,
                rowid,
            ),
        )
        conn.execute("DELETE FROM record_tags WHERE record_rowid = ?", (rowid,))
        conn.executemany(
            "INSERT INTO record_tags(tag, record_rowid) VALUES (?, ?)",
            [(t, rowid) for t in p.tags],
        )
        return changed

    def record_key(self, record_id: str) -> bytes | None:
        """The record's data key (DEK), or None once it has been destroyed."""
        row = self.conn.execute(
            "SELECT k.wrapped FROM record_keys k JOIN records r ON r.rowid = k.record_rowid "
            "WHERE r.id = ?",
            (record_id,),
        ).fetchone()
        return unwrap_dek(self._dek_wrap_key, row[0], record_id) if row else None

    # -- reading -----------------------------------------------------------------------
    @dbmod.guard
    def resolve_id(self, ref: str) -> str:
        """A full id, or a unique prefix of at least 6 characters (like git)."""
        ref = ref.strip().upper()
        if not ref:
            raise UsageError("an empty record id")
        row = self.conn.execute("SELECT id FROM records WHERE id = ?", (ref,)).fetchone()
        if row:
            return row[0]
        if len(ref) >= 6:
            rows = self.conn.execute(
                "SELECT id FROM records WHERE id >= ? AND id < ? LIMIT 2", (ref, ref + "\x7f")
            ).fetchall()
            if len(rows) == 1:
                return rows[0][0]
            if len(rows) > 1:
                raise UsageError(f"id prefix {ref} is ambiguous; give more characters")
        raise RecordNotFound(f"no record with id {ref}")

    @dbmod.guard
    def get(self, record_id: str, *, versions: bool = False) -> dict[str, Any]:
        rid = self.resolve_id(record_id)
        row = self.conn.execute(
            f"SELECT {RECORD_COLUMNS} FROM records r WHERE r.id = ?", (rid,)
        ).fetchone()
        record = _public(row_to_dict(row))
        if versions:
            record["versions"] = [
                {"version": v, "title": t, "text": b, "replaced_at": at, "actor": a}
                for v, t, b, at, a in self.conn.execute(
                    "SELECT v.version, v.title, v.body, v.replaced_at, v.actor "
                    "FROM record_versions v JOIN records r ON r.rowid = v.record_rowid "
                    "WHERE r.id = ? ORDER BY v.version",
                    (rid,),
                )
            ]
        return record

    @dbmod.guard
    def list(
        self, *, limit: int = 20, offset: int = 0, filters: Filters | None = None, **kw: Any
    ) -> list[dict[str, Any]]:
        """Records, newest first."""
        _check_limit(limit)
        filters = filters or Filters.build(**kw)
        where, params = filters.sql("r")
        rows = self.conn.execute(
            f"SELECT {RECORD_COLUMNS} FROM records r WHERE {where} "
            f"ORDER BY r.rowid DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
        return [_public(row_to_dict(r)) for r in rows]

    @dbmod.guard
    def recall(
        self,
        query: str,
        *,
        mode: str | None = None,
        limit: int = 10,
        explain: bool = False,
        filters: Filters | None = None,
        **kw: Any,
    ) -> list[dict[str, Any]]:
        """Search the vault. ``mode``: keyword, vector or hybrid (default: best available).

        Filters (keyword arguments): ``namespace``, ``tags``, ``kind``, ``source``, ``since``,
        ``until``, ``min_trust``. Returns hit dicts with ``id``, ``text``, ``score``,
        ``namespace``, ``tags``, ``source``, ``observed_at``, ``ingested_at``, ``trust``, ...
        """
        from memctl.recall.keyword import keyword_search

        if not isinstance(query, str):
            raise UsageError("query must be a string")
        _check_limit(limit)
        filters = filters or Filters.build(**kw)
        mode = mode or self.default_mode()
        if mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}")
        if mode == "keyword":
            hits = keyword_search(self.conn, query, filters=filters, limit=limit)
        else:
            from memctl.vault import semantic

            semantic.check_mode(self, mode)
            hits = semantic.recall(self, query, mode=mode, filters=filters, limit=limit)
        return [_public(h, explain=explain) for h in hits]

    def default_mode(self) -> str:
        """Hybrid when the vault has an embedding model, else keyword."""
        return "hybrid" if self.header.model else "keyword"

    @dbmod.guard
    def status(self) -> dict[str, Any]:
        counts = self.conn.execute(
            "SELECT namespace, count(*) FROM records GROUP BY namespace ORDER BY namespace"
        ).fetchall()
        files = {}
        total = 0
        for p in sorted(self.path.rglob("*")):
            if p.is_file():
                size = p.stat().st_size
                total += size
                top = p.relative_to(self.path).parts[0]
                files[top] = files.get(top, 0) + size
        return {
            "vault": str(self.path),
            "vault_id": self.header.vault_id.hex(),
            "format_version": self.header.version,
            "schema_version": SCHEMA_VERSION,
            "created_at": self.header.created_at,
            "records": sum(c for _, c in counts),
            "namespaces": {ns: c for ns, c in counts},
            "versions": self.conn.execute("SELECT count(*) FROM record_versions").fetchone()[0],
            "keyslots": len(self.header.keyslots),
            "model": self.header.model,
            "bytes": total,
            "files": files,
        }

    @dbmod.guard
    def integrity_check(self) -> dict[str, Any]:
        """Verify every page's HMAC (SQLCipher) and the b-tree structure (SQLite).

        Raises :class:`CorruptVault` naming the first problem; returns counts when all is well.
        """
        from memctl.errors import CorruptVault

        cipher = [r[0] for r in self.conn.execute("PRAGMA cipher_integrity_check")]
        if cipher:
            raise CorruptVault(f"{INDEX_NAME}: page authentication failed ({cipher[0]})")
        sqlite = [r[0] for r in self.conn.execute("PRAGMA integrity_check")]
        if sqlite != ["ok"]:
            raise CorruptVault(f"{INDEX_NAME}: integrity check failed ({sqlite[0][:200]})")
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        return {"ok": True, "pages": pages}

    # -- erasure and export ---------------------------------------------------------------
    @dbmod.guard
    def erase(
        self,
        ids: list[str] | None = None,
        *,
        query: str | None = None,
        filters: Filters | None = None,
        dry_run: bool = False,
        wait: float | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        """Erase records for good (docs/erasure.md). Returns the receipt.

        Select by ``ids``, by ``query`` (what a keyword recall with the same filters returns),
        or by filters alone (``namespace``, ``tags``, ``source``, ``until``/``before``, ...).
        ``dry_run`` lists what would go and changes nothing.
        """
        from memctl import erase as er

        if "before" in kw:
            kw["until"] = kw.pop("before")
        filters = filters or Filters.build(**kw)
        targets = er.select(self, ids=ids, query=query, filters=filters)
        if dry_run:
            return {
                "dry_run": True,
                "erased": [],
                "would_erase": [
                    _public(row_to_dict(r))
                    for start in range(0, len(targets), 500)
                    for r in self.conn.execute(
                        f"SELECT {RECORD_COLUMNS} FROM records r WHERE r.rowid IN "
                        f"({','.join('?' * len(targets[start : start + 500]))}) ORDER BY r.id",
                        [t[0] for t in targets[start : start + 500]],
                    )
                ],
            }
        return er.erase(
            self, targets, actor=self.actor, wait_s=er.DEFAULT_WAIT_S if wait is None else wait
        )

    def _erase_vectors(self, conn: Any, rowids: list[int]) -> int:
        """Free and zero the records' vector slots (both stores) inside the erase transaction."""
        if not self.header.model:
            return 0
        return sum(int(store.delete(rowids)) for store in self._vector_stores())

    def _drop_context_vectors(self, conn: Any, rowids: list[int]) -> int:
        """Free and zero with-context vectors that embedded erased text (re-embedded later)."""
        if not self.header.model or not rowids:
            return 0
        return int(self.vectors.delete(rowids))

    def _journal_event_count(self, ids: list[str]) -> int:
        """How many of these records' journal events die with their data keys."""
        return self.history.dek_event_count(ids)

    def _journal_erased(self, ids: list[str], **info: Any) -> None:
        """Tombstones under the vault key: that it was erased, when, by whom — no content."""
        from memctl.journal import Event

        payload = {
            "receipt": info.get("receipt_id"),
            "by": info.get("actor"),
        }
        events = [Event("erased", rid, payload, dek=None) for rid in ids]
        self.history.commit(self.conn, "erase", events, actor=info.get("actor") or self.actor)

    def record_key_or_none(self, record_id: str) -> bytes | None:
        try:
            return self.record_key(record_id)
        except MemctlError:
            return None

    # -- audit -------------------------------------------------------------------------------
    @dbmod.guard
    def audit(self, record_id: str) -> dict[str, Any]:
        """A record's provenance: source, actor, plugin, times, every version; or its erasure."""
        rid = record_id.strip().upper()
        try:
            rid = self.resolve_id(rid)
        except RecordNotFound:
            erased = self.conn.execute(
                "SELECT erased_at, actor, receipt_id FROM erasures WHERE record_id = ?", (rid,)
            ).fetchone()
            if not erased:
                raise
            events = self.history.record_events(rid, None)
            return {
                "id": rid,
                "erased": True,
                "erased_at": erased[0],
                "erased_by": erased[1],
                "receipt_id": erased[2],
                "events": [
                    {k: e[k] for k in ("seq", "op", "time", "actor", "readable")}
                    | ({"payload": e["payload"]} if e["op"] == "erased" else {})
                    for e in events
                ],
            }
        record = self.get(rid, versions=True)
        events = self.history.record_events(rid, self.record_key(rid))
        return {
            "id": rid,
            "erased": False,
            "namespace": record["namespace"],
            "source": record["source"],
            "locator": record["locator"],
            "actor": record["actor"],
            "trust": record["trust_name"],
            "plugin": record["plugin"],
            "ingested_at": record["ingested_at"],
            "updated_at": record["updated_at"],
            "version": record["version"],
            "versions": [
                {"version": v["version"], "replaced_at": v["replaced_at"], "actor": v["actor"]}
                for v in record["versions"]
            ],
            "events": events,
        }

    @dbmod.guard
    def backup(self, dest: os.PathLike[str] | str) -> dict[str, Any]:
        """An encrypted, consistent copy of this vault at ``dest`` (docs/backup.md)."""
        from memctl.vault.backup import backup

        return backup(self, Path(dest))

    def audit_log(self, **filters: Any) -> list[dict[str, Any]]:
        return self.history.log(**filters)

    @dbmod.guard
    def audit_verify(self) -> dict[str, Any]:
        return self.history.verify()

    @dbmod.guard
    def audit_repair(self) -> dict[str, Any]:
        return self.history.repair()

    @dbmod.guard
    def export(
        self, *, query: str | None = None, filters: Filters | None = None, **kw: Any
    ) -> Iterator[dict[str, Any]]:
        """Every matching record with metadata, versions and provenance (GDPR Art. 15/20)."""
        filters = filters or Filters.build(**kw)
        if query is not None:
            from memctl import erase as er

            selected = er.select(self, query=query, filters=filters)
            rowids = [r for r, _ in selected]
        else:
            where, params = filters.sql("r")
            rowids = [
                r
                for (r,) in self.conn.execute(
                    f"SELECT r.rowid FROM records r WHERE {where} ORDER BY r.rowid", params
                )
            ]
        for start in range(0, len(rowids), 500):
            chunk = rowids[start : start + 500]
            rows = self.conn.execute(
                f"SELECT {RECORD_COLUMNS} FROM records r WHERE r.rowid IN "
                f"({','.join('?' * len(chunk))}) ORDER BY r.rowid",
                chunk,
            ).fetchall()
            for row in rows:
                record = _public(row_to_dict(row))
                record["versions"] = self.get(record["id"], versions=True)["versions"]
                record["provenance"] = self._provenance_summary(record)
                yield record

    def _provenance_summary(self, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "actor": record["actor"],
            "trust": record["trust_name"],
            "source": record["source"],
            "locator": record["locator"],
            "plugin": record["plugin"],
            "ingested_at": record["ingested_at"],
            "updated_at": record["updated_at"],
        }

    def erased_receipts(self) -> list[dict[str, Any]]:
        from memctl import erase as er

        return er.erased_receipts(self)

    # -- keys ----------------------------------------------------------------------------
    def change_passphrase(
        self, new_passphrase: bytes, *, memory_mib: int | None = None, iterations: int | None = None
    ) -> str:
        """Re-wrap the master key under a new passphrase. Data is not re-encrypted.

        Replaces the passphrase slot used to unlock (or, if unlocked with a key file, every
        passphrase slot). Returns the new slot id.
        """
        if not new_passphrase:
            raise UsageError("an empty passphrase is not allowed")
        with self.lock():
            header = hdr.read_header(self.path)
            header.verify_public(self.keys)
            used = next((s for s in header.keyslots if s.id == self.slot_id), None)
            if used is not None and used.type == "passphrase":
                drop = {used.id}
            else:
                drop = {s.id for s in header.keyslots if s.type == "passphrase"}
            params = kdf.new_params(memory_mib=memory_mib, iterations=iterations)
            if used is not None and used.kdf is not None and memory_mib is None:
                params = kdf.KdfParams(**{**used.kdf.__dict__, "salt": os.urandom(kdf.SALT_LEN)})
            slot = header.add_passphrase_slot(self.keys.master, new_passphrase, params)
            header.keyslots = [s for s in header.keyslots if s.id not in drop]
            hdr.write_header(self.path, header)
            self.header = header
            self.slot_id = slot.id
        self._vault_event("passwd", {"slot": slot.id, "replaced": sorted(drop)})
        return slot.id

    def add_key_file(self, key_path: Path, *, label: str = "key file") -> str:
        """Create a new key file at ``key_path`` (0600, never overwritten) and a slot for it."""
        from memctl.vault.unlock import new_keyfile_secret

        secret, content = new_keyfile_secret()
        with self.lock():
            header = hdr.read_header(self.path)
            header.verify_public(self.keys)
            try:
                fd = os.open(key_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                raise UsageError(
                    f"{key_path} already exists; memctl never overwrites a key file"
                ) from None
            except OSError as exc:
                raise UsageError(f"cannot create {key_path}: {exc.strerror}") from None
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(content)
                    fh.flush()
                    os.fsync(fh.fileno())
                slot = header.add_keyfile_slot(self.keys.master, secret, label=label)
                hdr.write_header(self.path, header)
            except BaseException:
                key_path.unlink(missing_ok=True)
                raise
            self.header = header
        self._vault_event("key-add", {"slot": slot.id, "type": "keyfile"})
        return slot.id

    def list_keyslots(self) -> list[dict[str, Any]]:
        return [
            {
                "id": s.id,
                "type": s.type,
                "label": s.label,
                "created_at": s.created_at,
                "kdf": s.kdf.name if s.kdf else "hkdf",
                "in_use": s.id == self.slot_id,
            }
            for s in self.header.keyslots
        ]

    def remove_keyslot(self, slot_id: str) -> None:
        with self.lock():
            header = hdr.read_header(self.path)
            header.verify_public(self.keys)
            if slot_id not in {s.id for s in header.keyslots}:
                raise UsageError(f"no keyslot {slot_id} (see `memctl key list`)")
            if len(header.keyslots) == 1:
                raise UsageError("refusing to remove the last keyslot: the vault would be lost")
            header.keyslots = [s for s in header.keyslots if s.id != slot_id]
            hdr.write_header(self.path, header)
            self.header = header
        self._vault_event("key-remove", {"slot": slot_id})


def _check_limit(limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
        raise UsageError("limit must be between 1 and 10000")


def _public(d: dict[str, Any], *, explain: bool = False) -> dict[str, Any]:
    d = {k: v for k, v in d.items() if not k.startswith("_")}
    if not explain:
        d.pop("explain", None)
    return d


def new_session_token() -> str:
    return secrets.token_hex(8)

"""The journal: a bare git repository of encrypted, signed events, one commit per state change.

Why git: anyone can copy, clone, ``git log`` and back it up with tools they trust, and its
content-addressed history is a natural append-only log. What git does not give (authenticity,
confidentiality) comes from the signed manifest and the encrypted blobs (``events.py``).

A commit only rewrites the trees on the paths it touches (``build.build_tree``), so its cost does
not grow with the number of records in the vault. Its objects are computed in memory and written
by ``store.py``: one packfile for a big commit, a few loose files for a small one, fsynced as a
batch rather than one by one; ``maintain.py`` keeps the number of packs small.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pygit2

from memctl.errors import (
    AuthenticationError,
    CorruptVault,
    MemctlError,
    NoSpace,
    UsageError,
    VaultNotFound,
)

from . import events as ev
from . import gitobj, store
from .build import Staged, TreeReader, build_tree, nest
from .model import (
    FORMAT,
    KEY_DEK,
    KEY_VAULT,
    MANIFEST,
    REF,
    SIGNATURE,
    CommitInfo,
    DecodedEvent,
    Event,
    JournalHeadMoved,
    JournalKeys,
    VerifyReport,
    check_actor,
    check_op,
    check_record_id,
    commit_message,
    fmt_time,
    parse_record_name,
    parse_time,
    record_dir,
    record_event_path,
    utc,
    vault_event_path,
)

if TYPE_CHECKING:
    from .maintain import MaintainReport

_CONFIG_KEY = "memctl.journalformat"
_UNSET: Any = object()
_BLOB = pygit2.GIT_FILEMODE_BLOB
_IDENT = b"memctl <memctl@invalid>"  # author and committer of every commit (docs §2)
# Commits with at least this many events are written as one packfile, smaller ones as loose
# objects. Measured (docs/journal.md §10): a pack is cheaper at every size, most of all when
# durable (5 fsyncs instead of ~22 for a one-event commit), so every commit is packed.
PACK_MIN_EVENTS = 1
MAX_PACKS = 64  # more packs than this and a commit consolidates them (Journal.maintain)
MAX_LOOSE = 6700  # estimated loose objects above which they are packed (git's gc.auto)
_BACKOFF = 16  # commits without automatic housekeeping after it failed
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Manifest:
    """A commit's signed manifest, signature checked."""

    body: dict[str, Any]
    raw: bytes
    signature: bytes

    @property
    def seq(self) -> int:
        return int(self.body["seq"])


class Journal:
    """An open journal. Not thread-safe; each process opens its own."""

    def __init__(self, repo: pygit2.Repository, keys: JournalKeys, *, durable: bool = True) -> None:
        self._repo = repo
        self._keys = keys
        self._signer = ev.Signer(keys.sign_seed)
        self._public = self._signer.public
        self._head_cache: tuple[str, Manifest] | None = None
        self._trees: dict[bytes, gitobj.TreeEntries] = {}  # parsed upper trees, by id
        self._packs_seen: tuple[int, frozenset[str]] = (-1, frozenset())  # objects/pack state
        self._indexes_ok: set[str] = set()  # pack indexes that passed gitobj.idx_intact
        #: fsync what each commit writes (objects, then the head). Off only for tests/benchmarks.
        self.durable = durable
        #: a commit with at least this many events is written as one packfile, else loose.
        self.pack_min_events = PACK_MIN_EVENTS
        #: after a commit, consolidate packs past this many and loose objects past MAX_LOOSE.
        self.auto_maintain = True
        self.max_packs = MAX_PACKS
        self.max_loose = MAX_LOOSE
        self._skip_maintenance = 0  # commits left before housekeeping is tried again
        self._maintain_due: bool | None = None  # deferred housekeeping (see maintain_if_due)

    def __repr__(self) -> str:
        return f"Journal({self.path!s})"

    # ---- opening ------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], keys: JournalKeys, *, durable: bool = True
    ) -> Journal:
        """Create an empty bare repository at ``path`` (which must not exist or be empty).

        ``durable=False`` skips every fsync (tests and benchmarks only).
        """
        p = Path(path)
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise UsageError(f"cannot create a journal at {p}: it exists and is not empty")
        repo = pygit2.init_repository(str(p), bare=True, initial_head="main")
        repo.config[_CONFIG_KEY] = FORMAT
        repo.config["core.logAllRefUpdates"] = "false"
        repo.config["gc.auto"] = "0"  # git never packs on its own (Journal.maintain does)
        # Hooks never run (libgit2 and memctl do not run them), but git's samples are noise.
        shutil.rmtree(p / "hooks", ignore_errors=True)
        if durable:  # libgit2 wrote these without fsync; commits rely on them being there
            for name in ("config", "HEAD"):
                fd = os.open(p / name, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            for d in (p / "refs" / "heads", p / "refs", p / "objects" / "pack", p / "objects", p):
                store.fsync_dir(d)
            store.fsync_dir(p.resolve().parent)
        return cls(repo, keys, durable=durable)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], keys: JournalKeys, *, durable: bool = True
    ) -> Journal:
        """Open an existing journal; AuthenticationError if its head was not signed by ``keys``.

        ``durable=False`` skips every fsync (tests and benchmarks only).
        """
        p = Path(path)
        try:
            repo = pygit2.Repository(str(p), pygit2.enums.RepositoryOpenFlag.NO_SEARCH)
        except pygit2.GitError:
            raise VaultNotFound(f"no journal at {p}") from None
        if not repo.is_bare or _CONFIG_KEY not in repo.config:
            raise CorruptVault(f"{p} is not a memctl journal")
        if repo.config[_CONFIG_KEY] != FORMAT:
            raise CorruptVault(f"{p}: unsupported journal format")
        journal = cls(repo, keys, durable=durable)
        journal._head_manifest()  # checks the head's signature
        return journal

    @property
    def path(self) -> Path:
        return Path(self._repo.path)

    @property
    def repo(self) -> pygit2.Repository:
        """The underlying pygit2 repository (for tests and tools; do not write through it)."""
        return self._repo

    # ---- head ---------------------------------------------------------------------------

    def _ref(self) -> pygit2.Reference | None:
        self._drop_deleted_packs()
        try:
            return self._repo.lookup_reference(REF)
        except KeyError:
            return None

    def _drop_deleted_packs(self) -> int:
        """Reopen the repository when packs it may hold open were deleted (a consolidation).

        libgit2 keeps a handle on every pack it has read from until the repository is freed;
        in a long-lived process (the agent) those of deleted packs would pile up. One stat per
        call; the directory is listed only when it changed. Returns the number of packs.

        Every pack index is checked (layout and checksum) the first time it is listed, before
        libgit2 can read it (:func:`_check_indexes`): CorruptVault if one is damaged.
        """
        pack_dir = os.path.join(self._repo.path, "objects", "pack")
        try:
            mtime = os.stat(pack_dir).st_mtime_ns
        except FileNotFoundError:
            return 0
        last_mtime, last_names = self._packs_seen
        if mtime != last_mtime:
            listing = os.listdir(pack_dir)
            new = [n for n in listing if n.endswith(".idx") and n not in self._indexes_ok]
            self._indexes_ok.update(_check_indexes(pack_dir, new))
            names = frozenset(n for n in listing if n.endswith(".pack"))
            self._packs_seen = (mtime, names)
            if last_names - names:
                self._reopen()
        return len(self._packs_seen[1])

    def _reopen(self) -> None:
        self._repo = pygit2.Repository(str(self.path), pygit2.enums.RepositoryOpenFlag.NO_SEARCH)

    def head(self) -> str | None:
        """The head commit id (hex), or None for an empty journal."""
        ref = self._ref()
        return str(ref.target) if ref is not None else None

    def _head_manifest(self) -> Manifest | None:
        head = self.head()
        if head is None:
            return None
        if self._head_cache is None or self._head_cache[0] != head:
            self._head_cache = (head, self.manifest(head))
        return self._head_cache[1]

    def seq(self) -> int:
        """The journal sequence number: 0 when empty, +1 per commit, signed in each manifest."""
        m = self._head_manifest()
        return m.seq if m is not None else 0

    def head_state(self) -> dict[str, Any] | None:
        """The ``db_state`` the head commit carries (compare with what the database recorded)."""
        m = self._head_manifest()
        if m is None:
            return None
        _actor, state = ev.open_meta(self._keys.vault_key, m.seq, m.body["prev"], m.body["sealed"])
        return state

    def manifest(self, commit: str) -> Manifest:
        """Read a commit's manifest, checking its signature (AuthenticationError if bad)."""
        c = _obj(self._repo, commit, "commit")
        raw, sig = _manifest_blobs(c)
        if raw is None or sig is None:
            raise CorruptVault(f"journal commit {c.id}: no manifest")
        if not ev.signature_ok(self._public, raw, sig):
            ev.raise_bad_signature(str(c.id))
        return Manifest(ev.decode_manifest(raw), raw, sig)

    # ---- writing ------------------------------------------------------------------------

    def commit(
        self,
        op: str,
        events: list[Event],
        *,
        actor: str,
        db_state: dict[str, Any] | None = None,
        when: datetime | None = None,
        expect_head: str | None = _UNSET,
    ) -> str:
        """Append one commit holding ``events``; return its id (hex).

        Raises JournalHeadMoved when another writer moved the head meanwhile (or when it is not
        ``expect_head``, if given): nothing is then committed and the caller may retry.
        """
        check_op(op)
        check_actor(actor)
        payloads = _check_events(events)  # all of them before anything is written
        try:
            ev.dumps(db_state)
        except (TypeError, ValueError):
            raise UsageError("journal db_state must be JSON-serialisable") from None
        t = utc(when)
        time = fmt_time(t)
        repo = self._repo
        ref = self._ref()  # its loaded target is the expected old value of the CAS below
        old = ref.target if ref is not None else None
        if expect_head is not _UNSET and expect_head != (str(old) if old else None):
            raise JournalHeadMoved("the journal head is not the one expected; reload and retry")
        if old is not None:
            cached = self._head_cache
            parent = cached[1] if cached and cached[0] == str(old) else self.manifest(str(old))
            seq, prev = parent.seq + 1, parent.signature.hex()
            root: bytes | None = _obj(repo, old, "commit").tree_id.raw
        else:
            seq, prev, root = 1, None, None

        staged = Staged()
        reader = TreeReader(repo, self._trees)
        new: dict[str, bytes] = {}
        listed: list[dict[str, Any]] = []
        next_rseq: dict[str, int] = {}
        n_vault = 0
        bodies = ev.EventBodies(actor, op, seq, time)
        vault_key, mac_key = self._keys.vault_key, self._keys.mac_key
        for e, payload in zip(events, payloads, strict=True):
            if e.record_id is None:
                path = vault_event_path(t, seq, n_vault, e.op)
                n_vault += 1
            else:
                rid = e.record_id
                if rid not in next_rseq:
                    next_rseq[rid] = reader.last_rseq(root, rid) + 1
                path = record_event_path(rid, next_rseq[rid], seq, e.op)
                next_rseq[rid] += 1
            key_class = KEY_DEK if e.dek is not None else KEY_VAULT
            key = e.dek if e.dek is not None else vault_key
            body = bodies.encode(e.op, e.record_id, payload)
            blob = ev.seal_event_json(key, key_class, path, body)
            oid = staged.add(gitobj.BLOB, blob)
            new[path] = oid
            listed.append(
                {
                    "path": path,
                    "blob": oid.hex(),
                    "mac": ev.blob_mac(mac_key, path, blob),
                    "op": e.op,
                    "record": e.record_id,
                    "key": key_class,
                }
            )

        sealed = ev.seal_meta(self._keys.vault_key, seq, prev, actor, db_state)
        manifest = {
            "format": FORMAT,
            "seq": seq,
            "prev": prev,
            "op": op,
            "time": time,
            "sealed": sealed,
            "events": listed,
        }
        raw = ev.encode_manifest(manifest)
        sig = self._signer.sign(raw)
        new[MANIFEST] = staged.add(gitobj.BLOB, raw)
        new[SIGNATURE] = staged.add(gitobj.BLOB, sig)
        replace = {MANIFEST.encode(), SIGNATURE.encode()}
        tree = build_tree(reader, staged, root, nest(new), replace=replace)
        n_records = len({e.record_id for e in events if e.record_id is not None})
        message = commit_message(op, seq, time, len(events), n_records)
        parents = [old.raw] if old is not None else []
        commit = gitobj.encode_commit(
            tree, parents, _IDENT, int(t.timestamp()), message.encode("utf-8")
        )
        oid = staged.add(gitobj.COMMIT, commit)
        packed = len(events) >= self.pack_min_events
        self._write_objects(staged, packed)
        _advance(self.path, str(old) if old else None, oid.hex(), durable=self.durable)
        head = oid.hex()
        self._head_cache = (head, Manifest(manifest, raw, sig))
        if self.auto_maintain:
            self._maybe_maintain(packed)
        else:
            self._maintain_due = packed or bool(self._maintain_due)
        return head

    def maintain_if_due(self) -> None:
        """Run the housekeeping that commits deferred (``auto_maintain`` off). Never raises.

        The vault turns ``auto_maintain`` off and calls this after its database COMMIT, so
        packing never runs while a write transaction holds the crash window open.
        """
        if self._maintain_due is None:
            return
        packed, self._maintain_due = self._maintain_due, None
        self._maybe_maintain(packed)

    def ancestor(self, steps: int) -> str | None:
        """The commit ``steps`` first parents behind the head (0 = the head), None past the root."""
        oid = self.head()
        for _ in range(steps):
            if oid is None:
                return None
            c = _obj(self._repo, oid, "commit")
            oid = str(c.parent_ids[0]) if c.parent_ids else None
        return oid

    def _write_objects(self, staged: Staged, packed: bool) -> None:
        """Write the commit's objects durably; a pack is checked readable before it is used."""
        try:
            if packed:
                store.write_pack(self.path, staged.items(), durable=self.durable)
            else:
                store.write_loose(self.path, staged.items(), durable=self.durable)
        except OSError as exc:
            raise _write_failed("the commit's objects", exc) from exc
        if packed:
            # libgit2 rescans objects/pack when an object is missing: this makes this
            # process see the new pack before the head may name anything in it.
            last = next(reversed(staged.objects))
            if not self._repo.odb.exists(pygit2.Oid(raw=last)):
                raise CorruptVault("journal: a freshly written pack is not readable")

    def _maybe_maintain(self, packed: bool) -> None:
        """Cheap checks after a commit; consolidation when a threshold is crossed.

        Never raises: the commit is already durable and the head moved, so a failed
        housekeeping step must not look like a failed commit. It is tried again some commits
        later.
        """
        from . import maintain

        if self._skip_maintenance > 0:
            self._skip_maintenance -= 1
            return
        try:
            if packed:
                due = self._drop_deleted_packs() > self.max_packs  # lists the new pack once
            else:
                due = maintain.estimate_loose(self.path) > self.max_loose
            if due:
                self.maintain()
        except (OSError, MemctlError, pygit2.GitError, ValueError, zlib.error) as exc:
            # e.g. a damaged pack (verify names it): do not pay for a doomed merge every commit
            self._skip_maintenance = _BACKOFF
            _log.warning("journal maintenance skipped: %s", type(exc).__name__)

    # ---- reading ------------------------------------------------------------------------

    def log(
        self,
        *,
        since: datetime | None = None,
        actor: str | None = None,
        op: str | None = None,
        limit: int | None = None,
    ) -> Iterator[CommitInfo]:
        """Commits newest first (first-parent), each manifest's signature checked.

        ``actor`` matches exactly, or as a prefix when it ends with ``:`` (``"mcp:"``).
        ``since`` keeps commits at or after that time. Use :meth:`verify` for the full check.
        """
        since_t = utc(since) if since is not None else None
        oid = self.head()
        shown = 0
        while oid is not None and (limit is None or shown < limit):
            c = _obj(self._repo, oid, "commit")
            m = self.manifest(oid)
            b = m.body
            who, state = ev.open_meta(self._keys.vault_key, m.seq, b["prev"], b["sealed"])
            keep = (
                (op is None or b["op"] == op)
                and (since_t is None or parse_time(b["time"]) >= since_t)
                and (
                    actor is None or who == actor or (actor.endswith(":") and who.startswith(actor))
                )
            )
            if keep:
                shown += 1
                yield _commit_info(oid, m, who, state)
            oid = str(c.parent_ids[0]) if c.parent_ids else None

    def record_events(self, record_id: str, dek: bytes | None) -> list[DecodedEvent]:
        """Every event of one record at the head, in order; undecryptable ones marked unreadable.

        Events under the vault key (tombstones) are always readable; the others need ``dek``.
        """
        check_record_id(record_id)
        head = self.head()
        if head is None:
            return []
        try:
            folder: Any = _obj(self._repo, head, "commit").tree[record_dir(record_id)]
        except KeyError:
            return []
        out: list[DecodedEvent] = []
        for entry in folder:
            fields = parse_record_name(entry.name)
            if fields is None or entry.filemode != _BLOB:
                raise CorruptVault(f"journal: unexpected entry under {record_dir(record_id)}")
            rseq, jseq, eop = fields
            path = f"{record_dir(record_id)}/{entry.name}"
            data = _obj(self._repo, entry.id, "event blob").data
            key_class = ev.blob_key_class(data)
            key = self._keys.vault_key if key_class == KEY_VAULT else dek
            base = DecodedEvent(record_id, rseq, jseq, eop, path, key_class, readable=False)
            if key is None or len(key) != 32:
                out.append(base)
                continue
            try:
                body = ev.open_event(key, path, data)
            except AuthenticationError:
                out.append(base)
                continue
            out.append(
                replace(
                    base,
                    readable=True,
                    payload=body.get("payload"),
                    time=body.get("time"),
                    actor=body.get("actor"),
                    commit_op=body.get("commit_op"),
                )
            )
        out.sort(key=lambda d: d.seq)
        return out

    def vault_events(self, commit: str) -> list[dict[str, Any]]:
        """The vault-level events a commit added, decrypted (they are under the vault key)."""
        m = self.manifest(commit)
        tree = _obj(self._repo, commit, "commit").tree
        out: list[dict[str, Any]] = []
        for entry in m.body.get("events", []):
            if entry.get("record") is not None:
                continue
            path = entry["path"]
            try:
                blob = tree[path]
            except KeyError:
                raise CorruptVault(f"journal: commit {commit} lacks its event {path}") from None
            body = ev.open_event(self._keys.vault_key, path, _obj(self._repo, blob.id, "blob").data)
            out.append({"op": body.get("op"), "payload": body.get("payload"), "path": path})
        return out

    def verify(
        self,
        *,
        deks: Callable[[str], bytes | None] | None = None,
        max_problems: int = 20,
    ) -> VerifyReport:
        """Check the whole first-parent history; see :func:`memctl.journal.verify.verify`."""
        from .verify import verify

        return verify(self, deks=deks, max_problems=max_problems)

    # ---- maintenance --------------------------------------------------------------------

    def maintain(self, *, force: bool = False) -> MaintainReport:
        """Pack loose objects and roll packs up (see ``maintain.py``); safe while others work.

        Commits call this on their own when there are more than ``max_packs`` packs or about
        ``max_loose`` loose objects; ``force=True`` packs everything into one pack now.
        """
        from . import maintain

        report = maintain.maintain(
            self.path,
            max_packs=self.max_packs,
            max_loose=self.max_loose,
            force=force,
            durable=self.durable,
        )
        if report.removed or report.loose_packed:
            self._reopen()  # drop libgit2's handles on what was deleted
        return report

    def gc(self) -> None:
        """Pack loose objects with the git binary (``git gc --quiet``); safe while idle."""
        git = shutil.which("git")
        if git is None:
            raise MemctlError("git is not installed; cannot pack the journal")
        done = subprocess.run(
            [git, "--git-dir", str(self.path), "gc", "--quiet"], capture_output=True, check=False
        )
        if done.returncode != 0:
            raise MemctlError("git gc failed on the journal")

    @property
    def keys(self) -> JournalKeys:
        return self._keys


# ---- helpers ----------------------------------------------------------------------------


def _check_events(events: list[Event]) -> list[bytes]:
    """Check every event; return each payload's JSON (encoded once, spliced into its body)."""
    if not events:
        raise UsageError("a journal commit needs at least one event")
    out: list[bytes] = []
    for e in events:
        check_op(e.op)
        if e.record_id is None and e.dek is not None:
            raise UsageError("vault-level journal events take no DEK")
        if e.record_id is not None:
            check_record_id(e.record_id)
        if e.dek is not None and len(e.dek) != 32:
            raise UsageError("a record data key must be 32 bytes")
        if not isinstance(e.payload, dict):
            raise UsageError("journal event payloads must be JSON objects (dicts)")
        try:
            out.append(ev.dumps(e.payload))
        except (TypeError, ValueError):
            raise UsageError("journal event payloads must be JSON-serialisable") from None
    return out


def _check_indexes(pack_dir: str, names: list[str]) -> list[str]:
    """The names of the given pack indexes, each checked by ``gitobj.idx_intact`` (libgit2
    trusts an index: a damaged one made it read out of bounds and crash). CorruptVault names
    the first damaged one; one deleted meanwhile (a consolidation) is skipped."""
    ok = []
    for name in names:
        try:
            with open(os.path.join(pack_dir, name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        if not gitobj.idx_intact(data):
            raise CorruptVault(f"journal: pack index {name} is damaged")
        ok.append(name)
    return ok


def _obj(repo: pygit2.Repository, oid: Any, what: str) -> Any:
    """Load an object; a missing or unreadable one means a damaged journal, not a bug."""
    try:
        return repo[oid]
    except (KeyError, ValueError, pygit2.GitError):
        raise CorruptVault(f"journal: {what} object {oid} is missing or unreadable") from None


def _manifest_blobs(commit: pygit2.Commit) -> tuple[bytes | None, bytes | None]:
    out: list[bytes | None] = []
    for name in (MANIFEST, SIGNATURE):
        try:  # a damaged object fails here, when its data is read, not at the lookup
            entry = commit.tree[name]
            out.append(entry.data if isinstance(entry, pygit2.Blob) else None)
        except (KeyError, ValueError, pygit2.GitError):
            out.append(None)
    return out[0], out[1]


def _commit_info(oid: str, m: Manifest, actor: str, state: Any) -> CommitInfo:
    records: dict[str, None] = {}
    ops: dict[str, int] = {}
    for e in m.body["events"]:
        if e["record"] is not None:
            records.setdefault(e["record"], None)
        ops[e["op"]] = ops.get(e["op"], 0) + 1
    return CommitInfo(
        commit=oid,
        seq=m.seq,
        op=m.body["op"],
        time=m.body["time"],
        actor=actor,
        n_events=len(m.body["events"]),
        record_ids=tuple(records),
        event_ops=ops,
        db_state=state,
    )


def _last_rseq(root: pygit2.Tree | None, record_id: str) -> int:
    """The highest per-record event number so far (0 if none): reads one small tree."""
    if root is None:
        return 0
    try:
        folder: Any = root[record_dir(record_id)]
    except KeyError:
        return 0
    best = 0
    for entry in folder:
        fields = parse_record_name(entry.name)
        if fields is not None:
            best = max(best, fields[0])
    return best


def _advance(gitdir: Path, old: str | None, new: str, *, durable: bool) -> None:
    """Compare-and-swap the branch from ``old`` to ``new``: the moment a commit happens."""
    try:
        store.update_ref(gitdir, REF, old, new, durable=durable)
    except store.RefMismatch as exc:
        raise _moved() from exc
    except OSError as exc:
        raise _write_failed("the head reference", exc) from exc


def _write_failed(what: str, exc: OSError) -> MemctlError:
    """NoSpace when the disk is full (exit 11); otherwise a plain error naming what failed."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"journal: disk full, could not write {what}")
    return MemctlError(f"journal: could not write {what} ({exc.strerror or type(exc).__name__})")


def _moved() -> JournalHeadMoved:
    return JournalHeadMoved(
        "the journal head moved while committing (another writer?); nothing was committed",
        hint="retry under the vault write lock",
    )

"""The journal's data types, names and path layout — no I/O and no heavy imports.

Kept apart from the git and crypto code so the CLI can import the types cheaply, and so the
on-disk naming rules (``docs/journal.md``) live in one place that readers can check against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from memctl.errors import AuthenticationError, UsageError, VaultBusy

FORMAT = "memctl-journal/1"
REF = "refs/heads/main"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
ROOT_DIRS = ("r", "v")  # record events, vault events
ROOT_NAMES = frozenset({*ROOT_DIRS, MANIFEST, SIGNATURE})

# Record ids are ULIDs: 26 Crockford base32 characters, 10 of time then 16 random.
_ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
# Operation names are short machine words, so no free text can ride in a path or a message.
_OP = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_RECORD_NAME = re.compile(r"^([0-9]{6,})\.([0-9]{10,})\.([a-z][a-z0-9_-]{0,31})$")
_VAULT_NAME = re.compile(r"^([0-9]{10,})\.([0-9]{4,})\.([a-z][a-z0-9_-]{0,31})$")
_TIME_FMT = "%Y-%m-%dT%H:%M:%S.%fZ"
MAX_ACTOR_LEN = 256

KEY_DEK = "dek"  # the event is encrypted under its record's data key
KEY_VAULT = "vault"  # the event is encrypted under the vault journal key


class JournalHeadMoved(VaultBusy):
    """Another writer committed between our read of the head and our ref update."""


@dataclass(frozen=True)
class JournalKeys:
    """Secrets the journal needs, all derived by the caller from the vault's master key.

    ``sign_seed`` is an Ed25519 seed (32 bytes), ``mac_key`` keys the per-blob HMAC (>= 32
    bytes), ``vault_key`` encrypts vault-level events and commit metadata (32 bytes).
    """

    sign_seed: bytes = field(repr=False)
    mac_key: bytes = field(repr=False)
    vault_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.sign_seed) != 32 or len(self.vault_key) != 32 or len(self.mac_key) < 32:
            raise UsageError(
                "journal keys: sign_seed and vault_key must be 32 bytes, mac_key >= 32"
            )


@dataclass(frozen=True)
class Event:
    """One event to commit.

    ``record_id`` None makes a vault-level event (stored under ``v/``, encrypted under the vault
    key; ``dek`` must be None). With a ``record_id`` the event is stored under ``r/`` and
    encrypted under ``dek``; ``dek=None`` there means "encrypt under the vault key" — meant for
    the tombstone of an erased record, which must stay readable after its DEK is destroyed and
    so must carry no content.
    """

    op: str
    record_id: str | None
    payload: dict[str, Any]
    dek: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DecodedEvent:
    """A record event read back. ``readable`` is False when the key is missing or wrong."""

    record_id: str
    seq: int  # per-record event number, 1-based
    journal_seq: int  # the journal commit sequence number that added it
    op: str
    path: str
    key: str  # KEY_DEK or KEY_VAULT
    readable: bool
    payload: dict[str, Any] | None = None
    time: str | None = None
    actor: str | None = None
    commit_op: str | None = None


@dataclass(frozen=True)
class CommitInfo:
    """One journal commit as shown by :meth:`Journal.log` (decoded from its signed manifest)."""

    commit: str
    seq: int
    op: str
    time: str
    actor: str
    n_events: int
    record_ids: tuple[str, ...]
    event_ops: dict[str, int]
    db_state: dict[str, Any] | None


@dataclass(frozen=True)
class Problem:
    """The first thing wrong with one commit. Names the commit and path, never content."""

    commit: str
    seq: int | None
    path: str | None
    reason: str

    def __str__(self) -> str:
        where = f" path {self.path}" if self.path else ""
        seq = f" (seq {self.seq})" if self.seq is not None else ""
        return f"commit {self.commit}{seq}{where}: {self.reason}"


@dataclass
class VerifyReport:
    """What :meth:`Journal.verify` found. ``problems`` is oldest first, capped."""

    ok: bool
    head: str | None
    seq: int
    commits_checked: int = 0
    events_checked: int = 0
    events_decrypted: int = 0
    events_unreadable: int = 0  # record events whose DEK the caller did not have (shredded)
    problems: list[Problem] = field(default_factory=list)

    @property
    def first_problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def raise_if_bad(self) -> None:
        if self.problems:
            raise AuthenticationError(f"journal verification failed: {self.problems[0]}")


# ---- validation -------------------------------------------------------------------------


def check_op(op: str) -> str:
    if not isinstance(op, str) or not _OP.match(op):
        raise UsageError("journal operation names are 1-32 chars of a-z, 0-9, '_' or '-'")
    return op


def check_record_id(record_id: str) -> str:
    if not isinstance(record_id, str) or not _ULID.match(record_id):
        raise UsageError("journal record ids must be canonical ULIDs (26 Crockford base32 chars)")
    return record_id


def check_actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor or len(actor) > MAX_ACTOR_LEN:
        raise UsageError(f"journal actor must be a non-empty string of at most {MAX_ACTOR_LEN}")
    return actor


# ---- time -------------------------------------------------------------------------------


def utc(when: datetime | None) -> datetime:
    if when is None:
        return datetime.now(UTC)
    if when.tzinfo is None:
        raise UsageError("journal times must be timezone-aware")
    return when.astimezone(UTC)


def fmt_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime(_TIME_FMT)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, _TIME_FMT).replace(tzinfo=UTC)


# ---- paths ------------------------------------------------------------------------------


def record_dir(record_id: str) -> str:
    """``r/<c26>/<c25>/<c24>/<id>``: three one-char levels from the random tail of the ULID.

    32**3 = 32768 leaf buckets, so every tree rewritten by a commit stays small (32 entries per
    level, a few records per bucket at 100k records, ~300 at 10M).
    """
    return f"r/{record_id[-1]}/{record_id[-2]}/{record_id[-3]}/{record_id}"


def record_event_path(record_id: str, rseq: int, jseq: int, op: str) -> str:
    return f"{record_dir(record_id)}/{rseq:06d}.{jseq:010d}.{op}"


def vault_event_path(when: datetime, jseq: int, index: int, op: str) -> str:
    return f"v/{when:%Y}/{when:%m}/{when:%d}/{jseq:010d}.{index:04d}.{op}"


def parse_record_name(name: str) -> tuple[int, int, str] | None:
    """``<rseq>.<jseq>.<op>`` -> (rseq, jseq, op), or None if it is not an event name."""
    m = _RECORD_NAME.match(name)
    return (int(m[1]), int(m[2]), m[3]) if m else None


def parse_event_path(path: str) -> dict[str, Any] | None:
    """Split an event path into its fields, or None if it does not follow the layout."""
    parts = path.split("/")
    if len(parts) == 6 and parts[0] == "r":
        rid = parts[4]
        if not _ULID.match(rid) or record_dir(rid) != "/".join(parts[:5]):
            return None
        fields = parse_record_name(parts[5])
        if fields is None:
            return None
        return {"record": rid, "rseq": fields[0], "jseq": fields[1], "op": fields[2]}
    if len(parts) == 5 and parts[0] == "v":
        m = _VAULT_NAME.match(parts[4])
        if not m:
            return None
        return {
            "record": None,
            "date": "-".join(parts[1:4]),
            "jseq": int(m[1]),
            "index": int(m[2]),
            "op": m[3],
        }
    return None


def commit_message(op: str, seq: int, time: str, n_events: int, n_records: int) -> str:
    """The commit message, a pure function of the signed manifest (verify recomputes it)."""
    return (
        f"{op}: {n_events} event(s), {n_records} record(s)\n\n"
        f"Journal-Seq: {seq}\nJournal-Time: {time}\n"
    )

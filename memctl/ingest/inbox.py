"""The sealed inbox: key-less writers leave encrypted envelopes, the next unlock imports them.

Writing (``memctl inbox add``, ``memctl ingest --seal``) needs no passphrase: it reads only
the inbox public key from ``header.json`` and seals each input's items
(:mod:`memctl.crypto.seal`) into ``VAULT/inbox/<ulid>.env`` (mode 0600, written to a temp
file and renamed, so a reader never sees half an envelope). The header's MAC cannot be
checked without the key, so nothing in an envelope is trusted on import.

Reading happens on every unlock (:func:`import_pending`, called when a ``Vault`` opens): the
inbox private key is unwrapped with the master key, and each envelope, oldest first, is
opened, checked (vault id, AEAD tag, payload structure, actor ``inbox`` or ``cron:<job>``,
every item) and written in one transaction, then deleted. A tampered, foreign or malformed
envelope is reported on stderr, moved to ``VAULT/inbox/rejected/`` and never imported. The
empty case costs one ``listdir``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memctl.errors import MemctlError, UsageError, VaultBusy, VaultNotFound

if TYPE_CHECKING:
    from memctl.vault.core import Vault

INBOX_DIR = "inbox"
REJECTED_DIR = "rejected"
SUFFIX = ".env"
PAYLOAD_FORMAT = "memctl-inbox/1"
MAX_ENVELOPE_BYTES = 64 * 1024 * 1024
#: One envelope holds at most this many items / this much text; bigger inputs use several.
MAX_ITEMS_PER_ENVELOPE = 5000
MAX_CHARS_PER_ENVELOPE = 16 * 1024 * 1024
STALE_TMP_SECONDS = 24 * 3600
ACTOR_RE = re.compile(r"^(inbox|cron:[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
ITEM_FIELDS = frozenset(
    {
        "text",
        "title",
        "tags",
        "namespace",
        "kind",
        "source",
        "locator",
        "observed_at",
        "context",
        "meta",
        "plugin",
    }
)
_PRIVATE_AAD = b"memctl/v1/inbox-private|"


def _warn(message: str) -> None:
    sys.stderr.write(f"memctl: warning: inbox: {message}\n")


# ---------------------------------------------------------------------------------------------
# Writing (no key)


_last_ms = 0


def _envelope_name() -> str:
    """A ULID, strictly increasing within this process, so names sort in sealing order."""
    from memctl.ids import new_ulid

    global _last_ms
    ms = max(int(time.time() * 1000), _last_ms + 1)
    _last_ms = ms
    return new_ulid(ms) + SUFFIX


def public_header(vault_path: Path) -> Any:
    """The vault's header, read for its public inbox key (unauthenticated: no key here)."""
    from memctl.vault import header as hdr

    if not (vault_path / hdr.HEADER_NAME).exists():
        raise VaultNotFound(
            f"no vault at {vault_path}", hint="create one with `memctl init` or pass --vault PATH"
        )
    header = hdr.read_header(vault_path)
    if not header.inbox_public or len(header.inbox_public) != 32:
        raise UsageError(f"the vault at {vault_path} has no inbox key")
    return header


def _jsonable(item: dict[str, Any]) -> dict[str, Any]:
    from memctl.timeutil import iso

    out = {}
    for key, value in item.items():
        if value is None:
            continue
        out[key] = iso(value) if isinstance(value, datetime) else value
    return out


def seal_payload(vault_path: Path, payload: dict[str, Any], *, header: Any = None) -> Path:
    """Seal one payload to the vault's inbox key into ``inbox/<ulid>.env``. Returns the path."""
    from memctl.crypto.seal import seal
    from memctl.vault.header import write_atomic

    header = header or public_header(vault_path)
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    envelope = seal(header.inbox_public, data, vault_id=header.vault_id)
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise UsageError("an item is too large to seal (envelopes are at most 64 MiB)")
    inbox = vault_path / INBOX_DIR
    inbox.mkdir(mode=0o700, exist_ok=True)
    path = inbox / _envelope_name()
    write_atomic(path, envelope)
    return path


def seal_items(
    vault_path: Path, items: list[dict[str, Any]], *, actor: str, header: Any = None
) -> list[Path]:
    """Seal ``items`` (already validated) in as few envelopes as the limits allow."""
    if not ACTOR_RE.match(actor):
        raise UsageError("a sealed item's actor must be inbox or cron:<job>")
    from memctl.timeutil import now_iso

    header = header or public_header(vault_path)
    paths: list[Path] = []
    chunk: list[dict[str, Any]] = []
    chars = 0

    def flush() -> None:
        nonlocal chunk, chars
        if chunk:
            payload = {
                "format": PAYLOAD_FORMAT,
                "sealed_at": now_iso(),
                "actor": actor,
                "items": chunk,
            }
            paths.append(seal_payload(vault_path, payload, header=header))
        chunk, chars = [], 0

    for item in items:
        chunk.append(_jsonable(item))
        chars += len(item.get("text") or "")
        if len(chunk) >= MAX_ITEMS_PER_ENVELOPE or chars >= MAX_CHARS_PER_ENVELOPE:
            flush()
    flush()
    return paths


# ---------------------------------------------------------------------------------------------
# Listing (no key)


def pending(vault_path: Path) -> dict[str, Any]:
    """Counts of what waits in the inbox (no key needed): envelopes, bytes, oldest, rejected."""
    from memctl.timeutil import iso

    inbox = vault_path / INBOX_DIR
    envelopes = []
    for name in _names(inbox):
        try:
            size = (inbox / name).stat().st_size
        except OSError:
            continue
        envelopes.append({"name": name, "bytes": size, "sealed_at": _ulid_time(name, iso)})
    rejected = _names(inbox / REJECTED_DIR)
    return {
        "inbox": str(inbox),
        "pending": len(envelopes),
        "bytes": sum(e["bytes"] for e in envelopes),
        "oldest": envelopes[0]["sealed_at"] if envelopes else None,
        "rejected": len(rejected),
        "envelopes": envelopes,
    }


def _names(directory: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX) and n[0] != ".")
    except (FileNotFoundError, NotADirectoryError):
        return []


def _ulid_time(name: str, iso: Any) -> str | None:
    from datetime import UTC

    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    try:
        ms = 0
        for ch in name[:10]:
            ms = ms * 32 + alphabet.index(ch)
        return iso(datetime.fromtimestamp(ms / 1000, UTC))
    except (ValueError, OverflowError, OSError):
        return None


# ---------------------------------------------------------------------------------------------
# Importing (needs the unlocked vault)


@dataclass
class ImportReport:
    envelopes: int = 0
    added: int = 0
    updated: int = 0
    skipped: int = 0
    rejected: list[str] = field(default_factory=list)


class RejectedEnvelope(Exception):
    """Why an envelope is not imported (never quotes its content)."""


def import_pending(vault: Vault) -> ImportReport | None:
    """Import every pending envelope into ``vault``; None when there was nothing to do.

    Never raises for a bad envelope (it is moved aside with a warning) or a vault problem
    (a warning; the envelopes stay for the next unlock): unlocking must not fail because of
    what a key-less writer left.
    """
    inbox = Path(vault.path) / INBOX_DIR
    try:
        names = os.listdir(inbox)
    except (FileNotFoundError, NotADirectoryError):
        return None
    todo = sorted(n for n in names if n.endswith(SUFFIX) and n[0] != ".")
    _remove_stale_tmp(inbox, names)
    if not todo:
        return None
    from memctl.vault.lock import file_lock

    try:
        with file_lock(inbox / ".import.lock", timeout=0, what="inbox"):
            return _import(vault, inbox, todo)
    except VaultBusy:
        return None  # another process is importing them right now
    except OSError as exc:
        _warn(f"cannot import: {exc.strerror or type(exc).__name__}")
        return None


def _remove_stale_tmp(inbox: Path, names: list[str]) -> None:
    """Temp files of a sealer that crashed before its rename (older than a day)."""
    now = time.time()
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            try:
                if now - (inbox / name).stat().st_mtime > STALE_TMP_SECONDS:
                    (inbox / name).unlink()
            except OSError:
                pass


def _inbox_private_key(vault: Vault) -> bytes | None:
    from memctl.crypto import aead

    wrapped = vault.header.inbox_private_wrapped
    if not wrapped:
        _warn("this vault has no inbox key; envelopes left in place")
        return None
    try:
        return aead.open_(
            vault.keys.inbox_wrap,
            wrapped,
            _PRIVATE_AAD + vault.header.vault_id,
            what="inbox private key",
        )
    except MemctlError as exc:
        _warn(f"{exc.message}; envelopes left in place")
        return None


def _import(vault: Vault, inbox: Path, names: list[str]) -> ImportReport | None:
    private = _inbox_private_key(vault)
    if private is None:
        return None
    report = ImportReport()
    for name in names:
        path = inbox / name
        try:
            actor, items = open_envelope_file(path, private, vault.header.vault_id)
        except FileNotFoundError:
            continue  # imported meanwhile by another process
        except RejectedEnvelope as exc:
            report.rejected.append(name)
            _reject(path, str(exc))
            continue
        try:
            summary = vault.ingest_many(items, strict=True, batch_size=len(items) + 1, actor=actor)
        except UsageError as exc:  # prevalidated; defensive
            report.rejected.append(name)
            _reject(path, f"an item was refused ({exc.message})")
            continue
        except MemctlError as exc:
            _warn(f"import stopped ({exc.message}); envelopes left for the next unlock")
            break
        report.envelopes += 1
        report.added += summary.added
        report.updated += summary.updated
        report.skipped += summary.skipped
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return report


def open_envelope_file(
    path: Path, private: bytes, vault_id: bytes
) -> tuple[str, list[dict[str, Any]]]:
    """Read, decrypt and check one envelope: ``(actor, items)``. Raises
    :class:`RejectedEnvelope` (or ``FileNotFoundError``)."""
    from memctl.crypto.seal import open_envelope
    from memctl.vault.records import prepare

    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_ENVELOPE_BYTES:
            raise RejectedEnvelope("larger than any memctl envelope")
        data = fh.read(size + 1)  # not MAX_ENVELOPE_BYTES: read(n) allocates n bytes up front
    try:
        plaintext = open_envelope(private, data, vault_id=vault_id)
    except MemctlError as exc:
        raise RejectedEnvelope(exc.message) from None
    try:
        payload = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RejectedEnvelope("payload is not valid JSON") from None
    if not isinstance(payload, dict) or payload.get("format") != PAYLOAD_FORMAT:
        raise RejectedEnvelope("payload has an unknown format")
    actor = payload.get("actor")
    if not isinstance(actor, str) or not ACTOR_RE.match(actor):
        raise RejectedEnvelope("payload names an actor a sealed envelope may not use")
    items = payload.get("items")
    if not isinstance(items, list) or not items:
        raise RejectedEnvelope("payload holds no items")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise RejectedEnvelope(f"item {index + 1} is not an object")
        extra = set(item) - ITEM_FIELDS
        if extra:
            raise RejectedEnvelope(f"item {index + 1} has fields a sealed item may not set")
        try:
            prepare(item, defaults={"actor": actor})
        except MemctlError as exc:
            raise RejectedEnvelope(f"item {index + 1}: {exc.message}") from None
    return actor, items


def _reject(path: Path, reason: str) -> None:
    rejected = path.parent / REJECTED_DIR
    try:
        rejected.mkdir(mode=0o700, exist_ok=True)
        target = rejected / path.name
        n = 1
        while target.exists():
            target = rejected / f"{path.stem}.{n}{SUFFIX}"
            n += 1
        os.replace(path, target)
        where = f"moved to {target}"
    except OSError as exc:
        where = f"could not be moved aside ({exc.strerror or type(exc).__name__})"
    _warn(f"rejected {path}: {reason}; {where}")

"""Record fields: validation, normalisation and the row ↔ dict mapping.

A record handed to :meth:`Vault.ingest_many` is a dict (``text`` plus optional fields); this
module turns it into a :class:`Prepared` row or a reason it cannot be stored.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from memctl.errors import UsageError
from memctl.store.schema import TRUST_AGENT, TRUST_IMPORT, TRUST_NAMES, TRUST_PERSON
from memctl.timeutil import parse_time

TAG_SEP = "\x1f"
MAX_TEXT = 1_000_000  # characters; sources chunk long documents well below this
MAX_TITLE = 1_000
MAX_TAGS = 64
MAX_TAG_LEN = 100
MAX_CONTEXT = 20_000
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$")
KIND_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
ACTOR_RE = re.compile(r"^(cli|api|agent|inbox|cron:[^\s\x00-\x1f]{1,128}|mcp:[^\x00-\x1f]{1,128})$")
DEFAULT_NAMESPACE = "default"
DEFAULT_KIND = "note"
FIELDS = {
    "text",
    "title",
    "tags",
    "source",
    "locator",
    "observed_at",
    "kind",
    "namespace",
    "context",
    "meta",
    "plugin",
    "trust",
    "actor",
}


def default_trust(actor: str) -> int:
    if actor.startswith("mcp:"):
        return TRUST_AGENT
    if actor.startswith("cron:") or actor == "inbox":
        return TRUST_IMPORT
    return TRUST_PERSON


def parse_trust(value: object) -> int:
    if isinstance(value, bool):
        raise UsageError("trust must be a level name or 1-3")
    if isinstance(value, int) and TRUST_AGENT <= value <= TRUST_PERSON:
        return value
    if isinstance(value, str):
        if value.lower() in TRUST_NAMES:
            return TRUST_NAMES[value.lower()]
        if value.isdigit():
            return parse_trust(int(value))
    raise UsageError(f"trust must be one of {', '.join(TRUST_NAMES)} (or 1-3)")


def trust_name(level: int) -> str:
    for name, number in TRUST_NAMES.items():
        if number == level:
            return name
    return str(level)


def check_namespace(ns: str) -> str:
    if not isinstance(ns, str) or not NAMESPACE_RE.match(ns):
        raise UsageError(
            "namespace must be 1-128 characters: letters, digits and _ . : @ / - "
            "(starting with a letter or digit)"
        )
    return ns


def check_actor(actor: str) -> str:
    if not isinstance(actor, str) or not ACTOR_RE.match(actor):
        raise UsageError("actor must be cli, api, agent, inbox, cron:<job> or mcp:<client>")
    return actor


def normalise_tags(tags: object) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [t for t in re.split(r"[,\s]+", tags) if t]
    if not isinstance(tags, list | tuple | set | frozenset):
        raise UsageError("tags must be a list of strings")
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str):
            raise UsageError("tags must be strings")
        tag = unicodedata.normalize("NFC", tag).strip()
        if not tag:
            continue
        if len(tag) > MAX_TAG_LEN or any(ord(c) < 32 for c in tag):
            raise UsageError(f"a tag must be at most {MAX_TAG_LEN} printable characters")
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise UsageError(f"at most {MAX_TAGS} tags per record")
    return out


def canonical_text(text: str) -> str:
    """What the dedup MAC covers: NFC, unified newlines, trailing space trimmed."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.strip().split("\n"))


@dataclass
class Prepared:
    """One validated record, ready to write."""

    text: str
    namespace: str
    kind: str
    title: str | None
    tags: list[str]
    source: str | None
    locator: str | None
    observed_at: str | None
    context: str | None
    meta: dict[str, Any] | None
    plugin: str | None
    actor: str
    trust: int
    content_mac: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)
    #: ``meta`` as stored (sorted keys, UTF-8); computed once, by :func:`prepare`
    meta_json: str | None = None

    @property
    def tags_text(self) -> str:
        return TAG_SEP.join(self.tags)


def _opt_str(item: dict[str, Any], key: str, limit: int) -> str | None:
    value = item.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise UsageError(f"{key} must be a string")
    if len(value) > limit:
        raise UsageError(f"{key} is longer than {limit} characters")
    return value


_BAD_UNICODE = "invalid Unicode in an item (a lone surrogate); clean the input"


def _check_unicode(item: dict[str, Any]) -> None:
    """Lone surrogates (broken input: invalid UTF-8 in argv, ``\\ud800`` in JSON) cannot be
    stored as UTF-8; refuse them here rather than fail half-way through a write. Strings and
    lists of strings here; ``meta`` is checked with its JSON (:func:`_meta_json`)."""
    try:
        for value in item.values():
            if isinstance(value, str):
                value.encode("utf-8")
            elif isinstance(value, list | tuple | set | frozenset):
                for v in value:
                    if isinstance(v, str):
                        v.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(_BAD_UNICODE) from None


def _meta_json(meta: dict[str, Any]) -> str | None:
    """``meta`` as stored: JSON with sorted keys; refused when it is not JSON or not valid
    Unicode (it used to fail only when written, taking its whole batch with it)."""
    if not meta:
        return None
    try:
        text = json.dumps(meta, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        raise UsageError("meta must be JSON: objects, lists, strings, numbers") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(_BAD_UNICODE) from None
    return text


def prepare(item: Any, *, defaults: dict[str, Any]) -> Prepared:
    """Validate one item. Raises :class:`UsageError` with a reason (never the text)."""
    if isinstance(item, str):
        item = {"text": item}
    if not isinstance(item, dict):
        raise UsageError("each item must be a dict with at least 'text'")
    unknown = set(item) - FIELDS
    if unknown:
        raise UsageError(f"unknown field(s): {', '.join(sorted(unknown))}")
    merged = {**defaults, **{k: v for k, v in item.items() if v is not None}}
    _check_unicode(merged)
    text = merged.get("text")
    if not isinstance(text, str):
        raise UsageError("text must be a string")
    text = canonical_text(text)
    if not text:
        raise UsageError("empty text")
    if len(text) > MAX_TEXT:
        raise UsageError(f"text longer than {MAX_TEXT} characters (split it into chunks)")
    actor = check_actor(merged.get("actor") or "api")
    trust_value = merged.get("trust")
    meta = merged.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise UsageError("meta must be an object")
    observed = merged.get("observed_at")
    return Prepared(
        text=text,
        namespace=check_namespace(merged.get("namespace") or DEFAULT_NAMESPACE),
        kind=_check_kind(merged.get("kind") or DEFAULT_KIND),
        title=_opt_str(merged, "title", MAX_TITLE),
        tags=normalise_tags(merged.get("tags")),
        source=_opt_str(merged, "source", 4096),
        # "" is a real locator: the whole source (a file read as one record).
        locator=_opt_str(merged, "locator", 4096) if merged.get("locator") != "" else "",
        observed_at=parse_time(observed, what="observed_at") if observed else None,
        context=_opt_str(merged, "context", MAX_CONTEXT),
        meta=meta,
        plugin=_opt_str(merged, "plugin", 200),
        actor=actor,
        trust=parse_trust(trust_value) if trust_value is not None else default_trust(actor),
        meta_json=_meta_json(meta) if meta else None,
    )


def _check_kind(kind: object) -> str:
    if not isinstance(kind, str) or not KIND_RE.match(kind):
        raise UsageError("kind must be a short lower-case word (e.g. note, document, chat)")
    return kind


RECORD_COLUMNS = (
    "r.rowid, r.id, r.namespace, r.kind, r.title, r.body, r.tags, r.source, r.locator, "
    "r.observed_at, r.ingested_at, r.updated_at, r.actor, r.trust, r.plugin, r.meta, r.version, "
    "r.context"
)


def row_to_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """A record row (selected with :data:`RECORD_COLUMNS`) as the public hit/record dict."""
    (
        rowid,
        rid,
        ns,
        kind,
        title,
        body,
        tags,
        source,
        locator,
        observed,
        ingested,
        updated,
        actor,
        trust,
        plugin,
        meta,
        version,
        context,
    ) = row[:18]
    return {
        "id": rid,
        "text": body,
        "title": title,
        "namespace": ns,
        "kind": kind,
        "tags": tags.split(TAG_SEP) if tags else [],
        "source": source,
        "locator": locator,
        "observed_at": observed,
        "ingested_at": ingested,
        "updated_at": updated,
        "actor": actor,
        "trust": trust,
        "trust_name": trust_name(trust),
        "plugin": plugin,
        "meta": json.loads(meta) if meta else None,
        "version": version,
        "context": context,
        "_rowid": rowid,
    }

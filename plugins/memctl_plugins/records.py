"""JSON and JSON Lines records, with a field mapping.

Each record (a JSONL line, an element of a top-level array, or of a list under ``items``,
``records``, ``data``... of a top-level object) becomes a memory. Which field holds what is
guessed from common names (``text``/``content``/``body``..., ``timestamp``/``time``/``date``/
``created_at``...) or set with options (``text_field=message.body``: dotted paths reach into
nested objects). A malformed line or record is reported with its line number or byte offset and
skipped; the others are ingested. JSONL and arrays are streamed; a top-level object is parsed
whole, up to ``max_record_bytes``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from memctl.errors import UsageError
from memctl.ingest.chunk import MAX_CHUNK_CHARS, split_text
from memctl.ingest.hookspecs import hookimpl
from memctl.ingest.sources import KINDS, Skip, SourceError, SourceSpec, int_option, parse_time

from . import _jsonstream as js

TEXT_FIELDS = ("text", "content", "body", "message", "note", "value")
TIME_FIELDS = ("timestamp", "time", "date", "created_at", "created", "datetime", "ts")
TITLE_FIELDS = ("title", "subject", "name")
TAGS_FIELDS = ("tags", "labels", "keywords", "categories")
SOURCE_FIELDS = ("source", "url", "uri", "link")
ID_FIELDS = ("id", "uuid", "_id", "guid")
LIST_KEYS = ("items", "records", "data", "entries", "notes", "messages", "results", "rows")
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".jsonlines"})
DEFAULT_MAX_RECORD = 32 * 1024 * 1024
MAX_META_FIELDS = 8

OPTIONS = {
    "text_field": "field holding the text (default: first of " + "/".join(TEXT_FIELDS) + ")",
    "time_field": "field holding when it happened (default: " + "/".join(TIME_FIELDS) + ")",
    "title_field": "field holding a title (default: " + "/".join(TITLE_FIELDS) + ")",
    "tags_field": "field holding tags, a list or comma-separated (default: tags/labels/...)",
    "source_field": "field holding the record's source URI (default: source/url/uri/link)",
    "id_field": "field holding a stable id, used as locator (default: id/uuid/_id/guid)",
    "kind": "kind of the memories (default: document)",
    "max_chars": f"largest chunk, in characters (default {MAX_CHUNK_CHARS})",
    "max_record_bytes": f"largest record or JSON document, in bytes (default {DEFAULT_MAX_RECORD})",
}


def detect(path: Path, head: bytes) -> int:
    if path.is_dir():
        return 0
    suffix = path.suffix.lower()
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if suffix in JSONL_SUFFIXES:
        return 70
    if suffix == ".json":
        return 40
    if first in (b"{", b"["):
        return 20
    return 0


def _get(record: Mapping[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _as_text(value: Any, depth: int = 0) -> str | None:
    """Text out of a field: a string, a list of strings, or parts like ``[{"text": ...}]``."""
    if isinstance(value, str):
        return value
    if depth > 3:
        return None
    if isinstance(value, list):
        parts = [t for v in value if (t := _as_text(v, depth + 1))]
        return "\n\n".join(parts) if parts else None
    if isinstance(value, Mapping):
        return _as_text(value.get("text"), depth + 1)
    return None


class _Mapping:
    """Which fields to read, from options or by guessing per record."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.explicit = {
            key: str(options[f"{key}_field"])
            for key in ("text", "time", "title", "tags", "source", "id")
            if options.get(f"{key}_field")
        }
        self.defaults = {
            "text": TEXT_FIELDS,
            "time": TIME_FIELDS,
            "title": TITLE_FIELDS,
            "tags": TAGS_FIELDS,
            "source": SOURCE_FIELDS,
            "id": ID_FIELDS,
        }

    def field(self, record: Mapping[str, Any], key: str) -> tuple[str | None, Any]:
        if key in self.explicit:
            name = self.explicit[key]
            return name, _get(record, name)
        for name in self.defaults[key]:
            if name in record and record[name] is not None:
                return name, record[name]
        return None, None


def _records_of(path: Path, max_bytes: int, jsonl: bool) -> Iterator[tuple[str, str, Any]]:
    """``(locator, position, value)`` for every record of the file; a value may be a
    :class:`Malformed`. Locators: ``L<line>`` (JSONL), ``[<index>]`` (array), ``items[<i>]``."""
    with open(path, "rb") as f:
        first, offset = js.first_byte(f)
        if not first:
            return
        if not jsonl and first == b"{":
            # One object per line in a .json file is JSONL; else a single document.
            f.seek(offset)
            line = f.readline(min(max_bytes, 1 << 20))
            rest = f.read(4096).lstrip()
            if rest.startswith(b"{") and isinstance(js.loads(line), Mapping):
                jsonl = True
            f.seek(0)
        if jsonl:
            f.seek(0)
            for lineno, _, raw in js.iter_lines(f, max_line_bytes=max_bytes):
                where = f"line {lineno}"
                if raw is None:
                    yield f"L{lineno}", where, js.Malformed(f"line longer than {max_bytes} bytes")
                elif raw.strip():
                    yield f"L{lineno}", where, js.loads(raw)
            return
        f.seek(offset)
        if first == b"[":
            for index, byte, value in js.iter_array(f, max_element_bytes=max_bytes, path=path):
                yield f"[{index}]", f"element {index}, byte {byte}", value
            return
        if first != b"{":
            raise SourceError(
                "not JSON: expected an object, an array or JSON Lines", position=f"byte {offset}"
            )
        data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise SourceError(
                f"JSON document larger than {max_bytes} bytes",
                hint="convert it to JSON Lines, or raise max_record_bytes",
            )
    doc = js.loads(data)
    if isinstance(doc, js.Malformed):
        raise SourceError(doc.reason)
    for key in LIST_KEYS:
        if isinstance(doc.get(key), list):
            for index, value in enumerate(doc[key]):
                yield f"{key}[{index}]", f"{key}[{index}]", value
            return
    yield "$", "top-level object", doc


def iter_items(path: Path, options: Mapping[str, Any]) -> Iterator[dict[str, Any] | Skip]:
    max_chars = int_option(options, "max_chars", MAX_CHUNK_CHARS, 200, 100_000)
    max_bytes = int_option(options, "max_record_bytes", DEFAULT_MAX_RECORD, 1024, 1 << 31)
    kind = str(options.get("kind") or "document")
    if kind not in KINDS:
        raise UsageError(f"option 'kind' must be one of: {', '.join(KINDS)}")
    mapping = _Mapping(options)
    jsonl = path.suffix.lower() in JSONL_SUFFIXES
    no_text = duplicates = 0
    seen_ids: set[str] = set()
    for locator, position, record in _records_of(path, max_bytes, jsonl):
        if isinstance(record, js.Malformed):
            yield Skip(record.reason, position=position)
            continue
        if isinstance(record, str):
            record = {"text": record}
        if not isinstance(record, Mapping):
            yield Skip(f"record is a JSON {type(record).__name__}, not an object", position)
            continue
        used: set[str] = set()
        name, value = mapping.field(record, "text")
        text = _as_text(value)
        if not text or not text.strip():
            no_text += 1
            continue
        used.add(name or "")
        time_name, time_value = mapping.field(record, "time")
        title_name, title_value = mapping.field(record, "title")
        tags_name, tags_value = mapping.field(record, "tags")
        source_name, source_value = mapping.field(record, "source")
        id_name, id_value = mapping.field(record, "id")
        used.update(n for n in (time_name, title_name, tags_name, source_name, id_name) if n)
        if isinstance(tags_value, str):
            tags = [t.strip() for t in tags_value.split(",") if t.strip()]
        elif isinstance(tags_value, list):
            tags = [str(t) for t in tags_value if isinstance(t, str | int | float)]
        else:
            tags = []
        meta: dict[str, Any] = {}
        source = None
        if isinstance(source_value, str) and (
            "://" in source_value or source_value.startswith(("urn:", "mailto:"))
        ):
            source = source_value
        elif source_value is not None and isinstance(source_value, str | int):
            meta["source"] = str(source_value)[:200]
        for key, val in record.items():
            if len(meta) >= MAX_META_FIELDS:
                break
            if key in used or not isinstance(key, str):
                continue
            if isinstance(val, str):
                meta[key] = val[:200]
            elif isinstance(val, bool | int | float) or val is None:
                meta[key] = val
        if isinstance(id_value, str | int) and not isinstance(id_value, bool) and str(id_value):
            base = f"id:{id_value}"
            if base in seen_ids:
                duplicates += 1
                continue
            seen_ids.add(base)
        else:
            base = locator
        title = title_value if isinstance(title_value, str) else None
        for part, chunk in enumerate(split_text(text, max_chars), 1):
            yield {
                "text": chunk,
                "title": title,
                "tags": tags,
                "source": source,
                "locator": base if part == 1 else f"{base}@{part}",
                "observed_at": parse_time(time_value),
                "kind": kind,
                "context": title,
                "meta": meta,
            }
    if no_text:
        yield Skip("records without a text field", count=no_text)
    if duplicates:
        yield Skip("records repeating an id already seen in this file", count=duplicates)


RECORDS = SourceSpec(
    name="json",
    description="JSON / JSONL records with a field mapping (text_field=..., time_field=...)",
    detect=detect,
    iter_items=iter_items,
    kind="document",
    options=OPTIONS,
)


@hookimpl
def memctl_sources() -> list[SourceSpec]:
    return [RECORDS]

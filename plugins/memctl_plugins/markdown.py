"""Markdown and plain-text notes.

Markdown files become one memory per chunk of a section: the heading path is kept as
``context`` (``Title > Install > Linux``) and in the locator (``notes/setup.md#install/linux``),
so a hit says where it came from and an edit to one section only re-versions that section.
A simple subset of YAML front matter is read by hand (``title``, ``tags``, ``date``; no PyYAML).
Plain text is cut into paragraph chunks located by line range (``notes.txt#L10-L42``).

Files are streamed line by line with a line-length cap, so a huge file costs bounded memory.
Folders are walked by memctl itself (hidden dirs, ``.git`` and editor temp files skipped).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memctl.ingest.chunk import (
    MAX_CHUNK_CHARS,
    Chunk,
    Chunker,
    iter_file_lines,
    looks_binary,
    read_head,
    slugify,
)
from memctl.ingest.hookspecs import hookimpl
from memctl.ingest.sources import (
    Skip,
    SourceSpec,
    int_option,
    parse_time,
    root_relative,
)

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdown", ".mkd", ".mkdn", ".mdx"})
TEXT_SUFFIXES = frozenset({".txt", ".text", ".rst", ".org", ".adoc", ".asciidoc", ".wiki"})
FRONT_MATTER_MAX_LINES = 200
MAX_META_FIELDS = 12

_ATX_RE = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))??(?:[ \t]+#+)?[ \t]*$")
_SETEXT_RE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HEADING_SNIFF_RE = re.compile(rb"(?m)^#{1,6} \S")
_NOT_PARAGRAPH_START_RE = re.compile(r"^ {0,3}([-*+>|]|\d+[.)]|```|~~~|    )")

OPTIONS = {"max_chars": f"largest chunk, in characters (default {MAX_CHUNK_CHARS})"}


# ---------------------------------------------------------------------------------------------
# Front matter


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _split_inline_list(value: str) -> list[str]:
    inner = value.strip()[1:-1]
    return [_unquote(v) for v in inner.split(",") if _unquote(v)]


def parse_front_matter(lines: list[str]) -> dict[str, Any]:
    """Parse the YAML subset notes use: ``key: value``, ``key: [a, b]``, block lists
    (``key:`` then ``- a`` lines), quotes and ``#`` comments. Nested maps are ignored.
    Values are strings or lists of strings; it never raises."""
    data: dict[str, Any] = {}
    current: str | None = None
    for raw in lines:
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if raw[0] in " \t" or raw.startswith("-"):
            item = raw.strip()
            if current is not None and item.startswith("- "):
                data.setdefault(current, [])
                if isinstance(data[current], list):
                    data[current].append(_unquote(item[2:]))
            continue
        key, sep, value = raw.partition(":")
        if not sep:
            current = None
            continue
        key = key.strip().lower()
        value = value.split(" #", 1)[0].strip()
        current = key
        if not value:
            data[key] = []
        elif value.startswith("[") and value.endswith("]"):
            data[key] = _split_inline_list(value)
        else:
            data[key] = _unquote(value)
    return data


def _tags_from(value: Any) -> list[str]:
    if isinstance(value, str):
        parts = re.split(r"[,\s]+", value)
    elif isinstance(value, list):
        parts = [str(v) for v in value]
    else:
        return []
    return [p.strip().lstrip("#") for p in parts if p.strip().lstrip("#")]


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except (OSError, OverflowError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Markdown


def detect_markdown(path: Path, head: bytes) -> int:
    if path.is_dir() or looks_binary(head):
        return 0
    if path.suffix.lower() in MARKDOWN_SUFFIXES:
        return 80
    if _HEADING_SNIFF_RE.search(head) and path.suffix.lower() in ("", *TEXT_SUFFIXES):
        return 15
    return 0


class _Section:
    """The heading path the parser is in, and the chunker collecting its body."""

    def __init__(self, headings: list[tuple[int, str]], max_chars: int) -> None:
        self.headings = headings
        self.chunker = Chunker(max_chars)


def iter_markdown(path: Path, options: Mapping[str, Any]) -> Iterator[dict[str, Any] | Skip]:
    max_chars = int_option(options, "max_chars", MAX_CHUNK_CHARS, 200, 100_000)
    if looks_binary(read_head(path)):
        yield Skip("binary file, not text")
        return
    rel = root_relative(path, options)
    lines = iter_file_lines(path)

    # Front matter: "---" on line 1, closed by "---" or "..." within the first 200 lines.
    front: dict[str, Any] = {}
    replay: list[tuple[int, str]] = []
    first = next(lines, None)
    if first is not None:
        replay.append(first)
        if first[1].strip() == "---":
            for lineno, line in lines:
                replay.append((lineno, line))
                if line.strip() in ("---", "..."):
                    front = parse_front_matter([text for _, text in replay[1:-1]])
                    replay = []
                    break
                if len(replay) > FRONT_MATTER_MAX_LINES:
                    break

    def body() -> Iterator[tuple[int, str]]:
        yield from replay
        yield from lines

    stream = body()
    title_value = front.get("title")
    title = title_value if isinstance(title_value, str) and title_value else None
    # A first non-blank line that is an H1 (ATX or setext) is the document's title.
    pending: list[tuple[int, str]] = []
    for lineno, line in stream:
        pending.append((lineno, line))
        if line.strip():
            m = _ATX_RE.match(line)
            if m and len(m.group(1)) == 1 and m.group(2):
                title = title or m.group(2).strip()
            elif not m:
                underline = next(stream, None)
                if underline is not None:
                    pending.append(underline)
                    if underline[1].strip() and set(underline[1].strip()) == {"="}:
                        title = title or line.strip()
            break
    title = title or path.stem
    observed = parse_time(front.get("date") or front.get("created") or front.get("created_at"))
    observed = observed or _mtime(path)
    tags = _tags_from(front.get("tags", front.get("tag", front.get("keywords"))))
    extra = {
        k: (v if isinstance(v, str) else ", ".join(v))[:200]
        for k, v in list(front.items())[:MAX_META_FIELDS]
        if k not in ("title", "tags", "tag", "keywords", "date", "created", "created_at") and v
    }

    seen: dict[tuple[str, ...], int] = {}
    section = _Section([], max_chars)
    section_key = ""

    def emit(chunks: list[Chunk], sec: _Section, key: str) -> Iterator[dict[str, Any]]:
        for chunk in chunks:
            fragment = key + (f"@{chunk.part}" if chunk.part > 1 else "")
            path_names = [text for _, text in sec.headings]
            if path_names and path_names[0] == title:
                path_names = path_names[1:]  # "# Title" under front matter "title: Title"
            context = " > ".join([title, *path_names])
            meta: dict[str, Any] = {"lines": f"L{chunk.first_line}-L{chunk.last_line}"}
            if sec.headings:
                meta["heading"] = sec.headings[-1][1][:200]
            meta.update(extra)
            yield {
                "text": chunk.text,
                "title": title,
                "tags": tags,
                "locator": f"{rel}#{fragment}" if fragment else rel,
                "observed_at": observed,
                "kind": "note",
                "context": context,
                "meta": meta,
            }

    def open_section(level: int, text: str) -> None:
        nonlocal section, section_key
        headings = [h for h in section.headings if h[0] < level] + [(level, text)]
        slugs = tuple(slugify(t) for _, t in headings)
        seen[slugs] = seen.get(slugs, 0) + 1
        dup = seen[slugs]
        section = _Section(headings, max_chars)
        section_key = "/".join(slugs) + (f"~{dup}" if dup > 1 else "")

    fence: str | None = None
    held: tuple[int, str] | None = None  # a one-line paragraph that may be a setext heading
    previous_blank = True

    def all_lines() -> Iterator[tuple[int, str]]:
        yield from pending
        yield from stream

    for lineno, line in all_lines():
        if fence is not None:
            if line.lstrip().startswith(fence):
                fence = None
            yield from emit(section.chunker.feed(lineno, line), section, section_key)
            previous_blank = False
            continue
        if held is not None:
            held_line = held
            held = None
            m = _SETEXT_RE.match(line)
            if m and held_line[1].strip():
                yield from emit(section.chunker.flush(), section, section_key)
                open_section(1 if m.group(1)[0] == "=" else 2, held_line[1].strip())
                previous_blank = False
                continue
            yield from emit(section.chunker.feed(*held_line), section, section_key)
        fm = _FENCE_RE.match(line)
        if fm:
            fence = fm.group(1)[0] * len(fm.group(1))
            yield from emit(section.chunker.feed(lineno, line), section, section_key)
            previous_blank = False
            continue
        m = _ATX_RE.match(line)
        if m:
            yield from emit(section.chunker.flush(), section, section_key)
            open_section(len(m.group(1)), (m.group(2) or "").strip() or "untitled")
            previous_blank = True
            continue
        blank = not line.strip()
        if not blank and previous_blank and not _NOT_PARAGRAPH_START_RE.match(line):
            held = (lineno, line)
        else:
            yield from emit(section.chunker.feed(lineno, line), section, section_key)
        previous_blank = blank
    if held is not None:
        yield from emit(section.chunker.feed(*held), section, section_key)
    yield from emit(section.chunker.flush(), section, section_key)


# ---------------------------------------------------------------------------------------------
# Plain text


def detect_text(path: Path, head: bytes) -> int:
    if path.is_dir() or looks_binary(head):
        return 0
    if path.suffix.lower() in TEXT_SUFFIXES:
        return 50  # content signatures (an e-mail, a timestamped history) win over .txt
    return 5 if head.strip() else 0


def iter_text(path: Path, options: Mapping[str, Any]) -> Iterator[dict[str, Any] | Skip]:
    max_chars = int_option(options, "max_chars", MAX_CHUNK_CHARS, 200, 100_000)
    if looks_binary(read_head(path)):
        yield Skip("binary file, not text")
        return
    rel = root_relative(path, options)
    observed = _mtime(path)
    chunker = Chunker(max_chars)
    previous: list[Any] = ["", 0]  # the last span and how many chunks had it

    def emit(chunks: list[Chunk]) -> Iterator[dict[str, Any]]:
        for chunk in chunks:
            span = f"L{chunk.first_line}-L{chunk.last_line}"
            # The pieces of one over-long line share their span: number them apart.
            previous[:] = [span, previous[1] + 1 if previous[0] == span else 1]
            piece = f"@{previous[1]}" if previous[1] > 1 else ""
            yield {
                "text": chunk.text,
                "title": path.stem,
                "locator": f"{rel}#{span}{piece}",
                "observed_at": observed,
                "kind": "document",
                "context": path.name,
                "meta": {"lines": span},
            }

    for lineno, line in iter_file_lines(path):
        yield from emit(chunker.feed(lineno, line))
    yield from emit(chunker.flush())


MARKDOWN = SourceSpec(
    name="markdown",
    description="Markdown notes: front matter, heading-aware chunks (files and folders)",
    detect=detect_markdown,
    iter_items=iter_markdown,
    kind="note",
    options=OPTIONS,
)
TEXT = SourceSpec(
    name="text",
    description="Plain-text files, chunked on paragraphs, located by line range",
    detect=detect_text,
    iter_items=iter_text,
    kind="document",
    options=OPTIONS,
)


@hookimpl
def memctl_sources() -> list[SourceSpec]:
    return [MARKDOWN, TEXT]

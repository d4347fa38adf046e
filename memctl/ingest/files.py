"""Plain text and markdown files and folders, read into record items.

The fallback reader for `memctl ingest PATH` when no richer source plugin claims a file:
UTF-8 text split on blank lines into chunks of bounded size, each with a stable line-range
locator, the file's first heading (or name) as title.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memctl.errors import UsageError

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".text", ".rst", ".org", ".adoc", ""}
MAX_FILE_BYTES = 50 * 1024 * 1024
CHUNK_CHARS = 2000
SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv"}
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")


def walk(paths: list[Path]) -> Iterator[Path]:
    """Files under ``paths`` (recursively), skipping hidden and VCS directories."""
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
                for name in sorted(files):
                    if name.startswith(".") or name.endswith("~"):
                        continue
                    file = Path(root) / name
                    if file.suffix.lower() in TEXT_SUFFIXES:
                        yield file
        elif path.exists():
            yield path
        else:
            raise UsageError(f"{path}: no such file or directory")


def read_text(path: Path) -> str:
    """The file's text. Raises :class:`UsageError` with a reason for binary/undecodable files."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise UsageError(f"{path}: larger than {MAX_FILE_BYTES // 2**20} MiB, skipped")
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        raise UsageError(f"{path}: binary file, skipped")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start}), skipped") from None


def chunk_lines(text: str, limit: int = CHUNK_CHARS) -> Iterator[tuple[int, int, str]]:
    """(first line, last line, text) chunks split at blank lines, each at most ~``limit``."""
    lines = text.splitlines()
    start, buf, size = 0, [], 0
    for i, line in enumerate(lines):
        if not buf:
            start = i
        buf.append(line)
        size += len(line) + 1
        boundary = not line.strip()
        if (boundary and size >= limit // 2) or size >= limit:
            chunk = "\n".join(buf).strip()
            if chunk:
                yield start + 1, i + 1, chunk
            buf, size = [], 0
    chunk = "\n".join(buf).strip()
    if chunk:
        yield start + 1, len(lines), chunk


def file_items(path: Path) -> Iterator[dict[str, Any]]:
    text = read_text(path)
    title = path.stem
    for line in text.splitlines()[:50]:
        m = _HEADING.match(line)
        if m:
            title = m.group(1)
            break
    uri = path.resolve().as_uri()
    chunks = list(chunk_lines(text))
    for first, last, chunk in chunks:
        yield {
            "text": chunk,
            "title": title,
            "source": uri,
            "locator": f"L{first}-L{last}" if len(chunks) > 1 else "",
            "kind": "document",
        }

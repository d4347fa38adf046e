"""Shared text helpers for sources: sniffing, bounded line reading, cleaning and chunking.

Every built-in source reads untrusted files: a note that is really a JPEG, a 200 MB log with one
line, a Latin-1 file among UTF-8 ones. These helpers make the safe behaviour the easy one:
decode with replacement instead of failing, read lines with a length cap so memory stays
bounded, and cut text into chunks of at most :data:`MAX_CHUNK_CHARS` on paragraph boundaries,
so that one memory is one retrievable idea rather than a whole document.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: Target upper bound of one chunk's text, in characters.
MAX_CHUNK_CHARS = 1500
#: How many bytes of a file sources get to sniff (``detect``'s ``head``).
HEAD_BYTES = 4096
#: Lines longer than this are delivered in pieces (memory bound for one-line files).
MAX_LINE_CHARS = 64 * 1024

_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian BOM starts with UTF-16's.
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Control bytes that do not occur in text (everything below 0x20 except \t \n \f \r and ESC).
_CONTROL = bytes(b for b in range(32) if b not in (8, 9, 10, 12, 13, 27))
_WS_RE = re.compile(r"\s+")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_SENTENCE_END_RE = re.compile(r"[.!?。]\s")


def sniff_encoding(head: bytes) -> str:
    """The codec to read a file with: from its byte-order mark, else UTF-8."""
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec
    return "utf-8"


def looks_binary(head: bytes) -> bool:
    """True when ``head`` is not text: a NUL byte, or many control bytes.

    UTF-16/32 text (which is full of NULs) is recognised by its BOM and is not binary.
    """
    if not head or sniff_encoding(head) != "utf-8":
        return False
    if b"\x00" in head:
        return True
    controls = sum(head.count(c) for c in _CONTROL)
    return controls * 10 > len(head)


def read_head(path: Path, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of ``path`` (raises ``OSError`` like ``open``)."""
    with open(path, "rb") as f:
        return f.read(size)


def clean(text: str) -> str:
    """Make a string safe to store: no NUL, no lone surrogates (JSON can carry ``"\\ud800"``)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE_RE.sub("\ufffd", text)
    return text


def truncate(text: str, limit: int) -> str:
    """``text`` on one line (whitespace collapsed), cut to ``limit`` characters with an ellipsis."""
    flat = _WS_RE.sub(" ", text).strip()
    if len(flat) <= limit:
        return flat
    cut = flat[: max(limit - 1, 0)]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def iter_text_lines(
    stream: io.BufferedIOBase | io.RawIOBase | io.BytesIO,
    *,
    encoding: str = "utf-8",
    max_chars: int = MAX_LINE_CHARS,
) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` from a binary stream, decoded with replacement.

    Line endings (``\\n``, ``\\r\\n``, ``\\r``) are removed. A line longer than ``max_chars``
    comes out in several pieces that share its line number, so memory use is bounded by
    ``max_chars`` whatever the file holds.
    """
    text = io.TextIOWrapper(stream, encoding=encoding, errors="replace", newline=None)  # type: ignore[type-var, arg-type]
    lineno = 1
    try:
        while True:
            piece = text.readline(max_chars)
            if not piece:
                return
            if piece.endswith("\n"):
                yield lineno, piece[:-1]
                lineno += 1
            else:
                yield lineno, piece
    finally:
        text.detach()


def iter_file_lines(path: Path, *, max_chars: int = MAX_LINE_CHARS) -> Iterator[tuple[int, str]]:
    """:func:`iter_text_lines` over a file, with the encoding sniffed from its BOM."""
    with open(path, "rb") as f:
        encoding = sniff_encoding(f.read(4))
        f.seek(0)
        yield from iter_text_lines(f, encoding=encoding, max_chars=max_chars)


def slugify(text: str) -> str:
    """A heading as a URL-fragment-like slug, GitHub style.

    ``"Set-up / Install!"`` → ``set-up--install``; never empty, at most 80 characters.
    """
    kept = "".join(c for c in text.strip().lower() if c.isalnum() or c in " -_")
    slug = kept.replace(" ", "-").strip("-")
    return slug[:80] or "section"


@dataclass(frozen=True)
class Chunk:
    """A piece of text and the lines it came from (1-based, inclusive)."""

    text: str
    first_line: int
    last_line: int
    part: int  # 1-based index of this chunk within its run of text


def split_long_line(line: str, max_chars: int) -> list[str]:
    """Cut one over-long line into pieces of at most ``max_chars``: at a sentence end, else a
    space, else hard."""
    pieces: list[str] = []
    while len(line) > max_chars:
        window = line[:max_chars]
        cut = -1
        for m in _SENTENCE_END_RE.finditer(window):
            cut = m.end()
        if cut < max_chars // 2:
            cut = window.rfind(" ") + 1
        if cut < max_chars // 2:
            cut = max_chars
        pieces.append(line[:cut].rstrip())
        line = line[cut:].lstrip()
    if line:
        pieces.append(line)
    return [p for p in pieces if p]


class Chunker:
    """Groups lines into paragraphs and paragraphs into chunks of at most ``max_chars``.

    Feed lines one at a time; finished chunks come back as soon as they are complete, so a
    section of any size streams through in bounded memory. A paragraph longer than the limit
    is cut between lines, and a line longer than the limit at a sentence or word boundary.
    """

    def __init__(self, max_chars: int = MAX_CHUNK_CHARS) -> None:
        if max_chars < 20:
            raise ValueError("max_chars must be at least 20")
        self.max_chars = max_chars
        self._para: list[str] = []
        self._para_len = 0
        self._para_first = 0
        self._para_last = 0
        self._pending: list[str] = []
        self._pending_len = 0
        self._pending_first = 0
        self._pending_last = 0
        self._part = 0

    def feed(self, lineno: int, line: str) -> list[Chunk]:
        """Add one line (without its newline); returns chunks completed by it."""
        line = line.rstrip()
        if not line.strip():
            return self._close_paragraph()
        out: list[Chunk] = []
        pieces = [line] if len(line) <= self.max_chars else split_long_line(line, self.max_chars)
        for piece in pieces:
            if self._para and self._para_len + 1 + len(piece) > self.max_chars:
                out += self._close_paragraph()
            if not self._para:
                self._para_first = lineno
            self._para.append(piece)
            self._para_len += len(piece) + (1 if len(self._para) > 1 else 0)
            self._para_last = lineno
        return out

    def flush(self) -> list[Chunk]:
        """End of input: return whatever is left as a last chunk."""
        out = self._close_paragraph()
        if self._pending:
            out.append(self._emit())
        return out

    def _close_paragraph(self) -> list[Chunk]:
        if not self._para:
            return []
        text = "\n".join(self._para)
        first, last = self._para_first, self._para_last
        self._para, self._para_len = [], 0
        out: list[Chunk] = []
        if self._pending and self._pending_len + 2 + len(text) > self.max_chars:
            out.append(self._emit())
        if not self._pending:
            self._pending_first = first
        self._pending.append(text)
        self._pending_len += len(text) + (2 if len(self._pending) > 1 else 0)
        self._pending_last = last
        return out

    def _emit(self) -> Chunk:
        self._part += 1
        chunk = Chunk(
            "\n\n".join(self._pending), self._pending_first, self._pending_last, self._part
        )
        self._pending, self._pending_len = [], 0
        return chunk


def chunk_lines(
    lines: Iterable[tuple[int, str]], max_chars: int = MAX_CHUNK_CHARS
) -> Iterator[Chunk]:
    """Chunk numbered lines (as from :func:`iter_file_lines`) with a :class:`Chunker`."""
    chunker = Chunker(max_chars)
    for lineno, line in lines:
        yield from chunker.feed(lineno, line)
    yield from chunker.flush()


def split_text(text: str, max_chars: int = MAX_CHUNK_CHARS) -> list[str]:
    """Cut a string into chunks of at most ``max_chars`` on paragraph boundaries.

    Short text comes back unchanged as one chunk (whitespace at the ends removed).
    """
    text = text.strip()
    if len(text) <= max_chars:
        return [text] if text else []
    return [c.text for c in chunk_lines(enumerate(text.splitlines(), 1), max_chars)]

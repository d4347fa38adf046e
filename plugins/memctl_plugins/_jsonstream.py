"""Bounded-memory reading of big JSON inputs (shared by the records and chat sources).

The standard library has no streaming JSON parser, and chat exports run to hundreds of MB.
:func:`iter_array` scans a top-level JSON array byte by byte (well, token by token with a
regular expression), cuts it into its elements without parsing them, and parses each element
on its own: memory is bounded by the largest element, not the file. :func:`iter_lines` does
the same for JSON Lines.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from typing import IO, Any

from memctl.ingest.sources import SourceError

BLOCK = 1 << 20
_TOKEN_RE = re.compile(rb'["\[\]{},]')
_STRING_RE = re.compile(rb'["\\]')
_WS = b" \t\r\n"


class Malformed:
    """A JSON value that could not be used, and why (never quoting it)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def loads(raw: bytes) -> Any:
    """Parse one JSON value; invalid UTF-8 is replaced, deep nesting is a :class:`Malformed`."""
    try:
        return json.loads(raw.decode("utf-8", "replace"))
    except RecursionError:
        return Malformed("nested too deeply")
    except ValueError as exc:
        # JSONDecodeError's msg is the reason only ("Expecting value"), never the document.
        return Malformed(f"invalid JSON: {getattr(exc, 'msg', type(exc).__name__)}")


def first_byte(f: IO[bytes]) -> tuple[bytes, int]:
    """The first non-blank byte of ``f`` (after a UTF-8 BOM) and its offset; ``b""`` at EOF.
    Leaves ``f`` positioned at that byte."""
    start = f.tell()
    prefix = f.read(3)
    offset = start + (3 if prefix == codecs.BOM_UTF8 else 0)
    f.seek(offset)
    while True:
        block = f.read(4096)
        if not block:
            return b"", offset
        stripped = block.lstrip(_WS)
        if stripped:
            offset += len(block) - len(stripped)
            f.seek(offset)
            return stripped[:1], offset
        offset += len(block)


def iter_array(
    f: IO[bytes], *, max_element_bytes: int, path: Any = None
) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(index, byte_offset, value)`` for each element of the JSON array in ``f``.

    ``value`` is the parsed element, or a :class:`Malformed` (too large, invalid). Raises
    :class:`SourceError` if the file is not a JSON array or ends inside it.
    """
    head, offset = first_byte(f)
    if head != b"[":
        raise SourceError("not a JSON array", path=path, position=f"byte {offset}")
    f.read(1)
    pos = offset + 1  # file offset of the next byte to scan
    depth = 1
    in_string = escape = False
    element = bytearray()
    oversized = False
    elem_start = pos
    index = 0
    done = False
    trailing = False

    def finish(end_block: bytes, seg: int, stop: int) -> tuple[int, int, Any] | None:
        nonlocal element, oversized
        if not oversized:
            element += end_block[seg:stop]
            oversized = len(element) > max_element_bytes
        raw = bytes(element).strip(_WS)
        was_oversized = oversized
        element = bytearray()
        oversized = False
        if was_oversized:
            return (index, elem_start, Malformed(f"element larger than {max_element_bytes} bytes"))
        if not raw:
            return None
        return (index, elem_start, loads(raw))

    while not done:
        block = f.read(BLOCK)
        if not block:
            break
        i = 0
        seg = 0  # start of the current element's bytes within this block
        n = len(block)
        while i < n:
            if in_string:
                if escape:
                    escape = False
                    i += 1
                    continue
                m = _STRING_RE.search(block, i)
                if m is None:
                    i = n
                    break
                j = m.start()
                if block[j] == 0x5C:  # backslash
                    escape = True
                else:
                    in_string = False
                i = j + 1
                continue
            m = _TOKEN_RE.search(block, i)
            if m is None:
                i = n
                break
            j = m.start()
            c = block[j]
            if c == 0x22:  # "
                in_string = True
            elif c in (0x5B, 0x7B):  # [ {
                depth += 1
            elif c in (0x5D, 0x7D):  # ] }
                depth -= 1
                if depth == 0:
                    result = finish(block, seg, j)
                    if result is not None:
                        yield result
                        index += 1
                    trailing = bool((block[j + 1 :] + f.read(4096)).strip(_WS))
                    done = True
                    break
            elif c == 0x2C and depth == 1:  # , between elements
                result = finish(block, seg, j)
                if result is None:
                    yield (index, elem_start, Malformed("empty element"))
                else:
                    yield result
                index += 1
                seg = j + 1
                elem_start = pos + j + 1
            i = j + 1
        if not done:
            if not oversized:
                element += block[seg:]
                if len(element) > max_element_bytes:
                    oversized = True
                    element = bytearray()
            pos += n
    if not done:
        raise SourceError(
            "file ends inside the JSON array (truncated?)", path=path, position=f"byte {pos}"
        )
    if trailing:
        raise SourceError("data after the end of the JSON array", path=path)


def iter_lines(f: IO[bytes], *, max_line_bytes: int) -> Iterator[tuple[int, int, bytes | None]]:
    """Yield ``(line_number, byte_offset, line)`` for each line of ``f``; ``line`` is ``None``
    when it is longer than ``max_line_bytes`` (the rest of it is read and dropped)."""
    lineno = 0
    offset = f.tell()
    while True:
        line = f.readline(max_line_bytes + 1)
        if not line:
            return
        lineno += 1
        start = offset
        offset += len(line)
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            while True:
                rest = f.readline(BLOCK)
                offset += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            yield lineno, start, None
            continue
        if lineno == 1 and line.startswith(codecs.BOM_UTF8):
            line = line[3:]
        yield lineno, start, line

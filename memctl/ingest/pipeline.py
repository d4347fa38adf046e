"""Collect record items from the command line's inputs: --text, stdin and paths."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memctl.errors import MemctlError, UsageError
from memctl.ingest import files


def collect_items(
    paths: list[str], *, text: str | None, fields: dict[str, Any]
) -> tuple[Iterator[dict[str, Any]], list[str]]:
    """A lazy stream of items and a list that fills with per-file errors as it is consumed."""
    errors: list[str] = []
    for p in paths:
        if p != "-" and not Path(p).exists():
            raise UsageError(f"{p}: no such file or directory")

    def gen() -> Iterator[dict[str, Any]]:
        given = {k: v for k, v in fields.items() if v not in (None, [], "")}
        if text is not None:
            yield {**given, "text": text}
        for p in paths:
            if p == "-":
                data = sys.stdin.buffer.read()
                try:
                    yield {**given, "text": data.decode("utf-8-sig")}
                except UnicodeDecodeError:
                    errors.append("stdin: not UTF-8 text")
                continue
            try:
                for f in files.walk([Path(p)]):
                    try:
                        for item in files.file_items(f):
                            extra_tags = given.get("tags", [])
                            yield {**item, **given, "tags": extra_tags}
                    except MemctlError as exc:
                        errors.append(exc.message)
                    except OSError as exc:
                        errors.append(f"{f}: {exc.strerror}")
            except MemctlError as exc:
                errors.append(exc.message)

    return gen(), errors

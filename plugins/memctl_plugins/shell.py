"""Shell history: bash (``.bash_history``, with ``#<epoch>`` timestamp lines when
``HISTTIMEFORMAT`` is set) and zsh (plain, or ``EXTENDED_HISTORY``: ``: <epoch>:<secs>;cmd``).

One memory per command (multi-line commands joined), kind ``shell``, ``observed_at`` from the
timestamp when there is one. A command repeated in a row is taken once; without timestamps
every distinct command is taken once.

History files hold secrets: people type ``export GITHUB_TOKEN=...`` or ``mysql -psecret``.
Commands that look like they carry a credential (assignments to ``*TOKEN*``/``*SECRET*``/
``*PASSWORD*``/``*API_KEY*`` names, ``--password=...``, ``-p<pw>`` for MySQL clients,
``user:pass@`` in URLs, ``curl -u user:pass``, bearer headers, and well-known token shapes such
as ``ghp_...``, ``AKIA...``, ``sk-...``, private-key blocks) are never ingested; the run reports
how many were skipped, not which. The patterns err on the side of skipping.

Locators are ``t<epoch>:<digest>`` or ``<digest>`` of the command (not line numbers: history
files are trimmed from the top, which would shift every line).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from memctl.ingest.chunk import looks_binary, read_head
from memctl.ingest.hookspecs import hookimpl
from memctl.ingest.sources import Skip, SourceError, SourceSpec, parse_time

from . import _jsonstream as js

MAX_COMMAND_BYTES = 64 * 1024
MAX_COMMAND_LINES = 500

_BASH_TS_RE = re.compile(r"^#(\d{9,11})\s*$")
_BASH_TS_SNIFF_RE = re.compile(rb"(?m)^#\d{9,11}\r?\n[^#\n]")
_ZSH_EXT_RE = re.compile(r"^: {0,2}(\d{1,11}):(\d+);(.*)$", re.DOTALL)
_ZSH_SNIFF_RE = re.compile(rb"(?m)^: \d{9,11}:\d+;")

_SECRET_RES = [
    re.compile(p, re.IGNORECASE)
    for p in (
        # NAME=value where the name says what it holds (export FOO_TOKEN=..., PGPASSWORD=...)
        r"[a-z0-9_]*(token|secret|passw(or)?d|passphrase|api_?key|access_?key|private_?key"
        r"|client_?secret|credentials?|authorization|auth_?token|bearer)[a-z0-9_]*\s*[=:]\s*\S",
        # --password=..., --token ..., --api-key ... (but not --password-stdin / --token-file)
        r"--[\w-]*?(password|passwd|passphrase|token|secret|api-?key|access-?key)"
        r"(?!-?(stdin|file|env|command|cmd)\b)[\w-]*(=|\s+)(?!-)\S",
        r"\b(mysql|mysqldump|mysqladmin|mysqlimport|mariadb|mariadb-dump)\b.*\s-p[^\s-]\S*",
        r"\bsshpass\b.*\s-p\s*\S",
        r"\s(-u|--user)\s+[^\s:]+:\S+",  # curl -u user:password
        r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@",  # scheme://user:password@host
        r"\bpass:\S+",  # openssl -passin pass:...
        r"\bhtpasswd\b.*\s-\w*b",
        r"\|\s*(sudo\s+)?(chpasswd|passwd\s+--stdin)",
        r"-----BEGIN [A-Z ]*PRIVATE KEY",
        r"\b(ghp|gho|ghu|ghs|ghr)_[a-z0-9]{20,}",
        r"\bgithub_pat_\w{20,}",
        r"\bglpat-[\w-]{20,}",
        r"\bAKIA[0-9A-Z]{16}\b",
        r"\bxox[abprs]-[\w-]{10,}",
        r"\bsk-[\w-]{20,}",
        r"\bAIza[\w-]{35}\b",
        r"\beyJ[\w-]{10,}\.eyJ[\w-]{10,}",  # JWT
    )
]


def looks_secret(command: str) -> bool:
    """True when ``command`` looks like it contains a credential (see the module docstring)."""
    return any(r.search(command) for r in _SECRET_RES)


def _unmetafy(line: bytes) -> bytes:
    """zsh writes bytes >= 0x83 as 0x83 followed by the byte XOR 0x20 ("metafied")."""
    if b"\x83" not in line:
        return line
    out = bytearray()
    it = iter(line)
    for b in it:
        if b == 0x83:
            nxt = next(it, None)
            if nxt is not None:
                out.append(nxt ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


def _lines(path: Path, zsh: bool) -> Iterator[tuple[int, str | None]]:
    with open(path, "rb") as f:
        for lineno, _, raw in js.iter_lines(f, max_line_bytes=MAX_COMMAND_BYTES):
            if raw is None:
                yield lineno, None
                continue
            raw = raw.rstrip(b"\r\n")
            if zsh:
                raw = _unmetafy(raw)
            yield lineno, raw.decode("utf-8", "replace")


def _join_continued(lines: list[str]) -> str:
    return "\n".join(line[:-1] if line.endswith("\\") else line for line in lines)


def _bash_commands(path: Path) -> Iterator[tuple[int, int | None, str | None]]:
    """``(line, epoch or None, command or None if unreadable)`` for a bash history."""
    ts: int | None = None
    start = 0
    buf: list[str] = []
    timed = False  # the current entry began with a timestamp line: following lines join it

    def flush() -> Iterator[tuple[int, int | None, str | None]]:
        if buf:
            yield start, ts, _join_continued(buf)

    for lineno, line in _lines(path, zsh=False):
        if line is None:
            yield from flush()
            buf, timed = [], False
            yield lineno, None, None
            continue
        m = _BASH_TS_RE.match(line)
        if m:
            yield from flush()
            buf, ts, timed, start = [], int(m.group(1)), True, lineno + 1
            continue
        continued = bool(buf) and buf[-1].endswith("\\")
        if buf and not timed and not continued:
            yield from flush()
            buf, ts = [], None
        if not buf:
            start = lineno
        if len(buf) < MAX_COMMAND_LINES:
            buf.append(line)
    yield from flush()


def _zsh_commands(path: Path) -> Iterator[tuple[int, int | None, str | None]]:
    start = 0
    ts: int | None = None
    buf: list[str] = []
    for lineno, line in _lines(path, zsh=True):
        if line is None:
            if buf:
                yield start, ts, _join_continued(buf)
            buf = []
            yield lineno, None, None
            continue
        if buf and buf[-1].endswith("\\"):
            if len(buf) < MAX_COMMAND_LINES:
                buf.append(line)
            continue
        if buf:
            yield start, ts, _join_continued(buf)
        m = _ZSH_EXT_RE.match(line)
        start = lineno
        if m:
            ts, buf = int(m.group(1)), [m.group(3)]
        else:
            ts, buf = None, [line]
    if buf:
        yield start, ts, _join_continued(buf)


def _iter_history(
    path: Path, shell: str, commands: Iterator[tuple[int, int | None, str | None]]
) -> Iterator[dict[str, Any] | Skip]:
    previous: str | None = None
    seen: set[bytes] = set()
    secrets = repeats = 0
    for lineno, ts, command in commands:
        if command is None:
            yield Skip(f"command longer than {MAX_COMMAND_BYTES} bytes", f"line {lineno}")
            previous = None
            continue
        command = command.strip()
        if not command:
            continue
        if command == previous:
            repeats += 1
            continue
        previous = command
        if looks_secret(command):
            secrets += 1
            continue
        digest = hashlib.blake2b(command.encode("utf-8", "replace"), digest_size=8).hexdigest()
        locator = f"t{ts}:{digest}" if ts is not None else digest
        key = locator.encode()
        if key in seen:
            repeats += 1
            continue
        seen.add(key)
        yield {
            "text": command,
            "tags": [shell],
            "locator": locator,
            "observed_at": parse_time(ts) if ts is not None else None,
            "kind": "shell",
            "context": f"{shell} history",
            "meta": {"shell": shell, "line": lineno},
        }
    if secrets:
        yield Skip(
            "commands that looked like they contain credentials (not ingested)", count=secrets
        )
    if repeats:
        yield Skip("repeated commands", count=repeats)


def detect_bash(path: Path, head: bytes) -> int:
    if path.is_dir():
        return 0
    name = path.name.lower()
    if name == ".bash_history":
        return 90
    if "bash_history" in name:
        return 80
    if _ZSH_SNIFF_RE.search(head) or b"\x00" in head:
        return 0
    if _BASH_TS_SNIFF_RE.search(head):
        return 60
    if "history" in name and "zsh" not in name and "zhist" not in name:
        return 30
    return 0


def detect_zsh(path: Path, head: bytes) -> int:
    if path.is_dir():
        return 0
    name = path.name.lower()
    if _ZSH_SNIFF_RE.search(head):
        return 95
    if name in (".zsh_history", ".zhistory", ".histfile") or "zsh_history" in name:
        return 90
    return 0


def _check_text(path: Path, shell: str) -> None:
    if looks_binary(read_head(path)):
        raise SourceError(f"binary file, not a {shell} history", position="byte 0")


def iter_bash(path: Path, options: Mapping[str, Any]) -> Iterator[dict[str, Any] | Skip]:
    _check_text(path, "bash")
    yield from _iter_history(path, "bash", _bash_commands(path))


def iter_zsh(path: Path, options: Mapping[str, Any]) -> Iterator[dict[str, Any] | Skip]:
    _check_text(path, "zsh")
    yield from _iter_history(path, "zsh", _zsh_commands(path))


BASH = SourceSpec(
    name="bash",
    description="bash history (~/.bash_history, with #<epoch> lines); skips likely secrets",
    detect=detect_bash,
    iter_items=iter_bash,
    kind="shell",
)
ZSH = SourceSpec(
    name="zsh",
    description="zsh history (plain or EXTENDED_HISTORY); skips likely secrets",
    detect=detect_zsh,
    iter_items=iter_zsh,
    kind="shell",
)


@hookimpl
def memctl_sources() -> list[SourceSpec]:
    return [BASH, ZSH]

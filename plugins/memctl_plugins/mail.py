"""E-mail: mbox mailboxes and single ``.eml`` messages.

One memory per message (chunked if long): the text the sender wrote — ``text/plain`` preferred,
HTML turned into text when there is no plain part — without the quoted reply (``> `` lines and
the ``On ... wrote:`` line above them), a forwarded ``Original Message`` tail, or the signature
(after ``-- ``). From/To/Cc/Subject/Date go to ``meta``, the thread id (first of References,
else In-Reply-To, else the message's own id) too, and ``observed_at`` comes from Date.

The locator is the Message-ID. A message without one gets ``noid:<digest>``, a plain BLAKE2b
digest of its raw bytes: unlike a byte offset it does not move when earlier messages are
deleted from the mailbox, so it cannot make one message look like a new version of another.
A Message-ID seen twice in one file is ingested once.

mboxes are split by streaming (bounded by the largest message, ``max_message_bytes``); lines
``>From `` are unquoted (mboxrd).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any

from memctl.ingest.chunk import MAX_CHUNK_CHARS, split_text, truncate
from memctl.ingest.hookspecs import hookimpl
from memctl.ingest.sources import (
    Skip,
    SourceError,
    SourceSpec,
    file_uri,
    int_option,
    scheme_uri,
)

DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024
READ_LINE = 1 << 20
HEADER_NAMES = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"received",
    b"return-path",
    b"delivered-to",
    b"mime-version",
    b"content-type",
    b"cc",
    b"reply-to",
    b"x-mailer",
)

_FROM_LINE_RE = re.compile(
    rb"^From \S+\s+(Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s+\w{3}\s+\d{1,2}\s+\d{1,2}:\d{2}"
)
_HEADER_LINE_RE = re.compile(rb"^([A-Za-z][A-Za-z0-9-]{0,60}):[ \t]")
_MBOXRD_RE = re.compile(rb"^>+From ")
_QUOTE_RE = re.compile(r"^\s*>")
_ATTRIBUTION_RE = re.compile(
    r"^\s*(On|Am|Le|El|Il|Op|Em)\s.{0,300}(wrote|schrieb|a écrit|escribió|ha scritto|schreef|"
    r"escreveu)([^:]{0,150})?\s*:\s*$",
    re.IGNORECASE,
)
_FORWARD_CUT_RE = re.compile(
    r"^\s*(-{2,}\s*(Original Message|Forwarded message|Ursprüngliche Nachricht)\s*-{2,}"
    r"|_{20,})\s*$",
    re.IGNORECASE,
)
_MSGID_RE = re.compile(r"<([^<>\s]{1,500})>")

OPTIONS = {
    "max_chars": f"largest chunk, in characters (default {MAX_CHUNK_CHARS})",
    "max_message_bytes": f"largest message read, in bytes (default {DEFAULT_MAX_MESSAGE})",
}


# ---------------------------------------------------------------------------------------------
# Text clean-up


class _HTMLText(HTMLParser):
    """Text content of an HTML body: scripts and styles dropped, blocks on their own lines."""

    BLOCKS = frozenset(
        {
            "p",
            "div",
            "br",
            "li",
            "tr",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "blockquote",
            "pre",
            "table",
            "ul",
            "ol",
            "hr",
        }
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._quote = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style", "head", "title"):
            self._skip += 1
        elif tag == "blockquote":
            self._quote += 1  # quoted replies in HTML mail are blockquotes
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head", "title") and self._skip:
            self._skip -= 1
        elif tag == "blockquote" and self._quote:
            self._quote -= 1
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip and not self._quote:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Readable text of an HTML document (no quoted ``<blockquote>`` replies)."""
    parser = _HTMLText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # noqa: S110 - HTMLParser is lenient; keep what was parsed
        pass
    lines = [
        re.sub(r"[ \t\xa0]+", " ", line).strip() for line in "".join(parser.parts).splitlines()
    ]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def strip_reply(text: str) -> str:
    """What the sender wrote: no quoted lines, attribution line, forwarded tail or signature."""
    # The string tests in front of each regex are necessary conditions of its match: most
    # lines are plain text and skip the regexes.
    kept: list[str] = []
    for line in text.splitlines():
        line = line.rstrip()
        head = line.lstrip()[:2]
        if head in ("--", "__") and (line == "--" or _FORWARD_CUT_RE.match(line)):
            break
        if head[:1] == ">":  # _QUOTE_RE
            continue
        kept.append(line)
    out: list[str] = []
    i = 0
    while i < len(kept):
        line = kept[i]
        if line.endswith(":") and _ATTRIBUTION_RE.match(line):
            i += 1
            continue
        # "On Mon, 3 Jun 2024 at 10:00, Someone <a@b>\nwrote:" wrapped over two lines
        if (
            line.lstrip().startswith("On ")
            and i + 1 < len(kept)
            and kept[i + 1].strip().endswith("wrote:")
            and len(line) + len(kept[i + 1]) < 400
        ):
            i += 2
            continue
        out.append(line)
        i += 1
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


# ---------------------------------------------------------------------------------------------
# One message


# Header values as the ``email`` package's default policy renders them, computed lazily and
# cheaply: messages are parsed with the ``compat32`` policy (raw header strings; no header
# objects built for every ``get``), and a value is decoded only when asked for. Plain values
# (ASCII, no encoded word) of the shapes nearly all mail has take a fast path that gives the
# same text as the default policy (tests/test_sources.py checks it on samples); anything else
# is parsed by the default policy's own header classes.

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR_SPEC = r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_ADDRESS_RE = re.compile(
    rf"^\s*(?:(?P<name>{_ATEXT}(?:[ \t]+{_ATEXT})*)[ \t]*<(?P<angle>{_ADDR_SPEC})>"
    rf"|(?P<bare>{_ADDR_SPEC}))\s*$"
)
_PLAIN_MSGID_RE = re.compile(r"^\s*<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]+>\s*$")
_ADDRESS_HEADERS = frozenset({"from", "to", "cc", "bcc", "reply-to", "sender"})
_WS_RE = re.compile(r"\s+")


def _plain_addresses(value: str) -> str | None:
    """``value`` as the default policy renders an address list, if every address is a plain
    ``a@b`` or ``Display Name <a@b>``; None otherwise."""
    out = []
    for part in value.split(","):
        m = _PLAIN_ADDRESS_RE.match(part)
        if m is None:
            return None
        if m.group("bare"):
            out.append(m.group("bare"))
        else:
            out.append(f"{' '.join(m.group('name').split())} <{m.group('angle')}>")
    return ", ".join(out)


def _date_pair(value: str) -> tuple[str, datetime | None]:
    """A Date value as the default policy renders it (normalised when it parses), and the
    moment it names."""
    from email.utils import format_datetime, parsedate_to_datetime

    if not value:
        return "", None
    try:
        dt = parsedate_to_datetime(value)
    except ValueError:
        return value, None
    return format_datetime(dt), dt


def header_text(name: str, raw: str | None) -> str:
    """One header's value (``raw`` as the parser stored it) as text: decoded like the default
    policy's ``str(msg[name])``, whitespace runs squeezed; "" when absent or unreadable."""
    if raw is None:
        return ""
    name = name.lower()
    try:
        value = raw.replace("\r", "").replace("\n", "")  # unfolded, as the default policy does
        text: str | None = None
        if name == "date" and value.isascii():
            text = _date_pair(value)[0]
        elif value.isascii() and "=?" not in value:
            if name in _ADDRESS_HEADERS:
                text = _plain_addresses(value)
            elif name == "message-id":
                text = value if _PLAIN_MSGID_RE.match(value) else None
            else:
                text = value  # unstructured (Subject, References, In-Reply-To): as written
        if text is None:
            from email import policy

            text = str(policy.default.header_fetch_parse(name, value))
        return _WS_RE.sub(" ", text).strip()
    except Exception:
        return ""


class Headers:
    """A parsed message's headers: the first value of each name, decoded on first use."""

    def __init__(self, msg: Any) -> None:
        self._raw: dict[str, str] = {}
        for name, value in msg.raw_items():
            self._raw.setdefault(name.lower(), value)
        self._text: dict[str, str] = {}

    def date(self) -> tuple[str, datetime | None]:
        """The Date header as text (see :func:`header_text`) and the moment it names (UTC when
        it names no zone), parsed once."""
        raw = self._raw.get("date")
        value = raw.replace("\r", "").replace("\n", "") if raw is not None else ""
        if value and value.isascii():
            try:
                text, dt = _date_pair(value)
                text = _WS_RE.sub(" ", text).strip()
            except Exception:
                text, dt = "", None
        else:
            text = self["Date"]
            dt = _date(text)
        if dt is not None and dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return text, dt

    def __getitem__(self, name: str) -> str:
        key = name.lower()
        text = self._text.get(key)
        if text is None:
            text = self._text[key] = header_text(key, self._raw.get(key))
        return text


def _part_text(part: Any) -> str:
    """A text part decoded (transfer encoding, then charset; ASCII when none is named, as the
    default policy's ``get_content``); an unknown charset falls back to UTF-8, bad bytes
    become U+FFFD."""
    try:
        payload = part.get_payload(decode=True) or b""
    except Exception:
        return ""
    if not isinstance(payload, bytes):
        return ""
    try:
        charset = part.get_content_charset()
        if charset is None:  # none named: ASCII; named but unusable: the UTF-8 fallback
            charset = "ascii" if part.get_param("charset") is None else "utf-8"
        return payload.decode(charset, "replace")
    except (LookupError, ValueError, TypeError):
        return payload.decode("utf-8", "replace")


def message_body(msg: Any) -> str:
    """The message's own text: first non-attachment text/plain part, else its HTML as text."""
    plain: str | None = None
    html: str | None = None
    for part in msg.walk():
        if part.is_multipart():
            continue
        try:
            if part.get_content_disposition() == "attachment":
                continue
        except Exception:  # noqa: S112 - an unreadable part is not text we can use
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain" and not (plain or "").strip():
            plain = _part_text(part)
        elif ctype == "text/html" and html is None:
            html = _part_text(part)
    if plain and plain.strip():
        return plain
    if html:
        return html_to_text(html)
    return plain or ""


def _message_id(value: str) -> str | None:
    m = _MSGID_RE.search(value)
    if m:
        return m.group(1)
    value = value.strip()
    return value[:500] if value and " " not in value else None


def _date(value: str) -> datetime | None:
    from email.utils import parsedate_to_datetime

    if not value:
        return None
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


def _parse(raw: bytes, *, headersonly: bool = False) -> Any:
    """The message, parsed with the ``compat32`` policy (see :class:`Headers`). With
    ``headersonly`` the body stays one undecoded payload."""
    from email import policy
    from email.parser import BytesParser

    return BytesParser(policy=policy.compat32).parsebytes(raw, headersonly=headersonly)


# The feedparser's own tests: a header (or continuation) line, and a line (universal newlines).
_FEED_HEADER_RE = re.compile(r"^(From |[\041-\071\073-\176]*:|[\t ])")
_FEED_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)?")


def _parse_full(raw: bytes) -> Any:
    """The message with its MIME structure.

    A single-part message (nearly all mail) skips the feedparser's line-by-line walk over its
    body: the header block is found with the feedparser's own rule (lines up to the first one
    that is not a header line; a blank one is the separator and is dropped), parsed alone,
    and the rest becomes the payload — what a full parse gives such a message.
    """
    from email import policy
    from email.parser import Parser

    text = raw.decode("ascii", "surrogateescape")  # as BytesParser decodes
    end = 0
    while end < len(text):
        line = _FEED_LINE_RE.match(text, end).group()  # type: ignore[union-attr]
        if not _FEED_HEADER_RE.match(line):
            if line[:1] in ("\r", "\n"):
                end += len(line)
            break
        end += len(line)
    msg = Parser(policy=policy.compat32).parsestr(text[:end], headersonly=True)
    if msg.get_content_maintype() in ("multipart", "message"):
        return _parse(raw)
    msg.set_payload(text[end:])
    return msg


def locator_of(msg: Any, raw: bytes, headers: Headers | None = None) -> str:
    """The message's id, or ``noid:<digest of raw bytes>``."""
    headers = headers or Headers(msg)
    mid = _message_id(headers["Message-ID"])
    return mid or "noid:" + hashlib.blake2b(raw, digest_size=16).hexdigest()


def message_items(
    raw: bytes, *, source: str, max_chars: int, seen: set[str]
) -> Iterator[dict[str, Any] | Skip | None]:
    """Items of one raw message. Yields ``None`` for a duplicate id, a Skip when empty."""
    msg = _parse_full(raw)
    headers = Headers(msg)
    locator = locator_of(msg, raw, headers)
    if locator in seen:
        yield None
        return
    seen.add(locator)
    subject = headers["Subject"]
    sender = headers["From"]
    to = headers["To"]
    cc = headers["Cc"]
    date_raw, observed = headers.date()
    refs = _MSGID_RE.findall(headers["References"])
    reply_to = _message_id(headers["In-Reply-To"])
    thread = refs[0] if refs else (reply_to or (None if locator.startswith("noid:") else locator))
    body = strip_reply(message_body(msg))
    if not body:
        yield Skip("messages with no text of their own (only quotes, attachments or nothing)")
        return
    meta: dict[str, Any] = {
        k: v[:300]
        for k, v in (
            ("from", sender),
            ("to", to),
            ("cc", cc),
            ("subject", subject),
            ("date", date_raw),
        )
        if v
    }
    if thread:
        meta["thread"] = thread[:300]
    if reply_to:
        meta["in_reply_to"] = reply_to[:300]
    bits = [
        f"Subject: {subject}" if subject else "",
        f"From: {sender}" if sender else "",
        f"To: {to}" if to else "",
    ]
    context = truncate(" | ".join(b for b in bits if b), 600) or None
    for part, chunk in enumerate(split_text(body, max_chars), 1):
        yield {
            "text": chunk,
            "title": subject or None,
            "source": source,
            "locator": locator if part == 1 else f"{locator}@{part}",
            "observed_at": observed,
            "kind": "email",
            "context": context,
            "meta": meta,
        }


# ---------------------------------------------------------------------------------------------
# mbox


def iter_mbox_messages(f: IO[bytes], max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """Split an mbox stream: ``(byte offset of the From_ line, message bytes or None if larger
    than max_bytes)``. A ``From `` line starts a message at the top of the file, after a blank
    line, or when it has the From_ date shape. Raises SourceError when the file does not start
    with a ``From `` line (after blank lines)."""
    offset = 0
    start = -1
    current = bytearray()
    too_big = False
    prev_blank = True
    at_line_start = True
    seen_any = False
    while True:
        line = f.readline(READ_LINE)
        if not line:
            break
        line_offset = offset
        offset += len(line)
        starts_message = (
            at_line_start
            and line.startswith(b"From ")
            and (prev_blank or _FROM_LINE_RE.match(line) is not None)
        )
        this_at_start = at_line_start
        at_line_start = line.endswith(b"\n")
        if starts_message:
            if start >= 0:
                yield start, None if too_big else bytes(current)
            start, current, too_big, seen_any = line_offset, bytearray(), False, True
            prev_blank = False
            continue
        if not seen_any:
            if line.strip():
                raise SourceError(
                    "not an mbox: it does not start with a 'From ' line",
                    position=f"byte {line_offset}",
                )
            continue
        if this_at_start:
            prev_blank = not line.strip()
            if _MBOXRD_RE.match(line):
                line = line[1:]
        if not too_big:
            current += line
            if len(current) > max_bytes:
                too_big, current = True, bytearray()
    if start >= 0:
        yield start, None if too_big else bytes(current)


def detect_mbox(path: Path, head: bytes) -> int:
    if path.is_dir():
        return 0
    body = head.lstrip(b"\r\n")
    if body.startswith(b"From "):
        first, _, rest = body.partition(b"\n")
        if _FROM_LINE_RE.match(first) or _HEADER_LINE_RE.match(rest):
            return 90
        return 50
    if path.suffix.lower() in (".mbox", ".mbx") and not head.strip():
        return 60
    return 0


def _mbox_messages(path: Path, options: Mapping[str, Any]) -> Iterator[tuple[int, bytes | None]]:
    max_bytes = int_option(options, "max_message_bytes", DEFAULT_MAX_MESSAGE, 1024, 1 << 31)
    with open(path, "rb") as f:
        yield from iter_mbox_messages(f, max_bytes)


def iter_mbox(path: Path, options: Mapping[str, Any]) -> Iterator[dict[str, Any] | Skip]:
    max_chars = int_option(options, "max_chars", MAX_CHUNK_CHARS, 200, 100_000)
    source = scheme_uri("mbox", path)
    seen: set[str] = set()
    duplicates = 0
    for number, (offset, raw) in enumerate(_mbox_messages(path, options), 1):
        where = f"message {number}, byte {offset}"
        if raw is None:
            yield Skip("message larger than max_message_bytes", where)
            continue
        try:
            items = list(message_items(raw, source=source, max_chars=max_chars, seen=seen))
        except Exception as exc:
            yield Skip(f"message could not be parsed ({type(exc).__name__})", where)
            continue
        for item in items:
            if item is None:
                duplicates += 1
            elif isinstance(item, Skip):
                yield Skip(item.reason, where)
            else:
                yield item
    if duplicates:
        yield Skip("messages repeating a Message-ID already seen in this file", count=duplicates)


def mbox_ids(path: Path) -> list[str]:
    """Locators of the messages in the mbox (their ids), in order, without parsing bodies."""
    out: list[str] = []
    seen: set[str] = set()
    for _, raw in _mbox_messages(path, {}):
        if raw is None:
            continue
        try:
            loc = locator_of(_parse(raw, headersonly=True), raw)
        except Exception:  # noqa: S112 - iter_mbox reports it; ids are best effort
            continue
        if loc not in seen:
            seen.add(loc)
            out.append(loc)
    return out


# ---------------------------------------------------------------------------------------------
# .eml


def detect_eml(path: Path, head: bytes) -> int:
    if path.is_dir():
        return 0
    if path.suffix.lower() == ".eml":
        return 80
    names = {
        m.group(1).lower() for m in re.finditer(rb"(?m)^([A-Za-z][A-Za-z0-9-]{0,60}):[ \t]", head)
    }
    if _HEADER_LINE_RE.match(head) and len(names & set(HEADER_NAMES)) >= 3:
        return 60
    return 0


def _read_eml(path: Path, options: Mapping[str, Any]) -> bytes:
    max_bytes = int_option(options, "max_message_bytes", DEFAULT_MAX_MESSAGE, 1024, 1 << 31)
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise SourceError("message larger than max_message_bytes")
    if raw.startswith(b"From ") and not _HEADER_LINE_RE.match(raw):
        raw = raw.split(b"\n", 1)[1] if b"\n" in raw else b""  # a lone From_ line
    raw = raw.lstrip(b"\r\n")
    if not _HEADER_LINE_RE.match(raw):
        raise SourceError("not an e-mail message: no header line", position="byte 0")
    return raw


def iter_eml(path: Path, options: Mapping[str, Any]) -> Iterator[dict[str, Any] | Skip]:
    max_chars = int_option(options, "max_chars", MAX_CHUNK_CHARS, 200, 100_000)
    raw = _read_eml(path, options)
    try:
        items = list(message_items(raw, source=file_uri(path), max_chars=max_chars, seen=set()))
    except Exception as exc:
        raise SourceError(f"message could not be parsed ({type(exc).__name__})") from None
    for item in items:
        if item is not None:
            yield item


def eml_ids(path: Path) -> list[str]:
    raw = _read_eml(path, {})
    return [locator_of(_parse(raw, headersonly=True), raw)]


MBOX = SourceSpec(
    name="mbox",
    description="mbox mailboxes: one memory per message, quotes and signatures removed",
    detect=detect_mbox,
    iter_items=iter_mbox,
    item_ids=mbox_ids,
    kind="email",
    options=OPTIONS,
)
EML = SourceSpec(
    name="eml",
    description="Single e-mail messages (.eml, RFC 5322)",
    detect=detect_eml,
    iter_items=iter_eml,
    item_ids=eml_ids,
    kind="email",
    options=OPTIONS,
)


@hookimpl
def memctl_sources() -> list[SourceSpec]:
    return [MBOX, EML]
